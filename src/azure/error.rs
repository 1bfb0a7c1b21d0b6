//! The one error type of the Azure layer and its classification into "retry later" or "stalled".

use std::time::Duration;

use serde::Deserialize;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An Azure call that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Azure answered with an error status (or a long-running operation ended in failure).
    #[error("{0}")]
    Api(Box<ApiError>),
    /// The request did not complete: connection refused or reset, TLS failure, timeout.
    #[error("{operation}: request failed: {source}")]
    Transport {
        /// The client operation.
        operation: &'static str,
        /// Whether the failure was a timeout.
        timeout: bool,
        /// Whether the connection was never established (the request was certainly not processed).
        connect: bool,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// No token could be obtained from Microsoft Entra ID.
    #[error("getting an access token failed: {source}")]
    Credential {
        /// The underlying error.
        #[source]
        source: azure_core::Error,
    },
    /// Azure answered 2xx with a body this client cannot read.
    #[error("{operation}: unexpected response body: {source}")]
    Decode {
        /// The client operation.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// Azure answered 2xx but without something the protocol requires (e.g. a polling URL).
    #[error("{operation}: unexpected response: {message}")]
    Protocol {
        /// The client operation.
        operation: &'static str,
        /// What was missing or wrong.
        message: String,
    },
    /// The connection settings are unusable (bad CA bundle, bad URL, bad credential settings).
    #[error("invalid Azure connection settings: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

/// An error answer from Azure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: Azure answered {status}{}: {message}{}", code_suffix(code), request_suffix(request_id))]
pub struct ApiError {
    /// The client operation, e.g. `put_online_endpoint`.
    pub operation: &'static str,
    /// HTTP status (for a failed long-running operation: the status of the poll response).
    pub status: u16,
    /// ARM `error.code`.
    pub code: Option<String>,
    /// ARM `error.message` (or the raw body when it is not an ARM error).
    pub message: String,
    /// ARM `error.target`.
    pub target: Option<String>,
    /// `x-ms-request-id` of the response.
    pub request_id: Option<String>,
    /// `Retry-After` of the response.
    pub retry_after: Option<Duration>,
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(Box::new(e))
    }
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
}

fn request_suffix(id: &Option<String>) -> String {
    id.as_ref().map(|c| format!(" (x-ms-request-id {c})")).unwrap_or_default()
}

/// What a caller should do about an [`Error`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later (5xx, timeouts, connection errors, a conflicting operation in flight).
    Transient {
        /// When Azure said to come back, if it did.
        retry_after: Option<Duration>,
    },
    /// Azure throttled the caller (429): wait at least `retry_after`.
    Throttled {
        /// When Azure said to come back, if it did.
        retry_after: Option<Duration>,
    },
    /// The resource (or its parent) does not exist.
    NotFound,
    /// The request conflicts with the resource's state (already exists with other content,
    /// operation in progress, immutable field changed).
    Conflict,
    /// Azure rejected the request as invalid; retrying the same request cannot succeed.
    InvalidSpec {
        /// Azure's message, for the user.
        message: String,
    },
    /// Authentication or authorization failed (bad credentials, missing RBAC role).
    Auth,
    /// A quota or capacity limit (VM family cores, endpoints per region, SKU not available).
    Quota,
    /// Any other permanent failure.
    Terminal,
}

impl ErrorClass {
    /// Whether retrying later without a spec change may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ErrorClass::Transient { .. } | ErrorClass::Throttled { .. } | ErrorClass::Conflict)
    }
}

/// Codes ARM and Azure ML use for throttling.
const THROTTLE_CODES: &[&str] = &[
    "toomanyrequests",
    "subscriptionrequeststhrottled",
    "tenantrequeststhrottled",
    "resourcerequeststhrottled",
    "throttled",
    "requestthrottled",
];

/// Codes meaning the caller's identity was refused.
const AUTH_CODES: &[&str] = &[
    "invalidauthenticationtoken",
    "expiredauthenticationtoken",
    "invalidauthenticationtokentenant",
    "invalidauthenticationtokenaudience",
    "authenticationfailed",
    "authorizationfailed",
    "linkedauthorizationfailed",
    "forbidden",
    "unauthorized",
    "invalid_client",
    "unauthorized_client",
    "invalid_grant",
];

/// Codes meaning a quota or capacity limit; any code containing "quota" also counts.
const QUOTA_CODES: &[&str] = &[
    "skunotavailable",
    "notenoughcores",
    "operationnotallowed",
    "zonalallocationfailed",
    "allocationfailed",
];

/// Codes meaning the thing does not exist.
const NOT_FOUND_CODES: &[&str] = &[
    "resourcenotfound",
    "resourcegroupnotfound",
    "subscriptionnotfound",
    "notfound",
    "workspacenotfound",
    "parentresourcenotfound",
];

/// Codes meaning a temporary service problem.
const TRANSIENT_CODES: &[&str] = &[
    "internalservererror",
    "internalerror",
    "serviceunavailable",
    "gatewaytimeout",
    "badgateway",
    "requesttimeout",
    "retryableerror",
    "transienterror",
    "operationpreempted",
    "resourcebusy",
    "anotheroperationinprogress",
];

/// Codes meaning the request itself is invalid.
const INVALID_CODES: &[&str] = &[
    "usererror",
    "badrequest",
    "validationerror",
    "invalidrequestcontent",
    "invalidrequestformat",
    "invalidparameter",
    "invalidresourcename",
    "missingrequiredparameter",
    "linkedinvalidpropertyid",
    "invalidapiversionparameter",
    "noregisteredproviderfound",
    "invalidtemplate",
    "unsupportedoperation",
];

/// Classifies an ARM error from its status, code and message (ASO-style code table: code first,
/// because the same status carries codes of different classes, then the status).
pub fn classify(status: u16, code: Option<&str>, message: &str, retry_after: Option<Duration>) -> ErrorClass {
    let code_lc = code.map(str::to_ascii_lowercase).unwrap_or_default();
    let msg_lc = message.to_ascii_lowercase();
    let is = |table: &[&str]| table.contains(&code_lc.as_str());

    if status == 429 || is(THROTTLE_CODES) {
        return ErrorClass::Throttled { retry_after };
    }
    if is(AUTH_CODES) || message.contains("AADSTS") {
        return ErrorClass::Auth;
    }
    if code_lc.contains("quota") || is(QUOTA_CODES) {
        return ErrorClass::Quota;
    }
    // Azure ML often wraps quota failures in a generic UserError/BadRequest; the message says it.
    if (400..500).contains(&status) && (msg_lc.contains("quota") && !msg_lc.contains("quotation")) {
        return ErrorClass::Quota;
    }
    if is(NOT_FOUND_CODES) || status == 404 {
        return ErrorClass::NotFound;
    }
    if is(TRANSIENT_CODES) || status >= 500 || status == 408 {
        return ErrorClass::Transient { retry_after };
    }
    if code_lc == "conflict" || status == 409 {
        // Azure ML answers 409 UserError both for "operation in progress" (wait) and for a changed
        // immutable field (stalled); the former is the one the message calls out.
        if msg_lc.contains("in progress") || msg_lc.contains("being ") {
            return ErrorClass::Transient { retry_after };
        }
        return ErrorClass::Conflict;
    }
    if status == 401 || status == 403 {
        return ErrorClass::Auth;
    }
    if is(INVALID_CODES) || status == 400 || status == 422 {
        return ErrorClass::InvalidSpec { message: message.to_string() };
    }
    ErrorClass::Terminal
}

impl Error {
    /// What a caller should do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Api(e) => classify(e.status, e.code.as_deref(), &e.message, e.retry_after),
            Error::Transport { .. } => ErrorClass::Transient { retry_after: None },
            Error::Credential { source } => credential_class(source),
            // A body we cannot read is most likely a proxy or gateway page; a later try may work.
            Error::Decode { .. } | Error::Protocol { .. } => ErrorClass::Transient { retry_after: None },
            Error::Config { message } => ErrorClass::InvalidSpec { message: message.clone() },
        }
    }

    /// A static, low-cardinality name of the failure for metrics labels and event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Transport { timeout: true, .. } => "AzureTimeout",
            Error::Transport { .. } => "AzureUnreachable",
            Error::Credential { .. } if self.class() == ErrorClass::Auth => "AzureAuthFailed",
            Error::Credential { .. } => "AzureTokenUnavailable",
            Error::Decode { .. } | Error::Protocol { .. } => "AzureBadResponse",
            Error::Config { .. } => "InvalidConnectionSettings",
            Error::Api(_) => match self.class() {
                ErrorClass::Transient { .. } => "AzureUnavailable",
                ErrorClass::Throttled { .. } => "AzureThrottled",
                ErrorClass::NotFound => "AzureNotFound",
                ErrorClass::Conflict => "AzureConflict",
                ErrorClass::InvalidSpec { .. } => "AzureRejectedSpec",
                ErrorClass::Auth => "AzureAuthFailed",
                ErrorClass::Quota => "AzureQuotaExceeded",
                ErrorClass::Terminal => "AzureError",
            },
        }
    }

    /// HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(e) => Some(e.status),
            _ => None,
        }
    }

    /// ARM error code of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api(e) => e.code.as_deref(),
            _ => None,
        }
    }

    /// ARM error message of an API error, or the error's display text.
    pub fn message(&self) -> String {
        match self {
            Error::Api(e) => e.message.clone(),
            other => other.to_string(),
        }
    }

    /// `x-ms-request-id` of an API error.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api(e) => e.request_id.as_deref(),
            _ => None,
        }
    }

    /// Whether Azure said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api(e) if e.status == 404)
    }

    /// Whether the token was refused as expired or invalid (worth one retry with a fresh token).
    pub(crate) fn is_stale_token(&self) -> bool {
        match self {
            Error::Api(e) if e.status == 401 => !matches!(
                e.code.as_deref().map(str::to_ascii_lowercase).as_deref(),
                Some("authorizationfailed" | "linkedauthorizationfailed")
            ),
            _ => false,
        }
    }
}

fn credential_class(source: &azure_core::Error) -> ErrorClass {
    use azure_core::error::ErrorKind;
    let text = error_chain(source);
    if text.contains("AADSTS") {
        return ErrorClass::Auth;
    }
    // azure_identity wraps the token endpoint's HTTP failure in a `Credential` error: classify by the
    // innermost HTTP or transport error found in the chain.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(source);
    while let Some(e) = cur {
        if let Some(inner) = e.downcast_ref::<azure_core::Error>() {
            match inner.kind() {
                ErrorKind::Connection | ErrorKind::Io => return ErrorClass::Transient { retry_after: None },
                ErrorKind::HttpResponse { status, .. } => {
                    let status = u16::from(*status);
                    if status == 429 {
                        return ErrorClass::Throttled { retry_after: None };
                    }
                    if status >= 500 || status == 408 {
                        return ErrorClass::Transient { retry_after: None };
                    }
                }
                _ => {}
            }
        }
        cur = e.source();
    }
    match source.kind() {
        ErrorKind::Connection | ErrorKind::Io => ErrorClass::Transient { retry_after: None },
        ErrorKind::HttpResponse { status, .. } => {
            let status = u16::from(*status);
            if status == 429 {
                ErrorClass::Throttled { retry_after: None }
            } else if status >= 500 || status == 408 {
                ErrorClass::Transient { retry_after: None }
            } else {
                ErrorClass::Auth
            }
        }
        // A reqwest failure inside the credential's pipeline (connection refused, reset, timeout), or a
        // token endpoint answering 5xx/429 that the credential reports without an HTTP kind.
        _ if looks_transient(&text) => ErrorClass::Transient { retry_after: None },
        _ => ErrorClass::Auth,
    }
}

/// Words of a failure that a later try may not meet: network trouble and server-side status codes.
fn looks_transient(text: &str) -> bool {
    const HINTS: [&str; 16] = [
        "error sending request",
        "connect",
        "connection",
        "reset",
        "broken pipe",
        "unexpected eof",
        "timed out",
        "timeout",
        " 500",
        " 502",
        " 503",
        " 504",
        " 429",
        "service unavailable",
        "bad gateway",
        "too many requests",
    ];
    let lower = text.to_ascii_lowercase();
    HINTS.iter().any(|h| lower.contains(h))
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}

/// An ARM error body, or the Azure ML front end's richer envelope (same `error` member).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub error: Option<ErrorDetail>,
    /// Microsoft Entra ID token errors use OAuth's flat shape.
    #[serde(default, rename = "error_description")]
    pub error_description: Option<String>,
}

/// The `error` object of an ARM error body.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorDetail {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

impl ErrorDetail {
    /// The message, with the first detail's message appended when it adds something (ARM often
    /// puts the useful text in `details`).
    pub fn full_message(&self) -> String {
        let base = self.message.clone().unwrap_or_default();
        match self.details.first().and_then(|d| d.message.as_deref()) {
            Some(d) if !d.is_empty() && !base.contains(d) => {
                if base.is_empty() {
                    d.to_string()
                } else {
                    format!("{base} ({d})")
                }
            }
            _ => base,
        }
    }
}

/// Parses an error response body into (code, message, target); falls back to the raw text.
pub(crate) fn parse_error_body(body: &[u8]) -> (Option<String>, String, Option<String>) {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => {
            // OAuth errors: {"error": "invalid_client", "error_description": "AADSTS..."}.
            if let Some(code) = value.get("error").and_then(|e| e.as_str()) {
                let message =
                    value.get("error_description").and_then(|d| d.as_str()).unwrap_or(code).to_string();
                return (Some(code.to_string()), message, None);
            }
            let parsed: ErrorBody = serde_json::from_value(value).unwrap_or_default();
            match parsed.error {
                Some(detail) => (detail.code.clone(), detail.full_message(), detail.target.clone()),
                None => (None, parsed.error_description.unwrap_or_else(|| truncate(body)), None),
            }
        }
        Err(_) => (None, truncate(body), None),
    }
}

fn truncate(body: &[u8]) -> String {
    const MAX: usize = 1024;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<&str>, message: &str) -> Error {
        Error::from(ApiError {
            operation: "test",
            status,
            code: code.map(str::to_string),
            message: message.to_string(),
            target: None,
            request_id: None,
            retry_after: Some(Duration::from_secs(7)),
        })
    }

    /// One row per (status, code, message) → class: the table the controllers rely on.
    #[test]
    fn classification_table() {
        let secs7 = Some(Duration::from_secs(7));
        let rows: &[(u16, Option<&str>, &str, ErrorClass)] = &[
            (429, Some("SubscriptionRequestsThrottled"), "", ErrorClass::Throttled { retry_after: secs7 }),
            (429, None, "", ErrorClass::Throttled { retry_after: secs7 }),
            (500, Some("InternalServerError"), "", ErrorClass::Transient { retry_after: secs7 }),
            (503, Some("ServiceUnavailable"), "", ErrorClass::Transient { retry_after: secs7 }),
            (504, None, "", ErrorClass::Transient { retry_after: secs7 }),
            (401, Some("InvalidAuthenticationToken"), "", ErrorClass::Auth),
            (401, Some("ExpiredAuthenticationToken"), "", ErrorClass::Auth),
            (403, Some("AuthorizationFailed"), "no role", ErrorClass::Auth),
            (400, Some("invalid_client"), "AADSTS7000215: Invalid client secret", ErrorClass::Auth),
            (400, Some("QuotaExceeded"), "", ErrorClass::Quota),
            (409, Some("OutOfQuota"), "", ErrorClass::Quota),
            (400, Some("NotEnoughQuota"), "", ErrorClass::Quota),
            (400, Some("SkuNotAvailable"), "", ErrorClass::Quota),
            (400, Some("UserError"), "Not enough quota available for Standard_NC6s_v3", ErrorClass::Quota),
            (404, Some("ResourceNotFound"), "", ErrorClass::NotFound),
            (404, Some("UserError"), "", ErrorClass::NotFound),
            (
                409,
                Some("Conflict"),
                "Model version already exists with different content",
                ErrorClass::Conflict,
            ),
            (
                409,
                Some("UserError"),
                "Another operation is in progress",
                ErrorClass::Transient { retry_after: secs7 },
            ),
            (
                400,
                Some("ValidationError"),
                "unknown input foo",
                ErrorClass::InvalidSpec { message: "unknown input foo".into() },
            ),
            (400, Some("UserError"), "bad enum", ErrorClass::InvalidSpec { message: "bad enum".into() }),
            (400, Some("InvalidApiVersionParameter"), "x", ErrorClass::InvalidSpec { message: "x".into() }),
            (405, None, "", ErrorClass::Terminal),
        ];
        for (status, code, message, want) in rows {
            let got = api(*status, *code, message).class();
            assert_eq!(&got, want, "status {status} code {code:?} message {message:?}");
        }
    }

    #[test]
    fn reasons_are_static_and_distinct_per_class() {
        assert_eq!(api(429, None, "").reason(), "AzureThrottled");
        assert_eq!(api(400, Some("QuotaExceeded"), "").reason(), "AzureQuotaExceeded");
        assert_eq!(api(404, None, "").reason(), "AzureNotFound");
        assert_eq!(api(400, Some("UserError"), "x").reason(), "AzureRejectedSpec");
    }

    #[test]
    fn stale_token_only_for_authentication_401() {
        assert!(api(401, Some("ExpiredAuthenticationToken"), "").is_stale_token());
        assert!(api(401, None, "").is_stale_token());
        assert!(!api(403, Some("AuthorizationFailed"), "").is_stale_token());
        assert!(!api(500, None, "").is_stale_token());
    }

    fn body(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/testdata/azure/errors/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Canned error bodies as Azure sends them, parsed and classified end to end.
    #[test]
    fn canned_bodies_classify() {
        type Check = fn(&ErrorClass) -> bool;
        let rows: &[(&str, u16, &str, Check)] = &[
            ("arm-throttled.json", 429, "SubscriptionRequestsThrottled", |c| {
                matches!(c, ErrorClass::Throttled { .. })
            }),
            ("arm-expired-token.json", 401, "ExpiredAuthenticationToken", |c| c == &ErrorClass::Auth),
            ("arm-authorization-failed.json", 403, "AuthorizationFailed", |c| c == &ErrorClass::Auth),
            ("arm-not-found.json", 404, "ResourceNotFound", |c| c == &ErrorClass::NotFound),
            ("ml-validation.json", 400, "UserError", |c| matches!(c, ErrorClass::InvalidSpec { .. })),
            ("ml-quota.json", 400, "BadRequest", |c| c == &ErrorClass::Quota),
            ("ml-internal.json", 500, "InternalServerError", |c| matches!(c, ErrorClass::Transient { .. })),
            ("aad-invalid-secret.json", 401, "invalid_client", |c| c == &ErrorClass::Auth),
        ];
        for (file, status, want_code, check) in rows {
            let (code, message, _) = parse_error_body(&body(file));
            assert_eq!(code.as_deref(), Some(*want_code), "{file}");
            assert!(!message.is_empty(), "{file}: empty message");
            let class = classify(*status, code.as_deref(), &message, None);
            assert!(check(&class), "{file}: got {class:?}");
        }
    }

    #[test]
    fn details_message_is_kept() {
        let (_, message, target) = parse_error_body(&body("ml-validation.json"));
        assert!(message.contains("learning_rate"), "{message}");
        assert_eq!(target.as_deref(), Some("properties.jobs.chat_completion_pipeline.inputs"));
    }

    #[test]
    fn non_json_body_is_truncated_text() {
        let (code, message, _) = parse_error_body(b"<html>Bad Gateway</html>");
        assert_eq!(code, None);
        assert_eq!(message, "<html>Bad Gateway</html>");
        let long = vec![b'x'; 5000];
        assert!(parse_error_body(&long).1.len() < 1100);
    }
}

#[cfg(test)]
mod credential_text_tests {
    use super::looks_transient;

    /// Token endpoint outages reported as text (no HTTP kind) are retried, not taken for bad credentials.
    #[test]
    fn outages_in_credential_errors_are_transient() {
        for text in [
            "ClientSecretCredential authentication failed: error sending request for url",
            "server responded with status 503 Service Unavailable",
            "connection closed before message completed",
            "operation timed out",
        ] {
            assert!(looks_transient(text), "{text}");
        }
        for text in ["AADSTS7000215: Invalid client secret provided.", "invalid_client", "missing client id"]
        {
            assert!(!looks_transient(text), "{text}");
        }
    }
}
