//! A control plane never dropped by its owner still goes away: SIGKILL the `xtask control-plane`
//! process (no destructor runs) and its etcd, kube-apiserver and scratch directory must vanish.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            alive && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn killing_the_owner_stops_the_servers_and_removes_the_scratch_directory() {
    let mut owner = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("control-plane")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start xtask control-plane");
    let stdout = owner.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read the KUBECONFIG line");
    let kubeconfig = PathBuf::from(line.trim().strip_prefix("export KUBECONFIG=").expect("KUBECONFIG line"));
    let scratch = kubeconfig.parent().unwrap_or(Path::new("/")).to_path_buf();
    let needle = scratch.display().to_string();
    assert!(scratch.is_dir());
    // etcd and kube-apiserver, each with its watchdog.
    assert!(processes_mentioning(&needle).len() >= 4, "servers running under {needle}");

    owner.kill().expect("SIGKILL the owner");
    owner.wait().expect("reap the owner");

    wait_until("the servers are gone", || processes_mentioning(&needle).is_empty());
    wait_until("the scratch directory is removed", || !scratch.exists());
}
