//! A stream's recent history in memory: the [`Ring`] every subscriber on this pod reads.
//!
//! The feed appends records in the order its consumer returns them; each entry gets a sequence
//! number and a frame built once, whose id is the stream's position *after* that record (the
//! "head" cursor). Any subscriber whose own position equals that head can send the shared frame
//! as is; one that is not aligned yet (resuming from a cursor another pod minted) sends the same
//! body behind an id of its own until it is.
//!
//! Invariants:
//! - `start[p]` is the first offset of partition `p` memory can still serve: every record of `p`
//!   from `start[p]` up to `head[p]` is in the ring. A position `P` with `P[p] >= start[p]` for
//!   every partition it needs resumes from memory; anything older must come from Kafka.
//! - Eviction (by count and by bytes) only moves `start` forward.
//! - `by_partition[p]` lists `(offset, seq)` of the ring's entries of `p` in offset order, so the
//!   first entry a position needs is found by binary search, not a scan.
//! - Offsets are not contiguous: `head[p]` moves past offsets that carry no record (control
//!   records, aborted transactions, compaction) when the feed's source says so ([`Ring::advance`]).
//!   Those moves ride on the next entry (`Entry::advances`), so a subscriber walking the ring
//!   moves past them too, and its ids match the shared frames'.
//! - Retention moving a partition's start in Kafka trims the ring ([`Ring::trim`]): memory never
//!   serves a record Kafka no longer holds, so every pod answers a cursor the same way.
//! - A topic that gains partitions grows the ring ([`Ring::grow`]); new partitions start where
//!   Kafka starts them (their earliest offset).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_sse::Cursor;

/// Bytes an entry costs beyond its frame and key (the struct, the Arc, the index).
const ENTRY_OVERHEAD: usize = 176;

/// A record to append, as the feed read and mapped it.
#[derive(Debug, Clone)]
pub struct NewRecord<'a> {
    pub partition: u32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub record_type: &'a str,
    pub event_type: &'a str,
    pub data: &'a str,
}

/// One record, framed.
#[derive(Debug)]
pub struct Entry {
    pub seq: u64,
    pub partition: u32,
    pub offset: i64,
    /// The record's Kafka timestamp (ms since the epoch), for delivery latency.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    /// The type filters match on.
    pub record_type: Box<str>,
    /// `id: <head after this record>\n` followed by the body.
    pub frame: Bytes,
    body_start: usize,
    /// Partitions whose head moved past record-less offsets since the previous entry, with
    /// their new next offsets (rare: `None` on almost every entry).
    pub advances: Option<Box<[(u32, i64)]>>,
}

impl Entry {
    /// Frames a record whose stream position after it is `head`.
    pub fn new(seq: u64, record: NewRecord<'_>, head: &Cursor) -> Self {
        let NewRecord {
            partition,
            offset,
            timestamp_ms,
            key,
            record_type,
            event_type,
            data,
        } = record;
        let frame = crate::record::event_frame(head, event_type, data);
        let body_start = frame.iter().position(|&b| b == b'\n').map_or(frame.len(), |i| i + 1);
        Self {
            seq,
            partition,
            offset,
            timestamp_ms,
            key,
            record_type: record_type.into(),
            frame,
            body_start,
            advances: None,
        }
    }

    /// The cursor text this entry's shared frame carries.
    pub fn id(&self) -> &[u8] {
        // "id: " … "\n"
        &self.frame[4..self.body_start.saturating_sub(1).max(4)]
    }

    /// The same event behind another id: a new id line, and the body as a slice of this
    /// entry's frame (shared, so a subscriber off the ring's ids never copies the data).
    pub fn frame_with_id(&self, cursor: &Cursor) -> [Bytes; 2] {
        let mut id = BytesMut::with_capacity(5 + cursor.encoded_len());
        id.put_slice(b"id: ");
        cursor.encode_into(&mut id);
        id.put_u8(b'\n');
        [id.freeze(), self.frame.slice(self.body_start..)]
    }

    /// The head cursor after this entry.
    pub fn head(&self) -> Cursor {
        let text = std::str::from_utf8(self.id()).unwrap_or_default();
        Cursor::decode(text).expect("entries carry cursors this process encoded")
    }

    fn size(&self) -> usize {
        self.frame.len() + self.key.as_ref().map_or(0, Bytes::len) + self.record_type.len() + ENTRY_OVERHEAD
    }
}

/// Reading from a sequence number the ring no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted;

/// The ring of recent entries of one stream.
#[derive(Debug)]
pub struct Ring {
    entries: VecDeque<Arc<Entry>>,
    first_seq: u64,
    start: Vec<i64>,
    head: Cursor,
    by_partition: Vec<VecDeque<(i64, u64)>>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    /// Head moves not yet carried by an entry.
    pending_advances: Vec<(u32, i64)>,
    origins: Vec<i64>,
}

impl Ring {
    /// An empty ring whose memory starts (and whose head is) at `start`.
    pub fn new(start: Cursor, max_entries: usize, max_bytes: usize) -> Self {
        let partitions = start.offsets.len();
        Self {
            entries: VecDeque::new(),
            first_seq: 0,
            start: start.offsets.clone(),
            origins: start.offsets.clone(),
            head: start,
            by_partition: vec![VecDeque::new(); partitions],
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
            pending_advances: Vec::new(),
        }
    }

    /// Appends a record, evicting the oldest entries beyond the bounds. `None` for a record
    /// before the head (a source repeating itself) or of a partition the ring does not have.
    pub fn append(&mut self, record: NewRecord<'_>) -> Option<Arc<Entry>> {
        let (p, offset) = (record.partition as usize, record.offset);
        if self.head.offsets.get(p).is_none_or(|&next| offset < next) {
            return None;
        }
        self.head.set_next(p, offset + 1);
        let seq = self.next_seq();
        let mut entry = Entry::new(seq, record, &self.head);
        if !self.pending_advances.is_empty() {
            entry.advances = Some(std::mem::take(&mut self.pending_advances).into_boxed_slice());
        }
        let entry = Arc::new(entry);
        self.bytes += entry.size();
        if let Some(index) = self.by_partition.get_mut(p) {
            index.push_back((offset, seq));
        }
        self.entries.push_back(entry.clone());
        while self.entries.len() > self.max_entries || (self.bytes > self.max_bytes && self.entries.len() > 1) {
            self.evict_one();
        }
        Some(entry)
    }

    /// Moves `partition`'s head to `next` when that is ahead of it: the offsets in between hold
    /// no record a reader can see. `false` when nothing moved.
    pub fn advance(&mut self, partition: u32, next: i64) -> bool {
        let p = partition as usize;
        if self.head.offsets.get(p).is_none_or(|&head| next <= head) {
            return false;
        }
        self.head.set_next(p, next);
        match self.pending_advances.iter_mut().find(|(q, _)| *q == partition) {
            Some(pending) => pending.1 = next,
            None => self.pending_advances.push((partition, next)),
        }
        true
    }

    /// Kafka no longer holds `partition` below `low`: evicts every entry of it below `low` (and
    /// the older entries before them), and memory serves that partition from `low` on only.
    pub fn trim(&mut self, partition: u32, low: i64) {
        let p = partition as usize;
        if self.start.get(p).is_none_or(|&start| low <= start) {
            return;
        }
        while self.by_partition[p].front().is_some_and(|&(offset, _)| offset < low) {
            self.evict_one();
        }
        self.start[p] = self.start[p].max(low);
    }

    /// The topic now has `starts.len()` more partitions, whose memory starts (and whose head
    /// is) at `starts`.
    pub fn grow(&mut self, starts: &[i64]) {
        for &start in starts {
            let p = self.start.len();
            self.start.push(start);
            self.origins.push(start);
            self.head.set_next(p, start);
            self.by_partition.push(VecDeque::new());
        }
    }

    /// Partitions the ring holds.
    pub fn partitions(&self) -> usize {
        self.start.len()
    }

    fn evict_one(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            self.first_seq += 1;
            self.bytes -= old.size();
            let p = old.partition as usize;
            if let Some(index) = self.by_partition.get_mut(p) {
                index.pop_front();
            }
            if let Some(start) = self.start.get_mut(p) {
                *start = old.offset + 1;
            }
        }
    }

    /// The stream's position after the newest entry.
    pub fn head(&self) -> &Cursor {
        &self.head
    }

    /// Sequence number the next appended entry will get.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }

    /// Per partition, the oldest offset memory can serve.
    pub fn start(&self) -> &[i64] {
        &self.start
    }

    /// Whether memory holds everything `position` still needs in `partitions`.
    pub fn covers(&self, position: &[i64], partitions: &[usize]) -> bool {
        partitions.iter().all(|&p| match (position.get(p), self.start.get(p)) {
            (Some(pos), Some(start)) => pos >= start,
            _ => false,
        })
    }

    /// Where each partition began in memory: the feed's first position, or for a partition the
    /// topic gained later, its earliest offset then. A position that lacks a partition starts
    /// there.
    pub fn origins(&self) -> &[i64] {
        &self.origins
    }

    /// The first sequence number holding a record `position` needs in one of `partitions`
    /// (or the next sequence number, when memory holds none yet).
    pub fn first_needed(&self, position: &[i64], partitions: &[usize]) -> u64 {
        partitions
            .iter()
            .filter_map(|&p| {
                let index = self.by_partition.get(p)?;
                let from = *position.get(p)?;
                let i = index.partition_point(|&(offset, _)| offset < from);
                index.get(i).map(|&(_, seq)| seq)
            })
            .min()
            .unwrap_or_else(|| self.next_seq())
    }

    /// Copies up to `max` entries from `from_seq` on into `out`, stopping once their frames
    /// reach `max_bytes` (at least one entry): a reader that stalls holds on to what it read,
    /// and entries the ring has since evicted would otherwise be its own memory.
    pub fn read(&self, from_seq: u64, max: usize, max_bytes: usize, out: &mut Vec<Arc<Entry>>) -> Result<(), Evicted> {
        if from_seq < self.first_seq {
            return Err(Evicted);
        }
        let skip = usize::try_from(from_seq - self.first_seq).unwrap_or(usize::MAX);
        let mut bytes = 0;
        for entry in self.entries.iter().skip(skip).take(max) {
            if bytes >= max_bytes {
                break;
            }
            bytes += entry.frame.len();
            out.push(entry.clone());
        }
        Ok(())
    }

    /// Entries held, for metrics.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held, for metrics.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(partitions: usize, max_entries: usize) -> Ring {
        Ring::new(Cursor::new(7, vec![0; partitions]), max_entries, usize::MAX)
    }

    fn push(log: &mut Ring, partition: u32, offset: i64) -> Arc<Entry> {
        let data = format!("p{partition}o{offset}");
        log.append(NewRecord {
            partition,
            offset,
            timestamp_ms: 0,
            key: None,
            record_type: "message",
            event_type: "message",
            data: &data,
        })
        .expect("a record after the head")
    }

    #[test]
    fn shared_frames_carry_the_head_after_their_record() {
        let mut l = log(2, 10);
        push(&mut l, 0, 0);
        let e = push(&mut l, 1, 0);
        assert_eq!(e.head().offsets, vec![1, 1]);
        let parsed = sluice_sse::parse_stream(&e.frame);
        assert_eq!(parsed.events[0].data, "p1o0");
        assert_eq!(parsed.events[0].id.as_deref().map(str::as_bytes), Some(e.id()));
    }

    #[test]
    fn a_frame_behind_another_id_keeps_its_body() {
        let mut l = log(2, 10);
        let e = push(&mut l, 1, 0);
        let other = Cursor::new(7, vec![5, 1]);
        let [id, body] = e.frame_with_id(&other);
        assert!(
            e.frame.as_ptr_range().contains(&body.as_ptr()),
            "the body is shared, not copied"
        );
        let parsed = sluice_sse::parse_stream(&[id, body].concat());
        assert_eq!(parsed.events[0].data, "p1o0");
        assert_eq!(parsed.events[0].id.as_deref(), Some(other.encode().as_str()));
    }

    #[test]
    fn a_read_stops_once_its_frames_reach_the_byte_budget() {
        let mut l = log(1, 10);
        let first = push(&mut l, 0, 0);
        for o in 1..5 {
            push(&mut l, 0, o);
        }
        let mut out = Vec::new();
        l.read(0, 10, 1, &mut out).unwrap();
        assert_eq!(out.len(), 1, "always one entry, however large");
        out.clear();
        l.read(0, 10, first.frame.len() + 1, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        out.clear();
        l.read(0, 3, usize::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 3, "and never more than the count");
    }

    #[test]
    fn eviction_moves_start_forward_and_reads_of_evicted_entries_fail() {
        let mut l = log(2, 3);
        for (p, o) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            push(&mut l, p, o);
        }
        assert_eq!(l.start(), &[1, 0]);
        assert!(l.covers(&[1, 0], &[0, 1]));
        assert!(!l.covers(&[0, 0], &[0, 1]));
        assert!(
            l.covers(&[0, 0], &[1]),
            "a reader of partition 1 alone is still covered"
        );
        let mut out = Vec::new();
        assert_eq!(l.read(0, 10, usize::MAX, &mut out), Err(Evicted));
        l.read(1, 10, usize::MAX, &mut out).unwrap();
        assert_eq!(
            out.iter().map(|e| (e.partition, e.offset)).collect::<Vec<_>>(),
            vec![(1, 0), (0, 1), (1, 1)]
        );
    }

    #[test]
    fn first_needed_finds_the_earliest_record_a_position_lacks() {
        let mut l = log(2, 100);
        for (p, o) in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)] {
            push(&mut l, p, o);
        }
        assert_eq!(l.first_needed(&[0, 0], &[0, 1]), 0);
        assert_eq!(l.first_needed(&[2, 1], &[0, 1]), 3);
        assert_eq!(l.first_needed(&[2, 1], &[0]), 4);
        assert_eq!(l.first_needed(&[3, 2], &[0, 1]), 5, "nothing needed yet: the next seq");
    }

    #[test]
    fn byte_bound_evicts_too() {
        let mut l = Ring::new(Cursor::new(7, vec![0]), 1000, 3 * 200);
        for o in 0..10 {
            push(&mut l, 0, o);
        }
        assert!(
            l.bytes() <= 600 && l.len() < 10,
            "{} entries, {} bytes",
            l.len(),
            l.bytes()
        );
    }
}
