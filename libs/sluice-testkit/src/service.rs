//! Services started in-process on loopback port 0.

use std::fmt::Display;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A service running in this process, with its public and admin addresses.
#[derive(Debug)]
pub struct RunningService {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl RunningService {
    /// Binds two loopback listeners on port 0 and spawns `run(listener, admin, shutdown)`, the
    /// shape of every Sluice service's entry point.
    pub fn start<F, Fut, E>(run: F) -> Self
    where
        F: FnOnce(TcpListener, TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let admin = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let admin_addr = admin.local_addr().expect("bound address");
        let shutdown = CancellationToken::new();
        let future = run(listener, admin, shutdown.clone());
        let task = tokio::spawn(async move { future.await.map_err(|e| e.to_string()) });
        Self {
            addr,
            admin_addr,
            shutdown,
            task,
        }
    }

    /// `http://127.0.0.1:PORT{path}` on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = self.admin_url("/readyz");
        crate::eventually("the service to become ready", timeout, || async {
            let response = client.get(&url).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(self.admin_url("/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// Waits until `/metrics` contains `sample` (e.g. `sluice_gateway_connections_active 2`).
    pub async fn wait_for_metric(&self, sample: &str, timeout: Duration) -> anyhow::Result<()> {
        crate::eventually(&format!("metric sample {sample:?}"), timeout, || async {
            self.metrics().await.ok()?.contains(sample).then_some(())
        })
        .await
    }

    /// Fires the shutdown token, as SIGTERM would.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts the service down and waits for it to return, at most `timeout`.
    pub async fn stop(self, timeout: Duration) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match tokio::time::timeout(timeout, self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(err))) => anyhow::bail!("the service failed: {err}"),
            Ok(Err(join)) => anyhow::bail!("the service panicked: {join}"),
            Err(_) => anyhow::bail!("the service did not stop within {timeout:?}"),
        }
    }
}
