//! Workspace controller against a real API server and the emulator: Ready only after an authenticated
//! GET, each credential or coordinate problem Stalled with its reason, transient faults retried silently.

mod support;

use std::time::Duration;

use azureml_operator::api::Workspace;
use azureml_operator::api::conditions::{self, reasons};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::operator::Operator;

const WAIT: Duration = Duration::from_secs(60);

fn reason(ws: &Workspace) -> Option<String> {
    let s = ws.status.as_ref()?;
    conditions::find(&s.conditions, conditions::READY).map(|c| c.reason.clone())
}

fn stalled_with(ws: &Workspace, expected: &str) -> bool {
    ws.status.as_ref().is_some_and(|s| {
        conditions::find(&s.conditions, conditions::STALLED)
            .is_some_and(|c| c.status == "True" && c.reason == expected)
    })
}

/// A second Workspace in the namespace, changed by `edit` from the working one.
async fn variant(op: &Operator, name: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let api = op.api::<Workspace>().await;
    let base = api.get("default").await.expect("default workspace");
    let mut manifest = json!({
        "apiVersion": "azureml-operator.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": serde_json::to_value(&base.spec).expect("spec"),
    });
    edit(&mut manifest);
    op.create::<Workspace>(manifest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_becomes_ready_with_location_after_an_authenticated_get() {
    let op = Operator::start("ws-ready").await;
    let ws = op.api::<Workspace>().await.get("default").await.expect("read");
    let status = ws.status.expect("status");
    assert_eq!(status.location.as_deref(), Some("eastus2"));
    assert_eq!(
        reason(&op.api::<Workspace>().await.get("default").await.unwrap()).as_deref(),
        Some(reasons::CONNECTED)
    );
    assert!(status.conditions.iter().all(|c| c.observed_generation == ws.metadata.generation));
    // The GET really happened, with a bearer token the emulator issued.
    let gets = op.requests_matching("GET", "/workspaces/ws-azureml-demo").await;
    assert!(!gets.is_empty(), "no workspace GET in the emulator's log");
    let tokens = op.requests_matching("POST", "/oauth2/v2.0/token").await;
    assert!(!tokens.is_empty(), "no token request in the emulator's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_stalls_then_recovers_when_the_secret_appears() {
    let op = Operator::start("ws-secret").await;
    variant(&op, "late", |m| m["spec"]["credential"]["secretRef"]["name"] = json!("late-secret")).await;
    op.wait_for::<Workspace>("late", WAIT, |ws| stalled_with(ws, reasons::SECRET_MISSING)).await;
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "late-secret"}, "stringData": {"clientSecret": "emulator-secret"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(op.client().await, &op.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    // The Secret watch brings the Workspace back, well before the periodic re-check.
    op.wait_for::<Workspace>("late", WAIT, |ws| reason(ws).as_deref() == Some(reasons::CONNECTED)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_and_wrong_workspace_stall_with_their_reasons() {
    let op = Operator::start("ws-wrong").await;
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "bad"}, "stringData": {"clientSecret": "not-the-secret"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(op.client().await, &op.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    variant(&op, "badcred", |m| m["spec"]["credential"]["secretRef"]["name"] = json!("bad")).await;
    variant(&op, "nows", |m| m["spec"]["workspaceName"] = json!("no-such-workspace")).await;
    let bad =
        op.wait_for::<Workspace>("badcred", WAIT, |ws| stalled_with(ws, reasons::CREDENTIAL_INVALID)).await;
    let msg = conditions::find(&bad.status.unwrap().conditions, conditions::STALLED).unwrap().message.clone();
    assert!(!msg.contains("not-the-secret"), "the secret leaked into a condition: {msg}");
    let nows =
        op.wait_for::<Workspace>("nows", WAIT, |ws| stalled_with(ws, reasons::WORKSPACE_NOT_FOUND)).await;
    let msg =
        conditions::find(&nows.status.unwrap().conditions, conditions::STALLED).unwrap().message.clone();
    assert!(msg.contains("no-such-workspace"), "{msg}");
    // Fixing the spec recovers.
    op.api::<Workspace>()
        .await
        .patch(
            "nows",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"workspaceName": "ws-azureml-demo"}})),
        )
        .await
        .expect("fixed");
    op.wait_for::<Workspace>("nows", WAIT, |ws| reason(ws).as_deref() == Some(reasons::CONNECTED)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_never_surface() {
    let op = Operator::start("ws-faults").await;
    op.admin_post(
        "/_emulator/faults",
        json!({"method": "GET", "pathRegex": "/workspaces/ws-azureml-demo$", "status": 503, "times": 3}),
    )
    .await;
    op.admin_post(
        "/_emulator/faults",
        json!({"method": "GET", "pathRegex": "/workspaces/ws-azureml-demo$", "status": 429, "retryAfter": 1, "times": 2}),
    )
    .await;
    variant(&op, "flaky", |_| {}).await;
    let api = op.api::<Workspace>().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ws = api.get("flaky").await.expect("read");
        let stalled = ws.status.as_ref().and_then(|s| conditions::find(&s.conditions, conditions::STALLED));
        assert!(
            stalled.is_none_or(|c| c.status != "True"),
            "a transient fault surfaced as Stalled: {stalled:?}"
        );
        if reason(&ws).as_deref() == Some(reasons::CONNECTED) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never became Ready: {:?}", ws.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
