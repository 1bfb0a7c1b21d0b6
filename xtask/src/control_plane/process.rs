//! One server process (etcd or kube-apiserver) under a small `sh` watchdog that kills it when its
//! owner goes away, even when the owner is never dropped (a test binary's static) or is killed.
//!
//! The watchdog's stdin is a pipe whose only write end the owner holds (Rust opens pipes
//! close-on-exec, so no other child inherits it). When the owner drops [`Server`] or its process
//! exits for any reason, the kernel closes that end; the watchdog reads EOF, kills the server and
//! removes the server's scratch directory. This needs no `unsafe` (no `prctl(PR_SET_PDEATHSIG)` in
//! `pre_exec`) and no polling of the owner's pid.
//!
//! The kill is SIGKILL, not SIGTERM: the servers' state is thrown away anyway, and when both get
//! the signal at once a terminating kube-apiserver keeps retrying the already stopped etcd for
//! seconds.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{Error, Result, tail};

/// `sh -c` script: `$1` is a directory to remove once the server is gone (may be empty), the rest
/// is the server's command line.
const WATCHDOG: &str = r#"
cleanup=$1; shift
exec 3<&0
"$@" </dev/null 3<&- &
server=$!
{
  read -r _ || true
  kill -KILL "$server" 2>/dev/null
  n=0
  while kill -0 "$server" 2>/dev/null && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  if [ -n "$cleanup" ]; then rm -rf "$cleanup" 2>/dev/null || { sleep 1; rm -rf "$cleanup"; }; fi
} <&3 &
exec 3<&-
wait "$server"
"#;

/// How long dropping a [`Server`] waits for its watchdog to exit before killing the watchdog.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server. Dropping it stops the server and waits (bounded) until it is gone.
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    watchdog: Child,
    /// The write end of the watchdog's stdin; closing it is the stop signal.
    lifeline: Option<ChildStdin>,
    log: PathBuf,
}

impl Server {
    /// Starts `program args` with stdout and stderr appended to `log`. When the server is gone,
    /// the watchdog removes `cleanup` if given (used for the control plane's scratch directory, so
    /// it is removed even when the owner never runs a destructor).
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        cleanup: Option<&Path>,
    ) -> Result<Self> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(Error::io("open the log", &log))?;
        let err = out.try_clone().map_err(Error::io("open the log", &log))?;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(cleanup.map(Path::as_os_str).unwrap_or_default())
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(Error::io("start", program))?;
        let lifeline = watchdog.stdin.take();
        Ok(Self { name, watchdog, lifeline, log })
    }

    /// The file the server logs to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The server's exit status if it has already exited (the watchdog exits with it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.watchdog.try_wait().ok().flatten()
    }

    /// The error for a server that exited on its own.
    pub fn exited_error(&self, status: ExitStatus) -> Error {
        let (log, log_tail) = self.kept_log();
        Error::ServerExited { server: self.name, status, log, log_tail }
    }

    /// The error for a server that did not become ready within `waited`.
    pub fn not_ready_error(&self, waited: Duration, last_check: String) -> Error {
        let (log, log_tail) = self.kept_log();
        Error::NotReady { server: self.name, waited, last_check, log, log_tail }
    }

    /// Copies the log next to the scratch directory, which is removed as soon as the failed
    /// server is dropped, and returns the copy's path and the log's last lines.
    fn kept_log(&self) -> (PathBuf, String) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let scratch = self.log.parent().and_then(Path::file_name).unwrap_or_default().to_string_lossy();
        let kept = std::env::temp_dir().join(format!("{scratch}-{}.log", self.name));
        let path = if std::fs::write(&kept, &text).is_ok() { kept } else { self.log.clone() };
        (path, tail(&text, 40))
    }
}

impl Server {
    /// Stops the server and its watchdog; idempotent (dropping a stopped server does nothing more).
    pub fn stop(&mut self) {
        drop(self.lifeline.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.watchdog.try_wait() {
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
        // The watchdog's own child is stopped by its background part; this only ends the shell.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting until {what}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(pid: &str) -> bool {
        // A zombie still answers `kill -0`, so read the state from /proc too.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(false)
    }

    /// A script standing in for a server: writes its pid to a file and runs until killed.
    fn fake_server(dir: &Path) -> (PathBuf, Vec<String>) {
        let pid_file = dir.join("pid");
        let script = format!("echo $$ > {}; echo started; exec sleep 1000", pid_file.display());
        (pid_file, vec!["-c".into(), script])
    }

    /// Dropping the owner's end of the lifeline stops the server and removes the cleanup directory:
    /// this is also exactly what the kernel does when the owning process dies.
    #[test]
    fn dropping_the_server_kills_the_process_and_removes_cleanup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).expect("mkdir");
        let (pid_file, args) = fake_server(dir.path());
        let log = dir.path().join("server.log");
        let server =
            Server::spawn("fake", Path::new("sh"), &args, log.clone(), Some(&scratch)).expect("spawn");
        wait_until("the server wrote its pid", || read(&pid_file).ends_with('\n'));
        let pid = read(&pid_file).trim().to_string();
        assert!(alive(&pid));

        drop(server);
        wait_until("the server is gone", || !alive(&pid));
        wait_until("the cleanup directory is removed", || !scratch.exists());
        assert!(read(&log).contains("started"), "server output goes to the log");
    }

    /// A server that exits by itself is reported with its status and log.
    #[test]
    fn a_server_that_exits_is_reported_with_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = vec!["-c".to_string(), "echo 'listen tcp: address already in use'; exit 3".to_string()];
        let mut server =
            Server::spawn("fake", Path::new("sh"), &args, dir.path().join("log"), None).expect("spawn");
        let mut status = None;
        wait_until("the server exited", || {
            status = server.exited();
            status.is_some()
        });
        let error = server.exited_error(status.expect("status"));
        assert_eq!(status.and_then(|s| s.code()), Some(3));
        assert!(error.is_port_conflict(), "{error}");
        assert!(error.to_string().contains("address already in use"), "{error}");
        // The log is kept outside the scratch directory, which goes away with the server.
        let Error::ServerExited { log, .. } = &error else { panic!("{error:?}") };
        assert!(!log.starts_with(dir.path()), "{}", log.display());
        assert!(read(log).contains("address already in use"));
        std::fs::remove_file(log).expect("remove kept log");
    }
}
