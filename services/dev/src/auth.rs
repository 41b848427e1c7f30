//! `sluice-dev --auth`: access control on, with a secret made up at start and tokens to paste.
//!
//! The dev stack signs its own tokens (HS256) with a random secret written to a file that only
//! this user can read; both services verify with that file, exactly as a deployment given
//! `--jwt-hmac-secret-file` does. The tokens printed cover what a newcomer tries first: reading
//! everything, reading only one key of a stream, publishing, and one for the demo page.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use rand::RngCore as _;
use serde_json::{json, Value};

/// How long the printed tokens live: a working day. The gateway ends streams before this with
/// `sluice.reauth`, as it would for any token.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The secret and where it is, for the services' `--jwt-hmac-secret-file`.
#[derive(Debug)]
pub struct DevAuth {
    secret: Vec<u8>,
    pub secret_file: PathBuf,
}

/// The printed tokens.
#[derive(Debug)]
pub struct DevTokens {
    /// May read every stream.
    pub subscribe: String,
    /// May read only key `user-1` of stream `demo`.
    pub subscribe_user_1: String,
    /// May publish to every stream.
    pub publish: String,
    /// The demo page's: read and publish everything.
    pub demo: String,
}

impl DevAuth {
    /// Makes a 48-byte secret and writes it (base64url, one line) to a new file readable only
    /// by this user.
    pub fn generate() -> std::io::Result<Self> {
        let mut raw = [0u8; 48];
        rand::rng().fill_bytes(&mut raw);
        let secret = base64_url(&raw).into_bytes();
        let dir = std::env::temp_dir().join(format!("sluice-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let secret_file = dir.join("jwt-hmac-secret");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&secret_file)?;
        file.write_all(&secret)?;
        file.write_all(b"\n")?;
        Ok(Self { secret, secret_file })
    }

    /// Signs `grants` (the `sluice` claim) for `subject`.
    pub fn mint(&self, subject: &str, grants: Value) -> String {
        let exp = SystemTime::now()
            .checked_add(TOKEN_LIFETIME)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let claims = json!({"sub": subject, "exp": exp, "sluice": grants});
        let key = EncodingKey::from_secret(&self.secret).expect("a 64-byte HMAC secret is a valid key");
        jsonwebtoken::encode(&Header::default(), &claims, &key).expect("HS256 signing of a JSON object cannot fail")
    }

    pub fn tokens(&self) -> DevTokens {
        DevTokens {
            subscribe: self.mint("dev-reader", json!({"subscribe": ["*"]})),
            subscribe_user_1: self.mint("user-1", json!({"subscribe": [{"stream": "demo", "keys": ["user-1"]}]})),
            publish: self.mint("dev-publisher", json!({"publish": ["*"]})),
            demo: self.mint("demo-page", json!({"subscribe": ["*"], "publish": ["*"]})),
        }
    }
}

impl Drop for DevAuth {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.secret_file);
        if let Some(dir) = self.secret_file.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_with_the_written_secret_and_carry_their_grants() {
        let auth = DevAuth::generate().unwrap();
        let written = std::fs::read_to_string(&auth.secret_file).unwrap();
        let key = jsonwebtoken::DecodingKey::from_secret(written.trim_end().as_bytes()).unwrap();
        let token = auth.tokens().subscribe_user_1;
        let data = jsonwebtoken::decode::<Value>(&token, &key, &jsonwebtoken::Validation::default()).unwrap();
        assert_eq!(data.claims["sub"], "user-1");
        assert_eq!(data.claims["sluice"]["subscribe"][0]["keys"][0], "user-1");
        let mode = std::fs::metadata(&auth.secret_file).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }
}
