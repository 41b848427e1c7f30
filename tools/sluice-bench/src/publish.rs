//! The publisher the streaming scenarios share: bench events at a fixed rate, open loop,
//! through ingest or straight to Kafka.
//!
//! **Open loop.** Event `k` of a run is *scheduled* at `start + k / rate`, and that scheduled
//! wall-clock time is what it carries as `sent_us`. Every `--batch-interval` the publisher
//! sends the events that have fallen due. If ingest (or Kafka) answers slowly, the next batch
//! simply holds more events, each still stamped with its own schedule time, so a slow
//! response shows up as latency instead of silently delaying the clock (the "coordinated
//! omission" a closed-loop publisher suffers from).
//!
//! **Payload.** Each event's data is `{"lane":L,"seq":S,"sent_us":T,"pad":"…"}` with key
//! `lane-L`: one key per lane, so a lane lives in one partition and must arrive in order;
//! `seq` numbers the lane's events from 0 (see [`crate::sse_wire::LaneTracker`]).
//!
//! **Two ways in.** [`PublishVia::Ingest`] POSTs JSON arrays to `sluice-ingest` (or to the
//! baseline server, which accepts the same body), one request in flight so a lane's events
//! reach Kafka in order. [`PublishVia::Kafka`] hands records to an rdkafka producer built by
//! `sluice-kafka` (idempotent, `acks=all`, murmur2, as ingest's) with the record convention
//! of producer services — key, value = the data, headers `sse-event` and `content-type` —
//! enqueueing in order without waiting, and counting acknowledgements as they come back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use sluice_kafka::{headers, KafkaArgs, OutRecord, Pending, Producer, ProducerSettings};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::parse_positive_duration;
use crate::report::latency_histogram;
use crate::rig::{Rig, ServerKind};

/// How events reach the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishVia {
    /// `POST /v1/streams/{stream}/events` on `sluice-ingest`, JSON arrays.
    Ingest,
    /// An rdkafka producer writing the stream's topic directly, as a producer service would.
    Kafka,
}

/// Flags of the publisher, shared by the streaming scenarios.
#[derive(Debug, Clone, clap::Args)]
pub struct EventArgs {
    /// How events are published: through ingest, or straight to Kafka.
    #[arg(long, value_enum, default_value_t = PublishVia::Ingest)]
    pub publish_via: PublishVia,

    /// Interval between publish batches; each carries the events due since the previous one
    /// (at most 1,000 per ingest request).
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = parse_positive_duration)]
    pub batch_interval: Duration,

    /// Size in bytes of each event's JSON `data`, padding included.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub payload_bytes: usize,
}

/// A publisher for one phase: `rate` events/s for `duration` over `lanes` keys.
#[derive(Debug)]
pub struct Publisher {
    sink: Sink,
    rate: f64,
    duration: Duration,
    interval: Duration,
    lanes: u32,
    pad: String,
    /// Events published so far, for live progress.
    progress: Arc<AtomicU64>,
    /// Set to end the run early (at the next batch).
    stop: Arc<AtomicBool>,
    /// Where a continued run starts: events and per-lane counts already published.
    start_events: u64,
    start_lanes: Vec<u64>,
    /// Added to every lane number in payloads and keys, so publishers on several streams
    /// number their lanes apart and a client of all of them tracks each lane once.
    lane_offset: u32,
}

#[derive(Debug)]
enum Sink {
    Ingest { client: reqwest::Client, url: String },
    Kafka { producer: Producer, topic: String },
}

/// What was published.
#[derive(Debug)]
pub struct Published {
    pub events: u64,
    /// Events per lane (a lane's sequence numbers run 0..count).
    pub per_lane: Vec<u64>,
    pub requests: u64,
    pub errors: u64,
    pub error_example: Option<String>,
    /// Time from sending each publish request (ingest) or record batch (Kafka) to its
    /// acknowledgement, successes only.
    pub ack_latency: Histogram<u64>,
    /// How far behind its schedule the publisher fell at worst (a saturated publisher).
    pub max_lag: Duration,
}

impl Published {
    fn new(lanes: u32) -> Self {
        Self {
            events: 0,
            per_lane: vec![0; lanes as usize],
            requests: 0,
            errors: 0,
            error_example: None,
            ack_latency: latency_histogram(),
            max_lag: Duration::ZERO,
        }
    }

    fn error(&mut self, count: u64, example: String) {
        self.errors += count;
        self.error_example.get_or_insert(example);
    }
}

/// Most events in one ingest request (ingest's own default limit).
const MAX_BATCH: u64 = 1_000;
/// Most events in one Kafka batch of the publisher (records are enqueued one by one anyway).
const MAX_KAFKA_BATCH: u64 = 20_000;

impl Publisher {
    /// A publisher ready to run: a Kafka producer has already had one record acknowledged, so
    /// its connection set-up (metadata, idempotent producer id) is not charged to the events.
    pub async fn new(rig: &Rig, args: &EventArgs, rate: f64, duration: Duration, lanes: u32) -> anyhow::Result<Self> {
        Self::on_stream(rig, &rig.stream, args, rate, duration, lanes).await
    }

    /// Like [`Publisher::new`], publishing to `stream` instead of the rig's own.
    pub async fn on_stream(
        rig: &Rig,
        stream: &str,
        args: &EventArgs,
        rate: f64,
        duration: Duration,
        lanes: u32,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(rate > 0.0 && lanes > 0, "a publisher needs a positive rate and lanes");
        let sink = match args.publish_via {
            PublishVia::Ingest => Sink::Ingest {
                client: reqwest::Client::builder()
                    .no_proxy()
                    .default_headers(rig.auth.bench_headers()?)
                    .tcp_nodelay(true)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .context("building the publisher's HTTP client")?,
                url: rig.events_url_of(stream),
            },
            PublishVia::Kafka => {
                if rig.kind == ServerKind::Baseline {
                    bail!("--publish-via kafka needs Kafka: the baseline server takes events over HTTP only");
                }
                let bootstrap = rig.kafka_bootstrap.clone().context("the rig has no Kafka")?;
                let producer = Producer::new(&KafkaArgs::new(bootstrap), ProducerSettings::default())
                    .context("creating the Kafka producer")?;
                let warm_up = OutRecord {
                    topic: stream.to_owned(),
                    key: Some(b"warmup".to_vec()),
                    value: br#"{"warmup":true}"#.to_vec(),
                    ..OutRecord::default()
                };
                producer
                    .send(&warm_up)
                    .await
                    .context("the Kafka producer's warm-up record")?;
                Sink::Kafka {
                    producer,
                    topic: stream.to_owned(),
                }
            }
        };
        Ok(Self {
            sink,
            rate,
            duration,
            interval: args.batch_interval,
            lanes,
            pad: padding(args.payload_bytes),
            progress: Arc::default(),
            stop: Arc::default(),
            start_events: 0,
            start_lanes: vec![0; lanes as usize],
            lane_offset: 0,
        })
    }

    /// Numbers this publisher's lanes from `offset` in payloads and keys (`per_lane` stays
    /// indexed from 0).
    #[must_use]
    pub fn with_lane_offset(mut self, offset: u32) -> Self {
        self.lane_offset = offset;
        self
    }

    /// Continues the lanes of an earlier run (same lanes), so sequence numbers go on where
    /// it stopped and receivers see one unbroken sequence per lane.
    #[must_use]
    pub fn continuing(mut self, previous: &Published) -> Self {
        self.start_events = previous.events;
        self.start_lanes.clone_from(&previous.per_lane);
        self
    }

    /// A switch that ends the run at its next batch (the publishing is then shorter than
    /// `duration`).
    pub fn stopper(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// The live count of events published, for a progress line.
    pub fn progress(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.progress)
    }

    /// Publishes on schedule for the whole duration, then waits (bounded) for the last
    /// acknowledgements.
    pub async fn run(self) -> Published {
        let total = (self.rate * self.duration.as_secs_f64()).round() as u64;
        let mut published = Published::new(self.lanes);
        published.events = self.start_events;
        published.per_lane.clone_from(&self.start_lanes);
        let mut acks = JoinSet::new();
        let start = Instant::now();
        let base_us = unix_micros();
        let end = start + self.duration;
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_batch = match self.sink {
            Sink::Ingest { .. } => MAX_BATCH,
            Sink::Kafka { .. } => MAX_KAFKA_BATCH,
        };
        loop {
            ticks.tick().await;
            let now = Instant::now();
            let due = due_events(now - start, self.rate).min(total);
            let sent = published.events - self.start_events;
            if due > sent {
                // How late the oldest due event is: zero while the publisher keeps up.
                let scheduled = schedule_offset(sent, self.rate);
                published.max_lag = published.max_lag.max((now - start).saturating_sub(scheduled));
            }
            let batch = due.saturating_sub(sent).min(max_batch);
            if batch > 0 {
                self.send(&mut published, &mut acks, batch, base_us).await;
                self.progress
                    .store(published.events - self.start_events, Ordering::Relaxed);
            }
            // Bounded even if the sink stalls: give up on the remainder well past the end.
            let stopped = self.stop.load(Ordering::Relaxed);
            if stopped || published.events - self.start_events >= total || now >= end + Duration::from_secs(10) {
                break;
            }
        }
        let collect = async {
            while let Some(outcome) = acks.join_next().await {
                if let Ok(outcome) = outcome {
                    absorb_acks(&mut published, outcome);
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(15), collect).await.is_err() {
            published.error(0, "acknowledgements still missing 15s after the end".to_owned());
        }
        published
    }

    /// Sends `count` events starting at `published.events`, advancing the lane counters.
    async fn send(&self, published: &mut Published, acks: &mut JoinSet<BatchAcks>, count: u64, base_us: u64) {
        let events = self.next_events(published, count, base_us);
        published.requests += 1;
        match &self.sink {
            Sink::Ingest { client, url } => {
                let sent = Instant::now();
                match post(client, url, ingest_body(&events)).await {
                    Ok(()) => {
                        published.ack_latency.saturating_record(micros(sent.elapsed()).max(1));
                    }
                    Err(err) => published.error(1, err),
                }
            }
            Sink::Kafka { producer, topic } => {
                let sent = Instant::now();
                let mut pending = Vec::with_capacity(events.len());
                for event in events {
                    match producer.enqueue(&kafka_record(topic, event)) {
                        Ok(record) => pending.push(record),
                        Err(err) => published.error(1, format!("enqueue: {err}")),
                    }
                }
                acks.spawn(await_acks(pending, sent));
            }
        }
    }

    /// The next `count` events, lanes rotating, each stamped with its schedule time.
    fn next_events(&self, published: &mut Published, count: u64, base_us: u64) -> Vec<BenchEvent> {
        (0..count)
            .map(|_| {
                let index = published.events;
                let offset = micros(schedule_offset(index - self.start_events, self.rate));
                let local = (index % u64::from(self.lanes)) as u32;
                let seq = published.per_lane[local as usize];
                published.per_lane[local as usize] += 1;
                published.events += 1;
                let lane = self.lane_offset + local;
                BenchEvent {
                    lane,
                    seq,
                    sent_us: base_us + offset,
                    data: event_data(lane, seq, base_us + offset, &self.pad),
                }
            })
            .collect()
    }
}

/// One event about to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchEvent {
    pub lane: u32,
    pub seq: u64,
    pub sent_us: u64,
    /// The JSON data, `{"lane":…,"seq":…,"sent_us":…,"pad":"…"}`.
    pub data: String,
}

/// Events due `elapsed` into a run at `rate` per second (event 0 is due at once).
pub fn due_events(elapsed: Duration, rate: f64) -> u64 {
    (elapsed.as_secs_f64() * rate).floor() as u64 + 1
}

/// When event `index` is scheduled, from the start of the run.
pub fn schedule_offset(index: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(index as f64 / rate)
}

/// The acknowledgements of one Kafka batch.
#[derive(Debug, Default)]
struct BatchAcks {
    errors: u64,
    example: Option<String>,
    /// Enqueue → last acknowledgement of the batch, if any record succeeded.
    latency: Option<Duration>,
}

async fn await_acks(pending: Vec<Pending>, sent: Instant) -> BatchAcks {
    let mut acks = BatchAcks::default();
    for record in pending {
        match record.acknowledged().await {
            Ok(_) => acks.latency = Some(sent.elapsed()),
            Err(err) => {
                acks.errors += 1;
                acks.example.get_or_insert_with(|| err.to_string());
            }
        }
    }
    acks
}

fn absorb_acks(published: &mut Published, acks: BatchAcks) {
    if let Some(latency) = acks.latency {
        published.ack_latency.saturating_record(micros(latency).max(1));
    }
    if let Some(example) = acks.example {
        published.error(acks.errors, example);
    }
}

/// A bench event as a Kafka record, with the header convention of producer services.
fn kafka_record(topic: &str, event: BenchEvent) -> OutRecord {
    OutRecord {
        topic: topic.to_owned(),
        key: Some(format!("lane-{}", event.lane).into_bytes()),
        value: event.data.into_bytes(),
        headers: vec![
            // `message` is the default type: the gateway writes the same frame as for an
            // untyped event from ingest, so both ways in measure the same bytes out.
            (headers::EVENT_TYPE.to_owned(), b"message".to_vec()),
            (headers::CONTENT_TYPE.to_owned(), b"application/json".to_vec()),
        ],
        timestamp_ms: Some(i64::try_from(event.sent_us / 1_000).unwrap_or(i64::MAX)),
    }
}

/// The ingest body for `events`: a JSON array of `{"key":"lane-L","data":{…}}`.
pub fn ingest_body(events: &[BenchEvent]) -> String {
    let mut body = String::with_capacity(events.iter().map(|event| event.data.len() + 24).sum::<usize>() + 2);
    body.push('[');
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"key":"lane-{}","data":{}}}"#, event.lane, event.data));
    }
    body.push(']');
    body
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> Result<(), String> {
    let response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    if status.is_success() {
        // The acknowledgements are not needed; reading the body frees the connection.
        let _ = response.bytes().await;
        Ok(())
    } else {
        let text = response.text().await.unwrap_or_default();
        Err(format!("{status}: {}", text.chars().take(200).collect::<String>()))
    }
}

/// One event's data, `{"lane":L,"seq":S,"sent_us":T,"pad":"…"}`.
pub fn event_data(lane: u32, seq: u64, sent_us: u64, pad: &str) -> String {
    format!(r#"{{"lane":{lane},"seq":{seq},"sent_us":{sent_us},"pad":"{pad}"}}"#)
}

/// Padding that brings a typical event's data to `payload_bytes` (a 16-digit timestamp, a
/// 6-digit sequence number, a 1-digit lane).
pub fn padding(payload_bytes: usize) -> String {
    let typical = r#"{"lane":0,"seq":000000,"sent_us":0000000000000000,"pad":""}"#.len();
    "x".repeat(payload_bytes.saturating_sub(typical))
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, micros)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse_wire::{parse_probe, Probe};

    #[test]
    fn events_carry_a_probe_the_holders_can_read() {
        let data = event_data(3, 123_456, 1_732_000_000_000_000, &padding(100));
        assert_eq!(data.len(), 100, "{data}");
        assert_eq!(
            parse_probe(data.as_bytes()),
            Some(Probe {
                lane: 3,
                seq: 123_456,
                sent_us: 1_732_000_000_000_000
            })
        );
        let body: serde_json::Value = serde_json::from_str(&ingest_body(&[BenchEvent {
            lane: 3,
            seq: 1,
            sent_us: 2,
            data: data.clone(),
        }]))
        .unwrap();
        assert_eq!(body[0]["key"], "lane-3");
        assert_eq!(
            body[0]["data"],
            serde_json::from_str::<serde_json::Value>(&data).unwrap()
        );
    }

    #[test]
    fn the_schedule_not_the_send_sets_each_timestamp() {
        // 1,000 events/s: event k is due k ms after the start, whenever it is actually sent.
        assert_eq!(due_events(Duration::ZERO, 1_000.0), 1);
        assert_eq!(due_events(Duration::from_micros(9_999), 1_000.0), 10);
        assert_eq!(due_events(Duration::from_millis(10), 1_000.0), 11);
        assert_eq!(schedule_offset(250, 1_000.0), Duration::from_millis(250));
        assert_eq!(schedule_offset(3, 2.0), Duration::from_millis(1_500));
    }

    #[test]
    fn batches_rotate_lanes_and_number_each_lane_from_zero() {
        let publisher = Publisher {
            sink: Sink::Ingest {
                client: reqwest::Client::new(),
                url: String::new(),
            },
            rate: 1_000.0,
            duration: Duration::from_secs(1),
            interval: Duration::from_millis(10),
            lanes: 3,
            pad: String::new(),
            progress: Arc::default(),
            stop: Arc::default(),
            start_events: 0,
            start_lanes: vec![0; 3],
            lane_offset: 0,
        };
        let mut published = Published::new(3);
        let mut events = publisher.next_events(&mut published, 4, 1_000_000);
        events.extend(publisher.next_events(&mut published, 3, 1_000_000));
        let probes: Vec<(u32, u64, u64)> = events.iter().map(|e| (e.lane, e.seq, e.sent_us)).collect();
        assert_eq!(
            probes,
            [
                (0, 0, 1_000_000),
                (1, 0, 1_001_000),
                (2, 0, 1_002_000),
                (0, 1, 1_003_000),
                (1, 1, 1_004_000),
                (2, 1, 1_005_000),
                (0, 2, 1_006_000)
            ]
        );
        assert_eq!(published.events, 7);
        assert_eq!(published.per_lane, [3, 2, 2]);

        // A continued run goes on with each lane's sequence, on its own schedule.
        let next = publisher.continuing(&published);
        let mut continued = Published::new(3);
        continued.events = published.events;
        continued.per_lane.clone_from(&published.per_lane);
        let more = next.next_events(&mut continued, 2, 5_000_000);
        let probes: Vec<(u32, u64, u64)> = more.iter().map(|e| (e.lane, e.seq, e.sent_us)).collect();
        assert_eq!(probes, [(1, 2, 5_000_000), (2, 2, 5_001_000)]);
    }

    #[test]
    fn a_lane_offset_numbers_payloads_and_keys_apart_from_other_streams() {
        let publisher = Publisher {
            sink: Sink::Ingest {
                client: reqwest::Client::new(),
                url: String::new(),
            },
            rate: 1_000.0,
            duration: Duration::from_secs(1),
            interval: Duration::from_millis(10),
            lanes: 2,
            pad: String::new(),
            progress: Arc::default(),
            stop: Arc::default(),
            start_events: 0,
            start_lanes: vec![0; 2],
            lane_offset: 0,
        }
        .with_lane_offset(4);
        let mut published = Published::new(2);
        let events = publisher.next_events(&mut published, 3, 0);
        let lanes: Vec<(u32, u64)> = events.iter().map(|e| (e.lane, e.seq)).collect();
        assert_eq!(lanes, [(4, 0), (5, 0), (4, 1)]);
        assert_eq!(parse_probe(events[1].data.as_bytes()).map(|probe| probe.lane), Some(5));
        assert!(ingest_body(&events).contains(r#""key":"lane-5""#));
        // Counts stay per local lane, as the stream's receivers index them.
        assert_eq!(published.per_lane, [2, 1]);
    }

    #[test]
    fn kafka_records_follow_the_producer_convention() {
        let record = kafka_record(
            "orders",
            BenchEvent {
                lane: 5,
                seq: 0,
                sent_us: 1_732_000_000_123_456,
                data: "{}".into(),
            },
        );
        assert_eq!(record.key.as_deref(), Some(&b"lane-5"[..]));
        assert_eq!(record.value, b"{}");
        let names: Vec<&str> = record.headers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, [headers::EVENT_TYPE, headers::CONTENT_TYPE]);
        assert_eq!(record.timestamp_ms, Some(1_732_000_000_123));
    }
}
