//! Kafka record → SSE event: the mapping, including records Sluice's ingest did not write, and
//! the one function that frames an event, used by the ring (live and memory) and by catch-up.
//!
//! | record | `event:` | `data:` |
//! |---|---|---|
//! | header `sse-event` (UTF-8, no CR/LF/NUL) | its value | the value, as is |
//! | no `sse-event` header, or an unusable one | `message` | the value, as is |
//! | value not UTF-8 | `sluice.binary` | `{"type":"<type>","base64":"<value, standard base64>"}` |
//! | tombstone (null value) | `sluice.tombstone` | `{"type":"<type>","key":"<key>"}` (`key_base64` for a non-UTF-8 key; `key` null when the record has none) |
//!
//! Line breaks inside a value are legal: the frame builder splits them into `data:` lines and
//! the client joins them back with LF.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use sluice_sse::Cursor;

use crate::kafka::Record;

/// Event type for records whose value is not UTF-8.
pub const TYPE_BINARY: &str = "sluice.binary";
/// Event type for tombstones (records with a key and a null value).
pub const TYPE_TOMBSTONE: &str = "sluice.tombstone";
/// Event type when a record names none.
pub const TYPE_DEFAULT: &str = "message";

/// An SSE event's type and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped<'a> {
    /// The type filters match on: the record's own type, even for binary and tombstone records.
    pub record_type: Cow<'a, str>,
    /// What goes in the `event:` field.
    pub event_type: Cow<'a, str>,
    pub data: Cow<'a, str>,
}

/// Maps a record read from Kafka.
pub fn map(record: &Record) -> Mapped<'_> {
    map_record(
        record.headers.event_type.as_deref(),
        record.key.as_deref(),
        record.value.as_deref(),
    )
}

/// The SSE frame of an event whose id is `position`: `id:`, `event:`, `data:` lines.
pub fn event_frame(position: &Cursor, event_type: &str, data: &str) -> Bytes {
    // The frame builder refuses types with line breaks; mapping never produces one, and the
    // fallback keeps the data rather than lose the event.
    sluice_sse::frame::cursor_event_frame(position, Some(event_type), data)
        .unwrap_or_else(|_| sluice_sse::frame::cursor_event_frame(position, None, data).expect("a valid cursor id"))
}

/// Maps a record's `sse-event` header, key and value.
pub fn map_record<'a>(type_header: Option<&'a [u8]>, key: Option<&[u8]>, value: Option<&'a [u8]>) -> Mapped<'a> {
    let record_type: Cow<'a, str> = type_header
        .and_then(|h| std::str::from_utf8(h).ok())
        .filter(|t| !t.is_empty() && !t.contains(['\r', '\n', '\0']))
        .map_or(Cow::Borrowed(TYPE_DEFAULT), Cow::Borrowed);
    match value {
        None => {
            let key_field = match key.map(std::str::from_utf8) {
                None => serde_json::json!({ "key": null }),
                Some(Ok(text)) => serde_json::json!({ "key": text }),
                Some(Err(_)) => serde_json::json!({
                    "key_base64": base64::engine::general_purpose::STANDARD.encode(key.unwrap_or_default())
                }),
            };
            let mut body = serde_json::json!({ "type": record_type.as_ref() });
            if let (Some(body), Some(fields)) = (body.as_object_mut(), key_field.as_object()) {
                body.extend(fields.clone());
            }
            Mapped {
                record_type,
                event_type: Cow::Borrowed(TYPE_TOMBSTONE),
                data: Cow::Owned(body.to_string()),
            }
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Mapped {
                event_type: record_type.clone(),
                record_type,
                data: Cow::Borrowed(text),
            },
            Err(_) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                let body = serde_json::json!({ "type": record_type.as_ref(), "base64": encoded });
                Mapped {
                    record_type,
                    event_type: Cow::Borrowed(TYPE_BINARY),
                    data: Cow::Owned(body.to_string()),
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_ingest_map_to_their_type_and_value() {
        let m = map_record(Some(b"order"), Some(b"k"), Some(br#"{"n":1}"#));
        assert_eq!((m.event_type.as_ref(), m.data.as_ref()), ("order", r#"{"n":1}"#));
    }

    #[test]
    fn no_or_unusable_type_header_means_message() {
        for header in [None, Some(&b""[..]), Some(&b"a\nb"[..]), Some(&b"\xff"[..])] {
            let m = map_record(header, None, Some(b"x"));
            assert_eq!(m.event_type, "message", "{header:?}");
        }
    }

    #[test]
    fn binary_values_are_base64_in_json() {
        let m = map_record(Some(b"blob"), None, Some(&[0xff, 0x00, 0x01]));
        assert_eq!(m.event_type, TYPE_BINARY);
        assert_eq!(m.record_type, "blob");
        let body: serde_json::Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(body, serde_json::json!({"type": "blob", "base64": "/wAB"}));
    }

    #[test]
    fn tombstones_name_their_key() {
        let m = map_record(None, Some(b"user-1"), None);
        assert_eq!(m.event_type, TYPE_TOMBSTONE);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&m.data).unwrap(),
            serde_json::json!({"type": "message", "key": "user-1"})
        );
        let m = map_record(None, Some(&[0xfe]), None);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&m.data).unwrap(),
            serde_json::json!({"type": "message", "key_base64": "/g=="})
        );
        let m = map_record(None, None, None);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&m.data).unwrap(),
            serde_json::json!({"type": "message", "key": null})
        );
    }

    #[test]
    fn empty_value_is_empty_data() {
        assert_eq!(map_record(None, None, Some(b"")).data, "");
    }
}
