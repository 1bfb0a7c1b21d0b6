//! OnlineEndpoint controller (notebook steps 7–9): observes Azure, the referenced ModelRegistrations
//! and the persisted long-running operations, lets [`decide`] pick one step, sends it, and reports.
//!
//! Every long-running operation is written to `status.operations` before it is waited on, so a
//! restarted operator polls it instead of sending the request again.

pub mod decide;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};

use self::decide::{
    AllowList, DeploymentPut, ModelState, Observed, OpState, Plan, Requeue, Step, TrackedOp, actions,
};
use super::connection::{Connection, connect};
use super::finetunejob::params::{INFERENCE_ALLOW_LIST_TAG, allow_list};
use super::{Context, Error, FIELD_MANAGER, Result, is_detached, patch_status, publish_transition, truncate};
use crate::api::conditions::{self, Health, reasons};
use crate::api::onlineendpoint::{
    AuthMode, DeploymentStatus, EndpointOnDelete, OnlineEndpoint, OnlineEndpointStatus, PendingOperation,
    SmokeTestResult,
};
use crate::api::{FINALIZER, ModelRegistration, Workspace};
use crate::azure::{
    self, EndpointKeys, ErrorClass, Operation, OperationStatus, ScoringAuth, WorkspaceClient,
};

/// Kind name for metrics and logs.
pub const KIND: &str = "OnlineEndpoint";
/// Condition type of the smoke test's own result.
pub const SMOKE_TEST_CONDITION: &str = "SmokeTestPassed";
/// Event reason when a change made outside Kubernetes is put back.
pub const DRIFT_CORRECTED: &str = "DriftCorrected";
/// Label on the keys Secrets the operator writes (the Secret watch selects on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "azureml-operator");

/// Stalled reasons that stand for a failure Azure reported; the same request is not re-sent for a
/// resync period (see [`held_failure`]).
const HELD_REASONS: [&str; 3] =
    [reasons::DEPLOYMENT_FAILED, reasons::QUOTA_EXCEEDED, reasons::AZURE_REJECTED];

/// How much of a scoring reply is kept in `status.lastSmokeTest.message`.
const SMOKE_EXCERPT_BYTES: usize = 256;

/// What the pass did to the smoke-test record.
#[derive(Clone, Debug, PartialEq)]
enum SmokeUpdate {
    /// Leave it as it is.
    Keep,
    /// A rollout started: the last result stays (it names the model it tested) but the test is owed
    /// again once the rollout completes.
    Outdated,
    /// A new result.
    Set(SmokeTestResult),
}

/// What Azure looked like this pass (absent when Azure was not reached).
#[derive(Clone, Debug, Default)]
struct Seen {
    endpoint: Option<azure::OnlineEndpoint>,
    deployments: BTreeMap<String, azure::OnlineDeployment>,
}

/// The reason and message of a failed Azure operation or request on `target`.
fn failure(target: &str, e: &azure::Error) -> Health {
    let quota = e.class() == ErrorClass::Quota;
    let what = match target.strip_prefix(decide::DEPLOYMENT_TARGET_PREFIX) {
        Some(name) => format!("deployment {name}"),
        None => "the endpoint".to_owned(),
    };
    let code = e.code().map(|c| format!(" ({c})")).unwrap_or_default();
    let message = if quota {
        format!(
            "Azure refused {what}{code}: {}; request more quota for the VM family or choose another instanceType",
            e.message()
        )
    } else {
        format!(
            "Azure rejected {what}{code}: {}; fix the spec or the cause in Azure and re-apply",
            e.message()
        )
    };
    if e.code() == Some("OperationTimedOut") {
        return Health::stalled(
            reasons::OPERATION_TIMED_OUT,
            format!(
                "Azure did not finish {what} within its operation timeout; check it in Azure ML studio, then re-apply or delete the resource"
            ),
        );
    }
    let reason = match (quota, target == decide::ENDPOINT_TARGET) {
        (true, _) => reasons::QUOTA_EXCEEDED,
        (false, true) => reasons::AZURE_REJECTED,
        (false, false) => reasons::DEPLOYMENT_FAILED,
    };
    Health::stalled(reason, message)
}

/// A failure Azure reported for this generation less than `resync` ago, from the old conditions.
fn held_failure(
    old: &[Condition],
    generation: Option<i64>,
    now: jiff::Timestamp,
    resync: Duration,
) -> Option<Health> {
    let c = conditions::find(old, conditions::STALLED)?;
    let reason = HELD_REASONS.iter().find(|r| **r == c.reason)?;
    let young = now.duration_since(c.last_transition_time.0).unsigned_abs() < resync;
    (c.status == "True" && c.observed_generation == generation && young)
        .then(|| Health::stalled(reason, c.message.clone()))
}

fn endpoint_name(oe: &OnlineEndpoint) -> String {
    oe.spec.endpoint_name.clone().unwrap_or_else(|| oe.name_any())
}

async fn poll_operations(client: &WorkspaceClient, pending: &[PendingOperation]) -> Result<Vec<TrackedOp>> {
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        let op: Operation = match serde_json::from_str(&p.operation) {
            Ok(op) => op,
            Err(e) => {
                // Not ours to guess at: the next GET shows Azure's state, and decide acts on that.
                tracing::warn!(target = %p.target, error = %e, "dropping an unreadable persisted operation");
                continue;
            }
        };
        let state = match client.poll(&op).await {
            Ok(OperationStatus::InProgress { retry_after }) => OpState::InProgress { retry_after },
            Ok(OperationStatus::Succeeded) => OpState::Succeeded,
            Ok(OperationStatus::Failed(e)) => {
                let h = failure(&p.target, &e);
                OpState::Failed { reason: h.reason(), message: h.message().to_owned() }
            }
            // An operation Azure no longer knows is over; the resource's own state tells the rest.
            Err(e) if e.class() == ErrorClass::NotFound => OpState::Succeeded,
            Err(e) => return Err(Error::azure("poll operation")(e)),
        };
        out.push(TrackedOp { pending: p.clone(), state });
    }
    Ok(out)
}

/// The base model whose inference allow list applies to a deployment, as a registry asset id.
type BaseModels = BTreeMap<String, String>;

async fn resolve_models(
    ctx: &Context,
    ns: &str,
    oe: &OnlineEndpoint,
) -> Result<(BTreeMap<String, ModelState>, BaseModels)> {
    let api: Api<ModelRegistration> = Api::namespaced(ctx.client.clone(), ns);
    let mut models = BTreeMap::new();
    let mut bases = BTreeMap::new();
    for d in &oe.spec.deployments {
        if let Some(asset) = &d.model.asset_id {
            models.insert(d.name.clone(), ModelState::Ready(asset.clone()));
            if decide::registry_model(asset).is_some() {
                bases.insert(d.name.clone(), asset.clone());
            }
            continue;
        }
        let Some(r) = &d.model.model_registration_ref else {
            models
                .insert(d.name.clone(), ModelState::Waiting(format!("deployment {} names no model", d.name)));
            continue;
        };
        let Some(mreg) = api.get_opt(&r.name).await.map_err(Error::kube("read ModelRegistration"))? else {
            models.insert(
                d.name.clone(),
                ModelState::Waiting(format!(
                    "deployment {} waits for ModelRegistration {}, which does not exist in this namespace",
                    d.name, r.name
                )),
            );
            continue;
        };
        let status = mreg.status.clone().unwrap_or_default();
        let ready = conditions::is_ready(&status.conditions, mreg.metadata.generation);
        match status.model_id.clone().or(status.asset_id.clone()) {
            Some(id) if ready => {
                models.insert(d.name.clone(), ModelState::Ready(id));
                if let Some(base) = status.base_model.as_ref().filter(|b| !b.id.is_empty()) {
                    bases.insert(d.name.clone(), base.id.clone());
                }
            }
            _ => {
                let why = conditions::find(&status.conditions, conditions::READY)
                    .map(|c| format!(" (now {}: {})", c.reason, c.message))
                    .unwrap_or_default();
                models.insert(
                    d.name.clone(),
                    ModelState::Waiting(format!(
                        "deployment {} waits for ModelRegistration {} to be Ready{why}",
                        d.name, r.name
                    )),
                );
            }
        }
    }
    Ok((models, bases))
}

/// Reads the inference allow list of a registry model; `None` when it has none or cannot be read.
async fn registry_allow_list(client: &WorkspaceClient, asset: &str) -> Result<Option<AllowList>> {
    let Some((registry, name, version)) = decide::registry_model(asset) else { return Ok(None) };
    let looked_up = match client.registry(&registry).await {
        Ok(r) => r.model_version(&name, &version).await,
        Err(e) => Err(e),
    };
    let model = match looked_up {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        Err(e) if e.class().is_retryable() => return Err(Error::azure("read base model")(e)),
        Err(e) => {
            // The allow list is advice from the publisher; without it Azure is the judge.
            tracing::warn!(%asset, error = %e, "cannot read the base model's tags; not checking the instance type");
            return Ok(None);
        }
    };
    match allow_list(&model.tags, INFERENCE_ALLOW_LIST_TAG) {
        Ok(Some(sizes)) => Ok(Some(AllowList { model: format!("{name}:{version}"), sizes })),
        Ok(None) => Ok(None),
        Err(problem) => {
            tracing::warn!(%asset, message = %problem.message, "unreadable inference allow list; not checking");
            Ok(None)
        }
    }
}

/// Allow lists of the deployments about to be written (the only time the instance type is checked,
/// so steady state reads nothing from the registry).
async fn allow_lists(
    client: &WorkspaceClient,
    oe: &OnlineEndpoint,
    location: &str,
    models: &BTreeMap<String, ModelState>,
    bases: &BaseModels,
    seen: &Seen,
) -> Result<BTreeMap<String, AllowList>> {
    let mut cache: HashMap<String, Option<AllowList>> = HashMap::new();
    let mut out = BTreeMap::new();
    for d in &oe.spec.deployments {
        let (Some(ModelState::Ready(model)), Some(base)) = (models.get(&d.name), bases.get(&d.name)) else {
            continue;
        };
        let desired = decide::deployment_spec(d, model, location);
        let needs_write =
            seen.deployments.get(&d.name).is_none_or(|o| !decide::deployment_diff(&desired, o).is_empty());
        if !needs_write {
            continue;
        }
        if !cache.contains_key(base) {
            let list = registry_allow_list(client, base).await?;
            cache.insert(base.clone(), list);
        }
        if let Some(Some(list)) = cache.get(base) {
            out.insert(d.name.clone(), list.clone());
        }
    }
    Ok(out)
}

fn pending(target: String, action: &str, op: &Operation) -> PendingOperation {
    PendingOperation {
        target,
        action: action.to_owned(),
        // `Operation` is plain data (strings and numbers); serializing it cannot fail.
        operation: serde_json::to_string(op).unwrap_or_default(),
        started: Some(Time(jiff::Timestamp::now())),
    }
}

/// When to poll after starting operations.
fn first_poll(ops: &[PendingOperation]) -> Requeue {
    let wait = ops
        .iter()
        .filter_map(|p| serde_json::from_str::<Operation>(&p.operation).ok())
        .filter_map(|o| o.retry_after_seconds)
        .min()
        .map(Duration::from_secs);
    Requeue::Operation(wait)
}

/// What the act step produced.
struct Acted {
    health: Health,
    started: Vec<PendingOperation>,
    /// Deployments whose rollout started (the smoke test is owed again).
    rolled: bool,
    smoke: SmokeUpdate,
    requeue: Requeue,
}

/// Sends the Azure writes of `plan` and turns their outcome into health and new operations. A
/// transient failure comes back beside the operations that did start, so the caller persists those
/// before it returns the error for a retry.
async fn act(client: &WorkspaceClient, name: &str, plan: &Plan) -> (Acted, Option<azure::Error>) {
    let mut acted = Acted {
        health: plan.health.clone(),
        started: Vec::new(),
        rolled: false,
        smoke: SmokeUpdate::Keep,
        requeue: plan.requeue,
    };
    let mut transient = None;
    let mut record = |acted: &mut Acted,
                      target: String,
                      action: &str,
                      result: azure::Result<Option<Operation>>| {
        match result {
            Ok(Some(op)) => acted.started.push(pending(target, action, &op)),
            Ok(None) => {}
            Err(e) if matches!(e.class(), ErrorClass::Transient { .. } | ErrorClass::Throttled { .. }) => {
                transient = Some(e);
            }
            Err(e) if action == actions::DELETE && e.class() == ErrorClass::NotFound => {}
            Err(e) => {
                acted.health = failure(&target, &e);
                acted.requeue = Requeue::Resync;
            }
        }
    };
    match &plan.step {
        Step::PutEndpoint { spec, action } => {
            let result = client.put_online_endpoint(name, spec).await.map(Some);
            record(&mut acted, decide::ENDPOINT_TARGET.to_owned(), action, result);
        }
        Step::PutDeployments(puts) => {
            let results = join_all(puts.iter().map(|p: &DeploymentPut| async move {
                (p, client.put_online_deployment(name, &p.name, &p.spec).await.map(Some))
            }))
            .await;
            for (p, result) in results {
                record(&mut acted, decide::deployment_target(&p.name), p.action, result);
            }
            acted.rolled = !acted.started.is_empty();
        }
        Step::DeleteDeployments(names) => {
            let results = join_all(
                names.iter().map(|n| async move { (n, client.delete_online_deployment(name, n).await) }),
            )
            .await;
            for (n, result) in results {
                record(&mut acted, decide::deployment_target(n), actions::DELETE, result);
            }
        }
        Step::None | Step::Finish => {}
    }
    if !acted.started.is_empty() && !acted.health.is_stalled() {
        acted.requeue = first_poll(&acted.started);
    }
    if acted.rolled {
        acted.smoke = SmokeUpdate::Outdated;
    }
    (acted, transient)
}

/// The endpoint's keys, listed from Azure at most once per pass: ARM counts `listKeys` as a write,
/// and both the keys Secret and the smoke test may need them.
struct PassKeys<'a> {
    client: &'a WorkspaceClient,
    endpoint: &'a str,
    listed: Option<EndpointKeys>,
}

impl<'a> PassKeys<'a> {
    fn new(client: &'a WorkspaceClient, endpoint: &'a str) -> Self {
        Self { client, endpoint, listed: None }
    }

    async fn get(&mut self) -> azure::Result<EndpointKeys> {
        if let Some(keys) = &self.listed {
            return Ok(keys.clone());
        }
        let keys = self.client.list_endpoint_keys(self.endpoint).await?;
        self.listed = Some(keys.clone());
        Ok(keys)
    }
}

/// Data keys the operator owns in the keys Secret.
const SECRET_KEYS: [&str; 3] = ["scoringUri", "primaryKey", "secondaryKey"];

/// Whether the Secret already holds exactly `desired` in the keys the operator owns (values compared,
/// so rotated keys are noticed and unchanged ones cause no write).
fn secret_matches(existing: &Secret, uid: &str, desired: &BTreeMap<String, ByteString>) -> bool {
    let owned = existing.owner_references().iter().any(|r| r.uid == uid);
    let empty = BTreeMap::new();
    let data = existing.data.as_ref().unwrap_or(&empty);
    owned && SECRET_KEYS.iter().all(|k| data.get(*k).map(|v| &v.0) == desired.get(*k).map(|v| &v.0))
}

/// Brings the keys Secret up to date: the scoring URI and, for key auth, the keys Azure holds now (so
/// keys regenerated in Azure reach the Secret on the next pass). Writes only when a value differs.
/// Returns a Stalled health when Azure refuses to list the keys.
async fn ensure_keys_secret(
    ctx: &Context,
    oe: &OnlineEndpoint,
    keys: &mut PassKeys<'_>,
    endpoint: &azure::OnlineEndpoint,
    secret_name: &str,
) -> Result<Option<Health>> {
    let ns = oe.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = oe.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let scoring_uri = endpoint.scoring_uri.clone().unwrap_or_default();
    let mut data = BTreeMap::from([("scoringUri".to_owned(), ByteString(scoring_uri.into_bytes()))]);
    if oe.spec.auth_mode == AuthMode::Key {
        match keys.get().await {
            Ok(k) => {
                data.insert("primaryKey".into(), ByteString(k.primary_key.expose().as_bytes().to_vec()));
                data.insert("secondaryKey".into(), ByteString(k.secondary_key.expose().as_bytes().to_vec()));
            }
            Err(e) if e.class().is_retryable() => return Err(Error::azure("list endpoint keys")(e)),
            Err(e) => {
                return Ok(Some(Health::stalled(
                    reasons::AZURE_REJECTED,
                    format!(
                        "Azure refused to list the keys of endpoint {}: {}; check the operator's role on the workspace",
                        endpoint.name,
                        e.message()
                    ),
                )));
            }
        }
    }
    let existing = api.get_opt(secret_name).await.map_err(Error::kube("read keys Secret"))?;
    if existing.as_ref().is_some_and(|s| secret_matches(s, &uid, &data)) {
        return Ok(None);
    }
    let owner = oe.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_owned()),
            namespace: Some(ns),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    api.patch(secret_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret))
        .await
        .map_err(Error::kube("write keys Secret"))?;
    tracing::info!(secret = %secret_name, "wrote the endpoint's keys Secret");
    Ok(None)
}

/// Sends the spec's smoke test to `deployment`, which serves `model`, and records the outcome (never
/// the key or token it used).
async fn run_smoke_test(
    oe: &OnlineEndpoint,
    client: &WorkspaceClient,
    keys: &mut PassKeys<'_>,
    endpoint: &azure::OnlineEndpoint,
    deployment: &str,
    model: Option<&str>,
) -> Result<SmokeUpdate> {
    let Some(test) = &oe.spec.smoke_test else { return Ok(SmokeUpdate::Keep) };
    let Some(uri) = endpoint.scoring_uri.as_deref() else { return Ok(SmokeUpdate::Keep) };
    let failed =
        |message: String| SmokeUpdate::Set(smoke_result(oe, deployment, model, None, None, false, message));
    let auth = match oe.spec.auth_mode {
        AuthMode::Key => match keys.get().await {
            Ok(k) => ScoringAuth::Key(k.primary_key),
            Err(e) if e.class().is_retryable() => return Err(Error::azure("list endpoint keys")(e)),
            Err(e) => return Ok(failed(format!("could not list the endpoint keys: {}", e.message()))),
        },
        // A token lives for hours; asking for one per test keeps it out of every store.
        AuthMode::AmlToken => match client.get_endpoint_token(&endpoint.name).await {
            Ok(t) => ScoringAuth::AmlToken(t.access_token),
            Err(e) if e.class().is_retryable() => return Err(Error::azure("request endpoint token")(e)),
            Err(e) => return Ok(failed(format!("could not get an endpoint token: {}", e.message()))),
        },
        AuthMode::AadToken => ScoringAuth::AadToken,
    };
    let update = match client.score(uri, &auth, Some(deployment), &test.request).await {
        Ok(resp) => {
            let passed = (200..300).contains(&resp.status);
            let excerpt = truncate(resp.body.trim(), SMOKE_EXCERPT_BYTES);
            let message = if passed { excerpt } else { format!("HTTP {}: {excerpt}", resp.status) };
            smoke_result(
                oe,
                deployment,
                model,
                Some(i32::from(resp.status)),
                Some(resp.latency.as_millis() as i64),
                passed,
                message,
            )
        }
        Err(e) => smoke_result(oe, deployment, model, None, None, false, format!("request failed: {e}")),
    };
    Ok(SmokeUpdate::Set(update))
}

fn smoke_result(
    oe: &OnlineEndpoint,
    deployment: &str,
    model: Option<&str>,
    http_status: Option<i32>,
    latency_ms: Option<i64>,
    passed: bool,
    message: String,
) -> SmokeTestResult {
    SmokeTestResult {
        time: Some(Time(jiff::Timestamp::now())),
        deployment: deployment.to_owned(),
        model: model.map(str::to_owned),
        http_status,
        latency_ms,
        passed,
        message: Some(message),
        observed_generation: oe.meta().generation,
    }
}

/// Sets (or removes, with `None`) one condition, keeping its transition time while its status holds.
fn set_condition(
    list: &mut Vec<Condition>,
    type_: &str,
    new: Option<(&str, &str, String)>,
    generation: Option<i64>,
    now: &Time,
) {
    let previous = list.iter().position(|c| c.type_ == type_);
    let Some((status, reason, message)) = new else {
        if let Some(i) = previous {
            list.remove(i);
        }
        return;
    };
    let last_transition_time = match previous.map(|i| &list[i]) {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now.clone(),
    };
    let c = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => list[i] = c,
        None => list.push(c),
    }
}

/// Whether a rollout started since the last smoke test (the condition [`SmokeUpdate::Outdated`] set,
/// which only a new result replaces), so the test is owed whatever its generation says.
fn smoke_outdated(conds: &[Condition]) -> bool {
    conditions::find(conds, SMOKE_TEST_CONDITION)
        .is_some_and(|c| c.status == "Unknown" && c.reason == reasons::PROGRESSING)
}

fn to_i32_map(m: &BTreeMap<String, u32>) -> BTreeMap<String, i32> {
    m.iter().map(|(k, v)| (k.clone(), i32::try_from(*v).unwrap_or(i32::MAX))).collect()
}

/// Everything `report` writes besides conditions.
struct Report {
    health: Health,
    endpoint_name: Option<String>,
    seen: Option<Seen>,
    operations: Vec<PendingOperation>,
    smoke: SmokeUpdate,
}

impl Report {
    /// A report that knows nothing of the endpoint (waiting for the Workspace, or deleting): only health
    /// and the operations still pending change; the smoke-test result is kept.
    fn without_endpoint(health: Health, operations: Vec<PendingOperation>) -> Self {
        Self { health, endpoint_name: None, seen: None, operations, smoke: SmokeUpdate::Keep }
    }
}

async fn report(
    oe: &OnlineEndpoint,
    ctx: &Context,
    old: &OnlineEndpointStatus,
    r: Report,
) -> Result<OnlineEndpointStatus> {
    let generation = oe.meta().generation;
    let now = Time(jiff::Timestamp::now());
    let mut status = old.clone();
    status.endpoint_name = r.endpoint_name.or_else(|| old.endpoint_name.clone());
    if let Some(seen) = &r.seen {
        let ep = seen.endpoint.as_ref();
        status.scoring_uri = ep.and_then(|e| e.scoring_uri.clone());
        status.swagger_uri = ep.and_then(|e| e.swagger_uri.clone());
        status.provisioning_state = ep.map(|e| e.provisioning_state.to_string());
        status.traffic = ep.map(|e| to_i32_map(&e.traffic)).unwrap_or_default();
        status.mirror_traffic = ep.map(|e| to_i32_map(&e.mirror_traffic)).unwrap_or_default();
        status.deployments = seen
            .deployments
            .values()
            .map(|d| DeploymentStatus {
                name: d.name.clone(),
                provisioning_state: Some(d.provisioning_state.to_string()),
                model_id: d.model.clone(),
                instance_type: d.instance_type.clone(),
                instance_count: d.instance_count.and_then(|c| i32::try_from(c).ok()),
            })
            .collect();
    }
    status.operations = r.operations;
    status.observed_generation = generation;
    let mut conds = old.conditions.clone();
    if oe.spec.smoke_test.is_none() {
        status.last_smoke_test = None;
        set_condition(&mut conds, SMOKE_TEST_CONDITION, None, generation, &now);
    } else {
        match r.smoke {
            SmokeUpdate::Keep => {}
            SmokeUpdate::Outdated => {
                // The last result stays, naming the model it tested, until the new test has run.
                let tested = old
                    .last_smoke_test
                    .as_ref()
                    .and_then(|t| t.model.as_deref())
                    .map(|m| format!(" (status.lastSmokeTest is for model {m})"))
                    .unwrap_or_default();
                let msg = format!("a rollout is in progress; the smoke test runs when it completes{tested}");
                set_condition(
                    &mut conds,
                    SMOKE_TEST_CONDITION,
                    Some(("Unknown", reasons::PROGRESSING, msg)),
                    generation,
                    &now,
                );
            }
            SmokeUpdate::Set(result) => {
                let (state, reason) = if result.passed {
                    ("True", reasons::SUCCEEDED)
                } else {
                    ("False", reasons::SMOKE_TEST_FAILED)
                };
                let model = result.model.as_deref().map(|m| format!(" (model {m})")).unwrap_or_default();
                let msg = format!(
                    "deployment {}{model}: {}",
                    result.deployment,
                    result.message.clone().unwrap_or_default()
                );
                set_condition(&mut conds, SMOKE_TEST_CONDITION, Some((state, reason, msg)), generation, &now);
                status.last_smoke_test = Some(result);
            }
        }
    }
    status.conditions = conditions::compute(&conds, &r.health, generation, &now);
    if let Some(uid) = oe.uid() {
        let phase = if r.health.is_ready() {
            "Ready"
        } else if r.health.is_stalled() {
            "Stalled"
        } else {
            "Progressing"
        };
        ctx.metrics.set_phase(KIND, &uid, Some(phase));
    }
    publish_transition(ctx, oe, &old.conditions, &r.health);
    if &status != old {
        patch_status(&ctx.client, oe, &status).await?;
    }
    Ok(status)
}

/// One Event for everything put back in this pass, so its note names every difference.
fn publish_drift(ctx: &Context, oe: &OnlineEndpoint, drift: &[String]) {
    if drift.is_empty() {
        return;
    }
    let event = Event {
        type_: EventType::Normal,
        reason: DRIFT_CORRECTED.to_owned(),
        note: Some(truncate(&drift.join("; "), 1024)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    ctx.events.send(event, oe.object_ref(&()));
}

fn requeue(ctx: &Context, r: Requeue) -> Action {
    Action::requeue(match r {
        Requeue::Operation(retry_after) => ctx.policy.operation_poll(retry_after),
        Requeue::Dependency => ctx.policy.dependency_wait(),
        Requeue::Resync => ctx.policy.resync(),
    })
}

async fn apply(oe: Arc<OnlineEndpoint>, ctx: &Context) -> Result<Action> {
    let ns = oe.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let old = oe.status.clone().unwrap_or_default();
    let generation = oe.meta().generation;
    let name = endpoint_name(&oe);
    let (client, workspace) = match connect(ctx, &ns, &oe.spec.workspace_ref).await? {
        Connection::Ready { client, workspace } => (client, workspace),
        Connection::Unavailable(health) => {
            let r = Report::without_endpoint(health, old.operations.clone());
            report(&oe, ctx, &old, r).await?;
            return Ok(Action::requeue(ctx.policy.workspace_wait()));
        }
    };
    let location = match workspace.status.as_ref().and_then(|s| s.location.clone()) {
        Some(l) => l,
        None => client.get_workspace().await.map_err(Error::azure("read workspace"))?.location,
    };

    // Observe: persisted operations first, so the GETs below show their outcome.
    let tracked = poll_operations(&client, &old.operations).await?;
    let endpoint = client.get_online_endpoint(&name).await.map_err(Error::azure("get endpoint"))?;
    let deployments = match &endpoint {
        Some(_) => client.list_online_deployments(&name).await.map_err(Error::azure("list deployments"))?,
        None => Vec::new(),
    };
    let seen = Seen { endpoint, deployments: deployments.into_iter().map(|d| (d.name.clone(), d)).collect() };
    let (models, bases) = resolve_models(ctx, &ns, &oe).await?;
    let lists = allow_lists(&client, &oe, &location, &models, &bases, &seen).await?;
    let now = jiff::Timestamp::now();
    let observed = Observed {
        endpoint_name: name.clone(),
        location,
        endpoint: seen.endpoint.clone(),
        deployments: seen.deployments.clone(),
        models,
        allow_lists: lists,
        operations: tracked.clone(),
        hold: held_failure(&old.conditions, generation, now, ctx.policy.resync()),
        was_ready: conditions::is_ready(&old.conditions, generation),
    };
    let plan = decide::decide(&oe.spec, &observed);
    tracing::debug!(endpoint = %name, step = plan.step.kind(), reason = plan.health.reason(), "decided");

    // Operations still running stay persisted; finished ones are dropped.
    let mut operations: Vec<PendingOperation> = tracked
        .iter()
        .filter(|t| matches!(t.state, OpState::InProgress { .. }))
        .map(|t| t.pending.clone())
        .collect();

    // The Azure identity is recorded before the first write, so a crash right after it is recoverable.
    let mut old = old;
    if old.endpoint_name.is_none() && matches!(plan.step, Step::PutEndpoint { .. }) {
        let r = Report {
            health: plan.health.clone(),
            endpoint_name: Some(name.clone()),
            seen: Some(seen.clone()),
            operations: operations.clone(),
            smoke: SmokeUpdate::Keep,
        };
        old = report(&oe, ctx, &old, r).await?;
    }

    let (acted, transient) = act(&client, &name, &plan).await;
    operations.extend(acted.started.iter().cloned());
    let mut health = acted.health.clone();
    let mut smoke = acted.smoke.clone();
    let mut next = acted.requeue;
    if transient.is_none() && !acted.health.is_stalled() {
        publish_drift(ctx, &oe, &plan.drift);
    }

    if plan.step == Step::Finish
        && let Some(ep) = &seen.endpoint
    {
        let mut keys = PassKeys::new(&client, &ep.name);
        if let Some(secret) = &oe.spec.keys_secret
            && let Some(stalled) = ensure_keys_secret(ctx, &oe, &mut keys, ep, &secret.name).await?
        {
            health = stalled;
            next = Requeue::Resync;
        }
        let target = decide::smoke_test_deployment(&oe.spec);
        let serving = target.as_ref().and_then(|d| seen.deployments.get(d)).and_then(|d| d.model.clone());
        let due = decide::smoke_test_due(
            &oe.spec,
            &decide::SmokeRecord {
                last: old.last_smoke_test.as_ref(),
                rollout_since: smoke_outdated(&old.conditions),
                serving: serving.as_deref(),
            },
            generation,
            now,
            ctx.policy.resync(),
        );
        if due
            && !health.is_stalled()
            && let Some(target) = &target
        {
            smoke = run_smoke_test(&oe, &client, &mut keys, ep, target, serving.as_deref()).await?;
        }
        // A result from before the last rollout says nothing about what serves now.
        let result = match &smoke {
            SmokeUpdate::Set(r) => Some(r),
            _ if due => None,
            _ => old.last_smoke_test.as_ref(),
        };
        if oe.spec.smoke_test.is_some()
            && let Some(r) = result.filter(|r| !r.passed)
            && !health.is_stalled()
        {
            health = Health::stalled(
                reasons::SMOKE_TEST_FAILED,
                format!(
                    "the smoke test to deployment {} failed: {}; the endpoint keeps serving — check the deployment's logs and re-apply",
                    r.deployment,
                    r.message.as_deref().unwrap_or("no reply")
                ),
            );
        }
    }

    let r = Report { health, endpoint_name: Some(name), seen: Some(seen), operations, smoke };
    report(&oe, ctx, &old, r).await?;
    if let Some(e) = transient {
        return Err(Error::azure("send Azure request")(e));
    }
    Ok(requeue(ctx, next))
}

/// Whether deletion may release the finalizer now.
enum Cleanup {
    /// Still working: come back.
    Pending(Action),
    /// Nothing left in Azure (or nothing to do): release.
    Done,
}

async fn cleanup(oe: &OnlineEndpoint, ctx: &Context) -> Result<Cleanup> {
    let old = oe.status.clone().unwrap_or_default();
    if oe.spec.on_delete == EndpointOnDelete::Retain || is_detached(oe) {
        return Ok(Cleanup::Done);
    }
    // Never created: the name is recorded before the first write.
    let Some(name) = old.endpoint_name.clone() else { return Ok(Cleanup::Done) };
    let ns = oe.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let client = match connect(ctx, &ns, &oe.spec.workspace_ref).await? {
        Connection::Ready { client, .. } => client,
        // The workspace resource is gone: nothing in Azure is reachable any more.
        Connection::Unavailable(h) if h.reason() == reasons::WORKSPACE_MISSING => return Ok(Cleanup::Done),
        Connection::Unavailable(health) => {
            let r = Report::without_endpoint(health, old.operations.clone());
            report(oe, ctx, &old, r).await?;
            return Ok(Cleanup::Pending(Action::requeue(ctx.policy.workspace_wait())));
        }
    };
    let uid = oe.uid().unwrap_or_default();
    let deleting = |message: String| Health::progressing(reasons::DELETING, message);
    let stall = |e: &azure::Error| {
        Health::stalled(
            reasons::DELETE_FAILED,
            format!(
                "Azure failed to delete endpoint {name}: {}; fix the cause, or set the annotation azureml-operator.io/reconcile-policy=detach to let go",
                e.message()
            ),
        )
    };
    let backoff = |ctx: &Context| {
        let failures = ctx.failures.failed(&uid);
        Action::requeue(ctx.policy.backoff(failures, None))
    };

    // A delete already sent is resumed, never sent again while it runs.
    let sent = old
        .operations
        .iter()
        .find(|p| p.target == decide::ENDPOINT_TARGET && p.action == actions::DELETE)
        .and_then(|p| serde_json::from_str::<Operation>(&p.operation).ok().map(|op| (p.clone(), op)));
    if let Some((p, op)) = sent {
        match client.poll(&op).await {
            Ok(OperationStatus::InProgress { retry_after }) => {
                let r = Report::without_endpoint(
                    deleting(format!("waiting for Azure to delete endpoint {name}")),
                    vec![p],
                );
                report(oe, ctx, &old, r).await?;
                return Ok(Cleanup::Pending(Action::requeue(ctx.policy.operation_poll(Some(retry_after)))));
            }
            Ok(OperationStatus::Succeeded) => {}
            Err(e) if e.class() == ErrorClass::NotFound => {}
            Ok(OperationStatus::Failed(e)) => {
                let r = Report::without_endpoint(stall(&e), Vec::new());
                report(oe, ctx, &old, r).await?;
                return Ok(Cleanup::Pending(backoff(ctx)));
            }
            Err(e) => return Err(Error::azure("poll endpoint delete")(e)),
        }
    }

    let endpoint = client.get_online_endpoint(&name).await.map_err(Error::azure("get endpoint"))?;
    let Some(endpoint) = endpoint else { return Ok(Cleanup::Done) };
    if endpoint.provisioning_state == azure::ProvisioningState::Deleting {
        let r = Report::without_endpoint(deleting(format!("Azure is deleting endpoint {name}")), Vec::new());
        report(oe, ctx, &old, r).await?;
        return Ok(Cleanup::Pending(Action::requeue(ctx.policy.operation_poll(None))));
    }
    match client.delete_online_endpoint(&name).await {
        Ok(None) => Ok(Cleanup::Done),
        Ok(Some(op)) => {
            let p = pending(decide::ENDPOINT_TARGET.to_owned(), actions::DELETE, &op);
            let r = Report::without_endpoint(deleting(format!("deleting endpoint {name} in Azure")), vec![p]);
            report(oe, ctx, &old, r).await?;
            Ok(Cleanup::Pending(Action::requeue(ctx.policy.operation_poll(Some(op.retry_after())))))
        }
        Err(e) if e.class() == ErrorClass::NotFound => Ok(Cleanup::Done),
        Err(e) if matches!(e.class(), ErrorClass::Transient { .. } | ErrorClass::Throttled { .. }) => {
            Err(Error::azure("delete endpoint")(e))
        }
        Err(e) => {
            let r = Report::without_endpoint(stall(&e), Vec::new());
            report(oe, ctx, &old, r).await?;
            Ok(Cleanup::Pending(backoff(ctx)))
        }
    }
}

async fn reconcile(oe: Arc<OnlineEndpoint>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    let ns = oe.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<OnlineEndpoint> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = oe.uid().unwrap_or_default();
    // The watch cache can trail this controller's own last status write (a pass queued by the keys
    // Secret's event runs before the status event arrives). Acting on that copy would repeat a smoke
    // test or write back a status without the operations just persisted, so read the object fresh.
    let Some(oe) = api.get_opt(&oe.name_any()).await.map_err(Error::kube("read OnlineEndpoint"))? else {
        return Ok(Action::await_change());
    };
    let oe = Arc::new(oe);
    // kube's finalizer helper removes the finalizer as soon as cleanup returns Ok, so the waiting part
    // of a deletion (a long-running DELETE) happens here, and the helper only runs once Azure is done.
    if oe.meta().deletion_timestamp.is_some() && oe.finalizers().iter().any(|f| f == FINALIZER) {
        if let Cleanup::Pending(action) = cleanup(&oe, &ctx).await? {
            return Ok(action);
        }
        ctx.metrics.set_phase(KIND, &uid, None);
    }
    let oe = super::add_finalizer_early(&api, FINALIZER, oe).await;
    let action = finalizer(&api, FINALIZER, oe, |event| async {
        match event {
            FinalizerEvent::Apply(o) => apply(o, &ctx).await,
            FinalizerEvent::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await?;
    ctx.failures.succeeded(&uid);
    Ok(action)
}

/// Runs the OnlineEndpoint controller until shutdown. `namespace` limits it to one namespace.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let (endpoints, mregs, workspaces, secrets) = match &namespace {
        Some(ns) => (
            Api::<OnlineEndpoint>::namespaced(client.clone(), ns),
            Api::<ModelRegistration>::namespaced(client.clone(), ns),
            Api::<Workspace>::namespaced(client.clone(), ns),
            Api::<Secret>::namespaced(client, ns),
        ),
        None => {
            (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone()), Api::all(client))
        }
    };
    let (trigger, reader) = super::cached_watch(endpoints);
    let controller = Controller::for_stream(trigger, reader)
        .with_config(controller::Config::default().concurrency(super::MAX_CONCURRENT_RECONCILES));
    let by_model = controller.store();
    let by_workspace = controller.store();
    let managed = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    controller
        // A keys Secret edited or deleted by hand is written again.
        .owns(secrets, super::watch_config().labels(&managed))
        // A new model version in a referenced ModelRegistration rolls the deployments serving it.
        .watches(mregs, super::watch_config(), move |m: ModelRegistration| {
            let name = m.name_any();
            super::referring(&by_model, &m, |oe| {
                oe.spec
                    .deployments
                    .iter()
                    .any(|d| d.model.model_registration_ref.as_ref().is_some_and(|r| r.name == name))
            })
        })
        .watches(workspaces, super::watch_config(), move |ws: Workspace| {
            super::naming_workspace(&by_workspace, &ws, |o| &o.spec.workspace_ref)
        })
        .shutdown_on_signal()
        .run(reconcile, |oe, e, ctx| super::error_policy(KIND, &*oe, e, &ctx), ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::ApiError;

    fn api_error(status: u16, code: &str, message: &str) -> azure::Error {
        azure::Error::from(ApiError {
            operation: "put_online_deployment",
            status,
            code: Some(code.into()),
            message: message.into(),
            target: None,
            request_id: None,
            retry_after: None,
        })
    }

    fn stalled(reason: &str, generation: i64, at: i64) -> Vec<Condition> {
        let health = Health::stalled(
            HELD_REASONS.iter().find(|r| **r == reason).copied().unwrap_or(reasons::SMOKE_TEST_FAILED),
            "Azure rejected deployment demo",
        );
        conditions::compute(&[], &health, Some(generation), &Time(jiff::Timestamp::from_second(at).unwrap()))
    }

    /// Quota failures are QuotaExceeded, other deployment failures DeploymentFailed, endpoint failures
    /// AzureRejected; each message carries Azure's own words.
    #[test]
    fn failures_are_classified_by_target_and_code() {
        let quota = failure("deployment/demo", &api_error(200, "OutOfQuota", "Not enough quota for NCSv3"));
        assert_eq!(quota.reason(), reasons::QUOTA_EXCEEDED);
        assert!(quota.is_stalled() && quota.message().contains("Not enough quota for NCSv3"));
        assert!(quota.message().contains("deployment demo"));
        let failed =
            failure("deployment/demo", &api_error(200, "InferenceServerCrashed", "container exited"));
        assert_eq!(failed.reason(), reasons::DEPLOYMENT_FAILED);
        let endpoint = failure(decide::ENDPOINT_TARGET, &api_error(400, "UserError", "bad traffic"));
        assert_eq!(endpoint.reason(), reasons::AZURE_REJECTED);
        assert!(endpoint.message().contains("bad traffic"));
    }

    /// A failure stays held for a resync period of its own generation, then may be retried.
    #[test]
    fn failures_are_held_for_one_resync_of_their_generation() {
        let resync = Duration::from_secs(600);
        let now = jiff::Timestamp::from_second(10_000).unwrap();
        let held = held_failure(&stalled(reasons::QUOTA_EXCEEDED, 3, 9_900), Some(3), now, resync);
        assert_eq!(held.map(|h| h.reason()), Some(reasons::QUOTA_EXCEEDED));
        assert!(held_failure(&stalled(reasons::QUOTA_EXCEEDED, 3, 9_000), Some(3), now, resync).is_none());
        assert!(held_failure(&stalled(reasons::QUOTA_EXCEEDED, 2, 9_900), Some(3), now, resync).is_none());
        // A failed smoke test is not an Azure failure: nothing to hold.
        assert!(held_failure(&stalled(reasons::SMOKE_TEST_FAILED, 3, 9_900), Some(3), now, resync).is_none());
        let ready = conditions::compute(
            &[],
            &Health::ready(reasons::SERVING, "ok"),
            Some(3),
            &Time(jiff::Timestamp::from_second(9_900).unwrap()),
        );
        assert!(held_failure(&ready, Some(3), now, resync).is_none());
    }

    fn keys_secret(owner_uid: &str, data: &[(&str, &str)]) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "keys",
                "ownerReferences": [{"apiVersion": "azureml-operator.io/v1alpha1", "kind": "OnlineEndpoint",
                                     "name": "ep", "uid": owner_uid, "controller": true}]
            },
            "data": data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect::<BTreeMap<_, _>>(),
        }))
        .unwrap()
    }

    fn desired(data: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    /// The keys Secret is rewritten only when a value the operator owns differs: a regenerated key
    /// does, the same keys do not, and keys someone else added to the Secret do not count.
    #[test]
    fn keys_secret_is_compared_by_value() {
        let now = [("scoringUri", "https://ep/score"), ("primaryKey", "p1"), ("secondaryKey", "s1")];
        let want = desired(&now);
        assert!(secret_matches(&keys_secret("uid-1", &now), "uid-1", &want));
        let mut extra = now.to_vec();
        extra.push(("note", "added by hand"));
        assert!(secret_matches(&keys_secret("uid-1", &extra), "uid-1", &want));
        let rotated =
            desired(&[("scoringUri", "https://ep/score"), ("primaryKey", "p2"), ("secondaryKey", "s1")]);
        assert!(!secret_matches(&keys_secret("uid-1", &now), "uid-1", &rotated));
        assert!(!secret_matches(&keys_secret("other", &now), "uid-1", &want), "not ours yet");
        // Token auth: only the scoring URI; stale keys in the Secret would be a difference.
        let uri_only = desired(&[("scoringUri", "https://ep/score")]);
        assert!(secret_matches(
            &keys_secret("uid-1", &[("scoringUri", "https://ep/score")]),
            "uid-1",
            &uri_only
        ));
        assert!(!secret_matches(&keys_secret("uid-1", &now), "uid-1", &uri_only));
    }

    /// The smoke-test condition keeps its transition time while its status holds.
    #[test]
    fn smoke_condition_transition_time() {
        let t = |s| Time(jiff::Timestamp::from_second(s).unwrap());
        let mut list = Vec::new();
        set_condition(
            &mut list,
            SMOKE_TEST_CONDITION,
            Some(("True", reasons::SUCCEEDED, "ok".into())),
            Some(1),
            &t(10),
        );
        set_condition(
            &mut list,
            SMOKE_TEST_CONDITION,
            Some(("True", reasons::SUCCEEDED, "ok 2".into())),
            Some(2),
            &t(20),
        );
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].last_transition_time.clone(), list[0].message.as_str()), (t(10), "ok 2"));
        set_condition(
            &mut list,
            SMOKE_TEST_CONDITION,
            Some(("False", reasons::SMOKE_TEST_FAILED, "500".into())),
            Some(2),
            &t(30),
        );
        assert_eq!(list[0].last_transition_time, t(30));
        set_condition(&mut list, SMOKE_TEST_CONDITION, None, Some(2), &t(40));
        assert!(list.is_empty());
    }
}
