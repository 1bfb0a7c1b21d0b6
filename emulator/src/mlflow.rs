//! MLflow tracking (REST 2.0) under the workspace tracking URI: experiments, runs (the pipeline run and
//! its step runs, derived from the job's lifecycle) and metric history of the fine-tuning step.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::auth::require_arm;
use crate::http::{Req, json_response, ok};
use crate::state::{Job, Shared, World};

/// The pipeline's steps, in order, with their share of the job's Running phase.
const STEPS: [(&str, f64); 5] = [
    ("ft_nlp_common_validation", 0.05),
    ("chat_completion_model_import", 0.15),
    ("chat_completion_datapreprocess", 0.15),
    ("chat_completion_finetune", 0.55),
    ("ft_nlp_model_converter", 0.10),
];
/// The step whose run carries the training metrics.
const METRICS_STEP: &str = "chat_completion_finetune";

fn mlflow_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    json_response(status, &json!({"error_code": code, "message": message.into()}))
}

/// Routes `/mlflow/v1.0/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}/api/2.0/mlflow/...`.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Response {
    if let Err(err) = require_arm(shared, req) {
        return err.into_response();
    }
    let l: Vec<&str> = req.lower.iter().map(String::as_str).collect();
    let s = &req.segs;
    let [
        "mlflow",
        "v1.0",
        "subscriptions",
        _,
        "resourcegroups",
        _,
        "providers",
        "microsoft.machinelearningservices",
        "workspaces",
        _,
        "api",
        "2.0",
        "mlflow",
        rest @ ..,
    ] = l.as_slice()
    else {
        return mlflow_error(
            StatusCode::NOT_FOUND,
            "ENDPOINT_NOT_FOUND",
            format!("No MLflow route for '{}'.", req.path),
        );
    };
    let world = shared.world();
    let Some(ws) = world.workspace(&s[3], &s[5], &s[9]).cloned() else {
        return mlflow_error(
            StatusCode::NOT_FOUND,
            "RESOURCE_DOES_NOT_EXIST",
            format!("Workspace '{}' not found.", s[9]),
        );
    };
    let ws_key = ws.key();
    let now = Timestamp::now();
    match (req.method.clone(), rest) {
        (Method::GET, ["experiments", "get-by-name"]) => {
            let Some(name) = req.q("experiment_name") else {
                return mlflow_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PARAMETER_VALUE",
                    "Missing value for required parameter 'experiment_name'.",
                );
            };
            match world.experiments.get(&(ws_key.clone(), name.to_string())) {
                Some(id) => ok(&json!({"experiment": experiment(id, name)})),
                None => mlflow_error(
                    StatusCode::NOT_FOUND,
                    "RESOURCE_DOES_NOT_EXIST",
                    format!("Could not find experiment with name '{name}'"),
                ),
            }
        }
        (Method::GET, ["experiments", "get"]) => {
            let id = req.q("experiment_id").unwrap_or("");
            match world.experiments.iter().find(|((w, _), eid)| *w == ws_key && *eid == id) {
                Some(((_, name), eid)) => ok(&json!({"experiment": experiment(eid, name)})),
                None => mlflow_error(
                    StatusCode::NOT_FOUND,
                    "RESOURCE_DOES_NOT_EXIST",
                    format!("Could not find experiment with id '{id}'"),
                ),
            }
        }
        (Method::GET, ["runs", "get"]) => {
            let id = req.q("run_id").or(req.q("run_uuid")).unwrap_or("");
            match all_runs(&world, &ws_key, now).into_iter().find(|r| r.id == id) {
                Some(run) => ok(&json!({"run": run.to_json()})),
                None => mlflow_error(
                    StatusCode::NOT_FOUND,
                    "RESOURCE_DOES_NOT_EXIST",
                    format!("Run '{id}' not found"),
                ),
            }
        }
        (Method::POST, ["runs", "search"]) => search(req, &world, &ws_key, now),
        (Method::GET, ["metrics", "get-history"]) => {
            let id = req.q("run_id").or(req.q("run_uuid")).unwrap_or("");
            let Some(key) = req.q("metric_key") else {
                return mlflow_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PARAMETER_VALUE",
                    "Missing value for required parameter 'metric_key'.",
                );
            };
            let Some(run) = all_runs(&world, &ws_key, now).into_iter().find(|r| r.id == id) else {
                return mlflow_error(
                    StatusCode::NOT_FOUND,
                    "RESOURCE_DOES_NOT_EXIST",
                    format!("Run '{id}' not found"),
                );
            };
            let history: Vec<Value> = run.history.iter().filter(|m| m["key"] == key).cloned().collect();
            let offset: usize = req.q("page_token").and_then(|t| t.parse().ok()).unwrap_or(0);
            let max: usize = req.q("max_results").and_then(|t| t.parse().ok()).unwrap_or(25000).max(1);
            let page: Vec<Value> = history.iter().skip(offset).take(max).cloned().collect();
            let mut body = json!({"metrics": page});
            if offset + max < history.len() {
                body["next_page_token"] = json!((offset + max).to_string());
            }
            ok(&body)
        }
        _ => mlflow_error(
            StatusCode::NOT_FOUND,
            "ENDPOINT_NOT_FOUND",
            format!("No MLflow route for {} '{}'.", req.method, req.path),
        ),
    }
}

fn experiment(id: &str, name: &str) -> Value {
    json!({"experiment_id": id, "name": name, "artifact_location": "", "lifecycle_stage": "active", "tags": []})
}

/// An MLflow run derived from a job.
struct Run {
    id: String,
    name: String,
    experiment_id: String,
    status: &'static str,
    start: Timestamp,
    end: Option<Timestamp>,
    parent: Option<String>,
    /// Full metric history (`{key, value, timestamp, step}`), empty until the step finished.
    history: Vec<Value>,
}

impl Run {
    fn to_json(&self) -> Value {
        // `run.data.metrics` holds the latest value of each key.
        let mut latest: Vec<Value> = Vec::new();
        for m in &self.history {
            match latest.iter_mut().find(|l| l["key"] == m["key"]) {
                Some(l) => *l = m.clone(),
                None => latest.push(m.clone()),
            }
        }
        let mut tags = vec![json!({"key": "mlflow.runName", "value": self.name})];
        if let Some(parent) = &self.parent {
            tags.push(json!({"key": "mlflow.parentRunId", "value": parent}));
            tags.push(json!({"key": "azureml.nodeid", "value": self.name}));
        }
        json!({
            "info": {
                "run_id": self.id,
                "run_uuid": self.id,
                "run_name": self.name,
                "experiment_id": self.experiment_id,
                "user_id": "",
                "status": self.status,
                "start_time": self.start.as_millisecond(),
                "end_time": self.end.map(|e| e.as_millisecond()),
                "artifact_uri": format!("azureml://experiments/{}/runs/{}/artifacts", self.experiment_id, self.id),
                "lifecycle_stage": "active",
            },
            "data": {"metrics": latest, "params": [], "tags": tags},
        })
    }

    fn tag(&self, key: &str) -> Option<String> {
        match key {
            "mlflow.runName" | "azureml.nodeid" => Some(self.name.clone()),
            "mlflow.parentRunId" => self.parent.clone(),
            _ => None,
        }
    }
}

fn all_runs(world: &World, ws_key: &str, now: Timestamp) -> Vec<Run> {
    world.jobs.iter().filter(|j| j.ws == ws_key).flat_map(|j| job_runs(world, j, now)).collect()
}

fn mlflow_status(azure: &str) -> &'static str {
    match azure {
        "Completed" => "FINISHED",
        "Failed" | "NotResponding" => "FAILED",
        "Canceled" => "KILLED",
        "Running" | "Finalizing" | "CancelRequested" => "RUNNING",
        _ => "SCHEDULED",
    }
}

/// The pipeline run and the step runs that have started by `now`.
fn job_runs(world: &World, job: &Job, now: Timestamp) -> Vec<Run> {
    let status = job.status_at(now);
    let terminal_at = job
        .timeline
        .iter()
        .find(|(s, at)| crate::state::TERMINAL_JOB_STATES.contains(&s.as_str()) && *at <= now)
        .map(|(_, at)| *at);
    let mut runs = vec![Run {
        id: job.name.clone(),
        name: job.properties.get("displayName").and_then(Value::as_str).unwrap_or(&job.name).to_string(),
        experiment_id: job.experiment_id.clone(),
        status: mlflow_status(status),
        start: job.entered("Running", now).unwrap_or(job.created),
        end: terminal_at,
        parent: None,
        history: Vec::new(),
    }];
    let Some(running) = job.entered("Running", now) else { return runs };
    // Steps stop advancing when the job stops running (failure, cancel request).
    let stopped = job
        .timeline
        .iter()
        .find(|(s, at)| ["Failed", "Canceled", "CancelRequested"].contains(&s.as_str()) && *at <= now)
        .map(|(s, at)| (s.clone(), *at));
    let horizon = stopped.as_ref().map_or(now, |(_, at)| (*at).min(now));
    let length = world.scaled(crate::jobs::RUNNING_FOR);
    let mut done = 0.0;
    for (step, share) in STEPS {
        let start = running + mul(length, done);
        done += share;
        let end = running + mul(length, done);
        if start > horizon {
            break;
        }
        let (status, end) = if end <= horizon {
            ("FINISHED", Some(end))
        } else {
            match &stopped {
                Some((s, at)) if s == "Failed" => ("FAILED", Some(*at)),
                Some((_, at)) => ("KILLED", Some(*at)),
                None => ("RUNNING", None),
            }
        };
        let history = if step == METRICS_STEP && status == "FINISHED" {
            metrics(start, end.unwrap_or(start))
        } else {
            Vec::new()
        };
        runs.push(Run {
            id: format!("{}_{step}", job.name),
            name: step.to_string(),
            experiment_id: job.experiment_id.clone(),
            status,
            start,
            end,
            parent: Some(job.name.clone()),
            history,
        });
    }
    runs
}

fn mul(d: SignedDuration, f: f64) -> SignedDuration {
    SignedDuration::from_secs_f64(d.as_secs_f64() * f)
}

/// A deterministic Hugging Face Trainer-like metric history: loss falling over 100 steps logged every 10,
/// then the final summary metrics.
fn metrics(start: Timestamp, end: Timestamp) -> Vec<Value> {
    let span = (end.as_millisecond() - start.as_millisecond()).max(100);
    let at = |step: i64| start.as_millisecond() + span * step / 100;
    let round = |x: f64| (x * 10000.0).round() / 10000.0;
    let mut history = Vec::new();
    let mut losses = Vec::new();
    for step in (10..=100).step_by(10) {
        let loss = round(1.6 * (-(step as f64) / 40.0).exp() + 0.9);
        losses.push(loss);
        history.push(json!({"key": "loss", "value": loss, "timestamp": at(step), "step": step}));
        history.push(json!({"key": "learning_rate", "value": 5e-6 * (1.0 - step as f64 / 100.0), "timestamp": at(step), "step": step}));
        history.push(
            json!({"key": "epoch", "value": round(step as f64 / 100.0), "timestamp": at(step), "step": step}),
        );
    }
    let last = at(100);
    let train_loss = round(losses.iter().sum::<f64>() / losses.len() as f64);
    for (key, value) in [
        ("eval_loss", round(losses.last().copied().unwrap_or(1.0) + 0.0412)),
        ("eval_runtime", 61.52),
        ("eval_samples_per_second", 18.78),
        ("train_loss", train_loss),
        ("train_runtime", 1523.41),
        ("train_samples_per_second", 6.82),
        ("train_steps_per_second", 0.066),
        ("total_flos", 1.21e16),
    ] {
        history.push(json!({"key": key, "value": value, "timestamp": last, "step": 100}));
    }
    history
}

fn search(req: &Req, world: &World, ws_key: &str, now: Timestamp) -> Response {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let experiment_ids: Vec<String> = body
        .get("experiment_ids")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let filter = body.get("filter").and_then(Value::as_str).unwrap_or("");
    let clauses = match parse_filter(filter) {
        Ok(c) => c,
        Err(message) => return mlflow_error(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message),
    };
    let max = body.get("max_results").and_then(Value::as_u64).unwrap_or(1000).max(1) as usize;
    let offset: usize =
        body.get("page_token").and_then(Value::as_str).and_then(|t| t.parse().ok()).unwrap_or(0);
    let runs: Vec<Run> = all_runs(world, ws_key, now)
        .into_iter()
        .filter(|r| experiment_ids.is_empty() || experiment_ids.contains(&r.experiment_id))
        .filter(|r| {
            clauses.iter().all(|(key, value)| {
                let have = match key.as_str() {
                    "attributes.run_id" | "attributes.run_uuid" | "run_id" => Some(r.id.clone()),
                    "attributes.run_name" | "run_name" => Some(r.name.clone()),
                    "attributes.status" | "status" => Some(r.status.to_string()),
                    k => k.strip_prefix("tags.").and_then(|t| r.tag(t.trim_matches('`'))),
                };
                have.as_deref() == Some(value.as_str())
            })
        })
        .collect();
    let total = runs.len();
    let page: Vec<Value> = runs.iter().skip(offset).take(max).map(Run::to_json).collect();
    let mut reply = json!({"runs": page});
    if offset + max < total {
        reply["next_page_token"] = json!((offset + max).to_string());
    }
    ok(&reply)
}

/// Parses `key = 'value' AND key2 = "value2"` (the subset of MLflow's search grammar this emulator serves).
fn parse_filter(filter: &str) -> Result<Vec<(String, String)>, String> {
    let mut clauses = Vec::new();
    if filter.trim().is_empty() {
        return Ok(clauses);
    }
    for clause in split_and(filter) {
        let (key, value) = clause.split_once('=').ok_or_else(|| {
            format!("Invalid filter clause '{clause}': only equality comparisons are supported.")
        })?;
        let key = key.trim().to_string();
        let value = value.trim();
        let quoted = (value.starts_with('\'') && value.ends_with('\''))
            || (value.starts_with('"') && value.ends_with('"'));
        if !quoted || value.len() < 2 {
            return Err(format!("Invalid filter clause '{clause}': the value must be quoted."));
        }
        let known = key.starts_with("tags.")
            || [
                "attributes.run_id",
                "attributes.run_uuid",
                "run_id",
                "attributes.run_name",
                "run_name",
                "attributes.status",
                "status",
            ]
            .contains(&key.as_str());
        if !known {
            return Err(format!("Invalid filter key '{key}'."));
        }
        clauses.push((key, value[1..value.len() - 1].to_string()));
    }
    Ok(clauses)
}

fn split_and(filter: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let words: Vec<&str> = filter.split_whitespace().collect();
    for word in words {
        if word.eq_ignore_ascii_case("and") {
            parts.push(std::mem::take(&mut current));
        } else {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
        }
    }
    parts.push(current);
    parts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter subset the operator needs parses; anything else is refused with a reason.
    #[test]
    fn parses_filters() {
        assert_eq!(
            parse_filter("tags.mlflow.parentRunId = 'job-1' and attributes.status = \"FINISHED\"").unwrap(),
            vec![
                ("tags.mlflow.parentRunId".into(), "job-1".into()),
                ("attributes.status".into(), "FINISHED".into())
            ]
        );
        assert!(parse_filter("metrics.loss > 1").is_err());
        assert!(parse_filter("tags.x = unquoted").is_err());
        assert!(parse_filter("").unwrap().is_empty());
    }

    /// Loss falls over the logged steps and the summary keys are present.
    #[test]
    fn metric_history_is_plausible() {
        let start = Timestamp::from_second(1_700_000_000).unwrap();
        let history = metrics(start, start + SignedDuration::from_secs(1000));
        let losses: Vec<f64> =
            history.iter().filter(|m| m["key"] == "loss").map(|m| m["value"].as_f64().unwrap()).collect();
        assert_eq!(losses.len(), 10);
        assert!(losses.windows(2).all(|w| w[1] < w[0]));
        for key in ["train_loss", "eval_loss", "train_runtime"] {
            assert!(history.iter().any(|m| m["key"] == key), "{key}");
        }
    }
}
