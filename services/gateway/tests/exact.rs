//! Ingest and the gateway together, in-process on port 0 against the test kit's Kafka: data
//! arrives at an SSE client as the producer sent it, and asking for a stream that does not exist
//! creates nothing.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use sluice_ingest::IngestConfig;
use sluice_testkit::{RunningService, SseStream, TestKafka};

mod support;

use support::{start_gateway, WAIT};

/// Sends a whole `GET {path}` with `Connection: close` on a raw socket (an HTTP library would
/// resolve `.` and `..` away) and returns the answer.
fn raw_get(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    write!(socket, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_reaches_an_sse_client_as_the_producer_sent_it() {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("exact");
    kafka.create_topic(&topic, 1).await.unwrap();
    let mut config = IngestConfig::for_brokers(kafka.bootstrap_servers());
    config.workers = 1;
    let ingest = RunningService::start(move |l, a, s| sluice_ingest::run(config, l, a, s));
    ingest.wait_ready(WAIT).await.unwrap();
    let gateway = start_gateway(&kafka, |_| {}).await;

    let sent = [
        "12345678901234567890123",
        "{\"k\": 1, \"k\": 2}",
        "{\"z\": 1, \"a\": [1.10, 1e2, -0, 1E-7]}",
        "\"\\u00e9\\ud83d\\ude00 \u{e9}\\r\\n\"",
        "{\n  \"pretty\": true,\n\n  \"tab\":\t1\n}",
        "{\r\n  \"crlf\": true,\r  \"cr\": 1\r\n}",
    ];
    let http = reqwest::Client::new();
    for data in sent {
        let response = http
            .post(ingest.url(&format!("/v1/streams/{topic}/events")))
            .header("content-type", "application/json")
            .body(format!("{{\"data\": {data}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{data}");
    }

    let mut stream = SseStream::connect(&http, &gateway.url(&format!("/v1/streams/{topic}?from=earliest")), None)
        .await
        .unwrap();
    for data in sent {
        let event = stream.next_event(WAIT).await.unwrap();
        // SSE ends a line at CR, LF or CRLF, and EventSource joins data lines with LF: raw CRs
        // (JSON whitespace only) arrive as LF, and every other byte as sent.
        let expected = data.replace("\r\n", "\n").replace('\r', "\n");
        assert_eq!(event.data, expected);
        serde_json::from_str::<serde_json::Value>(&event.data).expect("still valid JSON");
    }
    gateway.stop(WAIT).await.unwrap();
    ingest.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stream_is_404_and_creates_no_topic() {
    let kafka = TestKafka::start().await.unwrap();
    let gateway = start_gateway(&kafka, |_| {}).await;
    let missing = kafka.unique_topic("missing");
    let http = reqwest::Client::new();
    for path in [
        format!("/v1/streams/{missing}"),
        format!("/v1/streams/{missing}?from=earliest"),
    ] {
        let response = http.get(gateway.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unknown_stream", "{body}");
    }
    assert!(
        kafka.partitions(&missing).await.is_err(),
        "asking about {missing} created it"
    );
    for reserved in [".", ".."] {
        let url = gateway.url("/");
        let path = format!("/v1/streams/{reserved}");
        let answer = tokio::task::spawn_blocking(move || raw_get(&url, &path)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{reserved}: {answer}");
        assert!(answer.contains("invalid_stream_name"), "{reserved}: {answer}");
    }
    gateway.stop(WAIT).await.unwrap();
}
