//! ARM long-running operations: the value a controller persists, and how poll responses are read.
//!
//! A PUT/DELETE that starts an operation returns an [`Operation`] instead of waiting. The controller
//! writes it into its status and passes it back to `WorkspaceClient::poll` on later reconciles, so an
//! operator restarted mid-operation resumes polling instead of sending the request again.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use super::common::parse_iso_duration;
use super::error::{ApiError, Error, parse_error_body};

/// Poll interval when Azure gives no `Retry-After` (ARM guidance: 10–30 s; ML operations take minutes).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(15);

/// What the operation does; decides how a 404 while polling is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationKind {
    /// A create or update (PUT/PATCH).
    CreateOrUpdate,
    /// A delete: a 404 means done.
    Delete,
    /// A POST action such as cancel.
    Action,
}

/// How to learn the operation's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "url")]
pub enum PollTarget {
    /// The `Azure-AsyncOperation` URL: an operation-status resource with a `status` field.
    AsyncOperation(String),
    /// The `Location` URL: 202 while running, 200/204 when done.
    Location(String),
    /// No operation header: read the resource's own `provisioningState` (and 404 for deletes).
    Resource(String),
}

/// A long-running operation in flight. Serde-serializable, so it can live in a CR's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Create/update, delete or action.
    pub kind: OperationKind,
    /// The client operation that started it (e.g. `put_online_endpoint`), for logs and errors.
    pub name: String,
    /// The ARM URL of the resource the operation acts on.
    pub resource_url: String,
    /// Where to poll.
    pub poll: PollTarget,
    /// Seconds Azure asked to wait before the next poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// When Azure's `x-ms-async-operation-timeout` runs out; polling past it reports the operation
    /// as failed (stuck) instead of waiting forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<jiff::Timestamp>,
}

impl Operation {
    /// How long to wait before the first poll.
    pub fn retry_after(&self) -> Duration {
        self.retry_after_seconds.map(Duration::from_secs).unwrap_or(DEFAULT_POLL_INTERVAL)
    }

    /// Builds the operation from the headers of the response that started it. `Azure-AsyncOperation`
    /// is preferred over `Location` (ARM's rule); with neither, the resource itself is polled.
    pub fn from_response(kind: OperationKind, name: &str, resource_url: &str, headers: &HeaderMap) -> Self {
        let header =
            |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
        let poll = if let Some(url) = header("azure-asyncoperation") {
            PollTarget::AsyncOperation(url.to_string())
        } else if let Some(url) = header("location") {
            PollTarget::Location(url.to_string())
        } else {
            PollTarget::Resource(resource_url.to_string())
        };
        Self {
            kind,
            name: name.to_string(),
            resource_url: resource_url.to_string(),
            poll,
            retry_after_seconds: retry_after(headers).map(|d| d.as_secs()),
            deadline: headers
                .get("x-ms-async-operation-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_iso_duration)
                .and_then(|d| jiff::SignedDuration::try_from(d).ok())
                .and_then(|d| jiff::Timestamp::now().checked_add(d).ok()),
        }
    }

    /// Whether the operation's deadline has passed at `now`.
    pub fn is_overdue(&self, now: jiff::Timestamp) -> bool {
        self.deadline.is_some_and(|d| now > d)
    }
}

/// Where an operation stands.
#[derive(Debug)]
pub enum OperationStatus {
    /// Still running: poll again after `retry_after`.
    InProgress {
        /// When to poll next.
        retry_after: Duration,
    },
    /// Finished successfully (for a delete: the resource is gone).
    Succeeded,
    /// Finished in failure (or was canceled); the error carries Azure's code and message.
    Failed(Error),
}

/// Parses `Retry-After` (delta seconds; an HTTP date is read as "soon" because ARM sends seconds).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs));
    }
    None
}

/// The `status` values of an operation-status resource that end it.
fn terminal_status(status: &str) -> Option<bool> {
    match status.to_ascii_lowercase().as_str() {
        "succeeded" => Some(true),
        "failed" | "canceled" | "cancelled" => Some(false),
        _ => None,
    }
}

#[derive(Deserialize, Default)]
struct AsyncOperationBody {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error: Option<super::error::ErrorDetail>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ResourceBody {
    #[serde(default)]
    properties: Option<ResourceProperties>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ResourceProperties {
    #[serde(default)]
    provisioning_state: Option<String>,
    #[serde(default)]
    provisioning_errors: Option<serde_json::Value>,
}

/// A poll response, reduced to what [`interpret_poll`] needs.
pub struct PollResponse<'a> {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: &'a HeaderMap,
    /// Response body.
    pub body: &'a [u8],
}

fn failed(op: &Operation, status: u16, code: Option<String>, message: String, headers: &HeaderMap) -> Error {
    Error::from(ApiError {
        operation: leak_name(&op.name),
        status,
        code,
        message,
        target: None,
        request_id: request_id(headers),
        retry_after: None,
    })
}

/// Operation names are a small fixed set of client method names; map back to the static string.
fn leak_name(name: &str) -> &'static str {
    const NAMES: &[&str] = &[
        "create_compute",
        "put_online_endpoint",
        "delete_online_endpoint",
        "put_online_deployment",
        "delete_online_deployment",
        "cancel_job",
    ];
    NAMES.iter().find(|n| **n == name).copied().unwrap_or("poll_operation")
}

pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers.get("x-ms-request-id").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Reads one poll response at time `now`. Errors that say "try again later" (5xx, 429 on the poll
/// itself) are returned as `Err`, so they are not mistaken for a failed operation. An operation
/// still running past its deadline is reported as failed with code `OperationTimedOut`.
pub fn interpret_poll_at(
    op: &Operation,
    resp: PollResponse<'_>,
    now: jiff::Timestamp,
) -> Result<OperationStatus, Error> {
    let status =
        interpret_poll(op, PollResponse { status: resp.status, headers: resp.headers, body: resp.body })?;
    if matches!(status, OperationStatus::InProgress { .. }) && op.is_overdue(now) {
        let message = format!(
            "the operation is still running after Azure's x-ms-async-operation-timeout (deadline {})",
            op.deadline.map(|d| d.to_string()).unwrap_or_default()
        );
        return Ok(OperationStatus::Failed(failed(
            op,
            504,
            Some("OperationTimedOut".into()),
            message,
            resp.headers,
        )));
    }
    Ok(status)
}

/// Reads one poll response, ignoring the deadline (see [`interpret_poll_at`]).
pub fn interpret_poll(op: &Operation, resp: PollResponse<'_>) -> Result<OperationStatus, Error> {
    let wait = retry_after(resp.headers).or(op.retry_after_seconds.map(Duration::from_secs));
    let in_progress = OperationStatus::InProgress { retry_after: wait.unwrap_or(DEFAULT_POLL_INTERVAL) };
    let status = resp.status;

    if status == 429 || status >= 500 || status == 408 {
        let (code, message, target) = parse_error_body(resp.body);
        return Err(Error::from(ApiError {
            operation: leak_name(&op.name),
            status,
            code,
            message,
            target,
            request_id: request_id(resp.headers),
            retry_after: retry_after(resp.headers),
        }));
    }
    if status == 404 && op.kind == OperationKind::Delete {
        return Ok(OperationStatus::Succeeded);
    }
    if status >= 400 {
        let (code, message, _) = parse_error_body(resp.body);
        return Ok(OperationStatus::Failed(failed(op, status, code, message, resp.headers)));
    }

    match &op.poll {
        PollTarget::AsyncOperation(_) => {
            let body: AsyncOperationBody = serde_json::from_slice(resp.body)
                .map_err(|source| Error::Decode { operation: leak_name(&op.name), source })?;
            let state = body.status.unwrap_or_default();
            match terminal_status(&state) {
                None => Ok(in_progress),
                Some(true) => Ok(OperationStatus::Succeeded),
                Some(false) => {
                    let detail = body.error.unwrap_or_default();
                    let message = match detail.full_message() {
                        m if m.is_empty() => format!("the operation ended with status {state}"),
                        m => m,
                    };
                    let code = detail.code.clone().or(Some(state));
                    Ok(OperationStatus::Failed(failed(op, status, code, message, resp.headers)))
                }
            }
        }
        PollTarget::Location(_) => {
            if status == 202 {
                Ok(in_progress)
            } else {
                Ok(OperationStatus::Succeeded)
            }
        }
        PollTarget::Resource(_) => {
            if status == 204 {
                return Ok(OperationStatus::Succeeded);
            }
            let body: ResourceBody = serde_json::from_slice(resp.body).unwrap_or_default();
            let props = body.properties.unwrap_or_default();
            let state = props.provisioning_state.unwrap_or_default();
            match (op.kind, terminal_status(&state)) {
                // A resource still present after a delete is still being deleted.
                (OperationKind::Delete, _) => Ok(in_progress),
                (_, Some(true)) => Ok(OperationStatus::Succeeded),
                (_, Some(false)) => {
                    let message = props
                        .provisioning_errors
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| format!("provisioningState is {state}"));
                    Ok(OperationStatus::Failed(failed(op, status, Some(state), message, resp.headers)))
                }
                (_, None) => Ok(in_progress),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    fn op(kind: OperationKind, poll: PollTarget) -> Operation {
        Operation {
            kind,
            name: "put_online_endpoint".into(),
            resource_url: "https://arm/ep".into(),
            poll,
            retry_after_seconds: None,
            deadline: None,
        }
    }

    #[test]
    fn async_operation_header_is_preferred_over_location() {
        let h = headers(&[
            ("Azure-AsyncOperation", "https://arm/ops/1"),
            ("Location", "https://arm/loc/1"),
            ("Retry-After", "20"),
        ]);
        let o = Operation::from_response(
            OperationKind::CreateOrUpdate,
            "put_online_endpoint",
            "https://arm/ep",
            &h,
        );
        assert_eq!(o.poll, PollTarget::AsyncOperation("https://arm/ops/1".into()));
        assert_eq!(o.retry_after(), Duration::from_secs(20));
    }

    #[test]
    fn location_is_the_fallback_then_the_resource() {
        let h = headers(&[("Location", "https://arm/loc/1")]);
        let o =
            Operation::from_response(OperationKind::Delete, "delete_online_endpoint", "https://arm/ep", &h);
        assert_eq!(o.poll, PollTarget::Location("https://arm/loc/1".into()));
        assert_eq!(o.retry_after(), DEFAULT_POLL_INTERVAL);
        let o =
            Operation::from_response(OperationKind::CreateOrUpdate, "x", "https://arm/ep", &HeaderMap::new());
        assert_eq!(o.poll, PollTarget::Resource("https://arm/ep".into()));
    }

    #[test]
    fn operation_round_trips_through_json() {
        let o = Operation {
            retry_after_seconds: Some(5),
            ..op(OperationKind::Delete, PollTarget::Location("https://arm/loc".into()))
        };
        let text = serde_json::to_string(&o).expect("serialize");
        assert!(text.contains(r#""poll":{"type":"location","url":"https://arm/loc"}"#), "{text}");
        let back: Operation = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, o);
    }

    fn poll(
        o: &Operation,
        status: u16,
        h: &[(&'static str, &str)],
        body: &str,
    ) -> Result<OperationStatus, Error> {
        interpret_poll(o, PollResponse { status, headers: &headers(h), body: body.as_bytes() })
    }

    #[test]
    fn async_operation_states() {
        let o = op(OperationKind::CreateOrUpdate, PollTarget::AsyncOperation("u".into()));
        match poll(&o, 200, &[("Retry-After", "3")], r#"{"status":"InProgress"}"#) {
            Ok(OperationStatus::InProgress { retry_after }) => {
                assert_eq!(retry_after, Duration::from_secs(3))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(poll(&o, 200, &[], r#"{"status":"Succeeded"}"#), Ok(OperationStatus::Succeeded)));
        let failed = poll(
            &o,
            200,
            &[],
            r#"{"status":"Failed","error":{"code":"OutOfQuota","message":"Not enough quota for NC6s_v3"}}"#,
        );
        match failed {
            Ok(OperationStatus::Failed(e)) => {
                assert_eq!(e.code(), Some("OutOfQuota"));
                assert_eq!(e.class(), crate::azure::ErrorClass::Quota);
            }
            other => panic!("{other:?}"),
        }
        match poll(&o, 200, &[], r#"{"status":"Canceled"}"#) {
            Ok(OperationStatus::Failed(e)) => assert_eq!(e.code(), Some("Canceled")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn location_states() {
        let o = op(OperationKind::Delete, PollTarget::Location("u".into()));
        assert!(matches!(poll(&o, 202, &[], ""), Ok(OperationStatus::InProgress { .. })));
        assert!(matches!(poll(&o, 200, &[], ""), Ok(OperationStatus::Succeeded)));
        assert!(matches!(poll(&o, 204, &[], ""), Ok(OperationStatus::Succeeded)));
        // A delete whose resource is gone is done.
        assert!(matches!(poll(&o, 404, &[], ""), Ok(OperationStatus::Succeeded)));
    }

    #[test]
    fn server_errors_while_polling_are_transient_not_failures() {
        let o = op(OperationKind::CreateOrUpdate, PollTarget::Location("u".into()));
        let err = poll(&o, 503, &[("Retry-After", "9")], "").expect_err("transient");
        assert!(matches!(err.class(), crate::azure::ErrorClass::Transient { .. }));
        let o = op(OperationKind::CreateOrUpdate, PollTarget::Location("u".into()));
        assert!(matches!(
            poll(&o, 400, &[], r#"{"error":{"code":"UserError","message":"bad"}}"#),
            Ok(OperationStatus::Failed(_))
        ));
    }

    #[test]
    fn resource_polling_reads_provisioning_state() {
        let o = op(OperationKind::CreateOrUpdate, PollTarget::Resource("u".into()));
        let body = |s: &str| format!(r#"{{"properties":{{"provisioningState":"{s}"}}}}"#);
        assert!(matches!(poll(&o, 200, &[], &body("Creating")), Ok(OperationStatus::InProgress { .. })));
        assert!(matches!(poll(&o, 200, &[], &body("Succeeded")), Ok(OperationStatus::Succeeded)));
        assert!(matches!(poll(&o, 200, &[], &body("Failed")), Ok(OperationStatus::Failed(_))));
        let d = op(OperationKind::Delete, PollTarget::Resource("u".into()));
        assert!(matches!(poll(&d, 200, &[], &body("Deleting")), Ok(OperationStatus::InProgress { .. })));
        assert!(matches!(poll(&d, 404, &[], ""), Ok(OperationStatus::Succeeded)));
    }

    #[test]
    fn deadline_from_timeout_header_and_overdue_operation_fails() {
        let h = headers(&[
            ("Azure-AsyncOperation", "https://arm/ops/1"),
            ("x-ms-async-operation-timeout", "PT1H"),
        ]);
        let o = Operation::from_response(
            OperationKind::CreateOrUpdate,
            "put_online_endpoint",
            "https://arm/ep",
            &h,
        );
        let deadline = o.deadline.expect("deadline");
        let now = jiff::Timestamp::now();
        assert!(deadline > now && deadline <= now + jiff::SignedDuration::from_secs(3600));
        let running = r#"{"status":"InProgress"}"#.as_bytes();
        let resp = || PollResponse { status: 200, headers: &h, body: running };
        assert!(matches!(interpret_poll_at(&o, resp(), now), Ok(OperationStatus::InProgress { .. })));
        let later = deadline + jiff::SignedDuration::from_secs(1);
        match interpret_poll_at(&o, resp(), later) {
            Ok(OperationStatus::Failed(e)) => {
                assert_eq!(e.code(), Some("OperationTimedOut"));
                assert!(matches!(e.class(), crate::azure::ErrorClass::Transient { .. }));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(retry_after(&headers(&[("Retry-After", "17")])), Some(Duration::from_secs(17)));
        assert_eq!(retry_after(&headers(&[("Retry-After", "0.5")])), Some(Duration::from_millis(500)));
        assert_eq!(retry_after(&headers(&[("Retry-After", "soon")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
