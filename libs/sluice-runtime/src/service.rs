//! The `main` every Sluice service shares: flags → validation → tracing and logging → listeners
//! → run until a signal → drain → flush the spans → exit code. A service's binary is then one
//! line.

use std::fmt::Display;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};

use tokio_util::sync::CancellationToken;

use crate::cli::{config_error, parse_or_exit};
use crate::logging::LogArgs;

/// Accept backlog of the public listener: deep enough for a reconnect storm.
const PUBLIC_BACKLOG: u32 = 4096;
/// Accept backlog of the admin listener: probes and scrapes only.
const ADMIN_BACKLOG: u32 = 1024;

/// An error that may be the operator's configuration (exit code 64) rather than a failure.
pub trait ConfigFault {
    fn is_config(&self) -> bool;
}

/// A service binary: its configuration type knows how to validate and run it.
pub trait Service: clap::Parser + Send + 'static {
    type Error: Display + ConfigFault + Send;

    /// Checks everything that can be checked without connecting; the message names the flag.
    fn validate(&self) -> Result<(), String>;
    fn log(&self) -> &LogArgs;
    /// The public and admin listen addresses.
    fn listen(&self) -> (SocketAddr, SocketAddr);
    /// Serves on the bound listeners until `shutdown` is cancelled, then drains.
    fn run(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Runs service `S` as the process: exits 64 on bad configuration, 1 on failure, 0 after a
/// clean drain.
pub async fn main<S: Service>() {
    let config: S = parse_or_exit();
    if let Err(reason) = config.validate() {
        config_error(reason);
    }
    let telemetry = start_telemetry(S::command().get_name());
    if let Err(reason) = crate::logging::init_with_telemetry(config.log(), telemetry.as_ref()) {
        config_error(reason);
    }
    let (public, admin) = config.listen();
    let listener =
        crate::net::bind(public, PUBLIC_BACKLOG).unwrap_or_else(|e| config_error(format!("--listen {public}: {e}")));
    let admin_listener =
        crate::net::bind(admin, ADMIN_BACKLOG).unwrap_or_else(|e| config_error(format!("--admin-listen {admin}: {e}")));
    let shutdown = crate::shutdown::on_signal();
    let result = config.run(listener, admin_listener, shutdown).await;
    // After the drain: spans of the last requests are still batched.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    if let Err(err) = result {
        if err.is_config() {
            config_error(err);
        }
        tracing::error!(error = %err, "stopped with an error");
        std::process::exit(1);
    }
}

/// The OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set; a bad
/// `OTEL_*` value is a configuration error. `service_name` unless `OTEL_SERVICE_NAME` says
/// otherwise.
pub fn start_telemetry(service_name: &str) -> Option<sluice_telemetry::Telemetry> {
    match sluice_telemetry::init_from_env(service_name) {
        Ok(sluice_telemetry::Init::Enabled(telemetry)) => Some(telemetry),
        Ok(sluice_telemetry::Init::Disabled) => None,
        Err(err) => config_error(err),
    }
}
