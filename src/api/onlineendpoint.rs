//! `OnlineEndpoint`: one managed online endpoint, its deployments and its traffic split (notebook steps 7–9).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LocalRef, WorkspaceRef};

/// A managed online endpoint serving one or more model deployments, with the whole traffic split in the spec.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "azureml-operator.io",
    version = "v1alpha1",
    kind = "OnlineEndpoint",
    namespaced,
    doc = "One Azure ML managed online endpoint with its deployments and traffic split.",
    status = "OnlineEndpointStatus",
    shortname = "oep",
    category = "azureml",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.provisioningState"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpointName"),
    printcolumn(name = "Scoring URI", type_ = "string", json_path = ".status.scoringUri", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.endpointName) || self.metadata.name.matches('^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$')")
        .message("metadata.name is not a valid Azure endpoint name (3-32 letters, digits or '-', starting with a letter, not ending with '-'); set spec.endpointName")
)]
#[x_kube(
    validation = Rule::new("self.traffic.all(k, self.deployments.exists(d, d.name == k))")
        .message("spec.traffic names a deployment that is not in spec.deployments")
        .field_path(".traffic"),
    validation = Rule::new("size(self.traffic) == 0 || self.traffic.map(k, self.traffic[k]).sum() == 100")
        .message("spec.traffic percentages must sum to 100 (or the map must be empty)")
        .field_path(".traffic"),
    validation = Rule::new("self.mirrorTraffic.all(k, self.deployments.exists(d, d.name == k))")
        .message("spec.mirrorTraffic names a deployment that is not in spec.deployments")
        .field_path(".mirrorTraffic"),
    validation = Rule::new("self.mirrorTraffic.all(k, !(k in self.traffic) || self.traffic[k] == 0)")
        .message("spec.mirrorTraffic may not mirror to a deployment that already takes live traffic")
        .field_path(".mirrorTraffic"),
    validation = Rule::new("has(self.endpointName) == has(oldSelf.endpointName) && (!has(self.endpointName) || self.endpointName == oldSelf.endpointName)")
        .message("spec.endpointName is immutable")
        .field_path(".endpointName"),
    validation = Rule::new("self.authMode == oldSelf.authMode")
        .message("spec.authMode is immutable in Azure; create a new endpoint to change it")
        .field_path(".authMode"),
    validation = Rule::new("!has(self.smokeTest) || !has(self.smokeTest.deployment) || self.deployments.exists(d, d.name == self.smokeTest.deployment)")
        .message("spec.smokeTest.deployment must name a deployment in spec.deployments")
        .field_path(".smokeTest.deployment")
)]
#[serde(rename_all = "camelCase")]
pub struct OnlineEndpointSpec {
    /// The Workspace (same namespace) to create the endpoint in.
    #[serde(default)]
    pub workspace_ref: WorkspaceRef,

    /// Endpoint name in Azure (unique in the region). Default: `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(AZURE_NAME_RULE)
        .message("spec.endpointName must be 3-32 letters, digits or '-', start with a letter and not end with '-'"))]
    #[schemars(length(max = 32))]
    pub endpoint_name: Option<String>,

    /// How clients authenticate to the scoring URI: `Key` (default), `AMLToken` or `AADToken`.
    #[serde(default)]
    pub auth_mode: AuthMode,

    /// Description of the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 5000))]
    pub description: Option<String>,

    /// The deployments behind the endpoint. A deployment removed from this list is deleted once its
    /// traffic is gone.
    #[serde(default)]
    #[schemars(length(max = 20))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub deployments: Vec<Deployment>,

    /// Share of live traffic per deployment, in percent. Keys must be deployment names; values sum to 100,
    /// or the map is empty (no traffic).
    #[serde(default)]
    #[schemars(schema_with = "traffic_schema")]
    pub traffic: BTreeMap<String, i32>,

    /// Share of traffic copied (shadowed) to a deployment, in percent. At most one deployment.
    #[serde(default)]
    #[schemars(schema_with = "mirror_traffic_schema")]
    pub mirror_traffic: BTreeMap<String, i32>,

    /// A Secret (same namespace) the operator writes `scoringUri`, `primaryKey` and `secondaryKey` into,
    /// owned by this resource. Keys appear nowhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_secret: Option<LocalRef>,

    /// A request sent to one deployment after every rollout; its result is in `status.lastSmokeTest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_test: Option<SmokeTest>,

    /// What deleting this resource does in Azure: `Delete` (default) deletes the endpoint and its
    /// deployments; `Retain` leaves them.
    #[serde(default)]
    pub on_delete: EndpointOnDelete,
}

/// Percent per deployment: at most 20 deployments (Azure's per-endpoint quota), each 0–100.
fn traffic_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 20,
        "additionalProperties": { "type": "integer", "format": "int32", "minimum": 0, "maximum": 100 }
    })
}

/// Mirror traffic: one deployment, at most 50 percent (Azure's limit for shadow traffic).
fn mirror_traffic_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 1,
        "additionalProperties": { "type": "integer", "format": "int32", "minimum": 0, "maximum": 50 }
    })
}

/// Azure ML's rule for endpoint and deployment names.
const AZURE_NAME_RULE: &str = "self.matches('^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$')";

/// How clients authenticate to the scoring URI.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AuthMode {
    /// Endpoint keys (`listKeys`).
    #[default]
    Key,
    /// Azure ML tokens that expire.
    #[serde(rename = "AMLToken")]
    AmlToken,
    /// Microsoft Entra tokens.
    #[serde(rename = "AADToken")]
    AadToken,
}

/// One managed online deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Deployment name (3-32 letters, digits or `-`, starting with a letter).
    #[x_kube(validation = Rule::new(AZURE_NAME_RULE)
        .message("spec.deployments[].name must be 3-32 letters, digits or '-', start with a letter and not end with '-'"))]
    #[schemars(length(max = 32))]
    pub name: String,
    /// The model to serve.
    pub model: DeploymentModel,
    /// VM size of the instances, for example `Standard_NC6s_v3`.
    #[schemars(length(min = 1, max = 64))]
    pub instance_type: String,
    /// Number of instances.
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 1").message("spec.deployments[].instanceCount must be at least 1"))]
    #[schemars(range(max = 100))]
    pub instance_count: i32,
    /// Liveness probe of the inference server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Readiness probe of the inference server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_settings: Option<RequestSettings>,
    /// Environment variables of the inference server.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 100))]
    pub environment_variables: BTreeMap<String, String>,
}

fn one() -> i32 {
    1
}

/// The model of a deployment: exactly one field.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.modelRegistrationRef) != has(self.assetId)")
    .message("spec.deployments[].model must set exactly one of modelRegistrationRef and assetId"))]
#[serde(rename_all = "camelCase")]
pub struct DeploymentModel {
    /// A ModelRegistration in the same namespace; the deployment rolls when it registers a new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_registration_ref: Option<LocalRef>,
    /// An Azure ML model asset id: `azureml:<name>:<version>`, an ARM id, or
    /// `azureml://registries/<registry>/models/<name>/versions/<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('azureml:') || self.startsWith('/subscriptions/')")
        .message("spec.deployments[].model.assetId must start with azureml: or /subscriptions/"))]
    #[schemars(length(max = 2048))]
    pub asset_id: Option<String>,
}

/// A health probe of the inference server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Seconds after start before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: Option<i32>,
    /// Seconds before a probe times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
    /// Consecutive successes that count as healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: Option<i32>,
    /// Consecutive failures that count as unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: Option<i32>,
}

/// Request limits of a deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestSettings {
    /// Scoring timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 180000))]
    pub request_timeout_ms: Option<i32>,
    /// Concurrent requests per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent_requests_per_instance: Option<i32>,
}

/// A scoring request sent after each rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmokeTest {
    /// Deployment to send it to. Default: the deployment with the most traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The JSON request body, in the model's format (for chat models:
    /// `{"input_data": {"input_string": [...], "parameters": {...}}}`).
    #[schemars(schema_with = "super::free_form_object_schema")]
    pub request: serde_json::Value,
}

/// What deleting the resource does in Azure.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EndpointOnDelete {
    /// Delete the endpoint and its deployments, and wait until Azure says they are gone.
    #[default]
    Delete,
    /// Leave the endpoint in Azure.
    Retain,
}

/// Observed state of an OnlineEndpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineEndpointStatus {
    /// Endpoint name in Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
    /// Where to send scoring requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring_uri: Option<String>,
    /// The endpoint's OpenAPI document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swagger_uri: Option<String>,
    /// Azure's provisioning state of the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Traffic split as observed in Azure.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traffic: BTreeMap<String, i32>,
    /// Mirror traffic as observed in Azure.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirror_traffic: BTreeMap<String, i32>,
    /// Deployments as observed in Azure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<DeploymentStatus>,
    /// Long-running Azure operations in flight, so a restarted operator resumes polling them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<PendingOperation>,
    /// The last smoke test. It outlives a rollout: `model` says what it tested, and the
    /// `SmokeTestPassed` condition is Unknown until the new rollout has been tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_smoke_test: Option<SmokeTestResult>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: Ready, Reconciling, Stalled.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A deployment as observed in Azure.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// Deployment name.
    pub name: String,
    /// Azure's provisioning state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Model the deployment serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// VM size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Number of instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_count: Option<i32>,
}

/// A long-running Azure operation in flight.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingOperation {
    /// What it acts on: `endpoint` or `deployment/<name>`.
    pub target: String,
    /// What it does: `Create`, `Update` or `Delete`.
    pub action: String,
    /// The operation as the Azure client serialized it (status URL and polling hints).
    pub operation: String,
    /// When it was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
}

/// Result of a smoke test.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmokeTestResult {
    /// When it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Deployment it was sent to.
    pub deployment: String,
    /// The model that deployment served when the test ran, as Azure names it (the ARM id of a workspace
    /// model version, or a registry asset id). The result is kept through a rollout to another model
    /// until the test has run against it, so this says which model the result is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// HTTP status of the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// Round-trip time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// True when the reply was a 2xx.
    pub passed: bool,
    /// What went wrong, or a short excerpt of the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Spec generation the test was run for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
