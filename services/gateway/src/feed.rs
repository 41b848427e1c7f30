//! A stream's shared state on this pod: its ring, fed by the pod's live Kafka consumer.
//!
//! A feed starts on a stream's first subscriber: it reads the topic's partition count and
//! watermarks and joins the live consumer at `max(low, end - prefill)` in every partition — so
//! the ring holds the same recent history on every pod and a client whose pod died resumes from
//! memory elsewhere. The feed is the stream's [`Sink`]: records become ring entries, positions
//! move the head past record-less offsets, watermarks trim the ring (retention) and set the lag
//! gauge. Appending, pushing to keyed inboxes and publishing the new head happen under the ring's
//! write lock, so a subscriber that reads the ring and registers its inbox under the read lock
//! can never miss or double an entry. A background task notices the topic gaining partitions and
//! grows the feed in place; new partitions start at their earliest offset.
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
use prometheus_client::metrics::histogram::Histogram;
use sluice_sse::Cursor;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::kafka::{Position, Record, RecordSource, Sink};
use crate::ring::{Entry, Evicted, NewRecord, Ring};
use crate::runtime::Runtime;
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
    partitions: AtomicUsize,
    ring: RwLock<Ring>,
    head_tx: watch::Sender<u64>,
    keys: DashMap<Bytes, Vec<Arc<Inbox>>>,
    subscribers: AtomicUsize,
    idle_since: Mutex<Option<Instant>>,
    /// Ends when the topic was last seen, per partition: "latest" is never before them, even
    /// while the feed is still reading its prefill.
    ends: Mutex<Vec<i64>>,
    /// Wakes the maintenance task to look at the topic now (a cursor wider than the feed).
    recheck: Notify,
    pub stop: CancellationToken,
    /// This stream's `delivery_latency` histogram, observed by its subscribers.
    pub delivery_latency: Histogram,
    runtime: Arc<Runtime>,
    /// What feeds the ring; `None` for a feed driven by hand.
    source: Option<Arc<dyn RecordSource>>,
}

/// How often a feed checks whether its topic gained partitions.
const PARTITION_CHECK: Duration = Duration::from_secs(30);

impl Feed {
    /// A feed that no source feeds yet: records arrive through [`Sink`]. [`Feed::start`] joins
    /// it to a source; tests may drive it by hand.
    pub fn detached(stream: &str, topic: &str, start: Cursor, limits: FeedLimits, runtime: Arc<Runtime>) -> Arc<Self> {
        Self::new((stream, topic), start, limits, runtime, None)
    }

    fn new(
        (stream, topic): (&str, &str),
        start: Cursor,
        limits: FeedLimits,
        runtime: Arc<Runtime>,
        source: Option<Arc<dyn RecordSource>>,
    ) -> Arc<Self> {
        let ends = start.offsets.clone();
        Arc::new(Self {
            stream: stream.to_owned(),
            topic: topic.to_owned(),
            fingerprint: start.fingerprint,
            partitions: AtomicUsize::new(start.offsets.len()),
            ring: RwLock::new(Ring::new(start, limits.ring_events, limits.ring_bytes)),
            head_tx: watch::channel(0).0,
            keys: DashMap::new(),
            subscribers: AtomicUsize::new(0),
            idle_since: Mutex::new(Some(Instant::now())),
            ends: Mutex::new(ends),
            recheck: Notify::new(),
            stop: CancellationToken::new(),
            delivery_latency: runtime.metrics.delivery_latency(stream),
            runtime,
            source,
        })
    }

    /// Starts a feed: metadata, watermarks, prefill position, then joins the live consumer.
    pub async fn start(
        source: &Arc<dyn RecordSource>,
        runtime: &Arc<Runtime>,
        (stream, topic): (&str, &str),
        limits: FeedLimits,
    ) -> Result<Arc<Self>, GatewayError> {
        let partitions = source.describe(topic).await?.partitions;
        let all: Vec<usize> = (0..partitions).collect();
        let watermarks = source.watermarks(topic, &all).await?;
        let prefill = (limits.ring_events / partitions.max(1)).max(1) as i64;
        let offsets: Vec<i64> = watermarks.iter().map(|w| w.low.max(w.high - prefill)).collect();
        let start = Cursor::new(sluice_sse::stream_fingerprint(topic), offsets);
        let feed = Self::new(
            (stream, topic),
            start.clone(),
            limits,
            runtime.clone(),
            Some(source.clone()),
        );
        *lock(&feed.ends) = watermarks.iter().map(|w| w.high).collect();
        let positions: Vec<(usize, i64)> = start.offsets.iter().copied().enumerate().collect();
        source.follow(topic, &positions, feed.clone())?;
        tracing::info!(stream, topic, partitions, "feed started");
        runtime.metrics.streams_active.inc();
        runtime.spawn_background(feed.clone().maintain(source.clone()));
        Ok(feed)
    }

    /// Stops the feed: it leaves the live consumer now (so a new feed of the same topic can
    /// join it), and its subscribers end with a `retry:`.
    pub fn close(&self) {
        if self.stop.is_cancelled() {
            return;
        }
        self.stop.cancel();
        if let Some(source) = &self.source {
            source.unfollow(&self.topic);
        }
    }

    /// Until the feed stops: grows it when the topic gains partitions.
    async fn maintain(self: Arc<Self>, source: Arc<dyn RecordSource>) {
        let mut every = tokio::time::interval(PARTITION_CHECK);
        every.tick().await;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = every.tick() => {}
                _ = self.recheck.notified() => {}
            }
            if let Err(err) = self.grow(source.as_ref()).await {
                tracing::warn!(stream = %self.stream, error = %err, "cannot check the topic's partitions");
            }
        }
        self.runtime.metrics.streams_active.dec();
        tracing::info!(stream = %self.stream, "feed stopped");
    }

    /// Looks at the topic now: new partitions join the ring at their earliest offset.
    pub async fn grow(self: &Arc<Self>, source: &dyn RecordSource) -> Result<(), GatewayError> {
        let now = source.describe(&self.topic).await?.partitions;
        let before = self.partitions();
        if now <= before {
            return Ok(());
        }
        let added: Vec<usize> = (before..now).collect();
        let watermarks = source.watermarks(&self.topic, &added).await?;
        let lows: Vec<i64> = watermarks.iter().map(|w| w.low).collect();
        {
            let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
            if ring.partitions() != before {
                return Ok(()); // grown meanwhile
            }
            ring.grow(&lows);
            lock(&self.ends).extend(watermarks.iter().map(|w| w.high));
            self.partitions.store(now, Ordering::SeqCst);
        }
        let positions: Vec<(usize, i64)> = added.iter().copied().zip(lows).collect();
        tracing::info!(stream = %self.stream, before, now, "topic gained partitions: reading them from their earliest offset");
        source.follow(&self.topic, &positions, self.clone())
    }

    /// Asks the maintenance task to look at the topic now.
    pub fn recheck(&self) {
        self.recheck.notify_one();
    }

    /// Partitions the feed reads (grows with the topic).
    pub fn partitions(&self) -> usize {
        self.partitions.load(Ordering::SeqCst)
    }

    /// Appends one record: maps it to an SSE event, frames it once, pushes it to the keyed
    /// inboxes that want it and wakes the unkeyed subscribers.
    pub fn append(&self, record: &Record) -> Option<Arc<Entry>> {
        let mapped = crate::record::map(record);
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let entry = ring.append(NewRecord {
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key.clone(),
            record_type: &mapped.record_type,
            event_type: &mapped.event_type,
            data: &mapped.data,
        })?;
        if let Some(key) = &entry.key {
            if let Some(inboxes) = self.keys.get(key) {
                for inbox in inboxes.iter() {
                    inbox.push(&entry);
                }
            }
        }
        self.head_tx.send_replace(ring.next_seq());
        drop(ring);
        Some(entry)
    }

    /// A receiver that changes whenever an entry is appended.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    /// The next sequence number and the head cursor, taken together.
    pub fn snapshot(&self) -> (u64, Cursor) {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        (ring.next_seq(), ring.head().clone())
    }

    /// The head cursor, if the ring's next sequence number is still `seq`: a reader that has
    /// read up to `seq` has then seen every record below it.
    pub fn head_at(&self, seq: u64) -> Option<Cursor> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        (ring.next_seq() == seq).then(|| ring.head().clone())
    }

    /// The position of "from now on": the head, or the end of Kafka when the feed last looked
    /// if the head has not reached it yet.
    pub fn latest(&self) -> Cursor {
        let (_, mut head) = self.snapshot();
        for (p, &end) in lock(&self.ends).iter().enumerate() {
            if head.offsets.get(p).is_some_and(|&h| h < end) {
                head.set_next(p, end);
            }
        }
        head
    }

    /// Whether memory holds what `position` needs in `partitions`, and if so from which seq.
    pub fn memory_start(&self, position: &[i64], partitions: &[usize]) -> Option<u64> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        ring.covers(position, partitions)
            .then(|| ring.first_needed(position, partitions))
    }

    /// Per partition, the oldest offset memory still holds.
    pub fn memory_floor(&self) -> Vec<i64> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).start().to_vec()
    }

    /// Per partition, where memory began: a position that lacks a partition starts there.
    pub fn origins(&self) -> Vec<i64> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).origins().to_vec()
    }

    /// Reads up to `max` entries from `from_seq` for a reader at `position` in `partitions`.
    /// When that reaches the head and `register` is given, registers the inbox for `keys` in the
    /// same critical section and returns `true`. `Err` when memory no longer holds what the
    /// reader needs (evicted, or trimmed by retention).
    pub fn read(
        &self,
        (from_seq, position, partitions): (u64, &[i64], &[usize]),
        (max, max_bytes): (usize, usize),
        out: &mut Vec<Arc<Entry>>,
        register: Option<(&[Bytes], &Arc<Inbox>)>,
    ) -> Result<bool, Evicted> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        if !ring.covers(position, partitions) {
            return Err(Evicted);
        }
        ring.read(from_seq, max, max_bytes, out)?;
        let at_head = from_seq + out.len() as u64 >= ring.next_seq();
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
}

impl Sink for Feed {
    fn record(&self, record: Record) {
        let subscribers = self.subscribers.load(Ordering::Relaxed);
        match crate::trace::consumer_span(&self.stream, &self.topic, &record, subscribers) {
            Some(span) => span.in_scope(|| self.append(&record)),
            None => self.append(&record),
        };
    }

    fn advance(&self, position: Position) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        ring.advance(position.partition, position.next);
    }

    fn watermarks(&self, partition: u32, low: i64, end: i64) {
        let head = {
            let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
            ring.trim(partition, low);
            ring.head().offsets.get(partition as usize).copied()
        };
        if let Some(head) = head {
            self.runtime
                .metrics
                .set_lag(&self.stream, partition as usize, (end - head).max(0));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
