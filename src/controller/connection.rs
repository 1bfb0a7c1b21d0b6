//! From a `Workspace` resource (and the Secrets it names) to an Azure ML workspace client.
//!
//! Secrets are read from the Workspace's own namespace only, so a resource can never borrow another
//! namespace's credentials. Dependent resources reuse what was read for a short while (`Policy::secret_reuse`),
//! so a pass costs one Workspace read instead of three API calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::{Context, Error, Result};
use crate::api::conditions::{self, Health, reasons};
use crate::api::workspace::{Cloud, CredentialType};
use crate::api::{SecretKeyRef, Workspace, WorkspaceRef};
use crate::azure::{
    CloudEndpoints, ConnectionConfig, Credential, SecretString, WorkspaceClient, WorkspaceCoordinates,
};

/// Why a Workspace's spec cannot become a connection: a Stalled reason and a message saying what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub reason: &'static str,
    pub message: String,
}

impl ConfigProblem {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// Builds the connection settings of a Workspace, reading the Secrets it names.
pub async fn connection_config(
    client: &Client,
    ws: &Workspace,
) -> Result<Result<ConnectionConfig, ConfigProblem>> {
    let ns = ws.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = match &ws.spec.credential.secret_ref {
        Some(r) if ws.spec.credential.type_ == CredentialType::ClientSecret => {
            match read_key(&secrets, r).await? {
                Ok(v) => Some(v),
                Err(p) => return Ok(Err(p)),
            }
        }
        _ => None,
    };
    let ca_bundle = match &ws.spec.ca_bundle_secret_ref {
        Some(r) => match read_key(&secrets, r).await? {
            Ok(v) => Some(v),
            Err(p) => return Ok(Err(p)),
        },
        None => None,
    };
    Ok(build_config(ws, secret, ca_bundle))
}

/// The pure part of [`connection_config`]: spec + secret values → settings.
pub fn build_config(
    ws: &Workspace,
    client_secret: Option<String>,
    ca_bundle: Option<String>,
) -> Result<ConnectionConfig, ConfigProblem> {
    let spec = &ws.spec;
    let cloud = match spec.cloud {
        Cloud::AzurePublic => CloudEndpoints::azure_public(),
        Cloud::AzureChina => CloudEndpoints::azure_china(),
        Cloud::AzureUSGovernment => CloudEndpoints::azure_us_government(),
        Cloud::Custom => {
            let Some(e) = &spec.endpoints else {
                return Err(ConfigProblem::new(
                    reasons::AZURE_REJECTED,
                    "spec.endpoints is required with cloud Custom; add resourceManager, authorityHost and registryDiscovery",
                ));
            };
            let parse = |field: &str, v: &str| {
                url::Url::parse(v).map_err(|e| {
                    ConfigProblem::new(
                        reasons::AZURE_REJECTED,
                        format!("spec.endpoints.{field} is not a URL ({e}); fix it"),
                    )
                })
            };
            CloudEndpoints::custom(
                parse("resourceManager", &e.resource_manager)?,
                parse("authorityHost", &e.authority_host)?,
                parse("registryDiscovery", &e.registry_discovery)?,
            )
        }
    };
    let cred = &spec.credential;
    let credential = match cred.type_ {
        CredentialType::WorkloadIdentity => Credential::WorkloadIdentity {
            client_id: cred.client_id.clone(),
            tenant_id: cred.tenant_id.clone(),
            token_file: None,
        },
        CredentialType::ManagedIdentity => Credential::ManagedIdentity { client_id: cred.client_id.clone() },
        CredentialType::ClientSecret => {
            let (Some(tenant_id), Some(client_id), Some(secret)) =
                (&cred.tenant_id, &cred.client_id, client_secret)
            else {
                return Err(ConfigProblem::new(
                    reasons::SECRET_MISSING,
                    "spec.credential needs tenantId, clientId and a secretRef whose Secret holds the client secret",
                ));
            };
            Credential::ClientSecret {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                secret: SecretString::new(secret),
            }
        }
    };
    if let Some(pem) = &ca_bundle
        && !pem.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(ConfigProblem::new(
            reasons::CA_BUNDLE_INVALID,
            "the CA bundle Secret key holds no PEM certificate; put PEM text (-----BEGIN CERTIFICATE-----) in it",
        ));
    }
    Ok(ConnectionConfig {
        cloud,
        credential,
        ca_bundle_pem: ca_bundle,
        workspace: WorkspaceCoordinates {
            subscription_id: spec.subscription_id.clone(),
            resource_group: spec.resource_group.clone(),
            workspace_name: spec.workspace_name.clone(),
        },
        arm_api_version: spec.arm_api_version.clone(),
    })
}

async fn read_key(secrets: &Api<Secret>, r: &SecretKeyRef) -> Result<Result<String, ConfigProblem>> {
    let Some(secret) = secrets.get_opt(&r.name).await.map_err(Error::kube("read Secret"))? else {
        return Ok(Err(ConfigProblem::new(
            reasons::SECRET_MISSING,
            format!("Secret {} does not exist in this namespace; create it with key {}", r.name, r.key),
        )));
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(&r.key)).cloned());
    Ok(match value {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(ConfigProblem::new(
            reasons::SECRET_MISSING,
            format!("Secret {} has no key {}; add it", r.name, r.key),
        )),
    })
}

/// A usable workspace, or why not (a condition to report on the dependent resource).
pub enum Connection {
    /// The Workspace is Ready.
    Ready { client: WorkspaceClient, workspace: Box<Workspace> },
    /// The Workspace is missing or not Ready; the dependent resource waits.
    Unavailable(Health),
}

/// Resolves the Workspace a resource names, for dependent controllers.
pub async fn connect(ctx: &Context, namespace: &str, ws_ref: &WorkspaceRef) -> Result<Connection> {
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(ws) = api.get_opt(&ws_ref.name).await.map_err(Error::kube("read Workspace"))? else {
        return Ok(Connection::Unavailable(Health::progressing(
            reasons::WORKSPACE_MISSING,
            format!(
                "waiting for Workspace {} in this namespace; create it or fix spec.workspaceRef.name",
                ws_ref.name
            ),
        )));
    };
    let conds = ws.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    if !conditions::is_ready(conds, ws.metadata.generation) {
        let why = conditions::find(conds, conditions::READY).map(|c| c.message.clone()).unwrap_or_default();
        return Ok(Connection::Unavailable(Health::progressing(
            reasons::WORKSPACE_NOT_READY,
            format!(
                "waiting for Workspace {} to be Ready{}",
                ws_ref.name,
                if why.is_empty() { String::new() } else { format!(" ({why})") }
            ),
        )));
    }
    let config = match ctx.connections.get(&ws, ctx.policy.secret_reuse()) {
        Some(c) => c,
        None => match connection_config(&ctx.client, &ws).await? {
            Ok(c) => {
                ctx.connections.put(&ws, &c);
                c
            }
            Err(p) => {
                return Ok(Connection::Unavailable(Health::progressing(
                    reasons::WORKSPACE_NOT_READY,
                    format!("Workspace {}: {}", ws_ref.name, p.message),
                )));
            }
        },
    };
    let client = ctx.azure.workspace(&config).map_err(Error::azure("open workspace client"))?;
    Ok(Connection::Ready { client, workspace: Box::new(ws) })
}

/// Connection settings last built for each Workspace, so the dependents of a Ready Workspace do not
/// read its Secrets on every pass. An entry is used only for the same Workspace object at the same
/// resourceVersion and for a bounded time, so a spec edit takes effect at once and a rotated Secret
/// within that time.
#[derive(Debug, Default)]
pub struct ConfigCache {
    entries: Mutex<HashMap<(String, String), CachedConfig>>,
}

#[derive(Debug)]
struct CachedConfig {
    uid: Option<String>,
    resource_version: Option<String>,
    read_at: Instant,
    config: ConnectionConfig,
}

impl CachedConfig {
    /// Built from this very Workspace object (same uid, same resourceVersion).
    fn is_for(&self, ws: &Workspace) -> bool {
        self.uid == ws.metadata.uid && self.resource_version == ws.metadata.resource_version
    }
}

/// Most Workspaces remembered; past it the cache starts over (a re-read costs two Secret GETs).
const CONFIG_CACHE_LIMIT: usize = 256;

impl ConfigCache {
    /// The settings built for this very Workspace object within `max_age`.
    pub fn get(&self, ws: &Workspace, max_age: Duration) -> Option<ConnectionConfig> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(ws.namespace().unwrap_or_default(), ws.name_any()))
            .filter(|c| c.is_for(ws) && c.read_at.elapsed() < max_age)
            .map(|c| c.config.clone())
    }

    /// Remembers the settings just read for `ws`; they are reused from now on, for `max_age`.
    pub fn put(&self, ws: &Workspace, config: &ConnectionConfig) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = (ws.namespace().unwrap_or_default(), ws.name_any());
        if entries.len() >= CONFIG_CACHE_LIMIT && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(
            key,
            CachedConfig {
                uid: ws.metadata.uid.clone(),
                resource_version: ws.metadata.resource_version.clone(),
                read_at: Instant::now(),
                config: config.clone(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkspaceSpec;

    fn ws(uid: &str, resource_version: &str) -> Workspace {
        let spec: WorkspaceSpec = serde_json::from_value(serde_json::json!({
            "subscriptionId": "00000000-0000-0000-0000-000000000001",
            "resourceGroup": "rg",
            "workspaceName": "ws1",
        }))
        .expect("spec");
        let mut ws = Workspace::new("default", spec);
        ws.metadata.namespace = Some("team".into());
        ws.metadata.uid = Some(uid.into());
        ws.metadata.resource_version = Some(resource_version.into());
        ws
    }

    /// Settings are reused only for the same Workspace object at the same resourceVersion, and not
    /// after `max_age`: a spec edit or a re-created Workspace is read again at once.
    #[test]
    fn cached_settings_follow_the_workspace_object() {
        let cache = ConfigCache::default();
        let a = ws("uid-1", "10");
        let config = build_config(&a, None, None).expect("config");
        let long = Duration::from_secs(60);
        assert!(cache.get(&a, long).is_none());
        cache.put(&a, &config);
        assert_eq!(cache.get(&a, long), Some(config.clone()));
        assert!(cache.get(&ws("uid-1", "11"), long).is_none(), "edited Workspace");
        assert!(cache.get(&ws("uid-2", "10"), long).is_none(), "re-created Workspace");
        assert!(cache.get(&a, Duration::ZERO).is_none(), "too old");
    }

    /// Settings read again after they aged out are reused again: the unchanged Workspace does not
    /// cost two Secret reads on every pass from then on.
    #[test]
    fn settings_read_again_are_reused_again() {
        let cache = ConfigCache::default();
        let a = ws("uid-1", "10");
        let config = build_config(&a, None, None).expect("config");
        cache.put(&a, &config);
        std::thread::sleep(Duration::from_millis(20));
        let max_age = Duration::from_millis(10);
        assert!(cache.get(&a, max_age).is_none(), "aged out");
        cache.put(&a, &config);
        assert_eq!(cache.get(&a, max_age), Some(config), "the fresh read counts from now");
    }
}
