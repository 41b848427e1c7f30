//! A subscriber served from memory: unkeyed subscribers walk the stream's ring and follow its
//! head, sending the ring's shared frames once their position is aligned with its ids;
//! key-filtered ones walk memory up to the head, then register an inbox in the key index and
//! take only their keys' entries.

use std::sync::Arc;

use bytes::Bytes;

use super::{End, Subscriber, BATCH, KEEP_FRAMES};
use crate::feed::{Feed, Inbox};
use crate::ring::{Entry, Evicted};

impl Subscriber {
    /// Unkeyed: walk the ring from `next`, then follow its head. `Ok` when the ring no longer
    /// holds what this subscriber needs (evicted, or trimmed by retention).
    pub(super) async fn serve_memory(&mut self, mut next: u64) -> Result<(), End> {
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
            let at = (next, &self.position.offsets[..], &self.needed[..]);
            if feed.read(at, self.batch_limits(), &mut batch, None) == Err(Evicted) {
                return Ok(());
            }
            if let Some(last) = batch.last() {
                next = last.seq + 1;
                self.deliver_unkeyed(&batch).await?;
                self.announce_caught_up().await?;
                continue;
            }
            if self.catching_up() {
                // At the head: every record below it has been seen, so the position may move
                // past record-less offsets the ring's head already moved past.
                if let Some(head) = feed.head_at(next) {
                    self.adopt(&head);
                }
                self.announce_caught_up().await?;
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
            let Some(p) = self.take_in(entry) else { continue };
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
            if let Some(tap) = &self.tap {
                tap.record(entry.partition, entry.offset, entry.timestamp_ms, entry.key.as_ref());
            }
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
    pub(super) async fn serve_keyed(&mut self, mut next: u64) -> Result<(), End> {
        let feed = self.feed().clone();
        let inbox = Inbox::new(self.timing.inbox_events, self.timing.max_queued_bytes);
        let keys = self.filter.keys.clone();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            batch.clear();
            let at = (next, &self.position.offsets[..], &self.needed[..]);
            let registered = match feed.read(at, self.batch_limits(), &mut batch, Some((&keys, &inbox))) {
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
            self.announce_caught_up().await?;
            if batch.is_empty() {
                self.wait(notified).await?;
            }
        }
    }

    /// Moves the position to `head` in the partitions this subscriber reads, where that is ahead.
    fn adopt(&mut self, head: &sluice_sse::Cursor) {
        for &p in &self.needed {
            if let (Some(&next), Some(&at)) = (head.offsets.get(p), self.position.offsets.get(p)) {
                if next > at {
                    self.position.set_next(p, next);
                }
            }
        }
    }

    /// Before an entry is looked at: a partition the topic gained joins the position, and the
    /// head's moves past record-less offsets that this entry carries apply to the position
    /// (the subscriber has seen every record before them). Returns the entry's partition, if
    /// the position has it.
    fn take_in(&mut self, entry: &Entry) -> Option<usize> {
        let p = entry.partition as usize;
        if p >= self.partitions {
            self.follow_partitions();
        }
        for &(q, next) in entry.advances.iter().flat_map(|a| a.iter()) {
            let q = q as usize;
            if self.needed.contains(&q) && self.position.offsets.get(q).is_some_and(|&at| next > at) {
                self.position.set_next(q, next);
            }
        }
        (p < self.position.offsets.len()).then_some(p)
    }

    async fn deliver_keyed(&mut self, batch: &[Arc<Entry>], live: bool) -> Result<(), End> {
        let mut frames = std::mem::take(&mut self.out.frames);
        let (mut newest, mut events) = (0, 0);
        for entry in batch {
            let Some(p) = self.take_in(entry) else { continue };
            if !self.needed.contains(&p) || entry.offset < self.position.offsets[p] {
                continue;
            }
            self.position.set_next(p, entry.offset + 1);
            if self.filter.wants_key(entry.key.as_deref()) && self.filter.wants_type(&entry.record_type) {
                if let Some(tap) = &self.tap {
                    tap.record(entry.partition, entry.offset, entry.timestamp_ms, entry.key.as_ref());
                }
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
