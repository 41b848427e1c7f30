//! Everything a client controls before its stream or poll starts: the query string (`from`,
//! `since`, `key`, `type`, `lastEventId`, a poll's `cursor`, `limit` and `wait`), the streams
//! of the path, and the `Last-Event-ID` header. Arbitrary input must give a value or a
//! `GatewayError`, never a panic. Input: query bytes, a NUL, header bytes.
#![no_main]

use actix_web::http::header::HeaderValue;
use libfuzzer_sys::fuzz_target;
use sluice_gateway::request::{cursor_text, parse_query, parse_since, stream_names, PollQuery};
use sluice_sse::{Cursor, MultiCursor};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (query, header) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let query = String::from_utf8_lossy(query);
    let _ = parse_since(&query);
    let _ = stream_names(&query, 8);
    let parsed = parse_query(&query);
    if let Ok(parsed) = &parsed {
        let _ = PollQuery::parse(&parsed.poll, 1000, std::time::Duration::from_secs(30));
    }
    let last_event_id = parsed.as_ref().ok().and_then(|q| q.last_event_id.as_deref());
    let header = HeaderValue::from_bytes(header).ok();
    if let Ok(Some(text)) = cursor_text(header.as_ref(), last_event_id) {
        let _ = Cursor::decode(text);
        let _ = MultiCursor::decode(text);
    }
});
