//! Workspace controller: proves the connection with a real authenticated GET of the workspace and
//! records its location. Re-checks periodically and whenever a Secret it names changes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use super::connection::{ConfigProblem, connection_config};
use super::policy::Policy;
use super::{Context, Error, Result, patch_status, publish_transition};
use crate::api::conditions::{self, Health, reasons};
use crate::api::{Workspace, WorkspaceStatus};
use crate::azure::{self, ErrorClass, WorkspaceInfo};

/// Kind name for metrics and logs.
pub const KIND: &str = "Workspace";

/// What one pass saw.
#[derive(Debug)]
pub enum Observed {
    /// The spec or its Secrets cannot make a connection.
    Config(ConfigProblem),
    /// The authenticated GET of the workspace succeeded.
    Reached(WorkspaceInfo),
    /// The GET failed.
    Failed(azure::Error),
}

/// What to do about it.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Report this outcome and check again after `recheck`.
    Report { health: Health, location: Option<String>, workspace_id: Option<String>, recheck: Duration },
    /// A transient failure: leave status as it is and retry with backoff.
    Retry,
}

/// Pure: from what was seen to what to report.
pub fn decide(observed: &Observed, ws: &Workspace, policy: &Policy) -> Decision {
    let target = format!(
        "workspace {} in resource group {} of subscription {}",
        ws.spec.workspace_name, ws.spec.resource_group, ws.spec.subscription_id
    );
    let report = |health, location: Option<String>, workspace_id: Option<String>| Decision::Report {
        health,
        location,
        workspace_id,
        recheck: policy.workspace_recheck(),
    };
    let message = match observed {
        Observed::Failed(e) => e.to_string(),
        _ => String::new(),
    };
    match observed {
        Observed::Config(p) => report(Health::stalled(p.reason, p.message.clone()), None, None),
        Observed::Reached(info) => report(
            Health::ready(reasons::CONNECTED, format!("connected to {target} in {}", info.location)),
            Some(info.location.clone()),
            Some(info.id.clone()),
        ),
        Observed::Failed(error) => match error.class() {
            ErrorClass::Transient { .. } | ErrorClass::Throttled { .. } | ErrorClass::Conflict => {
                Decision::Retry
            }
            ErrorClass::NotFound => report(
                Health::stalled(
                    reasons::WORKSPACE_NOT_FOUND,
                    format!(
                        "Azure has no {target}; check subscriptionId, resourceGroup and workspaceName ({message})"
                    ),
                ),
                None,
                None,
            ),
            ErrorClass::Auth if error.status() == Some(403) => report(
                Health::stalled(
                    reasons::AUTHORIZATION_FAILED,
                    format!(
                        "the identity may not read {target}; grant it a role such as AzureML Data Scientist on the workspace ({message})"
                    ),
                ),
                None,
                None,
            ),
            ErrorClass::Auth => report(
                Health::stalled(
                    reasons::CREDENTIAL_INVALID,
                    format!(
                        "Microsoft Entra ID refused the credential; check spec.credential and its Secret ({message})"
                    ),
                ),
                None,
                None,
            ),
            ErrorClass::InvalidSpec { .. } | ErrorClass::Quota | ErrorClass::Terminal => report(
                Health::stalled(
                    reasons::AZURE_REJECTED,
                    format!("Azure refused to read {target}: {message}"),
                ),
                None,
                None,
            ),
        },
    }
}

async fn observe(ws: &Workspace, ctx: &Context) -> Result<Observed> {
    let config = match connection_config(&ctx.client, ws).await? {
        Ok(c) => c,
        Err(p) => return Ok(Observed::Config(p)),
    };
    let client = match ctx.azure.workspace(&config) {
        Ok(c) => c,
        Err(e) => return Ok(Observed::Failed(e)),
    };
    Ok(match client.get_workspace().await {
        Ok(info) => Observed::Reached(info),
        Err(e) => Observed::Failed(e),
    })
}

async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    let uid = ws.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let observed = observe(&ws, &ctx).await?;
    let old = ws.status.clone().unwrap_or_default();
    match decide(&observed, &ws, &ctx.policy) {
        Decision::Retry => {
            // First sight: say we are working on it, so kstatus does not read "done".
            if old.conditions.is_empty() {
                let health = Health::progressing(reasons::FIRST_OBSERVED, "checking the connection to Azure");
                write(&ws, &ctx, &old, health, None, None).await?;
            }
            match observed {
                Observed::Failed(source) => Err(Error::Azure { step: "get workspace", source }),
                _ => Ok(Action::requeue(ctx.policy.backoff(1, None))),
            }
        }
        Decision::Report { health, location, workspace_id, recheck } => {
            ctx.metrics.set_phase(KIND, &uid, Some(if health.is_ready() { "Ready" } else { "Stalled" }));
            write(&ws, &ctx, &old, health, location, workspace_id).await?;
            ctx.failures.succeeded(&uid);
            Ok(Action::requeue(recheck))
        }
    }
}

async fn write(
    ws: &Workspace,
    ctx: &Context,
    old: &WorkspaceStatus,
    health: Health,
    location: Option<String>,
    workspace_id: Option<String>,
) -> Result<()> {
    let now = Time(jiff::Timestamp::now());
    let generation = ws.meta().generation;
    let conditions = conditions::compute(&old.conditions, &health, generation, &now);
    let status = WorkspaceStatus {
        location: location.or_else(|| old.location.clone()),
        workspace_id: workspace_id.or_else(|| old.workspace_id.clone()),
        observed_generation: generation,
        conditions,
    };
    publish_transition(ctx, ws, &old.conditions, &health);
    if &status != old {
        patch_status(&ctx.client, ws, &status).await?;
    }
    Ok(())
}

/// Runs the Workspace controller until shutdown.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let (workspaces, secrets) = match &namespace {
        Some(ns) => (
            Api::<Workspace>::namespaced(ctx.client.clone(), ns),
            Api::<PartialObjectMeta<Secret>>::namespaced(ctx.client.clone(), ns),
        ),
        None => (
            Api::<Workspace>::all(ctx.client.clone()),
            Api::<PartialObjectMeta<Secret>>::all(ctx.client.clone()),
        ),
    };
    let (stream, reader) = super::cached_watch(workspaces);
    let controller = Controller::for_stream(stream, reader)
        .with_config(controller::Config::default().concurrency(super::MAX_CONCURRENT_RECONCILES));
    let store = controller.store();
    controller
        // A changed Secret re-checks the Workspaces that name it (a rotated client secret or CA bundle).
        // Metadata only: the mapper needs names, and a cluster's Secrets (Helm keeps whole releases in
        // them) need not pass through the operator's memory. The reconcile reads the ones it names.
        .watches_stream(
            watcher(secrets, super::watch_config()).default_backoff().touched_objects(),
            move |secret: PartialObjectMeta<Secret>| {
                let name = secret.name_any();
                super::referring(&store, &secret, |ws| names_secret(ws, &name))
            },
        )
        .shutdown_on_signal()
        .run(reconcile, |ws, e, ctx| super::error_policy(KIND, &*ws, e, &ctx), ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn names_secret(ws: &Workspace, secret: &str) -> bool {
    ws.spec.credential.secret_ref.as_ref().is_some_and(|r| r.name == secret)
        || ws.spec.ca_bundle_secret_ref.as_ref().is_some_and(|r| r.name == secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkspaceSpec;

    fn ws() -> Workspace {
        let spec: WorkspaceSpec = serde_json::from_value(serde_json::json!({
            "subscriptionId": "00000000-0000-0000-0000-000000000001",
            "resourceGroup": "rg",
            "workspaceName": "ws1",
        }))
        .unwrap();
        Workspace::new("default", spec)
    }

    fn info() -> WorkspaceInfo {
        WorkspaceInfo {
            id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1".into(),
            name: "ws1".into(),
            location: "eastus2".into(),
            workspace_id: None,
            mlflow_tracking_uri: None,
            discovery_url: None,
            provisioning_state: Some("Succeeded".into()),
        }
    }

    fn health(d: &Decision) -> &Health {
        match d {
            Decision::Report { health, .. } => health,
            Decision::Retry => panic!("expected a report"),
        }
    }

    /// Ready only after a real authenticated GET succeeded; the location comes from Azure.
    #[test]
    fn reached_workspace_is_ready_with_location() {
        let d = decide(&Observed::Reached(info()), &ws(), &Policy::default());
        let Decision::Report { health, location, .. } = &d else { panic!() };
        assert!(health.is_ready());
        assert_eq!(health.reason(), reasons::CONNECTED);
        assert_eq!(location.as_deref(), Some("eastus2"));
    }

    /// A missing Secret is the user's to fix: Stalled with the reason the README documents.
    #[test]
    fn config_problem_stalls() {
        let p = ConfigProblem { reason: reasons::SECRET_MISSING, message: "create it".into() };
        let d = decide(&Observed::Config(p), &ws(), &Policy::default());
        assert!(health(&d).is_stalled());
        assert_eq!(health(&d).reason(), reasons::SECRET_MISSING);
    }

    fn api_error(status: u16, code: &str) -> azure::Error {
        azure::Error::Api(Box::new(azure::ApiError {
            operation: "get_workspace",
            status,
            code: Some(code.into()),
            message: format!("{code} happened"),
            target: None,
            request_id: None,
            retry_after: None,
        }))
    }

    /// 429, 5xx and timeouts are retried with backoff, never reported as a failure.
    #[test]
    fn transient_failures_retry_without_reporting() {
        for e in [api_error(429, "SubscriptionRequestsThrottled"), api_error(503, "ServiceUnavailable")] {
            let d = decide(&Observed::Failed(e), &ws(), &Policy::default());
            assert_eq!(d, Decision::Retry);
        }
    }

    /// Each permanent failure has its own reason, with a message that names the workspace.
    #[test]
    fn permanent_failures_have_their_own_reasons() {
        let cases = [
            (api_error(404, "ResourceNotFound"), reasons::WORKSPACE_NOT_FOUND),
            (api_error(401, "InvalidAuthenticationToken"), reasons::CREDENTIAL_INVALID),
            (api_error(403, "AuthorizationFailed"), reasons::AUTHORIZATION_FAILED),
        ];
        for (error, reason) in cases {
            let d = decide(&Observed::Failed(error), &ws(), &Policy::default());
            let h = health(&d);
            assert!(h.is_stalled(), "{reason}");
            assert_eq!(h.reason(), reason);
            assert!(h.message().contains("ws1") || reason == reasons::CREDENTIAL_INVALID, "{}", h.message());
        }
    }
}
