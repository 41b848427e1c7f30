//! The record headers Sluice reads and writes: one definition for every producer (ingest, the
//! dev stack's ticker, the bench, producer services following the convention) and every reader
//! (the gateway, the tests).
//!
//! All three are optional on a record: the gateway maps a record without them as documented in
//! its `record` module.

/// The SSE event type (`event:`); absent means `message`.
pub const EVENT_TYPE: &str = "sse-event";
/// The media type of the value (`application/json` from ingest).
pub const CONTENT_TYPE: &str = "content-type";
/// The W3C trace context of the producer span that wrote the record.
pub const TRACEPARENT: &str = "traceparent";
