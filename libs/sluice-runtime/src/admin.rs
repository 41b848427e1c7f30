//! The admin listener: `/healthz`, `/readyz` and `/metrics`, on a port of its own so probes and
//! scrapes never queue behind user traffic and the public listener exposes none of them.
//!
//! - `/healthz` is liveness: 200 while the process serves HTTP at all.
//! - `/readyz` is readiness: 200 only while the service's dependencies answer and it is not
//!   draining. Services flip [`Readiness`]; on shutdown it fails first, so load balancers stop
//!   sending new work before anything closes.
//! - `/metrics` is the Prometheus text format of the service's registry.

use std::fmt::Display;
use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::error::error_response;

/// How often [`Readiness::follow`] re-checks a dependency.
pub const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// Whether the service should receive traffic, and if not, why.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    draining: AtomicBool,
    reason: Mutex<String>,
}

impl Readiness {
    /// Not ready until told otherwise.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            reason: Mutex::new("starting".into()),
            ..Self::default()
        })
    }

    /// Marks the dependencies as answering.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Marks the dependencies as failing, with a reason `/readyz` reports.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.into();
        self.ready.store(false, Ordering::SeqCst);
    }

    /// Shutdown has begun: readiness fails from now on, whatever the dependencies say.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Follows a dependency: runs `check` now and every [`READINESS_INTERVAL`] until `stop`,
    /// ready while it succeeds, not ready (with its error) while it fails.
    pub async fn follow<F, Fut, E>(&self, dependency: &str, mut check: F, stop: CancellationToken)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display,
    {
        loop {
            match check().await {
                Ok(()) => self.set_ready(),
                Err(err) => {
                    tracing::warn!(dependency, error = %err, "readiness check failed");
                    self.set_not_ready(format!("{dependency} unreachable: {err}"));
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(READINESS_INTERVAL) => {}
            }
        }
    }

    /// `Ok` when ready, otherwise the reason.
    pub fn check(&self) -> Result<(), String> {
        if self.is_draining() {
            Err("shutting down".into())
        } else if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone())
        }
    }
}

struct AdminState {
    registry: Arc<Registry>,
    readiness: Arc<Readiness>,
}

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    /// Serves the admin endpoints on `listener` until [`AdminServer::stop`].
    pub fn start(listener: TcpListener, registry: Arc<Registry>, readiness: Arc<Readiness>) -> std::io::Result<Self> {
        let state = web::Data::new(AdminState { registry, readiness });
        let server: Server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics))
                .default_service(web::to(crate::error::not_found))
                .wrap(actix_web::middleware::from_fn(crate::http::security_headers))
        })
        .on_connect(crate::http::on_connect)
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        Ok(Self {
            handle,
            task: tokio::spawn(server),
        })
    }

    /// Stops the listener (the last thing a service does on shutdown, so probes answer while it
    /// drains).
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    match state.readiness.check() {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Err(reason) => error_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready", &reason),
    }
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    let mut body = String::with_capacity(16 * 1024);
    if let Err(err) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "metrics", &err.to_string());
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_fails_while_draining_even_when_dependencies_answer() {
        let readiness = Readiness::new();
        assert_eq!(readiness.check(), Err("starting".into()));
        readiness.set_ready();
        assert_eq!(readiness.check(), Ok(()));
        readiness.set_not_ready("Kafka unreachable");
        assert_eq!(readiness.check(), Err("Kafka unreachable".into()));
        readiness.set_ready();
        readiness.set_draining();
        assert_eq!(readiness.check(), Err("shutting down".into()));
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut registry = Registry::with_prefix("sluice_test");
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("things", "Things counted", counter.clone());
        counter.inc();
        let readiness = Readiness::new();
        let server = AdminServer::start(listener, Arc::new(registry), readiness.clone()).unwrap();
        let client = reqwest::Client::new();
        let get = |path: &str| client.get(format!("http://{addr}{path}")).send();

        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        let not_ready = get("/readyz").await.unwrap();
        assert_eq!(not_ready.status(), 503);
        let body: serde_json::Value = not_ready.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_ready");
        readiness.set_ready();
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let metrics = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(metrics.contains("sluice_test_things_total 1"), "{metrics}");
        assert_eq!(get("/nope").await.unwrap().status(), 404);
        server.stop().await;
    }
}
