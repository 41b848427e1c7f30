//! `sluice-dev`: the whole stack in one process for local development — no Docker.
//!
//! Starts librdkafka's mock cluster (a real Kafka-protocol broker, in memory), the ingest
//! service and `--gateways N` gateways on it, prints `KAFKA_BOOTSTRAP=…` so other processes can
//! join, and ready-to-paste `curl` commands. The gateways serve the demo page at `/`, both
//! services accept cross-origin browser requests from any origin, and a sample `ticker` stream
//! is published (see [`ticker`]). `--broker-only` runs just the broker. Data is lost when it
//! exits.
//!
//! Access control is off by default (`--allow-anonymous` for both services); `--auth` turns it
//! on with a secret made up at start and prints tokens to paste (see [`auth`]).

mod auth;
mod ticker;

use std::net::SocketAddr;

use clap::Parser;
use std::time::Duration;

use sluice_auth::AuthArgs;
use sluice_gateway::demo::DemoSettings;
use sluice_gateway::GatewayConfig;
use sluice_ingest::IngestConfig;
use sluice_kafka::embedded::EmbeddedBroker;
use sluice_kafka::{KafkaArgs, Producer};
use sluice_runtime::cli::{config_error, parse_duration, parse_or_exit};
use sluice_runtime::cors::CorsArgs;
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
    #[arg(long, env = "SLUICE_DEV_INGEST_LISTEN", default_value = "127.0.0.1:8090")]
    ingest_listen: SocketAddr,

    /// Ingest's admin listener.
    #[arg(long, env = "SLUICE_DEV_INGEST_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    ingest_admin_listen: SocketAddr,

    /// Number of gateways, on consecutive ports from `--gateway-listen`.
    #[arg(long, env = "SLUICE_DEV_GATEWAYS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=9))]
    gateways: u16,

    /// The first gateway's listener; gateway i listens on its port + i.
    #[arg(long, env = "SLUICE_DEV_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    gateway_listen: SocketAddr,

    /// The first gateway's admin listener; gateway i's admin listens on its port + i.
    #[arg(long, env = "SLUICE_DEV_GATEWAY_ADMIN_LISTEN", default_value = "127.0.0.1:9080")]
    gateway_admin_listen: SocketAddr,

    /// The sample stream published while the stack runs (shown first by the demo page).
    #[arg(long, env = "SLUICE_DEV_TICKER_STREAM", default_value = "ticker")]
    ticker_stream: String,

    /// Interval between sample ticks; 0 publishes none.
    #[arg(long, env = "SLUICE_DEV_TICKER_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    ticker_interval: Duration,

    /// Topics to create at start, comma-separated (4 partitions each): no client creates a topic
    /// by asking, so this is how a separate ingest or producer on `--broker-only` finds its
    /// streams.
    #[arg(long, env = "SLUICE_DEV_TOPICS", value_delimiter = ',')]
    topics: Vec<String>,

    /// Turn access control on: a random HMAC secret signs tokens, both services require them,
    /// and ready-to-paste tokens (read all, read one key, publish) are printed.
    #[arg(long, env = "SLUICE_DEV_AUTH")]
    auth: bool,

    #[command(flatten)]
    log: LogArgs,
}

/// Partitions of every topic the dev stack creates (librdkafka's mock cluster default).
const DEV_PARTITIONS: i32 = 4;

#[tokio::main]
async fn main() {
    let config: DevConfig = parse_or_exit();
    // One process, one exporter: ingest's and the gateways' spans all come from `sluice-dev`
    // unless OTEL_SERVICE_NAME says otherwise.
    let telemetry = sluice_runtime::service::start_telemetry("sluice-dev");
    if let Err(reason) = sluice_runtime::logging::init_with_telemetry(&config.log, telemetry.as_ref()) {
        config_error(reason);
    }
    let shutdown = sluice_runtime::shutdown::on_signal();
    let broker = EmbeddedBroker::start(config.brokers).unwrap_or_else(|e| {
        eprintln!("sluice-dev: cannot start the embedded broker: {e}");
        std::process::exit(1)
    });
    for topic in config.topics.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if let Err(err) = broker.create_topic(topic, DEV_PARTITIONS) {
            config_error(format!("--topics {topic}: {err}"));
        }
    }
    let bootstrap = broker.bootstrap_servers().to_owned();
    // Machine-readable first: scripts and tests wait for this line.
    println!("KAFKA_BOOTSTRAP={bootstrap}");

    if config.broker_only {
        println!("Embedded Kafka broker running. Press Ctrl-C to stop.");
        shutdown.cancelled().await;
        drop(broker);
        return;
    }

    // Dev only: pages on any origin may call both services (the demo page switches gateways
    // and publishes to ingest, each another origin).
    let open_cors = CorsArgs {
        allow_origins: vec!["*".into()],
    };
    let dev_auth = config.auth.then(|| {
        auth::DevAuth::generate().unwrap_or_else(|e| {
            eprintln!("sluice-dev: cannot write the token secret: {e}");
            std::process::exit(1)
        })
    });
    let auth_args = match &dev_auth {
        Some(dev) => AuthArgs {
            jwt_hmac_secret_file: Some(dev.secret_file.clone()),
            allow_anonymous: false,
            ..AuthArgs::anonymous()
        },
        None => AuthArgs::anonymous(),
    };
    let tokens = dev_auth.as_ref().map(auth::DevAuth::tokens);
    let mut ingest = IngestConfig::for_brokers(&bootstrap);
    ingest.auth = auth_args.clone();
    ingest.listen = config.ingest_listen;
    ingest.admin_listen = config.ingest_admin_listen;
    ingest.log = config.log.clone();
    ingest.cors = open_cors.clone();
    ingest.shutdown_timeout = Duration::from_secs(5);
    // Publishing to a new name creates its stream, as a dev stack should; through the embedded
    // broker, since the mock cluster cannot answer Kafka's CreateTopics.
    ingest.auto_create_streams = true;
    ingest.auto_create_partitions = DEV_PARTITIONS as u32;
    ingest.topic_creator = Some(std::sync::Arc::new(broker.topic_creator()));
    let listener = bind_or_exit(ingest.listen, "--ingest-listen");
    let admin = bind_or_exit(ingest.admin_listen, "--ingest-admin-listen");
    let ingest_addr = listener.local_addr().expect("bound address");
    println!("INGEST_URL=http://{ingest_addr}");
    println!("INGEST_ADMIN_URL=http://{}", admin.local_addr().expect("bound address"));

    let mut services = tokio::task::JoinSet::new();
    let ingest_shutdown = shutdown.clone();
    services.spawn(async move {
        sluice_ingest::run(ingest, listener, admin, ingest_shutdown)
            .await
            .map_err(|e| format!("ingest: {e}"))
    });

    // Every gateway is bound before any starts, so each demo page can link to all of them.
    let gateways: Vec<_> = (0..config.gateways)
        .map(|i| {
            let listener = bind_or_exit(offset_port(config.gateway_listen, i), "--gateway-listen");
            let admin = bind_or_exit(offset_port(config.gateway_admin_listen, i), "--gateway-admin-listen");
            (listener, admin)
        })
        .collect();
    let gateway_urls: Vec<String> = gateways
        .iter()
        .map(|(listener, _)| format!("http://{}", listener.local_addr().expect("bound address")))
        .collect();
    let demo = DemoSettings {
        stream: config.ticker_stream.clone(),
        ingest_url: Some(format!("http://{ingest_addr}")),
        gateways: gateway_urls.clone(),
        token: tokens.as_ref().map(|t| t.demo.clone()),
    };
    for (i, (listener, admin)) in gateways.into_iter().enumerate() {
        let mut gateway = GatewayConfig::for_brokers(&bootstrap);
        gateway.listen = listener.local_addr().expect("bound address");
        gateway.admin_listen = admin.local_addr().expect("bound address");
        gateway.log = config.log.clone();
        gateway.drain_window = Duration::from_secs(2);
        gateway.cors = open_cors.clone();
        gateway.demo_page = true;
        gateway.demo = demo.clone();
        gateway.auth = auth_args.clone();
        // The embedded broker answers an empty fetch only after the full wait, even when data
        // arrives meanwhile; a short wait keeps the dev stack's latency low.
        gateway.kafka.config.push("fetch.wait.max.ms=5".into());
        println!("GATEWAY_URL={}", gateway_urls[i]);
        println!("GATEWAY_ADMIN_URL=http://{}", gateway.admin_listen);
        let gateway_shutdown = shutdown.clone();
        services.spawn(async move {
            sluice_gateway::run(gateway, listener, admin, gateway_shutdown)
                .await
                .map_err(|e| format!("gateway {i}: {e}"))
        });
    }

    if !config.ticker_interval.is_zero() {
        // No client creates a topic by asking, so the ticker's topic is made here.
        if let Err(err) = broker.create_topic(&config.ticker_stream, DEV_PARTITIONS) {
            eprintln!("sluice-dev: cannot create the {} topic: {err}", config.ticker_stream);
        }
        let settings = IngestConfig::for_brokers(&bootstrap).producer_settings();
        match Producer::new(&KafkaArgs::new(&bootstrap), settings) {
            Ok(producer) => {
                tokio::spawn(ticker::run(
                    producer,
                    config.ticker_stream.clone(),
                    config.ticker_interval,
                    shutdown.clone(),
                ));
            }
            Err(err) => eprintln!("sluice-dev: the sample ticker is off: {err}"),
        }
    }
    match &tokens {
        Some(tokens) => print_auth_examples(&ingest_addr.to_string(), &gateway_urls, tokens),
        None => print_examples(&ingest_addr.to_string(), &gateway_urls, &config.ticker_stream),
    }

    let mut failed = false;
    while let Some(result) = services.join_next().await {
        if let Ok(Err(err)) | Err(err) = result.map_err(|e| e.to_string()) {
            eprintln!("sluice-dev: {err}");
            failed = true;
            shutdown.cancel();
        }
    }
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    drop(broker);
    drop(dev_auth);
    if failed {
        std::process::exit(1);
    }
}

fn bind_or_exit(addr: SocketAddr, flag: &str) -> std::net::TcpListener {
    sluice_runtime::net::bind(addr, 1024).unwrap_or_else(|e| config_error(format!("{flag} {addr}: {e}")))
}

/// `addr` with its port moved up by `by` (port 0 stays 0: the OS picks).
fn offset_port(mut addr: SocketAddr, by: u16) -> SocketAddr {
    if addr.port() != 0 {
        addr.set_port(addr.port() + by);
    }
    addr
}

fn print_examples(ingest: &str, gateways: &[String], ticker: &str) {
    let gateway = gateways.first().map_or("http://127.0.0.1:8080", String::as_str);
    println!(
        r#"
Sluice dev stack is up (embedded broker; data lives in memory until you stop it).

Open the demo page in a browser (a live view of the `{ticker}` stream, a publish form,
and buttons that drop the connection or switch gateway to show a resume):
  {gateway}/

Watch a stream (from the beginning; Ctrl-C and re-run with -H 'Last-Event-ID: <id>' to resume):
  curl -N '{gateway}/v1/streams/demo?from=earliest'

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

Only some keys or types:
  curl -N '{gateway}/v1/streams/demo?from=earliest&key=user-1&type=greeting'

Press Ctrl-C to stop."#
    );
}

fn print_auth_examples(ingest: &str, gateways: &[String], tokens: &auth::DevTokens) {
    let gateway = gateways.first().map_or("http://127.0.0.1:8080", String::as_str);
    // Machine-readable, like the URLs above: scripts and tests pick these up.
    println!("TOKEN_SUBSCRIBE={}", tokens.subscribe);
    println!("TOKEN_SUBSCRIBE_USER_1={}", tokens.subscribe_user_1);
    println!("TOKEN_PUBLISH={}", tokens.publish);
    println!(
        r#"
Sluice dev stack is up WITH ACCESS CONTROL (tokens signed by a secret made up for this run; they
live 12 hours). Paste these into your shell:

  export TOKEN_SUBSCRIBE={subscribe}
  export TOKEN_SUBSCRIBE_USER_1={user_1}
  export TOKEN_PUBLISH={publish}

Open the demo page (it carries a token of its own):
  {gateway}/

Without a token, a request is refused (401):
  curl -i '{gateway}/v1/streams/demo'

Watch every event of `demo` (a token that may read every stream):
  curl -N -H "Authorization: Bearer $TOKEN_SUBSCRIBE" '{gateway}/v1/streams/demo?from=earliest'

Watch as user-1, whose token grants only key `user-1` of `demo`: it sees only that key, without
asking for it (asking for another key is 403):
  curl -N -H "Authorization: Bearer $TOKEN_SUBSCRIBE_USER_1" '{gateway}/v1/streams/demo?from=earliest'

Publish one event for user-1 and one for user-2:
  curl -s -X POST http://{ingest}/v1/streams/demo/events \
       -H "Authorization: Bearer $TOKEN_PUBLISH" -H 'Content-Type: application/json' \
       -d '[{{"key":"user-1","data":{{"hello":"user-1"}}}},{{"key":"user-2","data":{{"hello":"user-2"}}}}]'

Browsers' EventSource cannot set headers: use ?access_token=<token> or the `sluice_token` cookie.

Press Ctrl-C to stop."#,
        subscribe = tokens.subscribe,
        user_1 = tokens.subscribe_user_1,
        publish = tokens.publish,
    );
}
