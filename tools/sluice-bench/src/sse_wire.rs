//! The client side of an SSE stream, over raw bytes: response head, chunked transfer coding,
//! SSE frames, and the bench's own event payload.
//!
//! Holder processes keep thousands of streams open each, so a connection is a plain
//! `TcpStream` plus a few small buffers rather than an HTTP client's machinery: every byte a
//! holder allocates per connection is a byte of memory the machine cannot give the gateway
//! under test. Everything here is pure, incremental (bytes arrive in arbitrary pieces) and
//! unit-tested; the I/O lives in [`crate::hold`].
//!
//! The payload carries the bench's measurement in its JSON `data`:
//! `{"lane":L,"seq":S,"sent_us":T,"pad":"…"}` — the lane (one event key per lane, so each
//! lane lives in one partition and keeps its order), the sequence number within the lane, and
//! the publisher's wall clock in microseconds since the epoch when it sent the event. Fields
//! are found by name, not position: ingest may re-serialise the JSON with its keys reordered.

/// The parts of an HTTP/1.1 response head the holder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub chunked: bool,
    pub content_type: Option<String>,
}

/// Longest response head accepted; real ones are a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Parses a response head if `buffer` holds a complete one: `Ok(Some((head, head_len)))`,
/// `Ok(None)` when more bytes are needed, `Err` when it is not HTTP or too long.
pub fn parse_response_head(buffer: &[u8]) -> Result<Option<(ResponseHead, usize)>, String> {
    let Some(end) = find(buffer, b"\r\n\r\n") else {
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(format!("response head longer than {MAX_HEAD_BYTES} bytes"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buffer[..end]).map_err(|_| "response head is not UTF-8".to_owned())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut head = ResponseHead {
        status,
        chunked: false,
        content_type: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(value.to_owned());
        }
    }
    Ok(Some((head, end + 4)))
}

/// Decodes `Transfer-Encoding: chunked` incrementally.
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size.
    #[default]
    Size,
    /// Skipping chunk extensions up to the size line's `\n`.
    SizeLine,
    /// Copying `size` more data bytes.
    Data,
    /// Expecting the `\r\n` that ends a chunk's data.
    DataEnd,
    /// The last chunk (size 0) was seen: the body is complete.
    Done,
}

impl ChunkedDecoder {
    /// Appends the data bytes found in `input` to `out`. Errors on malformed framing.
    pub fn decode(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let byte = input[0];
                    input = &input[1..];
                    match byte {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let digit = (byte as char).to_digit(16).expect("hex digit") as u64;
                            self.size = self
                                .size
                                .checked_mul(16)
                                .and_then(|size| size.checked_add(digit))
                                .ok_or("chunk size overflows")?;
                        }
                        b';' | b'\r' | b' ' | b'\t' => self.state = ChunkState::SizeLine,
                        b'\n' => self.end_size_line(),
                        other => return Err(format!("bad byte {other:#04x} in a chunk size")),
                    }
                }
                ChunkState::SizeLine => {
                    match input.iter().position(|&b| b == b'\n') {
                        Some(at) => {
                            input = &input[at + 1..];
                            self.end_size_line();
                        }
                        None => input = &[],
                    };
                }
                ChunkState::Data => {
                    let take = input.len().min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let byte = input[0];
                    input = &input[1..];
                    match byte {
                        b'\r' => {}
                        b'\n' => self.state = ChunkState::Size,
                        other => return Err(format!("chunk data not followed by CRLF but {other:#04x}")),
                    }
                }
                // Trailers after the last chunk are ignored.
                ChunkState::Done => return Ok(()),
            }
        }
        Ok(())
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::Done
        } else {
            ChunkState::Data
        };
    }

    /// Whether the terminating zero-size chunk has been seen.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// What one SSE frame (or comment line) amounted to.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A frame with data: an event. `data` joins multi-line data with `\n`, per the spec;
    /// `id` is the frame's `id:` value, if it had one.
    Event { data: &'a [u8], id: Option<&'a [u8]> },
    /// A frame with an `id:` but no data: a checkpoint.
    IdOnly { id: &'a [u8] },
    /// A frame of the gateway's own markers (`sluice.caught-up`, `sluice.reauth`): not an event
    /// of the stream, so not counted as one. (`sluice.binary` and `sluice.tombstone` are.)
    Control { id: Option<&'a [u8]> },
    /// A frame with only `retry:` (the gateway's first frame).
    Retry,
    /// A comment line (`:` …), which is how heartbeats travel.
    Comment,
}

/// Splits an SSE body into frames, incrementally.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet terminated.
    partial: Vec<u8>,
    /// The data of the frame being assembled.
    data: Vec<u8>,
    /// The `id:` value of the frame being assembled (allocated on the first id only).
    id: Vec<u8>,
    has_data: bool,
    has_id: bool,
    has_retry: bool,
    /// The frame's `event:` names one of the gateway's own markers.
    control: bool,
}

impl SseParser {
    /// Feeds body bytes, calling `on_frame` for every frame and comment they complete.
    pub fn feed(&mut self, mut bytes: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            let mut line = &bytes[..newline];
            bytes = &bytes[newline + 1..];
            if !self.partial.is_empty() {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(line);
                self.line(strip_cr(&joined), on_frame);
                // Keep the allocation for the next partial line.
                joined.clear();
                self.partial = joined;
                continue;
            }
            line = strip_cr(line);
            self.line(line, on_frame);
        }
        self.partial.extend_from_slice(bytes);
    }

    fn line(&mut self, line: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
        if line.is_empty() {
            let id = self.has_id.then_some(self.id.as_slice());
            if self.has_data && self.control {
                on_frame(Frame::Control { id });
            } else if self.has_data {
                on_frame(Frame::Event { data: &self.data, id });
            } else if let Some(id) = id {
                on_frame(Frame::IdOnly { id });
            } else if self.has_retry {
                on_frame(Frame::Retry);
            }
            self.data.clear();
            self.has_data = false;
            self.has_id = false;
            self.has_retry = false;
            self.control = false;
            return;
        }
        if line[0] == b':' {
            on_frame(Frame::Comment);
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"id" => {
                self.id.clear();
                self.id.extend_from_slice(value);
                self.has_id = true;
            }
            b"retry" => self.has_retry = true,
            b"event" => self.control = matches!(value, b"sluice.caught-up" | b"sluice.reauth"),
            _ => {}
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The bench's measurement fields of an event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub lane: u32,
    pub seq: u64,
    pub sent_us: u64,
}

/// Finds `"lane"`, `"seq"` and `"sent_us"` in an event's JSON data; `None` if one is missing
/// (an event someone else published, or the warm-up event).
pub fn parse_probe(data: &[u8]) -> Option<Probe> {
    Some(Probe {
        lane: u32::try_from(number_field(data, b"\"lane\"")?).ok()?,
        seq: number_field(data, b"\"seq\"")?,
        sent_us: number_field(data, b"\"sent_us\"")?,
    })
}

/// The unsigned integer after `"name":` (whitespace allowed around the colon).
fn number_field(data: &[u8], quoted_name: &[u8]) -> Option<u64> {
    let at = find(data, quoted_name)? + quoted_name.len();
    let rest = trim_start(&data[at..]);
    let rest = trim_start(rest.strip_prefix(b":")?);
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[skip..]
}

/// Position of `needle` in `haystack` (both short: a payload, a response head).
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Per-lane sequence bookkeeping of one connection: what arrived against what was sent.
///
/// Each lane's events live in one partition and are published in order, so a lane must
/// arrive as 0, 1, 2, … with nothing skipped and nothing repeated. A jump forward counts the
/// skipped numbers as gaps; a number at or below one already seen counts as a duplicate (it
/// could also be a reordering; either breaks the cursor contract).
#[derive(Debug, Clone, Default)]
pub struct LaneTracker {
    next: Vec<u64>,
}

/// What [`LaneTracker::observe`] found out about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    InOrder,
    /// This many events were skipped before this one.
    Gap(u64),
    Duplicate,
    /// A lane number beyond those the bench publishes.
    UnknownLane,
}

impl LaneTracker {
    pub fn new(lanes: usize) -> Self {
        Self { next: vec![0; lanes] }
    }

    pub fn observe(&mut self, lane: u32, seq: u64) -> Observation {
        let Some(next) = self.next.get_mut(lane as usize) else {
            return Observation::UnknownLane;
        };
        if seq < *next {
            return Observation::Duplicate;
        }
        let skipped = seq - *next;
        *next = seq + 1;
        if skipped == 0 {
            Observation::InOrder
        } else {
            Observation::Gap(skipped)
        }
    }

    /// Events published (`published[lane]` per lane) after the last one this connection saw:
    /// lost, or still in flight when the run ended.
    pub fn missing_tail(&self, published: &[u64]) -> u64 {
        self.next
            .iter()
            .zip(published)
            .map(|(&next, &sent)| sent.saturating_sub(next))
            .sum()
    }
}

/// Gap and duplicate accounting by cursor, independent of the payload's sequence numbers.
///
/// An unfiltered stream's cursor holds the next offset of every partition, and each event
/// moves exactly one partition on by one (Kafka offsets of a non-transactional topic are
/// contiguous). So between two consecutive events — on one connection, or across a resume on
/// another gateway — the offsets must advance by exactly one in total: more is a gap (events
/// skipped), none or backwards is a duplicate. Filtered streams skip offsets by design and
/// must not be checked this way. A v2 cursor (several streams) holds one such block per
/// stream, in a fixed order, and each event moves one partition of one stream: the same rule
/// holds over all the blocks' offsets laid end to end.
#[derive(Debug, Clone, Default)]
pub struct CursorTracker {
    last: Option<Vec<i64>>,
}

/// What [`CursorTracker::observe`] found out about one event's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorStep {
    /// The first id seen: nothing to compare with.
    First,
    /// Exactly one offset on from the previous id.
    Next,
    /// This many offsets were skipped.
    Gap(u64),
    /// No advance, or a partition moved backwards.
    Duplicate,
    /// Not a Sluice cursor.
    Unreadable,
}

impl CursorTracker {
    pub fn observe(&mut self, id: &[u8]) -> CursorStep {
        let Some(cursor) = std::str::from_utf8(id)
            .ok()
            .and_then(|text| sluice_sse::MultiCursor::decode(text).ok())
        else {
            return CursorStep::Unreadable;
        };
        let offsets: Vec<i64> = cursor
            .streams()
            .iter()
            .flat_map(|stream| stream.offsets.iter().copied())
            .collect();
        let step = match &self.last {
            None => CursorStep::First,
            Some(previous) => cursor_step(previous, &offsets),
        };
        if step != CursorStep::Duplicate {
            self.last = Some(offsets);
        }
        step
    }
}

/// Compares two cursors' offsets (a partition missing from `previous` was at 0).
fn cursor_step(previous: &[i64], next: &[i64]) -> CursorStep {
    let mut advance: i64 = 0;
    for (partition, &offset) in next.iter().enumerate() {
        let before = previous.get(partition).copied().unwrap_or(0);
        if offset < before {
            return CursorStep::Duplicate;
        }
        advance += offset - before;
    }
    match advance {
        0 => CursorStep::Duplicate,
        1 => CursorStep::Next,
        more => CursorStep::Gap(u64::try_from(more - 1).unwrap_or(0)),
    }
}

/// A request path with `{i}` replaced by `index`, so each connection can subscribe to its own
/// key (`/v1/streams/s?key=lane-{i}`).
pub fn expand_path(template: &str, index: u32) -> String {
    template.replace("{i}", &index.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_streaming_response_head() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nab";
        assert_eq!(parse_response_head(&response[..20]), Ok(None));
        let (head, len) = parse_response_head(response).unwrap().unwrap();
        assert_eq!(
            head,
            ResponseHead {
                status: 200,
                chunked: true,
                content_type: Some("text/event-stream".into()),
            }
        );
        assert_eq!(&response[len..], b"ab");

        let refused = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 3\r\ncontent-length: 10\r\n\r\n";
        let (head, _) = parse_response_head(refused).unwrap().unwrap();
        assert_eq!((head.status, head.chunked), (503, false));

        assert!(parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response_head(&vec![b'x'; MAX_HEAD_BYTES + 1]).is_err());
    }

    #[test]
    fn decodes_chunks_split_at_every_byte() {
        let body = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut decoder = ChunkedDecoder::default();
            let mut out = Vec::new();
            decoder.decode(&body[..split], &mut out).unwrap();
            decoder.decode(&body[split..], &mut out).unwrap();
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(decoder.is_done());
        }
        let mut out = Vec::new();
        assert!(ChunkedDecoder::default().decode(b"zz\r\n", &mut out).is_err());
        assert!(ChunkedDecoder::default().decode(b"1\r\nab", &mut out).is_err());
    }

    fn frames(parser: &mut SseParser, bytes: &[u8]) -> Vec<String> {
        let mut seen = Vec::new();
        parser.feed(bytes, &mut |frame| {
            seen.push(match frame {
                Frame::Event { data, id: None } => format!("event {}", String::from_utf8_lossy(data)),
                Frame::Event { data, id: Some(id) } => {
                    format!(
                        "event {} #{}",
                        String::from_utf8_lossy(data),
                        String::from_utf8_lossy(id)
                    )
                }
                Frame::IdOnly { id } => format!("id-only {}", String::from_utf8_lossy(id)),
                Frame::Retry => "retry".into(),
                Frame::Comment => "comment".into(),
                Frame::Control { .. } => "control".into(),
            })
        });
        seen
    }

    #[test]
    fn splits_the_gateway_frames() {
        let stream =
            b"retry: 2100\n\nid: c1\nevent: t\ndata: {\"a\":1}\n\n: \n\nid: c2\n\nid: c3\ndata: x\ndata: y\n\nid: c3\nevent: sluice.caught-up\ndata: {}\n\n";
        let expected = [
            "retry",
            "event {\"a\":1} #c1",
            "comment",
            "id-only c2",
            "event x\ny #c3",
            "control",
        ];
        assert_eq!(frames(&mut SseParser::default(), stream), expected);
        // The same bytes in pieces of every size give the same frames.
        for piece in 1..stream.len() {
            let mut parser = SseParser::default();
            let seen: Vec<String> = stream
                .chunks(piece)
                .flat_map(|chunk| frames(&mut parser, chunk))
                .collect();
            assert_eq!(seen, expected, "pieces of {piece}");
        }
        let crlf = b"data: z\r\n\r\n";
        assert_eq!(frames(&mut SseParser::default(), crlf), ["event z"]);
    }

    #[test]
    fn finds_probe_fields_in_any_order() {
        let data = br#"{"lane":3,"seq":42,"sent_us":1732000000123456,"pad":"abc"}"#;
        let expected = Probe {
            lane: 3,
            seq: 42,
            sent_us: 1_732_000_000_123_456,
        };
        assert_eq!(parse_probe(data), Some(expected));
        let sorted = br#"{"pad":"abc", "sent_us" : 1732000000123456,"lane": 3,"seq":42}"#;
        assert_eq!(parse_probe(sorted), Some(expected));
        assert_eq!(parse_probe(br#"{"warmup":true}"#), None);
        assert_eq!(parse_probe(br#"{"lane":-1,"seq":1,"sent_us":1}"#), None);
    }

    #[test]
    fn tracks_gaps_duplicates_and_the_missing_tail() {
        let mut lanes = LaneTracker::new(2);
        assert_eq!(lanes.observe(0, 0), Observation::InOrder);
        assert_eq!(lanes.observe(0, 1), Observation::InOrder);
        assert_eq!(lanes.observe(0, 1), Observation::Duplicate);
        assert_eq!(lanes.observe(0, 5), Observation::Gap(3));
        assert_eq!(lanes.observe(1, 2), Observation::Gap(2));
        assert_eq!(lanes.observe(7, 0), Observation::UnknownLane);
        // Sent 0..=7 on lane 0 and 0..=2 on lane 1: 6 and 7 never came.
        assert_eq!(lanes.missing_tail(&[8, 3]), 2);
    }

    #[test]
    fn cursor_steps_count_gaps_and_duplicates_across_partitions() {
        use sluice_sse::Cursor;
        let id = |offsets: &[i64]| Cursor::new(7, offsets.to_vec()).encode();
        let mut tracker = CursorTracker::default();
        assert_eq!(tracker.observe(id(&[3, 5]).as_bytes()), CursorStep::First);
        assert_eq!(tracker.observe(id(&[4, 5]).as_bytes()), CursorStep::Next);
        assert_eq!(tracker.observe(id(&[4, 6]).as_bytes()), CursorStep::Next);
        // The same id again (a resume replaying the last event) and a step backwards.
        assert_eq!(tracker.observe(id(&[4, 6]).as_bytes()), CursorStep::Duplicate);
        assert_eq!(tracker.observe(id(&[3, 7]).as_bytes()), CursorStep::Duplicate);
        // Three offsets on in total: two events skipped.
        assert_eq!(tracker.observe(id(&[6, 7]).as_bytes()), CursorStep::Gap(2));
        // A partition the previous cursor did not have counts from 0.
        assert_eq!(tracker.observe(id(&[6, 7, 1]).as_bytes()), CursorStep::Next);
        assert_eq!(tracker.observe(b"not a cursor"), CursorStep::Unreadable);
    }

    #[test]
    fn cursor_steps_span_every_stream_of_a_v2_cursor() {
        use sluice_sse::{Cursor, MultiCursor};
        let id = |a: &[i64], b: &[i64]| {
            MultiCursor::new(vec![Cursor::new(9, b.to_vec()), Cursor::new(2, a.to_vec())])
                .unwrap()
                .encode()
        };
        let mut tracker = CursorTracker::default();
        assert_eq!(tracker.observe(id(&[0, 0], &[5, 1]).as_bytes()), CursorStep::First);
        // One event on either stream is one step.
        assert_eq!(tracker.observe(id(&[1, 0], &[5, 1]).as_bytes()), CursorStep::Next);
        assert_eq!(tracker.observe(id(&[1, 0], &[5, 2]).as_bytes()), CursorStep::Next);
        // An event of each stream at once: one skipped.
        assert_eq!(tracker.observe(id(&[1, 1], &[6, 2]).as_bytes()), CursorStep::Gap(1));
        assert_eq!(tracker.observe(id(&[1, 1], &[6, 2]).as_bytes()), CursorStep::Duplicate);
    }

    #[test]
    fn expands_the_connection_index_in_paths() {
        assert_eq!(
            expand_path("/v1/streams/s?key=lane-{i}", 42),
            "/v1/streams/s?key=lane-42"
        );
        assert_eq!(expand_path("/v1/streams/s", 42), "/v1/streams/s");
    }
}
