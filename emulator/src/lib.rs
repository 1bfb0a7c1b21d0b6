//! An emulator of the Azure Machine Learning control plane and scoring plane.
//!
//! It serves, on one HTTPS and one plain-HTTP listener, the Azure AD token endpoint, the managed-identity
//! endpoint, ARM cloud metadata, registry discovery and the registry data plane, the workspace ARM routes
//! (computes, VM sizes, jobs, models, online endpoints and deployments with long-running operations),
//! MLflow tracking, the scoring URI, and an admin API under `/_emulator/`. See `emulator/README.md`.
#![forbid(unsafe_code)]

mod admin;
mod auth;
mod endpoints;
mod http;
mod jobs;
mod mlflow;
mod models;
mod registry;
mod scoring;
mod seed;
mod server;
mod state;
mod throttle;
mod tls;
mod validate;
mod workspace;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use throttle::{BucketConfig, ThrottleConfig};

/// Errors starting or stopping the emulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA or server certificate could not be generated.
    #[error("cannot create TLS certificates: {0}")]
    Tls(String),
    /// The CA certificate could not be written to its output path.
    #[error("cannot write the CA certificate to {path}: {source}")]
    WriteCa {
        /// Where the CA was to be written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The identities and names the emulator starts with. Every one can be changed later through the admin API.
#[derive(Clone, Debug, PartialEq)]
pub struct Seeds {
    /// The Azure AD tenant id.
    pub tenant_id: String,
    /// The client id of the seeded service principal.
    pub client_id: String,
    /// The client secret of the seeded service principal.
    pub client_secret: String,
    /// The subscription holding the workspace.
    pub subscription_id: String,
    /// The workspace's resource group.
    pub resource_group: String,
    /// The workspace name.
    pub workspace: String,
    /// The Azure region of the workspace.
    pub location: String,
    /// The name of the system registry.
    pub registry: String,
}

impl Default for Seeds {
    fn default() -> Self {
        Self {
            tenant_id: "00000000-0000-0000-0000-0000000000aa".into(),
            client_id: "00000000-0000-0000-0000-0000000000cc".into(),
            client_secret: "emulator-secret".into(),
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "rg-azureml-demo".into(),
            workspace: "ws-azureml-demo".into(),
            location: "eastus2".into(),
            registry: "azureml".into(),
        }
    }
}

/// How to run the emulator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address both listeners bind to (default 127.0.0.1).
    pub bind_address: IpAddr,
    /// HTTPS port; 0 picks a free port.
    pub https_port: u16,
    /// Plain HTTP port; 0 picks a free port.
    pub http_port: u16,
    /// Where to write the CA certificate (PEM). `None` writes it into a fresh temporary directory.
    pub ca_out: Option<PathBuf>,
    /// How much faster than Azure the emulated world moves: 1.0 = real Azure durations, 1000 = a
    /// 15-minute deployment takes 0.9 s. `Retry-After` values shrink by the same factor.
    pub time_scale: f64,
    /// ARM token buckets.
    pub throttle: ThrottleConfig,
    /// Seeded identities and names.
    pub seeds: Seeds,
    /// Lifetime of issued access tokens, in seconds (Azure AD: about an hour).
    pub token_lifetime_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            https_port: 0,
            http_port: 0,
            ca_out: None,
            time_scale: 1.0,
            throttle: ThrottleConfig::default(),
            seeds: Seeds::default(),
            token_lifetime_secs: 3599,
        }
    }
}

impl Config {
    /// Sets the time scale (see [`Config::time_scale`]).
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// Sets both ports.
    pub fn with_ports(mut self, https: u16, http: u16) -> Self {
        self.https_port = https;
        self.http_port = http;
        self
    }

    /// Sets where the CA certificate is written.
    pub fn with_ca_out(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_out = Some(path.into());
        self
    }

    /// Sets the ARM throttling buckets.
    pub fn with_throttle(mut self, throttle: ThrottleConfig) -> Self {
        self.throttle = throttle;
        self
    }

    /// Sets the seeded identities and names.
    pub fn with_seeds(mut self, seeds: Seeds) -> Self {
        self.seeds = seeds;
        self
    }

    fn check(&self) -> Result<()> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(Error::Config(format!(
                "time_scale must be a positive number, not {}",
                self.time_scale
            )));
        }
        self.throttle.check().map_err(Error::Config)
    }
}

/// Entry point: starts an emulator.
pub struct Emulator;

impl Emulator {
    /// Binds both listeners, generates the certificates, writes the CA and starts serving.
    pub async fn start(config: Config) -> Result<RunningEmulator> {
        config.check()?;
        let certs = tls::generate()?;
        let (ca_path, temp_dir) = match &config.ca_out {
            Some(path) => (path.clone(), None),
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "azureml-emulator-{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4()
                ));
                std::fs::create_dir_all(&dir)
                    .map_err(|source| Error::WriteCa { path: dir.clone(), source })?;
                (dir.join("ca.pem"), Some(dir))
            }
        };
        if let Some(parent) = ca_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|source| Error::WriteCa { path: ca_path.clone(), source })?;
        }
        std::fs::write(&ca_path, &certs.ca_pem)
            .map_err(|source| Error::WriteCa { path: ca_path.clone(), source })?;

        let https_addr = SocketAddr::new(config.bind_address, config.https_port);
        let http_addr = SocketAddr::new(config.bind_address, config.http_port);
        let https_listener = tokio::net::TcpListener::bind(https_addr)
            .await
            .map_err(|source| Error::Bind { addr: https_addr, source })?;
        let http_listener = tokio::net::TcpListener::bind(http_addr)
            .await
            .map_err(|source| Error::Bind { addr: http_addr, source })?;
        let bound =
            |l: &tokio::net::TcpListener, addr| l.local_addr().map_err(|source| Error::Bind { addr, source });
        let https_local = bound(&https_listener, https_addr)?;
        let http_local = bound(&http_listener, http_addr)?;
        let https_url = format!("https://{}", host_port(https_local));
        let http_url = format!("http://{}", host_port(http_local));

        let shared = Arc::new(state::Shared::new(config.clone(), https_url.clone(), http_url.clone()));
        let servers = server::spawn(shared, https_listener, http_listener, certs.server_config);
        tracing::info!(%https_url, %http_url, ca = %ca_path.display(), "azureml emulator listening");
        Ok(RunningEmulator {
            config,
            https_url,
            http_url,
            ca_pem: certs.ca_pem,
            ca_path,
            temp_dir,
            servers: Some(servers),
        })
    }
}

fn host_port(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
    }
}

/// A running emulator. Dropping it stops both listeners and every open connection.
pub struct RunningEmulator {
    config: Config,
    https_url: String,
    http_url: String,
    ca_pem: String,
    ca_path: PathBuf,
    temp_dir: Option<PathBuf>,
    servers: Option<server::Servers>,
}

impl RunningEmulator {
    /// Base URL of the HTTPS listener, e.g. `https://127.0.0.1:40123` (no trailing slash).
    pub fn https_url(&self) -> &str {
        &self.https_url
    }

    /// Base URL of the plain-HTTP listener, e.g. `http://127.0.0.1:40124`.
    pub fn http_url(&self) -> &str {
        &self.http_url
    }

    /// PEM text of the CA that signed the HTTPS certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Where the CA certificate was written.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The configuration the emulator was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops accepting connections, closes open ones and waits for the servers to end.
    pub async fn shutdown(mut self) {
        if let Some(servers) = self.servers.take() {
            servers.shutdown().await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(servers) = self.servers.take() {
            servers.abort();
        }
        if let Some(dir) = &self.temp_dir {
            // Best effort: a leftover CA file in the temp directory harms nobody.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
