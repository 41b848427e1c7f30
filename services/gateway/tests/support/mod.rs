//! What the gateway service tests share: `sluice-gateway` in-process on port 0 against the test
//! kit's Kafka, a producer to publish with, and reading events with the reference SSE parser.
//! Each test file keeps only what is its own (tokens, raw sockets) and may add to `Fixture` in
//! its own `impl` block.

// Each test binary compiles this module and uses only part of it; the rest is not dead.
#![allow(dead_code)]

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use sluice_gateway::GatewayConfig;
use sluice_kafka::{headers, KafkaArgs, OutRecord, Producer, ProducerSettings};
use sluice_sse::ParsedEvent;
use sluice_testkit::sse::Next;
use sluice_testkit::{RunningService, SseStream, TestKafka};

pub const WAIT: Duration = Duration::from_secs(30);

/// Starts a gateway against `kafka` with two workers and `tweak` applied, and waits until ready.
pub async fn start_gateway(kafka: &TestKafka, tweak: impl FnOnce(&mut GatewayConfig)) -> RunningService {
    let mut config = GatewayConfig::for_brokers(kafka.bootstrap_servers());
    config.workers = 2;
    tweak(&mut config);
    let gateway = RunningService::start(move |l, a, s| sluice_gateway::run(config, l, a, s));
    gateway.wait_ready(WAIT).await.unwrap();
    gateway
}

pub struct Fixture {
    pub kafka: TestKafka,
    pub producer: Producer,
    pub http: reqwest::Client,
}

impl Fixture {
    pub async fn start() -> Self {
        let kafka = TestKafka::start().await.expect("Kafka for tests");
        let producer = Producer::new(&KafkaArgs::new(kafka.bootstrap_servers()), ProducerSettings::default()).unwrap();
        Self {
            kafka,
            producer,
            http: reqwest::Client::new(),
        }
    }

    pub async fn topic(&self, partitions: i32) -> String {
        self.topic_with_prefix("gw", partitions).await
    }

    /// A new topic named `{prefix}-…`: grants in some tests match topics by that prefix.
    pub async fn topic_with_prefix(&self, prefix: &str, partitions: i32) -> String {
        let topic = self.kafka.unique_topic(prefix);
        self.kafka.create_topic(&topic, partitions).await.unwrap();
        topic
    }

    pub async fn gateway(&self, tweak: impl FnOnce(&mut GatewayConfig)) -> RunningService {
        start_gateway(&self.kafka, tweak).await
    }

    /// Publishes `n` events `{prefix}-{i}` with type `t{i % 2}` and key `k{i % keys}`.
    pub async fn publish(&self, topic: &str, prefix: &str, n: usize, keys: usize) {
        self.publish_with_headers(topic, prefix, n, keys, |i| {
            vec![(headers::EVENT_TYPE.into(), format!("t{}", i % 2).into_bytes())]
        })
        .await;
    }

    /// Publishes `n` events `"{prefix}-{i}"` with key `k{i % keys}` and no Kafka headers (so
    /// the default event type).
    pub async fn publish_untyped(&self, topic: &str, prefix: &str, n: usize, keys: usize) {
        self.publish_with_headers(topic, prefix, n, keys, |_| Vec::new()).await;
    }

    /// Publishes `n` events `"{prefix}-{i}"` with key `k{i % keys}` and `headers(i)`.
    pub async fn publish_with_headers(
        &self,
        topic: &str,
        prefix: &str,
        n: usize,
        keys: usize,
        headers: impl Fn(usize) -> Vec<(String, Vec<u8>)>,
    ) {
        let records = (0..n).map(|i| OutRecord {
            topic: topic.to_owned(),
            key: Some(format!("k{}", i % keys).into_bytes()),
            value: format!("\"{prefix}-{i}\"").into_bytes(),
            headers: headers(i),
            timestamp_ms: None,
        });
        self.send(records).await;
    }

    /// Enqueues every record before waiting for any acknowledgement, so a batch is one burst.
    pub async fn send(&self, records: impl IntoIterator<Item = OutRecord>) {
        let pending: Vec<_> = records
            .into_iter()
            .map(|record| self.producer.enqueue(&record).unwrap())
            .collect();
        for p in pending {
            p.acknowledged().await.unwrap();
        }
    }

    pub async fn open(&self, gateway: &RunningService, path: &str, last_event_id: Option<&str>) -> SseStream {
        SseStream::connect(&self.http, &gateway.url(path), last_event_id)
            .await
            .unwrap()
    }
}

/// A client sending `headers` on every request.
pub fn client(headers: &[(&'static str, String)]) -> reqwest::Client {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    reqwest::Client::builder().default_headers(map).build().unwrap()
}

/// Opens `path` from the start of the live stream with `headers` on the request.
pub async fn open_with_headers(gateway: &RunningService, path: &str, headers: &[(&'static str, String)]) -> SseStream {
    SseStream::connect(&client(headers), &gateway.url(path), None)
        .await
        .unwrap()
}

/// The next `n` events, as a client listening for the stream's own events sees them: the
/// `sluice.caught-up` marker (tested on its own) is not one of them.
pub async fn read_n(stream: &mut SseStream, n: usize) -> Vec<ParsedEvent> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        match stream.next_stream_event(WAIT).await {
            Ok(Next::Event(event)) => events.push(event),
            Ok(Next::Ended) => panic!("after {} of {n} events: the stream ended", events.len()),
            Err(err) => panic!("after {} of {n} events: {err}", events.len()),
        }
    }
    events
}

pub fn data(events: &[ParsedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| serde_json::from_str::<String>(&e.data).unwrap())
        .collect()
}
