//! Produce a request's events and report, per event, what Kafka did with it.
//!
//! Records are handed to the producer in request order before any acknowledgement is awaited,
//! so one request costs one round of batches, not one round trip per event. If the producer
//! refuses a record at hand-off (queue full), the rest of the request is not sent, so a client
//! never sees a later event written while an earlier one was skipped.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use futures::future::join_all;
use serde::Serialize;
use sluice_kafka::{Delivered, KafkaError, OutRecord, Producer};

use crate::event::Event;
use crate::metrics::{FailureLabel, IngestMetrics, StreamLabel};

use sluice_kafka::headers::{
    CONTENT_TYPE as HEADER_CONTENT_TYPE, EVENT_TYPE as HEADER_EVENT_TYPE, TRACEPARENT as HEADER_TRACEPARENT,
};

/// Why one event was not written.
#[derive(Debug)]
pub enum Failure {
    /// Never handed to Kafka: it is certainly not there.
    NotSent(KafkaError),
    /// Handed to Kafka, not acknowledged: it may or may not be there.
    NotAcknowledged(KafkaError),
}

impl Failure {
    fn error(&self) -> &KafkaError {
        match self {
            Failure::NotSent(e) | Failure::NotAcknowledged(e) => e,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Failure::NotSent(_) => "not_sent",
            Failure::NotAcknowledged(_) => "not_acknowledged",
        }
    }

    fn reason(&self) -> &'static str {
        match self.error() {
            KafkaError::QueueFull => "queue_full",
            KafkaError::Timeout(_) => "timeout",
            KafkaError::RecordTooLarge(_) => "too_large",
            KafkaError::UnknownTopic(_) => "unknown_topic",
            _ => "kafka_error",
        }
    }
}

/// What happened to each event of a request, in request order.
#[derive(Debug)]
pub struct Outcome {
    pub results: Vec<Result<Delivered, Failure>>,
}

/// Produces `events` to `topic` and waits for every acknowledgement or failure. Each record
/// carries `traceparent`, or — with tracing on — the context of its own producer span.
pub async fn publish(producer: &Producer, topic: &str, events: Vec<Event>, traceparent: &str) -> Outcome {
    let mut handed: Vec<Result<sluice_kafka::Pending, Failure>> = Vec::with_capacity(events.len());
    let mut spans: Vec<Option<tracing::Span>> = Vec::new();
    // An unsampled request (most of them, at a low ratio) makes no span per event: its records
    // carry the request span's context, unsampled, so gateways make none either.
    let traced = sluice_telemetry::enabled();
    let per_event_spans = traced && crate::trace::current_is_sampled();
    let shared_headers = if traced && !per_event_spans {
        crate::trace::headers_for(&tracing::Span::current())
    } else {
        Vec::new()
    };
    let mut refused: Option<String> = None;
    for event in events {
        if let Some(reason) = &refused {
            let err = KafkaError::Task(format!("not sent because an earlier event was refused: {reason}"));
            handed.push(Err(Failure::NotSent(err)));
            continue;
        }
        let mut record = record(topic, event);
        record.headers.extend(
            shared_headers
                .iter()
                .map(|(name, value)| (name.clone(), value.as_bytes().to_vec())),
        );
        if per_event_spans {
            let span = crate::trace::producer_span(topic);
            record.headers.extend(
                crate::trace::headers_for(&span)
                    .into_iter()
                    .map(|(name, value)| (name, value.into_bytes())),
            );
            spans.resize(handed.len(), None);
            spans.push(Some(span));
        }
        if !record.headers.iter().any(|(name, _)| name == HEADER_TRACEPARENT) {
            record
                .headers
                .push((HEADER_TRACEPARENT.to_owned(), traceparent.as_bytes().to_vec()));
        }
        match producer.enqueue(&record) {
            Ok(pending) => handed.push(Ok(pending)),
            Err(err) => {
                refused = Some(err.to_string());
                handed.push(Err(Failure::NotSent(err)));
            }
        }
    }
    // librdkafka can hold an idempotent producer's in-flight records past message.timeout.ms
    // (it may not expire what a broker might still write); the client is answered on time
    // regardless, and the record is reported as not acknowledged — which is what it is.
    let timeout = producer.settings().delivery_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let results = join_all(handed.into_iter().map(|h| async move {
        match h {
            Ok(pending) => match tokio::time::timeout_at(deadline, pending.acknowledged()).await {
                Ok(result) => result.map_err(Failure::NotAcknowledged),
                Err(_) => Err(Failure::NotAcknowledged(KafkaError::Timeout(timeout))),
            },
            Err(failure) => Err(failure),
        }
    }))
    .await;
    for (span, result) in spans.iter().zip(&results) {
        if let Some(span) = span {
            end_producer_span(span, result);
        }
    }
    Outcome { results }
}

fn end_producer_span(span: &tracing::Span, result: &Result<Delivered, Failure>) {
    match result {
        Ok(delivered) => {
            span.record("messaging.destination.partition.id", delivered.partition.to_string());
            span.record("messaging.kafka.offset", delivered.offset);
        }
        Err(_) => {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The record of one event; the trace headers are added by the caller.
fn record(topic: &str, event: Event) -> OutRecord {
    let mut headers = Vec::with_capacity(4);
    if let Some(event_type) = event.event_type {
        headers.push((HEADER_EVENT_TYPE.to_owned(), event_type.into_bytes()));
    }
    headers.push((HEADER_CONTENT_TYPE.to_owned(), b"application/json".to_vec()));
    OutRecord {
        topic: topic.to_owned(),
        key: event.key.map(String::into_bytes),
        value: event.data,
        headers,
        timestamp_ms: None,
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum EventResult<'a> {
    Written {
        partition: i32,
        offset: i64,
        timestamp: i64,
    },
    Failed {
        error: ErrorDetail<'a>,
    },
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

impl Outcome {
    /// 200 with every event's position, or — when any event failed — an error status whose
    /// body still lists, per event, the position of those that were written.
    pub fn into_response(self, stream: &str, metrics: &IngestMetrics) -> HttpResponse {
        let total = self.results.len();
        let written = self.results.iter().filter(|r| r.is_ok()).count();
        metrics
            .events_produced
            .get_or_create(&StreamLabel {
                stream: stream.to_owned(),
            })
            .inc_by(written as u64);
        let events: Vec<EventResult<'_>> = self
            .results
            .iter()
            .map(|result| match result {
                Ok(d) => EventResult::Written {
                    partition: d.partition,
                    offset: d.offset,
                    timestamp: d.timestamp_ms,
                },
                Err(failure) => {
                    metrics
                        .events_failed
                        .get_or_create(&FailureLabel {
                            stream: stream.to_owned(),
                            reason: failure.reason(),
                        })
                        .inc();
                    EventResult::Failed {
                        error: ErrorDetail {
                            code: failure.code(),
                            message: failure.error().to_string(),
                        },
                    }
                }
            })
            .collect();
        if written == total {
            return HttpResponse::Ok().json(serde_json::json!({ "events": events }));
        }

        let failures = self.results.iter().filter_map(|r| r.as_ref().err());
        let (status, code) = status_for(failures);
        let message = format!(
            "Kafka acknowledged {written} of {total} events. Events with a partition and offset are written; \
             events marked not_sent are not in Kafka; events marked not_acknowledged may or may not be, \
             so retrying them can duplicate them"
        );
        let mut body = sluice_runtime::error::error_json(code, &message);
        body["events"] = serde_json::to_value(&events).unwrap_or_default();
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((actix_web::http::header::RETRY_AFTER, crate::retry_after()));
        }
        response.json(body)
    }
}

/// Retry-able failures win: the client should come back. Otherwise the first permanent cause.
fn status_for<'a>(failures: impl Iterator<Item = &'a Failure>) -> (StatusCode, &'static str) {
    let mut permanent = None;
    for failure in failures {
        let err = failure.error();
        if err.is_transient() {
            return (StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable");
        }
        permanent.get_or_insert(match err {
            KafkaError::RecordTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "event_too_large"),
            KafkaError::UnknownTopic(_) => (StatusCode::NOT_FOUND, "unknown_stream"),
            _ => (StatusCode::BAD_GATEWAY, "kafka_error"),
        });
    }
    permanent.unwrap_or((StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable"))
}
