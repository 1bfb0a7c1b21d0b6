//! The admin API under `/_emulator/` (plain JSON, no auth): request log, fault injection, injected
//! failures, seeding, quota, token expiry, state dump and reset.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{ApiError, DropConnection, Req, empty, json_response, ok, with_header};
use crate::state::{
    Compute, Failure, Principal, Provisioning, Quota, RegistryModelVersion, Shared, Workspace,
};
use crate::throttle::{BucketConfig, ThrottleConfig};

/// Body keys whose values never reach the request log.
const SECRET_KEYS: [&str; 9] = [
    "client_secret",
    "client_assertion",
    "keyvalue",
    "keys",
    "primarykey",
    "secondarykey",
    "password",
    "access_token",
    "clientsecret",
];

/// One logged request.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LoggedRequest {
    seq: u64,
    time: String,
    method: String,
    path: String,
    query: String,
    api_version: Option<String>,
    status: Option<u16>,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// Every request received outside `/_emulator/`, in order, with secrets redacted.
#[derive(Default)]
pub(crate) struct RequestLog {
    next: u64,
    entries: Vec<LoggedRequest>,
}

impl RequestLog {
    /// Records a request and returns its sequence number.
    pub(crate) fn begin(&mut self, req: &Req) -> u64 {
        self.next += 1;
        let mut headers = BTreeMap::new();
        for (name, value) in &req.headers {
            let name = name.as_str().to_ascii_lowercase();
            let value = if ["authorization", "x-identity-header", "cookie"].contains(&name.as_str()) {
                "REDACTED".to_string()
            } else {
                value.to_str().unwrap_or("").to_string()
            };
            headers.insert(name, value);
        }
        let query = redact_query(&req.query);
        self.entries.push(LoggedRequest {
            seq: self.next,
            time: Timestamp::now().to_string(),
            method: req.method.to_string(),
            path: req.path.clone(),
            query,
            api_version: req.api_version().map(str::to_string),
            status: None,
            headers,
            body: logged_body(req),
        });
        self.next
    }

    /// Records the status a request was answered with.
    pub(crate) fn finish(&mut self, seq: u64, status: u16) {
        if let Some(entry) = self.entries.iter_mut().rev().find(|e| e.seq == seq) {
            entry.status = Some(status);
        }
    }
}

fn redact_query(query: &[(String, String)]) -> String {
    let pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| {
            if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                (k.clone(), "REDACTED".into())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

fn logged_body(req: &Req) -> Value {
    if req.body.is_empty() {
        return Value::Null;
    }
    if let Ok(mut value) = serde_json::from_slice::<Value>(&req.body) {
        redact(&mut value);
        return value;
    }
    let form = req.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form && let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&req.body) {
        let mut object = serde_json::Map::new();
        for (k, v) in pairs {
            object.insert(k, Value::String(v));
        }
        let mut value = Value::Object(object);
        redact(&mut value);
        return value;
    }
    Value::String(String::from_utf8_lossy(&req.body).into_owned())
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) && !v.is_null() {
                    *v = Value::String("REDACTED".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// What a fault does to the requests it matches.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FaultSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    path_regex: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u64>,
    #[serde(default)]
    drop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    times: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
}

struct Fault {
    id: String,
    spec: FaultSpec,
    regex: Regex,
    hits: u32,
}

/// The active faults, checked in the order they were added.
#[derive(Default)]
pub(crate) struct Faults {
    faults: Vec<Fault>,
}

impl Faults {
    fn list(&self) -> Value {
        json!(
            self.faults
                .iter()
                .map(|f| json!({"id": f.id, "hits": f.hits, "spec": f.spec}))
                .collect::<Vec<_>>()
        )
    }
}

/// Applies the first matching fault: delays, drops, or answers for the emulated service.
pub(crate) async fn apply_faults(shared: &Arc<Shared>, req: &Req) -> Option<Response> {
    let spec = {
        let mut faults = shared.faults.lock();
        // A fault whose probability roll fails lets later faults have their turn.
        let fault = faults.faults.iter_mut().find(|f| {
            f.spec.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(req.method.as_str()))
                && f.regex.is_match(&req.path)
                && f.spec.times.is_none_or(|t| f.hits < t)
                && f.spec.probability.is_none_or(|p| rand::random::<f64>() < p)
        })?;
        fault.hits += 1;
        fault.spec.clone()
    };
    if let Some(ms) = spec.latency_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if spec.drop {
        let mut response = empty(StatusCode::INTERNAL_SERVER_ERROR);
        response.extensions_mut().insert(DropConnection);
        return Some(response);
    }
    let status = StatusCode::from_u16(spec.status?).ok()?;
    let body = spec.body.unwrap_or_else(|| default_fault_body(status));
    let mut response = json_response(status, &body);
    if let Some(secs) = spec.retry_after {
        response = with_header(response, "retry-after", &secs.to_string());
    }
    Some(response)
}

fn default_fault_body(status: StatusCode) -> Value {
    let (code, message) = match status.as_u16() {
        429 => (
            "SubscriptionRequestsThrottled",
            "Number of requests for subscription exceeded the limit. Please try again after some time.",
        ),
        500 => ("InternalServerError", "Encountered internal server error. Please try again."),
        502 => ("BadGateway", "The gateway received an invalid response."),
        503 => ("ServiceUnavailable", "The service is temporarily unavailable. Please try again."),
        504 => ("GatewayTimeout", "The gateway did not receive a response within the specified time period."),
        409 => ("Conflict", "The request conflicts with the current state of the resource."),
        _ => ("InjectedFault", "This response was injected by the emulator."),
    };
    json!({"error": {"code": code, "message": message}})
}

/// Routes `/_emulator/...`.
pub(crate) async fn handle(shared: &Arc<Shared>, req: &Req) -> Response {
    match route(shared, req) {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(req: &Req) -> Result<T, ApiError> {
    let body = if req.body.is_empty() { b"{}".as_slice() } else { &req.body };
    serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_request("InvalidRequestContent", format!("invalid admin request: {err}"))
    })
}

fn route(shared: &Arc<Shared>, req: &Req) -> Result<Response, ApiError> {
    let l: Vec<&str> = req.lower.iter().skip(1).map(String::as_str).collect();
    let s: Vec<&str> = req.segs.iter().skip(1).map(String::as_str).collect();
    let m = &req.method;
    match (m.clone(), l.as_slice()) {
        (Method::GET, ["requests"]) => {
            let since: u64 = req.q("since").and_then(|s| s.parse().ok()).unwrap_or(0);
            let log = shared.log.lock();
            let entries: Vec<&LoggedRequest> = log.entries.iter().filter(|e| e.seq > since).collect();
            Ok(ok(&json!({"requests": entries, "lastSeq": log.next})))
        }
        (Method::DELETE, ["requests"]) => {
            shared.log.lock().entries.clear();
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::GET, ["faults"]) => Ok(ok(&json!({"faults": shared.faults.lock().list()}))),
        (Method::POST, ["faults"]) => {
            let spec: FaultSpec = parse(req)?;
            let regex = Regex::new(&spec.path_regex)
                .map_err(|e| ApiError::bad_request("InvalidRequestContent", format!("bad pathRegex: {e}")))?;
            if spec.status.is_none() && spec.latency_ms.is_none() && !spec.drop {
                return Err(ApiError::bad_request(
                    "InvalidRequestContent",
                    "a fault needs at least one of status, latencyMs or drop",
                ));
            }
            if let Some(status) = spec.status
                && StatusCode::from_u16(status).is_err()
            {
                return Err(ApiError::bad_request(
                    "InvalidRequestContent",
                    "status must be an HTTP status code",
                ));
            }
            let id = uuid::Uuid::new_v4().to_string();
            shared.faults.lock().faults.push(Fault { id: id.clone(), spec, regex, hits: 0 });
            Ok(json_response(StatusCode::CREATED, &json!({"id": id})))
        }
        (Method::DELETE, ["faults"]) => {
            shared.faults.lock().faults.clear();
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::DELETE, ["faults", _]) => {
            let mut faults = shared.faults.lock();
            let before = faults.faults.len();
            faults.faults.retain(|f| f.id != s[1]);
            if faults.faults.len() == before {
                return Err(ApiError::not_found(format!("no fault with id {}", s[1])));
            }
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::GET, ["failures"]) => Ok(ok(&json!({"failures": shared.world().failures}))),
        (Method::POST, ["failures"]) => {
            let failure: Failure = parse(req)?;
            inject_failure(shared, failure)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::DELETE, ["failures"]) => {
            shared.world().failures.clear();
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::GET, ["state"]) => Ok(ok(&state(shared))),
        (Method::GET, ["config"]) => Ok(ok(&config(shared))),
        (Method::POST, ["reset"]) => {
            shared.reset();
            shared.faults.lock().faults.clear();
            shared.log.lock().entries.clear();
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::POST, ["tokens"]) => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Tokens {
                lifetime_seconds: Option<i64>,
                #[serde(default)]
                expire_issued: bool,
            }
            let body: Tokens = parse(req)?;
            let mut tokens = shared.tokens.lock();
            if let Some(lifetime) = body.lifetime_seconds {
                tokens.lifetime_secs = lifetime;
            }
            if body.expire_issued {
                tokens.expire_before = Some(Timestamp::now());
            }
            Ok(ok(&json!({"lifetimeSeconds": tokens.lifetime_secs})))
        }
        (Method::PUT, ["principals", _]) => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Body {
                client_secret: String,
                object_id: Option<String>,
            }
            let body: Body = parse(req)?;
            let client_id = s[1].to_string();
            let mut world = shared.world();
            world.principals.retain(|p| !p.client_id.eq_ignore_ascii_case(&client_id));
            let object_id = body.object_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            world.principals.push(Principal { client_id, client_secret: body.client_secret, object_id });
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::PUT, ["workspaces", _, _, _]) => {
            #[derive(Deserialize)]
            struct Body {
                location: String,
            }
            let body: Body = parse(req)?;
            let mut world = shared.world();
            let key = crate::state::ws_key(s[1], s[2], s[3]);
            world.workspaces.retain(|w| w.key() != key);
            world.workspaces.push(Workspace {
                subscription: s[1].into(),
                resource_group: s[2].into(),
                name: s[3].into(),
                location: body.location,
                workspace_id: uuid::Uuid::new_v4().to_string(),
                created: Timestamp::now(),
            });
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::PUT, ["computes", _]) => seed_compute(shared, req, s[1]),
        (Method::DELETE, ["computes", _]) => {
            let mut world = shared.world();
            let before = world.computes.len();
            world.computes.retain(|c| !c.name.eq_ignore_ascii_case(s[1]));
            if world.computes.len() == before {
                return Err(ApiError::not_found(format!("no compute named {}", s[1])));
            }
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::PUT, ["registries", _, "models", _, "versions", _]) => seed_registry_model(shared, req, &s),
        (Method::POST, ["registries", _, "models", _, "archive"]) => archive_registry_model(shared, req, &s),
        (Method::GET, ["quota"]) => Ok(ok(&json!(shared.world().quotas))),
        (Method::PUT, ["quota"]) => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Body {
                subscription_id: Option<String>,
                #[serde(flatten)]
                quota: Quota,
            }
            let body: Body = parse(req)?;
            let sub = body.subscription_id.unwrap_or_else(|| shared.config.seeds.subscription_id.clone());
            shared.world().quotas.insert(sub.to_ascii_lowercase(), body.quota);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::PUT, ["throttle"]) => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Bucket {
                capacity: u32,
                refill_per_second: f64,
            }
            #[derive(Deserialize)]
            struct Body {
                reads: Option<Bucket>,
                writes: Option<Bucket>,
                deletes: Option<Bucket>,
            }
            let body: Body = parse(req)?;
            let mut throttle = shared.throttle.lock();
            let current = throttle.config().clone();
            let pick = |b: Option<Bucket>, cur: BucketConfig| {
                b.map(|b| BucketConfig { capacity: b.capacity, refill_per_second: b.refill_per_second })
                    .unwrap_or(cur)
            };
            let config = ThrottleConfig {
                reads: pick(body.reads, current.reads),
                writes: pick(body.writes, current.writes),
                deletes: pick(body.deletes, current.deletes),
            };
            config.check().map_err(|e| ApiError::bad_request("InvalidRequestContent", e))?;
            throttle.set_config(config);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::not_found(format!("no admin route {} {}", req.method, req.path))),
    }
}

/// Records a failure and applies it at once to a matching resource still in progress.
fn inject_failure(shared: &Arc<Shared>, failure: Failure) -> Result<(), ApiError> {
    let kinds = ["job", "deployment", "compute", "endpoint"];
    if !kinds.contains(&failure.kind.to_ascii_lowercase().as_str()) {
        return Err(ApiError::bad_request(
            "InvalidRequestContent",
            format!("kind must be one of {kinds:?}, not {:?}", failure.kind),
        ));
    }
    let now = Timestamp::now();
    let mut world = shared.world();
    let err = crate::state::ErrorInfo::new(failure.code.clone(), failure.message.clone());
    let kind = failure.kind.to_ascii_lowercase();
    let mut applied = false;
    match kind.as_str() {
        "job" => {
            for job in world.jobs.iter_mut().filter(|j| j.name == failure.name) {
                if !job.is_terminal(now) {
                    job.rewrite_future(now, vec![("Failed".into(), now)]);
                    job.error = Some(err.clone());
                    applied = true;
                }
            }
        }
        "compute" => {
            for c in world.computes.iter_mut().filter(|c| c.name.eq_ignore_ascii_case(&failure.name)) {
                if let Some(p) =
                    c.prov.pending.as_mut().filter(|p| !matches!(p.outcome, crate::state::Outcome::Removed))
                {
                    p.outcome = crate::state::Outcome::Failed(err.clone());
                    applied = true;
                }
            }
        }
        "endpoint" => {
            for e in world.endpoints.iter_mut().filter(|e| e.name.eq_ignore_ascii_case(&failure.name)) {
                if let Some(p) =
                    e.prov.pending.as_mut().filter(|p| !matches!(p.outcome, crate::state::Outcome::Removed))
                {
                    p.outcome = crate::state::Outcome::Failed(err.clone());
                    applied = true;
                }
            }
        }
        _ => {
            for e in world.endpoints.iter_mut() {
                if failure.endpoint.as_ref().is_some_and(|want| !want.eq_ignore_ascii_case(&e.name)) {
                    continue;
                }
                for d in e.deployments.iter_mut().filter(|d| d.name.eq_ignore_ascii_case(&failure.name)) {
                    if let Some(p) = d
                        .prov
                        .pending
                        .as_mut()
                        .filter(|p| !matches!(p.outcome, crate::state::Outcome::Removed))
                    {
                        p.outcome = crate::state::Outcome::Failed(err.clone());
                        applied = true;
                    }
                }
            }
        }
    }
    if !applied {
        world.failures.push(failure);
    }
    Ok(())
}

fn seed_compute(shared: &Arc<Shared>, req: &Req, name: &str) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        vm_size: String,
        #[serde(default = "succeeded")]
        provisioning_state: String,
        #[serde(default)]
        min_node_count: u32,
        #[serde(default = "two")]
        max_node_count: u32,
        #[serde(default)]
        vm_priority: Option<String>,
        /// `sub/rg/ws`; the seeded workspace when absent.
        #[serde(default)]
        workspace: Option<String>,
    }
    fn succeeded() -> String {
        "Succeeded".into()
    }
    fn two() -> u32 {
        2
    }
    let body: Body = parse(req)?;
    let mut world = shared.world();
    let ws = match &body.workspace {
        Some(key) => world.workspaces.iter().find(|w| w.key() == key.to_ascii_lowercase()),
        None => world.workspaces.first(),
    }
    .cloned()
    .ok_or_else(|| ApiError::not_found("no such workspace"))?;
    let now = Timestamp::now();
    world.computes.retain(|c| !(c.ws == ws.key() && c.name.eq_ignore_ascii_case(name)));
    let mut prov = Provisioning::settled(&body.provisioning_state);
    if body.provisioning_state.eq_ignore_ascii_case("failed") {
        prov.error = Some(crate::state::ErrorInfo::new(
            "ClusterProvisioningFailed",
            format!("Compute '{name}' failed to provision (seeded by the emulator)."),
        ));
    }
    world.computes.push(Compute {
        ws: ws.key(),
        name: name.to_string(),
        location: ws.location.clone(),
        vm_size: body.vm_size,
        vm_priority: body.vm_priority.unwrap_or_else(|| "Dedicated".into()),
        min_nodes: body.min_node_count,
        max_nodes: body.max_node_count,
        idle: "PT120S".into(),
        description: None,
        tags: json!({}),
        prov,
        created: now,
        modified: now,
    });
    Ok(empty(StatusCode::NO_CONTENT))
}

fn seed_registry_model(shared: &Arc<Shared>, req: &Req, s: &[&str]) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(default)]
        tags: BTreeMap<String, String>,
        #[serde(default)]
        properties: BTreeMap<String, String>,
        #[serde(default)]
        is_archived: bool,
        #[serde(default)]
        model_type: Option<String>,
        #[serde(default)]
        description: Option<String>,
    }
    let body: Body = parse(req)?;
    let (reg, name, version) = (s[1], s[3], s[5]);
    let mut world = shared.world();
    let registry =
        world.registry_mut(reg).ok_or_else(|| ApiError::not_found(format!("no registry {reg}")))?;
    let model = match registry.models.iter().position(|m| m.name.eq_ignore_ascii_case(name)) {
        Some(i) => &mut registry.models[i],
        None => {
            registry.models.push(crate::state::RegistryModel {
                name: name.to_string(),
                description: body.description.clone().unwrap_or_default(),
                tags: BTreeMap::new(),
                archived: false,
                versions: Vec::new(),
            });
            let last = registry.models.len() - 1;
            &mut registry.models[last]
        }
    };
    model.versions.retain(|v| v.version != version);
    model.versions.push(RegistryModelVersion {
        version: version.to_string(),
        created: Timestamp::now(),
        description: body.description.unwrap_or_default(),
        model_type: body.model_type.unwrap_or_else(|| "mlflow_model".into()),
        tags: body.tags,
        properties: body.properties,
        archived: body.is_archived,
        flavors: json!({}),
    });
    Ok(empty(StatusCode::NO_CONTENT))
}

fn archive_registry_model(shared: &Arc<Shared>, req: &Req, s: &[&str]) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Body {
        version: Option<String>,
        #[serde(default = "yes")]
        archived: bool,
    }
    fn yes() -> bool {
        true
    }
    let body: Body = parse(req)?;
    let (reg, name) = (s[1], s[3]);
    let mut world = shared.world();
    let model = world
        .registry_mut(reg)
        .and_then(|r| r.models.iter_mut().find(|m| m.name.eq_ignore_ascii_case(name)))
        .ok_or_else(|| ApiError::not_found(format!("no model {name} in registry {reg}")))?;
    match &body.version {
        Some(version) => {
            let v = model
                .versions
                .iter_mut()
                .find(|v| &v.version == version)
                .ok_or_else(|| ApiError::not_found(format!("no version {version} of {name}")))?;
            v.archived = body.archived;
        }
        None => {
            model.archived = body.archived;
            for v in &mut model.versions {
                v.archived = body.archived;
            }
        }
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

fn state(shared: &Arc<Shared>) -> Value {
    let now = Timestamp::now();
    let world = shared.world();
    json!({
        "workspaces": world.workspaces.iter().map(|w| json!({
            "subscriptionId": w.subscription, "resourceGroup": w.resource_group, "name": w.name, "location": w.location,
        })).collect::<Vec<_>>(),
        "computes": world.computes.iter().map(|c| json!({
            "workspace": c.ws, "name": c.name, "vmSize": c.vm_size, "provisioningState": c.prov.state,
            "minNodeCount": c.min_nodes, "maxNodeCount": c.max_nodes,
        })).collect::<Vec<_>>(),
        "jobs": world.jobs.iter().map(|j| json!({
            "workspace": j.ws, "name": j.name, "status": j.status_at(now),
            "displayName": j.properties.get("displayName"), "experimentName": j.properties.get("experimentName"),
            "error": j.error.as_ref().map(|e| e.to_json()),
        })).collect::<Vec<_>>(),
        "models": world.models.iter().map(|m| json!({
            "workspace": m.ws, "name": m.name,
            "versions": m.versions.iter().map(|v| json!({"version": v.version, "modelUri": v.properties.get("modelUri")})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "endpoints": world.endpoints.iter().map(|e| json!({
            "workspace": e.ws, "name": e.name, "provisioningState": e.prov.state, "authMode": e.auth_mode,
            "traffic": e.traffic, "error": e.prov.error.as_ref().map(|x| x.to_json()),
            "deployments": e.deployments.iter().map(|d| json!({
                "name": d.name, "provisioningState": d.prov.state, "instanceType": d.instance_type,
                "instanceCount": d.capacity, "model": d.properties.get("model"),
                "error": d.prov.error.as_ref().map(|x| x.to_json()),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "registries": world.registries.iter().map(|r| json!({
            "name": r.name,
            "models": r.models.iter().map(|m| json!({
                "name": m.name, "isArchived": m.archived,
                "versions": m.versions.iter().map(|v| json!({"version": v.version, "isArchived": v.archived})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "components": r.components.iter().map(|c| json!({
                "name": c.name, "versions": c.versions.iter().map(|v| v.version.clone()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "operations": world.operations.values().map(|o| json!({"id": o.id, "kind": format!("{:?}", o.kind), "status": o.status})).collect::<Vec<_>>(),
        "failures": world.failures,
        "quotas": world.quotas,
    })
}

fn config(shared: &Arc<Shared>) -> Value {
    let seeds = &shared.config.seeds;
    let world = shared.world();
    json!({
        "httpsUrl": shared.https_url,
        "httpUrl": shared.http_url,
        "timeScale": shared.config.time_scale,
        "tenantId": world.tenant_id,
        "clientId": seeds.client_id,
        "subscriptionId": seeds.subscription_id,
        "resourceGroup": seeds.resource_group,
        "workspace": seeds.workspace,
        "location": seeds.location,
        "registry": seeds.registry,
        "tokenLifetimeSeconds": shared.tokens.lock().lifetime_secs,
    })
}
