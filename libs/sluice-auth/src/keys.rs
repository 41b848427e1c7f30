//! Verification keys and the algorithms each may verify.
//!
//! A key is loaded once (from a file or a JWK) and remembers exactly which `alg` values it
//! accepts, so a token can never pick an algorithm its key was not meant for: an RSA public key
//! is never used as an HMAC secret, a P-256 key never verifies `ES384`, and `none` matches no
//! key at all.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Shorter HMAC secrets are guessable offline from any token they signed.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Key files are small; a larger one is a mistake (a log, a certificate bundle), not a key.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const P256: &[Algorithm] = &[Algorithm::ES256];
const P384: &[Algorithm] = &[Algorithm::ES384];
const ED25519: &[Algorithm] = &[Algorithm::EdDSA];

/// A key and the algorithms it verifies.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub(crate) key: DecodingKey,
    pub(crate) algorithms: &'static [Algorithm],
}

impl std::fmt::Debug for VerifyKey {
    // Never print key material, even public keys: logs are not the place for them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl VerifyKey {
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

/// True for the algorithms whose key is a shared secret.
pub(crate) fn is_hmac(alg: Algorithm) -> bool {
    HMAC.contains(&alg)
}

fn read_key_file(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    let fail = |why: String| format!("{flag} {}: {why}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_KEY_FILE_BYTES} bytes, not a key file")));
    }
    std::fs::read(path).map_err(|e| fail(e.to_string()))
}

/// The `--jwt-hmac-secret-file` secret: the file's bytes less ONE trailing newline (what
/// `echo` and editors add), at least [`MIN_HMAC_SECRET_BYTES`] long.
pub(crate) fn load_hmac_secret(path: &Path) -> Result<VerifyKey, String> {
    const FLAG: &str = "--jwt-hmac-secret-file";
    let mut secret = read_key_file(FLAG, path)?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(format!(
            "{FLAG} {}: the secret is {} bytes; at least {MIN_HMAC_SECRET_BYTES} are required",
            path.display(),
            secret.len()
        ));
    }
    let key = DecodingKey::from_secret(&secret).map_err(|e| format!("{FLAG} {}: {e}", path.display()))?;
    Ok(VerifyKey { key, algorithms: HMAC })
}

/// A `--jwt-public-key-file` PEM: RSA, EC P-256 / P-384 or Ed25519, detected from the file.
pub(crate) fn load_public_key(path: &Path) -> Result<VerifyKey, String> {
    const FLAG: &str = "--jwt-public-key-file";
    let pem = read_key_file(FLAG, path)?;
    // jsonwebtoken would also take a private key's PEM and verify nothing with it.
    match pem::parse(&pem).map(|p| p.tag().to_owned()) {
        Ok(tag) if tag == "PUBLIC KEY" || tag == "RSA PUBLIC KEY" => {}
        Ok(tag) if tag.contains("PRIVATE") => {
            return Err(format!(
                "{FLAG} {}: this is a private key; give the public key",
                path.display()
            ))
        }
        _ => {
            return Err(format!(
                "{FLAG} {}: not a PEM public key (\"BEGIN PUBLIC KEY\")",
                path.display()
            ))
        }
    }
    public_key_from_pem(&pem).ok_or_else(|| {
        format!(
            "{FLAG} {}: not a PEM public key of a supported type (RSA, EC P-256, EC P-384, Ed25519)",
            path.display()
        )
    })
}

/// Each loader refuses a PEM of another type, so the first that succeeds names the type.
pub(crate) fn public_key_from_pem(pem: &[u8]) -> Option<VerifyKey> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some(VerifyKey { key, algorithms: RSA });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Some(VerifyKey {
            key,
            algorithms: ED25519,
        });
    }
    let key = DecodingKey::from_ec_pem(pem).ok()?;
    let algorithms = ec_algorithms_by_point(key.try_get_as_bytes().ok()?)?;
    Some(VerifyKey { key, algorithms })
}

/// The curve of an EC public key from its SEC1 point's length: uncompressed (0x04 ‖ X ‖ Y)
/// or compressed (0x02/0x03 ‖ X), with 32-byte coordinates on P-256 and 48-byte on P-384.
fn ec_algorithms_by_point(point: &[u8]) -> Option<&'static [Algorithm]> {
    match point.len() {
        65 | 33 => Some(P256),
        97 | 49 => Some(P384),
        _ => None,
    }
}

/// A JWKS entry usable for verification; `None` for symmetric keys (a secret has no business
/// in a published key set), unsupported curves and unreadable parameters.
pub(crate) fn from_jwk(jwk: &Jwk) -> Option<VerifyKey> {
    let algorithms = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => P256,
            EllipticCurve::P384 => P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => ED25519,
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        // A key published for one algorithm verifies only that one (RFC 7517 §4.4).
        Some(declared) => {
            let declared: Algorithm = declared.to_string().parse().ok()?;
            let i = algorithms.iter().position(|a| *a == declared)?;
            &algorithms[i..=i]
        }
        None => algorithms,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey { key, algorithms })
}
