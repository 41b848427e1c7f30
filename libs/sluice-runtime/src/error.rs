//! The error body of every Sluice HTTP API: `{"error":{"code":"…","message":"…"}}`.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Debug, Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

/// The JSON error body as a value, for callers that add fields beside `error`.
pub fn error_json(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code, "message": message } })
}

/// A response with `status` and the JSON error body.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(Body {
        error: Detail { code, message },
    })
}

/// Default service for unknown routes, so a typo in a path also gets a JSON error.
pub async fn not_found(request: actix_web::HttpRequest) -> HttpResponse {
    let message = format!("no route for {} {}", request.method(), request.path());
    error_response(StatusCode::NOT_FOUND, "not_found", &message)
}
