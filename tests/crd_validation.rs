//! The CRDs on a real kube-apiserver: the examples apply and read back, invalid manifests are rejected with a
//! message naming the field, transition rules hold, and field documentation is published.

mod support;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::core::crd::CustomResourceExt;
use serde_json::{Value, json};

use azureml_operator::api::{FineTuneJob, ModelRegistration, OnlineEndpoint, Workspace};

/// Reads the documents of an example file, skipping the ones that are not ours (Secrets).
fn example(file: &str, kind: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(file);
    let text = std::fs::read_to_string(&path).expect("example exists");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("example is YAML");
    docs.into_iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("{file} has a {kind}"))
}

fn resource_of(kind: &str) -> ApiResource {
    match kind {
        "Workspace" => ApiResource::erase::<Workspace>(&()),
        "FineTuneJob" => ApiResource::erase::<FineTuneJob>(&()),
        "ModelRegistration" => ApiResource::erase::<ModelRegistration>(&()),
        "OnlineEndpoint" => ApiResource::erase::<OnlineEndpoint>(&()),
        other => panic!("unknown kind {other}"),
    }
}

fn api_for(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource_of(kind))
}

async fn create(client: &kube::Client, ns: &str, manifest: &Value) -> Result<DynamicObject, kube::Error> {
    let kind = manifest["kind"].as_str().expect("kind");
    let obj: DynamicObject = serde_json::from_value(manifest.clone()).expect("object");
    api_for(client, ns, kind).create(&PostParams::default(), &obj).await
}

/// Sets `value` at a JSON pointer, creating objects on the way; `Value::Null` removes the field.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let mut target = doc;
    for part in parent.split('/').skip(1) {
        target = match target {
            Value::Array(items) => &mut items[part.parse::<usize>().expect("index")],
            other => other.as_object_mut().expect("object").entry(part).or_insert_with(|| json!({})),
        };
    }
    if let Value::Array(items) = target {
        let index: usize = key.parse().expect("index");
        if index < items.len() {
            items[index] = value;
        } else {
            items.push(value);
        }
        return;
    }
    let obj = target.as_object_mut().expect("object parent");
    if value.is_null() {
        obj.remove(key);
    } else {
        obj.insert(key.to_owned(), value);
    }
}

#[tokio::test]
async fn examples_apply_and_read_back() {
    let client = support::client().await;
    let ns = support::test_namespace("examples").await;
    for (file, kind) in [
        ("workspace.yaml", "Workspace"),
        ("workspace-azure.yaml", "Workspace"),
        ("finetunejob.yaml", "FineTuneJob"),
        ("modelregistration.yaml", "ModelRegistration"),
        ("onlineendpoint.yaml", "OnlineEndpoint"),
    ] {
        let mut manifest = example(file, kind);
        // Two Workspace examples share the name `default`.
        if file == "workspace-azure.yaml" {
            set(&mut manifest, "/metadata/name", json!("azure"));
        }
        let created = create(&client, &ns, &manifest).await.unwrap_or_else(|e| panic!("{file}: {e}"));
        let name = created.metadata.name.clone().expect("name");
        let read = api_for(&client, &ns, kind).get(&name).await.expect("read back");
        assert_eq!(read.data["spec"], created.data["spec"], "{file}");
    }
    // Typed reads prove the Rust types accept what the server stores, defaults included.
    let job = Api::<FineTuneJob>::namespaced(client.clone(), &ns).get("phi3-ultrachat").await.expect("typed");
    assert_eq!(job.spec.model.name, "Phi-3-mini-4k-instruct");
    assert_eq!(job.spec.pipeline_component.name, "chat_completion_pipeline");
    assert!(job.spec.settings.force_rerun);
    let ep = Api::<OnlineEndpoint>::namespaced(client.clone(), &ns)
        .get("ultrachat-completion")
        .await
        .expect("typed");
    assert_eq!(ep.spec.traffic.get("demo"), Some(&100));
    let mreg = Api::<ModelRegistration>::namespaced(client, &ns).get("ultrachat-200k").await.expect("typed");
    assert_eq!(mreg.spec.source.fine_tune_job_ref.as_ref().map(|r| r.output.as_str()), Some("trained_model"));
}

/// One invalid manifest: built from an example by one change, rejected with a message containing `expect`.
struct Invalid {
    why: &'static str,
    file: &'static str,
    kind: &'static str,
    changes: Vec<(&'static str, Value)>,
    expect: &'static str,
}

fn invalid_manifests() -> Vec<Invalid> {
    let ws =
        |why, changes, expect| Invalid { why, file: "workspace.yaml", kind: "Workspace", changes, expect };
    let ftj = |why, changes, expect| Invalid {
        why,
        file: "finetunejob.yaml",
        kind: "FineTuneJob",
        changes,
        expect,
    };
    let mreg = |why, changes, expect| Invalid {
        why,
        file: "modelregistration.yaml",
        kind: "ModelRegistration",
        changes,
        expect,
    };
    let oep = |why, changes, expect| Invalid {
        why,
        file: "onlineendpoint.yaml",
        kind: "OnlineEndpoint",
        changes,
        expect,
    };
    vec![
        ws(
            "subscription id is not a GUID",
            vec![("/spec/subscriptionId", json!("my-sub"))],
            "spec.subscriptionId",
        ),
        ws("resource group has a space", vec![("/spec/resourceGroup", json!("my rg"))], "spec.resourceGroup"),
        ws(
            "resource group ends with a dot",
            vec![("/spec/resourceGroup", json!("rg."))],
            "spec.resourceGroup",
        ),
        ws("workspace name too short", vec![("/spec/workspaceName", json!("w"))], "spec.workspaceName"),
        ws("unknown cloud", vec![("/spec/cloud", json!("AzureMoon"))], "spec.cloud"),
        ws("custom cloud without endpoints", vec![("/spec/endpoints", Value::Null)], "spec.endpoints"),
        ws(
            "public cloud with custom endpoints",
            vec![("/spec/cloud", json!("AzurePublic"))],
            "spec.endpoints may only be set",
        ),
        ws(
            "http authority host",
            vec![("/spec/endpoints/authorityHost", json!("http://127.0.0.1:1"))],
            "spec.endpoints.authorityHost",
        ),
        ws(
            "client secret without tenant",
            vec![("/spec/credential/tenantId", Value::Null)],
            "spec.credential.tenantId",
        ),
        ws(
            "client secret without secretRef",
            vec![("/spec/credential/secretRef", Value::Null)],
            "spec.credential.tenantId, clientId and secretRef",
        ),
        ws(
            "secretRef with workload identity",
            vec![("/spec/credential/type", json!("WorkloadIdentity"))],
            "spec.credential.secretRef",
        ),
        ws(
            "unknown credential type",
            vec![("/spec/credential/type", json!("Password"))],
            "spec.credential.type",
        ),
        ws("missing workspace name", vec![("/spec/workspaceName", Value::Null)], "spec.workspaceName"),
        ws("bad api version", vec![("/spec/armApiVersion", json!("latest"))], "spec.armApiVersion"),
        ftj("missing model", vec![("/spec/model", Value::Null)], "spec.model"),
        ftj("model name with a space", vec![("/spec/model/name", json!("Phi 3"))], "name"),
        ftj(
            "compute name with underscore",
            vec![("/spec/compute/name", json!("gpu_cluster"))],
            "spec.compute.name",
        ),
        ftj(
            "compute min above max",
            vec![
                ("/spec/compute/create/minInstances", json!(3)),
                ("/spec/compute/create/maxInstances", json!(1)),
            ],
            "spec.compute.create.minInstances",
        ),
        ftj(
            "data uri of an unknown scheme",
            vec![("/spec/data/train", json!("s3://bucket/train.jsonl"))],
            "spec.data.train",
        ),
        ftj("missing test data", vec![("/spec/data/test", Value::Null)], "spec.data.test"),
        ftj("zero epochs", vec![("/spec/training/numTrainEpochs", json!(0))], "spec.training.numTrainEpochs"),
        ftj(
            "learning rate above 1",
            vec![("/spec/training/learningRate", json!(2.0))],
            "spec.training.learningRate",
        ),
        ftj(
            "unknown scheduler",
            vec![("/spec/training/lrSchedulerType", json!("exponential"))],
            "spec.training.lrSchedulerType",
        ),
        ftj(
            "zero batch size",
            vec![("/spec/training/perDeviceTrainBatchSize", json!(0))],
            "spec.training.perDeviceTrainBatchSize",
        ),
        ftj(
            "deepspeed stage 4",
            vec![("/spec/optimization/deepspeedStage", json!(4))],
            "spec.optimization.deepspeedStage",
        ),
        ftj(
            "max seq length 0",
            vec![("/spec/training/maxSeqLength", json!(0))],
            "spec.training.maxSeqLength",
        ),
        ftj("unknown onDelete", vec![("/spec/onDelete", json!("Keep"))], "spec.onDelete"),
        ftj("precision 8", vec![("/spec/training/precision", json!("8"))], "spec.training.precision"),
        mreg(
            "two sources",
            vec![("/spec/source/uri", json!("azureml://jobs/j/outputs/trained_model"))],
            "spec.source must set exactly one",
        ),
        mreg(
            "no source",
            vec![("/spec/source/fineTuneJobRef", Value::Null)],
            "spec.source must set exactly one",
        ),
        mreg("model name with a slash", vec![("/spec/modelName", json!("a/b"))], "spec.modelName"),
        mreg("unknown model type", vec![("/spec/modelType", json!("onnx"))], "spec.modelType"),
        mreg(
            "uri of an unknown scheme",
            vec![("/spec/source/fineTuneJobRef", Value::Null), ("/spec/source/uri", json!("ftp://x"))],
            "spec.source.uri",
        ),
        oep(
            "traffic sums to 90",
            vec![("/spec/traffic/demo", json!(90))],
            "spec.traffic percentages must sum to 100",
        ),
        oep(
            "traffic to an unknown deployment",
            vec![("/spec/traffic", json!({"blue": 100}))],
            "spec.traffic names a deployment",
        ),
        oep(
            "deployment name too short",
            vec![
                ("/spec/deployments/0/name", json!("d")),
                ("/spec/traffic", json!({"d": 100})),
                ("/spec/smokeTest", Value::Null),
            ],
            "spec.deployments[0].name",
        ),
        oep(
            "zero instances",
            vec![("/spec/deployments/0/instanceCount", json!(0))],
            "instanceCount must be at least 1",
        ),
        oep(
            "endpoint name with underscore",
            vec![("/spec/endpointName", json!("my_endpoint"))],
            "spec.endpointName",
        ),
        oep("unknown auth mode", vec![("/spec/authMode", json!("Password"))], "spec.authMode"),
        oep(
            "model with both ref and asset id",
            vec![("/spec/deployments/0/model/assetId", json!("azureml:m:1"))],
            "exactly one of modelRegistrationRef and assetId",
        ),
        oep("negative traffic", vec![("/spec/traffic", json!({"demo": -10}))], "spec.traffic"),
        oep(
            "smoke test to an unknown deployment",
            vec![("/spec/smokeTest/deployment", json!("other"))],
            "spec.smokeTest.deployment",
        ),
        oep(
            "request timeout above Azure's cap",
            vec![("/spec/deployments/0/requestSettings/requestTimeoutMs", json!(900000))],
            "requestTimeoutMs",
        ),
        oep(
            "duplicate deployment names",
            vec![(
                "/spec/deployments/1",
                json!({"name": "demo", "model": {"assetId": "azureml:m:1"}, "instanceType": "Standard_NC6s_v3"}),
            )],
            "spec.deployments[1]",
        ),
    ]
}

#[tokio::test]
async fn invalid_manifests_are_rejected_naming_the_field() {
    let client = support::client().await;
    let ns = support::test_namespace("invalid").await;
    let cases = invalid_manifests();
    assert!(cases.len() >= 30, "keep at least 30 cases");
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut manifest = example(case.file, case.kind);
        set(&mut manifest, "/metadata/name", json!(format!("invalid-{i}")));
        for (pointer, value) in &case.changes {
            set(&mut manifest, pointer, value.clone());
        }
        match create(&client, &ns, &manifest).await {
            Ok(_) => failures.push(format!("{}: accepted", case.why)),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || !status.message.contains(case.expect) {
                    failures.push(format!("{}: {} {}", case.why, status.code, status.message));
                }
            }
            Err(other) => failures.push(format!("{}: {other}", case.why)),
        }
    }
    println!(
        "{} invalid manifests tried, {} rejected as expected",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(failures.is_empty(), "not rejected as expected:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn a_submitted_fine_tune_job_spec_is_immutable() {
    let client = support::client().await;
    let ns = support::test_namespace("immutable").await;
    let manifest = example("finetunejob.yaml", "FineTuneJob");
    create(&client, &ns, &manifest).await.expect("created");
    let api = api_for(&client, &ns, "FineTuneJob");
    let change_epochs = Patch::Merge(json!({"spec": {"training": {"numTrainEpochs": 5}}}));
    // Before submission the spec may still change.
    api.patch("phi3-ultrachat", &PatchParams::default(), &change_epochs)
        .await
        .expect("editable before submit");
    let submitted = Patch::Merge(json!({"status": {"phase": "Submitted", "jobName": "ftj-abc"}}));
    api.patch_status("phi3-ultrachat", &PatchParams::default(), &submitted).await.expect("status written");
    let change_again = Patch::Merge(json!({"spec": {"training": {"numTrainEpochs": 7}}}));
    let err = api.patch("phi3-ultrachat", &PatchParams::default(), &change_again).await.expect_err("frozen");
    assert!(err.to_string().contains("spec is immutable once the job has been submitted"), "{err}");
    // Metadata (labels) stays editable.
    let label = Patch::Merge(json!({"metadata": {"labels": {"team": "nlp"}}}));
    api.patch("phi3-ultrachat", &PatchParams::default(), &label).await.expect("labels editable");
}

#[tokio::test]
async fn model_source_and_endpoint_auth_mode_are_immutable() {
    let client = support::client().await;
    let ns = support::test_namespace("immutable2").await;
    create(&client, &ns, &example("modelregistration.yaml", "ModelRegistration")).await.expect("created");
    create(&client, &ns, &example("onlineendpoint.yaml", "OnlineEndpoint")).await.expect("created");
    let mreg = api_for(&client, &ns, "ModelRegistration");
    let err = mreg
        .patch(
            "ultrachat-200k",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"source": {"fineTuneJobRef": {"name": "other"}}}})),
        )
        .await
        .expect_err("source frozen");
    assert!(err.to_string().contains("spec.source is immutable"), "{err}");
    let oep = api_for(&client, &ns, "OnlineEndpoint");
    let err = oep
        .patch(
            "ultrachat-completion",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"authMode": "AMLToken"}})),
        )
        .await
        .expect_err("auth mode frozen");
    assert!(err.to_string().contains("spec.authMode is immutable"), "{err}");
    // Traffic and deployments stay editable: that is how a rollout happens.
    oep.patch(
        "ultrachat-completion",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"deployments": [
            {"name": "demo", "model": {"modelRegistrationRef": {"name": "ultrachat-200k"}}, "instanceType": "Standard_NC6s_v3"},
            {"name": "green", "model": {"assetId": "azureml:m:2"}, "instanceType": "Standard_NC6s_v3"}
        ], "traffic": {"demo": 90, "green": 10}, "smokeTest": null}})),
    )
    .await
    .expect("rollout edit accepted");
}

#[tokio::test]
async fn field_documentation_is_published() {
    let client = support::client().await;
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client);
    for local in azureml_operator::api::crds() {
        let name = local.metadata.name.clone().expect("name");
        let served = crds.get(&name).await.expect("CRD installed");
        let schema = serde_json::to_value(&served.spec.versions[0].schema).expect("schema");
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        let fields = spec["properties"].as_object().expect("spec has properties");
        assert!(!fields.is_empty());
        for (field, body) in fields {
            let doc = body["description"].as_str().unwrap_or_default();
            assert!(doc.len() > 10, "{name}: spec.{field} has no description");
        }
    }
    // Something a user would `kubectl explain`.
    let ftj = FineTuneJob::crd();
    let schema = serde_json::to_value(&ftj.spec.versions[0].schema).expect("schema");
    let doc = schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["model"]["properties"]["version"]
        ["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(doc.contains("newest version that is not archived"), "{doc}");
}
