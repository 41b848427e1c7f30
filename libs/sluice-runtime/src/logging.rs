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

/// Installs the global subscriber. Logs go to stderr so stdout stays free for machine-readable
/// lines such as `sluice-dev`'s `KAFKA_BOOTSTRAP=…`.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let filter = EnvFilter::try_new(&args.filter).map_err(|e| format!("--log {:?}: {e}", args.filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match args.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
