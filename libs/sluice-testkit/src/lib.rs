//! The test kit every Sluice test uses, so tests read as behaviour, not plumbing.
//!
//! - [`kafka::TestKafka`]: one Kafka fixture. By default librdkafka's mock cluster, in-process,
//!   over the real Kafka protocol (with fault injection). `SLUICE_TEST_KAFKA_BROKERS=host:port`
//!   runs the same tests against a real broker; `SLUICE_TEST_KAFKA=testcontainers` starts Apache
//!   Kafka in Docker and fails loudly when there is no Docker engine.
//! - [`service::RunningService`]: a service started in-process on `127.0.0.1:0`, stopped at will.
//! - [`process::Child`]: a Sluice binary run as a real process (end-to-end tests), with its
//!   stdout lines and signals.
//! - [`sse::SseStream`]: a real HTTP SSE client, parsing like a browser's `EventSource`.
//! - [`wait::eventually`]: wait for a condition with a deadline — never a sleep.
//! - [`browser::Browser`]: a real headless Chromium page, for the browser-facing tests.
//! - [`auth`]: committed test-only keys, [`auth::TestToken`] to mint tokens, and
//!   [`auth::JwksServer`], a local key set a test can rotate.
//! - [`proxy::RoundRobinProxy`]: an ingress stand-in — round robin, no stickiness — that records
//!   the requests passing through.
//! - [`otlp::OtlpReceiver`]: a test OTLP trace receiver (gRPC and HTTP/protobuf), keeping the
//!   spans the services export.
//! - [`procfs`]: a child process's threads, memory and TCP connections, read from `/proc`.

pub mod auth;
pub mod browser;
pub mod kafka;
pub mod otlp;
pub mod process;
pub mod procfs;
pub mod proxy;
pub mod service;
pub mod sse;
pub mod wait;

pub use sse::SseStream;

pub use kafka::{KafkaKind, ReadRecord, TestKafka};
pub use service::RunningService;
pub use wait::eventually;
