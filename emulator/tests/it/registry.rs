//! Registry discovery and the registry data plane.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

async fn registry_base(env: &Env) -> String {
    let (status, d) = env.get("/registrymanagement/v1.0/registries/azureml/discovery").await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["primaryRegionResourceProviderUri"], format!("{}/", env.emu.https_url()));
    assert_eq!(d["registryName"], "azureml");
    format!(
        "{}mferp/managementfrontend/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/registries/azureml",
        d["primaryRegionResourceProviderUri"].as_str().unwrap(),
        d["subscriptionId"].as_str().unwrap(),
        d["resourceGroup"].as_str().unwrap()
    )
}

fn versions(body: &Value) -> Vec<String> {
    body["value"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap().to_string()).collect()
}

/// Discovery needs a token and knows only existing registries.
#[tokio::test]
async fn discovery() {
    let env = start().await;
    registry_base(&env).await;
    let (status, _) = env.get("/registrymanagement/v1.0/registries/nope/discovery").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let r = env
        .client
        .get(env.url("/registrymanagement/v1.0/registries/azureml/discovery"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// "latest" the SDK's way: newest created active version; archived ones only with listViewType.
#[tokio::test]
async fn model_versions_latest_and_archive() {
    let env = start().await;
    let base = registry_base(&env).await;
    let latest = format!(
        "{base}/models/Phi-3-mini-4k-instruct/versions?$orderBy=createdtime desc&$top=1&api-version={REGISTRY_API}"
    );
    let (status, body) = env.get(&latest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(versions(&body), ["15"]);
    let v = &body["value"][0];
    assert_eq!(v["id"], "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15");
    let tags = &v["properties"]["tags"];
    assert!(
        tags["finetune_compute_allow_list"].as_str().unwrap().starts_with("['Standard_NC24ads_A100_v4', ")
    );
    let defaults: Value = serde_json::from_str(tags["model_specific_defaults"].as_str().unwrap()).unwrap();
    assert_eq!(defaults["deepspeed_stage"], 2);

    let (_, all) = env.get(&format!("{base}/models/Phi-3-mini-4k-instruct/versions?$orderBy=createdtime asc&api-version={REGISTRY_API}")).await;
    assert_eq!(versions(&all), ["13", "14", "15"]);

    // Archive the whole model: ActiveOnly finds nothing, All still lists it.
    let (status, _) = env
        .admin(Method::POST, "registries/azureml/models/Phi-3-mini-4k-instruct/archive", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(versions(&env.get(&latest).await.1), Vec::<String>::new());
    let (_, archived) = env.get(&format!("{base}/models/Phi-3-mini-4k-instruct/versions?listViewType=All&$orderBy=createdtime desc&$top=1&api-version={REGISTRY_API}")).await;
    assert_eq!(versions(&archived), ["15"]);
    assert_eq!(archived["value"][0]["properties"]["isArchived"], true);
    let (_, container) =
        env.get(&format!("{base}/models/Phi-3-mini-4k-instruct?api-version={REGISTRY_API}")).await;
    assert_eq!(container["properties"]["isArchived"], true);
    assert_eq!(container["properties"]["latestVersion"], "15");

    // The seeded archived-only model and the current model without allow lists.
    let (_, llama) =
        env.get(&format!("{base}/models/Llama-2-7b-chat/versions?api-version={REGISTRY_API}")).await;
    assert_eq!(versions(&llama), Vec::<String>::new());
    let (_, phi4) = env
        .get(&format!("{base}/models/Phi-4-mini-instruct/versions?$top=1&api-version={REGISTRY_API}"))
        .await;
    assert_eq!(versions(&phi4), ["2"]);
    assert!(phi4["value"][0]["properties"]["tags"].get("finetune_compute_allow_list").is_none());
}

/// Getting one version, unknown names, bad listViewType, missing api-version.
#[tokio::test]
async fn model_version_errors() {
    let env = start().await;
    let base = registry_base(&env).await;
    let (status, body) = env
        .get(&format!("{base}/models/Phi-3-mini-4k-instruct/versions/14?api-version={REGISTRY_API}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "14");
    assert_eq!(body["properties"]["modelType"], "mlflow_model");
    assert_eq!(
        env.get(&format!("{base}/models/Phi-3-mini-4k-instruct/versions/99?api-version={REGISTRY_API}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get(&format!("{base}/models/nope/versions?api-version={REGISTRY_API}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = env
        .get(&format!(
            "{base}/models/Phi-3-mini-4k-instruct/versions?listViewType=Bogus&api-version={REGISTRY_API}"
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "UserError");
    let r = env
        .client
        .get(format!("{base}/models/Phi-3-mini-4k-instruct"))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await.1["error"]["code"], "MissingApiVersionParameter");
}

/// The pipeline component's spec lists typed inputs and outputs.
#[tokio::test]
async fn component_spec() {
    let env = start().await;
    let base = registry_base(&env).await;
    let (status, body) = env.get(&format!("{base}/components/chat_completion_pipeline/versions?$orderBy=createdtime desc&$top=1&api-version={REGISTRY_API}")).await;
    assert_eq!(status, StatusCode::OK);
    let v = &body["value"][0];
    assert_eq!(v["name"], "0.0.82");
    assert_eq!(v["id"], "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82");
    let inputs = &v["properties"]["componentSpec"]["inputs"];
    assert_eq!(inputs["precision"]["enum"], json!(["32", "16"]));
    assert_eq!(inputs["precision"]["type"], "string");
    assert_eq!(inputs["num_train_epochs"]["min"], 1);
    assert_eq!(inputs["task_name"]["optional"], false);
    assert_eq!(inputs["apply_lora"]["enum"], json!(["true", "false"]));
    assert!(inputs["trust_remote_code"].is_object());
    assert_eq!(v["properties"]["componentSpec"]["outputs"]["mlflow_model_folder"]["type"], "mlflow_model");
    // Inner steps are REST nodes placed by the pipeline's compute inputs (the SDK validates this).
    let finetune = &v["properties"]["componentSpec"]["jobs"]["chat_completion_finetune"];
    assert_eq!(finetune["computeId"], "${{parent.inputs.compute_finetune}}");
    assert!(
        finetune["componentId"].as_str().unwrap().starts_with("azureml://registries/azureml/components/")
    );
    let (status, old) = env
        .get(&format!(
            "{base}/components/chat_completion_pipeline/versions/0.0.74?api-version={REGISTRY_API}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(old["properties"]["componentSpec"]["inputs"].get("trust_remote_code").is_none());
    assert_eq!(
        env.get(&format!("{base}/components/nope?api-version={REGISTRY_API}")).await.0,
        StatusCode::NOT_FOUND
    );
}

/// Admin can seed a new registry model version.
#[tokio::test]
async fn admin_seeds_registry_model() {
    let env = start().await;
    let base = registry_base(&env).await;
    let (status, _) = env
        .admin(
            Method::PUT,
            "registries/azureml/models/Tiny-model/versions/3",
            Some(json!({"tags": {"task": "chat-completion"}})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) =
        env.get(&format!("{base}/models/Tiny-model/versions/3?api-version={REGISTRY_API}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["properties"]["tags"]["task"], "chat-completion");
}
