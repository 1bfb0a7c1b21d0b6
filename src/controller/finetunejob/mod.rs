//! FineTuneJob controller: notebook steps 1–5 as one pipeline job. Each pass observes (workspace,
//! registry model and component, compute, VM sizes, the job by its deterministic name), decides purely
//! ([`decide::decide`]), makes at most one Azure write (create the compute, or submit the job), and
//! reports status only when it changed.

pub mod cache;
pub mod decide;
pub mod params;
pub mod pyliteral;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::Store;
use kube::runtime::{Predicate, WatchStreamExt, predicates};
use kube::{Resource, ResourceExt};

use super::connection::{Connection, connect};
use super::{Context, Error, Result, error_chain, is_detached, patch_status, publish_transition, truncate};
use crate::api::conditions::{self, Health, reasons};
use crate::api::finetunejob::{
    FineTuneJobStatus, JobOnDelete, JobOutputs, Phase, RegistryAssetRef, ResolvedAsset, StepStatus,
};
use crate::api::{FINALIZER, FineTuneJob, Workspace};
use crate::azure::{
    self, ChildRun, ComponentAsset, Compute, ErrorClass, Latest, ModelAsset, Operation, OperationStatus,
    ProvisioningState, RegistryClient, VmSize, WorkspaceClient,
};
use cache::TtlCache;
use decide::{ComputeState, Decision, Lookup, Observed, Submission, Tracking, Validation};
use params::Problem;

/// Kind name for metrics and logs.
pub const KIND: &str = "FineTuneJob";

/// The pipeline step whose MLflow run carries the training and evaluation metrics.
const FINETUNE_STEP: &str = "chat_completion_finetune";

/// How long a compute cluster read (in the Succeeded state) is reused across jobs, before the policy's scale.
const COMPUTE_TTL: Duration = Duration::from_secs(60);
/// How long a registry model or component lookup is reused across jobs, before the policy's scale.
const ASSET_TTL: Duration = Duration::from_secs(300);
/// How long a location's VM-size list is reused: Azure changes it on the scale of months.
const VM_SIZES_TTL: Duration = Duration::from_secs(3600);

/// Cache key: the Kubernetes namespace, the Workspace resource's name, and the compute or location name.
/// Keyed by Workspace resource rather than Azure workspace so one credential never answers for another.
type CacheKey = (String, String, String);

/// ARM answers shared by every FineTuneJob of a Workspace (see [`cache`]).
pub struct Caches {
    models: TtlCache<AssetKey, Lookup<ModelAsset>>,
    components: TtlCache<AssetKey, Lookup<ComponentAsset>>,
    computes: TtlCache<CacheKey, Option<Compute>>,
    vm_sizes: TtlCache<CacheKey, Vec<VmSize>>,
    /// Jobs (hashed UIDs) this process has seen, so the first poll after a start can be spread.
    seen: Mutex<HashSet<u64>>,
}

impl Caches {
    /// Empty caches whose lifetimes are multiplied by `scale` (the policy's interval scale).
    pub fn new(scale: f64) -> Self {
        let scale = scale.max(0.0);
        Self {
            models: TtlCache::new(ASSET_TTL.mul_f64(scale)),
            components: TtlCache::new(ASSET_TTL.mul_f64(scale)),
            computes: TtlCache::new(COMPUTE_TTL.mul_f64(scale)),
            vm_sizes: TtlCache::new(VM_SIZES_TTL.mul_f64(scale)),
            seen: Mutex::default(),
        }
    }

    /// True the first time this process asks about `uid`.
    fn first_sight(&self, uid: &str) -> bool {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(uid_hash(uid))
    }

    /// Forgets a deleted job.
    fn forget(&self, uid: &str) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid_hash(uid));
    }
}

/// A UID as 8 bytes: 10,000 jobs cost 80 KB in [`Caches::seen`] instead of their UID strings.
fn uid_hash(uid: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    uid.hash(&mut h);
    h.finish()
}

/// What a pass concluded, before it is written: the new status (without conditions) and its health.
struct Outcome {
    status: FineTuneJobStatus,
    health: Health,
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Validating => "Validating",
        Phase::Submitted => "Submitted",
        Phase::Running => "Running",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
        Phase::Canceled => "Canceled",
    }
}

/// Wraps an Azure read error: retry what may pass, stall on what will not.
fn read_failed(step: &'static str, e: azure::Error) -> Result<Problem> {
    if e.class().is_retryable() {
        return Err(Error::Azure { step, source: e });
    }
    let reason = match e.class() {
        ErrorClass::Quota => reasons::QUOTA_EXCEEDED,
        ErrorClass::Auth => reasons::AUTHORIZATION_FAILED,
        _ => reasons::AZURE_REJECTED,
    };
    Ok(Problem::new(reason, format!("{step}: Azure answered: {}", e.message())))
}

/// The version a lookup asks for: the explicit one, else the pin (while it is the asset the spec still
/// names); `None` means "latest".
fn requested_version(pinned: Option<&ResolvedAsset>, wanted: &RegistryAssetRef) -> Option<String> {
    let registry_prefix = format!("azureml://registries/{}/", wanted.registry);
    wanted.version.clone().filter(|v| !v.trim().is_empty()).or_else(|| {
        pinned
            .filter(|p| p.name == wanted.name && p.id.starts_with(&registry_prefix))
            .map(|p| p.version.clone())
    })
}

/// Cache key of a registry lookup: Workspace resource, registry, asset name and requested version
/// (empty for "latest").
type AssetKey = (String, String, String, String, String);

fn asset_key(ftj: &FineTuneJob, pinned: Option<&ResolvedAsset>, wanted: &RegistryAssetRef) -> AssetKey {
    (
        ftj.namespace().unwrap_or_default(),
        ftj.spec.workspace_ref.name.clone(),
        wanted.registry.clone(),
        wanted.name.clone(),
        requested_version(pinned, wanted).unwrap_or_default(),
    )
}

/// Only a found asset is reused; a missing or archived one is read again, so a fix is seen at once.
fn found<T>(l: &Lookup<T>) -> bool {
    matches!(l, Lookup::Found(_))
}

/// Resolves a registry asset: the explicit version, else the one pinned in status (if it is still the
/// asset the spec names), else "latest".
async fn lookup<T>(
    pinned: Option<&ResolvedAsset>,
    wanted: &RegistryAssetRef,
    get: impl AsyncFnOnce(&str) -> azure::Result<Option<T>>,
    latest: impl AsyncFnOnce() -> azure::Result<Latest<T>>,
) -> azure::Result<Lookup<T>> {
    Ok(match requested_version(pinned, wanted) {
        Some(version) => match get(&version).await? {
            Some(asset) => Lookup::Found(asset),
            None => Lookup::NotFound,
        },
        None => match latest().await? {
            Latest::Found(a) => Lookup::Found(a),
            Latest::OnlyArchived(a) => Lookup::OnlyArchived(a),
            Latest::NotFound => Lookup::NotFound,
        },
    })
}

/// A client for a registry; a registry that does not exist is reported with `missing` as the reason.
async fn registry(
    client: &WorkspaceClient,
    name: &str,
    missing: &'static str,
) -> Result<Result<RegistryClient, Problem>> {
    match client.registry(name).await {
        Ok(r) => Ok(Ok(r)),
        Err(e) if e.class() == ErrorClass::NotFound => Ok(Err(Problem::new(
            missing,
            format!(
                "Azure ML has no registry named {name}; fix the registry name (the system registry is azureml)"
            ),
        ))),
        Err(e) => read_failed("registry discovery", e).map(Err),
    }
}

/// Gathers what validation needs. `Ok(Err(problem))` is an Azure refusal to report as Stalled.
async fn observe_validation(
    ftj: &FineTuneJob,
    client: &WorkspaceClient,
    workspace: &Workspace,
    old: &FineTuneJobStatus,
    clear_operation: &mut bool,
    caches: &Caches,
) -> Result<Result<Validation, Problem>> {
    let spec = &ftj.spec;
    let key =
        |name: &str| (ftj.namespace().unwrap_or_default(), spec.workspace_ref.name.clone(), name.to_owned());
    let location = match workspace.status.as_ref().and_then(|s| s.location.clone()) {
        Some(l) => l,
        None => match client.get_workspace().await {
            Ok(info) => info.location,
            Err(e) => return read_failed("read workspace", e).map(Err),
        },
    };
    let models = match registry(client, &spec.model.registry, reasons::MODEL_NOT_FOUND).await? {
        Ok(r) => r,
        Err(p) => return Ok(Err(p)),
    };
    let name = spec.model.name.as_str();
    let pinned = old.resolved_model.as_ref();
    let model = caches
        .models
        .get_or_fetch(&asset_key(ftj, pinned, &spec.model), found, async || {
            lookup(
                pinned,
                &spec.model,
                async |v| models.model_version(name, v).await,
                async || models.latest_model_version(name).await,
            )
            .await
        })
        .await;
    let model = match model {
        Ok(m) => m,
        Err(e) => return read_failed("read registry model", e).map(Err),
    };
    let components =
        match registry(client, &spec.pipeline_component.registry, reasons::COMPONENT_NOT_FOUND).await? {
            Ok(r) => r,
            Err(p) => return Ok(Err(p)),
        };
    let name = spec.pipeline_component.name.as_str();
    let pinned = old.resolved_component.as_ref();
    let component = caches
        .components
        .get_or_fetch(&asset_key(ftj, pinned, &spec.pipeline_component), found, async || {
            lookup(
                pinned,
                &spec.pipeline_component,
                async |v| components.component_version(name, v).await,
                async || components.latest_component_version(name).await,
            )
            .await
        })
        .await;
    let component = match component {
        Ok(c) => c,
        Err(e) => return read_failed("read registry component", e).map(Err),
    };
    let compute = match observe_compute(client, &spec.compute.name, old, clear_operation, caches, key).await?
    {
        Ok(c) => c,
        Err(p) => return Ok(Err(p)),
    };
    let vm_sizes = caches
        .vm_sizes
        .get_or_fetch(
            &key(&location),
            |sizes| !sizes.is_empty(),
            async || client.list_vm_sizes(&location).await,
        )
        .await;
    let vm_sizes = match vm_sizes {
        Ok(s) => s,
        Err(e) => return read_failed("list VM sizes", e).map(Err),
    };
    Ok(Ok(Validation { model, component, compute, location, vm_sizes }))
}

/// The cluster: our persisted create operation first (so a restart resumes it), then a GET.
async fn observe_compute(
    client: &WorkspaceClient,
    name: &str,
    old: &FineTuneJobStatus,
    clear_operation: &mut bool,
    caches: &Caches,
    key: impl Fn(&str) -> CacheKey,
) -> Result<Result<ComputeState, Problem>> {
    let operation = old.compute_operation.as_deref().and_then(|text| {
        serde_json::from_str::<Operation>(text)
            .inspect_err(|e| tracing::warn!(error = %e, "ignoring an unreadable status.computeOperation"))
            .ok()
    });
    if old.compute_operation.is_some() && operation.is_none() {
        *clear_operation = true;
    }
    if let Some(op) = operation {
        match client.poll(&op).await {
            Ok(OperationStatus::InProgress { retry_after }) => {
                return Ok(Ok(ComputeState::Creating { retry_after: Some(retry_after) }));
            }
            Ok(OperationStatus::Succeeded) => *clear_operation = true,
            Ok(OperationStatus::Failed(e)) => {
                *clear_operation = true;
                return Ok(Ok(ComputeState::CreateFailed { message: e.message() }));
            }
            Err(e) if e.class().is_retryable() => {
                return Err(Error::Azure { step: "poll compute creation", source: e });
            }
            // The operation URL no longer answers (expired): the GET below tells the truth.
            Err(e) => {
                tracing::info!(error = %e, "compute operation no longer readable; reading the compute");
                *clear_operation = true;
            }
        }
    }
    // Only a settled cluster is reused: one being created or updated must be watched change by change.
    let settled = |c: &Option<Compute>| {
        c.as_ref().is_some_and(|c| c.provisioning_state == ProvisioningState::Succeeded)
    };
    let compute =
        caches.computes.get_or_fetch(&key(name), settled, async || client.get_compute(name).await).await;
    match compute {
        Ok(Some(c)) => Ok(Ok(ComputeState::Exists(c))),
        Ok(None) => Ok(Ok(ComputeState::Missing)),
        Err(e) => read_failed("read compute", e).map(Err),
    }
}

/// What the end of a job adds to status, read once from MLflow.
#[derive(Default)]
struct FinalDetails {
    /// Step runs in the order they started.
    steps: Vec<StepStatus>,
    /// Final metrics of the fine-tune step (or of the pipeline run).
    metrics: std::collections::BTreeMap<String, f64>,
    /// First step start and last step end: the job's span when the ARM body does not carry it.
    started: Option<jiff::Timestamp>,
    ended: Option<jiff::Timestamp>,
}

/// Steps, span and final metrics, best effort: missing metrics are not an error.
async fn final_details(client: &WorkspaceClient, job: &str) -> FinalDetails {
    let mut children: Vec<ChildRun> = client
        .list_child_jobs(job)
        .await
        .inspect_err(|e| tracing::info!(job, error = %error_chain(e), "no step runs for the job"))
        .unwrap_or_default();
    children.sort_by(|a, b| (a.start_time, &a.run_name).cmp(&(b.start_time, &b.run_name)));
    let steps = children
        .iter()
        .map(|c| StepStatus {
            name: c.run_name.clone().unwrap_or_else(|| c.run_id.clone()),
            status: c.status.clone().unwrap_or_else(|| "Unknown".into()),
        })
        .collect();
    let mut metrics = children
        .iter()
        .find(|c| c.run_name.as_deref() == Some(FINETUNE_STEP))
        .map(|c| c.metrics.clone())
        .unwrap_or_default();
    if metrics.is_empty() {
        metrics = client
            .job_metrics(job)
            .await
            .inspect_err(|e| tracing::info!(job, error = %error_chain(e), "no metrics for the job"))
            .unwrap_or_default();
    }
    // Non-finite values cannot be written as JSON.
    metrics.retain(|_, v| v.is_finite());
    FinalDetails {
        steps,
        metrics,
        started: children.iter().filter_map(|c| c.start_time).min(),
        ended: children.iter().filter_map(|c| c.end_time).max(),
    }
}

/// Status while validating, with whatever was pinned so far.
fn validating(
    old: &FineTuneJobStatus,
    validation: Option<&Validation>,
    clear_operation: bool,
) -> FineTuneJobStatus {
    let mut s = old.clone();
    s.phase = Phase::Validating;
    if let Some(v) = validation {
        // The lookup honours the pin while the spec names the same asset, so this keeps the first
        // resolution; a pin for an asset the spec no longer names is dropped.
        s.resolved_model = decide::pinned(&v.model);
        s.resolved_component = decide::pinned(&v.component);
    }
    if clear_operation {
        s.compute_operation = None;
    }
    s
}

fn tracked(old: &FineTuneJobStatus, job_name: &str, t: &Tracking) -> FineTuneJobStatus {
    let mut s = old.clone();
    s.phase = t.phase;
    s.job_name = Some(job_name.to_owned());
    s.azure_status = Some(t.azure_status.clone());
    s.studio_url = t.studio_url.clone().or(s.studio_url);
    s.experiment_name = t.experiment_name.clone().or(s.experiment_name);
    s.display_name = t.display_name.clone().or(s.display_name);
    s.start_time = t.start_time.map(Time).or(s.start_time);
    s.completion_time = t.completion_time.map(Time).or(s.completion_time);
    s.outputs = t.trained_model.clone().map(|m| JobOutputs { trained_model: Some(m) }).or(s.outputs);
    s.compute_operation = None;
    s
}

fn submitting(old: &FineTuneJobStatus, v: &Validation, sub: &Submission) -> FineTuneJobStatus {
    let mut s = validating(old, Some(v), true);
    s.job_name = Some(sub.job_name.clone());
    s.gpus_per_node = Some(sub.gpus_per_node);
    s.effective_parameters = sub.effective_parameters.clone().into();
    s.display_name = sub.spec.display_name.clone();
    s.experiment_name = Some(sub.spec.experiment_name.clone());
    s
}

/// FineTuneJobs that still poll Azure, from the controller's cache (no API call).
fn running_jobs(store: &Store<FineTuneJob>) -> usize {
    store
        .state()
        .iter()
        .filter(|f| f.status.as_ref().is_some_and(|s| s.job_name.is_some() && !s.phase.is_terminal()))
        .count()
        .max(1)
}

async fn apply(
    ftj: Arc<FineTuneJob>,
    ctx: &Context,
    store: &Store<FineTuneJob>,
    caches: &Caches,
) -> Result<Action> {
    let ns = ftj.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = ftj.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let mut old = ftj.status.clone().unwrap_or_default();
    let first_sight = caches.first_sight(&uid);
    if first_sight && matches!(old.phase, Phase::Submitted | Phase::Running) && old.job_name.is_some() {
        // Running in Azure before this process started: poll it at a random point of its interval
        // rather than together with every other running job (see `Policy::first_job_poll`).
        let age = old.start_time.as_ref().or(ftj.meta().creation_timestamp.as_ref());
        let age = age.map(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs()).unwrap_or_default();
        return Ok(Action::requeue(ctx.policy.first_job_poll(age, running_jobs(store))));
    }
    let (client, workspace) = match connect(ctx, &ns, &ftj.spec.workspace_ref).await? {
        Connection::Ready { client, workspace } => (client, workspace),
        Connection::Unavailable(health) => {
            let mut status = old.clone();
            if status.job_name.is_none() {
                status.phase = Phase::Pending;
            }
            report(&ftj, ctx, &old, Outcome { status, health }).await?;
            return Ok(Action::requeue(ctx.policy.workspace_wait()));
        }
    };
    if old.conditions.is_empty() {
        // First sight: say we are working on it before any Azure call can fail, so kstatus never
        // reads a resource without conditions as done. (Waiting for the Workspace reports that instead.)
        let health =
            Health::progressing(reasons::FIRST_OBSERVED, "checking the model, compute and parameters");
        old = report(&ftj, ctx, &old, Outcome { status: old.clone(), health }).await?;
    }
    let job_name = old.job_name.clone().unwrap_or_else(|| params::job_name(&ns, &ftj.name_any(), &uid));
    // Status holds the name before the job is ever PUT (persist before create), so without one there is
    // nothing in Azure to adopt and the GET is skipped: ARM reads are the scarce budget at scale.
    let job = match &old.job_name {
        Some(_) => client.get_job(&job_name).await.map_err(Error::azure("get job"))?,
        None => None,
    };

    if job.is_none() && old.job_name.is_some() && old.phase != Phase::Validating {
        // The job was submitted and later vanished from Azure: never submit a second one.
        let health = match old.phase {
            Phase::Succeeded | Phase::Failed | Phase::Canceled => {
                return Ok(Action::requeue(ctx.policy.resync()));
            }
            _ => Health::stalled(
                reasons::JOB_FAILED,
                format!(
                    "Azure ML job {job_name} no longer exists in the workspace; create a new FineTuneJob to train again"
                ),
            ),
        };
        let mut status = old.clone();
        status.phase = Phase::Failed;
        report(&ftj, ctx, &old, Outcome { status, health }).await?;
        return Ok(Action::requeue(ctx.policy.resync()));
    }

    let mut clear_operation = false;
    let observed = match job {
        Some(j) => Observed::Job(Box::new(j)),
        None => {
            match observe_validation(&ftj, &client, &workspace, &old, &mut clear_operation, caches).await? {
                Ok(v) => Observed::NoJob { job_name: job_name.clone(), validation: Box::new(v) },
                Err(p) => {
                    let status = validating(&old, None, clear_operation);
                    report(&ftj, ctx, &old, Outcome { status, health: Health::stalled(p.reason, p.message) })
                        .await?;
                    return Ok(Action::requeue(ctx.policy.resync()));
                }
            }
        }
    };
    let validation = match &observed {
        Observed::NoJob { validation, .. } => Some(validation.as_ref()),
        Observed::Job(_) => None,
    };

    match decide::decide(&ftj, &observed) {
        Decision::Stall(p) => {
            let status = validating(&old, validation, clear_operation);
            report(&ftj, ctx, &old, Outcome { status, health: Health::stalled(p.reason, p.message) }).await?;
            Ok(Action::requeue(ctx.policy.resync()))
        }
        Decision::WaitCompute { message, retry_after } => {
            let status = validating(&old, validation, clear_operation);
            let health = Health::progressing(reasons::COMPUTE_PROVISIONING, message);
            report(&ftj, ctx, &old, Outcome { status, health }).await?;
            Ok(Action::requeue(ctx.policy.operation_poll(retry_after)))
        }
        Decision::CreateCompute(spec) => {
            let cluster = &ftj.spec.compute.name;
            let mut status = validating(&old, validation, true);
            let (health, wait) = match client.create_compute(cluster, &spec).await {
                Ok(op) => {
                    let wait = op.retry_after_seconds.map(Duration::from_secs);
                    // Persisted so a restarted operator resumes polling instead of re-sending the PUT.
                    status.compute_operation = serde_json::to_string(&op).ok();
                    let health = Health::progressing(
                        reasons::COMPUTE_PROVISIONING,
                        format!("creating compute cluster {cluster} ({} x {})", spec.max_nodes, spec.vm_size),
                    );
                    (health, ctx.policy.operation_poll(wait))
                }
                Err(e) if e.class().is_retryable() => {
                    return Err(Error::Azure { step: "create compute", source: e });
                }
                Err(e) => {
                    let reason = if e.class() == ErrorClass::Quota {
                        reasons::QUOTA_EXCEEDED
                    } else {
                        reasons::COMPUTE_FAILED
                    };
                    let health = Health::stalled(
                        reason,
                        format!(
                            "Azure refused to create compute cluster {cluster}: {}; fix spec.compute.create",
                            e.message()
                        ),
                    );
                    (health, ctx.policy.resync())
                }
            };
            report(&ftj, ctx, &old, Outcome { status, health }).await?;
            Ok(Action::requeue(wait))
        }
        Decision::Submit(sub) => {
            let Some(v) = validation else { return Err(Error::MissingField("validation")) };
            submit(&ftj, ctx, &client, &old, v, &sub, store).await
        }
        Decision::Track(t) => {
            let status = tracked(&old, &job_name, &t);
            report(&ftj, ctx, &old, Outcome { status, health: t.health.clone() }).await?;
            let age = match &observed {
                Observed::Job(j) => j.created_at,
                Observed::NoJob { .. } => None,
            }
            .map(|c| jiff::Timestamp::now().duration_since(c).unsigned_abs())
            .unwrap_or_default();
            Ok(Action::requeue(ctx.policy.job_poll(age, running_jobs(store))))
        }
        Decision::Done(t) => {
            let mut status = tracked(&old, &job_name, &t);
            let recorded =
                old.phase == t.phase && old.azure_status.as_deref() == Some(t.azure_status.as_str());
            if !recorded {
                // The job just ended: read steps and final metrics once.
                let details = final_details(&client, &job_name).await;
                if !details.steps.is_empty() {
                    status.steps = details.steps;
                }
                if !details.metrics.is_empty() {
                    status.metrics = details.metrics.into();
                }
                status.start_time = status.start_time.or(details.started.map(Time));
                status.completion_time = status.completion_time.or(details.ended.map(Time));
            }
            report(&ftj, ctx, &old, Outcome { status, health: t.health.clone() }).await?;
            Ok(Action::requeue(ctx.policy.resync()))
        }
    }
}

/// Persists the job name, then submits: exactly one PUT even if the operator dies in between, because the
/// next pass GETs the job by that name and adopts it.
async fn submit(
    ftj: &FineTuneJob,
    ctx: &Context,
    client: &WorkspaceClient,
    old: &FineTuneJobStatus,
    v: &Validation,
    sub: &Submission,
    store: &Store<FineTuneJob>,
) -> Result<Action> {
    let name = &sub.job_name;
    let status = submitting(old, v, sub);
    let health = Health::progressing(reasons::SUBMITTED, format!("submitting Azure ML job {name}"));
    let persisted = report(ftj, ctx, old, Outcome { status, health }).await?;
    // Once per resource: a retried submission (status already holds the name) says nothing new.
    if old.job_name.is_none() && !sub.model_defaults_applied.is_empty() {
        let note = format!(
            "applied the model's recommended values (model_specific_defaults) for: {}",
            sub.model_defaults_applied.join(", ")
        );
        publish(ctx, ftj, EventType::Normal, "ModelDefaultsApplied", &note);
    }
    match client.create_pipeline_job(name, &sub.spec).await {
        Ok(job) => {
            let t = decide::track(&job);
            let status = tracked(&persisted, name, &t);
            report(ftj, ctx, &persisted, Outcome { status, health: t.health.clone() }).await?;
            Ok(Action::requeue(ctx.policy.job_poll(Duration::ZERO, running_jobs(store))))
        }
        Err(e) if e.class().is_retryable() => Err(Error::Azure { step: "submit job", source: e }),
        Err(e) => {
            let p = decide::submit_refused(name, e.class() == ErrorClass::Quota, &e.message());
            // Nothing was created: release the name so the spec can be fixed (the CEL rule freezes the
            // spec while status.jobName is set).
            let mut status = persisted.clone();
            status.job_name = None;
            report(ftj, ctx, &persisted, Outcome { status, health: Health::stalled(p.reason, p.message) })
                .await?;
            Ok(Action::requeue(ctx.policy.resync()))
        }
    }
}

fn publish(ctx: &Context, ftj: &FineTuneJob, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, 1024)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    ctx.events.send(event, ftj.object_ref(&()));
}

/// Computes conditions, publishes transitions, and writes status only when it changed.
async fn report(
    ftj: &FineTuneJob,
    ctx: &Context,
    old: &FineTuneJobStatus,
    outcome: Outcome,
) -> Result<FineTuneJobStatus> {
    let Outcome { mut status, health } = outcome;
    let generation = ftj.meta().generation;
    let now = Time(jiff::Timestamp::now());
    status.observed_generation = generation;
    status.conditions = conditions::compute(&old.conditions, &health, generation, &now);
    if let Some(uid) = ftj.uid() {
        ctx.metrics.set_phase(KIND, &uid, Some(phase_name(status.phase)));
    }
    publish_transition(ctx, ftj, &old.conditions, &health);
    if status.phase != old.phase {
        let type_ = if matches!(status.phase, Phase::Failed | Phase::Canceled) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = format!("phase {} -> {}", phase_name(old.phase), phase_name(status.phase));
        publish(ctx, ftj, type_, phase_name(status.phase), &note);
    }
    if &status != old {
        patch_status(&ctx.client, ftj, &status).await?;
    }
    Ok(status)
}

/// Deletion: cancel a job still running (onDelete Cancel), else let go. Never hangs silently: what
/// blocks is reported as Stalled, and the detach annotation always releases.
async fn cleanup(ftj: Arc<FineTuneJob>, ctx: &Context) -> Result<Action> {
    if let Some(uid) = ftj.uid() {
        ctx.metrics.set_phase(KIND, &uid, None);
    }
    let status = ftj.status.clone().unwrap_or_default();
    let Some(job_name) = status.job_name.clone() else { return Ok(Action::await_change()) };
    if ftj.spec.on_delete == JobOnDelete::Orphan || is_detached(&*ftj) || status.phase.is_terminal() {
        return Ok(Action::await_change());
    }
    let ns = ftj.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let stuck = async |message: String, source: azure::Error| -> Result<Action> {
        let health = Health::stalled(
            reasons::DELETE_FAILED,
            format!(
                "{message}; fix it, or set the annotation azureml-operator.io/reconcile-policy=detach to let go"
            ),
        );
        report(&ftj, ctx, &status, Outcome { status: status.clone(), health }).await?;
        Err(Error::Azure { step: "cancel job", source })
    };
    let client = match connect(ctx, &ns, &ftj.spec.workspace_ref).await? {
        Connection::Ready { client, .. } => client,
        // The workspace is gone: nothing in Azure we can still reach.
        Connection::Unavailable(h) if h.reason() == reasons::WORKSPACE_MISSING => {
            return Ok(Action::await_change());
        }
        Connection::Unavailable(h) => {
            let message = format!("cannot cancel Azure ML job {job_name}: {}", h.message());
            return stuck(message.clone(), azure::Error::Config { message }).await;
        }
    };
    match client.get_job(&job_name).await {
        Ok(None) => return Ok(Action::await_change()),
        Ok(Some(job)) if job.status.is_terminal() => return Ok(Action::await_change()),
        Ok(Some(_)) => {}
        Err(e) => return Err(Error::Azure { step: "get job", source: e }),
    }
    match client.cancel_job(&job_name).await {
        Ok(_) => {
            tracing::info!(job = %job_name, "canceled the Azure ML job of a deleted FineTuneJob");
            Ok(Action::await_change())
        }
        Err(e) if e.class() == ErrorClass::NotFound => Ok(Action::await_change()),
        Err(e) if e.class().is_retryable() => Err(Error::Azure { step: "cancel job", source: e }),
        Err(e) => stuck(format!("Azure refused to cancel job {job_name}: {}", e.message()), e).await,
    }
}

async fn reconcile(
    ftj: Arc<FineTuneJob>,
    ctx: Arc<Context>,
    store: Store<FineTuneJob>,
    caches: Arc<Caches>,
) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    let ns = ftj.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<FineTuneJob> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = ftj.uid().unwrap_or_default();
    let action = finalizer(&api, FINALIZER, ftj, |event| async {
        match event {
            FinalizerEvent::Apply(f) => apply(f, &ctx, &store, &caches).await,
            FinalizerEvent::Cleanup(f) => {
                caches.forget(&uid);
                cleanup(f, &ctx).await
            }
        }
    })
    .await?;
    ctx.failures.succeeded(&uid);
    Ok(action)
}

/// Runs the FineTuneJob controller until shutdown. `namespace` limits it to one namespace.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let (jobs, workspaces) = match &namespace {
        Some(ns) => {
            (Api::<FineTuneJob>::namespaced(client.clone(), ns), Api::<Workspace>::namespaced(client, ns))
        }
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let (applied, reader) = super::cached_watch(jobs);
    let caches = Arc::new(Caches::new(ctx.policy.scale));
    // Our own status writes change neither generation, finalizers nor annotations, so they do not
    // bring the object back: progress is driven by requeues, spec edits, deletion and the detach annotation.
    let trigger = applied.predicate_filter(
        predicates::generation.combine(predicates::finalizers).combine(predicates::annotations),
        Default::default(),
    );
    let controller = Controller::for_stream(trigger, reader.clone())
        .with_config(controller::Config::default().concurrency(super::MAX_CONCURRENT_RECONCILES));
    let by_workspace = reader.clone();
    controller
        // A Workspace turning Ready (or changing) re-checks the jobs that name it.
        .watches(workspaces, super::watch_config(), move |ws: Workspace| {
            super::naming_workspace(&by_workspace, &ws, |o| &o.spec.workspace_ref)
        })
        .shutdown_on_signal()
        .run(
            move |f, ctx| reconcile(f, ctx, reader.clone(), caches.clone()),
            |f, e, ctx| super::error_policy(KIND, &*f, e, &ctx),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(name: &str, version: Option<&str>) -> RegistryAssetRef {
        RegistryAssetRef { registry: "azureml".into(), name: name.into(), version: version.map(Into::into) }
    }

    fn pin(name: &str, version: &str) -> ResolvedAsset {
        ResolvedAsset {
            id: format!("azureml://registries/azureml/models/{name}/versions/{version}"),
            name: name.into(),
            version: version.into(),
        }
    }

    /// Which version a lookup asks for: `Some(v)` = that version, `None` = "latest" (answers "latest").
    async fn asked(pinned: Option<&ResolvedAsset>, wanted: &RegistryAssetRef) -> String {
        let found = lookup(
            pinned,
            wanted,
            async |v: &str| Ok(Some(v.to_owned())),
            async || Ok(Latest::Found("latest".to_owned())),
        )
        .await
        .expect("lookup");
        match found {
            Lookup::Found(v) => v,
            other => panic!("{other:?}"),
        }
    }

    /// "latest" is resolved once: the pin wins over a newer latest, an explicit version wins over the
    /// pin, and a pin for another asset (the spec changed while stalled) is ignored.
    #[tokio::test]
    async fn pinned_version_is_reused_only_for_the_same_asset() {
        let p = pin("Phi-3-mini-4k-instruct", "15");
        assert_eq!(asked(None, &wanted("Phi-3-mini-4k-instruct", None)).await, "latest");
        assert_eq!(asked(Some(&p), &wanted("Phi-3-mini-4k-instruct", None)).await, "15");
        assert_eq!(asked(Some(&p), &wanted("Phi-3-mini-4k-instruct", Some("14"))).await, "14");
        assert_eq!(asked(Some(&p), &wanted("Phi-4-mini-instruct", None)).await, "latest");
        assert_eq!(asked(Some(&p), &wanted("Phi-3-mini-4k-instruct", Some(" "))).await, "15");
        let mut other_registry = wanted("Phi-3-mini-4k-instruct", None);
        other_registry.registry = "my-registry".into();
        assert_eq!(asked(Some(&p), &other_registry).await, "latest");
    }

    /// Errors Azure will not fix by itself stall with a reason; the others are retried.
    #[test]
    fn read_errors_are_classified() {
        let api = |status: u16, code: &str| {
            azure::Error::from(azure::ApiError {
                operation: "get_compute",
                status,
                code: Some(code.into()),
                message: "m".into(),
                target: None,
                request_id: None,
                retry_after: None,
            })
        };
        assert!(read_failed("read compute", api(503, "ServiceUnavailable")).is_err());
        assert!(read_failed("read compute", api(429, "TooManyRequests")).is_err());
        assert_eq!(
            read_failed("read compute", api(403, "AuthorizationFailed")).unwrap().reason,
            reasons::AUTHORIZATION_FAILED
        );
        assert_eq!(
            read_failed("read compute", api(400, "UserError")).unwrap().reason,
            reasons::AZURE_REJECTED
        );
    }
}
