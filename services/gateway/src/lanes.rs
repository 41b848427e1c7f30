//! Several streams through one client: a lane per stream.
//!
//! A lane is an ordinary subscriber of one stream ([`crate::subscriber`]: memory, catch-up,
//! keys, gaps, partitions added, caught-up), writing single-stream SSE into a small body of its
//! own. Lanes are not tasks: their futures run inside the task that reads them (polled by
//! [`Lanes::next`]), so a reader that stops drops its lanes at once. (As tasks of their own, the
//! lanes of answered polls each had to be scheduled once more just to end; under load tens of
//! thousands waited for that, holding their memory.) [`Lanes`] reads every lane's body, parses it
//! back with the reference client parser, and pairs each event with the subscriber's note of it
//! ([`crate::subscriber::tap`]): a record (partition, offset, timestamp, key) or the gateway's
//! own event. Each lane's position is the id of the last frame read from it, so the combined
//! cursor of everything read so far is exact: resuming at it yields what was not read yet, in
//! every stream.
//!
//! Two clients read lanes: a several-stream SSE connection ([`crate::multi`]) and a poll
//! ([`crate::poll`]). Dropping [`Lanes`] drops every lane's subscriber.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt as _};
use sluice_sse::parse::{ParsedEvent, Parser};
use sluice_sse::Cursor;
use tokio::sync::mpsc;

use crate::hub::FeedLease;
use crate::server::AppState;
use crate::subscriber::tap::{IdleMark, IdleMarks, Note, RecordNote};
use crate::subscriber::{Filter, Out, Start, Subscriber, Tap};

/// One stream of a several-stream client, ready to start.
#[derive(Debug)]
pub struct LaneSpec {
    pub stream: String,
    pub lease: FeedLease,
    pub filter: Filter,
    pub start: Start,
}

/// What a lane's bytes held, in order.
#[derive(Debug)]
pub enum Step {
    /// An event of a record, and the lane's position after it.
    Record {
        event: ParsedEvent,
        note: RecordNote,
        position: Cursor,
    },
    /// The gateway's own event (`gap`, `sluice.caught-up`), and the lane's position at it.
    Control { event: ParsedEvent, position: Cursor },
    /// The lane's position moved with no event (a checkpoint of a filtered stream).
    Moved,
    /// A heartbeat comment.
    Heartbeat,
}

/// A lane's output did not make sense; it is ended (this is a bug, never the client's doing).
#[derive(Debug, thiserror::Error)]
#[error("lane of stream {stream:?}: {what}")]
pub struct LaneError {
    stream: String,
    what: &'static str,
}

/// One lane: its subscriber's body and notes, and its position.
#[derive(Debug)]
pub struct Lane {
    pub stream: String,
    rx: crate::body::BodyRx,
    notes: mpsc::UnboundedReceiver<Note>,
    parser: Parser,
    /// The position after the last frame read from this lane.
    pub position: Cursor,
    /// The last id the lane's frames carried (its position may have moved on since, to where
    /// the lane waits).
    last_seen: String,
    idle: Option<Arc<IdleMark>>,
    /// The lane started behind its stream's head and has not said `sluice.caught-up` yet.
    pub catching_up: bool,
    pub ended: bool,
}

/// A lane's subscriber, running.
type Run = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Every lane of one client.
pub struct Lanes {
    pub lanes: Vec<Lane>,
    /// The lanes' subscribers, driven by [`Lanes::next`].
    runs: FuturesUnordered<Run>,
    /// Which lane is polled first next time, so one busy lane cannot starve the others.
    turn: usize,
    /// Shared by the lanes' idle marks (polls only).
    pub marks: Option<Arc<IdleMarks>>,
}

impl Lanes {
    /// Starts a subscriber per spec. `report_idle`: lanes mark when they wait (a poll needs it).
    pub fn open(specs: Vec<LaneSpec>, state: &AppState, report_idle: bool) -> Self {
        let marks = report_idle.then(|| Arc::new(IdleMarks::default()));
        let source = state.hub.source().clone();
        let runs = FuturesUnordered::new();
        let lanes = specs
            .into_iter()
            .map(|spec| {
                let idle = marks
                    .as_ref()
                    .map(|marks| (Arc::new(IdleMark::default()), marks.clone()));
                let mark = idle.as_ref().map(|(mark, _)| mark.clone());
                let (tap, notes) = Tap::new(idle);
                let (out, rx) = Out::channel(state.timing.max_queued_bytes, None, state.timing.write_timeout);
                let position = spec.start.position.clone();
                let subscriber = Subscriber::new(
                    (spec.lease, source.clone()),
                    state.runtime().clone(),
                    spec.filter,
                    spec.start,
                    state.lane_timing.clone(),
                    out,
                )
                .into_lane(tap);
                let catching_up = subscriber.catching_up();
                runs.push(Box::pin(subscriber.run()) as Run);
                Lane {
                    stream: spec.stream,
                    rx,
                    notes,
                    parser: Parser::new(),
                    last_seen: String::new(),
                    position,
                    idle: mark,
                    catching_up,
                    ended: false,
                }
            })
            .collect();
        Self {
            lanes,
            runs,
            turn: 0,
            marks,
        }
    }

    /// Runs the lanes until one of them sent something: `(lane, Some(bytes))`, or
    /// `(lane, None)` once when a lane ended. Pending forever when every lane has ended.
    pub async fn next(&mut self) -> (usize, Option<Bytes>) {
        std::future::poll_fn(|cx| {
            // Each subscriber runs until it waits (for records, room or a timer); ended ones
            // leave the set, their bodies end below.
            while let Poll::Ready(Some(())) = self.runs.poll_next_unpin(cx) {}
            let n = self.lanes.len();
            for k in 0..n {
                let i = (self.turn + k) % n;
                let lane = &mut self.lanes[i];
                if lane.ended {
                    continue;
                }
                match lane.rx.poll_frame(cx) {
                    Poll::Ready(bytes) => {
                        self.turn = (i + 1) % n;
                        if bytes.is_none() {
                            lane.ended = true;
                        }
                        return Poll::Ready((i, bytes));
                    }
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Parses bytes lane `i` sent into steps, moving its position.
    pub fn take(&mut self, i: usize, bytes: &[u8]) -> Result<Vec<Step>, LaneError> {
        let lane = &mut self.lanes[i];
        let mut steps = Vec::new();
        for event in lane.parser.feed(bytes) {
            let note = lane
                .notes
                .try_recv()
                .map_err(|_| lane.error("an event without a note"))?;
            lane.seen(event.id.as_deref())?;
            let position = lane.position.clone();
            steps.push(match note {
                Note::Record(note) => Step::Record { event, note, position },
                Note::Control => {
                    if event.event_type == "sluice.caught-up" {
                        lane.catching_up = false;
                    }
                    Step::Control { event, position }
                }
            });
        }
        if lane.parser.last_event_id().is_some_and(|id| id != lane.last_seen) {
            let id = lane.parser.last_event_id().map(str::to_owned);
            lane.seen(id.as_deref())?;
            steps.push(Step::Moved);
        }
        if !lane.parser.take_comments().is_empty() {
            steps.push(Step::Heartbeat);
        }
        Ok(steps)
    }

    /// Every lane waits for new records with nothing left unread: a poll may answer. Moves each
    /// lane's position to where it waits (past records its filter skipped).
    pub fn settle(&mut self) -> bool {
        let mut idle = Vec::with_capacity(self.lanes.len());
        for lane in &self.lanes {
            let Some(mark) = &lane.idle else { return false };
            let at = mark.at.lock().unwrap_or_else(|e| e.into_inner()).clone();
            // The mark first, then the body: a mark set before frames that are still queued
            // is not idle yet.
            match at {
                Some(at) if lane.rx.queued_bytes() == 0 && !lane.ended => idle.push(at),
                _ => return false,
            }
        }
        for (lane, at) in self.lanes.iter_mut().zip(idle) {
            lane.position = at;
        }
        true
    }

    /// Whether some lane still waits to say `sluice.caught-up`.
    pub fn catching_up(&self) -> bool {
        self.lanes.iter().any(|lane| lane.catching_up)
    }

    pub fn streams(&self) -> Vec<&str> {
        self.lanes.iter().map(|lane| lane.stream.as_str()).collect()
    }
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("lanes", &self.lanes)
            .field("running", &self.runs.len())
            .finish_non_exhaustive()
    }
}

impl Lane {
    /// A frame carried `id`: the lane's position is now there.
    fn seen(&mut self, id: Option<&str>) -> Result<(), LaneError> {
        let Some(id) = id else { return Ok(()) };
        if id == self.last_seen {
            return Ok(());
        }
        self.position = Cursor::decode(id).map_err(|_| self.error("an id that is not a cursor"))?;
        self.last_seen = id.to_owned();
        Ok(())
    }

    fn error(&self, what: &'static str) -> LaneError {
        LaneError {
            stream: self.stream.clone(),
            what,
        }
    }
}
