//! The streams this pod serves: one [`Feed`] per stream, started by its first subscriber and
//! stopped after it has been idle for a while. Every feed reads through the pod's one
//! [`RecordSource`].

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::OnceCell;

use crate::feed::{Feed, FeedLimits};
use crate::kafka::RecordSource;
use crate::runtime::Runtime;
use crate::GatewayError;

#[derive(Debug, Default)]
struct Slot {
    feed: OnceCell<Arc<Feed>>,
}

/// A subscriber's hold on a feed; the feed counts it until dropped.
#[derive(Debug)]
pub struct FeedLease {
    pub feed: Arc<Feed>,
}

impl Drop for FeedLease {
    fn drop(&mut self) {
        self.feed.remove_subscriber();
    }
}

/// Feeds by stream name.
#[derive(Debug)]
pub struct Hub {
    slots: DashMap<String, Arc<Slot>>,
    source: Arc<dyn RecordSource>,
    runtime: Arc<Runtime>,
    limits: FeedLimits,
}

impl Hub {
    pub fn new(source: Arc<dyn RecordSource>, runtime: Arc<Runtime>, limits: FeedLimits) -> Self {
        Self {
            slots: DashMap::new(),
            source,
            runtime,
            limits,
        }
    }

    pub fn source(&self) -> &Arc<dyn RecordSource> {
        &self.source
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The feed of `stream`, started if needed (concurrent first subscribers share one start).
    pub async fn subscribe(&self, stream: &str, topic: &str) -> Result<FeedLease, GatewayError> {
        loop {
            let slot = self.slots.entry(stream.to_owned()).or_default().clone();
            let started = slot
                .feed
                .get_or_try_init(|| Feed::start(&self.source, &self.runtime, (stream, topic), self.limits))
                .await;
            let feed = match started {
                Ok(feed) => feed.clone(),
                Err(err) => {
                    self.slots
                        .remove_if(stream, |_, s| Arc::ptr_eq(s, &slot) && s.feed.get().is_none());
                    return Err(err);
                }
            };
            // Count the subscriber while holding the map's shard lock, so the reaper (which
            // removes under the same lock) never stops a feed someone just joined.
            if let Some(current) = self.slots.get(stream) {
                if Arc::ptr_eq(&current, &slot) && !feed.stop.is_cancelled() {
                    feed.add_subscriber();
                    return Ok(FeedLease { feed });
                }
            }
            // A stopped feed (reaped) gives way to a new one.
            self.slots
                .remove_if(stream, |_, s| Arc::ptr_eq(s, &slot) && feed.stop.is_cancelled());
        }
    }

    /// Stops feeds that have had no subscriber for `idle`.
    pub fn reap_idle(&self, idle: Duration) {
        let mut stopped = Vec::new();
        self.slots.retain(|stream, slot| match slot.feed.get() {
            Some(feed) if feed.idle_for().is_some_and(|t| t >= idle) => {
                feed.close();
                stopped.push(stream.clone());
                false
            }
            _ => true,
        });
        for stream in stopped {
            tracing::info!(stream, "feed stopped after being idle");
        }
    }

    /// Stops every feed (shutdown).
    pub fn stop_all(&self) {
        for slot in self.slots.iter() {
            if let Some(feed) = slot.feed.get() {
                feed.close();
            }
        }
        self.slots.clear();
    }
}
