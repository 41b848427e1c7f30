//! The cursor: what Sluice puts in every SSE event id, and what a client hands back in
//! `Last-Event-ID` to resume.
//!
//! A [`Cursor`] holds, for **every** partition of the stream, the *next* offset to read, plus a
//! fingerprint of the stream. Because the offsets are the next ones to read (not the last ones
//! delivered), resuming at the cursor an event carried yields exactly the events after it: no
//! loss, no duplicate, per-partition order, on any gateway pod. Kafka is the only state; the
//! cursor is the client's whole position.
//!
//! # Wire format, version 1
//!
//! The text is base64url without padding (URL-safe ASCII, fit for a header or a query
//! parameter) of these bytes:
//!
//! | bytes | meaning |
//! |---|---|
//! | 1 | version, `1` |
//! | 4 | stream fingerprint, little endian |
//! | varint | partition count `N` |
//! | varint | `base`: the smallest offset (`0` when `N = 0`) |
//! | `N` varints | `offset[p] - base`, for `p` in `0..N` |
//!
//! Varints are unsigned LEB128 (7 bits per byte, least significant group first), at most 9
//! bytes, since every value fits in 63 bits. Offsets of one stream tend to move together, so
//! storing them relative to the smallest keeps each one to one or two bytes; see the crate's
//! README for measured sizes.
//!
//! The version byte exists so the format can grow: version 2 below covers several streams, and
//! v1 cursors stay readable.
//!
//! # Wire format, version 2: several streams
//!
//! A [`MultiCursor`] is the one cursor of a connection that reads several streams
//! (`GET /v1/streams/{a},{b}`). Its text is base64url, as above, of:
//!
//! | bytes | meaning |
//! |---|---|
//! | 1 | version, `2` |
//! | varint | stream count `S`, `1..=`[`MAX_STREAMS`] |
//! | `S` blocks | per stream, exactly the v1 bytes after the version byte: 4-byte fingerprint, `N`, `base`, `N` deltas |
//!
//! Blocks are strictly ascending by fingerprint, so a set of streams has one spelling and a
//! repeated stream is refused. Every block obeys v1's canonical rules, and the partitions of all
//! blocks together are capped at [`MAX_PARTITIONS`], so a v2 cursor costs the decoder no more
//! than a v1 one. Single-stream connections keep writing v1; [`MultiCursor::decode`] reads
//! both versions, [`Cursor::decode`] only v1.
//!
//! # Invariants
//!
//! - **One spelling per cursor.** Decoding accepts only what [`Cursor::encode`] produces:
//!   canonical base64url, minimal varints, `base` equal to the smallest offset. So whenever
//!   decoding succeeds, re-encoding gives back the same text (the fuzz target checks this), and
//!   ids can be compared as strings.
//! - **Decoding is total and bounded.** Any input yields `Ok` or a [`CursorError`], never a
//!   panic. The text length is capped at [`MAX_ENCODED_LEN`] ([`MAX_ENCODED_LEN_V2`] for
//!   [`MultiCursor`]) and the partition count at [`MAX_PARTITIONS`] (and by the bytes actually
//!   present) before anything is allocated.
//! - **Every cursor the encoder can produce decodes.** Both length caps are derived from
//!   [`MAX_PARTITIONS`], [`MAX_STREAMS`] and the widest varints, not picked separately. The HTTP
//!   layer may of course refuse long headers earlier.

use std::fmt;
use std::str::FromStr;

use bytes::BufMut;

use crate::base64url;

/// The version [`Cursor`] writes and reads: one stream.
pub const VERSION: u8 = 1;

/// The version [`MultiCursor`] writes: several streams.
pub const VERSION_V2: u8 = 2;

/// Most streams one v2 cursor may cover.
pub const MAX_STREAMS: usize = 64;

/// The largest partition count a cursor may carry. Far above any topic Sluice expects; it
/// exists so a forged count cannot make the decoder allocate gigabytes.
pub const MAX_PARTITIONS: usize = 10_000;

/// The longest text [`Cursor::decode`] accepts: the encoding of the widest cursor with
/// [`MAX_PARTITIONS`] partitions (about 117 KiB). That one has a 9-byte base, a 1-byte zero
/// delta for the partition at the base (there always is one), and 9-byte deltas elsewhere.
pub const MAX_ENCODED_LEN: usize = base64url::encoded_len(
    HEADER_LEN + varint_len(MAX_PARTITIONS as u64) + MAX_VARINT_LEN + 1 + MAX_VARINT_LEN * (MAX_PARTITIONS - 1),
);

/// The longest text [`MultiCursor::decode`] accepts (about 118 KiB), an exact bound: every
/// stream's block is at most a fingerprint, a 2-byte count, and the 1-byte zero delta at its base
/// (a 9-byte base takes the place of one 9-byte delta), and every partition at most a 9-byte
/// delta. Exact because [`MAX_PARTITIONS`] leaves every one of [`MAX_STREAMS`] streams at least 128
/// partitions, enough for a 2-byte count. It exceeds [`MAX_ENCODED_LEN`], so v1 texts fit too.
pub const MAX_ENCODED_LEN_V2: usize = base64url::encoded_len(
    1 + varint_len(MAX_STREAMS as u64)
        + MAX_STREAMS * (4 + varint_len(MAX_PARTITIONS as u64) + 1)
        + MAX_VARINT_LEN * MAX_PARTITIONS,
);

const _: () = assert!(MAX_ENCODED_LEN_V2 >= MAX_ENCODED_LEN);

/// Version byte plus fingerprint.
const HEADER_LEN: usize = 1 + 4;

/// 63 bits of a non-negative `i64`, 7 bits per byte.
const MAX_VARINT_LEN: usize = 9;

/// Fingerprint of the stream backed by `topic`: FNV-1a, 32 bits, over the topic name.
///
/// It lets the gateway refuse a cursor minted for another stream (a client that reuses an id
/// across streams, a mixed-up bookmark) instead of seeking to offsets that mean nothing there.
/// It is **not** an authenticity check: anyone can compute it and forge a cursor, which is
/// harmless, since a cursor only chooses where to start reading a stream the client may read
/// anyway. It also cannot tell a deleted-and-recreated topic from the original.
pub const fn stream_fingerprint(topic: &str) -> u32 {
    let bytes = topic.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// Why a cursor text was refused. Every variant means "the client sent something we did not
/// mint for this stream"; the gateway answers `400` before the stream starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// The id was present but empty.
    #[error("cursor is empty")]
    Empty,
    /// Longer than any cursor Sluice mints; refused before decoding.
    #[error("cursor is {len} characters long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    /// Not canonical unpadded base64url text.
    #[error("cursor is not base64url text")]
    NotBase64,
    /// Written by a format version this build does not know.
    #[error("cursor format version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The bytes ended in the middle of a field.
    #[error("cursor is truncated")]
    Truncated,
    /// Claims more partitions than [`MAX_PARTITIONS`] (counting every stream of a v2 cursor).
    #[error("cursor claims {0} partitions; the limit is {MAX_PARTITIONS}")]
    TooManyPartitions(u64),
    /// A v2 cursor claiming more streams than [`MAX_STREAMS`].
    #[error("cursor claims {0} streams; the limit is {MAX_STREAMS}")]
    TooManyStreams(u64),
    /// A v2 cursor naming the stream with this fingerprint twice.
    #[error("cursor names stream {0:#010x} twice")]
    DuplicateStream(u32),
    /// A varint wider than 63 bits, or an offset beyond `i64::MAX`.
    #[error("cursor holds an offset that does not fit in 63 bits")]
    Overflow,
    /// Decodes to values the encoder would have spelled differently (padding bits set, an
    /// overlong varint, a base that is not the smallest offset, v2 streams out of order or none).
    #[error("cursor is not in canonical form")]
    NonCanonical,
    /// Bytes left over after the last partition.
    #[error("cursor has trailing bytes")]
    TrailingBytes,
    /// Well formed, but minted for another stream.
    #[error("cursor belongs to another stream")]
    ForeignStream { expected: u32, found: u32 },
}

/// A position in every partition of one stream. See the [module docs](self) for the format.
///
/// `offsets[p]` is the next offset to read in partition `p`; a stream with partitions the
/// cursor does not mention (added since it was minted) is read from the earliest offset there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// [`stream_fingerprint`] of the stream's topic.
    pub fingerprint: u32,
    /// Next offset to read, per partition. Must all be `>= 0` to encode: map librdkafka's
    /// logical offsets (`OFFSET_BEGINNING`, `OFFSET_END`, …) to real ones first.
    pub offsets: Vec<i64>,
}

impl Cursor {
    /// A cursor at `offsets` (next offset to read, per partition) in the stream with
    /// `fingerprint`.
    pub fn new(fingerprint: u32, offsets: Vec<i64>) -> Self {
        Self { fingerprint, offsets }
    }

    /// The cursor after delivering a record of `partition` at offset `next - 1`: the same
    /// positions, except `partition` now resumes at `next`. Pass the delivered record's offset
    /// plus one, so resuming skips that record and everything before it.
    ///
    /// A partition beyond the cursor's current width grows it; the partitions in between get
    /// offset `0`, the start of a partition that was just created.
    ///
    /// # Panics
    ///
    /// If `partition >= MAX_PARTITIONS`: such a cursor could not be decoded again.
    #[must_use]
    pub fn with_next(&self, partition: usize, next: i64) -> Self {
        let mut cursor = self.clone();
        cursor.set_next(partition, next);
        cursor
    }

    /// In-place [`Cursor::with_next`], for a reader that keeps one running cursor and mints
    /// each event's id from it without cloning.
    ///
    /// # Panics
    ///
    /// If `partition >= MAX_PARTITIONS`.
    pub fn set_next(&mut self, partition: usize, next: i64) {
        assert!(
            partition < MAX_PARTITIONS,
            "partition {partition} is beyond the cursor limit of {MAX_PARTITIONS}"
        );
        debug_assert!(next >= 0, "cursor offsets are never negative, got {next}");
        if partition >= self.offsets.len() {
            self.offsets.resize(partition + 1, 0);
        }
        self.offsets[partition] = next;
    }

    /// `Ok` if this cursor was minted for the stream with `fingerprint`.
    pub fn check_stream(&self, fingerprint: u32) -> Result<(), CursorError> {
        if self.fingerprint == fingerprint {
            Ok(())
        } else {
            Err(CursorError::ForeignStream {
                expected: fingerprint,
                found: self.fingerprint,
            })
        }
    }

    /// The exact length of [`Cursor::encode`]'s output, so frame builders can size their
    /// buffer once.
    pub fn encoded_len(&self) -> usize {
        base64url::encoded_len(1 + self.body_len())
    }

    /// The cursor's text.
    ///
    /// Precondition: every offset is `>= 0` and there are at most [`MAX_PARTITIONS`] of
    /// them. Debug builds assert it; a release build writes a cursor that fails to decode.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        String::from_utf8(out).expect("the base64url alphabet is ASCII")
    }

    /// Appends the cursor's text to `out` (a `Vec<u8>`, or the `BytesMut` of a frame being
    /// built) without any intermediate buffer. Same precondition as [`Cursor::encode`].
    pub fn encode_into<B: BufMut>(&self, out: &mut B) {
        let mut enc = base64url::Encoder::new(out);
        enc.push(VERSION);
        self.write_body(&mut enc);
        enc.finish();
    }

    /// Parses a cursor's text. Total over all inputs; see the module docs for the bounds.
    ///
    /// This checks the format only; call [`Cursor::check_stream`] to check it belongs to the
    /// stream being opened.
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        let bytes = decode_text(text, MAX_ENCODED_LEN)?;
        let mut reader = Reader { bytes: &bytes };
        let version = reader.byte()?;
        if version != VERSION {
            return Err(CursorError::UnsupportedVersion(version));
        }
        let cursor = Self::read_body(&mut reader, 0)?;
        reader.finish()?;
        Ok(cursor)
    }

    fn base(&self) -> i64 {
        self.offsets.iter().copied().min().unwrap_or(0)
    }

    /// Length in bytes of [`Cursor::write_body`]'s output.
    fn body_len(&self) -> usize {
        let base = self.base();
        let varints: usize = self
            .offsets
            .iter()
            .map(|&o| varint_len(o.wrapping_sub(base) as u64))
            .sum();
        HEADER_LEN - 1 + varint_len(self.offsets.len() as u64) + varint_len(base as u64) + varints
    }

    /// Everything after the version byte in v1, and one stream's block in v2.
    fn write_body<B: BufMut>(&self, enc: &mut base64url::Encoder<'_, B>) {
        debug_assert!(
            self.offsets.iter().all(|&o| o >= 0),
            "cursor offsets must be >= 0: {:?}",
            self.offsets
        );
        debug_assert!(self.offsets.len() <= MAX_PARTITIONS);
        let base = self.base();
        enc.push_slice(&self.fingerprint.to_le_bytes());
        write_varint(enc, self.offsets.len() as u64);
        write_varint(enc, base as u64);
        for &offset in &self.offsets {
            // Wrapping only matters when the precondition is broken; then the cursor is
            // garbage, but encoding still must not panic in release.
            write_varint(enc, offset.wrapping_sub(base) as u64);
        }
    }

    /// Reads what [`Cursor::write_body`] wrote. `earlier` partitions were already read from
    /// this text (other streams of a v2 cursor) and count towards [`MAX_PARTITIONS`].
    fn read_body(reader: &mut Reader<'_>, earlier: usize) -> Result<Self, CursorError> {
        let fingerprint = u32::from_le_bytes(reader.array()?);
        let count = reader.varint()?;
        // No overflow: `earlier` is at most MAX_PARTITIONS and varints hold 63 bits.
        let total = earlier as u64 + count;
        if total > MAX_PARTITIONS as u64 {
            return Err(CursorError::TooManyPartitions(total));
        }
        // Both casts are lossless: `count` is at most MAX_PARTITIONS, and varints hold 63 bits.
        let count = count as usize;
        let base = reader.varint()? as i64;
        // Each offset takes at least one byte, so this bounds the allocation by the input.
        if count > reader.bytes.len() {
            return Err(CursorError::Truncated);
        }
        let mut offsets = Vec::with_capacity(count);
        let mut has_base = false;
        for _ in 0..count {
            let delta = reader.varint()?;
            has_base |= delta == 0;
            let offset = base.checked_add(delta as i64).ok_or(CursorError::Overflow)?;
            offsets.push(offset);
        }
        // The encoder always stores the smallest offset as the base (0 for no partitions).
        let canonical = if count == 0 { base == 0 } else { has_base };
        if !canonical {
            return Err(CursorError::NonCanonical);
        }
        Ok(Self { fingerprint, offsets })
    }
}

/// A position in every partition of several streams: one v1 [`Cursor`] (fingerprint + offsets)
/// per stream, kept sorted by fingerprint, fingerprints unique. See the [module docs](self) for
/// its wire format (version 2).
///
/// The gateway keeps one per multi-stream connection, moves a stream's offsets through
/// [`MultiCursor::get_mut`] and [`Cursor::set_next`], and mints every event id from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultiCursor {
    streams: Vec<Cursor>,
}

impl MultiCursor {
    /// A cursor over `streams`, sorted by fingerprint.
    ///
    /// Refuses what [`MultiCursor::decode`] would refuse of its text: a repeated fingerprint
    /// ([`CursorError::DuplicateStream`]), more than [`MAX_STREAMS`] streams
    /// ([`CursorError::TooManyStreams`]), more than [`MAX_PARTITIONS`] partitions in all
    /// ([`CursorError::TooManyPartitions`]), and no stream at all ([`CursorError::Empty`]).
    pub fn new(mut streams: Vec<Cursor>) -> Result<Self, CursorError> {
        if streams.is_empty() {
            return Err(CursorError::Empty);
        }
        if streams.len() > MAX_STREAMS {
            return Err(CursorError::TooManyStreams(streams.len() as u64));
        }
        let partitions: usize = streams.iter().map(|c| c.offsets.len()).sum();
        if partitions > MAX_PARTITIONS {
            return Err(CursorError::TooManyPartitions(partitions as u64));
        }
        streams.sort_unstable_by_key(|c| c.fingerprint);
        if let Some(pair) = streams.windows(2).find(|w| w[0].fingerprint == w[1].fingerprint) {
            return Err(CursorError::DuplicateStream(pair[0].fingerprint));
        }
        Ok(Self { streams })
    }

    /// One cursor per stream, ascending by fingerprint.
    pub fn streams(&self) -> &[Cursor] {
        &self.streams
    }

    /// The component for the stream with `fingerprint`.
    pub fn get(&self, fingerprint: u32) -> Option<&Cursor> {
        self.index(fingerprint).map(|i| &self.streams[i])
    }

    /// The component for the stream with `fingerprint`, to move its offsets with
    /// [`Cursor::set_next`]. Leave its `fingerprint` alone: the order of the streams depends on
    /// it, and a cursor encoded out of order does not decode.
    pub fn get_mut(&mut self, fingerprint: u32) -> Option<&mut Cursor> {
        self.index(fingerprint).map(move |i| &mut self.streams[i])
    }

    /// The exact length of [`MultiCursor::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        let blocks: usize = self.streams.iter().map(Cursor::body_len).sum();
        base64url::encoded_len(1 + varint_len(self.streams.len() as u64) + blocks)
    }

    /// The cursor's text, always version 2, even for one stream.
    ///
    /// Precondition, as for [`Cursor::encode`]: offsets `>= 0`, at most [`MAX_PARTITIONS`] in
    /// all streams together, fingerprints untouched since [`MultiCursor::new`]. Debug builds
    /// assert it; a release build writes a cursor that fails to decode.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        String::from_utf8(out).expect("the base64url alphabet is ASCII")
    }

    /// Appends the cursor's text to `out` without any intermediate buffer. Same precondition as
    /// [`MultiCursor::encode`].
    pub fn encode_into<B: BufMut>(&self, out: &mut B) {
        debug_assert!(
            self.streams.windows(2).all(|w| w[0].fingerprint < w[1].fingerprint),
            "multi-cursor streams out of order or repeated"
        );
        debug_assert!(self.streams.iter().map(|c| c.offsets.len()).sum::<usize>() <= MAX_PARTITIONS);
        let mut enc = base64url::Encoder::new(out);
        enc.push(VERSION_V2);
        write_varint(&mut enc, self.streams.len() as u64);
        for stream in &self.streams {
            stream.write_body(&mut enc);
        }
        enc.finish();
    }

    /// Parses a v2 text, or a v1 text as a cursor over its one stream. Total and bounded like
    /// [`Cursor::decode`]; checks the format only, not which streams the request names.
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        let bytes = decode_text(text, MAX_ENCODED_LEN_V2)?;
        let mut reader = Reader { bytes: &bytes };
        let streams = match reader.byte()? {
            VERSION => vec![Cursor::read_body(&mut reader, 0)?],
            VERSION_V2 => Self::read_blocks(&mut reader)?,
            other => return Err(CursorError::UnsupportedVersion(other)),
        };
        reader.finish()?;
        Ok(Self { streams })
    }

    /// The v2 stream count and blocks, checking order and the bounds as they are read.
    fn read_blocks(reader: &mut Reader<'_>) -> Result<Vec<Cursor>, CursorError> {
        let count = reader.varint()?;
        if count == 0 {
            return Err(CursorError::NonCanonical);
        }
        if count > MAX_STREAMS as u64 {
            return Err(CursorError::TooManyStreams(count));
        }
        // At most MAX_STREAMS small structs, whatever the input.
        let mut streams: Vec<Cursor> = Vec::with_capacity(count as usize);
        let mut partitions = 0;
        for _ in 0..count {
            let stream = Cursor::read_body(reader, partitions)?;
            if let Some(previous) = streams.last() {
                if stream.fingerprint == previous.fingerprint {
                    return Err(CursorError::DuplicateStream(stream.fingerprint));
                }
                if stream.fingerprint < previous.fingerprint {
                    return Err(CursorError::NonCanonical);
                }
            }
            partitions += stream.offsets.len();
            streams.push(stream);
        }
        Ok(streams)
    }

    fn index(&self, fingerprint: u32) -> Option<usize> {
        self.streams.binary_search_by_key(&fingerprint, |c| c.fingerprint).ok()
    }
}

/// The v2 text, as [`MultiCursor::encode`] writes it.
impl fmt::Display for MultiCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for MultiCursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::decode(s)
    }
}

/// The bytes under a cursor's text, refusing empty, over-long (`max` characters) and
/// non-canonical base64url text before anything is allocated.
fn decode_text(text: &str, max: usize) -> Result<Vec<u8>, CursorError> {
    if text.is_empty() {
        return Err(CursorError::Empty);
    }
    if text.len() > max {
        return Err(CursorError::TooLong { len: text.len(), max });
    }
    base64url::decode(text.as_bytes()).map_err(|e| match e {
        base64url::DecodeError::Invalid => CursorError::NotBase64,
        base64url::DecodeError::NonCanonical => CursorError::NonCanonical,
    })
}

/// The cursor's text, as [`Cursor::encode`] writes it.
impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::decode(s)
    }
}

const fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn write_varint<B: BufMut>(enc: &mut base64url::Encoder<'_, B>, mut v: u64) {
    while v >= 0x80 {
        enc.push(v as u8 | 0x80);
        v >>= 7;
    }
    enc.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CursorError> {
        let (&first, rest) = self.bytes.split_first().ok_or(CursorError::Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    /// `Ok` once every byte was read.
    fn finish(&self) -> Result<(), CursorError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(CursorError::TrailingBytes)
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CursorError> {
        let (head, rest) = self.bytes.split_first_chunk::<N>().ok_or(CursorError::Truncated)?;
        self.bytes = rest;
        Ok(*head)
    }

    /// A minimal LEB128 varint of at most 63 bits.
    fn varint(&mut self) -> Result<u64, CursorError> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                // A zero last group (other than a lone zero) is padding the encoder never
                // writes.
                if byte == 0 && i > 0 {
                    return Err(CursorError::NonCanonical);
                }
                return Ok(value);
            }
        }
        Err(CursorError::Overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base64url::Encoder;
    use proptest::prelude::*;

    const FP: u32 = stream_fingerprint("orders");

    /// Encodes raw bytes as base64url, to hand-craft malformed cursors.
    fn b64(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        let mut enc = Encoder::new(&mut out);
        enc.push_slice(bytes);
        enc.finish();
        String::from_utf8(out).unwrap()
    }

    fn varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut v = v;
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }

    /// Version, fingerprint, then `rest`.
    fn raw(rest: &[u8]) -> String {
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&FP.to_le_bytes());
        bytes.extend_from_slice(rest);
        b64(&bytes)
    }

    fn round_trip(cursor: &Cursor) {
        let text = cursor.encode();
        assert_eq!(text.len(), cursor.encoded_len(), "{cursor:?}");
        assert_eq!(Cursor::decode(&text).as_ref(), Ok(cursor), "{text}");
    }

    #[test]
    fn fingerprint_is_fnv1a_32() {
        // Published FNV-1a test vectors.
        assert_eq!(stream_fingerprint(""), 0x811c_9dc5);
        assert_eq!(stream_fingerprint("a"), 0xe40c_292c);
        assert_eq!(stream_fingerprint("foobar"), 0xbf9c_f968);
        assert_ne!(stream_fingerprint("orders"), stream_fingerprint("orders2"));
    }

    #[test]
    fn round_trips_corner_cases() {
        round_trip(&Cursor::new(FP, vec![]));
        round_trip(&Cursor::new(FP, vec![0]));
        round_trip(&Cursor::new(FP, vec![42]));
        round_trip(&Cursor::new(0, vec![0, 0, 0]));
        round_trip(&Cursor::new(u32::MAX, vec![i64::MAX]));
        round_trip(&Cursor::new(FP, vec![0, i64::MAX]));
        round_trip(&Cursor::new(FP, vec![i64::MAX, i64::MAX - 1, 0]));
        round_trip(&Cursor::new(FP, vec![7; MAX_PARTITIONS]));
    }

    #[test]
    fn one_partition_at_offset_zero_is_short_and_stable() {
        // Pinned so an accidental format change shows up here rather than in clients.
        let text = Cursor::new(0x0403_0201, vec![0]).encode();
        assert_eq!(text, "AQECAwQBAAA");
        assert_eq!(Cursor::decode("AQECAwQBAAA").unwrap().offsets, vec![0]);
    }

    #[test]
    fn with_next_moves_one_partition() {
        let cursor = Cursor::new(FP, vec![10, 20, 30]);
        assert_eq!(cursor.with_next(1, 21).offsets, vec![10, 21, 30]);
        assert_eq!(cursor.offsets, vec![10, 20, 30]);
        // A partition the cursor has not seen yet starts at its beginning.
        assert_eq!(cursor.with_next(4, 5).offsets, vec![10, 20, 30, 0, 5]);
    }

    #[test]
    #[should_panic(expected = "beyond the cursor limit")]
    fn with_next_refuses_a_partition_past_the_limit() {
        let _ = Cursor::new(FP, vec![]).with_next(MAX_PARTITIONS, 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "offsets must be >= 0")]
    fn encoding_a_negative_offset_is_a_bug() {
        let _ = Cursor::new(FP, vec![-1]).encode();
    }

    #[test]
    fn check_stream_refuses_foreign_cursors() {
        let cursor = Cursor::new(FP, vec![1]);
        assert_eq!(cursor.check_stream(FP), Ok(()));
        let other = stream_fingerprint("payments");
        assert_eq!(
            cursor.check_stream(other),
            Err(CursorError::ForeignStream {
                expected: other,
                found: FP
            })
        );
    }

    #[test]
    fn display_and_from_str_are_encode_and_decode() {
        let cursor = Cursor::new(FP, vec![3, 1, 4]);
        assert_eq!(cursor.to_string(), cursor.encode());
        assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor));
    }

    #[test]
    fn every_error_is_reachable() {
        use CursorError::*;
        let too_long = "A".repeat(MAX_ENCODED_LEN + 1);
        let cases: Vec<(String, CursorError)> = vec![
            (String::new(), Empty),
            (
                too_long,
                TooLong {
                    len: MAX_ENCODED_LEN + 1,
                    max: MAX_ENCODED_LEN,
                },
            ),
            ("not a cursor".into(), NotBase64),
            ("AQECAwQBAAA=".into(), NotBase64),
            ("A".into(), NotBase64),
            // Trailing bits set in the last character.
            ("AQECAwQBAAB".into(), NonCanonical),
            (b64(&[2, 0, 0, 0, 0]), UnsupportedVersion(2)),
            (b64(&[0]), UnsupportedVersion(0)),
            (b64(&[VERSION, 1, 2]), Truncated),
            (raw(&[]), Truncated),
            (raw(&[0x80]), Truncated),
            (raw(&[3, 0, 0]), Truncated),
            (
                raw(&varint(MAX_PARTITIONS as u64 + 1)),
                TooManyPartitions(MAX_PARTITIONS as u64 + 1),
            ),
            (raw(&varint(u64::MAX >> 1)), TooManyPartitions(u64::MAX >> 1)),
            // A 10-byte varint.
            (raw(&[0xFF; 10]), Overflow),
            // base + delta beyond i64::MAX.
            (
                raw(&[&[2][..], &varint(1), &[0], &varint(i64::MAX as u64)].concat()),
                Overflow,
            ),
            // Overlong varint: 0 spelled in two bytes.
            (raw(&[1, 0x80, 0x00, 0]), NonCanonical),
            // Base below the smallest offset.
            (raw(&[1, 5, 1]), NonCanonical),
            // No partitions, yet a base.
            (raw(&[0, 1]), NonCanonical),
            (raw(&[1, 5, 0, 0]), TrailingBytes),
        ];
        for (text, expected) in cases {
            assert_eq!(Cursor::decode(&text), Err(expected), "{text:?}");
        }
        // ForeignStream comes from check_stream; see check_stream_refuses_foreign_cursors.
    }

    #[test]
    fn huge_partition_counts_are_refused_before_allocating() {
        // A short text claiming MAX_PARTITIONS partitions must fail on the bytes present,
        // not reserve room for ten thousand offsets first.
        let text = raw(&[&varint(MAX_PARTITIONS as u64)[..], &[0, 0]].concat());
        assert_eq!(Cursor::decode(&text), Err(CursorError::Truncated));
    }

    #[test]
    fn max_encoded_len_covers_the_widest_cursor() {
        // The smallest base whose varint takes 9 bytes still leaves 9-byte deltas.
        let widest = Cursor::new(FP, {
            let mut offsets = vec![i64::MAX; MAX_PARTITIONS];
            offsets[0] = 1 << 56;
            offsets
        });
        let text = widest.encode();
        assert_eq!(text.len(), MAX_ENCODED_LEN);
        assert_eq!(Cursor::decode(&text), Ok(widest));
    }

    /// A v2 text: version, stream count `streams`, then `blocks` as they are.
    fn raw2(streams: u64, blocks: &[u8]) -> String {
        b64(&[&[VERSION_V2][..], &varint(streams), blocks].concat())
    }

    /// One v2 block: fingerprint, then `rest` (count, base, deltas).
    fn block(fingerprint: u32, rest: &[u8]) -> Vec<u8> {
        [&fingerprint.to_le_bytes()[..], rest].concat()
    }

    fn multi(streams: Vec<Cursor>) -> MultiCursor {
        MultiCursor::new(streams).unwrap()
    }

    fn multi_round_trip(cursor: &MultiCursor) {
        let text = cursor.encode();
        assert_eq!(text.len(), cursor.encoded_len(), "{cursor:?}");
        assert_eq!(MultiCursor::decode(&text).as_ref(), Ok(cursor), "{text}");
    }

    /// What decoding a text as a [`MultiCursor`] promises: it is the canonical v2 text of the
    /// result, or the canonical v1 text of its one stream.
    fn is_canonical_spelling(text: &str, cursor: &MultiCursor) -> bool {
        match Cursor::decode(text) {
            Ok(single) => cursor.streams() == [single.clone()] && single.encode() == text,
            Err(_) => cursor.encode() == text && cursor.encoded_len() == text.len(),
        }
    }

    #[test]
    fn multi_round_trips_one_two_and_max_streams() {
        let orders = stream_fingerprint("orders");
        let payments = stream_fingerprint("payments");
        multi_round_trip(&multi(vec![Cursor::new(orders, vec![])]));
        multi_round_trip(&multi(vec![Cursor::new(orders, vec![5, 3])]));
        multi_round_trip(&multi(vec![
            Cursor::new(orders, vec![1_000_000, 1_000_250]),
            Cursor::new(payments, vec![]),
        ]));
        multi_round_trip(&multi(vec![
            Cursor::new(u32::MAX, vec![i64::MAX]),
            Cursor::new(0, vec![0, i64::MAX, 0]),
        ]));
        let all = (0..MAX_STREAMS as u32).map(|s| Cursor::new(s * 7919, vec![i64::from(s); 12]));
        let all = multi(all.collect());
        assert_eq!(all.streams().len(), MAX_STREAMS);
        multi_round_trip(&all);
    }

    #[test]
    fn multi_encode_is_v2_even_for_one_stream() {
        let single = Cursor::new(FP, vec![0]);
        let text = multi(vec![single.clone()]).encode();
        assert_ne!(text, single.encode());
        assert_eq!(base64url::decode(text.as_bytes()).unwrap()[0], VERSION_V2);
    }

    #[test]
    fn multi_decode_reads_a_v1_cursor_as_one_stream() {
        let single = Cursor::new(FP, vec![10, 20, 30]);
        let decoded = MultiCursor::decode(&single.encode()).unwrap();
        assert_eq!(decoded.streams(), [single]);
        assert_eq!(
            MultiCursor::decode("AQECAwQBAAA").unwrap().streams(),
            [Cursor::new(0x0403_0201, vec![0])]
        );
    }

    #[test]
    fn single_stream_decode_still_refuses_v2() {
        let text = multi(vec![Cursor::new(FP, vec![1])]).encode();
        assert_eq!(Cursor::decode(&text), Err(CursorError::UnsupportedVersion(2)));
    }

    #[test]
    fn new_sorts_by_fingerprint_and_finds_components() {
        let mut cursor = multi(vec![
            Cursor::new(9, vec![1]),
            Cursor::new(2, vec![2]),
            Cursor::new(5, vec![]),
        ]);
        let order: Vec<u32> = cursor.streams().iter().map(|c| c.fingerprint).collect();
        assert_eq!(order, [2, 5, 9]);
        assert_eq!(cursor.get(9).map(|c| c.offsets.clone()), Some(vec![1]));
        assert_eq!(cursor.get(4), None);
        cursor.get_mut(5).unwrap().set_next(1, 8);
        assert_eq!(cursor.get(5).unwrap().offsets, [0, 8]);
        assert!(cursor.get_mut(4).is_none());
        multi_round_trip(&cursor);
    }

    #[test]
    fn new_refuses_what_could_not_decode() {
        use CursorError::*;
        assert_eq!(MultiCursor::new(vec![]), Err(Empty));
        let twice = vec![Cursor::new(3, vec![1]), Cursor::new(1, vec![]), Cursor::new(3, vec![2])];
        assert_eq!(MultiCursor::new(twice), Err(DuplicateStream(3)));
        let many = (0..=MAX_STREAMS as u32).map(|s| Cursor::new(s, vec![])).collect();
        assert_eq!(MultiCursor::new(many), Err(TooManyStreams(MAX_STREAMS as u64 + 1)));
        let wide = vec![Cursor::new(1, vec![0; MAX_PARTITIONS]), Cursor::new(2, vec![0])];
        assert_eq!(
            MultiCursor::new(wide),
            Err(TooManyPartitions(MAX_PARTITIONS as u64 + 1))
        );
        // Exactly at the limits is fine.
        let full = vec![Cursor::new(1, vec![0; MAX_PARTITIONS - 1]), Cursor::new(2, vec![0])];
        multi_round_trip(&multi(full));
    }

    #[test]
    fn multi_display_and_from_str_are_encode_and_decode() {
        let cursor = multi(vec![Cursor::new(FP, vec![3, 1, 4]), Cursor::new(1, vec![5])]);
        assert_eq!(cursor.to_string(), cursor.encode());
        assert_eq!(cursor.to_string().parse::<MultiCursor>(), Ok(cursor));
    }

    #[test]
    fn every_multi_error_is_reachable() {
        use CursorError::*;
        let one = block(1, &[1, 0, 0]);
        // 5,001 partitions in a real first block, so the second's count tips the total over.
        let wide = Cursor::new(1, vec![0; 5_001]);
        let wide_block = base64url::decode(wide.encode().as_bytes()).unwrap()[1..].to_vec();
        let cases: Vec<(String, CursorError)> = vec![
            (String::new(), Empty),
            (
                "A".repeat(MAX_ENCODED_LEN_V2 + 1),
                TooLong {
                    len: MAX_ENCODED_LEN_V2 + 1,
                    max: MAX_ENCODED_LEN_V2,
                },
            ),
            ("not a cursor".into(), NotBase64),
            ("AgB".into(), NonCanonical),
            (b64(&[3, 1]), UnsupportedVersion(3)),
            (b64(&[0]), UnsupportedVersion(0)),
            (b64(&[VERSION_V2]), Truncated),
            (raw2(2, &one), Truncated),
            (raw2(1, &block(1, &[])), Truncated),
            (raw2(0, &[]), NonCanonical),
            (
                raw2(MAX_STREAMS as u64 + 1, &one),
                TooManyStreams(MAX_STREAMS as u64 + 1),
            ),
            (raw2(u64::MAX >> 1, &one), TooManyStreams(u64::MAX >> 1)),
            (raw2(2, &[block(2, &[0, 0]), block(1, &[0, 0])].concat()), NonCanonical),
            (
                raw2(2, &[block(2, &[0, 0]), block(2, &[0, 0])].concat()),
                DuplicateStream(2),
            ),
            (
                raw2(2, &[wide_block, block(2, &varint(5_000))].concat()),
                TooManyPartitions(10_001),
            ),
            (
                raw2(1, &block(1, &varint(MAX_PARTITIONS as u64 + 1))),
                TooManyPartitions(10_001),
            ),
            (raw2(1, &block(1, &[0xFF; 10])), Overflow),
            (raw2(1, &block(1, &[1, 5, 1])), NonCanonical),
            (raw2(1, &block(1, &[1, 0x80, 0x00, 0])), NonCanonical),
            (raw2(1, &[one.clone(), vec![0]].concat()), TrailingBytes),
        ];
        for (text, expected) in cases {
            assert_eq!(MultiCursor::decode(&text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn multi_huge_partition_counts_are_refused_before_allocating() {
        let text = raw2(
            2,
            &[
                block(1, &[0, 0]),
                block(2, &[&varint(MAX_PARTITIONS as u64)[..], &[0, 0]].concat()),
            ]
            .concat(),
        );
        assert_eq!(MultiCursor::decode(&text), Err(CursorError::Truncated));
    }

    #[test]
    fn max_encoded_len_v2_covers_the_widest_multi_cursor() {
        // Every stream gets at least 128 partitions (a 2-byte count), a 9-byte base and
        // 9-byte deltas everywhere but at the base.
        let per_stream = MAX_PARTITIONS / MAX_STREAMS;
        let widest = (0..MAX_STREAMS).map(|s| {
            let extra = usize::from(s < MAX_PARTITIONS % MAX_STREAMS);
            let mut offsets = vec![i64::MAX; per_stream + extra];
            offsets[0] = 1 << 56;
            Cursor::new(s as u32, offsets)
        });
        let widest = multi(widest.collect());
        assert_eq!(
            widest.streams().iter().map(|c| c.offsets.len()).sum::<usize>(),
            MAX_PARTITIONS
        );
        let text = widest.encode();
        assert_eq!(text.len(), MAX_ENCODED_LEN_V2);
        assert_eq!(MultiCursor::decode(&text), Ok(widest));
        assert!(matches!(
            MultiCursor::decode(&format!("{text}A")),
            Err(CursorError::TooLong { .. })
        ));
    }

    fn offsets() -> impl Strategy<Value = Vec<i64>> {
        prop_oneof![
            proptest::collection::vec(0..=i64::MAX, 1..=512),
            // Realistic: offsets of one stream move together.
            (0..=i64::MAX / 2, 1usize..=512).prop_flat_map(|(base, n)| {
                proptest::collection::vec((0..100_000i64).prop_map(move |d| base + d), n)
            }),
        ]
    }

    /// Offsets of one stream of a multi-cursor: few, so 64 streams stay under MAX_PARTITIONS,
    /// and sometimes none.
    fn multi_offsets() -> impl Strategy<Value = Vec<i64>> {
        prop_oneof![
            Just(vec![]),
            proptest::collection::vec(0..=i64::MAX, 1..=16),
            (0..=i64::MAX / 2, 1usize..=64).prop_flat_map(|(base, n)| {
                proptest::collection::vec((0..100_000i64).prop_map(move |d| base + d), n)
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips_any_offsets(fingerprint in any::<u32>(), offsets in offsets()) {
            let cursor = Cursor::new(fingerprint, offsets);
            let text = cursor.encode();
            prop_assert_eq!(text.len(), cursor.encoded_len());
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(Cursor::decode(&text), Ok(cursor));
        }

        #[test]
        fn decodes_any_string_without_panicking(text in any::<String>()) {
            if let Ok(cursor) = Cursor::decode(&text) {
                prop_assert_eq!(cursor.encode(), text);
            }
        }

        #[test]
        fn decodes_any_base64_bytes_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = b64(&bytes);
            if let Ok(cursor) = Cursor::decode(&text) {
                prop_assert_eq!(cursor.encode(), text);
            }
        }

        #[test]
        fn round_trips_any_multi_cursor(
            streams in proptest::collection::btree_map(any::<u32>(), multi_offsets(), 1..=MAX_STREAMS)
        ) {
            let cursor = MultiCursor::new(streams.into_iter().map(|(fp, o)| Cursor::new(fp, o)).collect()).unwrap();
            let text = cursor.encode();
            prop_assert_eq!(text.len(), cursor.encoded_len());
            prop_assert_eq!(MultiCursor::decode(&text), Ok(cursor));
        }

        #[test]
        fn multi_decodes_any_string_without_panicking(text in any::<String>()) {
            if let Ok(cursor) = MultiCursor::decode(&text) {
                prop_assert!(is_canonical_spelling(&text, &cursor), "{text}");
            }
        }

        #[test]
        fn multi_decodes_any_base64_bytes_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = b64(&bytes);
            if let Ok(cursor) = MultiCursor::decode(&text) {
                prop_assert!(is_canonical_spelling(&text, &cursor), "{text}");
            }
        }

        #[test]
        fn multi_decodes_any_v2_body_without_panicking(
            streams in 0u64..=3,
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let text = raw2(streams, &body);
            if let Ok(cursor) = MultiCursor::decode(&text) {
                prop_assert!(is_canonical_spelling(&text, &cursor), "{text}");
            }
        }

        #[test]
        fn decodes_any_v1_body_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = raw(&body);
            if let Ok(cursor) = Cursor::decode(&text) {
                prop_assert_eq!(cursor.encode(), text);
            }
        }
    }
}
