//! Against the embedded broker (librdkafka's mock cluster, which creates any topic a client
//! asks about with auto-creation allowed): Sluice's clients ask about missing topics without
//! creating them, and create topics only through a `TopicCreator`.

use std::time::Duration;

use sluice_kafka::embedded::EmbeddedBroker;
use sluice_kafka::{KafkaArgs, KafkaError, Producer, ProducerSettings, TopicCreator, TopicDirectory};

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_requests_for_a_missing_topic_do_not_create_it() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let producer = Producer::new(&KafkaArgs::new(broker.bootstrap_servers()), ProducerSettings::default()).unwrap();
    for _ in 0..2 {
        // With auto-creation allowed, the first lookup would create the topic and the second
        // would find it.
        let lookup = producer.partition_count("never-made", TIMEOUT).await;
        assert!(matches!(lookup, Err(KafkaError::UnknownTopic(_))), "{lookup:?}");
    }
    let listed = (producer.topic_lister(TIMEOUT))().unwrap();
    assert!(!listed.iter().any(|t| t == "never-made"), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_creator_makes_topics_the_directory_then_finds() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let producer = Producer::new(&KafkaArgs::new(broker.bootstrap_servers()), ProducerSettings::default()).unwrap();
    let directory = TopicDirectory::new(producer.topic_lister(TIMEOUT));
    assert!(!directory.exists("made").await.unwrap());

    let creator = broker.topic_creator();
    creator.create_topic("made", 3).await.unwrap();
    creator
        .create_topic("made", 3)
        .await
        .expect("a topic that already exists is not an error");
    assert_eq!(producer.partition_count("made", TIMEOUT).await.unwrap(), 3);

    drop(broker);
    assert!(
        creator.create_topic("after", 1).await.is_err(),
        "a stopped broker refuses, and dropping it did not wait for the creator"
    );
}
