//! Runs the operator in-process for one test namespace, against the shared test control plane and a
//! fresh Azure ML emulator, with a Workspace named `default` that points at the emulator.
//!
//! `kill()` aborts the controllers mid-flight (what SIGKILL does to the process: nothing is flushed),
//! `restart()` starts them again with empty caches, as a restarted pod would.

use std::sync::Arc;
use std::time::Duration;

use azureml_emulator::{Config as EmulatorConfig, Emulator, RunningEmulator};
use azureml_operator::api::Workspace;
use azureml_operator::azure::{AzureMl, ClientOptions};
use azureml_operator::controller::{self, Context, policy::Policy};
use azureml_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// How much faster than Azure the emulator runs in tests.
pub const EMULATOR_TIME_SCALE: f64 = 600.0;
/// The operator's intervals, scaled to match.
pub const INTERVAL_SCALE: f64 = 0.01;

/// An operator and an emulator serving one namespace.
pub struct Operator {
    pub namespace: String,
    pub emulator: RunningEmulator,
    pub metrics: Arc<Metrics>,
    task: Option<JoinHandle<()>>,
    http: reqwest::Client,
}

impl Operator {
    /// Starts an emulator, creates a namespace with the credential and CA Secrets and a Ready
    /// Workspace `default`, and starts the controllers for that namespace.
    pub async fn start(prefix: &str) -> Self {
        Self::start_with(prefix, EmulatorConfig::default()).await
    }

    /// As [`Operator::start`], with a custom emulator configuration (its time scale is set here).
    pub async fn start_with(prefix: &str, config: EmulatorConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let emulator =
            Emulator::start(config.with_time_scale(EMULATOR_TIME_SCALE)).await.expect("emulator starts");
        let namespace = super::test_namespace(prefix).await;
        let client = super::client().await;
        create_emulator_secrets(&client, &namespace, &emulator).await;
        let workspace: Workspace =
            serde_json::from_value(emulator_workspace("default", &emulator)).expect("workspace");
        Api::<Workspace>::namespaced(client, &namespace)
            .create(&PostParams::default(), &workspace)
            .await
            .expect("workspace created");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        let mut op = Self { namespace, emulator, metrics: Arc::new(Metrics::default()), task: None, http };
        op.restart().await;
        op.wait_for::<Workspace>("default", Duration::from_secs(60), |ws| {
            ws.status
                .as_ref()
                .is_some_and(|s| azureml_operator::api::conditions::is_ready(&s.conditions, None))
        })
        .await;
        op
    }

    /// Starts (again) the controllers with fresh caches.
    pub async fn restart(&mut self) {
        self.kill();
        let client = super::client().await;
        let azure = AzureMl::new(ClientOptions {
            request_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        });
        let ctx = Arc::new(Context::new(client, azure, Policy::scaled(INTERVAL_SCALE), self.metrics.clone()));
        self.task = Some(tokio::spawn(controller::run_all(ctx, Some(self.namespace.clone()))));
    }

    /// Stops the controllers at once, wherever they are.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// An admin client for this test.
    pub async fn client(&self) -> Client {
        super::client().await
    }

    /// A typed API for a kind in the test namespace.
    pub async fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client().await, &self.namespace)
    }

    /// Creates an object from JSON in the test namespace.
    pub async fn create<K>(&self, manifest: Value) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(manifest).expect("manifest matches the type");
        self.api::<K>().await.create(&PostParams::default(), &obj).await.expect("created")
    }

    /// Polls an object until `done` holds, panicking with its last state after `timeout`.
    pub async fn wait_for<K>(&self, name: &str, timeout: Duration, done: impl Fn(&K) -> bool) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api = self.api::<K>().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = api.get_opt(name).await.expect("read");
            if let Some(obj) = &last
                && done(obj)
            {
                return obj.clone();
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {} {name}; last seen:\n{}",
                    K::kind(&()),
                    serde_json::to_string_pretty(&last).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an object is gone (its finalizer released).
    pub async fn wait_gone<K>(&self, name: &str, timeout: Duration)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>().await;
        let deadline = tokio::time::Instant::now() + timeout;
        while api.get_opt(name).await.expect("read").is_some() {
            assert!(tokio::time::Instant::now() < deadline, "{} {name} still exists", K::kind(&()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET an emulator admin route (`/_emulator/...`) as JSON.
    pub async fn admin_get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.emulator.http_url());
        self.http.get(&url).send().await.expect("admin GET").json().await.expect("admin JSON")
    }

    /// POST JSON to an emulator admin route.
    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.emulator.http_url());
        let resp = self.http.post(&url).json(&body).send().await.expect("admin POST");
        assert!(resp.status().is_success(), "admin POST {path}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }

    /// The emulator's request log.
    pub async fn requests(&self) -> Vec<Value> {
        let v = self.admin_get("/_emulator/requests").await;
        match v {
            Value::Array(items) => items,
            Value::Object(mut o) => match o.remove("requests") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// Requests whose method matches and whose path contains `needle`.
    pub async fn requests_matching(&self, method: &str, needle: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["method"] == method && r["path"].as_str().is_some_and(|p| p.contains(needle)))
            .collect()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The service principal the emulator accepts (its tenant, client id and secret).
pub const EMULATOR_TENANT: &str = "00000000-0000-0000-0000-0000000000aa";
pub const EMULATOR_CLIENT_ID: &str = "00000000-0000-0000-0000-0000000000cc";
pub const EMULATOR_CLIENT_SECRET: &str = "emulator-secret";

/// Puts into `namespace` the credential and CA Secrets that [`emulator_workspace`] names.
pub async fn create_emulator_secrets(client: &Client, namespace: &str, emulator: &RunningEmulator) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for (name, key, value) in [
        ("azureml-credentials", "clientSecret", EMULATOR_CLIENT_SECRET),
        ("azureml-emulator-ca", "ca.crt", emulator.ca_pem()),
    ] {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {key: value}}))
                .expect("secret");
        secrets.create(&PostParams::default(), &secret).await.expect("secret created");
    }
}

/// A Workspace named `name` pointing at the emulator, with a client-secret credential.
pub fn emulator_workspace(name: &str, emulator: &RunningEmulator) -> Value {
    let url = emulator.https_url();
    json!({
        "apiVersion": "azureml-operator.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {
            "subscriptionId": "00000000-0000-0000-0000-000000000001",
            "resourceGroup": "rg-azureml-demo",
            "workspaceName": "ws-azureml-demo",
            "cloud": "Custom",
            "endpoints": {"resourceManager": url, "authorityHost": url, "registryDiscovery": url},
            "credential": {
                "type": "ClientSecret",
                "tenantId": EMULATOR_TENANT,
                "clientId": EMULATOR_CLIENT_ID,
                "secretRef": {"name": "azureml-credentials", "key": "clientSecret"}
            },
            "caBundleSecretRef": {"name": "azureml-emulator-ca", "key": "ca.crt"}
        }
    })
}
