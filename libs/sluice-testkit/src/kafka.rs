//! One Kafka fixture for every test.
//!
//! | environment | Kafka |
//! |---|---|
//! | (nothing) | librdkafka's mock cluster, in this process, on loopback ports |
//! | `SLUICE_TEST_KAFKA_BROKERS=host:port` | that broker, unchanged tests |
//! | `SLUICE_TEST_KAFKA=testcontainers` | Apache Kafka started by testcontainers; without a Docker engine the fixture fails loudly rather than pretend |
//!
//! Tests never assume a fresh cluster: they name their topics with [`TestKafka::unique_topic`]
//! and create them with [`TestKafka::create_topic`] (the mock cluster cannot serve CreateTopics,
//! so the fixture uses its own API there and the admin API elsewhere).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_kafka::embedded::EmbeddedBroker;
use sluice_kafka::{KafkaArgs, OutRecord, Producer, ProducerSettings};
use testcontainers_modules::kafka::apache;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::ContainerAsync;

/// Which Kafka a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaKind {
    /// librdkafka's mock cluster in this process.
    Embedded,
    /// A broker given by `SLUICE_TEST_KAFKA_BROKERS`.
    External,
    /// Apache Kafka in a container started by testcontainers.
    Container,
}

/// A record read back from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: Option<i64>,
}

impl ReadRecord {
    /// The value of header `name`, as UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// The Kafka a test talks to. Dropping it stops an embedded broker or a container.
#[derive(Debug)]
pub struct TestKafka {
    kind: KafkaKind,
    bootstrap: String,
    embedded: Option<EmbeddedBroker>,
    _container: Option<ContainerAsync<apache::Kafka>>,
}

impl TestKafka {
    /// Starts (or connects to) the Kafka the environment asks for.
    pub async fn start() -> anyhow::Result<Self> {
        if let Ok(brokers) = std::env::var("SLUICE_TEST_KAFKA_BROKERS") {
            if !brokers.trim().is_empty() {
                return Ok(Self {
                    kind: KafkaKind::External,
                    bootstrap: brokers,
                    embedded: None,
                    _container: None,
                });
            }
        }
        if std::env::var("SLUICE_TEST_KAFKA").is_ok_and(|v| v == "testcontainers") {
            return Self::start_container().await;
        }
        Self::start_embedded()
    }

    /// The in-process mock cluster, whatever the environment says (for tests of the fixture).
    pub fn start_embedded() -> anyhow::Result<Self> {
        let broker = EmbeddedBroker::start(1).context("start the embedded Kafka broker")?;
        Ok(Self {
            kind: KafkaKind::Embedded,
            bootstrap: broker.bootstrap_servers().to_owned(),
            embedded: Some(broker),
            _container: None,
        })
    }

    /// A broker someone else runs, such as `sluice-dev` in another process.
    pub fn external(bootstrap: &str) -> Self {
        Self {
            kind: KafkaKind::External,
            bootstrap: bootstrap.to_owned(),
            embedded: None,
            _container: None,
        }
    }

    /// Apache Kafka in Docker via testcontainers; an error saying "skipped: no Docker" when no
    /// Docker engine answers.
    pub async fn start_container() -> anyhow::Result<Self> {
        if !docker_available() {
            anyhow::bail!(
                "skipped: no Docker. SLUICE_TEST_KAFKA=testcontainers needs a Docker engine; \
                 unset it to use the embedded broker, or set SLUICE_TEST_KAFKA_BROKERS"
            );
        }
        let container = apache::Kafka::default()
            .with_jvm_image()
            .start()
            .await
            .context("start Apache Kafka")?;
        let port = container.get_host_port_ipv4(apache::KAFKA_PORT).await?;
        Ok(Self {
            kind: KafkaKind::Container,
            bootstrap: format!("127.0.0.1:{port}"),
            embedded: None,
            _container: Some(container),
        })
    }

    pub fn kind(&self) -> KafkaKind {
        self.kind
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// A topic name no other test (or earlier run against the same broker) uses.
    pub fn unique_topic(&self, prefix: &str) -> String {
        format!("{prefix}-{:016x}", rand::random::<u64>())
    }

    /// Creates `topic` with `partitions` partitions and waits until its metadata is visible.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        if let Some(broker) = &self.embedded {
            broker.create_topic(topic, partitions)?;
        } else {
            let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
            let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
            let results = admin.create_topics([&new], &AdminOptions::new()).await?;
            for result in results {
                result.map_err(|(name, code)| anyhow::anyhow!("create topic {name}: {code}"))?;
            }
        }
        let consumer = self.consumer()?;
        let name = topic.to_owned();
        crate::eventually(&format!("topic {topic} to appear"), Duration::from_secs(30), || {
            let count = partition_count(&consumer, &name);
            async move { (count == Some(partitions as usize)).then_some(()) }
        })
        .await
    }

    /// A creator of topics on the embedded broker, for a service's `--auto-create-streams`
    /// (the mock cluster cannot answer CreateTopics); `None` for other brokers, which can.
    pub fn topic_creator(&self) -> Option<sluice_kafka::embedded::EmbeddedTopicCreator> {
        self.embedded.as_ref().map(EmbeddedBroker::topic_creator)
    }

    /// True when [`TestKafka::set_brokers_up`] works (the embedded broker only).
    pub fn supports_fault_injection(&self) -> bool {
        self.embedded.is_some()
    }

    /// Takes every broker down (`false`) or back up (`true`). Embedded broker only.
    pub fn set_brokers_up(&self, up: bool) -> anyhow::Result<()> {
        let broker = self
            .embedded
            .as_ref()
            .context("fault injection needs the embedded broker")?;
        Ok(broker.set_brokers_up(up)?)
    }

    /// Client properties for this Kafka (bootstrap servers only).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    fn consumer(&self) -> anyhow::Result<BaseConsumer> {
        Ok(self
            .client_config()
            // Required even for assign(): librdkafka insists on a group id for consumers.
            .set("group.id", format!("sluice-test-{:x}", rand::random::<u64>()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()?)
    }

    /// Reads every partition of `topic` from the beginning until `expected` records arrived, or
    /// fails after `timeout` saying how many did. Records come back in per-partition order.
    pub async fn read_records(
        &self,
        topic: &str,
        expected: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReadRecord>> {
        let consumer = self.consumer()?;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_blocking(&consumer, &topic, expected, timeout)).await?
    }

    /// Writes `records` with Sluice's producer and waits until Kafka acknowledged every one.
    pub async fn produce(&self, records: &[OutRecord]) -> anyhow::Result<()> {
        let producer = Producer::new(&KafkaArgs::new(&self.bootstrap), ProducerSettings::default())?;
        // Enqueued first, awaited after: one round of batches rather than a round trip each.
        let pending: Vec<_> = records
            .iter()
            .map(|record| producer.enqueue(record))
            .collect::<Result<_, _>>()?;
        for (record, pending) in records.iter().zip(pending) {
            pending
                .acknowledged()
                .await
                .with_context(|| format!("produce to {}", record.topic))?;
        }
        Ok(())
    }

    /// Partition count of `topic`, as the cluster reports it.
    pub async fn partitions(&self, topic: &str) -> anyhow::Result<usize> {
        let consumer = self.consumer()?;
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || partition_count(&consumer, &name))
            .await?
            .with_context(|| format!("no metadata for topic {topic}"))
    }
}

fn partition_count(consumer: &BaseConsumer, topic: &str) -> Option<usize> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
    let t = metadata.topics().iter().find(|t| t.name() == topic)?;
    (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
}

fn read_blocking(
    consumer: &BaseConsumer,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<ReadRecord>> {
    let partitions = partition_count(consumer, topic).with_context(|| format!("no metadata for topic {topic}"))?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    let mut records = Vec::with_capacity(expected);
    while records.len() < expected {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            anyhow::bail!(
                "read {} of {expected} records from {topic} before the deadline",
                records.len()
            );
        };
        let Some(message) = consumer.poll(left.min(Duration::from_millis(200))) else {
            continue;
        };
        let message = message?;
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        records.push(ReadRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        });
    }
    Ok(records)
}

/// Whether a Docker engine answers (not just whether the client is installed).
pub fn docker_available() -> bool {
    std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
