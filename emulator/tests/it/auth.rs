//! Azure AD, managed identity, cloud metadata and the ARM bearer-token checks.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

async fn token_form(env: &Env, tenant: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r =
        env.client.post(env.url(&format!("/{tenant}/oauth2/v2.0/token"))).form(form).send().await.unwrap();
    json_of(r).await
}

/// A client-secret token has AAD's reply shape and is a JWT for the requested resource.
#[tokio::test]
async fn client_secret_token_has_aad_shape() {
    let env = start().await;
    let (status, body) = token_form(
        &env,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("scope", "https://management.azure.com/.default"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() > 3000);
    assert!(body["ext_expires_in"].is_i64());
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3);
    use base64::Engine;
    let payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["aud"], "https://management.azure.com");
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["appid"], CLIENT);
}

/// Each kind of bad token request gets AAD's error code and AADSTS number.
#[tokio::test]
async fn token_errors_follow_aad() {
    let env = start().await;
    let scope = "https://management.azure.com/.default";
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str, u64);
    let cases: Vec<Case> = vec![
        (
            "unknown-tenant",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("scope", scope),
            ],
            400,
            "invalid_request",
            90002,
        ),
        (
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", SECRET),
                ("scope", scope),
            ],
            400,
            "unauthorized_client",
            700016,
        ),
        (
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", "wrong"),
                ("scope", scope),
            ],
            401,
            "invalid_client",
            7000215,
        ),
        (
            TENANT,
            vec![
                ("grant_type", "password"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("scope", scope),
            ],
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            TENANT,
            vec![("grant_type", "client_credentials"), ("client_id", CLIENT), ("client_secret", SECRET)],
            400,
            "invalid_request",
            900144,
        ),
        (
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("scope", "https://management.azure.com/user_impersonation"),
            ],
            400,
            "invalid_scope",
            1002012,
        ),
        (
            TENANT,
            vec![("grant_type", "client_credentials"), ("client_id", CLIENT), ("scope", scope)],
            401,
            "invalid_client",
            7000218,
        ),
    ];
    for (tenant, form, status, error, code) in cases {
        let (got, body) = token_form(&env, tenant, &form).await;
        assert_eq!(got.as_u16(), status, "{body}");
        assert_eq!(body["error"], error, "{body}");
        assert_eq!(body["error_codes"], json!([code]), "{body}");
        assert!(body["error_description"].as_str().unwrap().starts_with(&format!("AADSTS{code}:")));
    }
}

fn fake_jwt(claims: Value) -> String {
    use base64::Engine;
    let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!("{}.{}.{}", e(br#"{"alg":"RS256"}"#), e(claims.to_string().as_bytes()), e(b"sig"))
}

/// Workload identity: a federated assertion for the token-exchange audience gets a token; an expired,
/// malformed or wrong-audience one is refused.
#[tokio::test]
async fn client_assertion_flow() {
    let env = start().await;
    let now = jiff::Timestamp::now().as_second();
    let assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let form = |assertion: &str| {
        vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", CLIENT.to_string()),
            ("client_assertion_type", assertion_type.to_string()),
            ("client_assertion", assertion.to_string()),
            ("scope", "https://management.azure.com/.default".to_string()),
        ]
    };
    let good = fake_jwt(
        json!({"aud": "api://AzureADTokenExchange", "exp": now + 600, "sub": "system:serviceaccount:ns:sa"}),
    );
    let expired = fake_jwt(json!({"aud": "api://AzureADTokenExchange", "exp": now - 10}));
    let wrong_aud = fake_jwt(json!({"aud": "https://kubernetes.default.svc", "exp": now + 600}));
    for (assertion, status, code) in [
        (good.as_str(), 200, 0),
        (expired.as_str(), 400, 700024),
        (wrong_aud.as_str(), 400, 700212),
        ("not-a-jwt", 400, 50027),
    ] {
        let f = form(assertion);
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (got, body) = token_form(&env, TENANT, &pairs).await;
        assert_eq!(got.as_u16(), status, "{body}");
        if status == 200 {
            assert!(body["access_token"].is_string());
        } else {
            assert_eq!(body["error_codes"], json!([code]));
        }
    }
}

/// The v1 endpoint takes `resource` and answers with string times.
#[tokio::test]
async fn v1_token_endpoint() {
    let env = start().await;
    let r = env
        .client
        .post(env.url(&format!("/{TENANT}/oauth2/token")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("resource", "https://management.azure.com/"),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["expires_on"].is_string());
    assert_eq!(body["resource"], "https://management.azure.com/");
}

/// The App Service managed-identity protocol needs its header and answers `expires_on` as a string.
#[tokio::test]
async fn managed_identity_endpoint() {
    let env = start().await;
    let url = env.url("/msi/token?api-version=2019-08-01&resource=https://management.azure.com");
    let (status, _) = json_of(env.client.get(&url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) =
        json_of(env.client.get(&url).header("x-identity-header", "secret").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["expires_on"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(body["resource"], "https://management.azure.com");
    // The token works on ARM.
    let token = body["access_token"].as_str().unwrap();
    let r = env
        .client
        .get(env.url(&format!("{}?api-version={API}", env.ws_path(""))))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let unknown = format!("{url}&client_id=not-assigned");
    let (status, _) =
        json_of(env.client.get(&unknown).header("x-identity-header", "x").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Cloud metadata points every endpoint at the emulator.
#[tokio::test]
async fn cloud_metadata_points_at_emulator() {
    let env = start().await;
    let (status, body) =
        json_of(env.client.get(env.url("/metadata/endpoints?api-version=2019-05-01")).send().await.unwrap())
            .await;
    assert_eq!(status, StatusCode::OK);
    let cloud = &body[0];
    let base = format!("{}/", env.emu.https_url());
    assert_eq!(cloud["resourceManager"], base);
    assert_eq!(cloud["authentication"]["loginEndpoint"], base);
    assert!(cloud["suffixes"]["storage"].is_string());
    assert!(cloud["name"].is_string());
    let (_, oidc) = json_of(
        env.client
            .get(env.url(&format!("/{TENANT}/v2.0/.well-known/openid-configuration")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(oidc["token_endpoint"].as_str().unwrap().ends_with("/oauth2/v2.0/token"));
}

/// ARM refuses missing, malformed, wrong-audience and expired tokens with its codes and WWW-Authenticate.
#[tokio::test]
async fn arm_rejects_bad_tokens() {
    let env = start().await;
    let url = env.url(&format!("{}?api-version={API}", env.ws_path("")));
    let r = env.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").unwrap().starts_with("Bearer authorization_uri="));
    assert_eq!(json_of(r).await.1["error"]["code"], "AuthenticationFailed");

    let r = env.client.get(&url).bearer_auth("abc.def.ghi").send().await.unwrap();
    assert_eq!(json_of(r).await.1["error"]["code"], "InvalidAuthenticationToken");

    let ml_token = env.aad_token("https://ml.azure.com/.default").await;
    let r = env.client.get(&url).bearer_auth(&ml_token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(r).await.1["error"]["code"], "InvalidAuthenticationTokenAudience");

    // A token for the emulator's own base URL (custom clouds) is accepted.
    let own = env.aad_token(&format!("{}/.default", env.emu.https_url())).await;
    assert_eq!(env.client.get(&url).bearer_auth(&own).send().await.unwrap().status(), StatusCode::OK);

    // Admin: expire every token issued so far; then short-lived new tokens.
    let (status, _) = env.admin(Method::POST, "tokens", Some(json!({"expireIssued": true}))).await;
    assert_eq!(status, StatusCode::OK);
    let r = env.client.get(&url).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(r).await.1["error"]["code"], "ExpiredAuthenticationToken");
    let fresh = env.aad_token("https://management.azure.com/.default").await;
    assert_eq!(env.client.get(&url).bearer_auth(&fresh).send().await.unwrap().status(), StatusCode::OK);

    env.admin(Method::POST, "tokens", Some(json!({"lifetimeSeconds": -5}))).await;
    let dead = env.aad_token("https://management.azure.com/.default").await;
    let r = env.client.get(&url).bearer_auth(&dead).send().await.unwrap();
    assert_eq!(json_of(r).await.1["error"]["code"], "ExpiredAuthenticationToken");
}

/// The plain-HTTP listener serves the same routes.
#[tokio::test]
async fn http_listener_serves_same_router() {
    let env = start().await;
    let url = format!("{}{}?api-version={API}", env.emu.http_url(), env.ws_path(""));
    let r = env.client.get(&url).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(std::path::Path::new(env.emu.ca_path()).exists());
    assert!(env.emu.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
}
