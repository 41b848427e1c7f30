//! The `--jwks-url` key set: fetched over HTTP, cached by `kid`, refreshed in the background,
//! and refetched when a token names a `kid` the cache does not hold.
//!
//! An unknown `kid` is how a key rotation first shows up, so it triggers a refetch; it is also
//! what an attacker controls, so those refetches are rate-limited to one per
//! [`UNKNOWN_KID_REFETCH_INTERVAL`] whatever the number of distinct bogus `kid`s, and run one at
//! a time. The background refresh is not counted against that limit. An IdP that is down
//! never stops the service: the last good key set stays in use, and until a first one arrives
//! tokens fail with `unknown_key`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use tokio::time::Instant;

use crate::keys::{self, VerifyKey};

/// At most one refetch per this interval is caused by tokens naming unknown `kid`s.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// How often the key set is refreshed in the background.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// How soon a failed background refresh is retried.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(15);
/// A fetch that takes longer than this fails (connect, headers and body together).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set larger than this is refused: real ones are a few KiB.
pub const MAX_JWKS_BYTES: usize = 512 * 1024;

/// Why a fetch failed; logged, never shown to a client.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching the key set failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the key set answered HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("the key set is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the key set is not a JSON Web Key Set: {0}")]
    Json(#[from] serde_json::Error),
}

/// The cached key set.
#[derive(Debug)]
pub(crate) struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, Arc<VerifyKey>>>>,
    /// When tokens last caused a refetch; the lock also makes those refetches one at a time.
    last_unknown_kid_fetch: tokio::sync::Mutex<Option<Instant>>,
    loaded: std::sync::atomic::AtomicBool,
}

#[derive(serde::Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    /// Checks the `--jwks-url` flag; fetches nothing yet.
    pub(crate) fn new(url: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("--jwks-url {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!("--jwks-url {url:?}: must be an http:// or https:// URL"));
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("--jwks-url: cannot build the HTTP client: {e}"))?;
        Ok(Self {
            url: parsed,
            client,
            keys: RwLock::new(Arc::default()),
            last_unknown_kid_fetch: tokio::sync::Mutex::new(None),
            loaded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn cached(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.get(kid).cloned()
    }

    /// The key called `kid`, refetching the set (rate-limited) when it is not cached.
    pub(crate) async fn key(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        let mut last = self.last_unknown_kid_fetch.lock().await;
        // Another request may have refetched while this one waited for the lock.
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFETCH_INTERVAL) {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(err) = self.refresh().await {
            tracing::warn!(url = %self.url, error = %err, "JWKS refetch for an unknown kid failed");
        }
        drop(last);
        self.cached(kid)
    }

    /// Fetches the set and replaces the cache with its usable keys; returns how many.
    pub(crate) async fn refresh(&self) -> Result<usize, JwksError> {
        let body = self.fetch().await?;
        let set: RawSet = serde_json::from_slice(&body)?;
        let mut keys = HashMap::new();
        // One odd key (an unknown type, a curve we do not verify) must not hide the others.
        for value in set.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            if let Some(key) = keys::from_jwk(&jwk) {
                keys.insert(kid, Arc::new(key));
            }
        }
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
        Ok(count)
    }

    async fn fetch(&self) -> Result<Vec<u8>, JwksError> {
        let mut response = self.client.get(self.url.clone()).send().await?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status()));
        }
        if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(JwksError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// True once a key set has been loaded (even an empty one).
    pub(crate) fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Refreshes every [`REFRESH_INTERVAL`] (every [`RETRY_INTERVAL`] after a failure) until
    /// `stop`; at once first when no key set was loaded yet.
    pub(crate) async fn run(self: Arc<Self>, stop: sluice_runtime::CancellationToken) {
        let mut wait = if self.loaded() {
            REFRESH_INTERVAL
        } else {
            Duration::ZERO
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = match self.refresh().await {
                Ok(count) => {
                    tracing::debug!(url = %self.url, keys = count, "JWKS refreshed");
                    REFRESH_INTERVAL
                }
                Err(err) => {
                    tracing::warn!(url = %self.url, error = %err, "JWKS refresh failed; keeping the last keys");
                    RETRY_INTERVAL
                }
            };
        }
    }
}
