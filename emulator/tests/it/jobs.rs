//! Pipeline jobs: validation against the component, lifecycle, cancel, idempotency, MLflow metrics.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

fn lit(v: Value) -> Value {
    json!({"job_input_type": "literal", "value": v})
}

/// The notebook's job runs NotStarted → … → Completed, with studio URL, output URI and metrics.
#[tokio::test]
async fn job_lifecycle_and_metrics() {
    let env = start().await;
    let path = env.ws_path("/jobs/ftj-demo-1");
    let (status, body) = env.put(&path, pipeline_job(&[])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["properties"]["status"], "NotStarted");
    assert!(
        body["properties"]["services"]["Studio"]["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("https://ml.azure.com/runs/ftj-demo-1?wsid=")
    );
    // The SDK appends `&tid=` itself; the service's URL must not carry it already.
    assert!(!body["properties"]["services"]["Studio"]["endpoint"].as_str().unwrap().contains("tid="));
    assert_eq!(
        body["properties"]["outputs"]["trained_model"]["uri"],
        "azureml://jobs/ftj-demo-1/outputs/trained_model"
    );
    let seen = env.wait_job("ftj-demo-1").await;
    assert_eq!(seen.last().unwrap(), "Completed");
    let order = ["NotStarted", "Queued", "Preparing", "Running", "Finalizing", "Completed"];
    let positions: Vec<usize> = seen.iter().map(|s| order.iter().position(|o| o == s).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    // MLflow: tracking base from the job, experiment, child runs, metrics.
    let (_, job) = env.get(&path).await;
    let tracking = job["properties"]["services"]["Tracking"]["endpoint"]
        .as_str()
        .unwrap()
        .replace("azureml://", "https://");
    let tracking = tracking.trim_end_matches('?').to_string();
    let (status, exp) = env.get(&format!("{tracking}/api/2.0/mlflow/experiments/get-by-name?experiment_name=chat_completion_Phi-3-mini-4k-instruct")).await;
    assert_eq!(status, StatusCode::OK, "{exp}");
    let exp_id = exp["experiment"]["experiment_id"].as_str().unwrap().to_string();
    let (_, pipeline_run) = env.get(&format!("{tracking}/api/2.0/mlflow/runs/get?run_id=ftj-demo-1")).await;
    assert_eq!(pipeline_run["run"]["info"]["status"], "FINISHED");
    let r = env
        .call(Method::POST, &format!("{tracking}/api/2.0/mlflow/runs/search"), Some(json!({"experiment_ids": [exp_id], "filter": "tags.mlflow.parentRunId = 'ftj-demo-1'", "max_results": 100})))
        .await;
    let (status, search) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{search}");
    let runs = search["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    let finetune = runs.iter().find(|r| r["info"]["run_name"] == "chat_completion_finetune").unwrap();
    let run_id = finetune["info"]["run_id"].as_str().unwrap();
    let metrics = finetune["data"]["metrics"].as_array().unwrap();
    assert!(metrics.iter().any(|m| m["key"] == "train_loss"));
    assert!(metrics.iter().any(|m| m["key"] == "eval_loss"));
    let (_, history) = env
        .get(&format!(
            "{tracking}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=loss&max_results=4"
        ))
        .await;
    assert_eq!(history["metrics"].as_array().unwrap().len(), 4);
    assert_eq!(history["next_page_token"], "4");
    let (status, _) = env.get(&format!("{tracking}/api/2.0/mlflow/runs/get?run_id=nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) =
        env.get(&format!("{tracking}/api/2.0/mlflow/experiments/get-by-name?experiment_name=nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], "RESOURCE_DOES_NOT_EXIST");

    let (_, list) = env.get(&env.ws_path("/jobs")).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    assert_eq!(env.state().await["jobs"].as_array().unwrap().len(), 1);
}

/// Same name and body: idempotent 200; a changed definition: 409; a changed display name: updated.
#[tokio::test]
async fn job_put_idempotency() {
    let env = start().await;
    let path = env.ws_path("/jobs/ftj-idem");
    assert_eq!(env.put(&path, pipeline_job(&[])).await.0, StatusCode::CREATED);
    let (status, _) = env.put(&path, pipeline_job(&[])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = env.put(&path, pipeline_job(&[("num_train_epochs", lit(json!("3")))])).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "UserError");
    let mut renamed = pipeline_job(&[]);
    renamed["properties"]["displayName"] = json!("renamed");
    let (status, body) = env.put(&path, renamed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["properties"]["displayName"], "renamed");
    assert_eq!(env.state().await["jobs"].as_array().unwrap().len(), 1);
}

/// Each validation rule answers 400 UserError naming the offending input.
#[tokio::test]
async fn job_validation() {
    let env = start().await;
    let cases: Vec<(Value, &str)> = vec![
        (pipeline_job(&[("precision", lit(json!(16)))]), "InputTypeMismatch"),
        (pipeline_job(&[("apply_lora", lit(json!("True")))]), "InvalidEnumValue"),
        (pipeline_job(&[("num_train_epochs", lit(json!("0")))]), "ValueOutOfRange"),
        (pipeline_job(&[("num_train_epochs", lit(json!("two")))]), "InputTypeMismatch"),
        (pipeline_job(&[("learning_rate_min", lit(json!("5e-07")))]), "UnknownInput"),
        (pipeline_job(&[("compute_finetune", lit(json!("no-such-cluster")))]), "ComputeNotFound"),
        (pipeline_job(&[("lr_scheduler_type", lit(json!("exponential")))]), "InvalidEnumValue"),
        (
            pipeline_job(&[(
                "mlflow_model_path",
                json!({"job_input_type": "mlflow_model", "uri": "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/99"}),
            )]),
            "AssetNotFound",
        ),
        (
            pipeline_job(&[(
                "num_train_epochs",
                json!({"job_input_type": "uri_file", "uri": "azureml://datastores/x/paths/y"}),
            )]),
            "InputTypeMismatch",
        ),
        (
            pipeline_job(&[(
                "train_file_path",
                json!({"job_input_type": "uri_file", "uri": "azureml://datastores/x/paths/y", "mode": "Sideways"}),
            )]),
            "InvalidEnumValue",
        ),
    ];
    for (i, (body, code)) in cases.into_iter().enumerate() {
        let (status, reply) = env.put(&env.ws_path(&format!("/jobs/bad-{i}")), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "case {i}: {reply}");
        assert_eq!(reply["error"]["code"], "UserError", "case {i}");
        assert_eq!(reply["error"]["details"][0]["code"], code, "case {i}: {reply}");
    }
    let mut bad_component = pipeline_job(&[]);
    bad_component["properties"]["jobs"]["chat_completion_pipeline"]["componentId"] =
        json!("azureml://registries/azureml/components/chat_completion_pipeline/versions/9.9.9");
    let (_, reply) = env.put(&env.ws_path("/jobs/bad-c"), bad_component).await;
    assert_eq!(reply["error"]["details"][0]["code"], "ComponentNotFound");
    let mut no_type = pipeline_job(&[]);
    no_type["properties"].as_object_mut().unwrap().remove("jobType");
    assert_eq!(
        env.put(&env.ws_path("/jobs/bad-t"), no_type).await.1["error"]["details"][0]["code"],
        "Required"
    );
    let mut bad_binding = pipeline_job(&[]);
    bad_binding["properties"]["outputs"] = json!({});
    assert_eq!(
        env.put(&env.ws_path("/jobs/bad-b"), bad_binding).await.1["error"]["details"][0]["code"],
        "InvalidBinding"
    );
    let (_, reply) = env.put(&env.ws_path("/jobs/-bad"), pipeline_job(&[])).await;
    assert_eq!(reply["error"]["details"][0]["code"], "InvalidName");
    // Pipeline-input bindings are resolved and checked too.
    let mut bound = pipeline_job(&[("precision", lit(json!("${{parent.inputs.p}}")))]);
    bound["properties"]["inputs"] = json!({"p": {"jobInputType": "literal", "value": "8"}});
    assert_eq!(
        env.put(&env.ws_path("/jobs/bad-p"), bound).await.1["error"]["details"][0]["code"],
        "InvalidEnumValue"
    );
    assert_eq!(env.state().await["jobs"], json!([]));
    assert_eq!(env.get(&env.ws_path("/jobs/nope")).await.0, StatusCode::NOT_FOUND);
}

/// Cancel: 202 + Location; the job shows CancelRequested then Canceled; cancelling again is a no-op.
#[tokio::test]
async fn job_cancel() {
    let env = start_with(azureml_emulator::Config::default().with_time_scale(50.0)).await;
    let path = env.ws_path("/jobs/ftj-cancel");
    env.put(&path, pipeline_job(&[])).await;
    let r = env.call(Method::POST, &format!("{path}/cancel"), None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location").unwrap();
    let (_, body) = env.get(&path).await;
    assert_eq!(body["properties"]["status"], "CancelRequested");
    let (status, _) = env.poll_location(&location).await;
    assert!(status.is_success());
    assert_eq!(env.get(&path).await.1["properties"]["status"], "Canceled");
    let r = env.call(Method::POST, &format!("{path}/cancel"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = env.call(Method::POST, &env.ws_path("/jobs/nope/cancel"), None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Delete.
    let r = env.call(Method::DELETE, &path, None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(env.get(&path).await.0, StatusCode::NOT_FOUND);
}

/// Injected failures fail the job; a Failed compute makes it fail in Preparing.
#[tokio::test]
async fn job_failures() {
    let env = start().await;
    env.admin(Method::POST, "failures", Some(json!({"kind": "job", "name": "ftj-doomed", "code": "UserError", "message": "CUDA out of memory"}))).await;
    env.put(&env.ws_path("/jobs/ftj-doomed"), pipeline_job(&[])).await;
    let seen = env.wait_job("ftj-doomed").await;
    assert_eq!(seen.last().unwrap(), "Failed");
    assert!(seen.contains(&"Running".to_string()));
    let state = env.state().await;
    assert_eq!(state["jobs"][0]["error"]["message"], "CUDA out of memory");

    let broken = pipeline_job(&[("compute_finetune", lit(json!("broken-cluster")))]);
    assert_eq!(env.put(&env.ws_path("/jobs/ftj-broken"), broken).await.0, StatusCode::CREATED);
    let seen = env.wait_job("ftj-broken").await;
    assert_eq!(seen.last().unwrap(), "Failed");
    assert!(!seen.contains(&"Running".to_string()));

    // A failure injected while the job runs applies at once.
    let slow = start_with(azureml_emulator::Config::default().with_time_scale(10.0)).await;
    slow.put(&slow.ws_path("/jobs/ftj-live"), pipeline_job(&[])).await;
    slow.admin(Method::POST, "failures", Some(json!({"kind": "job", "name": "ftj-live"}))).await;
    assert_eq!(slow.get(&slow.ws_path("/jobs/ftj-live")).await.1["properties"]["status"], "Failed");
}
