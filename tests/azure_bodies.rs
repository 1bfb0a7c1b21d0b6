//! Golden tests: the JSON bodies the client sends, compared field for field with files written
//! from the Azure ML REST reference (tests/testdata/azure/bodies), so a wrong wire name fails.

use std::collections::BTreeMap;

use azureml_operator::azure::{
    AmlComputeSpec, AssetType, AuthMode, JobInput, Literal, ModelVersionSpec, OnlineDeploymentSpec,
    OnlineEndpointSpec, PipelineJobSpec, PipelineSettings, ProbeSettings, RequestSettings, VmPriority,
    compute_body, model_version_body, online_deployment_body, online_endpoint_body, pipeline_job_body,
};
use serde_json::Value;

fn golden(name: &str) -> Value {
    let path = format!("{}/tests/testdata/azure/bodies/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Paths where two JSON values differ (missing, extra or different fields).
fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => diff(&format!("{path}/{k}"), wv, gv, out),
                    None => out.push(format!("{path}/{k}: missing (want {wv})")),
                }
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{path}/{k}: unexpected field {}", g[k]));
            }
        }
        _ if want != got => out.push(format!("{path}: want {want}, got {got}")),
        _ => {}
    }
}

fn assert_golden(name: &str, got: &Value) {
    let mut out = Vec::new();
    diff("", &golden(name), got, &mut out);
    assert!(out.is_empty(), "{name} differs:\n{}\nbody sent:\n{got:#}", out.join("\n"));
}

fn lit(v: Literal) -> JobInput {
    JobInput::Literal { value: v }
}

fn s(v: &str) -> JobInput {
    lit(Literal::String(v.into()))
}

/// The notebook's job: Phi-3-mini v15, chat_completion_pipeline 0.0.82 on gpu-cluster, its
/// defaults merged with the model's `model_specific_defaults`, typed as the component declares.
#[test]
fn pipeline_job_matches_the_sdk_body_for_the_notebook() {
    let compute: BTreeMap<String, String> =
        ["compute_model_import", "compute_preprocess", "compute_finetune", "compute_model_evaluation"]
            .into_iter()
            .map(|k| (k.to_string(), "gpu-cluster".to_string()))
            .collect();
    let mut inputs = BTreeMap::new();
    inputs.insert(
        "mlflow_model_path".to_string(),
        JobInput::Asset {
            asset_type: AssetType::MlflowModel,
            uri: "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15".into(),
            mode: None,
        },
    );
    for (name, file) in [("train_file_path", "train_sft"), ("test_file_path", "test_sft")] {
        inputs.insert(
            name.to_string(),
            JobInput::Asset {
                asset_type: AssetType::UriFile,
                uri: format!("azureml://datastores/workspaceblobstore/paths/ultrachat/{file}.jsonl"),
                mode: None,
            },
        );
    }
    for (k, v) in [
        ("number_of_gpu_to_use_finetuning", lit(Literal::Integer(1))),
        ("apply_lora", s("true")),
        ("apply_deepspeed", lit(Literal::Boolean(true))),
        ("deepspeed_stage", s("2")),
        ("precision", s("16")),
        ("num_train_epochs", lit(Literal::Integer(1))),
        ("per_device_train_batch_size", lit(Literal::Integer(1))),
        ("per_device_eval_batch_size", lit(Literal::Integer(1))),
        ("gradient_accumulation_steps", lit(Literal::Integer(1))),
        ("learning_rate", lit(Literal::Number(5e-6))),
        ("lr_scheduler_type", s("cosine")),
        ("save_total_limit", lit(Literal::Integer(1))),
    ] {
        inputs.insert(k.to_string(), v);
    }
    let spec = PipelineJobSpec {
        experiment_name: "chat_completion_Phi-3-mini-4k-instruct".into(),
        display_name: Some(
            "Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora-save_limit1-seqlen-1".into(),
        ),
        description: None,
        tags: BTreeMap::new(),
        component_id: "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82"
            .into(),
        node_name: "chat_completion_pipeline".into(),
        compute_bindings: compute,
        inputs,
        outputs: vec![PipelineJobSpec::trained_model_output()],
        settings: PipelineSettings::default(),
    };
    assert_golden("pipeline-job-notebook.json", &pipeline_job_body(&spec));
}

#[test]
fn model_version_matches_reference() {
    let spec = ModelVersionSpec {
        model_type: "mlflow_model".into(),
        model_uri: "azureml://jobs/ftj-default-phi3-ultrachat-1a2b3c4d/outputs/trained_model".into(),
        description: Some(
            "Phi-3-mini-4k-instruct fine tuned model for ultrachat 200k chat-completion".into(),
        ),
        tags: BTreeMap::new(),
        properties: BTreeMap::new(),
        job_name: None,
    };
    assert_golden("model-version.json", &model_version_body(&spec));
}

fn endpoint_spec() -> OnlineEndpointSpec {
    OnlineEndpointSpec {
        location: "eastus2".into(),
        auth_mode: AuthMode::Key,
        description: Some(
            "Online endpoint for Phi-3-mini-4k-instruct-ultrachat-200k, fine tuned model for ultrachat-200k-chat-completion"
                .into(),
        ),
        tags: BTreeMap::new(),
        traffic: BTreeMap::new(),
        mirror_traffic: BTreeMap::new(),
    }
}

#[test]
fn endpoint_create_has_empty_traffic() {
    assert_golden("online-endpoint-create.json", &online_endpoint_body(&endpoint_spec()));
}

#[test]
fn endpoint_update_carries_traffic_and_mirror_traffic() {
    let mut spec = endpoint_spec();
    spec.traffic.insert("demo".into(), 100);
    spec.mirror_traffic.insert("shadow".into(), 10);
    assert_golden("online-endpoint-traffic.json", &online_endpoint_body(&spec));
}

#[test]
fn deployment_matches_reference_with_probes_and_request_settings() {
    let spec = OnlineDeploymentSpec {
        location: "eastus2".into(),
        model: "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-azureml-demo/providers/Microsoft.MachineLearningServices/workspaces/ws-azureml-demo/models/Phi-3-mini-4k-instruct-ultrachat-200k/versions/1".into(),
        instance_type: "Standard_NC6s_v3".into(),
        instance_count: 1,
        liveness_probe: Some(ProbeSettings { initial_delay_seconds: Some(600), ..ProbeSettings::default() }),
        readiness_probe: Some(ProbeSettings {
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            timeout_seconds: Some(2),
            failure_threshold: Some(30),
            success_threshold: Some(1),
        }),
        request_settings: Some(RequestSettings {
            request_timeout_ms: Some(90_000),
            max_concurrent_requests_per_instance: Some(1),
        }),
        environment_variables: [("WORKER_COUNT".to_string(), "1".to_string())].into(),
        description: None,
        tags: BTreeMap::new(),
        app_insights_enabled: false,
    };
    assert_golden("online-deployment-demo.json", &online_deployment_body(&spec));
}

#[test]
fn compute_matches_reference() {
    let spec = AmlComputeSpec {
        location: "eastus2".into(),
        vm_size: "Standard_NC24ads_A100_v4".into(),
        vm_priority: VmPriority::Dedicated,
        min_nodes: 0,
        max_nodes: 2,
        idle_seconds_before_scale_down: Some(120),
    };
    assert_golden("compute-amlcompute.json", &compute_body(&spec));
}

/// The diff helper itself must notice a renamed field, or the goldens prove nothing.
#[test]
fn golden_diff_catches_a_wrong_field_name() {
    let mut body = compute_body(&AmlComputeSpec {
        location: "eastus2".into(),
        vm_size: "Standard_NC24ads_A100_v4".into(),
        vm_priority: VmPriority::Dedicated,
        min_nodes: 0,
        max_nodes: 2,
        idle_seconds_before_scale_down: Some(120),
    });
    let props = body["properties"]["properties"].as_object_mut().expect("object");
    let v = props.remove("vmSize").expect("vmSize");
    props.insert("vmsize".into(), v);
    let mut out = Vec::new();
    diff("", &golden("compute-amlcompute.json"), &body, &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
}
