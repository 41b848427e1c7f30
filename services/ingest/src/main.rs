//! `sluice-ingest`: flags → logging → listeners → [`sluice_ingest::run`] until SIGTERM.

use sluice_ingest::IngestConfig;
use sluice_runtime::cli::{config_error, parse_or_exit};

#[tokio::main]
async fn main() {
    let config: IngestConfig = parse_or_exit();
    if let Err(reason) = config.validate() {
        config_error(reason);
    }
    if let Err(reason) = sluice_runtime::logging::init(&config.log) {
        config_error(reason);
    }
    let listener = sluice_runtime::net::bind(config.listen, 4096)
        .unwrap_or_else(|e| config_error(format!("--listen {}: {e}", config.listen)));
    let admin = sluice_runtime::net::bind(config.admin_listen, 1024)
        .unwrap_or_else(|e| config_error(format!("--admin-listen {}: {e}", config.admin_listen)));
    let shutdown = sluice_runtime::shutdown::on_signal();
    if let Err(err) = sluice_ingest::run(config, listener, admin, shutdown).await {
        if err.is_config() {
            config_error(err);
        }
        tracing::error!(error = %err, "sluice-ingest failed");
        std::process::exit(1);
    }
}
