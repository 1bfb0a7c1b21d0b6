//! Managed identity against the emulator, through azure_identity's App Service protocol
//! (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`), the only managed-identity source that can be pointed
//! at a local endpoint. Alone in its test binary because it sets process environment variables.

use azureml_emulator::{Config, Emulator};
use azureml_operator::azure::{AzureMl, CloudEndpoints, ConnectionConfig, Credential, WorkspaceCoordinates};
use serde_json::Value;
use url::Url;

#[tokio::test]
async fn managed_identity_token_is_used_for_arm() {
    let emu = Emulator::start(Config::default().with_time_scale(1000.0)).await.expect("emulator");
    // SAFETY: this binary holds this one test, and the variables are set before the credential
    // (the only reader) is built; no other thread reads the environment concurrently.
    unsafe {
        std::env::set_var("IDENTITY_ENDPOINT", format!("{}/msi/token", emu.http_url()));
        std::env::set_var("IDENTITY_HEADER", "emulator-identity-header");
    }
    let base = Url::parse(&format!("{}/", emu.https_url())).expect("URL");
    let config = ConnectionConfig {
        cloud: CloudEndpoints::custom(base.clone(), base.clone(), base),
        credential: Credential::ManagedIdentity {
            client_id: Some("00000000-0000-0000-0000-0000000000cc".into()),
        },
        ca_bundle_pem: Some(emu.ca_pem().to_string()),
        workspace: WorkspaceCoordinates {
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "rg-azureml-demo".into(),
            workspace_name: "ws-azureml-demo".into(),
        },
        arm_api_version: None,
    };
    let ws = AzureMl::default().workspace(&config).expect("client");
    assert_eq!(ws.get_workspace().await.expect("workspace").location, "eastus2");

    let log: Value = reqwest::get(format!("{}/_emulator/requests", emu.http_url()))
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    let msi: Vec<&Value> =
        log["requests"].as_array().expect("requests").iter().filter(|r| r["path"] == "/msi/token").collect();
    assert_eq!(msi.len(), 1, "{log}");
    let query = msi[0]["query"].to_string();
    assert!(query.contains("client_id"), "user-assigned identity selected by client id: {query}");
}
