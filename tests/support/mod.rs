//! Shared harness of the integration tests: one real control plane (etcd + kube-apiserver) per
//! test binary, started on first use with the repository's CRDs installed, and per-test clients.
//!
//! Use it from a test file with `mod support;`. Each `#[tokio::test]` runs on its own runtime, so
//! the control plane's processes are shared but every test makes its own [`client`]. The servers
//! stop when the test binary exits (see `xtask::control_plane`). There is no kube-controller-manager:
//! namespaces are never finalized and owner references are not garbage-collected.
#![allow(dead_code)] // every test binary compiles this module and uses a different part of it

use std::{
    collections::BTreeMap,
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
};

use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Api, Client, api::PostParams};
use tokio::sync::OnceCell;
use xtask::control_plane::{ControlPlane, Options};

/// Label put on every namespace made by [`test_namespace`].
pub const TEST_NAMESPACE_LABEL: &str = "azureml-operator.io/test";

static CLUSTER: OnceCell<ControlPlane> = OnceCell::const_new();

/// The repository root (the root package's directory).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The control plane of this test binary, started (and `<repo>/crds` installed) on first call.
pub async fn cluster() -> &'static ControlPlane {
    CLUSTER
        .get_or_init(|| async {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let cp = ControlPlane::start(Options::default())
                .await
                .unwrap_or_else(|e| panic!("cannot start the local control plane: {e}"));
            let crds = repo_root().join("crds");
            if crds.is_dir() {
                cp.install_crds(&crds)
                    .await
                    .unwrap_or_else(|e| panic!("cannot install {}: {e}", crds.display()));
            }
            cp
        })
        .await
}

/// A new admin client for the calling test's runtime.
pub async fn client() -> Client {
    cluster().await.client().await.unwrap_or_else(|e| panic!("cannot build an admin client: {e}"))
}

/// Creates a namespace named `<prefix>-<n>`, unique within this test binary, and returns its name.
pub async fn test_namespace(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(TEST_NAMESPACE_LABEL.to_string(), "true".to_string())])),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client().await)
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
    name
}
pub mod chart;
pub mod operator;
