//! Streams: which Kafka topics are exposed, and under what names.
//!
//! A stream name is the topic name without the configured prefix, and matches
//! `[A-Za-z0-9._-]{1,249}`, `.` and `..` excepted, with the prefix counted in the 249: Kafka's own
//! topic-name rules, so a name that passes here is one Kafka accepts. The allow-list is a comma-separated
//! list of names and globs (`*` matches any run of characters, `?` one character), matched
//! against stream names; the default `*` exposes every topic under the prefix.
//!
//! Topics whose names start with `__` are Kafka's and its tools' internals (`__consumer_offsets`,
//! `__transaction_state`, …): a glob never reaches them; only a pattern that itself starts with
//! `__` can.

use std::fmt;

/// Longest stream name: Kafka's limit on topic names.
pub const MAX_STREAM_NAME: usize = 249;

/// Why a stream cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("stream names are 1 to 249 characters (topic prefix included) of A-Z, a-z, 0-9, '.', '_' and '-', and not '.' or '..'; got {0:?}")]
    InvalidName(String),
    #[error("there is no stream {0:?}")]
    NotAllowed(String),
}

/// Stream flags, shared by ingest and the gateway.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// Prefix put in front of a stream name to get its Kafka topic, e.g. `sse.` exposes topic
    /// `sse.orders` as stream `orders`.
    #[arg(long = "topic-prefix", env = "SLUICE_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,

    /// Streams that exist: comma-separated names or globs such as `orders.*`.
    #[arg(long = "streams", env = "SLUICE_STREAMS", default_value = "*", value_delimiter = ',')]
    pub streams: Vec<String>,
}

/// The validated stream allow-list and topic mapping.
#[derive(Debug, Clone)]
pub struct StreamCatalog {
    prefix: String,
    patterns: Vec<String>,
}

impl StreamCatalog {
    /// Validates the flags: the prefix must itself be topic-name characters and leave room for a
    /// name; every pattern must be non-empty and use only name characters and wildcards.
    pub fn new(args: &StreamArgs) -> Result<Self, String> {
        let prefix = args.topic_prefix.trim().to_owned();
        if !prefix.bytes().all(is_name_byte) || prefix.len() >= MAX_STREAM_NAME {
            return Err(format!(
                "--topic-prefix {prefix:?} must be fewer than 249 topic-name characters"
            ));
        }
        let patterns: Vec<String> = args
            .streams
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        if patterns.is_empty() {
            return Err("--streams is empty: give stream names or globs, or `*` for all".into());
        }
        if let Some(bad) = patterns
            .iter()
            .find(|p| !p.bytes().all(|b| is_name_byte(b) || b == b'*' || b == b'?'))
        {
            return Err(format!(
                "--streams entry {bad:?} may hold only name characters, `*` and `?`"
            ));
        }
        Ok(Self { prefix, patterns })
    }

    /// The Kafka topic behind `stream`, if the name is valid and allowed.
    pub fn topic_for(&self, stream: &str) -> Result<String, StreamError> {
        let topic = format!("{}{stream}", self.prefix);
        // The topic is checked too: the prefix counts against the length, and `.` + `.` is `..`.
        if !is_valid_name(stream) || !is_valid_name(&topic) {
            return Err(StreamError::InvalidName(stream.to_owned()));
        }
        let internal = topic.starts_with("__");
        if !self
            .patterns
            .iter()
            .filter(|p| !internal || p.starts_with("__"))
            .any(|p| glob_match(p.as_bytes(), stream.as_bytes()))
        {
            return Err(StreamError::NotAllowed(stream.to_owned()));
        }
        Ok(topic)
    }
}

impl fmt::Display for StreamCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "streams {} on topics prefixed {:?}",
            self.patterns.join(","),
            self.prefix
        )
    }
}

/// True when `name` is a syntactically valid stream name. Kafka refuses `.` and `..` (they
/// would be directory names on the broker's disk).
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_STREAM_NAME).contains(&name.len()) && name.bytes().all(is_name_byte) && name != "." && name != ".."
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Glob match with `*` and `?`, iterative with single backtrack point (linear in practice).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(prefix: &str, streams: &[&str]) -> StreamCatalog {
        StreamCatalog::new(&StreamArgs {
            topic_prefix: prefix.into(),
            streams: streams.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn maps_names_to_prefixed_topics() {
        assert_eq!(catalog("sse.", &["*"]).topic_for("orders").unwrap(), "sse.orders");
        assert_eq!(catalog("", &["*"]).topic_for("orders").unwrap(), "orders");
    }

    #[test]
    fn allow_list_takes_names_and_globs() {
        let c = catalog("", &["orders.*", "prices", "user-?"]);
        assert!(c.topic_for("orders.eu").is_ok());
        assert!(c.topic_for("prices").is_ok());
        assert!(c.topic_for("user-1").is_ok());
        assert_eq!(c.topic_for("user-12"), Err(StreamError::NotAllowed("user-12".into())));
        assert_eq!(c.topic_for("pricesx"), Err(StreamError::NotAllowed("pricesx".into())));
        assert_eq!(c.topic_for("orders"), Err(StreamError::NotAllowed("orders".into())));
    }

    #[test]
    fn kafka_internal_topics_are_reached_only_by_name() {
        let open = catalog("", &["*"]);
        for internal in ["__consumer_offsets", "__transaction_state"] {
            assert_eq!(open.topic_for(internal), Err(StreamError::NotAllowed(internal.into())));
        }
        assert!(catalog("", &["*", "__audit"]).topic_for("__audit").is_ok());
        assert!(catalog("", &["__*"]).topic_for("__audit").is_ok());
        assert!(catalog("_", &["*"]).topic_for("_x").is_err(), "the prefix counts");
        assert!(open.topic_for("_single").is_ok());
    }

    #[test]
    fn rejects_invalid_names() {
        let c = catalog("", &["*"]);
        for bad in ["", ".", "..", "a/b", "a b", "ü", "a\0", &"x".repeat(250)] {
            assert!(matches!(c.topic_for(bad), Err(StreamError::InvalidName(_))), "{bad:?}");
        }
        assert!(c.topic_for(&"x".repeat(249)).is_ok());
        assert!(c.topic_for("...").is_ok(), "only `.` and `..` are reserved");
        assert!(matches!(
            catalog(".", &["*"]).topic_for("."),
            Err(StreamError::InvalidName(_))
        ));
        // The prefix counts against Kafka's limit.
        assert!(matches!(
            catalog("p.", &["*"]).topic_for(&"x".repeat(248)),
            Err(StreamError::InvalidName(_))
        ));
    }

    #[test]
    fn rejects_bad_flags() {
        let args = |prefix: &str, streams: &[&str]| StreamArgs {
            topic_prefix: prefix.into(),
            streams: streams.iter().map(|s| s.to_string()).collect(),
        };
        assert!(StreamCatalog::new(&args("a/b", &["*"])).is_err());
        assert!(StreamCatalog::new(&args("", &[])).is_err());
        assert!(StreamCatalog::new(&args("", &["orders/x"])).is_err());
    }

    #[test]
    fn glob_corner_cases() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"aXbYbZc"));
        assert!(!glob_match(b"a*b*c", b"aXbYbZ"));
        assert!(glob_match(b"**", b"abc"));
    }
}
