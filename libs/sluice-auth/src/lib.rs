//! `sluice-auth`: access control for both services, one seam.
//!
//! A request becomes a [`Principal`] (a subject and what it may read and write) from a JWT, or
//! an [`AuthError`] that maps to `401 unauthenticated` / `403 forbidden` in one place.
//!
//! - [`AuthArgs`]: the key flags (`--jwt-hmac-secret-file`, `--jwt-public-key-file`,
//!   `--jwks-url`, `--jwt-issuer`, `--jwt-audience`, `--jwt-leeway`, `--allow-anonymous`), shared
//!   by both services; validated at start (exit 64).
//! - [`Authenticator`]: verifies a token's signature and claims with the `jsonwebtoken` crate
//!   against the configured keys (JWKS keys cached by `kid`); no hand-written crypto.
//! - [`Grants`]: the `sluice` claim's `subscribe` / `publish` entries, and what they allow for
//!   one stream ([`Access`]).
//! - [`token`]: where a token comes from (`Authorization: Bearer`, a cookie, `access_token`).
//! - [`AuthMetrics`]: failures by reason.
//!
//! Inside: `keys` loads verification keys (files and JWKs) and pins each to the algorithms
//! its type allows; `jwks` keeps the `--jwks-url` key set cached, refreshed, and refetched
//! (rate-limited) on an unknown `kid`.

pub mod args;
pub mod error;
pub mod grants;
pub mod jwks;
mod keys;
pub mod metrics;
pub mod token;
pub mod verify;

pub use args::AuthArgs;
pub use error::AuthError;
pub use grants::{Access, Grants};
pub use metrics::AuthMetrics;
pub use token::{find_token, Token, TokenSource};
pub use verify::{Authenticator, Principal, MAX_TOKEN_BYTES};
