//! Gateway errors and their one mapping to HTTP. All of them happen before the stream starts;
//! once `200 text/event-stream` is sent, problems end the stream and the client resumes.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use rand::Rng as _;
use sluice_auth::AuthError;
use sluice_kafka::{KafkaError, StreamError};
use sluice_sse::CursorError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    InvalidStreamName(String),
    #[error("{0}")]
    UnknownStream(String),
    #[error("invalid cursor (Last-Event-ID, lastEventId or a poll's cursor): {0}")]
    InvalidCursor(#[source] CursorError),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("this gateway is at its connection limit")]
    TooManyConnections,
    #[error("this gateway is shutting down")]
    Draining,
    #[error("Kafka cannot serve this stream now: {0}")]
    Kafka(#[source] KafkaError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("this token's subject has as many open streams as --max-connections-per-subject allows")]
    TooManyForSubject,
}

impl GatewayError {
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::InvalidStreamName(_) => "invalid_stream_name",
            GatewayError::UnknownStream(_) => "unknown_stream",
            GatewayError::InvalidCursor(_) => "invalid_cursor",
            GatewayError::InvalidQuery(_) => "invalid_query",
            GatewayError::TooManyConnections => "too_many_connections",
            GatewayError::Draining => "draining",
            GatewayError::Kafka(_) => "kafka_unavailable",
            GatewayError::Auth(err) => err.code(),
            GatewayError::TooManyForSubject => "too_many_connections",
        }
    }

    /// The `reason` of `sluice_gateway_connections_rejected_total`: the code, except that one
    /// subject at its own limit is told apart from a full pod (which alerts).
    pub fn metric_reason(&self) -> &'static str {
        match self {
            GatewayError::TooManyForSubject => "subject_limit",
            other => other.code(),
        }
    }
}

impl From<StreamError> for GatewayError {
    fn from(err: StreamError) -> Self {
        match err {
            StreamError::InvalidName(_) => GatewayError::InvalidStreamName(err.to_string()),
            StreamError::NotAllowed(_) => GatewayError::UnknownStream(err.to_string()),
        }
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        match self {
            GatewayError::InvalidStreamName(_) | GatewayError::InvalidCursor(_) | GatewayError::InvalidQuery(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::UnknownStream(_) => StatusCode::NOT_FOUND,
            GatewayError::TooManyConnections | GatewayError::Draining | GatewayError::Kafka(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Auth(err) => err.status_code(),
            GatewayError::TooManyForSubject => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let GatewayError::Auth(err) = self {
            return err.error_response();
        }
        let mut response = sluice_runtime::error::error_response(self.status_code(), self.code(), &self.to_string());
        if matches!(
            self.status_code(),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            // Jittered, so refused clients do not come back in lockstep.
            let seconds = rand::rng().random_range(1..=10u32);
            response
                .headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
