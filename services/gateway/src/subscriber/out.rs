//! The sending half of a connection's body: a small queue bounded in bytes ([`crate::body`]),
//! and the write timeout that shuts down a socket which stays unwritable.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{End, KEEP_FRAMES};
use crate::body::{self, BodyRx, BodyTx, Closed};

/// The sending half of a connection's body.
#[derive(Debug)]
pub struct Out {
    pub(crate) tx: BodyTx,
    socket: Option<std::os::fd::RawFd>,
    write_timeout: Duration,
    pub(crate) last_sent: Instant,
    /// Frames of the burst being delivered, reused from wake to wake.
    pub(super) frames: Vec<Bytes>,
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

    pub(crate) async fn send(&mut self, bytes: Bytes) -> Result<(), End> {
        let mut frames = std::mem::take(&mut self.frames);
        frames.push(bytes);
        let sent = self.send_frames(&mut frames).await;
        self.frames = frames;
        sent
    }

    /// Queues `frames` (emptying it), waiting for room until the socket has accepted nothing
    /// for the write timeout.
    pub(crate) async fn send_frames(&mut self, frames: &mut Vec<Bytes>) -> Result<(), End> {
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
    pub(super) async fn send_within(&mut self, frames: &mut Vec<Bytes>, grace: Duration) -> Result<bool, End> {
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
