//! Several streams and polling across real processes: one broker, an ingest process and two
//! gateway processes, events published while clients read.
//!
//! - A client following two streams in one connection reads from gateway A; A is killed
//!   (SIGKILL); the client resumes on B with its last id. It must hold every event of both
//!   streams exactly once, in per-key order.
//! - A polling client pages through two streams while they are being published, each page from
//!   the other gateway, carrying only the cursor: the same promise.

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
const KEYS: usize = 4;

async fn start(binary: &str, kafka: &TestKafka) -> ServiceProcess {
    ServiceProcess::start(binary, kafka.bootstrap_servers(), &[], WAIT)
        .await
        .unwrap()
}

struct Cluster {
    kafka: TestKafka,
    streams: [String; 2],
    ingest: ServiceProcess,
    a: ServiceProcess,
    b: ServiceProcess,
}

async fn cluster() -> Cluster {
    let kafka = TestKafka::start().await.unwrap();
    let streams = [kafka.unique_topic("e2e-reach-x"), kafka.unique_topic("e2e-reach-y")];
    for topic in &streams {
        kafka.create_topic(topic, 4).await.unwrap();
    }
    let ingest = start("sluice-ingest", &kafka).await;
    let a = start("sluice-gateway", &kafka).await;
    let b = start("sluice-gateway", &kafka).await;
    Cluster {
        kafka,
        streams,
        ingest,
        a,
        b,
    }
}

/// Publishes `total` events `{"seq": i}` keyed `k{i % KEYS}` to each stream, in small batches
/// alternating between the streams, while the tests read.
fn publish(
    ingest: SocketAddr,
    streams: &[String; 2],
    total: usize,
    published: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let streams = streams.clone();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        for start in (0..total).step_by(10) {
            for stream in &streams {
                let batch: Vec<Value> = (start..(start + 10).min(total))
                    .map(|i| json!({"key": format!("k{}", i % KEYS), "data": {"seq": i}}))
                    .collect();
                let n = batch.len();
                let response = http
                    .post(format!("http://{ingest}/v1/streams/{stream}/events"))
                    .header("content-type", "application/json")
                    .body(Value::Array(batch).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "publish failed");
                published.fetch_add(n, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(5)).await; // pace the publisher, not a sync point
        }
    })
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

fn seq(data: &str) -> usize {
    serde_json::from_str::<Value>(data).unwrap()["seq"].as_u64().unwrap() as usize
}

/// Every `seq` of `0..total` exactly once per stream, in per-key order.
fn assert_exactly_once(got: &[(String, usize)], streams: &[String; 2], total: usize, who: &str) {
    for stream in streams {
        let seqs: Vec<usize> = got.iter().filter(|(s, _)| s == stream).map(|&(_, n)| n).collect();
        let mut seen = vec![0u32; total];
        for &s in &seqs {
            seen[s] += 1;
        }
        let missing: Vec<usize> = (0..total).filter(|&s| seen[s] == 0).collect();
        let doubled: Vec<usize> = (0..total).filter(|&s| seen[s] > 1).collect();
        assert!(
            missing.is_empty() && doubled.is_empty(),
            "{who}, {stream}: missing {missing:?}, duplicated {doubled:?}"
        );
        let mut last: HashMap<usize, usize> = HashMap::new();
        for &s in &seqs {
            if let Some(prev) = last.insert(s % KEYS, s) {
                assert!(
                    s > prev,
                    "{who}, {stream}: key k{} out of order: {prev} then {s}",
                    s % KEYS
                );
            }
        }
    }
    assert_eq!(got.len(), 2 * total, "{who}: events of other streams");
}

/// Reads events typed `<stream>:message` into `got` until it holds `want` or the stream ends;
/// returns the id of the last one taken.
async fn read(stream: &mut SseStream, got: &mut Vec<(String, usize)>, want: usize, last: &mut Option<String>) {
    while got.len() < want {
        match stream.next_stream_event(WAIT).await.unwrap() {
            Next::Event(event) => {
                let (name, kind) = event.event_type.split_once(':').expect("a <stream>:<type> event");
                assert_eq!(kind, "message");
                got.push((name.to_owned(), seq(&event.data)));
                *last = event.id;
            }
            Next::Ended => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_stream_connection_resumes_on_another_gateway_after_sigkill_exactly_once() {
    let mut c = cluster().await;
    let total = 300;
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = publish(c.ingest.listen, &c.streams, total, published.clone());
    let path = format!("/v1/streams/{},{}?from=earliest", c.streams[0], c.streams[1]);
    let http = reqwest::Client::new();

    let (mut got, mut last) = (Vec::new(), None);
    let mut on_a = SseStream::connect(&http, &format!("http://{}{path}", c.a.listen), None)
        .await
        .unwrap();
    read(&mut on_a, &mut got, 150, &mut last).await;
    assert_eq!(got.len(), 150);
    c.a.child.signal(ProcessSignal::SIGKILL).unwrap();
    read(&mut on_a, &mut got, 2 * total, &mut last).await;
    c.a.child.wait(WAIT).await.unwrap();
    let mut on_b = SseStream::connect(&http, &format!("http://{}{path}", c.b.listen), last.as_deref())
        .await
        .unwrap();
    read(&mut on_b, &mut got, 2 * total, &mut last).await;
    publisher.await.unwrap();
    assert_eq!(published.load(Ordering::SeqCst), 2 * total);
    assert_exactly_once(&got, &c.streams, total, "client");
    drop(c.kafka);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_two_streams_while_they_are_published_alternating_gateways_loses_and_repeats_nothing() {
    let c = cluster().await;
    let total = 300;
    let published = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let both = format!("{},{}", c.streams[0], c.streams[1]);
    // The first page, before anything is published: the cursor at the start of both streams.
    let first = get_json(
        &http,
        &format!("http://{}/v1/streams/{both}/poll?from=earliest", c.a.listen),
    )
    .await;
    let mut cursor = first["cursor"].as_str().unwrap().to_owned();
    let publisher = publish(c.ingest.listen, &c.streams, total, published.clone());

    let mut got = Vec::new();
    let mut pages = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while got.len() < 2 * total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {} events: too slow",
            got.len()
        );
        let gateway = if pages % 2 == 0 { c.a.listen } else { c.b.listen };
        let page: Value = http
            .get(format!(
                "http://{gateway}/v1/streams/{both}/poll?cursor={cursor}&limit=37&wait=5"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap_or_else(|| panic!("{page}"));
        assert!(events.len() <= 37);
        for event in events {
            assert_eq!(event["type"], "message");
            got.push((
                event["stream"].as_str().unwrap().to_owned(),
                seq(event["data"].as_str().unwrap()),
            ));
        }
        cursor = page["cursor"].as_str().unwrap().to_owned();
        pages += 1;
    }
    publisher.await.unwrap();
    assert_exactly_once(&got, &c.streams, total, "poller");
    // Nothing more: an empty page at once.
    let last = get_json(
        &http,
        &format!("http://{}/v1/streams/{both}/poll?cursor={cursor}", c.b.listen),
    )
    .await;
    assert_eq!(last["events"].as_array().unwrap().len(), 0, "{last}");
}
