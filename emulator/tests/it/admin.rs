//! The admin API: request log, faults, reset, state.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

/// Requests are logged in order with status and api-version; secrets never appear.
#[tokio::test]
async fn request_log_records_and_redacts() {
    let env = start().await;
    env.get(&env.ws_path("")).await;
    let log = env.requests().await;
    assert_eq!(log.len(), 2, "{log:?}");
    let token = &log[0];
    assert_eq!(token["method"], "POST");
    assert_eq!(token["body"]["client_secret"], "REDACTED");
    assert_eq!(token["body"]["client_id"], CLIENT);
    assert_eq!(token["status"], 200);
    let ws = &log[1];
    assert_eq!(ws["apiVersion"], API);
    assert_eq!(ws["headers"]["authorization"], "REDACTED");
    assert!(ws["path"].as_str().unwrap().ends_with(WS));
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(SECRET) && !text.contains(&env.token));

    let since = log[0]["seq"].as_u64().unwrap();
    let (_, body) = env.admin(Method::GET, &format!("requests?since={since}"), None).await;
    assert_eq!(body["requests"].as_array().unwrap().len(), 1);
    let (status, _) = env.admin(Method::DELETE, "requests", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(env.requests().await.is_empty());
}

/// A status fault answers for the service `times` times, with Retry-After, then stops.
#[tokio::test]
async fn status_fault_fires_n_times() {
    let env = start().await;
    let (status, body) = env
        .admin(Method::POST, "faults", Some(json!({"method": "GET", "pathRegex": "/workspaces/[^/]+$", "status": 503, "retryAfter": 7, "times": 2})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let r = env.call(Method::GET, &env.ws_path(""), None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&r, "retry-after").as_deref(), Some("7"));
        assert_eq!(json_of(r).await.1["error"]["code"], "ServiceUnavailable");
    }
    assert_eq!(env.get(&env.ws_path("")).await.0, StatusCode::OK);
    let (_, faults) = env.admin(Method::GET, "faults", None).await;
    assert_eq!(faults["faults"][0]["hits"], 2);
    assert_eq!(env.admin(Method::DELETE, &format!("faults/{id}"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(env.admin(Method::DELETE, &format!("faults/{id}"), None).await.0, StatusCode::NOT_FOUND);
}

/// A fault can carry a custom body; one with probability 0 never fires; a method filter is honoured.
#[tokio::test]
async fn fault_body_probability_and_method() {
    let env = start().await;
    env.admin(
        Method::POST,
        "faults",
        Some(json!({"pathRegex": "computes", "status": 500, "probability": 0.0})),
    )
    .await;
    env.admin(Method::POST, "faults", Some(json!({"method": "PUT", "pathRegex": "workspaces", "status": 409, "body": {"error": {"code": "Custom"}}}))).await;
    assert_eq!(env.get(&env.ws_path("/computes/gpu-cluster")).await.0, StatusCode::OK);
    let (status, body) = env.put(&env.ws_path("/computes/x"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "Custom");
    let (status, _) = env.admin(Method::POST, "faults", Some(json!({"pathRegex": "("}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    env.admin(Method::DELETE, "faults", None).await;
    assert_eq!(env.admin(Method::GET, "faults", None).await.1["faults"], json!([]));
}

/// Latency delays a reply; drop closes the connection without any response.
#[tokio::test]
async fn latency_and_drop() {
    let env = start().await;
    env.admin(Method::POST, "faults", Some(json!({"pathRegex": "vmSizes", "latencyMs": 300, "times": 1})))
        .await;
    let path =
        format!("/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/eastus2/vmSizes");
    let started = std::time::Instant::now();
    assert_eq!(env.get(&path).await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    env.admin(
        Method::POST,
        "faults",
        Some(json!({"pathRegex": "computes/gpu-cluster", "drop": true, "times": 1})),
    )
    .await;
    let url = env.url(&format!("{}?api-version={API}", env.ws_path("/computes/gpu-cluster")));
    let err = env.client.get(&url).bearer_auth(&env.token).send().await;
    assert!(err.is_err(), "a dropped connection gives no response");
    assert_eq!(env.get(&env.ws_path("/computes/gpu-cluster")).await.0, StatusCode::OK);
}

/// Reset restores the seeds and clears faults and the log; state lists the seeded world.
#[tokio::test]
async fn reset_and_state() {
    let env = start().await;
    let state = env.state().await;
    assert_eq!(state["jobs"], json!([]));
    assert_eq!(state["endpoints"], json!([]));
    let computes: Vec<_> = state["computes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(computes, ["gpu-cluster", "broken-cluster"]);
    env.admin(Method::PUT, "computes/extra", Some(json!({"vmSize": "Standard_DS3_v2"}))).await;
    env.admin(Method::POST, "faults", Some(json!({"pathRegex": ".", "status": 500}))).await;
    assert_eq!(env.state().await["computes"].as_array().unwrap().len(), 3);
    assert_eq!(env.admin(Method::POST, "reset", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(env.state().await["computes"].as_array().unwrap().len(), 2);
    assert_eq!(env.get(&env.ws_path("")).await.0, StatusCode::OK);
    assert_eq!(env.admin(Method::GET, "nothing-here", None).await.0, StatusCode::NOT_FOUND);
    let (_, config) = env.admin(Method::GET, "config", None).await;
    assert_eq!(config["httpsUrl"], env.emu.https_url());
}

/// Admin seeding: a new principal gets tokens, a new workspace answers ARM, failures can be listed
/// and cleared, and an endpoint failure makes its create operation fail.
#[tokio::test]
async fn admin_seeding_and_endpoint_failure() {
    let env = start().await;
    assert_eq!(
        env.admin(Method::PUT, "principals/app-2", Some(json!({"clientSecret": "s2"}))).await.0,
        StatusCode::NO_CONTENT
    );
    let r = env
        .client
        .post(env.url(&format!("/{TENANT}/oauth2/v2.0/token")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app-2"),
            ("client_secret", "s2"),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    env.admin(Method::PUT, &format!("workspaces/{SUB}/rg-two/ws-two"), Some(json!({"location": "westus3"})))
        .await;
    let (status, ws) = env.get(&format!("/subscriptions/{SUB}/resourceGroups/rg-two/providers/Microsoft.MachineLearningServices/workspaces/ws-two")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ws["location"], "westus3");

    env.admin(Method::POST, "failures", Some(json!({"kind": "job", "name": "later"}))).await;
    let (_, failures) = env.admin(Method::GET, "failures", None).await;
    assert_eq!(failures["failures"][0]["name"], "later");
    assert_eq!(failures["failures"][0]["code"], "InternalServerError");
    env.admin(Method::DELETE, "failures", None).await;
    assert_eq!(env.admin(Method::GET, "failures", None).await.1["failures"], json!([]));
    let (status, _) = env.admin(Method::POST, "failures", Some(json!({"kind": "robot", "name": "x"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    env.admin(Method::POST, "failures", Some(json!({"kind": "endpoint", "name": "doomed-ep", "code": "EndpointCreationFailed", "message": "no capacity"}))).await;
    let r = env
        .call(
            Method::PUT,
            &env.ws_path("/onlineEndpoints/doomed-ep"),
            Some(json!({"location": "eastus2", "properties": {"authMode": "Key"}})),
        )
        .await;
    let done = env.poll_async(&header(&r, "azure-asyncoperation").unwrap()).await;
    assert_eq!(done["status"], "Failed");
    assert_eq!(done["error"]["code"], "EndpointCreationFailed");
    assert_eq!(
        env.get(&env.ws_path("/onlineEndpoints/doomed-ep")).await.1["properties"]["provisioningState"],
        "Failed"
    );
}

/// Dropping the emulator closes its listeners; shutdown() does too.
#[tokio::test]
async fn drop_and_shutdown_stop_serving() {
    let env = start().await;
    let url = env.url("/metadata/endpoints?api-version=2019-05-01");
    assert!(env.client.get(&url).send().await.is_ok());
    let Env { emu, client, .. } = env;
    drop(emu);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(client.get(&url).send().await.is_err());

    let other = start().await;
    let url = other.url("/metadata/endpoints?api-version=2019-05-01");
    let Env { emu, client, .. } = other;
    emu.shutdown().await;
    assert!(client.get(&url).send().await.is_err());
}
