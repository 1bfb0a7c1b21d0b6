//! Workload identity against the emulator's Entra endpoint over HTTPS: the projected
//! service-account token is exchanged for an ARM token, through the workspace's CA bundle.

use std::time::{SystemTime, UNIX_EPOCH};

use azureml_emulator::{Config, Emulator};
use azureml_operator::azure::{
    AzureMl, CloudEndpoints, ConnectionConfig, Credential, ErrorClass, WorkspaceCoordinates,
};
use serde_json::{Value, json};
use url::Url;

const TENANT: &str = "00000000-0000-0000-0000-0000000000aa";
const CLIENT: &str = "00000000-0000-0000-0000-0000000000cc";

/// base64url without padding (JWT segments).
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A Kubernetes projected service-account token as the AKS webhook mounts it (unsigned here:
/// the emulator, like this test, does not check signatures).
fn service_account_token(audience: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let header = json!({"alg": "RS256", "kid": "test", "typ": "JWT"});
    let claims = json!({
        "aud": [audience],
        "iss": "https://oidc.example.test/cluster",
        "sub": "system:serviceaccount:azureml-operator:azureml-operator",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(b"signature")
    )
}

fn config(emu: &azureml_emulator::RunningEmulator, token_file: std::path::PathBuf) -> ConnectionConfig {
    let base = Url::parse(&format!("{}/", emu.https_url())).expect("URL");
    ConnectionConfig {
        cloud: CloudEndpoints::custom(base.clone(), base.clone(), base),
        credential: Credential::WorkloadIdentity {
            client_id: Some(CLIENT.into()),
            tenant_id: Some(TENANT.into()),
            token_file: Some(token_file),
        },
        ca_bundle_pem: Some(emu.ca_pem().to_string()),
        workspace: WorkspaceCoordinates {
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "rg-azureml-demo".into(),
            workspace_name: "ws-azureml-demo".into(),
        },
        arm_api_version: None,
    }
}

async fn token_requests(emu: &azureml_emulator::RunningEmulator) -> Vec<Value> {
    let log: Value = reqwest::get(format!("{}/_emulator/requests", emu.http_url()))
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    log["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/oauth2/v2.0/token")))
        .cloned()
        .collect()
}

#[tokio::test]
async fn workload_identity_exchanges_the_projected_token() {
    let emu = Emulator::start(Config::default().with_time_scale(1000.0)).await.expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, service_account_token("api://AzureADTokenExchange")).expect("write token");

    let ml = AzureMl::default();
    let ws = ml.workspace(&config(&emu, file)).expect("client");
    assert_eq!(ws.get_workspace().await.expect("workspace").location, "eastus2");

    let tokens = token_requests(&emu).await;
    assert_eq!(tokens.len(), 1);
    let form = &tokens[0]["body"];
    assert_eq!(form["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT);
    assert_eq!(form["scope"], format!("{}/.default", emu.https_url()));
}

#[tokio::test]
async fn workload_identity_with_a_wrong_audience_is_an_auth_error() {
    let emu = Emulator::start(Config::default().with_time_scale(1000.0)).await.expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, service_account_token("https://kubernetes.default.svc")).expect("write token");

    let ws = AzureMl::default().workspace(&config(&emu, file)).expect("client");
    let err = ws.get_workspace().await.expect_err("AADSTS700212");
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert_eq!(token_requests(&emu).await.len(), 1, "auth failures are not retried");
}
