//! Workspace model versions.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

/// Registering the job output: 201, lineage, idempotent re-PUT, conflict on a changed URI.
#[tokio::test]
async fn register_from_job_output() {
    let env = start().await;
    let id = env.registered_model("ftj-m1", "Phi-3-mini-4k-instruct-ultrachat-200k", "1").await;
    assert!(
        id.ends_with("/workspaces/ws-azureml-demo/models/Phi-3-mini-4k-instruct-ultrachat-200k/versions/1")
    );
    let path = env.ws_path("/models/Phi-3-mini-4k-instruct-ultrachat-200k/versions/1");
    let (status, body) = env.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["properties"]["jobName"], "ftj-m1");
    assert_eq!(body["properties"]["modelType"], "mlflow_model");
    let same = json!({"properties": {"modelType": "mlflow_model", "modelUri": "azureml://jobs/ftj-m1/outputs/trained_model", "description": "fine tuned"}});
    assert_eq!(env.put(&path, same).await.0, StatusCode::OK);
    let retagged = json!({"properties": {"modelType": "mlflow_model", "modelUri": "azureml://jobs/ftj-m1/outputs/trained_model", "description": "new words", "tags": {"a": "b"}}});
    let (status, body) = env.put(&path, retagged).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["properties"]["tags"]["a"], "b");
    let moved = json!({"properties": {"modelType": "mlflow_model", "modelUri": "azureml://datastores/workspaceblobstore/paths/other"}});
    let (status, body) = env.put(&path, moved).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "UserError");
    let (_, list) = env
        .get(&env.ws_path(
            "/models/Phi-3-mini-4k-instruct-ultrachat-200k/versions?$orderBy=createdtime desc&$top=1",
        ))
        .await;
    assert_eq!(list["value"][0]["name"], "1");
    let (_, container) = env.get(&env.ws_path("/models/Phi-3-mini-4k-instruct-ultrachat-200k")).await;
    assert_eq!(container["properties"]["latestVersion"], "1");
    assert_eq!(env.state().await["models"][0]["versions"][0]["version"], "1");
    assert_eq!(env.call(Method::DELETE, &path, None).await.status(), StatusCode::OK);
    assert_eq!(env.get(&path).await.0, StatusCode::NOT_FOUND);
}

/// A job output URI needs a completed job with that output; other rules answer UserError details.
#[tokio::test]
async fn model_uri_validation() {
    let env = start_with(azureml_emulator::Config::default().with_time_scale(1.0)).await;
    env.put(&env.ws_path("/jobs/ftj-slow"), pipeline_job(&[])).await;
    let put = |uri: &str| json!({"properties": {"modelType": "mlflow_model", "modelUri": uri}});
    let cases = [
        ("azureml://jobs/ftj-slow/outputs/trained_model", "JobNotCompleted"),
        ("azureml://jobs/nope/outputs/trained_model", "JobNotFound"),
        ("azureml://jobs/ftj-slow", "InvalidUri"),
        ("ftp://somewhere/model", "InvalidUri"),
        ("azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/77", "AssetNotFound"),
    ];
    for (uri, code) in cases {
        let (status, body) = env.put(&env.ws_path("/models/m/versions/1"), put(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["error"]["details"][0]["code"], code, "{uri}: {body}");
    }
    let (_, body) = env
        .put(
            &env.ws_path("/models/m/versions/1"),
            json!({"properties": {"modelType": "onnx", "modelUri": "https://x/y"}}),
        )
        .await;
    assert_eq!(body["error"]["details"][0]["code"], "InvalidEnumValue");
    let (_, body) = env.put(&env.ws_path("/models/m/versions/1"), json!({"properties": {}})).await;
    assert_eq!(body["error"]["details"][0]["code"], "Required");
    let (_, body) = env.put(&env.ws_path("/models/bad name/versions/1"), put("https://x/y")).await;
    assert_eq!(body["error"]["details"][0]["code"], "InvalidName");
    assert_eq!(
        env.put(&env.ws_path("/models/m/versions/1"), put("azureml://datastores/workspaceblobstore/paths/m"))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(env.get(&env.ws_path("/models/nope/versions/1")).await.0, StatusCode::NOT_FOUND);
}
