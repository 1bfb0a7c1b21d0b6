//! The OnlineEndpoint controller against a real API server and the Azure ML emulator: notebook steps
//! 7–9 end to end, blue/green, quota failure, drift, a restart mid-operation, and deletion.
//!
//! Deployments serve registry model assets (`assetId`), so no ModelRegistration is involved, except
//! in the rollout test, which writes a ModelRegistration's status itself. Only the Workspace and
//! OnlineEndpoint controllers run, with intervals matched to a 1000x emulator.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azureml_emulator::{BucketConfig, Config as EmulatorConfig, Emulator, RunningEmulator, ThrottleConfig};
use azureml_operator::api::conditions::{self, reasons};
use azureml_operator::api::{self, ModelRegistration, OnlineEndpoint, Workspace};
use azureml_operator::azure::{AzureMl, ClientOptions};
use azureml_operator::controller::policy::Policy;
use azureml_operator::controller::{Context, onlineendpoint, workspace};
use azureml_operator::metrics::Metrics;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use support::operator::{
    EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET, EMULATOR_TENANT, create_emulator_secrets, emulator_workspace,
};
const WORKSPACE_PATH: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-azureml-demo/providers/Microsoft.MachineLearningServices/workspaces/ws-azureml-demo";
/// Registry models the emulator seeds; Phi-3's inference allow list contains Standard_NC6s_v3.
const PHI3_V15: &str = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15";
const PHI3_V14: &str = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/14";
const WAIT: Duration = Duration::from_secs(60);

/// The notebook's request (`sample_score.json`).
fn sample_request() -> Value {
    json!({
        "input_data": {
            "input_string": [{"role": "user", "content": "What is the tallest mountain in Europe?"}],
            "parameters": {"temperature": 0.6, "top_p": 0.9, "do_sample": true, "max_new_tokens": 200}
        },
        "params": {}
    })
}

/// The emulator, the Workspace and OnlineEndpoint controllers, one namespace.
struct Harness {
    ns: String,
    client: Client,
    emulator: RunningEmulator,
    http: reqwest::Client,
    task: Option<JoinHandle<()>>,
}

impl Harness {
    /// Starts an emulator (1000× faster than Azure: a deployment takes 0.9 s), a namespace with a
    /// Ready Workspace `default` pointing at it, and the controllers.
    async fn start(prefix: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let generous = BucketConfig { capacity: 100_000, refill_per_second: 10_000.0 };
        let throttle =
            ThrottleConfig { reads: generous.clone(), writes: generous.clone(), deletes: generous };
        let config = EmulatorConfig::default().with_time_scale(1000.0).with_throttle(throttle);
        let emulator = Emulator::start(config).await.expect("emulator starts");
        let ns = support::test_namespace(prefix).await;
        let client = support::client().await;
        create_emulator_secrets(&client, &ns, &emulator).await;
        let ws: Workspace = serde_json::from_value(emulator_workspace("default", &emulator)).unwrap();
        Api::<Workspace>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &ws)
            .await
            .expect("workspace created");
        let ca = reqwest::Certificate::from_pem(emulator.ca_pem().as_bytes()).expect("CA parses");
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client");
        let mut h = Self { ns, client, emulator, http, task: None };
        h.start_controllers();
        let workspaces: Api<Workspace> = Api::namespaced(h.client.clone(), &h.ns);
        wait_until(WAIT, "Workspace default Ready", || async {
            let ws = workspaces.get("default").await.ok()?;
            conditions::is_ready(&ws.status?.conditions, None).then_some(())
        })
        .await;
        h
    }

    /// The operator's intervals for the 1000× emulator: operations polled every ~100 ms, resync 2 s.
    fn policy() -> Policy {
        Policy {
            scale: 0.1,
            resync: Duration::from_secs(20),
            operation_poll: Duration::from_secs(1),
            retry_after_floor: Duration::from_secs(1),
            dependency_wait: Duration::from_secs(2),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            ..Policy::default()
        }
    }

    /// Starts the controllers with empty caches, as a restarted pod would.
    fn start_controllers(&mut self) {
        self.kill();
        let azure = AzureMl::new(ClientOptions {
            request_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        });
        let ctx =
            Arc::new(Context::new(self.client.clone(), azure, Self::policy(), Arc::new(Metrics::default())));
        let ns = Some(self.ns.clone());
        self.task = Some(tokio::spawn(async move {
            tokio::join!(workspace::run(ctx.clone(), ns.clone()), onlineendpoint::run(ctx, ns));
        }));
    }

    /// Stops the controllers wherever they are (what SIGKILL does: nothing is flushed).
    fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    fn endpoints(&self) -> Api<OnlineEndpoint> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create(&self, name: &str, spec: Value) -> OnlineEndpoint {
        let oe: OnlineEndpoint = serde_json::from_value(json!({
            "apiVersion": "azureml-operator.io/v1alpha1",
            "kind": "OnlineEndpoint",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("manifest matches the type");
        self.endpoints().create(&PostParams::default(), &oe).await.expect("OnlineEndpoint created")
    }

    async fn patch_spec(&self, name: &str, spec: Value) {
        self.endpoints()
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
            .await
            .expect("spec patched");
    }

    /// Waits until `check` passes on the endpoint, panicking with its last state.
    async fn wait_endpoint(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&OnlineEndpoint) -> bool,
    ) -> OnlineEndpoint {
        let api = self.endpoints();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let last = api.get_opt(name).await.expect("read OnlineEndpoint");
            if let Some(oe) = last.as_ref().filter(|oe| check(oe)) {
                return oe.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last seen:\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_ready(&self, name: &str) -> OnlineEndpoint {
        self.wait_endpoint(name, "Ready", |oe| {
            oe.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions, oe.metadata.generation))
        })
        .await
    }

    async fn wait_gone(&self, name: &str) {
        let api = self.endpoints();
        wait_until(WAIT, "OnlineEndpoint released", || async {
            api.get_opt(name).await.expect("read").is_none().then_some(())
        })
        .await;
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.emulator.http_url()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin call");
        assert!(resp.status().is_success(), "admin {path}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }

    async fn state(&self) -> Value {
        self.admin(reqwest::Method::GET, "/_emulator/state", None).await
    }

    /// The emulator's view of one endpoint.
    async fn azure_endpoint(&self, name: &str) -> Option<Value> {
        let state = self.state().await;
        state["endpoints"].as_array()?.iter().find(|e| e["name"] == name).cloned()
    }

    /// Requests the emulator received with this method, whose path ends with `suffix`.
    async fn requests(&self, method: &str, suffix: &str) -> Vec<Value> {
        let log = self.admin(reqwest::Method::GET, "/_emulator/requests", None).await;
        log["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                r["method"] == method
                    && r["path"]
                        .as_str()
                        .is_some_and(|p| p.to_ascii_lowercase().ends_with(&suffix.to_ascii_lowercase()))
            })
            .collect()
    }

    /// Requests like [`Self::requests`] received after `seq`.
    async fn requests_since(&self, seq: u64, method: &str, suffix: &str) -> Vec<Value> {
        let mut found = self.requests(method, suffix).await;
        found.retain(|r| r["seq"].as_u64().is_some_and(|s| s > seq));
        found
    }

    /// Waits until the operator has made at least `passes` more passes over endpoint `name` (each pass
    /// GETs the endpoint once) after `seq`.
    async fn wait_passes(&self, name: &str, seq: u64, passes: usize) {
        let suffix = format!("/onlineEndpoints/{name}");
        wait_until(WAIT, "more reconcile passes", || async {
            (self.requests_since(seq, "GET", &suffix).await.len() >= passes).then_some(())
        })
        .await;
    }

    /// Writes requests the emulator received since `seq`, other than GETs.
    async fn writes_since(&self, seq: u64) -> Vec<Value> {
        let log = self.admin(reqwest::Method::GET, &format!("/_emulator/requests?since={seq}"), None).await;
        log["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                r["method"] != "GET" && r["path"].as_str().is_some_and(|p| p.starts_with("/subscriptions/"))
            })
            .collect()
    }

    async fn last_seq(&self) -> u64 {
        self.admin(reqwest::Method::GET, "/_emulator/requests", None).await["lastSeq"].as_u64().unwrap_or(0)
    }

    /// An ARM call made "in the portal": with our own token, straight to the emulator.
    async fn arm(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let token: Value = self
            .http
            .post(format!("{}/{EMULATOR_TENANT}/oauth2/v2.0/token", self.emulator.https_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", EMULATOR_CLIENT_ID),
                ("client_secret", EMULATOR_CLIENT_SECRET),
                ("scope", "https://management.azure.com/.default"),
            ])
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token JSON");
        let url = format!("{}{WORKSPACE_PATH}{path}?api-version=2025-12-01", self.emulator.https_url());
        let mut req =
            self.http.request(method, url).bearer_auth(token["access_token"].as_str().unwrap_or_default());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("ARM call");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The Events with `reason`, waiting a little for the first: the operator writes Events in the
    /// background, so one can land just after the status that reports the same transition.
    async fn events(&self, reason: &str) -> Vec<Event> {
        let api = Api::<Event>::namespaced(self.client.clone(), &self.ns);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<Event> = api
                .list(&ListParams::default())
                .await
                .expect("list events")
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .collect();
            if !found.is_empty() || tokio::time::Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn deployment(name: &str, model: &str) -> Value {
    json!({
        "name": name,
        "model": {"assetId": model},
        "instanceType": "Standard_NC6s_v3",
        "instanceCount": 1,
        "livenessProbe": {"initialDelaySeconds": 600},
        "requestSettings": {"requestTimeoutMs": 90000}
    })
}

fn condition<'a>(
    oe: &'a OnlineEndpoint,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    oe.status.as_ref().and_then(|s| conditions::find(&s.conditions, type_))
}

fn secret_text(secret: &Secret, key: &str) -> String {
    let data = secret.data.clone().unwrap_or_default();
    String::from_utf8(data.get(key).map(|b| b.0.clone()).unwrap_or_default()).expect("utf-8")
}

/// Notebook steps 7–9: endpoint, deployment `demo` with the notebook's settings, traffic 100% to it,
/// keys Secret, smoke test, a scoring request through `invoke`, then deletion until Azure has no
/// endpoint left; steady state in between sends nothing but GETs and one `listKeys` per pass (to
/// notice rotated keys).
#[tokio::test]
async fn create_serve_invoke_and_delete() {
    let h = Harness::start("oep-life").await;
    h.create(
        "ultrachat",
        json!({
            "description": "Online endpoint for Phi-3-mini-4k-instruct",
            "deployments": [deployment("demo", PHI3_V15)],
            "traffic": {"demo": 100},
            "keysSecret": {"name": "ultrachat-keys"},
            "smokeTest": {"deployment": "demo", "request": sample_request()}
        }),
    )
    .await;
    let oe = h.wait_ready("ultrachat").await;
    let status = oe.status.clone().expect("status");
    assert_eq!(status.endpoint_name.as_deref(), Some("ultrachat"));
    assert_eq!(status.traffic, BTreeMap::from([("demo".to_owned(), 100)]));
    assert_eq!(status.provisioning_state.as_deref(), Some("Succeeded"));
    assert!(status.operations.is_empty(), "{:?}", status.operations);
    let scoring_uri = status.scoring_uri.clone().expect("scoring URI");
    assert_eq!(status.deployments.len(), 1);
    assert_eq!(status.deployments[0].provisioning_state.as_deref(), Some("Succeeded"));
    let smoke = status.last_smoke_test.clone().expect("smoke test ran");
    assert!(smoke.passed && smoke.deployment == "demo" && smoke.http_status == Some(200), "{smoke:?}");
    assert_eq!(condition(&oe, "SmokeTestPassed").map(|c| c.status.as_str()), Some("True"));

    // Azure got the notebook's deployment.
    let azure = h.azure_endpoint("ultrachat").await.expect("endpoint in Azure");
    assert_eq!(azure["traffic"], json!({"demo": 100}));
    assert_eq!(azure["deployments"][0]["instanceType"], "Standard_NC6s_v3");
    let puts = h.requests("PUT", "/onlineEndpoints/ultrachat/deployments/demo").await;
    assert_eq!(puts.len(), 1, "one deployment PUT");
    let body = &puts[0]["body"];
    assert_eq!(body["properties"]["model"], PHI3_V15);
    assert_eq!(body["sku"]["capacity"], 1);
    assert_eq!(body["properties"]["livenessProbe"]["initialDelay"], "PT600S");
    assert_eq!(body["properties"]["requestSettings"]["requestTimeout"], "PT90S");
    let endpoint_puts = h.requests("PUT", "/onlineEndpoints/ultrachat").await;
    assert_eq!(endpoint_puts.len(), 2, "create without traffic, then traffic");
    assert_eq!(endpoint_puts[0]["body"]["properties"]["traffic"], json!({}));
    assert_eq!(endpoint_puts[1]["body"]["properties"]["traffic"], json!({"demo": 100}));

    // The keys Secret: scoring URI and both keys, owned by the endpoint; keys nowhere in status.
    let secret =
        Api::<Secret>::namespaced(h.client.clone(), &h.ns).get("ultrachat-keys").await.expect("keys Secret");
    assert_eq!(secret_text(&secret, "scoringUri"), scoring_uri);
    let primary = secret_text(&secret, "primaryKey");
    assert!(!primary.is_empty() && !secret_text(&secret, "secondaryKey").is_empty());
    let owner = &secret.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("OnlineEndpoint", "ultrachat"));
    assert_eq!(Some(owner.uid.as_str()), oe.metadata.uid.as_deref());
    assert_eq!(owner.controller, Some(true));
    assert!(!serde_json::to_string(&oe.status).unwrap().contains(&primary), "a key leaked into status");

    // Steady state: two resyncs later, nothing but GETs and listKeys went to ARM.
    let seq = h.last_seq().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes: Vec<Value> = h
        .writes_since(seq)
        .await
        .into_iter()
        .filter(|r| !r["path"].as_str().is_some_and(|p| p.ends_with("/listKeys")))
        .collect();
    assert!(writes.is_empty(), "steady state wrote to Azure: {writes:#?}");

    assert_eq!(h.requests("POST", "/inference/ultrachat/score").await.len(), 1, "one smoke test per rollout");

    // Step 8: invoke `demo` with the notebook's request.
    let azure_ml = AzureMl::new(ClientOptions::default());
    let reply = azureml_operator::invoke::invoke(
        h.client.clone(),
        &azure_ml,
        &h.ns,
        "ultrachat",
        Some("demo"),
        sample_request(),
    )
    .await
    .expect("invoke");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply_json: Value = serde_json::from_str(&reply.body).expect("JSON reply");
    assert!(reply_json["output"].as_str().is_some_and(|o| !o.is_empty()), "{}", reply.body);
    let unknown = azureml_operator::invoke::invoke(
        h.client.clone(),
        &azure_ml,
        &h.ns,
        "ultrachat",
        Some("nope"),
        sample_request(),
    )
    .await;
    assert!(matches!(unknown, Err(azureml_operator::invoke::Error::UnknownDeployment { .. })), "{unknown:?}");

    // Step 9: delete; the finalizer goes only once Azure has no endpoint.
    h.endpoints().delete("ultrachat", &DeleteParams::default()).await.expect("delete");
    h.wait_gone("ultrachat").await;
    assert!(h.azure_endpoint("ultrachat").await.is_none(), "endpoint still in Azure");
    assert_eq!(h.requests("DELETE", "/onlineEndpoints/ultrachat").await.len(), 1, "one DELETE");
}

/// Blue/green: two deployments at 90/10, then the spec moves everything to green and drops blue:
/// traffic moves first, and blue is deleted only after its traffic is gone.
#[tokio::test]
async fn blue_green_rollout() {
    let h = Harness::start("oep-bg").await;
    h.create(
        "bluegreen",
        json!({
            "deployments": [deployment("blue", PHI3_V14), deployment("green", PHI3_V15)],
            "traffic": {"blue": 90, "green": 10}
        }),
    )
    .await;
    let oe = h.wait_ready("bluegreen").await;
    assert_eq!(
        oe.status.unwrap().traffic,
        BTreeMap::from([("blue".to_owned(), 90), ("green".to_owned(), 10)])
    );
    let created = h.requests("PUT", "/deployments/blue").await.len()
        + h.requests("PUT", "/deployments/green").await.len();
    assert_eq!(created, 2);

    h.patch_spec(
        "bluegreen",
        // A merge patch merges maps: `null` drops the share of blue.
        json!({"deployments": [deployment("green", PHI3_V15)], "traffic": {"blue": null, "green": 100}}),
    )
    .await;
    let oe = h
        .wait_endpoint("bluegreen", "green only, Ready", |oe| {
            let s = oe.status.as_ref();
            s.is_some_and(|s| {
                conditions::is_ready(&s.conditions, oe.metadata.generation)
                    && s.deployments.iter().map(|d| d.name.as_str()).collect::<Vec<_>>() == ["green"]
            })
        })
        .await;
    assert_eq!(oe.status.unwrap().traffic.get("green"), Some(&100));
    let azure = h.azure_endpoint("bluegreen").await.expect("endpoint");
    let names: Vec<&str> =
        azure["deployments"].as_array().unwrap().iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(names, ["green"]);
    // Order: the traffic update reached Azure before the DELETE of blue.
    let traffic_put = h
        .requests("PUT", "/onlineEndpoints/bluegreen")
        .await
        .into_iter()
        .find(|r| r["body"]["properties"]["traffic"] == json!({"green": 100}))
        .expect("traffic PUT");
    let delete = h.requests("DELETE", "/deployments/blue").await;
    assert_eq!(delete.len(), 1);
    assert!(traffic_put["seq"].as_u64() < delete[0]["seq"].as_u64(), "blue deleted before its traffic moved");
    // Green was never re-sent: unchanged deployments are not written.
    assert_eq!(h.requests("PUT", "/deployments/green").await.len(), 1);
}

/// A deployment that runs out of quota in Azure stalls the endpoint with Azure's own message, and the
/// failed request is not re-sent on every pass.
#[tokio::test]
async fn quota_failure_stalls_with_azures_message() {
    let h = Harness::start("oep-quota").await;
    // Standard_NC6s_v3 has 6 vCPUs.
    h.admin(reqwest::Method::PUT, "/_emulator/quota", Some(json!({"cores": 4}))).await;
    h.create("quota", json!({"deployments": [deployment("demo", PHI3_V15)], "traffic": {"demo": 100}})).await;
    let oe = h
        .wait_endpoint("quota", "Stalled", |oe| {
            condition(oe, conditions::STALLED).is_some_and(|c| c.status == "True")
        })
        .await;
    let stalled = condition(&oe, conditions::STALLED).unwrap();
    assert_eq!(stalled.reason, reasons::QUOTA_EXCEEDED);
    assert!(
        stalled.message.contains("Not enough quota available for Standard_NC6s_v3"),
        "{}",
        stalled.message
    );
    assert_eq!(condition(&oe, conditions::READY).map(|c| c.status.as_str()), Some("False"));
    assert!(!h.events(reasons::QUOTA_EXCEEDED).await.is_empty(), "a Warning event on the transition");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.requests("PUT", "/deployments/demo").await.len(), 1, "the failed PUT was repeated");
    // Traffic was never pointed at the failed deployment.
    assert_eq!(h.azure_endpoint("quota").await.unwrap()["traffic"], json!({}));
}

/// Traffic and instance count changed in the portal are put back on the next resync, with an Event.
#[tokio::test]
async fn drift_is_restored() {
    let mut h = Harness::start("oep-drift").await;
    h.create(
        "drift",
        json!({
            "deployments": [deployment("blue", PHI3_V14), deployment("green", PHI3_V15)],
            "traffic": {"blue": 100}
        }),
    )
    .await;
    h.wait_ready("drift").await;
    // Both changes land while the operator is down, so its next pass sees them together.
    h.kill();
    let (status, body) = h
        .arm(
            reqwest::Method::PATCH,
            "/onlineEndpoints/drift",
            Some(json!({"properties": {"traffic": {"blue": 20, "green": 80}}})),
        )
        .await;
    assert!(status < 300, "portal traffic change refused: {status} {body}");
    let (status, body) = h
        .arm(
            reqwest::Method::PATCH,
            "/onlineEndpoints/drift/deployments/green",
            Some(json!({"sku": {"capacity": 3}})),
        )
        .await;
    assert!(status < 300, "portal scale refused: {status} {body}");
    wait_until(WAIT, "Azure shows the drift", || async {
        let e = h.azure_endpoint("drift").await?;
        let green = e["deployments"].as_array()?.iter().find(|d| d["name"] == "green")?.clone();
        (e["traffic"]["green"] == 80 && green["instanceCount"] == 3).then_some(())
    })
    .await;
    h.start_controllers();
    wait_until(WAIT, "drift restored in Azure", || async {
        let e = h.azure_endpoint("drift").await?;
        let green = e["deployments"].as_array()?.iter().find(|d| d["name"] == "green")?.clone();
        let traffic_back = e["traffic"].get("green").and_then(Value::as_u64).unwrap_or(0) == 0
            && e["traffic"]["blue"] == 100;
        (traffic_back && green["instanceCount"] == 1 && green["provisioningState"] == "Succeeded")
            .then_some(())
    })
    .await;
    let oe = h.wait_ready("drift").await;
    assert_eq!(oe.status.unwrap().traffic.get("blue"), Some(&100));
    let notes: Vec<String> = h.events("DriftCorrected").await.into_iter().filter_map(|e| e.note).collect();
    assert!(notes.iter().any(|n| n.contains("traffic") && n.contains("instanceCount")), "{notes:?}");
}

/// An operator killed while the deployment is being created resumes polling the persisted operation
/// after the restart: exactly one PUT of the deployment ever reaches Azure.
#[tokio::test]
async fn restart_mid_creation_resumes_without_a_second_put() {
    let mut h = Harness::start("oep-restart").await;
    h.create("restart", json!({"deployments": [deployment("demo", PHI3_V15)], "traffic": {"demo": 100}}))
        .await;
    h.wait_endpoint("restart", "deployment operation persisted", |oe| {
        oe.status.as_ref().is_some_and(|s| s.operations.iter().any(|o| o.target == "deployment/demo"))
    })
    .await;
    h.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.start_controllers();
    let oe = h.wait_ready("restart").await;
    assert_eq!(oe.status.unwrap().traffic.get("demo"), Some(&100));
    assert_eq!(h.requests("PUT", "/deployments/demo").await.len(), 1, "the deployment was PUT twice");
    assert_eq!(h.requests("PUT", "/onlineEndpoints/restart").await.len(), 2, "endpoint create + traffic");
}

/// An endpoint Azure already deleted (while the operator was down) is released at once: 404 is gone.
#[tokio::test]
async fn delete_after_azure_already_deleted_it() {
    let mut h = Harness::start("oep-gone").await;
    h.create("gone", json!({"deployments": [deployment("demo", PHI3_V15)], "traffic": {"demo": 100}})).await;
    h.wait_ready("gone").await;
    h.kill();
    let (status, body) = h.arm(reqwest::Method::DELETE, "/onlineEndpoints/gone", None).await;
    assert!(status < 300, "{status} {body}");
    wait_until(WAIT, "Azure deleted the endpoint", || async {
        h.azure_endpoint("gone").await.is_none().then_some(())
    })
    .await;
    h.endpoints().delete("gone", &DeleteParams::default()).await.expect("delete");
    h.start_controllers();
    h.wait_gone("gone").await;
    assert_eq!(h.requests("DELETE", "/onlineEndpoints/gone").await.len(), 1, "only the portal's DELETE");
}

/// `onDelete: Retain` leaves the endpoint in Azure and releases the resource.
#[tokio::test]
async fn retain_leaves_the_endpoint() {
    let h = Harness::start("oep-retain").await;
    h.create(
        "kept",
        json!({"deployments": [deployment("demo", PHI3_V15)], "traffic": {"demo": 100}, "onDelete": "Retain"}),
    )
    .await;
    h.wait_ready("kept").await;
    h.endpoints().delete("kept", &DeleteParams::default()).await.expect("delete");
    h.wait_gone("kept").await;
    assert!(h.azure_endpoint("kept").await.is_some());
    assert!(h.requests("DELETE", "/onlineEndpoints/kept").await.is_empty());
}

/// Writes a ModelRegistration's status as its controller would once it registered `model_id`.
async fn registration_ready(h: &Harness, name: &str, model_id: &str) {
    let api: Api<ModelRegistration> = Api::namespaced(h.client.clone(), &h.ns);
    let now = jiff::Timestamp::now().to_string();
    let condition = |type_: &str, status: &str| {
        json!({"type": type_, "status": status, "reason": "Registered", "message": "registered",
               "observedGeneration": 1, "lastTransitionTime": now})
    };
    let status = json!({"status": {
        "modelId": model_id,
        "assetId": model_id,
        "baseModel": {"id": PHI3_V15, "name": "Phi-3-mini-4k-instruct", "version": "15"},
        "observedGeneration": 1,
        "conditions": [condition("Ready", "True"), condition("Reconciling", "False"), condition("Stalled", "False")]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.expect("status written");
}

fn deployed_model(azure: &Value, deployment: &str) -> Option<String> {
    azure["deployments"].as_array()?.iter().find(|d| d["name"] == deployment)?["model"]
        .as_str()
        .map(str::to_owned)
}

/// A deployment that names a ModelRegistration waits for it (ModelNotReady), deploys its model, and
/// rolls when the registration's model id changes, running the smoke test again; the last result,
/// naming the model it tested, stays in status through the rollout. An instance type outside the base
/// model's inference allow list (found through the registration's lineage) stalls.
#[tokio::test]
async fn model_registration_drives_rollouts() {
    let h = Harness::start("oep-mreg").await;
    let mreg: ModelRegistration = serde_json::from_value(json!({
        "apiVersion": "azureml-operator.io/v1alpha1",
        "kind": "ModelRegistration",
        "metadata": {"name": "phi3-ft"},
        "spec": {"source": {"uri": "azureml://jobs/ftj-1/outputs/trained_model"}, "version": "1"}
    }))
    .unwrap();
    Api::<ModelRegistration>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &mreg)
        .await
        .expect("ModelRegistration created");
    let by_registration = |instance_type: &str| {
        json!({
            "deployments": [{"name": "demo", "model": {"modelRegistrationRef": {"name": "phi3-ft"}}, "instanceType": instance_type}],
            "traffic": {"demo": 100},
            "smokeTest": {"request": sample_request()}
        })
    };
    h.create("rolling", by_registration("Standard_NC6s_v3")).await;
    h.wait_endpoint("rolling", "ModelNotReady", |oe| {
        condition(oe, conditions::READY).is_some_and(|c| c.reason == reasons::MODEL_NOT_READY)
    })
    .await;
    assert!(h.requests("PUT", "/deployments/demo").await.is_empty(), "deployed before the model was ready");

    registration_ready(&h, "phi3-ft", PHI3_V14).await;
    let first = h.wait_ready("rolling").await;
    let first_smoke = first.status.and_then(|s| s.last_smoke_test).expect("smoke test");
    // The emulator's reply names the model that answered.
    assert!(
        first_smoke.message.as_deref().is_some_and(|m| m.contains("Phi-3-mini-4k-instruct:14")),
        "{first_smoke:?}"
    );
    assert_eq!(first_smoke.model.as_deref(), Some(PHI3_V14));
    assert_eq!(
        deployed_model(&h.azure_endpoint("rolling").await.unwrap(), "demo").as_deref(),
        Some(PHI3_V14)
    );

    // Every status the rollout goes through, from a watch (polling could miss a short state).
    let seen: Arc<std::sync::Mutex<Vec<OnlineEndpoint>>> = Arc::default();
    let watch = {
        let seen = seen.clone();
        let stream = watcher(h.endpoints(), watcher::Config::default().fields("metadata.name=rolling"));
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream.applied_objects());
            while let Some(Ok(oe)) = stream.next().await {
                seen.lock().unwrap().push(oe);
            }
        })
    };

    // A new model version: the deployment rolls, traffic stays, the smoke test runs again.
    registration_ready(&h, "phi3-ft", PHI3_V15).await;
    wait_until(WAIT, "deployment rolled to the new model", || async {
        let azure = h.azure_endpoint("rolling").await?;
        (deployed_model(&azure, "demo").as_deref() == Some(PHI3_V15)).then_some(())
    })
    .await;
    let rolled = h
        .wait_endpoint("rolling", "Ready after the rollout with a new smoke test", |oe| {
            let s = oe.status.as_ref();
            s.is_some_and(|s| {
                conditions::is_ready(&s.conditions, oe.metadata.generation)
                    && s.last_smoke_test.as_ref().is_some_and(|t| {
                        t.passed
                            && t.message.as_deref().is_some_and(|m| m.contains("Phi-3-mini-4k-instruct:15"))
                    })
            })
        })
        .await;
    watch.abort();
    let rolled_status = rolled.status.clone().unwrap();
    assert_eq!(rolled_status.last_smoke_test.and_then(|t| t.model).as_deref(), Some(PHI3_V15));
    // Until the new test ran, status kept the old result, naming the old model, and said the test
    // was owed; it was never empty.
    let history = seen.lock().unwrap().clone();
    let tested: Vec<Option<String>> = history
        .iter()
        .map(|oe| {
            oe.status
                .as_ref()
                .and_then(|s| s.last_smoke_test.as_ref())
                .map(|t| t.model.clone().unwrap_or_default())
        })
        .collect();
    assert!(tested.iter().all(Option::is_some), "the result was cleared during the rollout: {tested:?}");
    assert!(
        history.iter().any(|oe| {
            let owed = condition(oe, "SmokeTestPassed").is_some_and(|c| {
                c.status == "Unknown" && c.message.contains("Phi-3-mini-4k-instruct/versions/14")
            });
            let kept = oe
                .status
                .as_ref()
                .and_then(|s| s.last_smoke_test.as_ref())
                .is_some_and(|t| t.model.as_deref() == Some(PHI3_V14));
            owed && kept
        }),
        "no status showed the v14 result as outdated during the rollout: {tested:?}"
    );
    assert_eq!(rolled_status.traffic.get("demo"), Some(&100));
    let puts = h.requests("PUT", "/onlineEndpoints/rolling/deployments/demo").await;
    assert_eq!(puts.len(), 2, "create, then one roll");
    assert_eq!(puts[1]["body"]["properties"]["model"], PHI3_V15);

    // Standard_DS3_v2 is not in Phi-3's inference allow list.
    h.create("notallowed", by_registration("Standard_DS3_v2")).await;
    let oe = h
        .wait_endpoint("notallowed", "InstanceTypeNotAllowed", |oe| {
            condition(oe, conditions::STALLED).is_some_and(|c| c.status == "True")
        })
        .await;
    let stalled = condition(&oe, conditions::STALLED).unwrap();
    assert_eq!(stalled.reason, reasons::INSTANCE_TYPE_NOT_ALLOWED);
    assert!(stalled.message.contains("Standard_NC6s_v3"), "{}", stalled.message);
    assert!(h.requests("PUT", "/onlineEndpoints/notallowed/deployments/demo").await.is_empty());
}

/// A DELETE Azure refuses is not a silent hang: the resource shows Stalled DeleteFailed with Azure's
/// message while it keeps its finalizer, and is released once Azure accepts the delete.
#[tokio::test]
async fn refused_delete_stalls_then_completes() {
    let h = Harness::start("oep-delfail").await;
    h.create("stuck", json!({"deployments": [deployment("demo", PHI3_V15)], "traffic": {"demo": 100}})).await;
    h.wait_ready("stuck").await;
    let fault = h
        .admin(
            reqwest::Method::POST,
            "/_emulator/faults",
            Some(json!({
                "method": "DELETE",
                "pathRegex": "/onlineEndpoints/stuck$",
                "status": 403,
                "body": {"error": {"code": "AuthorizationFailed", "message": "The client has no authorization to perform action 'delete' over scope 'stuck'."}}
            })),
        )
        .await;
    h.endpoints().delete("stuck", &DeleteParams::default()).await.expect("delete");
    let oe = h
        .wait_endpoint("stuck", "DeleteFailed", |oe| {
            condition(oe, conditions::STALLED)
                .is_some_and(|c| c.status == "True" && c.reason == reasons::DELETE_FAILED)
        })
        .await;
    let message = &condition(&oe, conditions::STALLED).unwrap().message;
    assert!(message.contains("no authorization to perform action 'delete'"), "{message}");
    assert!(
        oe.finalizers().iter().any(|f| f == api::FINALIZER),
        "released while Azure still has the endpoint"
    );
    assert!(h.azure_endpoint("stuck").await.is_some());

    let id = fault["id"].as_str().expect("fault id");
    h.admin(reqwest::Method::DELETE, &format!("/_emulator/faults/{id}"), None).await;
    h.wait_gone("stuck").await;
    assert!(h.azure_endpoint("stuck").await.is_none());
}

/// Transient Azure errors (503 on the deployment PUT) are retried with backoff and never surface as a
/// condition or a Warning event.
#[tokio::test]
async fn transient_errors_are_retried_quietly() {
    let h = Harness::start("oep-transient").await;
    h.admin(
        reqwest::Method::POST,
        "/_emulator/faults",
        Some(json!({"method": "PUT", "pathRegex": "/deployments/demo$", "status": 503, "times": 2})),
    )
    .await;
    h.create("flaky", json!({"deployments": [deployment("demo", PHI3_V15)], "traffic": {"demo": 100}})).await;
    let oe = h.wait_ready("flaky").await;
    assert_eq!(h.requests("PUT", "/deployments/demo").await.len(), 3, "two refused, one accepted");
    let stalled = condition(&oe, conditions::STALLED).unwrap();
    let first_seen = condition(&oe, conditions::RECONCILING).unwrap();
    assert_eq!(stalled.status, "False");
    assert!(
        stalled.last_transition_time.0 <= first_seen.last_transition_time.0,
        "Stalled flipped on the way"
    );
    let warnings: Vec<Event> = Api::<Event>::namespaced(h.client.clone(), &h.ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// With its Workspace gone there is nothing in Azure the operator can reach: the resource is released
/// without a DELETE (the endpoint stays in Azure, as it would in a deleted workspace).
#[tokio::test]
async fn missing_workspace_releases() {
    let mut h = Harness::start("oep-nows").await;
    h.create("orphan", json!({"deployments": [deployment("demo", PHI3_V15)], "traffic": {"demo": 100}}))
        .await;
    h.wait_ready("orphan").await;
    h.kill();
    Api::<Workspace>::namespaced(h.client.clone(), &h.ns)
        .delete("default", &DeleteParams::default())
        .await
        .expect("workspace deleted");
    h.endpoints().delete("orphan", &DeleteParams::default()).await.expect("delete");
    h.start_controllers();
    h.wait_gone("orphan").await;
    assert!(h.requests("DELETE", "/onlineEndpoints/orphan").await.is_empty());
}

/// A smoke test the model refuses makes Ready=False with SmokeTestFailed and deletes nothing; fixing
/// the request (a new generation) runs it again and the endpoint becomes Ready. A keys Secret deleted
/// by hand is written again.
#[tokio::test]
async fn failed_smoke_test_stalls_without_deleting_anything() {
    let h = Harness::start("oep-smoke").await;
    h.create(
        "smoky",
        json!({
            "deployments": [deployment("demo", PHI3_V15)],
            "traffic": {"demo": 100},
            "keysSecret": {"name": "smoky-keys"},
            // Not the chat format: the emulated model answers 400.
            "smokeTest": {"request": {"prompt": "hello"}}
        }),
    )
    .await;
    let oe = h
        .wait_endpoint("smoky", "SmokeTestFailed", |oe| {
            condition(oe, conditions::STALLED).is_some_and(|c| c.status == "True")
        })
        .await;
    let stalled = condition(&oe, conditions::STALLED).unwrap();
    assert_eq!(stalled.reason, reasons::SMOKE_TEST_FAILED);
    assert!(stalled.message.contains("input_data"), "Azure's reply is quoted: {}", stalled.message);
    assert_eq!(condition(&oe, conditions::READY).map(|c| c.status.as_str()), Some("False"));
    assert_eq!(condition(&oe, "SmokeTestPassed").map(|c| c.status.as_str()), Some("False"));
    let smoke = oe.status.as_ref().and_then(|s| s.last_smoke_test.clone()).expect("result recorded");
    assert_eq!((smoke.passed, smoke.http_status, smoke.deployment.as_str()), (false, Some(400), "demo"));
    let azure = h.azure_endpoint("smoky").await.expect("endpoint kept");
    assert_eq!(azure["traffic"], json!({"demo": 100}));
    assert_eq!(azure["deployments"][0]["provisioningState"], "Succeeded");

    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns);
    secrets.delete("smoky-keys", &DeleteParams::default()).await.expect("Secret deleted");
    wait_until(WAIT, "keys Secret written again", || async {
        let s = secrets.get_opt("smoky-keys").await.ok()??;
        (!secret_text(&s, "primaryKey").is_empty()).then_some(())
    })
    .await;

    h.patch_spec("smoky", json!({"smokeTest": {"request": sample_request()}})).await;
    let oe = h.wait_ready("smoky").await;
    assert!(
        oe.status.and_then(|s| s.last_smoke_test).is_some_and(|t| t.passed && t.http_status == Some(200))
    );
    assert_eq!(h.requests("PUT", "/deployments/demo").await.len(), 1, "the smoke test redeployed");
}

/// AADToken endpoints are scored with a Microsoft Entra token from the Workspace credential, AMLToken
/// endpoints with a token from the endpoint's `token` action (smoke test and invoke both); no token
/// ends up in status or in the Secret.
#[tokio::test]
async fn token_auth_modes() {
    let h = Harness::start("oep-tokens").await;
    h.create(
        "entra",
        json!({
            "authMode": "AADToken",
            "deployments": [deployment("demo", PHI3_V15)],
            "traffic": {"demo": 100},
            "keysSecret": {"name": "entra-keys"},
            "smokeTest": {"request": sample_request()}
        }),
    )
    .await;
    let oe = h.wait_ready("entra").await;
    assert!(oe.status.and_then(|s| s.last_smoke_test).is_some_and(|t| t.passed));
    let secret = Api::<Secret>::namespaced(h.client.clone(), &h.ns).get("entra-keys").await.expect("Secret");
    assert!(!secret_text(&secret, "scoringUri").is_empty());
    assert!(!secret.data.unwrap_or_default().contains_key("primaryKey"), "no keys for token auth");
    let azure_ml = AzureMl::new(ClientOptions::default());
    let reply =
        azureml_operator::invoke::invoke(h.client.clone(), &azure_ml, &h.ns, "entra", None, sample_request())
            .await
            .expect("invoke");
    assert_eq!(reply.status, 200, "{}", reply.body);

    h.create(
        "amltoken",
        json!({
            "authMode": "AMLToken",
            "deployments": [deployment("demo", PHI3_V15)],
            "traffic": {"demo": 100},
            "keysSecret": {"name": "amltoken-keys"},
            "smokeTest": {"request": sample_request()}
        }),
    )
    .await;
    let oe = h.wait_ready("amltoken").await;
    let smoke = oe.status.as_ref().and_then(|s| s.last_smoke_test.clone()).expect("smoke test ran");
    assert!(smoke.passed && smoke.http_status == Some(200), "{smoke:?}");
    assert_eq!(condition(&oe, "SmokeTestPassed").map(|c| c.status.as_str()), Some("True"));
    let tokens = h.requests("POST", "/onlineEndpoints/amltoken/token").await;
    assert_eq!(tokens.len(), 1, "one token for the one smoke test");
    let reply = azureml_operator::invoke::invoke(
        h.client.clone(),
        &azure_ml,
        &h.ns,
        "amltoken",
        Some("demo"),
        sample_request(),
    )
    .await
    .expect("invoke of an AMLToken endpoint");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let tokens = h.requests("POST", "/onlineEndpoints/amltoken/token").await;
    assert_eq!(tokens.len(), 2, "invoke asked for its own token");
    // Tokens are fetched per use and kept nowhere: the Secret holds only the scoring URI.
    let secret =
        Api::<Secret>::namespaced(h.client.clone(), &h.ns).get("amltoken-keys").await.expect("Secret");
    assert_eq!(secret.data.clone().unwrap_or_default().keys().collect::<Vec<_>>(), ["scoringUri"]);
    let oe = h.endpoints().get("amltoken").await.expect("read");
    let status_text = serde_json::to_string(&oe.status).unwrap();
    assert!(!status_text.contains("accessToken") && !status_text.contains("Bearer"), "{status_text}");
    assert!(h.requests("POST", "/onlineEndpoints/amltoken/listKeys").await.is_empty());
}

/// Keys regenerated in Azure reach the keys Secret on the next pass; while they stay the same the
/// Secret is never rewritten, and `listKeys` (a write for ARM) is called at most once per pass.
#[tokio::test]
async fn rotated_keys_reach_the_secret() {
    let h = Harness::start("oep-rotate").await;
    h.create(
        "rotate",
        json!({
            "deployments": [deployment("demo", PHI3_V15)],
            "traffic": {"demo": 100},
            "keysSecret": {"name": "rotate-keys"},
            "smokeTest": {"request": sample_request()}
        }),
    )
    .await;
    h.wait_ready("rotate").await;
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns);
    let before = secrets.get("rotate-keys").await.expect("keys Secret");
    let old_primary = secret_text(&before, "primaryKey");
    let old_secondary = secret_text(&before, "secondaryKey");

    // Unchanged keys: passes go by, the Secret keeps its resourceVersion.
    let seq = h.last_seq().await;
    h.wait_passes("rotate", seq, 3).await;
    let same = secrets.get("rotate-keys").await.expect("keys Secret");
    assert_eq!(same.metadata.resource_version, before.metadata.resource_version, "identical data rewritten");
    let passes = h.requests_since(seq, "GET", "/onlineEndpoints/rotate").await.len();
    let lists = h.requests_since(seq, "POST", "/onlineEndpoints/rotate/listKeys").await.len();
    assert!(lists >= 1, "keys never checked");
    // A pass whose GET came just before `seq` may list its keys just after it.
    assert!(lists <= passes + 1, "{lists} listKeys in {passes} passes");

    // Someone regenerates the primary key in Azure.
    let (status, body) = h
        .arm(
            reqwest::Method::POST,
            "/onlineEndpoints/rotate/regenerateKeys",
            Some(json!({"keyType": "Primary"})),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let (_, keys) = h.arm(reqwest::Method::POST, "/onlineEndpoints/rotate/listKeys", None).await;
    let new_primary = keys["primaryKey"].as_str().expect("primaryKey").to_owned();
    assert_ne!(new_primary, old_primary);
    wait_until(WAIT, "the Secret carries the new primary key", || async {
        let s = secrets.get("rotate-keys").await.ok()?;
        (secret_text(&s, "primaryKey") == new_primary).then_some(())
    })
    .await;
    let after = secrets.get("rotate-keys").await.expect("keys Secret");
    assert_eq!(secret_text(&after, "secondaryKey"), old_secondary);
    assert!(!secret_text(&after, "scoringUri").is_empty());
    // Rotation is not a rollout: the smoke test did not run again.
    assert_eq!(h.requests("POST", "/inference/rotate/score").await.len(), 1);
    // The rotated key works for invoke, which reads the Secret.
    let azure_ml = AzureMl::new(ClientOptions::default());
    let reply = azureml_operator::invoke::invoke(
        h.client.clone(),
        &azure_ml,
        &h.ns,
        "rotate",
        None,
        sample_request(),
    )
    .await
    .expect("invoke");
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// Environment variables in Azure follow the spec exactly: one removed from the spec is removed from
/// the deployment by one PUT, after which steady state sends nothing.
#[tokio::test]
async fn removed_environment_variable_leaves_azure() {
    let h = Harness::start("oep-env").await;
    let with_env = |vars: Value| {
        let mut d = deployment("demo", PHI3_V15);
        d["environmentVariables"] = vars;
        json!([d])
    };
    h.create(
        "envs",
        json!({
            "deployments": with_env(json!({"LOG_LEVEL": "debug", "MAX_NEW_TOKENS": "200"})),
            "traffic": {"demo": 100}
        }),
    )
    .await;
    h.wait_ready("envs").await;
    let azure_env = || async {
        let (status, d) = h.arm(reqwest::Method::GET, "/onlineEndpoints/envs/deployments/demo", None).await;
        assert_eq!(status, 200, "{d}");
        d["properties"]["environmentVariables"].clone()
    };
    assert_eq!(azure_env().await, json!({"LOG_LEVEL": "debug", "MAX_NEW_TOKENS": "200"}));

    // A merge patch replaces the deployments list: MAX_NEW_TOKENS is gone from the spec.
    h.patch_spec("envs", json!({"deployments": with_env(json!({"LOG_LEVEL": "debug"}))})).await;
    h.wait_endpoint("envs", "Ready for the new generation with one variable left", |oe| {
        let ready =
            oe.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions, oe.metadata.generation));
        ready && oe.metadata.generation == Some(2)
    })
    .await;
    assert_eq!(azure_env().await, json!({"LOG_LEVEL": "debug"}));
    let puts = h.requests("PUT", "/onlineEndpoints/envs/deployments/demo").await;
    assert_eq!(puts.len(), 2, "create, then one update");
    assert_eq!(puts[1]["body"]["properties"]["environmentVariables"], json!({"LOG_LEVEL": "debug"}));

    // Every variable removed: the PUT carries none, and Azure has none.
    h.patch_spec("envs", json!({"deployments": with_env(json!({}))})).await;
    wait_until(WAIT, "no variables left in Azure", || async {
        azure_env().await.as_object().is_some_and(|m| m.is_empty()).then_some(())
    })
    .await;
    h.wait_ready("envs").await;

    // Converged: passes go by without another PUT.
    let seq = h.last_seq().await;
    h.wait_passes("envs", seq, 3).await;
    assert_eq!(h.requests("PUT", "/onlineEndpoints/envs/deployments/demo").await.len(), 3);
    let writes = h.writes_since(seq).await;
    assert!(writes.is_empty(), "steady state wrote to Azure: {writes:#?}");
}
