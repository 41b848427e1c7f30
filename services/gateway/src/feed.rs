//! One Kafka consumer per stream per pod, feeding the stream's ring.
//!
//! A feed starts on a stream's first subscriber: it reads the topic's partition count and
//! watermarks, assigns every partition at `max(low, high - prefill)` — so the ring holds the
//! same recent history on every pod and a client whose pod died resumes from memory elsewhere —
//! and appends each record to the [`StreamLog`]. Appending, pushing to keyed inboxes and
//! publishing the new head happen under the log's write lock, so a subscriber that reads the
//! log and registers its inbox under the read lock can never miss or double an entry.
//!
//! Keyed subscribers are reached through the key index: an entry with key `k` is pushed to the
//! inboxes registered for `k` only, so delivering it costs O(matching subscribers). An inbox is
//! bounded; one that overflows is marked and its subscriber falls back to reading by position.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sluice_sse::Cursor;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::kafka::KafkaContext;
use crate::log::{Entry, Evicted, NewRecord, StreamLog};
use crate::record::map_record;
use crate::GatewayError;

/// Ring bounds and inbox size, per stream.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    pub ring_events: usize,
    pub ring_bytes: usize,
}

/// Entries pushed to a keyed subscriber, bounded in entries and in bytes: a subscriber that
/// stalls keeps its inbox's entries alive after the ring has evicted them.
#[derive(Debug)]
pub struct Inbox {
    queue: Mutex<InboxQueue>,
    pub notify: Notify,
    overflowed: AtomicBool,
    capacity: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct InboxQueue {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
}

impl Inbox {
    pub fn new(capacity: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(InboxQueue::default()),
            notify: Notify::new(),
            overflowed: AtomicBool::new(false),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
        })
    }

    fn push(&self, entry: &Arc<Entry>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.entries.len() >= self.capacity || queue.bytes >= self.max_bytes {
            self.overflowed.store(true, Ordering::SeqCst);
        } else {
            queue.bytes += entry.frame.len();
            queue.entries.push_back(entry.clone());
        }
        drop(queue);
        self.notify.notify_one();
    }

    /// Takes everything queued. `Err` once an entry was dropped for lack of room.
    pub fn drain(&self, out: &mut Vec<Arc<Entry>>) -> Result<(), Evicted> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.bytes = 0;
        out.extend(queue.entries.drain(..));
        if self.overflowed.load(Ordering::SeqCst) {
            return Err(Evicted);
        }
        Ok(())
    }
}

/// A stream's shared state on this pod.
#[derive(Debug)]
pub struct Feed {
    pub stream: String,
    pub topic: String,
    pub fingerprint: u32,
    pub partitions: usize,
    log: RwLock<StreamLog>,
    head_tx: watch::Sender<u64>,
    keys: DashMap<Bytes, Vec<Arc<Inbox>>>,
    subscribers: AtomicUsize,
    idle_since: Mutex<Option<Instant>>,
    /// High watermarks when the feed started: "latest" is never before them, even while the
    /// feed is still reading the prefill.
    initial_high: Vec<i64>,
    pub stop: CancellationToken,
}

impl Feed {
    /// A feed with no consumer; records arrive through [`Feed::append`]. Tests use it directly;
    /// [`Feed::start`] wraps it with a Kafka consumer.
    pub fn detached(stream: &str, topic: &str, start: Cursor, limits: FeedLimits) -> Arc<Self> {
        let initial_high = start.offsets.clone();
        Self::with_initial_high(stream, topic, start, initial_high, limits)
    }

    fn with_initial_high(
        stream: &str,
        topic: &str,
        start: Cursor,
        initial_high: Vec<i64>,
        limits: FeedLimits,
    ) -> Arc<Self> {
        let partitions = start.offsets.len();
        let fingerprint = start.fingerprint;
        Arc::new(Self {
            stream: stream.to_owned(),
            topic: topic.to_owned(),
            fingerprint,
            partitions,
            log: RwLock::new(StreamLog::new(start, limits.ring_events, limits.ring_bytes)),
            head_tx: watch::channel(0).0,
            keys: DashMap::new(),
            subscribers: AtomicUsize::new(0),
            idle_since: Mutex::new(Some(Instant::now())),
            initial_high,
            stop: CancellationToken::new(),
        })
    }

    /// Appends one record: maps it to an SSE event, frames it once, pushes it to the keyed
    /// inboxes that want it and wakes the unkeyed subscribers.
    pub fn append(
        &self,
        partition: u32,
        offset: i64,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        type_header: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Arc<Entry> {
        let mapped = map_record(type_header, key, value);
        let key = key.map(Bytes::copy_from_slice);
        let mut log = self.log.write().unwrap_or_else(|e| e.into_inner());
        let entry = log.append(NewRecord {
            partition,
            offset,
            timestamp_ms,
            key,
            record_type: &mapped.record_type,
            event_type: &mapped.event_type,
            data: &mapped.data,
        });
        if let Some(key) = &entry.key {
            if let Some(inboxes) = self.keys.get(key) {
                for inbox in inboxes.iter() {
                    inbox.push(&entry);
                }
            }
        }
        self.head_tx.send_replace(log.next_seq());
        drop(log);
        entry
    }

    /// A receiver that changes whenever an entry is appended.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    /// The next sequence number and the head cursor, taken together.
    pub fn snapshot(&self) -> (u64, Cursor) {
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        (log.next_seq(), log.head().clone())
    }

    /// The position of "from now on": the head, or the end of Kafka when the feed started if
    /// the head has not reached it yet.
    pub fn latest(&self) -> Cursor {
        let (_, mut head) = self.snapshot();
        for (p, &high) in self.initial_high.iter().enumerate() {
            if head.offsets.get(p).is_some_and(|&h| h < high) {
                head.set_next(p, high);
            }
        }
        head
    }

    /// Whether memory holds what `position` needs in `partitions`, and if so from which seq.
    pub fn memory_start(&self, position: &[i64], partitions: &[usize]) -> Option<u64> {
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        log.covers(position, partitions)
            .then(|| log.first_needed(position, partitions))
    }

    /// Per partition, the oldest offset memory still holds.
    pub fn memory_floor(&self) -> Vec<i64> {
        self.log.read().unwrap_or_else(|e| e.into_inner()).start().to_vec()
    }

    /// Reads up to `max` entries from `from_seq`. When that reaches the head and `register` is
    /// given, registers the inbox for `keys` in the same critical section and returns `true`.
    pub fn read(
        &self,
        from_seq: u64,
        (max, max_bytes): (usize, usize),
        out: &mut Vec<Arc<Entry>>,
        register: Option<(&[Bytes], &Arc<Inbox>)>,
    ) -> Result<bool, Evicted> {
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        log.read(from_seq, max, max_bytes, out)?;
        let at_head = from_seq + out.len() as u64 >= log.next_seq();
        match register {
            Some((keys, inbox)) if at_head => {
                for key in keys {
                    self.keys.entry(key.clone()).or_default().push(inbox.clone());
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Removes an inbox from the key index.
    pub fn unregister(&self, keys: &[Bytes], inbox: &Arc<Inbox>) {
        for key in keys {
            if let dashmap::Entry::Occupied(mut slot) = self.keys.entry(key.clone()) {
                slot.get_mut().retain(|i| !Arc::ptr_eq(i, inbox));
                if slot.get().is_empty() {
                    slot.remove();
                }
            }
        }
    }

    /// Counts a subscriber; [`crate::hub::FeedLease`] undoes it on drop.
    pub fn add_subscriber(&self) {
        self.subscribers.fetch_add(1, Ordering::SeqCst);
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(crate) fn remove_subscriber(&self) {
        if self.subscribers.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// How long the feed has had no subscriber, if it has none.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.subscribers.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.idle_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }

    /// Starts a feed on Kafka: metadata, watermarks, prefill position, consumer task.
    pub async fn start(
        kafka: &Arc<KafkaContext>,
        stream: &str,
        topic: &str,
        limits: FeedLimits,
    ) -> Result<Arc<Self>, GatewayError> {
        let partitions = kafka.partition_count(topic).await?;
        let watermarks = kafka.watermarks(topic, 0..partitions).await?;
        let prefill = (limits.ring_events / partitions.max(1)).max(1) as i64;
        let offsets: Vec<i64> = watermarks.iter().map(|w| w.low.max(w.high - prefill)).collect();
        let start = Cursor::new(sluice_sse::stream_fingerprint(topic), offsets);
        let highs = watermarks.iter().map(|w| w.high).collect();
        let feed = Self::with_initial_high(stream, topic, start.clone(), highs, limits);

        let consumer = kafka.feed_consumer(stream, Arc::downgrade(&feed))?;
        let mut assignment = TopicPartitionList::new();
        for (p, &offset) in start.offsets.iter().enumerate() {
            assignment
                .add_partition_offset(topic, p as i32, Offset::Offset(offset))
                .map_err(|e| GatewayError::Kafka(sluice_kafka::KafkaError::Kafka(e)))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| GatewayError::Kafka(sluice_kafka::KafkaError::Kafka(e)))?;
        tracing::info!(stream, topic, partitions, "feed started");
        let (task_feed, task_kafka) = (feed.clone(), kafka.clone());
        kafka.metrics.streams_active.inc();
        kafka
            .runtime
            .spawn(async move { run_consumer(task_feed, consumer, task_kafka).await });
        Ok(feed)
    }
}

/// How often a feed checks whether its topic gained partitions.
const PARTITION_CHECK: Duration = Duration::from_secs(30);

async fn run_consumer(feed: Arc<Feed>, consumer: StreamConsumer<LagContext>, kafka: Arc<KafkaContext>) {
    let mut partition_check = tokio::time::interval(PARTITION_CHECK);
    partition_check.tick().await;
    loop {
        tokio::select! {
            _ = feed.stop.cancelled() => break,
            _ = partition_check.tick() => {
                // A topic that gained partitions needs a wider position everywhere: the feed
                // stops, its subscribers are told to retry, and their cursors (narrower than
                // the topic) resume with the new partitions from their earliest offset.
                if let Ok(now) = kafka.partition_count(&feed.topic).await {
                    if now > feed.partitions {
                        tracing::info!(stream = %feed.stream, before = feed.partitions, now, "topic gained partitions: restarting the feed");
                        feed.stop.cancel();
                    }
                }
            }
            message = consumer.recv() => match message {
                Ok(m) => {
                    let type_header = m.headers().and_then(|h| {
                        h.iter().find(|h| h.key == "sse-event").and_then(|h| h.value)
                    });
                    let timestamp = m.timestamp().to_millis().unwrap_or(0);
                    feed.append(m.partition() as u32, m.offset(), timestamp, m.key(), type_header, m.payload());
                }
                Err(err) => {
                    tracing::warn!(stream = %feed.stream, error = %err, "feed consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    kafka.metrics.streams_active.dec();
    tracing::info!(stream = %feed.stream, "feed stopped");
}

/// The feed consumer's context: turns librdkafka's periodic statistics (each partition's high
/// watermark) into the consumer lag gauge — the high watermark minus the feed's position — with
/// no extra broker round trips. (librdkafka's own `consumer_lag` needs committed offsets, and
/// the gateway never commits.)
#[derive(Debug)]
pub struct LagContext {
    pub stream: String,
    pub metrics: crate::metrics::GatewayMetrics,
    pub feed: std::sync::Weak<Feed>,
}

impl rdkafka::ClientContext for LagContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(feed) = self.feed.upgrade() else { return };
        let (_, head) = feed.snapshot();
        for topic in statistics.topics.values() {
            for (&partition, stats) in &topic.partitions {
                let Some(&position) = usize::try_from(partition).ok().and_then(|p| head.offsets.get(p)) else {
                    continue; // librdkafka's internal "-1" partition
                };
                if stats.hi_offset >= 0 {
                    self.metrics
                        .set_lag(&self.stream, partition as usize, (stats.hi_offset - position).max(0));
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LagContext {}
