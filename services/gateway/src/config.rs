//! `sluice-gateway` configuration: every flag has a `SLUICE_*` environment twin.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_auth::AuthArgs;
use sluice_kafka::{KafkaArgs, StreamArgs, StreamCatalog};
use sluice_runtime::cli::parse_duration;
use sluice_runtime::cors::{CorsArgs, CorsPolicy};
use sluice_runtime::logging::{LogArgs, LogFormat};

/// Kafka → Server-Sent Events: streams topics to clients, with offset cursors as event ids.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "sluice-gateway", version, about, long_about = None)]
pub struct GatewayConfig {
    /// Address of the public HTTP listener (the SSE API).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "SLUICE_ADMIN_LISTEN", default_value = "0.0.0.0:9080")]
    pub admin_listen: SocketAddr,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub streams: StreamArgs,

    /// Open SSE connections this pod accepts; beyond it, 503 with a jittered Retry-After.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Interval of heartbeat comments on an otherwise quiet stream.
    #[arg(long, env = "SLUICE_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Interval of id-only checkpoint frames on filtered streams (only when the position moved).
    #[arg(long, env = "SLUICE_CHECKPOINT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,

    /// Reconnection delay suggested to clients (`retry:`), jittered by ±50%.
    #[arg(long, env = "SLUICE_RETRY", default_value = "2s", value_parser = parse_duration)]
    pub retry: Duration,

    /// Close connections after this long (jittered by ±10%) so they rebalance onto new pods;
    /// 0 keeps them open.
    #[arg(long, env = "SLUICE_MAX_CONNECTION_LIFETIME", default_value = "0", value_parser = parse_duration)]
    pub max_connection_lifetime: Duration,

    /// On SIGTERM, open streams are closed spread over this window.
    #[arg(long, env = "SLUICE_DRAIN_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub drain_window: Duration,

    /// A connection whose socket accepts nothing for this long is closed; its client resumes
    /// by cursor.
    #[arg(long, env = "SLUICE_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Bytes a connection queues for a client that reads slower than its stream, beyond one
    /// event larger than that: the memory a client that stops reading can cost (see
    /// docs/operations.md, sizing).
    #[arg(long, env = "SLUICE_MAX_QUEUED_BYTES", default_value_t = 64 * 1024)]
    pub max_queued_bytes: usize,

    /// Events of recent history kept in memory per stream.
    #[arg(long, env = "SLUICE_RING_EVENTS", default_value_t = 100_000)]
    pub ring_events: usize,

    /// Bytes of recent history kept in memory per stream.
    #[arg(long, env = "SLUICE_RING_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub ring_bytes: usize,

    /// Events queued per key-filtered subscriber before it falls back to reading by position.
    #[arg(long, env = "SLUICE_INBOX_EVENTS", default_value_t = 256)]
    pub inbox_events: usize,

    /// Kafka readers serving subscribers whose position is older than memory, at most.
    #[arg(long, env = "SLUICE_MAX_CATCHUP_READERS", default_value_t = 32)]
    pub max_catchup_readers: usize,

    /// A stream's feed stops after it has had no subscriber for this long.
    #[arg(long, env = "SLUICE_STREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub stream_idle_timeout: Duration,

    /// How often each stream's consumer lag (`sluice_gateway_consumer_lag`) is refreshed, from
    /// librdkafka's statistics.
    #[arg(long, env = "SLUICE_CONSUMER_LAG_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub consumer_lag_interval: Duration,

    /// Timeout of Kafka metadata and watermark requests.
    #[arg(long, env = "SLUICE_KAFKA_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub kafka_timeout: Duration,

    /// HTTP worker threads; 0 means one per CPU.
    #[arg(long, env = "SLUICE_WORKERS", default_value_t = 0)]
    pub workers: usize,

    #[command(flatten)]
    pub cors: CorsArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// Name of the cookie that may carry the access token (for browsers, whose `EventSource`
    /// cannot set headers). A cookie-carried token is refused from an `Origin` not in
    /// `--allow-origins`.
    #[arg(long, env = "SLUICE_AUTH_COOKIE", default_value = "sluice_token")]
    pub auth_cookie: String,

    /// Streams anyone may read without a token, comma-separated names or globs such as
    /// `public.*`. A request that does carry a token must still present a valid one.
    #[arg(long, env = "SLUICE_PUBLIC_STREAMS", value_delimiter = ',', value_name = "STREAMS")]
    pub public_streams: Vec<String>,

    /// Open streams one token subject (`sub`) may hold on this pod; beyond it, 429 with a
    /// jittered Retry-After. 0: no limit. Requests without a token are not counted.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS_PER_SUBJECT", default_value_t = 100)]
    pub max_connections_per_subject: usize,

    /// Streams one request may name (`GET /v1/streams/a,b,…` and its `/poll`); more is 400.
    /// Each stream of a connection costs a subscriber and a queue of --max-queued-bytes.
    #[arg(long, env = "SLUICE_MAX_STREAMS_PER_CONNECTION", default_value_t = 8)]
    pub max_streams_per_connection: usize,

    /// Largest `limit=` a poll may ask for (events per page); `limit` defaults to 100.
    #[arg(long, env = "SLUICE_MAX_POLL_LIMIT", default_value_t = 1000)]
    pub max_poll_limit: usize,

    /// Longest `wait=` a poll may ask for: how long it waits for an event when there is none.
    /// A longer `wait` is served as this long.
    #[arg(long, env = "SLUICE_MAX_POLL_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub max_poll_wait: Duration,

    /// Serve the demo page at `/`: a live view of one or several streams, for local development
    /// only. Never enable it on a production gateway.
    #[arg(long, env = "SLUICE_DEMO_PAGE")]
    pub demo_page: bool,

    /// What the demo page links to (ingest, the other gateways); set by the dev stack in code.
    #[arg(skip)]
    pub demo: crate::demo::DemoSettings,

    #[command(flatten)]
    pub log: LogArgs,
}

impl GatewayConfig {
    /// Configuration for tests and the dev stack: loopback listeners on port 0 and defaults.
    pub fn for_brokers(brokers: &str) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            admin_listen: "127.0.0.1:0".parse().expect("valid address"),
            kafka: KafkaArgs::new(brokers),
            streams: StreamArgs {
                topic_prefix: String::new(),
                streams: vec!["*".into()],
            },
            max_connections: 10_000,
            heartbeat: Duration::from_secs(15),
            checkpoint_interval: Duration::from_secs(5),
            retry: Duration::from_secs(2),
            max_connection_lifetime: Duration::ZERO,
            drain_window: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_queued_bytes: 64 * 1024,
            ring_events: 100_000,
            ring_bytes: 256 * 1024 * 1024,
            inbox_events: 256,
            max_catchup_readers: 32,
            stream_idle_timeout: Duration::from_secs(300),
            consumer_lag_interval: Duration::from_secs(10),
            kafka_timeout: Duration::from_secs(5),
            workers: 0,
            cors: CorsArgs::default(),
            auth: AuthArgs::anonymous(),
            auth_cookie: "sluice_token".into(),
            public_streams: Vec::new(),
            max_connections_per_subject: 100,
            max_streams_per_connection: 8,
            max_poll_limit: 1000,
            max_poll_wait: Duration::from_secs(30),
            demo_page: false,
            demo: Default::default(),
            log: LogArgs {
                format: LogFormat::Human,
                filter: "info".into(),
            },
        }
    }

    /// Checks everything that can be checked without connecting. The message names the flag.
    pub fn validate(&self) -> Result<StreamCatalog, String> {
        self.kafka.validate().map_err(|e| e.to_string())?;
        CorsPolicy::new(&self.cors)?;
        self.kafka
            .refuse(&crate::kafka::client::CONTROLLED)
            .map_err(|e| e.to_string())?;
        let catalog = StreamCatalog::new(&self.streams)?;
        sluice_auth::Authenticator::new(&self.auth)?;
        crate::access::validate_cookie_name(&self.auth_cookie)?;
        crate::access::public_streams(&self.public_streams)?;
        sluice_runtime::cli::require_positive(&[
            ("--max-connections", self.max_connections),
            ("--max-queued-bytes", self.max_queued_bytes),
            ("--ring-events", self.ring_events),
            ("--ring-bytes", self.ring_bytes),
            ("--inbox-events", self.inbox_events),
            ("--max-catchup-readers", self.max_catchup_readers),
            ("--max-streams-per-connection", self.max_streams_per_connection),
            ("--max-poll-limit", self.max_poll_limit),
        ])?;
        if self.max_streams_per_connection > sluice_sse::MAX_STREAMS {
            return Err(format!(
                "--max-streams-per-connection may be at most {} (what a cursor can cover)",
                sluice_sse::MAX_STREAMS
            ));
        }
        for (flag, value) in [
            ("--heartbeat", self.heartbeat),
            ("--checkpoint-interval", self.checkpoint_interval),
            ("--write-timeout", self.write_timeout),
            ("--kafka-timeout", self.kafka_timeout),
            ("--consumer-lag-interval", self.consumer_lag_interval),
        ] {
            if value < Duration::from_millis(10) {
                return Err(format!("{flag} must be at least 10ms"));
            }
        }
        Ok(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_validate() {
        let config =
            GatewayConfig::try_parse_from(["sluice-gateway", "--kafka-brokers", "k:9092", "--allow-anonymous"])
                .unwrap();
        config.validate().unwrap();
        assert_eq!(config.auth_cookie, "sluice_token");
        assert_eq!(config.max_connections_per_subject, 100);
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.heartbeat, Duration::from_secs(15));
    }

    #[test]
    fn an_operator_cannot_make_the_gateway_read_aborted_transactions() {
        let config = GatewayConfig::try_parse_from([
            "sluice-gateway",
            "--kafka-brokers",
            "k:9092",
            "--allow-anonymous",
            "--kafka-config",
            "isolation.level=read_uncommitted",
        ])
        .unwrap();
        let err = config.validate().unwrap_err();
        assert!(
            err.contains("isolation.level") && err.contains("read_committed"),
            "{err}"
        );
    }

    #[test]
    fn refuses_to_start_open_without_saying_so() {
        let config = GatewayConfig::try_parse_from(["sluice-gateway", "--kafka-brokers", "k:9092"]).unwrap();
        let err = config.validate().unwrap_err();
        assert!(
            err.contains("--allow-anonymous") && err.contains("--jwt-hmac-secret-file"),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_auth_flags() {
        for (flag, value) in [("--auth-cookie", "a;b"), ("--public-streams", "news,a/b")] {
            let config = GatewayConfig::try_parse_from([
                "sluice-gateway",
                "--kafka-brokers",
                "k:9092",
                "--allow-anonymous",
                flag,
                value,
            ])
            .unwrap();
            assert!(config.validate().unwrap_err().contains(flag), "{flag}");
        }
    }

    #[test]
    fn rejects_zero_limits() {
        let config = GatewayConfig::try_parse_from([
            "sluice-gateway",
            "--kafka-brokers",
            "k:9092",
            "--allow-anonymous",
            "--ring-events",
            "0",
        ])
        .unwrap();
        assert!(config.validate().unwrap_err().contains("--ring-events"));
    }
}
