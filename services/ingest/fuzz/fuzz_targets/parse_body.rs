//! Any request body, in either format and under default or tiny limits, must parse to events or
//! a typed error, never panic; and what it accepts obeys the contract: within the limits, and
//! each event's data is valid JSON found verbatim in the body (stored as sent, never rewritten).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_ingest::config::Limits;
use sluice_ingest::event::{parse_body, BodyFormat};

fuzz_target!(|input: &[u8]| {
    let Some((&selector, body)) = input.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 { BodyFormat::Json } else { BodyFormat::NdJson };
    let limits = if selector & 2 == 0 {
        Limits::default()
    } else {
        Limits {
            max_body_bytes: 4096,
            max_events_per_request: 3,
            max_event_bytes: 16,
            max_key_bytes: 4,
            max_type_bytes: 4,
        }
    };
    let Ok(events) = parse_body(body, format, &limits) else {
        return;
    };
    assert!(!events.is_empty() && events.len() <= limits.max_events_per_request);
    for event in &events {
        assert!(event.data.len() <= limits.max_event_bytes);
        // The JSON grammar, not f64: numbers have no range in JSON (`1e400` is valid and is kept
        // as sent), so validity is checked without converting them.
        serde_json::from_slice::<&serde_json::value::RawValue>(&event.data).expect("data is valid JSON");
        assert!(
            body.windows(event.data.len()).any(|w| w == event.data.as_slice()),
            "data is a slice of the body"
        );
        for text in [&event.event_type, &event.key].into_iter().flatten() {
            assert!(!text.is_empty() && !text.contains(['\r', '\n', '\0']));
        }
    }
});
