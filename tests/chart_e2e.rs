//! End-to-end tests of the operator binary running as the Helm chart's ServiceAccount: the whole
//! notebook workflow under the chart's RBAC (any missing permission shows as a stuck resource),
//! and leader election with two replicas, where a standby takes over after the leader is killed.
//!
//! The chart is rendered with the pinned helm (`hack/helm/build.sh`) and applied to the test
//! control plane; the operator runs as a child process against an in-process Azure ML emulator.
#![forbid(unsafe_code)]

mod support;

use support::chart::{apply_all, template};
use support::operator::{create_emulator_secrets, emulator_workspace};

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use azureml_emulator::{Config as EmulatorConfig, Emulator, RunningEmulator};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams},
};
use serde_json::Value;

/// How much faster than Azure the emulator runs.
const EMULATOR_TIME_SCALE: f64 = 600.0;
/// The operator's intervals, scaled to match the emulator.
const INTERVAL_SCALE: &str = "0.01";
/// How long one resource may take to become Ready (the fine-tune job is the slowest).
const READY_TIMEOUT: Duration = Duration::from_secs(240);
/// The operator's lease duration and grace (src/main.rs) plus a margin for a loaded machine.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(40);

/// The chart installed namespace-scoped: release in `release_ns`, watching `watched`.
struct Install {
    release_ns: String,
    watched: String,
    /// The ServiceAccount's name, which is also the Lease's name.
    service_account: String,
    /// A kubeconfig file that authenticates as the chart's ServiceAccount.
    kubeconfig: PathBuf,
    /// Where the operators' logs go.
    dir: tempfile::TempDir,
}

impl Install {
    /// Renders and applies the chart with `watchNamespace`, and writes a kubeconfig for its
    /// ServiceAccount.
    async fn new(release: &str) -> Self {
        let admin = support::client().await;
        let release_ns = support::test_namespace(&format!("{release}-rel")).await;
        let watched = support::test_namespace(&format!("{release}-watched")).await;
        let docs = template(release, &release_ns, &[&format!("watchNamespace={watched}")]);
        apply_all(&admin, &docs, "chart-e2e").await;
        let service_account = format!("{release}-azureml-operator");
        let cluster = support::cluster().await;
        let token =
            cluster.service_account_token(&release_ns, &service_account).await.expect("ServiceAccount token");
        let kubeconfig = cluster.token_kubeconfig(&token).expect("token kubeconfig");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kubeconfig");
        // JSON is YAML, which is what KUBECONFIG files are read as.
        fs::write(&path, serde_json::to_vec(&kubeconfig).expect("kubeconfig JSON"))
            .expect("write kubeconfig");
        Self { release_ns, watched, service_account, kubeconfig: path, dir }
    }

    /// Starts the operator binary as the chart's ServiceAccount, with leader election on the
    /// chart's Lease and `identity` as its holder identity.
    fn spawn(&self, identity: &str) -> Operator {
        let port = free_port();
        let log = self.dir.path().join(format!("operator-{identity}.log"));
        let file = fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_azureml-operator"))
            .args([
                "run",
                "--namespace",
                &self.watched,
                "--interval-scale",
                INTERVAL_SCALE,
                "--azure-request-timeout",
                "5",
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--leader-election",
                "--lease-namespace",
                &self.release_ns,
                "--lease-name",
                &self.service_account,
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start azureml-operator");
        Operator {
            identity: identity.to_string(),
            child,
            log,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        }
    }

    /// The holder of the chart's Lease, if any.
    async fn lease_holder(&self) -> Option<String> {
        Api::<Lease>::namespaced(support::client().await, &self.release_ns)
            .get_opt(&self.service_account)
            .await
            .expect("read the Lease")
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
    }
}

/// An operator child process, killed (SIGKILL) and reaped when dropped.
struct Operator {
    identity: String,
    child: Child,
    log: PathBuf,
    metrics: String,
}

impl Operator {
    /// The last lines of the operator's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("--- operator {} log tail ({}) ---\n{tail}", self.identity, self.log.display())
    }

    /// Panics (with the log) if the process has exited, or at once if the API server refused it
    /// something: the chart's RBAC does not change at run time, so a 403 never heals by retrying.
    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("operator {} exited ({status})\n{}", self.identity, self.log_tail());
        }
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(refused) = log.lines().find(|l| l.contains("Forbidden")) {
            panic!("the chart's RBAC refused operator {} something:\n{refused}", self.identity);
        }
    }

    /// The sum of `azureml_operator_azure_requests_total` over all labels, once /metrics answers.
    async fn azure_requests(&mut self) -> f64 {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("http client");
        let deadline = Instant::now() + Duration::from_secs(30);
        let text = loop {
            self.assert_alive();
            match http.get(&self.metrics).send().await {
                Ok(resp) if resp.status().is_success() => break resp.text().await.expect("metrics body"),
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                other => panic!("{} did not serve /metrics: {other:?}\n{}", self.metrics, self.log_tail()),
            }
        };
        text.lines()
            .filter(|l| l.starts_with("azureml_operator_azure_requests_total"))
            .filter_map(|l| l.rsplit(' ').next())
            .map(|v| v.parse::<f64>().expect("a counter value"))
            .sum()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now (the OS picks it; it is released before the operator binds).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("local addr").port()
}

/// Starts the emulator and puts the credential and CA Secrets into `namespace`.
async fn start_emulator(namespace: &str) -> RunningEmulator {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emulator = Emulator::start(EmulatorConfig::default().with_time_scale(EMULATOR_TIME_SCALE))
        .await
        .expect("emulator starts");
    create_emulator_secrets(&support::client().await, namespace, &emulator).await;
    emulator
}

/// One of the notebook's manifests from examples/.
fn example(file: &str) -> Value {
    let path: &Path = &support::repo_root().join("examples").join(file);
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn api(client: &Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("azureml-operator.io", "v1alpha1", kind);
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk))
}

/// Creates an operator resource (as the admin, i.e. as a user would) in `namespace`.
async fn create(namespace: &str, manifest: Value) {
    let kind = manifest["kind"].as_str().expect("kind").to_string();
    let obj: DynamicObject = serde_json::from_value(manifest).expect("a Kubernetes object");
    api(&support::client().await, namespace, &kind)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
}

/// The status of condition `type_` of an object, if set.
fn condition<'a>(obj: &'a DynamicObject, type_: &str) -> Option<&'a str> {
    obj.data["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?["status"].as_str()
}

/// Waits until `kind/name` is Ready, failing early if it is Stalled or the operator died, and
/// with the operator's log tail (where a 403 would show) on failure.
async fn wait_ready(namespace: &str, kind: &str, name: &str, timeout: Duration, operator: &mut Operator) {
    let api = api(&support::client().await, namespace, kind);
    let deadline = Instant::now() + timeout;
    loop {
        operator.assert_alive();
        let last = api.get_opt(name).await.expect("read");
        if let Some(obj) = &last {
            if condition(obj, "Ready") == Some("True") {
                return;
            }
            assert!(
                condition(obj, "Stalled") != Some("True") && Instant::now() < deadline,
                "{kind} {name} did not become Ready; last seen:\n{}\n{}",
                serde_json::to_string_pretty(&obj.data["status"]).unwrap_or_default(),
                operator.log_tail()
            );
        } else {
            assert!(Instant::now() < deadline, "{kind} {name} does not exist\n{}", operator.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The notebook's workflow, run by the operator binary with only the rights the chart grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_runs_under_the_charts_rbac() {
    let install = Install::new("e2e-rbac").await;
    let ns = install.watched.clone();
    let emulator = start_emulator(&ns).await;
    let mut operator = install.spawn("rbac-0");

    create(&ns, emulator_workspace("default", &emulator)).await;
    wait_ready(&ns, "Workspace", "default", READY_TIMEOUT, &mut operator).await;
    for (file, kind, name) in [
        ("finetunejob.yaml", "FineTuneJob", "phi3-ultrachat"),
        ("modelregistration.yaml", "ModelRegistration", "ultrachat-200k"),
        ("onlineendpoint.yaml", "OnlineEndpoint", "ultrachat-completion"),
    ] {
        let manifest = example(file);
        assert_eq!(manifest["metadata"]["name"], name, "examples/{file} names its resource {name}");
        create(&ns, manifest).await;
        wait_ready(&ns, kind, name, READY_TIMEOUT, &mut operator).await;
    }
    // The endpoint's keys Secret was written with the chart's rights.
    Api::<Secret>::namespaced(support::client().await, &ns)
        .get("ultrachat-completion-keys")
        .await
        .unwrap_or_else(|e| panic!("the keys Secret exists: {e}\n{}", operator.log_tail()));

    let endpoints = api(&support::client().await, &ns, "OnlineEndpoint");
    endpoints.delete("ultrachat-completion", &DeleteParams::default()).await.expect("delete the endpoint");
    let deadline = Instant::now() + READY_TIMEOUT;
    while endpoints.get_opt("ultrachat-completion").await.expect("read").is_some() {
        operator.assert_alive();
        assert!(Instant::now() < deadline, "the OnlineEndpoint was not removed\n{}", operator.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator.assert_alive();
    drop(emulator);
}

/// Two replicas on one Lease: one acts, the other makes no Azure request; when the leader is
/// killed, the standby takes the Lease and does new work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_takes_over_within_the_lease() {
    let install = Install::new("e2e-ha").await;
    let ns = install.watched.clone();
    let emulator = start_emulator(&ns).await;
    let mut replicas = vec![install.spawn("replica-a"), install.spawn("replica-b")];

    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = loop {
        for r in &mut replicas {
            r.assert_alive();
        }
        if let Some(h) = install.lease_holder().await {
            break h;
        }
        assert!(Instant::now() < deadline, "nobody took the Lease\n{}", replicas[0].log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leader_index = replicas
        .iter()
        .position(|r| r.identity == holder)
        .unwrap_or_else(|| panic!("the Lease is held by {holder}, which is neither replica"));
    let mut standby = replicas.remove(1 - leader_index);
    let mut leader = replicas.remove(0);

    create(&ns, emulator_workspace("default", &emulator)).await;
    wait_ready(&ns, "Workspace", "default", READY_TIMEOUT, &mut leader).await;
    assert_eq!(
        install.lease_holder().await.as_deref(),
        Some(leader.identity.as_str()),
        "the Lease stayed put"
    );
    assert!(leader.azure_requests().await > 0.0, "the leader did the Workspace's Azure requests");
    assert_eq!(
        standby.azure_requests().await,
        0.0,
        "the standby must not call Azure while the other holds the Lease\n{}",
        standby.log_tail()
    );

    leader.child.kill().expect("SIGKILL the leader");
    leader.child.wait().expect("reap the leader");
    let killed = Instant::now();
    create(&ns, emulator_workspace("second", &emulator)).await;

    let took_lease = loop {
        standby.assert_alive();
        if install.lease_holder().await.as_deref() == Some(standby.identity.as_str()) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < TAKEOVER_LIMIT,
            "the standby did not take the Lease within {TAKEOVER_LIMIT:?}\n{}",
            standby.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_ready(&ns, "Workspace", "second", TAKEOVER_LIMIT.saturating_sub(killed.elapsed()), &mut standby)
        .await;
    let reconciled = killed.elapsed();
    println!(
        "takeover: {} took the Lease {:.1}s after the leader was killed; the new Workspace was Ready after {:.1}s",
        standby.identity,
        took_lease.as_secs_f64(),
        reconciled.as_secs_f64()
    );
    assert!(standby.azure_requests().await > 0.0, "the new leader calls Azure");
    drop(emulator);
}
