//! Building Server-Sent Events frames, as the WHATWG HTML standard ("Server-sent events")
//! defines the `text/event-stream` format.
//!
//! A frame is a block of `field: value` lines ended by a blank line. The gateway builds one per
//! Kafka record, once, and every subscriber shares the resulting [`Bytes`]; so each builder
//! computes the exact length first and writes into a single allocation, and a cursor id is
//! base64-encoded straight into the frame ([`cursor_event_frame`]).
//!
//! # Invariants
//!
//! - **Content cannot break out of its field.** In SSE, CRLF, a lone CR and a lone LF all end
//!   a line. Data is split on every one of them and each piece gets its own `data:` line, which
//!   a client joins back with LF: data round-trips exactly, with line breaks normalised to LF as
//!   the standard does. Ids and event types are single-line by nature, so rather than silently
//!   rewriting them, a CR, LF or NUL there is a [`FrameError`] (ingest already refuses such
//!   types; the gateway maps foreign records before building frames). A NUL would make clients
//!   ignore an `id:` line, keeping a stale resume position.
//! - **One frame, at most one event.** Every event frame ends with exactly one blank line and
//!   always has at least one `data:` line (empty data is one empty `data:` line), so a client
//!   dispatches exactly one event per frame, even for empty data. Comments, `retry:` and
//!   checkpoints dispatch none.
//! - **Values keep their leading space.** A client strips one space after the colon, so every
//!   line is written `name: value` and a value starting with a space survives.
//!
//! The [`crate::parse`] module is the client side of this contract, and the tests here hold
//! the two against each other.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::cursor::Cursor;

/// An id or event type that would break the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The id contains CR, LF or NUL.
    #[error("SSE event id must not contain CR, LF or NUL")]
    InvalidId,
    /// The event type contains CR, LF or NUL.
    #[error("SSE event type must not contain CR, LF or NUL")]
    InvalidEventType,
}

const ID: &[u8] = b"id: ";
const EVENT: &[u8] = b"event: ";
const DATA: &[u8] = b"data: ";
const COMMENT: &[u8] = b": ";

/// The type a client assumes when a frame has no `event:` line.
const DEFAULT_EVENT_TYPE: &str = "message";

/// An event frame: `id:`, then `event:` unless the type is `None`, empty or `"message"` (all
/// of which a client reads as `message`), then one `data:` line per line of `data`, then a
/// blank line.
///
/// An empty `id` is legal SSE and resets the client's last event id; Sluice's own ids are
/// never empty.
pub fn event_frame(id: &str, event_type: Option<&str>, data: &str) -> Result<Bytes, FrameError> {
    check_single_line(id, FrameError::InvalidId)?;
    build_event(Id::Text(id), event_type, data)
}

/// [`event_frame`] with the cursor's text as the id, encoded directly into the frame. A
/// cursor's text is base64url, so only the event type can be refused.
pub fn cursor_event_frame(cursor: &Cursor, event_type: Option<&str>, data: &str) -> Result<Bytes, FrameError> {
    build_event(Id::Cursor(cursor), event_type, data)
}

/// An id-only frame, `id: <id>` and a blank line. A client takes the id as its last event id
/// (what it resumes from) without dispatching a message; filtered streams send these
/// periodically so a resume does not rescan data the filter dropped.
pub fn checkpoint_frame(id: &str) -> Result<Bytes, FrameError> {
    check_single_line(id, FrameError::InvalidId)?;
    let mut out = BytesMut::with_capacity(ID.len() + id.len() + 2);
    out.put_slice(ID);
    out.put_slice(id.as_bytes());
    out.put_slice(b"\n\n");
    Ok(out.freeze())
}

/// [`checkpoint_frame`] with a cursor, encoded directly into the frame.
pub fn cursor_checkpoint_frame(cursor: &Cursor) -> Bytes {
    let mut out = BytesMut::with_capacity(ID.len() + cursor.encoded_len() + 2);
    out.put_slice(ID);
    cursor.encode_into(&mut out);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// A comment block, for heartbeats: each line of `text` becomes a `: line` line, then a blank
/// line. Clients ignore comments, but the bytes keep proxies and load balancers from closing an
/// idle connection. Splitting `text` on line breaks is what keeps it a comment: a bare line
/// break would turn the rest of it into fields.
pub fn comment(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(lines_len(COMMENT, text) + 1);
    put_lines(&mut out, COMMENT, text);
    out.put_u8(b'\n');
    out.freeze()
}

/// `retry: <ms>` and a blank line: sets the client's reconnection delay.
pub fn retry_frame(ms: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(b"retry: \n\n".len() + 20);
    write!(out, "retry: {ms}\n\n").expect("writing to BytesMut cannot fail");
    out.freeze()
}

/// A delay spread evenly over `base_ms * (1 ± jitter_fraction)`, so clients told to retry at
/// the same moment (a pod draining, a full pod) come back spread out instead of together.
///
/// Pure: the caller supplies `random`, uniform in `[0, 1)`, which makes this testable and lets
/// the gateway use whatever generator it already has. `jitter_fraction` is clamped to
/// `[0, 1]` and `random` to `[0, 1]`; a non-finite `jitter_fraction` means no jitter, a
/// non-finite `random` means the middle of the range. The result saturates at `u64::MAX`.
pub fn jittered_retry(base_ms: u64, jitter_fraction: f64, random: f64) -> u64 {
    let jitter = if jitter_fraction.is_finite() {
        jitter_fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let random = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let factor = 1.0 - jitter + 2.0 * jitter * random;
    // `as` saturates float-to-int conversions, which is the behaviour wanted at the top end.
    (base_ms as f64 * factor).round() as u64
}

enum Id<'a> {
    Text(&'a str),
    Cursor(&'a Cursor),
}

fn build_event(id: Id<'_>, event_type: Option<&str>, data: &str) -> Result<Bytes, FrameError> {
    let event_type = match event_type {
        Some(t) if !t.is_empty() && t != DEFAULT_EVENT_TYPE => {
            check_single_line(t, FrameError::InvalidEventType)?;
            Some(t)
        }
        _ => None,
    };

    let id_len = match id {
        Id::Text(text) => text.len(),
        Id::Cursor(cursor) => cursor.encoded_len(),
    };
    let len = ID.len() + id_len + 1 + event_type.map_or(0, |t| EVENT.len() + t.len() + 1) + lines_len(DATA, data) + 1;

    let mut out = BytesMut::with_capacity(len);
    out.put_slice(ID);
    match id {
        Id::Text(text) => out.put_slice(text.as_bytes()),
        Id::Cursor(cursor) => cursor.encode_into(&mut out),
    }
    out.put_u8(b'\n');
    if let Some(t) = event_type {
        out.put_slice(EVENT);
        out.put_slice(t.as_bytes());
        out.put_u8(b'\n');
    }
    put_lines(&mut out, DATA, data);
    out.put_u8(b'\n');
    debug_assert_eq!(out.len(), len, "frame length precomputed wrongly");
    Ok(out.freeze())
}

fn check_single_line(value: &str, error: FrameError) -> Result<(), FrameError> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        Err(error)
    } else {
        Ok(())
    }
}

/// Bytes taken by `put_lines(prefix, text)`.
fn lines_len(prefix: &[u8], text: &str) -> usize {
    split_lines(text).map(|line| prefix.len() + line.len() + 1).sum()
}

fn put_lines(out: &mut BytesMut, prefix: &[u8], text: &str) {
    for line in split_lines(text) {
        out.put_slice(prefix);
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
}

/// Splits on CRLF, lone CR and lone LF, as an SSE client does; `n` line breaks give `n + 1`
/// pieces (the last possibly empty), so no break is lost. Unlike [`str::lines`], a lone CR
/// splits and a trailing break yields a final empty piece.
pub(crate) fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        let bytes = current.as_bytes();
        // CR and LF never occur inside a multi-byte UTF-8 sequence, so these byte positions
        // are char boundaries.
        match bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
            None => {
                rest = None;
                Some(current)
            }
            Some(i) => {
                let crlf = bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n');
                rest = Some(&current[i + if crlf { 2 } else { 1 }..]);
                Some(&current[..i])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::stream_fingerprint;
    use crate::parse::{parse_stream, ParsedEvent, Parser};
    use proptest::prelude::*;

    fn text(frame: &Bytes) -> &str {
        std::str::from_utf8(frame).unwrap()
    }

    /// What a client makes of `data`: every line break becomes LF.
    fn normalised(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    #[test]
    fn writes_id_type_and_data_lines() {
        let frame = event_frame("c1", Some("order.created"), "{\"a\":1}").unwrap();
        assert_eq!(text(&frame), "id: c1\nevent: order.created\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn omits_the_default_event_type() {
        for event_type in [None, Some("message"), Some("")] {
            let frame = event_frame("c1", event_type, "x").unwrap();
            assert_eq!(text(&frame), "id: c1\ndata: x\n\n");
        }
    }

    #[test]
    fn splits_data_on_every_kind_of_line_break() {
        let frame = event_frame("c1", None, "a\r\nb\rc\nd").unwrap();
        assert_eq!(text(&frame), "id: c1\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        let frame = event_frame("c1", None, "a\n").unwrap();
        assert_eq!(text(&frame), "id: c1\ndata: a\ndata: \n\n");
    }

    #[test]
    fn empty_data_still_dispatches_one_event() {
        let frame = event_frame("c1", None, "").unwrap();
        assert_eq!(text(&frame), "id: c1\ndata: \n\n");
        let parsed = parse_stream(&frame);
        assert_eq!(
            parsed.events,
            vec![ParsedEvent {
                id: Some("c1".into()),
                event_type: "message".into(),
                data: String::new(),
            }]
        );
    }

    #[test]
    fn refuses_ids_and_types_that_would_break_the_frame() {
        for bad in ["a\nb", "a\rb", "a\r\n", "\0", "x\0y"] {
            assert_eq!(event_frame(bad, None, "x"), Err(FrameError::InvalidId));
            assert_eq!(checkpoint_frame(bad), Err(FrameError::InvalidId));
            assert_eq!(event_frame("c1", Some(bad), "x"), Err(FrameError::InvalidEventType));
        }
    }

    #[test]
    fn cursor_frames_carry_the_cursor_text() {
        let cursor = Cursor::new(stream_fingerprint("orders"), vec![5, 9, 1_000_000]);
        let frame = cursor_event_frame(&cursor, Some("t"), "x").unwrap();
        assert_eq!(frame, event_frame(&cursor.encode(), Some("t"), "x").unwrap());
        assert_eq!(
            cursor_checkpoint_frame(&cursor),
            checkpoint_frame(&cursor.encode()).unwrap()
        );
        let parsed = parse_stream(&frame);
        let id = parsed.events[0].id.as_deref().unwrap();
        assert_eq!(Cursor::decode(id), Ok(cursor));
    }

    #[test]
    fn checkpoints_move_the_last_id_without_dispatching() {
        let mut stream = event_frame("c1", None, "x").unwrap().to_vec();
        stream.extend_from_slice(&checkpoint_frame("c2").unwrap());
        let parsed = parse_stream(&stream);
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.events[0].id.as_deref(), Some("c1"));
        assert_eq!(parsed.last_event_id.as_deref(), Some("c2"));
    }

    #[test]
    fn comments_keep_every_line_a_comment() {
        let frame = comment("keep\nalive\r\ndata: evil\rid: evil");
        assert_eq!(text(&frame), ": keep\n: alive\n: data: evil\n: id: evil\n\n");
        let parsed = parse_stream(&frame);
        assert!(parsed.events.is_empty());
        assert_eq!(parsed.last_event_id, None);
        assert_eq!(parsed.comments, vec!["keep", "alive", "data: evil", "id: evil"]);
        assert_eq!(text(&comment("")), ": \n\n");
    }

    #[test]
    fn retry_frame_sets_the_reconnection_time() {
        let frame = retry_frame(3_000);
        assert_eq!(text(&frame), "retry: 3000\n\n");
        let parsed = parse_stream(&frame);
        assert!(parsed.events.is_empty());
        assert_eq!(parsed.retry_ms, Some(3_000));
        assert_eq!(text(&retry_frame(u64::MAX)), "retry: 18446744073709551615\n\n");
    }

    #[test]
    fn jitter_spreads_around_the_base() {
        assert_eq!(jittered_retry(1_000, 0.2, 0.0), 800);
        assert_eq!(jittered_retry(1_000, 0.2, 0.5), 1_000);
        assert_eq!(jittered_retry(1_000, 0.2, 0.999_999), 1_200);
        assert_eq!(jittered_retry(1_000, 0.0, 0.9), 1_000);
        // Out-of-range and non-finite inputs are tamed rather than trusted.
        assert_eq!(jittered_retry(1_000, 5.0, 0.0), 0);
        assert_eq!(jittered_retry(1_000, -1.0, 0.7), 1_000);
        assert_eq!(jittered_retry(1_000, f64::NAN, 0.7), 1_000);
        assert_eq!(jittered_retry(1_000, 0.5, f64::NAN), 1_000);
        assert_eq!(jittered_retry(1_000, 0.5, 7.0), 1_500);
        assert_eq!(jittered_retry(u64::MAX, 1.0, 0.99), u64::MAX);
    }

    fn data() -> impl Strategy<Value = String> {
        // Weighted toward the characters that matter: line breaks, colons, spaces, NUL.
        let piece = prop_oneof![
            Just("\r".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just(" ".to_string()),
            Just(":".to_string()),
            Just("\0".to_string()),
            Just("data: x".to_string()),
            Just("\u{FEFF}".to_string()),
            any::<String>(),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
    }

    fn single_line() -> impl Strategy<Value = String> {
        "[^\r\n\0]{0,20}"
    }

    fn with_line_break() -> impl Strategy<Value = String> {
        ("[^\r\n\0]{0,8}", prop_oneof!["\r", "\n", "\r\n", "\0"], ".{0,8}").prop_map(|(a, b, c)| format!("{a}{b}{c}"))
    }

    proptest! {
        #[test]
        fn data_round_trips_through_a_client(
            id in "[^\r\n\0]{1,20}",
            event_type in proptest::option::of(single_line()),
            data in data(),
        ) {
            let frame = event_frame(&id, event_type.as_deref(), &data).unwrap();
            let parsed = parse_stream(&frame);
            let expected_type = match event_type.as_deref() {
                None | Some("") => "message",
                Some(t) => t,
            };
            prop_assert_eq!(parsed.events, vec![ParsedEvent {
                id: Some(id.clone()),
                event_type: expected_type.to_string(),
                data: normalised(&data),
            }]);
            prop_assert_eq!(parsed.last_event_id, Some(id));
        }

        #[test]
        fn frames_in_a_row_dispatch_one_event_each(
            datas in proptest::collection::vec(data(), 1..8),
            split in any::<prop::sample::Index>(),
        ) {
            let mut stream = Vec::new();
            for (i, data) in datas.iter().enumerate() {
                stream.extend_from_slice(&event_frame(&i.to_string(), None, data).unwrap());
                stream.extend_from_slice(&comment(data));
                stream.extend_from_slice(&checkpoint_frame(&format!("cp{i}")).unwrap());
            }
            let parsed = parse_stream(&stream);
            let got: Vec<String> = parsed.events.iter().map(|e| e.data.clone()).collect();
            let want: Vec<String> = datas.iter().map(|d| normalised(d)).collect();
            prop_assert_eq!(got, want);
            for (i, event) in parsed.events.iter().enumerate() {
                prop_assert_eq!(event.id.clone(), Some(i.to_string()));
            }
            prop_assert_eq!(parsed.last_event_id, Some(format!("cp{}", datas.len() - 1)));

            // Fed in two chunks split anywhere (even inside a CRLF or a UTF-8 sequence), a
            // client sees the same events.
            let at = split.index(stream.len() + 1);
            let mut parser = Parser::new();
            let mut events = parser.feed(&stream[..at]);
            events.extend(parser.feed(&stream[at..]));
            prop_assert_eq!(events, parsed.events);
        }

        #[test]
        fn refuses_any_id_or_type_with_a_line_break_or_nul(bad in with_line_break()) {
            prop_assert_eq!(event_frame(&bad, None, "x"), Err(FrameError::InvalidId));
            prop_assert_eq!(checkpoint_frame(&bad), Err(FrameError::InvalidId));
            prop_assert_eq!(event_frame("c1", Some(&bad), "x"), Err(FrameError::InvalidEventType));
        }

        #[test]
        fn checkpoints_dispatch_nothing(id in "[^\r\n\0]{1,20}") {
            let parsed = parse_stream(&checkpoint_frame(&id).unwrap());
            prop_assert!(parsed.events.is_empty());
            prop_assert_eq!(parsed.last_event_id, Some(id));
        }

        #[test]
        fn comments_dispatch_nothing(text in data()) {
            let parsed = parse_stream(&comment(&text));
            prop_assert!(parsed.events.is_empty());
            prop_assert_eq!(parsed.last_event_id, None);
            let lines: Vec<String> = split_lines(&text).map(str::to_string).collect();
            prop_assert_eq!(parsed.comments, lines);
        }

        #[test]
        fn jitter_stays_in_range(base in 0u64..10_000_000, jitter in 0.0f64..=1.0, random in 0.0f64..1.0) {
            let ms = jittered_retry(base, jitter, random) as f64;
            let base = base as f64;
            prop_assert!(ms >= (base * (1.0 - jitter)).floor());
            prop_assert!(ms <= (base * (1.0 + jitter)).ceil());
        }
    }
}
