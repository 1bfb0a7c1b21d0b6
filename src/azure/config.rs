//! Connection settings: which cloud, which workspace, and how to authenticate.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

/// The api-version used for workspace (ARM) calls unless a [`ConnectionConfig`] names another one.
///
/// 2025-12-01 is the newest stable version with published REST reference pages; the 2026-03-01 and
/// 2026-05-01 schemas are identical for the resources used here, so either can be configured.
pub const DEFAULT_ARM_API_VERSION: &str = "2025-12-01";

/// The api-version of the registry data plane; the only one the registry front end serves.
pub const REGISTRY_API_VERSION: &str = "2021-10-01-dataplanepreview";

/// The base URLs of one Azure cloud.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudEndpoints {
    /// Azure Resource Manager, also the token audience for every control-plane call.
    pub resource_manager: Url,
    /// Microsoft Entra ID authority host, where tokens are requested.
    pub authority_host: Url,
    /// Host of the registry discovery service that resolves a registry name to its data-plane host.
    pub registry_discovery: Url,
    /// Audience of tokens for `AADToken` scoring (the Azure ML resource id).
    pub ml_resource: Url,
}

impl CloudEndpoints {
    /// Azure's public cloud.
    pub fn azure_public() -> Self {
        Self::from_static(
            "https://management.azure.com/",
            "https://login.microsoftonline.com/",
            "https://eastus.api.azureml.ms/",
            "https://ml.azure.com/",
        )
    }

    /// Azure operated by 21Vianet (China).
    pub fn azure_china() -> Self {
        Self::from_static(
            "https://management.chinacloudapi.cn/",
            "https://login.chinacloudapi.cn/",
            "https://chinaeast2.api.ml.azure.cn/",
            "https://ml.azure.cn/",
        )
    }

    /// Azure US Government.
    pub fn azure_us_government() -> Self {
        Self::from_static(
            "https://management.usgovcloudapi.net/",
            "https://login.microsoftonline.us/",
            "https://usgovarizona.api.ml.azure.us/",
            "https://ml.azure.us/",
        )
    }

    /// A custom cloud (sovereign cloud, private endpoint, or the emulator); the ML resource id
    /// defaults to the resource manager URL, which is what the emulator accepts.
    pub fn custom(resource_manager: Url, authority_host: Url, registry_discovery: Url) -> Self {
        let ml_resource = resource_manager.clone();
        Self { resource_manager, authority_host, registry_discovery, ml_resource }
    }

    fn from_static(arm: &str, authority: &str, discovery: &str, ml: &str) -> Self {
        // These literals are checked by the `cloud_tables_parse` test, so parsing cannot fail at runtime.
        let parse = |s: &str| Url::parse(s).unwrap_or_else(|_| unreachable!("static URL {s} is valid"));
        Self {
            resource_manager: parse(arm),
            authority_host: parse(authority),
            registry_discovery: parse(discovery),
            ml_resource: parse(ml),
        }
    }

    /// The OAuth scope for ARM, registry and MLflow calls: the resource manager URL without its
    /// trailing slash, plus `/.default` (what the SDK does).
    pub fn arm_scope(&self) -> String {
        format!("{}/.default", self.resource_manager.as_str().trim_end_matches('/'))
    }

    /// The OAuth scope for `AADToken` scoring.
    pub fn ml_scope(&self) -> String {
        format!("{}/.default", self.ml_resource.as_str().trim_end_matches('/'))
    }
}

/// A secret string (client secret, endpoint key) whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value; call only where it is sent over the wire or written to a Kubernetes Secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// How the operator authenticates to Microsoft Entra ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Credential {
    /// AKS workload identity: a federated service-account token exchanged for an Entra token.
    /// `None` fields fall back to `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity {
        /// Application (client) id.
        client_id: Option<String>,
        /// Directory (tenant) id.
        tenant_id: Option<String>,
        /// Path of the projected service-account token.
        token_file: Option<PathBuf>,
    },
    /// The managed identity of the node or pod; a client id selects a user-assigned identity.
    ManagedIdentity {
        /// Client id of a user-assigned identity; `None` means the system-assigned identity.
        client_id: Option<String>,
    },
    /// A service principal with a client secret.
    ClientSecret {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The client secret.
        secret: SecretString,
    },
}

/// Where a workspace lives in ARM.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceCoordinates {
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Workspace name.
    pub workspace_name: String,
}

impl WorkspaceCoordinates {
    /// The workspace's ARM resource id.
    pub fn arm_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{}",
            self.subscription_id, self.resource_group, self.workspace_name
        )
    }
}

/// Everything needed to talk to one workspace: the output of a `Workspace` custom resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionConfig {
    /// Cloud endpoints.
    pub cloud: CloudEndpoints,
    /// Authentication.
    pub credential: Credential,
    /// Extra PEM root certificates trusted for every call (token, ARM, registry, scoring), added to
    /// the system's roots.
    pub ca_bundle_pem: Option<String>,
    /// The workspace.
    pub workspace: WorkspaceCoordinates,
    /// api-version for ARM calls; `None` means [`DEFAULT_ARM_API_VERSION`].
    pub arm_api_version: Option<String>,
}

impl ConnectionConfig {
    /// The ARM api-version in effect.
    pub fn arm_api_version(&self) -> &str {
        self.arm_api_version.as_deref().unwrap_or(DEFAULT_ARM_API_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_tables_parse() {
        for cloud in [
            CloudEndpoints::azure_public(),
            CloudEndpoints::azure_china(),
            CloudEndpoints::azure_us_government(),
        ] {
            assert_eq!(cloud.resource_manager.scheme(), "https");
            assert_eq!(cloud.authority_host.scheme(), "https");
        }
    }

    #[test]
    fn arm_scope_drops_trailing_slash() {
        assert_eq!(CloudEndpoints::azure_public().arm_scope(), "https://management.azure.com/.default");
        assert_eq!(CloudEndpoints::azure_china().ml_scope(), "https://ml.azure.cn/.default");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let cred = Credential::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: SecretString::new("hunter2"),
        };
        let text = format!("{cred:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redacted"));
    }
}
