//! Does a stream's topic exist? And, with `--auto-create-streams`, making it exist.
//!
//! Without this check a record for a missing topic waits in librdkafka until the delivery
//! timeout and the client gets a 503 for what is really a 404. Existence comes from a
//! [`TopicDirectory`]: Kafka's list of topics, cached, so a flood of unknown names costs at most
//! one listing every few seconds and no memory per name; a Kafka that does not answer is a 503.
//!
//! A missing topic is created only when the operator asked for it (`--auto-create-streams`), and
//! only for names the stream catalog already allowed; nothing else here creates topics, and no
//! Kafka client of Sluice creates one by asking about it.

use std::sync::Arc;

use sluice_kafka::{TopicCreator, TopicDirectory};

use crate::error::IngestError;

/// How missing topics are handled.
#[derive(Debug)]
pub struct AutoCreate {
    pub creator: Arc<dyn TopicCreator>,
    pub partitions: i32,
}

/// Topic existence, and creation when allowed.
#[derive(Debug)]
pub struct TopicCache {
    directory: TopicDirectory,
    auto_create: Option<AutoCreate>,
}

impl TopicCache {
    pub fn new(directory: TopicDirectory, auto_create: Option<AutoCreate>) -> Self {
        Self { directory, auto_create }
    }

    /// `Ok` when `topic` exists (or was just created); 404 when it does not; 503 when Kafka does
    /// not answer.
    pub async fn ensure_exists(&self, stream: &str, topic: &str) -> Result<(), IngestError> {
        if self
            .directory
            .exists(topic)
            .await
            .map_err(IngestError::KafkaUnavailable)?
        {
            return Ok(());
        }
        let Some(auto) = &self.auto_create else {
            return Err(IngestError::UnknownStream(format!(
                "there is no stream {stream:?} (Kafka has no topic {topic:?})"
            )));
        };
        auto.creator
            .create_topic(topic, auto.partitions)
            .await
            .map_err(IngestError::KafkaUnavailable)?;
        tracing::info!(
            stream,
            topic,
            partitions = auto.partitions,
            "created the stream's topic"
        );
        self.directory.insert(topic);
        Ok(())
    }
}
