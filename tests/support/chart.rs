//! The Helm chart in tests: the pinned helm binary, `helm template` as parsed documents, and applying
//! rendered documents to the test control plane.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective};
use kube::discovery::{self, Scope};
use serde_json::Value;

/// The chart's directory in the repository.
pub fn chart_dir() -> PathBuf {
    super::repo_root().join("charts/azureml-operator")
}

/// The pinned helm binary, built into the cache on first use by `hack/helm/build.sh`.
pub fn helm() -> &'static PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = super::repo_root().join("hack/helm/build.sh");
        let out = Command::new("bash").arg(&script).output().expect("run hack/helm/build.sh");
        assert!(out.status.success(), "hack/helm/build.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(path.is_file(), "hack/helm/build.sh printed {}, which is not a file", path.display());
        path
    })
}

/// Runs helm with `args`.
pub fn run_helm(args: &[&str]) -> Output {
    Command::new(helm()).args(args).output().expect("run helm")
}

/// `--set` arguments for helm.
pub fn set_args(sets: &[&str]) -> Vec<String> {
    sets.iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect()
}

/// `helm template` of the chart as release `release` in `namespace`: the documents, or helm's error.
pub fn try_template(release: &str, namespace: &str, sets: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart_dir();
    let mut args = vec!["template", release, chart.to_str().expect("utf-8 path"), "--namespace", namespace];
    let sets = set_args(sets);
    args.extend(sets.iter().map(String::as_str));
    let out = run_helm(&args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout).expect("helm template output is YAML");
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// [`try_template`] that fails the test on a helm error.
pub fn template(release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    try_template(release, namespace, sets).unwrap_or_else(|e| panic!("helm template {sets:?} failed:\n{e}"))
}

/// Applies every document with server-side apply (as `manager`) and strict field validation, so a
/// misspelt field fails.
pub async fn apply_all(client: &Client, docs: &[Value], manager: &str) {
    let params = PatchParams {
        field_validation: Some(ValidationDirective::Strict),
        ..PatchParams::apply(manager).force()
    };
    for doc in docs {
        let api_version = doc["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().expect("kind"));
        let (resource, caps) = discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("the API server does not serve {gvk:?}: {e}"));
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                doc["metadata"]["namespace"].as_str().expect("namespaced document without a namespace"),
                &resource,
            ),
        };
        let name = doc["metadata"]["name"].as_str().expect("name");
        api.patch(name, &params, &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("applying {} {name} failed: {e}", gvk.kind));
    }
}
