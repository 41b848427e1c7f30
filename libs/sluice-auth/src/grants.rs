//! The `sluice` claim: which streams (and keys) a principal may subscribe to or publish.
//!
//! An entry is a stream name or glob (`"orders.*"`: every key of every matching stream), or
//! `{"stream": "notifications", "keys": ["user-42"]}`: only those keys.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::AuthError;

/// Most entries one `subscribe` or `publish` list may hold. Tokens are capped at 8 KiB anyway;
/// this keeps the per-request matching cost small and says so in the error.
pub const MAX_GRANT_ENTRIES: usize = 128;
/// Most keys one keyed entry may list.
pub const MAX_KEYS_PER_ENTRY: usize = 256;
/// Longest stream pattern: a stream name is at most 249 characters.
pub const MAX_PATTERN_LEN: usize = 249;
/// Longest key in a keyed entry.
pub const MAX_KEY_LEN: usize = 1024;

/// What a principal may do on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every key.
    All,
    /// Only these keys.
    Keys(BTreeSet<String>),
}

/// One list of grants (`subscribe` or `publish`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grants {
    /// `None` for the anonymous principal: everything.
    entries: Option<Vec<Entry>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pattern: String,
    keys: Option<BTreeSet<String>>,
}

/// One entry as the token carries it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawEntry {
    Stream(String),
    Keyed { stream: String, keys: Vec<String> },
}

/// The `sluice` claim: `{"subscribe": [...], "publish": [...]}`; a missing list grants nothing.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SluiceClaim {
    #[serde(default)]
    subscribe: Option<serde_json::Value>,
    #[serde(default)]
    publish: Option<serde_json::Value>,
}

impl SluiceClaim {
    /// `(subscribe, publish)` grants; an absent or `null` claim grants nothing.
    pub(crate) fn grants(claim: Option<&serde_json::Value>) -> Result<(Grants, Grants), AuthError> {
        let claim: SluiceClaim = match claim {
            None | Some(serde_json::Value::Null) => SluiceClaim::default(),
            // serde would also read a struct from an array; the claim is an object or nothing.
            Some(value) if value.is_object() => SluiceClaim::deserialize(value)
                .map_err(|_| AuthError::Malformed("the sluice claim must be an object".into()))?,
            Some(_) => return Err(AuthError::Malformed("the sluice claim must be an object".into())),
        };
        let list = |value: Option<serde_json::Value>, name: &str| match value {
            None | Some(serde_json::Value::Null) => Ok(Grants::none()),
            Some(v) => Grants::from_claim(&v).map_err(|e| match e {
                AuthError::Malformed(why) => AuthError::Malformed(format!("sluice.{name}: {why}")),
                other => other,
            }),
        };
        Ok((list(claim.subscribe, "subscribe")?, list(claim.publish, "publish")?))
    }
}

impl Grants {
    /// Everything (the anonymous principal).
    pub fn all() -> Self {
        Self { entries: None }
    }

    /// Nothing.
    pub fn none() -> Self {
        Self {
            entries: Some(Vec::new()),
        }
    }

    /// Grants from one list of the `sluice` claim (`subscribe` or `publish`): each entry a
    /// stream name or glob, or `{"stream": …, "keys": […]}`. Over the bounds
    /// ([`MAX_GRANT_ENTRIES`], …) or of any other shape: `Malformed`.
    pub fn from_claim(list: &serde_json::Value) -> Result<Self, AuthError> {
        let malformed = |why: &str| AuthError::Malformed(why.to_owned());
        let raw = Vec::<RawEntry>::deserialize(list)
            .map_err(|_| malformed("each entry must be a stream name or {\"stream\", \"keys\"}"))?;
        if raw.len() > MAX_GRANT_ENTRIES {
            return Err(AuthError::Malformed(format!("more than {MAX_GRANT_ENTRIES} entries")));
        }
        let mut entries = Vec::with_capacity(raw.len());
        for entry in raw {
            let (pattern, keys) = match entry {
                RawEntry::Stream(pattern) => (pattern, None),
                RawEntry::Keyed { stream, keys } => (stream, Some(keys)),
            };
            check_pattern(&pattern)?;
            let keys = keys.map(check_keys).transpose()?;
            entries.push(Entry { pattern, keys });
        }
        Ok(Self { entries: Some(entries) })
    }

    /// What these grants allow on `stream`; `None` when nothing is granted there. Entries that
    /// match add up: any unkeyed match gives every key.
    pub fn access(&self, stream: &str) -> Option<Access> {
        let Some(entries) = &self.entries else {
            return Some(Access::All);
        };
        let mut keys: Option<BTreeSet<String>> = None;
        for entry in entries
            .iter()
            .filter(|e| glob_match(e.pattern.as_bytes(), stream.as_bytes()))
        {
            match &entry.keys {
                None => return Some(Access::All),
                Some(k) => keys.get_or_insert_with(BTreeSet::new).extend(k.iter().cloned()),
            }
        }
        keys.map(Access::Keys)
    }
}

/// A stream name, or a glob over stream names (`*`, `?`).
fn check_pattern(pattern: &str) -> Result<(), AuthError> {
    let ok_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*' | b'?');
    if pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN || !pattern.as_bytes().iter().all(ok_byte) {
        return Err(AuthError::Malformed(format!(
            "a stream pattern must be 1 to {MAX_PATTERN_LEN} of [A-Za-z0-9._-*?]"
        )));
    }
    Ok(())
}

fn check_keys(keys: Vec<String>) -> Result<BTreeSet<String>, AuthError> {
    if keys.is_empty() || keys.len() > MAX_KEYS_PER_ENTRY {
        return Err(AuthError::Malformed(format!(
            "an entry's keys must list 1 to {MAX_KEYS_PER_ENTRY} keys"
        )));
    }
    if keys.iter().any(|k| k.len() > MAX_KEY_LEN) {
        return Err(AuthError::Malformed(format!(
            "a key is longer than {MAX_KEY_LEN} bytes"
        )));
    }
    Ok(keys.into_iter().collect())
}

/// `*` matches any run of characters, `?` one; everything else literally.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys(list: &[&str]) -> Access {
        Access::Keys(list.iter().map(|k| k.to_string()).collect())
    }

    #[test]
    fn globs_match_whole_names() {
        let cases = [
            ("orders", "orders", true),
            ("orders", "orders2", false),
            ("orders.*", "orders.eu", true),
            ("orders.*", "orders", false),
            ("orders.*", "xorders.eu", false),
            ("*", "anything", true),
            ("or?ers", "orders", true),
            ("or?ers", "oders", false),
            ("*.eu", "orders.eu", true),
            ("*.eu", "orders.us", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ];
        for (pattern, stream, expected) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), stream.as_bytes()),
                expected,
                "{pattern} vs {stream}"
            );
        }
    }

    #[test]
    fn claim_entries_grant_streams_and_keys() {
        let grants = Grants::from_claim(&json!([
            "orders.*",
            {"stream": "notifications", "keys": ["user-42"]},
            {"stream": "notif*", "keys": ["user-7"]},
        ]))
        .unwrap();
        assert_eq!(grants.access("orders.eu"), Some(Access::All));
        assert_eq!(grants.access("notifications"), Some(keys(&["user-42", "user-7"])));
        assert_eq!(grants.access("ticker"), None);
    }

    #[test]
    fn an_unkeyed_match_gives_every_key() {
        let grants = Grants::from_claim(&json!([{"stream": "n", "keys": ["a"]}, "n"])).unwrap();
        assert_eq!(grants.access("n"), Some(Access::All));
    }

    #[test]
    fn all_none_and_empty() {
        assert_eq!(Grants::all().access("x"), Some(Access::All));
        assert_eq!(Grants::none().access("x"), None);
        assert_eq!(Grants::from_claim(&json!([])).unwrap().access("x"), None);
    }

    #[test]
    fn malformed_entries_are_refused() {
        let too_many: Vec<String> = (0..=MAX_GRANT_ENTRIES).map(|i| format!("s{i}")).collect();
        let too_many_keys: Vec<String> = (0..=MAX_KEYS_PER_ENTRY).map(|i| format!("k{i}")).collect();
        let bad = [
            json!("orders"),
            json!([1]),
            json!([""]),
            json!(["a b"]),
            json!(["x".repeat(MAX_PATTERN_LEN + 1)]),
            json!([{"stream": "n"}]),
            json!([{"stream": "n", "keys": []}]),
            json!([{"stream": "n", "keys": [1]}]),
            json!([{"stream": "n", "keys": ["k".repeat(MAX_KEY_LEN + 1)]}]),
            json!([{"stream": "n", "keys": too_many_keys}]),
            json!(too_many),
        ];
        for list in bad {
            let err = Grants::from_claim(&list).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{list}");
        }
    }

    #[test]
    fn the_sluice_claim_splits_subscribe_and_publish() {
        let claim = json!({"subscribe": ["a"], "publish": [{"stream": "b", "keys": ["k"]}]});
        let (subscribe, publish) = SluiceClaim::grants(Some(&claim)).unwrap();
        assert_eq!(subscribe.access("a"), Some(Access::All));
        assert_eq!(subscribe.access("b"), None);
        assert_eq!(publish.access("b"), Some(keys(&["k"])));
        assert_eq!(publish.access("a"), None);

        let (subscribe, publish) = SluiceClaim::grants(None).unwrap();
        assert_eq!((subscribe.access("a"), publish.access("a")), (None, None));
        let (subscribe, _) = SluiceClaim::grants(Some(&json!({"publish": ["a"]}))).unwrap();
        assert_eq!(subscribe.access("a"), None);

        for bad in [json!([]), json!("x"), json!({"subscribe": "a"})] {
            assert_eq!(
                SluiceClaim::grants(Some(&bad)).unwrap_err().reason(),
                "malformed",
                "{bad}"
            );
        }
    }
}
