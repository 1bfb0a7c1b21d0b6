//! Azure AD (token endpoint, OpenID metadata), managed identity, ARM cloud metadata, and the checks
//! every protected route applies to its bearer token.

use std::sync::Arc;

use axum::http::{HeaderName, Method, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::{ApiError, Req, json_response, ok};
use crate::state::Shared;

/// The ARM audiences of the public cloud that tokens may carry.
const ARM_AUDIENCES: [&str; 2] = ["https://management.azure.com", "https://management.core.windows.net"];
/// The Azure ML audience used for AAD-token scoring.
pub(crate) const ML_AUDIENCE: &str = "https://ml.azure.com";
/// What an AKS projected service-account token is issued for.
const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The claims of a token issued by the emulator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: String,
    pub oid: String,
    pub appid: String,
    pub sub: String,
    /// Issue time in milliseconds, so "expire every token issued so far" is exact.
    pub iat_ms: i64,
    /// `aad` for Azure AD tokens, `amltoken` for endpoint tokens.
    pub typ: String,
    /// For AML tokens: the endpoint (`{ws key}/{endpoint}`) the token is good for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

fn normalize_audience(aud: &str) -> String {
    aud.trim_end_matches('/').to_ascii_lowercase()
}

/// Signs claims into a JWT-shaped string (HS256).
pub(crate) fn sign(shared: &Shared, claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT","kid":"azureml-emulator"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let signature = ring::hmac::sign(&shared.token_key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// Why a bearer token was refused.
#[derive(Debug, PartialEq)]
pub(crate) enum TokenError {
    Missing,
    Malformed,
    Expired { exp: i64, now: i64 },
    WrongAudience(String),
}

/// Checks a bearer token's signature and expiry, and returns its claims.
pub(crate) fn verify(shared: &Shared, token: &str) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    ring::hmac::verify(&shared.token_key, format!("{header}.{payload}").as_bytes(), &signature)
        .map_err(|_| TokenError::Malformed)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    let now = Timestamp::now();
    let expired_by_admin =
        shared.tokens.lock().expire_before.is_some_and(|cut| claims.iat_ms <= cut.as_millisecond());
    if claims.exp <= now.as_second() || expired_by_admin {
        return Err(TokenError::Expired { exp: claims.exp, now: now.as_second() });
    }
    Ok(claims)
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(req: &Req) -> Option<&str> {
    let value = req.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The audiences accepted on ARM, registry and MLflow routes.
fn arm_audiences(shared: &Shared) -> Vec<String> {
    let mut audiences: Vec<String> = ARM_AUDIENCES.iter().map(|a| normalize_audience(a)).collect();
    audiences.push(normalize_audience(&shared.https_url));
    audiences.push(normalize_audience(&shared.http_url));
    audiences
}

/// Requires a valid, unexpired Azure AD token for ARM; answers 401 the way ARM does otherwise.
pub(crate) fn require_arm(shared: &Shared, req: &Req) -> Result<Claims, ApiError> {
    let tenant = shared.world().tenant_id.clone();
    let token = bearer(req).ok_or(TokenError::Missing);
    let result = token.and_then(|t| verify(shared, t)).and_then(|claims| {
        if claims.typ == "aad" && arm_audiences(shared).contains(&normalize_audience(&claims.aud)) {
            Ok(claims)
        } else {
            Err(TokenError::WrongAudience(claims.aud))
        }
    });
    result.map_err(|err| arm_unauthorized(shared, &tenant, err))
}

fn arm_unauthorized(shared: &Shared, tenant: &str, err: TokenError) -> ApiError {
    let (code, message, description) = match err {
        TokenError::Missing => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".to_string(),
            "The authentication failed because of missing 'Authorization' header.",
        ),
        TokenError::Malformed => (
            "InvalidAuthenticationToken",
            "The access token is invalid.".to_string(),
            "The access token is invalid.",
        ),
        TokenError::Expired { exp, now } => (
            "ExpiredAuthenticationToken",
            format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                fmt_secs(exp),
                fmt_secs(now)
            ),
            "The access token has expired.",
        ),
        TokenError::WrongAudience(aud) => (
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{aud}'. It should exactly \
                 match with one of the allowed audiences 'https://management.core.windows.net/',\
                 'https://management.azure.com/','{}/'.",
                shared.https_url
            ),
            "The access token has an invalid audience.",
        ),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, message).header(
        HeaderName::from_static("www-authenticate"),
        format!(
            "Bearer authorization_uri=\"{}/{tenant}\", error=\"invalid_token\", error_description=\"{description}\"",
            shared.https_url
        ),
    )
}

fn fmt_secs(secs: i64) -> String {
    Timestamp::from_second(secs).map(|t| t.strftime("%m/%d/%Y %H:%M:%S").to_string()).unwrap_or_default()
}

/// Issues an Azure AD token for a principal and audience.
fn issue(shared: &Shared, object_id: &str, client_id: &str, audience: &str) -> (String, i64) {
    let tenant = shared.world().tenant_id.clone();
    let lifetime = shared.tokens.lock().lifetime_secs;
    let now = Timestamp::now();
    let claims = Claims {
        aud: audience.to_string(),
        iss: format!("https://sts.windows.net/{tenant}/"),
        iat: now.as_second(),
        nbf: now.as_second(),
        exp: now.as_second() + lifetime,
        tid: tenant,
        oid: object_id.to_string(),
        appid: client_id.to_string(),
        sub: object_id.to_string(),
        iat_ms: now.as_millisecond(),
        typ: "aad".into(),
        endpoint: None,
    };
    (sign(shared, &claims), lifetime)
}

/// Issues an AMLToken for an online endpoint.
pub(crate) fn issue_aml_token(
    shared: &Shared,
    endpoint_key: &str,
    oid: &str,
    lifetime: i64,
) -> (String, i64) {
    let tenant = shared.world().tenant_id.clone();
    let now = Timestamp::now();
    let claims = Claims {
        aud: ML_AUDIENCE.into(),
        iss: "azureml".into(),
        iat: now.as_second(),
        nbf: now.as_second(),
        exp: now.as_second() + lifetime,
        tid: tenant,
        oid: oid.to_string(),
        appid: oid.to_string(),
        sub: oid.to_string(),
        iat_ms: now.as_millisecond(),
        typ: "amltoken".into(),
        endpoint: Some(endpoint_key.to_string()),
    };
    (sign(shared, &claims), now.as_second() + lifetime)
}

/// An Azure AD error reply.
fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let now = Timestamp::now();
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    let description = format!(
        "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {now}"
    );
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": now.to_string(),
            "trace_id": trace.to_string(),
            "correlation_id": correlation.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

/// `POST /{tenant}/oauth2/v2.0/token` and the v1 `POST /{tenant}/oauth2/token`.
pub(crate) fn token(shared: &Arc<Shared>, req: &Req) -> Response {
    if req.method != Method::POST {
        return aad_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let v1 = req.lower.get(2).map(String::as_str) == Some("token");
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&req.body).unwrap_or_default();
    let field =
        |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());

    let tenant = &req.segs[0];
    let (known_tenant, principals) = {
        let world = shared.world();
        (world.tenant_id.clone(), world.principals.clone())
    };
    if !tenant.eq_ignore_ascii_case(&known_tenant) && !tenant.eq_ignore_ascii_case("organizations") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    match field("grant_type") {
        None => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
        Some("client_credentials") => {}
        Some(other) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
    }
    let Some(client_id) = field("client_id") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let resource = if v1 {
        match field("resource") {
            Some(resource) => resource.to_string(),
            None => {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_resource",
                    500011,
                    "The resource principal named  was not found in the tenant.",
                );
            }
        }
    } else {
        let Some(scope) = field("scope") else {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            );
        };
        match scope.split_whitespace().find_map(|s| s.strip_suffix("/.default")) {
            Some(resource) if !resource.is_empty() => resource.to_string(),
            _ => {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    1002012,
                    &format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                );
            }
        }
    };
    let Some(principal) = principals.iter().find(|p| p.client_id.eq_ignore_ascii_case(client_id)) else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{known_tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    };
    match (field("client_secret"), field("client_assertion")) {
        (Some(secret), _) => {
            if secret != principal.client_secret {
                return aad_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                );
            }
        }
        (None, Some(assertion)) => {
            if field("client_assertion_type")
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    50027,
                    "Invalid client_assertion_type: expected urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
                );
            }
            if let Some(refusal) = refuse_assertion(assertion) {
                return refusal;
            }
        }
        (None, None) => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    }
    let (access_token, lifetime) = issue(shared, &principal.object_id, &principal.client_id, &resource);
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    });
    if v1 {
        let now = Timestamp::now().as_second();
        body["expires_on"] = json!((now + lifetime).to_string());
        body["not_before"] = json!(now.to_string());
        body["resource"] = json!(resource);
        body["expires_in"] = json!(lifetime.to_string());
        body["ext_expires_in"] = json!(lifetime.to_string());
    }
    ok(&body)
}

/// Accepts a federated (workload identity) assertion if it is a JWT for the token-exchange audience that
/// has not expired. The emulator does not check its signature: there is no issuer to trust.
fn refuse_assertion(assertion: &str) -> Option<Response> {
    check_assertion(assertion).err().map(|boxed| *boxed)
}

fn check_assertion(assertion: &str) -> Result<(), Box<Response>> {
    let malformed = || {
        Box::new(aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            50027,
            "JWT token is invalid or malformed.",
        ))
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return Err(malformed());
    }
    let payload = URL_SAFE_NO_PAD.decode(parts[1].trim_end_matches('=')).map_err(|_| malformed())?;
    let claims: Value = serde_json::from_slice(&payload).map_err(|_| malformed())?;
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64)
        && exp <= Timestamp::now().as_second()
    {
        return Err(Box::new(aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        )));
    }
    let audience_ok = match claims.get("aud") {
        None => true,
        Some(Value::String(aud)) => aud == TOKEN_EXCHANGE_AUDIENCE,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(TOKEN_EXCHANGE_AUDIENCE)),
        Some(_) => false,
    };
    if !audience_ok {
        return Err(Box::new(aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            700212,
            "No matching federated identity record found for presented assertion audience.",
        )));
    }
    Ok(())
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration` (MSAL reads it before asking for a token).
pub(crate) fn openid_configuration(shared: &Arc<Shared>, req: &Req) -> Response {
    let tenant = &req.segs[0];
    let base = &shared.https_url;
    ok(&json!({
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tenant}/v2.0"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
        "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
    }))
}

/// `GET /common/discovery/instance` (MSAL's authority validation).
pub(crate) fn instance_discovery(shared: &Arc<Shared>, _req: &Req) -> Response {
    let host = shared.https_url.trim_start_matches("https://");
    ok(&json!({
        "tenant_discovery_endpoint": format!("{}/common/v2.0/.well-known/openid-configuration", shared.https_url),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }))
}

/// `GET /msi/token` — the App Service managed-identity protocol (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
pub(crate) fn managed_identity(shared: &Arc<Shared>, req: &Req) -> Response {
    let bad = |status: StatusCode, message: &str| {
        json_response(
            status,
            &json!({"statusCode": status.as_u16(), "message": message, "correlationId": uuid::Uuid::new_v4().to_string()}),
        )
    };
    if req.method != Method::GET {
        return bad(StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported.");
    }
    if req.header("x-identity-header").is_none_or(str::is_empty) {
        return bad(StatusCode::BAD_REQUEST, "The X-IDENTITY-HEADER header is missing.");
    }
    if req.api_version().is_none() {
        return bad(StatusCode::BAD_REQUEST, "The api-version query parameter is missing.");
    }
    let Some(resource) = req.q("resource").filter(|r| !r.is_empty()) else {
        return bad(StatusCode::BAD_REQUEST, "The resource query parameter is missing.");
    };
    let principals = shared.world().principals.clone();
    let principal = match req.q("client_id").or(req.q("principal_id")).or(req.q("mi_res_id")) {
        Some(id) => principals
            .iter()
            .find(|p| p.client_id.eq_ignore_ascii_case(id) || p.object_id.eq_ignore_ascii_case(id)),
        None => principals.first(),
    };
    let Some(principal) = principal else {
        return bad(
            StatusCode::BAD_REQUEST,
            "No managed identity with the requested id is assigned to this resource.",
        );
    };
    let (access_token, lifetime) = issue(shared, &principal.object_id, &principal.client_id, resource);
    ok(&json!({
        "access_token": access_token,
        "expires_on": (Timestamp::now().as_second() + lifetime).to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": principal.client_id,
    }))
}

/// `GET /metadata/endpoints` — ARM cloud metadata, every endpoint pointing at the emulator.
pub(crate) fn cloud_metadata(shared: &Arc<Shared>, req: &Req) -> Response {
    let base = &shared.https_url;
    let host = base.trim_start_matches("https://");
    let cloud = json!({
        "name": "AzureMLEmulator",
        "portal": base,
        "authentication": {
            "loginEndpoint": format!("{base}/"),
            "audiences": [format!("{base}/"), "https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "media": base,
        "graphAudience": base,
        "graph": base,
        "resourceManager": format!("{base}/"),
        "microsoftGraphResourceId": format!("{base}/"),
        "appInsightsResourceId": base,
        "appInsightsTelemetryChannelResourceId": base,
        "batch": base,
        "gallery": base,
        "sqlManagement": base,
        "vmImageAliasDoc": format!("{base}/vmImageAliasDoc"),
        "activeDirectoryDataLake": base,
        "logAnalyticsResourceId": base,
        "ossrDbmsResourceId": base,
        "suffixes": {
            "azureDataLakeStoreFileSystem": "azuredatalakestore.net",
            "acrLoginServer": "azurecr.io",
            "sqlServerHostname": "database.windows.net",
            "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
            "keyVaultDns": "vault.azure.net",
            "storage": "core.windows.net",
            "azureFrontDoorEndpointSuffix": "azurefd.net",
            "storageSyncEndpointSuffix": "afs.azure.net",
            "mhsmDns": "managedhsm.azure.net",
            "mysqlServerEndpoint": "mysql.database.azure.com",
            "postgresqlServerEndpoint": "postgres.database.azure.com",
            "mariadbServerEndpoint": "mariadb.database.azure.com",
            "synapseAnalytics": "dev.azuresynapse.net",
            "attestationEndpoint": "attest.azure.net",
        },
        "azureMLHost": host,
    });
    // The 2015-01-01 shape is a single object of the current cloud; newer versions list the clouds.
    if req.api_version().is_some_and(|v| v < "2019-05-01") {
        return ok(&json!({
            "galleryEndpoint": base,
            "graphEndpoint": base,
            "portalEndpoint": base,
            "authentication": {"loginEndpoint": format!("{base}/"), "audiences": [format!("{base}/"), "https://management.azure.com/"]},
        }));
    }
    ok(&json!([cloud]))
}
