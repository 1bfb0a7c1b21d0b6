//! Managed online endpoints and deployments: create/update/delete (long-running), keys, logs.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::client::WorkspaceClient;
use super::common::{ProvisioningState, iso_duration, parse_iso_duration};
use super::config::SecretString;
use super::error::Result;
use super::lro::{Operation, OperationKind};
use super::workspace::string_map;

/// How callers authenticate to the scoring URI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMode {
    /// Endpoint keys.
    #[default]
    Key,
    /// Azure ML tokens from the endpoint's `token` action.
    AMLToken,
    /// Microsoft Entra tokens.
    AADToken,
}

impl AuthMode {
    fn as_wire(self) -> &'static str {
        match self {
            AuthMode::Key => "Key",
            AuthMode::AMLToken => "AMLToken",
            AuthMode::AADToken => "AADToken",
        }
    }

    fn from_wire(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "amltoken" => AuthMode::AMLToken,
            "aadtoken" => AuthMode::AADToken,
            _ => AuthMode::Key,
        }
    }
}

/// What an endpoint should look like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineEndpointSpec {
    /// Region (the workspace's location).
    pub location: String,
    /// Scoring authentication.
    pub auth_mode: AuthMode,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Traffic per deployment (percent; sums to 100 or empty).
    pub traffic: BTreeMap<String, u32>,
    /// Mirrored traffic per deployment (percent, ≤ 50 in total).
    pub mirror_traffic: BTreeMap<String, u32>,
}

/// An endpoint as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineEndpoint {
    /// ARM id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Region.
    pub location: Option<String>,
    /// Scoring authentication.
    pub auth_mode: AuthMode,
    /// Provisioning state.
    pub provisioning_state: ProvisioningState,
    /// Scoring URI.
    pub scoring_uri: Option<String>,
    /// Swagger URI.
    pub swagger_uri: Option<String>,
    /// Traffic per deployment.
    pub traffic: BTreeMap<String, u32>,
    /// Mirrored traffic per deployment.
    pub mirror_traffic: BTreeMap<String, u32>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Endpoint keys (secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointKeys {
    /// Primary key.
    pub primary_key: SecretString,
    /// Secondary key.
    pub secondary_key: SecretString,
}

/// A scoring token of an `AMLToken` endpoint (secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointToken {
    /// The bearer token.
    pub access_token: SecretString,
    /// When it expires.
    pub expires_at: Option<jiff::Timestamp>,
    /// When to fetch a new one.
    pub refresh_after: Option<jiff::Timestamp>,
}

/// Health probe settings; unset fields take the service defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSettings {
    /// Delay before the first probe.
    pub initial_delay_seconds: Option<u64>,
    /// Interval between probes.
    pub period_seconds: Option<u64>,
    /// Probe timeout.
    pub timeout_seconds: Option<u64>,
    /// Failures before the container is restarted / marked unready.
    pub failure_threshold: Option<u32>,
    /// Successes before it is marked ready.
    pub success_threshold: Option<u32>,
}

/// Request handling settings of a deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSettings {
    /// Scoring request timeout in milliseconds.
    pub request_timeout_ms: Option<u64>,
    /// Concurrent requests per instance.
    pub max_concurrent_requests_per_instance: Option<u32>,
}

/// What a managed deployment should look like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineDeploymentSpec {
    /// Region (the workspace's location).
    pub location: String,
    /// Model: ARM id or asset id.
    pub model: String,
    /// VM size.
    pub instance_type: String,
    /// Instance count.
    pub instance_count: u32,
    /// Liveness probe.
    pub liveness_probe: Option<ProbeSettings>,
    /// Readiness probe.
    pub readiness_probe: Option<ProbeSettings>,
    /// Request settings.
    pub request_settings: Option<RequestSettings>,
    /// Environment variables.
    pub environment_variables: BTreeMap<String, String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Application Insights.
    pub app_insights_enabled: bool,
}

/// A deployment as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineDeployment {
    /// ARM id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Provisioning state.
    pub provisioning_state: ProvisioningState,
    /// Model id.
    pub model: Option<String>,
    /// VM size.
    pub instance_type: Option<String>,
    /// Instance count (`sku.capacity`).
    pub instance_count: Option<u32>,
    /// Liveness probe.
    pub liveness_probe: Option<ProbeSettings>,
    /// Readiness probe.
    pub readiness_probe: Option<ProbeSettings>,
    /// Request settings.
    pub request_settings: Option<RequestSettings>,
    /// Environment variables.
    pub environment_variables: BTreeMap<String, String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Which container's logs to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerType {
    /// The scoring server.
    #[default]
    InferenceServer,
    /// The model download init container.
    StorageInitializer,
}

/// The PUT body of an endpoint (reference §6.1).
pub fn online_endpoint_body(spec: &OnlineEndpointSpec) -> Value {
    let mut props = json!({
        "authMode": spec.auth_mode.as_wire(),
        "description": spec.description,
        "traffic": spec.traffic,
    });
    if !spec.mirror_traffic.is_empty() {
        props["mirrorTraffic"] = json!(spec.mirror_traffic);
    }
    json!({
        "location": spec.location,
        "identity": { "type": "SystemAssigned" },
        "tags": spec.tags,
        "properties": props,
    })
}

fn probe_body(p: &ProbeSettings) -> Value {
    let mut m = Map::new();
    let mut dur = |k: &str, v: Option<u64>| {
        if let Some(s) = v {
            m.insert(k.into(), json!(iso_duration(Duration::from_secs(s))));
        }
    };
    dur("initialDelay", p.initial_delay_seconds);
    dur("period", p.period_seconds);
    dur("timeout", p.timeout_seconds);
    if let Some(v) = p.failure_threshold {
        m.insert("failureThreshold".into(), json!(v));
    }
    if let Some(v) = p.success_threshold {
        m.insert("successThreshold".into(), json!(v));
    }
    Value::Object(m)
}

/// The PUT body of a managed deployment (reference §7.1).
pub fn online_deployment_body(spec: &OnlineDeploymentSpec) -> Value {
    let mut props = json!({
        "endpointComputeType": "Managed",
        "model": spec.model,
        "instanceType": spec.instance_type,
        "scaleSettings": { "scaleType": "Default" },
        "appInsightsEnabled": spec.app_insights_enabled,
    });
    if let Some(d) = &spec.description {
        props["description"] = json!(d);
    }
    if let Some(p) = &spec.liveness_probe {
        props["livenessProbe"] = probe_body(p);
    }
    if let Some(p) = &spec.readiness_probe {
        props["readinessProbe"] = probe_body(p);
    }
    if let Some(r) = &spec.request_settings {
        let mut m = Map::new();
        if let Some(ms) = r.request_timeout_ms {
            m.insert("requestTimeout".into(), json!(iso_duration(Duration::from_millis(ms))));
        }
        if let Some(n) = r.max_concurrent_requests_per_instance {
            m.insert("maxConcurrentRequestsPerInstance".into(), json!(n));
        }
        props["requestSettings"] = Value::Object(m);
    }
    if !spec.environment_variables.is_empty() {
        props["environmentVariables"] = json!(spec.environment_variables);
    }
    json!({
        "location": spec.location,
        "tags": spec.tags,
        "sku": { "name": "Default", "capacity": spec.instance_count },
        "properties": props,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEndpoint {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    location: Option<String>,
    tags: Option<BTreeMap<String, Option<Value>>>,
    #[serde(default)]
    properties: WireEndpointProps,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireEndpointProps {
    auth_mode: Option<String>,
    provisioning_state: Option<String>,
    scoring_uri: Option<String>,
    swagger_uri: Option<String>,
    traffic: Option<BTreeMap<String, u32>>,
    mirror_traffic: Option<BTreeMap<String, u32>>,
    description: Option<String>,
}

fn endpoint_from_wire(w: WireEndpoint) -> OnlineEndpoint {
    OnlineEndpoint {
        id: w.id,
        name: w.name,
        location: w.location,
        auth_mode: AuthMode::from_wire(w.properties.auth_mode.as_deref().unwrap_or("Key")),
        provisioning_state: w.properties.provisioning_state.unwrap_or_default().into(),
        scoring_uri: w.properties.scoring_uri,
        swagger_uri: w.properties.swagger_uri,
        traffic: w.properties.traffic.unwrap_or_default(),
        mirror_traffic: w.properties.mirror_traffic.unwrap_or_default(),
        description: w.properties.description,
        tags: string_map(w.tags),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDeployment {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    tags: Option<BTreeMap<String, Option<Value>>>,
    sku: Option<WireSku>,
    #[serde(default)]
    properties: WireDeploymentProps,
}

#[derive(Deserialize)]
struct WireSku {
    capacity: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireDeploymentProps {
    provisioning_state: Option<String>,
    model: Option<String>,
    instance_type: Option<String>,
    liveness_probe: Option<WireProbe>,
    readiness_probe: Option<WireProbe>,
    request_settings: Option<WireRequestSettings>,
    environment_variables: Option<BTreeMap<String, Option<Value>>>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireProbe {
    initial_delay: Option<String>,
    period: Option<String>,
    timeout: Option<String>,
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequestSettings {
    request_timeout: Option<String>,
    max_concurrent_requests_per_instance: Option<u32>,
}

fn secs(v: Option<&str>) -> Option<u64> {
    v.and_then(parse_iso_duration).map(|d| d.as_secs())
}

fn probe_from_wire(p: WireProbe) -> ProbeSettings {
    ProbeSettings {
        initial_delay_seconds: secs(p.initial_delay.as_deref()),
        period_seconds: secs(p.period.as_deref()),
        timeout_seconds: secs(p.timeout.as_deref()),
        failure_threshold: p.failure_threshold,
        success_threshold: p.success_threshold,
    }
}

fn deployment_from_wire(w: WireDeployment) -> OnlineDeployment {
    let p = w.properties;
    OnlineDeployment {
        id: w.id,
        name: w.name,
        provisioning_state: p.provisioning_state.unwrap_or_default().into(),
        model: p.model,
        instance_type: p.instance_type,
        instance_count: w.sku.and_then(|s| s.capacity),
        liveness_probe: p.liveness_probe.map(probe_from_wire),
        readiness_probe: p.readiness_probe.map(probe_from_wire),
        request_settings: p.request_settings.map(|r| RequestSettings {
            request_timeout_ms: r
                .request_timeout
                .as_deref()
                .and_then(parse_iso_duration)
                .map(|d| d.as_millis() as u64),
            max_concurrent_requests_per_instance: r.max_concurrent_requests_per_instance,
        }),
        environment_variables: string_map(p.environment_variables),
        description: p.description,
        tags: string_map(w.tags),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireKeys {
    primary_key: Option<String>,
    secondary_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireToken {
    access_token: Option<String>,
    expiry_time_utc: Option<i64>,
    refresh_after_time_utc: Option<i64>,
}

#[derive(Deserialize)]
struct WireLogs {
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePage<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    next_link: Option<String>,
}

impl WorkspaceClient {
    /// GET an endpoint; `None` if it does not exist.
    pub async fn get_online_endpoint(&self, name: &str) -> Result<Option<OnlineEndpoint>> {
        const OP: &str = "get_online_endpoint";
        let req = self.arm(OP, Method::GET, self.workspace_url(&["onlineEndpoints", name]));
        match self.send_opt(req).await? {
            None => Ok(None),
            Some(resp) => Ok(Some(endpoint_from_wire(resp.json(OP)?))),
        }
    }

    /// PUT an endpoint (create, or full update incl. traffic and mirror traffic).
    pub async fn put_online_endpoint(&self, name: &str, spec: &OnlineEndpointSpec) -> Result<Operation> {
        const OP: &str = "put_online_endpoint";
        let url = self.workspace_url(&["onlineEndpoints", name]);
        let resp = self.send(self.arm(OP, Method::PUT, url.clone()).json(online_endpoint_body(spec))).await?;
        Ok(Operation::from_response(OperationKind::CreateOrUpdate, OP, url.as_str(), &resp.headers))
    }

    /// DELETE an endpoint (and its deployments). `None` when it was already gone.
    pub async fn delete_online_endpoint(&self, name: &str) -> Result<Option<Operation>> {
        const OP: &str = "delete_online_endpoint";
        let url = self.workspace_url(&["onlineEndpoints", name]);
        self.delete(OP, url).await
    }

    async fn delete(&self, op: &'static str, url: url::Url) -> Result<Option<Operation>> {
        let Some(resp) = self.send_opt(self.arm(op, Method::DELETE, url.clone())).await? else {
            return Ok(None);
        };
        match resp.status {
            // 204: nothing to delete; 200: deleted synchronously.
            204 => Ok(None),
            200 if !resp.headers.contains_key("location")
                && !resp.headers.contains_key("azure-asyncoperation") =>
            {
                Ok(None)
            }
            _ => Ok(Some(Operation::from_response(OperationKind::Delete, op, url.as_str(), &resp.headers))),
        }
    }

    /// POST listKeys. Never log the result.
    pub async fn list_endpoint_keys(&self, name: &str) -> Result<EndpointKeys> {
        const OP: &str = "list_endpoint_keys";
        let url = self.workspace_url(&["onlineEndpoints", name, "listKeys"]);
        let resp = self.send(self.arm(OP, Method::POST, url)).await?;
        let k: WireKeys = resp.json(OP)?;
        Ok(EndpointKeys {
            primary_key: SecretString::new(k.primary_key.unwrap_or_default()),
            secondary_key: SecretString::new(k.secondary_key.unwrap_or_default()),
        })
    }

    /// POST token: a scoring token for an `AMLToken` endpoint. Never log the result.
    pub async fn get_endpoint_token(&self, name: &str) -> Result<EndpointToken> {
        const OP: &str = "get_endpoint_token";
        let url = self.workspace_url(&["onlineEndpoints", name, "token"]);
        let resp = self.send(self.arm(OP, Method::POST, url)).await?;
        let t: WireToken = resp.json(OP)?;
        let at = |secs: Option<i64>| secs.and_then(|s| jiff::Timestamp::from_second(s).ok());
        Ok(EndpointToken {
            access_token: SecretString::new(t.access_token.unwrap_or_default()),
            expires_at: at(t.expiry_time_utc),
            refresh_after: at(t.refresh_after_time_utc),
        })
    }

    /// GET a deployment; `None` if it does not exist.
    pub async fn get_online_deployment(
        &self,
        endpoint: &str,
        name: &str,
    ) -> Result<Option<OnlineDeployment>> {
        const OP: &str = "get_online_deployment";
        let url = self.workspace_url(&["onlineEndpoints", endpoint, "deployments", name]);
        match self.send_opt(self.arm(OP, Method::GET, url)).await? {
            None => Ok(None),
            Some(resp) => Ok(Some(deployment_from_wire(resp.json(OP)?))),
        }
    }

    /// All deployments of an endpoint (follows `nextLink`); empty when the endpoint is gone.
    pub async fn list_online_deployments(&self, endpoint: &str) -> Result<Vec<OnlineDeployment>> {
        const OP: &str = "list_online_deployments";
        let mut url = self.workspace_url(&["onlineEndpoints", endpoint, "deployments"]);
        let mut out = Vec::new();
        for _ in 0..50 {
            let Some(resp) = self.send_opt(self.arm(OP, Method::GET, url.clone())).await? else {
                break;
            };
            let page: WirePage<WireDeployment> = resp.json(OP)?;
            out.extend(page.value.into_iter().map(deployment_from_wire));
            match page.next_link.as_deref().map(url::Url::parse) {
                Some(Ok(next)) => url = next,
                _ => break,
            }
        }
        Ok(out)
    }

    /// PUT a managed deployment.
    pub async fn put_online_deployment(
        &self,
        endpoint: &str,
        name: &str,
        spec: &OnlineDeploymentSpec,
    ) -> Result<Operation> {
        const OP: &str = "put_online_deployment";
        let url = self.workspace_url(&["onlineEndpoints", endpoint, "deployments", name]);
        let resp =
            self.send(self.arm(OP, Method::PUT, url.clone()).json(online_deployment_body(spec))).await?;
        Ok(Operation::from_response(OperationKind::CreateOrUpdate, OP, url.as_str(), &resp.headers))
    }

    /// DELETE a deployment (its traffic must be 0 first). `None` when it was already gone.
    pub async fn delete_online_deployment(&self, endpoint: &str, name: &str) -> Result<Option<Operation>> {
        const OP: &str = "delete_online_deployment";
        let url = self.workspace_url(&["onlineEndpoints", endpoint, "deployments", name]);
        self.delete(OP, url).await
    }

    /// POST getLogs: the last `tail` lines of a deployment container.
    pub async fn get_deployment_logs(
        &self,
        endpoint: &str,
        name: &str,
        container: ContainerType,
        tail: u32,
    ) -> Result<String> {
        const OP: &str = "get_deployment_logs";
        let url = self.workspace_url(&["onlineEndpoints", endpoint, "deployments", name, "getLogs"]);
        let container = match container {
            ContainerType::InferenceServer => "InferenceServer",
            ContainerType::StorageInitializer => "StorageInitializer",
        };
        let body = json!({ "containerType": container, "tail": tail });
        let resp = self.send(self.arm(OP, Method::POST, url).json(body)).await?;
        Ok(resp.json::<WireLogs>(OP)?.content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deployment_fields() {
        let body = r#"{"id":"/d","name":"demo","sku":{"name":"Default","capacity":1},
          "properties":{"endpointComputeType":"Managed","provisioningState":"Succeeded","model":"/m/versions/1",
            "instanceType":"Standard_NC6s_v3","livenessProbe":{"initialDelay":"PT10M","period":"PT10S"},
            "requestSettings":{"requestTimeout":"PT1M30S","maxConcurrentRequestsPerInstance":1}}}"#;
        let d = deployment_from_wire(serde_json::from_str(body).expect("parse"));
        assert_eq!(d.instance_count, Some(1));
        assert_eq!(d.liveness_probe.as_ref().and_then(|p| p.initial_delay_seconds), Some(600));
        assert_eq!(d.request_settings.as_ref().and_then(|r| r.request_timeout_ms), Some(90_000));
        assert_eq!(d.provisioning_state, ProvisioningState::Succeeded);
    }

    #[test]
    fn reads_endpoint_fields() {
        let body = r#"{"id":"/e","name":"ep","location":"eastus2","identity":{"type":"SystemAssigned"},
          "properties":{"authMode":"Key","provisioningState":"Creating","scoringUri":"https://ep.eastus2.inference.ml.azure.com/score",
            "traffic":{"demo":100},"keys":null}}"#;
        let e = endpoint_from_wire(serde_json::from_str(body).expect("parse"));
        assert_eq!(e.traffic.get("demo"), Some(&100));
        assert_eq!(e.auth_mode, AuthMode::Key);
        assert!(e.provisioning_state.is_modifying());
    }
}
