//! Resume on any pod: one broker, an ingest process and two gateway processes. Clients read
//! from gateway A while events are being published; A dies (SIGKILL) or drains (SIGTERM); the
//! clients reconnect to B with their last id. What each received in total must be every
//! published event exactly once, in per-partition (per-key) order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_testkit::process::{ProcessSignal, ServiceProcess};
use sluice_testkit::sse::Next;
use sluice_testkit::{SseStream, TestKafka};

const WAIT: Duration = Duration::from_secs(60);
const KEYS: usize = 8;

async fn start(binary: &str, kafka: &TestKafka, extra: &[&str]) -> ServiceProcess {
    ServiceProcess::start(binary, kafka.bootstrap_servers(), extra, WAIT)
        .await
        .unwrap()
}

struct Cluster {
    kafka: TestKafka,
    topic: String,
    ingest: ServiceProcess,
    a: ServiceProcess,
    b: ServiceProcess,
}

async fn cluster() -> Cluster {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("e2e-resume");
    kafka.create_topic(&topic, 4).await.unwrap();
    let ingest = start("sluice-ingest", &kafka, &[]).await;
    let a = start("sluice-gateway", &kafka, &["--drain-window=1s"]).await;
    let b = start("sluice-gateway", &kafka, &["--drain-window=1s"]).await;
    Cluster {
        kafka,
        topic,
        ingest,
        a,
        b,
    }
}

/// Publishes `total` events `{"seq": i}` keyed `k{i % KEYS}`, in batches, while tests read.
fn publish(ingest: SocketAddr, topic: &str, total: usize, published: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    let url = format!("http://{ingest}/v1/streams/{topic}/events");
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        for start in (0..total).step_by(10) {
            let batch: Vec<Value> = (start..(start + 10).min(total))
                .map(|i| json!({"key": format!("k{}", i % KEYS), "data": {"seq": i}}))
                .collect();
            let n = batch.len();
            let response = http
                .post(&url)
                .header("content-type", "application/json")
                .body(Value::Array(batch).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "publish failed");
            published.fetch_add(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await; // pace the publisher, not a sync point
        }
    })
}

fn seq(data: &str) -> usize {
    serde_json::from_str::<Value>(data).unwrap()["seq"].as_u64().unwrap() as usize
}

/// Opens a stream on `gateway`, resuming at `last_id` when given.
async fn open(gateway: SocketAddr, topic: &str, last_id: Option<&str>) -> SseStream {
    let url = format!("http://{gateway}/v1/streams/{topic}?from=earliest");
    SseStream::connect(&reqwest::Client::new(), &url, last_id)
        .await
        .unwrap()
}

/// Reads into `got` until it holds `want` events or the stream ends; returns the last id.
async fn read(stream: &mut SseStream, got: &mut Vec<usize>, want: usize) -> Option<String> {
    while got.len() < want {
        match stream.next_stream_event(WAIT).await.unwrap() {
            Next::Event(event) => got.push(seq(&event.data)),
            Next::Ended => break,
        }
    }
    stream.last_event_id()
}

fn assert_exactly_once_in_key_order(got: &[usize], total: usize, who: &str) {
    let mut seen = vec![0u32; total];
    for &s in got {
        seen[s] += 1;
    }
    let missing: Vec<usize> = (0..total).filter(|&s| seen[s] == 0).collect();
    let doubled: Vec<usize> = (0..total).filter(|&s| seen[s] > 1).collect();
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "{who}: missing {missing:?}, duplicated {doubled:?}"
    );
    let mut last: HashMap<usize, usize> = HashMap::new();
    for &s in got {
        if let Some(prev) = last.insert(s % KEYS, s) {
            assert!(s > prev, "{who}: key k{} out of order: {prev} then {s}", s % KEYS);
        }
    }
}

async fn resume_after(signal: ProcessSignal) {
    let mut c = cluster().await;
    let total = 600;
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = publish(c.ingest.listen, &c.topic, total, published.clone());

    let mut got = Vec::new();
    let mut on_a = open(c.a.listen, &c.topic, None).await;
    read(&mut on_a, &mut got, 150).await;
    assert_eq!(got.len(), 150);
    c.a.child.signal(signal).unwrap();
    // A draining gateway ends the stream by itself (after a retry:); a killed one just dies.
    let last_id = read(&mut on_a, &mut got, total).await;
    c.a.child.wait(WAIT).await.unwrap();
    let mut on_b = open(c.b.listen, &c.topic, last_id.as_deref()).await;
    read(&mut on_b, &mut got, total).await;
    publisher.await.unwrap();
    assert_eq!(published.load(Ordering::SeqCst), total);
    assert_exactly_once_in_key_order(&got, total, "client");
    drop(c.kafka);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_on_another_gateway_after_sigkill_with_every_event_exactly_once() {
    resume_after(ProcessSignal::SIGKILL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_on_another_gateway_after_a_graceful_drain() {
    resume_after(ProcessSignal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_resume_on_another_gateway_after_sigkill() {
    let mut c = cluster().await;
    let total = 400;
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = publish(c.ingest.listen, &c.topic, total, published.clone());

    let ready = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for n in 0..200 {
        let (a, b, topic, ready) = (c.a.listen, c.b.listen, c.topic.clone(), ready.clone());
        clients.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Each client reads a different amount from A before the kill (at least one event),
            // then keeps reading whatever A sends until it dies.
            let mut on_a = open(a, &topic, None).await;
            read(&mut on_a, &mut got, 1 + n % 50).await;
            ready.fetch_add(1, Ordering::SeqCst);
            let last_id = read(&mut on_a, &mut got, total).await;
            let mut on_b = open(b, &topic, last_id.as_deref()).await;
            read(&mut on_b, &mut got, total).await;
            (n, got)
        }));
    }
    sluice_testkit::eventually("all clients reading from A", WAIT, || {
        let n = ready.load(Ordering::SeqCst);
        async move { (n == 200).then_some(()) }
    })
    .await
    .unwrap();
    c.a.child.signal(ProcessSignal::SIGKILL).unwrap();
    c.a.child.wait(WAIT).await.unwrap();
    for client in clients {
        let (n, got) = tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .unwrap()
            .unwrap();
        assert_exactly_once_in_key_order(&got, total, &format!("client {n}"));
    }
    publisher.await.unwrap();
}
