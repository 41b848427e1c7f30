//! The access-control flags both services share.

use std::path::PathBuf;
use std::time::Duration;

use sluice_runtime::cli::parse_duration;

/// Who may call the API: JWT keys and claims to check, or `--allow-anonymous`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// File holding the HMAC secret that signs tokens (HS256, HS384, HS512).
    #[arg(long, env = "SLUICE_JWT_HMAC_SECRET_FILE", value_name = "FILE")]
    pub jwt_hmac_secret_file: Option<PathBuf>,

    /// PEM file of a public key that signs tokens (RSA, EC P-256/P-384, Ed25519); repeatable,
    /// comma-separated in the environment.
    #[arg(long, env = "SLUICE_JWT_PUBLIC_KEY_FILE", value_name = "FILE", value_delimiter = ',')]
    pub jwt_public_key_file: Vec<PathBuf>,

    /// URL of a JSON Web Key Set; keys are picked by `kid`, cached, refreshed in the background
    /// and refetched (rate-limited) when a token names an unknown `kid`.
    #[arg(long, env = "SLUICE_JWKS_URL", value_name = "URL")]
    pub jwks_url: Option<String>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "SLUICE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim (one of the token's audiences), when set.
    #[arg(long, env = "SLUICE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated when checking `exp` and `nbf`.
    #[arg(long, env = "SLUICE_JWT_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// Serve requests that carry no token as a principal that may do everything. Without a
    /// key and without this flag the service refuses to start.
    #[arg(long, env = "SLUICE_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
}

impl AuthArgs {
    /// The dev stack's and tests' default: no keys, anonymous access.
    pub fn anonymous() -> Self {
        Self {
            allow_anonymous: true,
            jwt_leeway: Duration::from_secs(30),
            ..Self::default()
        }
    }

    /// True when at least one key source is configured.
    pub fn has_keys(&self) -> bool {
        self.jwt_hmac_secret_file.is_some() || !self.jwt_public_key_file.is_empty() || self.jwks_url.is_some()
    }
}
