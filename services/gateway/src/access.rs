//! Access control at the door of a stream: who is asking, may they read this stream, and
//! which of its keys.
//!
//! [`Gatekeeper::admit`] is the one place a request becomes a decision, before it takes a
//! connection slot: the token (from `Authorization: Bearer`, the `--auth-cookie` cookie or the
//! `access_token` query parameter) is verified by `sluice-auth`; a request without one is
//! anonymous under `--allow-anonymous`, may read `--public-streams`, or is refused. A stream not
//! granted is `403`; key grants become the subscriber's key filter. A cookie is sent by the
//! browser on its own, so a cookie-authenticated request from an `Origin` that
//! `--allow-origins` does not name is refused (CSRF). Token holders are counted per subject
//! (`--max-connections-per-subject`), and the token's `exp` becomes the moment the stream ends
//! with `event: sluice.reauth` (see [`reauth_deadline`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::HttpRequest;
use bytes::Bytes;
use dashmap::DashMap;
use rand::Rng as _;
use sluice_auth::{Access, AuthError, AuthMetrics, Authenticator, TokenSource};
use sluice_kafka::{StreamArgs, StreamCatalog};
use sluice_runtime::cors::CorsPolicy;

use crate::subscriber::Filter;
use crate::GatewayError;

/// The stream's end is picked at random within this much of the token's last moments (or a
/// tenth of its remaining life, when shorter), so tokens minted together do not reconnect
/// together.
const REAUTH_WINDOW: Duration = Duration::from_secs(60);
/// The stream ends at least this long (or a tenth of the remaining life) before `exp`, so the
/// final frame leaves while the token is still valid.
const REAUTH_MARGIN: Duration = Duration::from_secs(1);

/// What the gateway knows about access, shared by every request.
#[derive(Debug)]
pub struct Gatekeeper {
    authenticator: Arc<Authenticator>,
    metrics: AuthMetrics,
    cookie: String,
    public: Option<StreamCatalog>,
    cors: CorsPolicy,
    per_subject: usize,
    open: Arc<DashMap<String, usize>>,
}

/// A request let in: its key filter is already applied to the query's filter.
#[derive(Debug)]
pub struct Admission {
    /// When the token expires; `None` without a token.
    pub expires_at: Option<SystemTime>,
    /// Held while the connection lives (token holders only).
    pub subject_slot: Option<SubjectSlot>,
}

impl Gatekeeper {
    pub fn new(
        authenticator: Arc<Authenticator>,
        metrics: AuthMetrics,
        cookie: String,
        public: Option<StreamCatalog>,
        cors: CorsPolicy,
        per_subject: usize,
    ) -> Self {
        Self {
            authenticator,
            metrics,
            cookie,
            public,
            cors,
            per_subject,
            open: Arc::new(DashMap::new()),
        }
    }

    /// Decides who the request is and what it may read of each of `streams`; narrows each
    /// stream's filter (`filters[i]` for `streams[i]`) to the keys granted there. Every stream
    /// must be granted, or the request is refused. Counts every refusal by reason.
    pub async fn admit(
        &self,
        request: &HttpRequest,
        streams: &[String],
        query_token: Option<&str>,
        filters: &mut [Filter],
    ) -> Result<Admission, GatewayError> {
        let result = self.decide(request, streams, query_token, filters).await;
        if let Err(GatewayError::Auth(err)) = &result {
            self.metrics.failed(err);
        }
        result
    }

    async fn decide(
        &self,
        request: &HttpRequest,
        streams: &[String],
        query_token: Option<&str>,
        filters: &mut [Filter],
    ) -> Result<Admission, GatewayError> {
        let token = sluice_auth::find_token(request.headers(), Some(&self.cookie), query_token)?;
        let Some(token) = token else {
            if self.authenticator.allows_anonymous() || streams.iter().all(|s| self.is_public(s)) {
                return Ok(Admission {
                    expires_at: None,
                    subject_slot: None,
                });
            }
            return Err(AuthError::Missing.into());
        };
        let principal = self.authenticator.verify(&token.value).await?;
        if token.source == TokenSource::Cookie {
            self.check_origin(request)?;
        }
        for (stream, filter) in streams.iter().zip(filters.iter_mut()) {
            // A token never reads less than no token would: public streams stay readable.
            let access = match principal.subscribe.access(stream) {
                Some(access) => access,
                None if self.is_public(stream) => Access::All,
                None => return Err(forbidden(format!("this token may not subscribe to stream {stream:?}"))),
            };
            if let Access::Keys(keys) = access {
                apply_key_grants(&keys, filter, stream)?;
            }
        }
        let subject_slot = self.take_subject_slot(&principal.subject)?;
        Ok(Admission {
            expires_at: principal.expires_at,
            subject_slot,
        })
    }

    fn is_public(&self, stream: &str) -> bool {
        self.public.as_ref().is_some_and(|p| p.topic_for(stream).is_ok())
    }

    /// A browser sends the cookie whichever page asks, so the page's origin must be one the
    /// operator allowed. Same-origin requests and non-browser clients send no `Origin`.
    fn check_origin(&self, request: &HttpRequest) -> Result<(), GatewayError> {
        let Some(origin) = request.headers().get(actix_web::http::header::ORIGIN) else {
            return Ok(());
        };
        match origin.to_str() {
            Ok(origin) if self.cors.allows(origin) => Ok(()),
            _ => Err(forbidden(
                "a cookie-authenticated request from an origin not in --allow-origins".into(),
            )),
        }
    }

    fn take_subject_slot(&self, subject: &str) -> Result<Option<SubjectSlot>, GatewayError> {
        if self.per_subject == 0 {
            return Ok(None);
        }
        let mut count = self.open.entry(subject.to_owned()).or_insert(0);
        if *count >= self.per_subject {
            return Err(GatewayError::TooManyForSubject);
        }
        *count += 1;
        Ok(Some(SubjectSlot {
            open: self.open.clone(),
            subject: subject.to_owned(),
        }))
    }
}

fn forbidden(message: String) -> GatewayError {
    GatewayError::Auth(AuthError::Forbidden(message))
}

/// A key-limited principal sees only its keys: they become the filter when the client asked
/// for none; a key asked for outside them is refused.
fn apply_key_grants(
    granted: &std::collections::BTreeSet<String>,
    filter: &mut Filter,
    stream: &str,
) -> Result<(), GatewayError> {
    // No keys granted means nothing, and an empty key filter would mean every key.
    if granted.is_empty() {
        return Err(forbidden(format!("this token may read no key of stream {stream:?}")));
    }
    if filter.keys.is_empty() {
        filter.keys = granted.iter().map(|k| Bytes::copy_from_slice(k.as_bytes())).collect();
        return Ok(());
    }
    let outside = filter
        .keys
        .iter()
        .any(|k| std::str::from_utf8(k).map_or(true, |k| !granted.contains(k)));
    if outside {
        return Err(forbidden(format!(
            "this token may read only some keys of stream {stream:?}; a key= asked for is not one of them"
        )));
    }
    Ok(())
}

/// One open stream of a subject, counted while it lives.
#[derive(Debug)]
pub struct SubjectSlot {
    open: Arc<DashMap<String, usize>>,
    subject: String,
}

impl Drop for SubjectSlot {
    fn drop(&mut self) {
        // The last stream of a subject removes its entry: the map holds only subjects with an
        // open stream.
        self.open.remove_if_mut(&self.subject, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// When a stream whose token expires at `expires_at` must end: at a random moment in the
/// token's last `min(60 s, 10 % of the remaining life)`, and at least `min(1 s, 10 %)` before
/// `exp`. `now` is the wall clock; the answer is how long from now (zero when already due).
pub fn reauth_deadline(expires_at: SystemTime, now: SystemTime, random: f64) -> Duration {
    let remaining = expires_at.duration_since(now).unwrap_or(Duration::ZERO);
    let tenth = remaining / 10;
    let margin = REAUTH_MARGIN.min(tenth);
    let window = REAUTH_WINDOW.min(tenth);
    remaining
        .saturating_sub(margin)
        .saturating_sub(window.mul_f64(random.clamp(0.0, 1.0)))
}

/// A random moment for [`reauth_deadline`].
pub fn reauth_in(expires_at: SystemTime) -> Duration {
    reauth_deadline(expires_at, SystemTime::now(), rand::rng().random())
}

/// `--auth-cookie` must be a cookie name (an RFC 6265 token).
pub fn validate_cookie_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!("--auth-cookie {name:?} is not a cookie name"))
    }
}

/// `--public-streams` as a matcher; `None` when empty.
pub fn public_streams(patterns: &[String]) -> Result<Option<StreamCatalog>, String> {
    let patterns: Vec<String> = patterns
        .iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if patterns.is_empty() {
        return Ok(None);
    }
    if let Some(bad) = patterns
        .iter()
        .find(|p| !p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-*?".contains(&b)))
    {
        return Err(format!(
            "--public-streams entry {bad:?} may hold only stream-name characters, `*` and `?`"
        ));
    }
    StreamCatalog::new(&StreamArgs {
        topic_prefix: String::new(),
        streams: patterns,
    })
    .map(Some)
    .map_err(|e| format!("--public-streams: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn reauth_lands_in_the_last_minute_and_before_the_margin() {
        let now = SystemTime::UNIX_EPOCH + HOUR;
        let exp = now + HOUR;
        assert_eq!(reauth_deadline(exp, now, 0.0), HOUR - Duration::from_secs(1));
        assert_eq!(reauth_deadline(exp, now, 1.0), HOUR - Duration::from_secs(61));
        let mid = reauth_deadline(exp, now, 0.5);
        assert!(mid > HOUR - Duration::from_secs(61) && mid < HOUR - Duration::from_secs(1));
    }

    #[test]
    fn short_lived_tokens_end_within_their_last_tenth() {
        let now = SystemTime::UNIX_EPOCH + HOUR;
        let exp = now + Duration::from_secs(5);
        assert_eq!(reauth_deadline(exp, now, 0.0), Duration::from_millis(4500));
        assert_eq!(reauth_deadline(exp, now, 1.0), Duration::from_millis(4000));
        assert_eq!(reauth_deadline(now, now, 0.3), Duration::ZERO);
        assert_eq!(
            reauth_deadline(now - HOUR, now, 0.3),
            Duration::ZERO,
            "already expired (leeway)"
        );
    }

    #[test]
    fn key_grants_become_the_filter_or_refuse_other_keys() {
        let granted = ["user-42".to_string(), "user-7".to_string()].into_iter().collect();
        let mut filter = Filter::default();
        apply_key_grants(&granted, &mut filter, "s").unwrap();
        assert_eq!(filter.keys, vec![Bytes::from("user-42"), Bytes::from("user-7")]);

        let mut asked = Filter {
            keys: vec![Bytes::from("user-7")],
            types: Vec::new(),
        };
        apply_key_grants(&granted, &mut asked, "s").unwrap();
        assert_eq!(asked.keys, vec![Bytes::from("user-7")], "a subset is kept as asked");

        asked.keys.push(Bytes::from("user-1"));
        assert!(matches!(
            apply_key_grants(&granted, &mut asked, "s"),
            Err(GatewayError::Auth(AuthError::Forbidden(_)))
        ));
        assert!(
            apply_key_grants(&Default::default(), &mut Filter::default(), "s").is_err(),
            "no keys granted is not every key"
        );
    }

    #[test]
    fn subject_slots_count_and_release() {
        let open = Arc::new(DashMap::new());
        let keeper = |limit| Gatekeeper {
            authenticator: Arc::new(Authenticator::new(&sluice_auth::AuthArgs::anonymous()).unwrap()),
            metrics: AuthMetrics::default(),
            cookie: "c".into(),
            public: None,
            cors: CorsPolicy::default(),
            per_subject: limit,
            open: open.clone(),
        };
        let gate = keeper(2);
        let a = gate.take_subject_slot("alice").unwrap();
        let b = gate.take_subject_slot("alice").unwrap();
        assert!(matches!(
            gate.take_subject_slot("alice"),
            Err(GatewayError::TooManyForSubject)
        ));
        let bob = gate.take_subject_slot("bob").unwrap();
        assert!(bob.is_some(), "subjects are counted apart");
        drop(a);
        let again = gate.take_subject_slot("alice").unwrap();
        drop((b, again, bob));
        assert!(open.is_empty(), "a subject without open streams leaves no entry");
        assert!(keeper(0).take_subject_slot("alice").unwrap().is_none(), "0: no limit");
    }

    #[test]
    fn flags_are_validated() {
        assert!(validate_cookie_name("sluice_token").is_ok());
        assert!(validate_cookie_name("a b").unwrap_err().contains("--auth-cookie"));
        assert!(validate_cookie_name("").is_err());
        assert!(public_streams(&[]).unwrap().is_none());
        let public = public_streams(&["news".into(), "public.*".into()]).unwrap().unwrap();
        assert!(public.topic_for("public.x").is_ok() && public.topic_for("news").is_ok());
        assert!(public.topic_for("private").is_err());
        assert!(public_streams(&["a/b".into()])
            .unwrap_err()
            .contains("--public-streams"));
    }
}
