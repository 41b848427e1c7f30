//! Tokens for tests: committed test-only keys, a minting builder, and a local JWKS server.
//!
//! The keys under `libs/sluice-testkit/keys/` were generated once with the `openssl` CLI and
//! are public by being in the repository: they sign test tokens and nothing else. A test picks
//! a [`TestKey`], points the service at [`TestKey::verify_file`] (the public key, or the HMAC
//! secret), and mints tokens with [`TestToken`]:
//!
//! ```ignore
//! let token = TestToken::new(TestKey::Rsa).subject("alice").publish(json!(["orders"])).mint();
//! ```
//!
//! [`JwksServer`] serves a key set on `127.0.0.1:0` that a test can swap at will, and counts
//! the requests it answered, for rotation and rate-limit tests.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

/// A committed test key pair (or the HMAC secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestKey {
    /// `hmac-secret.txt`: HS256.
    Hmac,
    /// `rsa-*.pem`, RSA 2048: RS256.
    Rsa,
    /// `rsa2-*.pem`, a second RSA 2048 pair: the "other" key of rotation and bad-signature tests.
    Rsa2,
    /// `ec-p256-*.pem`: ES256.
    EcP256,
    /// `ec-p384-*.pem`: ES384.
    EcP384,
    /// `ed25519-*.pem`: EdDSA.
    Ed25519,
}

/// The directory of the committed test keys.
pub fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys")
}

fn read(name: &str) -> Vec<u8> {
    let path = keys_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("test key {}: {e}", path.display()))
}

impl TestKey {
    /// Every key, for tests that run once per algorithm family.
    pub const ALL: [TestKey; 6] = [
        Self::Hmac,
        Self::Rsa,
        Self::Rsa2,
        Self::EcP256,
        Self::EcP384,
        Self::Ed25519,
    ];

    /// The algorithm tokens minted with this key use by default.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::Hmac => Algorithm::HS256,
            Self::Rsa | Self::Rsa2 => Algorithm::RS256,
            Self::EcP256 => Algorithm::ES256,
            Self::EcP384 => Algorithm::ES384,
            Self::Ed25519 => Algorithm::EdDSA,
        }
    }

    fn stem(self) -> &'static str {
        match self {
            Self::Hmac => "hmac",
            Self::Rsa => "rsa",
            Self::Rsa2 => "rsa2",
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Ed25519 => "ed25519",
        }
    }

    /// What a service verifies with: the public key PEM, or for [`TestKey::Hmac`] the secret
    /// file (for `--jwt-hmac-secret-file`).
    pub fn verify_file(self) -> PathBuf {
        match self {
            Self::Hmac => keys_dir().join("hmac-secret.txt"),
            _ => keys_dir().join(format!("{}-public.pem", self.stem())),
        }
    }

    /// The signing key.
    pub fn encoding_key(self) -> EncodingKey {
        let result = match self {
            Self::Hmac => EncodingKey::from_secret(&hmac_secret()),
            Self::Rsa | Self::Rsa2 => EncodingKey::from_rsa_pem(&read(&format!("{}-private.pem", self.stem()))),
            Self::EcP256 | Self::EcP384 => EncodingKey::from_ec_pem(&read(&format!("{}-private.pem", self.stem()))),
            Self::Ed25519 => EncodingKey::from_ed_pem(&read("ed25519-private.pem")),
        };
        result.unwrap_or_else(|e| panic!("test key {self:?}: {e}"))
    }

    /// The public key as a JWK named `kid` (not for [`TestKey::Hmac`]: a secret is never
    /// published).
    pub fn jwk(self, kid: &str) -> Jwk {
        assert_ne!(self, Self::Hmac, "an HMAC secret has no business in a JWKS");
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key(), self.algorithm())
            .unwrap_or_else(|e| panic!("JWK of {self:?}: {e}"));
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }
}

/// The HMAC secret as a service reads it (the file less its trailing newline).
pub fn hmac_secret() -> Vec<u8> {
    let mut secret = read("hmac-secret.txt");
    if secret.last() == Some(&b'\n') {
        secret.pop();
    }
    secret
}

/// Seconds since the epoch, as JWT claims count time.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A token under construction: `sub` = `"test-subject"` and `exp` = one hour from now unless
/// changed; no `sluice` claim unless given.
#[derive(Debug, Clone)]
pub struct TestToken {
    key: TestKey,
    header: Header,
    claims: Map<String, Value>,
}

impl TestToken {
    pub fn new(key: TestKey) -> Self {
        let mut claims = Map::new();
        claims.insert("sub".into(), json!("test-subject"));
        claims.insert("exp".into(), json!(now_secs() + 3600));
        Self {
            key,
            header: Header::new(key.algorithm()),
            claims,
        }
    }

    pub fn subject(self, sub: &str) -> Self {
        self.claim("sub", json!(sub))
    }

    /// `exp` = now + `secs` (negative: already expired).
    pub fn expires_in(self, secs: i64) -> Self {
        self.claim("exp", json!(now_secs() + secs))
    }

    /// `nbf` = now + `secs`.
    pub fn not_before_in(self, secs: i64) -> Self {
        self.claim("nbf", json!(now_secs() + secs))
    }

    pub fn issuer(self, iss: &str) -> Self {
        self.claim("iss", json!(iss))
    }

    pub fn audience(self, aud: &str) -> Self {
        self.claim("aud", json!(aud))
    }

    /// The `sluice.subscribe` list, e.g. `json!(["orders.*", {"stream": "n", "keys": ["k"]}])`.
    pub fn subscribe(self, entries: Value) -> Self {
        self.sluice_list("subscribe", entries)
    }

    /// The `sluice.publish` list.
    pub fn publish(self, entries: Value) -> Self {
        self.sluice_list("publish", entries)
    }

    fn sluice_list(mut self, list: &str, entries: Value) -> Self {
        let sluice = self.claims.entry("sluice").or_insert_with(|| json!({}));
        sluice[list] = entries;
        self
    }

    /// Any claim, set or replaced.
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    /// Removes a claim (`"exp"`, `"sub"`, …).
    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// The header's `kid`.
    pub fn kid(mut self, kid: &str) -> Self {
        self.header.kid = Some(kid.to_owned());
        self
    }

    /// Sign with another algorithm than the key's default (it must suit the key).
    pub fn algorithm(mut self, alg: Algorithm) -> Self {
        self.header.alg = alg;
        self
    }

    /// The signed token.
    pub fn mint(&self) -> String {
        jsonwebtoken::encode(&self.header, &self.claims, &self.key.encoding_key())
            .unwrap_or_else(|e| panic!("minting a {:?} token: {e}", self.key))
    }
}

/// A token signed by `key` with exactly `claims` (nothing added).
pub fn mint(key: TestKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(key.algorithm()), claims, &key.encoding_key())
        .unwrap_or_else(|e| panic!("minting a {key:?} token: {e}"))
}

/// An unsigned `alg: none` token with the given claims: what must never be accepted.
pub fn unsigned_token(claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(claims))
}

/// A JWKS endpoint on `127.0.0.1:0` serving a key set the test can replace, counting requests.
#[derive(Debug)]
pub struct JwksServer {
    url: String,
    set: Arc<Mutex<JwkSet>>,
    requests: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl JwksServer {
    /// Serves `keys` (each a test key and its `kid`) at `/jwks.json`.
    pub async fn start(keys: &[(TestKey, &str)]) -> anyhow::Result<Self> {
        let set = Arc::new(Mutex::new(key_set(keys)));
        let requests = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr: SocketAddr = listener.local_addr()?;
        let (state_set, state_requests) = (set.clone(), requests.clone());
        let server = actix_web::HttpServer::new(move || {
            let (set, requests) = (state_set.clone(), state_requests.clone());
            actix_web::App::new().route(
                "/jwks.json",
                actix_web::web::get().to(move || {
                    let (set, requests) = (set.clone(), requests.clone());
                    async move {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let body = serde_json::to_string(&*set.lock().expect("key set lock")).expect("JWKS JSON");
                        actix_web::HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            url: format!("http://{addr}/jwks.json"),
            set,
            requests,
            handle,
        })
    }

    /// The key set's URL, for `--jwks-url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serve these keys from now on (a rotation).
    pub fn set_keys(&self, keys: &[(TestKey, &str)]) {
        *self.set.lock().expect("key set lock") = key_set(keys);
    }

    /// How many times the key set was fetched.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops serving (an IdP outage); the port is closed.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn key_set(keys: &[(TestKey, &str)]) -> JwkSet {
    JwkSet {
        keys: keys.iter().map(|(key, kid)| key.jwk(kid)).collect(),
    }
}

/// How long a token minted now with the default `exp` stays valid.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
