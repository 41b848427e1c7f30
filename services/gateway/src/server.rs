//! The gateway's server: builds the Kafka source, the runtime and the hub, serves SSE and the
//! admin endpoints until the shutdown token fires, then drains: readiness fails, new streams get
//! 503, open streams are closed spread over the drain window with a jittered `retry:`, and the
//! drain awaits every connection's task (then the feeds') instead of polling a counter.

use std::net::TcpListener;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use prometheus_client::registry::Registry;
use sluice_kafka::StreamCatalog;
use sluice_runtime::cors::CorsPolicy;
use sluice_runtime::{AdminServer, CancellationToken, Readiness};

use crate::feed::FeedLimits;
use crate::kafka::client::KafkaSource;
use crate::kafka::RecordSource;
use crate::metrics::GatewayMetrics;
use crate::runtime::Runtime;
use crate::subscriber::Timing;
use crate::{access, demo, hub, GatewayConfig, RunError};

/// The socket of a connection, captured at accept time so a connection whose socket stays
/// unwritable can be shut down.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketFd(pub(crate) std::os::fd::RawFd);

/// Shared by every request handler.
#[derive(Debug)]
pub struct AppState {
    pub(crate) catalog: StreamCatalog,
    pub(crate) hub: hub::Hub,
    pub(crate) timing: Arc<Timing>,
    /// `timing` for the lanes of a several-stream client: no lifetime of their own.
    pub(crate) lane_timing: Arc<Timing>,
    pub(crate) max_connections: usize,
    pub(crate) max_streams: usize,
    pub(crate) max_poll_limit: usize,
    pub(crate) max_poll_wait: Duration,
    pub(crate) active: Arc<AtomicUsize>,
    pub(crate) draining: AtomicBool,
    pub(crate) gate: access::Gatekeeper,
}

impl AppState {
    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        self.hub.runtime()
    }

    pub(crate) fn metrics(&self) -> &GatewayMetrics {
        &self.hub.runtime().metrics
    }
}

/// Counts a connection while it lives.
pub(crate) struct ConnectionSlot {
    pub(crate) active: Arc<AtomicUsize>,
    pub(crate) metrics: GatewayMetrics,
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
    metrics.connections_limit.set(config.max_connections as i64);
    sluice_runtime::process::register(&mut registry);
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
    let kafka = Arc::new(KafkaSource::new(
        config.kafka.clone(),
        config.kafka_timeout,
        config.consumer_lag_interval,
    )?);
    let runtime = Runtime::new(metrics, config.max_catchup_readers);
    let readiness = Readiness::new();
    let admin = AdminServer::start(admin_listener, Arc::new(registry), readiness.clone())?;
    let limits = FeedLimits {
        ring_events: config.ring_events,
        ring_bytes: config.ring_bytes,
    };
    let source: Arc<dyn RecordSource> = kafka.clone();
    let timing = Timing {
        heartbeat: config.heartbeat,
        checkpoint_interval: config.checkpoint_interval,
        retry: config.retry,
        lifetime: (!config.max_connection_lifetime.is_zero()).then_some(config.max_connection_lifetime),
        drain_window: config.drain_window,
        write_timeout: config.write_timeout,
        inbox_events: config.inbox_events,
        max_queued_bytes: config.max_queued_bytes,
    };
    let state = web::Data::new(AppState {
        catalog,
        hub: hub::Hub::new(source.clone(), runtime.clone(), limits),
        lane_timing: Arc::new(Timing {
            lifetime: None,
            ..timing.clone()
        }),
        timing: Arc::new(timing),
        max_connections: config.max_connections,
        max_streams: config.max_streams_per_connection,
        max_poll_limit: config.max_poll_limit,
        max_poll_wait: config.max_poll_wait,
        active: Arc::new(AtomicUsize::new(0)),
        draining: AtomicBool::new(false),
        gate,
    });

    let background = CancellationToken::new();
    authenticator.start(background.clone());
    runtime.spawn_background(kafka.clone().run_live(background.clone()));
    let (check_kafka, watcher) = (source.clone(), readiness.clone());
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
            .route("/v1/streams/{streams}", web::get().to(crate::open::stream_events))
            .route("/v1/streams/{streams}/poll", web::get().to(crate::poll::poll_events));
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
    runtime.drain.cancel();
    runtime.connections.close();
    let result = match served {
        Some(result) => result.map_err(|e| std::io::Error::other(e.to_string())).and_then(|r| r),
        None => {
            let open = state.active.load(Ordering::SeqCst);
            tracing::info!(open, window = ?config.drain_window, "draining: closing open streams over the drain window");
            // Every connection ends within the window (each at a random moment in it); the
            // margin covers its last frames.
            let deadline = config.drain_window + Duration::from_secs(2);
            if tokio::time::timeout(deadline, runtime.connections.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    left = runtime.connections.len(),
                    "drain window over with connections still open"
                );
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
    runtime.background.close();
    if tokio::time::timeout(Duration::from_secs(5), runtime.background.wait())
        .await
        .is_err()
    {
        tracing::warn!("feeds did not stop within 5 s");
    }
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
