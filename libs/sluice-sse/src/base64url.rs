//! base64url without padding (RFC 4648 §5), written for the cursor's needs rather than pulled
//! in as a dependency.
//!
//! The encoder is a streaming sink: the cursor codec pushes varint bytes into it one at a time
//! and it writes ASCII straight into the caller's buffer, so minting a cursor needs no heap
//! scratch buffer at all. The decoder is strict: it accepts only the canonical text of a byte string
//! (no padding, no whitespace, length not ≡ 1 mod 4, unused trailing bits zero), so every
//! cursor has exactly one spelling and `encode(decode(text)) == text` whenever decoding
//! succeeds.

use bytes::BufMut;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Marks bytes outside the alphabet in [`DECODE`].
const INVALID: u8 = 0xFF;

const DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Length of the unpadded encoding of `n` bytes.
pub(crate) const fn encoded_len(n: usize) -> usize {
    n / 3 * 4
        + match n % 3 {
            0 => 0,
            1 => 2,
            _ => 3,
        }
}

/// Why a text is not canonical base64url. The cursor maps these onto its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A byte outside the alphabet, or a length no encoding can have.
    Invalid,
    /// The last character carries non-zero bits that no byte uses: some other text is the
    /// encoding of these bytes.
    NonCanonical,
}

/// Streaming encoder writing into any [`BufMut`] (a `Vec<u8>` or the `BytesMut` of a frame).
///
/// Bytes are staged in a small stack block and encoded a block at a time, so the output
/// buffer sees one `put_slice` per 64 characters rather than one per byte. Call
/// [`Encoder::finish`]: the staged tail is only written then.
pub(crate) struct Encoder<'a, B: BufMut> {
    out: &'a mut B,
    block: [u8; BLOCK],
    len: usize,
}

/// Staged input bytes per flush; a multiple of 3, so full blocks need no carry-over.
const BLOCK: usize = 48;

impl<'a, B: BufMut> Encoder<'a, B> {
    pub(crate) fn new(out: &'a mut B) -> Self {
        Self {
            out,
            block: [0; BLOCK],
            len: 0,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, byte: u8) {
        self.block[self.len] = byte;
        self.len += 1;
        if self.len == BLOCK {
            self.flush();
        }
    }

    pub(crate) fn push_slice(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.push(b);
        }
    }

    pub(crate) fn finish(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        let input = &self.block[..self.len];
        let mut chars = [0u8; BLOCK / 3 * 4];
        let mut n = 0;
        let mut triples = input.chunks_exact(3);
        for t in &mut triples {
            let v = (u32::from(t[0]) << 16) | (u32::from(t[1]) << 8) | u32::from(t[2]);
            chars[n..n + 4].copy_from_slice(&[sextet(v >> 18), sextet(v >> 12), sextet(v >> 6), sextet(v)]);
            n += 4;
        }
        // Only the final flush can leave a partial group: full blocks are multiples of 3.
        match *triples.remainder() {
            [a] => {
                let v = u32::from(a) << 4;
                chars[n..n + 2].copy_from_slice(&[sextet(v >> 6), sextet(v)]);
                n += 2;
            }
            [a, b] => {
                let v = ((u32::from(a) << 8) | u32::from(b)) << 2;
                chars[n..n + 3].copy_from_slice(&[sextet(v >> 12), sextet(v >> 6), sextet(v)]);
                n += 3;
            }
            _ => {}
        }
        self.out.put_slice(&chars[..n]);
        self.len = 0;
    }
}

#[inline]
fn sextet(v: u32) -> u8 {
    ALPHABET[(v & 63) as usize]
}

/// Decodes canonical unpadded base64url. The output is at most `3/4` of the input length, so
/// callers bound the allocation by bounding the input first.
pub(crate) fn decode(text: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if text.len() % 4 == 1 {
        return Err(DecodeError::Invalid);
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    let mut quads = text.chunks_exact(4);
    for quad in &mut quads {
        let v = (value(quad[0])? << 18) | (value(quad[1])? << 12) | (value(quad[2])? << 6) | value(quad[3])?;
        out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
    }
    match *quads.remainder() {
        [] => {}
        [a, b] => {
            let v = (value(a)? << 6) | value(b)?;
            if v & 0xF != 0 {
                return Err(DecodeError::NonCanonical);
            }
            out.push((v >> 4) as u8);
        }
        [a, b, c] => {
            let v = (value(a)? << 12) | (value(b)? << 6) | value(c)?;
            if v & 0x3 != 0 {
                return Err(DecodeError::NonCanonical);
            }
            out.extend_from_slice(&[(v >> 10) as u8, (v >> 2) as u8]);
        }
        // `len % 4 == 1` was rejected above, and chunks_exact leaves fewer than 4.
        _ => return Err(DecodeError::Invalid),
    }
    Ok(out)
}

#[inline]
fn value(c: u8) -> Result<u32, DecodeError> {
    match DECODE[usize::from(c)] {
        INVALID => Err(DecodeError::Invalid),
        v => Ok(u32::from(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        let mut enc = Encoder::new(&mut out);
        enc.push_slice(bytes);
        enc.finish();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn matches_rfc_4648_vectors_without_padding() {
        let vectors = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded.as_bytes()).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn uses_the_url_safe_alphabet() {
        assert_eq!(encode(&[0xFB, 0xFF]), "-_8");
        assert_eq!(decode(b"-_8").unwrap(), [0xFB, 0xFF]);
        assert_eq!(decode(b"+/8"), Err(DecodeError::Invalid));
    }

    #[test]
    fn rejects_padding_whitespace_and_impossible_lengths() {
        assert_eq!(decode(b"Zg=="), Err(DecodeError::Invalid));
        assert_eq!(decode(b"Zm9 v"), Err(DecodeError::Invalid));
        assert_eq!(decode(b"Zm9vY"), Err(DecodeError::Invalid));
    }

    #[test]
    fn rejects_non_zero_trailing_bits() {
        // "Zg" is the encoding of "f"; "Zh" differs only in bits no byte uses.
        assert_eq!(decode(b"Zh"), Err(DecodeError::NonCanonical));
        assert_eq!(decode(b"Zm9"), Err(DecodeError::NonCanonical));
    }

    proptest! {
        #[test]
        fn round_trips_and_predicts_its_length(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = encode(&bytes);
            prop_assert_eq!(text.len(), encoded_len(bytes.len()));
            prop_assert_eq!(decode(text.as_bytes()).unwrap(), bytes);
        }

        #[test]
        fn accepts_only_the_canonical_text(text in "[A-Za-z0-9_-]{0,40}") {
            if let Ok(bytes) = decode(text.as_bytes()) {
                prop_assert_eq!(encode(&bytes), text);
            }
        }
    }
}
