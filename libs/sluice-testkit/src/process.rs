//! Sluice binaries as real processes, for end-to-end tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Path of a workspace binary, next to the running test (`target/<profile>/NAME`).
///
/// Cargo builds binaries of the package under test only; `make test` builds all of them first
/// (`cargo build --bins`). A missing binary fails with that hint.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/test-hash → target/<profile>/
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("a target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first (make test does)",
        path.display()
    );
    path
}

/// A process closed its stdout before printing the line a test waited for.
#[derive(Debug, thiserror::Error)]
#[error("{name} exited without printing a line starting with {prefix:?}")]
pub struct ExitedEarly {
    name: String,
    prefix: String,
}

/// A running child process whose stdout lines are collected.
#[derive(Debug)]
pub struct Child {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    /// Set when stdout closed: the process exited (or closed it), so no line will come.
    stdout_closed: Arc<std::sync::atomic::AtomicBool>,
    name: String,
}

impl Child {
    /// Starts binary `name` with `args`; stderr is inherited so its logs show in test output
    /// (level from `SLUICE_TEST_CHILD_LOG`, default `warn`).
    pub fn spawn(name: &str, args: &[String], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start(name, args, env, false)
    }

    /// Like [`Child::spawn`], but stderr (the logs) is collected for [`Child::stderr_lines`]
    /// instead of shown: for tests that scan what a service logged.
    pub fn spawn_capturing_stderr(name: &str, args: &[String], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start(name, args, env, true)
    }

    fn start(name: &str, args: &[String], env: &[(&str, &str)], capture_stderr: bool) -> anyhow::Result<Self> {
        let mut command = tokio::process::Command::new(binary(name));
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true);
        // Children log warnings only unless asked, so test output stays readable.
        let log = std::env::var("SLUICE_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into());
        command.env("SLUICE_LOG", log);
        // The services refuse to start without a token key or --allow-anonymous; tests run
        // them open unless they pass their own SLUICE_ALLOW_ANONYMOUS (or keys) in `env`.
        command.env("SLUICE_ALLOW_ANONYMOUS", "true");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed = stdout_closed.clone();
        let sink = lines.clone();
        tokio::spawn(async move {
            collect_lines(stdout, sink).await;
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect_lines(stderr, stderr_lines.clone()));
        }
        Ok(Self {
            child,
            lines,
            stderr_lines,
            stdout_closed,
            name: name.to_owned(),
        })
    }

    /// The process id while it runs (tests read its `/proc` entries).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every stderr line so far (empty unless started with [`Child::spawn_capturing_stderr`]).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it. Fails at once
    /// when the process closes its stdout without printing one (it exited, e.g. with 64).
    pub async fn wait_for_line(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let what = format!("{} to print a line starting with {prefix:?}", self.name);
        let found = crate::eventually(&what, timeout, || async {
            let closed = self.stdout_closed.load(std::sync::atomic::Ordering::SeqCst);
            let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            match lines.iter().find_map(|l| l.strip_prefix(prefix).map(str::to_owned)) {
                Some(rest) => Some(Some(rest)),
                None => closed.then_some(None),
            }
        })
        .await?;
        found.ok_or_else(|| {
            anyhow::Error::new(ExitedEarly {
                name: self.name.clone(),
                prefix: prefix.to_owned(),
            })
        })
    }

    /// Sends `signal` (e.g. `Signal::SIGTERM`).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("{} has already exited", self.name))?;
        kill(Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("{} did not exit within {timeout:?}", self.name))??;
        Ok(status.code())
    }
}

/// Reads `pipe` line by line into `sink` until it closes. Bytes that are not UTF-8 are kept
/// (lossily), so a scan of the output sees everything the process wrote.
async fn collect_lines(pipe: impl tokio::io::AsyncRead + Unpin, sink: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut line).await {
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_owned();
        sink.lock().unwrap_or_else(|e| e.into_inner()).push(text);
        line.clear();
    }
}

pub use nix::sys::signal::Signal as ProcessSignal;

/// A loopback address with a port that was free a moment ago, for a child process's listener.
/// (Processes cannot hand back a port-0 listener; the race with other binders is accepted.)
pub fn free_local_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("bound address")
}

/// A Sluice service (`sluice-ingest`, `sluice-gateway`) running as a process on free loopback
/// ports, ready.
#[derive(Debug)]
pub struct ServiceProcess {
    pub child: Child,
    pub listen: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
}

impl ServiceProcess {
    /// Starts `binary` against `brokers` with `extra` flags and waits until `/readyz` is 200.
    pub async fn start(binary: &str, brokers: &str, extra: &[&str], timeout: Duration) -> anyhow::Result<Self> {
        Self::start_with_env(binary, brokers, extra, &[], timeout).await
    }

    /// [`ServiceProcess::start`] with extra environment variables (e.g. `OTEL_*`).
    pub async fn start_with_env(
        binary: &str,
        brokers: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let (listen, admin) = (free_local_addr(), free_local_addr());
        let mut args = vec![
            format!("--listen={listen}"),
            format!("--admin-listen={admin}"),
            format!("--kafka-brokers={brokers}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Child::spawn(binary, &args, env)?;
        wait_ready(admin, timeout).await?;
        Ok(Self { child, listen, admin })
    }

    /// The value of the unlabelled series `name` on the admin listener's `/metrics`; `None`
    /// while the service does not answer or does not export it.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> Option<f64> {
        let url = format!("http://{}/metrics", self.admin);
        let text = http.get(url).send().await.ok()?.text().await.ok()?;
        text.lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
    }
}

/// Waits until the admin listener at `admin` answers `/readyz` with 200.
pub async fn wait_ready(admin: std::net::SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    crate::eventually(&format!("{admin} to become ready"), timeout, || async {
        let response = http.get(format!("http://{admin}/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await
}

/// `sluice-dev` (the dev stack) as a process on free loopback ports, every service ready.
#[derive(Debug)]
pub struct DevStack {
    pub child: Child,
    /// The embedded broker's `KAFKA_BOOTSTRAP`.
    pub bootstrap: String,
    /// `http://127.0.0.1:PORT` of ingest.
    pub ingest: String,
    /// `http://127.0.0.1:PORT` of each gateway.
    pub gateways: Vec<String>,
}

impl DevStack {
    /// Starts `sluice-dev --gateways N` with `extra` flags and waits until ingest and every
    /// gateway are ready.
    pub async fn start(gateways: u16, extra: &[&str], timeout: Duration) -> anyhow::Result<Self> {
        // The free ports are only free "a moment ago": another test may take one first, and
        // sluice-dev then exits (64) before printing. Such a start is retried on new ports.
        let mut attempt = 1;
        loop {
            match Self::start_once(gateways, extra, timeout).await {
                Err(err) if attempt < 3 && err.is::<ExitedEarly>() => attempt += 1,
                result => return result,
            }
        }
    }

    async fn start_once(gateways: u16, extra: &[&str], timeout: Duration) -> anyhow::Result<Self> {
        let (ingest, ingest_admin) = (free_local_addr(), free_local_addr());
        // Gateway i listens on the first port + i, so look for ports free in a row.
        let (gateway, gateway_admin) = (free_ports_in_a_row(gateways)?, free_ports_in_a_row(gateways)?);
        let mut args = vec![
            format!("--ingest-listen={ingest}"),
            format!("--ingest-admin-listen={ingest_admin}"),
            format!("--gateway-listen={gateway}"),
            format!("--gateway-admin-listen={gateway_admin}"),
            format!("--gateways={gateways}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Child::spawn("sluice-dev", &args, &[])?;
        let bootstrap = child.wait_for_line("KAFKA_BOOTSTRAP=", timeout).await?;
        let printed = child.wait_for_line("INGEST_URL=", timeout).await?;
        anyhow::ensure!(
            printed == format!("http://{ingest}"),
            "sluice-dev printed INGEST_URL={printed}"
        );
        wait_ready(ingest_admin, timeout).await?;
        let mut urls = Vec::new();
        for i in 0..gateways {
            urls.push(format!("http://{}:{}", gateway.ip(), gateway.port() + i));
            wait_ready(SocketAddr::new(gateway_admin.ip(), gateway_admin.port() + i), timeout).await?;
        }
        Ok(Self {
            child,
            bootstrap,
            ingest: format!("http://{ingest}"),
            gateways: urls,
        })
    }
}

/// The first of `n` loopback ports that were all free a moment ago.
fn free_ports_in_a_row(n: u16) -> anyhow::Result<SocketAddr> {
    for _ in 0..100 {
        let first = free_local_addr();
        let free = |i| {
            first
                .port()
                .checked_add(i)
                .is_some_and(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        };
        if (1..n).all(free) {
            return Ok(first);
        }
    }
    anyhow::bail!("no {n} free loopback ports in a row")
}
