//! W3C `traceparent` propagation from the HTTP request to the Kafka record.
//!
//! With tracing off (no `OTEL_EXPORTER_OTLP_ENDPOINT`), a valid incoming header is passed on
//! unchanged, so the producer's trace continues through Kafka to the gateway; without one,
//! ingest starts a trace of its own, so every record carries an id that logs on both sides can
//! be joined on. No span is made.
//!
//! With tracing on, each request gets a server span (child of the incoming `traceparent`) and
//! each event a producer span under it, whose context becomes the record's `traceparent`: the
//! gateway's consumer span is then that producer span's child.

use actix_web::HttpRequest;
use rand::Rng;
use sluice_telemetry::propagation;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The server span of one publish request, child of the request's trace context.
pub fn server_span(request: &HttpRequest, stream: &str) -> tracing::Span {
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(
        "publish_events",
        otel.name = "POST /v1/streams/{stream}/events",
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = "POST",
        http.route = "/v1/streams/{stream}/events",
        http.response.status_code = Empty,
        sluice.stream = %stream,
    );
    // The parent must be set before the span is first used: that is when it is built.
    let _ = span.set_parent(propagation::extract(
        header(propagation::TRACEPARENT),
        header(propagation::TRACESTATE),
    ));
    span
}

/// Records the answer on the request's server span.
pub fn record_status(span: &tracing::Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The producer span of one event (a child of the current span), ended when Kafka answers.
pub fn producer_span(topic: &str) -> tracing::Span {
    tracing::info_span!(
        "send",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %topic,
        messaging.destination.partition.id = Empty,
        messaging.kafka.offset = Empty,
    )
}

/// Whether the current span (the request's server span) is sampled.
pub fn current_is_sampled() -> bool {
    use opentelemetry::trace::TraceContextExt as _;
    tracing::Span::current().context().span().span_context().is_sampled()
}

/// The record headers that carry `span`'s context (`traceparent`, and `tracestate` if any).
pub fn headers_for(span: &tracing::Span) -> Vec<(String, String)> {
    propagation::inject(&span.context())
}

/// The `traceparent` to write on the records of this request.
pub fn traceparent(incoming: Option<&str>) -> String {
    match incoming {
        Some(value) if is_valid(value) => value.to_owned(),
        _ => mint(),
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero.
pub fn is_valid(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let non_zero = |s: &str| s.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if hex(version, 2) && *version != "ff" && hex(trace, 32) && non_zero(trace)
            && hex(parent, 16) && non_zero(parent) && hex(flags, 2))
}

/// A new trace id for the records' logs to join on, flagged "not sampled": nothing recorded the
/// span it names, so a gateway with tracing on makes no span for it.
fn mint() -> String {
    let mut rng = rand::rng();
    let trace: u128 = rng.random_range(1..=u128::MAX);
    let span: u64 = rng.random_range(1..=u64::MAX);
    format!("00-{trace:032x}-{span:016x}-00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_valid_header_and_replaces_an_invalid_one() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(Some(valid)), valid);
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let minted = traceparent(Some(bad));
            assert_ne!(minted, bad);
            assert!(is_valid(&minted), "{minted}");
        }
        assert!(is_valid(&traceparent(None)));
    }
}
