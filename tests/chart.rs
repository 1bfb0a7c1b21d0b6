//! Tests of the Helm chart `charts/azureml-operator`: its CRDs equal the generated ones, `helm lint`
//! and `helm template` are clean in every supported mode and render what the values say, the
//! rendered manifests are accepted by a real API server (strict field validation), and the
//! ServiceAccount they create can do what the operator needs and nothing more.
//!
//! helm is built from the pinned module in `hack/helm` by `hack/helm/build.sh` into the shared
//! cache on first use (a few minutes once per version).
#![forbid(unsafe_code)]

mod support;

use support::chart::{apply_all, chart_dir, run_helm, set_args, template, try_template};

use std::{collections::BTreeMap, fs, path::PathBuf};

use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    coordination::v1::Lease,
    core::v1::{ConfigMap, Namespace, Secret},
};
use kube::{
    Api, Client, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams,
    },
};
use serde_json::{Value, json};

/// The operator's kinds and their plurals.
const KINDS: [(&str, &str); 4] = [
    ("Workspace", "workspaces"),
    ("FineTuneJob", "finetunejobs"),
    ("ModelRegistration", "modelregistrations"),
    ("OnlineEndpoint", "onlineendpoints"),
];

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> =
        docs.iter().map(|d| d["kind"].as_str().unwrap_or_default().to_string()).collect();
    kinds.sort();
    kinds
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    match find(docs, kind).as_slice() {
        [doc] => doc,
        other => panic!("expected one {kind}, found {}", other.len()),
    }
}

fn container(docs: &[Value]) -> &Value {
    &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// The value modes the chart supports, by name: each must lint and render cleanly.
const MODES: [(&str, &[&str]); 5] = [
    ("default", &[]),
    ("namespaced", &["watchNamespace=team-a"]),
    ("two replicas", &["replicas=2"]),
    ("service monitor", &["metrics.serviceMonitor.enabled=true"]),
    ("workload identity", &["azure.workloadIdentity.clientId=11111111-2222-3333-4444-555555555555"]),
];

/// The chart installs the CRDs from its own crds/; they must be the generated ones, byte for byte.
#[test]
fn chart_crds_equal_the_generated_crds() {
    let list = |dir: PathBuf| -> BTreeMap<String, String> {
        fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                let name = p.file_name().expect("file name").to_string_lossy().into_owned();
                (name, fs::read_to_string(&p).expect("read CRD"))
            })
            .collect()
    };
    let generated = list(support::repo_root().join("crds"));
    let chart = list(chart_dir().join("crds"));
    assert_eq!(generated.len(), 4, "expected four generated CRDs");
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "charts/azureml-operator/crds/ and crds/ hold different files; copy crds/*.yaml into the chart"
    );
    for (name, text) in &generated {
        assert!(
            chart[name] == *text,
            "charts/azureml-operator/crds/{name} differs from crds/{name}; copy crds/*.yaml into the chart"
        );
    }
}

/// `helm lint --strict` (warnings fail too) passes in every supported mode.
#[test]
fn helm_lint_is_clean_in_every_mode() {
    let chart = chart_dir();
    for (mode, sets) in MODES {
        let mut args = vec!["lint", "--strict", chart.to_str().expect("utf-8 path")];
        let sets = set_args(sets);
        args.extend(sets.iter().map(String::as_str));
        let out = run_helm(&args);
        assert!(
            out.status.success(),
            "helm lint failed in mode {mode}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Default values: cluster-wide RBAC, leader election in the release namespace, a hardened pod
/// with downward-API identity, probes on the health endpoints, no PDB and no ServiceMonitor.
#[test]
fn default_render_is_a_hardened_cluster_wide_operator() {
    let docs = template("aml", "ops", &[]);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    for doc in &docs {
        let cluster_scoped =
            ["ClusterRole", "ClusterRoleBinding"].contains(&doc["kind"].as_str().unwrap_or_default());
        if !cluster_scoped {
            assert_eq!(doc["metadata"]["namespace"], "ops", "{} in the release namespace", doc["kind"]);
        }
    }

    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "aml-azureml-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");

    let c = container(&docs);
    assert_eq!(c["image"], "ghcr.io/azureml-operator/azureml-operator:0.1.0");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["resources"]["requests"], json!({"cpu": "50m", "memory": "64Mi"}));
    assert_eq!(c["resources"]["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("env name"), &e["valueFrom"]["fieldRef"]["fieldPath"]))
        .collect();
    assert_eq!(env["POD_NAME"], "metadata.name");
    assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");

    let args = args(&docs);
    for expected in [
        "--metrics-addr=0.0.0.0:8080",
        "--log-format=json",
        "--leader-election",
        "--lease-namespace=ops",
        "--lease-name=aml-azureml-operator",
    ] {
        assert!(args.contains(&expected.to_string()), "missing {expected} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--namespace")), "all namespaces by default: {args:?}");

    // Leases only in the release namespace, and get/patch only on the operator's own Lease.
    let lease_role = one(&docs, "Role");
    assert_eq!(lease_role["metadata"]["namespace"], "ops");
    assert!(
        lease_role["rules"].as_array().expect("rules").iter().all(|r| r["resources"] == json!(["leases"]))
    );
    assert!(
        lease_role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r["resourceNames"] == json!(["aml-azureml-operator"])
                && r["verbs"] == json!(["get", "patch"]))
    );
    // The operator never deletes anything.
    let cluster_role = one(&docs, "ClusterRole");
    for rule in cluster_role["rules"].as_array().expect("rules") {
        let verbs = rule["verbs"].as_array().expect("verbs");
        assert!(!verbs.iter().any(|v| v == "delete" || v == "deletecollection" || v == "*"), "{rule}");
    }
}

/// watchNamespace turns the operator's ClusterRole into a Role (and binding) in that namespace,
/// and passes the namespace to the operator.
#[test]
fn namespaced_mode_uses_roles_in_the_watched_namespace() {
    let docs = template("aml", "ops", &["watchNamespace=team-a"]);
    assert!(find(&docs, "ClusterRole").is_empty() && find(&docs, "ClusterRoleBinding").is_empty());
    let roles = find(&docs, "Role");
    let operator_role = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "team-a")
        .expect("a Role in the watched namespace");
    assert!(
        operator_role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r["apiGroups"] == json!(["azureml-operator.io"]))
    );
    assert!(
        roles.iter().any(|r| r["metadata"]["namespace"] == "ops"),
        "the lease Role stays in the release namespace"
    );
    let binding = find(&docs, "RoleBinding")
        .into_iter()
        .find(|b| b["metadata"]["namespace"] == "team-a")
        .expect("a RoleBinding in the watched namespace");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "aml-azureml-operator", "namespace": "ops"})
    );
    assert!(args(&docs).contains(&"--namespace=team-a".to_string()));
}

/// Two replicas get a PodDisruptionBudget and a readiness probe a standby can pass; one replica
/// gets no PDB (it would only block drains).
#[test]
fn two_replicas_get_a_pdb() {
    let docs = template("aml", "ops", &["replicas=2"]);
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        one(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(container(&docs)["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert!(find(&template("aml", "ops", &[]), "PodDisruptionBudget").is_empty());
    assert!(
        find(
            &template("aml", "ops", &["replicas=2", "podDisruptionBudget.enabled=false"]),
            "PodDisruptionBudget"
        )
        .is_empty()
    );
}

/// The ServiceMonitor selects the metrics Service's port, only when enabled.
#[test]
fn service_monitor_scrapes_the_metrics_service() {
    let docs = template(
        "aml",
        "ops",
        &["metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"],
    );
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    let service = one(&docs, "Service");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().expect("selector") {
        assert_eq!(&service["metadata"]["labels"][k], v, "the ServiceMonitor selects the Service by {k}");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
}

/// A workload identity client id annotates the ServiceAccount and labels the pod for the webhook.
#[test]
fn workload_identity_annotates_and_labels() {
    let id = "11111111-2222-3333-4444-555555555555";
    let docs = template("aml", "ops", &[&format!("azure.workloadIdentity.clientId={id}")]);
    assert_eq!(
        one(&docs, "ServiceAccount")["metadata"]["annotations"]["azure.workload.identity/client-id"],
        id
    );
    let labels = &one(&docs, "Deployment")["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["azure.workload.identity/use"], "true");
    // Without a client id there is neither, so pods outside AKS are not mutated.
    let plain = template("aml", "ops", &[]);
    assert!(one(&plain, "ServiceAccount")["metadata"]["annotations"].is_null());
    assert!(
        one(&plain, "Deployment")["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"]
            .is_null()
    );
}

/// Values that would break the operator are refused at render time, with a message.
#[test]
fn bad_values_are_refused() {
    let refused = |sets: &[&str], needle: &str| {
        let err = try_template("aml", "ops", sets).err().unwrap_or_else(|| panic!("{sets:?} rendered"));
        assert!(err.contains(needle), "{sets:?}: error does not mention {needle}:\n{err}");
    };
    refused(&["replicas=2", "leaderElection.enabled=false"], "requires leaderElection.enabled");
    refused(&["logFormat=xml"], "logFormat");
    refused(&["watchNamespace=Not_A_Namespace"], "watchNamespace");
    refused(&["azure.workloadIdentity.clientId=not-a-guid"], "clientId");
    refused(&["replica=2"], "replica");
    refused(
        &["metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"],
        "requires metrics.service.enabled",
    );
}

/// Asks the API server whether the client's user may do `verb` on `resource`.
async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_string()),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview");
    answer.status.is_some_and(|s| s.allowed)
}

/// Asserts that `result` is the API server's 403 Forbidden (not, say, a 404 that would pass for
/// the wrong reason).
fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn workspace(name: &str) -> Value {
    json!({
        "apiVersion": "azureml-operator.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {
            "subscriptionId": "00000000-0000-0000-0000-000000000000",
            "resourceGroup": "ml-rg",
            "workspaceName": "ml-workspace",
            "cloud": "AzurePublic",
            "credential": {"type": "WorkloadIdentity"}
        }
    })
}

fn workspaces(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("azureml-operator.io", "v1alpha1", "Workspace");
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk))
}

/// Cluster-wide mode on the real API server: the chart applies, and its ServiceAccount can do each
/// thing the operator does (shown by doing it) and is refused what it must not do.
#[tokio::test]
async fn cluster_mode_rbac_allows_the_operator_and_nothing_more() {
    let admin = support::client().await;
    let ns = support::test_namespace("chart-cluster").await;
    let users = support::test_namespace("chart-users").await;
    apply_all(&admin, &template("aml-cluster", &ns, &[]), "chart-test").await;
    let sa = "aml-cluster-azureml-operator";
    let operator =
        support::cluster().await.service_account_client(&ns, sa).await.expect("ServiceAccount client");

    // Watch the four kinds everywhere.
    for (kind, plural) in KINDS {
        let gvk = GroupVersionKind::gvk("azureml-operator.io", "v1alpha1", kind);
        Api::<DynamicObject>::all_with(operator.clone(), &ApiResource::from_gvk_with_plural(&gvk, plural))
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list {plural} cluster-wide: {e}"));
        for sub in ["", "/status"] {
            assert!(
                can(&operator, "patch", "azureml-operator.io", &format!("{plural}{sub}"), Some(&users), None)
                    .await,
                "patch {plural}{sub}"
            );
        }
        assert!(
            can(
                &operator,
                "update",
                "azureml-operator.io",
                &format!("{plural}/finalizers"),
                Some(&users),
                None
            )
            .await
        );
        for verb in ["create", "delete"] {
            assert!(
                !can(&operator, verb, "azureml-operator.io", plural, Some(&users), None).await,
                "{verb} {plural}"
            );
        }
    }

    // A user's Workspace: the operator adds its finalizer and writes status.
    workspaces(&admin, &users)
        .create(&PostParams::default(), &serde_json::from_value(workspace("default")).expect("workspace"))
        .await
        .expect("create a Workspace as admin");
    let as_operator = workspaces(&operator, &users);
    as_operator
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["azureml-operator.io/cleanup"]}})),
        )
        .await
        .expect("the operator adds its finalizer");
    let status = json!({
        "apiVersion": "azureml-operator.io/v1alpha1", "kind": "Workspace",
        "status": {"conditions": [{
            "type": "Reconciling", "status": "True", "reason": "FirstObserved",
            "message": "The operator has seen this resource and is starting work.",
            "observedGeneration": 1, "lastTransitionTime": "2026-11-22T10:15:42Z"
        }]}
    });
    as_operator
        .patch_status("default", &PatchParams::apply("azureml-operator").force(), &Patch::Apply(&status))
        .await
        .expect("the operator applies status");
    assert_forbidden(
        as_operator.delete("default", &DeleteParams::default()).await,
        "delete a user's Workspace",
    );

    // An Event about it.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(operator.clone(), &users);
    let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "default.chart-test"},
        "eventTime": "2026-11-22T10:15:42.000000Z",
        "reportingController": "azureml-operator.io/operator",
        "reportingInstance": "aml-cluster-azureml-operator-0",
        "action": "Reconcile", "reason": "FirstObserved", "type": "Normal",
        "regarding": {"apiVersion": "azureml-operator.io/v1alpha1", "kind": "Workspace", "name": "default", "namespace": users}
    }))
    .expect("event");
    events.create(&PostParams::default(), &event).await.expect("the operator creates an Event");

    // Secrets: read credentials, write the endpoint keys Secret, never delete.
    let secrets = Api::<Secret>::namespaced(operator.clone(), &users);
    let keys = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat-ft-ep-keys"}, "stringData": {"scoringUri": "https://x/score"}});
    secrets
        .patch("chat-ft-ep-keys", &PatchParams::apply("azureml-operator"), &Patch::Apply(&keys))
        .await
        .expect("apply the keys Secret");
    secrets.get("chat-ft-ep-keys").await.expect("read a Secret");
    assert_forbidden(secrets.delete("chat-ft-ep-keys", &DeleteParams::default()).await, "delete a Secret");

    // Its own Lease in the release namespace, and no other.
    let leases = Api::<Lease>::namespaced(operator.clone(), &ns);
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": sa}, "spec": {"holderIdentity": "pod-0"}}))
            .expect("lease");
    leases.create(&PostParams::default(), &lease).await.expect("create the Lease");
    leases.get(sa).await.expect("get the Lease");
    leases
        .patch(sa, &PatchParams::default(), &Patch::Merge(json!({"spec": {"holderIdentity": "pod-1"}})))
        .await
        .expect("patch the Lease");
    assert_forbidden(leases.get("kube-controller-manager").await, "get another component's Lease");
    assert!(
        !can(&operator, "get", "coordination.k8s.io", "leases", Some(&users), Some(sa)).await,
        "Leases elsewhere"
    );

    // Nothing else.
    assert_forbidden(
        Api::<ConfigMap>::all(operator.clone()).list(&ListParams::default()).await,
        "list ConfigMaps",
    );
    assert_forbidden(
        Api::<Namespace>::all(operator.clone()).delete(&users, &DeleteParams::default()).await,
        "delete a namespace",
    );
    for (verb, group, resource) in [
        ("list", "", "pods"),
        ("create", "", "pods"),
        ("update", "apps", "deployments"),
        ("create", "rbac.authorization.k8s.io", "rolebindings"),
        ("escalate", "rbac.authorization.k8s.io", "clusterroles"),
        ("create", "", "serviceaccounts/token"),
        ("update", "apiextensions.k8s.io", "customresourcedefinitions"),
        ("delete", "events.k8s.io", "events"),
        ("create", "", "events"),
    ] {
        assert!(
            !can(&operator, verb, group, resource, Some(&users), None).await,
            "{verb} {group}/{resource}"
        );
    }
}

/// Namespace-scoped mode on the real API server: the same rights in the watched namespace only.
#[tokio::test]
async fn namespaced_mode_rbac_stays_in_the_watched_namespace() {
    let admin = support::client().await;
    let ns = support::test_namespace("chart-ns").await;
    let watched = support::test_namespace("chart-watched").await;
    let other = support::test_namespace("chart-other").await;
    let docs = template("aml-ns", &ns, &[&format!("watchNamespace={watched}")]);
    apply_all(&admin, &docs, "chart-test").await;
    let sa = "aml-ns-azureml-operator";
    let operator =
        support::cluster().await.service_account_client(&ns, sa).await.expect("ServiceAccount client");

    workspaces(&operator, &watched)
        .list(&ListParams::default())
        .await
        .expect("list Workspaces in the watched namespace");
    assert_forbidden(
        workspaces(&operator, &other).list(&ListParams::default()).await,
        "list Workspaces elsewhere",
    );
    for (_, plural) in KINDS {
        assert!(can(&operator, "watch", "azureml-operator.io", plural, Some(&watched), None).await);
        assert!(
            can(&operator, "patch", "azureml-operator.io", &format!("{plural}/status"), Some(&watched), None)
                .await
        );
        assert!(
            !can(&operator, "list", "azureml-operator.io", plural, None, None).await,
            "{plural} cluster-wide"
        );
        assert!(
            !can(&operator, "patch", "azureml-operator.io", &format!("{plural}/status"), Some(&other), None)
                .await
        );
    }
    assert!(can(&operator, "create", "events.k8s.io", "events", Some(&watched), None).await);
    assert!(!can(&operator, "create", "events.k8s.io", "events", Some(&other), None).await);
    assert!(can(&operator, "get", "", "secrets", Some(&watched), None).await);
    assert!(!can(&operator, "list", "", "secrets", None, None).await, "Secrets cluster-wide");
    assert!(!can(&operator, "get", "", "secrets", Some(&ns), None).await, "Secrets of the release namespace");
    assert!(can(&operator, "create", "coordination.k8s.io", "leases", Some(&ns), None).await);
    assert!(can(&operator, "patch", "coordination.k8s.io", "leases", Some(&ns), Some(sa)).await);
    assert!(!can(&operator, "create", "coordination.k8s.io", "leases", Some(&watched), None).await);
}

/// Two replicas with their PodDisruptionBudget apply cleanly. (The ServiceMonitor is checked by
/// rendering only: its CRD belongs to the Prometheus Operator.)
#[tokio::test]
async fn optional_resources_apply() {
    let admin = support::client().await;
    let ns = support::test_namespace("chart-optional").await;
    apply_all(&admin, &template("aml-ha", &ns, &["replicas=2"]), "chart-test").await;
    let deployment = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(admin.clone(), &ns)
        .get("aml-ha-azureml-operator")
        .await
        .expect("the Deployment exists");
    assert_eq!(deployment.spec.replicas, Some(2));
    let pdbs = Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("list PDBs");
    assert_eq!(pdbs.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["aml-ha-azureml-operator"]);
}
