//! The queue between a connection's task and its HTTP body: frames go in as the shared
//! [`Bytes`] the ring holds (no copy, no allocation per send), and come out to actix's
//! dispatcher in chunks of at most [`CHUNK_BYTES`]: small frames joined (one chunk costs actix a
//! hex length and two CRLFs, more than copying a few small frames), a large frame handed out in
//! zero-copy slices. actix copies every chunk into its write buffer and stops pulling once that
//! holds 32 KiB, so what a connection costs beyond this queue is at most 32 KiB plus one chunk,
//! whatever the event size.
//!
//! Why not a `tokio::sync::mpsc`: an mpsc channel allocates a block of 32 slots (≈1.5 KiB) per
//! connection up front. Here an idle connection holds a mutex, two wakers and a small
//! `VecDeque`.
//!
//! The bound is in bytes: frames are queued one by one while the queue holds less than `limit`
//! bytes, so it never holds more than `limit` plus one frame. The queue also knows since when
//! it has held bytes the body did not take ([`BodyTx::stalled_since`]): that is when the socket
//! stopped accepting data, and the write timeout counts from there. Both ends live on the same
//! actix worker thread, so the mutex is uncontended; it is there because the types must be
//! `Send`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

/// Largest chunk handed to actix: what a stalled connection can hold in actix's write buffer
/// beyond its 32 KiB.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Frames of queue space kept; a larger buffer, left by a burst, is freed once empty.
const KEEP_CAPACITY: usize = 16;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    /// Since when the queue has held bytes the receiver has not taken.
    stalled_since: Option<Instant>,
    /// The receiver's waker, when it found the queue empty.
    rx_waker: Option<Waker>,
    /// The sender's waker, when it waits for room or for the receiver to go.
    tx_waker: Option<Waker>,
    /// The sender waits for room: only then does taking frames wake it.
    tx_wants_room: bool,
    rx_gone: bool,
    tx_gone: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A body queue holding up to `limit` bytes (plus one frame).
pub fn channel(limit: usize) -> (BodyTx, BodyRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        limit: limit.max(1),
    });
    (BodyTx { shared: shared.clone() }, BodyRx { shared })
}

/// The receiver went away: the client is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The connection task's end.
#[derive(Debug)]
pub struct BodyTx {
    shared: Arc<Shared>,
}

impl BodyTx {
    /// Moves frames from the front of `frames` into the queue while it has room. `Ok(true)`:
    /// all went in; `Ok(false)`: the queue is full and the rest is still in `frames`.
    pub fn try_send(&self, frames: &mut Vec<Bytes>) -> Result<bool, Closed> {
        let mut state = self.shared.lock();
        if state.rx_gone {
            return Err(Closed);
        }
        let was_empty = state.queue.is_empty();
        let mut moved = 0;
        for frame in frames.iter() {
            if state.queued_bytes >= self.shared.limit {
                break;
            }
            state.queued_bytes += frame.len();
            state.queue.push_back(frame.clone());
            moved += 1;
        }
        frames.drain(..moved);
        if moved > 0 && was_empty {
            state.stalled_since = Some(Instant::now());
        }
        let waker = if moved > 0 { state.rx_waker.take() } else { None };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(frames.is_empty())
    }

    /// Waits until the queue has room (`Ok`) or the receiver is gone.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<(), Closed>> {
        let mut state = self.shared.lock();
        if state.rx_gone {
            return Poll::Ready(Err(Closed));
        }
        if state.queued_bytes < self.shared.limit {
            state.tx_wants_room = false;
            return Poll::Ready(Ok(()));
        }
        state.tx_wants_room = true;
        set_waker(&mut state.tx_waker, cx);
        Poll::Pending
    }

    /// Queues all of `frames`, waiting for room as long as it takes.
    pub async fn send(&self, frames: &mut Vec<Bytes>) -> Result<(), Closed> {
        loop {
            if self.try_send(frames)? {
                return Ok(());
            }
            std::future::poll_fn(|cx| self.poll_room(cx)).await?;
        }
    }

    /// Since when queued bytes have waited for the body to take them; `None` when nothing waits.
    pub fn stalled_since(&self) -> Option<Instant> {
        self.shared.lock().stalled_since
    }

    /// Bytes queued and not yet taken by the body.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().queued_bytes
    }

    /// Resolves once the receiver is gone.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.shared.lock();
        if state.rx_gone {
            return Poll::Ready(());
        }
        set_waker(&mut state.tx_waker, cx);
        Poll::Pending
    }

    /// Resolves once the receiver is gone.
    pub async fn closed(&self) {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().rx_gone
    }
}

impl Drop for BodyTx {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.tx_gone = true;
        if let Some(waker) = state.rx_waker.take() {
            drop(state);
            waker.wake();
        }
    }
}

/// The HTTP body's end: a stream of chunks that ends when the sender is dropped.
#[derive(Debug)]
pub struct BodyRx {
    shared: Arc<Shared>,
}

impl BodyRx {
    /// The next chunk: with `join`, at most [`CHUNK_BYTES`] (small frames joined, a large one
    /// sliced); without, one whole frame. `None` once the sender is gone and everything was
    /// taken.
    fn poll_chunk(&mut self, cx: &mut Context<'_>, join: bool) -> Poll<Option<Bytes>> {
        let mut state = self.shared.lock();
        let Some(mut first) = state.queue.pop_front() else {
            if state.tx_gone {
                return Poll::Ready(None);
            }
            set_waker(&mut state.rx_waker, cx);
            return Poll::Pending;
        };
        let chunk = if !join {
            first
        } else if first.len() > CHUNK_BYTES {
            // Bytes::split_to shares the buffer: a large frame leaves in slices, never copied.
            let head = first.split_to(CHUNK_BYTES);
            state.queue.push_front(first);
            head
        } else if state
            .queue
            .front()
            .is_some_and(|next| first.len() + next.len() <= CHUNK_BYTES)
        {
            let mut joined = BytesMut::with_capacity(CHUNK_BYTES);
            joined.extend_from_slice(&first);
            while let Some(next) = state.queue.front() {
                if joined.len() + next.len() > CHUNK_BYTES {
                    break;
                }
                joined.extend_from_slice(next);
                state.queue.pop_front();
            }
            joined.freeze()
        } else {
            first
        };
        state.queued_bytes -= chunk.len();
        state.stalled_since = if state.queue.is_empty() {
            if state.queue.capacity() > KEEP_CAPACITY {
                // After a burst: idle connections must stay small.
                state.queue = VecDeque::new();
            }
            None
        } else {
            Some(Instant::now())
        };
        let wake = if state.tx_wants_room && state.queued_bytes < self.shared.limit {
            state.tx_wants_room = false;
            state.tx_waker.take()
        } else {
            None
        };
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
        Poll::Ready(Some(chunk))
    }

    /// [`Self::recv`] as a poll, for a reader of several bodies.
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.poll_chunk(cx, false)
    }

    /// Bytes queued and not yet taken.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().queued_bytes
    }

    /// The next frame, one at a time (tests read bodies this way).
    pub async fn recv(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_chunk(cx, false)).await
    }
}

impl futures::Stream for BodyRx {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx, true).map(|chunk| chunk.map(Ok))
    }
}

impl Drop for BodyRx {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.rx_gone = true;
        state.queue.clear();
        state.queued_bytes = 0;
        if let Some(waker) = state.tx_waker.take() {
            drop(state);
            waker.wake();
        }
    }
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&'static str]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::from_static(p.as_bytes())).collect()
    }

    #[tokio::test]
    async fn frames_come_out_in_order_then_the_body_ends() {
        let (tx, mut rx) = channel(1024);
        tx.send(&mut frames(&["a", "b"])).await.unwrap();
        tx.send(&mut frames(&["c"])).await.unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(f) = rx.recv().await {
            got.push(f);
        }
        assert_eq!(got, frames(&["a", "b", "c"]));
    }

    #[tokio::test]
    async fn the_http_body_joins_what_was_queued_into_one_chunk() {
        use futures::StreamExt as _;
        let (tx, mut rx) = channel(1024);
        tx.send(&mut frames(&["a", "b"])).await.unwrap();
        tx.send(&mut frames(&["c"])).await.unwrap();
        assert_eq!(rx.next().await.unwrap().unwrap(), Bytes::from_static(b"abc"));
        tx.send(&mut frames(&["d"])).await.unwrap();
        drop(tx);
        assert_eq!(rx.next().await.unwrap().unwrap(), Bytes::from_static(b"d"));
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_until_the_body_takes_frames() {
        let (tx, mut rx) = channel(2);
        assert_eq!(
            tx.try_send(&mut frames(&["abc"])),
            Ok(true),
            "room: the burst goes in whole"
        );
        assert_eq!(tx.try_send(&mut frames(&["d"])), Ok(false), "3 bytes ≥ limit 2");
        assert_eq!(rx.recv().await.as_deref(), Some(&b"abc"[..]));
        assert_eq!(tx.try_send(&mut frames(&["d"])), Ok(true));
    }

    #[tokio::test]
    async fn a_waiting_sender_is_woken_by_room_and_by_the_body_going() {
        let (tx, mut rx) = channel(1);
        tx.send(&mut frames(&["x"])).await.unwrap();
        let waiting = tokio::spawn(async move {
            let first = tx.send(&mut frames(&["y"])).await;
            let second = tx.send(&mut frames(&["z"])).await;
            (first, second, tx)
        });
        tokio::task::yield_now().await;
        assert_eq!(rx.recv().await.as_deref(), Some(&b"x"[..]));
        assert_eq!(rx.recv().await.as_deref(), Some(&b"y"[..]));
        drop(rx);
        let (first, second, tx) = waiting.await.unwrap();
        assert_eq!(first, Ok(()));
        // "z" went in before or after the receiver left; either way the sender learns it is gone.
        let _ = second;
        assert!(tx.is_closed());
        tx.closed().await;
    }

    #[tokio::test]
    async fn a_burst_goes_in_only_up_to_the_bound() {
        let (tx, _rx) = channel(10);
        let mut burst = frames(&["aaaa", "bbbb", "cccc", "dddd"]);
        assert_eq!(tx.try_send(&mut burst), Ok(false));
        assert_eq!(tx.queued_bytes(), 12, "frames go in while under the bound: 0, 4, 8");
        assert_eq!(burst, frames(&["dddd"]), "the rest stays with the sender");
    }

    #[tokio::test]
    async fn a_large_frame_leaves_in_slices_of_the_shared_buffer() {
        use futures::StreamExt as _;
        let (tx, mut rx) = channel(1);
        let big = Bytes::from(vec![7u8; 3 * CHUNK_BYTES + 5]);
        let range = big.as_ptr() as usize..big.as_ptr() as usize + big.len();
        tx.send(&mut vec![big.clone()]).await.unwrap();
        drop(tx);
        let mut sizes = Vec::new();
        while let Some(chunk) = rx.next().await {
            let chunk = chunk.unwrap();
            assert!(range.contains(&(chunk.as_ptr() as usize)), "a slice, not a copy");
            sizes.push(chunk.len());
        }
        assert_eq!(sizes, vec![CHUNK_BYTES, CHUNK_BYTES, CHUNK_BYTES, 5]);
    }

    #[tokio::test]
    async fn joined_chunks_stay_within_the_chunk_size() {
        use futures::StreamExt as _;
        let (tx, mut rx) = channel(usize::MAX);
        let small = Bytes::from(vec![1u8; CHUNK_BYTES / 4 + 1]);
        tx.send(&mut vec![small.clone(); 8]).await.unwrap();
        drop(tx);
        let mut total = 0;
        while let Some(chunk) = rx.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= CHUNK_BYTES);
            total += chunk.len();
        }
        assert_eq!(total, 8 * small.len());
    }

    #[tokio::test]
    async fn the_queue_knows_since_when_the_body_has_not_taken_its_bytes() {
        let (tx, mut rx) = channel(1024);
        assert_eq!(tx.stalled_since(), None);
        tx.send(&mut frames(&["a"])).await.unwrap();
        let since = tx.stalled_since().expect("bytes wait");
        tx.send(&mut frames(&["b"])).await.unwrap();
        assert_eq!(tx.stalled_since(), Some(since), "more bytes do not restart the clock");
        rx.recv().await.unwrap();
        assert!(tx.stalled_since().is_some_and(|t| t >= since), "taking restarts it");
        rx.recv().await.unwrap();
        assert_eq!(tx.stalled_since(), None);
    }
}
