//! Ingest's errors and their one mapping to HTTP.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use sluice_kafka::StreamError;

/// Why a request was refused before anything reached Kafka, or why Kafka could not take it.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    InvalidStreamName(String),
    #[error("{0}")]
    UnknownStream(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the body is larger than {max} bytes")]
    BodyTooLarge { max: usize },
    #[error("{count} events in one request; the limit is {max}")]
    TooManyEvents { count: usize, max: usize },
    #[error("the event data is {size} bytes as compact JSON; the limit is {max}")]
    EventTooLarge { size: usize, max: usize },
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidEvent(String),
    #[error("event {index}: {source}")]
    AtEvent {
        index: usize,
        #[source]
        source: Box<IngestError>,
    },
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error("Kafka cannot take events now: {0}")]
    KafkaUnavailable(#[source] sluice_kafka::KafkaError),
    /// `401` or `403`: answered exactly as the auth crate maps it (`WWW-Authenticate` included).
    #[error(transparent)]
    Auth(#[from] sluice_auth::AuthError),
}

impl IngestError {
    /// Prefixes the error with the position of the event it concerns.
    pub fn at_event(self, index: usize) -> Self {
        IngestError::AtEvent {
            index,
            source: Box::new(self),
        }
    }

    /// The machine-readable code in the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::InvalidStreamName(_) => "invalid_stream_name",
            IngestError::UnknownStream(_) => "unknown_stream",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::BodyTooLarge { .. } => "body_too_large",
            IngestError::TooManyEvents { .. } => "too_many_events",
            IngestError::EventTooLarge { .. } => "event_too_large",
            IngestError::InvalidJson(_) => "invalid_json",
            IngestError::InvalidEvent(_) => "invalid_event",
            IngestError::AtEvent { source, .. } => source.code(),
            IngestError::Body(_) => "invalid_body",
            IngestError::KafkaUnavailable(_) => "kafka_unavailable",
            IngestError::Auth(e) => e.code(),
        }
    }
}

impl From<StreamError> for IngestError {
    fn from(err: StreamError) -> Self {
        match err {
            StreamError::InvalidName(_) => IngestError::InvalidStreamName(err.to_string()),
            StreamError::NotAllowed(_) => IngestError::UnknownStream(err.to_string()),
        }
    }
}

impl ResponseError for IngestError {
    fn status_code(&self) -> StatusCode {
        match self {
            IngestError::InvalidStreamName(_)
            | IngestError::InvalidJson(_)
            | IngestError::InvalidEvent(_)
            | IngestError::Body(_) => StatusCode::BAD_REQUEST,
            IngestError::UnknownStream(_) => StatusCode::NOT_FOUND,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::BodyTooLarge { .. }
            | IngestError::TooManyEvents { .. }
            | IngestError::EventTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::AtEvent { source, .. } => source.status_code(),
            IngestError::KafkaUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Auth(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let IngestError::Auth(e) = self {
            return e.error_response();
        }
        let mut response = sluice_runtime::error::error_response(self.status_code(), self.code(), &self.to_string());
        if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, crate::retry_after());
        }
        response
    }
}
