//! Request bodies → validated events, all or nothing.
//!
//! A body is one JSON event, a JSON array of events, or NDJSON (one event per line). Every event
//! is checked before any is produced, so bad input changes nothing.
//!
//! The event's `data` is stored exactly as sent: the JSON text of the value, byte for byte
//! (serde_json's `RawValue` validates it and hands back the slice of the body it occupies). It
//! is never re-serialised, because a round trip through `serde_json::Value` changes data: big
//! integers lose precision, duplicate keys collapse, `1.10` becomes `1.1`, keys may reorder.
//! Size limits measure that text. Pretty JSON keeps its line breaks; the gateway splits such data
//! into several SSE `data:` lines, which a client's EventSource joins with LF, so the client
//! sees the text as sent, except that a CR or CRLF (only possible as whitespace between JSON
//! tokens) arrives as LF: SSE itself treats every CR as a line end.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::Limits;
use crate::error::IngestError;

/// How the body is encoded, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    NdJson,
}

impl BodyFormat {
    /// Reads the media type, ignoring parameters such as `charset=utf-8`.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, IngestError> {
        let Some(raw) = content_type else {
            return Err(IngestError::UnsupportedMediaType("no Content-Type header".into()));
        };
        let media = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json" => Ok(Self::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
                Ok(Self::NdJson)
            }
            _ => Err(IngestError::UnsupportedMediaType(format!(
                "Content-Type {raw:?}; use application/json or application/x-ndjson"
            ))),
        }
    }
}

/// One event as a client sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent<'a> {
    #[serde(default, rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    key: Option<String>,
    /// `Some` whenever the field is present, `null` included; `None` only when it is missing.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// A validated event, ready to become a Kafka record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_type: Option<String>,
    pub key: Option<String>,
    /// The JSON text of `data`, exactly as sent.
    pub data: Vec<u8>,
}

/// Parses and validates a whole body.
pub fn parse_body(body: &[u8], format: BodyFormat, limits: &Limits) -> Result<Vec<Event>, IngestError> {
    let text = std::str::from_utf8(body).map_err(|e| IngestError::InvalidJson(format!("body is not UTF-8: {e}")))?;
    let raw_events: Vec<&RawValue> = match format {
        BodyFormat::Json => {
            let value: &RawValue = serde_json::from_str(text).map_err(|e| IngestError::InvalidJson(e.to_string()))?;
            if value.get().trim_start().starts_with('[') {
                serde_json::from_str(value.get()).map_err(|e| IngestError::InvalidJson(e.to_string()))?
            } else {
                vec![value]
            }
        }
        BodyFormat::NdJson => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str::<&RawValue>(line)
                    .map_err(|e| IngestError::InvalidJson(format!("line {}: {e}", n + 1)))
            })
            .collect::<Result<_, _>>()?,
    };
    if raw_events.is_empty() {
        return Err(IngestError::InvalidEvent("the body holds no events".into()));
    }
    if raw_events.len() > limits.max_events_per_request {
        return Err(IngestError::TooManyEvents {
            count: raw_events.len(),
            max: limits.max_events_per_request,
        });
    }
    let batch = raw_events.len() > 1 || format == BodyFormat::NdJson;
    raw_events
        .into_iter()
        .enumerate()
        .map(|(index, raw)| validate(raw, limits).map_err(|err| if batch { err.at_event(index) } else { err }))
        .collect()
}

fn validate(raw: &RawValue, limits: &Limits) -> Result<Event, IngestError> {
    let wire: WireEvent<'_> = serde_json::from_str(raw.get())
        .map_err(|e| IngestError::InvalidEvent(format!("expected {{\"type\"?, \"key\"?, \"data\"}}: {e}")))?;
    let data = wire
        .data
        .ok_or_else(|| IngestError::InvalidEvent("missing field `data`".into()))?;
    if let Some(event_type) = &wire.event_type {
        check_text("type", event_type, limits.max_type_bytes)?;
    }
    if let Some(key) = &wire.key {
        check_text("key", key, limits.max_key_bytes)?;
    }
    let data = data.get().as_bytes().to_vec();
    if data.len() > limits.max_event_bytes {
        return Err(IngestError::EventTooLarge {
            size: data.len(),
            max: limits.max_event_bytes,
        });
    }
    Ok(Event {
        event_type: wire.event_type,
        key: wire.key,
        data,
    })
}

/// `type` and `key` travel in SSE fields and Kafka headers: a CR or LF would end the SSE field
/// early and let content inject fields of its own.
fn check_text(field: &str, value: &str, max: usize) -> Result<(), IngestError> {
    if value.is_empty() {
        return Err(IngestError::InvalidEvent(format!("`{field}` must not be empty")));
    }
    if value.len() > max {
        return Err(IngestError::InvalidEvent(format!(
            "`{field}` is {} bytes; the limit is {max}",
            value.len()
        )));
    }
    if value.contains(['\r', '\n']) {
        return Err(IngestError::InvalidEvent(format!(
            "`{field}` must not contain a line break (CR or LF)"
        )));
    }
    if value.contains('\0') {
        return Err(IngestError::InvalidEvent(format!(
            "`{field}` must not contain a NUL character"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, format: BodyFormat) -> Result<Vec<Event>, IngestError> {
        parse_body(body.as_bytes(), format, &Limits::default())
    }

    #[test]
    fn one_event_array_and_ndjson() {
        let one = parse(r#"{"type":"order","key":"k1","data":{"n":1}}"#, BodyFormat::Json).unwrap();
        assert_eq!(
            one,
            vec![Event {
                event_type: Some("order".into()),
                key: Some("k1".into()),
                data: br#"{"n":1}"#.to_vec()
            }]
        );
        let array = parse(r#"[{"data":1},{"data":"two"}]"#, BodyFormat::Json).unwrap();
        assert_eq!(
            array.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
            vec![b"1".to_vec(), b"\"two\"".to_vec()]
        );
        let nd = parse("{\"data\":1}\n\n{\"data\":[2]}\r\n", BodyFormat::NdJson).unwrap();
        assert_eq!(nd.len(), 2);
        assert_eq!(nd[1].data, b"[2]");
    }

    #[test]
    fn data_is_kept_byte_for_byte() {
        let samples = [
            "{\n  \"a\" : [1, 2],\r\n  \"s\": \"x y\\n\" }",
            "12345678901234567890123",
            "{\"k\":1,\"k\":2}",
            "{\"z\":1,\"a\":2}",
            "[1.10, 1e2, -0, 1E-7, 0.0]",
            // Beyond f64: JSON numbers have no range, so these are valid and kept as sent (the
            // fuzzer found the body parser accepting them and its own check refusing them).
            "[1e400, -2E-400, 123456789012345678901234567890.5]",
            "\"\\u00e9\\ud83d\\ude00 é\"",
            "\t[ ]",
        ];
        for data in samples {
            for (body, format) in [
                (format!("{{\"data\": {data} }}"), BodyFormat::Json),
                (format!("[{{\"data\":{data}}},{{\"data\":{data}}}]"), BodyFormat::Json),
                (format!("{{\"data\":{data}}}\n"), BodyFormat::NdJson),
            ] {
                if format == BodyFormat::NdJson && data.contains('\n') {
                    continue;
                }
                let events = parse(&body, format).unwrap();
                for event in events {
                    assert_eq!(std::str::from_utf8(&event.data).unwrap(), data.trim_start(), "{body}");
                }
            }
        }
    }

    #[test]
    fn size_limit_measures_the_text_as_sent() {
        let limits = Limits {
            max_event_bytes: 9,
            ..Limits::default()
        };
        // Nine bytes as sent (seven compacted): at the limit. Ten as sent: over it, although
        // its compact form would fit.
        assert!(parse_body(b"{\"data\":[1,  2,3]}", BodyFormat::Json, &limits).is_ok());
        let spaced = parse_body(b"{\"data\":[1,   2,3]}", BodyFormat::Json, &limits);
        assert!(matches!(spaced, Err(IngestError::EventTooLarge { size: 10, max: 9 })));
    }

    #[test]
    fn null_data_is_data() {
        assert_eq!(parse(r#"{"data":null}"#, BodyFormat::Json).unwrap()[0].data, b"null");
    }

    #[test]
    fn rejects_line_breaks_in_type_and_key() {
        for body in [
            r#"{"type":"a\nb","data":1}"#,
            r#"{"key":"a\rb","data":1}"#,
            r#"{"type":"","data":1}"#,
        ] {
            let err = parse(body, BodyFormat::Json).unwrap_err();
            assert!(matches!(err, IngestError::InvalidEvent(_)), "{body}: {err:?}");
        }
    }

    #[test]
    fn rejects_missing_data_unknown_fields_and_bad_json() {
        assert!(matches!(
            parse(r#"{"type":"x"}"#, BodyFormat::Json),
            Err(IngestError::InvalidEvent(_))
        ));
        assert!(matches!(
            parse(r#"{"data":1,"dta":2}"#, BodyFormat::Json),
            Err(IngestError::InvalidEvent(_))
        ));
        assert!(matches!(
            parse(r#"{"data":"#, BodyFormat::Json),
            Err(IngestError::InvalidJson(_))
        ));
        assert!(matches!(
            parse("[]", BodyFormat::Json),
            Err(IngestError::InvalidEvent(_))
        ));
        assert!(
            matches!(parse("{\"data\":1}\nnope", BodyFormat::NdJson), Err(IngestError::InvalidJson(m)) if m.starts_with("line 2"))
        );
    }

    #[test]
    fn errors_in_batches_name_the_event() {
        let err = parse(r#"[{"data":1},{"type":"a\nb","data":2}]"#, BodyFormat::Json).unwrap_err();
        assert!(err.to_string().starts_with("event 1: "), "{err}");
    }

    #[test]
    fn enforces_limits() {
        let limits = Limits {
            max_events_per_request: 2,
            max_event_bytes: 10,
            max_key_bytes: 3,
            ..Limits::default()
        };
        let too_many = parse_body(br#"[{"data":1},{"data":2},{"data":3}]"#, BodyFormat::Json, &limits);
        assert!(matches!(too_many, Err(IngestError::TooManyEvents { count: 3, max: 2 })));
        let too_big = parse_body(br#"{"data":"0123456789"}"#, BodyFormat::Json, &limits);
        assert!(matches!(too_big, Err(IngestError::EventTooLarge { size: 12, max: 10 })));
        let long_key = parse_body(br#"{"key":"abcd","data":1}"#, BodyFormat::Json, &limits);
        assert!(matches!(long_key, Err(IngestError::InvalidEvent(_))));
    }

    #[test]
    fn media_types() {
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            BodyFormat::Json
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/x-ndjson")).unwrap(),
            BodyFormat::NdJson
        );
        assert!(BodyFormat::from_content_type(Some("text/plain")).is_err());
        assert!(BodyFormat::from_content_type(None).is_err());
    }
}
