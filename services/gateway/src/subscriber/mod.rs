//! One SSE connection: from a starting position to the live feed, with heartbeats,
//! checkpoints, a lifetime and the drain.
//!
//! The subscriber's position `P` (next offset per partition) is the truth; every frame it sends
//! carries `P` as it stands after that frame, so a client resuming from any id gets exactly the
//! events after it. Where the history comes from follows from `P`:
//!
//! 1. **Kafka**, when some partition it needs is older than memory: a catch-up reader (bounded
//!    per pod) reads those partitions until `P` reaches memory. Positions older than Kafka's
//!    retention become an `event: gap` first.
//! 2. **Memory**, then **live**: unkeyed subscribers walk the stream's ring and wait on its head.
//!    Once `P` equals the head after an entry ("aligned"), they send the entry's shared frame
//!    as is. Falling out of the ring (a slow reader) just sends them back to step 1.
//! 3. Key-filtered subscribers walk memory up to the head, then register an inbox in the key
//!    index in the same critical section, and receive only their keys' entries from then on.
//!    They advance only the partitions their keys live in, so their cursors never claim records
//!    they did not look at.
//!
//! Offsets are not contiguous (control records, aborted transactions, compaction): `P` moves
//! past record-less offsets when the ring's entries or the catch-up reader say so, never by
//! assuming `next = last + 1`. A topic that gains partitions grows `P` (the new partitions from
//! their earliest offset), and a cursor ahead of a partition's end restarts that partition at
//! its earliest offset after an `event: gap` with `"reason": "reset"`.
//!
//! The parts: this file is the connection (its timers, its end); [`out`] the bounded output;
//! [`memory`] serving from the ring; [`catchup`] reading what memory no longer holds from Kafka.
//!
//! Output goes through a small queue bounded in bytes ([`crate::body`]) to the HTTP body. A send
//! that cannot complete within the write timeout means the socket has been unwritable that long:
//! the socket is shut down and the client resumes by cursor. Nothing here ever blocks the feed or
//! other clients.

mod catchup;
mod memory;
mod out;
pub mod tap;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng as _;
use sluice_kafka::murmur2::partition_for_key;
use sluice_sse::frame;
use sluice_sse::Cursor;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

pub use out::Out;
pub use tap::Tap;

use crate::feed::Feed;
use crate::hub::FeedLease;
use crate::kafka::RecordSource;
use crate::metrics::{ReasonLabel, ResumeLabel};
use crate::runtime::Runtime;

/// Entries taken from the ring per read.
const BATCH: usize = 256;
/// Buffers (frames of a burst, ring entries of a read) kept between wakes; larger ones, left by
/// a burst, are freed.
const KEEP_FRAMES: usize = 16;
/// On the delivery path, the drain and feed-stop tokens are asked every this many deliveries.
const TOKEN_CHECK_EVERY: u32 = 16;

/// Connection timing, from the gateway's flags.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat: Duration,
    pub checkpoint_interval: Duration,
    pub retry: Duration,
    pub lifetime: Option<Duration>,
    pub drain_window: Duration,
    pub write_timeout: Duration,
    /// Entries queued for a key-filtered subscriber before it falls back to reading by position.
    pub inbox_events: usize,
    /// Bytes a connection queues for its socket, beyond one event larger than that.
    pub max_queued_bytes: usize,
}

impl Timing {
    /// When a connection opened `now` ends for its lifetime, if it has one: jittered ±10 %, so
    /// connections opened together do not end together.
    pub(crate) fn lifetime_end(&self, now: Instant) -> Option<(Instant, End)> {
        self.lifetime.map(|lifetime| {
            let jitter = rand::rng().random_range(0.9..1.1);
            (now + lifetime.mul_f64(jitter), End::Lifetime)
        })
    }

    /// When a connection hearing the drain now ends: a random moment in the drain window.
    pub(crate) fn drain_end(&self) -> Instant {
        let window = self.drain_window.as_secs_f64();
        Instant::now() + Duration::from_secs_f64(rand::rng().random_range(0.0..=window.max(0.0)))
    }

    /// The `retry:` a client is told: the configured one ±50 %, so clients told together do
    /// not come back together.
    pub(crate) fn jittered_retry(&self) -> u64 {
        frame::jittered_retry(self.retry.as_millis() as u64, 0.5, rand::rng().random())
    }
}

/// What a subscriber wants from the stream.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub keys: Vec<Bytes>,
    pub types: Vec<String>,
}

impl Filter {
    pub fn is_keyed(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn is_filtered(&self) -> bool {
        !self.keys.is_empty() || !self.types.is_empty()
    }

    fn wants_type(&self, record_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == record_type)
    }

    fn wants_key(&self, key: Option<&[u8]>) -> bool {
        self.keys.is_empty() || key.is_some_and(|k| self.keys.iter().any(|want| want.as_ref() == k))
    }
}

/// Where a subscription starts, and how it got there (for the resume metric).
#[derive(Debug, Clone)]
pub struct Start {
    pub position: Cursor,
    /// Set when the client sent a cursor.
    pub resumed: bool,
    /// Partitions whose cursor offset lay beyond the partition's end (the topic was recreated,
    /// or the cursor comes from another cluster): they restart at their earliest offset, and
    /// the stream opens with an `event: gap` saying so.
    pub resets: Vec<Reset>,
}

/// One partition restarted because the cursor was ahead of its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    pub partition: usize,
    /// The cursor's offset.
    pub from: i64,
    /// Where the partition restarts: its earliest offset.
    pub to: i64,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    ClientGone,
    Unwritable,
    Lifetime,
    Drain,
    FeedStopped,
    KafkaError,
    /// The token that opened the stream is about to expire.
    Reauth,
}

impl End {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            End::ClientGone => "client_gone",
            End::Unwritable => "write_timeout",
            End::Lifetime => "lifetime",
            End::Drain => "drain",
            End::FeedStopped => "feed_stopped",
            End::KafkaError => "kafka_error",
            End::Reauth => "token_expiring",
        }
    }
}

/// Everything a connection task needs.
#[derive(Debug)]
pub struct Subscriber {
    lease: FeedLease,
    runtime: Arc<Runtime>,
    source: Arc<dyn RecordSource>,
    filter: Filter,
    /// Partitions this subscriber reads: all, or those its keys live in.
    needed: Vec<usize>,
    /// The feed's partition count `needed` was worked out for.
    partitions: usize,
    position: Cursor,
    resumed: bool,
    resets: Vec<Reset>,
    aligned: bool,
    /// The position moved since the last id sent (filtered streams send checkpoints).
    dirty: bool,
    last_checkpoint: Instant,
    end_at: Option<(Instant, End)>,
    /// The drain has been heard (its end is in `end_at` unless an earlier end already was:
    /// then the drain must not be heard again, or `wait` would spin on the cancelled token).
    draining: bool,
    /// Shared by every connection of the pod.
    timing: Arc<Timing>,
    drain: CancellationToken,
    out: Out,
    /// The connection's one timer (heartbeat, checkpoint, end), re-armed only when it must
    /// fire earlier than it is set to, or has fired.
    timer: Pin<Box<Sleep>>,
    /// Deliveries so far (wrapping), to pace [`Self::check_tokens`].
    deliveries: u32,
    /// For a subscriber that started behind: the head its stream had when it connected. Once
    /// the position reaches it, `event: sluice.caught-up` is sent, once, and this is cleared.
    caught_up_at: Option<Vec<i64>>,
    /// Set when this subscriber is one lane of a several-stream client ([`crate::lanes`]).
    tap: Option<Tap>,
}

impl Subscriber {
    pub fn new(
        (lease, source): (FeedLease, Arc<dyn RecordSource>),
        runtime: Arc<Runtime>,
        filter: Filter,
        start: Start,
        timing: Arc<Timing>,
        out: Out,
    ) -> Self {
        let now = Instant::now();
        let end_at = timing.lifetime_end(now);
        let mut subscriber = Self {
            lease,
            drain: runtime.drain.clone(),
            runtime,
            source,
            filter,
            needed: Vec::new(),
            partitions: 0,
            position: start.position,
            resumed: start.resumed,
            resets: start.resets,
            aligned: false,
            dirty: false,
            last_checkpoint: now,
            end_at,
            draining: false,
            timer: Box::pin(tokio::time::sleep_until(now + timing.heartbeat)),
            deliveries: 0,
            caught_up_at: None,
            tap: None,
            timing,
            out,
        };
        subscriber.runtime.metrics.subscribers_active.inc();
        subscriber.follow_partitions();
        let head = subscriber.feed().latest();
        let behind = subscriber
            .needed
            .iter()
            .any(|&p| subscriber.position.offsets.get(p) < head.offsets.get(p));
        if behind {
            subscriber.caught_up_at = Some(head.offsets);
        }
        subscriber
    }

    /// Makes this subscriber one lane of a several-stream client: it reports through `tap`,
    /// and leaves the drain, the lifetime, token expiry and the disconnect count to the client
    /// that reads it (which ends it by dropping its body).
    pub fn into_lane(mut self, tap: Tap) -> Self {
        self.tap = Some(tap);
        self.drain = CancellationToken::new();
        self.end_at = None;
        self
    }

    /// Whether the subscriber still waits to reach the head its stream had when it connected.
    pub fn catching_up(&self) -> bool {
        self.caught_up_at.is_some()
    }

    /// Sends `event: sluice.caught-up` (id: the position) once the position has reached the
    /// head the stream had when the subscriber connected: the client now holds everything that
    /// existed then, and what follows is live.
    async fn announce_caught_up(&mut self) -> Result<(), End> {
        let Some(target) = &self.caught_up_at else {
            return Ok(());
        };
        let reached = self
            .needed
            .iter()
            .all(|&p| self.position.offsets.get(p) >= target.get(p).or(Some(&0)));
        if !reached {
            return Ok(());
        }
        self.caught_up_at = None;
        let data = serde_json::json!({ "streams": [self.feed().stream] }).to_string();
        self.dirty = false;
        if let Some(tap) = &self.tap {
            tap.control();
        }
        self.out
            .send(crate::record::event_frame(&self.position, "sluice.caught-up", &data))
            .await
    }

    /// Takes in partitions the topic gained since `needed` was worked out: they extend the
    /// position from where memory began them (their earliest offset), and a key-filtered
    /// subscriber adds the partitions its keys hash to now (its keys' earlier records stay
    /// where they were written).
    fn follow_partitions(&mut self) {
        let partitions = self.feed().partitions();
        if partitions <= self.partitions {
            return;
        }
        let origins = self.feed().origins();
        for (p, &origin) in origins
            .iter()
            .enumerate()
            .take(partitions)
            .skip(self.position.offsets.len())
        {
            self.position.set_next(p, origin);
        }
        if self.filter.is_keyed() {
            let now = self
                .filter
                .keys
                .iter()
                .map(|k| partition_for_key(k, partitions as u32) as usize);
            self.needed.extend(now);
            self.needed.sort_unstable();
            self.needed.dedup();
        } else {
            self.needed = (0..partitions).collect();
        }
        self.partitions = partitions;
        self.aligned = false;
    }

    /// Ends the stream `after` from now (if sooner than any other end) with a final
    /// `event: sluice.reauth` carrying the cursor: the token that opened it is expiring. Kept in
    /// the one `end_at` the connection's timer already serves, so it costs no extra timer.
    pub fn with_reauth(mut self, after: Option<Duration>) -> Self {
        if let Some(after) = after {
            end_sooner(&mut self.end_at, Instant::now() + after, End::Reauth);
        }
        self
    }

    fn feed(&self) -> &Arc<Feed> {
        &self.lease.feed
    }

    /// Runs the connection until it ends, and counts how it ended.
    pub async fn run(mut self) {
        let end = self.serve().await;
        if matches!(end, End::Lifetime | End::Drain | End::FeedStopped) {
            // Tell the client when to come back; jittered so a drain does not become a storm.
            let retry = self.jittered_retry();
            let _ = self.out.send(frame::retry_frame(retry)).await;
        }
        if end == End::Reauth {
            let _ = self.out.send(reauth_frame(&self.position)).await;
        }
        if self.tap.is_some() {
            return;
        }
        self.runtime
            .metrics
            .disconnects
            .get_or_create(&ReasonLabel { reason: end.reason() })
            .inc();
    }

    fn jittered_retry(&self) -> u64 {
        self.timing.jittered_retry()
    }

    async fn serve(&mut self) -> End {
        let first = self.jittered_retry();
        if let Err(end) = self.out.send(frame::retry_frame(first)).await {
            return end;
        }
        if let Err(end) = self.send_resets().await {
            return end;
        }
        loop {
            self.follow_partitions();
            let result = match self.feed().memory_start(&self.position.offsets, &self.needed) {
                Some(seq) => {
                    self.count_resume("memory", "exact");
                    if self.filter.is_keyed() {
                        Box::pin(self.serve_keyed(seq)).await
                    } else {
                        self.serve_memory(seq).await
                    }
                }
                // Boxed: a task's size is that of its largest state, and every idle connection
                // would otherwise carry room for a Kafka catch-up it is not doing.
                None => Box::pin(self.catch_up()).await,
            };
            match result {
                // Fell behind memory (or caught up from Kafka): go round again from `P`.
                Ok(()) => continue,
                Err(end) => return end,
            }
        }
    }

    /// The `event: gap` for partitions whose cursor was ahead of their end: they restart at
    /// their earliest offset (already in the position).
    async fn send_resets(&mut self) -> Result<(), End> {
        if self.resets.is_empty() {
            return Ok(());
        }
        let partitions: Vec<serde_json::Value> = std::mem::take(&mut self.resets)
            .iter()
            .map(|r| serde_json::json!({"partition": r.partition, "from": r.from, "to": r.to, "reason": "reset"}))
            .collect();
        self.count_resume("kafka", "gap");
        self.send_gap(&serde_json::json!({"reason": "reset", "partitions": partitions}))
            .await
    }

    /// An `event: gap` whose data is `body` plus the stream's name; its id is the position.
    async fn send_gap(&mut self, body: &serde_json::Value) -> Result<(), End> {
        let mut data = serde_json::json!({ "stream": self.feed().stream });
        if let (Some(data), Some(body)) = (data.as_object_mut(), body.as_object()) {
            data.extend(body.clone());
        }
        let gap = crate::record::event_frame(&self.position, "gap", &data.to_string());
        self.aligned = false;
        if let Some(tap) = &self.tap {
            tap.control();
        }
        self.out.send(gap).await
    }

    /// Entries and bytes of one ring read: a burst is at most what the connection may queue.
    fn batch_limits(&self) -> (usize, usize) {
        (BATCH, self.timing.max_queued_bytes)
    }

    fn count_resume(&mut self, source: &'static str, outcome: &'static str) {
        if std::mem::take(&mut self.resumed) {
            self.runtime
                .metrics
                .resumes
                .get_or_create(&ResumeLabel { source, outcome })
                .inc();
        }
    }

    /// Ends the connection if its end is due: drain, lifetime, or the feed stopping.
    fn check_end(&mut self) -> Result<(), End> {
        self.check_tokens()?;
        self.check_end_at()
    }

    /// The drain and the feed's stop. Each `is_cancelled` locks a mutex every connection of the
    /// pod (or of the stream) shares, so the delivery path asks only every
    /// [`TOKEN_CHECK_EVERY`]th time; a subscriber with nothing to deliver waits on both tokens.
    fn check_tokens(&mut self) -> Result<(), End> {
        if self.feed().stop.is_cancelled() {
            return Err(End::FeedStopped);
        }
        if self.drain.is_cancelled() && !self.draining {
            self.begin_drain();
        }
        Ok(())
    }

    fn check_end_at(&self) -> Result<(), End> {
        match self.end_at {
            Some((at, why)) if Instant::now() >= at => Err(why),
            _ => Ok(()),
        }
    }

    /// Hands a burst's frames to the body as they are (shared `Bytes`, no copy here); the body
    /// joins small frames into chunks of at most [`body::CHUNK_BYTES`] and slices large ones.
    async fn flush(&mut self, mut frames: Vec<Bytes>, events: u64, newest_ms: i64) -> Result<(), End> {
        if frames.is_empty() {
            self.out.frames = frames;
            return self.tick_after_delivery().await;
        }
        self.runtime.metrics.events_sent.inc_by(events);
        self.runtime
            .metrics
            .bytes_sent
            .inc_by(frames.iter().map(Bytes::len).sum::<usize>() as u64);
        self.observe_latency(newest_ms);
        let sent = self.out.send_frames(&mut frames).await;
        self.out.frames = frames;
        sent?;
        self.tick_after_delivery().await
    }

    fn observe_latency(&self, newest_ms: i64) {
        if newest_ms > 0 {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            self.feed()
                .delivery_latency
                .observe(((now_ms - newest_ms).max(0) as f64) / 1000.0);
        }
    }

    /// Waits for `event` while keeping the connection's timers: heartbeat, checkpoint, end.
    ///
    /// The event is polled first: on the hot path (woken by a new entry) nothing else is
    /// polled, and the end conditions are still checked by the `tick` after every delivery.
    /// The timer is left armed when the heartbeat moves later (every send moves it): it then
    /// fires early, `tick` finds nothing due, and it is re-armed once, instead of a timer-wheel
    /// update per event.
    async fn wait(&mut self, event: impl std::future::Future<Output = ()>) -> Result<(), End> {
        let Some(tap) = &self.tap else {
            return self.wait_for(event).await;
        };
        // Idle only at the stream's head: a feed that has just started may not hold all of
        // Kafka's records yet (its memory is still filling).
        let head = self.feed().latest();
        let at_head = self
            .needed
            .iter()
            .all(|&p| self.position.offsets.get(p) >= head.offsets.get(p));
        if at_head {
            tap.idle(&self.position);
        }
        let waited = self.wait_for(event).await;
        if let Some(tap) = &self.tap {
            tap.busy();
        }
        waited
    }

    async fn wait_for(&mut self, event: impl std::future::Future<Output = ()>) -> Result<(), End> {
        tokio::pin!(event);
        loop {
            let due = self.next_due();
            if due < self.timer.deadline() || self.timer.is_elapsed() {
                self.timer.as_mut().reset(due);
            }
            tokio::select! {
                biased;
                _ = &mut event => return Ok(()),
                _ = self.timer.as_mut() => self.tick().await?,
                _ = self.out.tx.closed() => return Err(End::ClientGone),
                _ = self.lease.feed.stop.cancelled() => return Err(End::FeedStopped),
                _ = self.drain.cancelled(), if !self.draining => self.begin_drain(),
            }
        }
    }

    fn begin_drain(&mut self) {
        self.draining = true;
        end_sooner(&mut self.end_at, self.timing.drain_end(), End::Drain);
    }

    fn next_due(&self) -> Instant {
        let mut due = self.out.last_sent + self.timing.heartbeat;
        if self.filter.is_filtered() && self.dirty {
            due = due.min(self.last_checkpoint + self.timing.checkpoint_interval);
        }
        if let Some((at, _)) = self.end_at {
            due = due.min(at);
        }
        due
    }

    /// Does whatever is due now: end, checkpoint, heartbeat.
    async fn tick(&mut self) -> Result<(), End> {
        self.check_tokens()?;
        self.tick_timers().await
    }

    /// [`Self::tick`] on the delivery path: the shared tokens only every
    /// [`TOKEN_CHECK_EVERY`]th delivery.
    async fn tick_after_delivery(&mut self) -> Result<(), End> {
        self.deliveries = self.deliveries.wrapping_add(1);
        if self.deliveries.is_multiple_of(TOKEN_CHECK_EVERY) {
            self.check_tokens()?;
        }
        self.tick_timers().await
    }

    async fn tick_timers(&mut self) -> Result<(), End> {
        self.check_end_at()?;
        let now = Instant::now();
        if self.filter.is_filtered() && self.dirty && now >= self.last_checkpoint + self.timing.checkpoint_interval {
            self.dirty = false;
            self.last_checkpoint = now;
            return self.out.send(frame::cursor_checkpoint_frame(&self.position)).await;
        }
        if now >= self.out.last_sent + self.timing.heartbeat {
            return self.out.send(frame::comment("")).await;
        }
        Ok(())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.runtime.metrics.subscribers_active.dec();
    }
}

/// Sets `end_at` to end at `at` for `why`, unless an earlier end is already set.
pub(crate) fn end_sooner(end_at: &mut Option<(Instant, End)>, at: Instant, why: End) {
    if end_at.is_none_or(|(t, _)| at < t) {
        *end_at = Some((at, why));
    }
}

/// The last frame of a stream whose token is expiring: its id is the position, so the client
/// resumes exactly there with a fresh token.
fn reauth_frame(position: &Cursor) -> Bytes {
    reauth_frame_with_id(&position.encode())
}

/// [`reauth_frame`] for an id already encoded.
pub(crate) fn reauth_frame_with_id(id: &str) -> Bytes {
    frame::event_frame(id, Some("sluice.reauth"), r#"{"reason":"token_expiring"}"#)
        .expect("a cursor id, a fixed single-line type and data")
}
