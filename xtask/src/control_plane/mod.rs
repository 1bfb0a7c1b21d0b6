//! A real, local Kubernetes control plane (etcd + kube-apiserver, no kubelet) for integration
//! tests and the demo: pinned binaries built once into a cache, started on free loopback ports
//! with RBAC, an admin client certificate and a service-account token issuer.
//!
//! ```no_run
//! # async fn demo() -> Result<(), xtask::control_plane::Error> {
//! use xtask::control_plane::{ControlPlane, Options};
//! let cp = ControlPlane::start(Options::default()).await?;
//! let client = cp.client().await?; // admin (group system:masters)
//! println!("export KUBECONFIG={}", cp.kubeconfig_path().display());
//! # Ok(()) }
//! ```

mod binaries;
mod crds;
mod pki;
mod process;

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::ExitStatus,
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;
use tokio::time::{Instant, sleep, timeout};

pub use binaries::{
    Binaries, ETCD_VERSION, KUBERNETES_VERSION, build_binaries, cache_key, cache_root, ensure_binaries,
    hack_dir,
};
pub use crds::install_crds;
pub use pki::{ADMIN_GROUP, ADMIN_USER};

use pki::Pki;
use process::Server;

/// Errors of building, starting and talking to the local control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No cache directory could be derived from the environment.
    #[error("no cache directory: set AZUREML_OPERATOR_CACHE, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// `go` is not on PATH.
    #[error(
        "`go` was not found on PATH; install Go {GO_VERSION} or newer to build kube-apiserver, kubectl and etcd"
    )]
    GoMissing,
    /// `go build` failed.
    #[error("go build in {} failed ({status}):\n{output_tail}", module.display())]
    GoBuild {
        /// The Go module directory the build ran in.
        module: PathBuf,
        /// Exit status of `go build`.
        status: ExitStatus,
        /// The end of its output.
        output_tail: String,
    },
    /// A file-system or process operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file, directory or program involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate the control plane's certificates: {source}")]
    Pki {
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A server exited while starting or running.
    #[error("{server} exited ({status}); log {}:\n{log_tail}", log.display())]
    ServerExited {
        /// Which server.
        server: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        log_tail: String,
    },
    /// A server did not become ready in time.
    #[error("{server} not ready after {waited:?} (last check: {last_check}); log {}:\n{log_tail}", log.display())]
    NotReady {
        /// Which server.
        server: &'static str,
        /// How long it was given.
        waited: Duration,
        /// What the last readiness check saw.
        last_check: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        log_tail: String,
    },
    /// The kubeconfig could not be built or loaded.
    #[error("invalid kubeconfig: {message}")]
    Kubeconfig {
        /// What was wrong.
        message: String,
    },
    /// A Kubernetes API call failed.
    #[error("cannot {action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// A file in the CRD directory is not a valid CRD manifest.
    #[error("invalid CRD manifest {}: {message}", file.display())]
    InvalidCrd {
        /// The file.
        file: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A CRD did not become Established.
    #[error("CRD {name} did not become Established: {message}")]
    WaitCrd {
        /// The CRD name.
        name: String,
        /// Why.
        message: String,
    },
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Go version the pinned modules' `go` directive asks for.
const GO_VERSION: &str = "1.26.0";

/// How often startup retries after losing a race for a free port to another process.
const PORT_RACE_ATTEMPTS: usize = 3;

/// The service-account token issuer and the audience tokens are minted for.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

const CLUSTER_NAME: &str = "azureml-operator-local";

impl Error {
    /// Maps an I/O error of `action` on `path` to [`Error::Io`], for `map_err`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }

    /// True when a server failed because its port was taken between choosing and binding it.
    pub fn is_port_conflict(&self) -> bool {
        matches!(self, Error::ServerExited { log_tail, .. } if log_tail.contains("address already in use"))
    }
}

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long etcd and then kube-apiserver each may take to become ready.
    pub startup_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { startup_timeout: Duration::from_secs(90) }
    }
}

/// A running etcd + kube-apiserver pair with its scratch directory.
///
/// Dropping it stops both servers and removes the directory. When it is never dropped (a static
/// in a test binary) or the process is killed, the servers still stop and the directory is still
/// removed as soon as the process is gone (see the `process` module).
///
/// Holds no client and nothing tied to a tokio runtime, so one instance can be shared by tests
/// running on different runtimes; each caller makes its own clients.
#[derive(Debug)]
pub struct ControlPlane {
    // Field order is drop order: the API server stops before etcd, both before the directory goes.
    apiserver: Server,
    etcd: Server,
    dir: tempfile::TempDir,
    server_url: String,
    ca_pem: String,
    kubeconfig: Kubeconfig,
    kubeconfig_path: PathBuf,
    binaries: Binaries,
    apiserver_args: Vec<String>,
}

impl ControlPlane {
    /// Builds the binaries if needed (minutes, once per version), then starts etcd and
    /// kube-apiserver on free loopback ports and waits until `/readyz` answers `ok`.
    pub async fn start(opts: Options) -> Result<Self> {
        let binaries = build_binaries().await?;
        let mut attempt = 1;
        loop {
            match Self::start_once(binaries.clone(), &opts).await {
                Err(e) if e.is_port_conflict() && attempt < PORT_RACE_ATTEMPTS => attempt += 1,
                result => return result,
            }
        }
    }

    async fn start_once(binaries: Binaries, opts: &Options) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("azureml-operator-cp-")
            .tempdir()
            .map_err(Error::io("create a scratch directory in", std::env::temp_dir()))?;
        let root = dir.path().to_path_buf();
        let pki = Pki::generate()?;
        let file = |name: &str, contents: &str| -> Result<String> {
            let path = root.join(name);
            std::fs::write(&path, contents).map_err(Error::io("write", &path))?;
            Ok(path.display().to_string())
        };
        let ca_file = file("ca.crt", &pki.ca_cert)?;
        let serving_cert = file("apiserver.crt", &pki.serving_cert)?;
        let serving_key = file("apiserver.key", &pki.serving_key)?;
        let sa_key = file("service-account.key", &pki.service_account_key)?;
        let sa_pub = file("service-account.pub", &pki.service_account_public_key)?;

        let [etcd_client, etcd_peer, apiserver_port] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd_args = [
            "--name=default".to_string(),
            format!("--data-dir={}", root.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            // Throw-away data: durability only costs time here.
            "--unsafe-no-fsync=true".to_string(),
        ];
        // etcd's watchdog also removes the scratch directory: etcd's data is the bulk of it.
        let mut etcd = Server::spawn("etcd", &binaries.etcd, &etcd_args, root.join("etcd.log"), Some(&root))?;
        wait_for_port(&mut etcd, etcd_client, opts.startup_timeout).await?;

        let apiserver_args = [
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            // The endpoint reconciler publishes the advertise address as the `kubernetes` Service's
            // endpoint and refuses loopback addresses; nothing in-cluster needs that Service here.
            "--endpoint-reconciler-type=none".to_string(),
            format!("--secure-port={apiserver_port}"),
            // Unused while --tls-cert-file is given, but keeps the server from writing elsewhere.
            format!("--cert-dir={}", root.join("apiserver-certs").display()),
            format!("--tls-cert-file={serving_cert}"),
            format!("--tls-private-key-file={serving_key}"),
            format!("--client-ca-file={ca_file}"),
            "--authorization-mode=RBAC,Node".to_string(),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-signing-key-file={sa_key}"),
            format!("--service-account-key-file={sa_pub}"),
            format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"),
            "--service-cluster-ip-range=10.96.0.0/16".to_string(),
            "--profiling=false".to_string(),
        ];
        let apiserver_args = apiserver_args.to_vec();
        let apiserver = Server::spawn(
            "kube-apiserver",
            &binaries.kube_apiserver,
            &apiserver_args,
            root.join("kube-apiserver.log"),
            None,
        )?;

        let server_url = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig_value = kubeconfig_json(
            &server_url,
            &pki.ca_cert,
            json!({
                "client-certificate-data": BASE64.encode(&pki.admin_cert),
                "client-key-data": BASE64.encode(&pki.admin_key),
            }),
        );
        let kubeconfig_path = root.join("kubeconfig");
        let yaml = serde_saphyr::to_string(&kubeconfig_value)
            .map_err(|e| Error::Kubeconfig { message: e.to_string() })?;
        std::fs::write(&kubeconfig_path, yaml).map_err(Error::io("write", &kubeconfig_path))?;
        let kubeconfig = serde_json::from_value(kubeconfig_value)
            .map_err(|e| Error::Kubeconfig { message: e.to_string() })?;

        let mut cp = Self {
            apiserver,
            etcd,
            dir,
            server_url,
            ca_pem: pki.ca_cert,
            kubeconfig,
            kubeconfig_path,
            binaries,
            apiserver_args,
        };
        cp.wait_until_ready(opts.startup_timeout).await?;
        Ok(cp)
    }

    /// Stops kube-apiserver (SIGKILL, as a crashed control-plane node would) and starts it again on the
    /// same port against the same etcd, waiting until it is ready. Clients keep their URL; their
    /// connections and watches break and must recover.
    pub async fn restart_apiserver(&mut self, limit: Duration) -> Result<()> {
        let log = self.dir.path().join("kube-apiserver.log");
        self.apiserver.stop();
        let mut attempt = 1;
        loop {
            self.apiserver = Server::spawn(
                "kube-apiserver",
                &self.binaries.kube_apiserver,
                &self.apiserver_args,
                log.clone(),
                None,
            )?;
            match self.wait_until_ready(limit).await {
                // The killed server may still hold the port for a moment.
                Err(_) if attempt < PORT_RACE_ATTEMPTS => {
                    attempt += 1;
                    self.apiserver.stop();
                    sleep(Duration::from_millis(500)).await;
                }
                result => return result,
            }
        }
    }

    /// Polls `/readyz` as admin until it answers `ok`, failing early if either server exits.
    async fn wait_until_ready(&mut self, limit: Duration) -> Result<()> {
        let client = self.client().await?;
        let deadline = Instant::now() + limit;
        loop {
            for server in [&mut self.etcd, &mut self.apiserver] {
                if let Some(status) = server.exited() {
                    return Err(server.exited_error(status));
                }
            }
            let last_check = match timeout(Duration::from_secs(5), readyz(&client)).await {
                Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
                Ok(Ok(body)) => body,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 5s".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.apiserver.not_ready_error(limit, last_check));
            }
            sleep(Duration::from_millis(200)).await;
        }
    }

    /// A kube config for the admin user (client certificate in group `system:masters`).
    pub async fn config(&self) -> Result<Config> {
        config_from(self.kubeconfig.clone()).await
    }

    /// A new admin client. Make one per tokio runtime (per test): a client's connection pool
    /// belongs to the runtime it was made in.
    pub async fn client(&self) -> Result<Client> {
        client_from(self.config().await?)
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The PEM certificate of the CA that signed the API server's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The admin kubeconfig file, for kubectl, helm or `KUBECONFIG=` of the operator binary.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The scratch directory holding the kubeconfig, certificates, etcd's data and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The API server's log file.
    pub fn apiserver_log(&self) -> &Path {
        self.apiserver.log()
    }

    /// etcd's log file.
    pub fn etcd_log(&self) -> &Path {
        self.etcd.log()
    }

    /// The binaries this control plane runs (kubectl included).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A `kubectl` command pointed at this control plane as admin.
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.binaries.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig_path);
        cmd
    }

    /// Server-side applies the CRDs in `dir` and waits until they are Established; see
    /// [`install_crds`].
    pub async fn install_crds(&self, dir: &Path) -> Result<Vec<String>> {
        install_crds(&self.client().await?, dir).await
    }

    /// Mints a token for a ServiceAccount with the TokenRequest API (audience: the API server).
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![SERVICE_ACCOUNT_ISSUER.to_string()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let minted =
            api.create_token_request(name, &PostParams::default(), &request).await.map_err(|source| {
                Error::Kube {
                    action: format!("request a token for serviceaccount {namespace}/{name}"),
                    source,
                }
            })?;
        minted.status.and_then(|s| s.token).ok_or_else(|| Error::Kubeconfig {
            message: format!("TokenRequest for {namespace}/{name} returned no token"),
        })
    }

    /// A kubeconfig that authenticates with a bearer `token` (for example from
    /// [`service_account_token`](Self::service_account_token)).
    pub fn token_kubeconfig(&self, token: &str) -> Result<Kubeconfig> {
        serde_json::from_value(kubeconfig_json(&self.server_url, &self.ca_pem, json!({ "token": token })))
            .map_err(|e| Error::Kubeconfig { message: e.to_string() })
    }

    /// A client acting as the ServiceAccount `namespace/name`, for RBAC tests.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        let token = self.service_account_token(namespace, name).await?;
        client_from(config_from(self.token_kubeconfig(&token)?).await?)
    }
}

/// The body of the API server's `GET /readyz`: `ok` when ready, else the failing checks.
pub async fn readyz(client: &Client) -> Result<String, kube::Error> {
    let mut request = http::Request::new(Vec::new());
    *request.uri_mut() = http::Uri::from_static("/readyz");
    client.request_text(request).await
}

/// A one-cluster, one-user kubeconfig, as JSON with kubeconfig's own field names.
fn kubeconfig_json(server_url: &str, ca_pem: &str, user: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CLUSTER_NAME,
            "cluster": { "server": server_url, "certificate-authority-data": BASE64.encode(ca_pem) },
        }],
        "users": [{ "name": CLUSTER_NAME, "user": user }],
        "contexts": [{
            "name": CLUSTER_NAME,
            "context": { "cluster": CLUSTER_NAME, "user": CLUSTER_NAME, "namespace": "default" },
        }],
        "current-context": CLUSTER_NAME,
    })
}

async fn config_from(kubeconfig: Kubeconfig) -> Result<Config> {
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig { message: e.to_string() })
}

fn client_from(config: Config) -> Result<Client> {
    Client::try_from(config).map_err(|source| Error::Kube { action: "build a client".into(), source })
}

/// Three distinct free loopback ports. The listeners are held until all three are chosen so the
/// kernel does not hand out one twice; another process may still take one before our server binds
/// it, which [`ControlPlane::start`] handles by retrying.
fn free_ports() -> Result<[u16; 3]> {
    let bind =
        || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(Error::io("bind a free port on", "127.0.0.1"));
    let listeners = [bind()?, bind()?, bind()?];
    let port = |l: &TcpListener| {
        l.local_addr().map(|a| a.port()).map_err(Error::io("read the port of", "127.0.0.1"))
    };
    Ok([port(&listeners[0])?, port(&listeners[1])?, port(&listeners[2])?])
}

/// Waits until `server` accepts connections on `port`, failing early if it exits.
async fn wait_for_port(server: &mut Server, port: u16, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = server.exited() {
            return Err(server.exited_error(status));
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(server.not_ready_error(limit, format!("nothing listening on port {port}")));
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports().expect("ports");
        assert!(a != b && b != c && a != c);
    }

    /// The kubeconfig written for kubectl is one kube itself can load, pointing at the server.
    #[tokio::test]
    async fn kubeconfig_loads_into_a_kube_config() {
        let pki = Pki::generate().expect("pki");
        let value = kubeconfig_json("https://127.0.0.1:6443", &pki.ca_cert, json!({ "token": "t" }));
        let kubeconfig: Kubeconfig = serde_json::from_value(value).expect("kubeconfig");
        let config = config_from(kubeconfig).await.expect("config");
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(config.default_namespace, "default");
    }
}
