//! OpenTelemetry traces, end to end: `sluice-ingest` and `sluice-gateway` as real processes
//! (the `OTEL_*` variables are process-wide), exporting to the test kit's OTLP receiver.

use std::time::Duration;

use serde_json::json;
use sluice_testkit::otlp::{OtlpReceiver, ReceivedSpan, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER};
use sluice_testkit::process::{Child, ProcessSignal, ServiceProcess};
use sluice_testkit::sse::Next;
use sluice_testkit::{SseStream, TestKafka};

const WAIT: Duration = Duration::from_secs(60);
/// The publisher's span: what an instrumented producer sends in its request's `traceparent`.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PUBLISHER_SPAN: &str = "00f067aa0ba902b7";

fn sampled_traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-{PUBLISHER_SPAN}-01")
}

/// Names of the process's threads (`/proc/<pid>/task/*/comm`).
fn threads(child: &Child) -> Vec<String> {
    let pid = child.pid().expect("running");
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The SDK's batch processor thread ("OpenTelemetry.Traces.BatchProcessor", cut to 15 bytes).
fn has_exporter_thread(child: &Child) -> bool {
    threads(child).iter().any(|name| name.starts_with("OpenTelemetry"))
}

async fn publish(ingest: &ServiceProcess, topic: &str, traceparent: &str) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/streams/{topic}/events", ingest.listen))
        .header("content-type", "application/json")
        .header("traceparent", traceparent)
        .body(json!({"data": {"n": 1}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn read_one(stream: &mut SseStream) {
    match stream.next(WAIT).await.unwrap() {
        Next::Event(_) => {}
        Next::Ended => panic!("the stream ended before the event"),
    }
}

/// Waits until the receiver holds a span of `trace_id` that `matches`.
async fn span_where(receiver: &OtlpReceiver, what: &str, matches: impl Fn(&ReceivedSpan) -> bool) -> ReceivedSpan {
    sluice_testkit::eventually(what, WAIT, || {
        let found = receiver.spans().into_iter().find(|s| matches(s));
        async move { found }
    })
    .await
    .unwrap()
}

/// Publishes one event with a sampled `traceparent`, streams it through a gateway, and finds
/// one trace: publisher → ingest's server span → its producer span → the gateway's consumer span.
async fn one_trace_from_publisher_to_gateway(protocol: &str) {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("e2e-trace");
    kafka.create_topic(&topic, 1).await.unwrap();
    let receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let brokers = kafka.bootstrap_servers();
    let gateway = ServiceProcess::start_with_env("sluice-gateway", brokers, &[], &env, WAIT)
        .await
        .unwrap();
    let ingest = ServiceProcess::start_with_env("sluice-ingest", brokers, &[], &env, WAIT)
        .await
        .unwrap();
    assert!(has_exporter_thread(&ingest.child) && has_exporter_thread(&gateway.child));

    let url = format!("http://{}/v1/streams/{topic}", gateway.listen);
    let mut stream = SseStream::connect(&reqwest::Client::new(), &url, None).await.unwrap();
    publish(&ingest, &topic, &sampled_traceparent(TRACE_ID)).await;
    read_one(&mut stream).await;

    let in_trace = |s: &ReceivedSpan| s.trace_id == TRACE_ID;
    let server = span_where(&receiver, "ingest's server span", |s| {
        in_trace(s) && s.service == "sluice-ingest" && s.kind == KIND_SERVER
    })
    .await;
    assert_eq!(server.parent_span_id, PUBLISHER_SPAN, "child of the incoming context");
    let producer = span_where(&receiver, "ingest's producer span", |s| {
        in_trace(s) && s.kind == KIND_PRODUCER
    })
    .await;
    assert_eq!(producer.service, "sluice-ingest");
    assert_eq!(
        producer.parent_span_id, server.span_id,
        "the producer span is the server span's child"
    );
    assert_eq!(producer.attribute("messaging.destination.name"), Some(topic.as_str()));
    let consumer = span_where(&receiver, "the gateway's consumer span", |s| {
        in_trace(s) && s.kind == KIND_CONSUMER
    })
    .await;
    assert_eq!(consumer.service, "sluice-gateway");
    assert_eq!(
        consumer.parent_span_id, producer.span_id,
        "the consumer span is the producer span's child"
    );
    assert_eq!(consumer.attribute("messaging.system"), Some("kafka"));
    assert_eq!(consumer.attribute("messaging.destination.name"), Some(topic.as_str()));
    assert_eq!(consumer.attribute("messaging.destination.partition.id"), Some("0"));
    assert_eq!(consumer.attribute("messaging.kafka.offset"), Some("0"));
    assert_eq!(consumer.attribute("sluice.subscribers"), Some("1"));
    let consumers = receiver
        .spans()
        .into_iter()
        .filter(|s| in_trace(s) && s.kind == KIND_CONSUMER)
        .count();
    assert_eq!(consumers, 1, "one consumer span per record");

    let (grpc, http) = receiver.requests();
    match protocol {
        "grpc" => assert!(grpc > 0 && http == 0, "grpc {grpc}, http {http}"),
        _ => assert!(http > 0 && grpc == 0, "grpc {grpc}, http {http}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_publisher_through_ingest_to_the_gateway_over_grpc() {
    one_trace_from_publisher_to_gateway("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_publisher_through_ingest_to_the_gateway_over_http_protobuf() {
    one_trace_from_publisher_to_gateway("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_no_exporter_runs_and_the_traceparent_still_passes_through() {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("e2e-notrace");
    kafka.create_topic(&topic, 1).await.unwrap();
    let brokers = kafka.bootstrap_servers();
    let gateway = ServiceProcess::start("sluice-gateway", brokers, &[], WAIT)
        .await
        .unwrap();
    let ingest = ServiceProcess::start("sluice-ingest", brokers, &[], WAIT)
        .await
        .unwrap();

    let url = format!("http://{}/v1/streams/{topic}", gateway.listen);
    let mut stream = SseStream::connect(&reqwest::Client::new(), &url, None).await.unwrap();
    let traceparent = sampled_traceparent(TRACE_ID);
    publish(&ingest, &topic, &traceparent).await;
    read_one(&mut stream).await;

    for (name, service) in [("sluice-ingest", &ingest), ("sluice-gateway", &gateway)] {
        assert!(
            !has_exporter_thread(&service.child),
            "{name} runs an exporter without an endpoint: {:?}",
            threads(&service.child)
        );
    }
    let records = kafka.read_records(&topic, 1, WAIT).await.unwrap();
    assert_eq!(records[0].header("traceparent"), Some(traceparent.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_flushes_the_spans_still_batched() {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("e2e-trace-drain");
    kafka.create_topic(&topic, 1).await.unwrap();
    let receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = receiver.http_endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        // Nothing is exported on a timer during the test: only the drain can send the spans.
        ("OTEL_BSP_SCHEDULE_DELAY", "3600000"),
    ];
    let mut ingest = ServiceProcess::start_with_env("sluice-ingest", kafka.bootstrap_servers(), &[], &env, WAIT)
        .await
        .unwrap();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    publish(&ingest, &topic, &sampled_traceparent(trace_id)).await;
    assert!(
        receiver.spans().iter().all(|s| s.trace_id != trace_id),
        "spans were exported before the drain"
    );

    ingest.child.signal(ProcessSignal::SIGTERM).unwrap();
    assert_eq!(ingest.child.wait(WAIT).await.unwrap(), Some(0));
    let spans: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    assert!(spans.iter().any(|s| s.kind == KIND_SERVER), "{spans:?}");
    assert!(spans.iter().any(|s| s.kind == KIND_PRODUCER), "{spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_otel_variable_exits_64_naming_it() {
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
    ];
    let args = ["--kafka-brokers=127.0.0.1:9".to_owned()];
    for binary in ["sluice-ingest", "sluice-gateway"] {
        let mut child = Child::spawn_capturing_stderr(binary, &args, &env).unwrap();
        assert_eq!(child.wait(WAIT).await.unwrap(), Some(64), "{binary}");
        let stderr = sluice_testkit::eventually("the error line", WAIT, || {
            let lines = child.stderr_lines();
            async move { (!lines.is_empty()).then_some(lines) }
        })
        .await
        .unwrap();
        assert_eq!(stderr.len(), 1, "{stderr:?}");
        assert!(stderr[0].contains("OTEL_TRACES_SAMPLER"), "{stderr:?}");
    }
}
