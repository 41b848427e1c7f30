//! `sluice-gateway`: Kafka → Server-Sent Events.
//!
//! `GET /v1/streams/{stream}` streams a topic as SSE. Every event id is a cursor of Kafka
//! offsets (see `sluice-sse`), so a client resumes on any pod exactly where it stopped.
//!
//! - [`hub::Hub`] keeps one [`feed::Feed`] per stream per pod: one Kafka consumer, all
//!   partitions, no consumer group; each record framed once into the stream's ring
//!   ([`log::StreamLog`]).
//! - [`subscriber::Subscriber`] is one connection: it starts from the client's cursor (or
//!   `from`/`since`), reads what memory no longer holds from Kafka with a bounded catch-up
//!   reader, then follows the ring; key-filtered subscribers are reached through the key index.
//! - [`access::Gatekeeper`] decides, before a stream opens, who the request is (a JWT from a
//!   header, cookie or `access_token`, or anonymous), whether it may read the stream, and which
//!   keys; a token's expiry becomes the moment its stream ends with `event: sluice.reauth`.
//! - [`run`] serves until the shutdown token fires, then drains: readiness fails, new streams
//!   get 503, open streams are closed spread over the drain window with a jittered `retry:`.

pub mod access;
pub mod body;
pub mod config;
pub mod demo;
pub mod error;
pub mod feed;
pub mod hub;
pub mod kafka;
pub mod log;
pub mod metrics;
pub mod record;
pub mod request;
pub mod subscriber;

use std::net::TcpListener;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::FutureExt as _;
use prometheus_client::registry::Registry;
use sluice_kafka::StreamCatalog;
use sluice_runtime::cors::CorsPolicy;
use sluice_runtime::{AdminServer, CancellationToken, Readiness};
use sluice_sse::Cursor;

pub use config::GatewayConfig;
pub use error::GatewayError;
use feed::FeedLimits;
use metrics::{GatewayMetrics, ReasonLabel};
use request::From;
use subscriber::{Out, Start, Subscriber, Timing};

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot create Kafka clients: {0}")]
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

impl sluice_runtime::service::Service for GatewayConfig {
    type Error = RunError;

    fn validate(&self) -> Result<(), String> {
        GatewayConfig::validate(self).map(|_| ())
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

/// The socket of a connection, captured at accept time so a connection whose socket stays
/// unwritable can be shut down.
#[derive(Debug, Clone, Copy)]
struct SocketFd(std::os::fd::RawFd);

/// Shared by every request handler.
#[derive(Debug)]
pub struct AppState {
    catalog: StreamCatalog,
    hub: hub::Hub,
    timing: Arc<Timing>,
    max_connections: usize,
    active: Arc<AtomicUsize>,
    draining: AtomicBool,
    drain: CancellationToken,
    metrics: GatewayMetrics,
    gate: access::Gatekeeper,
}

/// Counts a connection while it lives.
struct ConnectionSlot {
    active: Arc<AtomicUsize>,
    metrics: GatewayMetrics,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
        self.metrics.connections_active.dec();
    }
}

/// Serves SSE on `listener` and the admin endpoints on `admin_listener` until `shutdown` is
/// cancelled, then drains and returns.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let catalog = config.validate().map_err(RunError::Config)?;
    let mut registry = Registry::default();
    let metrics = GatewayMetrics::register(&mut registry);
    let auth_metrics = sluice_auth::AuthMetrics::register(registry.sub_registry_with_prefix("sluice_gateway"));
    let authenticator = Arc::new(sluice_auth::Authenticator::new(&config.auth).map_err(RunError::Config)?);
    authenticator.prime().await;
    let cors_policy = CorsPolicy::new(&config.cors).map_err(RunError::Config)?;
    let gate = access::Gatekeeper::new(
        authenticator.clone(),
        auth_metrics,
        config.auth_cookie.clone(),
        access::public_streams(&config.public_streams).map_err(RunError::Config)?,
        cors_policy.clone(),
        config.max_connections_per_subject,
    );
    // Kafka clients before the admin listener: a configuration librdkafka refuses ends the
    // start before anything listens or logs.
    let kafka = Arc::new(kafka::KafkaContext::new(
        config.kafka.clone(),
        tokio::runtime::Handle::current(),
        metrics.clone(),
        config.max_catchup_readers,
        config.kafka_timeout,
        config.consumer_lag_interval,
    )?);
    let readiness = Readiness::new();
    let admin = AdminServer::start(admin_listener, Arc::new(registry), readiness.clone())?;
    let limits = FeedLimits {
        ring_events: config.ring_events,
        ring_bytes: config.ring_bytes,
    };
    let drain = CancellationToken::new();
    let state = web::Data::new(AppState {
        catalog,
        hub: hub::Hub::new(kafka.clone(), limits),
        timing: Arc::new(Timing {
            heartbeat: config.heartbeat,
            checkpoint_interval: config.checkpoint_interval,
            retry: config.retry,
            lifetime: (!config.max_connection_lifetime.is_zero()).then_some(config.max_connection_lifetime),
            drain_window: config.drain_window,
            write_timeout: config.write_timeout,
            inbox_events: config.inbox_events,
            max_queued_bytes: config.max_queued_bytes,
        }),
        max_connections: config.max_connections,
        active: Arc::new(AtomicUsize::new(0)),
        draining: AtomicBool::new(false),
        drain: drain.clone(),
        metrics,
        gate,
    });

    let background = CancellationToken::new();
    authenticator.start(background.clone());
    let (check_kafka, watcher) = (kafka.clone(), readiness.clone());
    let stop_watching = background.clone();
    tokio::spawn(async move {
        let check = || async { check_kafka.check().await };
        watcher.follow("Kafka", check, stop_watching).await;
    });
    tokio::spawn(reap_idle_feeds(
        state.clone(),
        config.stream_idle_timeout,
        background.clone(),
    ));

    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.workers
    };
    let cors = sluice_runtime::cors::Cors::new(cors_policy);
    let demo_page = config.demo_page.then(|| web::Data::new(config.demo.render()));
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        let app = App::new()
            .app_data(app_state.clone())
            .wrap(cors.clone())
            .route("/v1/streams/{stream}", web::get().to(stream_events));
        let app = match &demo_page {
            Some(page) => app.app_data(page.clone()).route("/", web::get().to(demo::page)),
            None => app,
        };
        app.default_service(web::to(sluice_runtime::error::not_found))
            .wrap(actix_web::middleware::from_fn(sluice_runtime::http::security_headers))
    })
    .on_connect(|connection, extensions| {
        sluice_runtime::http::on_connect(connection, extensions);
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            extensions.insert(SocketFd(tcp.as_raw_fd()));
        }
    })
    .workers(workers)
    // The gateway answers 503 itself at --max-connections; actix's own cap sits above it.
    .max_connections(config.max_connections + 1024)
    .backlog(4096)
    .h1_allow_half_closed(false)
    .disable_signals()
    .shutdown_timeout((config.drain_window + Duration::from_secs(5)).as_secs())
    .listen(listener)?
    .run();
    let handle = server.handle();
    let mut server_task = tokio::spawn(server);
    tracing::info!(listen = %config.listen, admin = %config.admin_listen, brokers = %config.kafka.brokers,
        catalog = %state.catalog, "sluice-gateway serving");

    let served = tokio::select! {
        _ = shutdown.cancelled() => None,
        result = &mut server_task => Some(result),
    };

    readiness.set_draining();
    state.draining.store(true, Ordering::SeqCst);
    drain.cancel();
    let result = match served {
        Some(result) => result.map_err(|e| std::io::Error::other(e.to_string())).and_then(|r| r),
        None => {
            let open = state.active.load(Ordering::SeqCst);
            tracing::info!(open, window = ?config.drain_window, "draining: closing open streams over the drain window");
            let deadline = tokio::time::Instant::now() + config.drain_window + Duration::from_secs(2);
            while state.active.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            handle.stop(true).await;
            server_task
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
        }
    };
    background.cancel();
    state.hub.stop_all();
    admin.stop().await;
    tracing::info!("sluice-gateway stopped");
    result.map_err(RunError::Io)
}

async fn reap_idle_feeds(state: web::Data<AppState>, idle: Duration, stop: CancellationToken) {
    let every = (idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => state.hub.reap_idle(idle),
        }
    }
}

async fn stream_events(
    request: HttpRequest,
    stream: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let result = open_stream(&request, &stream, &state).await;
    if let Err(err) = &result {
        state
            .metrics
            .connections_rejected
            .get_or_create(&ReasonLabel {
                reason: err.metric_reason(),
            })
            .inc();
    }
    result
}

async fn open_stream(
    request: &HttpRequest,
    stream: &str,
    state: &web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(GatewayError::Draining);
    }
    let mut query = request::parse_query(request.query_string())?;
    // Who is asking comes first: an unauthenticated client learns nothing, not even which
    // streams exist.
    let admission = state
        .gate
        .admit(request, stream, query.access_token.take().as_deref(), &mut query.filter)
        .await?;
    let topic = state.catalog.topic_for(stream)?;
    let cursor_text = request::cursor_text(request.headers().get("last-event-id"), query.last_event_id.as_deref())?;
    let cursor = match cursor_text {
        Some(text) => {
            let cursor = Cursor::decode(text).map_err(GatewayError::InvalidCursor)?;
            cursor
                .check_stream(sluice_sse::stream_fingerprint(&topic))
                .map_err(GatewayError::InvalidCursor)?;
            Some(cursor)
        }
        None => None,
    };

    let slot = acquire_slot(state)?;
    let mut lease = state.hub.subscribe(stream, &topic).await?;
    if cursor.as_ref().is_some_and(|c| c.offsets.len() > lease.feed.partitions) {
        // A cursor wider than this pod's feed: the topic may have gained partitions since the
        // feed started (another pod minted the cursor on a newer view). Check, and restart.
        if state.hub.kafka().partition_count(&topic).await? > lease.feed.partitions {
            lease.feed.stop.cancel();
            drop(lease);
            lease = state.hub.subscribe(stream, &topic).await?;
        }
    }
    let start = resolve_start(state.hub.kafka(), &lease.feed, cursor, query.from).await?;
    let socket = request.conn_data::<SocketFd>().map(|s| s.0);
    let (out, body) = Out::channel(state.timing.max_queued_bytes, socket, state.timing.write_timeout);
    let subscriber = Subscriber::new(
        lease,
        state.hub.kafka().clone(),
        query.filter,
        start,
        state.timing.clone(),
        state.drain.clone(),
        out,
    )
    .with_reauth(admission.expires_at.map(access::reauth_in));
    state.metrics.connections_opened.inc();
    let subject_slot = admission.subject_slot;
    // `map`, not an async block around `run`: a block would hold the subscriber twice (its
    // capture and the future it moved into), in every connection's task.
    tokio::spawn(subscriber.run().map(move |()| drop((slot, subject_slot))));
    let mut response = HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body);
    if request.version() < actix_web::http::Version::HTTP_11 {
        // HTTP/1.0 has no chunked encoding: the body runs until the connection closes.
        response.head_mut().no_chunking(true);
        response
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
    Ok(response)
}

fn acquire_slot(state: &AppState) -> Result<ConnectionSlot, GatewayError> {
    let taken = state.active.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
        (n < state.max_connections).then_some(n + 1)
    });
    if taken.is_err() {
        return Err(GatewayError::TooManyConnections);
    }
    state.metrics.connections_active.inc();
    Ok(ConnectionSlot {
        active: state.active.clone(),
        metrics: state.metrics.clone(),
    })
}

/// Turns the client's cursor, or `from`/`since`, into a position for every partition.
async fn resolve_start(
    kafka: &kafka::KafkaContext,
    feed: &feed::Feed,
    cursor: Option<Cursor>,
    from: From,
) -> Result<Start, GatewayError> {
    let partitions = feed.partitions;
    if let Some(mut cursor) = cursor {
        if cursor.offsets.len() > partitions {
            return Err(GatewayError::InvalidQuery(format!(
                "the cursor names {} partitions but the stream has {partitions}",
                cursor.offsets.len()
            )));
        }
        if cursor.offsets.len() < partitions {
            // Partitions added since the cursor was minted start at their earliest offset.
            let added = cursor.offsets.len()..partitions;
            let watermarks = kafka.watermarks(&feed.topic, added.clone()).await?;
            for (p, w) in added.zip(&watermarks) {
                cursor.set_next(p, w.low);
            }
        }
        return Ok(Start {
            position: cursor,
            resumed: true,
        });
    }
    let position = match from {
        From::Latest => feed.latest(),
        From::Earliest => {
            let watermarks = kafka.watermarks(&feed.topic, 0..partitions).await?;
            Cursor::new(feed.fingerprint, watermarks.iter().map(|w| w.low).collect())
        }
        From::Since(ms) => Cursor::new(
            feed.fingerprint,
            kafka.offsets_for_time(&feed.topic, partitions, ms).await?,
        ),
    };
    Ok(Start {
        position,
        resumed: false,
    })
}
