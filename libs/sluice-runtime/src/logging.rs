//! Logs through `tracing`, for people (`human`) or for log pipelines (`json`).

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Logging flags, flattened into every binary's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format: `human` for terminals, `json` for one JSON object per line.
    #[arg(long = "log-format", env = "SLUICE_LOG_FORMAT", value_enum, default_value = "human")]
    pub format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info` or `info,sluice_ingest=debug`.
    #[arg(long = "log", env = "SLUICE_LOG", default_value = "info")]
    pub filter: String,
}

/// actix-http logs at ERROR what clients cause at will: every malformed request ("stream error:
/// request parse error"), an oversized head, a peer that stops reading. Each is already answered
/// (400, 408, 431) or is the peer's loss, so an attacker could fill the logs and page on-call with
/// it. Its HTTP/1 internals are silenced unless the filter names `actix_http` itself.
const QUIET_CLIENT_ERRORS: &str = "actix_http::h1=off";

/// The filter to install: the operator's, after the default silencing of client-caused errors.
fn effective_filter(given: &str) -> String {
    if given.contains("actix_http") {
        given.to_owned()
    } else {
        format!("{QUIET_CLIENT_ERRORS},{given}")
    }
}

/// Installs the global subscriber. Logs go to stderr so stdout stays free for machine-readable
/// lines such as `sluice-dev`'s `KAFKA_BOOTSTRAP=…`.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(effective_filter(&args.filter)).map_err(|e| format!("--log {:?}: {e}", args.filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match args.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_caused_actix_errors_are_silenced_unless_asked_for() {
        assert_eq!(effective_filter("info"), "actix_http::h1=off,info");
        assert_eq!(effective_filter("debug,actix_http=trace"), "debug,actix_http=trace");
        EnvFilter::try_new(effective_filter("info,sluice_ingest=debug")).unwrap();
    }
}
