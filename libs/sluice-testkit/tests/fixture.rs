//! The Kafka fixture itself: each flavour does what it says.

use std::time::Duration;

use sluice_kafka::{KafkaArgs, OutRecord, Producer, ProducerSettings};
use sluice_testkit::kafka::docker_available;
use sluice_testkit::{KafkaKind, TestKafka};

async fn round_trip(kafka: &TestKafka) {
    let topic = kafka.unique_topic("fixture");
    kafka.create_topic(&topic, 3).await.unwrap();
    assert_eq!(kafka.partitions(&topic).await.unwrap(), 3);
    let producer = Producer::new(&KafkaArgs::new(kafka.bootstrap_servers()), ProducerSettings::default()).unwrap();
    let record = OutRecord {
        topic: topic.clone(),
        key: Some(b"k".to_vec()),
        value: b"v".to_vec(),
        headers: vec![("h".into(), b"1".to_vec())],
        timestamp_ms: None,
    };
    let delivered = producer.send(&record).await.unwrap();
    let records = kafka.read_records(&topic, 1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (records[0].partition, records[0].offset),
        (delivered.partition, delivered.offset)
    );
    assert_eq!(records[0].header("h"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_fixture_creates_topics_and_reads_back() {
    let kafka = TestKafka::start().await.unwrap();
    round_trip(&kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_can_be_taken_down_and_brought_back() {
    let kafka = TestKafka::start_embedded().unwrap();
    assert_eq!(kafka.kind(), KafkaKind::Embedded);
    let topic = kafka.unique_topic("faults");
    kafka.create_topic(&topic, 1).await.unwrap();
    let settings = ProducerSettings {
        delivery_timeout: Duration::from_millis(800),
        ..ProducerSettings::default()
    };
    let producer = Producer::new(&KafkaArgs::new(kafka.bootstrap_servers()), settings).unwrap();
    let record = OutRecord {
        topic: topic.clone(),
        value: b"x".to_vec(),
        ..OutRecord::default()
    };
    // The first record to a new topic waits for its metadata: on a loaded machine that can take
    // longer than the short delivery timeout this test needs for the broker-down part.
    sluice_testkit::eventually(
        "the first record to be acknowledged",
        Duration::from_secs(60),
        || async { producer.send(&record).await.ok() },
    )
    .await
    .unwrap();

    kafka.set_brokers_up(false).unwrap();
    let err = producer.send(&record).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    kafka.set_brokers_up(true).unwrap();
    sluice_testkit::eventually("the producer to reconnect", Duration::from_secs(60), || async {
        producer.send(&record).await.ok()
    })
    .await
    .unwrap();
}

/// Where Docker runs, testcontainers' Apache Kafka passes the same round trip; where it does
/// not, the fixture refuses with "skipped: no Docker" instead of pretending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testcontainers_kafka_runs_or_says_skipped_no_docker() {
    match TestKafka::start_container().await {
        Ok(kafka) => {
            assert_eq!(kafka.kind(), KafkaKind::Container);
            round_trip(&kafka).await;
        }
        Err(err) => {
            assert!(
                !docker_available(),
                "Docker answers, yet the container did not start: {err:#}"
            );
            assert!(err.to_string().starts_with("skipped: no Docker"), "{err:#}");
            eprintln!("{err}");
        }
    }
}
