"""Fidelity check: drive a running emulator with the real azure-ai-ml SDK.

Usage (see emulator/tests/sdk/README.md):
    python sdk_check.py https://127.0.0.1:PORT /path/to/ca.pem

Exits non-zero at the first call whose result differs from what the notebook expects.
"""

import os
import sys
import tempfile


def main() -> int:
    base, ca = sys.argv[1].rstrip("/"), sys.argv[2]

    # Trust the emulator's CA in addition to the system roots (requests reads REQUESTS_CA_BUNDLE).
    system = os.environ.get("REQUESTS_CA_BUNDLE") or "/etc/ssl/certs/ca-certificates.crt"
    bundle = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False)
    with open(system) as f:
        bundle.write(f.read())
    with open(ca) as f:
        bundle.write(f.read())
    bundle.close()
    os.environ["REQUESTS_CA_BUNDLE"] = bundle.name
    os.environ["SSL_CERT_FILE"] = bundle.name

    # Point the SDK's cloud table at the emulator (reference §1.1).
    os.environ["ARM_CLOUD_METADATA_URL"] = f"{base}/metadata/endpoints?api-version=2019-05-01"
    os.environ["AZUREML_CURRENT_CLOUD"] = "AzureMLEmulator"
    os.environ["REGISTRY_DISCOVERY_ENDPOINT_URL"] = f"{base}/"

    from azure.identity import ClientSecretCredential
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    credential = ClientSecretCredential(
        tenant_id="00000000-0000-0000-0000-0000000000aa",
        client_id="00000000-0000-0000-0000-0000000000cc",
        client_secret="emulator-secret",
        authority=base,
        disable_instance_discovery=True,
    )
    token = credential.get_token(f"{base}/.default")
    print("token: ok, expires_on", token.expires_on)

    ws = MLClient(
        credential,
        subscription_id="00000000-0000-0000-0000-000000000001",
        resource_group_name="rg-azureml-demo",
        workspace_name="ws-azureml-demo",
        cloud="AzureMLEmulator",
    )
    workspace = ws.workspaces.get("ws-azureml-demo")
    print("workspace:", workspace.name, workspace.location)
    assert workspace.location == "eastus2"

    compute = ws.compute.get("gpu-cluster")
    print("compute:", compute.name, compute.size, compute.provisioning_state)
    assert compute.size.lower() == "standard_nc24ads_a100_v4"

    sizes = ws.compute.list_sizes()
    gpus = {s.name: s.gpus for s in sizes}
    print("vm sizes:", len(gpus), "NC24ads_A100_v4 gpus =", gpus.get("Standard_NC24ads_A100_v4"))
    assert gpus.get("Standard_NC24ads_A100_v4") == 1

    registry = MLClient(credential, registry_name="azureml", cloud="AzureMLEmulator")
    model = registry.models.get("Phi-3-mini-4k-instruct", label="latest")
    print("registry model:", model.name, model.version, model.id)
    assert model.version == "15"
    assert "finetune_compute_allow_list" in model.tags
    component = registry.components.get("chat_completion_pipeline", label="latest")
    print("registry component:", component.name, component.version, len(component.inputs), "inputs")
    assert component.version == "0.0.82"

    # The notebook's pipeline job (step 5), built from the registry component.
    from azure.ai.ml import Input
    from azure.ai.ml.dsl import pipeline

    @pipeline
    def create_pipeline():
        node = component(
            mlflow_model_path=model.id,
            compute_model_import="gpu-cluster",
            compute_preprocess="gpu-cluster",
            compute_finetune="gpu-cluster",
            compute_model_evaluation="gpu-cluster",
            train_file_path=Input(type="uri_file", path="azureml://datastores/workspaceblobstore/paths/ultrachat/train_sft.jsonl"),
            test_file_path=Input(type="uri_file", path="azureml://datastores/workspaceblobstore/paths/ultrachat/test_sft.jsonl"),
            number_of_gpu_to_use_finetuning=1,
            num_train_epochs=1,
            learning_rate=5e-6,
            lr_scheduler_type="cosine",
            apply_lora="true",
            apply_deepspeed="true",
            deepspeed_stage="2",
            precision="16",
        )
        return {"trained_model": node.outputs.mlflow_model_folder}

    job = create_pipeline()
    job.display_name = "Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora-save_limit1-seqlen-1"
    job.settings.force_rerun = True
    job.settings.continue_on_step_failure = False
    submitted = ws.jobs.create_or_update(job, experiment_name="chat_completion_Phi-3-mini-4k-instruct")
    print("job:", submitted.name, submitted.status, submitted.studio_url)
    import time

    for _ in range(600):
        status = ws.jobs.get(submitted.name).status
        if status in ("Completed", "Failed", "Canceled"):
            break
        time.sleep(0.5)
    print("job status:", status)
    assert status == "Completed"

    from azure.ai.ml.entities import Model
    from azure.ai.ml.constants import AssetTypes

    registered = ws.models.create_or_update(
        Model(
            path=f"azureml://jobs/{submitted.name}/outputs/trained_model",
            type=AssetTypes.MLFLOW_MODEL,
            name="Phi-3-mini-4k-instruct-ultrachat-200k",
            version="1",
            description="Phi-3-mini-4k-instruct fine tuned model for ultrachat 200k chat-completion",
        )
    )
    print("model:", registered.name, registered.version, registered.id)

    endpoint = ManagedOnlineEndpoint(name="sdk-check-endpoint", description="sdk fidelity check", auth_mode="key")
    created = ws.online_endpoints.begin_create_or_update(endpoint).result()
    print("endpoint:", created.name, created.provisioning_state, created.scoring_uri)
    assert created.provisioning_state == "Succeeded"
    keys = ws.online_endpoints.get_keys("sdk-check-endpoint")
    assert keys.primary_key
    print("keys: ok")
    ws.online_endpoints.begin_delete("sdk-check-endpoint").result()
    print("endpoint deleted")
    print("SDK check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
