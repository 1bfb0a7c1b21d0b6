//! Prometheus metrics of the Azure client: requests, latency and time spent waiting on the throttle.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a finished request. `status` is the HTTP status or a transport failure name, never
/// free text, so the label set stays small.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Client operation (`get_job`, `put_online_endpoint`, ...).
    pub operation: String,
    /// HTTP status code, or `timeout` / `connect` / `error`.
    pub status: String,
}

/// Labels carrying only the operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// Client operation.
    pub operation: String,
}

/// Labels of the throttle wait histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// `read`, `write` or `delete`.
    pub class: String,
}

fn latency_histogram() -> Histogram {
    // 10 ms .. ~40 s: ARM calls are usually 50 ms–2 s; the tail shows timeouts.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// Metric families of the Azure client. Cheap to clone (the families are shared).
#[derive(Clone, Debug)]
pub struct AzureMetrics {
    /// `azure_requests_total{operation,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `azure_request_duration_seconds{operation}`.
    pub duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    /// `azure_throttle_wait_seconds{class}`: time spent waiting for a local throttle token.
    pub throttle_wait: Family<ClassLabels, Histogram, fn() -> Histogram>,
    /// `azure_retries_total{operation}`: attempts beyond the first.
    pub retries: Family<OperationLabels, Counter>,
}

impl Default for AzureMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            throttle_wait: Family::new_with_constructor(wait_histogram),
            retries: Family::default(),
        }
    }
}

impl AzureMetrics {
    /// Registers the families (names without the `_total` suffix, which the encoder adds).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("azure_requests", "Azure requests by operation and status", self.requests.clone());
        registry.register(
            "azure_request_duration_seconds",
            "Duration of Azure requests",
            self.duration.clone(),
        );
        registry.register(
            "azure_throttle_wait_seconds",
            "Time spent waiting for a client-side ARM throttle token",
            self.throttle_wait.clone(),
        );
        registry.register("azure_retries", "Azure request retries", self.retries.clone());
    }

    pub(crate) fn record(&self, operation: &str, status: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { operation: operation.into(), status: status.into() })
            .inc();
        self.duration.get_or_create(&OperationLabels { operation: operation.into() }).observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_with_expected_names() {
        let metrics = AzureMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.record("get_job", "200", 0.05);
        metrics.throttle_wait.get_or_create(&ClassLabels { class: "read".into() }).observe(0.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains(r#"azure_requests_total{operation="get_job",status="200"} 1"#), "{text}");
        assert!(text.contains("azure_request_duration_seconds_count{operation=\"get_job\"} 1"), "{text}");
        assert!(text.contains("azure_throttle_wait_seconds_count{class=\"read\"} 1"), "{text}");
    }
}
