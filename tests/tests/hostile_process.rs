//! A gateway process against clients that never read, on large events (issue 11): its memory
//! grows by at most the configured queue bound per connection, plus a stated allowance, while a
//! normal client on the same stream receives everything. Real sockets, the release binaries,
//! and `/proc/<pid>/status` for the gateway's resident memory.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_testkit::process::ServiceProcess;
use sluice_testkit::sse::Next;
use sluice_testkit::{eventually, SseStream, TestKafka};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(60);
/// Clients that open `from=earliest` and never read a byte.
const STALLED: usize = 20;
/// Bytes of each event's data.
const EVENT: usize = 100_000;
/// Events on the stream before the stalled clients come, and published while they sit.
const BACKLOG: usize = 150;
const LIVE: usize = 50;
/// `--max-queued-bytes`.
const QUEUED: usize = 64 * 1024;
/// Per connection beyond its queue and one event: actix's write buffer (it pulls while that
/// holds under 32 KiB, chunks of at most 16 KiB), the connection's task and its HTTP state.
const PER_CONNECTION: usize = 96 * 1024;
/// Once for the process: allocator arenas of the worker threads, the normal client's bursts.
const FIXED: usize = 16 << 20;
/// What the ring grows by with the live events (shared by every connection): the data plus
/// the frame's id and field names and the entry's fields.
const RING_GROWTH: usize = LIVE * (EVENT + 300);

/// Resident memory of the gateway, which runs until the test ends.
fn rss_bytes(pid: u32) -> usize {
    sluice_testkit::procfs::rss_bytes(pid).expect("the gateway's /proc/<pid>/status") as usize
}

async fn publish(http: &reqwest::Client, ingest: &ServiceProcess, topic: &str, from: usize, n: usize) {
    let filler = "x".repeat(EVENT);
    for start in (from..from + n).step_by(4) {
        let batch: Vec<Value> = (start..(start + 4).min(from + n))
            .map(|i| json!({ "data": format!("{i}-{filler}") }))
            .collect();
        let response = http
            .post(format!("http://{}/v1/streams/{topic}/events", ingest.listen))
            .header("content-type", "application/json")
            .body(Value::Array(batch).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "publish failed");
    }
}

async fn read_seq(stream: &mut SseStream, from: usize, n: usize) {
    for i in from..from + n {
        let Next::Event(event) = stream.next_stream_event(WAIT).await.unwrap() else {
            panic!("the stream ended before event {i}");
        };
        assert!(event.data.starts_with(&format!("\"{i}-")), "event {i}");
    }
}

/// A client that sends its request and never reads; its receive buffer is small, so the
/// gateway's side fills at once.
async fn stalled_client(gateway: &ServiceProcess, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(gateway.listen).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reading_clients_on_large_events_cost_at_most_their_queue_bound() {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("e2e-hostile");
    kafka.create_topic(&topic, 1).await.unwrap();
    let brokers = kafka.bootstrap_servers();
    let ingest = ServiceProcess::start("sluice-ingest", brokers, &[], WAIT)
        .await
        .unwrap();
    let queued = format!("--max-queued-bytes={QUEUED}");
    let gateway = ServiceProcess::start("sluice-gateway", brokers, &[&queued, "--write-timeout=300s"], WAIT)
        .await
        .unwrap();
    let pid = gateway.child.pid().unwrap();
    let http = reqwest::Client::new();
    let path = format!("/v1/streams/{topic}?from=earliest");

    publish(&http, &ingest, &topic, 0, BACKLOG).await;
    let url = format!("http://{}{path}", gateway.listen);
    let mut normal = SseStream::connect(&http, &url, None).await.unwrap();
    read_seq(&mut normal, 0, BACKLOG).await;
    let baseline = rss_bytes(pid);

    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(stalled_client(&gateway, &path).await);
    }
    let active = (STALLED + 1) as f64;
    eventually("every client to be connected", WAIT, || async {
        (gateway.metric(&http, "sluice_gateway_connections_active").await? == active).then_some(())
    })
    .await
    .unwrap();
    publish(&http, &ingest, &topic, BACKLOG, LIVE).await;
    read_seq(&mut normal, BACKLOG, LIVE).await;

    // Until the gateway has sent nothing more for a second (every stalled queue is full),
    // the highest resident size seen.
    let mut peak = rss_bytes(pid);
    let deadline = std::time::Instant::now() + WAIT;
    let (mut last_sent, mut quiet_since) = (-1.0, std::time::Instant::now());
    while quiet_since.elapsed() < Duration::from_secs(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway kept sending for {WAIT:?}"
        );
        peak = peak.max(rss_bytes(pid));
        let sent = gateway
            .metric(&http, "sluice_gateway_bytes_sent_total")
            .await
            .unwrap_or(-1.0);
        if sent != last_sent {
            (last_sent, quiet_since) = (sent, std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the polling interval
    }
    peak = peak.max(rss_bytes(pid));

    let growth = peak.saturating_sub(baseline);
    let bound = STALLED * (QUEUED + EVENT + PER_CONNECTION) + RING_GROWTH + FIXED;
    eprintln!(
        "gateway RSS: baseline {} KiB, peak {} KiB, growth {} KiB ({} KiB of it the ring's live \
         events) for {STALLED} stalled clients: {} KiB each beyond the ring; bound {} KiB",
        baseline / 1024,
        peak / 1024,
        growth / 1024,
        RING_GROWTH / 1024,
        growth.saturating_sub(RING_GROWTH) / STALLED / 1024,
        bound / 1024
    );
    assert!(growth <= bound, "grew {growth} bytes, bound {bound}");
    drop(stalled);
}
