//! Trace and span ids on JSON log lines, so a log line joins its trace.
//!
//! [`WithTraceIds`] wraps a JSON event format: a line written inside a span that OpenTelemetry
//! knows gets `"trace_id"` and `"span_id"` fields. Lines outside any span, and every line while
//! tracing is off, are written by the inner format unchanged.
//!
//! The ids live in the OpenTelemetry layer of the same subscriber, which a formatter cannot
//! reach through `tracing`'s current dispatcher (inside a subscriber's callback that is the
//! no-op one, by design against re-entry); so the subscriber, once installed, is handed to the
//! format through [`Attach`].

use std::fmt;
use std::sync::{Arc, OnceLock};

use tracing::dispatcher::WeakDispatch;

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A JSON event format plus the current span's trace and span ids.
#[derive(Debug, Clone)]
pub struct WithTraceIds<F> {
    inner: F,
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

/// Hands the installed subscriber to its [`WithTraceIds`] format.
#[derive(Debug, Clone)]
pub struct Attach(Arc<OnceLock<WeakDispatch>>);

impl Attach {
    /// Call once the subscriber holding the format is the current default (after `try_init`,
    /// or inside `with_default`): until then lines carry no ids.
    pub fn to_current(&self) {
        let _ = self.0.set(tracing::dispatcher::get_default(|d| d.downgrade()));
    }
}

impl<F> WithTraceIds<F> {
    /// `inner` must write one JSON object per event.
    pub fn new(inner: F) -> (Self, Attach) {
        let dispatch = Arc::new(OnceLock::new());
        (
            Self {
                inner,
                dispatch: dispatch.clone(),
            },
            Attach(dispatch),
        )
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let ids = if crate::enabled() {
            self.dispatch.get().and_then(|d| current_ids(ctx, &d.upgrade()?))
        } else {
            None
        };
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            None => writer.write_str(&line),
        }
    }
}

fn current_ids<S, N>(ctx: &FmtContext<'_, S, N>, dispatch: &tracing::Dispatch) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let id = ctx.lookup_current()?.id();
    let cx = tracing_opentelemetry::get_otel_context(&id, dispatch)?;
    let span = cx.span();
    let context = span.span_context();
    context
        .is_valid()
        .then(|| (context.trace_id().to_string(), context.span_id().to_string()))
}
