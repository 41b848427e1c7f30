//! What the gateway's parts share while it runs, apart from its static configuration: metrics,
//! the drain signal, the catch-up reader slots and the task trackers shutdown awaits. Built once
//! by the server and handed to the feeds and subscribers that need it; engine tests build one
//! with [`Runtime::new`] and no Kafka at all.

use std::future::Future;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::GatewayMetrics;

/// Shared run-time state of one gateway.
#[derive(Debug)]
pub struct Runtime {
    pub metrics: GatewayMetrics,
    /// Fired when the gateway starts draining: every connection ends within the drain window.
    pub drain: CancellationToken,
    /// Catch-up readers are few per pod, so a reconnect storm cannot become a broker storm.
    pub catchup: Arc<Semaphore>,
    /// Connections (subscriber tasks): the drain waits for them.
    pub connections: TaskTracker,
    /// Feeds and the live consumer: stopped and awaited after the connections.
    pub background: TaskTracker,
    /// The runtime feeds run on (the process's main runtime, not an HTTP worker's).
    handle: tokio::runtime::Handle,
}

impl Runtime {
    /// A runtime on the current tokio runtime.
    pub fn new(metrics: GatewayMetrics, max_catchup_readers: usize) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            drain: CancellationToken::new(),
            catchup: Arc::new(Semaphore::new(max_catchup_readers.max(1))),
            connections: TaskTracker::new(),
            background: TaskTracker::new(),
            handle: tokio::runtime::Handle::current(),
        })
    }

    /// A runtime whose metrics go to a registry of its own (tests).
    pub fn unregistered(max_catchup_readers: usize) -> Arc<Self> {
        Self::new(GatewayMetrics::register(&mut Registry::default()), max_catchup_readers)
    }

    /// Spawns a background task (a feed's) on the main runtime, tracked.
    pub fn spawn_background<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(self.background.track_future(task));
    }

    /// Spawns a connection's task on the current runtime (an HTTP worker's), tracked.
    pub fn spawn_connection<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(self.connections.track_future(task));
    }
}
