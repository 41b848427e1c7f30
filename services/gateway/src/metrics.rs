//! Gateway metrics, all prefixed `sluice_gateway_`. `connections_active` is the autoscaling
//! signal; the SLO rules and dashboards (deploy/observability) read the others.
//!
//! Labels stay bounded: reasons and outcomes are fixed sets, and `stream` takes only streams
//! this pod has a feed for (names that passed the allow-list and exist as topics; a client
//! cannot invent one), the same set `consumer_lag` is labelled with.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// A poll's outcome: `events`, `empty`, `gap`, or the error code it was refused with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResumeLabel {
    /// `memory` or `kafka`
    pub source: &'static str,
    /// `exact` or `gap`
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

/// A histogram family's constructor: every histogram gets the same buckets.
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms … ~16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub stream: String,
    pub partition: u32,
}

/// Handles to every gateway metric. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub connections_active: Gauge,
    /// `--max-connections`, so dashboards and alerts compare `connections_active` with it.
    pub connections_limit: Gauge,
    /// Every SSE request that reached the handler: opened + rejected + those whose client left
    /// before either (the connection-success SLI's denominator).
    pub connection_attempts: Counter,
    pub connections_opened: Counter,
    pub connections_rejected: Family<ReasonLabel, Counter>,
    pub disconnects: Family<ReasonLabel, Counter>,
    pub events_sent: Counter,
    pub bytes_sent: Counter,
    pub resumes: Family<ResumeLabel, Counter>,
    pub catchup_readers_active: Gauge,
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    delivery_latency: HistogramFamily<StreamLabel>,
    pub streams_active: Gauge,
    pub subscribers_active: Gauge,
    pub polls: Family<OutcomeLabel, Counter>,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            connections_active: Gauge::default(),
            connections_limit: Gauge::default(),
            connection_attempts: Counter::default(),
            connections_opened: Counter::default(),
            connections_rejected: Family::default(),
            disconnects: Family::default(),
            events_sent: Counter::default(),
            bytes_sent: Counter::default(),
            resumes: Family::default(),
            catchup_readers_active: Gauge::default(),
            consumer_lag: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            streams_active: Gauge::default(),
            subscribers_active: Gauge::default(),
            polls: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("sluice_gateway");
        r.register(
            "connections_active",
            "Open SSE connections on this pod (the autoscaling metric)",
            m.connections_active.clone(),
        );
        r.register(
            "connections_limit",
            "Most SSE connections this pod accepts (--max-connections)",
            m.connections_limit.clone(),
        );
        r.register(
            "connection_attempts",
            "SSE requests received (opened, rejected, or abandoned by the client before either)",
            m.connection_attempts.clone(),
        );
        r.register(
            "polls",
            "Polls answered (`events`, `empty`, `gap`) or refused (the error code), by outcome",
            m.polls.clone(),
        );
        r.register(
            "connections_opened",
            "SSE connections accepted",
            m.connections_opened.clone(),
        );
        r.register(
            "connections_rejected",
            "SSE requests refused, by reason",
            m.connections_rejected.clone(),
        );
        r.register("disconnects", "SSE connections ended, by reason", m.disconnects.clone());
        r.register(
            "events_sent",
            "Events written to subscribers (one per subscriber per event)",
            m.events_sent.clone(),
        );
        r.register_with_unit(
            "sent",
            "Bytes written to subscribers",
            Unit::Bytes,
            m.bytes_sent.clone(),
        );
        r.register(
            "resumes",
            "Streams started from a cursor, by where the history came from and whether some was lost",
            m.resumes.clone(),
        );
        r.register(
            "catchup_readers_active",
            "Kafka readers serving subscribers behind memory",
            m.catchup_readers_active.clone(),
        );
        r.register(
            "consumer_lag",
            "Records in Kafka the stream's feed has not read yet, per partition",
            m.consumer_lag.clone(),
        );
        r.register_with_unit(
            "delivery_latency",
            "Record timestamp to the frame handed to the connection (event age at delivery), by stream",
            Unit::Seconds,
            m.delivery_latency.clone(),
        );
        r.register(
            "streams_active",
            "Streams with a running feed on this pod",
            m.streams_active.clone(),
        );
        r.register(
            "subscribers_active",
            "Subscribers running on this pod: one per single-stream connection, one per stream of a several-stream connection or of a poll in progress",
            m.subscribers_active.clone(),
        );
        m
    }

    /// The delivery-latency histogram of `stream`, looked up once per feed so deliveries never
    /// touch the family's map.
    pub fn delivery_latency(&self, stream: &str) -> Histogram {
        self.delivery_latency
            .get_or_create(&StreamLabel {
                stream: stream.to_owned(),
            })
            .clone()
    }

    pub fn set_lag(&self, stream: &str, partition: usize, lag: i64) {
        self.consumer_lag
            .get_or_create(&PartitionLabel {
                stream: stream.to_owned(),
                partition: partition as u32,
            })
            .set(lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_latency_is_one_histogram_per_stream_with_the_bucket_the_slo_reads() {
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        metrics.delivery_latency("orders").observe(0.2);
        metrics.delivery_latency("orders").observe(3.0);
        metrics.delivery_latency("prices").observe(0.01);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        // deploy/observability/prometheus/sluice-rules.yaml's event-age SLO counts `le="1.024"`.
        assert!(
            text.contains(r#"sluice_gateway_delivery_latency_seconds_bucket{le="1.024",stream="orders"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_gateway_delivery_latency_seconds_count{stream="orders"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_gateway_delivery_latency_seconds_count{stream="prices"} 1"#),
            "{text}"
        );
    }
}
