//! `FineTuneJob`: one Azure ML pipeline job that fine-tunes a registry model with a registry pipeline
//! component (notebook steps 1–5).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::WorkspaceRef;
use super::compact::CompactMap;

/// Fine-tunes a foundation model from an Azure ML registry on your data, as one pipeline job.
///
/// The spec is frozen once the job has been submitted: to train again, create a new FineTuneJob.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "azureml-operator.io",
    version = "v1alpha1",
    kind = "FineTuneJob",
    namespaced,
    doc = "One Azure ML pipeline job that fine-tunes a registry foundation model on your data.",
    status = "FineTuneJobStatus",
    shortname = "ftj",
    category = "azureml",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Azure Status", type_ = "string", json_path = ".status.azureStatus"),
    printcolumn(name = "Job", type_ = "string", json_path = ".status.jobName"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.jobName) || self.spec == oldSelf.spec")
        .message("spec is immutable once the job has been submitted (status.jobName is set); create a new FineTuneJob to train again")
        .reason(Reason::FieldValueForbidden)
)]
#[serde(rename_all = "camelCase")]
pub struct FineTuneJobSpec {
    /// The Workspace (same namespace) to run in.
    #[serde(default)]
    pub workspace_ref: WorkspaceRef,

    /// The foundation model to fine-tune, from an Azure ML registry.
    pub model: RegistryAssetRef,

    /// The registry pipeline component that runs the fine-tuning.
    #[serde(default = "default_pipeline_component")]
    pub pipeline_component: RegistryAssetRef,

    /// The compute cluster the pipeline's steps run on.
    pub compute: ComputeSpec,

    /// Training data: Azure ML URIs of JSON Lines files in the chat format (`messages` rows).
    pub data: DataSpec,

    /// Common fine-tuning settings. Unset fields take the model's recommended value (its
    /// `model_specific_defaults` tag), then the operator's defaults (the notebook's values).
    #[serde(default)]
    pub training: TrainingSpec,

    /// LoRA and DeepSpeed settings. Same precedence as `training`.
    #[serde(default)]
    pub optimization: OptimizationSpec,

    /// Any other input of the pipeline component, by its input name (for example `lora_r: 16`). Checked
    /// against the component's declared inputs (name, type, enum, min/max) before the job is submitted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::free_form_map_schema")]
    pub parameters: BTreeMap<String, serde_json::Value>,

    /// Experiment to file the job under. Default: `chat_completion_<model name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$')")
        .message("spec.experimentName must be 1-255 letters, digits, '_', '.' or '-', starting with a letter or digit"))]
    #[schemars(length(max = 255))]
    pub experiment_name: Option<String>,

    /// Display name of the job. Default: derived from the parameters the way the notebook derives it
    /// (`<model>-ultrachat-bs<B>-<scheduler>-<ds2|nods>-<lora|nolora>-save_limit<L>-seqlen<S>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,

    /// Pipeline settings.
    #[serde(default)]
    pub settings: JobSettings,

    /// What deleting this resource does to a job that is still running: `Cancel` (default) or `Orphan`.
    #[serde(default)]
    pub on_delete: JobOnDelete,
}

fn default_pipeline_component() -> RegistryAssetRef {
    RegistryAssetRef {
        registry: default_registry(),
        name: "chat_completion_pipeline".to_owned(),
        version: None,
    }
}

fn default_registry() -> String {
    "azureml".to_owned()
}

/// An asset (model or component) in an Azure ML registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryAssetRef {
    /// Registry name. Default `azureml`, the system registry of foundation models and components.
    #[serde(default = "default_registry")]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9][a-zA-Z0-9_-]{1,32}$')")
        .message("registry must be 2-33 letters, digits, '-' or '_'"))]
    #[schemars(length(max = 33))]
    pub registry: String,
    /// Asset name, for example `Phi-3-mini-4k-instruct`.
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$')")
        .message("name must be 1-255 letters, digits, '_', '.' or '-', starting with a letter or digit"))]
    #[schemars(length(max = 255))]
    pub name: String,
    /// Asset version. Empty or unset means the newest version that is not archived, resolved once and
    /// pinned in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub version: Option<String>,
}

/// The compute cluster for the job's steps.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeSpec {
    /// Name of the workspace's compute cluster.
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$')")
        .message("spec.compute.name must be 3-32 letters, digits or '-', start with a letter and not end with '-'"))]
    #[schemars(length(max = 32))]
    pub name: String,
    /// Create the cluster with these settings when it does not exist. Without it, a missing cluster stalls
    /// the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<ComputeCreateSpec>,
}

/// Settings of an AmlCompute cluster the operator creates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.minInstances <= self.maxInstances")
    .message("spec.compute.create.minInstances must not exceed maxInstances"))]
#[serde(rename_all = "camelCase")]
pub struct ComputeCreateSpec {
    /// VM size of the nodes, for example `Standard_NC24ads_A100_v4`.
    #[schemars(length(min = 1, max = 64))]
    pub vm_size: String,
    /// Nodes kept when idle.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub min_instances: i32,
    /// Largest number of nodes.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_instances: i32,
    /// Idle seconds before a node is released.
    #[serde(default = "default_idle_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub idle_seconds_before_scale_down: i32,
}

fn one() -> i32 {
    1
}

fn default_idle_seconds() -> i32 {
    120
}

/// Training, test and validation data.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DataSpec {
    /// Training file: `azureml://datastores/<ds>/paths/<path>`, `azureml:<asset>:<version>`, or an
    /// `https://<account>.blob.core.windows.net/...` URL.
    #[x_kube(validation = Rule::new(DATA_URI_RULE).message("spec.data.train must be an azureml://, azureml:<name>:<version> or https:// URI"))]
    #[schemars(length(max = 2048))]
    pub train: String,
    /// Test file, in the same forms as `train`.
    #[x_kube(validation = Rule::new(DATA_URI_RULE).message("spec.data.test must be an azureml://, azureml:<name>:<version> or https:// URI"))]
    #[schemars(length(max = 2048))]
    pub test: String,
    /// Optional validation file, in the same forms as `train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DATA_URI_RULE).message("spec.data.validation must be an azureml://, azureml:<name>:<version> or https:// URI"))]
    #[schemars(length(max = 2048))]
    pub validation: Option<String>,
}

const DATA_URI_RULE: &str =
    "self.startsWith('azureml://') || self.matches('^azureml:[^:/]+:[^:/]+$') || self.startsWith('https://')";

/// Common fine-tuning inputs of the component, typed. Each maps to the component input of the same
/// name in snake case.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrainingSpec {
    /// `num_train_epochs`. Operator default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub num_train_epochs: Option<i32>,
    /// `per_device_train_batch_size`. Operator default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub per_device_train_batch_size: Option<i32>,
    /// `per_device_eval_batch_size`. Operator default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub per_device_eval_batch_size: Option<i32>,
    /// `learning_rate`. Operator default 5e-6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 1.0").message("spec.training.learningRate must be between 0 and 1 (exclusive)"))]
    pub learning_rate: Option<f64>,
    /// `lr_scheduler_type`. Operator default `cosine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_scheduler_type: Option<LrScheduler>,
    /// `gradient_accumulation_steps`. Component default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub gradient_accumulation_steps: Option<i32>,
    /// `max_seq_length`; -1 lets the component choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == -1 || self >= 1").message("spec.training.maxSeqLength must be -1 or at least 1"))]
    pub max_seq_length: Option<i32>,
    /// `save_total_limit`: checkpoints to keep; -1 keeps all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == -1 || self >= 1").message("spec.training.saveTotalLimit must be -1 or at least 1"))]
    pub save_total_limit: Option<i32>,
    /// `num_nodes_finetune`: nodes used by the fine-tuning step. Component default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub num_nodes: Option<i32>,
    /// `seed`. Component default 42.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i32>,
    /// `max_steps`; -1 trains for `numTrainEpochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == -1 || self >= 1").message("spec.training.maxSteps must be -1 or at least 1"))]
    pub max_steps: Option<i32>,
    /// `warmup_steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub warmup_steps: Option<i32>,
    /// `weight_decay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0").message("spec.training.weightDecay must not be negative"))]
    pub weight_decay: Option<f64>,
    /// `precision`: `"16"` or `"32"` bit floating point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
}

/// Learning-rate schedule (`lr_scheduler_type`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduler {
    Linear,
    Cosine,
    CosineWithRestarts,
    Polynomial,
    Constant,
    ConstantWithWarmup,
}

impl LrScheduler {
    /// The component's spelling of the value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Cosine => "cosine",
            Self::CosineWithRestarts => "cosine_with_restarts",
            Self::Polynomial => "polynomial",
            Self::Constant => "constant",
            Self::ConstantWithWarmup => "constant_with_warmup",
        }
    }
}

/// Floating-point precision of training.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Precision {
    #[serde(rename = "16")]
    Half,
    #[serde(rename = "32")]
    Full,
}

/// LoRA and DeepSpeed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OptimizationSpec {
    /// `apply_lora`: train low-rank adapters instead of all weights. Operator default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<bool>,
    /// `apply_deepspeed`. Operator default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deepspeed: Option<bool>,
    /// `deepspeed_stage`: ZeRO stage 1, 2 or 3. Operator default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in [1, 2, 3]").message("spec.optimization.deepspeedStage must be 1, 2 or 3"))]
    pub deepspeed_stage: Option<i32>,
}

/// Pipeline job settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSettings {
    /// Re-run every step instead of reusing cached outputs. Default true.
    #[serde(default = "yes")]
    pub force_rerun: bool,
    /// Keep running other steps after one fails. Default false.
    #[serde(default)]
    pub continue_on_step_failure: bool,
}

fn yes() -> bool {
    true
}

impl Default for JobSettings {
    fn default() -> Self {
        Self { force_rerun: true, continue_on_step_failure: false }
    }
}

/// What deleting the resource does to its Azure job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum JobOnDelete {
    /// Cancel the job if it is still running.
    #[default]
    Cancel,
    /// Leave the job alone.
    Orphan,
}

/// Phase of a FineTuneJob.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Seen, not yet validated.
    #[default]
    Pending,
    /// Resolving the model and component, checking compute and parameters.
    Validating,
    /// Accepted by Azure, not yet running.
    Submitted,
    /// Running in Azure.
    Running,
    /// Completed; `status.outputs.trainedModel` is the fine-tuned model.
    Succeeded,
    /// Failed in Azure; see the Stalled condition for Azure's message.
    Failed,
    /// Canceled.
    Canceled,
}

impl Phase {
    /// True once the job can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// Observed state of a FineTuneJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FineTuneJobStatus {
    /// Where the job is in its life.
    #[serde(default)]
    pub phase: Phase,
    /// Name of the Azure ML pipeline job (deterministic: derived from namespace, name and uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Azure's own job status (NotStarted, Queued, Preparing, Running, Finalizing, Completed, Failed, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_status: Option<String>,
    /// Link to the job in Azure ML studio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub studio_url: Option<String>,
    /// Experiment the job is filed under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_name: Option<String>,
    /// The model version that was resolved and pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_model: Option<ResolvedAsset>,
    /// The pipeline component version that was resolved and pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_component: Option<ResolvedAsset>,
    /// GPUs per node of the compute's VM size (sent as `number_of_gpu_to_use_finetuning`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_per_node: Option<i32>,
    /// Every component input the job was (or will be) submitted with, as sent.
    #[serde(default, skip_serializing_if = "CompactMap::is_empty")]
    pub effective_parameters: CompactMap<String>,
    /// The job's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Outputs of the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<JobOutputs>,
    /// Final training and evaluation metrics (last value of each), when the job has ended.
    #[serde(default, skip_serializing_if = "CompactMap::is_empty")]
    pub metrics: CompactMap<f64>,
    /// Status of each step of the pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
    /// Long-running compute creation in flight, so a restarted operator resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_operation: Option<String>,
    /// When Azure started the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: Ready, Reconciling, Stalled.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A pinned registry asset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedAsset {
    /// Asset id, `azureml://registries/<registry>/models|components/<name>/versions/<version>`.
    pub id: String,
    /// Asset name.
    #[serde(default)]
    pub name: String,
    /// Pinned version.
    pub version: String,
}

/// Outputs of a fine-tuning job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobOutputs {
    /// The fine-tuned MLflow model: `azureml://jobs/<job>/outputs/trained_model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_model: Option<String>,
}

/// Status of one pipeline step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// Step (child job) name.
    pub name: String,
    /// Azure status of the step.
    pub status: String,
}
