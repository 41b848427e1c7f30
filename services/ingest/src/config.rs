//! `sluice-ingest` configuration: every flag has a `SLUICE_*` environment twin.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_auth::{AuthArgs, Authenticator};
use sluice_kafka::{KafkaArgs, ProducerSettings, StreamArgs, StreamCatalog};
use sluice_runtime::cli::parse_duration;
use sluice_runtime::cors::{CorsArgs, CorsPolicy};
use sluice_runtime::logging::LogArgs;

/// HTTP → Kafka: publishes events to Kafka and answers only once Kafka has them.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "sluice-ingest", version, about, long_about = None)]
pub struct IngestConfig {
    /// Address of the public HTTP listener (the events API).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,

    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "SLUICE_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub streams: StreamArgs,

    #[command(flatten)]
    pub limits: Limits,

    /// How long Kafka may take to acknowledge an event before the request fails with 503.
    #[arg(long, env = "SLUICE_PRODUCE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub produce_timeout: Duration,

    /// How long the producer waits to fill a batch (`linger.ms`).
    #[arg(long, env = "SLUICE_LINGER", default_value = "5ms", value_parser = parse_duration)]
    pub linger: Duration,

    /// Compression of produced batches: none, gzip, snappy, lz4 or zstd.
    #[arg(long, env = "SLUICE_COMPRESSION", default_value = "lz4",
          value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    pub compression: String,

    /// On SIGTERM: how long in-flight requests may take to finish, then how long the producer
    /// may take to flush (each).
    #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// HTTP worker threads; 0 means one per CPU.
    #[arg(long, env = "SLUICE_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Connections each HTTP worker serves at once; further connections wait in the listen
    /// backlog until one closes (ingest requests are short, so this bounds memory, not load).
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 25_000)]
    pub max_connections: usize,

    #[command(flatten)]
    pub cors: CorsArgs,

    /// Who may publish: a token's `sluice.publish` grants, from `Authorization: Bearer`.
    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Request limits. A request over any of them is refused whole, before anything reaches Kafka.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Largest request body, in bytes (413 above it).
    #[arg(long, env = "SLUICE_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most events in one request (413 above it).
    #[arg(long, env = "SLUICE_MAX_EVENTS_PER_REQUEST", default_value_t = 1000)]
    pub max_events_per_request: usize,

    /// Largest event `data`, serialised as compact JSON, in bytes (413 above it). Must stay
    /// below the broker's `message.max.bytes` (1 MB by default), headers and key included.
    #[arg(long, env = "SLUICE_MAX_EVENT_BYTES", default_value_t = 900 * 1024)]
    pub max_event_bytes: usize,

    /// Longest event key, in bytes (400 above it).
    #[arg(long, env = "SLUICE_MAX_KEY_BYTES", default_value_t = 1024)]
    pub max_key_bytes: usize,

    /// Longest event type, in bytes (400 above it).
    #[arg(long, env = "SLUICE_MAX_TYPE_BYTES", default_value_t = 256)]
    pub max_type_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_events_per_request: 1000,
            max_event_bytes: 900 * 1024,
            max_key_bytes: 1024,
            max_type_bytes: 256,
        }
    }
}

/// Headroom left in a Kafka record for the key, headers and record overhead.
const RECORD_OVERHEAD_BYTES: usize = 4 * 1024;

/// Kafka properties ingest sets from its own flags: refused in `--kafka-config`.
const FLAG_CONTROLLED: [(&str, &str); 7] = [
    ("linger.ms", "set it with --linger instead"),
    ("queue.buffering.max.ms", "set it with --linger instead"),
    ("compression.type", "set it with --compression instead"),
    ("compression.codec", "set it with --compression instead"),
    ("message.timeout.ms", "set it with --produce-timeout instead"),
    ("delivery.timeout.ms", "set it with --produce-timeout instead"),
    ("message.max.bytes", "set it with --max-event-bytes instead"),
];

impl IngestConfig {
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
            limits: Limits::default(),
            produce_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(5),
            compression: "lz4".into(),
            shutdown_timeout: Duration::from_secs(30),
            workers: 0,
            max_connections: 25_000,
            cors: CorsArgs::default(),
            auth: AuthArgs::anonymous(),
            log: LogArgs {
                format: sluice_runtime::logging::LogFormat::Human,
                filter: "info".into(),
            },
        }
    }

    /// Checks everything that can be checked without connecting. The message names the flag.
    pub fn validate(&self) -> Result<StreamCatalog, String> {
        self.kafka.validate().map_err(|e| e.to_string())?;
        CorsPolicy::new(&self.cors)?;
        self.kafka.refuse(&FLAG_CONTROLLED).map_err(|e| e.to_string())?;
        let catalog = StreamCatalog::new(&self.streams)?;
        let l = &self.limits;
        sluice_runtime::cli::require_positive(&[
            ("--max-body-bytes", l.max_body_bytes),
            ("--max-events-per-request", l.max_events_per_request),
            ("--max-event-bytes", l.max_event_bytes),
            ("--max-key-bytes", l.max_key_bytes),
            ("--max-type-bytes", l.max_type_bytes),
            ("--max-connections", self.max_connections),
        ])?;
        if l.max_event_bytes + l.max_key_bytes + RECORD_OVERHEAD_BYTES > 100 * 1024 * 1024 {
            return Err("--max-event-bytes plus --max-key-bytes must stay below 100 MiB".into());
        }
        if self.produce_timeout < Duration::from_millis(100) {
            return Err("--produce-timeout must be at least 100ms".into());
        }
        if self.linger >= self.produce_timeout {
            return Err("--linger must be shorter than --produce-timeout".into());
        }
        // Reads the key files, so a missing or bad one stops the service here, with exit 64.
        Authenticator::new(&self.auth)?;
        Ok(catalog)
    }

    /// Producer settings derived from the flags.
    pub fn producer_settings(&self) -> ProducerSettings {
        ProducerSettings {
            delivery_timeout: self.produce_timeout,
            linger: self.linger,
            compression: self.compression.clone(),
            max_message_bytes: self.limits.max_event_bytes + self.limits.max_key_bytes + RECORD_OVERHEAD_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn every_flag_parses_and_defaults_validate() {
        let config =
            IngestConfig::try_parse_from(["sluice-ingest", "--kafka-brokers", "k:9092", "--allow-anonymous"]).unwrap();
        config.validate().unwrap();
        assert_eq!(config.listen.port(), 8090);
        assert_eq!(config.admin_listen.port(), 9090);
    }

    #[test]
    fn rejects_zero_limits_and_bad_timeouts() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["sluice-ingest", "--kafka-brokers", "k:9092", "--allow-anonymous"];
            args.extend_from_slice(extra);
            IngestConfig::try_parse_from(args).unwrap().validate()
        };
        assert!(parse(&["--max-events-per-request", "0"])
            .unwrap_err()
            .contains("--max-events-per-request"));
        assert!(parse(&["--produce-timeout", "10ms"])
            .unwrap_err()
            .contains("--produce-timeout"));
        assert!(parse(&["--kafka-config", "acks=1"]).unwrap_err().contains("acks=…"));
        assert!(parse(&["--streams", "a/b"]).unwrap_err().contains("--streams"));
    }

    #[test]
    fn refuses_to_start_without_a_key_or_allow_anonymous() {
        let config = IngestConfig::try_parse_from(["sluice-ingest", "--kafka-brokers", "k:9092"]).unwrap();
        let err = config.validate().unwrap_err();
        assert!(
            err.contains("--allow-anonymous") && err.contains("--jwt-hmac-secret-file"),
            "{err}"
        );
        let config = IngestConfig::try_parse_from([
            "sluice-ingest",
            "--kafka-brokers",
            "k:9092",
            "--jwt-hmac-secret-file",
            "/nonexistent/secret",
        ])
        .unwrap();
        assert!(config.validate().unwrap_err().contains("--jwt-hmac-secret-file"));
    }

    #[test]
    fn brokers_are_required() {
        assert!(IngestConfig::try_parse_from(["sluice-ingest"]).is_err());
    }
}
