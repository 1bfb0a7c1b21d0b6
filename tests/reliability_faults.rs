//! Faults and misuse: Azure faults injected through the emulator's admin API (throttling, 5xx bursts,
//! dropped connections, slow replies, token outages, failed and never-ending operations), Kubernetes
//! faults (API server outages, cut watches, concurrent writers), manifests Kubernetes accepts but Azure
//! cannot serve, secrets kept out of logs, Events, status and metrics, and deletion that never hangs
//! silently. Each test prints what it tried, how many times, and what held.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use azureml_operator::api::conditions::{self, reasons};
use azureml_operator::api::finetunejob::Phase;
use azureml_operator::api::{FineTuneJob, ModelRegistration, OnlineEndpoint, Workspace};
use azureml_operator::azure::{AzureMl, ClientOptions};
use azureml_operator::controller::{self, Context, policy::Policy};
use azureml_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::operator::{INTERVAL_SCALE, Operator};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound of any wait in these tests.
const WAIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Helpers

type NsResource = k8s_openapi::NamespaceResourceScope;

trait Kind:
    Resource<DynamicType = (), Scope = NsResource> + Clone + DeserializeOwned + Serialize + std::fmt::Debug
{
}
impl<K> Kind for K where
    K: Resource<DynamicType = (), Scope = NsResource>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
{
}

/// `(status, reason, message)` of a condition, read from any kind's JSON.
fn condition<K: Serialize>(obj: &K, type_: &str) -> Option<(String, String, String)> {
    let v = serde_json::to_value(obj).ok()?;
    let c = v["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?.clone();
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

fn stalled<K: Serialize>(obj: &K) -> Option<(String, String)> {
    condition(obj, conditions::STALLED).filter(|c| c.0 == "True").map(|c| (c.1, c.2))
}

fn ready<K: Serialize>(obj: &K) -> bool {
    condition(obj, conditions::READY).is_some_and(|c| c.0 == "True")
}

fn ftj_phase(f: &FineTuneJob) -> Phase {
    f.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn ftj(name: &str, extra: Value) -> Value {
    let mut spec = json!({
        "model": {"registry": "azureml", "name": "Phi-3-mini-4k-instruct"},
        "compute": {"name": "gpu-cluster"},
        "data": {
            "train": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/train_sft.jsonl",
            "test": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/test_sft.jsonl"
        }
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "azureml-operator.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}, "spec": spec})
}

fn mreg(name: &str, source: Value) -> Value {
    json!({"apiVersion": "azureml-operator.io/v1alpha1", "kind": "ModelRegistration", "metadata": {"name": name},
           "spec": {"source": source}})
}

const PHI3_V15: &str = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15";

fn endpoint(name: &str, model: Value, extra: Value) -> Value {
    let mut spec = json!({
        "deployments": [{"name": "demo", "model": model, "instanceType": "Standard_NC6s_v3", "instanceCount": 1}],
        "traffic": {"demo": 100}
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "azureml-operator.io/v1alpha1", "kind": "OnlineEndpoint", "metadata": {"name": name}, "spec": spec})
}

/// Polls until `done` holds, recording every Stalled reason seen on the way.
async fn watch_until<K: Kind>(op: &Operator, name: &str, done: impl Fn(&K) -> bool) -> (K, Vec<String>) {
    let api = op.api::<K>().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        if let Some(obj) = api.get_opt(name).await.expect("read") {
            if let Some((reason, _)) = stalled(&obj)
                && !seen.contains(&reason)
            {
                seen.push(reason);
            }
            if done(&obj) {
                return (obj, seen);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {} {name}; last seen:\n{}",
                K::kind(&()),
                serde_json::to_string_pretty(&obj).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_gone<K: Kind>(op: &Operator, name: &str) {
    op.wait_gone::<K>(name, WAIT).await;
}

/// An emulator admin call the harness has no helper for (PUT, DELETE).
async fn admin(op: &Operator, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new().request(method.clone(), format!("{}{path}", op.emulator.http_url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin call");
    assert!(resp.status().is_success(), "{method} {path}: {}", resp.status());
    resp.json().await.unwrap_or(Value::Null)
}

/// Azure jobs of one FineTuneJob (job names are `<namespace>-<name>-<uid prefix>`).
async fn azure_jobs(op: &Operator, name: &str) -> Vec<Value> {
    let prefix = format!("{}-{name}-", op.namespace);
    let state = op.admin_get("/_emulator/state").await;
    state["jobs"]
        .as_array()
        .map(|js| {
            js.iter()
                .filter(|j| j["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

async fn azure_endpoint(op: &Operator, name: &str) -> Option<Value> {
    let state = op.admin_get("/_emulator/state").await;
    state["endpoints"].as_array()?.iter().find(|e| e["name"] == name).cloned()
}

/// A bearer token for the emulator's ARM, as the operator's principal.
async fn arm_token(op: &Operator) -> String {
    let token: Value = reqwest::Client::new()
        .post(format!("{}/00000000-0000-0000-0000-0000000000aa/oauth2/v2.0/token", op.emulator.http_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "00000000-0000-0000-0000-0000000000cc"),
            ("client_secret", "emulator-secret"),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    token["access_token"].as_str().unwrap_or_default().to_owned()
}

const WORKSPACE_PATH: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-azureml-demo/providers/Microsoft.MachineLearningServices/workspaces/ws-azureml-demo";

// ---------------------------------------------------------------------------------------------
// Log capture: every test in this binary logs into one buffer, so the secrets test checks them all.

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a subscriber writing the operator's logs, down to `trace`, into a buffer.
fn captured_logs() -> &'static Buffer {
    static LOGS: OnceLock<Buffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let filter = tracing_subscriber::EnvFilter::new(
            "azureml_operator=trace,kube=debug,kube_runtime=debug,azure_core=debug,azure_identity=debug,reqwest=debug,info",
        );
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
}

fn log_text() -> String {
    let buffer = captured_logs();
    String::from_utf8_lossy(&buffer.0.lock().map(|b| b.clone()).unwrap_or_default()).into_owned()
}

async fn start(prefix: &str) -> Operator {
    captured_logs();
    Operator::start(prefix).await
}

// ---------------------------------------------------------------------------------------------
// Azure faults that must be survived

/// Each transient fault, on one FineTuneJob's job path, is retried until it passes: the job
/// succeeds, exactly one Azure job exists, and no Stalled condition ever appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_azure_faults_are_survived() {
    let op = start("rel-transient").await;
    let ns = op.namespace.clone();
    // The first `times` requests to the job's path (its GET and its PUT, unless a method is named)
    // meet the fault, then it passes.
    let cases = [
        ("throttled", json!({"status": 429, "retryAfter": 2, "times": 3}), "429 + Retry-After 2 s, 3x"),
        ("burst-500", json!({"status": 500, "times": 4}), "500 burst, 4x"),
        ("burst-503", json!({"status": 503, "times": 4}), "503 burst, 4x"),
        ("dropped", json!({"drop": true, "times": 3}), "connection dropped without reply, 3x"),
        // Only the PUT: the emulator creates the job after the client gave up, so the retry must
        // find it rather than create a second one.
        (
            "slow",
            json!({"method": "PUT", "latencyMs": 7000, "times": 2}),
            "PUT answered after 7 s (client timeout 5 s; applied anyway), 2x",
        ),
    ];
    let mut fault_ids = Vec::new();
    for (name, fault, _) in &cases {
        let mut f = fault.clone();
        f["pathRegex"] = json!(format!("/jobs/{ns}-{name}-[0-9a-f]+$"));
        fault_ids.push(op.admin_post("/_emulator/faults", f).await["id"].clone());
        op.create::<FineTuneJob>(ftj(name, json!({}))).await;
    }
    println!("transient Azure faults (each on its own FineTuneJob):");
    for (name, _, what) in &cases {
        let (f, stalls) = watch_until::<FineTuneJob>(&op, name, |f| ftj_phase(f).is_terminal()).await;
        let jobs = azure_jobs(&op, name).await;
        let faults = op.admin_get("/_emulator/faults").await;
        let hits: u64 = faults["faults"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["spec"]["pathRegex"].as_str().is_some_and(|p| p.contains(&format!("-{name}-"))))
            .map(|x| x["hits"].as_u64().unwrap_or(0))
            .sum();
        println!(
            "  {what}: hits {hits}, outcome {:?}, Azure jobs {}, Stalled seen {stalls:?}",
            ftj_phase(&f),
            jobs.len()
        );
        assert_eq!(ftj_phase(&f), Phase::Succeeded, "{name}: {:#?}", f.status);
        assert_eq!(jobs.len(), 1, "{name}: one Azure job: {jobs:?}");
        assert!(stalls.is_empty(), "{name}: a transient fault surfaced as Stalled: {stalls:?}");
        assert!(hits >= 1, "{name}: the fault was never met");
    }
}

/// The token endpoint down for a while (503 then dropped connections) and every issued token expired
/// mid-workflow: the operator gets new tokens and the workflow completes, never Stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_outage_and_expired_tokens_are_survived() {
    let op = start("rel-token").await;
    op.admin_post("/_emulator/tokens", json!({"expireIssued": true})).await;
    op.admin_post(
        "/_emulator/faults",
        json!({"pathRegex": "/oauth2/v2.0/token$", "status": 503, "times": 4}),
    )
    .await;
    op.admin_post("/_emulator/faults", json!({"pathRegex": "/oauth2/v2.0/token$", "drop": true, "times": 2}))
        .await;
    op.create::<FineTuneJob>(ftj("tok", json!({}))).await;
    // Halfway through, every token the operator holds is expired again.
    let (_, early) = watch_until::<FineTuneJob>(&op, "tok", |f| {
        matches!(ftj_phase(f), Phase::Submitted | Phase::Running | Phase::Succeeded)
    })
    .await;
    op.admin_post("/_emulator/tokens", json!({"expireIssued": true})).await;
    let (f, late) = watch_until::<FineTuneJob>(&op, "tok", |f| ftj_phase(f).is_terminal()).await;
    let token_requests = op.requests_matching("POST", "/oauth2/v2.0/token").await.len();
    let unauthorized = op.requests().await.iter().filter(|r| r["status"] == 401).count();
    println!(
        "token faults: 4x 503 + 2x dropped at the token endpoint, all tokens expired twice; token requests \
         {token_requests}, 401 replies {unauthorized}, outcome {:?}, Stalled seen {:?}",
        ftj_phase(&f),
        [early.clone(), late.clone()].concat()
    );
    assert_eq!(ftj_phase(&f), Phase::Succeeded, "{:#?}", f.status);
    assert!(early.is_empty() && late.is_empty(), "token trouble surfaced as Stalled: {early:?} {late:?}");
    assert_eq!(azure_jobs(&op, "tok").await.len(), 1);
    let ws = op.api::<Workspace>().await.get("default").await.expect("workspace");
    assert!(ready(&ws), "the Workspace is Ready again: {:?}", ws.status);
}

/// Failures that need a person end Stalled with their reason: a job Azure fails, a deployment that
/// fails, a deployment refused for quota, a model registered from a failed job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_failures_stall_with_their_reason() {
    let op = start("rel-failures").await;
    let ns = op.namespace.clone();
    // Job failure, registered for the job's name before it runs.
    let failed = op.create::<FineTuneJob>(ftj("doomed", json!({}))).await;
    let job = azureml_operator::controller::finetunejob::params::job_name(
        &ns,
        "doomed",
        &failed.uid().expect("uid"),
    );
    op.admin_post(
        "/_emulator/failures",
        json!({"kind": "job", "name": job, "code": "UserError", "message": "CUDA out of memory"}),
    )
    .await;
    op.create::<ModelRegistration>(mreg("from-doomed", json!({"fineTuneJobRef": {"name": "doomed"}}))).await;
    // Deployment failure: the next deployment named `demo` in endpoint `broken` fails.
    op.admin_post(
        "/_emulator/failures",
        json!({"kind": "deployment", "name": "demo", "endpoint": "broken", "code": "ResourceNotReady", "message": "Liveness probe failed: model did not load"}),
    )
    .await;
    op.create::<OnlineEndpoint>(endpoint("broken", json!({"assetId": PHI3_V15}), json!({}))).await;

    let mut rows = Vec::new();
    let (f, _) = watch_until::<FineTuneJob>(&op, "doomed", |f| stalled(f).is_some()).await;
    rows.push(("job failed by Azure", reasons::JOB_FAILED, stalled(&f)));
    let (m, _) = watch_until::<ModelRegistration>(&op, "from-doomed", |m| stalled(m).is_some()).await;
    rows.push(("registration of a failed job", reasons::SOURCE_FAILED, stalled(&m)));
    let (oe, _) = watch_until::<OnlineEndpoint>(&op, "broken", |o| stalled(o).is_some()).await;
    rows.push(("deployment failed", reasons::DEPLOYMENT_FAILED, stalled(&oe)));

    // Quota: a second operator and emulator with 4 cores, less than one NC6s_v3 needs.
    let quota = start("rel-quota").await;
    admin(&quota, reqwest::Method::PUT, "/_emulator/quota", Some(json!({"cores": 4}))).await;
    quota.create::<OnlineEndpoint>(endpoint("quota", json!({"assetId": PHI3_V15}), json!({}))).await;
    let (oe, _) = watch_until::<OnlineEndpoint>(&quota, "quota", |o| stalled(o).is_some()).await;
    rows.push(("deployment over quota", reasons::QUOTA_EXCEEDED, stalled(&oe)));

    println!("Azure failures:");
    for (what, want, got) in &rows {
        println!("  {what}: expected Stalled {want}, got {got:?}");
    }
    for (what, want, got) in rows {
        assert_eq!(got.as_ref().map(|g| g.0.as_str()), Some(want), "{what}: {got:?}");
        assert!(got.is_some_and(|g| !g.1.is_empty()), "{what}: the message says why");
    }
    assert_eq!(ftj_phase(&f), Phase::Failed);
}

/// An operation whose status URL answers `InProgress` forever. The operator never submits again while it
/// runs and never hangs: either Azure's own deadline (`x-ms-async-operation-timeout`, compressed by the emulator's
/// time scale) runs out first and the endpoint is Stalled with `OperationTimedOut`, or a later pass reads
/// the endpoint itself as `Succeeded` in Azure and carries on to Ready. Which comes first depends on timing;
/// both are correct, and both end the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ending_operation_ends_without_resubmitting() {
    let op = start("rel-lro").await;
    op.admin_post(
        "/_emulator/faults",
        json!({"method": "GET", "pathRegex": "/mfeOperationsStatus/", "status": 200, "body": {"status": "InProgress"}}),
    )
    .await;
    op.admin_post(
        "/_emulator/faults",
        json!({"method": "GET", "pathRegex": "/mfeOperationResults/", "status": 202, "body": {}}),
    )
    .await;
    op.create::<OnlineEndpoint>(endpoint("forever", json!({"assetId": PHI3_V15}), json!({}))).await;
    let (oe, seen) = watch_until::<OnlineEndpoint>(&op, "forever", |o| {
        ready(o) || stalled(o).is_some_and(|s| s.0 == reasons::OPERATION_TIMED_OUT)
    })
    .await;
    let polls = op.requests_matching("GET", "/mfeOperation").await.len();
    let puts = op.requests_matching("PUT", "/onlineEndpoints/forever").await;
    let endpoint_puts =
        puts.iter().filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/forever"))).count();
    println!(
        "never-ending operation: operation polls {polls}, endpoint PUTs {endpoint_puts}, Stalled seen {seen:?}, \
         ended Ready={} Stalled={:?}",
        ready(&oe),
        stalled(&oe)
    );
    assert!(polls >= 1, "the operation is polled");
    // Once the deadline has passed nothing is in flight any more, and one resync later the controller may
    // try the same PUT again; it never sends a second one while the first operation is running.
    assert!((1..=2).contains(&endpoint_puts), "endpoint PUTs: {endpoint_puts}");
    assert!(seen.iter().all(|r| r == reasons::OPERATION_TIMED_OUT), "no other failure surfaced: {seen:?}");
}

// ---------------------------------------------------------------------------------------------
// Bad input: valid for Kubernetes, wrong for Azure

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_azure_cannot_serve_stall_with_a_reason() {
    let op = start("rel-bad").await;
    let ns = op.namespace.clone();
    let client = op.client().await;
    admin(
        &op,
        reqwest::Method::PUT,
        "/_emulator/computes/nc6s-cluster",
        Some(json!({"vmSize": "Standard_NC6s_v3"})),
    )
    .await;
    admin(
        &op,
        reqwest::Method::PUT,
        "/_emulator/computes/cpu-cluster",
        Some(json!({"vmSize": "Standard_DS3_v2"})),
    )
    .await;
    // A Secret with the right name and key, but in another namespace.
    let elsewhere = support::test_namespace("rel-bad-other").await;
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "foreign-credentials"},
        "stringData": {"clientSecret": "emulator-secret"}}))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &elsewhere)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let bad_secret: Secret = serde_json::from_value(json!({"metadata": {"name": "wrong-credentials"},
        "stringData": {"clientSecret": "not-the-secret"}}))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &bad_secret)
        .await
        .expect("secret");
    let bad_ca: Secret = serde_json::from_value(json!({"metadata": {"name": "not-a-ca"},
        "stringData": {"ca.crt": "this is not PEM"}}))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &bad_ca)
        .await
        .expect("secret");

    let default_ws = op.api::<Workspace>().await.get("default").await.expect("workspace");
    let ws_with = |name: &str, patch: Value| {
        let mut spec = serde_json::to_value(&default_ws.spec).expect("spec");
        json_merge(&mut spec, &patch);
        json!({"apiVersion": "azureml-operator.io/v1alpha1", "kind": "Workspace", "metadata": {"name": name}, "spec": spec})
    };
    let workspaces = [
        (
            "ws-secret-missing",
            json!({"credential": {"secretRef": {"name": "no-such-secret"}}}),
            reasons::SECRET_MISSING,
        ),
        (
            "ws-secret-elsewhere",
            json!({"credential": {"secretRef": {"name": "foreign-credentials"}}}),
            reasons::SECRET_MISSING,
        ),
        (
            "ws-secret-wrong",
            json!({"credential": {"secretRef": {"name": "wrong-credentials"}}}),
            reasons::CREDENTIAL_INVALID,
        ),
        ("ws-not-found", json!({"workspaceName": "ws-does-not-exist"}), reasons::WORKSPACE_NOT_FOUND),
        ("ws-ca-invalid", json!({"caBundleSecretRef": {"name": "not-a-ca"}}), reasons::CA_BUNDLE_INVALID),
    ];
    for (name, patch, _) in &workspaces {
        op.create::<Workspace>(ws_with(name, patch.clone())).await;
    }
    let ftjs = [
        ("unknown-model", json!({"model": {"name": "No-Such-Model"}}), reasons::MODEL_NOT_FOUND),
        ("compute-missing", json!({"compute": {"name": "no-such-cluster"}}), reasons::COMPUTE_NOT_FOUND),
        ("compute-not-allowed", json!({"compute": {"name": "nc6s-cluster"}}), reasons::VM_SIZE_NOT_ALLOWED),
        (
            "compute-no-gpu",
            json!({"model": {"registry": "azureml", "name": "Phi-4-mini-instruct"}, "compute": {"name": "cpu-cluster"}}),
            reasons::NO_GPUS,
        ),
        ("unknown-param", json!({"parameters": {"lora_rank": 16}}), reasons::UNKNOWN_PARAMETER),
        ("ill-typed-param", json!({"parameters": {"lora_r": "eight"}}), reasons::INVALID_PARAMETER),
    ];
    for (name, extra, _) in &ftjs {
        op.create::<FineTuneJob>(ftj(name, extra.clone())).await;
    }
    // An endpoint on a VM size outside the model's inference allow list, and one whose only
    // deployment (the target of all traffic) fails.
    op.create::<OnlineEndpoint>(endpoint(
        "size-not-allowed",
        json!({"assetId": PHI3_V15}),
        json!({"deployments": [{"name": "demo", "model": {"assetId": PHI3_V15}, "instanceType": "Standard_DS3_v2", "instanceCount": 1}]}),
    ))
    .await;
    op.admin_post(
        "/_emulator/failures",
        json!({"kind": "deployment", "name": "demo", "endpoint": "traffic-to-failed", "code": "BadArgument", "message": "Model format not supported by this instance type"}),
    )
    .await;
    op.create::<OnlineEndpoint>(endpoint("traffic-to-failed", json!({"assetId": PHI3_V15}), json!({}))).await;
    // A registration whose model already exists with other content under the pinned version.
    op.create::<ModelRegistration>(mreg(
        "pinned-a",
        json!({"uri": "azureml://datastores/workspaceblobstore/paths/models/a"}),
    ))
    .await;
    let pinned_a =
        watch_until::<ModelRegistration>(&op, "pinned-a", |m| ready(m) || stalled(m).is_some()).await.0;
    let model_name = pinned_a.status.as_ref().and_then(|s| s.model_name.clone()).expect("model name");
    let version = pinned_a.status.as_ref().and_then(|s| s.version.clone()).expect("version");
    let mut conflict =
        mreg("pinned-b", json!({"uri": "azureml://datastores/workspaceblobstore/paths/models/b"}));
    conflict["spec"]["modelName"] = json!(model_name);
    conflict["spec"]["version"] = json!(version);
    op.create::<ModelRegistration>(conflict).await;
    // A registration from the output of a job Azure has never heard of.
    op.create::<ModelRegistration>(mreg(
        "missing-job",
        json!({"uri": "azureml://jobs/no-such-job/outputs/trained_model"}),
    ))
    .await;

    let mut rows: Vec<Row> = Vec::new();
    for (name, _, want) in &workspaces {
        let (w, _) = watch_until::<Workspace>(&op, name, |w| stalled(w).is_some()).await;
        rows.push((format!("Workspace {name}"), want, stalled(&w)));
    }
    for (name, _, want) in &ftjs {
        let (f, _) = watch_until::<FineTuneJob>(&op, name, |f| stalled(f).is_some()).await;
        rows.push((format!("FineTuneJob {name}"), want, stalled(&f)));
    }
    for (name, want) in [
        ("size-not-allowed", reasons::INSTANCE_TYPE_NOT_ALLOWED),
        ("traffic-to-failed", reasons::DEPLOYMENT_FAILED),
    ] {
        let (o, _) = watch_until::<OnlineEndpoint>(&op, name, |o| stalled(o).is_some()).await;
        rows.push((format!("OnlineEndpoint {name}"), want, stalled(&o)));
    }
    let (m, _) = watch_until::<ModelRegistration>(&op, "pinned-b", |m| stalled(m).is_some()).await;
    rows.push(("ModelRegistration pinned-b".into(), reasons::VERSION_CONFLICT, stalled(&m)));
    let (m, _) = watch_until::<ModelRegistration>(&op, "missing-job", |m| stalled(m).is_some()).await;
    rows.push(("ModelRegistration missing-job".into(), reasons::AZURE_REJECTED, stalled(&m)));

    println!("bad input ({} manifests):", rows.len());
    for (what, want, got) in &rows {
        println!("  {what}: expected Stalled {want}, got {:?}", got.as_ref().map(|g| &g.0));
    }
    for (what, want, got) in rows {
        assert_eq!(got.as_ref().map(|g| g.0.as_str()), Some(want), "{what}: {got:?}");
        assert!(got.is_some_and(|g| !g.1.is_empty()), "{what}: the message says what to do");
    }
}

/// One line of a table: what was tried, the Stalled reason expected, the `(reason, message)` seen.
type Row = (String, &'static str, Option<(String, String)>);

fn json_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                json_merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// A workflow whose client secret and endpoint keys are unique strings; afterwards neither appears in
/// the captured logs (every test in this binary), Events, any custom resource, or the metrics text.
/// The scoring URI takes the real key and refuses a wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_events_status_and_metrics() {
    let op = start("rel-secrets").await;
    let ns = op.namespace.clone();
    let client = op.client().await;
    let client_secret = format!("cs-{}", uuid_like());
    let client_id = "00000000-0000-0000-0000-00000000beef";
    admin(
        &op,
        reqwest::Method::PUT,
        &format!("/_emulator/principals/{client_id}"),
        Some(json!({"clientSecret": client_secret})),
    )
    .await;
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "vault-credentials"},
        "stringData": {"clientSecret": client_secret}}))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let default_ws = op.api::<Workspace>().await.get("default").await.expect("workspace");
    let mut spec = serde_json::to_value(&default_ws.spec).expect("spec");
    json_merge(
        &mut spec,
        &json!({"credential": {"clientId": client_id, "secretRef": {"name": "vault-credentials"}}}),
    );
    op.create::<Workspace>(json!({"apiVersion": "azureml-operator.io/v1alpha1", "kind": "Workspace",
        "metadata": {"name": "vault"}, "spec": spec}))
        .await;
    op.create::<OnlineEndpoint>(endpoint(
        "keyed",
        json!({"assetId": PHI3_V15}),
        json!({"workspaceRef": {"name": "vault"}, "keysSecret": {"name": "keyed-keys"},
               "smokeTest": {"request": {"input_data": {"input_string": [{"role": "user", "content": "hi"}], "parameters": {}}}}}),
    ))
    .await;
    let (oe, _) = watch_until::<OnlineEndpoint>(&op, "keyed", ready).await;
    // Regenerate the keys once, so two generations of keys are checked.
    let keys: Secret =
        Api::<Secret>::namespaced(client.clone(), &ns).get("keyed-keys").await.expect("keys Secret");
    let text = |k: &str| {
        keys.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let (primary, secondary, scoring_uri) = (text("primaryKey"), text("secondaryKey"), text("scoringUri"));
    assert!(primary.len() >= 16 && secondary.len() >= 16, "real keys in the keys Secret");
    assert_eq!(oe.status.as_ref().and_then(|s| s.scoring_uri.clone()), Some(scoring_uri.clone()));

    // The scoring URI: the real key works, a wrong one is refused.
    let ca = reqwest::Certificate::from_pem(op.emulator.ca_pem().as_bytes()).expect("CA");
    let http = reqwest::Client::builder().add_root_certificate(ca).build().expect("http");
    let body = json!({"input_data": {"input_string": [{"role": "user", "content": "hi"}], "parameters": {}}});
    let score = |key: String| http.post(&scoring_uri).bearer_auth(key).json(&body).send();
    let right = score(primary.clone()).await.expect("score").status();
    let wrong = score(format!("{primary}x")).await.expect("score").status();
    let none = http.post(&scoring_uri).json(&body).send().await.expect("score").status();

    // Where the values must not be.
    let logs = log_text();
    let events = {
        let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
        let new: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
        let a = core.list(&ListParams::default()).await.expect("events");
        let b = new.list(&ListParams::default()).await.expect("events");
        format!(
            "{}{}",
            serde_json::to_string(&a.items).unwrap_or_default(),
            serde_json::to_string(&b.items).unwrap_or_default()
        )
    };
    let resources = {
        let mut all = String::new();
        for v in [
            serde_json::to_string(
                &op.api::<Workspace>().await.list(&ListParams::default()).await.expect("list").items,
            ),
            serde_json::to_string(
                &op.api::<OnlineEndpoint>().await.list(&ListParams::default()).await.expect("list").items,
            ),
            serde_json::to_string(
                &op.api::<FineTuneJob>().await.list(&ListParams::default()).await.expect("list").items,
            ),
            serde_json::to_string(
                &op.api::<ModelRegistration>().await.list(&ListParams::default()).await.expect("list").items,
            ),
        ] {
            all.push_str(&v.unwrap_or_default());
        }
        all
    };
    let metrics = {
        let mut registry = prometheus_client::registry::Registry::default();
        op.metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics text");
        text
    };
    println!(
        "secrets: scanned {} bytes of logs, {} of Events, {} of custom resources, {} of metrics for the client \
         secret and both endpoint keys; scoring with the real key {right}, a wrong key {wrong}, no key {none}",
        logs.len(),
        events.len(),
        resources.len(),
        metrics.len()
    );
    // Positive controls: the places were not empty and are about this workflow.
    assert!(logs.contains("keyed"), "the captured logs cover this workflow");
    assert!(events.contains("keyed") && resources.contains("keyed") && metrics.contains("OnlineEndpoint"));
    for (what, value) in
        [("client secret", &client_secret), ("primary key", &primary), ("secondary key", &secondary)]
    {
        for (place, text) in
            [("logs", &logs), ("Events", &events), ("custom resources", &resources), ("metrics", &metrics)]
        {
            assert!(!text.contains(value.as_str()), "the {what} appears in {place}");
        }
    }
    assert!(right.is_success(), "the real key scores: {right}");
    assert_eq!(wrong.as_u16(), 401, "a wrong key is refused");
    assert_eq!(none.as_u16(), 401, "no key is refused");
}

/// Not cryptographic: a value unique enough to be found by grep and nowhere else.
fn uuid_like() -> String {
    let nanos = jiff::Timestamp::now().as_nanosecond();
    format!("{:x}{:x}", nanos, rand::random::<u64>())
}

// ---------------------------------------------------------------------------------------------
// Deletion

/// Deletion never hangs: an endpoint Azure already lost is released; the `detach` annotation releases
/// each kind without a single Azure write; a refused delete shows Stalled DeleteFailed until detached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_releases_or_says_why() {
    let op = start("rel-delete").await;
    // 1. Azure lost the endpoint before the resource was deleted.
    op.create::<OnlineEndpoint>(endpoint("lost", json!({"assetId": PHI3_V15}), json!({}))).await;
    watch_until::<OnlineEndpoint>(&op, "lost", ready).await;
    let token = arm_token(&op).await;
    let url =
        format!("{}{WORKSPACE_PATH}/onlineEndpoints/lost?api-version=2024-10-01", op.emulator.http_url());
    let resp = reqwest::Client::new().delete(&url).bearer_auth(&token).send().await.expect("DELETE");
    assert!(resp.status().is_success(), "{}", resp.status());
    let deadline = tokio::time::Instant::now() + WAIT;
    while azure_endpoint(&op, "lost").await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the emulator never deleted it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    op.api::<OnlineEndpoint>().await.delete("lost", &DeleteParams::default()).await.expect("delete");
    wait_gone::<OnlineEndpoint>(&op, "lost").await;

    // 2. Detach: one of each kind, all live in Azure, released without an Azure write.
    op.create::<FineTuneJob>(ftj("kept-job", json!({}))).await;
    op.create::<ModelRegistration>(mreg(
        "kept-model",
        json!({"uri": "azureml://datastores/workspaceblobstore/paths/models/x"}),
    ))
    .await;
    op.create::<OnlineEndpoint>(endpoint("kept-endpoint", json!({"assetId": PHI3_V15}), json!({}))).await;
    watch_until::<FineTuneJob>(&op, "kept-job", |f| {
        matches!(ftj_phase(f), Phase::Running | Phase::Submitted)
    })
    .await;
    watch_until::<ModelRegistration>(&op, "kept-model", ready).await;
    watch_until::<OnlineEndpoint>(&op, "kept-endpoint", ready).await;
    admin(&op, reqwest::Method::DELETE, "/_emulator/requests", None).await;
    let detach = Patch::Merge(
        json!({"metadata": {"annotations": {"azureml-operator.io/reconcile-policy": "detach"}}}),
    );
    let pp = PatchParams::default();
    op.api::<FineTuneJob>().await.patch("kept-job", &pp, &detach).await.expect("annotate");
    op.api::<ModelRegistration>().await.patch("kept-model", &pp, &detach).await.expect("annotate");
    op.api::<OnlineEndpoint>().await.patch("kept-endpoint", &pp, &detach).await.expect("annotate");
    op.api::<FineTuneJob>().await.delete("kept-job", &DeleteParams::default()).await.expect("delete");
    op.api::<ModelRegistration>().await.delete("kept-model", &DeleteParams::default()).await.expect("delete");
    op.api::<OnlineEndpoint>().await.delete("kept-endpoint", &DeleteParams::default()).await.expect("delete");
    wait_gone::<FineTuneJob>(&op, "kept-job").await;
    wait_gone::<ModelRegistration>(&op, "kept-model").await;
    wait_gone::<OnlineEndpoint>(&op, "kept-endpoint").await;
    let writes: Vec<Value> = op
        .requests()
        .await
        .into_iter()
        .filter(|r| {
            r["method"] != "GET" && r["path"].as_str().is_some_and(|p| p.starts_with("/subscriptions/"))
        })
        .collect();
    assert!(writes.is_empty(), "detached resources touched Azure: {writes:?}");
    assert!(azure_endpoint(&op, "kept-endpoint").await.is_some(), "the endpoint stays in Azure");

    // 3. A refused delete is not a silent hang.
    op.create::<OnlineEndpoint>(endpoint("refused", json!({"assetId": PHI3_V15}), json!({}))).await;
    watch_until::<OnlineEndpoint>(&op, "refused", ready).await;
    op.admin_post(
        "/_emulator/faults",
        json!({"method": "DELETE", "pathRegex": "/onlineEndpoints/refused$", "status": 409,
               "body": {"error": {"code": "Conflict", "message": "Endpoint is locked by a management lock."}}}),
    )
    .await;
    op.api::<OnlineEndpoint>().await.delete("refused", &DeleteParams::default()).await.expect("delete");
    let (oe, _) = watch_until::<OnlineEndpoint>(&op, "refused", |o| stalled(o).is_some()).await;
    let why = stalled(&oe);
    op.api::<OnlineEndpoint>().await.patch("refused", &pp, &detach).await.expect("annotate");
    wait_gone::<OnlineEndpoint>(&op, "refused").await;
    println!(
        "deletion: endpoint lost in Azure released; FineTuneJob, ModelRegistration and OnlineEndpoint detached \
         with {} Azure writes; refused delete showed {why:?} and was released by detach",
        writes.len()
    );
    assert_eq!(why.as_ref().map(|w| w.0.as_str()), Some(reasons::DELETE_FAILED));
    assert!(why.is_some_and(|w| w.1.contains("management lock")));
}

// ---------------------------------------------------------------------------------------------
// Kubernetes faults

/// A TCP proxy in front of the API server: `cut()` severs every open connection (watches included),
/// `outage()` also refuses new ones for a while — what clients see while kube-apiserver restarts.
struct ApiProxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ApiProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (up2, conns2, accepted2) = (up.clone(), conns.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection reset
                }
                accepted2.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut c) = conns2.lock() {
                    c.retain(|h| !h.is_finished());
                    c.push(handle);
                }
            }
        });
        Self { port, up, conns, accepted, task }
    }

    fn cut(&self) -> usize {
        let handles: Vec<JoinHandle<()>> =
            self.conns.lock().map(|mut c| c.drain(..).collect()).unwrap_or_default();
        let open = handles.iter().filter(|h| !h.is_finished()).count();
        for h in handles {
            h.abort();
        }
        open
    }

    async fn outage(&self, length: Duration) -> usize {
        self.up.store(false, Ordering::SeqCst);
        let cut = self.cut();
        tokio::time::sleep(length).await;
        self.up.store(true, Ordering::SeqCst);
        cut
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// The operator talks to the API server through a proxy that is taken down (as for a restart) and whose
/// connections are cut, while another writer keeps changing the resources' metadata (so the operator's
/// reads are always stale and every change re-triggers a reconcile). Status is written by forced
/// server-side apply, which has no resourceVersion to conflict on; what this checks is that the
/// churn loses and duplicates nothing: one job, one model version, one endpoint, Ready, never Stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_outages_cut_watches_and_conflicts_lose_no_work() {
    let mut op = start("rel-kube").await;
    op.kill(); // the harness's controllers use a direct client; ours go through the proxy
    let ns = op.namespace.clone();
    let cp = support::cluster().await;
    let mut config = cp.config().await.expect("kubeconfig");
    let upstream = config.cluster_url.authority().map(|a| a.to_string()).expect("apiserver address");
    let proxy = ApiProxy::start(upstream).await;
    config.cluster_url = format!("https://127.0.0.1:{}", proxy.port).parse().expect("url");
    let proxied = Client::try_from(config).expect("client");
    let azure =
        AzureMl::new(ClientOptions { request_timeout: Duration::from_secs(5), ..ClientOptions::default() });
    let ctx =
        Arc::new(Context::new(proxied, azure, Policy::scaled(INTERVAL_SCALE), Arc::new(Metrics::default())));
    let controllers = tokio::spawn(controller::run_all(ctx, Some(ns.clone())));

    op.create::<FineTuneJob>(ftj("kube", json!({}))).await;
    op.create::<ModelRegistration>(mreg("kube", json!({"fineTuneJobRef": {"name": "kube"}}))).await;
    op.create::<OnlineEndpoint>(endpoint(
        "kube",
        json!({"modelRegistrationRef": {"name": "kube"}}),
        json!({}),
    ))
    .await;

    // Another writer: annotations on all three, as fast as the API server takes them.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (stop, writes, client) = (stop.clone(), writes.clone(), op.client().await);
        let ns = ns.clone();
        tokio::spawn(async move {
            let (f, m, o) = (
                Api::<FineTuneJob>::namespaced(client.clone(), &ns),
                Api::<ModelRegistration>::namespaced(client.clone(), &ns),
                Api::<OnlineEndpoint>::namespaced(client, &ns),
            );
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let p = Patch::Merge(
                    json!({"metadata": {"annotations": {"example.com/touched": n.to_string()}}}),
                );
                let pp = PatchParams::default();
                let ok = f.patch("kube", &pp, &p).await.is_ok()
                    & m.patch("kube", &pp, &p).await.is_ok()
                    & o.patch("kube", &pp, &p).await.is_ok();
                if ok {
                    writes.fetch_add(3, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let (mut outages, mut cuts, mut severed) = (0, 0, 0);
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    let mut stalls = Vec::new();
    loop {
        let oe = op.api::<OnlineEndpoint>().await.get("kube").await.expect("read");
        let f = op.api::<FineTuneJob>().await.get("kube").await.expect("read");
        let m = op.api::<ModelRegistration>().await.get("kube").await.expect("read");
        for s in [stalled(&oe), stalled(&f), stalled(&m)].into_iter().flatten() {
            stalls.push(s);
        }
        if ready(&oe) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not Ready: {:#?}", oe.status);
        if outages < 3 && (cuts + outages) % 3 == 2 {
            severed += proxy.outage(Duration::from_secs(3)).await;
            outages += 1;
        } else if cuts < 20 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            severed += proxy.cut();
            cuts += 1;
        } else {
            // Enough faults: let the workflow finish, bounding the test's time.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = churn.await;
    let jobs = azure_jobs(&op, "kube").await.len();
    let model_puts = op.requests_matching("PUT", "/versions/").await.len();
    let state = op.admin_get("/_emulator/state").await;
    let mname = op
        .api::<ModelRegistration>()
        .await
        .get("kube")
        .await
        .expect("read")
        .status
        .and_then(|s| s.model_name);
    let versions = state["models"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"].as_str() == mname.as_deref()))
        .and_then(|m| m["versions"].as_array().map(Vec::len))
        .unwrap_or(0);
    let endpoints =
        state["endpoints"].as_array().map(|e| e.iter().filter(|e| e["name"] == "kube").count()).unwrap_or(0);
    println!(
        "Kubernetes faults: {outages} API server outages of 3 s, {cuts} cuts, {severed} connections severed, \
         {} connections accepted, {} concurrent metadata writes; Azure jobs {jobs}, model versions {versions} \
         ({model_puts} PUTs), endpoints {endpoints}; Stalled seen {stalls:?}",
        proxy.accepted.load(Ordering::SeqCst),
        writes.load(Ordering::SeqCst)
    );
    controllers.abort();
    assert!(outages >= 1 && cuts >= 1, "the faults happened");
    assert_eq!((jobs, versions, endpoints), (1, 1, 1));
    assert!(stalls.is_empty(), "{stalls:?}");
}
