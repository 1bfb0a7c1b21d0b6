//! The shared client ([`AzureMl`]), the per-workspace client ([`WorkspaceClient`]) and the one
//! request loop every call goes through: throttle, token, send, trace, count, retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use super::auth::TokenSource;
use super::config::{CloudEndpoints, ConnectionConfig, Credential, SecretString};
use super::error::{ApiError, Error, ErrorClass, Result, parse_error_body};
use super::lro::{self, request_id};
use super::metrics::{AzureMetrics, ClassLabels, OperationLabels};
use super::registry::RegistryLocation;
use super::throttle::{RequestClass, Throttle, ThrottleLimits};

/// Tunables of the Azure client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
    /// Timeout for establishing a connection.
    pub connect_timeout: Duration,
    /// Upper bound for one client call including retries; past it the last error is returned
    /// and the controller requeues.
    pub call_budget: Duration,
    /// Attempts per call for transient failures (1 = no retries).
    pub max_attempts: u32,
    /// First backoff delay; doubled per attempt, jittered.
    pub backoff_base: Duration,
    /// Largest backoff delay.
    pub backoff_max: Duration,
    /// ARM token-bucket sizes.
    pub throttle: ThrottleLimits,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            call_budget: Duration::from_secs(30),
            max_attempts: 4,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            throttle: ThrottleLimits::default(),
            user_agent: format!("azureml-operator/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Identity of a cached credential: what changes the tokens it returns.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CredentialKey {
    authority: Url,
    credential: Credential,
    ca_bundle_pem: Option<String>,
}

/// Caches are cleared when they grow past this many entries (secret rotations leave old entries).
const CACHE_LIMIT: usize = 64;

struct Inner {
    options: ClientOptions,
    throttle: Throttle,
    metrics: AzureMetrics,
    http_clients: Mutex<HashMap<Option<String>, reqwest::Client>>,
    credentials: Mutex<HashMap<CredentialKey, Arc<TokenSource>>>,
    registries: Mutex<HashMap<(String, String), RegistryLocation>>,
    tracking: Mutex<HashMap<String, Url>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a cache lock leaves a usable cache; don't propagate the poison.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Azure ML client shared by all controllers: throttle buckets, HTTP settings, metrics, and
/// caches of credentials and registry discovery. Cheap to clone.
#[derive(Clone)]
pub struct AzureMl {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AzureMl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureMl").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

impl Default for AzureMl {
    fn default() -> Self {
        Self::new(ClientOptions::default())
    }
}

impl AzureMl {
    /// A client with the given options.
    pub fn new(options: ClientOptions) -> Self {
        // The process normally installs ring first thing; doing it here too keeps library users
        // (tests, tools) from panicking on a missing provider. A second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let throttle = Throttle::new(options.throttle);
        Self {
            inner: Arc::new(Inner {
                options,
                throttle,
                metrics: AzureMetrics::default(),
                http_clients: Mutex::default(),
                credentials: Mutex::default(),
                registries: Mutex::default(),
                tracking: Mutex::default(),
            }),
        }
    }

    /// The client's metric families (register them once with a registry).
    pub fn metrics(&self) -> &AzureMetrics {
        &self.inner.metrics
    }

    /// A client for one workspace. Credentials and HTTP clients are cached per configuration, so
    /// calling this on every reconcile is cheap; a changed secret or CA bundle gets new ones.
    pub fn workspace(&self, config: &ConnectionConfig) -> Result<WorkspaceClient> {
        let http = self.http_client(config.ca_bundle_pem.as_deref())?;
        let key = CredentialKey {
            authority: config.cloud.authority_host.clone(),
            credential: config.credential.clone(),
            ca_bundle_pem: config.ca_bundle_pem.clone(),
        };
        let tokens = {
            let mut creds = lock(&self.inner.credentials);
            match creds.get(&key) {
                Some(t) => t.clone(),
                None => {
                    let t = Arc::new(TokenSource::new(
                        config.credential.clone(),
                        config.cloud.clone(),
                        http.clone(),
                    )?);
                    if creds.len() >= CACHE_LIMIT {
                        creds.clear();
                    }
                    creds.insert(key, t.clone());
                    t
                }
            }
        };
        Ok(WorkspaceClient { ml: self.clone(), http, tokens, config: Arc::new(config.clone()) })
    }

    fn http_client(&self, ca_bundle_pem: Option<&str>) -> Result<reqwest::Client> {
        let key = ca_bundle_pem.map(str::to_string);
        if let Some(c) = lock(&self.inner.http_clients).get(&key) {
            return Ok(c.clone());
        }
        let opts = &self.inner.options;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.request_timeout)
            .user_agent(opts.user_agent.clone())
            // ARM answers LROs with Location headers meant to be polled, not followed.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_bundle_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| Error::Config { message: format!("CA bundle is not valid PEM: {e}") })?;
            if certs.is_empty() {
                return Err(Error::Config { message: "CA bundle contains no certificate".into() });
            }
            // Merged with the platform's roots, so real Azure endpoints stay trusted.
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| Error::Config { message: format!("building the HTTP client: {e}") })?;
        let mut clients = lock(&self.inner.http_clients);
        if clients.len() >= CACHE_LIMIT {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    /// An Entra token for the ARM scope (ARM, registry, MLflow).
    Arm,
    /// An Entra token for another scope (AAD-token scoring).
    Scope(String),
    /// A given bearer secret (endpoint key, AML token).
    Bearer(SecretString),
}

/// When a failed request may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryMode {
    /// GET, PUT, DELETE and idempotent POSTs (cancel, listKeys): any transient failure.
    Idempotent,
    /// Only when the request certainly was not processed (connection refused, 429): scoring.
    UnsentOnly,
}

/// One request to send.
#[derive(Debug)]
pub(crate) struct Request {
    pub operation: &'static str,
    pub method: Method,
    pub url: Url,
    pub body: Option<serde_json::Value>,
    pub headers: Vec<(&'static str, String)>,
    pub auth: Auth,
    /// The throttle bucket key (subscription); `None` for calls outside ARM's limits.
    pub throttle: Option<String>,
    pub retry: RetryMode,
}

impl Request {
    pub fn new(operation: &'static str, method: Method, url: Url) -> Self {
        Self {
            operation,
            method,
            url,
            body: None,
            headers: Vec::new(),
            auth: Auth::Arm,
            throttle: None,
            retry: RetryMode::Idempotent,
        }
    }

    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn throttled(mut self, key: &str) -> Self {
        self.throttle = Some(key.to_string());
        self
    }

    pub fn retry(mut self, mode: RetryMode) -> Self {
        self.retry = mode;
        self
    }
}

/// A response with any status.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Duration of the last attempt.
    pub elapsed: Duration,
}

impl Response {
    pub fn json<T: DeserializeOwned>(&self, operation: &'static str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode { operation, source })
    }

    pub(crate) fn to_error(&self, operation: &'static str) -> Error {
        let (code, message, target) = parse_error_body(&self.body);
        let message = if message.is_empty() { format!("HTTP {}", self.status) } else { message };
        Error::from(ApiError {
            operation,
            status: self.status,
            code,
            message,
            target,
            request_id: request_id(&self.headers),
            retry_after: lro::retry_after(&self.headers),
        })
    }
}

/// Jittered exponential backoff: a delay in `[d/2, d]` with `d = base · 2^(attempt-1)`, capped.
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(max);
    let half = exp / 2;
    half + exp.mul_f64(rng.random_range(0.0..=0.5))
}

/// Whether a failed attempt may be retried under `mode`.
fn may_retry(err: &Error, mode: RetryMode) -> bool {
    match (mode, err) {
        // Token acquisition happens before the request is sent.
        (_, Error::Credential { .. }) => err.class().is_retryable(),
        (RetryMode::UnsentOnly, Error::Transport { connect, .. }) => *connect,
        (RetryMode::UnsentOnly, Error::Api(e)) => e.status == 429,
        (RetryMode::UnsentOnly, _) => false,
        (RetryMode::Idempotent, Error::Transport { .. }) => true,
        (RetryMode::Idempotent, _) => {
            matches!(err.class(), ErrorClass::Transient { .. } | ErrorClass::Throttled { .. })
        }
    }
}

fn transport_status(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "error"
    }
}

fn status_label(status: u16) -> &'static str {
    // Static labels for the statuses Azure actually returns keep the label set bounded.
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        409 => "409",
        412 => "412",
        424 => "424",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// A client for one workspace (from [`AzureMl::workspace`]). Cheap to clone.
#[derive(Clone)]
pub struct WorkspaceClient {
    pub(crate) ml: AzureMl,
    http: reqwest::Client,
    tokens: Arc<TokenSource>,
    pub(crate) config: Arc<ConnectionConfig>,
}

impl std::fmt::Debug for WorkspaceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceClient").field("workspace", &self.config.workspace).finish_non_exhaustive()
    }
}

impl WorkspaceClient {
    /// The connection settings this client was built from.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    pub(crate) fn cloud(&self) -> &CloudEndpoints {
        &self.config.cloud
    }

    pub(crate) fn subscription(&self) -> &str {
        &self.config.workspace.subscription_id
    }

    pub(crate) fn api_version(&self) -> &str {
        self.config.arm_api_version()
    }

    /// `{ARM}/subscriptions/{sub}/...` with `segments` appended and the ARM api-version.
    pub(crate) fn arm_url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.cloud.resource_manager.clone();
        {
            // `Url`s from `CloudEndpoints` are http(s) URLs, which always have path segments.
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop_if_empty();
                path.extend(segments);
            }
        }
        url.query_pairs_mut().append_pair("api-version", self.api_version());
        url
    }

    /// `{ARM}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}/...`.
    pub(crate) fn workspace_url(&self, segments: &[&str]) -> Url {
        let ws = &self.config.workspace;
        let mut all = vec![
            "subscriptions",
            ws.subscription_id.as_str(),
            "resourceGroups",
            ws.resource_group.as_str(),
            "providers",
            "Microsoft.MachineLearningServices",
            "workspaces",
            ws.workspace_name.as_str(),
        ];
        all.extend_from_slice(segments);
        self.arm_url(&all)
    }

    /// An ARM request counted against this workspace's subscription buckets.
    pub(crate) fn arm(&self, operation: &'static str, method: Method, url: Url) -> Request {
        Request::new(operation, method, url).throttled(&self.config.workspace.subscription_id.clone())
    }

    /// Sends and returns the response for 2xx/3xx; an error status becomes `Error::Api`.
    pub(crate) async fn send(&self, req: Request) -> Result<Response> {
        let operation = req.operation;
        let resp = self.send_raw(req).await?;
        if resp.status >= 400 { Err(resp.to_error(operation)) } else { Ok(resp) }
    }

    /// Sends and returns `None` on 404.
    pub(crate) async fn send_opt(&self, req: Request) -> Result<Option<Response>> {
        match self.send(req).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends with throttling, retries and a fresh token on 401; returns the final response
    /// whatever its status (retryable statuses are retried first, within the call budget).
    /// `Err` means no response at all (transport or token failure).
    pub(crate) async fn send_raw(&self, req: Request) -> Result<Response> {
        use tracing::Instrument;
        // One span per client call groups its attempts, retries and token refreshes in the logs.
        let span = tracing::info_span!("azure_call", operation = req.operation, method = %req.method);
        self.send_raw_inner(req).instrument(span).await
    }

    async fn send_raw_inner(&self, req: Request) -> Result<Response> {
        let opts = &self.ml.inner.options;
        let start = Instant::now();
        let class = RequestClass::of(&req.method);
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let outcome = self.attempt(&req, class, start).await;
            let (err, resp) = match outcome {
                Ok(resp) if resp.status < 400 => return Ok(resp),
                Ok(resp) => {
                    let err = resp.to_error(req.operation);
                    // One fresh token per call: ARM refused the cached one (expired or revoked).
                    if err.is_stale_token() && !refreshed && !matches!(req.auth, Auth::Bearer(_)) {
                        refreshed = true;
                        self.tokens.invalidate();
                        tracing::info!(
                            operation = req.operation,
                            "token refused; retrying with a fresh token"
                        );
                        continue;
                    }
                    if !may_retry(&err, req.retry) {
                        return Ok(resp);
                    }
                    (err, Some(resp))
                }
                Err(err) => {
                    if !may_retry(&err, req.retry) {
                        return Err(err);
                    }
                    (err, None)
                }
            };
            let retry_after = match &err {
                Error::Api(e) => e.retry_after,
                _ => None,
            };
            let delay = retry_after
                .unwrap_or_else(|| backoff(attempt, opts.backoff_base, opts.backoff_max, &mut rand::rng()));
            if attempt >= opts.max_attempts || start.elapsed() + delay >= opts.call_budget {
                return match resp {
                    Some(resp) => Ok(resp),
                    None => Err(err),
                };
            }
            self.ml
                .inner
                .metrics
                .retries
                .get_or_create(&OperationLabels { operation: req.operation.into() })
                .inc();
            tracing::debug!(operation = req.operation, attempt, delay_ms = delay.as_millis() as u64, error = %err, "retrying Azure request");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, req: &Request, class: RequestClass, start: Instant) -> Result<Response> {
        let inner = &self.ml.inner;
        if let Some(key) = &req.throttle {
            let allowed = inner.options.call_budget.saturating_sub(start.elapsed());
            let waited = match inner.throttle.acquire_within(key, class, allowed).await {
                Ok(waited) => waited,
                Err(needed) => {
                    tracing::info!(
                        operation = req.operation,
                        wait_ms = needed.as_millis() as u64,
                        "ARM budget exhausted; deferring the request"
                    );
                    return Err(Error::from(ApiError {
                        operation: req.operation,
                        status: 429,
                        code: Some("ClientThrottled".into()),
                        message: format!(
                            "the client-side ARM {} budget of this subscription is exhausted for {} s",
                            class.as_str(),
                            needed.as_secs()
                        ),
                        target: None,
                        request_id: None,
                        retry_after: Some(needed),
                    }));
                }
            };
            inner
                .metrics
                .throttle_wait
                .get_or_create(&ClassLabels { class: class.as_str().into() })
                .observe(waited.as_secs_f64());
            if waited > Duration::from_millis(100) {
                tracing::debug!(
                    operation = req.operation,
                    waited_ms = waited.as_millis() as u64,
                    "waited for an ARM throttle token"
                );
            }
        }
        let token = match &req.auth {
            Auth::Arm => self.tokens.token(&self.config.cloud.arm_scope()).await?,
            Auth::Scope(scope) => self.tokens.token(scope).await?,
            Auth::Bearer(secret) => secret.clone(),
        };
        let remaining = inner.options.call_budget.saturating_sub(start.elapsed());
        let timeout = inner.options.request_timeout.min(remaining.max(Duration::from_secs(1)));

        let mut builder = self.http.request(req.method.clone(), req.url.clone()).timeout(timeout);
        let mut auth_value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            Error::Config { message: "token contains characters not allowed in a header".into() }
        })?;
        auth_value.set_sensitive(true);
        builder = builder.header(reqwest::header::AUTHORIZATION, auth_value);
        builder = builder.header(reqwest::header::ACCEPT, "application/json");
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        } else if req.method == Method::POST {
            // ARM requires Content-Length on bodiless POSTs (listKeys, cancel).
            builder = builder.header(reqwest::header::CONTENT_LENGTH, "0");
        }

        let sent = Instant::now();
        let result = builder.send().await;
        let path = req.url.path();
        match result {
            Err(source) => {
                let elapsed = sent.elapsed();
                inner.metrics.record(req.operation, transport_status(&source), elapsed.as_secs_f64());
                tracing::warn!(operation = req.operation, method = %req.method, path, duration_ms = elapsed.as_millis() as u64, error = %source, "Azure request failed");
                Err(Error::Transport {
                    operation: req.operation,
                    timeout: source.is_timeout(),
                    connect: source.is_connect(),
                    source,
                })
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = match resp.bytes().await {
                    Ok(b) => b.to_vec(),
                    Err(source) => {
                        let elapsed = sent.elapsed();
                        inner.metrics.record(req.operation, transport_status(&source), elapsed.as_secs_f64());
                        return Err(Error::Transport {
                            operation: req.operation,
                            timeout: source.is_timeout(),
                            connect: false,
                            source,
                        });
                    }
                };
                let elapsed = sent.elapsed();
                inner.metrics.record(req.operation, status_label(status), elapsed.as_secs_f64());
                let rid = request_id(&headers);
                tracing::debug!(operation = req.operation, method = %req.method, path, status, duration_ms = elapsed.as_millis() as u64, request_id = rid.as_deref(), "Azure request");
                if let Some(key) = &req.throttle {
                    if let Some(rem) = headers
                        .get(class.remaining_header())
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                    {
                        inner.throttle.observe_remaining(key, class, rem);
                    }
                    if status == 429 {
                        let wait = lro::retry_after(&headers).unwrap_or(Duration::from_secs(5));
                        inner.throttle.close_for(key, class, wait);
                        tracing::warn!(
                            operation = req.operation,
                            retry_after_s = wait.as_secs(),
                            request_id = rid.as_deref(),
                            "ARM throttled the request"
                        );
                    }
                }
                if status >= 400 && status != 404 {
                    tracing::info!(operation = req.operation, method = %req.method, path, status, request_id = rid.as_deref(), "Azure returned an error");
                }
                Ok(Response { status, headers, body, elapsed })
            }
        }
    }

    pub(crate) fn inner_registries(&self) -> &Mutex<HashMap<(String, String), RegistryLocation>> {
        &self.ml.inner.registries
    }

    pub(crate) fn inner_tracking(&self) -> &Mutex<HashMap<String, Url>> {
        &self.ml.inner.tracking
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter_in_upper_half() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(4);
        for attempt in 1..10 {
            let d = backoff(attempt, base, max, &mut rng);
            let full = base.saturating_mul(1 << (attempt - 1)).min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} not in [{:?}, {full:?}]", full / 2);
        }
    }

    fn api(status: u16, code: Option<&str>) -> Error {
        Error::from(ApiError {
            operation: "t",
            status,
            code: code.map(str::to_string),
            message: String::new(),
            target: None,
            request_id: None,
            retry_after: None,
        })
    }

    fn transient() -> Error {
        api(503, None)
    }

    fn throttled() -> Error {
        api(429, None)
    }

    fn invalid() -> Error {
        api(400, Some("UserError"))
    }

    #[test]
    fn retry_rules_per_mode() {
        assert!(may_retry(&transient(), RetryMode::Idempotent));
        assert!(may_retry(&throttled(), RetryMode::Idempotent));
        assert!(!may_retry(&invalid(), RetryMode::Idempotent));
        // A non-idempotent POST is only re-sent when Azure provably did not process it.
        assert!(!may_retry(&transient(), RetryMode::UnsentOnly));
        assert!(may_retry(&throttled(), RetryMode::UnsentOnly));
        assert!(!may_retry(&invalid(), RetryMode::UnsentOnly));
    }

    fn config(secret: &str, ca: Option<&str>) -> ConnectionConfig {
        ConnectionConfig {
            cloud: CloudEndpoints::azure_public(),
            credential: Credential::ClientSecret {
                tenant_id: "00000000-0000-0000-0000-0000000000aa".into(),
                client_id: "c".into(),
                secret: SecretString::new(secret),
            },
            ca_bundle_pem: ca.map(str::to_string),
            workspace: crate::azure::WorkspaceCoordinates {
                subscription_id: "s".into(),
                resource_group: "r".into(),
                workspace_name: "w".into(),
            },
            arm_api_version: None,
        }
    }

    #[test]
    fn credentials_are_cached_per_config_and_renewed_when_the_secret_changes() {
        let ml = AzureMl::default();
        let a = ml.workspace(&config("one", None)).expect("client");
        let b = ml.workspace(&config("one", None)).expect("client");
        assert!(Arc::ptr_eq(&a.tokens, &b.tokens));
        let c = ml.workspace(&config("two", None)).expect("client");
        assert!(!Arc::ptr_eq(&a.tokens, &c.tokens));
    }

    #[test]
    fn bad_ca_bundle_is_a_config_error() {
        let err = AzureMl::default().workspace(&config("s", Some("not a certificate"))).expect_err("bad PEM");
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        assert!(matches!(err.class(), ErrorClass::InvalidSpec { .. }));
    }

    #[test]
    fn workspace_urls_carry_the_api_version() {
        let ws = AzureMl::default().workspace(&config("s", None)).expect("client");
        let url = ws.workspace_url(&["onlineEndpoints", "ep"]);
        assert_eq!(
            url.as_str(),
            "https://management.azure.com/subscriptions/s/resourceGroups/r/providers/\
             Microsoft.MachineLearningServices/workspaces/w/onlineEndpoints/ep?api-version=2025-12-01"
        );
    }

    #[test]
    fn status_labels_are_bounded() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(299), "2xx");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
    }
}
