//! The Azure client against the emulator over HTTPS (trusting its generated CA): the notebook's
//! calls, and Azure's unhappy paths injected through the emulator's admin API, asserted through
//! the emulator's request log.

use std::time::Duration;

use azureml_emulator::{Config, Emulator, RunningEmulator};
use azureml_operator::azure::{
    AzureMl, ClientOptions, CloudEndpoints, ConnectionConfig, Credential, Error, ErrorClass, Latest,
    SecretString, WorkspaceClient, WorkspaceCoordinates,
};
use serde_json::{Value, json};
use url::Url;

const TENANT: &str = "00000000-0000-0000-0000-0000000000aa";
const CLIENT: &str = "00000000-0000-0000-0000-0000000000cc";
const SUB: &str = "00000000-0000-0000-0000-000000000001";

struct Rig {
    emu: RunningEmulator,
    admin: reqwest::Client,
    ml: AzureMl,
    ws: WorkspaceClient,
}

/// Short timeouts and backoff so fault tests stay quick; the logic is the production one.
fn test_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        call_budget: Duration::from_secs(15),
        max_attempts: 4,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..ClientOptions::default()
    }
}

fn connection(emu: &RunningEmulator, secret: &str) -> ConnectionConfig {
    let base = Url::parse(&format!("{}/", emu.https_url())).expect("emulator URL");
    ConnectionConfig {
        cloud: CloudEndpoints::custom(base.clone(), base.clone(), base),
        credential: Credential::ClientSecret {
            tenant_id: TENANT.into(),
            client_id: CLIENT.into(),
            secret: SecretString::new(secret),
        },
        ca_bundle_pem: Some(emu.ca_pem().to_string()),
        workspace: WorkspaceCoordinates {
            subscription_id: SUB.into(),
            resource_group: "rg-azureml-demo".into(),
            workspace_name: "ws-azureml-demo".into(),
        },
        arm_api_version: None,
    }
}

async fn rig_with(config: Config, options: ClientOptions) -> Rig {
    let emu = Emulator::start(config).await.expect("emulator starts");
    let ml = AzureMl::new(options);
    let ws = ml.workspace(&connection(&emu, "emulator-secret")).expect("workspace client");
    // The admin API is plain HTTP: no CA needed.
    let admin = reqwest::Client::builder().build().expect("admin client");
    Rig { emu, admin, ml, ws }
}

async fn rig() -> Rig {
    rig_with(Config::default().with_time_scale(1000.0), test_options()).await
}

impl Rig {
    async fn admin_post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .admin
            .post(format!("{}/_emulator/{path}", self.emu.http_url()))
            .json(&body)
            .send()
            .await
            .expect("admin request");
        assert!(resp.status().is_success(), "admin {path}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }

    async fn fault(&self, spec: Value) {
        self.admin_post("faults", spec).await;
    }

    async fn clear_log(&self) {
        self.admin
            .delete(format!("{}/_emulator/requests", self.emu.http_url()))
            .send()
            .await
            .expect("clear log");
    }

    /// (method, path, status) of every logged request.
    async fn log(&self) -> Vec<(String, String, u16)> {
        let v: Value = self
            .admin
            .get(format!("{}/_emulator/requests", self.emu.http_url()))
            .send()
            .await
            .expect("log")
            .json()
            .await
            .expect("log json");
        v["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .map(|r| {
                (
                    r["method"].as_str().unwrap_or_default().to_string(),
                    r["path"].as_str().unwrap_or_default().to_string(),
                    r["status"].as_u64().unwrap_or_default() as u16,
                )
            })
            .collect()
    }

    async fn raw_log(&self) -> Value {
        self.admin
            .get(format!("{}/_emulator/requests", self.emu.http_url()))
            .send()
            .await
            .expect("log")
            .json()
            .await
            .expect("log json")
    }
}

fn count(log: &[(String, String, u16)], method: &str, path_suffix: &str) -> usize {
    log.iter().filter(|(m, p, _)| m == method && p.ends_with(path_suffix)).count()
}

fn statuses(log: &[(String, String, u16)], method: &str, path_suffix: &str) -> Vec<u16> {
    log.iter().filter(|(m, p, _)| m == method && p.ends_with(path_suffix)).map(|(_, _, s)| *s).collect()
}

#[tokio::test]
async fn workspace_registry_and_compute_reads() {
    let rig = rig().await;
    let info = rig.ws.get_workspace().await.expect("workspace");
    assert_eq!(info.location, "eastus2");
    assert!(info.mlflow_tracking_uri.as_deref().is_some_and(|u| u.starts_with("azureml://")));

    let registry = rig.ws.registry("azureml").await.expect("discovery");
    let Latest::Found(model) = registry.latest_model_version("Phi-3-mini-4k-instruct").await.expect("model")
    else {
        panic!("Phi-3-mini-4k-instruct should have an active version")
    };
    assert_eq!(model.version, "15");
    assert_eq!(model.id, "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15");
    assert!(
        model
            .tags
            .get("finetune_compute_allow_list")
            .is_some_and(|t| t.contains("'Standard_NC24ads_A100_v4'"))
    );
    assert!(!model.archived);

    let pinned = registry.model_version("Phi-3-mini-4k-instruct", "14").await.expect("v14");
    assert_eq!(pinned.map(|m| m.version), Some("14".to_string()));
    assert!(registry.model_version("Phi-3-mini-4k-instruct", "999").await.expect("missing").is_none());

    let Latest::Found(component) =
        registry.latest_component_version("chat_completion_pipeline").await.expect("component")
    else {
        panic!("component should exist")
    };
    assert_eq!(component.version, "0.0.82");
    let task = &component.inputs["task_name"];
    assert!(!task.optional);
    assert_eq!(component.inputs["precision"].enum_values, vec!["32", "16"]);
    assert_eq!(component.inputs["num_train_epochs"].input_type, "integer");
    assert!(component.outputs.contains_key("mlflow_model_folder"));

    let compute = rig.ws.get_compute("gpu-cluster").await.expect("compute").expect("exists");
    assert_eq!(
        compute.vm_size.as_deref().map(str::to_ascii_lowercase).as_deref(),
        Some("standard_nc24ads_a100_v4")
    );
    assert!(rig.ws.get_compute("no-such-cluster").await.expect("absent").is_none());
    let broken = rig.ws.get_compute("broken-cluster").await.expect("broken").expect("exists");
    assert_eq!(broken.provisioning_state, azureml_operator::azure::ProvisioningState::Failed);

    let sizes = rig.ws.list_vm_sizes("eastus2").await.expect("sizes");
    let a100 = sizes.iter().find(|s| s.name.eq_ignore_ascii_case("standard_nc24ads_a100_v4")).expect("a100");
    assert_eq!(a100.gpus, 1);

    // Discovery is cached: a second registry client does not ask again.
    rig.ws.registry("azureml").await.expect("cached");
    let log = rig.log().await;
    assert_eq!(count(&log, "GET", "/registries/azureml/discovery"), 1, "{log:?}");
    // One token for all of it.
    assert_eq!(count(&log, "POST", "/oauth2/v2.0/token"), 1, "{log:?}");
}

#[tokio::test]
async fn latest_distinguishes_archived_only_from_missing() {
    let rig = rig().await;
    let registry = rig.ws.registry("azureml").await.expect("discovery");
    match registry.latest_model_version("Llama-2-7b-chat").await.expect("archived") {
        Latest::OnlyArchived(m) => {
            assert_eq!(m.version, "25");
            assert!(m.archived);
        }
        other => panic!("expected OnlyArchived, got {other:?}"),
    }
    assert_eq!(registry.latest_model_version("No-Such-Model").await.expect("missing"), Latest::NotFound);
}

#[tokio::test]
async fn throttled_request_waits_retry_after_then_succeeds() {
    let rig = rig().await;
    rig.fault(json!({"method": "GET", "pathRegex": "/workspaces/ws-azureml-demo$", "status": 429, "retryAfter": 1, "times": 1}))
        .await;
    let info = rig.ws.get_workspace().await.expect("retried after Retry-After");
    assert_eq!(info.location, "eastus2");
    let log = rig.log().await;
    assert_eq!(statuses(&log, "GET", "/workspaces/ws-azureml-demo"), vec![429, 200]);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_as_transient() {
    let rig = rig().await;
    rig.fault(json!({"pathRegex": "/computes/gpu-cluster$", "status": 503, "times": 2})).await;
    assert!(rig.ws.get_compute("gpu-cluster").await.expect("third try works").is_some());
    let log = rig.log().await;
    assert_eq!(statuses(&log, "GET", "/computes/gpu-cluster"), vec![503, 503, 200]);

    rig.clear_log().await;
    rig.fault(json!({"pathRegex": "/computes/gpu-cluster$", "status": 500})).await;
    let err = rig.ws.get_compute("gpu-cluster").await.expect_err("keeps failing");
    assert!(matches!(err.class(), ErrorClass::Transient { .. }), "{err}");
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.reason(), "AzureUnavailable");
    // Bounded: max_attempts tries, then the controller requeues.
    assert_eq!(count(&rig.log().await, "GET", "/computes/gpu-cluster"), 4);
}

#[tokio::test]
async fn invalid_requests_are_not_retried() {
    let rig = rig().await;
    rig.fault(json!({"pathRegex": "/computes/gpu-cluster$", "status": 400, "body": {"error": {"code": "UserError", "message": "bad"}}}))
        .await;
    let err = rig.ws.get_compute("gpu-cluster").await.expect_err("400");
    assert!(matches!(err.class(), ErrorClass::InvalidSpec { .. }), "{err:?}");
    assert_eq!(count(&rig.log().await, "GET", "/computes/gpu-cluster"), 1);
}

#[tokio::test]
async fn dropped_connection_is_retried() {
    let rig = rig().await;
    rig.fault(json!({"pathRegex": "/computes/gpu-cluster$", "drop": true, "times": 1})).await;
    assert!(rig.ws.get_compute("gpu-cluster").await.expect("retried").is_some());
    let faults: Value = rig
        .admin
        .get(format!("{}/_emulator/faults", rig.emu.http_url()))
        .send()
        .await
        .expect("faults")
        .json()
        .await
        .expect("json");
    assert_eq!(faults["faults"][0]["hits"], 1, "{faults}");
}

#[tokio::test]
async fn slow_response_times_out_and_is_retried() {
    let rig = rig().await;
    // Longer than the 2 s request timeout, once.
    rig.fault(json!({"pathRegex": "/computes/gpu-cluster$", "latencyMs": 4000, "times": 1})).await;
    assert!(rig.ws.get_compute("gpu-cluster").await.expect("second attempt is fast").is_some());
}

#[tokio::test]
async fn persistent_slowness_is_a_timeout_error() {
    let options = ClientOptions { max_attempts: 2, call_budget: Duration::from_secs(6), ..test_options() };
    let rig = rig_with(Config::default().with_time_scale(1000.0), options).await;
    rig.fault(json!({"pathRegex": "/computes/gpu-cluster$", "latencyMs": 5000})).await;
    let err = rig.ws.get_compute("gpu-cluster").await.expect_err("times out");
    assert!(matches!(err, Error::Transport { timeout: true, .. }), "{err:?}");
    assert_eq!(err.reason(), "AzureTimeout");
    assert!(matches!(err.class(), ErrorClass::Transient { .. }));
}

#[tokio::test]
async fn expired_token_is_refreshed_once() {
    let rig = rig().await;
    rig.ws.get_workspace().await.expect("first call");
    rig.admin_post("tokens", json!({"expireIssued": true})).await;
    rig.clear_log().await;
    rig.ws.get_workspace().await.expect("refreshed token");
    let log = rig.log().await;
    assert_eq!(statuses(&log, "GET", "/workspaces/ws-azureml-demo"), vec![401, 200], "{log:?}");
    assert_eq!(count(&log, "POST", "/oauth2/v2.0/token"), 1, "{log:?}");
}

#[tokio::test]
async fn wrong_secret_is_an_auth_error() {
    let rig = rig().await;
    let ws = rig.ml.workspace(&connection(&rig.emu, "not-the-secret")).expect("client");
    let err = ws.get_workspace().await.expect_err("AADSTS7000215");
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert_eq!(err.reason(), "AzureAuthFailed");
    // Not retried: one token request.
    assert_eq!(count(&rig.log().await, "POST", "/oauth2/v2.0/token"), 1);
}

#[tokio::test]
async fn secrets_never_reach_the_request_log_in_clear() {
    let rig = rig().await;
    rig.ws.get_workspace().await.expect("call");
    let text = rig.raw_log().await.to_string();
    assert!(!text.contains("emulator-secret"), "client secret in the log");
    assert!(!text.to_ascii_lowercase().contains("bearer ey"), "token in the log");
}

#[tokio::test]
async fn client_side_throttle_prevents_429s() {
    use azureml_emulator::{BucketConfig, ThrottleConfig};
    use azureml_operator::azure::{BucketLimits, ThrottleLimits};
    // Emulated ARM allows 3 reads then 2/s; the client is configured with the same budget.
    let arm = ThrottleConfig {
        reads: BucketConfig { capacity: 3, refill_per_second: 2.0 },
        ..ThrottleConfig::default()
    };
    let client = ThrottleLimits {
        read: BucketLimits { capacity: 3.0, refill_per_second: 2.0 },
        ..ThrottleLimits::default()
    };
    let rig = rig_with(
        Config::default().with_time_scale(1000.0).with_throttle(arm),
        ClientOptions { throttle: client, ..test_options() },
    )
    .await;
    for _ in 0..6 {
        rig.ws.get_compute("gpu-cluster").await.expect("read");
    }
    let log = rig.log().await;
    assert_eq!(statuses(&log, "GET", "/computes/gpu-cluster"), vec![200; 6], "{log:?}");
}

#[tokio::test]
async fn metrics_count_requests_by_operation_and_status() {
    let rig = rig().await;
    rig.ws.get_compute("gpu-cluster").await.expect("found");
    rig.ws.get_compute("nope").await.expect("absent");
    let mut registry = prometheus_client::registry::Registry::default();
    rig.ml.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(text.contains(r#"azure_requests_total{operation="get_compute",status="200"} 1"#), "{text}");
    assert!(text.contains(r#"azure_requests_total{operation="get_compute",status="404"} 1"#), "{text}");
}

/// Polls until the operation ends; bounded so a stuck emulator fails the test instead of hanging.
async fn wait(
    ws: &WorkspaceClient,
    op: &azureml_operator::azure::Operation,
) -> azureml_operator::azure::OperationStatus {
    use azureml_operator::azure::OperationStatus;
    for _ in 0..200 {
        match ws.poll(op).await.expect("poll") {
            OperationStatus::InProgress { retry_after } => {
                // The emulator's Retry-After is scaled down, but keep polls quick regardless.
                tokio::time::sleep(retry_after.min(Duration::from_millis(100))).await;
            }
            done => return done,
        }
    }
    panic!("operation {op:?} did not finish");
}

#[tokio::test]
async fn compute_creation_is_a_resumable_long_running_operation() {
    use azureml_operator::azure::{
        AmlComputeSpec, OperationStatus, PollTarget, ProvisioningState, VmPriority,
    };
    let rig = rig().await;
    let spec = AmlComputeSpec {
        location: "eastus2".into(),
        vm_size: "Standard_NC48ads_A100_v4".into(),
        vm_priority: VmPriority::Dedicated,
        min_nodes: 0,
        max_nodes: 1,
        idle_seconds_before_scale_down: Some(120),
    };
    let op = rig.ws.create_compute("new-cluster", &spec).await.expect("PUT compute");
    assert!(matches!(op.poll, PollTarget::AsyncOperation(_)), "{op:?}");

    // A restarted operator: the operation comes back from status JSON into a fresh client.
    let persisted = serde_json::to_string(&op).expect("serialize");
    let resumed: azureml_operator::azure::Operation = serde_json::from_str(&persisted).expect("deserialize");
    let fresh =
        AzureMl::new(test_options()).workspace(&connection(&rig.emu, "emulator-secret")).expect("client");
    assert!(matches!(wait(&fresh, &resumed).await, OperationStatus::Succeeded));

    let compute = rig.ws.get_compute("new-cluster").await.expect("get").expect("exists");
    assert_eq!(compute.provisioning_state, ProvisioningState::Succeeded);
    assert_eq!(compute.scale.map(|s| s.max_nodes), Some(1));
    let log = rig.log().await;
    assert_eq!(count(&log, "PUT", "/computes/new-cluster"), 1, "resuming must not re-send the PUT");
}

#[tokio::test]
async fn failing_compute_operation_reports_azure_error() {
    use azureml_operator::azure::{AmlComputeSpec, OperationStatus, VmPriority};
    let rig = rig().await;
    rig.admin_post(
        "failures",
        json!({"kind": "compute", "name": "doomed", "code": "QuotaExceeded", "message": "Not enough NCADSA100v4 quota"}),
    )
    .await;
    let spec = AmlComputeSpec {
        location: "eastus2".into(),
        vm_size: "Standard_NC24ads_A100_v4".into(),
        vm_priority: VmPriority::Dedicated,
        min_nodes: 0,
        max_nodes: 1,
        idle_seconds_before_scale_down: None,
    };
    let op = rig.ws.create_compute("doomed", &spec).await.expect("PUT accepted");
    match wait(&rig.ws, &op).await {
        OperationStatus::Failed(err) => {
            assert_eq!(err.code(), Some("QuotaExceeded"), "{err}");
            assert_eq!(err.class(), ErrorClass::Quota);
        }
        other => panic!("expected failure, got {other:?}"),
    }
}

#[tokio::test]
async fn compute_validation_errors_are_invalid_spec() {
    use azureml_operator::azure::{AmlComputeSpec, VmPriority};
    let rig = rig().await;
    let spec = AmlComputeSpec {
        location: "eastus2".into(),
        vm_size: "Standard_Imaginary_v9".into(),
        vm_priority: VmPriority::Dedicated,
        min_nodes: 0,
        max_nodes: 1,
        idle_seconds_before_scale_down: None,
    };
    let err = rig.ws.create_compute("bad-size", &spec).await.expect_err("unknown VM size");
    assert!(matches!(err.class(), ErrorClass::InvalidSpec { .. }), "{err:?}");
}

fn notebook_job_spec() -> azureml_operator::azure::PipelineJobSpec {
    use azureml_operator::azure::{AssetType, JobInput, Literal, PipelineJobSpec, PipelineSettings};
    let compute =
        ["compute_model_import", "compute_preprocess", "compute_finetune", "compute_model_evaluation"]
            .into_iter()
            .map(|k| (k.to_string(), "gpu-cluster".to_string()))
            .collect();
    let mut inputs = std::collections::BTreeMap::new();
    inputs.insert(
        "mlflow_model_path".to_string(),
        JobInput::Asset {
            asset_type: AssetType::MlflowModel,
            uri: "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15".into(),
            mode: None,
        },
    );
    for (name, file) in [("train_file_path", "train_sft"), ("test_file_path", "test_sft")] {
        inputs.insert(
            name.to_string(),
            JobInput::Asset {
                asset_type: AssetType::UriFile,
                uri: format!("azureml://datastores/workspaceblobstore/paths/ultrachat/{file}.jsonl"),
                mode: None,
            },
        );
    }
    let lit = |v| JobInput::Literal { value: v };
    for (k, v) in [
        ("task_name", lit(Literal::String("ChatCompletion".into()))),
        ("number_of_gpu_to_use_finetuning", lit(Literal::Integer(1))),
        ("apply_lora", lit(Literal::Boolean(true))),
        ("apply_deepspeed", lit(Literal::Boolean(true))),
        ("deepspeed_stage", lit(Literal::String("2".into()))),
        ("precision", lit(Literal::String("16".into()))),
        ("num_train_epochs", lit(Literal::Integer(1))),
        ("learning_rate", lit(Literal::Number(5e-6))),
        ("lr_scheduler_type", lit(Literal::String("cosine".into()))),
    ] {
        inputs.insert(k.to_string(), v);
    }
    PipelineJobSpec {
        experiment_name: "chat_completion_Phi-3-mini-4k-instruct".into(),
        display_name: Some(
            "Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora-save_limit-1-seqlen-1".into(),
        ),
        description: None,
        tags: std::collections::BTreeMap::new(),
        component_id: "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82"
            .into(),
        node_name: "chat_completion_pipeline".into(),
        compute_bindings: compute,
        inputs,
        outputs: vec![PipelineJobSpec::trained_model_output()],
        settings: PipelineSettings::default(),
    }
}

async fn wait_job(ws: &WorkspaceClient, name: &str) -> azureml_operator::azure::Job {
    for _ in 0..300 {
        let job = ws.get_job(name).await.expect("get job").expect("job exists");
        if job.status.is_terminal() {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {name} did not finish");
}

#[tokio::test]
async fn pipeline_job_runs_and_reports_outputs_and_metrics() {
    use azureml_operator::azure::JobStatus;
    let rig = rig().await;
    let name = "ftj-default-phi3-0123456789";
    assert!(rig.ws.get_job(name).await.expect("get").is_none());
    let job = rig.ws.create_pipeline_job(name, &notebook_job_spec()).await.expect("PUT job accepted");
    assert_eq!(job.name, name);
    assert!(!job.status.is_terminal(), "{:?}", job.status);

    let done = wait_job(&rig.ws, name).await;
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.outputs["trained_model"].job_uri, format!("azureml://jobs/{name}/outputs/trained_model"));
    assert!(done.studio_url.is_some());
    assert_eq!(done.experiment_name.as_deref(), Some("chat_completion_Phi-3-mini-4k-instruct"));

    let children = rig.ws.list_child_jobs(name).await.expect("children");
    let finetune = children
        .iter()
        .find(|c| c.run_name.as_deref() == Some("chat_completion_finetune"))
        .unwrap_or_else(|| panic!("no finetune step in {children:?}"));
    assert!(!finetune.metrics.is_empty(), "{finetune:?}");
    let metrics = rig.ws.job_metrics(&finetune.run_id).await.expect("metrics");
    assert_eq!(metrics, finetune.metrics);

    // The PUT went out once, with the SDK's node body.
    let log = rig.raw_log().await;
    let puts: Vec<&Value> = log["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter(|r| r["method"] == "PUT" && r["path"].as_str().is_some_and(|p| p.ends_with(name)))
        .collect();
    assert_eq!(puts.len(), 1);
    let node = &puts[0]["body"]["properties"]["jobs"]["chat_completion_pipeline"];
    assert_eq!(node["inputs"]["learning_rate"], json!({"job_input_type": "literal", "value": "5e-06"}));
}

#[tokio::test]
async fn invalid_job_input_is_rejected_once_as_invalid_spec() {
    use azureml_operator::azure::{JobInput, Literal};
    let rig = rig().await;
    let mut spec = notebook_job_spec();
    spec.inputs.insert("precision".into(), JobInput::Literal { value: Literal::String("8".into()) });
    let err = rig.ws.create_pipeline_job("ftj-bad-precision", &spec).await.expect_err("enum violation");
    assert!(matches!(err.class(), ErrorClass::InvalidSpec { .. }), "{err:?}");
    assert!(err.message().contains("precision"), "{}", err.message());
    assert_eq!(count(&rig.log().await, "PUT", "/jobs/ftj-bad-precision"), 1);
    assert!(rig.ws.get_job("ftj-bad-precision").await.expect("get").is_none());
}

#[tokio::test]
async fn cancel_job_ends_canceled() {
    use azureml_operator::azure::{JobStatus, OperationStatus};
    let rig = rig().await;
    let name = "ftj-to-cancel";
    rig.ws.create_pipeline_job(name, &notebook_job_spec()).await.expect("submit");
    if let Some(op) = rig.ws.cancel_job(name).await.expect("cancel") {
        assert!(matches!(wait(&rig.ws, &op).await, OperationStatus::Succeeded));
    }
    assert_eq!(wait_job(&rig.ws, name).await.status, JobStatus::Canceled);
    // Cancelling a job that does not exist is not an error: nothing to wait for.
    assert!(rig.ws.cancel_job("no-such-job").await.expect("absent").is_none());
}

#[tokio::test]
async fn injected_job_failure_surfaces_in_status() {
    use azureml_operator::azure::JobStatus;
    let rig = rig().await;
    let name = "ftj-doomed";
    rig.admin_post(
        "failures",
        json!({"kind": "job", "name": name, "code": "UserError", "message": "CUDA out of memory"}),
    )
    .await;
    rig.ws.create_pipeline_job(name, &notebook_job_spec()).await.expect("submit");
    let job = wait_job(&rig.ws, name).await;
    assert_eq!(job.status, JobStatus::Failed);
}

#[tokio::test]
async fn long_retry_after_is_returned_and_later_calls_defer_without_sending() {
    let rig = rig().await;
    rig.fault(json!({"pathRegex": "/computes/gpu-cluster$", "status": 429, "retryAfter": 60, "times": 1}))
        .await;
    let err = rig.ws.get_compute("gpu-cluster").await.expect_err("throttled beyond the call budget");
    assert_eq!(err.class(), ErrorClass::Throttled { retry_after: Some(Duration::from_secs(60)) });
    assert_eq!(err.code(), Some("SubscriptionRequestsThrottled"));
    // The read bucket stays closed: the next read is deferred locally, ARM is not asked again.
    let err = rig.ws.get_compute("gpu-cluster").await.expect_err("deferred");
    assert!(matches!(err.class(), ErrorClass::Throttled { retry_after: Some(_) }), "{err:?}");
    assert_eq!(err.code(), Some("ClientThrottled"));
    assert_eq!(count(&rig.log().await, "GET", "/computes/gpu-cluster"), 1);
    // Writes have their own bucket.
    assert!(rig.ws.list_endpoint_keys("missing").await.is_err_and(|e| e.is_not_found()));
}

fn endpoint_spec(traffic: &[(&str, u32)]) -> azureml_operator::azure::OnlineEndpointSpec {
    azureml_operator::azure::OnlineEndpointSpec {
        location: "eastus2".into(),
        auth_mode: azureml_operator::azure::AuthMode::Key,
        description: Some("Online endpoint for Phi-3-mini-4k-instruct-ultrachat-200k".into()),
        tags: std::collections::BTreeMap::new(),
        traffic: traffic.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        mirror_traffic: std::collections::BTreeMap::new(),
    }
}

fn deployment_spec(model: &str) -> azureml_operator::azure::OnlineDeploymentSpec {
    use azureml_operator::azure::{OnlineDeploymentSpec, ProbeSettings, RequestSettings};
    OnlineDeploymentSpec {
        location: "eastus2".into(),
        model: model.into(),
        instance_type: "Standard_NC6s_v3".into(),
        instance_count: 1,
        liveness_probe: Some(ProbeSettings { initial_delay_seconds: Some(600), ..ProbeSettings::default() }),
        readiness_probe: None,
        request_settings: Some(RequestSettings {
            request_timeout_ms: Some(90_000),
            ..RequestSettings::default()
        }),
        environment_variables: std::collections::BTreeMap::new(),
        description: None,
        tags: std::collections::BTreeMap::new(),
        app_insights_enabled: false,
    }
}

/// Notebook steps 5–9 in the order of reference §14: job, model registration, endpoint without
/// traffic, deployment, traffic, keys, scoring through the deployment header, deletion until gone.
#[tokio::test]
async fn notebook_register_deploy_invoke_delete() {
    use azureml_operator::azure::{ModelVersionSpec, OperationStatus, ProvisioningState, ScoringAuth};
    let rig = rig().await;
    let job = "ftj-notebook-e2e";
    rig.ws.create_pipeline_job(job, &notebook_job_spec()).await.expect("submit");
    wait_job(&rig.ws, job).await;

    // Step 6: register the trained model (GET first: absent, then PUT once).
    let model_name = "Phi-3-mini-4k-instruct-ultrachat-200k";
    assert!(rig.ws.get_model_version(model_name, "1").await.expect("get").is_none());
    let spec = ModelVersionSpec {
        model_type: "mlflow_model".into(),
        model_uri: format!("azureml://jobs/{job}/outputs/trained_model"),
        description: Some(
            "Phi-3-mini-4k-instruct fine tuned model for ultrachat 200k chat-completion".into(),
        ),
        tags: std::collections::BTreeMap::new(),
        properties: std::collections::BTreeMap::new(),
        job_name: None,
    };
    let model = rig.ws.create_model_version(model_name, "1", &spec).await.expect("register");
    assert!(model.id.ends_with("/models/Phi-3-mini-4k-instruct-ultrachat-200k/versions/1"), "{}", model.id);
    assert_eq!(model.asset_id(), "azureml:Phi-3-mini-4k-instruct-ultrachat-200k:1");
    // Re-registering the same content is harmless; different content for the version is refused.
    rig.ws.create_model_version(model_name, "1", &spec).await.expect("idempotent re-PUT");
    let changed = ModelVersionSpec { model_uri: "azureml://datastores/x/paths/y".into(), ..spec.clone() };
    let err = rig.ws.create_model_version(model_name, "1", &changed).await.expect_err("immutable");
    assert!(matches!(err.class(), ErrorClass::Conflict | ErrorClass::InvalidSpec { .. }), "{err:?}");

    // Step 7: endpoint (no traffic), deployment, then traffic.
    let ep = "ultrachat-completion-e2e";
    let op = rig.ws.put_online_endpoint(ep, &endpoint_spec(&[])).await.expect("PUT endpoint");
    assert!(matches!(wait(&rig.ws, &op).await, OperationStatus::Succeeded));
    let op =
        rig.ws.put_online_deployment(ep, "demo", &deployment_spec(&model.id)).await.expect("PUT deployment");
    assert!(matches!(wait(&rig.ws, &op).await, OperationStatus::Succeeded));
    let dep = rig.ws.get_online_deployment(ep, "demo").await.expect("get").expect("exists");
    assert_eq!(dep.provisioning_state, ProvisioningState::Succeeded);
    assert_eq!(dep.instance_count, Some(1));
    assert_eq!(dep.liveness_probe.and_then(|p| p.initial_delay_seconds), Some(600));
    assert_eq!(rig.ws.list_online_deployments(ep).await.expect("list").len(), 1);
    let op = rig.ws.put_online_endpoint(ep, &endpoint_spec(&[("demo", 100)])).await.expect("traffic");
    assert!(matches!(wait(&rig.ws, &op).await, OperationStatus::Succeeded));
    let endpoint = rig.ws.get_online_endpoint(ep).await.expect("get").expect("exists");
    assert_eq!(endpoint.traffic.get("demo"), Some(&100));
    let scoring_uri = endpoint.scoring_uri.expect("scoring URI");
    let keys = rig.ws.list_endpoint_keys(ep).await.expect("keys");
    assert!(!keys.primary_key.expose().is_empty());

    let logs = rig
        .ws
        .get_deployment_logs(ep, "demo", azureml_operator::azure::ContainerType::InferenceServer, 50)
        .await
        .expect("logs");
    assert!(!logs.is_empty());

    // Step 8: score through the deployment header.
    let body = json!({"input_data": {"input_string": [{"role": "user", "content": "What is Azure ML?"}],
        "parameters": {"temperature": 0.6, "top_p": 0.9, "do_sample": true, "max_new_tokens": 200}}, "params": {}});
    let reply = rig
        .ws
        .score(&scoring_uri, &ScoringAuth::Key(keys.primary_key.clone()), Some("demo"), &body)
        .await
        .expect("score");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(!reply.body.is_empty());
    let denied = rig
        .ws
        .score(
            &scoring_uri,
            &ScoringAuth::Key(azureml_operator::azure::SecretString::new("wrong")),
            Some("demo"),
            &body,
        )
        .await
        .expect("answered");
    assert_eq!(denied.status, 401);

    // Step 9: delete and poll until gone; a second delete finds nothing to do.
    let op = rig.ws.delete_online_endpoint(ep).await.expect("DELETE").expect("an operation to follow");
    assert!(matches!(wait(&rig.ws, &op).await, OperationStatus::Succeeded));
    assert!(rig.ws.get_online_endpoint(ep).await.expect("get").is_none());
    assert!(rig.ws.delete_online_endpoint(ep).await.expect("DELETE again").is_none());

    let log = rig.log().await;
    assert_eq!(count(&log, "PUT", &format!("/onlineEndpoints/{ep}")), 2, "{log:?}");
    assert_eq!(count(&log, "PUT", &format!("/onlineEndpoints/{ep}/deployments/demo")), 1);
    let score = log.iter().find(|(m, p, _)| m == "POST" && p.ends_with("/score")).expect("scored");
    assert_eq!(score.2, 200);
}

#[tokio::test]
async fn failing_deployment_operation_reports_azure_error() {
    use azureml_operator::azure::OperationStatus;
    let rig = rig().await;
    let ep = "ep-failing-dep";
    let op = rig.ws.put_online_endpoint(ep, &endpoint_spec(&[])).await.expect("PUT endpoint");
    assert!(matches!(wait(&rig.ws, &op).await, OperationStatus::Succeeded));
    rig.admin_post(
        "failures",
        json!({"kind": "deployment", "name": "demo", "endpoint": ep, "code": "OutOfQuota", "message": "Not enough quota available for Standard_NC6s_v3"}),
    )
    .await;
    let model = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15";
    let op = rig.ws.put_online_deployment(ep, "demo", &deployment_spec(model)).await.expect("accepted");
    match wait(&rig.ws, &op).await {
        OperationStatus::Failed(err) => {
            assert_eq!(err.code(), Some("OutOfQuota"), "{err}");
            assert_eq!(err.class(), ErrorClass::Quota);
        }
        other => panic!("expected a failed operation, got {other:?}"),
    }
}

#[tokio::test]
async fn deleting_a_missing_endpoint_or_deployment_is_none() {
    let rig = rig().await;
    assert!(rig.ws.delete_online_endpoint("never-created").await.expect("404 is fine").is_none());
    assert!(rig.ws.get_online_endpoint("never-created").await.expect("get").is_none());
    assert!(rig.ws.list_online_deployments("never-created").await.expect("list").is_empty());
}

#[tokio::test]
async fn aml_token_and_aad_token_endpoints_score() {
    use azureml_operator::azure::{AuthMode, OperationStatus, ScoringAuth};
    let rig = rig().await;
    let model = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15";
    let body = json!({"input_data": {"input_string": [{"role": "user", "content": "hi"}], "parameters": {}}, "params": {}});
    for (ep, mode) in [("ep-amltoken", AuthMode::AMLToken), ("ep-aadtoken", AuthMode::AADToken)] {
        let spec = azureml_operator::azure::OnlineEndpointSpec { auth_mode: mode, ..endpoint_spec(&[]) };
        let op = rig.ws.put_online_endpoint(ep, &spec).await.expect("PUT endpoint");
        assert!(matches!(wait(&rig.ws, &op).await, OperationStatus::Succeeded));
        let op =
            rig.ws.put_online_deployment(ep, "demo", &deployment_spec(model)).await.expect("PUT deployment");
        assert!(matches!(wait(&rig.ws, &op).await, OperationStatus::Succeeded));
        let endpoint = rig.ws.get_online_endpoint(ep).await.expect("get").expect("exists");
        assert_eq!(endpoint.auth_mode, mode);
        let auth = match mode {
            AuthMode::AMLToken => {
                let token = rig.ws.get_endpoint_token(ep).await.expect("token");
                assert!(token.refresh_after <= token.expires_at);
                ScoringAuth::AmlToken(token.access_token)
            }
            _ => ScoringAuth::AadToken,
        };
        let uri = endpoint.scoring_uri.expect("scoring URI");
        let reply = rig.ws.score(&uri, &auth, Some("demo"), &body).await.expect("score");
        assert_eq!(reply.status, 200, "{ep}: {}", reply.body);
    }
}

#[tokio::test]
async fn archive_model_version_round_trip() {
    use azureml_operator::azure::ModelVersionSpec;
    let rig = rig().await;
    let job = "ftj-for-archive";
    rig.ws.create_pipeline_job(job, &notebook_job_spec()).await.expect("submit");
    wait_job(&rig.ws, job).await;
    let spec = ModelVersionSpec {
        model_type: "mlflow_model".into(),
        model_uri: format!("azureml://jobs/{job}/outputs/trained_model"),
        description: None,
        tags: [("purpose".to_string(), "test".to_string())].into(),
        properties: std::collections::BTreeMap::new(),
        job_name: Some(job.into()),
    };
    rig.ws.create_model_version("archived-model", "3", &spec).await.expect("register");
    assert!(rig.ws.archive_model_version("archived-model", "3").await.expect("archive"));
    let model = rig.ws.get_model_version("archived-model", "3").await.expect("get").expect("exists");
    assert!(model.archived);
    assert_eq!(model.tags.get("purpose").map(String::as_str), Some("test"), "metadata kept");
    // Archiving again is a no-op; a missing version reports false.
    assert!(rig.ws.archive_model_version("archived-model", "3").await.expect("again"));
    assert!(!rig.ws.archive_model_version("archived-model", "404").await.expect("missing"));
    assert_eq!(count(&rig.log().await, "PUT", "/models/archived-model/versions/3"), 2);
}
