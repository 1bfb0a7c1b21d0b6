//! Registry assets (models and pipeline components) of a system registry such as `azureml`,
//! read through registry discovery and the registry data plane.

use std::collections::BTreeMap;

use jiff::Timestamp;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::client::{Request, WorkspaceClient, lock};
use super::config::REGISTRY_API_VERSION;
use super::error::{Error, Result};
use super::workspace::string_map;

/// Where a registry's data plane lives (the discovery answer, cached per registry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RegistryLocation {
    /// `{primaryRegionResourceProviderUri}mferp/managementfrontend/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/registries/{name}`.
    base: Url,
    subscription_id: String,
}

/// A model version in a registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelAsset {
    /// Asset id, `azureml://registries/{registry}/models/{name}/versions/{version}`.
    pub id: String,
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Tags (string values; lists and dicts are encoded as text, see `api` parsing helpers).
    pub tags: BTreeMap<String, String>,
    /// Properties.
    pub properties: BTreeMap<String, String>,
    /// Whether the version is archived.
    pub archived: bool,
    /// `mlflow_model`, `custom_model`, ...
    pub model_type: Option<String>,
    /// Where the model files live.
    pub model_uri: Option<String>,
    /// Creation time.
    pub created_at: Option<Timestamp>,
}

/// One declared input of a component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentInput {
    /// Input name.
    pub name: String,
    /// Declared type: `string`, `integer`, `number`, `boolean`, `uri_file`, `uri_folder`,
    /// `mlflow_model`, `custom_model`, `mltable`, ...
    pub input_type: String,
    /// Whether it may be omitted.
    pub optional: bool,
    /// Default value, as text.
    pub default: Option<String>,
    /// Allowed values, as text (empty = any).
    pub enum_values: Vec<String>,
    /// Lower bound for numbers.
    pub min: Option<f64>,
    /// Upper bound for numbers.
    pub max: Option<f64>,
    /// Description.
    pub description: Option<String>,
}

/// One declared output of a component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentOutput {
    /// Output name.
    pub name: String,
    /// Declared type (`uri_folder`, `mlflow_model`, ...).
    pub output_type: String,
    /// Description.
    pub description: Option<String>,
}

/// A component version in a registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentAsset {
    /// Asset id, `azureml://registries/{registry}/components/{name}/versions/{version}`.
    pub id: String,
    /// Component name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Component type from the spec (`pipeline`, `command`).
    pub component_type: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Whether the version is archived.
    pub archived: bool,
    /// Declared inputs by name.
    pub inputs: BTreeMap<String, ComponentInput>,
    /// Declared outputs by name.
    pub outputs: BTreeMap<String, ComponentOutput>,
    /// Creation time.
    pub created_at: Option<Timestamp>,
}

/// The outcome of resolving "latest".
#[derive(Clone, Debug, PartialEq)]
pub enum Latest<T> {
    /// The newest non-archived version.
    Found(T),
    /// Versions exist but all are archived; carries the newest archived one.
    OnlyArchived(T),
    /// No such asset (no versions at all).
    NotFound,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDiscovery {
    #[serde(default)]
    subscription_id: String,
    #[serde(default)]
    resource_group: String,
    #[serde(default)]
    primary_region_resource_provider_uri: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAsset {
    #[serde(default)]
    name: String,
    #[serde(default)]
    properties: WireAssetProperties,
    #[serde(default)]
    system_data: Option<WireSystemData>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireAssetProperties {
    tags: Option<BTreeMap<String, Option<Value>>>,
    properties: Option<BTreeMap<String, Option<Value>>>,
    #[serde(default)]
    is_archived: Option<bool>,
    model_type: Option<String>,
    model_uri: Option<String>,
    component_spec: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireSystemData {
    pub created_at: Option<String>,
}

#[derive(Deserialize)]
struct WirePage {
    #[serde(default)]
    value: Vec<WireAsset>,
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Reads `componentSpec.inputs` / `.outputs` (the component YAML as JSON).
pub(crate) fn component_io(
    spec: &Value,
) -> (BTreeMap<String, ComponentInput>, BTreeMap<String, ComponentOutput>) {
    let mut inputs = BTreeMap::new();
    if let Some(map) = spec.get("inputs").and_then(Value::as_object) {
        for (name, def) in map {
            let enum_values = def
                .get("enum")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(text_of).collect())
                .unwrap_or_default();
            inputs.insert(
                name.clone(),
                ComponentInput {
                    name: name.clone(),
                    input_type: def.get("type").and_then(text_of).unwrap_or_else(|| "string".into()),
                    optional: flag(def.get("optional")),
                    default: def.get("default").and_then(text_of),
                    enum_values,
                    min: def.get("min").and_then(number_of),
                    max: def.get("max").and_then(number_of),
                    description: def.get("description").and_then(text_of),
                },
            );
        }
    }
    let mut outputs = BTreeMap::new();
    if let Some(map) = spec.get("outputs").and_then(Value::as_object) {
        for (name, def) in map {
            outputs.insert(
                name.clone(),
                ComponentOutput {
                    name: name.clone(),
                    output_type: def.get("type").and_then(text_of).unwrap_or_else(|| "uri_folder".into()),
                    description: def.get("description").and_then(text_of),
                },
            );
        }
    }
    (inputs, outputs)
}

fn created_at(sd: &Option<WireSystemData>) -> Option<Timestamp> {
    sd.as_ref().and_then(|s| s.created_at.as_deref()).and_then(|t| t.parse().ok())
}

/// A client for one registry (from [`WorkspaceClient::registry`]).
#[derive(Clone, Debug)]
pub struct RegistryClient {
    ws: WorkspaceClient,
    name: String,
    location: RegistryLocation,
}

impl WorkspaceClient {
    /// A client for the named registry; the discovery call is made once per registry and cached.
    pub async fn registry(&self, name: &str) -> Result<RegistryClient> {
        const OP: &str = "registry_discovery";
        let key = (self.cloud().registry_discovery.to_string(), name.to_string());
        if let Some(location) = lock(self.inner_registries()).get(&key) {
            return Ok(RegistryClient {
                ws: self.clone(),
                name: name.to_string(),
                location: location.clone(),
            });
        }
        let mut url = self.cloud().registry_discovery.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["registrymanagement", "v1.0", "registries", name, "discovery"]);
        }
        let resp =
            self.send(Request::new(OP, Method::GET, url).throttled(&format!("registry/{name}"))).await?;
        let d: WireDiscovery = resp.json(OP)?;
        let mut base = Url::parse(&d.primary_region_resource_provider_uri).map_err(|e| Error::Protocol {
            operation: OP,
            message: format!("primaryRegionResourceProviderUri is not a URL: {e}"),
        })?;
        if let Ok(mut path) = base.path_segments_mut() {
            path.pop_if_empty().extend([
                "mferp",
                "managementfrontend",
                "subscriptions",
                &d.subscription_id,
                "resourceGroups",
                &d.resource_group,
                "providers",
                "Microsoft.MachineLearningServices",
                "registries",
                name,
            ]);
        }
        let location = RegistryLocation { base, subscription_id: d.subscription_id };
        lock(self.inner_registries()).insert(key, location.clone());
        Ok(RegistryClient { ws: self.clone(), name: name.to_string(), location })
    }
}

impl RegistryClient {
    /// The registry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.location.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", REGISTRY_API_VERSION);
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn request(&self, op: &'static str, url: Url) -> Request {
        // Registry reads are not ARM requests, but a bucket keyed by the registry still spreads
        // bursts and honours the data plane's own 429s.
        Request::new(op, Method::GET, url).throttled(&format!("registry/{}", self.location.subscription_id))
    }

    fn model_from_wire(&self, w: WireAsset, name: &str) -> ModelAsset {
        let version = if w.name.is_empty() { String::new() } else { w.name };
        ModelAsset {
            id: format!("azureml://registries/{}/models/{}/versions/{}", self.name, name, version),
            name: name.to_string(),
            version,
            tags: string_map(w.properties.tags),
            properties: string_map(w.properties.properties),
            archived: w.properties.is_archived.unwrap_or(false),
            model_type: w.properties.model_type,
            model_uri: w.properties.model_uri,
            created_at: created_at(&w.system_data),
        }
    }

    fn component_from_wire(&self, w: WireAsset, name: &str) -> ComponentAsset {
        let spec = w.properties.component_spec.unwrap_or(Value::Null);
        let (inputs, outputs) = component_io(&spec);
        ComponentAsset {
            id: format!("azureml://registries/{}/components/{}/versions/{}", self.name, name, w.name),
            name: name.to_string(),
            version: w.name,
            component_type: spec.get("type").and_then(text_of),
            tags: string_map(w.properties.tags),
            archived: w.properties.is_archived.unwrap_or(false),
            inputs,
            outputs,
            created_at: created_at(&w.system_data),
        }
    }

    async fn get_version(
        &self,
        op: &'static str,
        kind: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<WireAsset>> {
        let url = self.url(&[kind, name, "versions", version], &[]);
        match self.ws.send_opt(self.request(op, url)).await? {
            None => Ok(None),
            Some(resp) => Ok(Some(resp.json(op)?)),
        }
    }

    /// Newest-first versions (the SDK's "latest" rule: most recently created).
    async fn list_versions(
        &self,
        op: &'static str,
        kind: &str,
        name: &str,
        view: &str,
        top: &str,
    ) -> Result<Vec<WireAsset>> {
        let url = self.url(
            &[kind, name, "versions"],
            &[("$orderBy", "createdtime desc"), ("$top", top), ("listViewType", view)],
        );
        match self.ws.send_opt(self.request(op, url)).await? {
            None => Ok(Vec::new()),
            Some(resp) => Ok(resp.json::<WirePage>(op)?.value),
        }
    }

    async fn latest(&self, op: &'static str, kind: &str, name: &str) -> Result<Latest<WireAsset>> {
        // The data plane's honouring of listViewType is not documented, so archived items are
        // filtered here too; a page of 10 leaves room for a few archived versions at the top.
        let active = self.list_versions(op, kind, name, "ActiveOnly", "10").await?;
        if let Some(found) = active.into_iter().find(|a| !a.properties.is_archived.unwrap_or(false)) {
            return Ok(Latest::Found(found));
        }
        let all = self.list_versions(op, kind, name, "All", "1").await?;
        Ok(match all.into_iter().next() {
            Some(archived) => Latest::OnlyArchived(archived),
            None => Latest::NotFound,
        })
    }

    /// One model version; `None` if it does not exist.
    pub async fn model_version(&self, name: &str, version: &str) -> Result<Option<ModelAsset>> {
        Ok(self
            .get_version("registry_model_version", "models", name, version)
            .await?
            .map(|w| self.model_from_wire(w, name)))
    }

    /// The newest non-archived model version, or why there is none.
    pub async fn latest_model_version(&self, name: &str) -> Result<Latest<ModelAsset>> {
        Ok(match self.latest("registry_latest_model_version", "models", name).await? {
            Latest::Found(w) => Latest::Found(self.model_from_wire(w, name)),
            Latest::OnlyArchived(w) => Latest::OnlyArchived(self.model_from_wire(w, name)),
            Latest::NotFound => Latest::NotFound,
        })
    }

    /// One component version; `None` if it does not exist.
    pub async fn component_version(&self, name: &str, version: &str) -> Result<Option<ComponentAsset>> {
        Ok(self
            .get_version("registry_component_version", "components", name, version)
            .await?
            .map(|w| self.component_from_wire(w, name)))
    }

    /// The newest non-archived component version, or why there is none.
    pub async fn latest_component_version(&self, name: &str) -> Result<Latest<ComponentAsset>> {
        Ok(match self.latest("registry_latest_component_version", "components", name).await? {
            Latest::Found(w) => Latest::Found(self.component_from_wire(w, name)),
            Latest::OnlyArchived(w) => Latest::OnlyArchived(self.component_from_wire(w, name)),
            Latest::NotFound => Latest::NotFound,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_inputs_keep_types_enums_and_bounds() {
        let spec = serde_json::json!({
            "type": "pipeline",
            "inputs": {
                "task_name": {"type": "string", "enum": ["ChatCompletion"], "default": "ChatCompletion"},
                "precision": {"type": "string", "enum": ["32", "16"], "default": "32", "optional": true},
                "num_train_epochs": {"type": "integer", "min": 1, "default": 1, "optional": true},
                "learning_rate": {"type": "number", "default": 2e-05, "optional": true},
                "train_file_path": {"type": "uri_file", "optional": true, "mode": "rw_mount"}
            },
            "outputs": {"mlflow_model_folder": {"type": "mlflow_model"}}
        });
        let (inputs, outputs) = component_io(&spec);
        assert!(!inputs["task_name"].optional);
        assert_eq!(inputs["precision"].enum_values, vec!["32", "16"]);
        assert_eq!(inputs["num_train_epochs"].min, Some(1.0));
        assert_eq!(inputs["num_train_epochs"].default.as_deref(), Some("1"));
        assert_eq!(inputs["train_file_path"].input_type, "uri_file");
        assert_eq!(outputs["mlflow_model_folder"].output_type, "mlflow_model");
    }
}
