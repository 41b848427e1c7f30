//! What every Sluice binary shares, so each `main.rs` stays a dozen lines.
//!
//! - [`cli`]: parse flags and `SLUICE_*` env twins; bad configuration exits with code 64 and
//!   one line naming the problem.
//! - [`logging`]: `tracing` output, human or JSON.
//! - [`shutdown`]: SIGTERM/SIGINT become one [`CancellationToken`] fanned out to every task.
//! - [`admin`]: the admin listener (`/healthz`, `/readyz`, `/metrics`) and the readiness flag.
//! - [`net`]: binding listeners with a deep accept backlog.
//! - [`service`]: the shared `main` (flags, logging, listeners, signals, exit codes).
//! - [`error`]: the JSON error body every HTTP API answers with.
//! - [`cors`]: which web origins may call the APIs from a browser (`--allow-origins`).
//! - [`http`]: headers on every response and TCP keepalive on every accepted socket.
//! - [`process`]: process metrics (resident memory) beside each service's own.
//!
//! Nothing here knows about Kafka or SSE.

pub mod admin;
pub mod cli;
pub mod cors;
pub mod error;
pub mod http;
pub mod logging;
pub mod net;
pub mod process;
pub mod service;
pub mod shutdown;

pub use admin::{AdminServer, Readiness};
pub use tokio_util::sync::CancellationToken;
