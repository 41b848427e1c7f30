//! The query of `GET /v1/streams/{stream}`: where to start and what to filter, and the
//! cursor a client resumes from. Everything here is hostile input: every path ends in a value
//! or an error the client gets as a 400, never in a panic (`cargo fuzz` checks it, see
//! `services/gateway/fuzz`).

use actix_web::http::header::HeaderValue;
use bytes::Bytes;
use sluice_sse::CursorError;

use crate::subscriber::Filter;
use crate::GatewayError;

/// Where a stream starts when the client sends no cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum From {
    Earliest,
    #[default]
    Latest,
    /// Milliseconds since the epoch.
    Since(i64),
}

/// A parsed request query.
#[derive(Clone, Default)]
pub struct StreamQuery {
    pub from: From,
    pub filter: Filter,
    /// `lastEventId`, for clients that cannot set the `Last-Event-ID` header.
    pub last_event_id: Option<String>,
    /// `access_token`, for clients that can set neither a header nor a cookie. Never logged.
    pub access_token: Option<String>,
    /// `cursor`, `limit` and `wait` of a poll, as sent (see [`PollQuery::parse`]).
    pub poll: RawPoll,
}

/// A poll's own parameters, not parsed yet (a stream ignores them).
#[derive(Debug, Clone, Default)]
pub struct RawPoll {
    pub cursor: Option<String>,
    pub limit: Option<String>,
    pub wait: Option<String>,
}

/// A poll's page size and wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollQuery {
    pub limit: usize,
    pub wait: std::time::Duration,
}

/// Events per page when a poll names no `limit`.
pub const DEFAULT_POLL_LIMIT: usize = 100;

impl PollQuery {
    /// `limit` (1 to `max_limit`, default [`DEFAULT_POLL_LIMIT`] or `max_limit` if lower) and
    /// `wait` (seconds, fractions allowed, default 0; above `max_wait` it is `max_wait`).
    pub fn parse(raw: &RawPoll, max_limit: usize, max_wait: std::time::Duration) -> Result<Self, GatewayError> {
        let limit = match raw.limit.as_deref() {
            None => DEFAULT_POLL_LIMIT.min(max_limit),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=max_limit).contains(&n) => n,
                _ => {
                    return Err(GatewayError::InvalidQuery(format!(
                        "limit={text:?}: give a whole number from 1 to {max_limit}"
                    )))
                }
            },
        };
        let wait = match raw.wait.as_deref() {
            None => std::time::Duration::ZERO,
            Some(text) => {
                let seconds = text
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0 && text.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
                    .ok_or_else(|| {
                        GatewayError::InvalidQuery(format!("wait={text:?}: give seconds, such as 0, 5 or 2.5"))
                    })?;
                std::time::Duration::from_secs_f64(seconds.min(max_wait.as_secs_f64()))
            }
        };
        Ok(Self { limit, wait })
    }
}

/// The streams a request names: `{a}` or `{a},{b},…` (stream names cannot hold a comma). At
/// most `max`, none twice; each name is checked against the catalog later, after access.
pub fn stream_names(path: &str, max: usize) -> Result<Vec<String>, GatewayError> {
    let names: Vec<String> = path.split(',').map(str::to_owned).collect();
    if names.iter().any(String::is_empty) {
        return Err(GatewayError::InvalidStreamName(
            "an empty stream name: join names with single commas".into(),
        ));
    }
    if names.len() > max {
        return Err(GatewayError::InvalidQuery(format!(
            "{} streams named; a request may name at most {max} (--max-streams-per-connection)",
            names.len()
        )));
    }
    // Quadratic, but over at most `max` names.
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(GatewayError::InvalidStreamName(format!(
                "stream {name:?} is named twice"
            )));
        }
    }
    Ok(names)
}

impl std::fmt::Debug for StreamQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamQuery")
            .field("from", &self.from)
            .field("filter", &self.filter)
            .field("last_event_id", &self.last_event_id)
            .field("access_token", &self.access_token.as_ref().map(|_| "<redacted>"))
            .field("poll", &self.poll)
            .finish()
    }
}

/// Longest key or type a filter accepts.
const MAX_FILTER_VALUE: usize = 1024;
/// Most `key=` / `type=` values in one request.
const MAX_FILTER_VALUES: usize = 256;

/// Parses `from`, `since`, repeatable `key` and `type`, `lastEventId`, `access_token`, and a
/// poll's `cursor`, `limit` and `wait`.
pub fn parse_query(query: &str) -> Result<StreamQuery, GatewayError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| GatewayError::InvalidQuery(format!("malformed query string: {e}")))?;
    let mut parsed = StreamQuery::default();
    let mut from = None;
    let mut since = None;
    for (name, value) in pairs {
        match name.as_str() {
            "from" => {
                from = Some(match value.as_str() {
                    "earliest" => From::Earliest,
                    "latest" => From::Latest,
                    other => {
                        return Err(GatewayError::InvalidQuery(format!(
                            "from={other:?}: use earliest or latest"
                        )))
                    }
                })
            }
            "since" => since = Some(parse_since(&value)?),
            "key" | "type" => {
                if value.is_empty() || value.len() > MAX_FILTER_VALUE {
                    return Err(GatewayError::InvalidQuery(format!(
                        "{name}= must be 1 to {MAX_FILTER_VALUE} bytes"
                    )));
                }
                if name == "key" {
                    parsed.filter.keys.push(Bytes::from(value.into_bytes()));
                } else {
                    parsed.filter.types.push(value);
                }
                if parsed.filter.keys.len() + parsed.filter.types.len() > MAX_FILTER_VALUES {
                    return Err(GatewayError::InvalidQuery(format!(
                        "at most {MAX_FILTER_VALUES} key= and type= values"
                    )));
                }
            }
            "lastEventId" => parsed.last_event_id = Some(value).filter(|v| !v.is_empty()),
            "access_token" => parsed.access_token = Some(value).filter(|v| !v.is_empty()),
            "cursor" => parsed.poll.cursor = Some(value).filter(|v| !v.is_empty()),
            "limit" => parsed.poll.limit = Some(value),
            "wait" => parsed.poll.wait = Some(value),
            _ => {}
        }
    }
    parsed.from = match (from, since) {
        (Some(_), Some(_)) => return Err(GatewayError::InvalidQuery("give from= or since=, not both".into())),
        (_, Some(ms)) => From::Since(ms),
        (Some(f), None) => f,
        (None, None) => From::Latest,
    };
    Ok(parsed)
}

/// `since=` as RFC 3339 (`2026-11-21T05:00:00Z`, fractions and offsets allowed) or epoch ms.
pub fn parse_since(text: &str) -> Result<i64, GatewayError> {
    let bad = || {
        GatewayError::InvalidQuery(format!(
            "since={text:?}: use RFC 3339 (2026-11-21T05:00:00Z) or epoch milliseconds"
        ))
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad());
    }
    parse_rfc3339(text).ok_or_else(bad)
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    // Bytes, not `str` slices: the text may hold multi-byte characters anywhere.
    let offset_minutes = match rest.as_bytes() {
        b"Z" | b"z" => 0,
        &[sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (two_digits(h1, h2)?, two_digits(m1, m2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            if sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60) * 1000) + millis)
}

fn two_digits(tens: u8, ones: u8) -> Option<i64> {
    (tens.is_ascii_digit() && ones.is_ascii_digit()).then(|| i64::from(tens - b'0') * 10 + i64::from(ones - b'0'))
}

/// The cursor text a client resumes from: the `Last-Event-ID` header, else `lastEventId`.
/// A header that is not visible ASCII cannot be a cursor: it is refused, not ignored (ignoring
/// it would start the client from `latest` and silently skip what it missed).
pub fn cursor_text<'a>(
    header: Option<&'a HeaderValue>,
    query: Option<&'a str>,
) -> Result<Option<&'a str>, GatewayError> {
    let header = match header {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| GatewayError::InvalidCursor(CursorError::NotBase64))?,
        ),
        None => None,
    };
    Ok(header.map(str::trim).filter(|v| !v.is_empty()).or(query))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filters_and_start() {
        let q = parse_query("from=earliest&key=a&key=b%20c&type=order&lastEventId=xyz&other=1").unwrap();
        assert_eq!(q.from, From::Earliest);
        assert_eq!(q.filter.keys, vec![Bytes::from("a"), Bytes::from("b c")]);
        assert_eq!(q.filter.types, vec!["order".to_string()]);
        assert_eq!(q.last_event_id.as_deref(), Some("xyz"));
        assert_eq!(parse_query("").unwrap().from, From::Latest);
        assert_eq!(parse_query("lastEventId=").unwrap().last_event_id, None);
    }

    #[test]
    fn takes_the_access_token_and_never_shows_it() {
        let q = parse_query("key=a&access_token=eyJ.secret.sig").unwrap();
        assert_eq!(q.access_token.as_deref(), Some("eyJ.secret.sig"));
        assert!(!format!("{q:?}").contains("secret"));
        assert_eq!(parse_query("access_token=").unwrap().access_token, None);
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            "from=middle",
            "since=yesterday",
            "key=",
            "from=latest&since=0",
            "since=2026-13-01T00:00:00Z",
            // A multi-byte character where the offset's colon would be (it used to panic).
            "since=2026-11-21T05:00:00%2B0%C3%A900",
            "since=2026-11-21T05:00:00%2B%C3%A9:00",
            "since=2026-11-21T05:00:00.%C3%A9Z",
            "since=2026-11-21T05:00:00%2B25:00",
            "since=2026-11-21T05:00:00%2B-1:00",
            "since=%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9",
            "since=2026-11-21T05:00:0%C3%A9Z",
            "since=99999999999999999999999",
        ] {
            assert!(matches!(parse_query(bad), Err(GatewayError::InvalidQuery(_))), "{bad}");
        }
    }

    #[test]
    fn a_cursor_header_that_is_not_ascii_is_refused_not_ignored() {
        let header = HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap();
        assert!(matches!(
            cursor_text(Some(&header), Some("q")),
            Err(GatewayError::InvalidCursor(CursorError::NotBase64))
        ));
        let blank = HeaderValue::from_static("  ");
        assert_eq!(cursor_text(Some(&blank), Some("q")).unwrap(), Some("q"));
        let header = HeaderValue::from_static(" abc ");
        assert_eq!(cursor_text(Some(&header), Some("q")).unwrap(), Some("abc"));
        assert_eq!(cursor_text(None, None).unwrap(), None);
    }

    proptest::proptest! {
        /// The fuzz target's property, on every `cargo test`: no input panics.
        #[test]
        fn no_query_since_or_cursor_header_panics(
            query in "\\PC{0,80}",
            near_rfc3339 in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9é]{0,5})?[Zz+:0-9é-]{0,8}",
            header in proptest::collection::vec(proptest::num::u8::ANY, 0..48),
        ) {
            if let Ok(parsed) = parse_query(&query) {
                let _ = PollQuery::parse(&parsed.poll, 1000, std::time::Duration::from_secs(30));
            }
            let _ = stream_names(&query, 8);
            let _ = parse_since(&query);
            let _ = parse_since(&near_rfc3339);
            if let Ok(value) = HeaderValue::from_bytes(&header) {
                let _ = cursor_text(Some(&value), None);
            }
        }
    }

    #[test]
    fn stream_names_split_on_commas_and_refuse_repeats_empties_and_too_many() {
        assert_eq!(stream_names("orders", 8).unwrap(), vec!["orders"]);
        assert_eq!(stream_names("a,b.c,d-e", 8).unwrap(), vec!["a", "b.c", "d-e"]);
        assert!(matches!(
            stream_names("a,b,a", 8),
            Err(GatewayError::InvalidStreamName(_))
        ));
        for empty in ["a,,b", ",a", "a,", ""] {
            assert!(
                matches!(stream_names(empty, 8), Err(GatewayError::InvalidStreamName(_))),
                "{empty:?}"
            );
        }
        assert!(matches!(stream_names("a,b,c", 2), Err(GatewayError::InvalidQuery(_))));
    }

    #[test]
    fn poll_limit_and_wait_have_defaults_bounds_and_caps() {
        let max_wait = std::time::Duration::from_secs(30);
        let parse = |q: &str| PollQuery::parse(&parse_query(q).unwrap().poll, 1000, max_wait);
        assert_eq!(
            parse("").unwrap(),
            PollQuery {
                limit: 100,
                wait: std::time::Duration::ZERO
            }
        );
        assert_eq!(parse("limit=1000&wait=2.5").unwrap().limit, 1000);
        assert_eq!(parse("wait=2.5").unwrap().wait, std::time::Duration::from_millis(2500));
        assert_eq!(parse("wait=3600").unwrap().wait, max_wait);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=x",
            "wait=-1",
            "wait=NaN",
            "wait=inf",
            "wait=1e3",
            "wait=",
        ] {
            assert!(matches!(parse(bad), Err(GatewayError::InvalidQuery(_))), "{bad}");
        }
        assert_eq!(parse_query("cursor=abc").unwrap().poll.cursor.as_deref(), Some("abc"));
    }

    #[test]
    fn since_takes_rfc3339_and_epoch_ms() {
        assert_eq!(parse_since("0").unwrap(), 0);
        assert_eq!(parse_since("1732165200000").unwrap(), 1_732_165_200_000);
        assert_eq!(parse_since("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_since("2024-11-21T05:00:00Z").unwrap(), 1_732_165_200_000);
        assert_eq!(parse_since("2024-11-21T05:00:00.25Z").unwrap(), 1_732_165_200_250);
        assert_eq!(parse_since("2024-11-21T06:30:00+01:30").unwrap(), 1_732_165_200_000);
        assert_eq!(parse_since("2000-02-29T00:00:00Z").unwrap(), 951_782_400_000);
    }
}
