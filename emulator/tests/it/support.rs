//! Starts an emulator and talks to it like a client would.

use std::time::Duration;

use azureml_emulator::{Config, Emulator, RunningEmulator};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

pub const TENANT: &str = "00000000-0000-0000-0000-0000000000aa";
pub const CLIENT: &str = "00000000-0000-0000-0000-0000000000cc";
pub const SECRET: &str = "emulator-secret";
pub const SUB: &str = "00000000-0000-0000-0000-000000000001";
pub const RG: &str = "rg-azureml-demo";
pub const WS: &str = "ws-azureml-demo";
pub const API: &str = "2025-12-01";
pub const REGISTRY_API: &str = "2021-10-01-dataplanepreview";

/// A started emulator, a client trusting its CA, and an ARM token.
pub struct Env {
    pub emu: RunningEmulator,
    pub client: Client,
    pub token: String,
}

pub async fn start() -> Env {
    start_with(Config::default().with_time_scale(2000.0)).await
}

pub async fn start_with(config: Config) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start(config).await.expect("emulator starts");
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).expect("CA parses");
    let client = Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client builds");
    let mut env = Env { emu, client, token: String::new() };
    env.token = env.aad_token("https://management.azure.com/.default").await;
    env
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.emu.https_url(), path)
    }

    /// The workspace's ARM path plus `suffix`.
    pub fn ws_path(&self, suffix: &str) -> String {
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}{suffix}"
        )
    }

    pub async fn aad_token(&self, scope: &str) -> String {
        let r = self
            .client
            .post(self.url(&format!("/{TENANT}/oauth2/v2.0/token")))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("scope", scope),
            ])
            .send()
            .await
            .expect("token request");
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.expect("json")["access_token"].as_str().expect("token").to_string()
    }

    /// Sends an authenticated request to `path` (api-version added when absent).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let url = if path.contains("api-version") || path.starts_with("http") {
            if path.starts_with("http") { path.to_string() } else { self.url(path) }
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            let api = if path.contains("/mferp/") { REGISTRY_API } else { API };
            self.url(&format!("{path}{sep}api-version={api}"))
        };
        let mut request = self.client.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        json_of(self.call(Method::GET, path, None).await).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        json_of(self.call(Method::PUT, path, Some(body)).await).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(&format!("/_emulator/{path}")));
        if let Some(body) = body {
            request = request.json(&body);
        }
        json_of(request.send().await.expect("admin request")).await
    }

    /// Polls an `Azure-AsyncOperation` URL until the operation ends; returns its final body.
    pub async fn poll_async(&self, url: &str) -> Value {
        for _ in 0..400 {
            let (status, body) = json_of(self.call(Method::GET, url, None).await).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["status"] != "InProgress" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("operation {url} did not finish");
    }

    /// Polls a `Location` URL until it stops answering 202; returns the final status and body.
    pub async fn poll_location(&self, url: &str) -> (StatusCode, Value) {
        for _ in 0..400 {
            let response = self.call(Method::GET, url, None).await;
            if response.status() != StatusCode::ACCEPTED {
                return json_of(response).await;
            }
            assert!(response.headers().contains_key("retry-after"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("operation {url} did not finish");
    }

    /// The request log since `seq`.
    pub async fn requests(&self) -> Vec<Value> {
        let (_, body) = self.admin(Method::GET, "requests", None).await;
        body["requests"].as_array().cloned().unwrap_or_default()
    }

    pub async fn state(&self) -> Value {
        self.admin(Method::GET, "state", None).await.1
    }
}

/// Status and JSON body (`null` when empty).
pub async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(json!(text)) };
    (status, body)
}

pub fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The notebook's pipeline job body, with `extra` literal inputs merged in.
pub fn pipeline_job(extra: &[(&str, serde_json::Value)]) -> Value {
    let lit = |v: &str| json!({"job_input_type": "literal", "value": v});
    let mut inputs = json!({
        "mlflow_model_path": {"job_input_type": "mlflow_model", "uri": "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"},
        "train_file_path": {"job_input_type": "uri_file", "uri": "azureml://datastores/workspaceblobstore/paths/ultrachat/train_sft.jsonl"},
        "test_file_path": {"job_input_type": "uri_file", "uri": "azureml://datastores/workspaceblobstore/paths/ultrachat/test_sft.jsonl"},
        "compute_model_import": lit("gpu-cluster"),
        "compute_preprocess": lit("gpu-cluster"),
        "compute_finetune": lit("gpu-cluster"),
        "compute_model_evaluation": lit("gpu-cluster"),
        "number_of_gpu_to_use_finetuning": lit("1"),
        "apply_lora": lit("true"),
        "apply_deepspeed": lit("true"),
        "deepspeed_stage": lit("2"),
        "precision": lit("16"),
        "num_train_epochs": lit("1"),
        "learning_rate": lit("5e-06"),
        "lr_scheduler_type": lit("cosine"),
    });
    for (k, v) in extra {
        inputs[*k] = v.clone();
    }
    json!({"properties": {
        "jobType": "Pipeline",
        "displayName": "Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora-save_limit1-seqlen-1",
        "experimentName": "chat_completion_Phi-3-mini-4k-instruct",
        "settings": {"force_rerun": true, "continue_on_step_failure": false},
        "inputs": {},
        "outputs": {"trained_model": {"jobOutputType": "mlflow_model"}},
        "jobs": {"chat_completion_pipeline": {
            "type": "pipeline",
            "name": "chat_completion_pipeline",
            "componentId": "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82",
            "inputs": inputs,
            "outputs": {"mlflow_model_folder": {"type": "literal", "value": "${{parent.outputs.trained_model}}"}},
        }},
    }})
}

impl Env {
    /// Polls a job until its status is terminal; returns the statuses seen, in order, without repeats.
    pub async fn wait_job(&self, name: &str) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..500 {
            let (status, body) = self.get(&self.ws_path(&format!("/jobs/{name}"))).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let s = body["properties"]["status"].as_str().unwrap().to_string();
            if seen.last() != Some(&s) {
                seen.push(s.clone());
            }
            if ["Completed", "Failed", "Canceled"].contains(&s.as_str()) {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {name} did not finish: {seen:?}");
    }
}

impl Env {
    /// Runs the notebook's job to completion and registers its output as model `name:version`.
    pub async fn registered_model(&self, job: &str, name: &str, version: &str) -> String {
        let (status, body) = self.put(&self.ws_path(&format!("/jobs/{job}")), pipeline_job(&[])).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(self.wait_job(job).await.last().unwrap(), "Completed");
        let (status, body) = self
            .put(
                &self.ws_path(&format!("/models/{name}/versions/{version}")),
                json!({"properties": {"modelType": "mlflow_model", "modelUri": format!("azureml://jobs/{job}/outputs/trained_model"), "description": "fine tuned"}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Creates an endpoint and waits for it.
    pub async fn endpoint(&self, name: &str, auth: &str) {
        let r = self
            .call(Method::PUT, &self.ws_path(&format!("/onlineEndpoints/{name}")), Some(json!({"location": "eastus2", "identity": {"type": "SystemAssigned"}, "properties": {"authMode": auth, "traffic": {}}})))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let op = header(&r, "azure-asyncoperation").unwrap();
        assert_eq!(self.poll_async(&op).await["status"], "Succeeded");
    }

    /// Creates a deployment and waits for its operation; returns the final operation body.
    pub async fn deployment(
        &self,
        endpoint: &str,
        name: &str,
        model: &str,
        instance: &str,
        count: u64,
    ) -> Value {
        let r = self
            .call(
                Method::PUT,
                &self.ws_path(&format!("/onlineEndpoints/{endpoint}/deployments/{name}")),
                Some(deployment_body(model, instance, count)),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let op = header(&r, "azure-asyncoperation").unwrap();
        self.poll_async(&op).await
    }
}

pub fn deployment_body(model: &str, instance: &str, count: u64) -> Value {
    json!({"location": "eastus2", "tags": {}, "sku": {"name": "Default", "capacity": count}, "properties": {
        "endpointComputeType": "Managed", "model": model, "instanceType": instance,
        "livenessProbe": {"initialDelay": "PT600S"}, "requestSettings": {"requestTimeout": "PT90S"},
        "scaleSettings": {"scaleType": "Default"}, "appInsightsEnabled": false}})
}
