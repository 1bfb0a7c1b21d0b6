//! AmlCompute clusters: read one, create one (long-running).

use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::WorkspaceClient;
use super::common::{ProvisioningState, iso_duration, parse_iso_duration};
use super::error::Result;
use super::lro::{Operation, OperationKind};

/// Node priority of a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmPriority {
    /// Dedicated nodes.
    #[default]
    Dedicated,
    /// Low-priority (preemptible) nodes.
    LowPriority,
}

impl VmPriority {
    fn as_wire(self) -> &'static str {
        match self {
            VmPriority::Dedicated => "Dedicated",
            VmPriority::LowPriority => "LowPriority",
        }
    }
}

/// Autoscale bounds of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSettings {
    /// Minimum nodes.
    pub min_nodes: u32,
    /// Maximum nodes.
    pub max_nodes: u32,
    /// Idle time before a node is released.
    pub idle_seconds_before_scale_down: Option<u64>,
}

/// A compute target as observed in the workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Compute {
    /// Name.
    pub name: String,
    /// `AmlCompute`, `ComputeInstance`, `Kubernetes`, ...
    pub compute_type: String,
    /// Region.
    pub location: Option<String>,
    /// VM size (compare case-insensitively).
    pub vm_size: Option<String>,
    /// Node priority as reported (`Dedicated`/`LowPriority`).
    pub vm_priority: Option<String>,
    /// ARM provisioning state.
    pub provisioning_state: ProvisioningState,
    /// Provisioning error messages, when Failed.
    pub provisioning_errors: Vec<String>,
    /// Autoscale bounds.
    pub scale: Option<ScaleSettings>,
    /// Nodes currently allocated.
    pub current_node_count: Option<u32>,
    /// `Steady` or `Resizing`.
    pub allocation_state: Option<String>,
}

/// What to create: an AmlCompute cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlComputeSpec {
    /// Region (the workspace's location).
    pub location: String,
    /// VM size.
    pub vm_size: String,
    /// Node priority.
    #[serde(default)]
    pub vm_priority: VmPriority,
    /// Minimum nodes.
    pub min_nodes: u32,
    /// Maximum nodes.
    pub max_nodes: u32,
    /// Idle time before scale-down; `None` leaves the service default.
    pub idle_seconds_before_scale_down: Option<u64>,
}

/// The PUT body for an AmlCompute cluster (reference §3.3).
pub fn compute_body(spec: &AmlComputeSpec) -> Value {
    let mut scale = json!({ "minNodeCount": spec.min_nodes, "maxNodeCount": spec.max_nodes });
    if let Some(idle) = spec.idle_seconds_before_scale_down {
        scale["nodeIdleTimeBeforeScaleDown"] = json!(iso_duration(Duration::from_secs(idle)));
    }
    json!({
        "location": spec.location,
        "properties": {
            "computeType": "AmlCompute",
            "properties": {
                "vmSize": spec.vm_size,
                "vmPriority": spec.vm_priority.as_wire(),
                "scaleSettings": scale,
            }
        }
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCompute {
    #[serde(default)]
    name: String,
    location: Option<String>,
    #[serde(default)]
    properties: WireComputeProperties,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireComputeProperties {
    #[serde(default)]
    compute_type: String,
    provisioning_state: Option<String>,
    #[serde(default)]
    provisioning_errors: Option<Vec<WireErrorResponse>>,
    #[serde(default)]
    properties: Option<WireAmlProperties>,
}

#[derive(Deserialize)]
struct WireErrorResponse {
    error: Option<super::error::ErrorDetail>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireAmlProperties {
    vm_size: Option<String>,
    vm_priority: Option<String>,
    scale_settings: Option<WireScale>,
    current_node_count: Option<u32>,
    allocation_state: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireScale {
    #[serde(default)]
    min_node_count: u32,
    #[serde(default)]
    max_node_count: u32,
    node_idle_time_before_scale_down: Option<String>,
}

fn compute_from_wire(w: WireCompute) -> Compute {
    let aml = w.properties.properties.unwrap_or_default();
    Compute {
        name: w.name,
        compute_type: w.properties.compute_type,
        location: w.location,
        vm_size: aml.vm_size,
        vm_priority: aml.vm_priority,
        provisioning_state: w.properties.provisioning_state.unwrap_or_default().into(),
        provisioning_errors: w
            .properties
            .provisioning_errors
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.error.map(|d| d.full_message()))
            .collect(),
        scale: aml.scale_settings.map(|s| ScaleSettings {
            min_nodes: s.min_node_count,
            max_nodes: s.max_node_count,
            idle_seconds_before_scale_down: s
                .node_idle_time_before_scale_down
                .as_deref()
                .and_then(parse_iso_duration)
                .map(|d| d.as_secs()),
        }),
        current_node_count: aml.current_node_count,
        allocation_state: aml.allocation_state,
    }
}

impl WorkspaceClient {
    /// GET a compute; `None` if it does not exist.
    pub async fn get_compute(&self, name: &str) -> Result<Option<Compute>> {
        const OP: &str = "get_compute";
        let req = self.arm(OP, Method::GET, self.workspace_url(&["computes", name]));
        match self.send_opt(req).await? {
            None => Ok(None),
            Some(resp) => Ok(Some(compute_from_wire(resp.json(OP)?))),
        }
    }

    /// PUT an AmlCompute cluster; returns the operation to poll. PUT replaces an existing compute,
    /// so callers GET first and create only when it is absent.
    pub async fn create_compute(&self, name: &str, spec: &AmlComputeSpec) -> Result<Operation> {
        const OP: &str = "create_compute";
        let url = self.workspace_url(&["computes", name]);
        let resp = self.send(self.arm(OP, Method::PUT, url.clone()).json(compute_body(spec))).await?;
        Ok(Operation::from_response(OperationKind::CreateOrUpdate, OP, url.as_str(), &resp.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_compute_fields() {
        let body = r#"{"id":"/x","name":"gpu-cluster","type":"Microsoft.MachineLearningServices/workspaces/computes","location":"eastus2",
          "properties":{"computeType":"AmlCompute","provisioningState":"Succeeded","provisioningErrors":null,
            "properties":{"vmSize":"STANDARD_NC24ADS_A100_V4","vmPriority":"Dedicated",
              "scaleSettings":{"maxNodeCount":2,"minNodeCount":0,"nodeIdleTimeBeforeScaleDown":"PT2M"},
              "allocationState":"Steady","currentNodeCount":0}}}"#;
        let c = compute_from_wire(serde_json::from_str(body).expect("parse"));
        assert_eq!(c.vm_size.as_deref(), Some("STANDARD_NC24ADS_A100_V4"));
        assert_eq!(c.provisioning_state, ProvisioningState::Succeeded);
        assert_eq!(
            c.scale,
            Some(ScaleSettings { min_nodes: 0, max_nodes: 2, idle_seconds_before_scale_down: Some(120) })
        );
    }

    #[test]
    fn failed_compute_keeps_errors() {
        let body = r#"{"name":"broken","properties":{"computeType":"AmlCompute","provisioningState":"Failed",
          "provisioningErrors":[{"error":{"code":"QuotaExceeded","message":"Quota exceeded for NCADSA100v4"}}]}}"#;
        let c = compute_from_wire(serde_json::from_str(body).expect("parse"));
        assert_eq!(c.provisioning_state, ProvisioningState::Failed);
        assert_eq!(c.provisioning_errors, vec!["Quota exceeded for NCADSA100v4".to_string()]);
    }
}
