//! Everything a client controls before its stream starts: the query string (`from`, `since`,
//! `key`, `type`, `lastEventId`) and the `Last-Event-ID` header. Arbitrary input must give a
//! value or a `GatewayError`, never a panic. Input: query bytes, a NUL, header bytes.
#![no_main]

use actix_web::http::header::HeaderValue;
use libfuzzer_sys::fuzz_target;
use sluice_gateway::request::{cursor_text, parse_query, parse_since};
use sluice_sse::Cursor;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (query, header) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let query = String::from_utf8_lossy(query);
    let _ = parse_since(&query);
    let parsed = parse_query(&query);
    let last_event_id = parsed.as_ref().ok().and_then(|q| q.last_event_id.as_deref());
    let header = HeaderValue::from_bytes(header).ok();
    if let Ok(Some(text)) = cursor_text(header.as_ref(), last_event_id) {
        let _ = Cursor::decode(text);
    }
});
