//! ModelRegistration against a real API server and the emulator: it waits for its FineTuneJob, registers
//! exactly one version with lineage, stalls on a failed source or a version conflict, survives restarts
//! without a second version, and archives on delete when asked.

mod support;

use std::time::Duration;

use azureml_operator::api::conditions::{self, reasons};
use azureml_operator::api::{FineTuneJob, ModelRegistration};
use azureml_operator::controller::finetunejob::params;
use kube::ResourceExt;
use kube::api::DeleteParams;
use serde_json::{Value, json};
use support::operator::Operator;

const WAIT: Duration = Duration::from_secs(120);

fn ftj(name: &str) -> Value {
    json!({
        "apiVersion": "azureml-operator.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "Phi-3-mini-4k-instruct"},
            "compute": {"name": "gpu-cluster"},
            "data": {
                "train": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/train_sft.jsonl",
                "test": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/test_sft.jsonl"
            }
        }
    })
}

fn mreg(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "azureml-operator.io/v1alpha1",
        "kind": "ModelRegistration",
        "metadata": {"name": name},
        "spec": spec
    })
}

fn reason_of(m: &ModelRegistration, type_: &str) -> Option<(String, String)> {
    let c = conditions::find(&m.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

fn ready(m: &ModelRegistration) -> bool {
    reason_of(m, conditions::READY).is_some_and(|(s, _)| s == "True")
}

fn stalled(m: &ModelRegistration, reason: &str) -> bool {
    reason_of(m, conditions::STALLED).is_some_and(|(s, r)| s == "True" && r == reason)
}

async fn model_puts(op: &Operator, name: &str) -> usize {
    op.requests_matching("PUT", &format!("/models/{name}/versions/")).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_the_fine_tuned_model_once_the_job_succeeds() {
    let op = Operator::start("mreg-happy").await;
    op.create::<ModelRegistration>(mreg(
        "ultrachat-200k",
        json!({"source": {"fineTuneJobRef": {"name": "phi3"}}}),
    ))
    .await;
    // No job yet: it waits, it does not fail.
    op.wait_for::<ModelRegistration>("ultrachat-200k", WAIT, |m| {
        reason_of(m, conditions::RECONCILING) == Some(("True".into(), reasons::WAITING_FOR_SOURCE.into()))
    })
    .await;
    op.create::<FineTuneJob>(ftj("phi3")).await;
    let m = op.wait_for::<ModelRegistration>("ultrachat-200k", WAIT, ready).await;
    let status = m.status.expect("status");
    let name = "Phi-3-mini-4k-instruct-ultrachat-200k";
    assert_eq!(status.model_name.as_deref(), Some(name));
    let version = status.version.clone().expect("version");
    assert_eq!(
        version,
        m.metadata.creation_timestamp.unwrap().0.as_second().to_string(),
        "version is the creation time"
    );
    assert_eq!(status.asset_id, Some(format!("azureml:{name}:{version}")));
    let job: FineTuneJob = op.api::<FineTuneJob>().await.get("phi3").await.expect("job");
    let job_name = job.status.and_then(|s| s.job_name).expect("job name");
    assert_eq!(status.job_name.as_deref(), Some(job_name.as_str()));
    assert_eq!(status.source_uri, Some(format!("azureml://jobs/{job_name}/outputs/trained_model")));
    assert_eq!(status.base_model.as_ref().map(|b| b.name.as_str()), Some("Phi-3-mini-4k-instruct"));
    // Exactly one PUT, with the notebook's body.
    let puts = op.requests_matching("PUT", &format!("/models/{name}/versions/{version}")).await;
    assert_eq!(puts.len(), 1, "{puts:#?}");
    let body = &puts[0]["body"]["properties"];
    assert_eq!(body["modelType"], "mlflow_model");
    assert_eq!(body["modelUri"], format!("azureml://jobs/{job_name}/outputs/trained_model"));
    // Steady state is GET-only.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(model_puts(&op, name).await, 1, "a resync wrote again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_stalls_the_registration() {
    let op = Operator::start("mreg-failed").await;
    let job = op.create::<FineTuneJob>(ftj("doomed")).await;
    let job_name = params::job_name(&op.namespace, "doomed", &job.uid().expect("uid"));
    op.admin_post(
        "/_emulator/failures",
        json!({"kind": "job", "name": job_name, "code": "UserError", "message": "CUDA out of memory"}),
    )
    .await;
    op.create::<ModelRegistration>(mreg(
        "doomed-model",
        json!({"source": {"fineTuneJobRef": {"name": "doomed"}}}),
    ))
    .await;
    op.wait_for::<ModelRegistration>("doomed-model", WAIT, |m| stalled(m, reasons::SOURCE_FAILED)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_version_with_other_content_is_a_conflict() {
    let op = Operator::start("mreg-conflict").await;
    op.create::<FineTuneJob>(ftj("phi3")).await;
    let spec = |source: Value| json!({"modelName": "shared-model", "version": "1", "source": source});
    op.create::<ModelRegistration>(mreg("first", spec(json!({"fineTuneJobRef": {"name": "phi3"}})))).await;
    op.wait_for::<ModelRegistration>("first", WAIT, ready).await;
    op.create::<ModelRegistration>(mreg(
        "second",
        spec(json!({"uri": "azureml://datastores/workspaceblobstore/paths/other-model"})),
    ))
    .await;
    let second =
        op.wait_for::<ModelRegistration>("second", WAIT, |m| stalled(m, reasons::VERSION_CONFLICT)).await;
    let msg =
        conditions::find(&second.status.unwrap().conditions, conditions::STALLED).unwrap().message.clone();
    assert!(msg.contains("spec.version"), "{msg}");
    assert_eq!(model_puts(&op, "shared-model").await, 1, "the conflicting version was never sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_during_registration_create_exactly_one_version() {
    let mut op = Operator::start("mreg-restart").await;
    op.create::<FineTuneJob>(ftj("phi3")).await;
    op.wait_for::<FineTuneJob>("phi3", WAIT, |j| j.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
        .await;
    // Slow the registration PUT down so the operator is killed while it is in flight.
    op.admin_post(
        "/_emulator/faults",
        json!({"method": "PUT", "pathRegex": "/models/.*/versions/", "latencyMs": 1500, "times": 1}),
    )
    .await;
    op.create::<ModelRegistration>(mreg(
        "ultrachat-200k",
        json!({"source": {"fineTuneJobRef": {"name": "phi3"}}}),
    ))
    .await;
    let name = "Phi-3-mini-4k-instruct-ultrachat-200k";
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        op.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        op.restart().await;
    }
    op.wait_for::<ModelRegistration>("ultrachat-200k", WAIT, ready).await;
    let state = op.admin_get("/_emulator/state").await;
    let versions: Vec<&Value> = state["models"]
        .as_array()
        .map(|m| m.iter().filter(|v| v["name"] == name || v["model"] == name).collect())
        .unwrap_or_default();
    assert_eq!(versions.len(), 1, "model versions in Azure: {state:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_on_delete_archives_the_version() {
    let op = Operator::start("mreg-archive").await;
    op.create::<FineTuneJob>(ftj("phi3")).await;
    op.create::<ModelRegistration>(mreg(
        "archived",
        json!({"modelName": "to-archive", "version": "3", "onDelete": "Archive", "source": {"fineTuneJobRef": {"name": "phi3"}}}),
    ))
    .await;
    op.wait_for::<ModelRegistration>("archived", WAIT, ready).await;
    op.api::<ModelRegistration>().await.delete("archived", &DeleteParams::default()).await.expect("delete");
    op.wait_gone::<ModelRegistration>("archived", WAIT).await;
    let gets = op.requests_matching("PUT", "/models/to-archive/versions/3").await;
    assert_eq!(gets.len(), 2, "one registration PUT and one archiving PUT: {gets:#?}");
    assert_eq!(gets[1]["body"]["properties"]["isArchived"], true);
}
