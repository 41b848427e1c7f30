//! What the ingest service tests share: starting `sluice-ingest` in-process on port 0 against
//! the test kit's Kafka, and a fixture holding both with an HTTP client. Each test file adds the
//! requests of its own concern to `Fixture` in its own `impl` block.

// Each test binary compiles this module and uses only part of it; the rest is not dead.
#![allow(dead_code)]

use std::time::Duration;

use sluice_ingest::IngestConfig;
use sluice_testkit::{RunningService, TestKafka};

pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts ingest against `kafka` with two workers and `tweak` applied, and waits until ready.
pub async fn start_ingest(kafka: &TestKafka, tweak: impl FnOnce(&mut IngestConfig)) -> RunningService {
    let mut config = IngestConfig::for_brokers(kafka.bootstrap_servers());
    config.workers = 2;
    tweak(&mut config);
    let ingest =
        RunningService::start(move |listener, admin, shutdown| sluice_ingest::run(config, listener, admin, shutdown));
    ingest.wait_ready(READY_TIMEOUT).await.expect("ingest ready");
    ingest
}

pub struct Fixture {
    pub kafka: TestKafka,
    pub ingest: RunningService,
    pub http: reqwest::Client,
}

impl Fixture {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut IngestConfig)) -> Self {
        let kafka = TestKafka::start().await.expect("Kafka for tests");
        let ingest = start_ingest(&kafka, tweak).await;
        Self {
            kafka,
            ingest,
            http: reqwest::Client::new(),
        }
    }

    pub async fn topic(&self, partitions: i32) -> String {
        self.topic_with_prefix("ingest", partitions).await
    }

    /// A new topic named `{prefix}-…`: grants in some tests match topics by that prefix.
    pub async fn topic_with_prefix(&self, prefix: &str, partitions: i32) -> String {
        let topic = self.kafka.unique_topic(prefix);
        self.kafka.create_topic(&topic, partitions).await.expect("create topic");
        topic
    }

    pub async fn stop(self) {
        self.ingest.stop(Duration::from_secs(30)).await.expect("clean stop");
    }
}
