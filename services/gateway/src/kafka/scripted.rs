//! An in-memory [`RecordSource`] that behaves like Kafka as producers really write it, for
//! tests of the engine without a broker (librdkafka's mock cluster writes no transaction
//! markers, and no other broker that runs here implements them correctly).
//!
//! A partition is a run of offsets; each offset holds a record or nothing a `read_committed`
//! reader can see (a control record, an aborted transaction's record, a compacted record).
//! Readers and the live feed skip the invisible offsets and report their position past them,
//! as librdkafka does. Retention moves a partition's low watermark (and tells live feeds, as the
//! real client's statistics do); a topic can gain partitions; readers can be made to fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt as _;
use tokio::sync::Notify;

use super::{Position, Reader, Record, RecordHeaders, RecordSource, Sink, SourceEvent, TopicInfo, Watermarks};
use crate::GatewayError;

/// One offset of a scripted partition.
#[derive(Debug, Clone)]
enum Slot {
    Record(Record),
    /// A control record, an aborted transaction's record or a compacted one.
    Invisible,
}

#[derive(Debug, Default)]
struct Partition {
    low: i64,
    slots: Vec<Slot>,
}

impl Partition {
    fn end(&self) -> i64 {
        self.slots.len() as i64
    }
}

#[derive(Debug)]
struct Live {
    sink: Arc<dyn Sink>,
    /// Next offset per followed partition.
    next: HashMap<usize, i64>,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, Vec<Partition>>,
    live: HashMap<String, Live>,
}

/// Kafka in memory, scripted by the test.
#[derive(Debug, Default)]
pub struct ScriptedSource {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes readers waiting for data.
    changed: Notify,
    fail_readers: AtomicBool,
    readers_opened: AtomicUsize,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unknown(topic: &str) -> GatewayError {
    GatewayError::UnknownStream(format!("there is no topic {topic:?}"))
}

fn failure(what: &str) -> GatewayError {
    GatewayError::Kafka(sluice_kafka::KafkaError::Task(format!("scripted failure: {what}")))
}

impl ScriptedSource {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state()
    }

    /// Creates `topic` with `partitions` empty partitions.
    pub fn create(&self, topic: &str, partitions: usize) {
        self.state().topics.insert(
            topic.to_owned(),
            (0..partitions).map(|_| Partition::default()).collect(),
        );
    }

    /// Appends a record with `data` (and `key`) to `partition`; returns its offset.
    pub fn record(&self, topic: &str, partition: usize, key: Option<&str>, data: &str) -> i64 {
        self.typed_record(topic, partition, None, key, data)
    }

    /// [`ScriptedSource::record`] with an `sse-event` header.
    pub fn typed_record(
        &self,
        topic: &str,
        partition: usize,
        event_type: Option<&str>,
        key: Option<&str>,
        data: &str,
    ) -> i64 {
        self.push(topic, partition, |offset| {
            Slot::Record(Record {
                partition: partition as u32,
                offset,
                timestamp_ms: 1,
                key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                value: Some(Bytes::copy_from_slice(data.as_bytes())),
                headers: RecordHeaders {
                    event_type: event_type.map(|t| Bytes::copy_from_slice(t.as_bytes())),
                    traceparent: None,
                },
            })
        })
    }

    /// Appends a transaction marker (a control record): an offset with no record.
    pub fn control(&self, topic: &str, partition: usize) -> i64 {
        self.push(topic, partition, |_| Slot::Invisible)
    }

    /// Appends an aborted transaction of `records` records and its abort marker: offsets a
    /// `read_committed` reader never sees.
    pub fn aborted(&self, topic: &str, partition: usize, records: usize) {
        for _ in 0..=records {
            self.control(topic, partition);
        }
    }

    /// Compaction removed the record at `offset`.
    pub fn compact(&self, topic: &str, partition: usize, offset: i64) {
        if let Some(slot) = self
            .state()
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(partition))
            .and_then(|p| p.slots.get_mut(offset as usize))
        {
            *slot = Slot::Invisible;
        }
    }

    /// Retention deleted `partition` below `low`; live feeds hear of it as from the client's
    /// statistics.
    pub fn set_low(&self, topic: &str, partition: usize, low: i64) {
        let mut state = self.state();
        let Some(p) = state.topics.get_mut(topic).and_then(|t| t.get_mut(partition)) else {
            return;
        };
        p.low = low.min(p.end());
        let (low, end) = (p.low, p.end());
        if let Some(live) = state.live.get_mut(topic) {
            if let Some(next) = live.next.get_mut(&partition) {
                // A reader below the start jumps to it (auto.offset.reset=earliest).
                *next = (*next).max(low);
            }
            live.sink.watermarks(partition as u32, low, end);
        }
        drop(state);
        self.shared.changed.notify_waiters();
    }

    /// The topic gains partitions, up to `partitions`.
    pub fn add_partitions(&self, topic: &str, partitions: usize) {
        if let Some(t) = self.state().topics.get_mut(topic) {
            while t.len() < partitions {
                t.push(Partition::default());
            }
        }
    }

    /// From now on, catch-up readers fail.
    pub fn fail_readers(&self, fail: bool) {
        self.shared.fail_readers.store(fail, Ordering::SeqCst);
        self.shared.changed.notify_waiters();
    }

    /// Catch-up readers opened so far.
    pub fn readers_opened(&self) -> usize {
        self.shared.readers_opened.load(Ordering::SeqCst)
    }

    fn push(&self, topic: &str, partition: usize, slot: impl FnOnce(i64) -> Slot) -> i64 {
        let mut state = self.state();
        let p = state
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(partition))
            .unwrap_or_else(|| panic!("scripted topic {topic:?} has no partition {partition}"));
        let offset = p.end();
        p.slots.push(slot(offset));
        deliver(&mut state, topic);
        drop(state);
        self.shared.changed.notify_waiters();
        offset
    }
}

/// Hands the live feed of `topic` what it has not had yet, then its position past the end.
fn deliver(state: &mut State, topic: &str) {
    let (Some(live), Some(partitions)) = (state.live.get_mut(topic), state.topics.get(topic)) else {
        return;
    };
    for (&p, next) in live.next.iter_mut() {
        let Some(partition) = partitions.get(p) else { continue };
        let before = *next;
        let mut last_record = None;
        while *next < partition.end() {
            if let Slot::Record(record) = &partition.slots[*next as usize] {
                live.sink.record(record.clone());
                last_record = Some(*next);
            }
            *next += 1;
        }
        if *next > before && last_record.is_none_or(|o| o + 1 < *next) {
            live.sink.advance(Position {
                partition: p as u32,
                next: *next,
            });
        }
    }
}

impl RecordSource for ScriptedSource {
    fn check(&self) -> BoxFuture<'_, Result<(), GatewayError>> {
        async { Ok(()) }.boxed()
    }

    fn describe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<TopicInfo, GatewayError>> {
        let found = self
            .state()
            .topics
            .get(topic)
            .map(|t| TopicInfo { partitions: t.len() });
        async move { found.ok_or_else(|| unknown(topic)) }.boxed()
    }

    fn watermarks<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Watermarks>, GatewayError>> {
        let state = self.state();
        let found = state.topics.get(topic).map(|t| {
            partitions
                .iter()
                .map(|&p| {
                    t.get(p).map_or(Watermarks { low: 0, high: 0 }, |p| Watermarks {
                        low: p.low,
                        high: p.end(),
                    })
                })
                .collect()
        });
        drop(state);
        async move { found.ok_or_else(|| unknown(topic)) }.boxed()
    }

    fn offsets_for_time<'a>(
        &'a self,
        topic: &'a str,
        partitions: usize,
        timestamp_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<i64>, GatewayError>> {
        let state = self.state();
        let found = state.topics.get(topic).map(|t| {
            (0..partitions)
                .map(|p| {
                    let Some(part) = t.get(p) else { return 0 };
                    part.slots
                        .iter()
                        .skip(part.low as usize)
                        .find_map(|s| match s {
                            Slot::Record(r) if r.timestamp_ms >= timestamp_ms => Some(r.offset),
                            _ => None,
                        })
                        .unwrap_or(part.end())
                })
                .collect()
        });
        drop(state);
        async move { found.ok_or_else(|| unknown(topic)) }.boxed()
    }

    fn follow(&self, topic: &str, positions: &[(usize, i64)], sink: Arc<dyn Sink>) -> Result<(), GatewayError> {
        let mut state = self.state();
        let live = state.live.entry(topic.to_owned()).or_insert_with(|| Live {
            sink: sink.clone(),
            next: HashMap::new(),
        });
        live.sink = sink;
        live.next.extend(positions.iter().copied());
        deliver(&mut state, topic);
        Ok(())
    }

    fn unfollow(&self, topic: &str) {
        self.state().live.remove(topic);
    }

    fn reader<'a>(
        &'a self,
        topic: &'a str,
        positions: &'a [(usize, i64)],
    ) -> BoxFuture<'a, Result<Box<dyn Reader>, GatewayError>> {
        async move {
            if self.shared.fail_readers.load(Ordering::SeqCst) {
                return Err(failure("reader"));
            }
            if !self.state().topics.contains_key(topic) {
                return Err(unknown(topic));
            }
            self.shared.readers_opened.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(ScriptedReader {
                shared: self.shared.clone(),
                topic: topic.to_owned(),
                positions: positions.iter().map(|&(p, next)| (p, next, false)).collect(),
                turn: 0,
            }) as Box<dyn Reader>)
        }
        .boxed()
    }
}

/// A catch-up reader over a scripted topic: records in offset order, taking partitions in
/// turn, and a position event when a partition's remaining offsets hold no record.
#[derive(Debug)]
struct ScriptedReader {
    shared: Arc<Shared>,
    topic: String,
    /// (partition, next offset, end reported)
    positions: Vec<(usize, i64, bool)>,
    turn: usize,
}

impl ScriptedReader {
    fn poll(&mut self) -> Result<Option<SourceEvent>, GatewayError> {
        if self.shared.fail_readers.load(Ordering::SeqCst) {
            return Err(failure("read"));
        }
        let state = self.shared.state();
        let Some(partitions) = state.topics.get(&self.topic) else {
            return Err(unknown(&self.topic));
        };
        for i in 0..self.positions.len() {
            let k = (self.turn + i) % self.positions.len();
            let (p, next, reported) = &mut self.positions[k];
            let Some(partition) = partitions.get(*p) else { continue };
            // Below the start: Kafka answers "out of range" and the reader resets to earliest.
            *next = (*next).max(partition.low);
            let mut moved = false;
            while *next < partition.end() {
                let offset = *next;
                *next += 1;
                if let Slot::Record(record) = &partition.slots[offset as usize] {
                    *reported = false;
                    self.turn = k + 1;
                    return Ok(Some(SourceEvent::Record(record.clone())));
                }
                moved = true;
            }
            if moved || !*reported {
                *reported = true;
                self.turn = k + 1;
                return Ok(Some(SourceEvent::Position(Position {
                    partition: *p as u32,
                    next: *next,
                })));
            }
        }
        Ok(None)
    }
}

impl Reader for ScriptedReader {
    fn next(&mut self, idle: Duration) -> BoxFuture<'_, Result<Option<SourceEvent>, GatewayError>> {
        async move {
            let deadline = tokio::time::Instant::now() + idle;
            loop {
                let shared = self.shared.clone();
                let changed = shared.changed.notified();
                tokio::pin!(changed);
                // Registered before looking, so a change in between is not missed.
                changed.as_mut().enable();
                if let Some(event) = self.poll()? {
                    return Ok(Some(event));
                }
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return Ok(None);
                }
            }
        }
        .boxed()
    }
}
