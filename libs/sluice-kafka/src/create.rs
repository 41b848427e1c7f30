//! Creating topics on purpose: the only way a stream's topic comes to exist through Sluice.
//!
//! Every client has `allow.auto.create.topics=false` (see [`crate::config`]), so asking about a
//! topic never creates it. Ingest creates a missing stream's topic only when the operator turned
//! on `--auto-create-streams`, through a [`TopicCreator`]: Kafka's CreateTopics
//! ([`AdminTopicCreator`]) against a real cluster, or the embedded broker's own call
//! ([`crate::embedded::EmbeddedBroker::topic_creator`]), since librdkafka's mock cluster cannot
//! answer CreateTopics.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaArgs, KafkaError};

/// A boxed future, so creators can be chosen at run time (`Arc<dyn TopicCreator>`).
pub type CreateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), KafkaError>> + Send + 'a>>;

/// Creates topics. A topic that already exists (someone else created it first) is success.
pub trait TopicCreator: std::fmt::Debug + Send + Sync {
    fn create_topic<'a>(&'a self, topic: &'a str, partitions: i32) -> CreateFuture<'a>;
}

/// CreateTopics through Kafka's admin API, with the broker's default replication factor.
pub struct AdminTopicCreator {
    admin: AdminClient<DefaultClientContext>,
    timeout: Duration,
}

impl std::fmt::Debug for AdminTopicCreator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTopicCreator")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AdminTopicCreator {
    pub fn new(args: &KafkaArgs, timeout: Duration) -> Result<Self, KafkaError> {
        let admin = args.client_config()?.create().map_err(KafkaError::ClientConfig)?;
        Ok(Self { admin, timeout })
    }
}

impl TopicCreator for AdminTopicCreator {
    fn create_topic<'a>(&'a self, topic: &'a str, partitions: i32) -> CreateFuture<'a> {
        Box::pin(async move {
            // -1: the broker's `default.replication.factor` (KIP-464).
            let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
            let options = AdminOptions::new().operation_timeout(Some(self.timeout));
            let results = self
                .admin
                .create_topics([&new], &options)
                .await
                .map_err(KafkaError::Kafka)?;
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => {
                        return Err(KafkaError::Kafka(rdkafka::error::KafkaError::AdminOp(code)));
                    }
                }
            }
            Ok(())
        })
    }
}
