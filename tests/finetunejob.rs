//! The FineTuneJob controller against a real API server and the Azure ML emulator: the notebook's job
//! from Pending to Succeeded with the exact request body, every validation failure as a Stalled reason,
//! a job Azure fails, cancel on delete, and adoption of a job submitted just before a crash.

mod support;

use std::time::Duration;

use azureml_operator::api::FineTuneJob;
use azureml_operator::api::conditions::{self, reasons};
use azureml_operator::api::finetunejob::Phase;
use azureml_operator::controller::finetunejob::params;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::operator::Operator;

/// Upper bound of any wait in these tests.
const WAIT: Duration = Duration::from_secs(60);

async fn create(op: &Operator, name: &str, spec: Value) -> FineTuneJob {
    op.create(json!({
        "apiVersion": "azureml-operator.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": spec
    }))
    .await
}

fn job_name(op: &Operator, ftj: &FineTuneJob) -> String {
    params::job_name(&op.namespace, &ftj.name_any(), &ftj.uid().expect("uid"))
}

/// An emulator admin call the harness has no helper for (PUT, DELETE).
async fn admin(op: &Operator, method: reqwest::Method, path: &str, body: Option<Value>) {
    let mut req = reqwest::Client::new().request(method.clone(), format!("{}{path}", op.emulator.http_url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin call");
    assert!(resp.status().is_success(), "{method} {path}: {}", resp.status());
}

/// Requests the emulator logged with this method whose path ends with `suffix`.
async fn requests(op: &Operator, method: &str, suffix: &str) -> Vec<Value> {
    op.requests_matching(method, suffix)
        .await
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(suffix)))
        .collect()
}

/// The emulator's view of a job (`/_emulator/state`).
async fn azure_job(op: &Operator, name: &str) -> Value {
    let state = op.admin_get("/_emulator/state").await;
    state["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

async fn wait_until<K>(api: &Api<K>, name: &str, done: impl Fn(&K) -> bool) -> K
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = api.get_opt(name).await.expect("read");
        if let Some(obj) = &last
            && done(obj)
        {
            return obj.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {name}; last seen:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while api.get_opt(name).await.expect("read").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "{name} still exists");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase(f: &FineTuneJob) -> Phase {
    f.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn stalled_reason(f: &FineTuneJob) -> Option<String> {
    let conds = &f.status.as_ref()?.conditions;
    conditions::find(conds, conditions::STALLED).filter(|c| c.status == "True").map(|c| c.reason.clone())
}

fn stalled_message(f: &FineTuneJob) -> String {
    f.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::STALLED).map(|c| c.message.clone()))
        .unwrap_or_default()
}

/// The notebook's FineTuneJob (examples/finetunejob.yaml without the workspace specifics).
fn notebook_spec() -> Value {
    json!({
        "model": {"registry": "azureml", "name": "Phi-3-mini-4k-instruct"},
        "compute": {"name": "gpu-cluster"},
        "data": {
            "train": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/train_sft.jsonl",
            "test": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/test_sft.jsonl"
        }
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

/// The body the notebook's job is submitted with: the seeded Phi-3 v15 and component 0.0.82, the
/// model's `model_specific_defaults` over the notebook's defaults, typed as the component declares them.
fn notebook_job_body(namespace: &str) -> Value {
    let literal = |v: &str| json!({"job_input_type": "literal", "value": v});
    let mut inputs = serde_json::Map::new();
    for name in ["compute_model_import", "compute_preprocess", "compute_finetune", "compute_model_evaluation"]
    {
        inputs.insert(name.into(), literal("gpu-cluster"));
    }
    for (name, value) in [
        ("apply_deepspeed", "true"),
        ("apply_lora", "true"),
        ("apply_ort", "false"),
        ("deepspeed_stage", "2"),
        ("gradient_accumulation_steps", "1"),
        ("ignore_mismatched_sizes", "false"),
        ("learning_rate", "5e-06"),
        ("logging_steps", "10"),
        ("logging_strategy", "steps"),
        ("lr_scheduler_type", "cosine"),
        ("num_train_epochs", "1"),
        ("number_of_gpu_to_use_finetuning", "1"),
        ("per_device_eval_batch_size", "1"),
        ("per_device_train_batch_size", "1"),
        ("precision", "16"),
        ("save_total_limit", "1"),
    ] {
        inputs.insert(name.into(), literal(value));
    }
    inputs.insert(
        "mlflow_model_path".into(),
        json!({"job_input_type": "mlflow_model", "uri": "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"}),
    );
    inputs.insert(
        "train_file_path".into(),
        json!({"job_input_type": "uri_file", "uri": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/train_sft.jsonl"}),
    );
    inputs.insert(
        "test_file_path".into(),
        json!({"job_input_type": "uri_file", "uri": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/test_sft.jsonl"}),
    );
    json!({
        "properties": {
            "jobType": "Pipeline",
            "displayName": "Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora-save_limit1-seqlen-1",
            "experimentName": "chat_completion_Phi-3-mini-4k-instruct",
            "description": null,
            "tags": {"managed-by": "azureml-operator", "k8s-resource": format!("{namespace}/phi3-ultrachat")},
            "properties": {},
            "settings": {"_source": "DSL", "force_rerun": true, "continue_on_step_failure": false},
            "inputs": {},
            "outputs": {"trained_model": {"jobOutputType": "mlflow_model", "mode": "ReadWriteMount"}},
            "jobs": {
                "chat_completion_pipeline": {
                    "type": "pipeline",
                    "name": "chat_completion_pipeline",
                    "_source": "REMOTE.REGISTRY",
                    "componentId": "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82",
                    "inputs": inputs,
                    "outputs": {"mlflow_model_folder": {"type": "literal", "value": "${{parent.outputs.trained_model}}"}}
                }
            }
        }
    })
}

/// Notebook steps 1–5: Pending → Succeeded, one PUT of exactly the notebook's job, pinned model and
/// component, GPUs, outputs, steps and final metrics in status, and no write once it is done.
#[tokio::test]
async fn notebook_job_runs_from_pending_to_succeeded() {
    let op = Operator::start("ftj-notebook").await;
    let created = create(&op, "phi3-ultrachat", notebook_spec()).await;
    let job_name = job_name(&op, &created);
    let api = op.api::<FineTuneJob>().await;
    let done = wait_until(&api, "phi3-ultrachat", |f| phase(f).is_terminal()).await;
    assert_eq!(phase(&done), Phase::Succeeded, "{:#?}", done.status);
    let status = done.status.clone().expect("status");
    assert!(conditions::is_ready(&status.conditions, done.metadata.generation));
    assert_eq!(status.job_name.as_deref(), Some(job_name.as_str()));
    assert_eq!(status.azure_status.as_deref(), Some("Completed"));
    assert_eq!(status.resolved_model.as_ref().map(|m| m.version.as_str()), Some("15"));
    assert_eq!(status.resolved_component.as_ref().map(|c| c.version.as_str()), Some("0.0.82"));
    assert_eq!(status.gpus_per_node, Some(1));
    assert_eq!(status.effective_parameters.get("precision").as_deref(), Some("16"));
    assert_eq!(
        status.outputs.and_then(|o| o.trained_model),
        Some(format!("azureml://jobs/{job_name}/outputs/trained_model"))
    );
    assert!(status.studio_url.is_some_and(|u| u.contains(&job_name)));
    assert!(status.metrics.contains_key("eval_loss"), "final metrics: {:?}", status.metrics);
    assert!(
        status.steps.iter().any(|s| s.name == "chat_completion_finetune" && s.status == "FINISHED"),
        "{:?}",
        status.steps
    );
    assert!(done.finalizers().iter().any(|f| f == azureml_operator::api::FINALIZER));
    let steps: Vec<&str> = status.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps.first(), Some(&"ft_nlp_common_validation"), "steps in pipeline order: {steps:?}");
    let (start, end) =
        (status.start_time.expect("start time"), status.completion_time.expect("completion time"));
    assert!(start.0 < end.0);

    let puts = requests(&op, "PUT", &format!("/jobs/{job_name}")).await;
    assert_eq!(puts.len(), 1, "exactly one submission");
    assert_eq!(puts[0]["body"], notebook_job_body(&op.namespace));
    assert!(requests(&op, "PUT", "/computes/gpu-cluster").await.is_empty(), "the cluster exists: no write");

    // Done means quiet: no more Azure writes and no status writes on resync.
    let version = done.resource_version();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let later = api.get("phi3-ultrachat").await.expect("read");
    assert_eq!(later.resource_version(), version, "status rewritten while nothing changed");
    assert_eq!(requests(&op, "PUT", &format!("/jobs/{job_name}")).await.len(), 1);
}

/// Each thing validation checks, broken on purpose, stalls with its own reason and submits nothing.
#[tokio::test]
async fn each_validation_failure_stalls_with_its_reason() {
    let op = Operator::start("ftj-invalid").await;
    for (name, vm) in [("nc6s-cluster", "Standard_NC6s_v3"), ("cpu-cluster", "Standard_DS3_v2")] {
        admin(&op, reqwest::Method::PUT, &format!("/_emulator/computes/{name}"), Some(json!({"vmSize": vm})))
            .await;
    }
    let phi4 = json!({"registry": "azureml", "name": "Phi-4-mini-instruct"});
    let cases = [
        (
            "model-missing",
            json!({"model": {"name": "No-Such-Model"}}),
            reasons::MODEL_NOT_FOUND,
            "No-Such-Model",
        ),
        (
            "model-archived",
            json!({"model": {"name": "Llama-2-7b-chat"}}),
            reasons::MODEL_ARCHIVED,
            "Llama-2-7b-chat",
        ),
        (
            "compute-missing",
            json!({"compute": {"name": "no-such-cluster"}}),
            reasons::COMPUTE_NOT_FOUND,
            "no-such-cluster",
        ),
        (
            "compute-failed",
            json!({"compute": {"name": "broken-cluster"}}),
            reasons::COMPUTE_FAILED,
            "broken-cluster",
        ),
        (
            "size-not-allowed",
            json!({"compute": {"name": "nc6s-cluster"}}),
            reasons::VM_SIZE_NOT_ALLOWED,
            "Standard_NC6s_v3",
        ),
        (
            "size-not-found",
            json!({"model": phi4, "compute": {"name": "new-cluster", "create": {"vmSize": "Standard_NC4as_T4_v3"}}}),
            reasons::VM_SIZE_NOT_FOUND,
            "Standard_NC24ads_A100_v4",
        ),
        (
            "no-gpus",
            json!({"model": phi4, "compute": {"name": "cpu-cluster"}}),
            reasons::NO_GPUS,
            "Standard_DS3_v2",
        ),
        ("unknown-param", json!({"parameters": {"lora_rank": 16}}), reasons::UNKNOWN_PARAMETER, "lora_rank"),
        ("ill-typed-param", json!({"parameters": {"lora_r": "eight"}}), reasons::INVALID_PARAMETER, "lora_r"),
    ];
    for (name, extra, _, _) in &cases {
        create(&op, name, with(notebook_spec(), extra.clone())).await;
    }
    let api = op.api::<FineTuneJob>().await;
    for (name, _, reason, needle) in &cases {
        let f = wait_until(&api, name, |f| stalled_reason(f).is_some()).await;
        assert_eq!(stalled_reason(&f).as_deref(), Some(*reason), "{name}: {}", stalled_message(&f));
        assert!(stalled_message(&f).contains(needle), "{name}: {}", stalled_message(&f));
        assert_eq!(phase(&f), Phase::Validating, "{name}");
        assert!(f.status.as_ref().is_some_and(|s| s.job_name.is_none()), "{name}: the spec stays editable");
    }
    assert!(
        requests(&op, "PUT", "").await.iter().all(|r| !r["path"].as_str().unwrap_or("").contains("/jobs/"))
    );
    assert!(requests(&op, "PUT", "/computes/new-cluster").await.is_empty(), "no cluster of an unusable size");

    // Fixing the spec un-stalls it: the same resource goes on to submit.
    let fixed = json!({"spec": {"parameters": {"lora_r": 16}}});
    api.patch("ill-typed-param", &PatchParams::default(), &Patch::Merge(&fixed)).await.expect("patch");
    let f = wait_until(&api, "ill-typed-param", |f| {
        matches!(phase(f), Phase::Submitted | Phase::Running | Phase::Succeeded)
    })
    .await;
    assert_eq!(stalled_reason(&f), None);
}

/// Azure refusing the submission stalls with Azure's message (quota with its own reason) and releases
/// the job name, so the spec can be fixed; once Azure accepts, the same resource goes on.
#[tokio::test]
async fn azure_refusing_the_submission_stalls_with_its_message() {
    let op = Operator::start("ftj-refused").await;
    let ns = &op.namespace;
    for (name, code, message) in [
        (
            "refused-invalid",
            "UserError",
            "Datastore 'workspaceblobstore' is not reachable from this workspace.",
        ),
        ("refused-quota", "QuotaExceeded", "Not enough quota for StandardNCADSA100v4Family in eastus2."),
    ] {
        // Job names are `<namespace>-<name>-<uid prefix>`: the fault is in place before the resource exists.
        op.admin_post(
            "/_emulator/faults",
            json!({
                "method": "PUT",
                "pathRegex": format!("/jobs/{ns}-{name}-[0-9a-f]+$"),
                "status": 400,
                "body": {"error": {"code": code, "message": message}}
            }),
        )
        .await;
        create(&op, name, notebook_spec()).await;
    }
    let api = op.api::<FineTuneJob>().await;
    for (name, reason, needle) in [
        ("refused-invalid", reasons::AZURE_REJECTED, "is not reachable"),
        ("refused-quota", reasons::QUOTA_EXCEEDED, "Not enough quota"),
    ] {
        let f = wait_until(&api, name, |f| stalled_reason(f).is_some()).await;
        assert_eq!(stalled_reason(&f).as_deref(), Some(reason), "{name}: {}", stalled_message(&f));
        assert!(stalled_message(&f).contains(needle), "{name}: {}", stalled_message(&f));
        let status = f.status.expect("status");
        assert_eq!(status.phase, Phase::Validating);
        assert_eq!(status.job_name, None, "{name}: nothing was created, the spec stays editable");
    }
    // The refusal goes away (quota granted, datastore fixed): the next resync submits.
    admin(&op, reqwest::Method::DELETE, "/_emulator/faults", None).await;
    let f = wait_until(&api, "refused-quota", |f| {
        matches!(phase(f), Phase::Submitted | Phase::Running | Phase::Succeeded)
    })
    .await;
    assert_eq!(stalled_reason(&f), None);
}

/// A missing cluster with `create` is created (one PUT, its operation persisted), then the job runs on it.
#[tokio::test]
async fn missing_compute_is_created_then_used() {
    let op = Operator::start("ftj-compute").await;
    let spec = with(
        notebook_spec(),
        json!({"compute": {"name": "a100-cluster", "create": {"vmSize": "Standard_NC48ads_A100_v4", "maxInstances": 2}}}),
    );
    create(&op, "phi3-new-cluster", spec).await;
    let api = op.api::<FineTuneJob>().await;
    let f = wait_until(&api, "phi3-new-cluster", |f| phase(f).is_terminal()).await;
    assert_eq!(phase(&f), Phase::Succeeded, "{:#?}", f.status);
    let puts = requests(&op, "PUT", "/computes/a100-cluster").await;
    assert_eq!(puts.len(), 1, "one create");
    assert_eq!(puts[0]["body"]["properties"]["properties"]["vmSize"], "Standard_NC48ads_A100_v4");
    assert_eq!(puts[0]["body"]["location"], "eastus2");
    let status = f.status.expect("status");
    assert_eq!(status.gpus_per_node, Some(2));
    assert_eq!(status.compute_operation, None, "the finished operation is forgotten");
}

/// A job Azure fails ends Failed with a Stalled JobFailed condition naming the job.
#[tokio::test]
async fn job_failed_by_azure_is_failed_and_stalled() {
    let op = Operator::start("ftj-fails").await;
    let created = create(&op, "phi3-doomed", notebook_spec()).await;
    let job_name = job_name(&op, &created);
    // Registered before or during the run: the emulator fails the job while it runs.
    op.admin_post(
        "/_emulator/failures",
        json!({"kind": "job", "name": job_name, "code": "UserError", "message": "CUDA out of memory"}),
    )
    .await;
    let api = op.api::<FineTuneJob>().await;
    let f = wait_until(&api, "phi3-doomed", |f| phase(f).is_terminal()).await;
    assert_eq!(phase(&f), Phase::Failed, "{:#?}", f.status);
    assert_eq!(stalled_reason(&f).as_deref(), Some(reasons::JOB_FAILED));
    assert!(stalled_message(&f).contains(&job_name), "{}", stalled_message(&f));
    assert_eq!(f.status.as_ref().and_then(|s| s.azure_status.as_deref()), Some("Failed"));
    assert!(f.status.as_ref().is_some_and(|s| s.outputs.is_none()), "no trained model from a failed job");
    assert_eq!(azure_job(&op, &job_name).await["status"], "Failed");
}

/// Deleting a running FineTuneJob cancels its Azure job (onDelete Cancel, the default) and then lets
/// the resource go; with Orphan, the job is left alone.
#[tokio::test]
async fn delete_cancels_a_running_job_unless_orphaned() {
    let op = Operator::start("ftj-delete").await;
    let cancel = create(&op, "phi3-cancel", notebook_spec()).await;
    let orphan = create(&op, "phi3-orphan", with(notebook_spec(), json!({"onDelete": "Orphan"}))).await;
    let api = op.api::<FineTuneJob>().await;
    for name in ["phi3-cancel", "phi3-orphan"] {
        wait_until(&api, name, |f| matches!(phase(f), Phase::Submitted | Phase::Running)).await;
        api.delete(name, &DeleteParams::default()).await.expect("delete");
    }
    for name in ["phi3-cancel", "phi3-orphan"] {
        wait_gone(&api, name).await;
    }
    let cancelled = job_name(&op, &cancel);
    assert_eq!(requests(&op, "POST", &format!("/jobs/{cancelled}/cancel")).await.len(), 1);
    let status = azure_job(&op, &cancelled).await["status"].as_str().unwrap_or_default().to_owned();
    assert!(status == "Canceled" || status == "CancelRequested", "job is {status}");
    let orphaned = job_name(&op, &orphan);
    assert!(requests(&op, "POST", &format!("/jobs/{orphaned}/cancel")).await.is_empty());
    assert_ne!(azure_job(&op, &orphaned).await["status"], "Canceled");
}

/// A cancel Azure refuses holds the resource with a Stalled DeleteFailed condition carrying Azure's
/// message (never a silent hang); the detach annotation then releases it without touching Azure.
#[tokio::test]
async fn refused_cancel_stalls_until_detached() {
    let op = Operator::start("ftj-cancel-refused").await;
    op.admin_post(
        "/_emulator/faults",
        json!({
            "method": "POST",
            "pathRegex": "/cancel$",
            "status": 400,
            "body": {"error": {"code": "UserError", "message": "Cancel is not allowed for this run right now."}}
        }),
    )
    .await;
    create(&op, "phi3-stuck", notebook_spec()).await;
    let api = op.api::<FineTuneJob>().await;
    wait_until(&api, "phi3-stuck", |f| matches!(phase(f), Phase::Submitted | Phase::Running)).await;
    api.delete("phi3-stuck", &DeleteParams::default()).await.expect("delete");
    let f = wait_until(&api, "phi3-stuck", |f| stalled_reason(f).is_some()).await;
    assert_eq!(stalled_reason(&f).as_deref(), Some(reasons::DELETE_FAILED), "{}", stalled_message(&f));
    assert!(stalled_message(&f).contains("Cancel is not allowed"), "{}", stalled_message(&f));
    assert!(stalled_message(&f).contains("reconcile-policy=detach"), "says how to let go");
    assert!(f.metadata.deletion_timestamp.is_some(), "held by the finalizer");

    let detach = json!({"metadata": {"annotations": {"azureml-operator.io/reconcile-policy": "detach"}}});
    api.patch("phi3-stuck", &PatchParams::default(), &Patch::Merge(&detach)).await.expect("annotate");
    wait_gone(&api, "phi3-stuck").await;
}

/// With its Workspace gone there is nothing in Azure the operator can reach: deletion lets go.
#[tokio::test]
async fn delete_after_the_workspace_is_gone_releases() {
    let op = Operator::start("ftj-no-workspace").await;
    create(&op, "phi3-orphaned-ws", notebook_spec()).await;
    let api = op.api::<FineTuneJob>().await;
    wait_until(&api, "phi3-orphaned-ws", |f| matches!(phase(f), Phase::Submitted | Phase::Running)).await;
    let workspaces = op.api::<azureml_operator::api::Workspace>().await;
    workspaces.delete("default", &DeleteParams::default()).await.expect("delete workspace");
    wait_gone(&workspaces, "default").await;
    api.delete("phi3-orphaned-ws", &DeleteParams::default()).await.expect("delete");
    wait_gone(&api, "phi3-orphaned-ws").await;
    assert!(requests(&op, "POST", "/cancel").await.is_empty());
}

/// A resource never submitted (stalled in validation) is released at once on delete.
#[tokio::test]
async fn delete_of_a_never_submitted_job_is_immediate() {
    let op = Operator::start("ftj-delete-stalled").await;
    create(&op, "stalled", with(notebook_spec(), json!({"model": {"name": "No-Such-Model"}}))).await;
    let api = op.api::<FineTuneJob>().await;
    wait_until(&api, "stalled", |f| stalled_reason(f).is_some()).await;
    api.delete("stalled", &DeleteParams::default()).await.expect("delete");
    wait_gone(&api, "stalled").await;
    assert!(requests(&op, "POST", "/cancel").await.is_empty());
}

/// The operator dies after persisting the job name and after its PUT reached Azure, but before it
/// recorded the answer. Simulated exactly: the emulator refuses the operator's PUTs (503) so the
/// body is logged but nothing is created; the controllers are killed; the same body is then PUT
/// under the same name (the PUT that "landed"); the restarted operator must find and adopt that job
/// and never PUT again.
#[tokio::test]
async fn restart_after_submit_adopts_the_existing_job() {
    let mut op = Operator::start("ftj-adopt").await;
    let created = create(&op, "phi3-ultrachat", notebook_spec()).await;
    let job_name = job_name(&op, &created);
    let job_path = format!("/jobs/{job_name}");
    let fault = op
        .admin_post(
            "/_emulator/faults",
            json!({"method": "PUT", "pathRegex": format!("{job_path}$"), "status": 503}),
        )
        .await;
    let api = op.api::<FineTuneJob>().await;
    // Persist-before-create: the name is in status while the PUT is being refused.
    let f =
        wait_until(&api, "phi3-ultrachat", |f| f.status.as_ref().is_some_and(|s| s.job_name.is_some())).await;
    assert_eq!(f.status.as_ref().and_then(|s| s.job_name.clone()), Some(job_name.clone()));
    let deadline = tokio::time::Instant::now() + WAIT;
    let attempt = loop {
        if let Some(r) = requests(&op, "PUT", &job_path).await.into_iter().next() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "the operator never tried to submit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    op.kill();
    assert_eq!(phase(&api.get("phi3-ultrachat").await.expect("read")), Phase::Validating);
    let id = fault["id"].as_str().map(str::to_owned).unwrap_or_else(|| fault["id"].to_string());
    admin(&op, reqwest::Method::DELETE, &format!("/_emulator/faults/{id}"), None).await;

    // The PUT that landed: the operator's own body, under its own name.
    let http = reqwest::Client::new();
    let token: Value = http
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
    let landed = http
        .put(format!(
            "{}{}?{}",
            op.emulator.http_url(),
            attempt["path"].as_str().unwrap_or_default(),
            attempt["query"].as_str().unwrap_or_default()
        ))
        .bearer_auth(token["access_token"].as_str().unwrap_or_default())
        .json(&attempt["body"])
        .send()
        .await
        .expect("PUT job");
    assert_eq!(landed.status(), 201, "{}", landed.text().await.unwrap_or_default());
    admin(&op, reqwest::Method::DELETE, "/_emulator/requests", None).await;

    op.restart().await;
    let f = wait_until(&api, "phi3-ultrachat", |f| phase(f).is_terminal()).await;
    assert_eq!(phase(&f), Phase::Succeeded, "{:#?}", f.status);
    assert!(
        requests(&op, "PUT", &job_path).await.is_empty(),
        "the restarted operator adopted the job instead of re-submitting"
    );
    assert!(!requests(&op, "GET", &job_path).await.is_empty(), "it found the job by its name");
}
