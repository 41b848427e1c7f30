//! The gateway's Kafka clients: one metadata client, one consumer per feed, and catch-up
//! readers bounded by a semaphore so a reconnect storm cannot become a broker storm.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_kafka::metadata::Watermarks;
use sluice_kafka::{KafkaArgs, KafkaError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::feed::LagContext;
use crate::metrics::GatewayMetrics;
use crate::GatewayError;

/// Shared Kafka access for every stream on this pod.
pub struct KafkaContext {
    args: KafkaArgs,
    /// The runtime feeds run on (the process's main runtime, not an HTTP worker's).
    pub runtime: tokio::runtime::Handle,
    pub metrics: GatewayMetrics,
    catchup: Arc<Semaphore>,
    admin: Arc<BaseConsumer>,
    timeout: Duration,
    lag_interval: Duration,
}

impl std::fmt::Debug for KafkaContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaContext")
            .field("brokers", &self.args.brokers)
            .finish_non_exhaustive()
    }
}

fn kafka_err(e: rdkafka::error::KafkaError) -> GatewayError {
    GatewayError::Kafka(KafkaError::Kafka(e))
}

impl KafkaContext {
    pub fn new(
        args: KafkaArgs,
        runtime: tokio::runtime::Handle,
        metrics: GatewayMetrics,
        max_catchup_readers: usize,
        timeout: Duration,
        lag_interval: Duration,
    ) -> Result<Self, KafkaError> {
        let admin: BaseConsumer = consumer_config(&args)?.create().map_err(KafkaError::ClientConfig)?;
        Ok(Self {
            args,
            runtime,
            metrics,
            catchup: Arc::new(Semaphore::new(max_catchup_readers.max(1))),
            admin: Arc::new(admin),
            timeout,
            lag_interval,
        })
    }

    /// Whether the cluster answers a metadata request (readiness).
    pub async fn check(&self) -> Result<(), KafkaError> {
        let admin = self.admin.clone();
        let timeout = self.timeout;
        sluice_kafka::metadata::cluster_info(move || admin.fetch_metadata(None, timeout))
            .await
            .map(|_| ())
    }

    /// Partition count of `topic`; 404 when it does not exist.
    pub async fn partition_count(&self, topic: &str) -> Result<usize, GatewayError> {
        let admin = self.admin.clone();
        let (name, timeout) = (topic.to_owned(), self.timeout);
        match sluice_kafka::metadata::partition_count(topic, move || admin.fetch_metadata(Some(&name), timeout)).await {
            Ok(n) => Ok(n),
            Err(KafkaError::UnknownTopic(_)) => {
                Err(GatewayError::UnknownStream(format!("there is no topic {topic:?}")))
            }
            Err(e) => Err(GatewayError::Kafka(e)),
        }
    }

    /// Low and high watermark of each of `partitions`, in that order: one broker round trip
    /// per partition, so callers ask only for the partitions they need.
    pub async fn watermarks(
        &self,
        topic: &str,
        partitions: impl IntoIterator<Item = usize>,
    ) -> Result<Vec<Watermarks>, GatewayError> {
        let admin = self.admin.clone();
        let (topic, timeout) = (topic.to_owned(), self.timeout);
        let partitions: Vec<usize> = partitions.into_iter().collect();
        tokio::task::spawn_blocking(move || {
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
        .map_err(|e| GatewayError::Kafka(KafkaError::Task(e.to_string())))?
        .map_err(kafka_err)
    }

    /// Per partition, the first offset whose timestamp is at or after `timestamp_ms` (the high
    /// watermark where there is none). Kafka's ListOffsets by timestamp; librdkafka's mock
    /// cluster cannot answer it.
    pub async fn offsets_for_time(
        &self,
        topic: &str,
        partitions: usize,
        timestamp_ms: i64,
    ) -> Result<Vec<i64>, GatewayError> {
        let highs = self.watermarks(topic, 0..partitions).await?;
        let admin = self.admin.clone();
        let (name, timeout) = (topic.to_owned(), self.timeout);
        let found = tokio::task::spawn_blocking(move || {
            let mut query = TopicPartitionList::new();
            for p in 0..partitions as i32 {
                query.add_partition_offset(&name, p, Offset::Offset(timestamp_ms))?;
            }
            admin.offsets_for_times(query, timeout)
        })
        .await
        .map_err(|e| GatewayError::Kafka(KafkaError::Task(e.to_string())))?
        .map_err(kafka_err)?;
        let answers: Vec<(i32, i64)> = found
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
            .collect();
        Ok(resolve_since(&answers, &highs))
    }

    /// The consumer behind a feed, with lag statistics.
    pub fn feed_consumer(
        &self,
        stream: &str,
        feed: std::sync::Weak<crate::feed::Feed>,
    ) -> Result<StreamConsumer<LagContext>, GatewayError> {
        let context = LagContext {
            stream: stream.to_owned(),
            metrics: self.metrics.clone(),
            feed,
        };
        let mut config = consumer_config(&self.args).map_err(GatewayError::Kafka)?;
        config.set(
            "statistics.interval.ms",
            self.lag_interval.as_millis().max(1).to_string(),
        );
        config
            .create_with_context(context)
            .map_err(|e| GatewayError::Kafka(KafkaError::ClientConfig(e)))
    }

    /// A reader of `positions` (partition, next offset), once one of the bounded slots is free.
    pub async fn catchup_reader(&self, topic: &str, positions: &[(usize, i64)]) -> Result<CatchUpReader, GatewayError> {
        let permit = self
            .catchup
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| GatewayError::Kafka(KafkaError::Task(e.to_string())))?;
        let consumer: StreamConsumer = catchup_config(&self.args)
            .map_err(GatewayError::Kafka)?
            .create()
            .map_err(|e| GatewayError::Kafka(KafkaError::ClientConfig(e)))?;
        let mut assignment = TopicPartitionList::new();
        for &(p, offset) in positions {
            assignment
                .add_partition_offset(topic, p as i32, Offset::Offset(offset))
                .map_err(kafka_err)?;
        }
        consumer.assign(&assignment).map_err(kafka_err)?;
        self.metrics.catchup_readers_active.inc();
        Ok(CatchUpReader {
            consumer,
            _permit: permit,
            metrics: self.metrics.clone(),
        })
    }
}

/// Maps offsets-for-times answers to positions: a partition with no record at or after the
/// time (offset -1) starts at its high watermark, i.e. only new records.
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
    Ok(config)
}

/// A record read by a catch-up reader, owned.
#[derive(Debug)]
pub struct OwnedRecord {
    pub partition: u32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub type_header: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// A consumer reading older positions for one subscriber. Holds a slot until dropped.
pub struct CatchUpReader {
    consumer: StreamConsumer,
    _permit: OwnedSemaphorePermit,
    metrics: GatewayMetrics,
}

impl std::fmt::Debug for CatchUpReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchUpReader").finish_non_exhaustive()
    }
}

impl CatchUpReader {
    /// The next record, or `None` when none arrives within `idle`.
    pub async fn next(&self, idle: Duration) -> Result<Option<OwnedRecord>, GatewayError> {
        match tokio::time::timeout(idle, self.consumer.recv()).await {
            Err(_) => Ok(None),
            Ok(Err(e)) => Err(kafka_err(e)),
            Ok(Ok(m)) => Ok(Some(OwnedRecord {
                partition: m.partition() as u32,
                offset: m.offset(),
                timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                key: m.key().map(<[u8]>::to_vec),
                type_header: m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "sse-event")
                        .and_then(|h| h.value.map(<[u8]>::to_vec))
                }),
                value: m.payload().map(<[u8]>::to_vec),
            })),
        }
    }
}

impl Drop for CatchUpReader {
    fn drop(&mut self) {
        self.metrics.catchup_readers_active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_defaults_yield_to_the_operator() {
        let defaults = consumer_config(&KafkaArgs::new("k:9092")).unwrap();
        assert_eq!(defaults.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(defaults.get("fetch.wait.max.ms"), Some("50"));
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
        assert_eq!(
            consumer_config(&KafkaArgs::new("k:9092"))
                .unwrap()
                .get("fetch.max.bytes"),
            None,
            "the feed's consumer keeps librdkafka's defaults"
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
