//! The `sluice` claim: which streams (and keys) a principal may subscribe to or publish.
//!
//! An entry is a stream name or glob (`"orders.*"`: every key of every matching stream), or
//! `{"stream": "notifications", "keys": ["user-42"]}`: only those keys.

use std::collections::BTreeSet;

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

    /// What these grants allow on `stream`; `None` when nothing is granted there. Entries that
    /// match add up: any unkeyed match gives every key.
    pub fn access(&self, stream: &str) -> Option<Access> {
        let Some(entries) = &self.entries else {
            return Some(Access::All);
        };
        let mut keys: Option<BTreeSet<String>> = None;
        for entry in entries.iter().filter(|e| glob_match(e.pattern.as_bytes(), stream.as_bytes())) {
            match &entry.keys {
                None => return Some(Access::All),
                Some(k) => keys.get_or_insert_with(BTreeSet::new).extend(k.iter().cloned()),
            }
        }
        keys.map(Access::Keys)
    }
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
