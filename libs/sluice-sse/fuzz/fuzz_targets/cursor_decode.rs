//! Arbitrary input must decode to `Ok` or an error, never panic, and anything that decodes is
//! the one canonical spelling of its cursor: re-encoding gives back the same text. Each input is
//! fed to both decoders: `Cursor::decode` (v1) and `MultiCursor::decode` (v1 or v2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_sse::{Cursor, MultiCursor};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let single = Cursor::decode(text);
    if let Ok(cursor) = &single {
        let encoded = cursor.encode();
        assert_eq!(encoded, text, "decoding accepted a non-canonical cursor");
        assert_eq!(encoded.len(), cursor.encoded_len());
        assert_eq!(Cursor::decode(&encoded).as_ref(), Ok(cursor));
    }
    match (MultiCursor::decode(text), single) {
        // A v1 text: the same one stream.
        (Ok(multi), Ok(cursor)) => assert_eq!(multi.streams(), [cursor]),
        (Ok(multi), Err(_)) => {
            let encoded = multi.encode();
            assert_eq!(encoded, text, "decoding accepted a non-canonical multi-cursor");
            assert_eq!(encoded.len(), multi.encoded_len());
            assert_eq!(MultiCursor::decode(&encoded).as_ref(), Ok(&multi));
        }
        // Whatever v1 accepts, the multi-stream decoder accepts too.
        (Err(e), Ok(_)) => panic!("MultiCursor::decode refused a v1 cursor: {e}"),
        (Err(_), Err(_)) => {}
    }
});
