//! The pure rules of notebook steps 3 and 5: compute allow lists, parameter precedence, typing each
//! parameter the way the pipeline component declares it, the display name, and the job name.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::pyliteral;
use crate::api::conditions::reasons;
use crate::api::finetunejob::FineTuneJobSpec;
use crate::azure::{ComponentInput, Literal};

/// A problem only the user can fix: a Stalled reason and a message naming what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// VM sizes the notebook refuses when the model publishes no allow list.
pub const UNSUPPORTED_VM_SIZES: [&str; 4] =
    ["standard_nc6", "standard_nc12", "standard_nc24", "standard_nc24r"];

/// Model tag listing the VM sizes fine-tuning is allowed on.
pub const FINETUNE_ALLOW_LIST_TAG: &str = "finetune_compute_allow_list";
/// Model tag listing the VM sizes inference is allowed on.
pub const INFERENCE_ALLOW_LIST_TAG: &str = "inference_compute_allow_list";
/// Model tag with the model's recommended fine-tuning parameters.
pub const MODEL_DEFAULTS_TAG: &str = "model_specific_defaults";

/// Reads an allow-list tag. Absent means "no allow list"; an unreadable one is reported.
pub fn allow_list(tags: &BTreeMap<String, String>, tag: &str) -> Result<Option<Vec<String>>, Problem> {
    match tags.get(tag) {
        None => Ok(None),
        Some(text) if text.trim().is_empty() => Ok(None),
        Some(text) => pyliteral::parse_string_list(text).map(Some).map_err(|e| {
            Problem::new(
                reasons::AZURE_REJECTED,
                format!("the model's {tag} tag is unreadable ({e}); report it to the model's publisher"),
            )
        }),
    }
}

/// Step 3: the compute's VM size must be in the model's allow list (case-insensitive) or, without one,
/// not among the sizes the notebook refuses.
pub fn check_vm_size(vm_size: &str, allow: Option<&[String]>, model: &str) -> Result<(), Problem> {
    let size = vm_size.to_ascii_lowercase();
    match allow {
        Some(list) if !list.iter().any(|a| a.eq_ignore_ascii_case(&size)) => Err(Problem::new(
            reasons::VM_SIZE_NOT_ALLOWED,
            format!(
                "{model} may be fine-tuned only on {}; the compute's VM size is {vm_size}: use a cluster of an allowed size",
                list.join(", ")
            ),
        )),
        None if UNSUPPORTED_VM_SIZES.contains(&size.as_str()) => Err(Problem::new(
            reasons::VM_SIZE_NOT_ALLOWED,
            format!(
                "VM size {vm_size} cannot fine-tune models; use a newer GPU size such as Standard_NC24ads_A100_v4"
            ),
        )),
        _ => Ok(()),
    }
}

/// The operator's defaults: the notebook's values.
pub fn operator_defaults() -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("num_train_epochs".to_owned(), json!(3)),
        ("per_device_train_batch_size".to_owned(), json!(1)),
        ("per_device_eval_batch_size".to_owned(), json!(1)),
        ("learning_rate".to_owned(), json!(5e-6)),
        ("lr_scheduler_type".to_owned(), json!("cosine")),
        ("apply_lora".to_owned(), json!("true")),
        ("apply_deepspeed".to_owned(), json!("true")),
        ("deepspeed_stage".to_owned(), json!("2")),
    ])
}

/// The typed spec fields, by component input name.
pub fn spec_values(spec: &FineTuneJobSpec) -> BTreeMap<String, Value> {
    let t = &spec.training;
    let o = &spec.optimization;
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            out.insert(k.to_owned(), v);
        }
    };
    put("num_train_epochs", t.num_train_epochs.map(|v| json!(v)));
    put("per_device_train_batch_size", t.per_device_train_batch_size.map(|v| json!(v)));
    put("per_device_eval_batch_size", t.per_device_eval_batch_size.map(|v| json!(v)));
    put("learning_rate", t.learning_rate.map(|v| json!(v)));
    put("lr_scheduler_type", t.lr_scheduler_type.map(|v| json!(v.as_str())));
    put("gradient_accumulation_steps", t.gradient_accumulation_steps.map(|v| json!(v)));
    put("max_seq_length", t.max_seq_length.map(|v| json!(v)));
    put("save_total_limit", t.save_total_limit.map(|v| json!(v)));
    put("num_nodes_finetune", t.num_nodes.map(|v| json!(v)));
    put("seed", t.seed.map(|v| json!(v)));
    put("max_steps", t.max_steps.map(|v| json!(v)));
    put("warmup_steps", t.warmup_steps.map(|v| json!(v)));
    put("weight_decay", t.weight_decay.map(|v| json!(v)));
    put("precision", t.precision.map(|p| serde_json::to_value(p).unwrap_or(Value::Null)));
    put("apply_lora", o.lora.map(|v| json!(v)));
    put("apply_deepspeed", o.deepspeed.map(|v| json!(v)));
    put("deepspeed_stage", o.deepspeed_stage.map(|v| json!(v)));
    out
}

/// The merged parameters and where each came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    /// Parameter name → value as written (before typing).
    pub values: BTreeMap<String, Value>,
    /// Keys the model's `model_specific_defaults` tag set (and the user did not override).
    pub from_model: Vec<String>,
    /// Keys the user set (typed fields and `parameters`).
    pub from_user: BTreeSet<String>,
}

/// Precedence: operator defaults < the model's `model_specific_defaults` < the spec. A key in both a typed
/// field and `spec.parameters` is a mistake the user must resolve.
pub fn merge(spec: &FineTuneJobSpec, model_tags: &BTreeMap<String, String>) -> Result<Merged, Problem> {
    let mut values = operator_defaults();
    let mut from_model = Vec::new();
    if let Some(text) = model_tags.get(MODEL_DEFAULTS_TAG) {
        let parsed = pyliteral::parse(text).map_err(|e| {
            Problem::new(
                reasons::AZURE_REJECTED,
                format!("the model's {MODEL_DEFAULTS_TAG} tag is unreadable ({e})"),
            )
        })?;
        if let Value::Object(map) = parsed {
            for (k, v) in map {
                values.insert(k.clone(), v);
                from_model.push(k);
            }
        }
    }
    let typed = spec_values(spec);
    let mut from_user = BTreeSet::new();
    for (k, v) in &spec.parameters {
        if typed.contains_key(k) {
            return Err(Problem::new(
                reasons::INVALID_PARAMETER,
                format!(
                    "spec.parameters.{k} repeats a typed field of spec.training or spec.optimization; set it in one place"
                ),
            ));
        }
        values.insert(k.clone(), v.clone());
        from_user.insert(k.clone());
    }
    for (k, v) in typed {
        values.insert(k.clone(), v);
        from_user.insert(k);
    }
    from_model.retain(|k| !from_user.contains(k));
    from_model.sort();
    Ok(Merged { values, from_model, from_user })
}

/// Inputs the operator binds itself; a user may not set them through parameters.
pub const RESERVED_INPUTS: [&str; 9] = [
    "mlflow_model_path",
    "compute_model_import",
    "compute_preprocess",
    "compute_finetune",
    "compute_model_evaluation",
    "train_file_path",
    "test_file_path",
    "validation_file_path",
    "number_of_gpu_to_use_finetuning",
];

/// Types every merged value as the component declares it. Keys the user set that the component does not
/// declare are errors; keys that only came from defaults (for example the model tag's
/// `learning_rate_min`) are dropped, as the notebook's component would ignore them.
pub fn type_inputs(
    merged: &Merged,
    inputs: &BTreeMap<String, ComponentInput>,
    component: &str,
) -> Result<BTreeMap<String, Literal>, Problem> {
    let mut out = BTreeMap::new();
    for (name, value) in &merged.values {
        let user = merged.from_user.contains(name);
        if user && RESERVED_INPUTS.contains(&name.as_str()) {
            return Err(Problem::new(
                reasons::INVALID_PARAMETER,
                format!(
                    "parameter {name} is set by the operator from spec.model, spec.compute and spec.data; remove it from spec.parameters"
                ),
            ));
        }
        let Some(input) = inputs.get(name) else {
            if user {
                let mut known: Vec<&str> =
                    inputs.keys().map(String::as_str).filter(|k| !RESERVED_INPUTS.contains(k)).collect();
                known.truncate(60);
                return Err(Problem::new(
                    reasons::UNKNOWN_PARAMETER,
                    format!(
                        "{component} has no input named {name}; remove it or use one of: {}",
                        known.join(", ")
                    ),
                ));
            }
            continue;
        };
        out.insert(name.clone(), type_one(name, value, input)?);
    }
    Ok(out)
}

fn type_one(name: &str, value: &Value, input: &ComponentInput) -> Result<Literal, Problem> {
    let bad = |why: String| Problem::new(reasons::INVALID_PARAMETER, format!("parameter {name}: {why}"));
    let declared = input.input_type.to_ascii_lowercase();
    let literal = match declared.as_str() {
        "integer" => {
            let n = match value {
                Value::Number(n) if n.as_i64().is_some() => n.as_i64(),
                Value::Number(n) => n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(|| bad(format!("the component declares an integer, got {value}")))?;
            check_range(n as f64, input).map_err(bad)?;
            Literal::Integer(n)
        }
        "number" => {
            let f = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .ok_or_else(|| bad(format!("the component declares a number, got {value}")))?;
            check_range(f, input).map_err(bad)?;
            Literal::Number(f)
        }
        "boolean" => match value {
            Value::Bool(b) => Literal::Boolean(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Literal::Boolean(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Literal::Boolean(false),
            _ => return Err(bad(format!("the component declares a boolean, got {value}"))),
        },
        "string" => {
            // Numeric-looking and boolean enums ("16", "2", "true") are strings in the component: send the text.
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad(format!("the component declares a string, got {value}"))),
            };
            Literal::String(text)
        }
        other if crate::azure::AssetType::from_declared(other).is_some() => {
            return Err(bad(format!(
                "it is a {other} input; data and models are set with spec.data and spec.model"
            )));
        }
        _ => Literal::String(match value {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }),
    };
    if !input.enum_values.is_empty() {
        let text = literal.to_wire();
        if !input.enum_values.iter().any(|e| e.eq_ignore_ascii_case(&text)) {
            return Err(bad(format!("{text} is not one of {}", input.enum_values.join(", "))));
        }
        // Send the component's own spelling of the enum value.
        if let Some(exact) = input.enum_values.iter().find(|e| e.eq_ignore_ascii_case(&text))
            && let Literal::String(_) = literal
        {
            return Ok(Literal::String(exact.clone()));
        }
    }
    Ok(literal)
}

fn check_range(v: f64, input: &ComponentInput) -> Result<(), String> {
    if let Some(min) = input.min
        && v < min
    {
        return Err(format!("{v} is below the minimum {min}"));
    }
    if let Some(max) = input.max
        && v > max
    {
        return Err(format!("{v} is above the maximum {max}"));
    }
    Ok(())
}

/// Notebook step 5's display name:
/// `<model>-ultrachat-bs<B>-<scheduler>-<ds{stage}|nods>-<lora|nolora>-save_limit<L>-seqlen<S>`, where
/// B = per-device batch × gradient accumulation × GPUs per node × nodes.
pub fn display_name(model: &str, typed: &BTreeMap<String, Literal>, gpus_per_node: i64) -> String {
    let int = |k: &str, default: i64| match typed.get(k) {
        Some(Literal::Integer(i)) => *i,
        Some(other) => other.to_wire().parse().unwrap_or(default),
        None => default,
    };
    let text = |k: &str| typed.get(k).map(Literal::to_wire);
    let flag = |k: &str| text(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let batch = int("per_device_train_batch_size", 1)
        * int("gradient_accumulation_steps", 1)
        * gpus_per_node.max(1)
        * int("num_nodes_finetune", 1);
    let scheduler = text("lr_scheduler_type").unwrap_or_else(|| "linear".to_owned());
    let ds = if flag("apply_deepspeed") {
        format!("ds{}", text("deepspeed_stage").unwrap_or_else(|| "2".into()))
    } else {
        "nods".to_owned()
    };
    let lora = if flag("apply_lora") { "lora" } else { "nolora" };
    format!(
        "{model}-ultrachat-bs{batch}-{scheduler}-{ds}-{lora}-save_limit{}-seqlen{}",
        int("save_total_limit", -1),
        int("max_seq_length", -1)
    )
}

/// The Azure job name: derived from namespace, name and UID, so a crash between submitting and writing
/// status finds the same job instead of submitting a second one. Azure job names allow letters, digits,
/// `-` and `_`, up to 255 characters.
pub fn job_name(namespace: &str, name: &str, uid: &str) -> String {
    let clean =
        |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect()
        };
    let short_uid: String = uid.chars().filter(|c| c.is_ascii_hexdigit()).take(8).collect();
    let mut base = format!("{}-{}", clean(namespace), clean(name));
    base.truncate(255 - 1 - short_uid.len());
    format!("{base}-{short_uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        name: &str,
        t: &str,
        enums: &[&str],
        min: Option<f64>,
        max: Option<f64>,
    ) -> (String, ComponentInput) {
        (
            name.to_owned(),
            ComponentInput {
                name: name.to_owned(),
                input_type: t.to_owned(),
                optional: true,
                default: None,
                enum_values: enums.iter().map(|s| s.to_string()).collect(),
                min,
                max,
                description: None,
            },
        )
    }

    fn component() -> BTreeMap<String, ComponentInput> {
        BTreeMap::from([
            input("num_train_epochs", "integer", &[], Some(1.0), None),
            input("per_device_train_batch_size", "integer", &[], Some(1.0), None),
            input("per_device_eval_batch_size", "integer", &[], Some(1.0), None),
            input("learning_rate", "number", &[], None, None),
            input("lr_scheduler_type", "string", &["linear", "cosine", "constant"], None, None),
            input("apply_lora", "string", &["true", "false"], None, None),
            input("apply_deepspeed", "string", &["true", "false"], None, None),
            input("deepspeed_stage", "string", &["2", "3"], None, None),
            input("precision", "string", &["32", "16"], None, None),
            input("apply_ort", "string", &["true", "false"], None, None),
            input("ignore_mismatched_sizes", "string", &["true", "false"], None, None),
            input("gradient_accumulation_steps", "integer", &[], None, None),
            input("logging_strategy", "string", &["epoch", "steps"], None, None),
            input("logging_steps", "integer", &[], None, None),
            input("save_total_limit", "integer", &[], None, None),
            input("lora_r", "integer", &[], None, None),
            input("train_file_path", "uri_file", &[], None, None),
        ])
    }

    fn spec(extra: Value) -> FineTuneJobSpec {
        let mut base = json!({
            "model": {"name": "Phi-3-mini-4k-instruct"},
            "compute": {"name": "gpu-cluster"},
            "data": {"train": "azureml://datastores/d/paths/t.jsonl", "test": "azureml://datastores/d/paths/s.jsonl"}
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    /// Phi-3's tag as the registry published it (Python literal text).
    fn phi3_tags() -> BTreeMap<String, String> {
        BTreeMap::from([(
            MODEL_DEFAULTS_TAG.to_owned(),
            "{'apply_deepspeed': 'true', 'deepspeed_stage': 2, 'apply_lora': 'true', 'apply_ort': 'false', 'precision': 16, \
             'ignore_mismatched_sizes': 'false', 'num_train_epochs': 1, 'per_device_train_batch_size': 1, \
             'per_device_eval_batch_size': 1, 'gradient_accumulation_steps': 1, 'learning_rate': 5e-06, \
             'learning_rate_min': 5e-07, 'learning_rate_max': 5e-05, 'lr_scheduler_type': 'cosine', \
             'logging_strategy': 'steps', 'logging_steps': 10, 'save_total_limit': 1}"
                .to_owned(),
        )])
    }

    /// Operator defaults < model_specific_defaults < spec.
    #[test]
    fn precedence_is_defaults_then_model_then_spec() {
        let m = merge(&spec(json!({"training": {"numTrainEpochs": 5}})), &phi3_tags()).unwrap();
        assert_eq!(m.values["num_train_epochs"], json!(5), "spec wins");
        assert_eq!(m.values["save_total_limit"], json!(1), "model default applies");
        assert_eq!(m.values["lr_scheduler_type"], json!("cosine"));
        assert!(m.from_model.contains(&"precision".to_owned()));
        assert!(!m.from_model.contains(&"num_train_epochs".to_owned()), "user overrode it");
        let plain = merge(&spec(json!({})), &BTreeMap::new()).unwrap();
        assert_eq!(plain.values["num_train_epochs"], json!(3), "the notebook's default");
        assert!(plain.from_model.is_empty());
    }

    /// Numeric-looking enums from the model tag (precision 16, deepspeed_stage 2) are sent as strings,
    /// and keys the component does not declare (learning_rate_min) are dropped.
    #[test]
    fn model_defaults_are_typed_as_the_component_declares() {
        let m = merge(&spec(json!({})), &phi3_tags()).unwrap();
        let typed = type_inputs(&m, &component(), "chat_completion_pipeline").unwrap();
        assert_eq!(typed["precision"], Literal::String("16".into()));
        assert_eq!(typed["deepspeed_stage"], Literal::String("2".into()));
        assert_eq!(typed["apply_lora"], Literal::String("true".into()));
        assert_eq!(typed["learning_rate"], Literal::Number(5e-6));
        assert_eq!(typed["num_train_epochs"], Literal::Integer(1));
        assert!(!typed.contains_key("learning_rate_min"));
    }

    /// A user parameter the component does not declare stalls with a message naming it.
    #[test]
    fn unknown_user_parameter_is_named() {
        let m = merge(&spec(json!({"parameters": {"lora_rank": 16}})), &BTreeMap::new()).unwrap();
        let e = type_inputs(&m, &component(), "chat_completion_pipeline").unwrap_err();
        assert_eq!(e.reason, reasons::UNKNOWN_PARAMETER);
        assert!(e.message.contains("lora_rank") && e.message.contains("lora_r"), "{}", e.message);
    }

    /// Ill-typed, out-of-range and out-of-enum values stall with InvalidParameter.
    #[test]
    fn ill_typed_parameters_are_named() {
        for (params, needle) in [
            (json!({"lora_r": "eight"}), "lora_r"),
            (json!({"logging_steps": 2.5}), "logging_steps"),
            (json!({"logging_strategy": "hourly"}), "hourly"),
            (json!({"apply_ort": "maybe"}), "apply_ort"),
        ] {
            let m = merge(&spec(json!({"parameters": params})), &BTreeMap::new()).unwrap();
            let e = type_inputs(&m, &component(), "c").unwrap_err();
            assert_eq!(e.reason, reasons::INVALID_PARAMETER, "{needle}");
            assert!(e.message.contains(needle), "{}", e.message);
        }
        let m = merge(&spec(json!({"optimization": {"deepspeedStage": 1}})), &BTreeMap::new()).unwrap();
        let e = type_inputs(&m, &component(), "c").unwrap_err();
        assert!(e.message.contains("deepspeed_stage") && e.message.contains("2, 3"), "{}", e.message);
    }

    /// Inputs the operator binds cannot be overridden, and typed fields cannot be repeated.
    #[test]
    fn reserved_and_repeated_parameters_are_refused() {
        let m = merge(&spec(json!({"parameters": {"train_file_path": "x"}})), &BTreeMap::new()).unwrap();
        assert_eq!(type_inputs(&m, &component(), "c").unwrap_err().reason, reasons::INVALID_PARAMETER);
        let e = merge(&spec(json!({"training": {"seed": 1}, "parameters": {"seed": 2}})), &BTreeMap::new())
            .unwrap_err();
        assert!(e.message.contains("spec.parameters.seed"));
    }

    /// The notebook's display name for its own values on a 1-GPU A100 node.
    #[test]
    fn display_name_matches_the_notebook() {
        let m = merge(&spec(json!({})), &phi3_tags()).unwrap();
        let typed = type_inputs(&m, &component(), "c").unwrap();
        assert_eq!(
            display_name("Phi-3-mini-4k-instruct", &typed, 1),
            "Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora-save_limit1-seqlen-1"
        );
        let m = merge(
            &spec(json!({"training": {"perDeviceTrainBatchSize": 2, "gradientAccumulationSteps": 4}, "optimization": {"deepspeed": false, "lora": false}})),
            &BTreeMap::new(),
        )
        .unwrap();
        let typed = type_inputs(&m, &component(), "c").unwrap();
        assert_eq!(display_name("m", &typed, 8), "m-ultrachat-bs64-cosine-nods-nolora-save_limit-1-seqlen-1");
    }

    /// The allow list is case-insensitive; without one, the notebook's old sizes are refused.
    #[test]
    fn vm_size_rules() {
        let tags = BTreeMap::from([(
            FINETUNE_ALLOW_LIST_TAG.to_owned(),
            "['Standard_NC24ads_A100_v4', 'Standard_ND96asr_v4']".to_owned(),
        )]);
        let list = allow_list(&tags, FINETUNE_ALLOW_LIST_TAG).unwrap().unwrap();
        assert!(check_vm_size("standard_nc24ads_a100_v4", Some(&list), "m").is_ok());
        let e = check_vm_size("Standard_NC6s_v3", Some(&list), "m").unwrap_err();
        assert_eq!(e.reason, reasons::VM_SIZE_NOT_ALLOWED);
        assert!(e.message.contains("Standard_NC24ads_A100_v4"));
        assert!(check_vm_size("Standard_NC6", None, "m").is_err());
        assert!(check_vm_size("Standard_NC6s_v3", None, "m").is_ok());
        assert_eq!(allow_list(&BTreeMap::new(), FINETUNE_ALLOW_LIST_TAG).unwrap(), None);
    }

    /// Same object, same name; another UID (a re-created resource), another name.
    #[test]
    fn job_name_is_deterministic() {
        let a = job_name("ml-team", "phi3.ultrachat", "0a1b2c3d-aaaa-bbbb-cccc-000000000000");
        assert_eq!(a, "ml-team-phi3-ultrachat-0a1b2c3d");
        assert_eq!(a, job_name("ml-team", "phi3.ultrachat", "0a1b2c3d-aaaa-bbbb-cccc-000000000000"));
        assert_ne!(a, job_name("ml-team", "phi3.ultrachat", "ffffffff-aaaa-bbbb-cccc-000000000000"));
        assert!(job_name(&"n".repeat(300), "x", "12345678").len() <= 255);
    }
}
