//! Token verification and the principal it yields.
//!
//! [`Authenticator::verify`] is the only place a token is trusted. In order: the length cap,
//! the header (`alg`, `kid`), the keys that may verify that `alg` (the HMAC secret for `HS*`
//! only; the JWKS key named by `kid`; file keys of the matching type), the signature and the
//! standard claims (`exp` required, `nbf`, `iss`, `aud`, all through `jsonwebtoken`), and last
//! `sub` and the `sluice` claim. Every failure is one [`AuthError`] variant, never a panic.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::Deserialize;

use crate::grants::SluiceClaim;
use crate::jwks::Jwks;
use crate::keys::{self, VerifyKey};
use crate::{AuthArgs, AuthError, Grants};

/// Longest token accepted; checked before any decoding so a huge header costs nothing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest `sub` accepted: it labels connections and log lines.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// Who is calling and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`, or `anonymous`.
    pub subject: String,
    /// `exp`; `None` for the anonymous principal.
    pub expires_at: Option<SystemTime>,
    pub subscribe: Grants,
    pub publish: Grants,
}

impl Principal {
    /// The principal of a request without a token under `--allow-anonymous`: everything.
    pub fn anonymous() -> Self {
        Self {
            subject: "anonymous".into(),
            expires_at: None,
            subscribe: Grants::all(),
            publish: Grants::all(),
        }
    }
}

/// The claims Sluice reads itself; `jsonwebtoken` checks `exp`, `nbf`, `iss` and `aud`.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    sluice: Option<serde_json::Value>,
}

/// Verifies tokens against the configured keys.
#[derive(Debug)]
pub struct Authenticator {
    allow_anonymous: bool,
    hmac: Option<Arc<VerifyKey>>,
    public_keys: Vec<Arc<VerifyKey>>,
    jwks: Option<Arc<Jwks>>,
    /// `exp` required, `nbf`/`iss`/`aud` as configured; `algorithms` is set per token.
    validation: Validation,
}

impl Authenticator {
    /// Reads the key files and checks the flags; the error names the flag (exit 64). Neither a
    /// key nor `--allow-anonymous` is an error naming both.
    pub fn new(args: &AuthArgs) -> Result<Self, String> {
        if !args.has_keys() && !args.allow_anonymous {
            return Err("no token key configured: give --jwt-hmac-secret-file, --jwt-public-key-file or --jwks-url, or --allow-anonymous to serve without access control".into());
        }
        let hmac = args
            .jwt_hmac_secret_file
            .as_deref()
            .map(keys::load_hmac_secret)
            .transpose()?
            .map(Arc::new);
        let public_keys = args
            .jwt_public_key_file
            .iter()
            .map(|path| keys::load_public_key(path).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let jwks = args.jwks_url.as_deref().map(Jwks::new).transpose()?.map(Arc::new);
        Ok(Self {
            allow_anonymous: args.allow_anonymous,
            hmac,
            public_keys,
            jwks,
            validation: validation(args)?,
        })
    }

    /// True when requests without a token are served as [`Principal::anonymous`].
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// Starts background work (the JWKS refresh) until `stop` fires. Call once, inside a
    /// tokio runtime.
    pub fn start(self: &std::sync::Arc<Self>, stop: sluice_runtime::CancellationToken) {
        if let Some(jwks) = &self.jwks {
            tokio::spawn(Arc::clone(jwks).run(stop));
        }
    }

    /// Loads the JWKS once, before serving, so the first requests find their keys and a
    /// rotation's first unknown `kid` is free to refetch. A failure (the IdP is down) is
    /// logged, never fatal: tokens fail `unknown_key` until the background refresh gets keys.
    /// Takes at most [`crate::jwks::FETCH_TIMEOUT`]; does nothing without `--jwks-url`.
    pub async fn prime(&self) {
        if let Some(jwks) = &self.jwks {
            match jwks.refresh().await {
                Ok(count) => tracing::info!(keys = count, "JWKS loaded"),
                Err(err) => tracing::warn!(error = %err, "JWKS not loaded at start; retrying in the background"),
            }
        }
    }

    /// Fetches the JWKS now, outside the unknown-`kid` rate limit (tests, operators' tools).
    pub async fn refresh_keys(&self) -> Result<usize, crate::jwks::JwksError> {
        match &self.jwks {
            Some(jwks) => jwks.refresh().await,
            None => Ok(0),
        }
    }

    /// The principal of a request: its token verified, or without one the anonymous
    /// principal when `--allow-anonymous` is set and [`AuthError::Missing`] otherwise. A
    /// request that carries a token is always verified, anonymous access or not.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        match token {
            Some(token) => self.verify(token).await,
            None if self.allow_anonymous => Ok(Principal::anonymous()),
            None => Err(AuthError::Missing),
        }
    }

    /// Checks signature and claims; the principal's grants come from the `sluice` claim.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed(format!("longer than {MAX_TOKEN_BYTES} bytes")));
        }
        let header = read_header(token)?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        for key in self.candidates(header.alg, header.kid.as_deref()).await? {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return principal(data.claims),
                // Several file keys may share a type: only the signature says which one signed.
                Err(err) if matches!(err.kind(), ErrorKind::InvalidSignature) => continue,
                Err(err) => return Err(map_error(err.kind())),
            }
        }
        Err(AuthError::BadSignature)
    }

    /// The keys that may verify a token signed with `alg`, best first; an error when no key
    /// could (the `alg` is not one Sluice was configured for, or the `kid` is unknown).
    async fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Result<Vec<Arc<VerifyKey>>, AuthError> {
        if keys::is_hmac(alg) {
            return self.hmac.clone().map(|k| vec![k]).ok_or(AuthError::WrongAlgorithm);
        }
        let mut found = Vec::new();
        if let (Some(jwks), Some(kid)) = (&self.jwks, kid) {
            if let Some(key) = jwks.key(kid).await {
                if !key.accepts(alg) {
                    return Err(AuthError::WrongAlgorithm);
                }
                found.push(key);
            }
        }
        found.extend(self.public_keys.iter().filter(|k| k.accepts(alg)).cloned());
        match (found.is_empty(), &self.jwks) {
            (false, _) => Ok(found),
            (true, Some(_)) => Err(AuthError::UnknownKey),
            (true, None) => Err(AuthError::WrongAlgorithm),
        }
    }
}

fn validation(args: &AuthArgs) -> Result<Validation, String> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = args.jwt_leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp"]);
    if let Some(iss) = &args.jwt_issuer {
        if iss.is_empty() {
            return Err("--jwt-issuer: must not be empty".into());
        }
        v.set_issuer(&[iss]);
        v.required_spec_claims.insert("iss".into());
    }
    // Without --jwt-audience a token's `aud` is not Sluice's business; jsonwebtoken would
    // otherwise refuse every token that carries one.
    v.validate_aud = args.jwt_audience.is_some();
    if let Some(aud) = &args.jwt_audience {
        if aud.is_empty() {
            return Err("--jwt-audience: must not be empty".into());
        }
        v.set_audience(&[aud]);
        v.required_spec_claims.insert("aud".into());
    }
    Ok(v)
}

/// The token's header. An `alg` that `jsonwebtoken` does not know (`none`, `HS1`, …) is a
/// wrong algorithm, not a malformed token, so the refusal says what is wrong.
fn read_header(token: &str) -> Result<Header, AuthError> {
    match jsonwebtoken::decode_header(token) {
        Ok(header) => Ok(header),
        Err(err) => {
            #[derive(Deserialize)]
            struct AlgOnly {
                alg: String,
            }
            let segment = token.split('.').next().unwrap_or_default();
            let alg = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(segment)
                .ok()
                .and_then(|json| serde_json::from_slice::<AlgOnly>(&json).ok());
            match alg {
                Some(header) if !header.alg.is_empty() && token.split('.').count() == 3 => {
                    Err(AuthError::WrongAlgorithm)
                }
                _ => Err(map_error(err.kind())),
            }
        }
    }
}

fn principal(claims: Claims) -> Result<Principal, AuthError> {
    let subject = match claims.sub {
        Some(serde_json::Value::String(sub)) if !sub.is_empty() && sub.len() <= MAX_SUBJECT_BYTES => sub,
        Some(_) => {
            return Err(AuthError::Malformed(format!(
                "the sub claim must be a string of 1 to {MAX_SUBJECT_BYTES} bytes"
            )))
        }
        None => return Err(AuthError::Malformed("the sub claim is required".into())),
    };
    let (subscribe, publish) = SluiceClaim::grants(claims.sluice.as_ref())?;
    Ok(Principal {
        subject,
        expires_at: claims.exp.as_ref().and_then(expiry),
        subscribe,
        publish,
    })
}

/// `exp` as a time; jsonwebtoken has already checked it is a number in the future.
fn expiry(exp: &serde_json::Value) -> Option<SystemTime> {
    let secs = exp.as_f64().filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)?;
    UNIX_EPOCH.checked_add(Duration::from_secs_f64(secs))
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            AuthError::WrongAlgorithm
        }
        ErrorKind::MissingRequiredClaim(claim) => AuthError::Malformed(format!("the {claim} claim is required")),
        ErrorKind::InvalidClaimFormat(claim) => AuthError::Malformed(format!("the {claim} claim has the wrong type")),
        // A key that cannot verify this signature's shape (an ECDSA signature of the wrong
        // length, an RSA key too small): the signature does not verify.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
        _ => AuthError::Malformed("not a JSON Web Token".into()),
    }
}
