//! The ARM surface: authentication, api-version and throttling for every `/subscriptions/...` route,
//! the workspace, computes, VM sizes and long-running operation status; jobs, models and endpoints are
//! routed on to their own modules.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::auth::{Claims, require_arm};
use crate::http::{
    ApiError, Req, empty, json_response, method_not_allowed, ok, page, system_data, with_header,
};
use crate::state::{Compute, Operation, OperationKind, Outcome, Provisioning, Shared, Workspace, World};
use crate::throttle::Kind;
use crate::{endpoints, jobs, models, validate};

/// A request under a workspace, authenticated.
pub(crate) struct Ctx<'a> {
    pub shared: &'a Arc<Shared>,
    pub req: &'a Req,
    pub claims: Claims,
    pub ws: Workspace,
    /// Path segments after the workspace name (lower-case, for matching).
    pub rest: Vec<String>,
    /// The same segments as sent.
    pub rest_orig: Vec<String>,
}

impl Ctx<'_> {
    pub(crate) fn api_version(&self) -> &str {
        self.req.api_version().unwrap_or("2025-12-01")
    }

    /// The caller, as ARM's `systemData.createdBy`.
    pub(crate) fn caller(&self) -> String {
        self.claims.appid.clone()
    }
}

/// Routes `/subscriptions/...`.
pub(crate) fn handle_arm(shared: &Arc<Shared>, req: &Req) -> Response {
    let claims = match require_arm(shared, req) {
        Ok(claims) => claims,
        Err(err) => return err.into_response(),
    };
    if let Err(err) = validate::api_version(req) {
        return err.into_response();
    }
    let kind = Kind::of(&req.method);
    let subscription = req.segs.get(1).cloned().unwrap_or_default();
    let remaining = match shared.throttle.lock().take(&subscription, &claims.oid, kind) {
        Ok(remaining) => remaining,
        Err(retry_after) => {
            let kind_word = match kind {
                Kind::Reads => "read",
                Kind::Writes => "write",
                Kind::Deletes => "delete",
            };
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "SubscriptionRequestsThrottled",
                format!(
                    "Number of '{kind_word}' requests for subscription '{subscription}' actor '{}' exceeded. \
                     Please try again after '{retry_after}' seconds after the last request time of '{}'. \
                     See https://aka.ms/ARMThrottling for more details.",
                    claims.oid,
                    Timestamp::now()
                ),
            )
            .header(axum::http::header::RETRY_AFTER, retry_after.to_string())
            .header(axum::http::HeaderName::from_static(kind.header()), "0")
            .into_response();
        }
    };
    let response = crate::http::respond(route(shared, req, claims));
    with_header(response, kind.header(), &remaining.to_string())
}

fn route(shared: &Arc<Shared>, req: &Req, claims: Claims) -> Result<Response, ApiError> {
    let l: Vec<&str> = req.lower.iter().map(String::as_str).collect();
    let s = &req.segs;
    match l.as_slice() {
        ["subscriptions", _, "providers", "microsoft.machinelearningservices", "locations", _, "vmsizes"] => {
            only(req, &Method::GET)?;
            vm_sizes(shared, &s[5])
        }
        [
            "subscriptions",
            _,
            "providers",
            "microsoft.machinelearningservices",
            "locations",
            _,
            "mfeoperationsstatus",
            _,
        ] => {
            only(req, &Method::GET)?;
            operation_status(shared, &s[7])
        }
        [
            "subscriptions",
            _,
            "providers",
            "microsoft.machinelearningservices",
            "locations",
            _,
            "mfeoperationresults",
            _,
        ] => {
            only(req, &Method::GET)?;
            operation_result(shared, req, &s[7])
        }
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.machinelearningservices",
            "workspaces",
            _,
            rest @ ..,
        ] => {
            let ws = shared.world().workspace(&s[1], &s[3], &s[7]).cloned().ok_or_else(|| {
                ApiError::not_found(format!(
                    "The Resource 'Microsoft.MachineLearningServices/workspaces/{}' under resource group '{}' was \
                     not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                    s[7], s[3]
                ))
            })?;
            let ctx = Ctx {
                shared,
                req,
                claims,
                ws,
                rest: rest.iter().map(|r| r.to_string()).collect(),
                rest_orig: s[8..].to_vec(),
            };
            let first = ctx.rest.first().map(String::as_str);
            match first {
                None => {
                    only(req, &Method::GET)?;
                    Ok(ok(&render_workspace(shared, &ctx.ws)))
                }
                Some("computes") => computes(&ctx),
                Some("jobs") => jobs::handle(&ctx),
                Some("models") => models::handle(&ctx),
                Some("onlineendpoints") => endpoints::handle(&ctx),
                Some(other) => Err(invalid_resource_type(req, &format!("workspaces/{other}"))),
            }
        }
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.machinelearningservices",
            kind,
            ..,
        ] => Err(invalid_resource_type(req, kind)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NoRegisteredProviderFound",
            format!("No registered resource provider found for the request URI '{}'.", req.path),
        )),
    }
}

/// ARM's answer for a resource type the provider does not have.
pub(crate) fn invalid_resource_type(req: &Req, kind: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        format!(
            "The resource type '{kind}' could not be found in the namespace 'Microsoft.MachineLearningServices' for \
             api version '{}'.",
            req.api_version().unwrap_or("")
        ),
    )
}

/// Refuses any method but `method`.
pub(crate) fn only(req: &Req, method: &Method) -> Result<(), ApiError> {
    if req.method == *method { Ok(()) } else { Err(method_not_allowed(req)) }
}

fn render_workspace(shared: &Shared, ws: &Workspace) -> Value {
    let host = shared.https_url.trim_start_matches("https://");
    json!({
        "id": ws.arm_id(),
        "name": ws.name,
        "type": "Microsoft.MachineLearningServices/workspaces",
        "location": ws.location,
        "tags": {},
        "kind": "Default",
        "identity": {"type": "SystemAssigned", "principalId": "00000000-0000-0000-0000-0000000000ee", "tenantId": shared.world().tenant_id},
        "sku": {"name": "Basic", "tier": "Basic"},
        "properties": {
            "friendlyName": ws.name,
            "description": "",
            "workspaceId": ws.workspace_id,
            "provisioningState": "Succeeded",
            "discoveryUrl": format!("{}/discovery", shared.https_url),
            "mlFlowTrackingUri": format!("azureml://{host}/mlflow/v1.0{}", ws.arm_id()),
            "storageAccount": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/st{}", ws.subscription, ws.resource_group, ws.name.replace('-', "")),
            "keyVault": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/kv-{}", ws.subscription, ws.resource_group, ws.name),
            "applicationInsights": null,
            "containerRegistry": null,
            "hbiWorkspace": false,
            "publicNetworkAccess": "Enabled",
            "v1LegacyMode": false,
            "tenantId": shared.world().tenant_id,
        },
        "systemData": system_data(ws.created, ws.created, "emulator"),
    })
}

fn vm_sizes(shared: &Arc<Shared>, location: &str) -> Result<Response, ApiError> {
    let world = shared.world();
    let sizes = world.vm_sizes.get(&location.to_ascii_lowercase()).cloned().unwrap_or_default();
    if sizes.is_empty() {
        return Err(ApiError::validation(
            "location",
            "NoRegisteredProviderFound",
            format!("The location '{location}' is not available for resource type 'locations/vmSizes'."),
        ));
    }
    let value: Vec<Value> = sizes
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "family": s.family,
                "vCPUs": s.vcpus,
                "gpus": s.gpus,
                "osVhdSizeMB": 1047552,
                "maxResourceVolumeMB": 344064,
                "memoryGB": s.memory_gb,
                "lowPriorityCapable": s.low_priority_capable,
                "premiumIO": s.premium_io,
                "estimatedVMPrices": {"billingCurrency": "USD", "unitOfMeasure": "OneHour", "values": [
                    {"retailPrice": s.price, "osType": "Linux", "vmTier": "Standard"},
                    {"retailPrice": (s.price * 0.2 * 1000.0).round() / 1000.0, "osType": "Linux", "vmTier": "LowPriority"},
                ]},
                "supportedComputeTypes": s.compute_types,
            })
        })
        .collect();
    Ok(ok(&json!({ "value": value })))
}

/// The `Azure-AsyncOperation` status of an operation.
fn operation_status(shared: &Arc<Shared>, id: &str) -> Result<Response, ApiError> {
    let world = shared.world();
    let op = find_operation(&world, id)?;
    let mut body = json!({
        "id": format!("/subscriptions/{}/providers/Microsoft.MachineLearningServices/locations/{}/mfeOperationsStatus/{}", op.subscription, op.location, op.id),
        "name": op.id,
        "status": op.status,
        "startTime": op.start.to_string(),
    });
    if let Some(end) = op.end {
        body["endTime"] = json!(end.to_string());
        body["percentComplete"] = json!(100.0);
    }
    if let Some(err) = &op.error {
        body["error"] = err.to_json();
    }
    let mut response = ok(&body);
    if op.end.is_none() {
        response = with_header(response, "retry-after", &world.retry_after(10.0));
    }
    Ok(response)
}

/// The `Location` result of an operation: 202 while running, then the result, or the error.
fn operation_result(shared: &Arc<Shared>, req: &Req, id: &str) -> Result<Response, ApiError> {
    let world = shared.world();
    let op = find_operation(&world, id)?;
    match op.status.as_str() {
        "InProgress" => {
            let response = empty(StatusCode::ACCEPTED);
            let response =
                with_header(response, "location", &format!("{}{}?{}", req.base, req.path, req.raw_query));
            Ok(with_header(response, "retry-after", &world.retry_after(10.0)))
        }
        "Succeeded" => Ok(match &op.result {
            Some(result) => ok(result),
            None => empty(StatusCode::NO_CONTENT),
        }),
        _ => {
            let err = op
                .error
                .clone()
                .unwrap_or_else(|| crate::state::ErrorInfo::new("Canceled", "The operation was canceled."));
            Ok(json_response(StatusCode::BAD_REQUEST, &json!({"error": err.to_json()})))
        }
    }
}

fn find_operation<'a>(world: &'a World, id: &str) -> Result<&'a Operation, ApiError> {
    world.operations.get(id).ok_or_else(|| ApiError::not_found(format!("Operation '{id}' was not found.")))
}

/// Adds the `Azure-AsyncOperation` headers of a started PUT.
pub(crate) fn async_operation_headers(ctx: &Ctx, world: &World, response: Response, op: &str) -> Response {
    let url = format!(
        "{}/subscriptions/{}/providers/Microsoft.MachineLearningServices/locations/{}/mfeOperationsStatus/{op}?api-version={}",
        ctx.req.base,
        ctx.ws.subscription,
        ctx.ws.location,
        ctx.api_version()
    );
    let response = with_header(response, "azure-asyncoperation", &url);
    let response = with_header(response, "x-ms-async-operation-timeout", &world.operation_timeout());
    with_header(response, "retry-after", &world.retry_after(10.0))
}

/// Adds the `Location` headers of a started PATCH, DELETE or POST.
pub(crate) fn location_headers(ctx: &Ctx, world: &World, response: Response, op: &str) -> Response {
    let url = format!(
        "{}/subscriptions/{}/providers/Microsoft.MachineLearningServices/locations/{}/mfeOperationResults/{op}?api-version={}",
        ctx.req.base,
        ctx.ws.subscription,
        ctx.ws.location,
        ctx.api_version()
    );
    let response = with_header(response, "location", &url);
    let response = with_header(response, "x-ms-async-operation-timeout", &world.operation_timeout());
    with_header(response, "retry-after", &world.retry_after(10.0))
}

fn computes(ctx: &Ctx) -> Result<Response, ApiError> {
    let req = ctx.req;
    match ctx.rest.len() {
        1 => {
            only(req, &Method::GET)?;
            let world = ctx.shared.world();
            let items = world
                .computes
                .iter()
                .filter(|c| c.ws == ctx.ws.key())
                .map(|c| render_compute(&ctx.ws, c))
                .collect();
            Ok(ok(&page(req, items)))
        }
        2 => {
            let name = ctx.rest_orig[1].clone();
            match req.method {
                Method::GET => {
                    let world = ctx.shared.world();
                    let c = world.compute(&ctx.ws.key(), &name).ok_or_else(|| compute_not_found(&name))?;
                    Ok(ok(&render_compute(&ctx.ws, c)))
                }
                Method::PUT => put_compute(ctx, &name),
                Method::DELETE => delete_compute(ctx, &name),
                _ => Err(method_not_allowed(req)),
            }
        }
        _ => Err(invalid_resource_type(req, "workspaces/computes")),
    }
}

fn compute_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Compute '{name}' was not found in the workspace."))
}

pub(crate) fn render_compute(ws: &Workspace, c: &Compute) -> Value {
    let errors = c.prov.error.as_ref().map(|e| json!([{"error": e.to_json()}]));
    json!({
        "id": format!("{}/computes/{}", ws.arm_id(), c.name),
        "name": c.name,
        "type": "Microsoft.MachineLearningServices/workspaces/computes",
        "location": c.location,
        "tags": c.tags,
        "identity": null,
        "systemData": system_data(c.created, c.modified, "emulator"),
        "properties": {
            "computeType": "AmlCompute",
            "computeLocation": c.location,
            "provisioningState": c.prov.state,
            "provisioningErrors": errors,
            "description": c.description,
            "createdOn": c.created.to_string(),
            "modifiedOn": c.modified.to_string(),
            "resourceId": null,
            "isAttachedCompute": false,
            "disableLocalAuth": true,
            "properties": {
                "vmSize": c.vm_size,
                "vmPriority": c.vm_priority,
                "scaleSettings": {
                    "maxNodeCount": c.max_nodes,
                    "minNodeCount": c.min_nodes,
                    "nodeIdleTimeBeforeScaleDown": c.idle,
                },
                "allocationState": "Steady",
                "allocationStateTransitionTime": c.modified.to_string(),
                "currentNodeCount": c.min_nodes,
                "targetNodeCount": c.min_nodes,
                "nodeStateCounts": {"idleNodeCount": c.min_nodes, "runningNodeCount": 0, "preparingNodeCount": 0,
                    "unusableNodeCount": 0, "leavingNodeCount": 0, "preemptedNodeCount": 0},
                "errors": null,
                "osType": "Linux",
                "enableNodePublicIp": true,
                "remoteLoginPortPublicAccess": "NotSpecified",
                "isolatedNetwork": false,
                "subnet": null,
                "userAccountCredentials": null,
            },
        },
    })
}

fn put_compute(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    validate::compute_name(name)?;
    let body = ctx.req.json_object()?;
    let location = body.get("location").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request("LocationRequired", "The location property is required for this definition.")
    })?;
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    let compute_type = props.get("computeType").and_then(Value::as_str).ok_or_else(|| {
        ApiError::validation("properties.computeType", "Required", "The computeType field is required.")
    })?;
    if compute_type != "AmlCompute" {
        return Err(ApiError::validation(
            "properties.computeType",
            "NotSupported",
            format!(
                "Compute type '{compute_type}' cannot be created here; only AmlCompute clusters are supported."
            ),
        ));
    }
    let inner = props.get("properties").cloned().unwrap_or(Value::Null);
    let vm_size = inner.get("vmSize").and_then(Value::as_str).ok_or_else(|| {
        ApiError::validation("properties.properties.vmSize", "Required", "The vmSize field is required.")
    })?;
    let vm_priority = inner.get("vmPriority").and_then(Value::as_str).unwrap_or("Dedicated");
    if !["Dedicated", "LowPriority"].contains(&vm_priority) {
        return Err(ApiError::validation(
            "properties.properties.vmPriority",
            "InvalidEnumValue",
            format!(
                "The value '{vm_priority}' is not valid for vmPriority. Valid values: Dedicated, LowPriority."
            ),
        ));
    }
    let scale = inner.get("scaleSettings").cloned().unwrap_or(Value::Null);
    let max_nodes = scale.get("maxNodeCount").and_then(Value::as_u64).ok_or_else(|| {
        ApiError::validation(
            "properties.properties.scaleSettings.maxNodeCount",
            "Required",
            "scaleSettings.maxNodeCount is required and must be a non-negative integer.",
        )
    })?;
    let min_nodes = match scale.get("minNodeCount") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(|| {
            ApiError::validation(
                "properties.properties.scaleSettings.minNodeCount",
                "InvalidValue",
                "scaleSettings.minNodeCount must be a non-negative integer.",
            )
        })?,
    };
    if min_nodes > max_nodes {
        return Err(ApiError::validation(
            "properties.properties.scaleSettings",
            "InvalidValue",
            format!("minNodeCount ({min_nodes}) cannot be greater than maxNodeCount ({max_nodes})."),
        ));
    }
    let idle =
        scale.get("nodeIdleTimeBeforeScaleDown").and_then(Value::as_str).unwrap_or("PT120S").to_string();
    if validate::iso_duration_secs(&idle).is_none() {
        return Err(ApiError::validation(
            "properties.properties.scaleSettings.nodeIdleTimeBeforeScaleDown",
            "InvalidValue",
            format!("'{idle}' is not an ISO 8601 duration."),
        ));
    }
    let now = Timestamp::now();
    let mut world = ctx.shared.world();
    let Some(size) = world.vm_size(&ctx.ws.location, vm_size) else {
        return Err(ApiError::validation(
            "properties.properties.vmSize",
            "InvalidVmSize",
            format!("VM size '{vm_size}' is not supported in region '{}'.", ctx.ws.location),
        ));
    };
    if !size.compute_types.contains(&"AmlCompute") {
        return Err(ApiError::validation(
            "properties.properties.vmSize",
            "InvalidVmSize",
            format!("VM size '{vm_size}' is not supported for AmlCompute in region '{}'.", ctx.ws.location),
        ));
    }
    let vm_size = size.name.clone();
    let ws_key = ctx.ws.key();
    if let Some(existing) = world.compute(&ws_key, name) {
        if existing.prov.busy() {
            return Err(ApiError::conflict(
                "Conflict",
                format!(
                    "Compute '{name}' has an operation in progress ({}); retry when it ends.",
                    existing.prov.state
                ),
            ));
        }
        if !existing.vm_size.eq_ignore_ascii_case(&vm_size) {
            return Err(ApiError::validation(
                "properties.properties.vmSize",
                "UpdateNotSupported",
                format!(
                    "The vmSize of compute '{name}' cannot be changed from '{}' to '{vm_size}'. Delete and recreate the cluster.",
                    existing.vm_size
                ),
            ));
        }
    }
    let exists = world.compute(&ws_key, name).is_some();
    let failure = world.take_failure("compute", name, None);
    let at = now + world.scaled(if exists { 30.0 } else { 120.0 });
    let op =
        world.new_operation(&ctx.ws.subscription, &ctx.ws.location, OperationKind::AsyncOperation, now, None);
    let outcome = failure.map_or(Outcome::Succeeded, Outcome::Failed);
    let description = props.get("description").and_then(Value::as_str).map(str::to_string);
    let tags = body.get("tags").cloned().unwrap_or_else(|| json!({}));
    let location = location.to_string();
    if exists {
        let c = world
            .computes
            .iter_mut()
            .find(|c| c.ws == ws_key && c.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| compute_not_found(name))?;
        c.min_nodes = min_nodes as u32;
        c.max_nodes = max_nodes as u32;
        c.idle = idle;
        c.vm_priority = vm_priority.into();
        c.description = description;
        c.tags = tags;
        c.modified = now;
        c.prov.start("Updating", at, outcome, Some(op.clone()));
    } else {
        let mut prov = Provisioning::settled("Creating");
        prov.start("Creating", at, outcome, Some(op.clone()));
        world.computes.push(Compute {
            ws: ws_key.clone(),
            name: name.to_string(),
            location,
            vm_size,
            vm_priority: vm_priority.into(),
            min_nodes: min_nodes as u32,
            max_nodes: max_nodes as u32,
            idle,
            description,
            tags,
            prov,
            created: now,
            modified: now,
        });
    }
    let c = world.compute(&ws_key, name).ok_or_else(|| compute_not_found(name))?;
    let status = if exists { StatusCode::OK } else { StatusCode::CREATED };
    let response = json_response(status, &render_compute(&ctx.ws, c));
    Ok(async_operation_headers(ctx, &world, response, &op))
}

fn delete_compute(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    let now = Timestamp::now();
    let mut world = ctx.shared.world();
    let ws_key = ctx.ws.key();
    let Some(existing) = world.compute(&ws_key, name) else {
        return Err(compute_not_found(name));
    };
    if existing.prov.pending.as_ref().is_some_and(|p| matches!(p.outcome, Outcome::Removed)) {
        return Ok(empty(StatusCode::ACCEPTED));
    }
    let action = ctx.req.q("underlyingResourceAction").unwrap_or("Delete");
    if !["delete", "detach"].contains(&action.to_ascii_lowercase().as_str()) {
        return Err(ApiError::validation(
            "underlyingResourceAction",
            "InvalidEnumValue",
            format!(
                "The value '{action}' is not valid for underlyingResourceAction. Valid values: Delete, Detach."
            ),
        ));
    }
    let at = now + world.scaled(60.0);
    let op = world.new_operation(&ctx.ws.subscription, &ctx.ws.location, OperationKind::Location, now, None);
    if let Some(c) = world.computes.iter_mut().find(|c| c.ws == ws_key && c.name.eq_ignore_ascii_case(name)) {
        c.prov.start("Deleting", at, Outcome::Removed, Some(op.clone()));
    }
    Ok(location_headers(ctx, &world, empty(StatusCode::ACCEPTED), &op))
}
