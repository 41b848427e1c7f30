//! Arbitrary input must decode to `Ok` or an error, never panic, and anything that decodes is
//! the one canonical spelling of its cursor: re-encoding gives back the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_sse::Cursor;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cursor) = Cursor::decode(text) {
        let encoded = cursor.encode();
        assert_eq!(encoded, text, "decoding accepted a non-canonical cursor");
        assert_eq!(encoded.len(), cursor.encoded_len());
        assert_eq!(Cursor::decode(&encoded).as_ref(), Ok(&cursor));
    }
});
