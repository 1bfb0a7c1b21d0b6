//! The pure half of the OnlineEndpoint controller: from what one pass observed (Azure, referenced
//! ModelRegistrations, persisted operations) to the one step to take, in the order endpoint →
//! deployments → traffic → removal of unlisted deployments → keys Secret and smoke test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::api::conditions::{Health, reasons};
use crate::api::onlineendpoint::{
    AuthMode, Deployment, OnlineEndpointSpec, PendingOperation, Probe, SmokeTestResult,
};
use crate::azure::{self, OnlineDeployment, OnlineDeploymentSpec, OnlineEndpoint, ProvisioningState};

/// `PendingOperation.target` of operations on the endpoint itself.
pub const ENDPOINT_TARGET: &str = "endpoint";
/// Prefix of `PendingOperation.target` for operations on one deployment.
pub const DEPLOYMENT_TARGET_PREFIX: &str = "deployment/";

/// `PendingOperation.action` values.
pub mod actions {
    pub const CREATE: &str = "Create";
    pub const UPDATE: &str = "Update";
    pub const DELETE: &str = "Delete";
}

/// The operation target naming one deployment.
pub fn deployment_target(name: &str) -> String {
    format!("{DEPLOYMENT_TARGET_PREFIX}{name}")
}

/// Where a persisted long-running operation stood when this pass polled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpState {
    /// Still running: keep it and poll again.
    InProgress { retry_after: Duration },
    /// Done; the next GET shows the result.
    Succeeded,
    /// Azure reported a failure: a Stalled reason and a message carrying Azure's own words.
    Failed { reason: &'static str, message: String },
}

/// A persisted operation with its latest state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedOp {
    pub pending: PendingOperation,
    pub state: OpState,
}

/// The model a listed deployment should serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelState {
    /// Model id to send to Azure.
    Ready(String),
    /// The referenced ModelRegistration is missing or not Ready yet.
    Waiting(String),
}

/// VM sizes a base model may be served on (its `inference_compute_allow_list` tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    /// The base model, for the message.
    pub model: String,
    /// Allowed VM sizes.
    pub sizes: Vec<String>,
}

/// Everything one pass saw.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The endpoint name in Azure.
    pub endpoint_name: String,
    /// The workspace's region.
    pub location: String,
    /// The endpoint, if Azure has it.
    pub endpoint: Option<OnlineEndpoint>,
    /// Deployments in Azure, by name.
    pub deployments: BTreeMap<String, OnlineDeployment>,
    /// The model of each listed deployment, by deployment name.
    pub models: BTreeMap<String, ModelState>,
    /// Inference allow lists of the base models, by deployment name (absent: no list, any size).
    pub allow_lists: BTreeMap<String, AllowList>,
    /// Persisted operations, polled this pass.
    pub operations: Vec<TrackedOp>,
    /// A failure Azure reported for this generation less than a resync ago: writes that would repeat
    /// the failed request wait until then, so a stalled resource does not hammer Azure.
    pub hold: Option<Health>,
    /// The previous pass reported Ready for this generation, so a difference now is drift.
    pub was_ready: bool,
}

/// One deployment PUT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentPut {
    pub name: String,
    pub spec: OnlineDeploymentSpec,
    /// `actions::CREATE` or `actions::UPDATE`.
    pub action: &'static str,
}

/// The step of this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to send: report and come back.
    None,
    /// PUT the endpoint (create, or update description/traffic); `action` as in [`actions`].
    PutEndpoint { spec: azure::OnlineEndpointSpec, action: &'static str },
    /// PUT these deployments, in parallel.
    PutDeployments(Vec<DeploymentPut>),
    /// DELETE these deployments (no longer listed, no traffic left).
    DeleteDeployments(Vec<String>),
    /// Azure matches the spec: write the keys Secret and run the smoke test if due.
    Finish,
}

impl Step {
    /// The step's kind, for logs (the specs themselves may carry environment variables).
    pub fn kind(&self) -> &'static str {
        match self {
            Step::None => "None",
            Step::PutEndpoint { .. } => "PutEndpoint",
            Step::PutDeployments(_) => "PutDeployments",
            Step::DeleteDeployments(_) => "DeleteDeployments",
            Step::Finish => "Finish",
        }
    }
}

/// When to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// An Azure operation is running (`Retry-After` if Azure gave one).
    Operation(Option<Duration>),
    /// Waiting for another Kubernetes resource (a watch also brings us back).
    Dependency,
    /// Steady state or stalled: the GET-only drift check.
    Resync,
}

/// What `decide` concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub step: Step,
    /// Health to report if the step goes as planned.
    pub health: Health,
    pub requeue: Requeue,
    /// Differences made outside Kubernetes that this step puts back (one sentence each), for Events.
    pub drift: Vec<String>,
}

impl Plan {
    fn new(step: Step, health: Health, requeue: Requeue) -> Self {
        Self { step, health, requeue, drift: Vec::new() }
    }
}

/// The endpoint as the spec wants it, with `traffic` and `mirror` as given (empty on create).
pub fn endpoint_spec(
    spec: &OnlineEndpointSpec,
    location: &str,
    traffic: BTreeMap<String, u32>,
    mirror: BTreeMap<String, u32>,
) -> azure::OnlineEndpointSpec {
    azure::OnlineEndpointSpec {
        location: location.to_owned(),
        auth_mode: auth_mode(spec.auth_mode),
        description: spec.description.clone(),
        tags: BTreeMap::new(),
        traffic,
        mirror_traffic: mirror,
    }
}

/// The CRD's auth mode in the Azure client's terms.
pub fn auth_mode(mode: AuthMode) -> azure::AuthMode {
    match mode {
        AuthMode::Key => azure::AuthMode::Key,
        AuthMode::AmlToken => azure::AuthMode::AMLToken,
        AuthMode::AadToken => azure::AuthMode::AADToken,
    }
}

/// A percentage map of the spec in Azure's terms (negative values cannot pass the CRD; read as 0).
pub fn split(map: &BTreeMap<String, i32>) -> BTreeMap<String, u32> {
    map.iter().map(|(k, v)| (k.clone(), (*v).max(0) as u32)).collect()
}

/// Two traffic maps say the same thing when they agree on every non-zero share (Azure may list a
/// deployment with 0 or leave it out).
pub fn same_split(a: &BTreeMap<String, u32>, b: &BTreeMap<String, u32>) -> bool {
    let non_zero = |m: &BTreeMap<String, u32>| -> BTreeMap<String, u32> {
        m.iter().filter(|(_, v)| **v > 0).map(|(k, v)| (k.to_ascii_lowercase(), *v)).collect()
    };
    non_zero(a) == non_zero(b)
}

fn probe(p: &Probe) -> azure::ProbeSettings {
    let secs = |v: Option<i32>| v.map(|s| s.max(0) as u64);
    let count = |v: Option<i32>| v.map(|s| s.max(0) as u32);
    azure::ProbeSettings {
        initial_delay_seconds: secs(p.initial_delay_seconds),
        period_seconds: secs(p.period_seconds),
        timeout_seconds: secs(p.timeout_seconds),
        failure_threshold: count(p.failure_threshold),
        success_threshold: count(p.success_threshold),
    }
}

/// One listed deployment as Azure should have it.
pub fn deployment_spec(d: &Deployment, model: &str, location: &str) -> OnlineDeploymentSpec {
    OnlineDeploymentSpec {
        location: location.to_owned(),
        model: model.to_owned(),
        instance_type: d.instance_type.clone(),
        instance_count: d.instance_count.max(1) as u32,
        liveness_probe: d.liveness_probe.as_ref().map(probe),
        readiness_probe: d.readiness_probe.as_ref().map(probe),
        request_settings: d.request_settings.as_ref().map(|r| azure::RequestSettings {
            request_timeout_ms: r.request_timeout_ms.map(|v| v.max(0) as u64),
            max_concurrent_requests_per_instance: r
                .max_concurrent_requests_per_instance
                .map(|v| v.max(0) as u32),
        }),
        environment_variables: d.environment_variables.clone(),
        description: None,
        tags: BTreeMap::new(),
        app_insights_enabled: false,
    }
}

/// A workspace model reference reduced to (name, version), from `azureml:<name>:<version>` or an ARM
/// id `.../workspaces/<ws>/models/<name>/versions/<version>`.
fn workspace_model(id: &str) -> Option<(String, String)> {
    if let Some(rest) = id.strip_prefix("azureml:")
        && !rest.starts_with("//")
    {
        let (name, version) = rest.rsplit_once(':')?;
        return Some((name.to_ascii_lowercase(), version.to_owned()));
    }
    let lower = id.to_ascii_lowercase();
    if !lower.starts_with("/subscriptions/") {
        return None;
    }
    let parts: Vec<&str> = id.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        [.., m, name, v, version]
            if m.eq_ignore_ascii_case("models") && v.eq_ignore_ascii_case("versions") =>
        {
            Some((name.to_ascii_lowercase(), (*version).to_owned()))
        }
        _ => None,
    }
}

/// Whether Azure's model reference names the model we asked for. Azure may answer a short asset id
/// with the ARM id of the same version, so both forms of a workspace model compare equal.
pub fn same_model(desired: &str, observed: &str) -> bool {
    if desired.trim_end_matches('/').eq_ignore_ascii_case(observed.trim_end_matches('/')) {
        return true;
    }
    matches!((workspace_model(desired), workspace_model(observed)), (Some(a), Some(b)) if a == b)
}

/// `(registry, name, version)` of a registry model asset id
/// `azureml://registries/<registry>/models/<name>/versions/<version>`.
pub fn registry_model(id: &str) -> Option<(String, String, String)> {
    let rest = id.strip_prefix("azureml://registries/")?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        [registry, "models", name, "versions", version] => {
            Some(((*registry).to_owned(), (*name).to_owned(), (*version).to_owned()))
        }
        _ => None,
    }
}

fn probe_differs(desired: Option<&azure::ProbeSettings>, observed: Option<&azure::ProbeSettings>) -> bool {
    // Fields the spec leaves unset take Azure's defaults, so only the ones it sets are compared.
    let Some(d) = desired else { return false };
    let o = observed.cloned().unwrap_or_default();
    let differs = |want: Option<u64>, have: Option<u64>| want.is_some() && want != have;
    let differs32 = |want: Option<u32>, have: Option<u32>| want.is_some() && want != have;
    differs(d.initial_delay_seconds, o.initial_delay_seconds)
        || differs(d.period_seconds, o.period_seconds)
        || differs(d.timeout_seconds, o.timeout_seconds)
        || differs32(d.failure_threshold, o.failure_threshold)
        || differs32(d.success_threshold, o.success_threshold)
}

/// Prefix of the variables Azure ML sets in an inference container itself (`AZUREML_MODEL_DIR`, ...).
pub const AZURE_VARIABLE_PREFIX: &str = "AZUREML_";

/// Whether a variable Azure reports but the spec does not name is Azure's own, and so not drift.
fn azure_variable(name: &str) -> bool {
    name.get(..AZURE_VARIABLE_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(AZURE_VARIABLE_PREFIX))
}

/// Whether a deployment's environment variables in Azure are exactly the spec's: every variable the
/// spec sets, with its value, and no other, except ones Azure adds itself (which a PUT without them
/// would not remove, so comparing them would re-send the deployment forever). A variable removed
/// from the spec thus re-sends the deployment without it.
pub fn same_environment(desired: &BTreeMap<String, String>, observed: &BTreeMap<String, String>) -> bool {
    desired.iter().all(|(k, v)| observed.get(k) == Some(v))
        && observed.keys().all(|k| desired.contains_key(k) || azure_variable(k))
}

/// The fields of a deployment that differ between the spec and Azure (empty: nothing to write).
pub fn deployment_diff(desired: &OnlineDeploymentSpec, observed: &OnlineDeployment) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !observed.model.as_deref().is_some_and(|m| same_model(&desired.model, m)) {
        out.push("model");
    }
    if !observed.instance_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(&desired.instance_type)) {
        out.push("instanceType");
    }
    if observed.instance_count.unwrap_or(1) != desired.instance_count {
        out.push("instanceCount");
    }
    if probe_differs(desired.liveness_probe.as_ref(), observed.liveness_probe.as_ref()) {
        out.push("livenessProbe");
    }
    if probe_differs(desired.readiness_probe.as_ref(), observed.readiness_probe.as_ref()) {
        out.push("readinessProbe");
    }
    if let Some(want) = &desired.request_settings {
        let have = observed.request_settings.clone().unwrap_or_default();
        let timeout = want.request_timeout_ms.is_some() && want.request_timeout_ms != have.request_timeout_ms;
        let concurrency = want.max_concurrent_requests_per_instance.is_some()
            && want.max_concurrent_requests_per_instance != have.max_concurrent_requests_per_instance;
        if timeout || concurrency {
            out.push("requestSettings");
        }
    }
    if !same_environment(&desired.environment_variables, &observed.environment_variables) {
        out.push("environmentVariables");
    }
    out
}

/// The deployment a smoke test goes to: the one the spec names, else the one with the most traffic
/// (the first listed on a tie), else the first listed.
pub fn smoke_test_deployment(spec: &OnlineEndpointSpec) -> Option<String> {
    if let Some(name) = spec.smoke_test.as_ref().and_then(|s| s.deployment.clone()) {
        return Some(name);
    }
    let mut best: Option<(&str, i32)> = None;
    for d in &spec.deployments {
        let share = spec.traffic.get(&d.name).copied().unwrap_or(0);
        if best.is_none_or(|(_, s)| share > s) {
            best = Some((&d.name, share));
        }
    }
    best.map(|(n, _)| n.to_owned())
}

/// What is known about the smoke test's last run, for [`smoke_test_due`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SmokeRecord<'a> {
    /// The last result (kept across rollouts: it names the model it tested).
    pub last: Option<&'a SmokeTestResult>,
    /// A rollout started after the last result was recorded.
    pub rollout_since: bool,
    /// The model the target deployment serves now, as Azure reports it.
    pub serving: Option<&'a str>,
}

/// Whether the smoke test should run now: the spec has one, and it never ran, or a rollout happened
/// since (a new generation, a rollout the operator started, or another model serving than the one
/// tested), or the last run failed at least `retry_after` ago.
pub fn smoke_test_due(
    spec: &OnlineEndpointSpec,
    record: &SmokeRecord<'_>,
    generation: Option<i64>,
    now: jiff::Timestamp,
    retry_after: Duration,
) -> bool {
    if spec.smoke_test.is_none() {
        return false;
    }
    let Some(last) = record.last else { return true };
    let other_model = matches!((last.model.as_deref(), record.serving), (Some(tested), Some(serving)) if !same_model(tested, serving));
    if record.rollout_since || last.observed_generation != generation || other_model {
        return true;
    }
    !last.passed
        && last
            .time
            .as_ref()
            .is_none_or(|t| now.duration_since(t.0).unsigned_abs() >= retry_after || now < t.0)
}

fn list(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn describe_split(m: &BTreeMap<String, u32>) -> String {
    let parts: Vec<String> = m.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k}={v}%")).collect();
    if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
}

/// Pure: from what was seen to the one step to take now.
pub fn decide(spec: &OnlineEndpointSpec, obs: &Observed) -> Plan {
    let mut plan = decide_inner(spec, obs);
    if obs.was_ready {
        plan.drift = drift(spec, obs);
    }
    // A failure Azure reported for this generation is not retried until a resync has passed: keep the
    // Stalled condition and send nothing, unless the spec now asks for something else.
    match (&obs.hold, &plan.step) {
        (Some(held), Step::PutEndpoint { .. } | Step::PutDeployments(_) | Step::DeleteDeployments(_))
            if !plan.health.is_stalled() =>
        {
            // Operations still running (other deployments) keep being polled at their own pace.
            let running = obs
                .operations
                .iter()
                .filter_map(|o| match o.state {
                    OpState::InProgress { retry_after } => Some(retry_after),
                    _ => None,
                })
                .min();
            let requeue = running.map_or(Requeue::Resync, |r| Requeue::Operation(Some(r)));
            Plan::new(Step::None, held.clone(), requeue)
        }
        _ => plan,
    }
}

/// What differs in Azure from a spec that was already served: changes made outside Kubernetes.
/// Reported on the pass that first sees them (the last one that knows the resource was Ready), even
/// while Azure is still applying them and when putting them back takes several passes. A different
/// model is a rollout (a new ModelRegistration version), not drift.
fn drift(spec: &OnlineEndpointSpec, obs: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    for d in &spec.deployments {
        let (Some(ModelState::Ready(model)), Some(o)) =
            (obs.models.get(&d.name), obs.deployments.get(&d.name))
        else {
            continue;
        };
        let diff = deployment_diff(&deployment_spec(d, model, &obs.location), o);
        if !diff.is_empty() && !diff.contains(&"model") {
            out.push(format!(
                "deployment {} differed from the spec in Azure ({}); restoring it",
                d.name,
                diff.join(", ")
            ));
        }
    }
    if let Some(ep) = &obs.endpoint
        && !(same_split(&split(&spec.traffic), &ep.traffic)
            && same_split(&split(&spec.mirror_traffic), &ep.mirror_traffic))
    {
        out.push(format!(
            "traffic of endpoint {} was {} in Azure; restoring {}",
            obs.endpoint_name,
            describe_split(&ep.traffic),
            describe_split(&split(&spec.traffic))
        ));
    }
    out
}

fn decide_inner(spec: &OnlineEndpointSpec, obs: &Observed) -> Plan {
    let name = &obs.endpoint_name;
    // The CRD's CEL rules say the same; checked here too so a spec that slipped past them (an older
    // CRD, a rule the API server could not afford) stalls with a message instead of waiting forever.
    let listed: BTreeSet<&str> = spec.deployments.iter().map(|d| d.name.as_str()).collect();
    let unknown: BTreeSet<String> = spec
        .traffic
        .keys()
        .chain(spec.mirror_traffic.keys())
        .filter(|k| !listed.contains(k.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Plan::new(
            Step::None,
            Health::stalled(
                reasons::INVALID_PARAMETER,
                format!(
                    "spec.traffic or spec.mirrorTraffic names {}, which spec.deployments does not list; list it or remove its share",
                    list(&unknown)
                ),
            ),
            Requeue::Resync,
        );
    }
    let mut in_flight: BTreeSet<String> = BTreeSet::new();
    let mut failures: BTreeMap<String, Health> = BTreeMap::new();
    let mut next_poll: Option<Duration> = None;
    for op in &obs.operations {
        match &op.state {
            OpState::InProgress { retry_after } => {
                in_flight.insert(op.pending.target.clone());
                next_poll = Some(next_poll.map_or(*retry_after, |p: Duration| p.min(*retry_after)));
            }
            OpState::Failed { reason, message } => {
                failures.insert(op.pending.target.clone(), Health::stalled(reason, message.clone()));
            }
            OpState::Succeeded => {}
        }
    }
    let poll = Requeue::Operation(next_poll);

    // 1. The endpoint.
    if let Some(op) = obs
        .operations
        .iter()
        .find(|o| o.pending.target == ENDPOINT_TARGET && matches!(o.state, OpState::InProgress { .. }))
    {
        let reason = if op.pending.action == actions::CREATE {
            reasons::ENDPOINT_PROVISIONING
        } else {
            reasons::TRAFFIC_UPDATING
        };
        return Plan::new(
            Step::None,
            Health::progressing(reason, format!("waiting for Azure to finish updating endpoint {name}")),
            poll,
        );
    }
    if let Some(failed) = failures.remove(ENDPOINT_TARGET) {
        return Plan::new(Step::None, failed, Requeue::Resync);
    }
    let Some(ep) = &obs.endpoint else {
        let create = endpoint_spec(spec, &obs.location, BTreeMap::new(), BTreeMap::new());
        return Plan::new(
            Step::PutEndpoint { spec: create, action: actions::CREATE },
            Health::progressing(reasons::ENDPOINT_PROVISIONING, format!("creating endpoint {name}")),
            Requeue::Operation(None),
        );
    };
    if ep.provisioning_state.is_modifying() {
        return Plan::new(
            Step::None,
            Health::progressing(
                reasons::ENDPOINT_PROVISIONING,
                format!("endpoint {name} is {} in Azure", ep.provisioning_state),
            ),
            Requeue::Operation(None),
        );
    }
    if ep.auth_mode != auth_mode(spec.auth_mode) {
        return Plan::new(
            Step::None,
            Health::stalled(
                reasons::AZURE_REJECTED,
                format!(
                    "endpoint {name} exists in Azure with authMode {:?}, which cannot change; set spec.authMode to it or use another spec.endpointName",
                    ep.auth_mode
                ),
            ),
            Requeue::Resync,
        );
    }
    let observed_traffic = ep.traffic.clone();
    let observed_mirror = ep.mirror_traffic.clone();
    let failed_endpoint =
        matches!(ep.provisioning_state, ProvisioningState::Failed | ProvisioningState::Canceled);
    let description_differs = spec.description.is_some() && spec.description != ep.description;
    if failed_endpoint || description_differs {
        // Re-sending the endpoint keeps Azure's current traffic: traffic moves only in step 3.
        let update = endpoint_spec(spec, &obs.location, observed_traffic, observed_mirror);
        let why = if failed_endpoint {
            format!("endpoint {name} is {} in Azure; sending it again", ep.provisioning_state)
        } else {
            format!("updating the description of endpoint {name}")
        };
        return Plan::new(
            Step::PutEndpoint { spec: update, action: actions::UPDATE },
            Health::progressing(reasons::ENDPOINT_PROVISIONING, why),
            Requeue::Operation(None),
        );
    }

    // 2. Deployments, in parallel.
    let mut puts: Vec<DeploymentPut> = Vec::new();
    let mut busy: BTreeSet<String> = BTreeSet::new();
    let mut waiting: Vec<String> = Vec::new();
    let mut stalls: Vec<Health> = Vec::new();
    let mut succeeded: BTreeSet<String> = BTreeSet::new();
    for d in &spec.deployments {
        let target = deployment_target(&d.name);
        if in_flight.contains(&target) {
            busy.insert(d.name.clone());
            continue;
        }
        if let Some(failed) = failures.remove(&target) {
            stalls.push(failed);
            continue;
        }
        let model = match obs.models.get(&d.name) {
            Some(ModelState::Ready(m)) => m,
            Some(ModelState::Waiting(why)) => {
                waiting.push(why.clone());
                continue;
            }
            None => {
                waiting.push(format!("deployment {}: its model is not known yet", d.name));
                continue;
            }
        };
        let desired = deployment_spec(d, model, &obs.location);
        let action = match obs.deployments.get(&d.name) {
            Some(o) if o.provisioning_state.is_modifying() => {
                busy.insert(d.name.clone());
                continue;
            }
            Some(o) => {
                let diff = deployment_diff(&desired, o);
                let failed =
                    matches!(o.provisioning_state, ProvisioningState::Failed | ProvisioningState::Canceled);
                if diff.is_empty() && !failed {
                    if o.provisioning_state == ProvisioningState::Succeeded {
                        succeeded.insert(d.name.clone());
                    } else {
                        busy.insert(d.name.clone());
                    }
                    continue;
                }
                actions::UPDATE
            }
            None => actions::CREATE,
        };
        if let Some(allow) = obs.allow_lists.get(&d.name)
            && !allow.sizes.iter().any(|s| s.eq_ignore_ascii_case(&d.instance_type))
        {
            stalls.push(Health::stalled(
                reasons::INSTANCE_TYPE_NOT_ALLOWED,
                format!(
                    "deployment {}: {} may be served only on {}; set instanceType to one of them",
                    d.name,
                    allow.model,
                    allow.sizes.join(", ")
                ),
            ));
            continue;
        }
        puts.push(DeploymentPut { name: d.name.clone(), spec: desired, action });
    }
    let mut unlisted: Vec<String> = Vec::new();
    for (dep_name, o) in &obs.deployments {
        if listed.contains(dep_name.as_str()) {
            continue;
        }
        let target = deployment_target(dep_name);
        if let Some(failed) = failures.remove(&target) {
            stalls.push(failed);
        } else if in_flight.contains(&target) || o.provisioning_state.is_modifying() {
            busy.insert(dep_name.clone());
        } else {
            unlisted.push(dep_name.clone());
        }
    }

    let first_stall = stalls.first().cloned();
    let health_if_not_stalled = |h: Health| first_stall.clone().unwrap_or(h);
    if !puts.is_empty() {
        let names: BTreeSet<String> = puts.iter().map(|p| p.name.clone()).collect();
        return Plan::new(
            Step::PutDeployments(puts),
            health_if_not_stalled(Health::progressing(
                reasons::DEPLOYMENTS_PROVISIONING,
                format!("creating or updating deployments {}", list(&names)),
            )),
            Requeue::Operation(None),
        );
    }

    // 3. Traffic, once every deployment it names has succeeded and no deployment is changing.
    let want_traffic = split(&spec.traffic);
    let want_mirror = split(&spec.mirror_traffic);
    let traffic_matches =
        same_split(&want_traffic, &ep.traffic) && same_split(&want_mirror, &ep.mirror_traffic);
    if !traffic_matches {
        let named: BTreeSet<String> = want_traffic
            .iter()
            .chain(&want_mirror)
            .filter(|(_, v)| **v > 0)
            .map(|(k, _)| k.clone())
            .collect();
        let not_ready: BTreeSet<String> = named.iter().filter(|n| !succeeded.contains(*n)).cloned().collect();
        if not_ready.is_empty() && busy.is_empty() {
            return Plan::new(
                Step::PutEndpoint {
                    spec: endpoint_spec(spec, &obs.location, want_traffic.clone(), want_mirror.clone()),
                    action: actions::UPDATE,
                },
                health_if_not_stalled(Health::progressing(
                    reasons::TRAFFIC_UPDATING,
                    format!("setting traffic of endpoint {name} to {}", describe_split(&want_traffic)),
                )),
                Requeue::Operation(None),
            );
        }
        if let Some(stalled) = first_stall {
            return Plan::new(Step::None, stalled, Requeue::Resync);
        }
        if !waiting.is_empty() && busy.is_empty() {
            return Plan::new(
                Step::None,
                Health::progressing(reasons::MODEL_NOT_READY, waiting.join("; ")),
                Requeue::Dependency,
            );
        }
        return Plan::new(
            Step::None,
            Health::progressing(
                reasons::DEPLOYMENTS_PROVISIONING,
                format!(
                    "waiting for deployments {} to succeed before setting traffic",
                    list(&not_ready.union(&busy).cloned().collect())
                ),
            ),
            poll,
        );
    }

    // 4. Deployments no longer listed go once their traffic is gone.
    if !unlisted.is_empty() && busy.is_empty() {
        let deletable: Vec<String> = unlisted
            .iter()
            .filter(|n| {
                observed_traffic.get(*n).copied().unwrap_or(0) == 0
                    && observed_mirror.get(*n).copied().unwrap_or(0) == 0
            })
            .cloned()
            .collect();
        if !deletable.is_empty() {
            let names: BTreeSet<String> = deletable.iter().cloned().collect();
            return Plan::new(
                Step::DeleteDeployments(deletable),
                health_if_not_stalled(Health::progressing(
                    reasons::DEPLOYMENTS_PROVISIONING,
                    format!("deleting deployments {} that the spec no longer lists", list(&names)),
                )),
                Requeue::Operation(None),
            );
        }
    }

    if let Some(stalled) = first_stall {
        return Plan::new(Step::None, stalled, Requeue::Resync);
    }
    if !busy.is_empty() || !unlisted.is_empty() {
        let names: BTreeSet<String> = busy.iter().chain(&unlisted).cloned().collect();
        return Plan::new(
            Step::None,
            Health::progressing(
                reasons::DEPLOYMENTS_PROVISIONING,
                format!("waiting for Azure to finish deployments {}", list(&names)),
            ),
            poll,
        );
    }
    if !waiting.is_empty() {
        return Plan::new(
            Step::None,
            Health::progressing(reasons::MODEL_NOT_READY, waiting.join("; ")),
            Requeue::Dependency,
        );
    }

    // 5–6. Serving as specified: keys Secret, then the smoke test.
    Plan::new(
        Step::Finish,
        Health::ready(
            reasons::SERVING,
            format!("endpoint {name} serves traffic {}", describe_split(&want_traffic)),
        ),
        Requeue::Resync,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCATION: &str = "eastus2";
    const MODEL: &str = "azureml:phi3-ultrachat:1";

    fn spec(extra: serde_json::Value) -> OnlineEndpointSpec {
        let mut base = serde_json::json!({
            "authMode": "Key",
            "deployments": [{
                "name": "demo",
                "model": {"assetId": MODEL},
                "instanceType": "Standard_NC6s_v3",
                "instanceCount": 1,
                "livenessProbe": {"initialDelaySeconds": 600},
                "requestSettings": {"requestTimeoutMs": 90000}
            }],
            "traffic": {"demo": 100}
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn two_deployments(traffic: serde_json::Value) -> OnlineEndpointSpec {
        let dep = |name: &str, model: &str| serde_json::json!({"name": name, "model": {"assetId": model}, "instanceType": "Standard_NC6s_v3"});
        spec(serde_json::json!({
            "deployments": [dep("blue", "azureml:m:1"), dep("green", "azureml:m:2")],
            "traffic": traffic,
        }))
    }

    fn endpoint(state: &str, traffic: &[(&str, u32)]) -> OnlineEndpoint {
        OnlineEndpoint {
            id: "/e".into(),
            name: "ep".into(),
            location: Some(LOCATION.into()),
            auth_mode: azure::AuthMode::Key,
            provisioning_state: state.to_owned().into(),
            scoring_uri: Some("https://ep.eastus2.inference.ml.azure.com/score".into()),
            swagger_uri: None,
            traffic: traffic.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            mirror_traffic: BTreeMap::new(),
            description: None,
            tags: BTreeMap::new(),
        }
    }

    /// A deployment as Azure reports the one `spec` asked for (ARM id for the model, as Azure does).
    fn deployment(name: &str, state: &str, s: &OnlineEndpointSpec) -> OnlineDeployment {
        let d = s.deployments.iter().find(|d| d.name == name).unwrap();
        let model = d.model.asset_id.clone().unwrap();
        let (n, v) = workspace_model(&model).unwrap();
        let want = deployment_spec(d, &model, LOCATION);
        OnlineDeployment {
            id: format!("/d/{name}"),
            name: name.into(),
            provisioning_state: state.to_owned().into(),
            model: Some(format!(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/models/{n}/versions/{v}"
            )),
            instance_type: Some(want.instance_type.to_ascii_lowercase()),
            instance_count: Some(want.instance_count),
            liveness_probe: want
                .liveness_probe
                .map(|p| azure::ProbeSettings { period_seconds: Some(10), ..p }),
            readiness_probe: Some(azure::ProbeSettings { period_seconds: Some(10), ..Default::default() }),
            request_settings: want.request_settings,
            environment_variables: BTreeMap::from([("AZUREML_MODEL_DIR".into(), "/var/azureml-app".into())]),
            description: None,
            tags: BTreeMap::new(),
        }
    }

    fn observed(s: &OnlineEndpointSpec) -> Observed {
        Observed {
            endpoint_name: "ep".into(),
            location: LOCATION.into(),
            endpoint: None,
            deployments: BTreeMap::new(),
            models: s
                .deployments
                .iter()
                .map(|d| (d.name.clone(), ModelState::Ready(d.model.asset_id.clone().unwrap_or_default())))
                .collect(),
            allow_lists: BTreeMap::new(),
            operations: Vec::new(),
            hold: None,
            was_ready: false,
        }
    }

    fn with(mut o: Observed, ep: OnlineEndpoint, deps: Vec<OnlineDeployment>) -> Observed {
        o.endpoint = Some(ep);
        o.deployments = deps.into_iter().map(|d| (d.name.clone(), d)).collect();
        o
    }

    fn op(target: &str, action: &str, state: OpState) -> TrackedOp {
        TrackedOp {
            pending: PendingOperation {
                target: target.into(),
                action: action.into(),
                operation: "{}".into(),
                started: None,
            },
            state,
        }
    }

    fn put_names(p: &Plan) -> Vec<&str> {
        match &p.step {
            Step::PutDeployments(puts) => puts.iter().map(|p| p.name.as_str()).collect(),
            other => panic!("expected PutDeployments, got {other:?}"),
        }
    }

    /// Step 1: nothing in Azure yet → create the endpoint with no traffic (traffic names deployments
    /// that do not exist yet, which Azure would refuse).
    #[test]
    fn absent_endpoint_is_created_without_traffic() {
        let s = spec(serde_json::json!({"description": "d"}));
        let p = decide(&s, &observed(&s));
        let Step::PutEndpoint { spec: e, action } = &p.step else { panic!("{p:?}") };
        assert_eq!(*action, actions::CREATE);
        assert!(e.traffic.is_empty() && e.mirror_traffic.is_empty());
        assert_eq!(e.auth_mode, azure::AuthMode::Key);
        assert_eq!(e.description.as_deref(), Some("d"));
        assert_eq!(e.location, LOCATION);
        assert_eq!(p.health.reason(), reasons::ENDPOINT_PROVISIONING);
    }

    /// An endpoint operation in flight is only polled: never a second PUT.
    #[test]
    fn endpoint_operation_in_flight_waits() {
        let s = spec(serde_json::json!({}));
        let mut o = observed(&s);
        o.operations.push(op(
            ENDPOINT_TARGET,
            actions::CREATE,
            OpState::InProgress { retry_after: Duration::from_secs(7) },
        ));
        let p = decide(&s, &o);
        assert_eq!(p.step, Step::None);
        assert_eq!(p.requeue, Requeue::Operation(Some(Duration::from_secs(7))));
        assert_eq!(p.health.reason(), reasons::ENDPOINT_PROVISIONING);
    }

    /// Azure says the endpoint is Creating (an operation we lost track of): no write while it works.
    #[test]
    fn modifying_endpoint_is_left_alone() {
        let s = spec(serde_json::json!({}));
        for state in ["Creating", "Updating", "Deleting"] {
            let p = decide(&s, &with(observed(&s), endpoint(state, &[]), vec![]));
            assert_eq!(p.step, Step::None, "{state}");
            assert!(!p.health.is_ready() && !p.health.is_stalled());
        }
    }

    /// Step 2: the endpoint exists → PUT the deployment with the notebook's settings.
    #[test]
    fn deployment_is_created_after_the_endpoint() {
        let s = spec(serde_json::json!({}));
        let p = decide(&s, &with(observed(&s), endpoint("Succeeded", &[]), vec![]));
        let Step::PutDeployments(puts) = &p.step else { panic!("{p:?}") };
        assert_eq!(puts.len(), 1);
        let d = &puts[0];
        assert_eq!((d.name.as_str(), d.action), ("demo", actions::CREATE));
        assert_eq!(d.spec.model, MODEL);
        assert_eq!(d.spec.instance_count, 1);
        assert_eq!(d.spec.liveness_probe.as_ref().and_then(|p| p.initial_delay_seconds), Some(600));
        assert_eq!(d.spec.request_settings.as_ref().and_then(|r| r.request_timeout_ms), Some(90_000));
        assert_eq!(p.health.reason(), reasons::DEPLOYMENTS_PROVISIONING);
    }

    /// Deployments are created in parallel: one PUT each in the same pass.
    #[test]
    fn deployments_are_put_in_parallel() {
        let s = two_deployments(serde_json::json!({"blue": 90, "green": 10}));
        let p = decide(&s, &with(observed(&s), endpoint("Succeeded", &[]), vec![]));
        assert_eq!(put_names(&p), ["blue", "green"]);
    }

    /// A deployment with an operation in flight, or that Azure reports as changing, gets no PUT; the
    /// other one still does.
    #[test]
    fn busy_deployment_is_not_put_again() {
        let s = two_deployments(serde_json::json!({"blue": 100}));
        let mut o = with(observed(&s), endpoint("Succeeded", &[]), vec![deployment("green", "Creating", &s)]);
        o.operations.push(op(
            &deployment_target("blue"),
            actions::CREATE,
            OpState::InProgress { retry_after: Duration::from_secs(3) },
        ));
        let p = decide(&s, &o);
        assert_eq!(p.step, Step::None);
        assert_eq!(p.health.reason(), reasons::DEPLOYMENTS_PROVISIONING);
        assert_eq!(p.requeue, Requeue::Operation(Some(Duration::from_secs(3))));
    }

    /// Step 3: every named deployment succeeded → set the spec's traffic.
    #[test]
    fn traffic_is_set_once_deployments_succeed() {
        let s = spec(serde_json::json!({}));
        let o = with(observed(&s), endpoint("Succeeded", &[]), vec![deployment("demo", "Succeeded", &s)]);
        let p = decide(&s, &o);
        let Step::PutEndpoint { spec: e, action } = &p.step else { panic!("{p:?}") };
        assert_eq!(*action, actions::UPDATE);
        assert_eq!(e.traffic, BTreeMap::from([("demo".to_owned(), 100)]));
        assert_eq!(p.health.reason(), reasons::TRAFFIC_UPDATING);
        assert!(p.drift.is_empty(), "first rollout is not drift");
    }

    /// Traffic waits while a deployment it names is still being created.
    #[test]
    fn traffic_waits_for_named_deployments() {
        let s = two_deployments(serde_json::json!({"blue": 90, "green": 10}));
        let o = with(
            observed(&s),
            endpoint("Succeeded", &[]),
            vec![deployment("blue", "Succeeded", &s), deployment("green", "Creating", &s)],
        );
        let p = decide(&s, &o);
        assert_eq!(p.step, Step::None);
        assert!(p.health.message().contains("green"), "{}", p.health.message());
    }

    /// Everything matches (Azure's ARM-id model, lower-case VM size, its defaults and extra variables
    /// notwithstanding): GET-only, Ready.
    #[test]
    fn steady_state_writes_nothing() {
        let s = spec(serde_json::json!({}));
        let o = with(
            observed(&s),
            endpoint("Succeeded", &[("demo", 100)]),
            vec![deployment("demo", "Succeeded", &s)],
        );
        let p = decide(&s, &o);
        assert_eq!(p.step, Step::Finish);
        assert!(p.health.is_ready());
        assert_eq!(p.health.reason(), reasons::SERVING);
        assert_eq!(p.requeue, Requeue::Resync);
    }

    /// Drift: traffic edited in the portal after we were Ready is put back, and said so.
    #[test]
    fn traffic_drift_is_restored() {
        let s = two_deployments(serde_json::json!({"blue": 90, "green": 10}));
        let mut o = with(
            observed(&s),
            endpoint("Succeeded", &[("blue", 50), ("green", 50)]),
            vec![deployment("blue", "Succeeded", &s), deployment("green", "Succeeded", &s)],
        );
        o.was_ready = true;
        let p = decide(&s, &o);
        let Step::PutEndpoint { spec: e, .. } = &p.step else { panic!("{p:?}") };
        assert_eq!(e.traffic, BTreeMap::from([("blue".to_owned(), 90), ("green".to_owned(), 10)]));
        assert_eq!(p.drift.len(), 1);
        assert!(p.drift[0].contains("blue=50%"), "{:?}", p.drift);
    }

    /// Drift: instance count scaled in the portal is put back with a deployment PUT.
    #[test]
    fn instance_count_drift_is_restored() {
        let s = spec(serde_json::json!({}));
        let mut scaled = deployment("demo", "Succeeded", &s);
        scaled.instance_count = Some(3);
        let mut o = with(observed(&s), endpoint("Succeeded", &[("demo", 100)]), vec![scaled]);
        o.was_ready = true;
        let p = decide(&s, &o);
        assert_eq!(put_names(&p), ["demo"]);
        assert!(p.drift[0].contains("instanceCount"), "{:?}", p.drift);
    }

    /// Drift is reported at first sight even while Azure is still applying the change (nothing is
    /// sent until it settles), because later passes no longer know the resource was Ready.
    #[test]
    fn drift_on_a_changing_deployment_is_reported_at_once() {
        let s = spec(serde_json::json!({}));
        let mut scaling = deployment("demo", "Scaling", &s);
        scaling.instance_count = Some(2);
        let mut o = with(observed(&s), endpoint("Succeeded", &[("demo", 100)]), vec![scaling]);
        o.was_ready = true;
        let p = decide(&s, &o);
        assert_eq!(p.step, Step::None);
        assert_eq!(p.drift.len(), 1, "{:?}", p.drift);
        assert!(p.drift[0].contains("instanceCount"));
        // Without a Ready before, the same difference is the first rollout, not drift.
        o.was_ready = false;
        assert!(decide(&s, &o).drift.is_empty());
    }

    /// Traffic and a deployment drifted together: both are reported on the first pass, which restores
    /// the deployment (traffic follows once it has succeeded again).
    #[test]
    fn simultaneous_drift_is_reported_at_once() {
        let s = two_deployments(serde_json::json!({"blue": 100}));
        let mut green = deployment("green", "Succeeded", &s);
        green.instance_count = Some(3);
        let mut o = with(
            observed(&s),
            endpoint("Succeeded", &[("blue", 20), ("green", 80)]),
            vec![deployment("blue", "Succeeded", &s), green],
        );
        o.was_ready = true;
        let p = decide(&s, &o);
        assert_eq!(put_names(&p), ["green"]);
        assert_eq!(p.drift.len(), 2, "{:?}", p.drift);
        assert!(
            p.drift.iter().any(|d| d.contains("traffic"))
                && p.drift.iter().any(|d| d.contains("instanceCount"))
        );
    }

    /// A new model version (ModelRegistration rolled) updates the deployment; that is a rollout, not drift.
    #[test]
    fn new_model_rolls_the_deployment() {
        let s = spec(serde_json::json!({}));
        let mut o = with(
            observed(&s),
            endpoint("Succeeded", &[("demo", 100)]),
            vec![deployment("demo", "Succeeded", &s)],
        );
        o.models.insert("demo".into(), ModelState::Ready("azureml:phi3-ultrachat:2".into()));
        o.was_ready = true;
        let p = decide(&s, &o);
        let Step::PutDeployments(puts) = &p.step else { panic!("{p:?}") };
        assert_eq!(
            (puts[0].action, puts[0].spec.model.as_str()),
            (actions::UPDATE, "azureml:phi3-ultrachat:2")
        );
        assert!(p.drift.is_empty());
    }

    /// A ModelRegistration that is not Ready holds its deployment (ModelNotReady), not the endpoint.
    #[test]
    fn unready_model_waits() {
        let s = spec(serde_json::json!({}));
        let mut o = with(observed(&s), endpoint("Succeeded", &[]), vec![]);
        o.models.insert(
            "demo".into(),
            ModelState::Waiting("deployment demo waits for ModelRegistration m".into()),
        );
        let p = decide(&s, &o);
        assert_eq!(p.step, Step::None);
        assert_eq!(p.health.reason(), reasons::MODEL_NOT_READY);
        assert_eq!(p.requeue, Requeue::Dependency);
    }

    /// The base model's inference allow list refuses the instance type: Stalled, nothing sent.
    #[test]
    fn instance_type_outside_the_allow_list_stalls() {
        let s = spec(serde_json::json!({}));
        let mut o = with(observed(&s), endpoint("Succeeded", &[]), vec![]);
        o.allow_lists.insert(
            "demo".into(),
            AllowList {
                model: "Phi-3-mini-4k-instruct:15".into(),
                sizes: vec!["Standard_NC24ads_A100_v4".into()],
            },
        );
        let p = decide(&s, &o);
        assert_eq!(p.step, Step::None);
        assert_eq!(p.health.reason(), reasons::INSTANCE_TYPE_NOT_ALLOWED);
        assert!(p.health.message().contains("Standard_NC24ads_A100_v4"));
        // The same list containing the size (any case) lets it through.
        o.allow_lists.get_mut("demo").unwrap().sizes.push("standard_nc6s_v3".into());
        assert_eq!(put_names(&decide(&s, &o)), ["demo"]);
    }

    /// A deployment operation Azure failed (quota) stalls with Azure's message.
    #[test]
    fn failed_deployment_operation_stalls_with_azures_message() {
        let s = spec(serde_json::json!({}));
        let mut o = with(observed(&s), endpoint("Succeeded", &[]), vec![deployment("demo", "Failed", &s)]);
        o.operations.push(op(
            &deployment_target("demo"),
            actions::CREATE,
            OpState::Failed { reason: reasons::QUOTA_EXCEEDED, message: "Not enough quota for NCSv3".into() },
        ));
        let p = decide(&s, &o);
        assert_eq!(p.step, Step::None);
        assert_eq!(p.health, Health::stalled(reasons::QUOTA_EXCEEDED, "Not enough quota for NCSv3"));
        assert_eq!(p.requeue, Requeue::Resync);
    }

    /// A failure held from an earlier pass of this generation: the failed request is not re-sent.
    #[test]
    fn held_failure_sends_nothing() {
        let s = spec(serde_json::json!({}));
        let mut o = with(observed(&s), endpoint("Succeeded", &[]), vec![deployment("demo", "Failed", &s)]);
        let held = Health::stalled(reasons::DEPLOYMENT_FAILED, "Azure failed deployment demo");
        o.hold = Some(held.clone());
        let p = decide(&s, &o);
        assert_eq!((p.step, p.health, p.requeue), (Step::None, held.clone(), Requeue::Resync));
        // Another deployment's operation still running keeps being polled meanwhile.
        o.operations.push(op(
            &deployment_target("other"),
            actions::CREATE,
            OpState::InProgress { retry_after: Duration::from_secs(4) },
        ));
        assert_eq!(decide(&s, &o).requeue, Requeue::Operation(Some(Duration::from_secs(4))));
        o.operations.clear();
        // Once the hold has expired, the Failed deployment is sent again.
        o.hold = None;
        assert_eq!(put_names(&decide(&s, &o)), ["demo"]);
    }

    /// Blue/green, step 1: traffic 90/10 → 0/100 is one endpoint update while both deployments stay.
    #[test]
    fn blue_green_shifts_traffic_first() {
        let s = spec(serde_json::json!({
            "deployments": [{"name": "green", "model": {"assetId": "azureml:m:2"}, "instanceType": "Standard_NC6s_v3"}],
            "traffic": {"green": 100},
        }));
        let old = two_deployments(serde_json::json!({}));
        let o = with(
            observed(&s),
            endpoint("Succeeded", &[("blue", 90), ("green", 10)]),
            vec![deployment("blue", "Succeeded", &old), deployment("green", "Succeeded", &old)],
        );
        let p = decide(&s, &o);
        let Step::PutEndpoint { spec: e, .. } = &p.step else { panic!("{p:?}") };
        assert_eq!(e.traffic, BTreeMap::from([("green".to_owned(), 100)]));
    }

    /// Blue/green, step 2: the old deployment goes once its traffic is gone.
    #[test]
    fn unlisted_deployment_is_deleted_after_its_traffic() {
        let s = spec(serde_json::json!({
            "deployments": [{"name": "green", "model": {"assetId": "azureml:m:2"}, "instanceType": "Standard_NC6s_v3"}],
            "traffic": {"green": 100},
        }));
        let old = two_deployments(serde_json::json!({}));
        let o = with(
            observed(&s),
            endpoint("Succeeded", &[("blue", 0), ("green", 100)]),
            vec![deployment("blue", "Succeeded", &old), deployment("green", "Succeeded", &old)],
        );
        let p = decide(&s, &o);
        assert_eq!(p.step, Step::DeleteDeployments(vec!["blue".into()]));
        // While the delete runs: wait, not Ready.
        let mut o = o;
        o.operations.push(op(
            &deployment_target("blue"),
            actions::DELETE,
            OpState::InProgress { retry_after: Duration::from_secs(5) },
        ));
        let p = decide(&s, &o);
        assert_eq!(p.step, Step::None);
        assert!(!p.health.is_ready());
    }

    /// A deployment removed from the spec that still has traffic is not deleted before traffic moves.
    #[test]
    fn unlisted_deployment_with_traffic_is_kept() {
        let s = spec(serde_json::json!({}));
        let old = two_deployments(serde_json::json!({}));
        let mut blue = deployment("blue", "Succeeded", &old);
        blue.name = "blue".into();
        let o = with(
            observed(&s),
            endpoint("Succeeded", &[("blue", 100)]),
            vec![blue, deployment("demo", "Succeeded", &s)],
        );
        let p = decide(&s, &o);
        let Step::PutEndpoint { spec: e, .. } = &p.step else { panic!("{p:?}") };
        assert_eq!(e.traffic, BTreeMap::from([("demo".to_owned(), 100)]));
    }

    /// Traffic for a deployment the spec does not list stalls before anything is sent.
    #[test]
    fn traffic_for_an_unlisted_deployment_stalls() {
        let s = spec(serde_json::json!({"traffic": {"demo": 50, "ghost": 50}}));
        let p = decide(&s, &observed(&s));
        assert_eq!(p.step, Step::None);
        assert_eq!(p.health.reason(), reasons::INVALID_PARAMETER);
        assert!(p.health.message().contains("ghost"), "{}", p.health.message());
    }

    /// An endpoint created outside with another auth mode cannot be fixed by a PUT: Stalled.
    #[test]
    fn auth_mode_mismatch_stalls() {
        let s = spec(serde_json::json!({"authMode": "AMLToken"}));
        let p = decide(&s, &with(observed(&s), endpoint("Succeeded", &[]), vec![]));
        assert!(p.health.is_stalled(), "{p:?}");
        assert_eq!(p.step, Step::None);
    }

    #[test]
    fn model_references_compare_across_forms() {
        let arm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/models/Phi3-ft/versions/7";
        assert!(same_model("azureml:phi3-ft:7", arm));
        assert!(same_model(arm, arm));
        assert!(!same_model("azureml:phi3-ft:8", arm));
        let reg = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15";
        assert!(same_model(reg, reg));
        assert!(!same_model(reg, "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/14"));
        assert_eq!(
            registry_model(reg),
            Some(("azureml".into(), "Phi-3-mini-4k-instruct".into(), "15".into()))
        );
        assert_eq!(registry_model("azureml:x:1"), None);
    }

    #[test]
    fn zero_shares_do_not_count_as_traffic() {
        let a = BTreeMap::from([("blue".to_owned(), 0), ("green".to_owned(), 100)]);
        let b = BTreeMap::from([("green".to_owned(), 100)]);
        assert!(same_split(&a, &b));
        assert!(!same_split(&a, &BTreeMap::new()));
    }

    /// The smoke test goes to the named deployment, else to the one with most traffic.
    #[test]
    fn smoke_test_target() {
        let s = two_deployments(serde_json::json!({"blue": 10, "green": 90}));
        assert_eq!(smoke_test_deployment(&s).as_deref(), Some("green"));
        let mut named = s.clone();
        named.smoke_test =
            Some(serde_json::from_value(serde_json::json!({"deployment": "blue", "request": {}})).unwrap());
        assert_eq!(smoke_test_deployment(&named).as_deref(), Some("blue"));
    }

    /// The smoke test runs after each rollout (a new generation, a rollout the operator started, or
    /// another model serving than the one tested), and a failed one is retried after a resync period,
    /// not on every pass.
    #[test]
    fn smoke_test_due_rules() {
        let mut s = spec(serde_json::json!({}));
        let now = jiff::Timestamp::from_second(10_000).unwrap();
        let wait = Duration::from_secs(600);
        let never = SmokeRecord::default();
        assert!(!smoke_test_due(&s, &never, Some(1), now, wait), "no smoke test in the spec");
        s.smoke_test =
            Some(serde_json::from_value(serde_json::json!({"request": {"input_data": {}}})).unwrap());
        assert!(smoke_test_due(&s, &never, Some(1), now, wait));
        let result = |passed: bool, generation: i64, at: i64| SmokeTestResult {
            time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(at).unwrap(),
            )),
            deployment: "demo".into(),
            model: Some(MODEL.into()),
            passed,
            observed_generation: Some(generation),
            ..Default::default()
        };
        let last = |r: &SmokeTestResult| -> bool {
            let record = SmokeRecord { last: Some(r), rollout_since: false, serving: Some(MODEL) };
            smoke_test_due(&s, &record, Some(1), now, wait)
        };
        assert!(!last(&result(true, 1, 9_990)));
        assert!(last(&result(true, 0, 9_990)), "tested for an older generation");
        assert!(!last(&result(false, 1, 9_990)), "failed, but retried only after a resync");
        assert!(last(&result(false, 1, 9_000)));
    }

    /// A result kept through a rollout does not stand for the new model: the test is owed once a
    /// rollout started, and whenever Azure serves another model than the one the result names (Azure's
    /// ARM id of the same version counts as the same model).
    #[test]
    fn kept_smoke_result_is_owed_after_a_rollout() {
        let mut s = spec(serde_json::json!({}));
        s.smoke_test = Some(serde_json::from_value(serde_json::json!({"request": {}})).unwrap());
        let now = jiff::Timestamp::from_second(10_000).unwrap();
        let wait = Duration::from_secs(600);
        let passed = SmokeTestResult {
            time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(9_990).unwrap(),
            )),
            deployment: "demo".into(),
            model: Some(MODEL.into()),
            passed: true,
            observed_generation: Some(1),
            ..Default::default()
        };
        let due = |rollout_since: bool, serving: Option<&str>| {
            let record = SmokeRecord { last: Some(&passed), rollout_since, serving };
            smoke_test_due(&s, &record, Some(1), now, wait)
        };
        let arm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/models/phi3-ultrachat/versions/1";
        assert!(!due(false, Some(arm)), "same version, other form");
        assert!(due(true, Some(arm)), "a rollout started since the result");
        assert!(due(false, Some("azureml:phi3-ultrachat:2")), "another version serves");
        assert!(!due(false, None), "nothing known about what serves: the result stands");
    }

    /// A variable removed from the spec is removed in Azure: the deployment differs until it is gone,
    /// while variables Azure adds itself (AZUREML_*) never count, so steady state stays GET-only.
    #[test]
    fn environment_variables_converge_to_the_spec() {
        let s = spec(serde_json::json!({}));
        let with_env = |vars: serde_json::Value| {
            let mut s = s.clone();
            s.deployments[0].environment_variables = serde_json::from_value(vars).unwrap();
            s
        };
        let old = with_env(serde_json::json!({"LOG_LEVEL": "debug", "MAX_TOKENS": "200"}));
        // Azure as the old spec left it, plus its own variable (see the `deployment` fixture).
        let mut in_azure = deployment("demo", "Succeeded", &old);
        in_azure.environment_variables.extend(old.deployments[0].environment_variables.clone());
        let o = with(observed(&old), endpoint("Succeeded", &[("demo", 100)]), vec![in_azure.clone()]);
        assert_eq!(decide(&old, &o).step, Step::Finish, "Azure's own AZUREML_MODEL_DIR is not drift");

        let new = with_env(serde_json::json!({"LOG_LEVEL": "debug"}));
        let o = with(observed(&new), endpoint("Succeeded", &[("demo", 100)]), vec![in_azure.clone()]);
        let p = decide(&new, &o);
        let Step::PutDeployments(puts) = &p.step else { panic!("{p:?}") };
        assert_eq!(
            puts[0].spec.environment_variables,
            BTreeMap::from([("LOG_LEVEL".to_owned(), "debug".to_owned())])
        );
        assert_eq!(deployment_diff(&puts[0].spec, &in_azure), ["environmentVariables"]);

        // Every variable removed: the PUT carries none.
        let none = with_env(serde_json::json!({}));
        let o = with(observed(&none), endpoint("Succeeded", &[("demo", 100)]), vec![in_azure.clone()]);
        let p = decide(&none, &o);
        let Step::PutDeployments(puts) = &p.step else { panic!("{p:?}") };
        assert!(puts[0].spec.environment_variables.is_empty());
        // A changed value differs too; a variable added in the portal is drift.
        assert!(!same_environment(
            &new.deployments[0].environment_variables,
            &BTreeMap::from([("LOG_LEVEL".to_owned(), "info".to_owned())])
        ));
        let mut portal = new.deployments[0].environment_variables.clone();
        portal.insert("EXTRA".into(), "1".into());
        assert!(!same_environment(&new.deployments[0].environment_variables, &portal));
        portal.remove("EXTRA");
        portal.insert("azureml_model_dir".into(), "/var/azureml-app".into());
        assert!(same_environment(&new.deployments[0].environment_variables, &portal));
    }
}
