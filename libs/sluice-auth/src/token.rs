//! Where a request's token comes from.

use actix_web::http::header::HeaderMap;

use crate::AuthError;

/// Which part of the request carried the token. A cookie-carried token is subject to the
/// `Origin` check (CSRF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Cookie,
    Query,
}

/// A token and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub source: TokenSource,
}

/// The request's token: `Authorization: Bearer` first, then the cookie named `cookie` (when
/// given), then the `access_token` query value (when given). `Ok(None)`: no token at all.
/// A malformed `Authorization` header is an error, not "no token".
pub fn find_token(
    headers: &HeaderMap,
    cookie: Option<&str>,
    query_token: Option<&str>,
) -> Result<Option<Token>, AuthError> {
    let _ = (headers, cookie, query_token);
    Err(AuthError::Missing)
}
