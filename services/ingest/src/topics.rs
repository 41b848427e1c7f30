//! Does a stream's topic exist? Asked once, then remembered for a while.
//!
//! Without this check a record for a missing topic waits in librdkafka until the delivery
//! timeout and the client gets a 503 for what is really a 404. Existence is cached (positive
//! answers for a minute, negative ones for a few seconds, so a newly created topic shows up
//! quickly); a Kafka that does not answer is never cached.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use sluice_kafka::{KafkaError, Producer};

use crate::error::IngestError;

const KNOWN_TTL: Duration = Duration::from_secs(60);
const MISSING_TTL: Duration = Duration::from_secs(5);

/// Cache of topic existence.
#[derive(Debug)]
pub struct TopicCache {
    producer: Producer,
    timeout: Duration,
    entries: RwLock<HashMap<String, (Instant, bool)>>,
}

impl TopicCache {
    pub fn new(producer: Producer, timeout: Duration) -> Self {
        Self {
            producer,
            timeout,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// `Ok` when `topic` exists; 404 when it does not; 503 when Kafka does not answer.
    pub async fn ensure_exists(&self, stream: &str, topic: &str) -> Result<(), IngestError> {
        let cached = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .copied();
        let exists = match cached {
            Some((at, true)) if at.elapsed() < KNOWN_TTL => true,
            Some((at, false)) if at.elapsed() < MISSING_TTL => false,
            _ => {
                let exists = match self.producer.partition_count(topic, self.timeout).await {
                    Ok(_) => true,
                    Err(KafkaError::UnknownTopic(_)) => false,
                    Err(err) => return Err(IngestError::KafkaUnavailable(err)),
                };
                self.entries
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(topic.to_owned(), (Instant::now(), exists));
                exists
            }
        };
        if exists {
            Ok(())
        } else {
            Err(IngestError::UnknownStream(format!(
                "there is no stream {stream:?} (Kafka has no topic {topic:?})"
            )))
        }
    }
}
