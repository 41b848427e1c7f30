//! The gateway's one Kafka boundary. Everything the engine (ring, feeds, subscribers, catch-up)
//! learns from Kafka comes through [`RecordSource`], as [`Record`]s and [`Position`]s:
//!
//! - [`client::KafkaSource`] is the real one, and the only file that calls rdkafka: one metadata
//!   client, **one live consumer for every stream of the pod** (streams join and leave its
//!   assignment; each record is routed to its stream's [`Sink`]), and catch-up readers.
//! - [`scripted::ScriptedSource`] holds partitions in memory, with the offset gaps real Kafka has
//!   (control records, aborted transactions, compaction), retention, partitions added and failures,
//!   so the engine is tested without a broker.
//!
//! Offsets are not contiguous. A reader's next position is what the client reports, never
//! `last offset + 1` alone: after a transaction's records come its control record, and under
//! `read_committed` an aborted transaction's records are skipped, so a partition can end in
//! offsets that carry no record. Sources therefore report [`Position`]s as well as records: "this
//! partition's next offset is now `next`", whenever the position moves past offsets that yielded
//! no record (at the end of a partition, and periodically for the live consumer).

pub mod client;
pub mod scripted;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
pub use sluice_kafka::metadata::Watermarks;

use crate::GatewayError;

/// One Kafka record, owned: what every source yields and the engine maps to an SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: u32,
    pub offset: i64,
    /// Kafka's timestamp, ms since the epoch (0 when the record has none).
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    /// `None` for a tombstone.
    pub value: Option<Bytes>,
    pub headers: RecordHeaders,
}

/// The headers Sluice reads (names in [`sluice_kafka::headers`]); others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordHeaders {
    /// `sse-event`
    pub event_type: Option<Bytes>,
    /// `traceparent`
    pub traceparent: Option<Bytes>,
}

impl RecordHeaders {
    /// Picks Sluice's headers out of a record's `(name, value)` pairs; the first of each wins.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Self {
        let mut headers = Self::default();
        for (name, value) in pairs {
            let slot = match name {
                sluice_kafka::headers::EVENT_TYPE => &mut headers.event_type,
                sluice_kafka::headers::TRACEPARENT => &mut headers.traceparent,
                _ => continue,
            };
            if slot.is_none() {
                *slot = value.map(Bytes::copy_from_slice);
            }
        }
        headers
    }
}

/// A partition's next offset moved to `next` without a record for the offsets in between
/// (control records, aborted transactions, compacted records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: u32,
    pub next: i64,
}

/// What a reader yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    Record(Record),
    Position(Position),
}

/// A topic as Kafka describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicInfo {
    pub partitions: usize,
}

/// Where a stream's live records go: its feed.
pub trait Sink: Send + Sync + fmt::Debug {
    /// A record, in partition order.
    fn record(&self, record: Record);
    /// The partition's next offset is `next` (never lower than after its last record).
    fn advance(&self, position: Position);
    /// The partition's watermarks as the client last saw them: `low` (retention) and the end
    /// a `read_committed` reader can reach (the last stable offset).
    fn watermarks(&self, partition: u32, low: i64, end: i64);
}

/// A reader of older positions for one subscriber (a catch-up reader).
pub trait Reader: Send + fmt::Debug {
    /// The next record or position, or `None` when nothing arrives within `idle`.
    fn next(&mut self, idle: Duration) -> BoxFuture<'_, Result<Option<SourceEvent>, GatewayError>>;
}

/// Everything the engine asks of Kafka.
pub trait RecordSource: Send + Sync + fmt::Debug + 'static {
    /// Whether the cluster answers (readiness).
    fn check(&self) -> BoxFuture<'_, Result<(), GatewayError>>;
    /// The topic's partition count; [`GatewayError::UnknownStream`] when it does not exist.
    fn describe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<TopicInfo, GatewayError>>;
    /// Low watermark and end (last stable offset) of each of `partitions`, in that order.
    fn watermarks<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Watermarks>, GatewayError>>;
    /// Per partition, the first offset at or after `timestamp_ms` (the end where there is none).
    fn offsets_for_time<'a>(
        &'a self,
        topic: &'a str,
        partitions: usize,
        timestamp_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<i64>, GatewayError>>;
    /// Starts delivering `topic`'s `positions` (partition, next offset) to `sink`, on the pod's
    /// live consumer. Called again with more partitions when the topic grows.
    fn follow(&self, topic: &str, positions: &[(usize, i64)], sink: Arc<dyn Sink>) -> Result<(), GatewayError>;
    /// Stops delivering `topic`.
    fn unfollow(&self, topic: &str);
    /// A catch-up reader of `positions` (partition, next offset) of `topic`.
    fn reader<'a>(
        &'a self,
        topic: &'a str,
        positions: &'a [(usize, i64)],
    ) -> BoxFuture<'a, Result<Box<dyn Reader>, GatewayError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_picked_by_their_shared_names() {
        let h = RecordHeaders::from_pairs([
            ("x-other", Some(&b"1"[..])),
            ("sse-event", Some(&b"order"[..])),
            ("sse-event", Some(&b"second"[..])),
            ("traceparent", None),
        ]);
        assert_eq!(h.event_type.as_deref(), Some(&b"order"[..]));
        assert_eq!(h.traceparent, None);
    }
}
