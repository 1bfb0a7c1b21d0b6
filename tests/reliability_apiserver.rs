//! kube-apiserver killed and restarted mid-workflow: watches break, requests fail, and the operator must
//! neither lose nor duplicate work. This binary runs its own control plane, since it restarts it.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use azureml_emulator::{Config as EmulatorConfig, Emulator};
use azureml_operator::api::conditions;
use azureml_operator::api::{FineTuneJob, ModelRegistration, Workspace};
use azureml_operator::azure::{AzureMl, ClientOptions};
use azureml_operator::controller::{self, Context, policy::Policy};
use azureml_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use xtask::control_plane::{ControlPlane, Options};

const NS: &str = "apiserver-restart";

async fn create<K>(client: &Client, manifest: Value)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(manifest).expect("manifest");
    Api::<K>::namespaced(client.clone(), NS).create(&PostParams::default(), &obj).await.expect("created");
}

/// Polls through API server outages (errors count as "not yet").
async fn wait_for<K>(client: &Client, name: &str, done: impl Fn(&K) -> bool)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(obj)) = api.get_opt(name).await
            && done(&obj)
        {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {} {name}", K::kind(&()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn requests(http: &reqwest::Client, base: &str, method: &str, needle: &str) -> usize {
    let log: Value =
        http.get(format!("{base}/_emulator/requests")).send().await.unwrap().json().await.unwrap();
    log["requests"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|r| r["method"] == method && r["path"].as_str().is_some_and(|p| p.contains(needle)))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_api_server_loses_and_duplicates_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cp = ControlPlane::start(Options::default()).await.expect("control plane");
    cp.install_crds(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")).await.expect("CRDs");
    let emulator = Emulator::start(EmulatorConfig::default().with_time_scale(300.0)).await.expect("emulator");
    let client = cp.client().await.expect("client");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    support::operator::create_emulator_secrets(&client, NS, &emulator).await;
    create::<Workspace>(&client, support::operator::emulator_workspace("default", &emulator)).await;
    let ctx = Arc::new(Context::new(
        cp.client().await.expect("operator client"),
        AzureMl::new(ClientOptions { request_timeout: Duration::from_secs(5), ..ClientOptions::default() }),
        Policy::scaled(0.01),
        Arc::new(Metrics::default()),
    ));
    let operator = tokio::spawn(controller::run_all(ctx, Some(NS.to_owned())));

    create::<FineTuneJob>(
        &client,
        json!({
            "apiVersion": "azureml-operator.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "phi3"},
            "spec": {"model": {"name": "Phi-3-mini-4k-instruct"}, "compute": {"name": "gpu-cluster"},
                "data": {"train": "azureml://datastores/workspaceblobstore/paths/t.jsonl",
                         "test": "azureml://datastores/workspaceblobstore/paths/s.jsonl"}}
        }),
    )
    .await;
    create::<ModelRegistration>(&client, json!({
        "apiVersion": "azureml-operator.io/v1alpha1", "kind": "ModelRegistration", "metadata": {"name": "phi3-model"},
        "spec": {"source": {"fineTuneJobRef": {"name": "phi3"}}}
    }))
    .await;
    // Restart the API server while the job runs, and again while the registration is pending.
    wait_for::<FineTuneJob>(&client, "phi3", |j| j.status.as_ref().is_some_and(|s| s.job_name.is_some()))
        .await;
    let mut restarts = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        cp.restart_apiserver(Duration::from_secs(60)).await.expect("API server restarts");
        restarts.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let client = cp.client().await.expect("client after restarts");
    wait_for::<ModelRegistration>(&client, "phi3-model", |m| {
        m.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions, None))
    })
    .await;
    let http = reqwest::Client::new();
    let job_puts = requests(&http, emulator.http_url(), "PUT", "/jobs/").await;
    let model_puts = requests(&http, emulator.http_url(), "PUT", "/models/").await;
    println!(
        "kube-apiserver restarted {} times mid-workflow (each {:?} to ready); job PUTs {job_puts}, model version PUTs {model_puts}",
        restarts.len(),
        restarts
    );
    assert_eq!(job_puts, 1, "exactly one Azure job");
    assert_eq!(model_puts, 1, "exactly one model version");
    operator.abort();
}
