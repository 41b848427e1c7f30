//! Topic metadata: the cluster summary, partition counts, and the `Watermarks` type.
//!
//! librdkafka's metadata calls block the calling thread, so every call here runs on tokio's
//! blocking pool and callers stay async.

use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaRespErr;

use crate::KafkaError;

/// What readiness needs to know about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub brokers: usize,
    pub topics: usize,
}

/// Low and high watermark of one partition: the earliest offset still stored and the offset the
/// next record will get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub low: i64,
    pub high: i64,
}

/// Cluster summary from a blocking metadata call (`fetch` runs on the blocking pool).
pub async fn cluster_info<F>(fetch: F) -> Result<ClusterInfo, KafkaError>
where
    F: FnOnce() -> KafkaResult<Metadata> + Send + 'static,
{
    let metadata = blocking(fetch).await?.map_err(KafkaError::Kafka)?;
    if metadata.brokers().is_empty() {
        return Err(KafkaError::Task("the cluster reported no brokers".into()));
    }
    Ok(ClusterInfo {
        brokers: metadata.brokers().len(),
        topics: metadata.topics().len(),
    })
}

/// Partition count of `topic` from a blocking metadata call, or [`KafkaError::UnknownTopic`].
pub async fn partition_count<F>(topic: &str, fetch: F) -> Result<usize, KafkaError>
where
    F: FnOnce() -> KafkaResult<Metadata> + Send + 'static,
{
    let metadata = blocking(fetch).await?.map_err(KafkaError::Kafka)?;
    let unknown = || KafkaError::UnknownTopic(topic.to_owned());
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(unknown)?;
    match found.error() {
        None => {}
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => return Err(unknown()),
        Some(code) => {
            let code = rdkafka::types::RDKafkaErrorCode::from(code);
            return Err(KafkaError::Kafka(rdkafka::error::KafkaError::MetadataFetch(code)));
        }
    }
    if found.partitions().is_empty() {
        return Err(unknown());
    }
    Ok(found.partitions().len())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KafkaError::Task(e.to_string()))
}
