//! kstatus-compatible conditions (`Ready`, `Reconciling`, `Stalled`), computed purely from the previous
//! conditions and what a reconcile pass concluded.
//!
//! `lastTransitionTime` moves only when a condition's status flips, and every condition carries the
//! generation it describes, so `kubectl wait`, kstatus, Flux and Argo CD read progress correctly and an
//! unchanged outcome produces an identical status (no write, no watch echo).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type: the resource is done (a job succeeded) or serving (an endpoint took traffic).
pub const READY: &str = "Ready";
/// Condition type: work is in flight.
pub const RECONCILING: &str = "Reconciling";
/// Condition type: progress needs a human.
pub const STALLED: &str = "Stalled";

/// Condition reasons: CamelCase, stable, documented in the README's troubleshooting table.
pub mod reasons {
    // Shared by every kind.
    pub const SUCCEEDED: &str = "Succeeded";
    pub const PROGRESSING: &str = "Progressing";
    pub const FIRST_OBSERVED: &str = "FirstObserved";
    pub const WORKSPACE_NOT_READY: &str = "WorkspaceNotReady";
    pub const WORKSPACE_MISSING: &str = "WorkspaceMissing";
    pub const AZURE_REJECTED: &str = "AzureRejected";
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    pub const DELETING: &str = "Deleting";
    pub const DELETE_FAILED: &str = "DeleteFailed";
    pub const OPERATION_TIMED_OUT: &str = "OperationTimedOut";

    // Workspace.
    pub const SECRET_MISSING: &str = "SecretMissing";
    pub const CREDENTIAL_INVALID: &str = "CredentialInvalid";
    pub const WORKSPACE_NOT_FOUND: &str = "WorkspaceNotFound";
    pub const AUTHORIZATION_FAILED: &str = "AuthorizationFailed";
    pub const CA_BUNDLE_INVALID: &str = "CaBundleInvalid";
    pub const CONNECTED: &str = "Connected";

    // FineTuneJob.
    pub const MODEL_NOT_FOUND: &str = "ModelNotFound";
    pub const MODEL_ARCHIVED: &str = "ModelArchived";
    pub const COMPONENT_NOT_FOUND: &str = "ComponentNotFound";
    pub const COMPUTE_NOT_FOUND: &str = "ComputeNotFound";
    pub const COMPUTE_FAILED: &str = "ComputeFailed";
    pub const COMPUTE_PROVISIONING: &str = "ComputeProvisioning";
    pub const VM_SIZE_NOT_ALLOWED: &str = "VmSizeNotAllowed";
    pub const VM_SIZE_NOT_FOUND: &str = "VmSizeNotFound";
    pub const NO_GPUS: &str = "NoGpus";
    pub const UNKNOWN_PARAMETER: &str = "UnknownParameter";
    pub const INVALID_PARAMETER: &str = "InvalidParameter";
    pub const SUBMITTED: &str = "Submitted";
    pub const RUNNING: &str = "Running";
    pub const JOB_FAILED: &str = "JobFailed";
    pub const JOB_CANCELED: &str = "JobCanceled";

    // ModelRegistration.
    pub const WAITING_FOR_SOURCE: &str = "WaitingForSource";
    pub const SOURCE_FAILED: &str = "SourceFailed";
    pub const VERSION_CONFLICT: &str = "VersionConflict";
    pub const REGISTERED: &str = "Registered";

    // OnlineEndpoint.
    pub const ENDPOINT_PROVISIONING: &str = "EndpointProvisioning";
    pub const DEPLOYMENTS_PROVISIONING: &str = "DeploymentsProvisioning";
    pub const DEPLOYMENT_FAILED: &str = "DeploymentFailed";
    pub const MODEL_NOT_READY: &str = "ModelNotReady";
    pub const INSTANCE_TYPE_NOT_ALLOWED: &str = "InstanceTypeNotAllowed";
    pub const TRAFFIC_UPDATING: &str = "TrafficUpdating";
    pub const SMOKE_TEST_FAILED: &str = "SmokeTestFailed";
    pub const SERVING: &str = "Serving";
}

/// What one reconcile pass concluded, in kstatus terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Done or serving: `Ready=True`, `Reconciling=False`, `Stalled=False`.
    Ready { reason: &'static str, message: String },
    /// Work in flight: `Ready=False`, `Reconciling=True`, `Stalled=False`.
    Progressing { reason: &'static str, message: String },
    /// Needs a human: `Ready=False`, `Reconciling=False`, `Stalled=True`.
    Stalled { reason: &'static str, message: String },
}

impl Health {
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Ready { reason, message: message.into() }
    }

    pub fn progressing(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Progressing { reason, message: message.into() }
    }

    pub fn stalled(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Stalled { reason, message: message.into() }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Self::Ready { reason, .. } | Self::Progressing { reason, .. } | Self::Stalled { reason, .. } => {
                reason
            }
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Ready { message, .. }
            | Self::Progressing { message, .. }
            | Self::Stalled { message, .. } => message,
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready { .. })
    }

    pub fn is_stalled(&self) -> bool {
        matches!(self, Self::Stalled { .. })
    }
}

/// Builds the three conditions for `health`, keeping each previous `lastTransitionTime` whose status did
/// not change. Conditions of other types in `old` are kept as they are.
pub fn compute(old: &[Condition], health: &Health, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let (ready, reconciling, stalled) = match health {
        Health::Ready { .. } => ("True", "False", "False"),
        Health::Progressing { .. } => ("False", "True", "False"),
        Health::Stalled { .. } => ("False", "False", "True"),
    };
    let reason = health.reason();
    let message = health.message();
    let mut out: Vec<Condition> =
        old.iter().filter(|c| ![READY, RECONCILING, STALLED].contains(&c.type_.as_str())).cloned().collect();
    for (type_, status) in [(READY, ready), (RECONCILING, reconciling), (STALLED, stalled)] {
        let previous = old.iter().find(|c| c.type_ == type_);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        out.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out
}

/// True when two condition lists say the same thing, ignoring transition times.
pub fn same_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the conditions say `Ready=True` for the given generation (or any, with `None`).
pub fn is_ready(conditions: &[Condition], generation: Option<i64>) -> bool {
    find(conditions, READY)
        .is_some_and(|c| c.status == "True" && (generation.is_none() || c.observed_generation == generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    fn status_of<'a>(c: &'a [Condition], t: &str) -> &'a str {
        &find(c, t).unwrap().status
    }

    /// First sight of a resource: kstatus must see Reconciling=True, never an absent Ready.
    #[test]
    fn progressing_sets_reconciling_true_and_ready_false() {
        let c = compute(&[], &Health::progressing(reasons::FIRST_OBSERVED, "starting"), Some(1), &at(10));
        assert_eq!(status_of(&c, READY), "False");
        assert_eq!(status_of(&c, RECONCILING), "True");
        assert_eq!(status_of(&c, STALLED), "False");
        assert!(c.iter().all(|x| x.observed_generation == Some(1) && x.reason == "FirstObserved"));
    }

    /// A stalled resource is not reconciling: kstatus reports it as failed, not in progress.
    #[test]
    fn stalled_sets_only_stalled_true() {
        let c = compute(&[], &Health::stalled(reasons::MODEL_NOT_FOUND, "pin a version"), Some(2), &at(10));
        assert_eq!(status_of(&c, READY), "False");
        assert_eq!(status_of(&c, RECONCILING), "False");
        assert_eq!(status_of(&c, STALLED), "True");
    }

    /// Transition times move only on a status flip, so repeated passes write nothing new.
    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let first = compute(&[], &Health::progressing(reasons::SUBMITTED, "a"), Some(1), &at(10));
        let second = compute(&first, &Health::progressing(reasons::RUNNING, "b"), Some(1), &at(20));
        assert!(second.iter().all(|c| c.last_transition_time == at(10)));
        let third = compute(&second, &Health::ready(reasons::SUCCEEDED, "done"), Some(1), &at(30));
        assert_eq!(find(&third, READY).unwrap().last_transition_time, at(30));
        assert_eq!(find(&third, RECONCILING).unwrap().last_transition_time, at(30));
        // Stalled stays False throughout.
        assert_eq!(find(&third, STALLED).unwrap().last_transition_time, at(10));
    }

    /// Recomputing the same outcome is recognised as no change, which lets the reconciler skip the patch.
    #[test]
    fn same_outcome_is_no_change() {
        let a = compute(&[], &Health::ready(reasons::SUCCEEDED, "done"), Some(3), &at(10));
        let b = compute(&a, &Health::ready(reasons::SUCCEEDED, "done"), Some(3), &at(99));
        assert!(same_ignoring_time(&a, &b));
        assert_eq!(a, b);
        let c = compute(&a, &Health::ready(reasons::SUCCEEDED, "done"), Some(4), &at(99));
        assert!(!same_ignoring_time(&a, &c));
    }

    /// Conditions of other types (for example `SmokeTestPassed`) survive a recompute.
    #[test]
    fn foreign_conditions_are_kept() {
        let extra = Condition {
            type_: "SmokeTestPassed".into(),
            status: "True".into(),
            reason: "Passed".into(),
            message: "ok".into(),
            observed_generation: Some(1),
            last_transition_time: at(5),
        };
        let c =
            compute(std::slice::from_ref(&extra), &Health::ready(reasons::SERVING, "ok"), Some(1), &at(10));
        assert_eq!(c.len(), 4);
        assert_eq!(find(&c, "SmokeTestPassed"), Some(&extra));
    }

    #[test]
    fn is_ready_checks_generation() {
        let c = compute(&[], &Health::ready(reasons::SUCCEEDED, "done"), Some(2), &at(1));
        assert!(is_ready(&c, Some(2)));
        assert!(is_ready(&c, None));
        assert!(!is_ready(&c, Some(3)));
    }
}
