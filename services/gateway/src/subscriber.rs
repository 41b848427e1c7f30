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
//! Output goes through a small queue bounded in bytes ([`crate::body`]) to the HTTP body. A send
//! that cannot complete within the write timeout means the socket has been unwritable that long:
//! the socket is shut down and the client resumes by cursor. Nothing here ever blocks the feed or
//! other clients.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng as _;
use sluice_kafka::murmur2::partition_for_key;
use sluice_sse::frame;
use sluice_sse::Cursor;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::body::{self, BodyRx, BodyTx, Closed};
use crate::feed::{Feed, Inbox};
use crate::hub::FeedLease;
use crate::kafka::{CatchUpReader, KafkaContext, OwnedRecord};
use crate::log::{Entry, Evicted};
use crate::metrics::{ReasonLabel, ResumeLabel};
use crate::record::map_record;

/// Entries taken from the ring per read.
const BATCH: usize = 256;
/// Catch-up output is flushed at this size.
const CATCHUP_CHUNK_BYTES: usize = 32 * 1024;
/// How long a catch-up reader waits for a record before the loop looks at timers.
const CATCHUP_POLL: Duration = Duration::from_millis(250);
/// Catch-up trouble is met by every client that catches up at the time: one line a second.
static CATCHUP_WARNINGS: sluice_runtime::logging::RateLimit =
    sluice_runtime::logging::RateLimit::new(Duration::from_secs(1));
/// How long a catch-up client may take nothing before it gives its Kafka reader back.
const READER_GRACE: Duration = Duration::from_millis(250);
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
    fn reason(self) -> &'static str {
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

/// The sending half of a connection's body.
#[derive(Debug)]
pub struct Out {
    tx: BodyTx,
    socket: Option<std::os::fd::RawFd>,
    write_timeout: Duration,
    last_sent: Instant,
    /// Frames of the burst being delivered, reused from wake to wake.
    frames: Vec<Bytes>,
}

impl Out {
    /// A body queue of `limit_bytes` (see [`crate::body`]); `socket` is shut down if it stays
    /// unwritable.
    pub fn channel(limit_bytes: usize, socket: Option<std::os::fd::RawFd>, write_timeout: Duration) -> (Self, BodyRx) {
        let (tx, rx) = body::channel(limit_bytes);
        (
            Self {
                tx,
                socket,
                write_timeout,
                last_sent: Instant::now(),
                frames: Vec::new(),
            },
            rx,
        )
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), End> {
        let mut frames = std::mem::take(&mut self.frames);
        frames.push(bytes);
        let sent = self.send_frames(&mut frames).await;
        self.frames = frames;
        sent
    }

    /// Queues `frames` (emptying it), waiting for room until the socket has accepted nothing
    /// for the write timeout.
    async fn send_frames(&mut self, frames: &mut Vec<Bytes>) -> Result<(), End> {
        let sent = match self.tx.try_send(frames) {
            Ok(true) => Ok(()),
            Err(Closed) => Err(End::ClientGone),
            Ok(false) => self.wait_for_room(frames).await,
        };
        self.recycle(frames);
        if sent.is_ok() {
            self.last_sent = Instant::now();
        }
        sent
    }

    /// The queue is full. The timeout counts from when the body last took bytes, not from now:
    /// that is when the socket stopped accepting data.
    async fn wait_for_room(&self, frames: &mut Vec<Bytes>) -> Result<(), End> {
        let deadline = self.tx.stalled_since().unwrap_or_else(Instant::now) + self.write_timeout;
        // Boxed, so that every connection's task does not carry room for the timer.
        match Box::pin(tokio::time::timeout_at(deadline, self.tx.send(frames))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Closed)) => Err(End::ClientGone),
            Err(_) => {
                // The body has not been pulled for the whole timeout: the kernel will not
                // take more. The receiver is still alive, so actix still owns this
                // descriptor.
                if let Some(fd) = self.socket.filter(|_| !self.tx.is_closed()) {
                    let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
                }
                Err(End::Unwritable)
            }
        }
    }

    /// Queues `frames` if the body makes room for them within `grace`. `Ok(false)`: it did not;
    /// what is not queued yet is still in `frames`.
    async fn send_within(&mut self, frames: &mut Vec<Bytes>, grace: Duration) -> Result<bool, End> {
        let queued = match tokio::time::timeout(grace, self.tx.send(frames)).await {
            Ok(Ok(())) => true,
            Ok(Err(Closed)) => return Err(End::ClientGone),
            Err(_) => false,
        };
        if queued {
            self.recycle(frames);
            self.last_sent = Instant::now();
        }
        Ok(queued)
    }

    fn recycle(&self, frames: &mut Vec<Bytes>) {
        frames.clear();
        if frames.capacity() > KEEP_FRAMES {
            // After a burst: idle connections must stay small.
            *frames = Vec::new();
        }
    }
}

/// Everything a connection task needs.
#[derive(Debug)]
pub struct Subscriber {
    lease: FeedLease,
    kafka: Arc<KafkaContext>,
    filter: Filter,
    /// Partitions this subscriber reads: all, or those its keys live in.
    needed: Vec<usize>,
    position: Cursor,
    resumed: bool,
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
}

impl Subscriber {
    pub fn new(
        lease: FeedLease,
        kafka: Arc<KafkaContext>,
        filter: Filter,
        start: Start,
        timing: Arc<Timing>,
        drain: CancellationToken,
        out: Out,
    ) -> Self {
        let feed = &lease.feed;
        let needed = if filter.is_keyed() {
            let mut parts: Vec<usize> = filter
                .keys
                .iter()
                .map(|k| partition_for_key(k, feed.partitions as u32) as usize)
                .collect();
            parts.sort_unstable();
            parts.dedup();
            parts
        } else {
            (0..feed.partitions).collect()
        };
        let now = Instant::now();
        let end_at = timing.lifetime.map(|lifetime| {
            let jitter = rand::rng().random_range(0.9..1.1);
            (now + lifetime.mul_f64(jitter), End::Lifetime)
        });
        Self {
            lease,
            kafka,
            filter,
            needed,
            position: start.position,
            resumed: start.resumed,
            aligned: false,
            dirty: false,
            last_checkpoint: now,
            end_at,
            draining: false,
            drain,
            timer: Box::pin(tokio::time::sleep_until(now + timing.heartbeat)),
            deliveries: 0,
            timing,
            out,
        }
    }

    /// Ends the stream `after` from now (if sooner than any other end) with a final
    /// `event: sluice.reauth` carrying the cursor: the token that opened it is expiring. Kept in
    /// the one `end_at` the connection's timer already serves, so it costs no extra timer.
    pub fn with_reauth(mut self, after: Option<Duration>) -> Self {
        if let Some(after) = after {
            let at = Instant::now() + after;
            if self.end_at.is_none_or(|(t, _)| at < t) {
                self.end_at = Some((at, End::Reauth));
            }
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
        self.kafka
            .metrics
            .disconnects
            .get_or_create(&ReasonLabel { reason: end.reason() })
            .inc();
    }

    fn jittered_retry(&self) -> u64 {
        frame::jittered_retry(self.timing.retry.as_millis() as u64, 0.5, rand::rng().random())
    }

    async fn serve(&mut self) -> End {
        let first = self.jittered_retry();
        if let Err(end) = self.out.send(frame::retry_frame(first)).await {
            return end;
        }
        loop {
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

    /// Entries and bytes of one ring read: a burst is at most what the connection may queue.
    fn batch_limits(&self) -> (usize, usize) {
        (BATCH, self.timing.max_queued_bytes)
    }

    fn count_resume(&mut self, source: &'static str, outcome: &'static str) {
        if std::mem::take(&mut self.resumed) {
            self.kafka
                .metrics
                .resumes
                .get_or_create(&ResumeLabel { source, outcome })
                .inc();
        }
    }

    /// Unkeyed: walk the ring from `seq`, then follow its head. `Ok` when the ring evicted
    /// what this subscriber still needed.
    async fn serve_memory(&mut self, mut next: u64) -> Result<(), End> {
        let feed = self.feed().clone();
        let mut head = feed.watch_head();
        // Whatever happened before (a catch-up from Kafka, a gap), alignment with the ring's
        // shared ids must be proven again, entry by entry.
        self.aligned = false;
        let mut batch = Vec::new();
        loop {
            head.borrow_and_update();
            batch.clear();
            if batch.capacity() > KEEP_FRAMES {
                // After a burst: idle connections must stay small.
                batch = Vec::new();
            }
            if feed.read(next, self.batch_limits(), &mut batch, None) == Err(Evicted) {
                return Ok(());
            }
            if let Some(last) = batch.last() {
                next = last.seq + 1;
                self.deliver_unkeyed(&batch).await?;
                continue;
            }
            let changed = async {
                if head.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            self.wait(changed).await?;
        }
    }

    async fn deliver_unkeyed(&mut self, batch: &[Arc<Entry>]) -> Result<(), End> {
        let mut frames = std::mem::take(&mut self.out.frames);
        let (mut newest, mut events) = (0, 0);
        for entry in batch {
            let p = entry.partition as usize;
            if entry.offset < self.position.offsets[p] {
                continue; // before the cursor: the client has it
            }
            self.position.set_next(p, entry.offset + 1);
            if !self.filter.wants_type(&entry.record_type) {
                self.dirty = true;
                continue;
            }
            if !self.aligned && self.position.encode().as_bytes() == entry.id() {
                self.aligned = true;
            }
            events += 1;
            if self.aligned {
                frames.push(entry.frame.clone());
            } else {
                frames.extend(entry.frame_with_id(&self.position));
            }
            self.dirty = false;
            if self.aligned {
                // Only live deliveries count towards latency; a replay's age is not latency.
                newest = newest.max(entry.timestamp_ms);
            }
        }
        self.flush(frames, events, newest).await
    }

    /// Key-filtered: walk memory from `seq` to the head, register in the key index, then take
    /// entries from the inbox. `Ok` when the ring or the inbox dropped something it needed.
    async fn serve_keyed(&mut self, mut next: u64) -> Result<(), End> {
        let feed = self.feed().clone();
        let inbox = Inbox::new(self.timing.inbox_events, self.timing.max_queued_bytes);
        let keys = self.filter.keys.clone();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            batch.clear();
            let registered = match feed.read(next, self.batch_limits(), &mut batch, Some((&keys, &inbox))) {
                Ok(registered) => registered,
                Err(Evicted) => return Ok(()),
            };
            if let Some(last) = batch.last() {
                next = last.seq + 1;
            }
            let delivered = self.deliver_keyed(&batch, false).await;
            if registered {
                let guard = Registration {
                    feed: feed.clone(),
                    keys: keys.clone(),
                    inbox: inbox.clone(),
                };
                delivered?;
                return self.follow_inbox(&inbox, guard).await;
            }
            delivered?;
        }
    }

    async fn follow_inbox(&mut self, inbox: &Arc<Inbox>, _registration: Registration) -> Result<(), End> {
        let feed = self.feed().clone();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let notified = inbox.notify.notified();
            // Head first, then the inbox: every entry before this head that wants one of our
            // keys has already been pushed, so after draining, the head is a position we hold.
            let (_, head) = feed.snapshot();
            batch.clear();
            let overflowed = inbox.drain(&mut batch).is_err();
            self.deliver_keyed(&batch, true).await?;
            if overflowed {
                return Ok(());
            }
            for &p in &self.needed {
                if head.offsets[p] > self.position.offsets[p] {
                    self.position.set_next(p, head.offsets[p]);
                    self.dirty = true;
                }
            }
            if batch.is_empty() {
                self.wait(notified).await?;
            }
        }
    }

    async fn deliver_keyed(&mut self, batch: &[Arc<Entry>], live: bool) -> Result<(), End> {
        let mut frames = std::mem::take(&mut self.out.frames);
        let (mut newest, mut events) = (0, 0);
        for entry in batch {
            let p = entry.partition as usize;
            if !self.needed.contains(&p) || entry.offset < self.position.offsets[p] {
                continue;
            }
            self.position.set_next(p, entry.offset + 1);
            if self.filter.wants_key(entry.key.as_deref()) && self.filter.wants_type(&entry.record_type) {
                frames.extend(entry.frame_with_id(&self.position));
                events += 1;
                self.dirty = false;
                if live {
                    newest = newest.max(entry.timestamp_ms);
                }
            } else {
                self.dirty = true;
            }
        }
        self.flush(frames, events, newest).await
    }

    /// Reads from Kafka the partitions whose position is older than memory, until memory
    /// covers them all (or the client stalls and gives its reader back).
    async fn catch_up(&mut self) -> Result<(), End> {
        let feed = self.feed().clone();
        let floor = feed.memory_floor();
        let behind: Vec<usize> = self
            .needed
            .iter()
            .copied()
            .filter(|&p| self.position.offsets[p] < floor[p])
            .collect();
        self.skip_lost(&feed, &behind).await?;
        let positions: Vec<(usize, i64)> = behind.iter().map(|&p| (p, self.position.offsets[p])).collect();
        let reader = tokio::select! {
            reader = self.kafka.catchup_reader(&feed.topic, &positions) => reader,
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

    /// Moves partitions whose position Kafka no longer holds to their low watermark, and tells
    /// the client with an `event: gap`.
    async fn skip_lost(&mut self, feed: &Feed, behind: &[usize]) -> Result<(), End> {
        let watermarks = match self.kafka.watermarks(&feed.topic, behind.iter().copied()).await {
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
        let data = serde_json::json!({ "stream": feed.stream, "partitions": lost }).to_string();
        let gap = frame::cursor_event_frame(&self.position, Some("gap"), &data).expect("valid gap frame");
        self.out.send(gap).await?;
        self.aligned = false;
        Ok(())
    }

    /// Reads records until memory covers `behind`. `Ok` also when the client stopped taking
    /// output and the reader was given back: the caller starts again from the position.
    async fn read_kafka(&mut self, feed: &Feed, reader: CatchUpReader, behind: &[usize]) -> Result<(), End> {
        let mut reader = Some(reader);
        let mut chunk = BytesMut::new();
        let mut ready: Vec<Bytes> = Vec::new();
        // The memory floor only moves forward; re-read it every few hundred records.
        let mut since_check = 0usize;
        while let Some(active) = &reader {
            if since_check == 0 && self.covered_by(&feed.memory_floor(), behind) {
                break;
            }
            match active.next(CATCHUP_POLL).await {
                Ok(Some(record)) => {
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

    /// Frames a record read from Kafka into `chunk`; a full chunk, or a frame as large as one
    /// (never copied into a chunk), goes to `ready`.
    fn frame_record(&mut self, record: &OwnedRecord, chunk: &mut BytesMut, ready: &mut Vec<Bytes>) {
        let p = record.partition as usize;
        if p >= self.position.offsets.len() || record.offset < self.position.offsets[p] {
            return;
        }
        self.position.set_next(p, record.offset + 1);
        let mapped = map_record(
            record.type_header.as_deref(),
            record.key.as_deref(),
            record.value.as_deref(),
        );
        if !self.filter.wants_key(record.key.as_deref()) || !self.filter.wants_type(&mapped.record_type) {
            self.dirty = true;
            return;
        }
        let framed = frame::cursor_event_frame(&self.position, Some(&mapped.event_type), &mapped.data)
            .unwrap_or_else(|_| frame::cursor_event_frame(&self.position, None, &mapped.data).expect("valid id"));
        self.dirty = false;
        self.kafka.metrics.events_sent.inc();
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
    async fn send_catchup(&mut self, ready: &mut Vec<Bytes>, reader: &mut Option<CatchUpReader>) -> Result<(), End> {
        if ready.is_empty() {
            return Ok(());
        }
        self.kafka
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
        self.kafka.metrics.events_sent.inc_by(events);
        self.kafka
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
            self.kafka
                .metrics
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
        let window = self.timing.drain_window.as_secs_f64();
        let delay = Duration::from_secs_f64(rand::rng().random_range(0.0..=window.max(0.0)));
        let at = Instant::now() + delay;
        if self.end_at.is_none_or(|(t, _)| at < t) {
            self.end_at = Some((at, End::Drain));
        }
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

/// The last frame of a stream whose token is expiring: its id is the position, so the client
/// resumes exactly there with a fresh token.
fn reauth_frame(position: &Cursor) -> Bytes {
    frame::cursor_event_frame(position, Some("sluice.reauth"), r#"{"reason":"token_expiring"}"#)
        .expect("a fixed single-line type and data")
}

/// Removes an inbox from the key index when the subscriber leaves the inbox phase.
struct Registration {
    feed: Arc<Feed>,
    keys: Vec<Bytes>,
    inbox: Arc<Inbox>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.feed.unregister(&self.keys, &self.inbox);
    }
}
