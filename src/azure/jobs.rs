//! Pipeline jobs: submit (the SDK's exact wire body), read, cancel, child runs and MLflow metrics.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use super::client::{Request, WorkspaceClient};
use super::common::python_float;
use super::error::Result;
use super::lro::{Operation, OperationKind};
use super::registry::WireSystemData;
use super::workspace::string_map;

/// A literal input value, typed the way the component declares it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum Literal {
    /// Sent verbatim (enums such as `"16"` or `"true"` are strings in this component).
    String(String),
    /// An integer.
    Integer(i64),
    /// A number, sent in Python's `str()` spelling (`5e-06`).
    Number(f64),
    /// A boolean, sent as `"true"`/`"false"`.
    Boolean(bool),
}

impl Literal {
    /// The wire text of the literal.
    pub fn to_wire(&self) -> String {
        match self {
            Literal::String(s) => s.clone(),
            Literal::Integer(i) => i.to_string(),
            Literal::Number(n) => python_float(*n),
            Literal::Boolean(b) => b.to_string(),
        }
    }
}

/// Asset input types of a pipeline node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetType {
    /// A single file.
    UriFile,
    /// A folder.
    UriFolder,
    /// An MLflow model.
    MlflowModel,
    /// A custom model.
    CustomModel,
    /// An MLTable.
    Mltable,
    /// A Triton model.
    TritonModel,
}

impl AssetType {
    /// The wire spelling (`uri_file`, `mlflow_model`, ...).
    pub fn as_wire(self) -> &'static str {
        match self {
            AssetType::UriFile => "uri_file",
            AssetType::UriFolder => "uri_folder",
            AssetType::MlflowModel => "mlflow_model",
            AssetType::CustomModel => "custom_model",
            AssetType::Mltable => "mltable",
            AssetType::TritonModel => "triton_model",
        }
    }

    /// Maps a component's declared input type to an asset type (`None` for literal types).
    pub fn from_declared(declared: &str) -> Option<Self> {
        match declared.to_ascii_lowercase().as_str() {
            "uri_file" => Some(Self::UriFile),
            "uri_folder" => Some(Self::UriFolder),
            "mlflow_model" => Some(Self::MlflowModel),
            "custom_model" => Some(Self::CustomModel),
            "mltable" => Some(Self::Mltable),
            "triton_model" => Some(Self::TritonModel),
            _ => None,
        }
    }
}

/// Data access mode of an asset input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputMode {
    /// `ReadOnlyMount`.
    ReadOnlyMount,
    /// `ReadWriteMount`.
    ReadWriteMount,
    /// `Download`.
    Download,
    /// `Direct`.
    Direct,
}

/// One input of the pipeline node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum JobInput {
    /// A literal value.
    Literal {
        /// The value.
        value: Literal,
    },
    /// An asset reference (datastore URI, data asset, model id).
    Asset {
        /// The asset type.
        asset_type: AssetType,
        /// The URI or asset id.
        uri: String,
        /// Access mode; `None` keeps the component's declared mode.
        mode: Option<InputMode>,
    },
}

/// Binds a pipeline-level output to an output of the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputBinding {
    /// Pipeline output name (`trained_model`).
    pub pipeline_output: String,
    /// Node output name (`mlflow_model_folder`).
    pub node_output: String,
    /// Output type (`mlflow_model`).
    pub output_type: AssetType,
}

/// Pipeline settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSettings {
    /// Re-run steps even when a cached result exists.
    pub force_rerun: bool,
    /// Keep running other steps when one fails.
    pub continue_on_step_failure: bool,
}

impl Default for PipelineSettings {
    /// The notebook's settings.
    fn default() -> Self {
        Self { force_rerun: true, continue_on_step_failure: false }
    }
}

/// A pipeline job with one node calling a registry pipeline component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineJobSpec {
    /// Experiment name.
    pub experiment_name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Component asset id (`azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82`).
    pub component_id: String,
    /// Node name inside the pipeline (the notebook's is the component name).
    pub node_name: String,
    /// Compute cluster bound to each `compute_*` input, by input name.
    pub compute_bindings: BTreeMap<String, String>,
    /// Other node inputs.
    pub inputs: BTreeMap<String, JobInput>,
    /// Pipeline outputs bound to node outputs.
    pub outputs: Vec<OutputBinding>,
    /// Settings.
    pub settings: PipelineSettings,
}

impl PipelineJobSpec {
    /// The notebook's output binding: pipeline `trained_model` ← node `mlflow_model_folder`.
    pub fn trained_model_output() -> OutputBinding {
        OutputBinding {
            pipeline_output: "trained_model".into(),
            node_output: "mlflow_model_folder".into(),
            output_type: AssetType::MlflowModel,
        }
    }
}

/// The PUT body for a pipeline job (reference §4.1): camelCase at the top level, the SDK's
/// snake_case node dict inside `jobs`.
pub fn pipeline_job_body(spec: &PipelineJobSpec) -> Value {
    let mut node_inputs = Map::new();
    for (name, cluster) in &spec.compute_bindings {
        node_inputs.insert(name.clone(), json!({ "job_input_type": "literal", "value": cluster }));
    }
    for (name, input) in &spec.inputs {
        let wire = match input {
            JobInput::Literal { value } => json!({ "job_input_type": "literal", "value": value.to_wire() }),
            JobInput::Asset { asset_type, uri, mode } => {
                let mut v = json!({ "job_input_type": asset_type.as_wire(), "uri": uri });
                if let Some(mode) = mode {
                    v["mode"] = serde_json::to_value(mode).unwrap_or(Value::Null);
                }
                v
            }
        };
        node_inputs.insert(name.clone(), wire);
    }
    let mut node_outputs = Map::new();
    let mut pipeline_outputs = Map::new();
    for b in &spec.outputs {
        node_outputs.insert(
            b.node_output.clone(),
            json!({ "type": "literal", "value": format!("${{{{parent.outputs.{}}}}}", b.pipeline_output) }),
        );
        // The SDK carries the node output's declared rw_mount up to the pipeline output.
        pipeline_outputs.insert(
            b.pipeline_output.clone(),
            json!({ "jobOutputType": b.output_type.as_wire(), "mode": "ReadWriteMount" }),
        );
    }
    let mut jobs = Map::new();
    jobs.insert(
        spec.node_name.clone(),
        json!({
            "type": "pipeline",
            "name": spec.node_name,
            "_source": "REMOTE.REGISTRY",
            "componentId": spec.component_id,
            "inputs": node_inputs,
            "outputs": node_outputs,
        }),
    );
    json!({
        "properties": {
            "jobType": "Pipeline",
            "displayName": spec.display_name,
            "experimentName": spec.experiment_name,
            "description": spec.description,
            "tags": spec.tags,
            "properties": {},
            "settings": {
                "force_rerun": spec.settings.force_rerun,
                "continue_on_step_failure": spec.settings.continue_on_step_failure,
                // What the SDK marks a pipeline built with its DSL (the notebook's way).
                "_source": "DSL",
            },
            "inputs": {},
            "outputs": pipeline_outputs,
            "jobs": jobs,
        }
    })
}

/// Job status (extensible: unknown values are kept).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum JobStatus {
    /// Accepted, not started.
    NotStarted,
    /// Starting.
    Starting,
    /// Provisioning compute.
    Provisioning,
    /// Preparing the environment.
    Preparing,
    /// Waiting for compute.
    Queued,
    /// Running.
    Running,
    /// Writing outputs.
    Finalizing,
    /// Cancellation requested.
    CancelRequested,
    /// Finished successfully.
    Completed,
    /// Failed.
    Failed,
    /// Canceled.
    Canceled,
    /// Stopped reporting (terminal per the SDK).
    NotResponding,
    /// Paused (terminal per the SDK).
    Paused,
    /// Unknown (transient).
    Unknown,
    /// A value this client does not know.
    Other(String),
}

impl JobStatus {
    /// Terminal per the SDK: Completed, Failed, Canceled, NotResponding, Paused.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled | Self::NotResponding | Self::Paused)
    }
}

const JOB_STATUSES: &[(&str, JobStatus)] = &[
    ("NotStarted", JobStatus::NotStarted),
    ("Starting", JobStatus::Starting),
    ("Provisioning", JobStatus::Provisioning),
    ("Preparing", JobStatus::Preparing),
    ("Queued", JobStatus::Queued),
    ("Running", JobStatus::Running),
    ("Finalizing", JobStatus::Finalizing),
    ("CancelRequested", JobStatus::CancelRequested),
    ("Completed", JobStatus::Completed),
    ("Failed", JobStatus::Failed),
    ("Canceled", JobStatus::Canceled),
    ("NotResponding", JobStatus::NotResponding),
    ("Paused", JobStatus::Paused),
    ("Unknown", JobStatus::Unknown),
];

impl From<String> for JobStatus {
    fn from(s: String) -> Self {
        JOB_STATUSES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&s))
            .map(|(_, st)| st.clone())
            .unwrap_or(JobStatus::Other(s))
    }
}

impl From<JobStatus> for String {
    fn from(s: JobStatus) -> Self {
        s.to_string()
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Self::Other(s) = self {
            return f.write_str(s);
        }
        let name = JOB_STATUSES.iter().find(|(_, st)| st == self).map(|(n, _)| *n).unwrap_or("Unknown");
        f.write_str(name)
    }
}

/// An output of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOutput {
    /// Output type (`mlflow_model`, `uri_folder`).
    pub output_type: Option<String>,
    /// Where it was written, if Azure reports it.
    pub uri: Option<String>,
    /// The stable address of the output: `azureml://jobs/{job}/outputs/{name}`.
    pub job_uri: String,
}

/// A job as observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Job name (also the run id).
    pub name: String,
    /// `Pipeline`, `Command`, ...
    pub job_type: Option<String>,
    /// Status.
    pub status: JobStatus,
    /// Display name.
    pub display_name: Option<String>,
    /// Experiment name.
    pub experiment_name: Option<String>,
    /// Azure ML studio URL.
    pub studio_url: Option<String>,
    /// MLflow tracking endpoint of the job.
    pub tracking_uri: Option<String>,
    /// Outputs by name.
    pub outputs: BTreeMap<String, JobOutput>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Properties (`azureml.pipelineComponent`, ...).
    pub properties: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: Option<Timestamp>,
    /// Start time, when reported.
    pub start_time: Option<Timestamp>,
    /// End time, when reported.
    pub end_time: Option<Timestamp>,
    /// Failure message, when reported.
    pub error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireJob {
    #[serde(default)]
    name: String,
    #[serde(default)]
    properties: WireJobProperties,
    system_data: Option<WireSystemData>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireJobProperties {
    job_type: Option<String>,
    status: Option<String>,
    display_name: Option<String>,
    experiment_name: Option<String>,
    services: Option<BTreeMap<String, Option<WireService>>>,
    outputs: Option<BTreeMap<String, Option<WireJobOutput>>>,
    tags: Option<BTreeMap<String, Option<Value>>>,
    properties: Option<BTreeMap<String, Option<Value>>>,
    start_time: Option<String>,
    end_time: Option<String>,
    error: Option<super::error::ErrorDetail>,
}

#[derive(Deserialize)]
struct WireService {
    endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireJobOutput {
    job_output_type: Option<String>,
    uri: Option<String>,
}

fn timestamp(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| t.parse().ok())
}

fn job_from_wire(w: WireJob) -> Job {
    let p = w.properties;
    let service = |name: &str| {
        p.services.as_ref().and_then(|s| {
            s.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_ref()?.endpoint.clone())
        })
    };
    let studio_url = service("Studio");
    let tracking_uri = service("Tracking");
    let outputs = p
        .outputs
        .unwrap_or_default()
        .into_iter()
        .map(|(name, o)| {
            let o = o.unwrap_or(WireJobOutput { job_output_type: None, uri: None });
            let job_uri = format!("azureml://jobs/{}/outputs/{}", w.name, name);
            (name, JobOutput { output_type: o.job_output_type, uri: o.uri, job_uri })
        })
        .collect();
    let properties = string_map(p.properties);
    Job {
        status: p.status.unwrap_or_else(|| "Unknown".into()).into(),
        job_type: p.job_type,
        display_name: p.display_name,
        experiment_name: p.experiment_name,
        studio_url,
        tracking_uri,
        outputs,
        tags: string_map(p.tags),
        created_at: timestamp(w.system_data.as_ref().and_then(|s| s.created_at.as_deref())),
        start_time: timestamp(p.start_time.as_deref())
            .or_else(|| timestamp(properties.get("StartTimeUtc").map(String::as_str))),
        end_time: timestamp(p.end_time.as_deref())
            .or_else(|| timestamp(properties.get("EndTimeUtc").map(String::as_str))),
        error: p.error.map(|e| e.full_message()).filter(|m| !m.is_empty()),
        properties,
        name: w.name,
    }
}

/// A step (child) run of a pipeline job, from MLflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildRun {
    /// Run id (the step job's name).
    pub run_id: String,
    /// Run name (the node name, e.g. `chat_completion_finetune`).
    pub run_name: Option<String>,
    /// MLflow status (`RUNNING`, `FINISHED`, `FAILED`, `KILLED`).
    pub status: Option<String>,
    /// Start time.
    pub start_time: Option<Timestamp>,
    /// End time.
    pub end_time: Option<Timestamp>,
    /// Latest value of each metric.
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct WireRunEnvelope {
    run: WireRun,
}

#[derive(Deserialize)]
struct WireRun {
    info: WireRunInfo,
    #[serde(default)]
    data: WireRunData,
}

#[derive(Deserialize)]
struct WireRunInfo {
    run_id: String,
    #[serde(default)]
    run_name: Option<String>,
    #[serde(default)]
    experiment_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    start_time: Option<Value>,
    #[serde(default)]
    end_time: Option<Value>,
}

#[derive(Deserialize, Default)]
struct WireRunData {
    #[serde(default)]
    metrics: Vec<WireMetric>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

#[derive(Deserialize)]
struct WireMetric {
    key: String,
    value: f64,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    step: Option<Value>,
}

#[derive(Deserialize)]
struct WireTag {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct WireRunsPage {
    #[serde(default)]
    runs: Vec<WireRun>,
}

fn millis(v: &Option<Value>) -> Option<Timestamp> {
    let ms = match v.as_ref()? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Timestamp::from_millisecond(ms).ok()
}

/// Latest value per metric key (MLflow `runs/get` already lists the latest values; keep the one
/// with the greatest (step, timestamp) in case a server lists history).
fn latest_metrics(metrics: &[WireMetric]) -> BTreeMap<String, f64> {
    let mut best: BTreeMap<String, ((i64, i64), f64)> = BTreeMap::new();
    let num = |v: &Option<Value>| match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    };
    for m in metrics {
        let order = (num(&m.step), num(&m.timestamp));
        match best.get(&m.key) {
            Some((o, _)) if *o > order => {}
            _ => {
                best.insert(m.key.clone(), (order, m.value));
            }
        }
    }
    best.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

fn child_from_wire(r: WireRun) -> ChildRun {
    let run_name = r
        .info
        .run_name
        .clone()
        .or_else(|| r.data.tags.iter().find(|t| t.key == "mlflow.runName").map(|t| t.value.clone()));
    ChildRun {
        metrics: latest_metrics(&r.data.metrics),
        run_id: r.info.run_id,
        run_name,
        status: r.info.status,
        start_time: millis(&r.info.start_time),
        end_time: millis(&r.info.end_time),
    }
}

impl WorkspaceClient {
    /// GET a job; `None` if it does not exist.
    pub async fn get_job(&self, name: &str) -> Result<Option<Job>> {
        const OP: &str = "get_job";
        let req = self.arm(OP, Method::GET, self.workspace_url(&["jobs", name]));
        match self.send_opt(req).await? {
            None => Ok(None),
            Some(resp) => Ok(Some(job_from_wire(resp.json(OP)?))),
        }
    }

    /// PUT a pipeline job (synchronous: 200/201 with the job). Use a deterministic name and GET
    /// first: a PUT of an existing job only updates mutable fields.
    pub async fn create_pipeline_job(&self, name: &str, spec: &PipelineJobSpec) -> Result<Job> {
        const OP: &str = "create_pipeline_job";
        let url = self.workspace_url(&["jobs", name]);
        let resp = self.send(self.arm(OP, Method::PUT, url).json(pipeline_job_body(spec))).await?;
        let mut job = job_from_wire(resp.json(OP)?);
        if job.name.is_empty() {
            job.name = name.to_string();
        }
        Ok(job)
    }

    /// POST cancel. Returns the operation to poll, or `None` when Azure finished at once (200) or
    /// the job does not exist (404). Safe to retry: cancelling twice has the same effect.
    pub async fn cancel_job(&self, name: &str) -> Result<Option<Operation>> {
        const OP: &str = "cancel_job";
        let url = self.workspace_url(&["jobs", name, "cancel"]);
        let Some(resp) = self.send_opt(self.arm(OP, Method::POST, url.clone())).await? else {
            return Ok(None);
        };
        if resp.status == 202 {
            let job_url = self.workspace_url(&["jobs", name]);
            return Ok(Some(Operation::from_response(
                OperationKind::Action,
                OP,
                job_url.as_str(),
                &resp.headers,
            )));
        }
        Ok(None)
    }

    fn mlflow_url(base: &Url, path: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(["api", "2.0", "mlflow"]).extend(path);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn mlflow_request(&self, op: &'static str, method: Method, url: Url) -> Request {
        // MLflow tracking is not ARM; its own bucket keeps polling bursts polite.
        Request::new(op, method, url).throttled(&format!("mlflow/{}", self.subscription()))
    }

    async fn mlflow_run(&self, op: &'static str, run_id: &str) -> Result<Option<WireRun>> {
        let base = self.tracking_base().await?;
        let url = Self::mlflow_url(&base, &["runs", "get"], &[("run_id", run_id)]);
        match self.send_opt(self.mlflow_request(op, Method::GET, url)).await? {
            None => Ok(None),
            Some(resp) => Ok(Some(resp.json::<WireRunEnvelope>(op)?.run)),
        }
    }

    /// Latest metric values of a run (a pipeline job or one of its steps); empty when the run is
    /// unknown to MLflow.
    pub async fn job_metrics(&self, run_id: &str) -> Result<BTreeMap<String, f64>> {
        Ok(self
            .mlflow_run("job_metrics", run_id)
            .await?
            .map(|r| latest_metrics(&r.data.metrics))
            .unwrap_or_default())
    }

    /// Step runs of a pipeline job, with their latest metrics (MLflow `runs/search` on the parent
    /// run tag; reading the parent run first gives the experiment id).
    pub async fn list_child_jobs(&self, parent: &str) -> Result<Vec<ChildRun>> {
        const OP: &str = "list_child_jobs";
        let Some(run) = self.mlflow_run(OP, parent).await? else {
            return Ok(Vec::new());
        };
        let Some(experiment_id) = run.info.experiment_id else {
            return Ok(Vec::new());
        };
        let base = self.tracking_base().await?;
        let url = Self::mlflow_url(&base, &["runs", "search"], &[]);
        let body = json!({
            "experiment_ids": [experiment_id],
            "filter": format!("tags.mlflow.parentRunId = '{}'", parent.replace('\'', "")),
            "max_results": 100,
        });
        // runs/search is a read: safe to retry.
        let resp = self.send(self.mlflow_request(OP, Method::POST, url).json(body)).await?;
        let page: WireRunsPage = resp.json(OP)?;
        Ok(page.runs.into_iter().map(child_from_wire).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_use_the_sdk_spelling() {
        assert_eq!(Literal::Number(5e-6).to_wire(), "5e-06");
        assert_eq!(Literal::Boolean(true).to_wire(), "true");
        assert_eq!(Literal::Integer(3).to_wire(), "3");
        assert_eq!(Literal::String("16".into()).to_wire(), "16");
    }

    #[test]
    fn job_status_round_trip_and_terminal_set() {
        for (name, status) in JOB_STATUSES {
            assert_eq!(JobStatus::from(name.to_string()), *status);
            assert_eq!(status.to_string(), *name);
        }
        assert!(JobStatus::Paused.is_terminal());
        assert!(!JobStatus::Finalizing.is_terminal());
        assert_eq!(JobStatus::from("Resuming".to_string()), JobStatus::Other("Resuming".into()));
    }

    #[test]
    fn reads_job_fields() {
        let body = r#"{"id":"/x/jobs/j1","name":"j1","type":"Microsoft.MachineLearningServices/workspaces/jobs",
          "properties":{"jobType":"Pipeline","status":"Completed","displayName":"d","experimentName":"e",
            "services":{"Studio":{"endpoint":"https://ml.azure.com/runs/j1?wsid=/w"},"Tracking":{"endpoint":"azureml://eastus2.api.azureml.ms/mlflow/v1.0/x"}},
            "outputs":{"trained_model":{"jobOutputType":"mlflow_model","mode":"ReadWriteMount","uri":null}},
            "tags":{},"properties":{"azureml.pipelineComponent":"pipelinerun"}},
          "systemData":{"createdAt":"2026-11-23T01:02:03.1234567+00:00"}}"#;
        let job = job_from_wire(serde_json::from_str(body).expect("parse"));
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!(job.studio_url.as_deref(), Some("https://ml.azure.com/runs/j1?wsid=/w"));
        assert_eq!(job.outputs["trained_model"].job_uri, "azureml://jobs/j1/outputs/trained_model");
        assert!(job.created_at.is_some());
    }

    #[test]
    fn latest_metric_wins() {
        let metrics = vec![
            WireMetric { key: "loss".into(), value: 2.0, timestamp: Some(json!(1)), step: Some(json!(1)) },
            WireMetric { key: "loss".into(), value: 1.0, timestamp: Some(json!(2)), step: Some(json!(2)) },
        ];
        assert_eq!(latest_metrics(&metrics)["loss"], 1.0);
    }
}
