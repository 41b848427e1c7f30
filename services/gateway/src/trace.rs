//! OpenTelemetry spans of the gateway, made only while tracing is on
//! ([`sluice_telemetry::enabled`]):
//!
//! - a consumer span per Kafka record whose `traceparent` is sampled, child of it (so of
//!   ingest's producer span), made once per record on the live path, however many subscribers
//!   read it; a record without a sampled `traceparent` costs a look at one header byte;
//! - a server span per stream opened, child of the request's `traceparent`, saying where the
//!   subscriber starts (memory or Kafka) and whether its cursor resumes exactly.

use actix_web::HttpRequest;
use sluice_telemetry::propagation;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::kafka::Record;

/// The consumer span of `record` when tracing is on and the record's trace is sampled.
pub fn consumer_span(stream: &str, topic: &str, record: &Record, subscribers: usize) -> Option<tracing::Span> {
    if !sluice_telemetry::enabled() {
        return None;
    }
    let parent = propagation::sampled_record_context(record.headers.traceparent.as_deref())?;
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = %topic,
        messaging.destination.partition.id = %record.partition,
        messaging.kafka.offset = record.offset,
        sluice.stream = %stream,
        sluice.subscribers = subscribers as u64,
    );
    let _ = span.set_parent(parent);
    Some(span)
}

/// The server span of one stream being opened, child of the request's trace context.
pub fn open_span(request: &HttpRequest, stream: &str) -> tracing::Span {
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(
        "open_stream",
        otel.name = "GET /v1/streams/{stream}",
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = "GET",
        http.route = "/v1/streams/{stream}",
        http.response.status_code = Empty,
        sluice.stream = %stream,
        sluice.resumed = Empty,
        sluice.start = Empty,
        sluice.resume = Empty,
        sluice.resets = Empty,
    );
    let _ = span.set_parent(propagation::extract(
        header(propagation::TRACEPARENT),
        header(propagation::TRACESTATE),
    ));
    span
}
