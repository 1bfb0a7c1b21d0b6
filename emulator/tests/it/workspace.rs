//! Workspace, VM sizes, computes (LRO), api-version and unknown-route answers.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

/// The workspace GET carries location and an MLflow URI pointing at the emulator.
#[tokio::test]
async fn workspace_get() {
    let env = start().await;
    let r = env.call(Method::GET, &env.ws_path(""), None).await;
    assert!(header(&r, "x-ms-ratelimit-remaining-subscription-reads").is_some());
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["location"], "eastus2");
    let host = env.emu.https_url().trim_start_matches("https://").to_string();
    assert!(
        body["properties"]["mlFlowTrackingUri"]
            .as_str()
            .unwrap()
            .starts_with(&format!("azureml://{host}/mlflow/v1.0/subscriptions/"))
    );
    let other = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/nope"
    );
    let (status, body) = env.get(&other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
}

/// Every api-version that looks real is accepted; missing and malformed ones are refused like ARM.
#[tokio::test]
async fn api_versions() {
    let env = start().await;
    for v in ["2025-12-01", "2026-05-01", "2023-04-01-preview", "2024-01-01-preview"] {
        let (status, _) = env.get(&format!("{}?api-version={v}", env.ws_path(""))).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let r = env.client.get(env.url(&env.ws_path(""))).bearer_auth(&env.token).send().await.unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "MissingApiVersionParameter");
    let (_, body) = env.get(&format!("{}?api-version=latest", env.ws_path(""))).await;
    assert_eq!(body["error"]["code"], "InvalidApiVersionParameter");
    let (status, body) = env.get(&env.ws_path("/datastores/x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "InvalidResourceType");
    let (status, body) = env.get("/not/a/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "NoRegisteredProviderFound");
}

/// VM sizes list GPUs per size.
#[tokio::test]
async fn vm_sizes() {
    let env = start().await;
    let (status, body) = env
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/eastus2/vmSizes"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let gpus = |name: &str| {
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["gpus"].as_u64().unwrap())
    };
    assert_eq!(gpus("Standard_NC24ads_A100_v4"), Some(1));
    assert_eq!(gpus("Standard_NC48ads_A100_v4"), Some(2));
    assert_eq!(gpus("Standard_NC96ads_A100_v4"), Some(4));
    assert_eq!(gpus("Standard_ND96asr_v4"), Some(8));
    assert_eq!(gpus("Standard_NC6s_v3"), Some(1));
    assert_eq!(gpus("Standard_NC12s_v3"), Some(2));
    assert_eq!(gpus("Standard_NC24s_v3"), Some(4));
    assert_eq!(gpus("Standard_DS3_v2"), Some(0));
    assert_eq!(gpus("Standard_NC6"), Some(1));
}

/// Seeded computes: one healthy, one Failed.
#[tokio::test]
async fn seeded_computes() {
    let env = start().await;
    let (status, body) = env.get(&env.ws_path("/computes/gpu-cluster")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(body["properties"]["properties"]["vmSize"], "Standard_NC24ads_A100_v4");
    assert_eq!(body["properties"]["properties"]["scaleSettings"]["maxNodeCount"], 2);
    let (_, broken) = env.get(&env.ws_path("/computes/broken-cluster")).await;
    assert_eq!(broken["properties"]["provisioningState"], "Failed");
    assert!(broken["properties"]["provisioningErrors"][0]["error"]["code"].is_string());
    let (status, _) = env.get(&env.ws_path("/computes/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = env.get(&env.ws_path("/computes")).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 2);
}

fn cluster(vm: &str) -> serde_json::Value {
    json!({"location": "eastus2", "properties": {"computeType": "AmlCompute", "properties": {
        "vmSize": vm, "vmPriority": "Dedicated",
        "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 2, "nodeIdleTimeBeforeScaleDown": "PT120S"}}}})
}

/// PUT compute is a long-running operation: 201 Creating + Azure-AsyncOperation, then Succeeded.
#[tokio::test]
async fn create_compute_lro() {
    let env = start().await;
    let r = env
        .call(Method::PUT, &env.ws_path("/computes/new-cluster"), Some(cluster("Standard_NC48ads_A100_v4")))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let op = header(&r, "azure-asyncoperation").expect("Azure-AsyncOperation");
    assert!(header(&r, "x-ms-ratelimit-remaining-subscription-writes").is_some());
    let body = json_of(r).await.1;
    assert_eq!(body["properties"]["provisioningState"], "Creating");
    let done = env.poll_async(&op).await;
    assert_eq!(done["status"], "Succeeded");
    let (_, c) = env.get(&env.ws_path("/computes/new-cluster")).await;
    assert_eq!(c["properties"]["provisioningState"], "Succeeded");
    // Same size again: an update, 200.
    let r = env
        .call(Method::PUT, &env.ws_path("/computes/new-cluster"), Some(cluster("Standard_NC48ads_A100_v4")))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    env.poll_async(&header(&r, "azure-asyncoperation").unwrap()).await;
    // Changing the VM size is refused.
    let (status, body) =
        env.put(&env.ws_path("/computes/new-cluster"), cluster("Standard_NC96ads_A100_v4")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"][0]["code"], "UpdateNotSupported");
    // Delete: 202 + Location until gone.
    let r = env.call(Method::DELETE, &env.ws_path("/computes/new-cluster"), None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "x-ms-ratelimit-remaining-subscription-deletes").is_some());
    let (status, _) = env.poll_location(&header(&r, "location").unwrap()).await;
    assert!(status.is_success());
    assert_eq!(env.get(&env.ws_path("/computes/new-cluster")).await.0, StatusCode::NOT_FOUND);
}

/// Compute validation and injected provisioning failure.
#[tokio::test]
async fn compute_validation_and_failure() {
    let env = start().await;
    let mut no_location = cluster("Standard_NC6s_v3");
    no_location.as_object_mut().unwrap().remove("location");
    assert_eq!(
        env.put(&env.ws_path("/computes/c1x"), no_location).await.1["error"]["code"],
        "LocationRequired"
    );
    let (status, body) = env.put(&env.ws_path("/computes/c1x"), cluster("Standard_Nope")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"][0]["code"], "InvalidVmSize");
    let (_, body) = env.put(&env.ws_path("/computes/1bad"), cluster("Standard_NC6s_v3")).await;
    assert_eq!(body["error"]["details"][0]["code"], "InvalidName");
    let (_, body) = env.put(&env.ws_path("/computes/c1x"), json!("x")).await;
    assert_eq!(body["error"]["code"], "InvalidRequestContent");

    env.admin(
        Method::POST,
        "failures",
        Some(json!({"kind": "compute", "name": "doomed", "code": "QuotaExceeded", "message": "no cores"})),
    )
    .await;
    let r = env.call(Method::PUT, &env.ws_path("/computes/doomed"), Some(cluster("Standard_NC6s_v3"))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let done = env.poll_async(&header(&r, "azure-asyncoperation").unwrap()).await;
    assert_eq!(done["status"], "Failed");
    assert_eq!(done["error"]["code"], "QuotaExceeded");
    let (_, c) = env.get(&env.ws_path("/computes/doomed")).await;
    assert_eq!(c["properties"]["provisioningState"], "Failed");
}
