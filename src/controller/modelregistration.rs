//! ModelRegistration controller: waits for its source, then registers exactly one model version with a
//! deterministic name and version, keeping the lineage from the FineTuneJob (notebook step 6).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use super::connection::{Connection, connect};
use super::{Context, Error, Result, is_detached, patch_status, publish_transition};
use crate::api::conditions::{self, Health, reasons};
use crate::api::finetunejob::{Phase, ResolvedAsset};
use crate::api::modelregistration::{ModelOnDelete, ModelRegistration, ModelRegistrationStatus};
use crate::api::{FINALIZER, FineTuneJob, Workspace};
use crate::azure::{ErrorClass, ModelVersion, ModelVersionSpec};

/// Kind name for metrics and logs.
pub const KIND: &str = "ModelRegistration";

/// Where the model files come from, once known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The path to register.
    pub uri: String,
    /// The job that produced it, for lineage.
    pub job_name: Option<String>,
    /// The foundation model it was fine-tuned from.
    pub base_model: Option<ResolvedAsset>,
}

/// The state of the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// Usable.
    Ready(Source),
    /// Not there yet (job missing or still running): wait.
    Waiting(String),
    /// Will never be usable (job failed or was canceled): stall.
    Failed(String),
}

/// What one pass saw.
#[derive(Debug)]
pub struct Observed {
    /// The source.
    pub source: SourceState,
    /// Model name and version to register.
    pub name: String,
    pub version: String,
    /// The version in Azure, if it exists (only looked up once the source is ready).
    pub existing: Option<ModelVersion>,
}

/// What to do.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Register the version.
    Create(ModelVersionSpec),
    /// The version exists with our content but other metadata: update description and tags.
    UpdateMetadata(ModelVersionSpec),
    /// Registered: report it.
    Done(ModelVersion),
    /// Report and wait for a change (a watch brings us back).
    Wait(Health),
    /// Needs a human.
    Stall(Health),
}

/// The model name a registration uses: `spec.modelName`, else `<base model>-<resource name>`, else the
/// resource name; `/` becomes `-` (Azure model names cannot contain it).
pub fn model_name(mreg: &ModelRegistration, base: Option<&ResolvedAsset>) -> String {
    let name = match (&mreg.spec.model_name, base) {
        (Some(n), _) => n.clone(),
        (None, Some(b)) if !b.name.is_empty() => format!("{}-{}", b.name, mreg.name_any()),
        _ => mreg.name_any(),
    };
    name.replace('/', "-")
}

/// The version a registration uses: `spec.version`, else the one pinned in status, else the resource's
/// creation time in Unix seconds — fixed for the life of the resource, so retries never add a version.
pub fn model_version(mreg: &ModelRegistration) -> Option<String> {
    mreg.spec
        .version
        .clone()
        .or_else(|| mreg.status.as_ref().and_then(|s| s.version.clone()))
        .or_else(|| mreg.meta().creation_timestamp.as_ref().map(|t| t.0.as_second().to_string()))
}

/// Reads the state of a FineTuneJob as a source.
pub fn source_from_job(job: Option<&FineTuneJob>, job_name: &str, output: &str) -> SourceState {
    let Some(job) = job else {
        return SourceState::Waiting(format!(
            "waiting for FineTuneJob {job_name} to exist in this namespace"
        ));
    };
    let status = job.status.clone().unwrap_or_default();
    match status.phase {
        Phase::Succeeded => {
            let Some(azure_job) = status.job_name.clone() else {
                return SourceState::Waiting(format!(
                    "FineTuneJob {job_name} succeeded but has no job name yet"
                ));
            };
            let uri = match (output, status.outputs.as_ref().and_then(|o| o.trained_model.clone())) {
                ("trained_model", Some(uri)) => uri,
                _ => format!("azureml://jobs/{azure_job}/outputs/{output}"),
            };
            let base_model = status.resolved_model.clone().map(|mut m| {
                if m.name.is_empty() {
                    m.name = job.spec.model.name.clone();
                }
                m
            });
            SourceState::Ready(Source { uri, job_name: Some(azure_job), base_model })
        }
        Phase::Failed | Phase::Canceled => SourceState::Failed(format!(
            "FineTuneJob {job_name} ended {:?}, so there is no model to register; fix and re-create the job, or point spec.source elsewhere",
            status.phase
        )),
        phase => {
            SourceState::Waiting(format!("waiting for FineTuneJob {job_name} to succeed (now {phase:?})"))
        }
    }
}

/// Pure: from what was seen to what to do.
pub fn decide(mreg: &ModelRegistration, observed: &Observed) -> Decision {
    let source = match &observed.source {
        SourceState::Waiting(why) => {
            return Decision::Wait(Health::progressing(reasons::WAITING_FOR_SOURCE, why.clone()));
        }
        SourceState::Failed(why) => {
            return Decision::Stall(Health::stalled(reasons::SOURCE_FAILED, why.clone()));
        }
        SourceState::Ready(s) => s,
    };
    let desired = desired_spec(mreg, source);
    match &observed.existing {
        None => Decision::Create(desired),
        Some(existing) if !same_uri(existing.model_uri.as_deref(), &desired.model_uri) => {
            Decision::Stall(Health::stalled(
                reasons::VERSION_CONFLICT,
                format!(
                    "model {} version {} already exists in Azure with other content ({}); set spec.version to a new version",
                    observed.name,
                    observed.version,
                    existing.model_uri.as_deref().unwrap_or("no path")
                ),
            ))
        }
        Some(existing)
            if existing.description != desired.description
                || !desired.tags.iter().all(|(k, v)| existing.tags.get(k) == Some(v)) =>
        {
            Decision::UpdateMetadata(desired)
        }
        Some(existing) => Decision::Done(existing.clone()),
    }
}

fn same_uri(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/')))
}

fn desired_spec(mreg: &ModelRegistration, source: &Source) -> ModelVersionSpec {
    let description = mreg.spec.description.clone().or_else(|| {
        source.base_model.as_ref().map(|b| {
            format!("{} fine-tuned by FineTuneJob job {}", b.name, source.job_name.as_deref().unwrap_or("?"))
        })
    });
    let mut tags: BTreeMap<String, String> = mreg.spec.tags.clone();
    if let Some(base) = &source.base_model {
        tags.entry("base_model".into()).or_insert_with(|| base.id.clone());
    }
    ModelVersionSpec {
        model_type: mreg.spec.model_type.as_str().to_owned(),
        model_uri: source.uri.clone(),
        description,
        tags,
        properties: mreg.spec.properties.clone(),
        job_name: source.job_name.clone(),
    }
}

async fn observe_source(mreg: &ModelRegistration, ctx: &Context, ns: &str) -> Result<SourceState> {
    let src = &mreg.spec.source;
    if let Some(r) = &src.fine_tune_job_ref {
        let jobs: Api<FineTuneJob> = Api::namespaced(ctx.client.clone(), ns);
        let job = jobs.get_opt(&r.name).await.map_err(Error::kube("read FineTuneJob"))?;
        return Ok(source_from_job(job.as_ref(), &r.name, &r.output));
    }
    if let Some(j) = &src.job_output {
        return Ok(SourceState::Ready(Source {
            uri: format!("azureml://jobs/{}/outputs/{}", j.job_name, j.output),
            job_name: Some(j.job_name.clone()),
            base_model: None,
        }));
    }
    Ok(match &src.uri {
        Some(uri) => SourceState::Ready(Source { uri: uri.clone(), job_name: None, base_model: None }),
        None => {
            SourceState::Failed("spec.source names no source; set fineTuneJobRef, jobOutput or uri".into())
        }
    })
}

async fn apply(mreg: Arc<ModelRegistration>, ctx: &Context) -> Result<Action> {
    let ns = mreg.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let mut old = mreg.status.clone().unwrap_or_default();
    let client = match connect(ctx, &ns, &mreg.spec.workspace_ref).await? {
        Connection::Ready { client, .. } => client,
        Connection::Unavailable(health) => {
            report(&mreg, ctx, &old, health, Pinned::default()).await?;
            return Ok(Action::requeue(ctx.policy.workspace_wait()));
        }
    };
    let source = observe_source(&mreg, ctx, &ns).await?;
    let base = match &source {
        SourceState::Ready(s) => s.base_model.clone(),
        _ => None,
    };
    // The default name depends on the base model, known only once the source is ready: pin nothing before.
    let name = old.model_name.clone().unwrap_or_else(|| model_name(&mreg, base.as_ref()));
    let version = model_version(&mreg).ok_or(Error::MissingField("metadata.creationTimestamp"))?;
    let existing = match &source {
        SourceState::Ready(_) => {
            client.get_model_version(&name, &version).await.map_err(Error::azure("get model version"))?
        }
        _ => None,
    };
    let observed = Observed { source, name: name.clone(), version: version.clone(), existing };
    let mut pinned = Pinned::default();
    if let SourceState::Ready(s) = &observed.source {
        pinned.name = Some(name.clone());
        pinned.version = Some(version.clone());
        pinned.source_uri = Some(s.uri.clone());
        pinned.job_name = s.job_name.clone();
        pinned.base_model = s.base_model.clone();
    }
    let decision = decide(&mreg, &observed);
    let registered = match decision {
        Decision::Wait(health) => {
            report(&mreg, ctx, &old, health, pinned).await?;
            return Ok(Action::await_change());
        }
        Decision::Stall(health) => {
            report(&mreg, ctx, &old, health, pinned).await?;
            return Ok(Action::requeue(ctx.policy.resync()));
        }
        Decision::Done(mv) => mv,
        Decision::Create(spec) | Decision::UpdateMetadata(spec) => {
            // Name and version are pinned before the write, so a crash right after it finds the same version.
            if old.model_name.is_none() || old.version.is_none() {
                let health = Health::progressing(
                    reasons::PROGRESSING,
                    format!("registering {name} version {version}"),
                );
                old = report(&mreg, ctx, &old, health, pinned.clone()).await?;
            }
            match client.create_model_version(&name, &version, &spec).await {
                Ok(mv) => mv,
                Err(e) => {
                    let health = match e.class() {
                        ErrorClass::Conflict => Health::stalled(
                            reasons::VERSION_CONFLICT,
                            format!(
                                "Azure refused version {version} of {name}: {}; set spec.version to a new version",
                                e.message()
                            ),
                        ),
                        ErrorClass::NotFound
                        | ErrorClass::InvalidSpec { .. }
                        | ErrorClass::Terminal
                        | ErrorClass::Quota
                        | ErrorClass::Auth => Health::stalled(
                            reasons::AZURE_REJECTED,
                            format!("Azure refused to register {name}:{version}: {}", e.message()),
                        ),
                        ErrorClass::Transient { .. } | ErrorClass::Throttled { .. } => {
                            return Err(Error::Azure { step: "register model version", source: e });
                        }
                    };
                    report(&mreg, ctx, &old, health, pinned).await?;
                    return Ok(Action::requeue(ctx.policy.resync()));
                }
            }
        }
    };
    pinned.model_id = Some(registered.id.clone());
    pinned.asset_id = Some(registered.asset_id());
    let health = Health::ready(reasons::REGISTERED, format!("registered {}", registered.asset_id()));
    report(&mreg, ctx, &old, health, pinned).await?;
    Ok(Action::requeue(ctx.policy.resync()))
}

/// Status fields other than conditions.
#[derive(Clone, Debug, Default)]
struct Pinned {
    name: Option<String>,
    version: Option<String>,
    model_id: Option<String>,
    asset_id: Option<String>,
    source_uri: Option<String>,
    job_name: Option<String>,
    base_model: Option<ResolvedAsset>,
}

async fn report(
    mreg: &ModelRegistration,
    ctx: &Context,
    old: &ModelRegistrationStatus,
    health: Health,
    pinned: Pinned,
) -> Result<ModelRegistrationStatus> {
    let generation = mreg.meta().generation;
    let now = Time(jiff::Timestamp::now());
    let status = ModelRegistrationStatus {
        model_name: pinned.name.or_else(|| old.model_name.clone()),
        version: pinned.version.or_else(|| old.version.clone()),
        model_id: pinned.model_id.or_else(|| old.model_id.clone()),
        asset_id: pinned.asset_id.or_else(|| old.asset_id.clone()),
        source_uri: pinned.source_uri.or_else(|| old.source_uri.clone()),
        base_model: pinned.base_model.or_else(|| old.base_model.clone()),
        job_name: pinned.job_name.or_else(|| old.job_name.clone()),
        observed_generation: generation,
        conditions: conditions::compute(&old.conditions, &health, generation, &now),
    };
    if let Some(uid) = mreg.uid() {
        let phase = if health.is_ready() {
            "Ready"
        } else if health.is_stalled() {
            "Stalled"
        } else {
            "Progressing"
        };
        ctx.metrics.set_phase(KIND, &uid, Some(phase));
    }
    publish_transition(ctx, mreg, &old.conditions, &health);
    if &status != old {
        patch_status(&ctx.client, mreg, &status).await?;
    }
    Ok(status)
}

async fn cleanup(mreg: Arc<ModelRegistration>, ctx: &Context) -> Result<Action> {
    if let Some(uid) = mreg.uid() {
        ctx.metrics.set_phase(KIND, &uid, None);
    }
    let status = mreg.status.clone().unwrap_or_default();
    let (Some(name), Some(version)) = (status.model_name.clone(), status.version.clone()) else {
        return Ok(Action::await_change());
    };
    if mreg.spec.on_delete == ModelOnDelete::Retain || is_detached(&*mreg) || status.model_id.is_none() {
        return Ok(Action::await_change());
    }
    let ns = mreg.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    match connect(ctx, &ns, &mreg.spec.workspace_ref).await? {
        Connection::Ready { client, .. } => match client.archive_model_version(&name, &version).await {
            Ok(_) => {}
            Err(e) if e.class() == ErrorClass::NotFound => {}
            Err(e) if e.class().is_retryable() => {
                return Err(Error::Azure { step: "archive model version", source: e });
            }
            Err(e) => {
                let health = Health::stalled(
                    reasons::DELETE_FAILED,
                    format!(
                        "could not archive {name}:{version}: {}; fix the cause or set the annotation azureml-operator.io/reconcile-policy=detach",
                        e.message()
                    ),
                );
                report(&mreg, ctx, &status, health, Pinned::default()).await?;
                return Err(Error::Azure { step: "archive model version", source: e });
            }
        },
        // The workspace is gone or unusable: nothing in Azure we can still reach; release.
        Connection::Unavailable(_) => {}
    }
    Ok(Action::await_change())
}

async fn reconcile(mreg: Arc<ModelRegistration>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    let ns = mreg.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ModelRegistration> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = mreg.uid().unwrap_or_default();
    let action = finalizer(&api, FINALIZER, mreg, |event| async {
        match event {
            FinalizerEvent::Apply(m) => apply(m, &ctx).await,
            FinalizerEvent::Cleanup(m) => cleanup(m, &ctx).await,
        }
    })
    .await?;
    ctx.failures.succeeded(&uid);
    Ok(action)
}

/// Runs the ModelRegistration controller until shutdown.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let (mregs, jobs, workspaces) = match &namespace {
        Some(ns) => (
            Api::<ModelRegistration>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<FineTuneJob>>::namespaced(client.clone(), ns),
            Api::<Workspace>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client)),
    };
    let (stream, reader) = super::cached_watch(mregs);
    let controller = Controller::for_stream(stream, reader)
        .with_config(controller::Config::default().concurrency(super::MAX_CONCURRENT_RECONCILES));
    let by_job = controller.store();
    let by_workspace = controller.store();
    controller
        // A FineTuneJob's progress (its status) is what a waiting registration waits for. Any change
        // of the job is an event of its metadata watch too (a new resourceVersion); the mapper needs
        // only names, so the jobs' specs and statuses are not decoded twice.
        .watches_stream(
            watcher(jobs, super::watch_config()).default_backoff().touched_objects(),
            move |job: PartialObjectMeta<FineTuneJob>| {
                let name = job.name_any();
                super::referring(&by_job, &job, |m| {
                    m.spec.source.fine_tune_job_ref.as_ref().is_some_and(|r| r.name == name)
                })
            },
        )
        .watches(workspaces, super::watch_config(), move |ws: Workspace| {
            super::naming_workspace(&by_workspace, &ws, |o| &o.spec.workspace_ref)
        })
        .shutdown_on_signal()
        .run(reconcile, |m, e, ctx| super::error_policy(KIND, &*m, e, &ctx), ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ModelRegistrationSpec;
    use crate::api::finetunejob::{FineTuneJobSpec, FineTuneJobStatus, JobOutputs};

    fn mreg(extra: serde_json::Value) -> ModelRegistration {
        let mut spec = serde_json::json!({"source": {"fineTuneJobRef": {"name": "phi3"}}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let spec: ModelRegistrationSpec = serde_json::from_value(spec).unwrap();
        let mut m = ModelRegistration::new("ultrachat-200k", spec);
        m.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(1_700_000_000).unwrap()));
        m
    }

    fn job(phase: Phase) -> FineTuneJob {
        let spec: FineTuneJobSpec = serde_json::from_value(serde_json::json!({
            "model": {"name": "Phi-3-mini-4k-instruct"},
            "compute": {"name": "gpu-cluster"},
            "data": {"train": "azureml://datastores/d/paths/t.jsonl", "test": "azureml://datastores/d/paths/s.jsonl"}
        }))
        .unwrap();
        let mut j = FineTuneJob::new("phi3", spec);
        j.status = Some(FineTuneJobStatus {
            phase,
            job_name: Some("ftj-abc".into()),
            resolved_model: Some(ResolvedAsset {
                id: "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15".into(),
                name: String::new(),
                version: "15".into(),
            }),
            outputs: Some(JobOutputs {
                trained_model: Some("azureml://jobs/ftj-abc/outputs/trained_model".into()),
            }),
            ..Default::default()
        });
        j
    }

    fn ready_source() -> SourceState {
        source_from_job(Some(&job(Phase::Succeeded)), "phi3", "trained_model")
    }

    fn version(uri: &str, description: Option<&str>) -> ModelVersion {
        ModelVersion {
            id: "/subscriptions/s/.../models/m/versions/1".into(),
            name: "m".into(),
            version: "1".into(),
            model_type: Some("mlflow_model".into()),
            model_uri: Some(uri.into()),
            description: description.map(Into::into),
            tags: BTreeMap::from([(
                "base_model".to_owned(),
                "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15".to_owned(),
            )]),
            properties: BTreeMap::new(),
            archived: false,
            job_name: Some("ftj-abc".into()),
            provisioning_state: None,
        }
    }

    fn observed(source: SourceState, existing: Option<ModelVersion>) -> Observed {
        Observed { source, name: "m".into(), version: "1".into(), existing }
    }

    /// The notebook's naming rule: `<model>-<suffix>` with `/` replaced, and the job's lineage kept.
    #[test]
    fn default_name_follows_the_notebook() {
        let SourceState::Ready(src) = ready_source() else { panic!() };
        assert_eq!(
            model_name(&mreg(serde_json::json!({})), src.base_model.as_ref()),
            "Phi-3-mini-4k-instruct-ultrachat-200k"
        );
        assert_eq!(src.uri, "azureml://jobs/ftj-abc/outputs/trained_model");
        assert_eq!(src.job_name.as_deref(), Some("ftj-abc"));
        let named = mreg(serde_json::json!({"modelName": "org/model"}));
        assert_eq!(model_name(&named, None), "org-model");
    }

    /// The default version is fixed at creation, never a fresh timestamp per attempt.
    #[test]
    fn default_version_is_the_creation_time() {
        assert_eq!(model_version(&mreg(serde_json::json!({}))).as_deref(), Some("1700000000"));
        assert_eq!(model_version(&mreg(serde_json::json!({"version": "7"}))).as_deref(), Some("7"));
    }

    /// A job still running makes the registration wait (Reconciling, WaitingForSource).
    #[test]
    fn running_job_waits() {
        for phase in [Phase::Pending, Phase::Validating, Phase::Submitted, Phase::Running] {
            let src = source_from_job(Some(&job(phase)), "phi3", "trained_model");
            let d = decide(&mreg(serde_json::json!({})), &observed(src, None));
            assert!(
                matches!(&d, Decision::Wait(h) if h.reason() == reasons::WAITING_FOR_SOURCE),
                "{phase:?}: {d:?}"
            );
        }
        let missing = source_from_job(None, "phi3", "trained_model");
        assert!(matches!(decide(&mreg(serde_json::json!({})), &observed(missing, None)), Decision::Wait(_)));
    }

    /// A failed or canceled job stalls the registration: it can never succeed.
    #[test]
    fn failed_job_stalls() {
        for phase in [Phase::Failed, Phase::Canceled] {
            let src = source_from_job(Some(&job(phase)), "phi3", "trained_model");
            let d = decide(&mreg(serde_json::json!({})), &observed(src, None));
            assert!(matches!(&d, Decision::Stall(h) if h.reason() == reasons::SOURCE_FAILED), "{d:?}");
        }
    }

    /// A succeeded job with no version in Azure yet: register it, with the lineage job name.
    #[test]
    fn missing_version_is_created() {
        let d = decide(&mreg(serde_json::json!({})), &observed(ready_source(), None));
        let Decision::Create(spec) = d else { panic!("{d:?}") };
        assert_eq!(spec.model_uri, "azureml://jobs/ftj-abc/outputs/trained_model");
        assert_eq!(spec.model_type, "mlflow_model");
        assert_eq!(spec.job_name.as_deref(), Some("ftj-abc"));
    }

    /// The same version with the same path is ours (a restart after the PUT): no second write.
    #[test]
    fn existing_version_with_same_path_is_done() {
        let m = mreg(serde_json::json!({"description": "d"}));
        let d = decide(
            &m,
            &observed(
                ready_source(),
                Some(version("azureml://jobs/ftj-abc/outputs/trained_model/", Some("d"))),
            ),
        );
        assert!(matches!(d, Decision::Done(_)), "{d:?}");
    }

    /// The same version with another path belongs to someone else: VersionConflict, never overwritten.
    #[test]
    fn existing_version_with_other_path_conflicts() {
        let d = decide(
            &mreg(serde_json::json!({})),
            &observed(ready_source(), Some(version("azureml://jobs/other/outputs/trained_model", None))),
        );
        assert!(matches!(&d, Decision::Stall(h) if h.reason() == reasons::VERSION_CONFLICT), "{d:?}");
    }

    /// Changed description or tags update the version's metadata only.
    #[test]
    fn changed_metadata_is_updated() {
        let m = mreg(serde_json::json!({"description": "new"}));
        let d = decide(
            &m,
            &observed(
                ready_source(),
                Some(version("azureml://jobs/ftj-abc/outputs/trained_model", Some("old"))),
            ),
        );
        assert!(matches!(d, Decision::UpdateMetadata(_)), "{d:?}");
    }

    /// A plain URI source needs no job.
    #[test]
    fn job_output_and_uri_sources() {
        let d = decide(
            &mreg(serde_json::json!({})),
            &observed(
                SourceState::Ready(Source {
                    uri: "azureml://jobs/j/outputs/o".into(),
                    job_name: Some("j".into()),
                    base_model: None,
                }),
                None,
            ),
        );
        assert!(matches!(d, Decision::Create(s) if s.model_uri == "azureml://jobs/j/outputs/o"));
    }
}
