//! The system under test, when the bench brings its own: a `sluice-dev` child process.
//!
//! Without `--url`, a scenario spawns the dev stack (embedded mock Kafka broker + ingest +
//! gateway in one process) on free loopback ports, waits until its admin listener's `/readyz`
//! says 200, and benchmarks that. The child is owned by [`DevStack`] and spawned with
//! `kill_on_drop`, so it dies with the bench on every path: success, error, or Ctrl-C (which
//! drops the scenario future). Its stdout and stderr are drained continuously — a child blocked
//! on a full pipe would stall mid-benchmark — and the last lines are kept to explain a failed
//! start.
//!
//! Readiness is polled against a deadline rather than assumed after a sleep: a stack that
//! starts in 200 ms costs 200 ms, and one that never starts fails with its own last words.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::cli::parse_positive_duration;

/// Flags for spawning the dev stack; scenarios flatten these into their own.
#[derive(Debug, Clone, clap::Args)]
pub struct DevStackArgs {
    /// The `sluice-dev` binary to spawn when no `--url` is given [default: `sluice-dev` in the
    /// same directory as this executable, i.e. the same `target/<profile>/`].
    #[arg(long, value_name = "PATH")]
    pub dev_binary: Option<PathBuf>,

    /// Extra argument for the spawned `sluice-dev` (repeatable), e.g.
    /// `--dev-arg=--gateway-listen=127.0.0.1:0`.
    #[arg(long = "dev-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub dev_args: Vec<String>,

    /// How long the spawned stack may take to answer 200 on `/readyz`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_positive_duration)]
    pub ready_timeout: Duration,
}

/// A running `sluice-dev`, killed when dropped.
#[derive(Debug)]
pub struct DevStack {
    service: Service,
    /// Base URL of the ingest HTTP API, as the stack announced it.
    pub ingest_url: String,
    /// The embedded broker's bootstrap address, if the stack announced it.
    pub kafka_bootstrap: Option<String>,
}

/// How often readiness is polled, and how long one probe may take.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a killed child gets to be reaped before we stop waiting for it.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

impl DevStack {
    /// Spawns `sluice-dev` on free loopback ports and waits until it is ready.
    pub async fn start(args: &DevStackArgs) -> anyhow::Result<Self> {
        let binary = match &args.dev_binary {
            Some(path) => path.clone(),
            None => sibling_binary("sluice-dev")?,
        };
        let [ingest_addr, admin_addr] = free_loopback_ports()?;
        let mut command_args = vec![
            "--ingest-listen".to_owned(),
            ingest_addr.to_string(),
            "--ingest-admin-listen".to_owned(),
            admin_addr.to_string(),
            // Ingest only: a gateway would take the dev stack's fixed port and the machine.
            "--gateways=0".to_owned(),
        ];
        command_args.extend(args.dev_args.iter().cloned());
        let mut service = Service::spawn(&binary, &command_args, &[])?;
        service.wait_ready(admin_addr, args.ready_timeout).await?;

        // The announced URL is authoritative; the address we asked for is the fallback should
        // the line come later than readiness.
        let announced = service.output.announced();
        Ok(Self {
            service,
            ingest_url: announced.ingest_url.unwrap_or_else(|| format!("http://{ingest_addr}")),
            kafka_bootstrap: announced.kafka_bootstrap,
        })
    }

    /// Fails if the child has exited: a benchmark against a dead stack measures nothing.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.service.ensure_running()
    }

    /// Stops the stack; fails if it had already died on its own.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await
    }
}

/// A child process of the bench (a Sluice service, the broker), killed when dropped; its
/// output is drained continuously and its last lines kept to explain a failure.
#[derive(Debug)]
pub struct Service {
    child: Child,
    binary: PathBuf,
    pid: u32,
    output: Arc<OutputLog>,
}

impl Service {
    /// Spawns `binary` with `args` and extra environment variables.
    pub fn spawn(binary: &Path, args: &[String], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        if !binary.is_file() {
            bail!(
                "{} not found: build it (`cargo build --release -p sluice-dev -p sluice-gateway \
                 -p sluice-ingest -p sluice-bench`), or point the matching --*-binary flag at it",
                binary.display()
            );
        }
        let mut child = Command::new(binary)
            .args(args)
            // The services refuse to start without a token key or --allow-anonymous; the bench
            // measures them open unless a caller's `envs` says otherwise.
            .env("SLUICE_ALLOW_ANONYMOUS", "true")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let pid = child.id().context("the child has no process id")?;
        let output = Arc::new(OutputLog::default());
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(drain(stdout, Arc::clone(&output)));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(drain(stderr, Arc::clone(&output)));
        }
        Ok(Self {
            child,
            binary: binary.to_owned(),
            pid,
            output,
        })
    }

    /// The child's process id, for reading its `/proc` entries.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Polls `http://<admin>/readyz` until it answers 200, the child dies, or `timeout` passes.
    pub async fn wait_ready(&mut self, admin: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://{admin}/readyz");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(READY_PROBE_TIMEOUT)
            .build()
            .context("building the readiness probe client")?;
        let deadline = Instant::now() + timeout;
        let mut ticks = tokio::time::interval(READY_POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.ensure_running()?;
            let last = match client.get(&url).send().await {
                Ok(response) if response.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(response) => format!("status {}", response.status()),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready after {timeout:?} ({url}: {last}){}",
                    self.binary.display(),
                    self.output.tail_for_error()
                );
            }
        }
    }

    /// Waits for the `KAFKA_BOOTSTRAP=…` line a `sluice-dev` prints once its broker runs.
    pub async fn wait_kafka_bootstrap(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticks.tick().await;
            if let Some(bootstrap) = self.output.announced().kafka_bootstrap {
                return Ok(bootstrap);
            }
            self.ensure_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "{} printed no KAFKA_BOOTSTRAP= line within {timeout:?}{}",
                    self.binary.display(),
                    self.output.tail_for_error()
                );
            }
        }
    }

    /// Fails if the child has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait().context("checking a child process")? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited unexpectedly ({status}){}",
                self.binary.display(),
                self.output.tail_for_error()
            ),
        }
    }

    /// The child's most recent output lines, formatted to end an error or a report.
    pub fn tail(&self) -> String {
        self.output.tail_for_error()
    }

    /// Kills the child; fails if it had already died on its own.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.ensure_running()?;
        // SIGKILL rather than a graceful stop: the mock broker keeps nothing worth flushing,
        // and the drain window of a graceful stop would only slow the bench down.
        self.child.start_kill().context("killing a child process")?;
        let _ = tokio::time::timeout(REAP_TIMEOUT, self.child.wait()).await;
        Ok(())
    }
}

/// A binary next to this executable: cargo puts every binary of a profile in one directory.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("this executable has no parent directory")?;
    Ok(dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

/// Picks `N` distinct free loopback ports by binding port 0 and letting go.
///
/// All listeners are held until every port is chosen, so the ports differ; between dropping
/// them and the child binding, another process could take one — unlikely, and it would show
/// as a clear bind error from the child.
pub fn free_loopback_ports<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("finding a free loopback port")?;
    let addrs = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<Vec<_>, _>>()
        .context("reading a bound port")?;
    Ok(addrs.try_into().expect("one address per listener"))
}

/// Reads a child's stream line by line until it closes, recording each line.
async fn drain(stream: impl AsyncRead + Unpin, output: Arc<OutputLog>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        output.record(line);
    }
}

/// What the child said: the `KEY=value` announcements and its most recent lines.
#[derive(Debug, Default)]
struct OutputLog {
    state: Mutex<OutputState>,
}

#[derive(Debug, Default)]
struct OutputState {
    announced: Announced,
    tail: VecDeque<String>,
}

/// Addresses the dev stack prints on stdout for other processes to join it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Announced {
    kafka_bootstrap: Option<String>,
    ingest_url: Option<String>,
}

/// Lines of child output kept for error messages.
const TAIL_LINES: usize = 30;

impl OutputLog {
    fn record(&self, line: String) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.announced.absorb(&line);
        if state.tail.len() == TAIL_LINES {
            state.tail.pop_front();
        }
        state.tail.push_back(line);
    }

    fn announced(&self) -> Announced {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.announced.clone()
    }

    /// The last lines of output, formatted to end an error message (empty if there were none).
    fn tail_for_error(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.tail.is_empty() {
            return String::from("; it printed nothing");
        }
        let mut text = String::from("; its last output:");
        for line in &state.tail {
            text.push_str("\n  | ");
            text.push_str(line);
        }
        text
    }
}

impl Announced {
    /// Takes note of a `KAFKA_BOOTSTRAP=…` or `INGEST_URL=…` line; ignores anything else.
    fn absorb(&mut self, line: &str) {
        let Some((key, value)) = line.trim().split_once('=') else {
            return;
        };
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        match key {
            "KAFKA_BOOTSTRAP" => self.kafka_bootstrap = Some(value.to_owned()),
            "INGEST_URL" => self.ingest_url = Some(value.trim_end_matches('/').to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_announced_addresses_out_of_the_output() {
        let mut announced = Announced::default();
        for line in [
            "2025-01-01T00:00:00Z INFO starting mock broker",
            "KAFKA_BOOTSTRAP=127.0.0.1:39091",
            "INGEST_URL=http://127.0.0.1:8090/",
            "GATEWAY_URL=http://127.0.0.1:8080",
            "log line mentioning INGEST_URL=http://elsewhere",
            "INGEST_URL=",
        ] {
            announced.absorb(line);
        }
        assert_eq!(
            announced,
            Announced {
                kafka_bootstrap: Some("127.0.0.1:39091".into()),
                ingest_url: Some("http://127.0.0.1:8090".into()),
            }
        );
    }

    #[test]
    fn keeps_only_the_last_lines_of_output() {
        let log = OutputLog::default();
        assert_eq!(log.tail_for_error(), "; it printed nothing");
        for i in 0..TAIL_LINES + 5 {
            log.record(format!("line {i}"));
        }
        let tail = log.tail_for_error();
        assert!(!tail.contains("| line 4\n"));
        assert!(tail.contains("| line 5\n"));
        assert!(tail.ends_with(&format!("| line {}", TAIL_LINES + 4)));
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b] = free_loopback_ports().unwrap();
        assert_ne!(a.port(), b.port());
        assert!(a.ip().is_loopback() && b.ip().is_loopback());
    }
}
