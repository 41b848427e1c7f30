//! `sluice-gateway`: Kafka → Server-Sent Events.
//!
//! `GET /v1/streams/{stream}` streams a topic as SSE. Every event id is a cursor of Kafka
//! offsets (see `sluice-sse`), so a client resumes on any pod exactly where it stopped.
//!
//! Where things live:
//!
//! - [`kafka`] is the one Kafka boundary: a [`kafka::RecordSource`] yields [`kafka::Record`]s and
//!   positions. [`kafka::client`] is the real one (the only file calling rdkafka: one live
//!   consumer for every stream of the pod, catch-up readers, metadata);
//!   [`kafka::scripted`] is Kafka in memory for engine tests.
//! - The engine: [`hub::Hub`] keeps one [`feed::Feed`] per stream per pod, each record framed
//!   once ([`record`]) into the stream's [`ring::Ring`]; [`subscriber::Subscriber`] is one
//!   connection: it reads what memory no longer holds with a bounded catch-up reader, then
//!   follows the ring; key-filtered subscribers are reached through the key index.
//! - The HTTP side: [`server`] runs the listener and the drain; [`open`] turns a request into a
//!   subscriber (access, cursor, slot, and [`open::start_position`], the one place a stream's
//!   start is decided); several streams in one request run as [`lanes`], a subscriber per
//!   stream, read back by a [`multi::MultiStream`] (one SSE connection, combined cursor) or by a
//!   [`poll`] (JSON pages); [`access::Gatekeeper`] decides who the request is and what it may read;
//!   [`request`] parses the query; [`error`] maps every refusal to HTTP once.
//! - [`runtime::Runtime`] is what the parts share while running: metrics, the drain signal,
//!   the catch-up reader slots and the task trackers shutdown awaits.
//! - [`trace`]: OpenTelemetry spans (a consumer span per sampled record, one per stream opened),
//!   made only while tracing is on.

pub mod access;
pub mod body;
pub mod config;
pub mod demo;
pub mod error;
pub mod feed;
pub mod hub;
pub mod kafka;
pub mod lanes;
pub mod metrics;
pub mod multi;
pub mod open;
pub mod poll;
pub mod record;
pub mod request;
pub mod ring;
pub mod runtime;
pub mod server;
pub mod subscriber;
pub mod trace;

use std::net::TcpListener;

use sluice_runtime::CancellationToken;

pub use config::GatewayConfig;
pub use error::GatewayError;
pub use server::run;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot create Kafka clients: {0}")]
    Kafka(#[from] sluice_kafka::KafkaError),
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

impl sluice_runtime::service::ConfigFault for RunError {
    fn is_config(&self) -> bool {
        match self {
            RunError::Config(_) => true,
            RunError::Kafka(e) => e.is_config(),
            RunError::Io(_) => false,
        }
    }
}

impl sluice_runtime::service::Service for GatewayConfig {
    type Error = RunError;

    fn validate(&self) -> Result<(), String> {
        GatewayConfig::validate(self).map(|_| ())
    }

    fn log(&self) -> &sluice_runtime::logging::LogArgs {
        &self.log
    }

    fn listen(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        (self.listen, self.admin_listen)
    }

    async fn run(self, listener: TcpListener, admin: TcpListener, shutdown: CancellationToken) -> Result<(), RunError> {
        run(self, listener, admin, shutdown).await
    }
}
