//! The queue between a connection's task and its HTTP body: frames go in as the shared
//! [`Bytes`] the ring holds (no copy, no allocation per send), and come out to actix's
//! dispatcher, which copies them into its write buffer and writes it with one syscall: a single
//! frame as it is, everything queued since the last take joined into one chunk.
//!
//! Why not a `tokio::sync::mpsc`: an mpsc channel allocates a block of 32 slots (≈1.5 KiB) per
//! connection up front. Here an idle connection holds a mutex, two wakers and a small
//! `VecDeque`.
//!
//! The bound is in bytes: a send waits while [`BodyTx`]'s queue holds `limit` bytes or more,
//! then queues the whole burst (a queue holds at most `limit` plus one burst, and a burst is at
//! most one ring read). Both ends live on the same actix worker thread, so the mutex is
//! uncontended; it is there because the types must be `Send`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

/// Frames of queue space kept between bursts; a larger buffer is freed once taken.
const KEEP_CAPACITY: usize = 16;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
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

/// A body queue holding up to `limit` bytes (plus one burst).
pub fn channel(limit: usize) -> (BodyTx, BodyRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        limit: limit.max(1),
    });
    (
        BodyTx { shared: shared.clone() },
        BodyRx {
            shared,
            taken: VecDeque::new(),
        },
    )
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
    /// Queues `frames` if there is room now. `Ok(false)`: the queue is full, nothing was queued.
    pub fn try_send(&self, frames: &mut Vec<Bytes>) -> Result<bool, Closed> {
        let mut state = self.shared.lock();
        if state.rx_gone {
            return Err(Closed);
        }
        if state.queued_bytes >= self.shared.limit {
            return Ok(false);
        }
        state.queued_bytes += frames.iter().map(Bytes::len).sum::<usize>();
        state.queue.extend(frames.drain(..));
        if let Some(waker) = state.rx_waker.take() {
            drop(state);
            waker.wake();
        }
        Ok(true)
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

    /// Queues `frames`, waiting for room as long as it takes.
    pub async fn send(&self, frames: &mut Vec<Bytes>) -> Result<(), Closed> {
        loop {
            if self.try_send(frames)? {
                return Ok(());
            }
            std::future::poll_fn(|cx| self.poll_room(cx)).await?;
        }
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

/// The HTTP body's end: a stream of frames that ends when the sender is dropped.
#[derive(Debug)]
pub struct BodyRx {
    shared: Arc<Shared>,
    /// Frames taken from the shared queue in one go, handed out one by one.
    taken: VecDeque<Bytes>,
}

impl BodyRx {
    /// The next chunk: with `join`, everything queued joined into one; without, one frame.
    /// `None` once the sender is gone and everything was taken.
    fn poll_chunk(&mut self, cx: &mut Context<'_>, join: bool) -> Poll<Option<Bytes>> {
        if let Some(frame) = self.taken.pop_front() {
            return Poll::Ready(Some(frame));
        }
        let mut state = self.shared.lock();
        if state.queue.is_empty() {
            if state.tx_gone {
                return Poll::Ready(None);
            }
            set_waker(&mut state.rx_waker, cx);
            return Poll::Pending;
        }
        // Swap rather than move frame by frame: one lock per burst, and the two buffers are
        // reused in turn.
        std::mem::swap(&mut self.taken, &mut state.queue);
        state.queued_bytes = 0;
        if state.queue.capacity() > KEEP_CAPACITY {
            // After a burst: idle connections must stay small.
            state.queue = VecDeque::new();
        }
        let wake = if std::mem::take(&mut state.tx_wants_room) {
            state.tx_waker.take()
        } else {
            None
        };
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
        if self.taken.len() == 1 || !join {
            return Poll::Ready(self.taken.pop_front());
        }
        // A burst becomes one chunk: actix frames every chunk of a chunked body (a hex length
        // formatted, two CRLFs), which costs more than copying the frames once, and the client
        // parses fewer bytes.
        let mut joined = BytesMut::with_capacity(self.taken.iter().map(Bytes::len).sum());
        for frame in self.taken.drain(..) {
            joined.extend_from_slice(&frame);
        }
        Poll::Ready(Some(joined.freeze()))
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
}
