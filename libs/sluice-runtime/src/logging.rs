//! Logs through `tracing`, for people (`human`) or for log pipelines (`json`), and — when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set — spans to OpenTelemetry through the same subscriber.
//! JSON lines written inside a traced span carry `trace_id` and `span_id`.
//!
//! No client may write ERROR lines at will: actix's HTTP/1 codec logs a malformed or oversized
//! request (which it already answers with 400 or a close) at ERROR, so its target is off unless
//! the filter names it; services log what clients cause at WARN or below, through a
//! [`RateLimit`] where a client can repeat it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// actix's HTTP/1 protocol handling: every line it logs is about one connection's bytes.
const CLIENT_PROTOCOL_TARGET: &str = "actix_http::h1";

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
    init_with_telemetry(args, None)
}

/// [`init`], plus the OpenTelemetry layer when tracing is on. `--log` filters log lines only:
/// the spans Sluice makes for tracing are exported whatever the log level.
pub fn init_with_telemetry(args: &LogArgs, telemetry: Option<&sluice_telemetry::Telemetry>) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(filter_directives(&args.filter)).map_err(|e| format!("--log {:?}: {e}", args.filter))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let mut attach = None;
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match args.format {
        LogFormat::Human => fmt.with_filter(filter).boxed(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false);
            let (format, handle) = sluice_telemetry::logs::WithTraceIds::new(json);
            attach = Some(handle);
            fmt.json().event_format(format).with_filter(filter).boxed()
        }
    };
    let mut layers = vec![logs];
    if let Some(telemetry) = telemetry {
        // Spans only: log events stay out of traces (they are in the logs, with the ids).
        let spans = tracing_subscriber::filter::filter_fn(|meta| meta.is_span());
        layers.push(telemetry.layer().with_filter(spans).boxed());
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    if let Some(attach) = attach {
        attach.to_current();
    }
    Ok(())
}

/// The operator's filter, with actix's per-connection protocol errors off unless it names them.
fn filter_directives(filter: &str) -> String {
    if filter.contains("actix_http") {
        filter.to_owned()
    } else if filter.trim().is_empty() {
        format!("{CLIENT_PROTOCOL_TARGET}=off")
    } else {
        format!("{filter},{CLIENT_PROTOCOL_TARGET}=off")
    }
}

/// Lets one log line through per interval and counts the ones it holds back, for lines that
/// clients can repeat (each connection that meets the same trouble would log it again).
#[derive(Debug)]
pub struct RateLimit {
    interval_ms: u64,
    /// Milliseconds since the epoch before which lines are held back.
    next_ms: AtomicU64,
    held_back: AtomicU64,
}

impl RateLimit {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval_ms: interval.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub fn check(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + self.interval_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actix_protocol_errors_are_off_unless_the_filter_names_them() {
        assert_eq!(filter_directives("info"), "info,actix_http::h1=off");
        assert_eq!(filter_directives(""), "actix_http::h1=off");
        assert_eq!(filter_directives("info,actix_http=debug"), "info,actix_http=debug");
        EnvFilter::try_new(filter_directives("warn,sluice_gateway=debug")).unwrap();
    }

    #[test]
    fn a_rate_limit_lets_one_line_through_per_interval_and_counts_the_rest() {
        let limit = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.check(), Some(0));
        assert_eq!(limit.check(), None);
        assert_eq!(limit.check(), None);
        assert_eq!(limit.held_back.load(Ordering::Relaxed), 2);
        let open = RateLimit::new(Duration::ZERO);
        assert_eq!(open.check(), Some(0));
        assert_eq!(open.check(), Some(0));
    }
}
