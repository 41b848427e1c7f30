//! The idempotent producer behind ingest.
//!
//! Ordering contract: [`Producer::enqueue`] is synchronous, so records enqueued one after
//! another from one task keep that order within their partition (idempotence makes retries
//! keep it too). Acknowledgement is awaited separately, which lets a request enqueue a whole
//! batch before waiting once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, OwnedHeaders, Timestamp};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaArgs, KafkaError};

/// Producer tuning that services expose as flags.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// How long Kafka may take to acknowledge a record before the produce fails
    /// (librdkafka's `message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// How long to wait for more records before sending a batch (`linger.ms`).
    pub linger: Duration,
    /// `compression.type`: none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// The largest record the producer will send (`message.max.bytes`).
    pub max_message_bytes: usize,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            delivery_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(5),
            compression: "lz4".into(),
            max_message_bytes: 1_000_000,
        }
    }
}

/// One record to write.
#[derive(Debug, Clone, Default)]
pub struct OutRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Create time in milliseconds since the epoch; now when absent.
    pub timestamp_ms: Option<i64>,
}

/// Where Kafka put an acknowledged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp as Kafka stored it (create time, or log-append time when the topic
    /// is configured so), in milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// A record that has been handed to the producer and awaits Kafka's acknowledgement.
#[must_use = "a pending record must be awaited to learn whether Kafka has it"]
pub struct Pending {
    future: DeliveryFuture,
    timestamp_ms: i64,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("timestamp_ms", &self.timestamp_ms)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Waits until Kafka acknowledged the record, or the delivery timeout failed it.
    pub async fn acknowledged(self) -> Result<Delivered, KafkaError> {
        match self.future.await {
            Ok(Ok(delivery)) => Ok(Delivered {
                partition: delivery.partition,
                offset: delivery.offset,
                timestamp_ms: stored_timestamp(delivery.timestamp, self.timestamp_ms),
            }),
            Ok(Err((err, _message))) => Err(classify(err, self.delivery_timeout)),
            // The producer was dropped with the record still queued.
            Err(_canceled) => Err(KafkaError::Kafka(RdError::Canceled)),
        }
    }
}

/// Sluice's producer: idempotent, `acks=all`, murmur2 partitioning. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    settings: ProducerSettings,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Creates the producer. Connecting happens in the background; nothing here waits for Kafka.
    pub fn new(args: &KafkaArgs, settings: ProducerSettings) -> Result<Self, KafkaError> {
        let mut config = args.client_config()?;
        // Passthrough first, then the properties that make "acknowledged" mean "durable".
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // The Java client's default: murmur2 for keyed records, spread for unkeyed ones.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", settings.linger.as_millis().to_string())
            .set("compression.type", &settings.compression)
            .set("message.timeout.ms", settings.delivery_timeout.as_millis().to_string())
            .set("message.max.bytes", settings.max_message_bytes.to_string());
        // Requests must be able to time out before the delivery deadline, or a hung broker
        // would hold records until message.timeout.ms regardless.
        if config.get("request.timeout.ms").is_none() {
            let request_timeout = settings.delivery_timeout.as_millis().clamp(1, 30_000);
            config.set("request.timeout.ms", request_timeout.to_string());
        }
        let inner: FutureProducer = config.create().map_err(KafkaError::ClientConfig)?;
        Ok(Self { inner, settings })
    }

    /// The settings this producer was built with.
    pub fn settings(&self) -> &ProducerSettings {
        &self.settings
    }

    /// Hands a record to the producer without waiting. Fails at once when the local queue is
    /// full or the record is too large; otherwise await [`Pending::acknowledged`].
    pub fn enqueue(&self, record: &OutRecord) -> Result<Pending, KafkaError> {
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_slice()),
            });
        }
        let mut future_record = FutureRecord::<[u8], [u8]>::to(&record.topic)
            .payload(record.value.as_slice())
            .headers(headers)
            .timestamp(timestamp_ms);
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_slice());
        }
        match self.inner.send_result(future_record) {
            Ok(future) => Ok(Pending {
                future,
                timestamp_ms,
                delivery_timeout: self.settings.delivery_timeout,
            }),
            Err((err, _record)) => Err(classify(err, self.settings.delivery_timeout)),
        }
    }

    /// Enqueues and waits for the acknowledgement of one record.
    pub async fn send(&self, record: &OutRecord) -> Result<Delivered, KafkaError> {
        self.enqueue(record)?.acknowledged().await
    }

    /// Waits until every queued record is acknowledged or failed, at most `timeout`.
    /// Returns how many were still in flight when it gave up (0 on a clean flush).
    pub async fn flush(&self, timeout: Duration) -> usize {
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _ = inner.flush(timeout);
            inner.in_flight_count()
        })
        .await;
        result.map_or(0, |n| n.max(0) as usize)
    }

    /// Asks the cluster for its metadata; used for readiness. See [`crate::metadata`].
    pub async fn cluster_metadata(&self, timeout: Duration) -> Result<crate::metadata::ClusterInfo, KafkaError> {
        let inner = self.inner.clone();
        crate::metadata::cluster_info(move || inner.client().fetch_metadata(None, timeout)).await
    }

    /// A blocking lister of every topic's name, for a [`crate::TopicDirectory`].
    pub fn topic_lister(&self, timeout: Duration) -> crate::directory::ListTopics {
        let inner = self.inner.clone();
        std::sync::Arc::new(move || crate::directory::existing_topics(inner.client().fetch_metadata(None, timeout)))
    }

    /// Partition count of `topic`, or [`KafkaError::UnknownTopic`].
    pub async fn partition_count(&self, topic: &str, timeout: Duration) -> Result<usize, KafkaError> {
        let inner = self.inner.clone();
        let name = topic.to_owned();
        crate::metadata::partition_count(topic, move || inner.client().fetch_metadata(Some(&name), timeout)).await
    }
}

fn classify(err: RdError, delivery_timeout: Duration) -> KafkaError {
    match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => KafkaError::QueueFull,
        Some(RDKafkaErrorCode::MessageTimedOut) => KafkaError::Timeout(delivery_timeout),
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => KafkaError::RecordTooLarge(err),
        Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition) => {
            KafkaError::UnknownTopic(String::new())
        }
        _ => KafkaError::Kafka(err),
    }
}

/// The timestamp Kafka stored. A real broker reports a log-append time only for topics with
/// `message.timestamp.type=LogAppendTime`, and then it is what consumers see. librdkafka's mock
/// cluster reports a fixed placeholder (1234) while keeping the create time, so a log-append
/// time far from the create time is not believed.
fn stored_timestamp(reported: Timestamp, create_time_ms: i64) -> i64 {
    const PLAUSIBLE_SKEW_MS: i64 = 24 * 3600 * 1000;
    match reported {
        Timestamp::LogAppendTime(t) if (t - create_time_ms).abs() <= PLAUSIBLE_SKEW_MS => t,
        Timestamp::CreateTime(t) => t,
        _ => create_time_ms,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn believes_plausible_log_append_times_only() {
        let create = 1_700_000_000_000;
        assert_eq!(
            stored_timestamp(Timestamp::LogAppendTime(create + 5), create),
            create + 5
        );
        assert_eq!(stored_timestamp(Timestamp::LogAppendTime(1234), create), create);
        assert_eq!(stored_timestamp(Timestamp::CreateTime(create), create), create);
        assert_eq!(stored_timestamp(Timestamp::NotAvailable, create), create);
    }
}
