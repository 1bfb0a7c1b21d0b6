//! `cargo xtask demo`: the notebook's whole workflow on the local control plane and the Azure ML emulator.
//!
//! Starts real processes — etcd and kube-apiserver, the emulator, the operator — applies `examples/`,
//! shows progress the way a user would watch it, invokes the endpoint through `azureml-operator invoke`,
//! deletes the endpoint, checks that Azure (the emulator) no longer has it, and stops everything. Exits
//! non-zero as soon as a step fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::control_plane::{ControlPlane, Options};

/// Where the emulator listens; `examples/workspace.yaml` points here.
const EMULATOR_HTTPS_PORT: u16 = 18443;
const EMULATOR_HTTP_PORT: u16 = 18080;
/// The emulator runs 600× faster than Azure; the operator's intervals shrink to match.
const TIME_SCALE: &str = "600";
const INTERVAL_SCALE: &str = "0.01";
const NAMESPACE: &str = "azureml-demo";
/// The longest the whole workflow may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(240);

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// A child process killed when dropped.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&log)?;
        let child = cmd.stdout(file.try_clone()?).stderr(file).stdin(Stdio::null()).spawn()?;
        Ok(Self { name, child, log })
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let tail = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(20).collect();
            return Err(format!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
            .into());
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the demo's programs come from.
pub enum Binaries {
    /// Build them with cargo first (the demo command).
    Build,
    /// Use these (a test that already has them built).
    Prebuilt { operator: PathBuf, emulator: PathBuf },
}

/// Runs the demo. `repo` is the repository root.
pub async fn run(repo: &Path, binaries: Binaries) -> Result<()> {
    let started = Instant::now();
    let say = |msg: &str| println!("[{:>6.1}s] {msg}", started.elapsed().as_secs_f64());

    let (operator_bin, emulator_bin) = match binaries {
        Binaries::Prebuilt { operator, emulator } => (operator, emulator),
        Binaries::Build => {
            say("building azureml-operator and azureml-emulator");
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "--locked",
                    "-p",
                    "azureml-operator",
                    "-p",
                    "azureml-emulator",
                    "--bins",
                ])
                .current_dir(repo)
                .status()?;
            if !status.success() {
                return Err("cargo build failed".into());
            }
            let bin_dir = target_dir(repo).join("debug");
            (bin_dir.join("azureml-operator"), bin_dir.join("azureml-emulator"))
        }
    };

    say("starting the local control plane (etcd + kube-apiserver)");
    let cp = ControlPlane::start(Options::default()).await?;
    let installed = cp.install_crds(&repo.join("crds")).await?;
    say(&format!("installed CRDs: {}", installed.join(", ")));
    let work = cp.dir().to_path_buf();
    let client = cp.client().await?;

    say(&format!(
        "starting the Azure ML emulator on https://127.0.0.1:{EMULATOR_HTTPS_PORT} (time scale {TIME_SCALE}x)"
    ));
    let ca_path = work.join("emulator-ca.pem");
    let mut emulator = Process::spawn(
        "azureml-emulator",
        Command::new(&emulator_bin).args([
            "--https-port",
            &EMULATOR_HTTPS_PORT.to_string(),
            "--http-port",
            &EMULATOR_HTTP_PORT.to_string(),
            "--ca-out",
            &ca_path.to_string_lossy(),
            "--time-scale",
            TIME_SCALE,
        ]),
        work.join("emulator.log"),
    )?;
    wait_until(STEP_TIMEOUT, || async { ca_path.exists() && emulator_ready().await })
        .await
        .map_err(|_| "emulator did not start")?;
    emulator.check_alive()?;

    say(&format!("creating namespace {NAMESPACE} and the emulator's CA Secret"));
    apply_yaml(&client, None, &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"))
        .await?;
    let ca = std::fs::read_to_string(&ca_path)?;
    let ca_secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "azureml-emulator-ca"},
        "stringData": {"ca.crt": ca}
    });
    apply_value(&client, Some(NAMESPACE), ca_secret).await?;

    say("starting the operator");
    let mut operator = Process::spawn(
        "azureml-operator",
        Command::new(&operator_bin)
            .args([
                "run",
                "--namespace",
                NAMESPACE,
                "--interval-scale",
                INTERVAL_SCALE,
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env("RUST_LOG", "warn"),
        work.join("operator.log"),
    )?;

    for file in ["workspace.yaml", "finetunejob.yaml", "modelregistration.yaml", "onlineendpoint.yaml"] {
        say(&format!("kubectl apply -f examples/{file}"));
        apply_yaml(&client, Some(NAMESPACE), &std::fs::read_to_string(repo.join("examples").join(file))?)
            .await?;
    }

    say("watching progress (kubectl get azureml -w)");
    let mut watcher = Progress::default();
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        operator.check_alive()?;
        emulator.check_alive()?;
        let objects = list_all(&client).await?;
        for line in watcher.changes(&objects) {
            say(&line);
        }
        if let Some(stalled) = objects.iter().find(|o| condition(o, "Stalled").is_some_and(|c| c.0 == "True"))
        {
            let (_, reason, message) = condition(stalled, "Stalled").unwrap_or_default();
            return Err(format!(
                "{} {} is Stalled ({reason}): {message}",
                kind_of(stalled),
                stalled.name_any()
            )
            .into());
        }
        let endpoint_ready = objects
            .iter()
            .any(|o| kind_of(o) == "OnlineEndpoint" && condition(o, "Ready").is_some_and(|c| c.0 == "True"));
        if endpoint_ready {
            break;
        }
        if Instant::now() > deadline {
            return Err("the workflow did not finish in time; see the statuses above".into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let objects = list_all(&client).await?;
    for o in &objects {
        let status = &o.data["status"];
        match kind_of(o).as_str() {
            "FineTuneJob" => {
                say(&format!("display name: {}", status["displayName"].as_str().unwrap_or("?")));
                say(&format!("studio URL: {}", status["studioUrl"].as_str().unwrap_or("?")));
                say(&format!("resolved model: {}", status["resolvedModel"]["id"].as_str().unwrap_or("?")));
                say("effective parameters:");
                if let Some(params) = status["effectiveParameters"].as_object() {
                    for (k, v) in params {
                        println!("           {k} = {}", v.as_str().unwrap_or_default());
                    }
                }
                say(&format!("trained model: {}", status["outputs"]["trainedModel"].as_str().unwrap_or("?")));
            }
            "ModelRegistration" => say(&format!(
                "registered model: {} ({})",
                status["assetId"].as_str().unwrap_or("?"),
                status["modelId"].as_str().unwrap_or("?")
            )),
            "OnlineEndpoint" => {
                say(&format!("scoring URI: {}", status["scoringUri"].as_str().unwrap_or("?")));
                say(&format!("traffic: {}", status["traffic"]));
                if !status["lastSmokeTest"].is_null() {
                    say(&format!("smoke test: {}", status["lastSmokeTest"]));
                }
            }
            _ => {}
        }
    }

    say("azureml-operator invoke ultrachat-completion --deployment demo --file examples/sample_score.json");
    let output = Command::new(&operator_bin)
        .args(["invoke", "ultrachat-completion", "-n", NAMESPACE, "--deployment", "demo", "--file"])
        .arg(repo.join("examples/sample_score.json"))
        .env("KUBECONFIG", cp.kubeconfig_path())
        .output()?;
    if !output.status.success() {
        return Err(format!("invoke failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    println!("{}", String::from_utf8_lossy(&output.stdout).trim_end());

    say("kubectl delete onlineendpoint ultrachat-completion (step 9: stop paying for the endpoint)");
    let endpoints: Api<DynamicObject> = dynamic_api(&client, Some(NAMESPACE), "OnlineEndpoint").await?;
    endpoints.delete("ultrachat-completion", &DeleteParams::default()).await?;
    wait_until(STEP_TIMEOUT, || async {
        matches!(endpoints.get_opt("ultrachat-completion").await, Ok(None))
    })
    .await
    .map_err(|_| "the OnlineEndpoint's finalizer was not released")?;
    say("the OnlineEndpoint is gone from Kubernetes (finalizer released)");
    let state = emulator_state().await?;
    let left = state["onlineEndpoints"]
        .as_array()
        .map(Vec::len)
        .or_else(|| state["endpoints"].as_array().map(Vec::len));
    match left {
        Some(0) => say("the emulator has no online endpoint left"),
        Some(n) => return Err(format!("the emulator still has {n} online endpoint(s)").into()),
        None => return Err(format!("unexpected emulator state: {state}").into()),
    }

    say("stopping the operator, the emulator and the control plane");
    drop(operator);
    drop(emulator);
    drop(cp);
    say("demo finished: every step of the notebook worked");
    Ok(())
}

fn target_dir(repo: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo.join("target"))
}

async fn emulator_ready() -> bool {
    emulator_state().await.is_ok()
}

async fn emulator_state() -> Result<Value> {
    let url = format!("http://127.0.0.1:{EMULATOR_HTTP_PORT}/_emulator/state");
    let body = http_get(&url).await?;
    Ok(serde_json::from_str(&body)?)
}

/// A minimal HTTP/1.1 GET over plain TCP (the admin API is local and unauthenticated).
async fn http_get(url: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or("not an http URL")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {url}: {}", head.lines().next().unwrap_or_default()).into());
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(())
}

async fn dynamic_api(client: &Client, ns: Option<&str>, kind: &str) -> Result<Api<DynamicObject>> {
    let gvk = match kind {
        "Namespace" | "Secret" => GroupVersionKind::gvk("", "v1", kind),
        other => GroupVersionKind::gvk("azureml-operator.io", "v1alpha1", other),
    };
    let (resource, caps) = pinned_kind(client, &gvk).await?;
    Ok(match (ns, caps.scope) {
        (Some(ns), kube::discovery::Scope::Namespaced) => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    })
}

async fn apply_value(client: &Client, ns: Option<&str>, doc: Value) -> Result<()> {
    let kind = doc["kind"].as_str().ok_or("document without kind")?.to_owned();
    let name = doc["metadata"]["name"].as_str().ok_or("document without name")?.to_owned();
    let api = dynamic_api(client, ns, &kind).await?;
    api.patch(&name, &PatchParams::apply("azureml-operator-demo").force(), &Patch::Apply(&doc)).await?;
    Ok(())
}

async fn apply_yaml(client: &Client, ns: Option<&str>, text: &str) -> Result<()> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)?;
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        apply_value(client, ns, doc).await?;
    }
    Ok(())
}

async fn list_all(client: &Client) -> Result<Vec<DynamicObject>> {
    let mut out = Vec::new();
    for kind in ["Workspace", "FineTuneJob", "ModelRegistration", "OnlineEndpoint"] {
        let api = dynamic_api(client, Some(NAMESPACE), kind).await?;
        for mut o in api.list(&Default::default()).await?.items {
            o.types = Some(kube::core::TypeMeta {
                api_version: "azureml-operator.io/v1alpha1".into(),
                kind: kind.into(),
            });
            out.push(o);
        }
    }
    Ok(out)
}

fn kind_of(o: &DynamicObject) -> String {
    o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default()
}

/// (status, reason, message) of a condition.
fn condition(o: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let list = o.data["status"]["conditions"].as_array()?;
    let c = list.iter().find(|c| c["type"] == type_)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// Remembers what was printed, to print only changes.
#[derive(Default)]
struct Progress {
    seen: BTreeMap<String, String>,
}

impl Progress {
    fn changes(&mut self, objects: &[DynamicObject]) -> Vec<String> {
        let mut lines = Vec::new();
        for o in objects {
            let key = format!("{}/{}", kind_of(o), o.name_any());
            let status = &o.data["status"];
            let phase = status["phase"]
                .as_str()
                .or_else(|| status["provisioningState"].as_str())
                .map(|p| format!(" {p}"))
                .unwrap_or_default();
            let (ready, reason, message) = condition(o, "Ready").unwrap_or_default();
            let azure = status["azureStatus"].as_str().map(|s| format!(" azure={s}")).unwrap_or_default();
            let line = format!("{key}{phase}{azure} Ready={ready} {reason}: {message}");
            if self.seen.get(&key) != Some(&line) {
                self.seen.insert(key, line.clone());
                lines.push(line);
            }
        }
        lines
    }
}
