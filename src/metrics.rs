//! Prometheus metrics and the health endpoints (`/metrics`, `/healthz`, `/readyz`).
//!
//! Labels are static categories (kind, reason, phase), never error text, so cardinality stays bounded and
//! no secret can reach Prometheus.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    kind: &'static str,
    phase: &'static str,
}

/// The operator's own metrics.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    resources: Family<PhaseLabels, Gauge>,
    phases: Mutex<HashMap<String, (&'static str, &'static str)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            }),
            resources: Family::default(),
            phases: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Registers the families under the `azureml_operator` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("reconciles", "Reconcile passes by kind", self.reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconcile passes by kind and reason",
            self.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            self.duration.clone(),
        );
        registry.register("resources", "Custom resources by kind and phase", self.resources.clone());
    }

    /// Counts a pass and times it until the returned guard is dropped.
    pub fn reconcile_started(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        ReconcileTimer { metrics: self, kind, start: Instant::now() }
    }

    /// Counts a failed pass.
    pub fn reconcile_failed(&self, kind: &'static str, reason: &'static str) {
        self.failures.get_or_create(&FailureLabels { kind, reason }).inc();
    }

    /// Records the phase of one object (by UID); `None` forgets it (deleted).
    pub fn set_phase(&self, kind: &'static str, uid: &str, phase: Option<&'static str>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let previous = match phase {
            Some(p) => phases.insert(uid.to_owned(), (kind, p)),
            None => phases.remove(uid),
        };
        if previous == phase.map(|p| (kind, p)) {
            return;
        }
        if let Some((k, p)) = previous {
            self.resources.get_or_create(&PhaseLabels { kind: k, phase: p }).dec();
        }
        if let Some(p) = phase {
            self.resources.get_or_create(&PhaseLabels { kind, phase: p }).inc();
        }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&KindLabels { kind: self.kind })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// State behind the HTTP endpoints.
#[derive(Clone)]
pub struct HealthState {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
}

impl HealthState {
    pub fn new(registry: Registry) -> Self {
        Self { registry: Arc::new(registry), ready: Arc::new(AtomicBool::new(false)) }
    }

    /// Marks the operator ready (controllers started and caches synced).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// The router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves the router until the process ends.
pub async fn serve(addr: SocketAddr, state: HealthState) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(state)).await
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(m: &Metrics) -> String {
        let mut registry = Registry::with_prefix("azureml_operator");
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn phases_are_counted_once_per_object() {
        let m = Metrics::default();
        m.set_phase("FineTuneJob", "u1", Some("Running"));
        m.set_phase("FineTuneJob", "u1", Some("Running"));
        m.set_phase("FineTuneJob", "u2", Some("Running"));
        m.set_phase("FineTuneJob", "u1", Some("Succeeded"));
        let text = encode(&m);
        assert!(
            text.contains(r#"azureml_operator_resources{kind="FineTuneJob",phase="Running"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"azureml_operator_resources{kind="FineTuneJob",phase="Succeeded"} 1"#),
            "{text}"
        );
        m.set_phase("FineTuneJob", "u2", None);
        assert!(encode(&m).contains(r#"azureml_operator_resources{kind="FineTuneJob",phase="Running"} 0"#));
    }

    #[test]
    fn reconciles_and_failures_are_counted_by_static_labels() {
        let m = Metrics::default();
        drop(m.reconcile_started("Workspace"));
        m.reconcile_failed("Workspace", "Transient");
        let text = encode(&m);
        assert!(text.contains(r#"azureml_operator_reconciles_total{kind="Workspace"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"azureml_operator_reconcile_failures_total{kind="Workspace",reason="Transient"} 1"#
            )
        );
        assert!(text.contains(r#"azureml_operator_reconcile_duration_seconds_count{kind="Workspace"} 1"#));
    }
}
