//! What every HTTP listener of Sluice does to its connections and responses, whatever the
//! route: response headers a browser must see on every answer, and TCP keepalive on accepted
//! sockets.
//!
//! - [`security_headers`] (middleware, `App::new().wrap(from_fn(security_headers))`):
//!   `X-Content-Type-Options: nosniff` on every response, so no browser guesses a type for an
//!   event stream or an error body; `Cache-Control: no-store` on JSON responses, which answer
//!   one request and must not be replayed from a cache.
//! - [`on_connect`] (`HttpServer::on_connect`): keepalive probes, so a peer that vanished
//!   without a FIN (a phone leaving coverage, a NAT forgetting the flow) is found by the
//!   kernel after [`KEEPALIVE_IDLE`] plus a few probes, not only by a write timeout on a
//!   busy stream.

use std::any::Any;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;

/// Idle time before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel gives the connection up.
pub const KEEPALIVE_PROBES: u32 = 6;

/// Adds the headers every response carries (see the module docs). Handler errors reach it as
/// responses already (actix renders them inside the route), so they get the headers too.
pub async fn security_headers<B: MessageBody>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let mut response = next.call(request).await?;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// `HttpServer::on_connect` hook: turns on TCP keepalive for an accepted socket. A socket that
/// refuses the options is served anyway (it only loses early dead-peer detection).
pub fn on_connect(connection: &dyn Any, _: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Err(err) = set_keepalive(tcp) {
            tracing::debug!(error = %err, "cannot enable TCP keepalive on an accepted socket");
        }
    }
}

/// Enables keepalive probes on `socket` with Sluice's timings.
pub fn set_keepalive(socket: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    socket2::SockRef::from(socket).set_tcp_keepalive(&keepalive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::middleware::from_fn;
    use actix_web::test as actix_test;
    use actix_web::{web, App, HttpResponse};

    #[actix_web::test]
    async fn every_response_is_nosniff_and_json_is_not_stored() {
        let app = actix_test::init_service(
            App::new()
                .wrap(from_fn(security_headers))
                .route("/json", web::get().to(|| async { HttpResponse::Ok().json(1) }))
                .route(
                    "/sse",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .content_type("text/event-stream")
                            .insert_header(("Cache-Control", "no-cache"))
                            .body("")
                    }),
                )
                .route(
                    "/fails",
                    web::get().to(|| async { Err::<HttpResponse, _>(actix_web::error::ErrorBadRequest("no")) }),
                ),
        )
        .await;
        for (path, cache) in [
            ("/json", Some("no-store")),
            ("/sse", Some("no-cache")),
            ("/fails", None),
        ] {
            let response = actix_test::call_service(&app, actix_test::TestRequest::get().uri(path).to_request()).await;
            let headers = response.headers();
            assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff", "{path}");
            assert_eq!(
                headers.get("cache-control").and_then(|v| v.to_str().ok()),
                cache,
                "{path}"
            );
        }
    }

    #[test]
    fn accepted_sockets_get_keepalive_probes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let probe = socket2::SockRef::from(&accepted);
        assert!(!probe.keepalive().unwrap(), "off by default: the test can fail");
        set_keepalive(&accepted).unwrap();
        assert!(probe.keepalive().unwrap());
        assert_eq!(probe.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(probe.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(probe.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    }
}
