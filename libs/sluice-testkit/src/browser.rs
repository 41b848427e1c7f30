//! A real browser for the browser-facing tests: Debian's Chromium, headless, driven by
//! `tests/browser/driver.mjs` (npm's `playwright-core`) over a line protocol on stdin/stdout.
//!
//! The test decides everything (which page, when to kill a gateway, what to assert); the driver
//! only runs commands in the page. Missing prerequisites fail the test with the command that
//! installs them — a browser test never passes without a browser.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

/// How long one driver command may take beyond its own timeout.
const COMMAND_SLACK: Duration = Duration::from_secs(30);

/// The workspace root (the test kit sits at `libs/sluice-testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("libs/sluice-testkit is two levels below the workspace root")
        .to_path_buf()
}

/// One headless Chromium page.
#[derive(Debug)]
pub struct Browser {
    child: tokio::process::Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    /// Starts Chromium (`/usr/bin/chromium`, or `$SLUICE_CHROMIUM`) with one blank page.
    pub async fn launch() -> anyhow::Result<Self> {
        let driver_dir = workspace_root().join("tests/browser");
        let chromium = std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let install = "run `make test-deps` (Debian's chromium, Node.js and npm's playwright-core; \
                       `make test` does it too)";
        if !Path::new(&chromium).exists() {
            bail!("real-browser test: no Chromium at {chromium}: {install}");
        }
        if !driver_dir.join("node_modules/playwright-core").exists() {
            bail!(
                "real-browser test: playwright-core is not installed in {}: {install}",
                driver_dir.display()
            );
        }
        let mut child = tokio::process::Command::new("node")
            .arg(driver_dir.join("driver.mjs"))
            .env("SLUICE_CHROMIUM", &chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("real-browser test: cannot run `node`: {install}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut browser = Browser { child, stdin, stdout };
        let hello = browser
            .read(Duration::from_secs(60))
            .await
            .context("starting Chromium")?;
        if hello["ready"] != true {
            bail!("the browser driver did not start: {hello}");
        }
        Ok(browser)
    }

    /// Loads `url` and waits for its `load` event.
    pub async fn open(&mut self, url: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "open", "url": url}), Duration::ZERO)
            .await
            .map(drop)
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        self.command(json!({"cmd": "eval", "expr": expr}), Duration::ZERO).await
    }

    /// Waits until a JavaScript expression is truthy in the page, and returns its value.
    pub async fn wait_for(&mut self, expr: &str, timeout: Duration) -> anyhow::Result<Value> {
        let command = json!({"cmd": "wait", "expr": expr, "timeout_ms": timeout.as_millis() as u64});
        self.command(command, timeout).await
    }

    /// Clicks the element matching a CSS selector.
    pub async fn click(&mut self, selector: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "click", "selector": selector}), Duration::ZERO)
            .await
            .map(drop)
    }

    /// Types `value` into the input matching a CSS selector, replacing what was there.
    pub async fn fill(&mut self, selector: &str, value: &str) -> anyhow::Result<()> {
        self.command(
            json!({"cmd": "fill", "selector": selector, "value": value}),
            Duration::ZERO,
        )
        .await
        .map(drop)
    }

    /// Saves a full-page PNG at `path` (directories are created).
    pub async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let path = path.to_str().ok_or_else(|| anyhow!("screenshot path is not UTF-8"))?;
        self.command(json!({"cmd": "screenshot", "path": path}), Duration::ZERO)
            .await
            .map(drop)
    }

    /// Uncaught exceptions the page has thrown so far.
    pub async fn page_errors(&mut self) -> anyhow::Result<Vec<String>> {
        let all = self.command(json!({"cmd": "errors"}), Duration::ZERO).await?;
        Ok(all
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|e| e.starts_with("page error"))
            .map(str::to_owned)
            .collect())
    }

    /// Closes the browser.
    pub async fn quit(mut self) -> anyhow::Result<()> {
        self.command(json!({"cmd": "quit"}), Duration::ZERO).await?;
        tokio::time::timeout(COMMAND_SLACK, self.child.wait()).await??;
        Ok(())
    }

    async fn command(&mut self, command: Value, timeout: Duration) -> anyhow::Result<Value> {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .context("the browser driver has exited")?;
        let answer = self.read(timeout + COMMAND_SLACK).await?;
        if answer["ok"] != true {
            bail!(
                "browser: {} failed: {} (last value: {})",
                command["cmd"],
                answer["error"].as_str().unwrap_or("?"),
                answer["value"]
            );
        }
        Ok(answer["value"].clone())
    }

    async fn read(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(timeout, self.stdout.next_line())
            .await
            .map_err(|_| anyhow!("the browser driver did not answer within {timeout:?}"))??
            .ok_or_else(|| anyhow!("the browser driver exited (its stderr is above)"))?;
        serde_json::from_str(&line).with_context(|| format!("the browser driver wrote {line:?}"))
    }
}
