//! Service tests: `sluice-ingest` in-process on port 0, real HTTP requests, and the test kit's
//! Kafka (the embedded broker by default, a real one with `SLUICE_TEST_KAFKA_BROKERS`). Every
//! published event is read back with a plain rdkafka consumer.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_kafka::headers;
use sluice_kafka::murmur2::partition_for_key;

mod support;

use support::{Fixture, READ_TIMEOUT};

impl Fixture {
    async fn post(&self, stream: &str, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .http
            .post(self.ingest.url(&format!("/v1/streams/{stream}/events")))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn post_json(&self, stream: &str, body: Value) -> (u16, Value) {
        self.post(stream, "application/json", body.to_string()).await
    }

    /// Publishes two keyed events tagged `tag`; returns the status, the reply and their data.
    async fn publish_pair(&self, stream: &str, tag: &str) -> (u16, Value, Vec<String>) {
        let data = vec![format!("{tag}-a"), format!("{tag}-b")];
        let body = json!([{"key": data[0], "data": data[0]}, {"key": data[1], "data": data[1]}]);
        let (status, reply) = self.post_json(stream, body).await;
        (status, reply, data)
    }
}

fn positions(body: &Value) -> Vec<(i32, i64)> {
    body["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| (e["partition"].as_i64().unwrap() as i32, e["offset"].as_i64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_array_and_ndjson_publishes_read_back_exactly() {
    let f = Fixture::start().await;
    let topic = f.topic(1).await;

    let (status, one) = f
        .post_json(
            &topic,
            json!({"type": "greeting", "key": "user-1", "data": {"hello": "world"}}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    let (status, array) = f
        .post_json(
            &topic,
            json!([{"data": 1}, {"key": "user-2", "data": [2, "two"]}, {"type": "t", "data": null}]),
        )
        .await;
    assert_eq!(status, 200, "{array}");
    let ndjson = "{\"data\":\"a\"}\n\n{\"key\":\"k\",\"type\":\"nd\",\"data\":{\"b\": true}}\n";
    let (status, nd) = f.post(&topic, "application/x-ndjson", ndjson).await;
    assert_eq!(status, 200, "{nd}");

    let mut reported = positions(&one);
    reported.extend(positions(&array));
    reported.extend(positions(&nd));
    assert_eq!(reported.len(), 6);
    for event in one["events"].as_array().unwrap() {
        assert!(
            event["timestamp"].as_i64().unwrap() > 1_600_000_000_000,
            "timestamp in ms: {event}"
        );
    }

    let records = f.kafka.read_records(&topic, 6, READ_TIMEOUT).await.unwrap();
    let expected: [(Option<&str>, Option<&str>, &str); 6] = [
        (Some("user-1"), Some("greeting"), r#"{"hello":"world"}"#),
        (None, None, "1"),
        (Some("user-2"), None, r#"[2,"two"]"#),
        (None, Some("t"), "null"),
        (None, None, r#""a""#),
        (Some("k"), Some("nd"), r#"{"b": true}"#),
    ];
    // One partition: Kafka order is request order, and offsets are the ones reported.
    for (i, (record, (key, event_type, value))) in records.iter().zip(expected).enumerate() {
        assert_eq!((record.partition, record.offset), reported[i], "record {i}");
        assert_eq!(record.key.as_deref(), key.map(str::as_bytes), "record {i} key");
        assert_eq!(record.value.as_deref(), Some(value.as_bytes()), "record {i} value");
        assert_eq!(record.header(headers::EVENT_TYPE), event_type, "record {i} type");
        assert_eq!(
            record.header(headers::CONTENT_TYPE),
            Some("application/json"),
            "record {i}"
        );
        let traceparent = record.header(headers::TRACEPARENT).expect("traceparent header");
        assert!(sluice_ingest::trace::is_valid(traceparent), "{traceparent}");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_traceparent_travels_to_kafka() {
    let f = Fixture::start().await;
    let topic = f.topic(1).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = f
        .http
        .post(f.ingest.url(&format!("/v1/streams/{topic}/events")))
        .header("content-type", "application/json")
        .header("traceparent", traceparent)
        .body(r#"{"data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let records = f.kafka.read_records(&topic, 1, READ_TIMEOUT).await.unwrap();
    assert_eq!(records[0].header(headers::TRACEPARENT), Some(traceparent));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_events_land_where_murmur2_says_and_keep_per_key_order() {
    let f = Fixture::start().await;
    let partitions = 6;
    let topic = f.topic(partitions).await;
    let events: Vec<Value> = (0..300)
        .map(|i| json!({"key": format!("key-{}", i % 37), "data": {"seq": i}}))
        .collect();
    let (status, body) = f.post_json(&topic, Value::Array(events)).await;
    assert_eq!(status, 200, "{body}");

    let records = f.kafka.read_records(&topic, 300, READ_TIMEOUT).await.unwrap();
    let mut last_seq_per_key = std::collections::HashMap::new();
    for record in &records {
        let key = record.key.as_deref().expect("keyed");
        assert_eq!(
            record.partition as u32,
            partition_for_key(key, partitions as u32),
            "key {key:?}"
        );
        let seq = serde_json::from_slice::<Value>(record.value.as_deref().unwrap()).unwrap()["seq"]
            .as_i64()
            .unwrap();
        if let Some(previous) = last_seq_per_key.insert(key.to_vec(), seq) {
            assert!(seq > previous, "per-key order broken: {previous} then {seq}");
        }
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_write_nothing() {
    let f = Fixture::start_with(|c| {
        c.limits.max_body_bytes = 4096;
        c.limits.max_events_per_request = 3;
        c.limits.max_event_bytes = 100;
        c.streams.streams = vec!["ingest-*".into(), "ok".into()];
    })
    .await;
    let topic = f.topic(1).await;

    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        ("application/json", "{\"data\":".into(), "bad JSON", 400, "invalid_json"),
        (
            "application/json",
            r#"{"type":"a\nb","data":1}"#.into(),
            "type with LF",
            400,
            "invalid_event",
        ),
        (
            "application/json",
            r#"[{"data":1},{"key":"a\r\nb","data":2}]"#.into(),
            "key with CRLF in a batch",
            400,
            "invalid_event",
        ),
        (
            "application/json",
            r#"{"type":"x"}"#.into(),
            "no data",
            400,
            "invalid_event",
        ),
        (
            "application/json",
            r#"{"data":1,"extra":2}"#.into(),
            "unknown field",
            400,
            "invalid_event",
        ),
        ("application/json", "[]".into(), "empty batch", 400, "invalid_event"),
        (
            "application/x-ndjson",
            "{\"data\":1}\nnot json\n".into(),
            "bad NDJSON line",
            400,
            "invalid_json",
        ),
        (
            "application/json",
            r#"[{"data":1},{"data":2},{"data":3},{"data":4}]"#.into(),
            "too many events",
            413,
            "too_many_events",
        ),
        (
            "application/json",
            format!(r#"{{"data":"{}"}}"#, "x".repeat(200)),
            "event too large",
            413,
            "event_too_large",
        ),
        (
            "application/json",
            format!(r#"{{"data":"{}"}}"#, "x".repeat(5000)),
            "body too large",
            413,
            "body_too_large",
        ),
        (
            "text/plain",
            r#"{"data":1}"#.into(),
            "wrong media type",
            415,
            "unsupported_media_type",
        ),
    ];
    for (content_type, body, what, status, code) in cases {
        let (got, error) = f.post(&topic, content_type, body).await;
        assert_eq!(got, status, "{what}: {error}");
        assert_eq!(error["error"]["code"], code, "{what}: {error}");
        assert!(
            error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {error}"
        );
    }
    let (status, error) = f.post_json("not-allowed", json!({"data": 1})).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("unknown_stream")),
        "{error}"
    );
    let (status, error) = f.post_json("bad%20name", json!({"data": 1})).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("invalid_stream_name")),
        "{error}"
    );
    let response = f.http.get(f.ingest.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "not_found");
    let response = f
        .http
        .post(f.ingest.url(&format!("/v1/streams/{topic}/events")))
        .body(r#"{"data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415, "no Content-Type");

    // Nothing above reached Kafka: the first record in the topic is this marker.
    let (status, _) = f.post_json(&topic, json!({"data": "marker"})).await;
    assert_eq!(status, 200);
    let records = f.kafka.read_records(&topic, 1, READ_TIMEOUT).await.unwrap();
    assert_eq!(records[0].value.as_deref(), Some(&b"\"marker\""[..]));
    assert_eq!(records[0].offset, 0, "a refused request wrote something");

    let metrics = f.ingest.metrics().await.unwrap();
    assert!(
        metrics.contains("sluice_ingest_requests_total{status=\"413\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("sluice_ingest_events_produced_total{{stream=\"{topic}\"}} 1")),
        "{metrics}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_gives_503_in_time_and_recovers_without_losing_acknowledged_events() {
    let produce_timeout = Duration::from_secs(2);
    let f = Fixture::start_with(|c| c.produce_timeout = produce_timeout).await;
    if !f.kafka.supports_fault_injection() {
        eprintln!("skipped: taking brokers down needs the embedded broker (SLUICE_TEST_KAFKA_BROKERS is set)");
        return;
    }
    let topic = f.topic(4).await;
    let mut written: Vec<((i32, i64), String)> = Vec::new();
    let (status, body, data) = f.publish_pair(&topic, "before").await;
    assert_eq!(status, 200, "{body}");
    written.extend(positions(&body).into_iter().zip(data));

    f.kafka.set_brokers_up(false).unwrap();
    let started = Instant::now();
    let response = f
        .http
        .post(f.ingest.url(&format!("/v1/streams/{topic}/events")))
        .header("content-type", "application/json")
        .body(json!([{"data": "during-a"}, {"data": "during-b"}]).to_string())
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry_after));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "kafka_unavailable", "{body}");
    // Per event: nothing here was acknowledged, and the reply says so.
    for event in body["events"].as_array().unwrap() {
        assert!(event["error"]["code"].is_string(), "{body}");
    }
    // Answered by the delivery timeout, not by some other, longer one.
    assert!(
        elapsed < produce_timeout + Duration::from_secs(3),
        "503 took {elapsed:?}"
    );

    f.kafka.set_brokers_up(true).unwrap();
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let (body, data) = sluice_testkit::eventually("publishing to work again", Duration::from_secs(60), || async {
        let attempt = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (status, body, data) = f.publish_pair(&topic, &format!("after-{attempt}")).await;
        (status == 200).then_some((body, data))
    })
    .await
    .unwrap();
    written.extend(positions(&body).into_iter().zip(data));

    // Every event reported written is in Kafka at the position reported. The unacknowledged
    // ones may or may not be (the reply said so); they do not count.
    let records = f.kafka.read_records(&topic, written.len(), READ_TIMEOUT).await.unwrap();
    let present: HashSet<((i32, i64), String)> = records
        .iter()
        .map(|r| {
            (
                (r.partition, r.offset),
                serde_json::from_slice::<String>(r.value.as_deref().unwrap()).unwrap(),
            )
        })
        .collect();
    for event in &written {
        assert!(
            present.contains(event),
            "acknowledged event {event:?} is missing from Kafka"
        );
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_burst_loses_no_acknowledged_event() {
    let f = Fixture::start().await;
    let topic = f.topic(4).await;
    let url = f.ingest.url(&format!("/v1/streams/{topic}/events"));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<((i32, i64), String)>::new()));
    let mut clients = Vec::new();
    for client in 0..16 {
        let (http, url, acked) = (f.http.clone(), url.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let data: Vec<String> = (0..5).map(|i| format!("c{client}-r{n}-e{i}")).collect();
                let body: Vec<Value> = data.iter().map(|d| json!({"key": d, "data": d})).collect();
                let Ok(response) = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(Value::Array(body).to_string())
                    .send()
                    .await
                else {
                    return; // the listener is gone
                };
                if response.status() != 200 {
                    continue;
                }
                let Ok(reply) = response.json::<Value>().await else {
                    continue;
                };
                acked.lock().unwrap().extend(positions(&reply).into_iter().zip(data));
            }
        }));
    }
    let count = || acked.lock().unwrap().len();
    sluice_testkit::eventually("a burst of acknowledged events", Duration::from_secs(30), || {
        let n = count();
        async move { (n >= 500).then_some(()) }
    })
    .await
    .unwrap();

    f.ingest.begin_shutdown();
    let Fixture { kafka, ingest, .. } = f;
    ingest.stop(Duration::from_secs(60)).await.expect("clean stop");
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("client ends")
            .unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    let records = kafka.read_records(&topic, acked.len(), READ_TIMEOUT).await.unwrap();
    let present: HashSet<((i32, i64), String)> = records
        .iter()
        .map(|r| {
            (
                (r.partition, r.offset),
                serde_json::from_slice::<String>(r.value.as_deref().unwrap()).unwrap(),
            )
        })
        .collect();
    for event in &acked {
        assert!(
            present.contains(event),
            "acknowledged event {event:?} is missing from Kafka"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_fails_readiness_and_finishes_the_request_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let f = Fixture::start().await;
    let topic = f.topic(1).await;
    let readyz = f.ingest.admin_url("/readyz");
    assert_eq!(f.http.get(&readyz).send().await.unwrap().status(), 200);

    // A request whose body is only half sent when shutdown begins.
    let body = br#"{"data":"in-flight"}"#;
    let (head, tail) = body.split_at(8);
    let mut socket = tokio::net::TcpStream::connect(f.ingest.addr).await.unwrap();
    let request = format!(
        "POST /v1/streams/{topic}/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.write_all(head).await.unwrap();
    f.ingest
        .wait_for_metric("sluice_ingest_requests_in_flight 1", Duration::from_secs(10))
        .await
        .unwrap();

    f.ingest.begin_shutdown();
    let status = sluice_testkit::eventually("/readyz to fail", Duration::from_secs(10), || async {
        let status = f.http.get(&readyz).send().await.ok()?.status();
        (status != 200).then_some(status)
    })
    .await
    .unwrap();
    assert_eq!(status, 503);

    socket.write_all(tail).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("\"events\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed before the response: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    f.stop().await;
}
