//! The local control plane is a real Kubernetes API server: objects persist in etcd, RBAC is
//! enforced for ServiceAccount tokens, CRDs are served, and the kubeconfig works for kubectl.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams},
};
use serde_json::json;
use xtask::control_plane::{KUBERNETES_VERSION, install_crds, readyz};

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta { name: Some(name.to_string()), ..Default::default() }
}

/// Objects written through the API server are stored and read back.
#[tokio::test]
async fn a_namespace_and_a_configmap_round_trip() {
    let ns = support::test_namespace("roundtrip").await;
    let client = support::client().await;
    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.expect("get namespace");
    assert_eq!(namespace.metadata.name.as_deref(), Some(ns.as_str()));

    let configmaps: Api<ConfigMap> = Api::namespaced(client, &ns);
    let data = BTreeMap::from([("model".to_string(), "Phi-3-mini-4k-instruct".to_string())]);
    let configmap = ConfigMap { metadata: meta("settings"), data: Some(data.clone()), ..Default::default() };
    configmaps.create(&PostParams::default(), &configmap).await.expect("create configmap");
    let read = configmaps.get("settings").await.expect("get configmap");
    assert_eq!(read.data, Some(data));
    assert!(read.metadata.uid.is_some(), "the server assigned a uid");
}

/// RBAC is on: a ServiceAccount token minted by TokenRequest authenticates as that account, and
/// without any binding it may not list Secrets, while the admin may.
#[tokio::test]
async fn rbac_denies_a_service_account_without_bindings() {
    let ns = support::test_namespace("rbac").await;
    let cluster = support::cluster().await;
    let admin = support::client().await;
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &ServiceAccount { metadata: meta("nobody"), ..Default::default() })
        .await
        .expect("create serviceaccount");

    let as_nobody = cluster.service_account_client(&ns, "nobody").await.expect("serviceaccount client");
    let denied = Api::<Secret>::namespaced(as_nobody, &ns).list(&ListParams::default()).await;
    match denied {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            let user = format!("system:serviceaccount:{ns}:nobody");
            assert!(status.message.contains(&user), "denied as the serviceaccount: {}", status.message);
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }

    Api::<Secret>::namespaced(admin, &ns).list(&ListParams::default()).await.expect("admin lists secrets");
}

/// The API server reports ready, and it is the pinned Kubernetes version.
#[tokio::test]
async fn the_api_server_is_ready_and_pinned() {
    let client = support::client().await;
    let readyz = readyz(&client).await.expect("/readyz");
    assert_eq!(readyz.trim(), "ok");
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.git_version, KUBERNETES_VERSION);
}

/// A CRD applied from a directory becomes Established and its custom resources can be created.
#[tokio::test]
async fn a_crd_from_a_directory_is_established_and_serves_resources() {
    let client = support::client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.azureml-operator.io
spec:
  group: test.azureml-operator.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer, minimum: 1}
"#;
    std::fs::write(dir.path().join("widgets.yaml"), crd).expect("write CRD");
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("write notes");

    let names = install_crds(&client, dir.path()).await.expect("install CRDs");
    assert_eq!(names, ["widgets.test.azureml-operator.io"]);
    let applied = Api::<CustomResourceDefinition>::all(client.clone())
        .get("widgets.test.azureml-operator.io")
        .await
        .expect("get CRD");
    let conditions = applied.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"), "{conditions:?}");

    let ns = support::test_namespace("crd").await;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("test.azureml-operator.io", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    let widget = DynamicObject::new("w1", &resource).data(json!({ "spec": { "size": 3 } }));
    widgets.create(&PostParams::default(), &widget).await.expect("create widget");
    let read = widgets.get("w1").await.expect("get widget");
    assert_eq!(read.data["spec"]["size"], 3);

    // The schema is enforced: the API server validates custom resources against the CRD.
    let invalid = DynamicObject::new("w2", &resource).data(json!({ "spec": { "size": 0 } }));
    let rejected = widgets.create(&PostParams::default(), &invalid).await;
    assert!(matches!(rejected, Err(kube::Error::Api(ref s)) if s.code == 422), "{rejected:?}");
}

/// An empty CRD directory installs nothing (the repository's crds/ may be empty).
#[tokio::test]
async fn an_empty_crd_directory_installs_nothing() {
    let client = support::client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(install_crds(&client, dir.path()).await.expect("install").is_empty());
}

/// The kubeconfig file works for the pinned kubectl.
#[tokio::test]
async fn kubectl_uses_the_kubeconfig() {
    let ns = support::test_namespace("kubectl").await;
    let cluster = support::cluster().await;
    let mut kubectl = cluster.kubectl();
    kubectl.args(["get", "namespace", &ns, "-o", "jsonpath={.metadata.name}"]);
    let output = tokio::process::Command::from(kubectl).output().await.expect("run kubectl");
    assert!(output.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), ns);
}
