//! Where a request's token comes from.
//!
//! The order is fixed and documented: `Authorization: Bearer` first, then the cookie, then the
//! `access_token` query parameter. A token found in one place is never combined with another.
//! Header values are untrusted bytes: anything that is not visible ASCII is refused, never
//! unwrapped.

use actix_web::http::header::{HeaderMap, AUTHORIZATION, COOKIE};

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
    if let Some(value) = bearer(headers)? {
        return Ok(Some(Token {
            value,
            source: TokenSource::Header,
        }));
    }
    if let Some(value) = cookie.and_then(|name| cookie_value(headers, name)) {
        return Ok(Some(Token {
            value,
            source: TokenSource::Cookie,
        }));
    }
    match query_token {
        Some("") => Err(AuthError::Malformed("the access_token parameter is empty".into())),
        Some(value) => Ok(Some(Token {
            value: value.to_owned(),
            source: TokenSource::Query,
        })),
        None => Ok(None),
    }
}

/// The `Authorization: Bearer` token. The scheme is case-insensitive (RFC 9110 §11.1); any
/// other scheme, an empty token, or several `Authorization` headers are malformed, because
/// guessing which credential the client meant is how confused-deputy bugs start.
fn bearer(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed("more than one Authorization header".into()));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("the Authorization header is not visible ASCII".into()))?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("the Authorization scheme must be Bearer".into()));
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed("the bearer token is empty".into()));
    }
    Ok(Some(token.to_owned()))
}

/// The first non-empty cookie called `name` in any `Cookie` header. Unparsable pairs and
/// non-ASCII headers are skipped: a browser may carry other sites' odd cookies on the domain.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .filter_map(|h| h.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name && !c.value().is_empty())
        .map(|c| c.value().to_owned())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(HeaderName, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    fn found(value: &str, source: TokenSource) -> Result<Option<Token>, AuthError> {
        Ok(Some(Token {
            value: value.into(),
            source,
        }))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER   abc  "] {
            let h = headers(&[(AUTHORIZATION, header.as_bytes())]);
            assert_eq!(find_token(&h, None, None), found("abc", TokenSource::Header));
        }
    }

    #[test]
    fn another_scheme_or_an_empty_token_is_malformed() {
        for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "", "Token abc"] {
            let h = headers(&[(AUTHORIZATION, header.as_bytes())]);
            let err = find_token(&h, Some("sluice_token"), Some("q")).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{header:?}");
        }
    }

    #[test]
    fn non_ascii_headers_never_panic() {
        let h = headers(&[(AUTHORIZATION, b"Bearer \xff\xfe"), (COOKIE, b"sluice_token=\xff")]);
        assert_eq!(
            find_token(&h, Some("sluice_token"), None).unwrap_err().reason(),
            "malformed"
        );
        let h = headers(&[(COOKIE, b"sluice_token=\xff")]);
        assert_eq!(find_token(&h, Some("sluice_token"), None), Ok(None));
    }

    #[test]
    fn two_authorization_headers_are_malformed() {
        let h = headers(&[(AUTHORIZATION, b"Bearer a"), (AUTHORIZATION, b"Bearer b")]);
        assert_eq!(find_token(&h, None, None).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn header_wins_over_cookie_and_cookie_over_query() {
        let both = headers(&[(AUTHORIZATION, b"Bearer h"), (COOKIE, b"sluice_token=c")]);
        assert_eq!(
            find_token(&both, Some("sluice_token"), Some("q")),
            found("h", TokenSource::Header)
        );
        let cookie = headers(&[(COOKIE, b"other=x; sluice_token=c; more=y")]);
        assert_eq!(
            find_token(&cookie, Some("sluice_token"), Some("q")),
            found("c", TokenSource::Cookie)
        );
        assert_eq!(find_token(&cookie, None, Some("q")), found("q", TokenSource::Query));
        assert_eq!(
            find_token(&HeaderMap::new(), None, Some("q")),
            found("q", TokenSource::Query)
        );
    }

    #[test]
    fn cookie_is_found_in_any_cookie_header_and_empty_ones_are_skipped() {
        let h = headers(&[(COOKIE, b"a=1; sluice_token="), (COOKIE, b"sluice_token=t2")]);
        assert_eq!(
            find_token(&h, Some("sluice_token"), None),
            found("t2", TokenSource::Cookie)
        );
        let h = headers(&[(COOKIE, b"garbage;;; =; sluice_tokenx=no")]);
        assert_eq!(find_token(&h, Some("sluice_token"), None), Ok(None));
    }

    #[test]
    fn nothing_is_none_and_an_empty_query_token_is_malformed() {
        assert_eq!(find_token(&HeaderMap::new(), Some("sluice_token"), None), Ok(None));
        assert_eq!(
            find_token(&HeaderMap::new(), None, Some("")).unwrap_err().reason(),
            "malformed"
        );
    }
}
