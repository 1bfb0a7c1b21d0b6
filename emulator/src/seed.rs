//! The world the emulator starts with: the demo workspace and principal, computes, the VM sizes of the
//! region, and the `azureml` registry with the notebook's model and fine-tuning pipeline component.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::Config;
use crate::state::{
    Compute, ErrorInfo, Principal, Provisioning, Registry, RegistryComponent, RegistryComponentVersion,
    RegistryModel, RegistryModelVersion, VmSize, Workspace, World,
};

/// The subscription and resource group that hold the `azureml` system registry (Microsoft-owned in Azure).
const REGISTRY_SUBSCRIPTION: &str = "00000000-0000-0000-0000-0000000000ff";
const REGISTRY_RESOURCE_GROUP: &str = "registry-builtin-prod-eastus-01";

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

impl World {
    /// The seeded world described in `emulator/README.md`.
    pub(crate) fn seeded(config: &Config, https_url: &str) -> Self {
        let seeds = &config.seeds;
        let workspace = Workspace {
            subscription: seeds.subscription_id.clone(),
            resource_group: seeds.resource_group.clone(),
            name: seeds.workspace.clone(),
            location: seeds.location.clone(),
            workspace_id: "5f0e3c2a-7d1b-4c88-9a41-2b6f8e0d9c11".into(),
            created: ts("2024-05-01T09:00:00Z"),
        };
        let ws = workspace.key();
        let compute = |name: &str, vm: &str, state: &str, error: Option<ErrorInfo>| Compute {
            ws: ws.clone(),
            name: name.into(),
            location: seeds.location.clone(),
            vm_size: vm.into(),
            vm_priority: "Dedicated".into(),
            min_nodes: 0,
            max_nodes: 2,
            idle: "PT120S".into(),
            description: None,
            tags: json!({}),
            prov: Provisioning { state: state.into(), error, pending: None },
            created: ts("2024-05-02T09:00:00Z"),
            modified: ts("2024-05-02T09:00:00Z"),
        };
        let computes = vec![
            compute("gpu-cluster", "Standard_NC24ads_A100_v4", "Succeeded", None),
            compute(
                "broken-cluster",
                "Standard_NC24ads_A100_v4",
                "Failed",
                Some(ErrorInfo::new(
                    "AllocationFailed",
                    "Allocation failed. We do not have sufficient capacity for the requested VM size in this region.",
                )),
            ),
        ];
        let mut vm_sizes = BTreeMap::new();
        vm_sizes.insert(seeds.location.to_ascii_lowercase(), vm_size_list());
        Self {
            scale: config.time_scale,
            https_url: https_url.to_string(),
            tenant_id: seeds.tenant_id.clone(),
            principals: vec![Principal {
                client_id: seeds.client_id.clone(),
                client_secret: seeds.client_secret.clone(),
                object_id: "00000000-0000-0000-0000-0000000000dd".into(),
            }],
            workspaces: vec![workspace],
            vm_sizes,
            registries: vec![azureml_registry(&seeds.registry, &seeds.location)],
            computes,
            jobs: Vec::new(),
            models: Vec::new(),
            endpoints: Vec::new(),
            operations: BTreeMap::new(),
            failures: Vec::new(),
            quotas: BTreeMap::new(),
            experiments: BTreeMap::new(),
        }
    }
}

fn vm_size_list() -> Vec<VmSize> {
    let gpu = vec!["AmlCompute", "ComputeInstance", "MIR"];
    let size = |name: &str,
                family: &str,
                vcpus: u32,
                gpus: u32,
                memory_gb: f64,
                price: f64,
                types: &Vec<&'static str>| {
        VmSize {
            name: name.into(),
            family: family.into(),
            vcpus,
            gpus,
            memory_gb,
            low_priority_capable: true,
            premium_io: true,
            compute_types: types.clone(),
            price,
        }
    };
    vec![
        size("Standard_DS3_v2", "standardDSv2Family", 4, 0, 14.0, 0.229, &gpu),
        size("Standard_E4s_v3", "standardESv3Family", 4, 0, 32.0, 0.252, &gpu),
        size("Standard_NC6", "standardNCFamily", 6, 1, 56.0, 0.9, &vec!["AmlCompute", "ComputeInstance"]),
        size("Standard_NC6s_v3", "standardNCSv3Family", 6, 1, 112.0, 3.06, &gpu),
        size("Standard_NC12s_v3", "standardNCSv3Family", 12, 2, 224.0, 6.12, &gpu),
        size("Standard_NC24s_v3", "standardNCSv3Family", 24, 4, 448.0, 12.24, &gpu),
        size("Standard_NC24ads_A100_v4", "standardNCADSA100v4Family", 24, 1, 220.0, 3.673, &gpu),
        size("Standard_NC48ads_A100_v4", "standardNCADSA100v4Family", 48, 2, 440.0, 7.346, &gpu),
        size("Standard_NC96ads_A100_v4", "standardNCADSA100v4Family", 96, 4, 880.0, 14.692, &gpu),
        size("Standard_ND96asr_v4", "standardNDASv4_A100Family", 96, 8, 900.0, 27.197, &gpu),
        size("Standard_ND96amsr_A100_v4", "standardNDAMSv4_A100Family", 96, 8, 1900.0, 32.77, &gpu),
        size("Standard_ND40rs_v2", "standardNDSv2Family", 40, 8, 672.0, 22.032, &gpu),
    ]
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const PHI3_FINETUNE_ALLOW: &str = "['Standard_NC24ads_A100_v4', 'Standard_NC48ads_A100_v4', 'Standard_NC96ads_A100_v4', 'Standard_ND96asr_v4', 'Standard_ND96amsr_A100_v4']";
const PHI3_INFERENCE_ALLOW: &str = "['Standard_NC6s_v3', 'Standard_NC12s_v3', 'Standard_NC24s_v3', 'Standard_ND40rs_v2', 'Standard_NC24ads_A100_v4', 'Standard_NC48ads_A100_v4', 'Standard_ND96asr_v4', 'Standard_ND96amsr_A100_v4', 'Standard_NC96ads_A100_v4']";
const PHI3_DEFAULTS: &str = r#"{"apply_deepspeed": "true", "deepspeed_stage": 2, "apply_lora": "true", "apply_ort": "false", "precision": 16, "ignore_mismatched_sizes": "false", "num_train_epochs": 1, "per_device_train_batch_size": 1, "per_device_eval_batch_size": 1, "gradient_accumulation_steps": 1, "learning_rate": 5e-06, "learning_rate_min": 5e-07, "learning_rate_max": 5e-05, "lr_scheduler_type": "cosine", "logging_strategy": "steps", "logging_steps": 10, "save_total_limit": 1}"#;

fn phi3_version(version: &str, created: &str) -> RegistryModelVersion {
    RegistryModelVersion {
        version: version.into(),
        created: ts(created),
        description:
            "The Phi-3-Mini-4K-Instruct is a 3.8B parameters, lightweight, state-of-the-art open model \
                      trained with the Phi-3 datasets."
                .into(),
        model_type: "mlflow_model".into(),
        tags: string_map(&[
            ("finetune_compute_allow_list", PHI3_FINETUNE_ALLOW),
            ("inference_compute_allow_list", PHI3_INFERENCE_ALLOW),
            ("evaluation_compute_allow_list", PHI3_INFERENCE_ALLOW),
            ("model_specific_defaults", PHI3_DEFAULTS),
            ("task", "chat-completion"),
            ("author", "Microsoft"),
            ("license", "mit"),
            ("inference_supported_envs", "['vllm']"),
            ("disable-batch", "true"),
            ("textContextWindow", "4096"),
            ("maxOutputTokens", "4096"),
            ("_aml_system_vanity_registry", "azureml-phi"),
        ]),
        properties: string_map(&[
            ("finetune-min-sku-spec", "24|1|220|64"),
            ("inference-min-sku-spec", "6|1|112|64"),
            ("finetuning-tasks", "chat-completion"),
            ("finetune-recommended-sku", PHI3_FINETUNE_ALLOW),
            ("inference-recommended-sku", PHI3_INFERENCE_ALLOW),
        ]),
        archived: false,
        flavors: json!({
            "hftransformersv2": {"task_type": "chat-completion", "hf_pretrained_class": "AutoModelForCausalLM", "transformers_version": "4.38.2"},
            "python_function": {"loader_module": "azureml.evaluate.mlflow.hftransformers"},
        }),
    }
}

fn plain_version(version: &str, created: &str, description: &str, archived: bool) -> RegistryModelVersion {
    RegistryModelVersion {
        version: version.into(),
        created: ts(created),
        description: description.into(),
        model_type: "mlflow_model".into(),
        tags: string_map(&[("task", "chat-completion"), ("author", "Microsoft")]),
        properties: BTreeMap::new(),
        archived,
        flavors: json!({}),
    }
}

fn azureml_registry(name: &str, location: &str) -> Registry {
    let phi4_description = "Phi-4-mini-instruct is a lightweight open model with a 128K context window.";
    let phi4 = RegistryModel {
        name: "Phi-4-mini-instruct".into(),
        description: phi4_description.into(),
        tags: BTreeMap::new(),
        archived: false,
        versions: vec![
            plain_version("1", "2025-02-26T12:00:00Z", phi4_description, false),
            plain_version("2", "2025-05-14T12:00:00Z", phi4_description, false),
        ],
    };
    let mut phi4_defaults = phi4;
    for v in &mut phi4_defaults.versions {
        // Current assets keep only model_specific_defaults as a tag (allow lists moved to system metadata).
        v.tags.insert(
            "model_specific_defaults".into(),
            r#"{"apply_lora": "true", "precision": 16, "learning_rate": 2e-05, "num_train_epochs": 1}"#
                .into(),
        );
    }
    let llama_description = "Llama 2 7B chat (retired from the catalog).";
    let archived = RegistryModel {
        name: "Llama-2-7b-chat".into(),
        description: llama_description.into(),
        tags: BTreeMap::new(),
        archived: true,
        versions: vec![
            plain_version("24", "2024-03-01T12:00:00Z", llama_description, true),
            plain_version("25", "2024-06-01T12:00:00Z", llama_description, true),
        ],
    };
    let phi3 = RegistryModel {
        name: "Phi-3-mini-4k-instruct".into(),
        description: "Phi-3 Mini 4K Instruct".into(),
        tags: BTreeMap::new(),
        archived: false,
        versions: vec![
            phi3_version("13", "2024-09-10T12:00:00Z"),
            phi3_version("14", "2024-11-05T12:00:00Z"),
            phi3_version("15", "2025-01-21T12:00:00Z"),
        ],
    };
    let pipeline = RegistryComponent {
        name: "chat_completion_pipeline".into(),
        description: "Pipeline component for chat completion fine-tuning".into(),
        versions: vec![
            RegistryComponentVersion {
                version: "0.0.74".into(),
                created: ts("2025-04-10T12:00:00Z"),
                archived: false,
                spec: chat_completion_pipeline_spec("0.0.74", false),
            },
            RegistryComponentVersion {
                version: "0.0.82".into(),
                created: ts("2026-07-23T12:00:00Z"),
                archived: false,
                spec: chat_completion_pipeline_spec("0.0.82", true),
            },
        ],
    };
    Registry {
        name: name.into(),
        subscription: REGISTRY_SUBSCRIPTION.into(),
        resource_group: REGISTRY_RESOURCE_GROUP.into(),
        location: location.into(),
        models: vec![phi3, phi4_defaults, archived],
        components: vec![pipeline],
    }
}

/// An input of the component spec.
fn input(kind: &str, default: Option<Value>, extra: &[(&str, Value)]) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(kind));
    m.insert("optional".into(), json!(true));
    if let Some(d) = default {
        m.insert("default".into(), d);
    }
    for (k, v) in extra {
        m.insert((*k).into(), v.clone());
    }
    Value::Object(m)
}

fn int(default: i64, min: Option<i64>) -> Value {
    match min {
        Some(min) => input("integer", Some(json!(default)), &[("min", json!(min))]),
        None => input("integer", Some(json!(default)), &[]),
    }
}

fn num(default: f64) -> Value {
    input("number", Some(json!(default)), &[])
}

fn string(default: &str) -> Value {
    input("string", Some(json!(default)), &[])
}

fn choice(default: &str, values: &[&str]) -> Value {
    input("string", Some(json!(default)), &[("enum", json!(values))])
}

fn flag(default: &str) -> Value {
    choice(default, &["true", "false"])
}

fn asset(kind: &str, mode: &str) -> Value {
    input(kind, None, &[("mode", json!(mode))])
}

/// One inner step of the pipeline component (in the REST node form: `componentId`, `computeId`): a
/// registry command component placed on the compute and
/// instance type that the pipeline's `compute_<stage>` / `instance_type_<stage>` inputs name.
fn step(component: &str, version: &str, stage: &str) -> Value {
    json!({
        "type": "command",
        "componentId": format!("azureml://registries/azureml/components/{component}/versions/{version}"),
        "computeId": format!("${{{{parent.inputs.compute_{stage}}}}}"),
        "resources": {"instance_type": format!("${{{{parent.inputs.instance_type_{stage}}}}}")},
    })
}

/// The `chat_completion_pipeline` component spec as the registry returns it (`componentSpec`), with the
/// inputs of reference §11 (name, type, default, enum, min, optional) and its two outputs.
fn chat_completion_pipeline_spec(version: &str, newest: bool) -> Value {
    let mut inputs: Vec<(&str, Value)> = vec![
        ("instance_type_model_import", string("Standard_d12_v2")),
        ("instance_type_preprocess", string("Standard_d12_v2")),
        ("instance_type_finetune", string("Standard_nc24rs_v3")),
        ("instance_type_model_evaluation", string("Standard_nc24rs_v3")),
        ("shm_size_finetune", string("5g")),
        ("num_nodes_finetune", int(1, Some(1))),
        ("number_of_gpu_to_use_finetuning", int(1, Some(1))),
        ("compute_model_import", string("serverless")),
        ("compute_preprocess", string("serverless")),
        ("compute_finetune", string("serverless")),
        ("compute_model_evaluation", string("serverless")),
        ("huggingface_id", input("string", None, &[])),
        ("pytorch_model_path", asset("custom_model", "rw_mount")),
        ("mlflow_model_path", asset("mlflow_model", "rw_mount")),
        ("task_name", {
            let mut v = choice("ChatCompletion", &["ChatCompletion"]);
            v["optional"] = json!(false);
            v
        }),
        ("batch_size", int(1000, Some(1))),
        ("pad_to_max_length", flag("false")),
        ("max_seq_length", int(-1, None)),
        ("train_file_path", asset("uri_file", "rw_mount")),
        ("validation_file_path", asset("uri_file", "rw_mount")),
        ("test_file_path", asset("uri_file", "rw_mount")),
        ("train_mltable_path", asset("mltable", "rw_mount")),
        ("validation_mltable_path", asset("mltable", "rw_mount")),
        ("test_mltable_path", asset("mltable", "rw_mount")),
        ("apply_lora", flag("false")),
        ("merge_lora_weights", flag("true")),
        ("lora_alpha", int(128, None)),
        ("lora_r", int(8, None)),
        ("lora_dropout", num(0.0)),
        ("num_train_epochs", int(1, Some(1))),
        ("max_steps", int(-1, None)),
        ("per_device_train_batch_size", int(1, Some(1))),
        ("per_device_eval_batch_size", int(1, Some(1))),
        ("auto_find_batch_size", flag("false")),
        ("optim", choice("adamw_torch", &["adamw_torch", "adafactor"])),
        ("learning_rate", num(0.00002)),
        ("warmup_steps", int(0, None)),
        ("weight_decay", num(0.0)),
        ("adam_beta1", num(0.9)),
        ("adam_beta2", num(0.999)),
        ("adam_epsilon", num(1e-8)),
        ("gradient_accumulation_steps", int(1, None)),
        ("eval_accumulation_steps", int(-1, None)),
        (
            "lr_scheduler_type",
            choice(
                "linear",
                &[
                    "linear",
                    "cosine",
                    "cosine_with_restarts",
                    "polynomial",
                    "constant",
                    "constant_with_warmup",
                ],
            ),
        ),
        ("precision", choice("32", &["32", "16"])),
        ("seed", int(42, None)),
        ("enable_full_determinism", flag("false")),
        ("dataloader_num_workers", int(0, None)),
        ("ignore_mismatched_sizes", flag("false")),
        ("max_grad_norm", num(1.0)),
        ("evaluation_strategy", choice("epoch", &["epoch", "steps", "disable"])),
        ("evaluation_steps_interval", num(0.0)),
        ("eval_steps", int(500, None)),
        ("logging_strategy", choice("steps", &["epoch", "steps"])),
        ("logging_steps", int(10, None)),
        ("metric_for_best_model", choice("loss", &["loss", "f1", "exact"])),
        ("resume_from_checkpoint", flag("false")),
        ("save_total_limit", int(-1, None)),
        ("apply_early_stopping", flag("false")),
        ("early_stopping_patience", int(1, None)),
        ("early_stopping_threshold", num(0.0)),
        ("apply_deepspeed", flag("false")),
        ("deepspeed", asset("uri_file", "rw_mount")),
        ("deepspeed_stage", choice("2", &["2", "3"])),
        ("apply_ort", flag("false")),
        ("evaluation_config", asset("uri_file", "ro_mount")),
        ("evaluation_config_params", input("string", None, &[])),
    ];
    if newest {
        inputs.push(("finetune_config_path", asset("uri_file", "ro_mount")));
        inputs.push(("trust_remote_code", flag("false")));
    }
    let inputs: Map<String, Value> = inputs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    json!({
        "$schema": "https://azuremlschemas.azureedge.net/latest/pipelineComponent.schema.json",
        "name": "chat_completion_pipeline",
        "version": version,
        "type": "pipeline",
        "display_name": "Chat Completion Pipeline",
        "description": "Pipeline component for chat completion",
        "is_deterministic": false,
        "inputs": inputs,
        "outputs": {
            "pytorch_model_folder": {"type": "uri_folder", "mode": "rw_mount", "description": "Output dir to save the finetune model and other metadata"},
            "mlflow_model_folder": {"type": "mlflow_model", "mode": "rw_mount", "description": "Output dir to save the finetune model as mlflow model"},
        },
        "jobs": {
            "ft_nlp_common_validation": step("ft_nlp_common_validation", "0.0.80", "model_import"),
            "chat_completion_model_import": step("chat_completion_model_import", "0.0.81", "model_import"),
            "chat_completion_datapreprocess": step("chat_completion_datapreprocess", "0.0.80", "preprocess"),
            "chat_completion_finetune": step("chat_completion_finetune", "0.0.81", "finetune"),
            "ft_nlp_model_converter": step("ft_nlp_model_converter", "0.0.80", "model_import"),
        },
    })
}
