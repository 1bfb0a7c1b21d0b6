//! Managed online endpoints and deployments (ARM): long-running PUT/PATCH/DELETE, traffic rules, keys,
//! AML tokens, container logs, and quota.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::Engine;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::http::{ApiError, empty, json_response, method_not_allowed, ok, page, system_data};
use crate::state::{
    Deployment, Endpoint, ErrorInfo, OperationKind, Outcome, Provisioning, ResourceRef, Workspace, World,
};
use crate::validate;
use crate::workspace::{Ctx, async_operation_headers, invalid_resource_type, location_headers, only};

/// Emulated Azure durations, in seconds.
const ENDPOINT_CREATE: f64 = 90.0;
const ENDPOINT_UPDATE: f64 = 30.0;
const ENDPOINT_DELETE: f64 = 120.0;
const DEPLOYMENT_CREATE: f64 = 900.0;
const DEPLOYMENT_UPDATE: f64 = 300.0;
const DEPLOYMENT_SCALE: f64 = 120.0;
const DEPLOYMENT_DELETE: f64 = 300.0;
/// Azure ML's per-subscription-and-region endpoint limit and per-endpoint deployment limit.
const MAX_ENDPOINTS: usize = 100;
const MAX_DEPLOYMENTS: usize = 20;
/// Managed endpoints cap the request timeout.
const MAX_REQUEST_TIMEOUT_SECS: f64 = 180.0;

const AUTH_MODES: [&str; 3] = ["Key", "AMLToken", "AADToken"];
const IDENTITY_TYPES: [&str; 4] = ["None", "SystemAssigned", "UserAssigned", "SystemAssigned,UserAssigned"];

/// Routes `.../workspaces/{ws}/onlineEndpoints...`.
pub(crate) fn handle(ctx: &Ctx) -> Result<Response, ApiError> {
    let req = ctx.req;
    let r: Vec<&str> = ctx.rest.iter().map(String::as_str).collect();
    let name = ctx.rest_orig.get(1).cloned().unwrap_or_default();
    let dep = ctx.rest_orig.get(3).cloned().unwrap_or_default();
    match r.as_slice() {
        ["onlineendpoints"] => {
            only(req, &Method::GET)?;
            let world = ctx.shared.world();
            let items = world
                .endpoints
                .iter()
                .filter(|e| e.ws == ctx.ws.key())
                .map(|e| render_endpoint(&world, &ctx.ws, e))
                .collect();
            Ok(ok(&page(req, items)))
        }
        ["onlineendpoints", _] => match req.method {
            Method::GET => {
                let world = ctx.shared.world();
                let e = world.endpoint(&ctx.ws.key(), &name).ok_or_else(|| endpoint_not_found(&name))?;
                Ok(ok(&render_endpoint(&world, &ctx.ws, e)))
            }
            Method::PUT => put_endpoint(ctx, &name),
            Method::PATCH => patch_endpoint(ctx, &name),
            Method::DELETE => delete_endpoint(ctx, &name),
            _ => Err(method_not_allowed(req)),
        },
        ["onlineendpoints", _, "listkeys"] => {
            only(req, &Method::POST)?;
            list_keys(ctx, &name)
        }
        ["onlineendpoints", _, "regeneratekeys"] => {
            only(req, &Method::POST)?;
            regenerate_keys(ctx, &name)
        }
        ["onlineendpoints", _, "token"] => {
            only(req, &Method::POST)?;
            aml_token(ctx, &name)
        }
        ["onlineendpoints", _, "deployments"] => {
            only(req, &Method::GET)?;
            let world = ctx.shared.world();
            let e = world.endpoint(&ctx.ws.key(), &name).ok_or_else(|| endpoint_not_found(&name))?;
            let items = e.deployments.iter().map(|d| render_deployment(&ctx.ws, e, d)).collect();
            Ok(ok(&page(req, items)))
        }
        ["onlineendpoints", _, "deployments", _] => match req.method {
            Method::GET => {
                let world = ctx.shared.world();
                let e = world.endpoint(&ctx.ws.key(), &name).ok_or_else(|| endpoint_not_found(&name))?;
                let d = find_deployment(e, &dep)?;
                Ok(ok(&render_deployment(&ctx.ws, e, d)))
            }
            Method::PUT => put_deployment(ctx, &name, &dep),
            Method::PATCH => patch_deployment(ctx, &name, &dep),
            Method::DELETE => delete_deployment(ctx, &name, &dep),
            _ => Err(method_not_allowed(req)),
        },
        ["onlineendpoints", _, "deployments", _, "getlogs"] => {
            only(req, &Method::POST)?;
            get_logs(ctx, &name, &dep)
        }
        ["onlineendpoints", _, "deployments", _, "skus"] => {
            only(req, &Method::GET)?;
            let world = ctx.shared.world();
            let e = world.endpoint(&ctx.ws.key(), &name).ok_or_else(|| endpoint_not_found(&name))?;
            find_deployment(e, &dep)?;
            Ok(ok(&json!({"value": [{
                "resourceType": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
                "sku": {"name": "Default", "tier": "Standard"},
                "capacity": {"minimum": 1, "maximum": 20, "default": 1, "scaleType": "Manual"},
            }]})))
        }
        _ => Err(invalid_resource_type(req, "workspaces/onlineEndpoints")),
    }
}

fn endpoint_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Online endpoint '{name}' was not found in the workspace."))
}

fn deployment_not_found(endpoint: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("Online deployment '{name}' was not found in endpoint '{endpoint}'."))
}

fn find_deployment<'a>(e: &'a Endpoint, name: &str) -> Result<&'a Deployment, ApiError> {
    e.deployments
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| deployment_not_found(&e.name, name))
}

fn busy(kind: &str, name: &str, state: &str) -> ApiError {
    ApiError::conflict(
        "Conflict",
        format!(
            "{kind} '{name}' is in provisioning state '{state}'; another operation is in progress. Retry when it ends."
        ),
    )
}

/// The scoring URI of an endpoint (the emulator serves every endpoint on its own HTTPS base).
pub(crate) fn scoring_uri(https_url: &str, endpoint: &str) -> String {
    format!("{https_url}/inference/{endpoint}/score")
}

/// The endpoint as ARM returns it.
pub(crate) fn render_endpoint(world: &World, ws: &Workspace, e: &Endpoint) -> Value {
    let https = world_https(world);
    let mut identity = e.identity.clone();
    if identity.get("type").and_then(Value::as_str).is_some_and(|t| t.contains("SystemAssigned")) {
        identity["principalId"] = json!(pseudo_uuid(&format!("{}/{}", e.ws, e.name)));
        identity["tenantId"] = json!(world.tenant_id);
    }
    json!({
        "id": format!("{}/onlineEndpoints/{}", ws.arm_id(), e.name),
        "name": e.name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "location": e.location,
        "tags": e.tags,
        "kind": e.kind.clone().unwrap_or_else(|| "Managed".into()),
        "identity": identity,
        "properties": {
            "authMode": e.auth_mode,
            "description": e.description,
            "properties": e.properties,
            "scoringUri": scoring_uri(&https, &e.name),
            "swaggerUri": format!("{https}/inference/{}/swagger.json", e.name),
            "traffic": e.traffic,
            "mirrorTraffic": e.mirror_traffic,
            "publicNetworkAccess": e.public_network_access,
            "provisioningState": e.prov.state,
            "keys": null,
        },
        "systemData": system_data(e.created, e.modified, "emulator"),
    })
}

fn world_https(world: &World) -> String {
    world.https_url.clone()
}

fn pseudo_uuid(seed: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let b = digest.as_ref();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// The deployment as ARM returns it, with the service's defaults filled in.
pub(crate) fn render_deployment(ws: &Workspace, e: &Endpoint, d: &Deployment) -> Value {
    let mut props = d.properties.clone();
    let probe_defaults = json!({"initialDelay": "PT10S", "period": "PT10S", "timeout": "PT2S", "failureThreshold": 30, "successThreshold": 1});
    for probe in ["livenessProbe", "readinessProbe"] {
        let mut merged = probe_defaults.clone();
        if let Some(given) = props.get(probe).and_then(Value::as_object) {
            for (k, v) in given {
                merged[k] = v.clone();
            }
        }
        props[probe] = merged;
    }
    let mut request =
        json!({"requestTimeout": "PT5S", "maxConcurrentRequestsPerInstance": 1, "maxQueueWait": "PT0.5S"});
    if let Some(given) = props.get("requestSettings").and_then(Value::as_object) {
        for (k, v) in given {
            request[k] = v.clone();
        }
    }
    props["requestSettings"] = request;
    if props.get("scaleSettings").is_none_or(Value::is_null) {
        props["scaleSettings"] = json!({"scaleType": "Default"});
    }
    for (key, default) in [
        ("appInsightsEnabled", json!(false)),
        ("egressPublicNetworkAccess", json!("Enabled")),
        ("environmentVariables", json!({})),
        ("properties", json!({})),
    ] {
        if props.get(key).is_none_or(Value::is_null) {
            props[key] = default;
        }
    }
    props["provisioningState"] = json!(d.prov.state);
    json!({
        "id": format!("{}/onlineEndpoints/{}/deployments/{}", ws.arm_id(), e.name, d.name),
        "name": d.name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
        "location": d.location,
        "tags": d.tags,
        "kind": "Managed",
        "sku": {"name": d.sku.get("name").and_then(Value::as_str).unwrap_or("Default"), "tier": "Standard", "capacity": d.capacity},
        "properties": props,
        "systemData": system_data(d.created, d.modified, "emulator"),
    })
}

fn new_key() -> String {
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn percent_map(value: Option<&Value>, target: &str) -> Result<BTreeMap<String, u64>, ApiError> {
    let mut map = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let n = v.as_u64().filter(|n| *n <= 100).ok_or_else(|| {
                    ApiError::validation(
                        target,
                        "InvalidTrafficValue",
                        format!("Traffic for '{k}' must be an integer from 0 to 100; got {v}."),
                    )
                })?;
                map.insert(k.clone(), n);
            }
        }
        Some(other) => {
            return Err(ApiError::validation(
                target,
                "InvalidTrafficValue",
                format!("{target} must be an object; got {other}."),
            ));
        }
    }
    Ok(map)
}

/// Checks traffic and mirror traffic against the endpoint's deployments.
fn check_traffic(
    deployments: &[Deployment],
    traffic: &BTreeMap<String, u64>,
    mirror: &BTreeMap<String, u64>,
) -> Result<(), ApiError> {
    for name in traffic.keys().chain(mirror.keys()) {
        if !deployments.iter().any(|d| d.name.eq_ignore_ascii_case(name)) {
            return Err(ApiError::validation(
                "properties.traffic",
                "DeploymentNotFound",
                format!("Traffic rule refers to deployment '{name}', which does not exist in this endpoint."),
            ));
        }
    }
    let sum: u64 = traffic.values().sum();
    if sum != 0 && sum != 100 {
        return Err(ApiError::validation(
            "properties.traffic",
            "InvalidTrafficSum",
            format!("The traffic values must add up to 100 (or be all zero); they add up to {sum}."),
        ));
    }
    let mirrored: u64 = mirror.values().sum();
    if mirrored > 50 {
        return Err(ApiError::validation(
            "properties.mirrorTraffic",
            "InvalidMirrorTraffic",
            format!("Mirror traffic may not exceed 50 percent in total; got {mirrored}."),
        ));
    }
    for name in mirror.keys().filter(|n| mirror[*n] > 0) {
        if traffic.get(name).copied().unwrap_or(0) > 0 {
            return Err(ApiError::validation(
                "properties.mirrorTraffic",
                "InvalidMirrorTraffic",
                format!("Deployment '{name}' cannot receive both live and mirrored traffic."),
            ));
        }
    }
    Ok(())
}

fn put_endpoint(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    validate::endpoint_name(name)?;
    let body = ctx.req.json_object()?;
    let location = body.get("location").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request("LocationRequired", "The location property is required for this definition.")
    })?;
    let props = match body.get("properties") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => return Err(ApiError::validation("properties", "Required", "The properties field is required.")),
    };
    let auth_mode = props.get("authMode").and_then(Value::as_str).ok_or_else(|| {
        ApiError::validation("properties.authMode", "Required", "The authMode field is required.")
    })?;
    if !AUTH_MODES.contains(&auth_mode) {
        return Err(ApiError::validation(
            "properties.authMode",
            "InvalidEnumValue",
            format!(
                "The value '{auth_mode}' is not valid for authMode. Valid values: Key, AMLToken, AADToken."
            ),
        ));
    }
    let identity = body
        .get("identity")
        .cloned()
        .filter(|i| !i.is_null())
        .unwrap_or_else(|| json!({"type": "SystemAssigned"}));
    let identity_type = identity.get("type").and_then(Value::as_str).unwrap_or("");
    if !IDENTITY_TYPES.contains(&identity_type) {
        return Err(ApiError::validation(
            "identity.type",
            "InvalidEnumValue",
            format!(
                "The value '{identity_type}' is not valid for identity.type. Valid values: {}.",
                IDENTITY_TYPES.join(", ")
            ),
        ));
    }
    let traffic = percent_map(props.get("traffic"), "properties.traffic")?;
    let mirror = percent_map(props.get("mirrorTraffic"), "properties.mirrorTraffic")?;
    let public = props.get("publicNetworkAccess").and_then(Value::as_str).unwrap_or("Enabled").to_string();
    if !["Enabled", "Disabled"].contains(&public.as_str()) {
        return Err(ApiError::validation(
            "properties.publicNetworkAccess",
            "InvalidEnumValue",
            "publicNetworkAccess must be Enabled or Disabled.",
        ));
    }

    let now = Timestamp::now();
    let ws = ctx.ws.key();
    let mut world = ctx.shared.world();
    let exists = world.endpoint(&ws, name).is_some();
    if let Some(e) = world.endpoint(&ws, name) {
        if e.prov.busy() {
            return Err(busy("Online endpoint", name, &e.prov.state));
        }
        check_traffic(&e.deployments, &traffic, &mirror)?;
    } else {
        check_traffic(&[], &traffic, &mirror)?;
        let in_subscription = world
            .endpoints
            .iter()
            .filter(|e| e.ws.starts_with(&format!("{}/", ctx.ws.subscription.to_ascii_lowercase())))
            .count();
        if in_subscription >= MAX_ENDPOINTS {
            return Err(ApiError::bad_request(
                "QuotaExceeded",
                format!(
                    "The subscription already has {MAX_ENDPOINTS} online endpoints in this region, the most allowed."
                ),
            ));
        }
    }
    let failure = world.take_failure("endpoint", name, None);
    let outcome = failure.map_or(Outcome::Succeeded, Outcome::Failed);
    let at = now + world.scaled(if exists { ENDPOINT_UPDATE } else { ENDPOINT_CREATE });
    let op =
        world.new_operation(&ctx.ws.subscription, &ctx.ws.location, OperationKind::AsyncOperation, now, None);
    let tags = body.get("tags").cloned().filter(|t| !t.is_null()).unwrap_or_else(|| json!({}));
    let description = props.get("description").and_then(Value::as_str).map(str::to_string);
    let extra = props.get("properties").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let kind = body.get("kind").and_then(Value::as_str).map(str::to_string);
    if let Some(e) = world.endpoint_mut(&ws, name) {
        e.location = location.to_string();
        e.tags = tags;
        e.identity = identity;
        e.kind = kind;
        e.auth_mode = auth_mode.to_string();
        e.description = description;
        e.traffic = traffic;
        e.mirror_traffic = mirror;
        e.public_network_access = public;
        // `properties` is add-only.
        if let (Some(have), Some(add)) = (e.properties.as_object_mut(), extra.as_object()) {
            for (k, v) in add {
                have.insert(k.clone(), v.clone());
            }
        }
        e.modified = now;
        e.prov.start("Updating", at, outcome, Some(op.clone()));
    } else {
        let mut prov = Provisioning::settled("Creating");
        prov.start("Creating", at, outcome, Some(op.clone()));
        let (primary, secondary) = match props.get("keys") {
            Some(k) => (
                k.get("primaryKey").and_then(Value::as_str).map_or_else(new_key, str::to_string),
                k.get("secondaryKey").and_then(Value::as_str).map_or_else(new_key, str::to_string),
            ),
            None => (new_key(), new_key()),
        };
        world.endpoints.push(Endpoint {
            ws: ws.clone(),
            name: name.to_string(),
            location: location.to_string(),
            tags,
            identity,
            kind,
            auth_mode: auth_mode.to_string(),
            description,
            traffic,
            mirror_traffic: mirror,
            public_network_access: public,
            properties: extra,
            primary_key: primary,
            secondary_key: secondary,
            prov,
            created: now,
            modified: now,
            deployments: Vec::new(),
        });
    }
    let e = world.endpoint(&ws, name).ok_or_else(|| endpoint_not_found(name))?;
    let status = if exists { StatusCode::OK } else { StatusCode::CREATED };
    let response = json_response(status, &render_endpoint(&world, &ctx.ws, e));
    Ok(async_operation_headers(ctx, &world, response, &op))
}

fn patch_endpoint(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?;
    let now = Timestamp::now();
    let ws = ctx.ws.key();
    let mut world = ctx.shared.world();
    let e = world.endpoint(&ws, name).ok_or_else(|| endpoint_not_found(name))?;
    if e.prov.busy() {
        return Err(busy("Online endpoint", name, &e.prov.state));
    }
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    let traffic = match props.get("traffic") {
        Some(t) => Some(percent_map(Some(t), "properties.traffic")?),
        None => None,
    };
    let mirror = match props.get("mirrorTraffic") {
        Some(t) => Some(percent_map(Some(t), "properties.mirrorTraffic")?),
        None => None,
    };
    check_traffic(
        &e.deployments,
        traffic.as_ref().unwrap_or(&e.traffic),
        mirror.as_ref().unwrap_or(&e.mirror_traffic),
    )?;
    let at = now + world.scaled(ENDPOINT_UPDATE);
    let op = world.new_operation(
        &ctx.ws.subscription,
        &ctx.ws.location,
        OperationKind::Location,
        now,
        Some(ResourceRef::Endpoint { ws: ws.clone(), endpoint: name.to_string() }),
    );
    let e = world.endpoint_mut(&ws, name).ok_or_else(|| endpoint_not_found(name))?;
    if let Some(tags) = body.get("tags").filter(|t| t.is_object()) {
        e.tags = tags.clone();
    }
    if let Some(identity) = body.get("identity").filter(|i| i.is_object()) {
        e.identity = identity.clone();
    }
    if let Some(t) = traffic {
        e.traffic = t;
    }
    if let Some(m) = mirror {
        e.mirror_traffic = m;
    }
    e.modified = now;
    e.prov.start("Updating", at, Outcome::Succeeded, Some(op.clone()));
    let e = world.endpoint(&ws, name).ok_or_else(|| endpoint_not_found(name))?;
    let response = json_response(StatusCode::ACCEPTED, &render_endpoint(&world, &ctx.ws, e));
    Ok(location_headers(ctx, &world, response, &op))
}

fn delete_endpoint(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    let now = Timestamp::now();
    let ws = ctx.ws.key();
    let mut world = ctx.shared.world();
    let e = world.endpoint(&ws, name).ok_or_else(|| endpoint_not_found(name))?;
    if let Some(p) = &e.prov.pending
        && matches!(p.outcome, Outcome::Removed)
        && let Some(op) = p.operation.clone()
    {
        // Already being deleted: point at the same operation.
        return Ok(location_headers(ctx, &world, empty(StatusCode::ACCEPTED), &op));
    }
    let at = now + world.scaled(ENDPOINT_DELETE);
    let op = world.new_operation(&ctx.ws.subscription, &ctx.ws.location, OperationKind::Location, now, None);
    let e = world.endpoint_mut(&ws, name).ok_or_else(|| endpoint_not_found(name))?;
    e.prov.start("Deleting", at, Outcome::Removed, Some(op.clone()));
    // Deployments go with their endpoint; operations of theirs still running end as canceled.
    let mut superseded = Vec::new();
    for d in &mut e.deployments {
        d.prov.state = "Deleting".into();
        if let Some(dop) = d.prov.pending.take().and_then(|p| p.operation) {
            superseded.push(dop);
        }
    }
    for dop in superseded {
        let err = ErrorInfo::new(
            "Canceled",
            format!("The operation was canceled because endpoint '{name}' is being deleted."),
        );
        world.finish_operation(&dop, now, Some(err));
    }
    Ok(location_headers(ctx, &world, empty(StatusCode::ACCEPTED), &op))
}

fn list_keys(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    let world = ctx.shared.world();
    let e = world.endpoint(&ctx.ws.key(), name).ok_or_else(|| endpoint_not_found(name))?;
    if e.auth_mode != "Key" {
        return Err(ApiError::validation(
            "authMode",
            "InvalidAuthMode",
            format!(
                "Keys are available only for endpoints with authMode Key; endpoint '{name}' uses {}.",
                e.auth_mode
            ),
        ));
    }
    Ok(ok(&json!({"primaryKey": e.primary_key, "secondaryKey": e.secondary_key})))
}

fn regenerate_keys(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?;
    let key_type = body.get("keyType").and_then(Value::as_str).ok_or_else(|| {
        ApiError::validation("keyType", "Required", "The keyType field is required (Primary or Secondary).")
    })?;
    if !["Primary", "Secondary"].contains(&key_type) {
        return Err(ApiError::validation(
            "keyType",
            "InvalidEnumValue",
            format!("The value '{key_type}' is not valid for keyType. Valid values: Primary, Secondary."),
        ));
    }
    let value = body.get("keyValue").and_then(Value::as_str).map_or_else(new_key, str::to_string);
    let now = Timestamp::now();
    let mut world = ctx.shared.world();
    let due = now + world.scaled(10.0);
    let e = world.endpoint_mut(&ctx.ws.key(), name).ok_or_else(|| endpoint_not_found(name))?;
    if e.auth_mode != "Key" {
        return Err(ApiError::validation(
            "authMode",
            "InvalidAuthMode",
            format!("Endpoint '{name}' does not use keys."),
        ));
    }
    if key_type == "Primary" {
        e.primary_key = value;
    } else {
        e.secondary_key = value;
    }
    let op = world.new_operation(&ctx.ws.subscription, &ctx.ws.location, OperationKind::Location, now, None);
    if let Some(o) = world.operations.get_mut(&op) {
        o.due_at = Some(due);
    }
    // Azure's 202 names both a status URL and a result URL for this operation.
    let response = location_headers(ctx, &world, empty(StatusCode::ACCEPTED), &op);
    Ok(async_operation_headers(ctx, &world, response, &op))
}

fn aml_token(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    let key = {
        let world = ctx.shared.world();
        let e = world.endpoint(&ctx.ws.key(), name).ok_or_else(|| endpoint_not_found(name))?;
        if e.auth_mode != "AMLToken" {
            return Err(ApiError::validation(
                "authMode",
                "InvalidAuthMode",
                format!(
                    "Tokens are available only for endpoints with authMode AMLToken; endpoint '{name}' uses {}.",
                    e.auth_mode
                ),
            ));
        }
        format!("{}/{}", e.ws, e.name.to_ascii_lowercase())
    };
    let (token, expiry) = crate::auth::issue_aml_token(ctx.shared, &key, &ctx.claims.oid, 3600);
    Ok(ok(&json!({
        "accessToken": token,
        "tokenType": "Bearer",
        "expiryTimeUtc": expiry,
        "refreshAfterTimeUtc": expiry - 1800,
    })))
}

/// The model a deployment serves, for replies and logs: `name:version` when recognisable.
pub(crate) fn model_label(reference: &str) -> String {
    let parts: Vec<&str> = reference.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        [.., "models", name, "versions", version] => format!("{name}:{version}"),
        _ => reference.trim_start_matches("azureml:").to_string(),
    }
}

fn check_duration(props: &Value, pointer: &str, target: &str) -> Result<Option<f64>, ApiError> {
    match props.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => validate::iso_duration_secs(s).map(Some).ok_or_else(|| {
            ApiError::validation(
                target,
                "InvalidDuration",
                format!("'{s}' is not an ISO 8601 duration (for example PT90S)."),
            )
        }),
        Some(other) => Err(ApiError::validation(
            target,
            "InvalidDuration",
            format!("{target} must be an ISO 8601 duration string; got {other}."),
        )),
    }
}

fn check_positive_int(props: &Value, pointer: &str, target: &str) -> Result<(), ApiError> {
    match props.pointer(pointer) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_u64().is_some_and(|n| n >= 1) => Ok(()),
        Some(v) => Err(ApiError::validation(
            target,
            "InvalidValue",
            format!("{target} must be an integer of at least 1; got {v}."),
        )),
    }
}

fn put_deployment(ctx: &Ctx, endpoint: &str, name: &str) -> Result<Response, ApiError> {
    validate::deployment_name(name)?;
    let body = ctx.req.json_object()?;
    let location = body.get("location").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request("LocationRequired", "The location property is required for this definition.")
    })?;
    let props = match body.get("properties") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => return Err(ApiError::validation("properties", "Required", "The properties field is required.")),
    };
    let compute_type = props.get("endpointComputeType").and_then(Value::as_str).ok_or_else(|| {
        ApiError::validation(
            "properties.endpointComputeType",
            "Required",
            "The endpointComputeType field is required.",
        )
    })?;
    if !["Managed", "Kubernetes", "AzureMLCompute"].contains(&compute_type) {
        return Err(ApiError::validation(
            "properties.endpointComputeType",
            "InvalidEnumValue",
            format!(
                "The value '{compute_type}' is not valid for endpointComputeType. Valid values: Managed, Kubernetes, AzureMLCompute."
            ),
        ));
    }
    if compute_type != "Managed" {
        return Err(ApiError::validation(
            "properties.endpointComputeType",
            "NotSupported",
            format!(
                "Only Managed deployments can be created on a managed online endpoint; got '{compute_type}'."
            ),
        ));
    }
    let model = props.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).ok_or_else(|| {
        ApiError::validation("properties.model", "Required", "The model field is required.")
    })?;
    let instance_type = props.get("instanceType").and_then(Value::as_str).ok_or_else(|| {
        ApiError::validation(
            "properties.instanceType",
            "Required",
            "The instanceType field is required for Managed deployments.",
        )
    })?;
    let capacity = match body.pointer("/sku/capacity") {
        None | Some(Value::Null) => 1,
        Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::validation(
                "sku.capacity",
                "InvalidValue",
                format!("sku.capacity must be an integer of at least 1; got {v}."),
            )
        })?,
    };
    if let Some(scale) = props.pointer("/scaleSettings/scaleType").and_then(Value::as_str)
        && !["Default", "TargetUtilization"].contains(&scale)
    {
        return Err(ApiError::validation(
            "properties.scaleSettings.scaleType",
            "InvalidEnumValue",
            format!(
                "The value '{scale}' is not valid for scaleType. Valid values: Default, TargetUtilization."
            ),
        ));
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        for field in ["initialDelay", "period", "timeout"] {
            check_duration(&props, &format!("/{probe}/{field}"), &format!("properties.{probe}.{field}"))?;
        }
        for field in ["failureThreshold", "successThreshold"] {
            check_positive_int(&props, &format!("/{probe}/{field}"), &format!("properties.{probe}.{field}"))?;
        }
    }
    if let Some(timeout) = check_duration(
        &props,
        "/requestSettings/requestTimeout",
        "properties.requestSettings.requestTimeout",
    )? && timeout > MAX_REQUEST_TIMEOUT_SECS
    {
        return Err(ApiError::validation(
            "properties.requestSettings.requestTimeout",
            "ValueOutOfRange",
            format!(
                "requestTimeout may be at most {MAX_REQUEST_TIMEOUT_SECS} seconds for managed online endpoints; got {timeout}."
            ),
        ));
    }
    check_positive_int(
        &props,
        "/requestSettings/maxConcurrentRequestsPerInstance",
        "properties.requestSettings.maxConcurrentRequestsPerInstance",
    )?;
    if let Some(env) = props.get("environmentVariables").filter(|v| !v.is_null()) {
        let ok = env.as_object().is_some_and(|m| m.values().all(Value::is_string));
        if !ok {
            return Err(ApiError::validation(
                "properties.environmentVariables",
                "InvalidValue",
                "environmentVariables must map names to strings.",
            ));
        }
    }

    let now = Timestamp::now();
    let ws = ctx.ws.key();
    let mut world = ctx.shared.world();
    let e = world.endpoint(&ws, endpoint).ok_or_else(|| endpoint_not_found(endpoint))?;
    if e.prov.state == "Deleting" {
        return Err(busy("Online endpoint", endpoint, "Deleting"));
    }
    let existing = e.deployments.iter().find(|d| d.name.eq_ignore_ascii_case(name));
    if let Some(d) = existing
        && d.prov.busy()
    {
        return Err(busy("Online deployment", name, &d.prov.state));
    }
    let exists = existing.is_some();
    if !exists && e.deployments.len() >= MAX_DEPLOYMENTS {
        return Err(ApiError::bad_request(
            "QuotaExceeded",
            format!("Endpoint '{endpoint}' already has {MAX_DEPLOYMENTS} deployments, the most allowed."),
        ));
    }
    if !crate::models::reference_exists(&world, &ws, &ctx.ws.arm_id(), model) {
        return Err(ApiError::validation(
            "properties.model",
            "ModelNotFound",
            format!(
                "Model '{model}' was not found. Use the ARM id of a workspace model version or a registry asset id."
            ),
        ));
    }
    let size = world
        .vm_size(&ctx.ws.location, instance_type)
        .filter(|s| s.compute_types.contains(&"MIR"))
        .cloned()
        .ok_or_else(|| {
            ApiError::validation(
                "properties.instanceType",
                "InstanceTypeNotSupported",
                format!("Instance type '{instance_type}' is not supported for managed online deployments in '{}'.", ctx.ws.location),
            )
        })?;
    let quota_error = check_quota(&world, &ctx.ws, endpoint, name, &size, capacity);
    let failure = world.take_failure("deployment", name, Some(endpoint));
    let outcome = match (quota_error, failure) {
        (Some(err), _) | (None, Some(err)) => Outcome::Failed(err),
        (None, None) => Outcome::Succeeded,
    };
    let at = now + world.scaled(if exists { DEPLOYMENT_UPDATE } else { DEPLOYMENT_CREATE });
    let op =
        world.new_operation(&ctx.ws.subscription, &ctx.ws.location, OperationKind::AsyncOperation, now, None);
    let tags = body.get("tags").cloned().filter(|t| !t.is_null()).unwrap_or_else(|| json!({}));
    let sku = body.get("sku").cloned().filter(|s| !s.is_null()).unwrap_or_else(|| json!({"name": "Default"}));
    let mut stored = props.clone();
    if let Some(map) = stored.as_object_mut() {
        map.remove("provisioningState");
    }
    let e = world.endpoint_mut(&ws, endpoint).ok_or_else(|| endpoint_not_found(endpoint))?;
    match e.deployments.iter_mut().find(|d| d.name.eq_ignore_ascii_case(name)) {
        Some(d) => {
            d.location = location.to_string();
            d.tags = tags;
            d.sku = sku;
            // `properties.properties` is add-only.
            let mut merged =
                d.properties.get("properties").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
            if let (Some(have), Some(add)) =
                (merged.as_object_mut(), stored.get("properties").and_then(Value::as_object))
            {
                for (k, v) in add {
                    have.insert(k.clone(), v.clone());
                }
            }
            stored["properties"] = merged;
            d.properties = stored;
            d.instance_type = size.name.clone();
            d.capacity = capacity as u32;
            d.modified = now;
            d.prov.start("Updating", at, outcome, Some(op.clone()));
        }
        None => {
            let mut prov = Provisioning::settled("Creating");
            prov.start("Creating", at, outcome, Some(op.clone()));
            e.deployments.push(Deployment {
                name: name.to_string(),
                location: location.to_string(),
                tags,
                sku,
                properties: stored,
                instance_type: size.name.clone(),
                capacity: capacity as u32,
                prov,
                created: now,
                modified: now,
            });
        }
    }
    let e = world.endpoint(&ws, endpoint).ok_or_else(|| endpoint_not_found(endpoint))?;
    let d = find_deployment(e, name)?;
    let status = if exists { StatusCode::OK } else { StatusCode::CREATED };
    let response = json_response(status, &render_deployment(&ctx.ws, e, d));
    Ok(async_operation_headers(ctx, &world, response, &op))
}

/// The quota error a new or changed deployment runs into, if the subscription's limits are set and
/// the deployments that are not Failed would exceed them.
fn check_quota(
    world: &World,
    ws: &Workspace,
    endpoint: &str,
    name: &str,
    size: &crate::state::VmSize,
    capacity: u64,
) -> Option<ErrorInfo> {
    let quota = world.quotas.get(&ws.subscription.to_ascii_lowercase())?;
    let prefix = format!("{}/", ws.subscription.to_ascii_lowercase());
    let mut cores = 0u64;
    let mut instances = 0u64;
    for e in world.endpoints.iter().filter(|e| e.ws.starts_with(&prefix)) {
        for d in &e.deployments {
            let same = e.name.eq_ignore_ascii_case(endpoint) && d.name.eq_ignore_ascii_case(name);
            if same || d.prov.state == "Failed" {
                continue;
            }
            let vcpus = world.vm_size(&ws.location, &d.instance_type).map_or(0, |s| u64::from(s.vcpus));
            cores += vcpus * u64::from(d.capacity);
            instances += u64::from(d.capacity);
        }
    }
    let need = u64::from(size.vcpus) * capacity;
    if let Some(limit) = quota.cores
        && cores + need > limit
    {
        return Some(ErrorInfo::new(
            "OutOfQuota",
            format!(
                "Not enough quota available for {} in SubscriptionId {}. Current usage/limit: {cores}/{limit}. \
                 Additional needed: {need} Please see troubleshooting guide, available here: https://aka.ms/oe-tsg#error-outofquota",
                size.name, ws.subscription
            ),
        ));
    }
    if let Some(limit) = quota.instances
        && instances + capacity > limit
    {
        return Some(ErrorInfo::new(
            "OutOfQuota",
            format!(
                "Not enough instance quota in SubscriptionId {}. Current usage/limit: {instances}/{limit}. \
                 Additional needed: {capacity} Please see troubleshooting guide, available here: https://aka.ms/oe-tsg#error-outofquota",
                ws.subscription
            ),
        ));
    }
    None
}

fn patch_deployment(ctx: &Ctx, endpoint: &str, name: &str) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?;
    let capacity = match body.pointer("/sku/capacity") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::validation(
                "sku.capacity",
                "InvalidValue",
                format!("sku.capacity must be an integer of at least 1; got {v}."),
            )
        })?),
    };
    let now = Timestamp::now();
    let ws = ctx.ws.key();
    let mut world = ctx.shared.world();
    let e = world.endpoint(&ws, endpoint).ok_or_else(|| endpoint_not_found(endpoint))?;
    let d = find_deployment(e, name)?;
    if d.prov.busy() {
        return Err(busy("Online deployment", name, &d.prov.state));
    }
    let quota_error = match capacity {
        Some(c) => {
            let size = world.vm_size(&ctx.ws.location, &d.instance_type).cloned();
            size.and_then(|s| check_quota(&world, &ctx.ws, endpoint, name, &s, c))
        }
        None => None,
    };
    let at = now + world.scaled(DEPLOYMENT_SCALE);
    let op = world.new_operation(
        &ctx.ws.subscription,
        &ctx.ws.location,
        OperationKind::Location,
        now,
        Some(ResourceRef::Deployment {
            ws: ws.clone(),
            endpoint: endpoint.to_string(),
            deployment: name.to_string(),
        }),
    );
    let e = world.endpoint_mut(&ws, endpoint).ok_or_else(|| endpoint_not_found(endpoint))?;
    let d = e
        .deployments
        .iter_mut()
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| deployment_not_found(endpoint, name))?;
    if let Some(tags) = body.get("tags").filter(|t| t.is_object()) {
        d.tags = tags.clone();
    }
    if let Some(c) = capacity
        && quota_error.is_none()
    {
        d.capacity = c as u32;
    }
    d.modified = now;
    let outcome = quota_error.map_or(Outcome::Succeeded, Outcome::Failed);
    d.prov.start("Scaling", at, outcome, Some(op.clone()));
    let e = world.endpoint(&ws, endpoint).ok_or_else(|| endpoint_not_found(endpoint))?;
    let d = find_deployment(e, name)?;
    let response = json_response(StatusCode::ACCEPTED, &render_deployment(&ctx.ws, e, d));
    Ok(location_headers(ctx, &world, response, &op))
}

fn delete_deployment(ctx: &Ctx, endpoint: &str, name: &str) -> Result<Response, ApiError> {
    let now = Timestamp::now();
    let ws = ctx.ws.key();
    let mut world = ctx.shared.world();
    let e = world.endpoint(&ws, endpoint).ok_or_else(|| endpoint_not_found(endpoint))?;
    let d = find_deployment(e, name)?;
    if let Some(p) = &d.prov.pending
        && matches!(p.outcome, Outcome::Removed)
        && let Some(op) = p.operation.clone()
    {
        return Ok(location_headers(ctx, &world, empty(StatusCode::ACCEPTED), &op));
    }
    let live = e.traffic.iter().find(|(k, v)| k.eq_ignore_ascii_case(name) && **v > 0).map(|(_, v)| *v);
    let mirrored =
        e.mirror_traffic.iter().find(|(k, v)| k.eq_ignore_ascii_case(name) && **v > 0).map(|(_, v)| *v);
    if let Some(percent) = live.or(mirrored) {
        return Err(ApiError::validation(
            "name",
            "DeploymentHasTraffic",
            format!(
                "Deployment '{name}' cannot be deleted because it receives {percent}% of the traffic of endpoint \
                 '{endpoint}'. Set its traffic to 0 first."
            ),
        ));
    }
    if d.prov.busy() {
        return Err(busy("Online deployment", name, &d.prov.state));
    }
    let at = now + world.scaled(DEPLOYMENT_DELETE);
    let op = world.new_operation(&ctx.ws.subscription, &ctx.ws.location, OperationKind::Location, now, None);
    let e = world.endpoint_mut(&ws, endpoint).ok_or_else(|| endpoint_not_found(endpoint))?;
    let d = e
        .deployments
        .iter_mut()
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| deployment_not_found(endpoint, name))?;
    d.prov.start("Deleting", at, Outcome::Removed, Some(op.clone()));
    Ok(location_headers(ctx, &world, empty(StatusCode::ACCEPTED), &op))
}

fn get_logs(ctx: &Ctx, endpoint: &str, name: &str) -> Result<Response, ApiError> {
    let body = ctx.req.json()?;
    let container = body.get("containerType").and_then(Value::as_str).unwrap_or("InferenceServer");
    if !["InferenceServer", "StorageInitializer"].contains(&container) {
        return Err(ApiError::validation(
            "containerType",
            "InvalidEnumValue",
            format!(
                "The value '{container}' is not valid for containerType. Valid values: InferenceServer, StorageInitializer."
            ),
        ));
    }
    let tail = match body.get("tail") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            ApiError::validation("tail", "InvalidValue", "tail must be a non-negative integer.")
        })? as usize),
    };
    let world = ctx.shared.world();
    let e = world.endpoint(&ctx.ws.key(), endpoint).ok_or_else(|| endpoint_not_found(endpoint))?;
    let d = find_deployment(e, name)?;
    let model = model_label(d.properties.get("model").and_then(Value::as_str).unwrap_or(""));
    let lines: Vec<String> = match container {
        "StorageInitializer" => vec![
            format!("{} | Starting model download for {model}", d.created),
            format!(
                "{} | Downloaded model to /var/azureml-app/azureml-models/{}",
                d.created,
                model.replace(':', "/")
            ),
            format!("{} | Storage initializer finished", d.created),
        ],
        _ => {
            let mut l = vec![
                format!("{} | Azure ML Inferencing HTTP server starting", d.created),
                format!("{} | Loading MLflow model {model} (task chat-completion)", d.created),
            ];
            match (d.prov.state.as_str(), &d.prov.error) {
                ("Succeeded", _) => {
                    l.push(format!("{} | Model loaded; listening on port 31311", d.modified));
                    l.push(format!("{} | Readiness probe succeeded", d.modified));
                }
                ("Failed", Some(err)) => {
                    l.push(format!("{} | ERROR {}: {}", d.modified, err.code, err.message))
                }
                (state, _) => l.push(format!("{} | Deployment is {state}", d.modified)),
            }
            l
        }
    };
    let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
    let content: Vec<String> = lines.into_iter().skip(skip).collect();
    let mut text = content.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    Ok(ok(&json!({"content": text})))
}

/// Deterministic pick of a deployment by traffic weight, driven by a hash of the request body.
pub(crate) fn pick_by_traffic(traffic: &BTreeMap<String, u64>, body: &[u8]) -> Option<String> {
    let total: u64 = traffic.values().sum();
    if total == 0 {
        return None;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&digest.as_ref()[..8]);
    let mut roll = u64::from_le_bytes(seed) % total;
    for (name, weight) in traffic {
        if roll < *weight {
            return Some(name.clone());
        }
        roll -= weight;
    }
    None
}
