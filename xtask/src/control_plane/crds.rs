//! Installs CustomResourceDefinitions from a directory of YAML files by server-side apply.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::wait::{await_condition, conditions},
};

use super::{Error, Result};

/// Field manager of the applied CRDs.
const FIELD_MANAGER: &str = "azureml-operator-xtask";

/// How long one CRD may take to become `Established`.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);

/// Server-side applies every CustomResourceDefinition in the `*.yaml`/`*.yml` files of `dir`
/// (several documents per file allowed; files in name order) and waits until each is
/// `Established`. Returns the CRD names. A directory without YAML files installs nothing; a
/// missing directory or a document that is not a CRD is an error.
pub async fn install_crds(client: &Client, dir: &Path) -> Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in yaml_files(dir)? {
        for crd in read_crds(&file)? {
            let name = crd
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| Error::InvalidCrd { file: file.clone(), message: "no metadata.name".into() })?
                .to_string();
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd))
                .await
                .map_err(|source| Error::Kube { action: format!("apply CRD {name}"), source })?;
            names.push(name);
        }
    }
    for name in &names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(ESTABLISHED_TIMEOUT, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(Error::WaitCrd { name: name.clone(), message: source.to_string() });
            }
            Err(_) => {
                return Err(Error::WaitCrd {
                    name: name.clone(),
                    message: format!("not Established after {ESTABLISHED_TIMEOUT:?}"),
                });
            }
        }
    }
    Ok(names)
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(Error::io("read the CRD directory", dir))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The CRD documents of one file, as JSON values so that no field is lost on the way.
fn read_crds(file: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(file).map_err(Error::io("read the CRD file", file))?;
    let invalid = |message: String| Error::InvalidCrd { file: file.to_path_buf(), message };
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| invalid(format!("not YAML: {e}")))?;
    // Empty documents (a leading or trailing `---`) carry nothing.
    let docs = docs.into_iter().filter(|d| !d.is_null());
    docs.map(|doc| match doc.get("kind").and_then(|k| k.as_str()) {
        Some("CustomResourceDefinition") => Ok(doc),
        other => Err(invalid(format!("expected kind CustomResourceDefinition, found {other:?}"))),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several documents per file are read; empty documents are skipped.
    #[test]
    fn reads_multi_document_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("crds.yaml");
        let crd = |name: &str| {
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {name}\n"
            )
        };
        std::fs::write(&file, format!("---\n{}---\n{}---\n", crd("a.example.io"), crd("b.example.io")))
            .expect("write");
        let docs = read_crds(&file).expect("read");
        let names: Vec<_> = docs.iter().filter_map(|d| d.pointer("/metadata/name")?.as_str()).collect();
        assert_eq!(names, ["a.example.io", "b.example.io"]);
    }

    /// Anything but a CRD in the directory is refused rather than applied as something else.
    #[test]
    fn refuses_other_kinds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cm.yaml");
        std::fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n").expect("write");
        assert!(matches!(read_crds(&file), Err(Error::InvalidCrd { .. })));
    }

    /// Only YAML files are picked up, in name order; other files are ignored.
    #[test]
    fn lists_yaml_files_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["b.yaml", "a.yml", "README.md"] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let files = yaml_files(dir.path()).expect("list");
        let names: Vec<_> = files.iter().filter_map(|f| f.file_name()?.to_str()).collect();
        assert_eq!(names, ["a.yml", "b.yaml"]);
        assert!(yaml_files(&dir.path().join("missing")).is_err());
    }
}
