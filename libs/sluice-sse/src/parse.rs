//! The reference client model: a parser for `text/event-stream` that follows the WHATWG HTML
//! standard's "interpreting an event stream" algorithm, as a browser's `EventSource` does.
//!
//! It exists for tests, here and in other crates: whatever the gateway sends, this is what a
//! conforming client makes of it. Keeping it next to [`crate::frame`] means the writer and the
//! reader are checked against each other, and no other crate writes its own half-parser.
//!
//! What it models, straight from the standard:
//!
//! - The stream is UTF-8, decoded with replacement characters; one leading byte order mark is
//!   skipped.
//! - CRLF, lone CR and lone LF each end a line, also when a chunk boundary falls inside a CRLF.
//! - `field: value` with one leading space of the value removed; a line without a colon is a
//!   field with an empty value; a line starting with a colon is a comment; unknown fields and
//!   field names in another case are ignored.
//! - `data` lines accumulate, joined with LF; `event` sets the type; `id` sets the last event id
//!   unless its value contains NUL; `retry` sets the reconnection time if it is all digits.
//! - A blank line first makes the buffered id the last event id, then dispatches an event only
//!   if some `data` line was seen. So an id-only frame (a checkpoint) moves the last event id
//!   without dispatching anything, and an event's `id` is the last event id at its dispatch.
//! - An incomplete event at the end of the input is discarded.
//!
//! An empty last event id is represented as `None`: a client does not send an empty
//! `Last-Event-ID` when it reconnects.

/// One dispatched event, as a `MessageEvent` would present it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The last event id at dispatch (`MessageEvent.lastEventId`): this event's `id:` or, if
    /// it had none, the one before it. `None` when empty.
    pub id: Option<String>,
    /// The `event:` type, `"message"` when the frame had none.
    pub event_type: String,
    /// The `data:` lines joined with LF.
    pub data: String,
}

/// Everything a client takes from a complete stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedStream {
    /// Dispatched events, in order.
    pub events: Vec<ParsedEvent>,
    /// What the client would send as `Last-Event-ID` on reconnecting: changed by every
    /// dispatch, including id-only frames that dispatch no event.
    pub last_event_id: Option<String>,
    /// The last valid `retry:` value, in milliseconds.
    pub retry_ms: Option<u64>,
    /// Comment lines, without the colon and one following space. Clients ignore them; tests
    /// use them to see heartbeats.
    pub comments: Vec<String>,
}

/// Parses a complete stream in one go. See [`Parser`] for a stream read in chunks.
pub fn parse_stream(input: &[u8]) -> ParsedStream {
    let mut parser = Parser::new();
    let events = parser.feed(input);
    ParsedStream {
        events,
        last_event_id: parser.last_event_id().map(str::to_string),
        retry_ms: parser.retry_ms(),
        comments: parser.take_comments(),
    }
}

/// An incremental parser, for reading a live response chunk by chunk. Chunk boundaries may
/// fall anywhere, including inside a CRLF or a UTF-8 sequence.
#[derive(Debug, Clone, Default)]
pub struct Parser {
    /// Bytes of the current, unterminated line. Kept as bytes, not text: a chunk may end in the
    /// middle of a UTF-8 sequence, and CR/LF never occur inside one, so decoding whole lines is
    /// the same as decoding the whole stream.
    line: Vec<u8>,
    /// The previous chunk ended with CR; an LF starting this one completes that CRLF, not a
    /// second (blank) line.
    after_cr: bool,
    /// Whether the first line has been seen, which is where a byte order mark may sit.
    started: bool,
    data: String,
    event_type: String,
    id_buffer: String,
    last_event_id: String,
    retry_ms: Option<u64>,
    comments: Vec<String>,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes the next chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<ParsedEvent> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.line.extend_from_slice(&rest[..i]);
            let crlf = rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n');
            if rest[i] == b'\r' && i + 1 == rest.len() {
                self.after_cr = true;
            }
            rest = &rest[i + if crlf { 2 } else { 1 }..];
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&line) {
                events.push(event);
            }
        }
        self.line.extend_from_slice(rest);
        events
    }

    /// The client's current last event id (`None` when empty).
    pub fn last_event_id(&self) -> Option<&str> {
        Some(self.last_event_id.as_str()).filter(|id| !id.is_empty())
    }

    /// The last valid `retry:` value seen, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Comments seen since the last call.
    pub fn take_comments(&mut self) -> Vec<String> {
        std::mem::take(&mut self.comments)
    }

    fn process_line(&mut self, line: &[u8]) -> Option<ParsedEvent> {
        let mut line = line;
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            return self.dispatch();
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "" => self.comments.push(value.to_string()),
            "event" => value.clone_into(&mut self.event_type),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => value.clone_into(&mut self.id_buffer),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Digits beyond u64 are as good as "never": ignore rather than wrap.
                if let Ok(ms) = value.parse() {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<ParsedEvent> {
        self.last_event_id.clone_from(&self.id_buffer);
        let event_type = std::mem::take(&mut self.event_type);
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        Some(ParsedEvent {
            id: self.last_event_id().map(str::to_string),
            event_type: if event_type.is_empty() {
                "message".to_string()
            } else {
                event_type
            },
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, event_type: &str, data: &str) -> ParsedEvent {
        ParsedEvent {
            id: id.map(str::to_string),
            event_type: event_type.to_string(),
            data: data.to_string(),
        }
    }

    #[test]
    fn follows_the_standards_examples() {
        // From the HTML standard's event stream examples.
        let parsed = parse_stream(b"data: YHOO\ndata: +2\ndata: 10\n\n");
        assert_eq!(parsed.events, vec![event(None, "message", "YHOO\n+2\n10")]);

        let parsed = parse_stream(
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        );
        assert_eq!(
            parsed.events,
            vec![
                event(Some("1"), "message", "first event"),
                event(None, "message", "second event"),
                event(None, "message", " third event"),
            ]
        );
        assert_eq!(parsed.comments, vec!["test stream"]);

        // A bare `data` line is data with an empty value: the first event has empty data,
        // the second two empty lines, "\n". The trailing `data:` has no blank line after it,
        // so it is discarded.
        let parsed = parse_stream(b"data\n\ndata\ndata\n\ndata:");
        assert_eq!(
            parsed.events,
            vec![event(None, "message", ""), event(None, "message", "\n")]
        );

        // Identical events: one space after the colon is dropped, no more.
        let parsed = parse_stream(b"data:test\n\ndata: test\n\n");
        assert_eq!(
            parsed.events,
            vec![event(None, "message", "test"), event(None, "message", "test")]
        );
    }

    #[test]
    fn any_line_break_ends_a_line() {
        let parsed = parse_stream(b"event: a\rdata: 1\r\ndata: 2\n\r\n");
        assert_eq!(parsed.events, vec![event(None, "a", "1\n2")]);
    }

    #[test]
    fn a_leading_bom_is_skipped_once() {
        let parsed = parse_stream(b"\xEF\xBB\xBFdata: x\n\n");
        assert_eq!(parsed.events, vec![event(None, "message", "x")]);
        // A second BOM is part of the field name, which makes it unknown.
        let parsed = parse_stream(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n");
        assert!(parsed.events.is_empty());
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let parsed = parse_stream(b"data: a\xFFb\n\n");
        assert_eq!(parsed.events, vec![event(None, "message", "a\u{FFFD}b")]);
    }

    #[test]
    fn ids_persist_and_nul_ids_are_ignored() {
        let parsed = parse_stream(b"id: 7\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\n");
        assert_eq!(
            parsed.events,
            vec![
                event(Some("7"), "message", "a"),
                event(Some("7"), "message", "b"),
                event(Some("7"), "message", "c"),
            ]
        );
    }

    #[test]
    fn an_id_only_block_moves_the_last_id_without_dispatching() {
        let parsed = parse_stream(b"id: 1\ndata: a\n\nid: 2\n\n");
        assert_eq!(parsed.events, vec![event(Some("1"), "message", "a")]);
        assert_eq!(parsed.last_event_id.as_deref(), Some("2"));
        // An empty id resets it.
        let parsed = parse_stream(b"id: 1\n\nid\n\n");
        assert_eq!(parsed.last_event_id, None);
    }

    #[test]
    fn an_event_type_without_data_is_forgotten() {
        let parsed = parse_stream(b"event: a\n\ndata: x\n\n");
        assert_eq!(parsed.events, vec![event(None, "message", "x")]);
    }

    #[test]
    fn retry_takes_only_digits() {
        assert_eq!(parse_stream(b"retry: 1500\n").retry_ms, Some(1500));
        assert_eq!(parse_stream(b"retry: 10\nretry: 1x\n").retry_ms, Some(10));
        assert_eq!(parse_stream(b"retry: -1\n").retry_ms, None);
        assert_eq!(parse_stream(b"retry:\n").retry_ms, None);
        assert_eq!(parse_stream(b"retry: 99999999999999999999999\n").retry_ms, None);
    }

    #[test]
    fn field_names_are_case_sensitive_and_unknown_ones_ignored() {
        let parsed = parse_stream(b"Data: x\nfoo: y\ndata: z\n\n");
        assert_eq!(parsed.events, vec![event(None, "message", "z")]);
    }

    #[test]
    fn chunks_may_split_a_crlf() {
        let mut parser = Parser::new();
        assert!(parser.feed(b"data: a\r").is_empty());
        // The LF completes the CRLF above; only the next CR is the blank line.
        assert!(parser.feed(b"\n").is_empty());
        assert_eq!(parser.feed(b"\r"), vec![event(None, "message", "a")]);
        assert!(parser.feed(b"\ndata: b\n").is_empty());
        assert_eq!(parser.feed(b"\n"), vec![event(None, "message", "b")]);
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert!(parse_stream(b"id: 1\ndata: a\n").events.is_empty());
        assert_eq!(parse_stream(b"id: 1\ndata: a\n").last_event_id, None);
    }
}
