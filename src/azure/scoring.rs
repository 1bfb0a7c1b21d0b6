//! Scoring requests to an online endpoint, and polling of long-running operations.

use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use url::Url;

use super::client::{Auth, Request, RetryMode, WorkspaceClient};
use super::config::SecretString;
use super::error::{Error, Result};
use super::lro::{Operation, OperationStatus, PollResponse, PollTarget, interpret_poll_at};

/// How to authenticate a scoring request.
#[derive(Clone, Debug)]
pub enum ScoringAuth {
    /// An endpoint key (`authMode: Key`).
    Key(SecretString),
    /// A token from the endpoint's `token` action (`authMode: AMLToken`).
    AmlToken(SecretString),
    /// A Microsoft Entra token for the Azure ML resource, fetched with the workspace credential
    /// (`authMode: AADToken`).
    AadToken,
}

/// The outcome of one scoring request, whatever its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreResponse {
    /// HTTP status.
    pub status: u16,
    /// Response body as text (stored raw: the reply's shape depends on the model).
    pub body: String,
    /// Time to the full response.
    pub latency: Duration,
}

impl WorkspaceClient {
    /// POSTs `body` to a scoring URI. `deployment` routes to one deployment regardless of traffic
    /// (`azureml-model-deployment` header). Scoring is not idempotent, so it is re-sent only when
    /// it certainly was not processed (connection refused, 429); any HTTP status is returned, only
    /// transport failures are `Err`.
    pub async fn score(
        &self,
        scoring_uri: &str,
        auth: &ScoringAuth,
        deployment: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<ScoreResponse> {
        const OP: &str = "score";
        let url = Url::parse(scoring_uri).map_err(|e| Error::Config {
            message: format!("scoring URI {scoring_uri:?} is not a URL: {e}"),
        })?;
        let mut req = Request::new(OP, Method::POST, url).json(body.clone()).retry(RetryMode::UnsentOnly);
        req.auth = match auth {
            ScoringAuth::Key(k) | ScoringAuth::AmlToken(k) => Auth::Bearer(k.clone()),
            ScoringAuth::AadToken => Auth::Scope(self.cloud().ml_scope()),
        };
        if let Some(d) = deployment {
            req.headers.push(("azureml-model-deployment", d.to_string()));
        }
        let resp = self.send_raw(req).await?;
        Ok(ScoreResponse {
            status: resp.status,
            body: String::from_utf8_lossy(&resp.body).into_owned(),
            latency: resp.elapsed,
        })
    }

    /// Polls a long-running operation once. Never blocks beyond one request: the caller requeues
    /// with the returned `retry_after` while the operation is in progress.
    pub async fn poll(&self, operation: &Operation) -> Result<OperationStatus> {
        const OP: &str = "poll_operation";
        let target = match &operation.poll {
            PollTarget::AsyncOperation(u) | PollTarget::Location(u) | PollTarget::Resource(u) => u,
        };
        let url = Url::parse(target).map_err(|e| Error::Protocol {
            operation: OP,
            message: format!("polling URL is not a URL: {e}"),
        })?;
        let req = self.arm(OP, Method::GET, url);
        let resp = self.send_raw(req).await?;
        let status = interpret_poll_at(
            operation,
            PollResponse { status: resp.status, headers: &resp.headers, body: &resp.body },
            jiff::Timestamp::now(),
        )?;
        if let OperationStatus::Failed(err) = &status {
            tracing::info!(operation = %operation.name, error = %err, "Azure operation failed");
        }
        Ok(status)
    }
}
