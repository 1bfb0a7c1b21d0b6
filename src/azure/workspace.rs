//! The workspace itself (ARM GET) and the location-level VM size list.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use url::Url;

use super::client::{WorkspaceClient, lock};
use super::error::{Error, Result};

/// What the operator needs to know about a workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceInfo {
    /// ARM id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Azure region (endpoints, deployments and computes are created there).
    pub location: String,
    /// The immutable workspace GUID.
    pub workspace_id: Option<String>,
    /// The MLflow tracking URI (`azureml://{region}.api.azureml.ms/mlflow/v1.0/...`).
    pub mlflow_tracking_uri: Option<String>,
    /// The regional discovery URL.
    pub discovery_url: Option<String>,
    /// ARM provisioning state.
    pub provisioning_state: Option<String>,
}

/// One VM size available in a location.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSize {
    /// Size name, e.g. `Standard_NC24ads_A100_v4` (compare case-insensitively).
    pub name: String,
    /// VM family.
    pub family: Option<String>,
    /// vCPUs per node.
    pub vcpus: Option<u32>,
    /// GPUs per node (0 for CPU sizes).
    pub gpus: u32,
    /// Memory in GB.
    pub memory_gb: Option<f64>,
    /// Whether low-priority nodes are offered.
    pub low_priority_capable: bool,
    /// `AmlCompute`, `ComputeInstance`, `MIR` (managed online endpoints).
    pub supported_compute_types: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireWorkspace {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    properties: WireWorkspaceProperties,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireWorkspaceProperties {
    workspace_id: Option<String>,
    // ARM spells it `mlFlowTrackingUri`.
    #[serde(rename = "mlFlowTrackingUri")]
    ml_flow_tracking_uri: Option<String>,
    discovery_url: Option<String>,
    provisioning_state: Option<String>,
}

#[derive(Deserialize)]
struct WireList<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireVmSize {
    name: String,
    family: Option<String>,
    #[serde(rename = "vCPUs")]
    vcpus: Option<u32>,
    gpus: Option<u32>,
    #[serde(rename = "memoryGB")]
    memory_gb: Option<f64>,
    #[serde(default)]
    low_priority_capable: Option<bool>,
    #[serde(default)]
    supported_compute_types: Option<Vec<String>>,
}

/// Turns an `azureml://host/mlflow/...` tracking URI into the HTTPS base of the MLflow REST API.
pub(crate) fn tracking_base(uri: &str) -> Option<Url> {
    let uri = uri.trim().trim_end_matches('?');
    let https = match uri.strip_prefix("azureml://") {
        Some(rest) => format!("https://{rest}"),
        None => uri.to_string(),
    };
    Url::parse(&https).ok()
}

impl WorkspaceClient {
    /// GET the workspace (the authenticated call that makes a `Workspace` Ready).
    pub async fn get_workspace(&self) -> Result<WorkspaceInfo> {
        const OP: &str = "get_workspace";
        let resp = self.send(self.arm(OP, Method::GET, self.workspace_url(&[]))).await?;
        let w: WireWorkspace = resp.json(OP)?;
        let info = WorkspaceInfo {
            id: w.id,
            name: w.name,
            location: w.location,
            workspace_id: w.properties.workspace_id,
            mlflow_tracking_uri: w.properties.ml_flow_tracking_uri,
            discovery_url: w.properties.discovery_url,
            provisioning_state: w.properties.provisioning_state,
        };
        if let Some(base) = info.mlflow_tracking_uri.as_deref().and_then(tracking_base) {
            lock(self.inner_tracking()).insert(self.config.workspace.arm_id(), base);
        }
        Ok(info)
    }

    /// The MLflow REST base of this workspace (cached after the first workspace GET).
    pub(crate) async fn tracking_base(&self) -> Result<Url> {
        let key = self.config.workspace.arm_id();
        if let Some(url) = lock(self.inner_tracking()).get(&key) {
            return Ok(url.clone());
        }
        let info = self.get_workspace().await?;
        info.mlflow_tracking_uri.as_deref().and_then(tracking_base).ok_or(Error::Protocol {
            operation: "get_workspace",
            message: "the workspace has no usable mlFlowTrackingUri".into(),
        })
    }

    /// VM sizes of a location (for GPUs per node and allow-list checks).
    pub async fn list_vm_sizes(&self, location: &str) -> Result<Vec<VmSize>> {
        const OP: &str = "list_vm_sizes";
        let url = self.arm_url(&[
            "subscriptions",
            self.subscription(),
            "providers",
            "Microsoft.MachineLearningServices",
            "locations",
            location,
            "vmSizes",
        ]);
        let resp = self.send(self.arm(OP, Method::GET, url)).await?;
        let list: WireList<WireVmSize> = resp.json(OP)?;
        Ok(list
            .value
            .into_iter()
            .map(|v| VmSize {
                name: v.name,
                family: v.family,
                vcpus: v.vcpus,
                gpus: v.gpus.unwrap_or(0),
                memory_gb: v.memory_gb,
                low_priority_capable: v.low_priority_capable.unwrap_or(false),
                supported_compute_types: v.supported_compute_types.unwrap_or_default(),
            })
            .collect())
    }
}

/// Tags and properties as ARM returns them: string maps where a value may be `null`.
pub(crate) fn string_map(
    value: Option<BTreeMap<String, Option<serde_json::Value>>>,
) -> BTreeMap<String, String> {
    value
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match v {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some((k, s)),
            Some(other) => Some((k, other.to_string())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_uri_becomes_https() {
        let url = tracking_base("azureml://eastus2.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w?")
            .expect("url");
        assert_eq!(url.scheme(), "https");
        assert_eq!(url.host_str(), Some("eastus2.api.azureml.ms"));
        assert!(url.path().ends_with("/workspaces/w"));
        assert_eq!(url.query(), None);
    }

    #[test]
    fn vm_size_wire_names() {
        let body = r#"{"value":[{"name":"Standard_NC24ads_A100_v4","family":"StandardNCADSA100v4Family","vCPUs":24,"gpus":1,"memoryGB":220.0,"lowPriorityCapable":true,"premiumIO":true,"supportedComputeTypes":["AmlCompute","MIR"]}]}"#;
        let list: WireList<WireVmSize> = serde_json::from_str(body).expect("parse");
        assert_eq!(list.value[0].vcpus, Some(24));
        assert_eq!(list.value[0].gpus, Some(1));
        assert_eq!(list.value[0].memory_gb, Some(220.0));
    }
}
