//! Runs the chart's Argo CD health script (`charts/azureml-operator/argocd/health.lua`) the way Argo
//! CD does, with the object as the global `obj` in a Lua 5.1, against the status shapes the
//! controllers write (`tests/testdata/argocd/*.yaml`), and checks that those fixtures are objects
//! the real API server accepts under the CRDs.
//!
//! Each fixture names the verdict it must get on a `# expect: <status>` line.
#![forbid(unsafe_code)]

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
};

use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective},
};
use mlua::{Lua, LuaSerdeExt, Table, serde::SerializeOptions};
use serde_json::{Value, json};

/// Argo CD's verdict on one object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    status: String,
    message: String,
}

fn script_path() -> PathBuf {
    support::repo_root().join("charts/azureml-operator/argocd/health.lua")
}

fn fixtures_dir() -> PathBuf {
    support::repo_root().join("tests/testdata/argocd")
}

fn script() -> String {
    fs::read_to_string(script_path()).expect("read health.lua")
}

/// Evaluates the health script on `obj` in a fresh interpreter, as Argo CD does per object.
fn health(obj: &Value) -> Verdict {
    let lua = Lua::new();
    // JSON null must arrive as nil (as in Argo CD), not as mlua's null sentinel.
    let options = SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, options).expect("convert the object to Lua");
    lua.globals().set("obj", value).expect("set obj");
    let hs: Table = lua
        .load(script())
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("health.lua failed on {}: {e}", obj["metadata"]["name"]));
    Verdict {
        status: hs.get("status").expect("hs.status is a string"),
        message: hs.get("message").expect("hs.message is a string"),
    }
}

/// The fixtures: (file name, object, expected status from its `# expect:` line).
fn fixtures() -> Vec<(String, Value, String)> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = fs::read_dir(fixtures_dir())
        .expect("read tests/testdata/argocd")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = fs::read_to_string(&path).expect("read fixture");
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect: <status>` line", path.display()))
            .trim()
            .to_string();
        let obj: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
        out.push((file_name(&path), obj, expected));
    }
    out
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn fixture(name: &str) -> Value {
    fixtures()
        .into_iter()
        .find(|(file, ..)| file == name)
        .map(|(_, obj, _)| obj)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

/// Every fixture gets the verdict it names; all mismatches are reported at once.
#[test]
fn every_fixture_gets_its_expected_verdict() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 12, "expected the full fixture set, found {}", fixtures.len());
    let mut kinds: Vec<String> =
        fixtures.iter().map(|(_, obj, _)| obj["kind"].as_str().unwrap_or_default().to_string()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, ["FineTuneJob", "ModelRegistration", "OnlineEndpoint", "Workspace"]);

    let mismatches: Vec<String> = fixtures
        .iter()
        .filter_map(|(name, obj, expected)| {
            let got = health(obj);
            (got.status != *expected).then(|| format!("{name}: expected {expected}, got {got:?}"))
        })
        .collect();
    assert!(mismatches.is_empty(), "wrong verdicts:\n{}", mismatches.join("\n"));
}

/// Argo CD understands only its own status names; an empty message is useless in the UI.
#[test]
fn verdicts_use_argo_statuses_and_always_say_why() {
    for (name, obj, _) in fixtures() {
        let got = health(&obj);
        assert!(
            ["Healthy", "Progressing", "Degraded"].contains(&got.status.as_str()),
            "{name}: unexpected status {got:?}"
        );
        assert!(!got.message.is_empty(), "{name}: empty message");
    }
}

/// A Degraded verdict from Stalled shows the operator's message, which says what to do.
#[test]
fn degraded_shows_the_stalled_message() {
    for name in [
        "workspace-credential-invalid.yaml",
        "finetunejob-failed.yaml",
        "finetunejob-model-archived.yaml",
        "modelregistration-source-failed.yaml",
        "onlineendpoint-smoke-test-failed.yaml",
    ] {
        let obj = fixture(name);
        let got = health(&obj);
        assert_eq!(got.status, "Degraded", "{name}");
        assert_eq!(got.message, condition(&obj, "Stalled")["message"], "{name}");
    }
}

/// Healthy shows the Ready message; Progressing shows what is in flight.
#[test]
fn messages_come_from_the_conditions() {
    let ready = fixture("onlineendpoint-serving.yaml");
    assert_eq!(health(&ready).message, condition(&ready, "Ready")["message"]);
    let running = fixture("finetunejob-running.yaml");
    assert_eq!(health(&running).message, condition(&running, "Reconciling")["message"]);
    let stale = fixture("workspace-spec-changed.yaml");
    assert_eq!(health(&stale).message, "Waiting for the operator to observe generation 2");
}

/// A Canceled or Failed FineTuneJob is Degraded even when no Stalled condition says so, and the
/// message names the phase.
#[test]
fn finished_fine_tune_job_phases_are_degraded() {
    for phase in ["Failed", "Canceled"] {
        let mut obj = fixture("finetunejob-running.yaml");
        obj["status"]["phase"] = json!(phase);
        let got = health(&obj);
        assert_eq!(got.status, "Degraded", "{phase}");
        assert!(got.message.contains(phase), "{phase}: {got:?}");
    }
    // The other phases leave the verdict to the conditions.
    for phase in ["Pending", "Validating", "Submitted", "Running"] {
        let mut obj = fixture("finetunejob-running.yaml");
        obj["status"]["phase"] = json!(phase);
        assert_eq!(health(&obj).status, "Progressing", "{phase}");
    }
}

/// Ready=True proves nothing about a spec the operator has not seen: without an observedGeneration
/// (on the condition or in status) the object is still Progressing, and a matching top-level
/// observedGeneration is accepted when the condition lacks one.
#[test]
fn ready_needs_a_matching_observed_generation() {
    let mut obj = fixture("workspace-connected.yaml");
    for c in obj["status"]["conditions"].as_array_mut().expect("conditions") {
        c.as_object_mut().expect("condition").remove("observedGeneration");
    }
    assert_eq!(health(&obj).status, "Progressing");
    obj["status"]["observedGeneration"] = json!(2);
    assert_eq!(health(&obj).status, "Healthy");
    obj["status"]["observedGeneration"] = json!(1);
    assert_eq!(health(&obj).status, "Progressing");
}

/// Ready=False with neither Reconciling nor Stalled set (a shape the operator never writes, but a
/// hand-edited status could) is not mistaken for health.
#[test]
fn ready_false_alone_is_progressing() {
    let mut obj = fixture("workspace-connected.yaml");
    obj["status"]["conditions"] = json!([{
        "type": "Ready", "status": "False", "reason": "Progressing", "message": "",
        "observedGeneration": 2, "lastTransitionTime": "2026-11-22T10:15:42Z"
    }]);
    let got = health(&obj);
    assert_eq!(got.status, "Progressing");
    assert!(!got.message.is_empty());
}

/// The README's argocd-cm snippet, parsed as YAML (anchors resolved), gives all four kinds exactly
/// this script, so copying it installs what these tests check.
#[test]
fn readme_snippet_installs_the_script_for_every_kind() {
    let readme = fs::read_to_string(support::repo_root().join("charts/azureml-operator/README.md"))
        .expect("read the chart README");
    let snippet = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("name: argocd-cm"))
        .expect("README.md has a ```yaml block with the argocd-cm ConfigMap");
    let config_map: Value = serde_saphyr::from_str(snippet).expect("the snippet is valid YAML");
    let script = script();
    for kind in ["Workspace", "FineTuneJob", "ModelRegistration", "OnlineEndpoint"] {
        let key = format!("resource.customizations.health.azureml-operator.io_{kind}");
        assert_eq!(
            config_map["data"][&key].as_str(),
            Some(script.as_str()),
            "{key} in README.md differs from health.lua"
        );
    }
}

/// The fixtures are real objects: the API server accepts their spec and status under the CRDs with
/// strict field validation, so no field name in them is made up.
#[tokio::test]
async fn fixtures_are_accepted_by_the_crds() {
    let client = support::client().await;
    let namespace = support::test_namespace("argocd-fixtures").await;
    // Strict: an unknown field is an error, where the default would silently prune it.
    let apply =
        PatchParams { field_validation: Some(ValidationDirective::Strict), ..PatchParams::apply("fixtures") };
    let merge = PatchParams { field_validation: Some(ValidationDirective::Strict), ..PatchParams::default() };
    for (name, obj, _) in fixtures() {
        let kind = obj["kind"].as_str().expect("kind");
        let gvk = GroupVersionKind::gvk("azureml-operator.io", "v1alpha1", kind);
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &ApiResource::from_gvk(&gvk));
        // A fresh object: only what a user writes (name, finalizers, spec).
        let object_name = file_name(Path::new(&name)).trim_end_matches(".yaml").to_string();
        let desired = json!({
            "apiVersion": obj["apiVersion"], "kind": kind,
            "metadata": {"name": object_name, "labels": {"fixture": "true"}},
            "spec": obj["spec"],
        });
        api.patch(&object_name, &apply, &Patch::Apply(&desired))
            .await
            .unwrap_or_else(|e| panic!("{name}: spec rejected: {e}"));
        if obj.get("status").is_some() {
            let status = json!({"status": obj["status"]});
            api.patch_status(&object_name, &merge, &Patch::Merge(&status))
                .await
                .unwrap_or_else(|e| panic!("{name}: status rejected: {e}"));
            let stored = api.get(&object_name).await.expect("read back");
            assert_eq!(stored.data["status"], obj["status"], "{name}: status was pruned or changed");
        }
    }
}
