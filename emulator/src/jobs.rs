//! Workspace jobs (ARM): pipeline-job submission validated against the registry component, a status
//! lifecycle over scaled time, cancel, delete and list.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::http::{ApiError, json_response, method_not_allowed, ok, page, system_data};
use crate::state::{ErrorInfo, Job, OperationKind, World};
use crate::validate;
use crate::workspace::{Ctx, invalid_resource_type, location_headers, only};

/// How long each status lasts in Azure, in seconds, before the next one.
const QUEUED_AFTER: f64 = 5.0;
const PREPARING_AFTER: f64 = 60.0;
const RUNNING_AFTER: f64 = 120.0;
/// The pipeline's Running phase (its five steps run one after another inside it).
pub(crate) const RUNNING_FOR: f64 = 1800.0;
const FINALIZING_FOR: f64 = 60.0;

/// Fields of `properties` a re-PUT may change on an existing job.
const MUTABLE: [&str; 4] = ["description", "displayName", "tags", "properties"];

/// Routes `.../workspaces/{ws}/jobs...`.
pub(crate) fn handle(ctx: &Ctx) -> Result<Response, ApiError> {
    let req = ctx.req;
    match ctx.rest.len() {
        1 => {
            only(req, &Method::GET)?;
            list(ctx)
        }
        2 => {
            let name = ctx.rest_orig[1].clone();
            match req.method {
                Method::GET => {
                    let world = ctx.shared.world();
                    let job = world.job(&ctx.ws.key(), &name).ok_or_else(|| job_not_found(&name))?;
                    Ok(ok(&render(ctx, job)))
                }
                Method::PUT => put(ctx, &name),
                Method::DELETE => delete(ctx, &name),
                _ => Err(method_not_allowed(req)),
            }
        }
        3 if ctx.rest[2] == "cancel" => {
            only(req, &Method::POST)?;
            cancel(ctx, &ctx.rest_orig[1])
        }
        _ => Err(invalid_resource_type(req, "workspaces/jobs")),
    }
}

fn job_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Job '{name}' was not found in the workspace."))
}

fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let world = ctx.shared.world();
    let job_type = ctx.req.q("jobType");
    let mut jobs: Vec<&Job> = world
        .jobs
        .iter()
        .filter(|j| j.ws == ctx.ws.key())
        .filter(|j| {
            job_type
                .is_none_or(|t| j.properties["jobType"].as_str().is_some_and(|jt| jt.eq_ignore_ascii_case(t)))
        })
        .collect();
    jobs.sort_by_key(|j| std::cmp::Reverse(j.created));
    let items = jobs.into_iter().map(|j| render(ctx, j)).collect();
    Ok(ok(&page(ctx.req, items)))
}

/// The job as ARM returns it.
pub(crate) fn render(ctx: &Ctx, job: &Job) -> Value {
    let now = Timestamp::now();
    let ws = &ctx.ws;
    let host = ctx.shared.https_url.trim_start_matches("https://");
    let mut props = job.properties.clone();
    props["status"] = json!(job.status_at(now));
    props["isArchived"] = json!(false);
    props["experimentName"] = json!(experiment_name(&job.properties));
    let mut outputs = props.get("outputs").cloned().unwrap_or_else(|| json!({}));
    if let Some(map) = outputs.as_object_mut() {
        for (name, output) in map.iter_mut() {
            if output.get("uri").is_none_or(Value::is_null) {
                output["uri"] = json!(format!("azureml://jobs/{}/outputs/{name}", job.name));
            }
            if output.get("mode").is_none_or(Value::is_null) {
                output["mode"] = json!("ReadWriteMount");
            }
        }
    }
    props["outputs"] = outputs;
    // The service leaves the tenant out of the studio URL; the SDK appends `&tid=` from its token.
    props["services"] = json!({
        "Studio": {
            "jobServiceType": "Studio",
            "endpoint": format!(
                "https://ml.azure.com/runs/{}?wsid=/subscriptions/{}/resourcegroups/{}/workspaces/{}",
                job.name, ws.subscription, ws.resource_group, ws.name
            ),
            "status": null,
        },
        "Tracking": {
            "jobServiceType": "Tracking",
            "endpoint": format!("azureml://{host}/mlflow/v1.0{}?", ws.arm_id()),
            "status": null,
        },
    });
    let mut system = props.get("properties").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    system["azureml.runsource"] = json!("azureml.PipelineRun");
    system["azureml.pipelineComponent"] = json!("pipelinerun");
    props["properties"] = system;
    json!({
        "id": format!("{}/jobs/{}", ws.arm_id(), job.name),
        "name": job.name,
        "type": "Microsoft.MachineLearningServices/workspaces/jobs",
        "properties": props,
        "systemData": system_data(job.created, job.modified, &job.created_by),
    })
}

pub(crate) fn experiment_name(props: &Value) -> String {
    props
        .get("experimentName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("Default")
        .to_string()
}

fn put(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    validate::job_name(name)?;
    let body = ctx.req.json_object()?;
    let props = match body.get("properties") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => return Err(ApiError::validation("properties", "Required", "The properties field is required.")),
    };
    let now = Timestamp::now();
    let mut world = ctx.shared.world();
    let ws_key = ctx.ws.key();

    if let Some(existing) = world.job(&ws_key, name) {
        if strip_mutable(&existing.properties) != strip_mutable(&props) {
            return Err(ApiError::conflict(
                "UserError",
                format!(
                    "A job with name '{name}' already exists with a different definition. Only description, \
                     displayName, tags and properties can be updated; submit a new job under a new name."
                ),
            )
            .target("name"));
        }
        let job = world
            .jobs
            .iter_mut()
            .find(|j| j.ws == ws_key && j.name == name)
            .ok_or_else(|| job_not_found(name))?;
        if job.properties != props {
            job.properties = props;
            job.modified = now;
        }
        let job = world.job(&ws_key, name).ok_or_else(|| job_not_found(name))?;
        return Ok(ok(&render(ctx, job)));
    }

    let check = check_pipeline(&world, &ws_key, &props)?;
    let outputs = props
        .get("outputs")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let experiment = experiment_name(&props);
    let experiment_id = world
        .experiments
        .entry((ws_key.clone(), experiment.clone()))
        .or_insert_with(|| uuid::Uuid::new_v4().to_string())
        .clone();

    let scale = world.scale;
    let at = |secs: f64| now + jiff::SignedDuration::from_secs_f64((secs / scale).max(0.0));
    let queued = at(QUEUED_AFTER);
    let preparing = at(QUEUED_AFTER + PREPARING_AFTER);
    let running = at(QUEUED_AFTER + PREPARING_AFTER + RUNNING_AFTER);
    let finalizing = at(QUEUED_AFTER + PREPARING_AFTER + RUNNING_AFTER + RUNNING_FOR);
    let completed = at(QUEUED_AFTER + PREPARING_AFTER + RUNNING_AFTER + RUNNING_FOR + FINALIZING_FOR);
    let mut timeline =
        vec![("NotStarted".to_string(), now), ("Queued".into(), queued), ("Preparing".into(), preparing)];
    let failure = world.take_failure("job", name, None);
    let error = match (check.unusable_compute, failure) {
        (Some(err), _) => {
            timeline.push(("Failed".into(), at(QUEUED_AFTER + PREPARING_AFTER + 30.0)));
            Some(err)
        }
        (None, Some(err)) => {
            timeline.push(("Running".into(), running));
            timeline.push((
                "Failed".into(),
                at(QUEUED_AFTER + PREPARING_AFTER + RUNNING_AFTER + RUNNING_FOR * 0.5),
            ));
            Some(err)
        }
        (None, None) => {
            timeline.push(("Running".into(), running));
            timeline.push(("Finalizing".into(), finalizing));
            timeline.push(("Completed".into(), completed));
            None
        }
    };
    world.jobs.push(Job {
        ws: ws_key.clone(),
        name: name.to_string(),
        properties: props,
        created: now,
        modified: now,
        timeline,
        error,
        experiment_id,
        outputs,
        created_by: ctx.caller(),
    });
    let job = world.job(&ws_key, name).ok_or_else(|| job_not_found(name))?;
    Ok(json_response(StatusCode::CREATED, &render(ctx, job)))
}

fn strip_mutable(props: &Value) -> Value {
    let mut p = props.clone();
    if let Some(map) = p.as_object_mut() {
        for key in MUTABLE {
            map.remove(key);
        }
        map.remove("status");
        map.remove("services");
    }
    p
}

/// What submission checks found that lets the job start but makes it fail later.
struct Checked {
    /// A referenced compute exists but is not usable (Failed provisioning): the job fails in Preparing.
    unusable_compute: Option<ErrorInfo>,
}

const JOB_TYPES: [&str; 5] = ["Pipeline", "Command", "Sweep", "AutoML", "Spark"];
const ASSET_TYPES: [&str; 6] =
    ["uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model", "triton_model"];
const MODES: [&str; 10] = [
    "ReadOnlyMount",
    "ReadWriteMount",
    "Download",
    "Direct",
    "EvalMount",
    "EvalDownload",
    "Upload",
    "ro_mount",
    "rw_mount",
    "download",
];

fn check_pipeline(world: &World, ws_key: &str, props: &Value) -> Result<Checked, ApiError> {
    let job_type = props.get("jobType").and_then(Value::as_str).ok_or_else(|| {
        ApiError::validation("properties.jobType", "Required", "The jobType field is required.")
    })?;
    if !JOB_TYPES.contains(&job_type) {
        return Err(ApiError::validation(
            "properties.jobType",
            "InvalidEnumValue",
            format!(
                "The value '{job_type}' is not valid for jobType. Valid values: {}.",
                JOB_TYPES.join(", ")
            ),
        ));
    }
    if job_type != "Pipeline" {
        return Err(ApiError::validation(
            "properties.jobType",
            "NotSupported",
            format!("Only Pipeline jobs can run in this workspace; got '{job_type}'."),
        ));
    }
    let mut checked = Checked { unusable_compute: None };
    let mut check_compute = |name: &str, target: &str| -> Result<(), ApiError> {
        if name.eq_ignore_ascii_case("serverless") {
            return Ok(());
        }
        let compute = world.compute(ws_key, name).ok_or_else(|| {
            ApiError::validation(
                target,
                "ComputeNotFound",
                format!("Compute '{name}' was not found in the workspace."),
            )
        })?;
        if compute.prov.state.eq_ignore_ascii_case("failed") && checked.unusable_compute.is_none() {
            checked.unusable_compute = Some(ErrorInfo::new(
                "UserError",
                format!("Compute '{}' is in provisioning state Failed and cannot run jobs.", compute.name),
            ));
        }
        Ok(())
    };
    if let Some(id) = props.get("computeId").and_then(Value::as_str) {
        check_compute(id.rsplit('/').next().unwrap_or(id), "properties.computeId")?;
    }
    if let Some(c) = props.pointer("/settings/default_compute").and_then(Value::as_str) {
        check_compute(c.rsplit('/').next().unwrap_or(c), "properties.settings.default_compute")?;
    }

    let empty = Map::new();
    let pipeline_inputs = props.get("inputs").and_then(Value::as_object).unwrap_or(&empty);
    let pipeline_outputs = props.get("outputs").and_then(Value::as_object).unwrap_or(&empty);
    for (name, output) in pipeline_outputs {
        let kind = output.get("jobOutputType").and_then(Value::as_str).unwrap_or("");
        if !ASSET_TYPES.contains(&kind) {
            return Err(ApiError::validation(
                &format!("properties.outputs.{name}.jobOutputType"),
                "InvalidEnumValue",
                format!(
                    "Output '{name}' has jobOutputType '{kind}'; valid values: {}.",
                    ASSET_TYPES.join(", ")
                ),
            ));
        }
    }
    let jobs = props.get("jobs").and_then(Value::as_object).filter(|j| !j.is_empty()).ok_or_else(|| {
        ApiError::validation(
            "properties.jobs",
            "Required",
            "A pipeline job needs at least one node in 'jobs'.",
        )
    })?;
    for (node_name, node) in jobs {
        let target = format!("properties.jobs.{node_name}");
        let component_id = node.get("componentId").and_then(Value::as_str).ok_or_else(|| {
            ApiError::validation(
                &format!("{target}.componentId"),
                "Required",
                format!("Node '{node_name}' has no componentId."),
            )
        })?;
        let spec = crate::registry::component_spec(world, component_id).ok_or_else(|| {
            ApiError::validation(
                &format!("{target}.componentId"),
                "ComponentNotFound",
                format!("Component '{component_id}' of node '{node_name}' was not found."),
            )
        })?;
        let declared = spec.get("inputs").and_then(Value::as_object).unwrap_or(&empty);
        let given = node.get("inputs").and_then(Value::as_object).unwrap_or(&empty);
        for (input, value) in given {
            let decl = declared.get(input).ok_or_else(|| {
                ApiError::validation(
                    &format!("{target}.inputs.{input}"),
                    "UnknownInput",
                    format!(
                        "Input '{input}' is not defined by component '{}'.",
                        spec.get("name").and_then(Value::as_str).unwrap_or(component_id)
                    ),
                )
            })?;
            let value = resolve_binding(value, pipeline_inputs, &format!("{target}.inputs.{input}"))?;
            check_input(world, input, decl, &value, &format!("{target}.inputs.{input}"))?;
            if input.starts_with("compute_")
                && let Some(c) = literal_text(&value)
            {
                check_compute(&c, &format!("{target}.inputs.{input}"))?;
            }
        }
        for (input, decl) in declared {
            let optional = decl.get("optional").and_then(Value::as_bool).unwrap_or(false);
            let has_default = decl.get("default").is_some_and(|d| !d.is_null());
            if !optional && !has_default && !given.contains_key(input) {
                return Err(ApiError::validation(
                    &format!("{target}.inputs.{input}"),
                    "RequiredInputMissing",
                    format!("Required input '{input}' of node '{node_name}' is not provided."),
                ));
            }
        }
        let declared_outputs = spec.get("outputs").and_then(Value::as_object).unwrap_or(&empty);
        for (output, binding) in node.get("outputs").and_then(Value::as_object).unwrap_or(&empty) {
            if !declared_outputs.contains_key(output) {
                return Err(ApiError::validation(
                    &format!("{target}.outputs.{output}"),
                    "UnknownOutput",
                    format!("Output '{output}' is not defined by the component of node '{node_name}'."),
                ));
            }
            let text = binding.get("value").and_then(Value::as_str).or(binding.as_str()).unwrap_or("");
            if let Some(parent) = text.strip_prefix("${{parent.outputs.").and_then(|t| t.strip_suffix("}}"))
                && !pipeline_outputs.contains_key(parent)
            {
                return Err(ApiError::validation(
                    &format!("{target}.outputs.{output}"),
                    "InvalidBinding",
                    format!(
                        "Output binding '{text}' names pipeline output '{parent}', which is not declared in properties.outputs."
                    ),
                ));
            }
        }
    }
    Ok(checked)
}

/// Replaces a `${{parent.inputs.X}}` literal with the pipeline input it names.
fn resolve_binding(
    value: &Value,
    pipeline_inputs: &Map<String, Value>,
    target: &str,
) -> Result<Value, ApiError> {
    let text = value.get("value").and_then(Value::as_str).unwrap_or("");
    let Some(name) = text.strip_prefix("${{parent.inputs.").and_then(|t| t.strip_suffix("}}")) else {
        return Ok(value.clone());
    };
    pipeline_inputs.get(name).cloned().ok_or_else(|| {
        ApiError::validation(
            target,
            "InvalidBinding",
            format!("Binding '{text}' names an undeclared pipeline input."),
        )
    })
}

fn input_type(value: &Value) -> Option<&str> {
    value.get("job_input_type").or_else(|| value.get("jobInputType")).and_then(Value::as_str)
}

fn literal_text(value: &Value) -> Option<String> {
    if input_type(value) != Some("literal") {
        return None;
    }
    match value.get("value")? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Checks one input against its declaration: asset kinds take URIs, literals must match the declared
/// type (integers, numbers, "true"/"false" strings, enum members), and stay within min/max.
fn check_input(world: &World, name: &str, decl: &Value, value: &Value, target: &str) -> Result<(), ApiError> {
    let declared = decl.get("type").and_then(Value::as_str).unwrap_or("string");
    let kind = input_type(value).ok_or_else(|| {
        ApiError::validation(target, "Required", format!("Input '{name}' needs a job_input_type."))
    })?;
    if let Some(mode) = value.get("mode").and_then(Value::as_str)
        && !MODES.contains(&mode)
    {
        return Err(ApiError::validation(
            target,
            "InvalidEnumValue",
            format!(
                "Input '{name}' has mode '{mode}'; valid values: ReadOnlyMount, ReadWriteMount, Download, Direct, EvalMount, EvalDownload."
            ),
        ));
    }
    let is_asset = ASSET_TYPES.contains(&declared);
    if kind != "literal" {
        if !ASSET_TYPES.contains(&kind) {
            return Err(ApiError::validation(
                target,
                "InvalidEnumValue",
                format!(
                    "Input '{name}' has job_input_type '{kind}'; valid values: literal, {}.",
                    ASSET_TYPES.join(", ")
                ),
            ));
        }
        if !is_asset {
            return Err(ApiError::validation(
                target,
                "InputTypeMismatch",
                format!("Input '{name}' is declared as {declared}; send it as a literal, not as {kind}."),
            ));
        }
        let uri = value.get("uri").and_then(Value::as_str).filter(|u| !u.is_empty()).ok_or_else(|| {
            ApiError::validation(target, "Required", format!("Input '{name}' of type {kind} needs a uri."))
        })?;
        return check_asset_uri(world, name, uri, target);
    }
    let raw = value.get("value").ok_or_else(|| {
        ApiError::validation(target, "Required", format!("Literal input '{name}' needs a value."))
    })?;
    if is_asset {
        let uri = raw.as_str().ok_or_else(|| {
            ApiError::validation(
                target,
                "InputTypeMismatch",
                format!("Input '{name}' expects a URI of type {declared}."),
            )
        })?;
        return check_asset_uri(world, name, uri, target);
    }
    let mismatch = |what: &str| {
        ApiError::validation(
            target,
            "InputTypeMismatch",
            format!("Input '{name}' is declared as {declared}{what}; got {raw}."),
        )
    };
    match declared {
        "integer" => {
            let n = match raw {
                Value::String(s) => s.trim().parse::<i64>().ok(),
                Value::Number(n) => n.as_i64(),
                _ => None,
            }
            .ok_or_else(|| mismatch(""))?;
            check_range(name, decl, n as f64, target)
        }
        "number" => {
            let n = match raw {
                Value::String(s) => s.trim().parse::<f64>().ok(),
                Value::Number(n) => n.as_f64(),
                _ => None,
            }
            .ok_or_else(|| mismatch(""))?;
            check_range(name, decl, n, target)
        }
        "boolean" => match raw {
            Value::Bool(_) => Ok(()),
            Value::String(s) if s == "true" || s == "false" => Ok(()),
            _ => Err(mismatch(" (\"true\" or \"false\")")),
        },
        _ => {
            let Value::String(text) = raw else {
                return Err(mismatch(" (send the value as a JSON string)"));
            };
            if let Some(allowed) = decl.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a.as_str() == Some(text))
            {
                let list: Vec<String> =
                    allowed.iter().map(|a| format!("'{}'", a.as_str().unwrap_or(""))).collect();
                return Err(ApiError::validation(
                    target,
                    "InvalidEnumValue",
                    format!("Input '{name}' has value '{text}', which is not one of {}.", list.join(", ")),
                ));
            }
            Ok(())
        }
    }
}

fn check_range(name: &str, decl: &Value, n: f64, target: &str) -> Result<(), ApiError> {
    let bound = |key: &str| decl.get(key).and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()));
    if let Some(min) = bound("min")
        && n < min
    {
        return Err(ApiError::validation(
            target,
            "ValueOutOfRange",
            format!("Input '{name}' is {n}; the minimum is {min}."),
        ));
    }
    if let Some(max) = bound("max")
        && n > max
    {
        return Err(ApiError::validation(
            target,
            "ValueOutOfRange",
            format!("Input '{name}' is {n}; the maximum is {max}."),
        ));
    }
    Ok(())
}

fn check_asset_uri(world: &World, name: &str, uri: &str, target: &str) -> Result<(), ApiError> {
    if let Some(exists) = crate::registry::model_exists(world, uri) {
        if !exists {
            return Err(ApiError::validation(
                target,
                "AssetNotFound",
                format!("Input '{name}' refers to model '{uri}', which does not exist."),
            ));
        }
        return Ok(());
    }
    let known = ["azureml://", "azureml:", "https://", "http://", "wasbs://", "abfss://", "/subscriptions/"];
    if known.iter().any(|p| uri.starts_with(p)) {
        Ok(())
    } else {
        Err(ApiError::validation(
            target,
            "InvalidUri",
            format!(
                "Input '{name}' has uri '{uri}', which is neither an Azure ML asset/datastore URI nor a storage URL."
            ),
        ))
    }
}

fn cancel(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    let now = Timestamp::now();
    let mut world = ctx.shared.world();
    let ws_key = ctx.ws.key();
    let canceled_at = now + world.scaled(20.0);
    let job = world
        .jobs
        .iter_mut()
        .find(|j| j.ws == ws_key && j.name == name)
        .ok_or_else(|| job_not_found(name))?;
    let status = job.status_at(now).to_string();
    if job.is_terminal(now) || status == "CancelRequested" {
        // Cancelling a finished (or already cancelling) job changes nothing.
        return Ok(ok(&json!({})));
    }
    job.rewrite_future(now, vec![("CancelRequested".into(), now), ("Canceled".into(), canceled_at)]);
    let op = world.new_operation(&ctx.ws.subscription, &ctx.ws.location, OperationKind::Location, now, None);
    if let Some(o) = world.operations.get_mut(&op) {
        o.due_at = Some(canceled_at);
    }
    Ok(location_headers(ctx, &world, crate::http::empty(StatusCode::ACCEPTED), &op))
}

fn delete(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    let now = Timestamp::now();
    let mut world = ctx.shared.world();
    let ws_key = ctx.ws.key();
    let before = world.jobs.len();
    world.jobs.retain(|j| !(j.ws == ws_key && j.name == name));
    if world.jobs.len() == before {
        return Err(job_not_found(name));
    }
    let op = world.new_operation(&ctx.ws.subscription, &ctx.ws.location, OperationKind::Location, now, None);
    let due = now + world.scaled(10.0);
    if let Some(o) = world.operations.get_mut(&op) {
        o.due_at = Some(due);
    }
    Ok(location_headers(ctx, &world, crate::http::empty(StatusCode::ACCEPTED), &op))
}
