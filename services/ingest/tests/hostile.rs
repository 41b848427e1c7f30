//! Service tests for clients that misbehave or ask for what does not exist: bodies that stop
//! arriving, data that a re-serialisation would change, and streams without a topic. Ingest runs
//! in-process on port 0 against the test kit's Kafka; what reached Kafka is read back from it.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sluice_testkit::{RunningService, TestKafka};

mod support;

use support::start_ingest;

const WAIT: Duration = Duration::from_secs(30);

async fn post(ingest: &RunningService, stream: &str, content_type: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(ingest.url(&format!("/v1/streams/{stream}/events")))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

/// Sends `request` (perhaps only the start of one) and stops sending; returns what the server
/// answered until it closed the connection, and how long that took.
fn send_and_stall(url: &str, request: &str) -> (String, Duration) {
    let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let mut socket = TcpStream::connect(&addr).unwrap();
    // A server that never answers fails the test instead of hanging it.
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    socket.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let closed = socket.read_to_end(&mut answer);
    assert!(
        closed.is_ok(),
        "the connection was not closed within {WAIT:?}: {closed:?}; got {:?}",
        String::from_utf8_lossy(&answer)
    );
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408_in_time_and_nothing_is_written() {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("stall");
    kafka.create_topic(&topic, 1).await.unwrap();
    let deadline = Duration::from_millis(700);
    let ingest = start_ingest(&kafka, |c| c.body_timeout = deadline).await;
    let path = format!("/v1/streams/{topic}/events");

    let short = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"data\":\"short\"}}"
    );
    let unfinished = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n{{\"data\":\"chunky\"}}\r\n"
    );
    for request in [short, unfinished] {
        let url = ingest.url("/");
        let (answer, took) = tokio::task::spawn_blocking(move || send_and_stall(&url, &request))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"body_timeout\""), "{answer}");
        assert!(took >= deadline, "answered before the deadline: {took:?}");
        assert!(took < deadline + Duration::from_secs(5), "answered late: {took:?}");
    }

    // A complete request lands at offset 0: nothing of the stalled bodies was written.
    let (status, reply) = post(&ingest, &topic, "application/json", r#"{"data":"whole"}"#).await;
    assert_eq!(status, 200, "{reply}");
    let records = kafka.read_records(&topic, 1, WAIT).await.unwrap();
    assert_eq!(
        (records[0].offset, records[0].value.as_deref()),
        (0, Some(&b"\"whole\""[..]))
    );
    ingest.stop(WAIT).await.unwrap();
}

/// Data a round trip through `serde_json::Value` would change, each in a body with whitespace.
const EXACT_DATA: [&str; 6] = [
    "12345678901234567890123",
    "{\"k\": 1, \"k\": 2}",
    "{\"z\": 1, \"a\": [1.10, 1e2, -0, 1E-7]}",
    "\"\\u00e9\\ud83d\\ude00 \u{e9}\"",
    "{\n  \"pretty\": true,\r\n  \"n\": 1.0\n}",
    "[ ]",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_reaches_kafka_byte_for_byte_in_every_body_format() {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("exact");
    kafka.create_topic(&topic, 1).await.unwrap();
    let ingest = start_ingest(&kafka, |_| {}).await;

    let mut expected = Vec::new();
    for data in EXACT_DATA {
        let (status, reply) = post(&ingest, &topic, "application/json", &format!("{{ \"data\": {data} }}")).await;
        assert_eq!(status, 200, "{data}: {reply}");
        expected.push(data);
    }
    let array = EXACT_DATA.map(|d| format!("{{\"data\" : {d}}}")).join(",\n ");
    let (status, reply) = post(&ingest, &topic, "application/json", &format!("[ {array} ]")).await;
    assert_eq!(status, 200, "{reply}");
    expected.extend(EXACT_DATA);
    // NDJSON holds one event per line, so data with line breaks cannot be sent that way.
    let one_line: Vec<&str> = EXACT_DATA.into_iter().filter(|d| !d.contains('\n')).collect();
    let ndjson: String = one_line.iter().map(|d| format!("{{\"data\": {d} }}\r\n")).collect();
    let (status, reply) = post(&ingest, &topic, "application/x-ndjson", &ndjson).await;
    assert_eq!(status, 200, "{reply}");
    expected.extend(one_line);

    let records = kafka.read_records(&topic, expected.len(), WAIT).await.unwrap();
    let stored: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(stored, expected);
    ingest.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_missing_stream_is_404_and_creates_no_topic() {
    let kafka = TestKafka::start().await.unwrap();
    let ingest = start_ingest(&kafka, |_| {}).await;
    let missing = kafka.unique_topic("missing");
    for _ in 0..3 {
        let (status, reply) = post(&ingest, &missing, "application/json", r#"{"data":1}"#).await;
        assert_eq!(status, 404, "{reply}");
        assert!(reply.contains("unknown_stream"), "{reply}");
    }
    assert!(
        kafka.partitions(&missing).await.is_err(),
        "asking about {missing} created it"
    );
    // Sent raw: an HTTP client library would resolve `.` and `..` away as dot segments.
    for reserved in [".", ".."] {
        let request = format!(
            "POST /v1/streams/{reserved}/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{{\"data\":1}}"
        );
        let url = ingest.url("/");
        let (answer, _) = tokio::task::spawn_blocking(move || send_and_stall(&url, &request))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{reserved}: {answer}");
        assert!(answer.contains("invalid_stream_name"), "{reserved}: {answer}");
    }
    ingest.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_create_a_publish_to_a_missing_stream_creates_its_topic() {
    let kafka = TestKafka::start().await.unwrap();
    let creator = kafka.topic_creator();
    let ingest = start_ingest(&kafka, |c| {
        c.auto_create_streams = true;
        c.auto_create_partitions = 3;
        c.topic_creator = creator.map(|c| std::sync::Arc::new(c) as std::sync::Arc<dyn sluice_kafka::TopicCreator>);
        c.streams.streams = vec!["auto-*".into()];
    })
    .await;

    let stream = kafka.unique_topic("auto");
    let (status, reply) = post(&ingest, &stream, "application/json", r#"{"data":"first"}"#).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(kafka.partitions(&stream).await.unwrap(), 3);
    let records = kafka.read_records(&stream, 1, WAIT).await.unwrap();
    assert_eq!(records[0].value.as_deref(), Some(&b"\"first\""[..]));

    // Only names the allow-list admits are created.
    let outside = kafka.unique_topic("other");
    let (status, _) = post(&ingest, &outside, "application/json", r#"{"data":1}"#).await;
    assert_eq!(status, 404);
    assert!(kafka.partitions(&outside).await.is_err());
    ingest.stop(WAIT).await.unwrap();
}
