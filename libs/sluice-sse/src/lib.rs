//! Sluice's Server-Sent Events wire format and cursor codec: pure functions over bytes, with no
//! I/O, no Kafka and no async, so every corner can be unit-tested, property-tested and fuzzed.
//!
//! - [`cursor`]: the SSE event id. A versioned, URL-safe encoding of the next Kafka offset to
//!   read in every partition of a stream, plus a stream fingerprint. Resuming at a cursor yields
//!   exactly the events after the one that carried it. [`MultiCursor`] (format version 2) is the
//!   one cursor of a connection reading several streams.
//! - [`frame`]: building SSE frames (`id:` / `event:` / `data:` lines, comments, `retry:`,
//!   id-only checkpoints). A frame is built once per Kafka record and shared as [`bytes::Bytes`]
//!   by every subscriber, so the builders size their buffer exactly and allocate once.
//! - [`parse`]: the reference client model. It follows the WHATWG "interpreting an event
//!   stream" algorithm, the way a browser's `EventSource` does, and is what tests here and in
//!   other crates use to read a stream back.
//!
//! Errors are typed per module: [`CursorError`] means a client sent a bad cursor (the gateway
//! answers `400`), [`FrameError`] means the caller passed an id or event type that could break
//! out of its line (a bug upstream: ingest already rejects such types).

pub mod cursor;
pub mod frame;
pub mod parse;

mod base64url;

pub use cursor::{stream_fingerprint, Cursor, CursorError, MultiCursor, MAX_STREAMS};
pub use frame::FrameError;
pub use parse::{parse_stream, ParsedEvent, ParsedStream, Parser};
