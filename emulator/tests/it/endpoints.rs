//! Online endpoints and deployments (LROs, traffic, keys, tokens, logs, quota), scoring, throttling.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

fn chat() -> Value {
    json!({"input_data": {"input_string": [{"role": "user", "content": "Tell me about fine-tuning."}, {"role": "assistant", "content": "Sure."}, {"role": "user", "content": "How long does it take?"}],
        "parameters": {"temperature": 0.6, "top_p": 0.9, "do_sample": true, "max_new_tokens": 200}}, "params": {}})
}

/// The notebook's steps 7–9 end to end: endpoint, deployment, traffic, keys, scoring, delete.
#[tokio::test]
async fn notebook_deploy_invoke_delete() {
    let env = start().await;
    let model = env.registered_model("ftj-e2e", "Phi-3-mini-4k-instruct-ultrachat-200k", "1700000000").await;
    env.endpoint("ultrachat-completion-1700000000", "Key").await;
    let ep = env.ws_path("/onlineEndpoints/ultrachat-completion-1700000000");
    let (_, body) = env.get(&ep).await;
    assert_eq!(body["properties"]["provisioningState"], "Succeeded");
    let scoring = body["properties"]["scoringUri"].as_str().unwrap().to_string();
    assert_eq!(scoring, format!("{}/inference/ultrachat-completion-1700000000/score", env.emu.https_url()));
    assert!(body["identity"]["principalId"].is_string());
    assert_eq!(body["properties"]["keys"], Value::Null);

    // The deployment goes Creating → Succeeded.
    let r = env
        .call(
            Method::PUT,
            &format!("{ep}/deployments/demo"),
            Some(deployment_body(&model, "Standard_NC6s_v3", 1)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "x-ms-async-operation-timeout").as_deref(),
        Some("PT2S"),
        "Azure's PT1H at the default test time scale of 2000"
    );
    let op = header(&r, "azure-asyncoperation").unwrap();
    assert_eq!(json_of(r).await.1["properties"]["provisioningState"], "Creating");
    assert_eq!(env.poll_async(&op).await["status"], "Succeeded");
    let (_, dep) = env.get(&format!("{ep}/deployments/demo")).await;
    assert_eq!(dep["properties"]["provisioningState"], "Succeeded");
    assert_eq!(dep["sku"]["capacity"], 1);
    assert_eq!(dep["properties"]["livenessProbe"]["initialDelay"], "PT600S");
    assert_eq!(dep["properties"]["livenessProbe"]["period"], "PT10S");

    // Traffic by re-PUT of the endpoint, as the SDK does.
    let r = env
        .call(
            Method::PUT,
            &ep,
            Some(json!({"location": "eastus2", "properties": {"authMode": "Key", "traffic": {"demo": 100}}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(env.poll_async(&header(&r, "azure-asyncoperation").unwrap()).await["status"], "Succeeded");
    assert_eq!(env.get(&ep).await.1["properties"]["traffic"], json!({"demo": 100}));

    // Keys and scoring.
    let (status, keys) = json_of(env.call(Method::POST, &format!("{ep}/listKeys"), None).await).await;
    assert_eq!(status, StatusCode::OK);
    let key = keys["primaryKey"].as_str().unwrap().to_string();
    let r = env
        .client
        .post(&scoring)
        .bearer_auth(&key)
        .header("azureml-model-deployment", "demo")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "azureml-model-deployment").as_deref(), Some("demo"));
    let first = json_of(r).await.1;
    assert!(first["output"].as_str().unwrap().contains("How long does it take?"));
    // Deterministic, and routed by traffic without the header.
    let again = json_of(
        env.client
            .post(&scoring)
            .bearer_auth(keys["secondaryKey"].as_str().unwrap())
            .json(&chat())
            .send()
            .await
            .unwrap(),
    )
    .await
    .1;
    assert_eq!(first, again);

    // Logs.
    let (status, logs) = json_of(
        env.call(
            Method::POST,
            &format!("{ep}/deployments/demo/getLogs"),
            Some(json!({"containerType": "InferenceServer", "tail": 2})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(logs["content"].as_str().unwrap().lines().count(), 2);

    // Deleting the deployment with traffic is refused.
    let (status, body) =
        json_of(env.call(Method::DELETE, &format!("{ep}/deployments/demo"), None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"][0]["code"], "DeploymentHasTraffic");

    // Delete the endpoint: Deleting, then 404; its deployments go too.
    let r = env.call(Method::DELETE, &ep, None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location").unwrap();
    assert_eq!(env.get(&ep).await.1["properties"]["provisioningState"], "Deleting");
    let (status, _) = env.poll_location(&location).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(env.get(&ep).await.0, StatusCode::NOT_FOUND);
    assert_eq!(env.state().await["endpoints"], json!([]));
    assert_eq!(env.call(Method::DELETE, &ep, None).await.status(), StatusCode::NOT_FOUND);
    let r = env.client.post(&scoring).bearer_auth(&key).json(&chat()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Endpoint validation: names, auth mode, location, traffic rules; busy endpoints refuse writes.
#[tokio::test]
async fn endpoint_validation() {
    let env = start().await;
    let body = |auth: &str, traffic: Value| json!({"location": "eastus2", "properties": {"authMode": auth, "traffic": traffic}});
    let (_, r) = env.put(&env.ws_path("/onlineEndpoints/1-bad"), body("Key", json!({}))).await;
    assert_eq!(r["error"]["details"][0]["code"], "InvalidName");
    let (_, r) = env.put(&env.ws_path("/onlineEndpoints/good-name"), body("Password", json!({}))).await;
    assert_eq!(r["error"]["details"][0]["code"], "InvalidEnumValue");
    let (_, r) =
        env.put(&env.ws_path("/onlineEndpoints/good-name"), json!({"properties": {"authMode": "Key"}})).await;
    assert_eq!(r["error"]["code"], "LocationRequired");
    let (_, r) = env
        .put(&env.ws_path("/onlineEndpoints/good-name"), json!({"location": "eastus2", "properties": {}}))
        .await;
    assert_eq!(r["error"]["details"][0]["code"], "Required");
    let (_, r) = env.put(&env.ws_path("/onlineEndpoints/good-name"), body("Key", json!({"demo": 100}))).await;
    assert_eq!(r["error"]["details"][0]["code"], "DeploymentNotFound");

    let r =
        env.call(Method::PUT, &env.ws_path("/onlineEndpoints/good-name"), Some(body("Key", json!({})))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // While Creating, another write is a 409.
    let (status, r2) = env.put(&env.ws_path("/onlineEndpoints/good-name"), body("Key", json!({}))).await;
    let slow = status == StatusCode::CONFLICT;
    if slow {
        assert_eq!(r2["error"]["code"], "Conflict");
    }
    env.poll_async(&header(&r, "azure-asyncoperation").unwrap()).await;
    env.deployment(
        "good-name",
        "blue",
        "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15",
        "Standard_NC6s_v3",
        1,
    )
    .await;
    env.deployment(
        "good-name",
        "green",
        "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/14",
        "Standard_NC6s_v3",
        1,
    )
    .await;
    let (_, r) = env
        .put(&env.ws_path("/onlineEndpoints/good-name"), body("Key", json!({"blue": 60, "green": 30})))
        .await;
    assert_eq!(r["error"]["details"][0]["code"], "InvalidTrafficSum");
    let (_, r) = env.put(&env.ws_path("/onlineEndpoints/good-name"), json!({"location": "eastus2", "properties": {"authMode": "Key", "traffic": {"blue": 100}, "mirrorTraffic": {"green": 60}}})).await;
    assert_eq!(r["error"]["details"][0]["code"], "InvalidMirrorTraffic");

    // PATCH traffic (accepted, LRO via Location with the endpoint as result).
    let r = env
        .call(
            Method::PATCH,
            &env.ws_path("/onlineEndpoints/good-name"),
            Some(json!({"properties": {"traffic": {"blue": 70, "green": 30}}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (status, result) = env.poll_location(&header(&r, "location").unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["properties"]["traffic"], json!({"blue": 70, "green": 30}));

    // Traffic split routes deterministically; header routing overrides it.
    let (_, keys) =
        json_of(env.call(Method::POST, &env.ws_path("/onlineEndpoints/good-name/listKeys"), None).await)
            .await;
    let key = keys["primaryKey"].as_str().unwrap();
    let scoring = env.url("/inference/good-name/score");
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..30 {
        let mut body = chat();
        body["input_data"]["input_string"][0]["content"] = json!(format!("question {i}"));
        let r = env.client.post(&scoring).bearer_auth(key).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        seen.insert(header(&r, "azureml-model-deployment").unwrap());
    }
    assert_eq!(seen.len(), 2, "both deployments get traffic: {seen:?}");
    let r = env
        .client
        .post(&scoring)
        .bearer_auth(key)
        .header("azureml-model-deployment", "green")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "azureml-model-deployment").as_deref(), Some("green"));
    let r = env
        .client
        .post(&scoring)
        .bearer_auth(key)
        .header("azureml-model-deployment", "nope")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Deployment validation rules.
#[tokio::test]
async fn deployment_validation() {
    let env = start().await;
    env.endpoint("val-ep", "Key").await;
    let model = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15";
    let path = env.ws_path("/onlineEndpoints/val-ep/deployments/d1");
    let mut cases: Vec<(Value, &str)> = vec![
        (
            deployment_body(
                "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/99",
                "Standard_NC6s_v3",
                1,
            ),
            "ModelNotFound",
        ),
        (deployment_body(&env.ws_path("/models/none/versions/1"), "Standard_NC6s_v3", 1), "ModelNotFound"),
        (deployment_body(model, "Standard_Bogus", 1), "InstanceTypeNotSupported"),
        (deployment_body(model, "Standard_NC6", 1), "InstanceTypeNotSupported"),
        (deployment_body(model, "Standard_NC6s_v3", 0), "InvalidValue"),
    ];
    let mut b = deployment_body(model, "Standard_NC6s_v3", 1);
    b["properties"]["requestSettings"]["requestTimeout"] = json!("PT5M");
    cases.push((b, "ValueOutOfRange"));
    let mut b = deployment_body(model, "Standard_NC6s_v3", 1);
    b["properties"]["livenessProbe"]["initialDelay"] = json!("600");
    cases.push((b, "InvalidDuration"));
    let mut b = deployment_body(model, "Standard_NC6s_v3", 1);
    b["properties"]["endpointComputeType"] = json!("Serverless");
    cases.push((b, "InvalidEnumValue"));
    let mut b = deployment_body(model, "Standard_NC6s_v3", 1);
    b["properties"].as_object_mut().unwrap().remove("model");
    cases.push((b, "Required"));
    for (body, code) in cases {
        let (status, r) = env.put(&path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{code}: {r}");
        assert_eq!(r["error"]["details"][0]["code"], code, "{r}");
    }
    let (_, r) = env
        .put(
            &env.ws_path("/onlineEndpoints/val-ep/deployments/bad_name"),
            deployment_body(model, "Standard_NC6s_v3", 1),
        )
        .await;
    assert_eq!(r["error"]["details"][0]["code"], "InvalidName");
    let (status, _) = env
        .put(
            &env.ws_path("/onlineEndpoints/no-ep/deployments/d1"),
            deployment_body(model, "Standard_NC6s_v3", 1),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(env.state().await["endpoints"][0]["deployments"], json!([]));
}

/// Quota set by admin makes a deployment fail with OutOfQuota; injected failures fail the LRO;
/// scaling via PATCH; deleting a deployment without traffic.
#[tokio::test]
async fn quota_failures_scale_delete() {
    let env = start().await;
    env.endpoint("quota-ep", "Key").await;
    let model = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15";
    env.admin(Method::PUT, "quota", Some(json!({"cores": 12}))).await;
    assert_eq!(
        env.deployment("quota-ep", "small", model, "Standard_NC6s_v3", 1).await["status"],
        "Succeeded"
    );
    let failed = env.deployment("quota-ep", "big", model, "Standard_NC24s_v3", 1).await;
    assert_eq!(failed["status"], "Failed");
    assert_eq!(failed["error"]["code"], "OutOfQuota");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Not enough quota available for Standard_NC24s_v3")
    );
    let (_, big) = env.get(&env.ws_path("/onlineEndpoints/quota-ep/deployments/big")).await;
    assert_eq!(big["properties"]["provisioningState"], "Failed");

    env.admin(Method::POST, "failures", Some(json!({"kind": "deployment", "name": "flaky", "endpoint": "quota-ep", "code": "ResourceNotReady", "message": "liveness probe failed"}))).await;
    let failed = env.deployment("quota-ep", "flaky", model, "Standard_DS3_v2", 1).await;
    assert_eq!(failed["error"]["code"], "ResourceNotReady");
    let (_, logs) = json_of(
        env.call(
            Method::POST,
            &env.ws_path("/onlineEndpoints/quota-ep/deployments/flaky/getLogs"),
            Some(json!({})),
        )
        .await,
    )
    .await;
    assert!(logs["content"].as_str().unwrap().contains("liveness probe failed"));

    // Scoring a deployment that is not Succeeded: 424.
    let (_, keys) =
        json_of(env.call(Method::POST, &env.ws_path("/onlineEndpoints/quota-ep/listKeys"), None).await).await;
    let r = env
        .client
        .post(env.url("/inference/quota-ep/score"))
        .bearer_auth(keys["primaryKey"].as_str().unwrap())
        .header("azureml-model-deployment", "flaky")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FAILED_DEPENDENCY);
    // No traffic and no header: 424 too.
    let r = env
        .client
        .post(env.url("/inference/quota-ep/score"))
        .bearer_auth(keys["primaryKey"].as_str().unwrap())
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FAILED_DEPENDENCY);

    // Scale within quota: fine; beyond it: the scale operation fails.
    let r = env
        .call(
            Method::PATCH,
            &env.ws_path("/onlineEndpoints/quota-ep/deployments/small"),
            Some(json!({"sku": {"capacity": 2}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (status, result) = env.poll_location(&header(&r, "location").unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["sku"]["capacity"], 2);
    let r = env
        .call(
            Method::PATCH,
            &env.ws_path("/onlineEndpoints/quota-ep/deployments/small"),
            Some(json!({"sku": {"capacity": 3}})),
        )
        .await;
    let (status, body) = env.poll_location(&header(&r, "location").unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "OutOfQuota");

    let r = env.call(Method::DELETE, &env.ws_path("/onlineEndpoints/quota-ep/deployments/big"), None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    env.poll_location(&header(&r, "location").unwrap()).await;
    assert_eq!(
        env.get(&env.ws_path("/onlineEndpoints/quota-ep/deployments/big")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = env.get(&env.ws_path("/onlineEndpoints/quota-ep/deployments")).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 2);
}

/// Scoring auth: keys, regenerated keys, AML tokens, AAD tokens; malformed bodies.
#[tokio::test]
async fn scoring_auth_modes() {
    let env = start().await;
    let model = "azureml://registries/azureml/models/Phi-4-mini-instruct/versions/2";
    env.endpoint("key-ep", "Key").await;
    env.deployment("key-ep", "demo", model, "Standard_NC6s_v3", 1).await;
    let url = env.url("/inference/key-ep/score");
    let send = |token: String, body: Value| {
        let c = env.client.clone();
        let url = url.clone();
        async move {
            c.post(url)
                .bearer_auth(token)
                .header("azureml-model-deployment", "demo")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(env.client.post(&url).json(&chat()).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(send("wrong".into(), chat()).await.status(), StatusCode::UNAUTHORIZED);
    let (_, keys) =
        json_of(env.call(Method::POST, &env.ws_path("/onlineEndpoints/key-ep/listKeys"), None).await).await;
    let old = keys["primaryKey"].as_str().unwrap().to_string();
    assert_eq!(send(old.clone(), chat()).await.status(), StatusCode::OK);
    let (status, r) =
        json_of(send(old.clone(), json!({"input_data": {"input_string": "hello"}})).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(r["error"]["message"].as_str().unwrap().contains("input_string"));
    let bad_json = env
        .client
        .post(&url)
        .bearer_auth(&old)
        .header("content-type", "application/json")
        .header("azureml-model-deployment", "demo")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), StatusCode::BAD_REQUEST);
    // Regenerate the primary key: the old one stops working.
    let r = env
        .call(
            Method::POST,
            &env.ws_path("/onlineEndpoints/key-ep/regenerateKeys"),
            Some(json!({"keyType": "Primary"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    env.poll_location(&header(&r, "location").unwrap()).await;
    assert_eq!(send(old, chat()).await.status(), StatusCode::UNAUTHORIZED);
    let (_, r) = json_of(
        env.call(
            Method::POST,
            &env.ws_path("/onlineEndpoints/key-ep/regenerateKeys"),
            Some(json!({"keyType": "Tertiary"})),
        )
        .await,
    )
    .await;
    assert_eq!(r["error"]["details"][0]["code"], "InvalidEnumValue");
    let (status, _) =
        json_of(env.call(Method::POST, &env.ws_path("/onlineEndpoints/key-ep/token"), None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // AMLToken endpoint.
    env.endpoint("tok-ep", "AMLToken").await;
    env.deployment("tok-ep", "demo", model, "Standard_NC6s_v3", 1).await;
    let (status, tok) =
        json_of(env.call(Method::POST, &env.ws_path("/onlineEndpoints/tok-ep/token"), None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tok["tokenType"], "Bearer");
    assert!(tok["expiryTimeUtc"].as_i64().unwrap() > tok["refreshAfterTimeUtc"].as_i64().unwrap());
    let token = tok["accessToken"].as_str().unwrap();
    let r = env.client.post(env.url("/inference/tok-ep/score")).bearer_auth(token).json(&chat()).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::FAILED_DEPENDENCY, "no traffic yet, but authorized");
    let r = env
        .client
        .post(env.url("/inference/tok-ep/score"))
        .bearer_auth(token)
        .header("azureml-model-deployment", "demo")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The key endpoint's token does not open another endpoint; listKeys refuses on a token endpoint.
    let r = env
        .client
        .post(&url)
        .bearer_auth(token)
        .header("azureml-model-deployment", "demo")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        env.call(Method::POST, &env.ws_path("/onlineEndpoints/tok-ep/listKeys"), None).await.status(),
        StatusCode::BAD_REQUEST
    );

    // AADToken endpoint.
    env.endpoint("aad-ep", "AADToken").await;
    env.deployment("aad-ep", "demo", model, "Standard_NC6s_v3", 1).await;
    let aad = env.aad_token("https://ml.azure.com/.default").await;
    let r = env
        .client
        .post(env.url("/inference/aad-ep/score"))
        .bearer_auth(&aad)
        .header("azureml-model-deployment", "demo")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = env
        .client
        .post(env.url("/inference/aad-ep/score"))
        .bearer_auth(&env.token)
        .header("azureml-model-deployment", "demo")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = env.client.get(env.url("/inference/aad-ep/swagger.json")).bearer_auth(&aad).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A small bucket empties: 429 with Retry-After and ARM's throttling code; headers count down.
#[tokio::test]
async fn arm_throttling() {
    use azureml_emulator::{BucketConfig, Config, ThrottleConfig};
    let small = BucketConfig { capacity: 3, refill_per_second: 0.2 };
    let config = Config::default().with_time_scale(2000.0).with_throttle(ThrottleConfig {
        reads: small.clone(),
        writes: small.clone(),
        deletes: small,
    });
    let env = start_with(config).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = env.call(Method::GET, &env.ws_path(""), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        remaining.push(header(&r, "x-ms-ratelimit-remaining-subscription-reads").unwrap());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = env.call(Method::GET, &env.ws_path(""), None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
    assert_eq!(json_of(r).await.1["error"]["code"], "SubscriptionRequestsThrottled");
    // Writes have their own bucket; registry routes are not ARM-throttled.
    let r = env.call(Method::POST, &env.ws_path("/jobs/none/cancel"), None).await;
    assert_eq!(header(&r, "x-ms-ratelimit-remaining-subscription-writes").as_deref(), Some("2"));
    assert_eq!(env.get("/registrymanagement/v1.0/registries/azureml/discovery").await.0, StatusCode::OK);
    // Admin can resize the buckets (which refills them).
    env.admin(Method::PUT, "throttle", Some(json!({"reads": {"capacity": 10, "refillPerSecond": 1.0}})))
        .await;
    assert_eq!(env.get(&env.ws_path("")).await.0, StatusCode::OK);
}
