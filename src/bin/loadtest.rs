//! `loadtest`: the operator's scale benchmarks (submission throughput against ARM's write bucket,
//! validation reads, steady-state polling, memory, reaction latency, cold start), measured on real
//! processes: a local kube-apiserver + etcd (`xtask control-plane`), the Azure ML emulator, and the
//! operator binary, whose RSS is read from `/proc`. Azure traffic is counted from the emulator's
//! request log, so the figures are what Azure would see, not what the operator believes it sent.
//!
//! ```sh
//! cargo build --release -p azureml-operator -p azureml-emulator -p xtask --bins
//! cargo run --release -p azureml-operator --bin loadtest -- --jobs 100,1000 --objects 1000
//! ```
//!
//! Results are printed as Markdown (and written to `--report FILE`), ready for BENCHMARKS.md. Never part of
//! `cargo test`.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use azureml_operator::api::finetunejob::Phase;
use azureml_operator::api::{FineTuneJob, ModelRegistration, Workspace, conditions};
use azureml_operator::controller::policy::Policy;
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};

/// Prints a line of the report and keeps it for `--report`.
macro_rules! report {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        let mut text = REPORT.lock().unwrap_or_else(|p| p.into_inner());
        text.push_str(&line);
        text.push('\n');
    }};
}

/// Everything printed so far, written to `--report` after each run so a failed run keeps the ones before.
static REPORT: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// ARM's read bucket refill (Azure's figure, also the emulator's default).
const ARM_READ_REFILL_PER_SEC: f64 = 25.0;
/// ARM's write bucket: burst and refill.
const ARM_WRITE_BURST: f64 = 200.0;
const ARM_WRITE_REFILL_PER_SEC: f64 = 10.0;
/// How many Kubernetes creates are in flight at once when applying objects "all at once".
const CREATE_CONCURRENCY: usize = 64;

#[derive(Parser, Debug)]
#[command(name = "loadtest", about = "Scale benchmarks of azureml-operator (see BENCHMARKS.md)")]
struct Cli {
    /// Job counts for the submission, polling, finish-detection and cold-start runs (0 skips).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    jobs: Vec<usize>,
    /// Object counts for the memory and reaction-latency runs (0 skips).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    objects: Vec<usize>,
    /// Length of the steady-state polling window, in seconds.
    #[arg(long, default_value_t = 120)]
    window: u64,
    /// New FineTuneJobs created one by one to measure reaction latency.
    #[arg(long, default_value_t = 100)]
    latency_samples: usize,
    /// Skip waiting for an injected failure to be noticed (saves up to one poll interval per run).
    #[arg(long)]
    skip_finish_detection: bool,
    /// Keep the scratch directory (operator and emulator logs) instead of deleting it at the end.
    #[arg(long)]
    keep: bool,
    /// Log level of the operator process (its `RUST_LOG`; the log is in the scratch directory).
    #[arg(long, default_value = "warn")]
    operator_log: String,
    /// Also write the Markdown report to this file (rewritten after every run).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Directory holding the `azureml-operator`, `azureml-emulator` and `xtask` binaries
    /// (default: the directory of this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // On Ctrl-C the run is dropped, which kills every child process it started.
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
        Err::<(), BoxError>("interrupted".into())
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            r = interrupted => r,
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin_dir = match cli.bin_dir.clone() {
        Some(d) => d,
        None => std::env::current_exe()?.parent().ok_or("no directory for this program")?.to_path_buf(),
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bins = Binaries::find(&bin_dir)?;
    let work = std::env::temp_dir().join(format!("azureml-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    log(&format!("scratch directory {}", work.display()));

    report!("## Machine\n\n{}\n", machine());
    let cp = ControlPlane::start(&bins.xtask, &repo.join("crds"), &work)?;
    let client = cp.client().await?;

    let bench = Bench {
        client,
        bins,
        work: work.clone(),
        kubeconfig: cp.kubeconfig.clone(),
        operator_log: cli.operator_log.clone(),
    };
    for &n in cli.jobs.iter().filter(|n| **n > 0) {
        jobs_run(&bench, n, &cli).await?;
        save_report(&cli)?;
    }
    for &n in cli.objects.iter().filter(|n| **n > 0) {
        objects_run(&bench, n, cli.latency_samples).await?;
        save_report(&cli)?;
    }
    drop(cp);
    if cli.keep {
        log(&format!("kept {}", work.display()));
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

fn save_report(cli: &Cli) -> Result<()> {
    if let Some(path) = &cli.report {
        let text = REPORT.lock().unwrap_or_else(|p| p.into_inner()).clone();
        std::fs::write(path, text)?;
    }
    Ok(())
}

fn log(msg: &str) {
    let now = jiff::Timestamp::now();
    eprintln!("[{}] {msg}", now.strftime("%H:%M:%S"));
}

/// CPU count, memory and load average, as one Markdown line.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cpus} CPUs, {mem_gib:.1} GiB RAM, load average at start: {}", load_average())
}

/// The 1-minute load average (the machine is shared; every figure is printed next to it).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// What every run needs: the cluster, the programs and a scratch directory.
struct Bench {
    client: Client,
    bins: Binaries,
    work: PathBuf,
    kubeconfig: PathBuf,
    operator_log: String,
}

/// The programs the benchmark runs.
struct Binaries {
    operator: PathBuf,
    emulator: PathBuf,
    xtask: PathBuf,
}

impl Binaries {
    fn find(dir: &Path) -> Result<Self> {
        let bins = Self {
            operator: dir.join("azureml-operator"),
            emulator: dir.join("azureml-emulator"),
            xtask: dir.join("xtask"),
        };
        for b in [&bins.operator, &bins.emulator, &bins.xtask] {
            if !b.exists() {
                return Err(format!(
                    "{} is missing; build it first: cargo build --release -p azureml-operator -p azureml-emulator -p xtask --bins",
                    b.display()
                )
                .into());
            }
        }
        Ok(bins)
    }
}

/// A child process, killed when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = cmd.stdout(file.try_clone()?).stderr(file).stdin(Stdio::null()).spawn()?;
        Ok(Self { name, child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => Err(format!("{} exited ({status})", self.name).into()),
            None => Ok(()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `xtask control-plane` with the repository's CRDs; its KUBECONFIG is read from its output.
struct ControlPlane {
    _proc: Proc,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn start(xtask: &Path, crds: &Path, work: &Path) -> Result<Self> {
        log("starting the local control plane");
        let mut child = Command::new(xtask)
            .arg("control-plane")
            .arg("--crds")
            .arg(crds)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(work.join("control-plane.log"))?)
            .stdin(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout from xtask")?;
        let proc = Proc { name: "xtask control-plane", child };
        let mut kubeconfig = None;
        for line in BufReader::new(stdout).lines() {
            if let Some(path) = line?.strip_prefix("export KUBECONFIG=") {
                kubeconfig = Some(PathBuf::from(path.trim()));
                break;
            }
        }
        let kubeconfig = kubeconfig.ok_or("xtask control-plane exited without printing KUBECONFIG")?;
        Ok(Self { _proc: proc, kubeconfig })
    }

    async fn client(&self) -> Result<Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        // The benchmark itself must not be the bottleneck when it creates thousands of objects.
        config.read_timeout = Some(Duration::from_secs(120));
        Ok(Client::try_from(config)?)
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// One emulator, one namespace with a Ready Workspace `default`, and one operator process.
struct Env {
    namespace: String,
    emulator: Proc,
    operator: Option<Proc>,
    admin: String,
    metrics_port: u16,
    http: reqwest::Client,
    client: Client,
    operator_bin: PathBuf,
    kubeconfig: PathBuf,
    dir: PathBuf,
    interval_scale: f64,
    operator_starts: usize,
    operator_log: String,
}

/// ARM traffic counted from a slice of the emulator's request log.
#[derive(Debug, Default, Clone)]
struct Traffic {
    reads: usize,
    writes: usize,
    throttled: usize,
    /// ARM GETs made before the job they name (or any non-job GET) was submitted.
    pre_submit_reads: usize,
    /// GETs of a job already submitted.
    job_polls: usize,
    job_puts: usize,
    last_seq: u64,
    /// Most ARM reads in any 10 s of the slice, per second.
    peak_reads_per_sec: f64,
}

/// Most timestamps inside any `window`, per second of it.
fn peak_rate(mut times: Vec<jiff::Timestamp>, window: jiff::SignedDuration) -> f64 {
    times.sort();
    let (mut start, mut most) = (0, 0);
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        most = most.max(end + 1 - start);
    }
    most as f64 / window.as_secs_f64()
}

impl Env {
    async fn start(bench: &Bench, label: &str, time_scale: f64) -> Result<Self> {
        let (client, bins) = (&bench.client, &bench.bins);
        let dir = bench.work.join(label);
        std::fs::create_dir_all(&dir)?;
        let (https, http_port) = (free_port()?, free_port()?);
        let ca = dir.join("emulator-ca.pem");
        let emulator = Proc::spawn(
            "azureml-emulator",
            Command::new(&bins.emulator).args([
                "--https-port",
                &https.to_string(),
                "--http-port",
                &http_port.to_string(),
                "--ca-out",
                &ca.to_string_lossy(),
                "--time-scale",
                &time_scale.to_string(),
                "--log",
                "warn",
            ]),
            &dir.join("emulator.log"),
        )?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
        let admin = format!("http://127.0.0.1:{http_port}/_emulator");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(ca.exists() && http.get(format!("{admin}/config")).send().await.is_ok()) {
            if Instant::now() > deadline {
                return Err("the emulator did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let namespace = label.to_owned();
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        for (name, key, value) in [
            ("azureml-credentials", "clientSecret", "emulator-secret".to_owned()),
            ("azureml-emulator-ca", "ca.crt", std::fs::read_to_string(&ca)?),
        ] {
            let secret: Secret =
                serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {key: value}}))?;
            secrets.create(&PostParams::default(), &secret).await?;
        }
        let url = format!("https://127.0.0.1:{https}");
        let workspace: Workspace = serde_json::from_value(json!({
            "apiVersion": "azureml-operator.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "default"},
            "spec": {
                "subscriptionId": "00000000-0000-0000-0000-000000000001",
                "resourceGroup": "rg-azureml-demo",
                "workspaceName": "ws-azureml-demo",
                "cloud": "Custom",
                "endpoints": {"resourceManager": url, "authorityHost": url, "registryDiscovery": url},
                "credential": {
                    "type": "ClientSecret",
                    "tenantId": "00000000-0000-0000-0000-0000000000aa",
                    "clientId": "00000000-0000-0000-0000-0000000000cc",
                    "secretRef": {"name": "azureml-credentials", "key": "clientSecret"}
                },
                "caBundleSecretRef": {"name": "azureml-emulator-ca", "key": "ca.crt"}
            }
        }))?;
        Api::<Workspace>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &workspace)
            .await?;
        Ok(Self {
            namespace,
            emulator,
            operator: None,
            admin,
            metrics_port: free_port()?,
            http,
            client: client.clone(),
            operator_bin: bins.operator.clone(),
            kubeconfig: bench.kubeconfig.clone(),
            dir,
            interval_scale: 1.0,
            operator_starts: 0,
            operator_log: bench.operator_log.clone(),
        })
    }

    /// (Re)starts the operator process, with empty caches.
    fn start_operator(&mut self) -> Result<()> {
        self.operator = None;
        self.operator_starts += 1;
        self.metrics_port = free_port()?;
        let log = self.dir.join(format!("operator-{}.log", self.operator_starts));
        self.operator = Some(Proc::spawn(
            "azureml-operator",
            Command::new(&self.operator_bin)
                .args([
                    "run",
                    "--namespace",
                    &self.namespace,
                    "--interval-scale",
                    &self.interval_scale.to_string(),
                    "--metrics-addr",
                    &format!("127.0.0.1:{}", self.metrics_port),
                ])
                .env("KUBECONFIG", &self.kubeconfig)
                .env("RUST_LOG", &self.operator_log),
            &log,
        )?);
        Ok(())
    }

    fn operator_pid(&self) -> Result<u32> {
        Ok(self.operator.as_ref().ok_or("operator not running")?.pid())
    }

    fn check_alive(&mut self) -> Result<()> {
        self.emulator.check_alive()?;
        match self.operator.as_mut() {
            Some(op) => op.check_alive(),
            None => Ok(()),
        }
    }

    async fn wait_workspace_ready(&mut self) -> Result<()> {
        let api: Api<Workspace> = Api::namespaced(self.client.clone(), &self.namespace);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            let ws = api.get("default").await?;
            if ws.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions, None)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("workspace not ready: {:?}", ws.status).into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn admin_get(&self, path: &str) -> Result<Value> {
        Ok(self.http.get(format!("{}{path}", self.admin)).send().await?.error_for_status()?.json().await?)
    }

    async fn admin_post(&self, path: &str, body: Value) -> Result<Value> {
        let resp = self.http.post(format!("{}{path}", self.admin)).json(&body).send().await?;
        let resp = resp.error_for_status()?;
        Ok(resp.json().await.unwrap_or(Value::Null))
    }

    /// Sequence number of the newest logged request.
    async fn last_seq(&self) -> Result<u64> {
        // `since` far in the future returns no entries, only lastSeq.
        let v = self.admin_get(&format!("/requests?since={}", u64::MAX / 2)).await?;
        Ok(v["lastSeq"].as_u64().unwrap_or(0))
    }

    /// The logged requests after `since`.
    async fn requests_since(&self, since: u64) -> Result<Vec<Value>> {
        let v = self.admin_get(&format!("/requests?since={since}")).await?;
        match v {
            Value::Object(mut o) => match o.remove("requests") {
                Some(Value::Array(items)) => Ok(items),
                _ => Ok(Vec::new()),
            },
            Value::Array(items) => Ok(items),
            _ => Ok(Vec::new()),
        }
    }

    /// ARM traffic after `since`; `submitted` carries job names PUT earlier, so a GET of one is a poll.
    async fn traffic(&self, since: u64, submitted: &mut HashSet<String>) -> Result<Traffic> {
        let mut t = Traffic { last_seq: since, ..Traffic::default() };
        let mut read_times = Vec::new();
        for r in self.requests_since(since).await? {
            t.last_seq = t.last_seq.max(r["seq"].as_u64().unwrap_or(0));
            let path = r["path"].as_str().unwrap_or_default();
            if !path.starts_with("/subscriptions/") {
                continue;
            }
            if r["status"].as_u64() == Some(429) {
                t.throttled += 1;
            }
            let job = job_of(path);
            match r["method"].as_str().unwrap_or_default() {
                "GET" | "HEAD" => {
                    t.reads += 1;
                    if let Some(at) = r["time"].as_str().and_then(|x| x.parse::<jiff::Timestamp>().ok()) {
                        read_times.push(at);
                    }
                    match job {
                        Some(j) if submitted.contains(j) => t.job_polls += 1,
                        _ => t.pre_submit_reads += 1,
                    }
                }
                "DELETE" => {}
                "PUT" => {
                    t.writes += 1;
                    if let Some(j) = job
                        && r["status"].as_u64().is_some_and(|s| s < 300)
                    {
                        t.job_puts += 1;
                        submitted.insert(j.to_owned());
                    }
                }
                _ => t.writes += 1,
            }
        }
        t.peak_reads_per_sec = peak_rate(read_times, jiff::SignedDuration::from_secs(10));
        Ok(t)
    }

    /// A counter summed over its labels from the operator's /metrics (0 while it is not up).
    async fn metric_sum(&self, name: &str) -> u64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let Ok(resp) = self.http.get(url).send().await else { return 0 };
        let Ok(text) = resp.text().await else { return 0 };
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum::<f64>() as u64
    }

    fn rss(&self) -> Result<Rss> {
        Rss::of(self.operator_pid()?)
    }

    /// Waits until the operator used under 2% of a CPU for 3 s in a row (at most 120 s); how long it took.
    async fn wait_operator_idle(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let pid = self.operator_pid()?;
        let mut before = cpu_seconds(pid)?;
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            self.check_alive()?;
            let now = cpu_seconds(pid)?;
            if now - before < 0.06 || started.elapsed() > Duration::from_secs(120) {
                return Ok(started.elapsed());
            }
            before = now;
        }
    }
}

/// CPU time (user + system) a process has used, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks a second.
    Ok((ticks(11) + ticks(12)) / 100.0)
}

/// How many objects of a kind have status conditions, listed in pages.
async fn count_with_conditions<K>(api: &Api<K>) -> Result<usize>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut count = 0;
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        count += page.items.iter().filter(|o| has_conditions(*o)).count();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => params = params.continue_token(&c),
            _ => return Ok(count),
        }
    }
}

fn has_conditions<K: serde::Serialize>(obj: &K) -> bool {
    serde_json::to_value(obj)
        .ok()
        .and_then(|v| v.pointer("/status/conditions").and_then(Value::as_array).map(|c| !c.is_empty()))
        .unwrap_or(false)
}

/// The job name in `/subscriptions/.../jobs/{name}[/...]`.
fn job_of(path: &str) -> Option<&str> {
    let (_, rest) = path.split_once("/jobs/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Resident and peak memory of a process, from /proc.
#[derive(Clone, Copy, Debug)]
struct Rss {
    rss_kib: u64,
    hwm_kib: u64,
    /// Heap and other private memory: what cached objects and buffers cost.
    anon_kib: u64,
    /// Mapped files, mostly the binary's own code.
    file_kib: u64,
}

impl Rss {
    fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
        })
    }

    fn mib(kib: u64) -> f64 {
        kib as f64 / 1024.0
    }
}

fn finetunejob(name: &str, workspace: &str) -> Result<FineTuneJob> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "azureml-operator.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "workspaceRef": {"name": workspace},
            "model": {"registry": "azureml", "name": "Phi-3-mini-4k-instruct", "version": ""},
            "pipelineComponent": {"registry": "azureml", "name": "chat_completion_pipeline"},
            "compute": {"name": "gpu-cluster"},
            "data": {
                "train": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/train_sft.jsonl",
                "test": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/test_sft.jsonl"
            },
            "training": {"numTrainEpochs": 1, "learningRate": 5.0e-6},
            "optimization": {"lora": true},
            "experimentName": "loadtest",
            "onDelete": "Orphan"
        }
    }))?)
}

fn modelregistration(name: &str, workspace: &str, job: &str) -> Result<ModelRegistration> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "azureml-operator.io/v1alpha1",
        "kind": "ModelRegistration",
        "metadata": {"name": name},
        "spec": {
            "workspaceRef": {"name": workspace},
            "source": {"fineTuneJobRef": {"name": job, "output": "trained_model"}},
            "onDelete": "Retain"
        }
    }))?)
}

/// True once a FineTuneJob has an Azure job (Submitted or later).
fn submitted(f: &FineTuneJob) -> bool {
    f.status.as_ref().is_some_and(|s| {
        s.job_name.is_some()
            && matches!(
                s.phase,
                Phase::Submitted | Phase::Running | Phase::Succeeded | Phase::Failed | Phase::Canceled
            )
    })
}

fn stalled(f: &FineTuneJob) -> Option<String> {
    let s = f.status.as_ref()?;
    let c = s.conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True")?;
    Some(format!("{} ({}): {}", f.name_any(), c.reason, c.message))
}

/// Creates objects concurrently, as `kubectl apply` of a large directory would.
async fn create_all<K>(api: &Api<K>, objects: Vec<K>) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    stream::iter(objects)
        .map(|o| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &o).await.map(|_| ()) }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The submission floor of `n` writes with ARM's write bucket, in seconds.
fn write_floor(n: usize) -> f64 {
    (n as f64 - ARM_WRITE_BURST).max(0.0) / ARM_WRITE_REFILL_PER_SEC
}

/// Issue 11 items 1–3 and 6 for `n` jobs: submit at once, poll in steady state, notice a finished job,
/// restart the operator.
async fn jobs_run(bench: &Bench, n: usize, cli: &Cli) -> Result<()> {
    let client = &bench.client;
    let label = format!("jobs-{n}");
    log(&format!("{label}: starting emulator and operator"));
    // Azure's own pace: jobs stay queued/running for half an hour, far longer than the run.
    let mut env = Env::start(bench, &label, 1.0).await?;
    env.start_operator()?;
    env.wait_workspace_ready().await?;
    let api: Api<FineTuneJob> = Api::namespaced(client.clone(), &env.namespace);
    let seq0 = env.last_seq().await?;
    let load0 = load_average();

    // 1 + 2: submission throughput and validation reads.
    log(&format!("{label}: creating {n} FineTuneJobs at once"));
    let started = Instant::now();
    let objects =
        (0..n).map(|i| finetunejob(&format!("ftj-{i:05}"), "default")).collect::<Result<Vec<_>>>()?;
    create_all(&api, objects).await?;
    let created_in = started.elapsed();
    let floor = write_floor(n);
    let deadline = started + Duration::from_secs_f64(floor * 3.0 + 180.0);
    let submit_time = loop {
        env.check_alive()?;
        let list = api.list(&ListParams::default()).await?;
        let done = list.items.iter().filter(|f| submitted(f)).count();
        if let Some(s) = list.items.iter().find_map(stalled) {
            return Err(format!("a FineTuneJob stalled: {s}").into());
        }
        if done == n {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            return Err(format!("only {done}/{n} submitted after {:?}", started.elapsed()).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut names = HashSet::new();
    let sub = env.traffic(seq0, &mut names).await?;
    let ratio = if floor > 0.0 {
        format!("{:.2}×", submit_time.as_secs_f64() / floor)
    } else {
        "n/a (floor 0)".into()
    };
    report!("### {n} FineTuneJobs (emulator time scale 1, operator interval scale 1)\n");
    report!("| figure | value | target |\n|---|---|---|");
    report!("| load average (1 min) at start | {load0} | |");
    report!("| objects created in | {:.1} s | |", created_in.as_secs_f64());
    report!("| all Submitted after | {:.1} s | |", submit_time.as_secs_f64());
    report!("| ARM write-bucket floor max(0, N−200)/10 | {floor:.1} s | |");
    report!("| ratio to the floor | {ratio} | ≤ 1.15× |");
    report!("| 429s from the emulator | {} | 0 |", sub.throttled);
    report!("| job PUTs accepted | {} | {n} |", sub.job_puts);
    report!(
        "| ARM reads before submission, per job | {:.2} ({} reads) | ≤ 1.1 at N = 1,000 |",
        sub.pre_submit_reads as f64 / n as f64,
        sub.pre_submit_reads
    );
    report!("| job polls during submission | {} | |", sub.job_polls);

    // 3: steady-state polling of n running jobs.
    log(&format!("{label}: measuring steady-state polling for {} s", cli.window));
    let seq1 = sub.last_seq;
    let t1 = Instant::now();
    let load1 = load_average();
    tokio::time::sleep(Duration::from_secs(cli.window)).await;
    env.check_alive()?;
    let poll = env.traffic(seq1, &mut names).await?;
    let secs = t1.elapsed().as_secs_f64();
    let reads_per_sec = poll.reads as f64 / secs;
    report!("| polling window | {secs:.0} s (load average {load1}) | |");
    report!("| ARM reads in the window | {} ({reads_per_sec:.2}/s; {} 429s) | |", poll.reads, poll.throttled);
    report!("| ARM reads per job-hour | {:.1} | |", reads_per_sec * 3600.0 / n as f64);
    report!("| busiest 10 s of the window | {:.1} reads/s | |", poll.peak_reads_per_sec);
    report!(
        "| share of the read refill (25/s) | {:.1}% | ≤ 50% at 10,000 |",
        100.0 * reads_per_sec / ARM_READ_REFILL_PER_SEC
    );

    // 3 (cont.): a job that ends is noticed within its poll interval.
    if !cli.skip_finish_detection {
        let victim = api.get("ftj-00000").await?;
        let job = victim.status.as_ref().and_then(|s| s.job_name.clone()).ok_or("ftj-00000 has no job")?;
        let age =
            victim.creation_timestamp().map(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs());
        let interval = Policy::default().job_poll(age.unwrap_or_default(), n);
        env.admin_post("/failures", json!({"kind": "job", "name": job})).await?;
        let t = Instant::now();
        let limit = interval * 2 + Duration::from_secs(30);
        let noticed = loop {
            let f = api.get("ftj-00000").await?;
            if f.status.as_ref().is_some_and(|s| s.phase == Phase::Failed) {
                break Some(t.elapsed());
            }
            if t.elapsed() > limit {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        match noticed {
            Some(d) => report!(
                "| failed job noticed after | {:.1} s (poll interval for its age and {n} jobs: {:.0} s) | ≤ interval |",
                d.as_secs_f64(),
                interval.as_secs_f64()
            ),
            None => report!(
                "| failed job noticed after | not within {:.0} s | ≤ {:.0} s |",
                limit.as_secs_f64(),
                interval.as_secs_f64()
            ),
        }
    }

    // 6: cold start with n jobs (and their Workspace) already in the cluster. Every job is reconciled at
    // once (from the API server, no Azure call), and its first Azure poll is spread over its poll interval
    // (`Policy::first_job_poll`), so the clock runs until every job has been read from Azure once or that
    // interval (plus a minute) has passed, whichever is first.
    log(&format!("{label}: restarting the operator"));
    env.operator = None;
    let seq2 = env.last_seq().await?;
    let load2 = load_average();
    let victim_age = api
        .get("ftj-00000")
        .await?
        .creation_timestamp()
        .map(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs())
        .unwrap_or_default();
    let interval = Policy::default().job_poll(victim_age, n);
    let limit = interval + Duration::from_secs(60);
    let t2 = Instant::now();
    env.start_operator()?;
    let mut reconciled_at = None;
    let (resync, polled_count) = loop {
        env.check_alive()?;
        if reconciled_at.is_none()
            && env.metric_sum("azureml_operator_reconciles_total{kind=\"FineTuneJob\"}").await >= n as u64
        {
            reconciled_at = Some(t2.elapsed());
        }
        let mut polled = HashSet::new();
        for r in env.requests_since(seq2).await? {
            if r["method"] == "GET"
                && let Some(job) = r["path"].as_str().and_then(job_of)
                && names.contains(job)
            {
                polled.insert(job.to_owned());
            }
        }
        if polled.len() >= n {
            break (Some(t2.elapsed()), polled.len());
        }
        if t2.elapsed() > limit {
            break (None, polled.len());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let observed = t2.elapsed();
    let cold = env.traffic(seq2, &mut names).await?;
    let reconciled = reconciled_at.map_or_else(|| "?".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    report!(
        "| cold start: every job reconciled (no Azure call) after | {reconciled} (load average {load2}) | |"
    );
    match resync {
        Some(d) => report!(
            "| cold start: every job read from Azure once after | {:.1} s (their poll interval: {:.0} s) | within the interval |",
            d.as_secs_f64(),
            interval.as_secs_f64()
        ),
        None => report!(
            "| cold start: jobs read from Azure within their poll interval + 60 s | {polled_count} of {n} in {:.0} s (interval {:.0} s) | all |",
            observed.as_secs_f64(),
            interval.as_secs_f64()
        ),
    }
    let mean = cold.reads as f64 / observed.as_secs_f64();
    report!(
        "| cold start: ARM reads / writes / 429s in those {:.0} s | {} / {} / {} | 0 429s |",
        observed.as_secs_f64(),
        cold.reads,
        cold.writes,
        cold.throttled
    );
    report!(
        "| cold start: ARM reads per second, mean / busiest 10 s | {mean:.2} / {:.1} = {:.0}% / {:.0}% of the refill | inside 250 + 25/s |",
        cold.peak_reads_per_sec,
        100.0 * mean / ARM_READ_REFILL_PER_SEC,
        100.0 * cold.peak_reads_per_sec / ARM_READ_REFILL_PER_SEC
    );
    report!("| operator RSS / peak after cold start | {} |  |\n", rss_text(env.rss()?));
    Ok(())
}

fn rss_text(r: Rss) -> String {
    format!(
        "{:.1} MiB / {:.1} MiB (heap and other anonymous {:.1}, files {:.1})",
        Rss::mib(r.rss_kib),
        Rss::mib(r.hwm_kib),
        Rss::mib(r.anon_kib),
        Rss::mib(r.file_kib)
    )
}

/// Issue 11 items 4 and 5 for `n` objects: RSS with them cached, then reaction latency of new jobs.
async fn objects_run(bench: &Bench, n: usize, samples: usize) -> Result<()> {
    let client = &bench.client;
    let label = format!("objects-{n}");
    log(&format!("{label}: starting emulator and operator"));
    let mut env = Env::start(bench, &label, 1.0).await?;
    env.start_operator()?;
    env.wait_workspace_ready().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let base = env.rss()?;
    let load0 = load_average();

    // Half FineTuneJobs, half ModelRegistrations, naming a Workspace that does not exist: cached and
    // reconciled (status, conditions, events) but with no Azure traffic, so only memory is measured.
    log(&format!("{label}: creating {n} objects"));
    let jobs: Api<FineTuneJob> = Api::namespaced(client.clone(), &env.namespace);
    let regs: Api<ModelRegistration> = Api::namespaced(client.clone(), &env.namespace);
    let half = n / 2;
    let started = Instant::now();
    create_all(
        &jobs,
        (0..half).map(|i| finetunejob(&format!("idle-{i:05}"), "absent")).collect::<Result<_>>()?,
    )
    .await?;
    create_all(
        &regs,
        (0..n - half)
            .map(|i| modelregistration(&format!("idle-{i:05}"), "absent", &format!("idle-{i:05}")))
            .collect::<Result<_>>()?,
    )
    .await?;
    let created_in = started.elapsed();
    // Every object reconciled to its resting state (conditions written), then the operator idle (its
    // Event writes done): the latency below is for objects that exist, not for a backlog being worked off.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        env.check_alive()?;
        let ftj = count_with_conditions(&jobs).await?;
        let mreg = count_with_conditions(&regs).await?;
        if ftj >= half && mreg >= n - half {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {ftj}+{mreg} of {n} objects have conditions").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let reconciled_in = started.elapsed();
    let idle_after = env.wait_operator_idle().await?;
    let with = env.rss()?;
    let per_1000 = (Rss::mib(with.rss_kib) - Rss::mib(base.rss_kib)) * 1000.0 / n as f64;
    report!("### {n} cached objects ({half} FineTuneJobs + {} ModelRegistrations)\n", n - half);
    report!("| figure | value | target |\n|---|---|---|");
    report!("| load average (1 min) at start | {load0} | |");
    report!(
        "| created in / all with conditions after / operator idle after | {:.1} s / {:.1} s / {:.1} s | |",
        created_in.as_secs_f64(),
        reconciled_in.as_secs_f64(),
        (reconciled_in + idle_after).as_secs_f64()
    );
    report!("| operator RSS / peak, Workspace only | {} | |", rss_text(base));
    report!("| operator RSS / peak, with {n} objects | {} | ≤ 64 MiB at 10,000 |", rss_text(with));
    report!("| MiB per 1,000 objects (RSS growth) | {per_1000:.2} | |");

    // 5: reaction latency, from the create call to the first Azure request for that job. The first job
    // for the real Workspace fills the validation caches (compute, VM sizes, registry assets), as any
    // job in the last minute would have; it is reported on its own.
    log(&format!("{label}: creating one FineTuneJob with cold caches, then {samples} one by one"));
    let seq0 = env.last_seq().await?;
    let load1 = load_average();
    let mut sent = HashMap::new();
    let at = jiff::Timestamp::now();
    let created = jobs.create(&PostParams::default(), &finetunejob("lat-cold", "default")?).await?;
    sent.insert("lat-cold".to_owned(), (at, created.uid().unwrap_or_default()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !submitted(&jobs.get("lat-cold").await?) {
        env.check_alive()?;
        if Instant::now() > deadline {
            return Err("the cold-cache latency sample was not submitted within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..samples {
        let name = format!("lat-{i:04}");
        let at = jiff::Timestamp::now();
        let created = jobs.create(&PostParams::default(), &finetunejob(&name, "default")?).await?;
        sent.insert(name, (at, created.uid().unwrap_or_default()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Wait until every sample reached Azure (its job name is in status), then read the log once.
    let deadline = Instant::now() + Duration::from_secs(300);
    let job_names = loop {
        env.check_alive()?;
        let list = jobs.list(&ListParams::default()).await?;
        let names: HashMap<String, String> = list
            .items
            .iter()
            .filter(|f| sent.contains_key(&f.name_any()) && submitted(f))
            .filter_map(|f| Some((f.status.as_ref()?.job_name.clone()?, f.name_any())))
            .collect();
        if names.len() == samples + 1 {
            break names;
        }
        if Instant::now() > deadline {
            return Err(format!("only {}/{} latency samples submitted", names.len(), samples + 1).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut first: HashMap<String, jiff::Timestamp> = HashMap::new();
    for r in env.requests_since(seq0).await? {
        let Some(job) = r["path"].as_str().and_then(job_of) else { continue };
        let Some(name) = job_names.get(job) else { continue };
        let Some(time) = r["time"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()) else { continue };
        first.entry(name.clone()).or_insert(time);
    }
    let latency_ms = |name: &str| -> Option<f64> {
        let (at, _) = sent.get(name)?;
        Some(first.get(name)?.duration_since(*at).as_secs_f64() * 1000.0)
    };
    let cold = latency_ms("lat-cold");
    let mut latencies: Vec<f64> =
        first.keys().filter(|n| n.as_str() != "lat-cold").filter_map(|n| latency_ms(n)).collect();
    latencies.sort_by(f64::total_cmp);
    let mut slowest: Vec<(f64, &str)> = first
        .keys()
        .filter(|n| n.as_str() != "lat-cold")
        .filter_map(|n| Some((latency_ms(n)?, n.as_str())))
        .collect();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    log(&format!("{label}: slowest samples {:?}", &slowest[..slowest.len().min(5)]));
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1]
    };
    report!(
        "| reaction latency, first job for the Workspace (validation caches cold) | {} | |",
        cold.map_or_else(|| "?".to_owned(), |ms| format!("{ms:.0} ms"))
    );
    report!(
        "| reaction latency p50 / p99 / max ({} samples, caches warm, load average {load1}) | {:.0} ms / {:.0} ms / {:.0} ms | p99 ≤ 200 ms |",
        latencies.len(),
        pct(50.0),
        pct(99.0),
        pct(100.0)
    );
    report!("| operator RSS / peak at the end | {} | |\n", rss_text(env.rss()?));
    Ok(())
}
