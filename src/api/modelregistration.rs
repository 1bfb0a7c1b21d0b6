//! `ModelRegistration`: one model version in the workspace's model registry, usually the fine-tuned output
//! of a FineTuneJob (notebook step 6).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::WorkspaceRef;

/// Registers a model version in the workspace, keeping the lineage from the job that produced it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "azureml-operator.io",
    version = "v1alpha1",
    kind = "ModelRegistration",
    namespaced,
    doc = "One model version in an Azure ML workspace, usually the fine-tuned output of a FineTuneJob.",
    status = "ModelRegistrationStatus",
    shortname = "mreg",
    category = "azureml",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Model", type_ = "string", json_path = ".status.assetId"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("has(self.modelName) == has(oldSelf.modelName) && (!has(self.modelName) || self.modelName == oldSelf.modelName)")
        .message("spec.modelName is immutable")
        .field_path(".modelName"),
    validation = Rule::new("has(self.version) == has(oldSelf.version) && (!has(self.version) || self.version == oldSelf.version)")
        .message("spec.version is immutable")
        .field_path(".version"),
    validation = Rule::new("self.source == oldSelf.source")
        .message("spec.source is immutable; create a new ModelRegistration to register another model")
        .field_path(".source")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelRegistrationSpec {
    /// The Workspace (same namespace) to register in.
    #[serde(default)]
    pub workspace_ref: WorkspaceRef,

    /// Model name in the workspace. Default: the base model's name, `-`, and this resource's name, with
    /// `/` replaced by `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$')")
        .message("spec.modelName must be 1-255 letters, digits, '_', '.' or '-', starting with a letter or digit"))]
    #[schemars(length(max = 255))]
    pub model_name: Option<String>,

    /// Model version. Default: this resource's creation time in Unix seconds (the notebook's timestamp,
    /// fixed once, so a retry never registers a second version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$')")
        .message("spec.version must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"))]
    #[schemars(length(max = 64))]
    pub version: Option<String>,

    /// Where the model files come from. Exactly one of the fields must be set.
    pub source: ModelSource,

    /// Asset type in Azure ML. Default `mlflow_model`.
    #[serde(default)]
    pub model_type: ModelType,

    /// Description of the model version. Default names the base model and the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 5000))]
    pub description: Option<String>,

    /// Tags of the model version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    pub tags: BTreeMap<String, String>,

    /// Properties of the model version (immutable in Azure once set).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    pub properties: BTreeMap<String, String>,

    /// What deleting this resource does in Azure: `Retain` (default) keeps the version, `Archive` archives it.
    #[serde(default)]
    pub on_delete: ModelOnDelete,
}

/// The source of the model files: exactly one field.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("(has(self.fineTuneJobRef) ? 1 : 0) + (has(self.jobOutput) ? 1 : 0) + (has(self.uri) ? 1 : 0) == 1")
    .message("spec.source must set exactly one of fineTuneJobRef, jobOutput and uri"))]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// A FineTuneJob in the same namespace; its output is registered once the job has succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tune_job_ref: Option<FineTuneJobOutputRef>,
    /// An output of any Azure ML job, by job name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_output: Option<JobOutputRef>,
    /// A model path: `azureml://...`, `azureml:<asset>:<version>`, `https://...` or `runs:/...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('azureml://') || self.startsWith('azureml:') || self.startsWith('https://') || self.startsWith('runs:/')")
        .message("spec.source.uri must start with azureml://, azureml:, https:// or runs:/"))]
    #[schemars(length(max = 2048))]
    pub uri: Option<String>,
}

/// An output of a FineTuneJob.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FineTuneJobOutputRef {
    /// Name of the FineTuneJob in the same namespace.
    pub name: String,
    /// Output name. Default `trained_model`.
    #[serde(default = "trained_model")]
    pub output: String,
}

/// An output of an Azure ML job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobOutputRef {
    /// Azure ML job name.
    #[schemars(length(min = 1, max = 255))]
    pub job_name: String,
    /// Output name. Default `trained_model`.
    #[serde(default = "trained_model")]
    pub output: String,
}

fn trained_model() -> String {
    "trained_model".to_owned()
}

/// Azure ML model asset type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    /// An MLflow model folder (with an `MLmodel` file).
    #[default]
    MlflowModel,
    /// Any folder or file.
    CustomModel,
    /// A Triton model repository.
    TritonModel,
}

impl ModelType {
    /// Azure's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MlflowModel => "mlflow_model",
            Self::CustomModel => "custom_model",
            Self::TritonModel => "triton_model",
        }
    }
}

/// What deleting the resource does to the model version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ModelOnDelete {
    /// Keep the model version.
    #[default]
    Retain,
    /// Archive the model version (it stays referenceable by deployments that use it).
    Archive,
}

/// Observed state of a ModelRegistration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRegistrationStatus {
    /// Model name in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Registered version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// ARM resource id of the model version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Asset id to use in deployments: `azureml:<name>:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<String>,
    /// The path that was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_uri: Option<String>,
    /// The foundation model this one was fine-tuned from (lineage from the FineTuneJob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<super::finetunejob::ResolvedAsset>,
    /// The Azure job that produced the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: Ready, Reconciling, Stalled.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
}
