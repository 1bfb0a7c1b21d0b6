//! Request parsing and response builders shared by every route: ARM error bodies, JSON replies, headers.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

/// Largest request body accepted (Azure's ARM limit is 4 MiB; scoring payloads can be larger).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Marker put in a response's extensions to make the server drop the connection instead.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

/// The scheme of the listener a request arrived on (set by the accept loop).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scheme(pub &'static str);

/// A request read whole, with its path split into percent-decoded segments.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub raw_query: String,
    /// Path segments, percent-decoded, as sent.
    pub segs: Vec<String>,
    /// The same segments lower-cased, for case-insensitive matching of ARM keywords.
    pub lower: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `scheme://host:port` as the client addressed the emulator (for URLs in replies).
    pub base: String,
}

impl Req {
    /// Reads the body and splits the URL.
    pub(crate) async fn read(request: Request) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let scheme = parts.extensions.get::<Scheme>().map_or("http", |s| s.0);
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "127.0.0.1".into());
        let base = format!("{scheme}://{host}");
        let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                format!("cannot read body: {err}"),
            )
            .into_response()
        })?;
        let path = parts.uri.path().to_string();
        let raw_query = parts.uri.query().unwrap_or("").to_string();
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let lower = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
        let query = form_urlencoded_pairs(&raw_query);
        Ok(Self {
            method: parts.method,
            path,
            raw_query,
            segs,
            lower,
            query,
            headers: parts.headers,
            body,
            base,
        })
    }

    /// A query parameter, matched case-insensitively by name (ARM does so for `api-version`).
    pub(crate) fn q(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A header value as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `api-version` query parameter.
    pub(crate) fn api_version(&self) -> Option<&str> {
        self.q("api-version")
    }

    /// The body parsed as JSON; an empty body is `null`.
    pub(crate) fn json(&self) -> Result<Value, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|err| {
            ApiError::bad_request(
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: '{err}'."),
            )
        })
    }

    /// The body as a JSON object, required (ARM PUT/PATCH bodies).
    pub(crate) fn json_object(&self) -> Result<Value, ApiError> {
        match self.json()? {
            v @ Value::Object(_) => Ok(v),
            Value::Null => Err(ApiError::bad_request(
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: the body is empty.",
            )),
            _ => Err(ApiError::bad_request(
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: expected a JSON object.",
            )),
        }
    }
}

fn form_urlencoded_pairs(raw: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw).unwrap_or_default()
}

/// An error answered in ARM's shape: `{"error":{"code","message","target"?,"details"?}}`.
///
/// Boxed so that every handler's `Result` stays small.
#[derive(Debug, Clone)]
pub(crate) struct ApiError(Box<ErrorData>);

#[derive(Debug, Clone)]
pub(crate) struct ErrorData {
    status: StatusCode,
    code: String,
    message: String,
    target: Option<String>,
    details: Vec<Value>,
    headers: Vec<(HeaderName, String)>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorData {
            status,
            code: code.into(),
            message: message.into(),
            target: None,
            details: Vec::new(),
            headers: Vec::new(),
        }))
    }

    pub(crate) fn bad_request(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A validation failure of the request body, in the shape the Azure ML resource provider uses:
    /// code `UserError`, the offending field as `target`, and a detail naming the specific rule.
    pub(crate) fn validation(target: &str, detail_code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut err = Self::bad_request("UserError", message.clone()).target(target);
        err.0.details.push(json!({"code": detail_code, "message": message, "target": target}));
        err
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFound", message)
    }

    pub(crate) fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub(crate) fn target(mut self, target: &str) -> Self {
        self.0.target = Some(target.to_string());
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.0.headers.push((name, value.into()));
        self
    }

    pub(crate) fn body(&self) -> Value {
        let e = &self.0;
        let mut error = json!({"code": e.code, "message": e.message});
        if let Some(target) = &e.target {
            error["target"] = json!(target);
        }
        if !e.details.is_empty() {
            error["details"] = json!(e.details);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json_response(self.0.status, &self.body());
        for (name, value) in &self.0.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.headers_mut().insert(name.clone(), value);
            }
        }
        response
    }
}

/// A JSON reply with the given status.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

/// A 200 JSON reply.
pub(crate) fn ok(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

/// An empty reply with the given status.
pub(crate) fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// Adds a header to a response (silently skipping values that are not valid header text).
pub(crate) fn with_header(mut response: Response, name: &str, value: &str) -> Response {
    if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// Turns a handler result into a response.
pub(crate) fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The answer for a path no emulated service knows, as ARM gives for an unknown route.
pub(crate) fn no_route(req: &Req) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NoRegisteredProviderFound",
        format!("No HTTP resource was found that matches the request URI '{}'.", req.path),
    )
    .into_response()
}

/// The answer for a known path with a method it does not support.
pub(crate) fn method_not_allowed(req: &Req) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The requested resource does not support http method '{}'.", req.method),
    )
}

/// ARM's `systemData` block.
pub(crate) fn system_data(created: jiff::Timestamp, modified: jiff::Timestamp, by: &str) -> Value {
    json!({
        "createdAt": created.to_string(),
        "createdBy": by,
        "createdByType": "Application",
        "lastModifiedAt": modified.to_string(),
        "lastModifiedBy": by,
        "lastModifiedByType": "Application",
    })
}

/// A list page `{"value": [...]}` honouring `$skip` and `$top`. Lists here are short, so the service
/// never cuts a page on its own and no `nextLink` is given.
pub(crate) fn page(req: &Req, items: Vec<Value>) -> Value {
    let skip: usize = req.q("$skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let top: usize = req.q("$top").and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
    json!({ "value": items.into_iter().skip(skip).take(top).collect::<Vec<_>>() })
}
