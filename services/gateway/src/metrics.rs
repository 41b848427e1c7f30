//! Gateway metrics, all prefixed `sluice_gateway_`. `connections_active` is the autoscaling
//! signal.

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResumeLabel {
    /// `memory` or `kafka`
    pub source: &'static str,
    /// `exact` or `gap`
    pub outcome: &'static str,
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
    pub connections_opened: Counter,
    pub connections_rejected: Family<ReasonLabel, Counter>,
    pub disconnects: Family<ReasonLabel, Counter>,
    pub events_sent: Counter,
    pub bytes_sent: Counter,
    pub resumes: Family<ResumeLabel, Counter>,
    pub catchup_readers_active: Gauge,
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    pub delivery_latency: Histogram,
    pub streams_active: Gauge,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            connections_active: Gauge::default(),
            connections_opened: Counter::default(),
            connections_rejected: Family::default(),
            disconnects: Family::default(),
            events_sent: Counter::default(),
            bytes_sent: Counter::default(),
            resumes: Family::default(),
            catchup_readers_active: Gauge::default(),
            consumer_lag: Family::default(),
            // 0.5 ms … ~16 s
            delivery_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            streams_active: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("sluice_gateway");
        r.register(
            "connections_active",
            "Open SSE connections on this pod (the autoscaling metric)",
            m.connections_active.clone(),
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
            "Record timestamp to the frame handed to the connection",
            Unit::Seconds,
            m.delivery_latency.clone(),
        );
        r.register(
            "streams_active",
            "Streams with a running feed on this pod",
            m.streams_active.clone(),
        );
        m
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
