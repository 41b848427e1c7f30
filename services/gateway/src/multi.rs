//! A several-stream SSE connection: `GET /v1/streams/{a},{b},…`.
//!
//! Each stream is a lane ([`crate::lanes`]); this connection reads them all and writes one SSE
//! stream: every event's type becomes `<stream>:<type>`, and its id the combined cursor (format
//! v2, see `sluice_sse::MultiCursor`) of every stream's position after it. The gateway's own
//! events keep their names (`gap` says which stream in its data). A lane's checkpoint becomes a
//! combined checkpoint; `event: sluice.caught-up` comes once, when every lane that started
//! behind has caught up. The heartbeat, the lifetime, the drain and token expiry are this
//! connection's, as for a single stream; a lane that ends (its feed stopped, Kafka failed) ends
//! the connection, which the client resumes by cursor.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_sse::frame;
use sluice_sse::MultiCursor;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lanes::{Lanes, Step};
use crate::metrics::ReasonLabel;
use crate::runtime::Runtime;
use crate::subscriber::{end_sooner, End, Out, Timing};

/// Lane output errors are bugs, met by every several-stream client at the time: one line a
/// second.
static LANE_WARNINGS: sluice_runtime::logging::RateLimit =
    sluice_runtime::logging::RateLimit::new(Duration::from_secs(1));

/// One several-stream connection.
#[derive(Debug)]
pub struct MultiStream {
    lanes: Lanes,
    out: Out,
    runtime: Arc<Runtime>,
    timing: Arc<Timing>,
    /// Every lane's position, combined.
    cursor: MultiCursor,
    /// `sluice.caught-up` is owed once every lane has caught up.
    owe_caught_up: bool,
    end_at: Option<(Instant, End)>,
    draining: bool,
    drain: CancellationToken,
}

impl MultiStream {
    pub fn new(lanes: Lanes, out: Out, runtime: Arc<Runtime>, timing: Arc<Timing>, reauth: Option<Duration>) -> Self {
        let now = Instant::now();
        let mut end_at = timing.lifetime_end(now);
        if let Some(after) = reauth {
            end_sooner(&mut end_at, now + after, End::Reauth);
        }
        let cursor = MultiCursor::new(lanes.lanes.iter().map(|lane| lane.position.clone()).collect())
            .expect("the streams of a request are distinct and within the limits");
        Self {
            owe_caught_up: lanes.catching_up(),
            drain: runtime.drain.clone(),
            lanes,
            out,
            runtime,
            timing,
            cursor,
            end_at,
            draining: false,
        }
    }

    /// Runs the connection until it ends, and counts how it ended.
    pub async fn run(mut self) {
        let end = self.serve().await;
        if matches!(end, End::Lifetime | End::Drain | End::FeedStopped) {
            let retry = self.timing.jittered_retry();
            let _ = self.out.send(frame::retry_frame(retry)).await;
        }
        if end == End::Reauth {
            let id = self.cursor.encode();
            let _ = self.out.send(crate::subscriber::reauth_frame_with_id(&id)).await;
        }
        self.runtime
            .metrics
            .disconnects
            .get_or_create(&ReasonLabel { reason: end.reason() })
            .inc();
    }

    async fn serve(&mut self) -> End {
        if let Err(end) = self.out.send(frame::retry_frame(self.timing.jittered_retry())).await {
            return end;
        }
        let mut timer = Box::pin(tokio::time::sleep_until(self.next_due()));
        loop {
            let due = self.next_due();
            if due != timer.deadline() {
                timer.as_mut().reset(due);
            }
            let result = tokio::select! {
                biased;
                (lane, bytes) = self.lanes.next() => match bytes {
                    Some(bytes) => self.relay(lane, &bytes).await,
                    None => Err(End::FeedStopped),
                },
                _ = timer.as_mut() => self.tick().await,
                _ = self.out.tx.closed() => Err(End::ClientGone),
                _ = self.drain.cancelled(), if !self.draining => {
                    self.begin_drain();
                    Ok(())
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Rewrites what lane `i` sent for the client.
    async fn relay(&mut self, i: usize, bytes: &[u8]) -> Result<(), End> {
        let steps = match self.lanes.take(i, bytes) {
            Ok(steps) => steps,
            Err(err) => {
                if let Some(held_back) = LANE_WARNINGS.check() {
                    tracing::error!(error = %err, held_back, "ending a several-stream connection");
                }
                return Err(End::KafkaError);
            }
        };
        let mut frames: Vec<Bytes> = Vec::with_capacity(steps.len());
        let mut moved = false;
        for step in steps {
            match step {
                Step::Record { event, position, .. } => {
                    self.set_component(position);
                    let event_type = format!("{}:{}", self.lanes.lanes[i].stream, event.event_type);
                    frames.push(self.frame(&event_type, &event.data));
                    moved = false;
                }
                Step::Control { event, position } if event.event_type == "sluice.caught-up" => {
                    self.set_component(position);
                    if self.owe_caught_up && !self.lanes.catching_up() {
                        self.owe_caught_up = false;
                        let data = serde_json::json!({ "streams": self.lanes.streams() }).to_string();
                        frames.push(self.frame("sluice.caught-up", &data));
                        moved = false;
                    }
                }
                Step::Control { event, position } => {
                    self.set_component(position);
                    frames.push(self.frame(&event.event_type, &event.data));
                    moved = false;
                }
                Step::Moved => moved = true,
                Step::Heartbeat => {}
            }
        }
        // The lane's position after everything it sent (a checkpoint moves it with no event).
        self.set_component(self.lanes.lanes[i].position.clone());
        if moved {
            frames.push(frame::checkpoint_frame(&self.cursor.encode()).expect("a cursor is a valid id"));
        }
        if frames.is_empty() {
            return Ok(());
        }
        self.out.send_frames(&mut frames).await
    }

    /// A lane's position, into the combined cursor.
    fn set_component(&mut self, position: sluice_sse::Cursor) {
        if let Some(component) = self.cursor.get_mut(position.fingerprint) {
            *component = position;
        }
    }

    fn frame(&self, event_type: &str, data: &str) -> Bytes {
        let id = self.cursor.encode();
        frame::event_frame(&id, Some(event_type), data)
            .unwrap_or_else(|_| frame::event_frame(&id, None, data).expect("a cursor is a valid id"))
    }

    fn begin_drain(&mut self) {
        self.draining = true;
        end_sooner(&mut self.end_at, self.timing.drain_end(), End::Drain);
    }

    fn next_due(&self) -> Instant {
        let heartbeat = self.out.last_sent + self.timing.heartbeat;
        self.end_at.map_or(heartbeat, |(at, _)| at.min(heartbeat))
    }

    async fn tick(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if let Some((at, why)) = self.end_at {
            if now >= at {
                return Err(why);
            }
        }
        if now >= self.out.last_sent + self.timing.heartbeat {
            return self.out.send(frame::comment("")).await;
        }
        Ok(())
    }
}
