//! Workspace models (ARM): model containers and versions; a version made from a job output requires
//! the job to have completed with that output.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::http::{ApiError, json_response, method_not_allowed, ok, page, system_data};
use crate::state::{Model, ModelVersion, World};
use crate::validate;
use crate::workspace::{Ctx, invalid_resource_type, only};

/// Model types the service takes (the SDK's spellings and the spec examples' ones).
const MODEL_TYPES: [&str; 6] =
    ["mlflow_model", "custom_model", "triton_model", "MLFlowModel", "CustomModel", "TritonModel"];
/// Fields a re-PUT of an existing version may change.
const MUTABLE: [&str; 6] = ["description", "tags", "properties", "stage", "isArchived", "provisioningState"];

/// Routes `.../workspaces/{ws}/models...`.
pub(crate) fn handle(ctx: &Ctx) -> Result<Response, ApiError> {
    let req = ctx.req;
    let ws = ctx.ws.key();
    match ctx.rest.len() {
        1 => {
            only(req, &Method::GET)?;
            let world = ctx.shared.world();
            let items =
                world.models.iter().filter(|m| m.ws == ws).map(|m| render_container(ctx, m)).collect();
            Ok(ok(&page(req, items)))
        }
        2 => {
            only(req, &Method::GET)?;
            let world = ctx.shared.world();
            let model = find(&world, &ws, &ctx.rest_orig[1])?;
            Ok(ok(&render_container(ctx, model)))
        }
        3 if ctx.rest[2] == "versions" => {
            only(req, &Method::GET)?;
            let world = ctx.shared.world();
            let model = find(&world, &ws, &ctx.rest_orig[1])?;
            let view = req.q("listViewType").unwrap_or("ActiveOnly").to_ascii_lowercase();
            let mut versions: Vec<&ModelVersion> = model
                .versions
                .iter()
                .filter(|v| {
                    let archived = v.properties["isArchived"].as_bool().unwrap_or(false);
                    match view.as_str() {
                        "archivedonly" => archived,
                        "all" => true,
                        _ => !archived,
                    }
                })
                .collect();
            let order = req.q("$orderBy").unwrap_or("createdtime desc").to_ascii_lowercase();
            versions.sort_by_key(|v| v.created);
            if !order.ends_with("asc") {
                versions.reverse();
            }
            let items = versions.into_iter().map(|v| render_version(ctx, model, v)).collect();
            Ok(ok(&page(req, items)))
        }
        4 if ctx.rest[2] == "versions" => {
            let (name, version) = (ctx.rest_orig[1].clone(), ctx.rest_orig[3].clone());
            match req.method {
                Method::GET => {
                    let world = ctx.shared.world();
                    let model = find(&world, &ws, &name)?;
                    let v = model
                        .versions
                        .iter()
                        .find(|v| v.version == version)
                        .ok_or_else(|| version_not_found(&name, &version))?;
                    Ok(ok(&render_version(ctx, model, v)))
                }
                Method::PUT => put_version(ctx, &name, &version),
                Method::DELETE => {
                    let mut world = ctx.shared.world();
                    let model = world
                        .models
                        .iter_mut()
                        .find(|m| m.ws == ws && m.name == name)
                        .ok_or_else(|| version_not_found(&name, &version))?;
                    let before = model.versions.len();
                    model.versions.retain(|v| v.version != version);
                    if model.versions.len() == before {
                        return Err(version_not_found(&name, &version));
                    }
                    Ok(crate::http::empty(StatusCode::OK))
                }
                _ => Err(method_not_allowed(req)),
            }
        }
        _ => Err(invalid_resource_type(req, "workspaces/models")),
    }
}

fn find<'a>(world: &'a World, ws: &str, name: &str) -> Result<&'a Model, ApiError> {
    world
        .models
        .iter()
        .find(|m| m.ws == ws && m.name == name)
        .ok_or_else(|| ApiError::not_found(format!("Model container with name: {name} not found.")))
}

fn version_not_found(name: &str, version: &str) -> ApiError {
    ApiError::not_found(format!("Model {name}:{version} was not found in the workspace."))
}

fn render_container(ctx: &Ctx, model: &Model) -> Value {
    let latest = model.versions.iter().max_by_key(|v| v.created);
    let created = model.versions.iter().map(|v| v.created).min().unwrap_or_else(Timestamp::now);
    json!({
        "id": format!("{}/models/{}", ctx.ws.arm_id(), model.name),
        "name": model.name,
        "type": "Microsoft.MachineLearningServices/workspaces/models",
        "properties": {
            "description": null,
            "tags": {},
            "properties": {},
            "isArchived": false,
            "latestVersion": latest.map(|v| v.version.clone()),
            "nextVersion": model.versions.iter().filter_map(|v| v.version.parse::<u64>().ok()).max().map(|n| (n + 1).to_string()),
            "provisioningState": "Succeeded",
        },
        "systemData": system_data(created, latest.map_or(created, |v| v.modified), &ctx.caller()),
    })
}

/// The ARM id of a workspace model version.
pub(crate) fn version_id(ws_arm_id: &str, name: &str, version: &str) -> String {
    format!("{ws_arm_id}/models/{name}/versions/{version}")
}

fn render_version(ctx: &Ctx, model: &Model, v: &ModelVersion) -> Value {
    json!({
        "id": version_id(&ctx.ws.arm_id(), &model.name, &v.version),
        "name": v.version,
        "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
        "properties": v.properties,
        "systemData": system_data(v.created, v.modified, &ctx.caller()),
    })
}

fn put_version(ctx: &Ctx, name: &str, version: &str) -> Result<Response, ApiError> {
    validate::asset_name("model", name)?;
    validate::asset_name("model version", version)?;
    let body = ctx.req.json_object()?;
    let mut props = match body.get("properties") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => return Err(ApiError::validation("properties", "Required", "The properties field is required.")),
    };
    let model_type = props.get("modelType").and_then(Value::as_str).unwrap_or("custom_model").to_string();
    if !MODEL_TYPES.contains(&model_type.as_str()) {
        return Err(ApiError::validation(
            "properties.modelType",
            "InvalidEnumValue",
            format!(
                "The value '{model_type}' is not valid for modelType. Valid values: mlflow_model, custom_model, triton_model."
            ),
        ));
    }
    let uri = props
        .get("modelUri")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::validation("properties.modelUri", "Required", "The modelUri field is required.")
        })?;
    let now = Timestamp::now();
    let ws = ctx.ws.key();
    let mut world = ctx.shared.world();
    let job_name = check_uri(&world, &ws, &uri)?;

    props["modelType"] = json!(model_type);
    props["provisioningState"] = json!("Succeeded");
    for (key, default) in [
        ("isAnonymous", json!(false)),
        ("isArchived", json!(false)),
        ("tags", json!({})),
        ("properties", json!({})),
        ("flavors", json!({})),
    ] {
        if props.get(key).is_none_or(Value::is_null) {
            props[key] = default;
        }
    }
    if props.get("jobName").is_none_or(Value::is_null)
        && let Some(job) = job_name
    {
        // Lineage: the service records the producing job of an azureml://jobs/... URI.
        props["jobName"] = json!(job);
    }

    let existing = world
        .models
        .iter()
        .find(|m| m.ws == ws && m.name == name)
        .and_then(|m| m.versions.iter().find(|v| v.version == version))
        .cloned();
    if let Some(existing) = existing {
        let fixed = |p: &Value| {
            let mut p = p.clone();
            if let Some(map) = p.as_object_mut() {
                for key in MUTABLE {
                    map.remove(key);
                }
                map.remove("jobName");
                map.remove("flavors");
                map.remove("isAnonymous");
            }
            p
        };
        if fixed(&existing.properties) != fixed(&props) {
            return Err(ApiError::conflict(
                "UserError",
                format!(
                    "Model {name}:{version} already exists with a different modelUri or modelType. Model versions are \
                     immutable; register a new version instead."
                ),
            )
            .target("version"));
        }
        let model = world
            .models
            .iter_mut()
            .find(|m| m.ws == ws && m.name == name)
            .ok_or_else(|| version_not_found(name, version))?;
        let v = model
            .versions
            .iter_mut()
            .find(|v| v.version == version)
            .ok_or_else(|| version_not_found(name, version))?;
        if v.properties != props {
            v.properties = props;
            v.modified = now;
        }
        let model = find(&world, &ws, name)?;
        let v = model
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| version_not_found(name, version))?;
        return Ok(ok(&render_version(ctx, model, v)));
    }

    let version_entry =
        ModelVersion { version: version.to_string(), properties: props, created: now, modified: now };
    match world.models.iter_mut().find(|m| m.ws == ws && m.name == name) {
        Some(model) => model.versions.push(version_entry),
        None => {
            world.models.push(Model { ws: ws.clone(), name: name.to_string(), versions: vec![version_entry] })
        }
    }
    let model = find(&world, &ws, name)?;
    let v = model
        .versions
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| version_not_found(name, version))?;
    Ok(json_response(StatusCode::CREATED, &render_version(ctx, model, v)))
}

/// Checks a model URI; for `azureml://jobs/{job}/outputs/{output}[/paths/...]` the job must exist, have
/// completed, and declare that output. Returns the job name for lineage.
fn check_uri(world: &World, ws: &str, uri: &str) -> Result<Option<String>, ApiError> {
    if let Some(rest) = uri.strip_prefix("azureml://jobs/") {
        let parts: Vec<&str> = rest.split('/').collect();
        let (job_name, output) = match parts.as_slice() {
            [job, "outputs", output] | [job, "outputs", output, "paths", ..] => (*job, *output),
            _ => {
                return Err(ApiError::validation(
                    "properties.modelUri",
                    "InvalidUri",
                    format!(
                        "'{uri}' is not a job output URI (azureml://jobs/<job>/outputs/<output>[/paths/<path>])."
                    ),
                ));
            }
        };
        let job = world.job(ws, job_name).ok_or_else(|| {
            ApiError::validation(
                "properties.modelUri",
                "JobNotFound",
                format!("Job '{job_name}' of modelUri '{uri}' was not found."),
            )
        })?;
        let status = job.status_at(Timestamp::now());
        if status != "Completed" {
            return Err(ApiError::validation(
                "properties.modelUri",
                "JobNotCompleted",
                format!(
                    "Job '{job_name}' is {status}; a model can be registered from its outputs only after it completed."
                ),
            ));
        }
        if !job.outputs.iter().any(|o| o == output) {
            return Err(ApiError::validation(
                "properties.modelUri",
                "JobOutputNotFound",
                format!("Job '{job_name}' has no output named '{output}'."),
            ));
        }
        return Ok(Some(job_name.to_string()));
    }
    if let Some(exists) = crate::registry::model_exists(world, uri) {
        return if exists {
            Ok(None)
        } else {
            Err(ApiError::validation(
                "properties.modelUri",
                "AssetNotFound",
                format!("Model '{uri}' does not exist."),
            ))
        };
    }
    let known = ["azureml://", "https://", "http://", "wasbs://", "abfss://", "runs:/", "azureml:"];
    if known.iter().any(|p| uri.starts_with(p)) {
        Ok(None)
    } else {
        Err(ApiError::validation(
            "properties.modelUri",
            "InvalidUri",
            format!("'{uri}' is not a supported model URI."),
        ))
    }
}

/// Whether a deployment's `model` reference exists: a workspace model version (ARM id or
/// `azureml:name:version`) or a registry model version.
pub(crate) fn reference_exists(world: &World, ws: &str, ws_arm_id: &str, reference: &str) -> bool {
    if let Some(exists) = crate::registry::model_exists(world, reference) {
        return exists;
    }
    let (name, version) = if let Some(short) = reference.strip_prefix("azureml:") {
        match short.split_once(':') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => return false,
        }
    } else {
        let prefix = format!("{}/models/", ws_arm_id).to_ascii_lowercase();
        let lower = reference.to_ascii_lowercase();
        let Some(_) = lower.strip_prefix(&prefix) else { return false };
        let rest = &reference[prefix.len()..];
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            [n, "versions", v] => (n.to_string(), v.to_string()),
            _ => return false,
        }
    };
    world
        .models
        .iter()
        .any(|m| m.ws == ws && m.name == name && m.versions.iter().any(|v| v.version == version))
}
