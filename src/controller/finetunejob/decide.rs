//! The pure core of the FineTuneJob controller: from what one pass observed to what to do (validate,
//! create the compute, submit, track), and from an Azure job to the resource's phase and conditions.
//!
//! Nothing here talks to Kubernetes or Azure, so every branch is covered by the table tests below.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::params::{self, Problem};
use crate::api::FineTuneJob;
use crate::api::conditions::{Health, reasons};
use crate::api::finetunejob::{ComputeCreateSpec, Phase, ResolvedAsset};
use crate::azure::{
    AmlComputeSpec, AssetType, ComponentAsset, Compute, Job, JobInput, JobStatus, Literal, ModelAsset,
    PipelineJobSpec, PipelineSettings, ProvisioningState, VmPriority, VmSize,
};

/// Component inputs that name the cluster each stage of the pipeline runs on.
pub const COMPUTE_INPUTS: [&str; 4] =
    ["compute_model_import", "compute_preprocess", "compute_finetune", "compute_model_evaluation"];

/// The component input that receives the GPUs per node.
pub const GPU_INPUT: &str = "number_of_gpu_to_use_finetuning";

/// The pipeline output that holds the fine-tuned model.
pub const TRAINED_MODEL_OUTPUT: &str = "trained_model";

/// A registry asset as looked up: an explicit version, or "latest" resolved the SDK's way.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup<T> {
    /// The version to use.
    Found(T),
    /// "latest" found versions, but every one is archived; carries the newest archived version.
    OnlyArchived(T),
    /// No such asset (or no such explicit version).
    NotFound,
}

/// The compute cluster as observed.
#[derive(Clone, Debug, PartialEq)]
pub enum ComputeState {
    /// The cluster exists (in whatever provisioning state Azure reports).
    Exists(Compute),
    /// No cluster of that name.
    Missing,
    /// The create operation this resource started is still running.
    Creating {
        /// When Azure asked to be polled again.
        retry_after: Option<Duration>,
    },
    /// The create operation this resource started ended in failure.
    CreateFailed {
        /// Azure's message.
        message: String,
    },
}

/// What validation needs, gathered while no Azure job exists yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Validation {
    /// The foundation model.
    pub model: Lookup<ModelAsset>,
    /// The pipeline component.
    pub component: Lookup<ComponentAsset>,
    /// The compute cluster.
    pub compute: ComputeState,
    /// The workspace's region.
    pub location: String,
    /// The VM sizes of that region.
    pub vm_sizes: Vec<VmSize>,
}

/// What one pass saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// The Azure job (found by its deterministic name) exists: track it.
    Job(Box<Job>),
    /// No Azure job yet: validate and, if everything holds, submit it under `job_name`.
    NoJob {
        /// The deterministic job name.
        job_name: String,
        /// What validation needs.
        validation: Box<Validation>,
    },
}

/// A job ready to be submitted, with what status records about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Submission {
    /// The Azure job name.
    pub job_name: String,
    /// The pipeline job to PUT.
    pub spec: PipelineJobSpec,
    /// GPUs per node of the cluster's VM size.
    pub gpus_per_node: i32,
    /// Every node input, as sent.
    pub effective_parameters: BTreeMap<String, String>,
    /// Parameters whose value came from the model's `model_specific_defaults` tag.
    pub model_defaults_applied: Vec<String>,
}

/// A job's state as the resource reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracking {
    /// The resource's phase.
    pub phase: Phase,
    /// The conditions to report.
    pub health: Health,
    /// Azure's own status value.
    pub azure_status: String,
    /// Whether Azure will not change the job any more (no more polling).
    pub terminal: bool,
    /// Link to the job in studio.
    pub studio_url: Option<String>,
    /// Experiment the job is filed under.
    pub experiment_name: Option<String>,
    /// Display name in Azure.
    pub display_name: Option<String>,
    /// When the job started running.
    pub start_time: Option<Timestamp>,
    /// When the job ended.
    pub completion_time: Option<Timestamp>,
    /// The fine-tuned model, once the job succeeded.
    pub trained_model: Option<String>,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Progress needs a human: report why and wait for a spec change.
    Stall(Problem),
    /// The cluster is missing and the spec says how to create it.
    CreateCompute(AmlComputeSpec),
    /// The cluster is being created or updated: poll again.
    WaitCompute {
        /// What we wait for.
        message: String,
        /// When Azure asked to be polled again.
        retry_after: Option<Duration>,
    },
    /// Everything holds: submit the job.
    Submit(Box<Submission>),
    /// The job runs: report and poll.
    Track(Box<Tracking>),
    /// The job has ended: report, fetch the final metrics once, then only resync.
    Done(Box<Tracking>),
}

/// Pure: from what was seen to what to do.
pub fn decide(ftj: &FineTuneJob, observed: &Observed) -> Decision {
    match observed {
        Observed::Job(job) => {
            let t = track(job);
            if t.terminal { Decision::Done(Box::new(t)) } else { Decision::Track(Box::new(t)) }
        }
        Observed::NoJob { job_name, validation } => match validate(ftj, job_name, validation) {
            Ok(d) => d,
            Err(p) => Decision::Stall(p),
        },
    }
}

/// The registry asset a lookup pinned, for status.
pub fn pinned<T: Asset>(lookup: &Lookup<T>) -> Option<ResolvedAsset> {
    match lookup {
        Lookup::Found(a) => Some(a.resolved()),
        _ => None,
    }
}

/// What status keeps of a registry asset.
pub trait Asset {
    /// Id, name and version.
    fn resolved(&self) -> ResolvedAsset;
}

impl Asset for ModelAsset {
    fn resolved(&self) -> ResolvedAsset {
        ResolvedAsset { id: self.id.clone(), name: self.name.clone(), version: self.version.clone() }
    }
}

impl Asset for ComponentAsset {
    fn resolved(&self) -> ResolvedAsset {
        ResolvedAsset { id: self.id.clone(), name: self.name.clone(), version: self.version.clone() }
    }
}

fn validate(ftj: &FineTuneJob, job_name: &str, v: &Validation) -> Result<Decision, Problem> {
    let spec = &ftj.spec;
    let model = match &v.model {
        Lookup::Found(m) => m,
        Lookup::OnlyArchived(m) => {
            return Err(Problem::new(
                reasons::MODEL_ARCHIVED,
                format!(
                    "every version of model {} in registry {} is archived (newest: {}); set spec.model.version to an explicit version, or choose a current model",
                    spec.model.name, spec.model.registry, m.version
                ),
            ));
        }
        Lookup::NotFound => {
            let what = match &spec.model.version {
                Some(version) if !version.is_empty() => {
                    format!("version {version} of model {}", spec.model.name)
                }
                _ => format!("model {}", spec.model.name),
            };
            return Err(Problem::new(
                reasons::MODEL_NOT_FOUND,
                format!(
                    "registry {} has no {what}; fix spec.model (name and version), or choose a current model",
                    spec.model.registry
                ),
            ));
        }
    };
    let component = match &v.component {
        Lookup::Found(c) => c,
        Lookup::OnlyArchived(c) => {
            return Err(Problem::new(
                reasons::COMPONENT_NOT_FOUND,
                format!(
                    "every version of component {} in registry {} is archived (newest: {}); set spec.pipelineComponent.version explicitly",
                    spec.pipeline_component.name, spec.pipeline_component.registry, c.version
                ),
            ));
        }
        Lookup::NotFound => {
            return Err(Problem::new(
                reasons::COMPONENT_NOT_FOUND,
                format!(
                    "registry {} has no component {}{}; fix spec.pipelineComponent",
                    spec.pipeline_component.registry,
                    spec.pipeline_component.name,
                    spec.pipeline_component
                        .version
                        .as_deref()
                        .filter(|s| !s.is_empty())
                        .map(|s| format!(" version {s}"))
                        .unwrap_or_default()
                ),
            ));
        }
    };
    let allow = params::allow_list(&model.tags, params::FINETUNE_ALLOW_LIST_TAG)?;
    let cluster = &spec.compute.name;
    let compute = match &v.compute {
        ComputeState::Creating { retry_after } => {
            return Ok(Decision::WaitCompute {
                message: format!("waiting for compute cluster {cluster} to be created"),
                retry_after: *retry_after,
            });
        }
        ComputeState::CreateFailed { message } => {
            return Err(Problem::new(
                reasons::COMPUTE_FAILED,
                format!(
                    "creating compute cluster {cluster} failed: {message}; fix the cause (quota, VM size) and delete the failed cluster, or name another one in spec.compute.name"
                ),
            ));
        }
        ComputeState::Missing => {
            let Some(create) = &spec.compute.create else {
                return Err(Problem::new(
                    reasons::COMPUTE_NOT_FOUND,
                    format!(
                        "the workspace has no compute cluster {cluster}; create it, or set spec.compute.create to let the operator create it"
                    ),
                ));
            };
            // Check the size before creating a cluster nobody can use.
            params::check_vm_size(&create.vm_size, allow.as_deref(), &model.name)?;
            gpus_per_node(&create.vm_size, &v.vm_sizes, &v.location)?;
            return Ok(Decision::CreateCompute(compute_spec(create, &v.location)));
        }
        ComputeState::Exists(c) => c,
    };
    match &compute.provisioning_state {
        ProvisioningState::Failed | ProvisioningState::Canceled => {
            let why = if compute.provisioning_errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", compute.provisioning_errors.join("; "))
            };
            return Err(Problem::new(
                reasons::COMPUTE_FAILED,
                format!(
                    "compute cluster {cluster} is in provisioning state {}{why}; repair or re-create it, or name another cluster in spec.compute.name",
                    compute.provisioning_state
                ),
            ));
        }
        state if state.is_modifying() => {
            return Ok(Decision::WaitCompute {
                message: format!("waiting for compute cluster {cluster} (provisioning state {state})"),
                retry_after: None,
            });
        }
        _ => {}
    }
    let Some(vm_size) = compute.vm_size.as_deref() else {
        return Err(Problem::new(
            reasons::VM_SIZE_NOT_FOUND,
            format!(
                "compute {cluster} reports no VM size (type {}); name an AmlCompute cluster in spec.compute.name",
                compute.compute_type
            ),
        ));
    };
    params::check_vm_size(vm_size, allow.as_deref(), &model.name)?;
    let gpus = gpus_per_node(vm_size, &v.vm_sizes, &v.location)?;
    let merged = params::merge(spec, &model.tags)?;
    let typed = params::type_inputs(&merged, &component.inputs, &component.name)?;
    let display_name = spec
        .display_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| params::display_name(&model.name, &typed, i64::from(gpus)));
    let experiment_name = spec
        .experiment_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("chat_completion_{}", model.name));

    let declares = |input: &str| component.inputs.contains_key(input);
    let compute_bindings: BTreeMap<String, String> =
        COMPUTE_INPUTS.iter().filter(|i| declares(i)).map(|i| ((*i).to_owned(), cluster.clone())).collect();
    let mut inputs: BTreeMap<String, JobInput> =
        typed.into_iter().map(|(k, value)| (k, JobInput::Literal { value })).collect();
    inputs.insert(
        "mlflow_model_path".into(),
        JobInput::Asset { asset_type: AssetType::MlflowModel, uri: model.id.clone(), mode: None },
    );
    let file =
        |uri: &str| JobInput::Asset { asset_type: AssetType::UriFile, uri: uri.to_owned(), mode: None };
    inputs.insert("train_file_path".into(), file(&spec.data.train));
    inputs.insert("test_file_path".into(), file(&spec.data.test));
    if let Some(validation) = spec.data.validation.as_deref() {
        inputs.insert("validation_file_path".into(), file(validation));
    }
    if declares(GPU_INPUT) {
        inputs.insert(GPU_INPUT.into(), JobInput::Literal { value: Literal::Integer(i64::from(gpus)) });
    }

    let mut effective_parameters: BTreeMap<String, String> =
        compute_bindings.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (name, input) in &inputs {
        let text = match input {
            JobInput::Literal { value } => value.to_wire(),
            JobInput::Asset { uri, .. } => uri.clone(),
        };
        effective_parameters.insert(name.clone(), text);
    }
    let tags = BTreeMap::from([
        ("managed-by".to_owned(), "azureml-operator".to_owned()),
        ("k8s-resource".to_owned(), format!("{}/{}", ftj.namespace().unwrap_or_default(), ftj.name_any())),
    ]);
    let job = PipelineJobSpec {
        experiment_name,
        display_name: Some(display_name),
        description: None,
        tags,
        component_id: component.id.clone(),
        node_name: component.name.clone(),
        compute_bindings,
        inputs,
        outputs: vec![PipelineJobSpec::trained_model_output()],
        settings: PipelineSettings {
            force_rerun: spec.settings.force_rerun,
            continue_on_step_failure: spec.settings.continue_on_step_failure,
        },
    };
    Ok(Decision::Submit(Box::new(Submission {
        job_name: job_name.to_owned(),
        spec: job,
        gpus_per_node: i32::try_from(gpus).unwrap_or(i32::MAX),
        effective_parameters,
        model_defaults_applied: merged.from_model,
    })))
}

/// GPUs per node of `vm_size` in the region's size list (case-insensitive), or why it cannot fine-tune.
pub fn gpus_per_node(vm_size: &str, sizes: &[VmSize], location: &str) -> Result<u32, Problem> {
    let Some(size) = sizes.iter().find(|s| s.name.eq_ignore_ascii_case(vm_size)) else {
        let mut available: Vec<&str> = sizes.iter().filter(|s| s.gpus > 0).map(|s| s.name.as_str()).collect();
        available.sort_unstable();
        return Err(Problem::new(
            reasons::VM_SIZE_NOT_FOUND,
            format!(
                "VM size {vm_size} is not offered in {location}; GPU sizes available there: {}",
                if available.is_empty() { "none".to_owned() } else { available.join(", ") }
            ),
        ));
    };
    if size.gpus == 0 {
        return Err(Problem::new(
            reasons::NO_GPUS,
            format!(
                "VM size {} has no GPU; fine-tuning needs a GPU cluster, for example Standard_NC24ads_A100_v4",
                size.name
            ),
        ));
    }
    Ok(size.gpus)
}

/// The AmlCompute cluster `spec.compute.create` describes, in the workspace's region.
pub fn compute_spec(create: &ComputeCreateSpec, location: &str) -> AmlComputeSpec {
    AmlComputeSpec {
        location: location.to_owned(),
        vm_size: create.vm_size.clone(),
        vm_priority: VmPriority::Dedicated,
        min_nodes: u32::try_from(create.min_instances).unwrap_or(0),
        max_nodes: u32::try_from(create.max_instances).unwrap_or(1),
        idle_seconds_before_scale_down: u64::try_from(create.idle_seconds_before_scale_down).ok(),
    }
}

/// Maps Azure's job status to the resource's phase and conditions.
pub fn track(job: &Job) -> Tracking {
    let name = &job.name;
    let studio = job.studio_url.as_deref().map(|u| format!(" ({u})")).unwrap_or_default();
    let (phase, health) = match &job.status {
        JobStatus::NotStarted
        | JobStatus::Queued
        | JobStatus::Preparing
        | JobStatus::Starting
        | JobStatus::Provisioning => (
            Phase::Submitted,
            Health::progressing(reasons::SUBMITTED, format!("Azure ML job {name} is {}", job.status)),
        ),
        JobStatus::Running | JobStatus::Finalizing => (
            Phase::Running,
            Health::progressing(reasons::RUNNING, format!("Azure ML job {name} is {}", job.status)),
        ),
        // Paused waits for someone to resume it in Azure; nothing to do here but watch.
        JobStatus::Paused => (
            Phase::Running,
            Health::progressing(
                reasons::RUNNING,
                format!("Azure ML job {name} is Paused; resume it in Azure ML studio{studio}"),
            ),
        ),
        JobStatus::Completed => (
            Phase::Succeeded,
            Health::ready(
                reasons::SUCCEEDED,
                format!(
                    "Azure ML job {name} completed; the fine-tuned model is azureml://jobs/{name}/outputs/{TRAINED_MODEL_OUTPUT}"
                ),
            ),
        ),
        JobStatus::Failed | JobStatus::NotResponding => {
            let why = job.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
            (
                Phase::Failed,
                Health::stalled(
                    reasons::JOB_FAILED,
                    format!(
                        "Azure ML job {name} ended {}{why}; see its logs in Azure ML studio{studio}, then create a new FineTuneJob to train again",
                        job.status
                    ),
                ),
            )
        }
        JobStatus::CancelRequested | JobStatus::Canceled => (
            Phase::Canceled,
            Health::stalled(
                reasons::JOB_CANCELED,
                format!(
                    "Azure ML job {name} was canceled ({}); create a new FineTuneJob to train again",
                    job.status
                ),
            ),
        ),
        // Unknown or new values: keep watching, and say what Azure said.
        other => (
            Phase::Submitted,
            Health::progressing(reasons::SUBMITTED, format!("Azure ML job {name} reports status {other}")),
        ),
    };
    let terminal = match job.status {
        // Paused can be resumed; NotResponding is terminal for the SDK but may recover: keep polling
        // both (slowly, by age) rather than freezing a possibly wrong status.
        JobStatus::Paused | JobStatus::NotResponding => false,
        ref s => s.is_terminal(),
    };
    let trained_model = (phase == Phase::Succeeded).then(|| {
        job.outputs
            .get(TRAINED_MODEL_OUTPUT)
            .map(|o| o.job_uri.clone())
            .unwrap_or_else(|| format!("azureml://jobs/{name}/outputs/{TRAINED_MODEL_OUTPUT}"))
    });
    Tracking {
        phase,
        health,
        azure_status: job.status.to_string(),
        terminal,
        studio_url: job.studio_url.clone(),
        experiment_name: job.experiment_name.clone(),
        display_name: job.display_name.clone(),
        start_time: job.start_time,
        completion_time: if terminal { job.end_time } else { None },
        trained_model,
    }
}

/// The condition for an Azure refusal of the job submission: quota gets its own reason.
pub fn submit_refused(job_name: &str, quota: bool, message: &str) -> Problem {
    if quota {
        Problem::new(
            reasons::QUOTA_EXCEEDED,
            format!(
                "Azure refused job {job_name} for lack of quota: {message}; request more quota or use a smaller cluster"
            ),
        )
    } else {
        Problem::new(
            reasons::AZURE_REJECTED,
            format!("Azure refused job {job_name}: {message}; fix the spec"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FineTuneJobSpec;
    use crate::azure::{ComponentInput, JobOutput};
    use serde_json::{Value, json};

    // ---- fixtures -------------------------------------------------------------------------------

    fn ftj(extra: Value) -> FineTuneJob {
        let mut spec = json!({
            "model": {"name": "Phi-3-mini-4k-instruct"},
            "compute": {"name": "gpu-cluster"},
            "data": {
                "train": "azureml://datastores/workspaceblobstore/paths/ultrachat/train_sft.jsonl",
                "test": "azureml://datastores/workspaceblobstore/paths/ultrachat/test_sft.jsonl"
            }
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let spec: FineTuneJobSpec = serde_json::from_value(spec).unwrap();
        let mut f = FineTuneJob::new("phi3-ultrachat", spec);
        f.metadata.namespace = Some("ml".into());
        f.metadata.uid = Some("0a1b2c3d-0000-0000-0000-000000000000".into());
        f
    }

    fn model(tags: &[(&str, &str)]) -> ModelAsset {
        ModelAsset {
            id: "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15".into(),
            name: "Phi-3-mini-4k-instruct".into(),
            version: "15".into(),
            tags: tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            properties: BTreeMap::new(),
            archived: false,
            model_type: Some("mlflow_model".into()),
            model_uri: None,
            created_at: None,
        }
    }

    const ALLOW: &str = "['Standard_NC24ads_A100_v4', 'Standard_NC48ads_A100_v4', 'Standard_ND96asr_v4']";
    const DEFAULTS: &str = r#"{"apply_deepspeed": "true", "deepspeed_stage": 2, "apply_lora": "true", "precision": 16, "num_train_epochs": 1, "learning_rate": 5e-06, "learning_rate_min": 5e-07, "lr_scheduler_type": "cosine", "save_total_limit": 1}"#;

    fn phi3() -> ModelAsset {
        model(&[(params::FINETUNE_ALLOW_LIST_TAG, ALLOW), (params::MODEL_DEFAULTS_TAG, DEFAULTS)])
    }

    fn input(t: &str, enums: &[&str], min: Option<f64>) -> ComponentInput {
        ComponentInput {
            name: String::new(),
            input_type: t.into(),
            optional: true,
            default: None,
            enum_values: enums.iter().map(|s| (*s).to_owned()).collect(),
            min,
            max: None,
            description: None,
        }
    }

    fn component() -> ComponentAsset {
        let mut inputs = BTreeMap::new();
        for (name, i) in [
            ("mlflow_model_path", input("mlflow_model", &[], None)),
            ("train_file_path", input("uri_file", &[], None)),
            ("test_file_path", input("uri_file", &[], None)),
            ("validation_file_path", input("uri_file", &[], None)),
            ("compute_model_import", input("string", &[], None)),
            ("compute_preprocess", input("string", &[], None)),
            ("compute_finetune", input("string", &[], None)),
            ("compute_model_evaluation", input("string", &[], None)),
            (GPU_INPUT, input("integer", &[], Some(1.0))),
            ("num_train_epochs", input("integer", &[], Some(1.0))),
            ("per_device_train_batch_size", input("integer", &[], Some(1.0))),
            ("per_device_eval_batch_size", input("integer", &[], Some(1.0))),
            ("learning_rate", input("number", &[], None)),
            ("lr_scheduler_type", input("string", &["linear", "cosine"], None)),
            ("apply_lora", input("string", &["true", "false"], None)),
            ("apply_deepspeed", input("string", &["true", "false"], None)),
            ("deepspeed_stage", input("string", &["2", "3"], None)),
            ("precision", input("string", &["32", "16"], None)),
            ("save_total_limit", input("integer", &[], None)),
            ("lora_r", input("integer", &[], None)),
        ] {
            let mut i = i;
            i.name = name.to_owned();
            inputs.insert(name.to_owned(), i);
        }
        ComponentAsset {
            id: "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82".into(),
            name: "chat_completion_pipeline".into(),
            version: "0.0.82".into(),
            component_type: Some("pipeline".into()),
            tags: BTreeMap::new(),
            archived: false,
            inputs,
            outputs: BTreeMap::new(),
            created_at: None,
        }
    }

    fn compute(vm: &str, state: ProvisioningState) -> Compute {
        Compute {
            name: "gpu-cluster".into(),
            compute_type: "AmlCompute".into(),
            location: Some("eastus2".into()),
            vm_size: Some(vm.into()),
            vm_priority: Some("Dedicated".into()),
            provisioning_state: state,
            provisioning_errors: Vec::new(),
            scale: None,
            current_node_count: Some(0),
            allocation_state: Some("Steady".into()),
        }
    }

    fn size(name: &str, gpus: u32) -> VmSize {
        VmSize {
            name: name.into(),
            family: None,
            vcpus: None,
            gpus,
            memory_gb: None,
            low_priority_capable: true,
            supported_compute_types: vec!["AmlCompute".into()],
        }
    }

    fn sizes() -> Vec<VmSize> {
        vec![
            size("Standard_DS3_v2", 0),
            size("Standard_NC6s_v3", 1),
            size("Standard_NC24ads_A100_v4", 1),
            size("Standard_NC48ads_A100_v4", 2),
        ]
    }

    fn validation() -> Validation {
        Validation {
            model: Lookup::Found(phi3()),
            component: Lookup::Found(component()),
            compute: ComputeState::Exists(compute("STANDARD_NC24ADS_A100_V4", ProvisioningState::Succeeded)),
            location: "eastus2".into(),
            vm_sizes: sizes(),
        }
    }

    fn no_job(v: Validation) -> Observed {
        Observed::NoJob { job_name: "ml-phi3-ultrachat-0a1b2c3d".into(), validation: Box::new(v) }
    }

    fn job(status: JobStatus) -> Job {
        Job {
            name: "ml-phi3-ultrachat-0a1b2c3d".into(),
            job_type: Some("Pipeline".into()),
            status,
            display_name: Some("d".into()),
            experiment_name: Some("chat_completion_Phi-3-mini-4k-instruct".into()),
            studio_url: Some("https://ml.azure.com/runs/x".into()),
            tracking_uri: None,
            outputs: BTreeMap::from([(
                TRAINED_MODEL_OUTPUT.to_owned(),
                JobOutput {
                    output_type: Some("mlflow_model".into()),
                    uri: None,
                    job_uri: "azureml://jobs/ml-phi3-ultrachat-0a1b2c3d/outputs/trained_model".into(),
                },
            )]),
            tags: BTreeMap::new(),
            properties: BTreeMap::new(),
            created_at: None,
            start_time: None,
            end_time: None,
            error: None,
        }
    }

    fn stall_reason(d: &Decision) -> &'static str {
        match d {
            Decision::Stall(p) => p.reason,
            other => panic!("expected a stall, got {other:?}"),
        }
    }

    fn stall_message(d: &Decision) -> &str {
        match d {
            Decision::Stall(p) => &p.message,
            other => panic!("expected a stall, got {other:?}"),
        }
    }

    fn submission(d: Decision) -> Submission {
        match d {
            Decision::Submit(s) => *s,
            other => panic!("expected a submission, got {other:?}"),
        }
    }

    // ---- validation -----------------------------------------------------------------------------

    /// The notebook's resource on a valid A100 cluster is submitted with the notebook's job body.
    #[test]
    fn valid_notebook_spec_is_submitted_as_the_notebook_builds_it() {
        let s = submission(decide(&ftj(json!({})), &no_job(validation())));
        assert_eq!(s.job_name, "ml-phi3-ultrachat-0a1b2c3d");
        assert_eq!(s.gpus_per_node, 1);
        let spec = &s.spec;
        assert_eq!(spec.experiment_name, "chat_completion_Phi-3-mini-4k-instruct");
        assert_eq!(
            spec.display_name.as_deref(),
            Some("Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora-save_limit1-seqlen-1")
        );
        assert_eq!(spec.component_id, component().id);
        assert_eq!(spec.node_name, "chat_completion_pipeline");
        assert_eq!(spec.compute_bindings.len(), 4);
        assert!(spec.compute_bindings.values().all(|c| c == "gpu-cluster"));
        assert_eq!(
            spec.inputs["mlflow_model_path"],
            JobInput::Asset { asset_type: AssetType::MlflowModel, uri: phi3().id, mode: None }
        );
        assert!(
            matches!(&spec.inputs["train_file_path"], JobInput::Asset { asset_type: AssetType::UriFile, uri, .. } if uri.ends_with("train_sft.jsonl"))
        );
        assert!(!spec.inputs.contains_key("validation_file_path"));
        assert_eq!(spec.inputs[GPU_INPUT], JobInput::Literal { value: Literal::Integer(1) });
        assert_eq!(spec.inputs["precision"], JobInput::Literal { value: Literal::String("16".into()) });
        assert!(!spec.inputs.contains_key("learning_rate_min"), "not a component input");
        assert_eq!(spec.outputs, vec![PipelineJobSpec::trained_model_output()]);
        assert!(spec.settings.force_rerun && !spec.settings.continue_on_step_failure);
        assert_eq!(s.effective_parameters["learning_rate"], "5e-06");
        assert_eq!(s.effective_parameters["compute_finetune"], "gpu-cluster");
        assert!(s.model_defaults_applied.contains(&"precision".to_owned()));
    }

    /// Spec values win over the model's defaults, and spec names and settings are used as written.
    #[test]
    fn spec_overrides_defaults_names_and_settings() {
        let f = ftj(json!({
            "training": {"numTrainEpochs": 2},
            "parameters": {"lora_r": 16},
            "experimentName": "exp",
            "displayName": "mine",
            "settings": {"forceRerun": false, "continueOnStepFailure": true},
            "data": {"train": "azureml:train:1", "test": "azureml:test:1", "validation": "azureml:val:1"}
        }));
        let s = submission(decide(&f, &no_job(validation())));
        assert_eq!(s.spec.experiment_name, "exp");
        assert_eq!(s.spec.display_name.as_deref(), Some("mine"));
        assert_eq!(s.spec.inputs["num_train_epochs"], JobInput::Literal { value: Literal::Integer(2) });
        assert_eq!(s.spec.inputs["lora_r"], JobInput::Literal { value: Literal::Integer(16) });
        assert_eq!(s.effective_parameters["validation_file_path"], "azureml:val:1");
        assert!(!s.spec.settings.force_rerun && s.spec.settings.continue_on_step_failure);
        assert!(!s.model_defaults_applied.contains(&"num_train_epochs".to_owned()));
    }

    /// The GPU count comes from the region's size list and sizes the display name's batch.
    #[test]
    fn gpus_per_node_come_from_the_size_list() {
        let mut v = validation();
        v.compute = ComputeState::Exists(compute("Standard_NC48ads_A100_v4", ProvisioningState::Succeeded));
        let s = submission(decide(&ftj(json!({})), &no_job(v)));
        assert_eq!(s.gpus_per_node, 2);
        assert_eq!(s.effective_parameters[GPU_INPUT], "2");
        assert!(s.spec.display_name.as_deref().is_some_and(|d| d.contains("-bs2-")));
    }

    /// A model name nobody published: ModelNotFound, naming it.
    #[test]
    fn missing_model_stalls_model_not_found() {
        let v = Validation { model: Lookup::NotFound, ..validation() };
        let d = decide(&ftj(json!({"model": {"name": "No-Such-Model", "version": "3"}})), &no_job(v));
        assert_eq!(stall_reason(&d), reasons::MODEL_NOT_FOUND);
        assert!(stall_message(&d).contains("version 3 of model No-Such-Model"), "{d:?}");
    }

    /// "latest" of a retired model finds only archived versions: ModelArchived, suggesting a way out.
    #[test]
    fn archived_only_model_stalls_model_archived() {
        let v = Validation { model: Lookup::OnlyArchived(phi3()), ..validation() };
        let d = decide(&ftj(json!({})), &no_job(v));
        assert_eq!(stall_reason(&d), reasons::MODEL_ARCHIVED);
        let m = stall_message(&d);
        assert!(
            m.contains("Phi-3-mini-4k-instruct") && m.contains("spec.model.version") && m.contains("15"),
            "{m}"
        );
    }

    /// A missing or archived-only component stalls ComponentNotFound.
    #[test]
    fn missing_component_stalls_component_not_found() {
        for component in [Lookup::NotFound, Lookup::OnlyArchived(component())] {
            let v = Validation { component, ..validation() };
            assert_eq!(stall_reason(&decide(&ftj(json!({})), &no_job(v))), reasons::COMPONENT_NOT_FOUND);
        }
    }

    /// A missing cluster without `create` is the user's to make: ComputeNotFound.
    #[test]
    fn missing_compute_without_create_stalls() {
        let v = Validation { compute: ComputeState::Missing, ..validation() };
        let d = decide(&ftj(json!({})), &no_job(v));
        assert_eq!(stall_reason(&d), reasons::COMPUTE_NOT_FOUND);
        assert!(stall_message(&d).contains("spec.compute.create"));
    }

    /// A missing cluster with `create` is created in the workspace's region with the spec's settings.
    #[test]
    fn missing_compute_with_create_is_created() {
        let v = Validation { compute: ComputeState::Missing, ..validation() };
        let f = ftj(
            json!({"compute": {"name": "gpu-cluster", "create": {"vmSize": "Standard_NC24ads_A100_v4", "maxInstances": 2}}}),
        );
        match decide(&f, &no_job(v)) {
            Decision::CreateCompute(spec) => {
                assert_eq!(spec.location, "eastus2");
                assert_eq!(spec.vm_size, "Standard_NC24ads_A100_v4");
                assert_eq!((spec.min_nodes, spec.max_nodes), (0, 2));
                assert_eq!(spec.idle_seconds_before_scale_down, Some(120));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A cluster to create is checked first: never create a cluster the model cannot use.
    #[test]
    fn compute_to_create_with_disallowed_size_stalls_before_creating() {
        let v = Validation { compute: ComputeState::Missing, ..validation() };
        let f = ftj(json!({"compute": {"name": "gpu-cluster", "create": {"vmSize": "Standard_NC6s_v3"}}}));
        assert_eq!(stall_reason(&decide(&f, &no_job(v))), reasons::VM_SIZE_NOT_ALLOWED);
    }

    /// Our create operation still running, or the cluster Creating/Updating: wait, do not submit.
    #[test]
    fn compute_being_provisioned_waits() {
        let creating = Validation {
            compute: ComputeState::Creating { retry_after: Some(Duration::from_secs(7)) },
            ..validation()
        };
        assert!(matches!(
            decide(&ftj(json!({})), &no_job(creating)),
            Decision::WaitCompute { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        for state in [ProvisioningState::Creating, ProvisioningState::Updating] {
            let v = Validation {
                compute: ComputeState::Exists(compute("Standard_NC24ads_A100_v4", state)),
                ..validation()
            };
            assert!(matches!(
                decide(&ftj(json!({})), &no_job(v)),
                Decision::WaitCompute { retry_after: None, .. }
            ));
        }
    }

    /// A cluster in Failed state (or whose creation failed) stalls ComputeFailed with Azure's errors.
    #[test]
    fn failed_compute_stalls_compute_failed() {
        let mut broken = compute("Standard_NC24ads_A100_v4", ProvisioningState::Failed);
        broken.provisioning_errors = vec!["AllocationFailed: no capacity".into()];
        let v = Validation { compute: ComputeState::Exists(broken), ..validation() };
        let d = decide(&ftj(json!({})), &no_job(v));
        assert_eq!(stall_reason(&d), reasons::COMPUTE_FAILED);
        assert!(stall_message(&d).contains("AllocationFailed"));
        let v =
            Validation { compute: ComputeState::CreateFailed { message: "quota".into() }, ..validation() };
        assert_eq!(stall_reason(&decide(&ftj(json!({})), &no_job(v))), reasons::COMPUTE_FAILED);
    }

    /// The model's allow list is enforced: NC6s_v3 cannot fine-tune Phi-3.
    #[test]
    fn vm_size_outside_allow_list_stalls() {
        let v = Validation {
            compute: ComputeState::Exists(compute("Standard_NC6s_v3", ProvisioningState::Succeeded)),
            ..validation()
        };
        let d = decide(&ftj(json!({})), &no_job(v));
        assert_eq!(stall_reason(&d), reasons::VM_SIZE_NOT_ALLOWED);
        assert!(stall_message(&d).contains("Standard_NC24ads_A100_v4"));
    }

    /// Without an allow list, the notebook's refused sizes still stall.
    #[test]
    fn refused_size_without_allow_list_stalls() {
        let v = Validation {
            model: Lookup::Found(model(&[])),
            compute: ComputeState::Exists(compute("Standard_NC6", ProvisioningState::Succeeded)),
            ..validation()
        };
        assert_eq!(stall_reason(&decide(&ftj(json!({})), &no_job(v))), reasons::VM_SIZE_NOT_ALLOWED);
    }

    /// A size missing from the region's list: VmSizeNotFound listing what is available.
    #[test]
    fn vm_size_not_in_region_stalls_listing_available_sizes() {
        let v = Validation {
            model: Lookup::Found(model(&[])),
            compute: ComputeState::Exists(compute("Standard_XYZ", ProvisioningState::Succeeded)),
            ..validation()
        };
        let d = decide(&ftj(json!({})), &no_job(v));
        assert_eq!(stall_reason(&d), reasons::VM_SIZE_NOT_FOUND);
        assert!(stall_message(&d).contains("Standard_NC48ads_A100_v4"), "{d:?}");
        assert!(!stall_message(&d).contains("Standard_DS3_v2"), "CPU sizes are not suggested");
    }

    /// A CPU-only size: NoGpus.
    #[test]
    fn cpu_size_stalls_no_gpus() {
        let v = Validation {
            model: Lookup::Found(model(&[])),
            compute: ComputeState::Exists(compute("standard_ds3_v2", ProvisioningState::Succeeded)),
            ..validation()
        };
        assert_eq!(stall_reason(&decide(&ftj(json!({})), &no_job(v))), reasons::NO_GPUS);
    }

    /// A parameter the component does not declare: UnknownParameter naming it.
    #[test]
    fn unknown_parameter_stalls() {
        let d = decide(&ftj(json!({"parameters": {"lora_rank": 8}})), &no_job(validation()));
        assert_eq!(stall_reason(&d), reasons::UNKNOWN_PARAMETER);
        assert!(stall_message(&d).contains("lora_rank"));
    }

    /// A parameter of the wrong type: InvalidParameter naming it.
    #[test]
    fn ill_typed_parameter_stalls() {
        let d = decide(&ftj(json!({"parameters": {"lora_r": "eight"}})), &no_job(validation()));
        assert_eq!(stall_reason(&d), reasons::INVALID_PARAMETER);
        assert!(stall_message(&d).contains("lora_r"));
    }

    /// An allow-list tag that is not a list is reported, not guessed around.
    #[test]
    fn unreadable_allow_list_stalls() {
        let v = Validation {
            model: Lookup::Found(model(&[(params::FINETUNE_ALLOW_LIST_TAG, "{'sizes': 3}")])),
            ..validation()
        };
        assert_eq!(stall_reason(&decide(&ftj(json!({})), &no_job(v))), reasons::AZURE_REJECTED);
    }

    // ---- tracking -------------------------------------------------------------------------------

    /// Every Azure status maps to the phase, reason and polling the brief documents.
    #[test]
    fn azure_status_maps_to_phase() {
        let rows = [
            (JobStatus::NotStarted, Phase::Submitted, reasons::SUBMITTED, false),
            (JobStatus::Queued, Phase::Submitted, reasons::SUBMITTED, false),
            (JobStatus::Preparing, Phase::Submitted, reasons::SUBMITTED, false),
            (JobStatus::Starting, Phase::Submitted, reasons::SUBMITTED, false),
            (JobStatus::Provisioning, Phase::Submitted, reasons::SUBMITTED, false),
            (JobStatus::Running, Phase::Running, reasons::RUNNING, false),
            (JobStatus::Finalizing, Phase::Running, reasons::RUNNING, false),
            (JobStatus::Paused, Phase::Running, reasons::RUNNING, false),
            (JobStatus::Completed, Phase::Succeeded, reasons::SUCCEEDED, true),
            (JobStatus::Failed, Phase::Failed, reasons::JOB_FAILED, true),
            (JobStatus::NotResponding, Phase::Failed, reasons::JOB_FAILED, false),
            (JobStatus::CancelRequested, Phase::Canceled, reasons::JOB_CANCELED, false),
            (JobStatus::Canceled, Phase::Canceled, reasons::JOB_CANCELED, true),
            (JobStatus::Unknown, Phase::Submitted, reasons::SUBMITTED, false),
            (JobStatus::Other("Resuming".into()), Phase::Submitted, reasons::SUBMITTED, false),
        ];
        for (status, phase, reason, terminal) in rows {
            let t = track(&job(status.clone()));
            assert_eq!((t.phase, t.health.reason(), t.terminal), (phase, reason, terminal), "{status}");
            assert_eq!(t.azure_status, status.to_string());
        }
    }

    /// An existing job is tracked, never validated or re-submitted (the adoption path after a crash).
    #[test]
    fn existing_job_is_tracked_not_resubmitted() {
        assert!(matches!(
            decide(&ftj(json!({})), &Observed::Job(Box::new(job(JobStatus::Running)))),
            Decision::Track(_)
        ));
        assert!(matches!(
            decide(&ftj(json!({})), &Observed::Job(Box::new(job(JobStatus::Completed)))),
            Decision::Done(_)
        ));
    }

    /// Success is Ready and names the trained model output.
    #[test]
    fn completed_job_is_ready_with_trained_model() {
        let t = track(&job(JobStatus::Completed));
        assert!(t.health.is_ready());
        assert_eq!(
            t.trained_model.as_deref(),
            Some("azureml://jobs/ml-phi3-ultrachat-0a1b2c3d/outputs/trained_model")
        );
        assert_eq!(track(&job(JobStatus::Running)).trained_model, None);
    }

    /// A failed job is Stalled with Azure's own message.
    #[test]
    fn failed_job_carries_azures_message() {
        let mut j = job(JobStatus::Failed);
        j.error = Some("UserError: CUDA out of memory".into());
        let t = track(&j);
        assert!(t.health.is_stalled());
        assert!(t.health.message().contains("CUDA out of memory"));
    }

    /// Quota refusals at submission get their own reason; other refusals are AzureRejected.
    #[test]
    fn submission_refusals_are_classified() {
        assert_eq!(submit_refused("j", true, "cores").reason, reasons::QUOTA_EXCEEDED);
        let p = submit_refused("j", false, "Input 'x' is unknown");
        assert_eq!(p.reason, reasons::AZURE_REJECTED);
        assert!(p.message.contains("Input 'x' is unknown"));
    }
}
