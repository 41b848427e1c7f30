//! OpenTelemetry traces for Sluice, configured only by the standard `OTEL_*` variables.
//!
//! - [`config`]: the variables, checked at start (a bad value is a configuration error).
//! - [`Telemetry`]: the tracer provider with a batch exporter (OTLP over gRPC, HTTP/protobuf
//!   or HTTP/JSON), the `tracing` layer that turns Sluice's spans into OpenTelemetry spans, and
//!   the flush the drain calls.
//! - [`propagation`]: W3C `traceparent` in and out of HTTP headers and Kafka record headers.
//! - [`logs`]: trace and span ids on JSON log lines written inside a span.
//!
//! Without an endpoint nothing is built: no exporter, no batch thread, no layer, and
//! [`enabled`] is `false`, which the services check before making any span — so tracing that is
//! off costs one relaxed atomic load where a span would be.

pub mod config;
pub mod logs;
pub mod propagation;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::registry::LookupSpan;

pub use config::{ConfigError, Protocol, Settings};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans. Checked before making a span, so tracing that is off
/// allocates nothing.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// A running trace pipeline: spans → batch processor → OTLP exporter.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// The outcome of [`init_from_env`].
#[derive(Debug)]
pub enum Init {
    /// No endpoint: nothing was built.
    Disabled,
    Enabled(Telemetry),
}

/// Reads the environment and, when it names an endpoint, starts exporting. Must be called inside
/// a tokio runtime (the gRPC channel's connection task runs on it).
pub fn init_from_env(default_service_name: &str) -> Result<Init, TelemetryError> {
    init(Settings::from_env(default_service_name)?)
}

/// Starts exporting for `settings`; `None` (no endpoint) builds nothing.
pub fn init(settings: Option<Settings>) -> Result<Init, TelemetryError> {
    match settings {
        None => Ok(Init::Disabled),
        Some(settings) => Ok(Init::Enabled(Telemetry::start(&settings)?)),
    }
}

impl Telemetry {
    /// Builds the exporter and provider for `settings` and marks tracing enabled.
    pub fn start(settings: &Settings) -> Result<Self, TelemetryError> {
        let exporter = exporter(settings)?;
        // The SDK's batch processor: its own thread, a bounded queue (spans beyond it are
        // dropped, never block a request), OTEL_BSP_* honoured.
        let processor = BatchSpanProcessor::builder(exporter).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(settings.sampler.clone())
            .with_resource(resource(&settings.default_service_name))
            .build();
        let tracer = provider.tracer("sluice");
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Self { provider, tracer })
    }

    /// The `tracing` layer that makes Sluice's spans OpenTelemetry spans.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            .with_threads(false)
            .with_location(false)
    }

    /// Exports every span still batched, then stops the exporter: the last thing a drain does.
    /// The SDK blocks while it exports, so it runs off the async workers (the gRPC exporter
    /// needs them free to drive its connection).
    pub async fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || {
            let flushed = provider.force_flush();
            let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
            flushed
        })
        .await;
        match flushed {
            Ok(Ok(())) => tracing::debug!("spans flushed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "could not export every span at shutdown"),
            Err(err) => tracing::warn!(error = %err, "span flush task failed"),
        }
    }
}

fn exporter(settings: &Settings) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    // The endpoint, headers, timeout and compression come from the environment as the
    // specification says; only the protocol is set here, once checked.
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match settings.protocol {
        Protocol::Grpc => builder.with_tonic().build()?,
        Protocol::HttpProtobuf => builder
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?,
        Protocol::HttpJson => builder
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
            .build()?,
    };
    Ok(exporter)
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, SDK attributes), with
/// the service's own name where the operator gave none.
fn resource(default_service_name: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(default_service_name.to_owned())
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|name| name.starts_with("OpenTelemetry"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Writes what the logger formats into a shared buffer.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Part of the test below: trace ids need tracing on, which is process-wide.
    fn json_lines_in_a_span_carry_its_ids(telemetry: &Telemetry) {
        use tracing_subscriber::layer::SubscriberExt as _;
        let capture = Capture::default();
        let writer = capture.clone();
        let json = tracing_subscriber::fmt::format().json().flatten_event(true);
        let (format, attach) = logs::WithTraceIds::new(json);
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(format)
                    .with_writer(move || writer.clone()),
            )
            .with(telemetry.layer());
        tracing::subscriber::with_default(subscriber, || {
            attach.to_current();
            tracing::info!("outside");
            let span = tracing::info_span!("work");
            span.in_scope(|| tracing::info!("inside"));
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["trace_id"].as_str().map(str::len), Some(32), "{text}");
        assert_eq!(lines[1]["span_id"].as_str().map(str::len), Some(16), "{text}");
    }

    #[tokio::test]
    async fn without_an_endpoint_nothing_is_built_and_with_one_the_exporter_runs() {
        let none = Settings::from_lookup("sluice-test", |_| None).unwrap();
        assert!(matches!(init(none).unwrap(), Init::Disabled));
        assert!(!enabled());
        assert_eq!(batch_threads(), 0, "no batch processor thread without an endpoint");

        let endpoint = |name: &str| (name == config::ENDPOINT).then(|| "http://127.0.0.1:9".to_owned());
        let Init::Enabled(telemetry) = init(Settings::from_lookup("sluice-test", endpoint).unwrap()).unwrap() else {
            panic!("an endpoint enables tracing");
        };
        assert!(enabled());
        // A thread names itself once it runs: wait for the name, with a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while batch_threads() == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(batch_threads(), 1);
        json_lines_in_a_span_carry_its_ids(&telemetry);
        telemetry.shutdown().await;
        assert!(!enabled());
    }
}
