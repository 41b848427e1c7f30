//! `sluice-bench broker` (hidden): librdkafka's mock cluster in a process of its own, with the
//! stream's topic created up front.
//!
//! `sluice-dev --broker-only` is the usual broker of the gateway scenarios, but the mock
//! cluster creates unknown topics with 4 partitions and cannot answer CreateTopics, and its
//! retention is small (librdkafka keeps about 5 MiB, and at most 100,000 message sets, per
//! partition). A scenario that needs more history than 4 partitions keep — `catchup` — asks
//! for more partitions with `--partitions`, and the rig then runs this instead: the same mock
//! cluster, through `sluice-kafka`'s embedded broker, which can create a topic with any
//! number of partitions (and, for the `streams` scenario, as many numbered topics as it is
//! asked for up front, so that they exist before the gateway first lists the topics). It prints `KAFKA_BOOTSTRAP=host:port` like `sluice-dev` and runs
//! until killed.

use anyhow::Context as _;
use sluice_kafka::embedded::EmbeddedBroker;

/// Flags of the hidden `sluice-bench broker` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Topic to create before announcing the broker.
    #[arg(long, value_name = "NAME")]
    pub topic: String,

    /// Partitions of that topic.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=256))]
    pub partitions: i32,

    /// Also create `N` more topics, `{topic}-0` to `{topic}-{N-1}`, with as many partitions
    /// (the `streams` scenario's many streams).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub numbered_topics: u32,
}

/// Starts the broker, creates the topic, announces the bootstrap address and runs until the
/// process is killed.
pub fn run_blocking(args: &BrokerArgs) -> anyhow::Result<()> {
    let broker = EmbeddedBroker::start(1).context("starting the mock Kafka cluster")?;
    broker
        .create_topic(&args.topic, args.partitions)
        .with_context(|| format!("creating topic {} with {} partitions", args.topic, args.partitions))?;
    for index in 0..args.numbered_topics {
        let name = format!("{}-{index}", args.topic);
        broker
            .create_topic(&name, args.partitions)
            .with_context(|| format!("creating topic {name}"))?;
    }
    println!("KAFKA_BOOTSTRAP={}", broker.bootstrap_servers());
    // The broker runs on its own thread; this one only keeps the process (and `broker`) alive.
    loop {
        std::thread::park();
    }
}
