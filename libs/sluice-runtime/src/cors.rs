//! Cross-origin access (CORS): which web pages may call a Sluice API from a browser.
//!
//! A page served from another origin can read a stream (`EventSource`) or publish (`fetch`)
//! only when the response names its origin in `Access-Control-Allow-Origin`; a `fetch` that
//! sends JSON is preceded by an `OPTIONS` preflight. Both services take the same
//! `--allow-origins` list. Empty (the default) sends no CORS headers at all, so only same-origin
//! pages and non-browser clients can use the API; the dev stack opens it with `*`.
//!
//! This is access for browsers, not authentication: a client that is not a browser ignores
//! these headers.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::HttpResponse;

/// Request headers a cross-origin page may send: the body type, the access token, the SSE
/// resume header (an `EventSource` sends it itself on reconnect) and trace context.
const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "last-event-id",
    "traceparent",
    "tracestate",
];

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The `--allow-origins` flag, shared by both services.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CorsArgs {
    /// Web origins whose pages may use this API from a browser (CORS), comma-separated, such as
    /// `https://app.example.com`; `*` allows any origin. Empty: no CORS headers, so only
    /// same-origin pages (and clients that are not browsers).
    #[arg(long, env = "SLUICE_ALLOW_ORIGINS", value_delimiter = ',', value_name = "ORIGINS")]
    pub allow_origins: Vec<String>,
}

/// The validated origin list.
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    any: bool,
    origins: Vec<String>,
}

impl CorsPolicy {
    /// Checks every origin is `*` or `scheme://host[:port]`; the error names the flag.
    pub fn new(args: &CorsArgs) -> Result<Self, String> {
        let mut policy = CorsPolicy::default();
        for origin in args.allow_origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            if origin == "*" {
                policy.any = true;
                continue;
            }
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .ok_or_else(|| format!("--allow-origins: `{origin}` must start with http:// or https://"))?;
            let valid = !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !valid {
                return Err(format!(
                    "--allow-origins: `{origin}` is not an origin (scheme://host[:port], no path, no trailing slash)"
                ));
            }
            policy.origins.push(origin.to_ascii_lowercase());
        }
        Ok(policy)
    }

    /// A policy that allows every origin (the dev stack's).
    pub fn any() -> Self {
        CorsPolicy {
            any: true,
            origins: Vec::new(),
        }
    }

    /// Whether any cross-origin access is configured.
    pub fn is_enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    /// Whether a page of `origin` may use the API (the gateway also refuses cookie-carried
    /// tokens from other origins).
    pub fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Adds the CORS headers a response to a request from `origin` needs.
    fn decorate(&self, origin: &str, headers: &mut HeaderMap) {
        let allowed = if self.any {
            HeaderValue::from_static("*")
        } else {
            match HeaderValue::from_str(origin) {
                Ok(value) => value,
                Err(_) => return,
            }
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
        if !self.any {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
            // A named origin may send credentials (the gateway's token cookie, with
            // `EventSource(url, {withCredentials: true})`); `*` never may, by the CORS rules.
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The answer to a preflight from an allowed origin: only the methods and headers the
    /// APIs use.
    fn preflight(&self, origin: &str, requested_headers: Option<&str>) -> HttpResponse {
        let mut response = HttpResponse::NoContent();
        response
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE));
        let granted: Vec<&str> = requested_headers
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|h| ALLOWED_HEADERS.iter().any(|a| a.eq_ignore_ascii_case(h)))
            .collect();
        if !granted.is_empty() {
            response.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, granted.join(", ")));
        }
        let mut response = response.finish();
        self.decorate(origin, response.headers_mut());
        response
    }
}

/// Middleware applying a [`CorsPolicy`]: `App::new().wrap(Cors::new(policy))`.
#[derive(Debug, Clone)]
pub struct Cors(Arc<CorsPolicy>);

impl Cors {
    pub fn new(policy: CorsPolicy) -> Self {
        Cors(Arc::new(policy))
    }
}

impl<S, B> Transform<S, ServiceRequest> for Cors
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = CorsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CorsService {
            service: Rc::new(service),
            policy: self.0.clone(),
        }))
    }
}

#[derive(Debug)]
pub struct CorsService<S> {
    service: Rc<S>,
    policy: Arc<CorsPolicy>,
}

impl<S, B> Service<ServiceRequest> for CorsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .filter(|origin| self.policy.allows(origin))
            .map(str::to_owned);
        let Some(origin) = origin else {
            let response = self.service.call(request);
            return Box::pin(async move { Ok(response.await?.map_into_left_body()) });
        };
        let is_preflight = request.method() == Method::OPTIONS
            && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            let requested = request
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .and_then(|v| v.to_str().ok());
            let response = self.policy.preflight(&origin, requested);
            return Box::pin(ready(Ok(request.into_response(response).map_into_right_body())));
        }
        let (policy, response) = (self.policy.clone(), self.service.call(request));
        Box::pin(async move {
            let mut response = response.await?;
            policy.decorate(&origin, response.headers_mut());
            Ok(response.map_into_left_body())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::{web, App};

    fn policy(origins: &[&str]) -> Result<CorsPolicy, String> {
        CorsPolicy::new(&CorsArgs {
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
        })
    }

    #[test]
    fn validates_origins_and_names_the_flag() {
        assert!(!policy(&[]).unwrap().is_enabled());
        assert!(policy(&["*"]).unwrap().is_enabled());
        let listed = policy(&["https://app.example.com", "http://127.0.0.1:8080"]).unwrap();
        assert!(listed.allows("https://APP.example.com"));
        assert!(!listed.allows("https://evil.example.com"));
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://a.com/path",
            "ftp://a.com",
        ] {
            let err = policy(&[bad]).unwrap_err();
            assert!(err.starts_with("--allow-origins"), "{bad}: {err}");
        }
    }

    async fn call(policy: CorsPolicy, request: TestRequest) -> ServiceResponse<impl MessageBody> {
        let app = init_service(
            App::new()
                .wrap(Cors::new(policy))
                .route("/r", web::get().to(|| async { "ok" }))
                .route("/r", web::post().to(|| async { "posted" })),
        )
        .await;
        call_service(&app, request.to_request()).await
    }

    fn header_of<B>(response: &ServiceResponse<B>, name: header::HeaderName) -> Option<&str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[actix_web::test]
    async fn allowed_origin_is_named_and_others_get_nothing() {
        let listed = policy(&["http://app.test"]).unwrap();
        let ok = call(
            listed.clone(),
            TestRequest::get()
                .uri("/r")
                .insert_header(("origin", "http://app.test")),
        )
        .await;
        assert_eq!(
            header_of(&ok, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("http://app.test")
        );
        assert_eq!(header_of(&ok, header::VARY), Some("origin"));
        assert_eq!(
            header_of(&ok, header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true"),
            "a listed origin may send the token cookie"
        );

        let other = call(
            listed,
            TestRequest::get()
                .uri("/r")
                .insert_header(("origin", "http://evil.test")),
        )
        .await;
        assert_eq!(
            other.status(),
            200,
            "the request itself is served; the browser withholds it"
        );
        assert_eq!(header_of(&other, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);

        let off = call(
            CorsPolicy::default(),
            TestRequest::get()
                .uri("/r")
                .insert_header(("origin", "http://app.test")),
        )
        .await;
        assert_eq!(header_of(&off, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);

        let any = call(
            CorsPolicy::any(),
            TestRequest::get().uri("/r").insert_header(("origin", "null")),
        )
        .await;
        assert_eq!(header_of(&any, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(header_of(&any, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    }

    #[actix_web::test]
    async fn preflight_grants_only_the_headers_the_api_reads() {
        let request = TestRequest::default()
            .method(Method::OPTIONS)
            .uri("/r")
            .insert_header(("origin", "http://app.test"))
            .insert_header(("access-control-request-method", "POST"))
            .insert_header(("access-control-request-headers", "content-type, x-secret"));
        let response = call(policy(&["http://app.test"]).unwrap(), request).await;
        assert_eq!(response.status(), 204);
        assert_eq!(
            header_of(&response, header::ACCESS_CONTROL_ALLOW_HEADERS),
            Some("content-type")
        );
        assert_eq!(
            header_of(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("http://app.test")
        );
        assert!(header_of(&response, header::ACCESS_CONTROL_ALLOW_METHODS)
            .unwrap()
            .contains("POST"));

        let refused = TestRequest::default()
            .method(Method::OPTIONS)
            .uri("/r")
            .insert_header(("origin", "http://evil.test"))
            .insert_header(("access-control-request-method", "POST"));
        let response = call(policy(&["http://app.test"]).unwrap(), refused).await;
        assert_ne!(response.status(), 204, "a refused origin gets no preflight grant");
        assert_eq!(header_of(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
    }
}
