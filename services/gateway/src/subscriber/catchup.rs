//! Reading from Kafka what memory no longer holds: a catch-up reader (few per pod) reads the
//! partitions whose position is older than memory, until the position reaches memory. Positions
//! older than Kafka's retention become an `event: gap` first. The reader's own position reports
//! move the subscriber past offsets that carry no record, so a partition ending in control
//! records or an aborted transaction never leaves a catch-up waiting for an offset that will not
//! come.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::OwnedSemaphorePermit;

use super::{End, Subscriber};
use crate::feed::Feed;
use crate::kafka::{Position, Reader, Record, SourceEvent};
use crate::metrics::GatewayMetrics;

/// Catch-up output is flushed at this size.
const CATCHUP_CHUNK_BYTES: usize = 32 * 1024;
/// How long a catch-up reader waits for a record before the loop looks at timers.
const CATCHUP_POLL: Duration = Duration::from_millis(250);
/// Catch-up trouble is met by every client that catches up at the time: one line a second.
static CATCHUP_WARNINGS: sluice_runtime::logging::RateLimit =
    sluice_runtime::logging::RateLimit::new(Duration::from_secs(1));
/// How long a catch-up client may take nothing before it gives its Kafka reader back.
const READER_GRACE: Duration = Duration::from_millis(250);

/// A catch-up reader and the slot it holds until dropped.
struct SlotReader {
    reader: Box<dyn Reader>,
    _permit: OwnedSemaphorePermit,
    metrics: GatewayMetrics,
}

impl Drop for SlotReader {
    fn drop(&mut self) {
        self.metrics.catchup_readers_active.dec();
    }
}

impl Subscriber {
    /// Reads from Kafka the partitions whose position is older than memory, until memory
    /// covers them all (or the client stalls and gives its reader back).
    pub(super) async fn catch_up(&mut self) -> Result<(), End> {
        let feed = self.feed().clone();
        let floor = feed.memory_floor();
        let behind: Vec<usize> = self
            .needed
            .iter()
            .copied()
            .filter(|&p| self.position.offsets[p] < floor[p])
            .collect();
        self.skip_lost(&feed, &behind).await?;
        let reader = tokio::select! {
            reader = self.open_reader(&feed, &behind) => reader,
            _ = self.out.tx.closed() => return Err(End::ClientGone),
        };
        match reader {
            Ok(reader) => self.read_kafka(&feed, reader, &behind).await,
            Err(err) => {
                if let Some(held_back) = CATCHUP_WARNINGS.check() {
                    tracing::warn!(stream = %feed.stream, error = %err, held_back, "cannot start a catch-up reader");
                }
                Err(End::KafkaError)
            }
        }
    }

    /// A reader of `behind` at the position, once one of the pod's reader slots is free.
    async fn open_reader(&self, feed: &Feed, behind: &[usize]) -> Result<SlotReader, crate::GatewayError> {
        let permit = self
            .runtime
            .catchup
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| crate::GatewayError::Kafka(sluice_kafka::KafkaError::Task(e.to_string())))?;
        let positions: Vec<(usize, i64)> = behind.iter().map(|&p| (p, self.position.offsets[p])).collect();
        let reader = self.source.reader(&feed.topic, &positions).await?;
        self.runtime.metrics.catchup_readers_active.inc();
        Ok(SlotReader {
            reader,
            _permit: permit,
            metrics: self.runtime.metrics.clone(),
        })
    }

    /// Moves partitions whose position Kafka no longer holds to their low watermark, and tells
    /// the client with an `event: gap`.
    async fn skip_lost(&mut self, feed: &Feed, behind: &[usize]) -> Result<(), End> {
        let watermarks = match self.source.watermarks(&feed.topic, behind).await {
            Ok(w) => w,
            Err(err) => {
                if let Some(held_back) = CATCHUP_WARNINGS.check() {
                    tracing::warn!(stream = %feed.stream, error = %err, held_back, "catch-up cannot read watermarks");
                }
                return Err(End::KafkaError);
            }
        };
        let mut lost = Vec::new();
        for (&p, w) in behind.iter().zip(&watermarks) {
            let low = w.low;
            if self.position.offsets[p] < low {
                lost.push(serde_json::json!({
                    "partition": p,
                    "from": self.position.offsets[p],
                    "to": low,
                    "lost": low - self.position.offsets[p],
                }));
                self.position.set_next(p, low);
            }
        }
        if lost.is_empty() {
            self.count_resume("kafka", "exact");
            return Ok(());
        }
        self.count_resume("kafka", "gap");
        self.send_gap(&serde_json::json!({ "reason": "retention", "partitions": lost }))
            .await
    }

    /// Reads until memory covers `behind`. `Ok` also when the client stopped taking output and
    /// the reader was given back: the caller starts again from the position.
    async fn read_kafka(&mut self, feed: &Feed, reader: SlotReader, behind: &[usize]) -> Result<(), End> {
        let mut reader = Some(reader);
        let mut chunk = BytesMut::new();
        let mut ready: Vec<Bytes> = Vec::new();
        // The memory floor only moves forward; re-read it every few hundred records.
        let mut since_check = 0usize;
        while let Some(active) = &mut reader {
            if since_check == 0 && self.covered_by(&feed.memory_floor(), behind) {
                break;
            }
            match active.reader.next(CATCHUP_POLL).await {
                Ok(Some(SourceEvent::Record(record))) => {
                    self.frame_record(&record, &mut chunk, &mut ready);
                    since_check = (since_check + 1) % 256;
                    // Records keep coming: the drain, the lifetime and the feed must still be heard.
                    if let Err(end) = self.check_end() {
                        ready.extend((!chunk.is_empty()).then(|| chunk.split().freeze()));
                        self.send_catchup(&mut ready, &mut reader).await?;
                        return Err(end);
                    }
                    self.send_catchup(&mut ready, &mut reader).await?;
                }
                Ok(Some(SourceEvent::Position(position))) => {
                    self.skip_to(position);
                    since_check = 0;
                }
                Ok(None) => {
                    ready.extend((!chunk.is_empty()).then(|| chunk.split().freeze()));
                    self.send_catchup(&mut ready, &mut reader).await?;
                    self.tick().await?;
                    since_check = 0;
                }
                Err(err) => {
                    if let Some(held_back) = CATCHUP_WARNINGS.check() {
                        tracing::warn!(stream = %feed.stream, error = %err, held_back, "catch-up read failed");
                    }
                    return Err(End::KafkaError);
                }
            }
            if self.out.tx.is_closed() {
                return Err(End::ClientGone);
            }
        }
        ready.extend((!chunk.is_empty()).then(|| chunk.freeze()));
        self.send_catchup(&mut ready, &mut reader).await
    }

    /// The reader moved past offsets without a record: so does the position (a checkpoint
    /// tells a filtered client).
    fn skip_to(&mut self, position: Position) {
        let p = position.partition as usize;
        if self.position.offsets.get(p).is_some_and(|&at| position.next > at) {
            self.position.set_next(p, position.next);
            self.dirty = true;
        }
    }

    /// Frames a record read from Kafka into `chunk`; a full chunk, or a frame as large as one
    /// (never copied into a chunk), goes to `ready`.
    fn frame_record(&mut self, record: &Record, chunk: &mut BytesMut, ready: &mut Vec<Bytes>) {
        let p = record.partition as usize;
        if p >= self.position.offsets.len() || record.offset < self.position.offsets[p] {
            return;
        }
        self.position.set_next(p, record.offset + 1);
        let mapped = crate::record::map(record);
        if !self.filter.wants_key(record.key.as_deref()) || !self.filter.wants_type(&mapped.record_type) {
            self.dirty = true;
            return;
        }
        let framed = crate::record::event_frame(&self.position, &mapped.event_type, &mapped.data);
        self.dirty = false;
        if let Some(tap) = &self.tap {
            tap.record(
                record.partition,
                record.offset,
                record.timestamp_ms,
                record.key.as_ref(),
            );
        }
        self.runtime.metrics.events_sent.inc();
        if framed.len() >= CATCHUP_CHUNK_BYTES {
            ready.extend((!chunk.is_empty()).then(|| chunk.split().freeze()));
            ready.push(framed);
        } else {
            chunk.extend_from_slice(&framed);
            if chunk.len() >= CATCHUP_CHUNK_BYTES {
                ready.push(chunk.split().freeze());
            }
        }
    }

    /// Queues catch-up output. A client that takes nothing for [`READER_GRACE`] gives its
    /// reader back (`reader` becomes `None`) while it waits: readers are few, and a client that
    /// does not read must not keep one from a client that would. Its prefetched records go with
    /// it; the next catch-up reads again from the position.
    async fn send_catchup(&mut self, ready: &mut Vec<Bytes>, reader: &mut Option<SlotReader>) -> Result<(), End> {
        if ready.is_empty() {
            return Ok(());
        }
        self.runtime
            .metrics
            .bytes_sent
            .inc_by(ready.iter().map(Bytes::len).sum::<usize>() as u64);
        if reader.is_some() && self.out.send_within(ready, READER_GRACE).await? {
            return Ok(());
        }
        *reader = None;
        self.out.send_frames(ready).await
    }

    /// Whether `partitions` have reached memory. Only the partitions this reader reads: one
    /// that memory covered at the start but has since been evicted is the next round's job.
    fn covered_by(&self, floor: &[i64], partitions: &[usize]) -> bool {
        partitions.iter().all(|&p| self.position.offsets[p] >= floor[p])
    }
}
