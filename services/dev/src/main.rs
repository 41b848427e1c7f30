//! `sluice-dev`: the whole stack in one process for local development — no Docker.
//!
//! Starts librdkafka's mock cluster (a real Kafka-protocol broker, in memory) and the ingest
//! service on it, prints `KAFKA_BOOTSTRAP=…` so other processes can join, and ready-to-paste
//! `curl` commands. `--broker-only` runs just the broker. Data is lost when it exits.

use std::net::SocketAddr;

use clap::Parser;
use sluice_ingest::IngestConfig;
use sluice_kafka::embedded::EmbeddedBroker;
use sluice_runtime::cli::{config_error, parse_or_exit};
use sluice_runtime::logging::LogArgs;

/// Sluice's dev stack: an embedded Kafka-protocol broker plus ingest, in one process.
#[derive(Debug, Parser)]
#[command(name = "sluice-dev", version, about, long_about = None)]
struct DevConfig {
    /// Run only the embedded broker (for a gateway or a producer started separately).
    #[arg(long)]
    broker_only: bool,

    /// Number of brokers in the embedded cluster.
    #[arg(long, env = "SLUICE_DEV_BROKERS", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=9))]
    brokers: i32,

    /// Ingest's public listener.
    #[arg(
        long,
        env = "SLUICE_DEV_INGEST_LISTEN",
        default_value = "127.0.0.1:8090"
    )]
    ingest_listen: SocketAddr,

    /// Ingest's admin listener.
    #[arg(
        long,
        env = "SLUICE_DEV_INGEST_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    ingest_admin_listen: SocketAddr,

    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() {
    let config: DevConfig = parse_or_exit();
    if let Err(reason) = sluice_runtime::logging::init(&config.log) {
        config_error(reason);
    }
    let shutdown = sluice_runtime::shutdown::on_signal();
    let broker = EmbeddedBroker::start(config.brokers).unwrap_or_else(|e| {
        eprintln!("sluice-dev: cannot start the embedded broker: {e}");
        std::process::exit(1)
    });
    let bootstrap = broker.bootstrap_servers().to_owned();
    // Machine-readable first: scripts and tests wait for this line.
    println!("KAFKA_BOOTSTRAP={bootstrap}");

    if config.broker_only {
        println!("Embedded Kafka broker running. Press Ctrl-C to stop.");
        shutdown.cancelled().await;
        drop(broker);
        return;
    }

    let mut ingest = IngestConfig::for_brokers(&bootstrap);
    ingest.listen = config.ingest_listen;
    ingest.admin_listen = config.ingest_admin_listen;
    ingest.log = config.log.clone();
    ingest.shutdown_timeout = std::time::Duration::from_secs(5);
    let listener = sluice_runtime::net::bind(ingest.listen, 1024)
        .unwrap_or_else(|e| config_error(format!("--ingest-listen {}: {e}", ingest.listen)));
    let admin = sluice_runtime::net::bind(ingest.admin_listen, 128).unwrap_or_else(|e| {
        config_error(format!(
            "--ingest-admin-listen {}: {e}",
            ingest.admin_listen
        ))
    });
    let ingest_addr = listener.local_addr().expect("bound address");
    let admin_addr = admin.local_addr().expect("bound address");
    println!("INGEST_URL=http://{ingest_addr}");
    println!("INGEST_ADMIN_URL=http://{admin_addr}");
    print_examples(&ingest_addr.to_string(), &admin_addr.to_string());

    if let Err(err) = sluice_ingest::run(ingest, listener, admin, shutdown).await {
        eprintln!("sluice-dev: ingest failed: {err}");
        std::process::exit(1);
    }
    drop(broker);
}

fn print_examples(ingest: &str, admin: &str) {
    println!(
        r#"
Sluice dev stack is up (embedded broker; data lives in memory until you stop it).

Publish one event:
  curl -s -X POST http://{ingest}/v1/streams/demo/events \
       -H 'Content-Type: application/json' \
       -d '{{"type":"greeting","key":"user-1","data":{{"hello":"world"}}}}'

Publish a batch (JSON array) or NDJSON:
  curl -s -X POST http://{ingest}/v1/streams/demo/events \
       -H 'Content-Type: application/json' \
       -d '[{{"data":1}},{{"key":"user-2","data":2}}]'
  printf '{{"data":"a"}}\n{{"data":"b"}}\n' | curl -s -X POST http://{ingest}/v1/streams/demo/events \
       -H 'Content-Type: application/x-ndjson' --data-binary @-

Health and metrics:
  curl -s http://{admin}/readyz
  curl -s http://{admin}/metrics | grep sluice_ingest_

Press Ctrl-C to stop."#
    );
}
