//! Sluice binaries as real processes, for end-to-end tests.

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

/// A running child process whose stdout lines are collected.
#[derive(Debug)]
pub struct Child {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Child {
    /// Starts binary `name` with `args`; stderr is inherited so its logs show in test output
    /// (level from `SLUICE_TEST_CHILD_LOG`, default `warn`).
    pub fn spawn(name: &str, args: &[String], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut command = tokio::process::Command::new(binary(name));
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // Children log warnings only unless asked, so test output stays readable.
        let log = std::env::var("SLUICE_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into());
        command.env("SLUICE_LOG", log);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Ok(Self {
            child,
            lines,
            name: name.to_owned(),
        })
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it.
    pub async fn wait_for_line(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let what = format!("{} to print a line starting with {prefix:?}", self.name);
        crate::eventually(&what, timeout, || async {
            let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            lines.iter().find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
        })
        .await
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
        let (listen, admin) = (free_local_addr(), free_local_addr());
        let mut args = vec![
            format!("--listen={listen}"),
            format!("--admin-listen={admin}"),
            format!("--kafka-brokers={brokers}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Child::spawn(binary, &args, &[])?;
        let http = reqwest::Client::new();
        crate::eventually(&format!("{binary} to become ready"), timeout, || async {
            let response = http.get(format!("http://{admin}/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await?;
        Ok(Self { child, listen, admin })
    }
}
