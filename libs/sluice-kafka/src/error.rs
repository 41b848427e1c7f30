use std::time::Duration;

/// Everything the Kafka adapter can fail with.
///
/// Produce failures are split by what a caller can tell its own client: whether retrying later
/// can help ([`KafkaError::is_transient`]) or the request itself was wrong.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A Kafka setting is not `key=value`, names a property Sluice fixes itself, or cannot be
    /// read. `entry` says where it came from (a flag or `file:line`) and its key, never its value.
    #[error("{entry}: {reason}")]
    InvalidConfig { entry: String, reason: String },

    /// librdkafka refused the configuration (unknown property, bad value).
    #[error("Kafka client configuration rejected: {0}")]
    ClientConfig(#[source] rdkafka::error::KafkaError),

    /// The local producer queue is full: Kafka is slower than the incoming rate.
    #[error("the producer queue is full")]
    QueueFull,

    /// Kafka did not acknowledge the record within the delivery timeout.
    #[error("Kafka did not acknowledge the record within {0:?}")]
    Timeout(Duration),

    /// The record is larger than the producer or the broker accepts.
    #[error("the record is too large for Kafka: {0}")]
    RecordTooLarge(#[source] rdkafka::error::KafkaError),

    /// The topic does not exist (and the broker does not create it).
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),

    /// Any other librdkafka failure, with its source.
    #[error("Kafka error: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),

    /// A blocking metadata call could not be run.
    #[error("Kafka metadata task failed: {0}")]
    Task(String),
}

impl KafkaError {
    /// True when the error is the operator's configuration (exit code 64), not the cluster.
    pub fn is_config(&self) -> bool {
        matches!(self, KafkaError::InvalidConfig { .. } | KafkaError::ClientConfig(_))
    }

    /// True when the same request may succeed later, i.e. the client should retry.
    pub fn is_transient(&self) -> bool {
        match self {
            KafkaError::QueueFull | KafkaError::Timeout(_) | KafkaError::Task(_) => true,
            KafkaError::Kafka(e) => e.rdkafka_error_code().is_some_and(is_retriable_code),
            _ => false,
        }
    }
}

fn is_retriable_code(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageTimedOut
            | C::QueueFull
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::RequestTimedOut
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NetworkException
            | C::OperationTimedOut
    )
}
