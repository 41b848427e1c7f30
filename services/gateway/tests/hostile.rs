//! Hostile and broken clients against `sluice-gateway` in-process: crafted requests get their
//! documented 4xx (never a panic), HTTP/1.0 gets a body it can read, every response carries
//! its headers, and clients that stop reading do not keep Kafka readers from others.

use std::time::Duration;

use sluice_kafka::OutRecord;
use sluice_testkit::{RunningService, SseStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::{Fixture, WAIT};

impl Fixture {
    /// Publishes `n` events whose data is a JSON string of about `size` bytes.
    async fn publish_sized(&self, topic: &str, n: usize, size: usize) {
        let filler = "x".repeat(size);
        let records = (0..n).map(|i| OutRecord {
            topic: topic.to_owned(),
            value: format!("\"{i}-{filler}\"").into_bytes(),
            ..OutRecord::default()
        });
        self.send(records).await;
    }
}

/// Sends `request` on a raw socket and returns the socket, unread.
async fn raw(gateway: &RunningService, request: &[u8]) -> tokio::net::TcpStream {
    let mut socket = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    socket
}

/// Reads from `socket` until `needle` has arrived; everything read so far.
async fn read_until(socket: &mut tokio::net::TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !got.windows(needle.len()).any(|w| w == needle) {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {:?}: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {:?} in {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&got)
        )
    });
    got
}

fn status_line(response: &[u8]) -> String {
    String::from_utf8_lossy(response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_queries_and_cursors_get_400_and_the_gateway_keeps_serving() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("hostile", 1).await;
    let gateway = f.gateway(|_| {}).await;
    let path = format!("/v1/streams/{topic}");
    let queries = [
        // A multi-byte character where the offset's colon belongs: this used to panic.
        "since=2026-11-21T05:00:00%2B0%C3%A900",
        "since=2026-11-21T05:00:00%2B%C3%A9:00",
        "since=2026-11-21T05:00:00.%C3%A9Z",
        "since=%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9",
        "since=99999999999999999999999999",
        "from=%FF%FE",
        "key=%FF&key=",
    ];
    for query in queries {
        let response = f
            .http
            .get(gateway.url(&format!("{path}?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{query}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{query}: {body}");
    }
    // A Last-Event-ID that is not ASCII was ignored (the stream started from latest).
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: caf\u{e9}\r\n\r\n");
    let mut socket = raw(&gateway, request.as_bytes()).await;
    let response = read_until(&mut socket, b"}").await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert!(String::from_utf8_lossy(&response).contains("invalid_cursor"));
    let bytes = [
        b"GET ".as_slice(),
        path.as_bytes(),
        b" HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xff\xfe\r\n\r\n",
    ]
    .concat();
    let mut socket = raw(&gateway, &bytes).await;
    assert!(status_line(&read_until(&mut socket, b"}").await).starts_with("HTTP/1.1 400"));

    let mut stream = SseStream::connect(&f.http, &gateway.url(&format!("{path}?from=earliest")), None)
        .await
        .unwrap();
    f.publish_sized(&topic, 1, 10).await;
    stream.next_event(WAIT).await.expect("the gateway still serves");
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_client_gets_a_close_delimited_body() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("hostile", 1).await;
    let gateway = f.gateway(|_| {}).await;
    f.publish_sized(&topic, 1, 10).await;
    let request = format!("GET /v1/streams/{topic}?from=earliest HTTP/1.0\r\n\r\n");
    let mut socket = raw(&gateway, request.as_bytes()).await;
    let response = read_until(&mut socket, b"data: \"0-").await;
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("http/1.0 200") || head.starts_with("http/1.1 200"),
        "{head}"
    );
    assert!(
        !head.contains("transfer-encoding"),
        "HTTP/1.0 has no chunked encoding: {head}"
    );
    assert!(
        body.starts_with("retry:"),
        "the body starts with the first frame, no chunk size: {body:?}"
    );
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_is_nosniff_and_json_answers_are_not_stored() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("hostile", 1).await;
    let gateway = f.gateway(|_| {}).await;
    for (url, status, cache) in [
        (gateway.url("/nowhere"), 404, "no-store"),
        (gateway.url("/v1/streams/bad%20name"), 400, "no-store"),
        (gateway.admin_url("/readyz"), 200, "no-store"),
        (gateway.admin_url("/healthz"), 200, "no-store"),
    ] {
        let response = f.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), status, "{url}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(response.headers()["cache-control"], cache, "{url}");
    }
    let metrics = f.http.get(gateway.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.headers()["x-content-type-options"], "nosniff");
    let stream = f
        .http
        .get(gateway.url(&format!("/v1/streams/{topic}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["x-content-type-options"], "nosniff");
    assert_eq!(stream.headers()["cache-control"], "no-cache");
    drop(stream);
    gateway.stop(WAIT).await.unwrap();
}

/// Opens a client that sends its request and never reads; its receive buffer is small, so the
/// gateway's side fills quickly.
async fn stalled_client(gateway: &RunningService, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(gateway.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_catch_ups_give_their_reader_back_so_a_new_client_starts_at_once() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("hostile", 1).await;
    // 20 MB behind a ring of 10 events: every client from earliest reads from Kafka, with one
    // reader between them. The write timeout is far away: stalled clients stay.
    f.publish_sized(&topic, 200, 100_000).await;
    let gateway = f
        .gateway(|c| {
            c.max_catchup_readers = 1;
            c.ring_events = 10;
            c.write_timeout = Duration::from_secs(300);
        })
        .await;
    let path = format!("/v1/streams/{topic}?from=earliest");
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_client(&gateway, &path).await);
    }
    gateway
        .wait_for_metric("sluice_gateway_connections_active 3", WAIT)
        .await
        .unwrap();
    let mut fresh = SseStream::connect(&f.http, &gateway.url(&path), None).await.unwrap();
    // Without the release, the fresh client would wait for the write timeout (300 s).
    let first = fresh
        .next_event(Duration::from_secs(15))
        .await
        .expect("a fresh client starts at once");
    assert!(first.data.starts_with("\"0-"), "{}", &first.data[..10]);
    for i in 1..200 {
        let event = fresh.next_event(WAIT).await.unwrap();
        assert!(event.data.starts_with(&format!("\"{i}-")), "event {i}");
    }
    drop(stalled);
    gateway.stop(WAIT).await.unwrap();
}
