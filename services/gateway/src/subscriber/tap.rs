//! What a subscriber serving one lane of a several-stream client reports beside its frames
//! (see [`crate::lanes`]).
//!
//! A lane's frames are single-stream SSE, parsed again by the lane's reader. What a frame does
//! not carry comes here, in the same order: for every dispatched event, whether it is a record
//! (and the record's partition, offset, timestamp and key) or the gateway's own (`gap`,
//! `sluice.caught-up`). A record that names its type `gap` is still a record. Each note is
//! pushed before its frame is queued, so a reader always finds the note of the frame it parses.
//! The channel is unbounded, but notes are one per queued frame, and frames are bounded by the
//! lane's body.
//!
//! A poll also needs to know when a lane has delivered everything it had: the subscriber marks
//! itself idle, with its position, while it waits for new records.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sluice_sse::Cursor;
use tokio::sync::{mpsc, Notify};

/// The record behind a dispatched event.
#[derive(Debug, Clone)]
pub struct RecordNote {
    pub partition: u32,
    pub offset: i64,
    /// Kafka's timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
}

/// One note per dispatched event, in frame order.
#[derive(Debug, Clone)]
pub enum Note {
    Record(RecordNote),
    /// The gateway's own event: `gap` or `sluice.caught-up`.
    Control,
}

/// Where an idle lane stands. Shared by every lane of one poll, which wakes on `notify`.
#[derive(Debug, Default)]
pub struct IdleMarks {
    pub notify: Notify,
}

/// A lane's idle mark: `Some(position)` while its subscriber waits for new records, having
/// queued every frame before.
#[derive(Debug, Default)]
pub struct IdleMark {
    pub at: Mutex<Option<Cursor>>,
}

/// The subscriber's half.
#[derive(Debug)]
pub struct Tap {
    notes: mpsc::UnboundedSender<Note>,
    idle: Option<(Arc<IdleMark>, Arc<IdleMarks>)>,
}

impl Tap {
    /// A tap and the receiver of its notes; `idle` for a lane that reports when it waits.
    pub fn new(idle: Option<(Arc<IdleMark>, Arc<IdleMarks>)>) -> (Self, mpsc::UnboundedReceiver<Note>) {
        let (notes, rx) = mpsc::unbounded_channel();
        (Self { notes, idle }, rx)
    }

    pub(super) fn record(&self, partition: u32, offset: i64, timestamp_ms: i64, key: Option<&Bytes>) {
        let _ = self.notes.send(Note::Record(RecordNote {
            partition,
            offset,
            timestamp_ms,
            key: key.cloned(),
        }));
    }

    pub(super) fn control(&self) {
        let _ = self.notes.send(Note::Control);
    }

    /// The subscriber is about to wait at `position`, every frame before queued.
    pub(super) fn idle(&self, position: &Cursor) {
        if let Some((mark, marks)) = &self.idle {
            *mark.at.lock().unwrap_or_else(|e| e.into_inner()) = Some(position.clone());
            marks.notify.notify_one();
        }
    }

    /// The subscriber stopped waiting: frames may follow.
    pub(super) fn busy(&self) {
        if let Some((mark, _)) = &self.idle {
            *mark.at.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}
