//! The real [`RecordSource`]: the only file in the gateway that calls rdkafka.
//!
//! - One metadata client (`admin`): partition counts, watermarks, offsets by time, readiness.
//! - **One live consumer for every stream of the pod.** A stream's feed joins its assignment
//!   with `incremental_assign` and leaves it with `incremental_unassign`; one task receives every
//!   record and routes it by topic to the stream's [`Sink`]. Threads and broker connections stay
//!   constant however many streams the pod serves (librdkafka: a main thread and one per broker,
//!   per client).
//! - Catch-up readers: one short-lived consumer each, bounded by the engine. They report
//!   partition ends, so a reader whose partition ends in control records still gets its position.
//!
//! Every consumer reads `read_committed` (refused in `--kafka-config`), with no group and no
//! commits. librdkafka moves a consumer's position past control records and aborted
//! transactions as the application polls, so [`Consumer::position`] is the next offset that
//! matters; this file turns it into [`Position`]s.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::future::BoxFuture;
use futures::FutureExt as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, Statistics, TopicPartitionList};
use sluice_kafka::metadata::Watermarks;
use sluice_kafka::{KafkaArgs, KafkaError};
use tokio_util::sync::CancellationToken;

use super::{Position, Reader, Record, RecordHeaders, RecordSource, Sink, SourceEvent, TopicInfo};
use crate::GatewayError;

/// Kafka properties the gateway sets on its consumers itself: `--kafka-config` refuses them.
pub const CONTROLLED: [(&str, &str); 4] = [
    ("group.id", "the gateway reads without a consumer group"),
    ("enable.auto.commit", "the gateway never commits offsets"),
    ("statistics.interval.ms", "the gateway sets it to report consumer lag"),
    (
        "isolation.level",
        "the gateway reads read_committed: aborted transactions are never streamed",
    ),
];

/// How often the live consumer's positions are read, to move feeds past offsets that yielded
/// no record (a transaction's control record at the head of a partition).
const POSITION_INTERVAL: Duration = Duration::from_secs(1);

/// Metadata calls (partition counts, watermarks, offsets by time) in flight at once. librdkafka's
/// calls block, so each takes a thread of tokio's blocking pool: a thousand streams opening at
/// once would otherwise take hundreds of threads (and send as many requests at the brokers).
const METADATA_CALLS: usize = 16;

/// Live streams by topic, shared by the receive loop and the statistics callback.
type Routes = Arc<DashMap<String, Arc<dyn Sink>>>;

/// The gateway's Kafka clients.
pub struct KafkaSource {
    args: KafkaArgs,
    admin: Arc<BaseConsumer>,
    live: Arc<StreamConsumer<LiveContext>>,
    routes: Routes,
    /// Which topics exist, so requests for unknown streams do not each ask Kafka.
    topics: sluice_kafka::TopicDirectory,
    timeout: Duration,
    metadata_calls: tokio::sync::Semaphore,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("brokers", &self.args.brokers)
            .field("streams", &self.routes.len())
            .finish_non_exhaustive()
    }
}

fn kafka_err(e: RdKafkaError) -> GatewayError {
    GatewayError::Kafka(KafkaError::Kafka(e))
}

fn task_err(e: tokio::task::JoinError) -> GatewayError {
    GatewayError::Kafka(KafkaError::Task(e.to_string()))
}

impl KafkaSource {
    /// Creates the clients (no network yet). `lag_interval` paces librdkafka's statistics,
    /// from which the live consumer reports watermarks.
    pub fn new(args: KafkaArgs, timeout: Duration, lag_interval: Duration) -> Result<Self, KafkaError> {
        let admin: Arc<BaseConsumer> = Arc::new(consumer_config(&args)?.create().map_err(KafkaError::ClientConfig)?);
        let lister = admin.clone();
        let topics = sluice_kafka::TopicDirectory::new(Arc::new(move || {
            sluice_kafka::directory::existing_topics(lister.fetch_metadata(None, timeout))
        }));
        let routes: Routes = Arc::default();
        let mut config = consumer_config(&args)?;
        config
            .set("statistics.interval.ms", lag_interval.as_millis().max(1).to_string())
            // Records of every stream share one client: never let a quiet partition's fetch
            // wait hold the others back longer than the default.
            .set("enable.partition.eof", "false");
        let live = config
            .create_with_context(LiveContext { routes: routes.clone() })
            .map_err(KafkaError::ClientConfig)?;
        Ok(Self {
            args,
            admin,
            live: Arc::new(live),
            routes,
            topics,
            timeout,
            metadata_calls: tokio::sync::Semaphore::new(METADATA_CALLS),
        })
    }

    /// Waits for one of the [`METADATA_CALLS`] slots.
    async fn metadata_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, GatewayError> {
        self.metadata_calls
            .acquire()
            .await
            .map_err(|e| GatewayError::Kafka(KafkaError::Task(e.to_string())))
    }

    /// Receives the live consumer's records and routes them to their streams until `stop`.
    pub async fn run_live(self: Arc<Self>, stop: CancellationToken) {
        let mut positions = tokio::time::interval(POSITION_INTERVAL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = positions.tick() => self.report_positions(),
                message = self.live.recv() => match message {
                    Ok(m) => {
                        if let Some(sink) = self.routes.get(m.topic()) {
                            sink.record(owned(&m));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "live consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }

    /// Tells each stream where the live consumer stands, so a partition whose head is control
    /// records (a committed transaction's marker) does not look behind.
    fn report_positions(&self) {
        if self.routes.is_empty() {
            return;
        }
        let Ok(list) = self.live.position() else { return };
        for element in list.elements() {
            let (Some(sink), Offset::Offset(next)) = (self.routes.get(element.topic()), element.offset()) else {
                continue;
            };
            if let Ok(partition) = u32::try_from(element.partition()) {
                sink.advance(Position { partition, next });
            }
        }
    }
}

impl RecordSource for KafkaSource {
    fn check(&self) -> BoxFuture<'_, Result<(), GatewayError>> {
        let admin = self.admin.clone();
        let timeout = self.timeout;
        async move {
            sluice_kafka::metadata::cluster_info(move || admin.fetch_metadata(None, timeout))
                .await
                .map(|_| ())
                .map_err(GatewayError::Kafka)
        }
        .boxed()
    }

    fn describe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<TopicInfo, GatewayError>> {
        async move {
            let unknown = || GatewayError::UnknownStream(format!("there is no topic {topic:?}"));
            // The cached listing first: a flood of unknown names costs at most one listing
            // every few seconds, not a metadata request each.
            match self.topics.exists(topic).await {
                Ok(true) => {}
                Ok(false) => return Err(unknown()),
                Err(e) => return Err(GatewayError::Kafka(e)),
            }
            let admin = self.admin.clone();
            let (name, timeout) = (topic.to_owned(), self.timeout);
            let fetch = move || admin.fetch_metadata(Some(&name), timeout);
            let _slot = self.metadata_slot().await?;
            match sluice_kafka::metadata::partition_count(topic, fetch).await {
                Ok(partitions) => Ok(TopicInfo { partitions }),
                Err(KafkaError::UnknownTopic(_)) => Err(unknown()),
                Err(e) => Err(GatewayError::Kafka(e)),
            }
        }
        .boxed()
    }

    fn watermarks<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Watermarks>, GatewayError>> {
        let admin = self.admin.clone();
        let (topic, timeout, partitions) = (topic.to_owned(), self.timeout, partitions.to_vec());
        async move {
            let _slot = self.metadata_slot().await?;
            tokio::task::spawn_blocking(move || {
                // One round trip per partition: callers ask only for those they need. The
                // high watermark of a read_committed client is the last stable offset.
                partitions
                    .into_iter()
                    .map(|p| {
                        admin
                            .fetch_watermarks(&topic, p as i32, timeout)
                            .map(|(low, high)| Watermarks { low, high })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(task_err)?
            .map_err(kafka_err)
        }
        .boxed()
    }

    fn offsets_for_time<'a>(
        &'a self,
        topic: &'a str,
        partitions: usize,
        timestamp_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<i64>, GatewayError>> {
        async move {
            let all: Vec<usize> = (0..partitions).collect();
            let highs = self.watermarks(topic, &all).await?;
            let admin = self.admin.clone();
            let (name, timeout) = (topic.to_owned(), self.timeout);
            let _slot = self.metadata_slot().await?;
            let found = tokio::task::spawn_blocking(move || {
                let mut query = TopicPartitionList::new();
                for p in 0..partitions as i32 {
                    query.add_partition_offset(&name, p, Offset::Offset(timestamp_ms))?;
                }
                admin.offsets_for_times(query, timeout)
            })
            .await
            .map_err(task_err)?
            .map_err(kafka_err)?;
            let answers: Vec<(i32, i64)> = found
                .elements()
                .iter()
                .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
                .collect();
            Ok(resolve_since(&answers, &highs))
        }
        .boxed()
    }

    fn follow(&self, topic: &str, positions: &[(usize, i64)], sink: Arc<dyn Sink>) -> Result<(), GatewayError> {
        let list = partition_list(topic, positions)?;
        let first = self.routes.insert(topic.to_owned(), sink).is_none();
        self.live.incremental_assign(&list).map_err(|e| {
            if first {
                // Nothing of this topic is assigned: leave no route behind either.
                self.routes.remove(topic);
            }
            kafka_err(e)
        })
    }

    fn unfollow(&self, topic: &str) {
        let Some((_, _)) = self.routes.remove(topic) else {
            return;
        };
        let assigned = self.live.assignment().map(|all| {
            let mut mine = TopicPartitionList::new();
            for e in all.elements().iter().filter(|e| e.topic() == topic) {
                mine.add_partition(topic, e.partition());
            }
            mine
        });
        if let Err(err) = assigned.and_then(|mine| self.live.incremental_unassign(&mine)) {
            tracing::warn!(topic, error = %err, "cannot leave the live consumer's assignment");
        }
    }

    fn reader<'a>(
        &'a self,
        topic: &'a str,
        positions: &'a [(usize, i64)],
    ) -> BoxFuture<'a, Result<Box<dyn Reader>, GatewayError>> {
        async move {
            let consumer: StreamConsumer = catchup_config(&self.args)
                .map_err(GatewayError::Kafka)?
                .create()
                .map_err(|e| GatewayError::Kafka(KafkaError::ClientConfig(e)))?;
            consumer.assign(&partition_list(topic, positions)?).map_err(kafka_err)?;
            Ok(Box::new(CatchUpReader {
                consumer,
                topic: topic.to_owned(),
            }) as Box<dyn Reader>)
        }
        .boxed()
    }
}

fn partition_list(topic: &str, positions: &[(usize, i64)]) -> Result<TopicPartitionList, GatewayError> {
    let mut list = TopicPartitionList::new();
    for &(p, offset) in positions {
        list.add_partition_offset(topic, p as i32, Offset::Offset(offset))
            .map_err(kafka_err)?;
    }
    Ok(list)
}

fn owned(m: &BorrowedMessage<'_>) -> Record {
    let headers = m.headers().map_or_else(RecordHeaders::default, |h| {
        RecordHeaders::from_pairs(h.iter().map(|h| (h.key, h.value)))
    });
    Record {
        partition: m.partition() as u32,
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
        key: m.key().map(bytes::Bytes::copy_from_slice),
        value: m.payload().map(bytes::Bytes::copy_from_slice),
        headers,
    }
}

/// Maps offsets-for-times answers to positions: a partition with no record at or after the
/// time (offset -1) starts at its end, i.e. only new records.
pub fn resolve_since(found: &[(i32, i64)], watermarks: &[Watermarks]) -> Vec<i64> {
    watermarks
        .iter()
        .enumerate()
        .map(|(p, w)| match found.iter().find(|(fp, _)| *fp == p as i32) {
            Some(&(_, offset)) if offset >= 0 => offset.clamp(w.low, w.high),
            _ => w.high,
        })
        .collect()
}

fn consumer_config(args: &KafkaArgs) -> Result<ClientConfig, KafkaError> {
    let mut config = args.client_config()?;
    // No consumer group, no commits: the client's cursor is the only position. librdkafka still
    // wants a group id, even for assign().
    config
        .set("group.id", format!("sluice-gateway-{:016x}", rand::random::<u64>()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    // Defaults an operator may override with --kafka-config. A real broker answers a fetch as
    // soon as data arrives, so the wait only paces idle polling.
    if config.get("fetch.wait.max.ms").is_none() {
        config.set("fetch.wait.max.ms", "50");
    }
    // librdkafka holds up to queued.min.messages records per consumer and, once that is
    // reached, postpones the partition's next fetch by this long (default 1 s). A catch-up reader
    // drains its queue far faster than that, so with the default it idles most of every second:
    // measured 150,000 events/s for one client, against 950,000/s with 10 ms (BENCHMARKS.md).
    if config.get("fetch.queue.backoff.ms").is_none() {
        config.set("fetch.queue.backoff.ms", "10");
    }
    Ok(config)
}

/// A catch-up reader's prefetch, bounded: librdkafka's defaults let one consumer hold 64 MiB
/// of records ahead of its reader (`queued.max.messages.kbytes`), so a few readers on large
/// events could cost more than every connection of the pod. Sized so a reader holds about
/// 1 MiB queued plus one fetch in flight; an operator's `--kafka-config` still wins.
pub const CATCHUP_PREFETCH: [(&str, &str); 3] = [
    ("queued.max.messages.kbytes", "1024"),
    // librdkafka raises it to message.max.bytes (1,000,000 by default) if set lower, so a
    // record of any size the cluster accepts can still be read.
    ("fetch.max.bytes", "1048576"),
    ("max.partition.fetch.bytes", "262144"),
];

fn catchup_config(args: &KafkaArgs) -> Result<ClientConfig, KafkaError> {
    let mut config = consumer_config(args)?;
    for (key, value) in CATCHUP_PREFETCH {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    // A reader must learn that it reached a partition's end, where the position may lie past
    // the last record (a transaction's control record, an aborted transaction).
    config.set("enable.partition.eof", "true");
    Ok(config)
}

/// A consumer reading older positions for one subscriber.
struct CatchUpReader {
    consumer: StreamConsumer,
    topic: String,
}

impl std::fmt::Debug for CatchUpReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchUpReader")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Reader for CatchUpReader {
    fn next(&mut self, idle: Duration) -> BoxFuture<'_, Result<Option<SourceEvent>, GatewayError>> {
        async move {
            match tokio::time::timeout(idle, self.consumer.recv()).await {
                Err(_) => Ok(None),
                Ok(Ok(m)) => Ok(Some(SourceEvent::Record(owned(&m)))),
                Ok(Err(RdKafkaError::PartitionEOF(partition))) => Ok(self.position_of(partition)),
                Ok(Err(e)) => Err(kafka_err(e)),
            }
        }
        .boxed()
    }
}

impl CatchUpReader {
    /// The reader's position in `partition`, past any control records it has consumed.
    fn position_of(&self, partition: i32) -> Option<SourceEvent> {
        let list = self.consumer.position().ok()?;
        let element = list.find_partition(&self.topic, partition)?;
        match (element.offset(), u32::try_from(partition)) {
            (Offset::Offset(next), Ok(partition)) => Some(SourceEvent::Position(Position { partition, next })),
            _ => None,
        }
    }
}

/// The live consumer's context: librdkafka's periodic statistics carry each partition's low
/// watermark and last stable offset, which the streams turn into ring trimming (retention) and
/// the consumer lag gauge, with no extra broker round trips. (librdkafka's own `consumer_lag`
/// needs committed offsets, and the gateway never commits.)
struct LiveContext {
    routes: Routes,
}

impl ClientContext for LiveContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            let Some(sink) = self.routes.get(topic) else { continue };
            for (&partition, p) in &stats.partitions {
                // librdkafka's internal "-1" partition, and partitions it has no answer for yet.
                let Ok(partition) = u32::try_from(partition) else {
                    continue;
                };
                if p.ls_offset >= 0 && p.lo_offset >= 0 {
                    sink.watermarks(partition, p.lo_offset, p.ls_offset);
                }
            }
        }
    }
}

impl ConsumerContext for LiveContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_defaults_yield_to_the_operator() {
        let defaults = consumer_config(&KafkaArgs::new("k:9092")).unwrap();
        assert_eq!(defaults.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(defaults.get("fetch.wait.max.ms"), Some("50"));
        assert_eq!(defaults.get("isolation.level"), Some("read_committed"));
        let mut args = KafkaArgs::new("k:9092");
        args.config.push("fetch.queue.backoff.ms=100".into());
        assert_eq!(
            consumer_config(&args).unwrap().get("fetch.queue.backoff.ms"),
            Some("100")
        );
    }

    #[test]
    fn catchup_readers_prefetch_about_a_mebibyte_unless_the_operator_says_otherwise() {
        let defaults = catchup_config(&KafkaArgs::new("k:9092")).unwrap();
        assert_eq!(defaults.get("queued.max.messages.kbytes"), Some("1024"));
        assert_eq!(defaults.get("fetch.max.bytes"), Some("1048576"));
        assert_eq!(defaults.get("max.partition.fetch.bytes"), Some("262144"));
        assert_eq!(defaults.get("enable.partition.eof"), Some("true"));
        assert_eq!(
            consumer_config(&KafkaArgs::new("k:9092"))
                .unwrap()
                .get("fetch.max.bytes"),
            None,
            "the live consumer keeps librdkafka's defaults"
        );
        let mut args = KafkaArgs::new("k:9092");
        args.config.push("queued.max.messages.kbytes=4096".into());
        assert_eq!(
            catchup_config(&args).unwrap().get("queued.max.messages.kbytes"),
            Some("4096")
        );
    }

    #[test]
    fn since_resolves_missing_answers_to_the_end() {
        let w = [
            Watermarks { low: 0, high: 10 },
            Watermarks { low: 5, high: 9 },
            Watermarks { low: 0, high: 3 },
        ];
        assert_eq!(resolve_since(&[(0, 4), (1, -1), (2, 7)], &w), vec![4, 9, 3]);
        assert_eq!(
            resolve_since(&[(1, 2)], &w),
            vec![10, 5, 3],
            "clamped to what is stored"
        );
    }
}
