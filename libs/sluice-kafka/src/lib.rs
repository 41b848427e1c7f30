//! The Kafka adapter: the only place Sluice talks to librdkafka.
//!
//! Services never build an `rdkafka::ClientConfig` themselves. They take [`KafkaArgs`] from
//! their command line (`--kafka-brokers`, repeatable `--kafka-config key=value`), and this crate
//! turns it into clients with Sluice's non-negotiable settings:
//!
//! - [`producer::Producer`]: idempotent, `acks=all`, the Java client's murmur2 partitioner, a
//!   short linger and compression. Ingest relies on it never acknowledging data Kafka could lose.
//! - [`metadata`]: topic partition counts and watermarks, for readiness and stream lookups.
//! - [`directory::TopicDirectory`]: which topics exist, cached so floods of unknown stream names
//!   neither reach Kafka per request nor grow memory; [`create::TopicCreator`]: creating a
//!   topic on purpose. No client of this crate creates a topic by asking about it.
//! - [`headers`]: the record header names (`sse-event`, `content-type`, `traceparent`) every
//!   producer and reader shares.
//! - [`murmur2`]: the key → partition function every Kafka producer agrees on, so a reader can
//!   compute which partition a key lives in without asking anyone.
//! - [`embedded::EmbeddedBroker`]: librdkafka's in-process mock cluster, reached over the real
//!   Kafka protocol. It backs `sluice-dev` and the test kit; it is not for production.
//!
//! Passthrough properties (`--kafka-config`) go to every client, so SASL and TLS are a matter of
//! configuration alone.

pub mod config;
pub mod create;
pub mod directory;
pub mod embedded;
mod error;
pub mod headers;
pub mod metadata;
pub mod murmur2;
pub mod producer;
pub mod streams;

pub use config::KafkaArgs;
pub use create::{AdminTopicCreator, TopicCreator};
pub use directory::TopicDirectory;
pub use error::KafkaError;
pub use producer::{Delivered, OutRecord, Pending, Producer, ProducerSettings};
pub use streams::{StreamArgs, StreamCatalog, StreamError};
