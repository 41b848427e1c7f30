//! W3C trace context (`traceparent`, `tracestate`) in and out of HTTP and Kafka record headers,
//! through OpenTelemetry's own propagator: Sluice parses no trace header by hand.
//!
//! The one exception is [`is_sampled`], which looks at a record header's flags byte before
//! anything is parsed or allocated: a record that is not sampled must cost the gateway nothing.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The remote context an incoming `traceparent` (and `tracestate`) carries; an absent or invalid
/// header gives an empty context (a span made under it starts a new trace).
pub fn extract(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    let mut carrier = HashMap::with_capacity(2);
    if let Some(value) = traceparent {
        carrier.insert(TRACEPARENT.to_owned(), value.to_owned());
    }
    if let Some(value) = tracestate {
        carrier.insert(TRACESTATE.to_owned(), value.to_owned());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// Whether a `traceparent` value's flags say "sampled", from its bytes alone (`00-` + 32 + `-` +
/// 16 + `-` + 2 hex digits; later versions may append fields, which the flags precede).
pub fn is_sampled(traceparent: &[u8]) -> bool {
    if traceparent.len() < 55 || traceparent[52] != b'-' || (traceparent.len() > 55 && traceparent[55] != b'-') {
        return false;
    }
    let hex = |b: u8| (b as char).to_digit(16);
    matches!((hex(traceparent[53]), hex(traceparent[54])), (Some(_), Some(low)) if low & 1 == 1)
}

/// The context of a Kafka record's `traceparent` header when it is valid and sampled; `None`,
/// without parsing, when it is absent or unsampled.
pub fn sampled_record_context(traceparent: Option<&[u8]>) -> Option<Context> {
    let bytes = traceparent.filter(|b| is_sampled(b))?;
    let cx = extract(Some(std::str::from_utf8(bytes).ok()?), None);
    let sampled = cx.span().span_context().is_valid() && cx.span().span_context().is_sampled();
    sampled.then_some(cx)
}

/// The headers that carry `cx` on (`traceparent`, and `tracestate` when it has entries); none
/// when `cx` holds no valid span.
pub fn inject(cx: &Context) -> Vec<(String, String)> {
    let mut carrier = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    let mut headers: Vec<(String, String)> = carrier.into_iter().collect();
    headers.sort(); // traceparent before tracestate
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    #[test]
    fn reads_the_sampled_flag_from_the_bytes() {
        assert!(is_sampled(SAMPLED.as_bytes()));
        assert!(!is_sampled(UNSAMPLED.as_bytes()));
        assert!(is_sampled(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"));
        assert!(is_sampled(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
        ));
        for bad in [
            &b""[..],
            b"01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            b"garbage",
        ] {
            assert!(!is_sampled(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_record_context_exists_only_for_a_valid_sampled_header() {
        let cx = sampled_record_context(Some(SAMPLED.as_bytes())).expect("sampled");
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sampled_record_context(Some(UNSAMPLED.as_bytes())).is_none());
        assert!(sampled_record_context(None).is_none());
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert!(sampled_record_context(Some(zero_trace.as_bytes())).is_none());
    }

    #[test]
    fn injects_what_it_extracts() {
        let cx = extract(Some(SAMPLED), Some("vendor=1"));
        assert_eq!(
            inject(&cx),
            vec![
                (TRACEPARENT.to_owned(), SAMPLED.to_owned()),
                (TRACESTATE.to_owned(), "vendor=1".to_owned())
            ]
        );
        assert!(inject(&extract(Some("garbage"), None)).is_empty());
    }
}
