//! Why a request was refused, mapped to HTTP once.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// A request that is not allowed. `401` variants carry `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no access token: send Authorization: Bearer <token>")]
    Missing,
    #[error("the access token is malformed: {0}")]
    Malformed(String),
    #[error("the access token's signature does not verify")]
    BadSignature,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the access token's issuer is not accepted")]
    WrongIssuer,
    #[error("the access token's audience is not accepted")]
    WrongAudience,
    #[error("the access token's key (kid) is unknown")]
    UnknownKey,
    #[error("the access token's algorithm does not match its key")]
    WrongAlgorithm,
    #[error("{0}")]
    Forbidden(String),
}

impl AuthError {
    /// The `code` of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Forbidden(_) => "forbidden",
            _ => "unauthenticated",
        }
    }

    /// The `reason` label of the auth-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::UnknownKey => "unknown_key",
            AuthError::WrongAlgorithm => "wrong_algorithm",
            AuthError::Forbidden(_) => "forbidden",
        }
    }
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = sluice_runtime::error::error_response(self.status_code(), self.code(), &self.to_string());
        if self.status_code() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
