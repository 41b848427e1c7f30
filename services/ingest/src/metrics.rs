//! Ingest's Prometheus metrics, all prefixed `sluice_ingest_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    pub stream: String,
    pub reason: &'static str,
}

/// Handles to every ingest metric. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    pub requests: Family<StatusLabel, Counter>,
    pub requests_in_flight: Gauge,
    pub events_produced: Family<StreamLabel, Counter>,
    pub events_failed: Family<FailureLabel, Counter>,
    pub produce_latency: Histogram,
    /// `sluice_ingest_auth_failures_total{reason}`.
    pub auth: sluice_auth::AuthMetrics,
}

impl IngestMetrics {
    /// Creates the metrics and registers them in `registry` (which should carry no prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            requests_in_flight: Gauge::default(),
            events_produced: Family::default(),
            events_failed: Family::default(),
            // 0.5 ms … ~16 s
            produce_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            auth: sluice_auth::AuthMetrics::default(),
        };
        let r = registry.sub_registry_with_prefix("sluice_ingest");
        let metrics = Self {
            auth: sluice_auth::AuthMetrics::register(r),
            ..metrics
        };
        r.register(
            "requests",
            "HTTP requests answered, by status",
            metrics.requests.clone(),
        );
        r.register(
            "requests_in_flight",
            "HTTP requests being served",
            metrics.requests_in_flight.clone(),
        );
        r.register(
            "events_produced",
            "Events Kafka acknowledged, by stream",
            metrics.events_produced.clone(),
        );
        r.register(
            "events_failed",
            "Events Kafka did not acknowledge, by stream and reason",
            metrics.events_failed.clone(),
        );
        r.register_with_unit(
            "produce_latency",
            "Time from handing a request's events to the producer until Kafka acknowledged them all",
            prometheus_client::registry::Unit::Seconds,
            metrics.produce_latency.clone(),
        );
        metrics
    }
}
