//! Microsoft Entra ID tokens through azure_identity, with the workspace's CA bundle and a way to
//! force a fresh token when Azure refuses a cached one.

use std::sync::{Arc, Mutex};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};

use super::config::{CloudEndpoints, Credential, SecretString};
use super::error::{Error, Result};

/// A credential plus the settings needed to rebuild it.
///
/// azure_identity caches tokens inside each credential and refreshes them five minutes before
/// expiry. When Azure still answers 401 (token revoked, clock skew), [`TokenSource::invalidate`]
/// replaces the credential, which drops its cache, so the next call fetches a new token.
pub(crate) struct TokenSource {
    spec: Credential,
    cloud: CloudEndpoints,
    http: reqwest::Client,
    current: Mutex<Arc<dyn TokenCredential>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `spec` has a redacting Debug, but the kind is all a log needs.
        f.debug_struct("TokenSource").field("authority", &self.cloud.authority_host.as_str()).finish()
    }
}

impl TokenSource {
    pub(crate) fn new(spec: Credential, cloud: CloudEndpoints, http: reqwest::Client) -> Result<Self> {
        let current = build(&spec, &cloud, &http)?;
        Ok(Self { spec, cloud, http, current: Mutex::new(current) })
    }

    fn credential(&self) -> Arc<dyn TokenCredential> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A bearer token for `scope`.
    pub(crate) async fn token(&self, scope: &str) -> Result<SecretString> {
        let credential = self.credential();
        let token =
            credential.get_token(&[scope], None).await.map_err(|source| Error::Credential { source })?;
        Ok(SecretString::new(token.token.secret()))
    }

    /// Drops cached tokens so the next [`TokenSource::token`] asks Entra ID again.
    pub(crate) fn invalidate(&self) {
        match build(&self.spec, &self.cloud, &self.http) {
            Ok(fresh) => *self.current.lock().unwrap_or_else(|p| p.into_inner()) = fresh,
            // Construction succeeded before with the same inputs; keep the old one if it now fails
            // (e.g. an environment variable vanished) and let the next call report the error.
            Err(err) => tracing::warn!(error = %err, "rebuilding the Azure credential failed"),
        }
    }
}

fn client_options(cloud: &CloudEndpoints, http: &reqwest::Client) -> ClientOptions {
    // Always a custom cloud: the authority host comes from our endpoint table (or the Workspace
    // spec), so sovereign and private clouds work the same way.
    let mut custom = CustomConfiguration::default();
    custom.authority_host = cloud.authority_host.as_str().trim_end_matches('/').to_string();
    ClientOptions {
        cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
        // The reqwest client trusts the workspace's CA bundle in addition to the system roots.
        transport: Some(Transport::new(Arc::new(http.clone()))),
        // Our own request loop retries token failures within the call budget.
        retry: RetryOptions::none(),
        ..ClientOptions::default()
    }
}

fn build(
    spec: &Credential,
    cloud: &CloudEndpoints,
    http: &reqwest::Client,
) -> Result<Arc<dyn TokenCredential>> {
    let options = client_options(cloud, http);
    let config_err = |source: azure_core::Error| Error::Config { message: source.to_string() };
    let credential: Arc<dyn TokenCredential> = match spec {
        Credential::ClientSecret { tenant_id, client_id, secret } => ClientSecretCredential::new(
            tenant_id,
            client_id.clone(),
            Secret::new(secret.expose().to_string()),
            Some(ClientSecretCredentialOptions { client_options: options }),
        )
        .map_err(config_err)?,
        Credential::WorkloadIdentity { client_id, tenant_id, token_file } => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options: options },
                client_id: client_id.clone(),
                tenant_id: tenant_id.clone(),
                token_file_path: token_file.clone(),
            }))
            .map_err(config_err)?
        }
        Credential::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: options,
            }))
            .map_err(config_err)?
        }
    };
    Ok(credential)
}
