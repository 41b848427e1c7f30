//! `--auth none|hs256|rs256`: the gateway scenarios with access control on, to put its cost
//! next to the figures without it.
//!
//! `none` runs the services open (`SLUICE_ALLOW_ANONYMOUS=true`). `hs256` and `rs256` write a
//! fresh HMAC secret, or an RSA-2048 key pair made by the `openssl` CLI, to a private temporary
//! directory; the gateways start with `--jwt-hmac-secret-file` or `--jwt-public-key-file` and
//! without `--allow-anonymous`. Ingest gets the same key through its environment twins, so the
//! publisher's requests are checked too, and an ingest without access control still runs.
//!
//! Every connection presents a token of its own (`sub` = `bench-<index>`, so
//! `--max-connections-per-subject` never binds; `exp` a day ahead, so no stream ends for
//! re-authentication during a run) as `Authorization: Bearer`, on every reconnect too: a
//! signature verified per request is the cost measured. Tokens are minted before the holders
//! start, on every CPU, so minting is never charged to a measured window. The bench's own
//! requests (warm-up event, preflight, publisher) carry a token that may also publish.

use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::Serialize;

/// How the services check who calls them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No access control: the services run with `SLUICE_ALLOW_ANONYMOUS=true`.
    #[default]
    None,
    /// Tokens signed with an HMAC secret (`--jwt-hmac-secret-file`).
    Hs256,
    /// Tokens signed with an RSA-2048 key (`--jwt-public-key-file`).
    Rs256,
}

impl AuthMode {
    /// The flag value: `none`, `hs256`, `rs256`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Hs256 => "hs256",
            Self::Rs256 => "rs256",
        }
    }
}

/// Tokens stay valid this long: far past any run, so no stream ends for re-authentication.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The subject of the bench's own requests; connections are `bench-<index>`.
const BENCH_SUBJECT: &str = "sluice-bench";

/// The keys of one run and the means to mint tokens the services accept.
pub struct Auth {
    mode: AuthMode,
    /// `None` for [`AuthMode::None`].
    signer: Option<Signer>,
}

struct Signer {
    algorithm: Algorithm,
    key: EncodingKey,
    /// What the services verify with: the secret, or the public key.
    verify_file: PathBuf,
    dir: TempDir,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key stays out of every debug print.
        f.debug_struct("Auth").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// The claims of a bench token: the contract's shape, every stream granted.
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    sluice: Grants,
}

#[derive(Serialize)]
struct Grants {
    subscribe: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<[&'static str; 1]>,
}

impl Auth {
    /// Writes the keys `mode` needs (blocking: the RSA key pair takes a moment).
    pub fn prepare(mode: AuthMode) -> anyhow::Result<Self> {
        let signer = match mode {
            AuthMode::None => None,
            AuthMode::Hs256 => Some(hmac_signer()?),
            AuthMode::Rs256 => Some(rsa_signer()?),
        };
        Ok(Self { mode, signer })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    pub fn is_on(&self) -> bool {
        self.signer.is_some()
    }

    /// Extra flags for a gateway: the key file, or nothing.
    pub fn gateway_args(&self) -> Vec<String> {
        match (&self.signer, self.mode) {
            (Some(signer), AuthMode::Hs256) => vec![
                "--jwt-hmac-secret-file".to_owned(),
                signer.verify_file.display().to_string(),
            ],
            (Some(signer), _) => vec![
                "--jwt-public-key-file".to_owned(),
                signer.verify_file.display().to_string(),
            ],
            (None, _) => Vec::new(),
        }
    }

    /// Environment for every service: the key's `SLUICE_*` twin, or anonymous access. With a
    /// key, anonymous access is switched off explicitly: `Service::spawn` turns it on for every
    /// service unless told otherwise.
    pub fn service_env(&self) -> Vec<(&'static str, String)> {
        let (name, file) = match (&self.signer, self.mode) {
            (Some(signer), AuthMode::Hs256) => ("SLUICE_JWT_HMAC_SECRET_FILE", &signer.verify_file),
            (Some(signer), _) => ("SLUICE_JWT_PUBLIC_KEY_FILE", &signer.verify_file),
            (None, _) => return vec![("SLUICE_ALLOW_ANONYMOUS", "true".to_owned())],
        };
        vec![
            ("SLUICE_ALLOW_ANONYMOUS", "false".to_owned()),
            (name, file.display().to_string()),
        ]
    }

    /// Default headers for the bench's own HTTP clients: a token that may subscribe and publish.
    pub fn bench_headers(&self) -> anyhow::Result<HeaderMap> {
        let mut headers = HeaderMap::new();
        if let Some(signer) = &self.signer {
            let token = signer.mint(BENCH_SUBJECT, true)?;
            let mut value = HeaderValue::try_from(format!("Bearer {token}")).context("a token as a header")?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(headers)
    }

    /// One subscribe token per connection, `sub` = `bench-<first + k>`, minted on every CPU;
    /// empty when access control is off.
    pub fn connection_tokens(&self, first: u32, count: u32) -> anyhow::Result<Vec<String>> {
        let Some(signer) = &self.signer else {
            return Ok(Vec::new());
        };
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let indices: Vec<u32> = (first..first + count).collect();
        let chunk = indices.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = indices
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|index| signer.mint(&format!("bench-{index}"), false))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            let mut tokens = Vec::with_capacity(indices.len());
            for worker in workers {
                let part = worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("a minting thread panicked"))??;
                tokens.extend(part);
            }
            Ok(tokens)
        })
    }

    /// A file in the run's private directory for tokens handed to a holder; `None` when off.
    pub fn token_file(&self, name: &str) -> Option<PathBuf> {
        self.signer.as_ref().map(|signer| signer.dir.path.join(name))
    }
}

impl Signer {
    fn mint(&self, subject: &str, publish: bool) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims = Claims {
            sub: subject,
            iat: now.as_secs(),
            exp: (now + TOKEN_LIFETIME).as_secs(),
            sluice: Grants {
                subscribe: ["*"],
                publish: publish.then_some(["*"]),
            },
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key).context("minting a token")
    }
}

/// 32 random bytes as 64 hex digits, written without a newline.
fn hmac_signer() -> anyhow::Result<Signer> {
    let dir = TempDir::new()?;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let secret = bytes.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    });
    let verify_file = dir.path.join("hmac-secret");
    std::fs::write(&verify_file, &secret).with_context(|| format!("writing {}", verify_file.display()))?;
    Ok(Signer {
        algorithm: Algorithm::HS256,
        key: EncodingKey::from_secret(secret.as_bytes()).context("loading the HMAC secret")?,
        verify_file,
        dir,
    })
}

/// An RSA-2048 key pair from the `openssl` CLI (PKCS#8 private key, SPKI public key).
fn rsa_signer() -> anyhow::Result<Signer> {
    let dir = TempDir::new()?;
    let private = dir.path.join("rsa-private.pem");
    let public = dir.path.join("rsa-public.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path_str(&private)?,
    ])?;
    openssl(&[
        "pkey",
        "-in",
        path_str(&private)?,
        "-pubout",
        "-out",
        path_str(&public)?,
    ])?;
    let pem = std::fs::read(&private).with_context(|| format!("reading {}", private.display()))?;
    Ok(Signer {
        algorithm: Algorithm::RS256,
        key: EncodingKey::from_rsa_pem(&pem).context("loading the RSA private key")?,
        verify_file: public,
        dir,
    })
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .context("running the openssl CLI (needed by --auth rs256 to make a key pair)")?;
    if !output.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// A directory only this user can read, removed with everything in it when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!("sluice-bench-auth-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    fn decode(token: &str, key: &DecodingKey, algorithm: Algorithm) -> serde_json::Value {
        jsonwebtoken::decode::<serde_json::Value>(token, key, &Validation::new(algorithm))
            .expect("the token verifies")
            .claims
    }

    #[test]
    fn hs256_tokens_verify_with_the_secret_file_the_services_read() {
        let auth = Auth::prepare(AuthMode::Hs256).unwrap();
        let secret = std::fs::read(auth.signer.as_ref().unwrap().verify_file.clone()).unwrap();
        assert_eq!(secret.len(), 64, "64 hex digits, no newline");
        let tokens = auth.connection_tokens(10, 3).unwrap();
        assert_eq!(tokens.len(), 3);
        let claims = decode(
            &tokens[2],
            &DecodingKey::from_secret(&secret).unwrap(),
            Algorithm::HS256,
        );
        assert_eq!(claims["sub"], "bench-12");
        assert_eq!(claims["sluice"], serde_json::json!({"subscribe": ["*"]}));
        assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap() + 3600);
        assert_eq!(auth.gateway_args()[0], "--jwt-hmac-secret-file");
        assert!(auth.bench_headers().unwrap().contains_key(AUTHORIZATION));
    }

    #[test]
    fn rs256_tokens_verify_with_the_public_key_file_the_services_read() {
        let auth = Auth::prepare(AuthMode::Rs256).unwrap();
        let public = std::fs::read(auth.signer.as_ref().unwrap().verify_file.clone()).unwrap();
        let tokens = auth.connection_tokens(0, 1).unwrap();
        let claims = decode(
            &tokens[0],
            &DecodingKey::from_rsa_pem(&public).unwrap(),
            Algorithm::RS256,
        );
        assert_eq!(claims["sub"], "bench-0");
        assert_eq!(
            auth.service_env(),
            [
                ("SLUICE_ALLOW_ANONYMOUS", "false".to_owned()),
                ("SLUICE_JWT_PUBLIC_KEY_FILE", auth.gateway_args()[1].clone())
            ]
        );
    }

    #[test]
    fn no_auth_runs_the_services_anonymous_and_mints_nothing() {
        let auth = Auth::prepare(AuthMode::None).unwrap();
        assert_eq!(auth.service_env(), [("SLUICE_ALLOW_ANONYMOUS", "true".to_owned())]);
        assert!(auth.gateway_args().is_empty());
        assert!(auth.connection_tokens(0, 5).unwrap().is_empty());
        assert!(auth.bench_headers().unwrap().is_empty());
        assert!(auth.token_file("x").is_none());
    }

    #[test]
    fn the_key_directory_goes_with_the_run() {
        let auth = Auth::prepare(AuthMode::Hs256).unwrap();
        let dir = auth.signer.as_ref().unwrap().dir.path.clone();
        assert!(dir.is_dir());
        drop(auth);
        assert!(!dir.exists());
    }
}
