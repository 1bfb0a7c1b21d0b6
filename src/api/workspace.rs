//! `Workspace`: a connection to one Azure ML workspace — where it is, which cloud, and how to authenticate.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// A connection to an Azure Machine Learning workspace. Other resources name it with `spec.workspaceRef`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "azureml-operator.io",
    version = "v1alpha1",
    kind = "Workspace",
    namespaced,
    doc = "A connection to one Azure Machine Learning workspace: subscription, resource group, workspace, cloud and credential.",
    status = "WorkspaceStatus",
    shortname = "amlws",
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
    printcolumn(name = "Workspace", type_ = "string", json_path = ".spec.workspaceName"),
    printcolumn(name = "Location", type_ = "string", json_path = ".status.location"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("self.cloud != 'Custom' || has(self.endpoints)")
        .message("spec.endpoints is required when spec.cloud is Custom")
        .field_path(".endpoints"),
    validation = Rule::new("self.cloud == 'Custom' || !has(self.endpoints)")
        .message("spec.endpoints may only be set when spec.cloud is Custom")
        .field_path(".endpoints")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// Azure subscription id (a GUID) that holds the workspace.
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')")
        .message("spec.subscriptionId must be a GUID such as 00000000-0000-0000-0000-000000000000"))]
    #[schemars(length(max = 36))]
    pub subscription_id: String,

    /// Resource group of the workspace (1–90 letters, digits, `-`, `_`, `.`, `(`, `)`; not ending in `.`).
    #[x_kube(validation = Rule::new("self.matches('^[-a-zA-Z0-9_.()]{1,90}$') && !self.endsWith('.')")
        .message("spec.resourceGroup must be 1-90 letters, digits, '-', '_', '.', '(' or ')' and not end with '.'"))]
    #[schemars(length(max = 90))]
    pub resource_group: String,

    /// Name of the Azure ML workspace (3–33 letters, digits, `-` and `_`, starting with a letter or digit).
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$')")
        .message("spec.workspaceName must be 3-33 letters, digits, '-' or '_', starting with a letter or digit"))]
    #[schemars(length(max = 33))]
    pub workspace_name: String,

    /// Which Azure cloud to talk to. `Custom` takes its endpoints from `spec.endpoints` (for sovereign or
    /// private clouds, and for the Azure ML emulator).
    #[serde(default)]
    pub cloud: Cloud,

    /// Endpoints of a `Custom` cloud. Only allowed, and then required, with `cloud: Custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<CloudEndpoints>,

    /// How the operator authenticates to Azure.
    #[serde(default)]
    pub credential: CredentialSpec,

    /// A Secret key (same namespace) holding PEM certificates to trust in addition to the public roots, for
    /// endpoints behind a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,

    /// Azure Resource Manager api-version for workspace calls. Leave unset for the operator's tested default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$')")
        .message("spec.armApiVersion must look like 2025-12-01 or 2025-12-01-preview"))]
    #[schemars(length(max = 32))]
    pub arm_api_version: Option<String>,
}

/// An Azure cloud.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Cloud {
    /// Azure public cloud (management.azure.com).
    #[default]
    AzurePublic,
    /// Azure operated by 21Vianet (management.chinacloudapi.cn).
    AzureChina,
    /// Azure US Government (management.usgovcloudapi.net).
    AzureUSGovernment,
    /// Endpoints given explicitly in `spec.endpoints`.
    Custom,
}

/// Endpoints of a custom cloud. All must be `https://` URLs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CloudEndpoints {
    /// Azure Resource Manager endpoint; tokens are requested for `<resourceManager>/.default`.
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("spec.endpoints.resourceManager must be an https:// URL"))]
    #[schemars(length(max = 2048))]
    pub resource_manager: String,
    /// Microsoft Entra ID authority host, for example `https://login.microsoftonline.com`.
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("spec.endpoints.authorityHost must be an https:// URL"))]
    #[schemars(length(max = 2048))]
    pub authority_host: String,
    /// Azure ML registry discovery host, for example `https://eastus.api.azureml.ms`.
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("spec.endpoints.registryDiscovery must be an https:// URL"))]
    #[schemars(length(max = 2048))]
    pub registry_discovery: String,
}

/// How the operator authenticates to Microsoft Entra ID.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("self.type != 'ClientSecret' || (has(self.tenantId) && has(self.clientId) && has(self.secretRef))")
        .message("spec.credential.tenantId, clientId and secretRef are required when spec.credential.type is ClientSecret"),
    validation = Rule::new("self.type == 'ClientSecret' || !has(self.secretRef)")
        .message("spec.credential.secretRef is only used when spec.credential.type is ClientSecret")
        .field_path(".secretRef")
)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSpec {
    /// `WorkloadIdentity` (default; the federated token the AKS webhook mounts in the operator's pod),
    /// `ManagedIdentity` (the node's or pod's managed identity) or `ClientSecret` (a service principal secret
    /// read from a Secret in this namespace).
    #[serde(default, rename = "type")]
    pub type_: CredentialType,
    /// Entra tenant id. Required for `ClientSecret`; for `WorkloadIdentity` it overrides `AZURE_TENANT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub tenant_id: Option<String>,
    /// Application (client) id. Required for `ClientSecret`; for the other types it selects a user-assigned
    /// identity instead of the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub client_id: Option<String>,
    /// The Secret key holding the client secret. Only with `type: ClientSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// Kind of Entra credential.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CredentialType {
    /// Federated service-account token (AKS workload identity).
    #[default]
    WorkloadIdentity,
    /// Azure managed identity.
    ManagedIdentity,
    /// Service principal with a client secret.
    ClientSecret,
}

/// Observed state of a Workspace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// Azure region of the workspace, read from Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// ARM resource id of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: Ready, Reconciling, Stalled.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
}
