//! `azureml-operator invoke`: sends one scoring request to an OnlineEndpoint, the way the notebook's
//! step 8 does, and hands back Azure's raw reply.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::api::onlineendpoint::{AuthMode, OnlineEndpoint};
use crate::api::{SecretKeyRef, Workspace};
use crate::azure::{self, AzureMl, ScoreResponse, ScoringAuth, SecretString};
use crate::controller::connection::connection_config;

/// Why a scoring request could not be sent. An HTTP error from the endpoint is not one of these:
/// it comes back in the [`ScoreResponse`].
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The OnlineEndpoint does not exist.
    #[error("OnlineEndpoint {name} does not exist in namespace {namespace}")]
    EndpointNotFound { namespace: String, name: String },
    /// The endpoint has no scoring URI in its status yet.
    #[error(
        "OnlineEndpoint {name} has no scoring URI yet; wait until it is Ready (kubectl wait --for=condition=Ready oep/{name})"
    )]
    NotProvisioned { name: String },
    /// The named deployment is not in the spec.
    #[error("OnlineEndpoint {name} has no deployment {deployment}; pick one of: {known}")]
    UnknownDeployment { name: String, deployment: String, known: String },
    /// The Workspace the endpoint names does not exist.
    #[error("Workspace {name} does not exist in namespace {namespace}")]
    WorkspaceNotFound { namespace: String, name: String },
    /// The Workspace's connection settings are unusable.
    #[error("Workspace {name} cannot be used: {message}")]
    WorkspaceInvalid { name: String, message: String },
    /// The keys Secret is missing or lacks the primary key.
    #[error("Secret {name} has no primaryKey yet; wait until the OnlineEndpoint is Ready")]
    KeyMissing { name: String },
    /// A Kubernetes API call failed.
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        #[source]
        source: kube::Error,
    },
    /// Azure could not be reached, or refused to hand out keys or a token.
    #[error("{step}: {source}")]
    Azure {
        step: &'static str,
        #[source]
        source: azure::Error,
    },
    /// The controller layer failed while reading the Workspace's Secrets.
    #[error("reading the Workspace's Secrets: {0}")]
    Controller(#[from] crate::controller::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Sends `body` to the scoring URI of OnlineEndpoint `namespace/name`, to `deployment` when given
/// (header `azureml-model-deployment`, whatever the traffic split), and returns the HTTP status and
/// raw body. Key-auth endpoints use the keys Secret the operator wrote, or `listKeys` when the spec
/// names none; AMLToken endpoints a fresh token from the endpoint's `token` action; AADToken endpoints
/// the Workspace's credential.
pub async fn invoke(
    client: kube::Client,
    azure: &AzureMl,
    namespace: &str,
    name: &str,
    deployment: Option<&str>,
    body: serde_json::Value,
) -> Result<ScoreResponse> {
    let endpoints: Api<OnlineEndpoint> = Api::namespaced(client.clone(), namespace);
    let oe = endpoints
        .get_opt(name)
        .await
        .map_err(|source| Error::Kube { step: "read OnlineEndpoint", source })?
        .ok_or_else(|| Error::EndpointNotFound { namespace: namespace.to_owned(), name: name.to_owned() })?;
    let scoring_uri = oe
        .status
        .as_ref()
        .and_then(|s| s.scoring_uri.clone())
        .ok_or_else(|| Error::NotProvisioned { name: name.to_owned() })?;
    if let Some(d) = deployment
        && !oe.spec.deployments.iter().any(|x| x.name == d)
    {
        return Err(Error::UnknownDeployment {
            name: name.to_owned(),
            deployment: d.to_owned(),
            known: oe.spec.deployments.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", "),
        });
    }

    let ws_name = &oe.spec.workspace_ref.name;
    let workspaces: Api<Workspace> = Api::namespaced(client.clone(), namespace);
    let ws = workspaces
        .get_opt(ws_name)
        .await
        .map_err(|source| Error::Kube { step: "read Workspace", source })?
        .ok_or_else(|| Error::WorkspaceNotFound { namespace: namespace.to_owned(), name: ws_name.clone() })?;
    let config = connection_config(&client, &ws)
        .await?
        .map_err(|p| Error::WorkspaceInvalid { name: ws_name.clone(), message: p.message })?;
    let ws_client =
        azure.workspace(&config).map_err(|source| Error::Azure { step: "open workspace client", source })?;

    // The endpoint's name in Azure: what the controller recorded, else what it will use.
    let endpoint_name = oe
        .status
        .as_ref()
        .and_then(|s| s.endpoint_name.clone())
        .or_else(|| oe.spec.endpoint_name.clone())
        .unwrap_or_else(|| name.to_owned());
    let auth = match oe.spec.auth_mode {
        AuthMode::Key => match &oe.spec.keys_secret {
            Some(r) => {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let key = read_secret_key(
                    &secrets,
                    &SecretKeyRef { name: r.name.clone(), key: "primaryKey".into() },
                )
                .await?;
                ScoringAuth::Key(key.ok_or_else(|| Error::KeyMissing { name: r.name.clone() })?)
            }
            None => {
                let keys = ws_client
                    .list_endpoint_keys(&endpoint_name)
                    .await
                    .map_err(|source| Error::Azure { step: "list endpoint keys", source })?;
                ScoringAuth::Key(keys.primary_key)
            }
        },
        // Tokens expire (Azure says when), so one is fetched per call rather than stored anywhere.
        AuthMode::AmlToken => {
            let token = ws_client
                .get_endpoint_token(&endpoint_name)
                .await
                .map_err(|source| Error::Azure { step: "request endpoint token", source })?;
            ScoringAuth::AmlToken(token.access_token)
        }
        AuthMode::AadToken => ScoringAuth::AadToken,
    };
    ws_client
        .score(&scoring_uri, &auth, deployment, &body)
        .await
        .map_err(|source| Error::Azure { step: "send scoring request", source })
}

async fn read_secret_key(secrets: &Api<Secret>, r: &SecretKeyRef) -> Result<Option<SecretString>> {
    let secret =
        secrets.get_opt(&r.name).await.map_err(|source| Error::Kube { step: "read keys Secret", source })?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(&r.key).cloned())
        .map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(SecretString::new))
}
