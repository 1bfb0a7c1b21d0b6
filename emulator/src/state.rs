//! The emulated world: every resource, its lifecycle over scaled time, and the shared server state.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use parking_lot::{Mutex, MutexGuard};
use serde_json::{Value, json};

use crate::Config;
use crate::admin::{Faults, RequestLog};
use crate::throttle::Throttle;

/// Everything the routes share.
///
/// Locks are parking_lot mutexes held only for the length of a handler's synchronous work, never across
/// an `.await`. Order: `world` may be held while taking `tokens`, `log`, `faults` or `throttle`, never the
/// other way round, and `world` is never taken twice by one handler.
pub(crate) struct Shared {
    pub config: Config,
    pub https_url: String,
    pub http_url: String,
    /// Key signing the emulator's access tokens; random per start so tokens never outlive an emulator.
    pub token_key: ring::hmac::Key,
    pub world: Mutex<World>,
    /// Token issuing policy. Locked on its own (never while waiting for `world`) because token checks
    /// run while a handler holds the world.
    pub tokens: Mutex<TokenPolicy>,
    pub log: Mutex<RequestLog>,
    pub faults: Mutex<Faults>,
    pub throttle: Mutex<Throttle>,
}

impl Shared {
    pub(crate) fn new(config: Config, https_url: String, http_url: String) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let token_key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, uuid::Uuid::new_v4().as_bytes())
        });
        let world = World::seeded(&config, &https_url);
        let throttle = Throttle::new(config.throttle.clone());
        let tokens = TokenPolicy::new(&config);
        Self {
            config,
            https_url,
            http_url,
            token_key,
            world: Mutex::new(world),
            tokens: Mutex::new(tokens),
            log: Mutex::new(RequestLog::default()),
            faults: Mutex::new(Faults::default()),
            throttle: Mutex::new(throttle),
        }
    }

    /// Locks the world after moving every pending transition whose time has come.
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        let mut world = self.world.lock();
        world.advance(Timestamp::now());
        world
    }

    /// Replaces the world with a freshly seeded one.
    pub(crate) fn reset(&self) {
        *self.world.lock() = World::seeded(&self.config, &self.https_url);
        self.throttle.lock().reset();
        *self.tokens.lock() = TokenPolicy::new(&self.config);
    }
}

/// An Azure error attached to a failed resource or operation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ErrorInfo {
    pub code: String,
    pub message: String,
}

impl ErrorInfo {
    pub(crate) fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message, "details": []})
    }
}

/// What a pending transition of a provisioned resource leads to.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Succeeded,
    Failed(ErrorInfo),
    /// The resource disappears (end of a delete).
    Removed,
}

/// A transition scheduled for a provisioned resource.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub at: Timestamp,
    pub outcome: Outcome,
    /// The long-running operation that completes with this transition.
    pub operation: Option<String>,
}

/// The provisioning state of a compute, endpoint or deployment, and what it becomes next.
#[derive(Clone, Debug)]
pub(crate) struct Provisioning {
    pub state: String,
    pub error: Option<ErrorInfo>,
    pub pending: Option<Pending>,
}

impl Provisioning {
    pub(crate) fn settled(state: &str) -> Self {
        Self { state: state.into(), error: None, pending: None }
    }

    pub(crate) fn busy(&self) -> bool {
        self.pending.is_some()
    }

    pub(crate) fn start(&mut self, state: &str, at: Timestamp, outcome: Outcome, operation: Option<String>) {
        self.state = state.into();
        self.error = None;
        self.pending = Some(Pending { at, outcome, operation });
    }
}

/// How a long-running operation is polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OperationKind {
    /// Polled through `Azure-AsyncOperation` (PUT): status bodies.
    AsyncOperation,
    /// Polled through `Location` (PATCH, DELETE, POST): 202 until done.
    Location,
}

/// A long-running operation.
#[derive(Clone, Debug)]
pub(crate) struct Operation {
    pub id: String,
    pub subscription: String,
    pub location: String,
    pub kind: OperationKind,
    pub status: String,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub error: Option<ErrorInfo>,
    /// For `Location` operations that end with a resource (PATCH): the resource's final JSON.
    pub result: Option<Value>,
    /// Which resource to render as the result when the operation ends (PATCH), as a path.
    pub result_of: Option<ResourceRef>,
    /// For operations not tied to a provisioning transition (job cancel and delete, key
    /// regeneration): when they succeed.
    pub due_at: Option<Timestamp>,
}

/// A pointer to an emulated resource.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ResourceRef {
    Endpoint { ws: String, endpoint: String },
    Deployment { ws: String, endpoint: String, deployment: String },
}

/// The key of a workspace: `sub/rg/ws`, lower-case.
pub(crate) fn ws_key(sub: &str, rg: &str, ws: &str) -> String {
    format!("{sub}/{rg}/{ws}").to_ascii_lowercase()
}

/// A workspace.
#[derive(Clone, Debug)]
pub(crate) struct Workspace {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub workspace_id: String,
    pub created: Timestamp,
}

impl Workspace {
    pub(crate) fn key(&self) -> String {
        ws_key(&self.subscription, &self.resource_group, &self.name)
    }

    pub(crate) fn arm_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

/// A service principal that can get tokens.
#[derive(Clone, Debug)]
pub(crate) struct Principal {
    pub client_id: String,
    pub client_secret: String,
    pub object_id: String,
}

/// One VM size of a location.
#[derive(Clone, Debug)]
pub(crate) struct VmSize {
    pub name: String,
    pub family: String,
    pub vcpus: u32,
    pub gpus: u32,
    pub memory_gb: f64,
    pub low_priority_capable: bool,
    pub premium_io: bool,
    pub compute_types: Vec<&'static str>,
    pub price: f64,
}

/// An AmlCompute cluster.
#[derive(Clone, Debug)]
pub(crate) struct Compute {
    pub ws: String,
    pub name: String,
    pub location: String,
    pub vm_size: String,
    pub vm_priority: String,
    pub min_nodes: u32,
    pub max_nodes: u32,
    pub idle: String,
    pub description: Option<String>,
    pub tags: Value,
    pub prov: Provisioning,
    pub created: Timestamp,
    pub modified: Timestamp,
}

/// A registry asset version (model or component).
#[derive(Clone, Debug)]
pub(crate) struct RegistryModelVersion {
    pub version: String,
    pub created: Timestamp,
    pub description: String,
    pub model_type: String,
    pub tags: BTreeMap<String, String>,
    pub properties: BTreeMap<String, String>,
    pub archived: bool,
    pub flavors: Value,
}

/// A registry model and its versions.
#[derive(Clone, Debug)]
pub(crate) struct RegistryModel {
    pub name: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub archived: bool,
    pub versions: Vec<RegistryModelVersion>,
}

/// A registry component version; `spec` is the component YAML as JSON.
#[derive(Clone, Debug)]
pub(crate) struct RegistryComponentVersion {
    pub version: String,
    pub created: Timestamp,
    pub archived: bool,
    pub spec: Value,
}

/// A registry component.
#[derive(Clone, Debug)]
pub(crate) struct RegistryComponent {
    pub name: String,
    pub description: String,
    pub versions: Vec<RegistryComponentVersion>,
}

/// A registry (e.g. `azureml`).
#[derive(Clone, Debug)]
pub(crate) struct Registry {
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub models: Vec<RegistryModel>,
    pub components: Vec<RegistryComponent>,
}

/// A pipeline job.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub ws: String,
    pub name: String,
    /// `properties` as submitted (the echo base of every GET).
    pub properties: Value,
    pub created: Timestamp,
    pub modified: Timestamp,
    /// Status changes in time order; the current status is the last one whose time has come.
    pub timeline: Vec<(String, Timestamp)>,
    pub error: Option<ErrorInfo>,
    pub experiment_id: String,
    /// Names of the pipeline's outputs.
    pub outputs: Vec<String>,
    pub created_by: String,
}

/// Job statuses that never change again.
pub(crate) const TERMINAL_JOB_STATES: [&str; 5] =
    ["Completed", "Failed", "Canceled", "NotResponding", "Paused"];

impl Job {
    pub(crate) fn status_at(&self, now: Timestamp) -> &str {
        self.timeline.iter().rev().find(|(_, at)| *at <= now).map(|(s, _)| s.as_str()).unwrap_or("NotStarted")
    }

    /// When the job entered `status`, if it has.
    pub(crate) fn entered(&self, status: &str, now: Timestamp) -> Option<Timestamp> {
        self.timeline.iter().find(|(s, at)| s == status && *at <= now).map(|(_, at)| *at)
    }

    pub(crate) fn is_terminal(&self, now: Timestamp) -> bool {
        TERMINAL_JOB_STATES.contains(&self.status_at(now))
    }

    /// Drops the future of the timeline and ends it now (cancel, injected failure).
    pub(crate) fn rewrite_future(&mut self, now: Timestamp, next: Vec<(String, Timestamp)>) {
        self.timeline.retain(|(_, at)| *at <= now);
        self.timeline.extend(next);
        self.modified = now;
    }
}

/// A workspace model version.
#[derive(Clone, Debug)]
pub(crate) struct ModelVersion {
    pub version: String,
    pub properties: Value,
    pub created: Timestamp,
    pub modified: Timestamp,
}

/// A workspace model container.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    pub ws: String,
    pub name: String,
    pub versions: Vec<ModelVersion>,
}

/// An online deployment.
#[derive(Clone, Debug)]
pub(crate) struct Deployment {
    pub name: String,
    pub location: String,
    pub tags: Value,
    pub sku: Value,
    pub properties: Value,
    pub instance_type: String,
    pub capacity: u32,
    pub prov: Provisioning,
    pub created: Timestamp,
    pub modified: Timestamp,
}

/// A managed online endpoint and its deployments.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub ws: String,
    pub name: String,
    pub location: String,
    pub tags: Value,
    pub identity: Value,
    pub kind: Option<String>,
    pub auth_mode: String,
    pub description: Option<String>,
    pub traffic: BTreeMap<String, u64>,
    pub mirror_traffic: BTreeMap<String, u64>,
    pub public_network_access: String,
    pub properties: Value,
    pub primary_key: String,
    pub secondary_key: String,
    pub prov: Provisioning,
    pub created: Timestamp,
    pub modified: Timestamp,
    pub deployments: Vec<Deployment>,
}

/// An injected failure waiting for (or applied to) a resource.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Failure {
    /// `job`, `deployment`, `compute` or `endpoint`.
    pub kind: String,
    pub name: String,
    /// For deployments: the endpoint (any endpoint when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_failure_code")]
    pub code: String,
    #[serde(default = "default_failure_message")]
    pub message: String,
}

fn default_failure_code() -> String {
    "InternalServerError".into()
}

fn default_failure_message() -> String {
    "The operation failed (injected by the emulator).".into()
}

/// Per-subscription quota of managed online deployments.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Quota {
    /// Total vCPUs all deployments of the subscription may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u64>,
    /// Total instances all deployments of the subscription may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u64>,
}

/// Token issuing policy changed by the admin API.
#[derive(Clone, Debug)]
pub(crate) struct TokenPolicy {
    pub lifetime_secs: i64,
    /// Tokens issued before this instant count as expired.
    pub expire_before: Option<Timestamp>,
}

impl TokenPolicy {
    pub(crate) fn new(config: &Config) -> Self {
        Self { lifetime_secs: config.token_lifetime_secs as i64, expire_before: None }
    }
}

/// Every emulated resource.
pub(crate) struct World {
    pub scale: f64,
    /// The HTTPS base URL, for URIs the world hands out (scoring URIs).
    pub https_url: String,
    pub tenant_id: String,
    pub principals: Vec<Principal>,
    pub workspaces: Vec<Workspace>,
    pub vm_sizes: BTreeMap<String, Vec<VmSize>>,
    pub registries: Vec<Registry>,
    pub computes: Vec<Compute>,
    pub jobs: Vec<Job>,
    pub models: Vec<Model>,
    pub endpoints: Vec<Endpoint>,
    pub operations: BTreeMap<String, Operation>,
    pub failures: Vec<Failure>,
    pub quotas: BTreeMap<String, Quota>,
    /// Experiment ids by (workspace key, experiment name).
    pub experiments: BTreeMap<(String, String), String>,
}

impl World {
    /// A real-world duration in seconds, compressed by the time scale.
    pub(crate) fn scaled(&self, azure_secs: f64) -> SignedDuration {
        SignedDuration::from_secs_f64((azure_secs / self.scale).max(0.0))
    }

    /// The `Retry-After` value (whole seconds) for an Azure poll interval, compressed by the time scale.
    pub(crate) fn retry_after(&self, azure_secs: f64) -> String {
        ((azure_secs / self.scale).ceil() as i64).max(0).to_string()
    }

    /// `x-ms-async-operation-timeout`: Azure's one hour, compressed like every other duration so a
    /// client's deadline can be exercised at a large time scale.
    pub(crate) fn operation_timeout(&self) -> String {
        format!("PT{}S", ((3600.0 / self.scale).ceil() as i64).max(1))
    }

    pub(crate) fn workspace(&self, sub: &str, rg: &str, ws: &str) -> Option<&Workspace> {
        let key = ws_key(sub, rg, ws);
        self.workspaces.iter().find(|w| w.key() == key)
    }

    pub(crate) fn vm_size(&self, location: &str, name: &str) -> Option<&VmSize> {
        self.vm_sizes
            .get(&location.to_ascii_lowercase())
            .and_then(|sizes| sizes.iter().find(|s| s.name.eq_ignore_ascii_case(name)))
    }

    pub(crate) fn registry(&self, name: &str) -> Option<&Registry> {
        self.registries.iter().find(|r| r.name.eq_ignore_ascii_case(name))
    }

    pub(crate) fn registry_mut(&mut self, name: &str) -> Option<&mut Registry> {
        self.registries.iter_mut().find(|r| r.name.eq_ignore_ascii_case(name))
    }

    pub(crate) fn compute(&self, ws: &str, name: &str) -> Option<&Compute> {
        self.computes.iter().find(|c| c.ws == ws && c.name.eq_ignore_ascii_case(name))
    }

    pub(crate) fn job(&self, ws: &str, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.ws == ws && j.name == name)
    }

    pub(crate) fn endpoint(&self, ws: &str, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.ws == ws && e.name.eq_ignore_ascii_case(name))
    }

    pub(crate) fn endpoint_mut(&mut self, ws: &str, name: &str) -> Option<&mut Endpoint> {
        self.endpoints.iter_mut().find(|e| e.ws == ws && e.name.eq_ignore_ascii_case(name))
    }

    /// Finds an endpoint by name in any workspace (the scoring host names only the endpoint).
    pub(crate) fn endpoint_any(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name.eq_ignore_ascii_case(name))
    }

    /// Takes the injected failure for a resource, if one waits for it.
    pub(crate) fn take_failure(
        &mut self,
        kind: &str,
        name: &str,
        endpoint: Option<&str>,
    ) -> Option<ErrorInfo> {
        let index = self.failures.iter().position(|f| {
            f.kind.eq_ignore_ascii_case(kind)
                && f.name.eq_ignore_ascii_case(name)
                && match (&f.endpoint, endpoint) {
                    (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        })?;
        let failure = self.failures.remove(index);
        Some(ErrorInfo::new(failure.code, failure.message))
    }

    /// Registers a long-running operation and returns its id.
    pub(crate) fn new_operation(
        &mut self,
        subscription: &str,
        location: &str,
        kind: OperationKind,
        now: Timestamp,
        result_of: Option<ResourceRef>,
    ) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.operations.insert(
            id.clone(),
            Operation {
                id: id.clone(),
                subscription: subscription.to_string(),
                location: location.to_string(),
                kind,
                status: "InProgress".into(),
                start: now,
                end: None,
                error: None,
                result: None,
                result_of,
                due_at: None,
            },
        );
        id
    }

    /// Ends an operation.
    pub(crate) fn finish_operation(&mut self, id: &str, at: Timestamp, error: Option<ErrorInfo>) {
        let result =
            self.operations.get(id).and_then(|op| op.result_of.clone()).and_then(|r| self.render_ref(&r));
        if let Some(op) = self.operations.get_mut(id) {
            op.status = if error.is_some() { "Failed".into() } else { "Succeeded".into() };
            op.end = Some(at);
            op.error = error;
            op.result = result;
        }
    }

    fn render_ref(&self, r: &ResourceRef) -> Option<Value> {
        match r {
            ResourceRef::Endpoint { ws, endpoint } => {
                let ep = self.endpoint(ws, endpoint)?;
                let w = self.workspaces.iter().find(|w| &w.key() == ws)?;
                Some(crate::endpoints::render_endpoint(self, w, ep))
            }
            ResourceRef::Deployment { ws, endpoint, deployment } => {
                let ep = self.endpoint(ws, endpoint)?;
                let dep = ep.deployments.iter().find(|d| d.name.eq_ignore_ascii_case(deployment))?;
                let w = self.workspaces.iter().find(|w| &w.key() == ws)?;
                Some(crate::endpoints::render_deployment(w, ep, dep))
            }
        }
    }

    /// Applies every scheduled transition whose time has come, in time order.
    pub(crate) fn advance(&mut self, now: Timestamp) {
        let due: Vec<(String, Timestamp)> = self
            .operations
            .values()
            .filter(|op| op.end.is_none())
            .filter_map(|op| op.due_at.filter(|at| *at <= now).map(|at| (op.id.clone(), at)))
            .collect();
        for (id, at) in due {
            self.finish_operation(&id, at, None);
        }
        while let Some((at, target)) = self.next_due(now) {
            self.apply(at, target);
        }
    }

    fn next_due(&self, now: Timestamp) -> Option<(Timestamp, Target)> {
        let mut best: Option<(Timestamp, Target)> = None;
        let mut consider = |at: Timestamp, target: Target| {
            if at <= now && best.as_ref().is_none_or(|(b, _)| at < *b) {
                best = Some((at, target));
            }
        };
        for (i, c) in self.computes.iter().enumerate() {
            if let Some(p) = &c.prov.pending {
                consider(p.at, Target::Compute(i));
            }
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if let Some(p) = &e.prov.pending {
                consider(p.at, Target::Endpoint(i));
            }
            for (j, d) in e.deployments.iter().enumerate() {
                if let Some(p) = &d.prov.pending {
                    consider(p.at, Target::Deployment(i, j));
                }
            }
        }
        best
    }

    fn apply(&mut self, at: Timestamp, target: Target) {
        let name = match target {
            Target::Compute(i) => self.computes[i].name.clone(),
            Target::Endpoint(i) => self.endpoints[i].name.clone(),
            Target::Deployment(i, j) => self.endpoints[i].deployments[j].name.clone(),
        };
        let prov = match target {
            Target::Compute(i) => &mut self.computes[i].prov,
            Target::Endpoint(i) => &mut self.endpoints[i].prov,
            Target::Deployment(i, j) => &mut self.endpoints[i].deployments[j].prov,
        };
        let Some(pending) = prov.pending.take() else { return };
        tracing::debug!(resource = %name, outcome = ?pending.outcome, "transition");
        let error = match &pending.outcome {
            Outcome::Succeeded => {
                prov.state = "Succeeded".into();
                None
            }
            Outcome::Failed(err) => {
                prov.state = "Failed".into();
                prov.error = Some(err.clone());
                Some(err.clone())
            }
            Outcome::Removed => None,
        };
        if matches!(pending.outcome, Outcome::Removed) {
            match target {
                Target::Compute(i) => {
                    self.computes.remove(i);
                }
                Target::Endpoint(i) => {
                    // Deleting the endpoint deletes its deployments; their delete operations end too.
                    let ep = self.endpoints.remove(i);
                    for op in ep.deployments.iter().filter_map(|d| d.prov.pending.as_ref()?.operation.clone())
                    {
                        self.finish_operation(&op, at, None);
                    }
                }
                Target::Deployment(i, j) => {
                    let dep = self.endpoints[i].deployments.remove(j);
                    self.endpoints[i].traffic.remove(&dep.name);
                    self.endpoints[i].mirror_traffic.remove(&dep.name);
                }
            }
        } else {
            match target {
                Target::Compute(i) => self.computes[i].modified = at,
                Target::Endpoint(i) => self.endpoints[i].modified = at,
                Target::Deployment(i, j) => self.endpoints[i].deployments[j].modified = at,
            }
        }
        if let Some(op) = pending.operation {
            self.finish_operation(&op, at, error);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Compute(usize),
    Endpoint(usize),
    Deployment(usize, usize),
}
