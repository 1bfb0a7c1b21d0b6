//! Model versions in the workspace: register, read, archive.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::WorkspaceClient;
use super::error::{Error, Result};
use super::workspace::string_map;

/// What to register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersionSpec {
    /// `mlflow_model` (default in the operator), `custom_model`, `triton_model`.
    pub model_type: String,
    /// Where the files are, e.g. `azureml://jobs/{job}/outputs/trained_model`.
    pub model_uri: String,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Properties (add-only once created).
    pub properties: BTreeMap<String, String>,
    /// The job that produced the model (explicit lineage).
    pub job_name: Option<String>,
}

/// A workspace model version as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersion {
    /// ARM id (used as a deployment's `model`).
    pub id: String,
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Model type.
    pub model_type: Option<String>,
    /// Model URI.
    pub model_uri: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Properties.
    pub properties: BTreeMap<String, String>,
    /// Whether archived.
    pub archived: bool,
    /// Lineage job, when reported.
    pub job_name: Option<String>,
    /// Provisioning state, when reported.
    pub provisioning_state: Option<String>,
}

impl ModelVersion {
    /// The short asset id, `azureml:{name}:{version}`.
    pub fn asset_id(&self) -> String {
        format!("azureml:{}:{}", self.name, self.version)
    }
}

/// The PUT body for a model version (reference §5).
pub fn model_version_body(spec: &ModelVersionSpec) -> Value {
    let mut props = json!({
        "modelType": spec.model_type,
        "modelUri": spec.model_uri,
        "description": spec.description,
        "tags": spec.tags,
        "properties": spec.properties,
        "isAnonymous": false,
    });
    if let Some(job) = &spec.job_name {
        props["jobName"] = json!(job);
    }
    json!({ "properties": props })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireModelVersion {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    properties: WireModelProps,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireModelProps {
    model_type: Option<String>,
    model_uri: Option<String>,
    description: Option<String>,
    tags: Option<BTreeMap<String, Option<Value>>>,
    properties: Option<BTreeMap<String, Option<Value>>>,
    is_archived: Option<bool>,
    job_name: Option<String>,
    provisioning_state: Option<String>,
}

fn model_from_wire(w: WireModelVersion, name: &str, version: &str) -> ModelVersion {
    ModelVersion {
        id: w.id,
        name: name.to_string(),
        version: if w.name.is_empty() { version.to_string() } else { w.name },
        model_type: w.properties.model_type,
        model_uri: w.properties.model_uri,
        description: w.properties.description,
        tags: string_map(w.properties.tags),
        properties: string_map(w.properties.properties),
        archived: w.properties.is_archived.unwrap_or(false),
        job_name: w.properties.job_name,
        provisioning_state: w.properties.provisioning_state,
    }
}

/// Fields of a model version's `properties` a PUT may carry.
const WRITABLE: &[&str] = &[
    "description",
    "tags",
    "properties",
    "isArchived",
    "isAnonymous",
    "modelType",
    "modelUri",
    "jobName",
    "flavors",
    "stage",
];

impl WorkspaceClient {
    /// GET a model version; `None` if it does not exist.
    pub async fn get_model_version(&self, name: &str, version: &str) -> Result<Option<ModelVersion>> {
        const OP: &str = "get_model_version";
        let req = self.arm(OP, Method::GET, self.workspace_url(&["models", name, "versions", version]));
        match self.send_opt(req).await? {
            None => Ok(None),
            Some(resp) => Ok(Some(model_from_wire(resp.json(OP)?, name, version))),
        }
    }

    /// PUT a model version (synchronous). Versions are immutable apart from metadata: GET and
    /// compare first; a different `modelUri` for an existing version is refused by Azure.
    pub async fn create_model_version(
        &self,
        name: &str,
        version: &str,
        spec: &ModelVersionSpec,
    ) -> Result<ModelVersion> {
        const OP: &str = "create_model_version";
        let url = self.workspace_url(&["models", name, "versions", version]);
        let resp = self.send(self.arm(OP, Method::PUT, url).json(model_version_body(spec))).await?;
        Ok(model_from_wire(resp.json(OP)?, name, version))
    }

    /// Archives a model version (GET, set `isArchived`, PUT back: ARM has no archive action).
    /// Returns `false` when the version does not exist.
    pub async fn archive_model_version(&self, name: &str, version: &str) -> Result<bool> {
        const OP: &str = "archive_model_version";
        let url = self.workspace_url(&["models", name, "versions", version]);
        let Some(resp) = self.send_opt(self.arm(OP, Method::GET, url.clone())).await? else {
            return Ok(false);
        };
        let body: Value = resp.json(OP)?;
        let Some(props) = body.get("properties").and_then(Value::as_object) else {
            return Err(Error::Protocol { operation: OP, message: "model version has no properties".into() });
        };
        if props.get("isArchived") == Some(&Value::Bool(true)) {
            return Ok(true);
        }
        // Send back only the writable fields (as the SDK's update does), with isArchived set.
        let mut writable: serde_json::Map<String, Value> = props
            .iter()
            .filter(|(k, _)| WRITABLE.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        writable.insert("isArchived".into(), Value::Bool(true));
        let put = json!({ "properties": writable });
        self.send(self.arm(OP, Method::PUT, url).json(put)).await?;
        Ok(true)
    }
}
