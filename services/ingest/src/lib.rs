//! `sluice-ingest`: HTTP → Kafka.
//!
//! `POST /v1/streams/{stream}/events` takes one event, a JSON array of events, or NDJSON, and
//! answers `2xx` only after Kafka acknowledged every event (idempotent producer, `acks=all`).
//! The flow of one request:
//!
//! 1. The `Authorization: Bearer` token becomes a principal ([`sluice_auth`]), or the request
//!    is refused before its body is read: `401` (no or bad token, unless `--allow-anonymous`),
//!    `403` when the stream is not in the token's `publish` grants.
//! 2. [`StreamCatalog`] maps the stream name to a topic, or refuses it (400/404).
//! 3. The body is read up to `--max-body-bytes` (413) within `--body-timeout` (408, connection
//!    closed) and [`event::parse_body`] validates every event (400/413/415) — nothing is
//!    produced unless the whole request is valid.
//! 4. A publisher limited to keys may write only those: one event with another key (or none)
//!    refuses the whole request with `403`, so nothing is written.
//! 5. [`topics::TopicCache`] confirms the topic exists (404), without a metadata round trip per
//!    request, or creates it with `--auto-create-streams`.
//! 6. [`publish::publish`] enqueues all records in request order, then awaits every
//!    acknowledgement. If Kafka fails some, the answer (503 + `Retry-After`) lists per event
//!    which were written and which were not.
//!
//! [`run`] serves until the shutdown token fires, then drains: readiness fails, in-flight
//! requests finish, the producer flushes, and it returns.

pub mod config;
pub mod error;
pub mod event;
pub mod metrics;
pub mod publish;
pub mod topics;
pub mod trace;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Service as _;
use actix_web::http::header::HeaderValue;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::StreamExt as _;
use prometheus_client::registry::Registry;
use rand::Rng as _;
use sluice_auth::{Access, AuthError, Authenticator};
use sluice_kafka::{Producer, StreamCatalog};
use sluice_runtime::{AdminServer, CancellationToken, Readiness};
use tracing::Instrument as _;

pub use config::IngestConfig;
use error::IngestError;
use event::BodyFormat;
use metrics::{IngestMetrics, StatusLabel};

/// How long a client may take to send the request line and headers (actix's
/// `client_request_timeout`; its default, made explicit).
const HEADERS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] sluice_kafka::KafkaError),
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

impl sluice_runtime::service::ConfigFault for RunError {
    fn is_config(&self) -> bool {
        match self {
            RunError::Config(_) => true,
            RunError::Kafka(e) => e.is_config(),
            RunError::Io(_) => false,
        }
    }
}

impl sluice_runtime::service::Service for IngestConfig {
    type Error = RunError;

    fn validate(&self) -> Result<(), String> {
        IngestConfig::validate(self).map(|_| ())
    }

    fn log(&self) -> &sluice_runtime::logging::LogArgs {
        &self.log
    }

    fn listen(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        (self.listen, self.admin_listen)
    }

    async fn run(self, listener: TcpListener, admin: TcpListener, shutdown: CancellationToken) -> Result<(), RunError> {
        run(self, listener, admin, shutdown).await
    }
}

/// Everything a request handler needs. Shared by every worker.
#[derive(Debug)]
pub struct AppState {
    pub catalog: StreamCatalog,
    pub producer: Producer,
    pub topics: topics::TopicCache,
    pub limits: config::Limits,
    pub body_timeout: Duration,
    pub metrics: IngestMetrics,
    pub auth: Arc<Authenticator>,
}

/// The topic cache, with a creator when `--auto-create-streams` is on: the one the dev stack
/// injected, else Kafka's CreateTopics.
fn topic_cache(config: &IngestConfig, producer: &Producer, timeout: Duration) -> Result<topics::TopicCache, RunError> {
    let directory = sluice_kafka::TopicDirectory::new(producer.topic_lister(timeout));
    let auto_create = if config.auto_create_streams {
        let creator: Arc<dyn sluice_kafka::TopicCreator> = match &config.topic_creator {
            Some(creator) => creator.clone(),
            None => Arc::new(sluice_kafka::AdminTopicCreator::new(&config.kafka, timeout)?),
        };
        Some(topics::AutoCreate {
            creator,
            // validate() bounds the count well below i32::MAX.
            partitions: i32::try_from(config.auto_create_partitions).unwrap_or(i32::MAX),
        })
    } else {
        None
    };
    Ok(topics::TopicCache::new(directory, auto_create))
}

/// Serves the events API on `listener` and the admin endpoints on `admin_listener` until
/// `shutdown` is cancelled, then drains and returns.
pub async fn run(
    config: IngestConfig,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let catalog = config.validate().map_err(RunError::Config)?;
    let auth = Arc::new(Authenticator::new(&config.auth).map_err(RunError::Config)?);
    let producer = Producer::new(&config.kafka, config.producer_settings())?;
    let mut registry = Registry::default();
    let metrics = IngestMetrics::register(&mut registry);
    sluice_runtime::process::register(&mut registry);
    let readiness = Readiness::new();
    let admin = AdminServer::start(admin_listener, Arc::new(registry), readiness.clone())?;

    let metadata_timeout = config.produce_timeout.min(Duration::from_secs(5));
    let state = web::Data::new(AppState {
        catalog,
        producer: producer.clone(),
        topics: topic_cache(&config, &producer, metadata_timeout)?,
        limits: config.limits.clone(),
        body_timeout: config.body_timeout,
        metrics,
        auth: auth.clone(),
    });
    let stop_watching = CancellationToken::new();
    auth.prime().await;
    auth.start(stop_watching.clone());
    let (check_producer, watcher, stop) = (producer.clone(), readiness.clone(), stop_watching.clone());
    tokio::spawn(async move {
        let check = || async { check_producer.cluster_metadata(metadata_timeout).await.map(|_| ()) };
        watcher.follow("Kafka", check, stop).await;
    });

    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.workers
    };
    let cors =
        sluice_runtime::cors::Cors::new(sluice_runtime::cors::CorsPolicy::new(&config.cors).map_err(RunError::Config)?);
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(cors.clone())
            .app_data(web::PayloadConfig::new(app_state.limits.max_body_bytes))
            .wrap_fn(|request, service| {
                let metrics = request.app_data::<web::Data<AppState>>().map(|s| s.metrics.clone());
                if let Some(m) = &metrics {
                    m.requests_in_flight.inc();
                }
                let response = service.call(request);
                async move {
                    let response = response.await;
                    if let Some(m) = metrics {
                        m.requests_in_flight.dec();
                        let status = match &response {
                            Ok(r) => r.status().as_u16(),
                            Err(e) => e.as_response_error().status_code().as_u16(),
                        };
                        m.requests.get_or_create(&StatusLabel { status }).inc();
                    }
                    response
                }
            })
            .route("/v1/streams/{stream}/events", web::post().to(publish_events))
            .default_service(web::to(sluice_runtime::error::not_found))
            .wrap(actix_web::middleware::from_fn(sluice_runtime::http::security_headers))
    })
    .on_connect(sluice_runtime::http::on_connect)
    .workers(workers)
    .max_connections(config.max_connections)
    // Headers that stop arriving are cut by actix itself (408, connection closed); the body has
    // its own deadline, `--body-timeout`, in the handler.
    .client_request_timeout(HEADERS_TIMEOUT)
    .backlog(4096)
    .h1_allow_half_closed(false)
    .disable_signals()
    .shutdown_timeout(config.shutdown_timeout.as_secs().max(1))
    .listen(listener)?
    .run();
    let handle = server.handle();
    let mut server_task = tokio::spawn(server);
    tracing::info!(listen = %config.listen, admin = %config.admin_listen, brokers = %config.kafka.brokers,
        catalog = %state.catalog, "sluice-ingest serving");

    let served = tokio::select! {
        _ = shutdown.cancelled() => None,
        result = &mut server_task => Some(result),
    };

    // Drain: fail readiness first, let in-flight requests finish (each awaits its acks), then
    // flush whatever the producer still holds.
    readiness.set_draining();
    stop_watching.cancel();
    let result = match served {
        Some(result) => result.map_err(|e| std::io::Error::other(e.to_string())).and_then(|r| r),
        None => {
            tracing::info!("draining: finishing in-flight requests");
            handle.stop(true).await;
            server_task
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
        }
    };
    let unflushed = producer.flush(config.shutdown_timeout).await;
    if unflushed > 0 {
        // Only records whose requests already failed can be left: a 2xx waited for its acks.
        tracing::warn!(unflushed, "producer still held records at the flush deadline");
    }
    admin.stop().await;
    tracing::info!("sluice-ingest stopped");
    result.map_err(RunError::Io)
}

async fn publish_events(
    request: HttpRequest,
    stream: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, IngestError> {
    let stream = stream.into_inner();
    if !sluice_telemetry::enabled() {
        return handle_publish(request, stream, payload, state).await;
    }
    let span = trace::server_span(&request, &stream);
    let result = handle_publish(request, stream, payload, state)
        .instrument(span.clone())
        .await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(err) => actix_web::ResponseError::status_code(err),
    };
    trace::record_status(&span, status.as_u16());
    result
}

async fn handle_publish(
    request: HttpRequest,
    stream: String,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, IngestError> {
    let access = authorize(&request, &stream, &state).await?;
    let topic = state.catalog.topic_for(&stream)?;
    let content_type = request.headers().get("content-type").and_then(|v| v.to_str().ok());
    let format = BodyFormat::from_content_type(content_type)?;

    let max = state.limits.max_body_bytes;
    let declared = request
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(IngestError::BodyTooLarge { max });
    }
    let body = match tokio::time::timeout(state.body_timeout, read_body(&mut payload, declared, max)).await {
        Ok(body) => body?,
        Err(_) => return Ok(body_timeout_response(payload, state.body_timeout)),
    };

    let events = event::parse_body(&body, format, &state.limits)?;
    if let Access::Keys(granted) = &access {
        check_keys(&events, granted, &stream).inspect_err(|e| state.metrics.auth.failed(e))?;
    }
    state.topics.ensure_exists(&stream, &topic).await?;
    let traceparent = trace::traceparent(request.headers().get("traceparent").and_then(|v| v.to_str().ok()));

    let started = Instant::now();
    let outcome = publish::publish(&state.producer, &topic, events, &traceparent).await;
    state.metrics.produce_latency.observe(started.elapsed().as_secs_f64());
    Ok(outcome.into_response(&stream, &state.metrics))
}

/// 408 for a body that stopped arriving, closing the connection. actix treats an unfinished
/// chunked body whose payload the handler dropped as "drain it, then keep the connection", and
/// draining a body that never ends would hold the connection forever; a payload still alive when
/// the response body ends makes it close the connection instead (after lingering
/// `client_disconnect_timeout`, 1 s). So the response body owns the payload.
fn body_timeout_response(payload: web::Payload, timeout: Duration) -> HttpResponse {
    let response = actix_web::ResponseError::error_response(&IngestError::BodyTimeout(timeout));
    let (head, body) = response.into_parts();
    let json = actix_web::body::MessageBody::try_into_bytes(body).unwrap_or_default();
    head.set_body(BodyHoldingPayload {
        json: Some(json),
        _payload: payload,
    })
    .map_into_boxed_body()
}

struct BodyHoldingPayload {
    json: Option<bytes::Bytes>,
    _payload: web::Payload,
}

impl actix_web::body::MessageBody for BodyHoldingPayload {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.json.as_ref().map_or(0, |b| b.len() as u64))
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        std::task::Poll::Ready(self.get_mut().json.take().map(Ok))
    }
}

/// Reads the whole body, refusing it as soon as it passes `max` bytes.
async fn read_body(
    payload: &mut web::Payload,
    declared: Option<usize>,
    max: usize,
) -> Result<bytes::BytesMut, IngestError> {
    let mut body = bytes::BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(max));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => IngestError::BodyTooLarge { max },
            other => IngestError::Body(other.to_string()),
        })?;
        if body.len() + chunk.len() > max {
            return Err(IngestError::BodyTooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Who may publish to `stream`: the `Authorization: Bearer` token's principal (ingest reads no
/// cookie and no query token), its `publish` grant for the stream, or the refusal, counted by
/// reason. Runs before the body is read, so a refused request costs no body bytes.
async fn authorize(request: &HttpRequest, stream: &str, state: &AppState) -> Result<Access, AuthError> {
    let result = async {
        let token = sluice_auth::find_token(request.headers(), None, None)?;
        let principal = state
            .auth
            .authenticate(token.as_ref().map(|t| t.value.as_str()))
            .await?;
        principal
            .publish
            .access(stream)
            .ok_or_else(|| AuthError::Forbidden(format!("this token may not publish to stream {stream:?}")))
    }
    .await;
    result.inspect_err(|e| state.metrics.auth.failed(e))
}

/// A key-limited publisher: every event must carry one of its keys, or nothing is written.
fn check_keys(
    events: &[event::Event],
    granted: &std::collections::BTreeSet<String>,
    stream: &str,
) -> Result<(), AuthError> {
    match events
        .iter()
        .position(|e| e.key.as_ref().is_none_or(|k| !granted.contains(k)))
    {
        Some(index) => Err(AuthError::Forbidden(format!(
            "event {index}: this token may publish to stream {stream:?} only with its granted keys"
        ))),
        None => Ok(()),
    }
}

/// `Retry-After` for 503s: 1–5 s, jittered so refused clients do not return in lockstep.
pub fn retry_after() -> HeaderValue {
    HeaderValue::from(rand::rng().random_range(1..=5u32))
}
