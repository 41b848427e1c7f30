//! `sluice-consume`: an example Sluice consumer that never loses or repeats an event across
//! disconnects, gateways and restarts.
//!
//! The trick is the SSE event id. Every `id:` a Sluice gateway sends is a cursor: the position
//! after that event in every partition of the stream. The client keeps the last id it saw and
//! sends it back as `Last-Event-ID` when it reconnects, to *any* gateway, and the stream goes on
//! exactly after that event. So this program:
//!
//! - parses the stream with `sluice_sse::Parser`, which follows the WHATWG rules a browser's
//!   `EventSource` follows (id-only checkpoint frames move the cursor without an event);
//! - prints each event as one JSON line `{"id":…,"event":…,"data":…}` on stdout, warnings on
//!   stderr (an `event: gap` says events were lost to Kafka's retention; the
//!   `event: sluice.caught-up` marker, noted there too, says the backlog is done);
//! - after a disconnect waits the server's `retry:` (jittered) and reconnects, to the next
//!   `--gateway` in turn, with `Last-Event-ID`;
//! - with `--cursor-file`, saves the cursor after printing, so a restart resumes where it stopped.
//!
//! ```sh
//! cargo run -p sluice-example-consumer -- --stream demo --from earliest --cursor-file demo.cursor
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use futures::StreamExt as _;
use reqwest::{header, StatusCode};
use sluice_sse::Parser;

/// Read a Sluice stream; print each event as a JSON line; resume by cursor after any disconnect.
#[derive(Debug, clap::Parser)]
#[command(name = "sluice-consume")]
struct Args {
    /// A gateway's base URL. Repeat it (or separate with commas) to move to the next gateway on
    /// every reconnect.
    #[arg(
        long = "gateway",
        env = "GATEWAY_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    gateways: Vec<String>,

    /// The stream to read.
    #[arg(long, value_name = "NAME", env = "STREAM", default_value = "demo")]
    stream: String,

    /// Where to start when there is no cursor yet (a cursor always wins).
    #[arg(long, value_parser = ["earliest", "latest"], default_value = "latest")]
    from: String,

    /// Only events with this key (repeatable).
    #[arg(long)]
    key: Vec<String>,

    /// Only events of this type (repeatable).
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,

    /// Exit after printing this many events.
    #[arg(long, value_name = "N")]
    max_events: Option<u64>,

    /// Keep the cursor in this file: read at start, rewritten as events are printed.
    #[arg(long, value_name = "PATH")]
    cursor_file: Option<PathBuf>,
}

/// One printed event. A struct rather than `json!`, to keep the fields in this order.
#[derive(serde::Serialize)]
struct Line<'a> {
    id: Option<&'a str>,
    event: &'a str,
    data: &'a str,
}

/// How one connection ended.
enum Outcome {
    /// `--max-events` printed.
    Done,
    /// Reconnect, after the server's delay if it named one (`Retry-After` on a 503).
    Reconnect { reason: String, wait: Option<Duration> },
}

/// The client's state across connections: the cursor and the reconnection delay.
struct Consumer {
    args: Args,
    http: reqwest::Client,
    last_id: Option<String>,
    saved_id: Option<String>,
    retry: Duration,
    printed: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match consume(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-consume: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn consume(args: Args) -> anyhow::Result<()> {
    let last_id = match &args.cursor_file {
        Some(path) => load_cursor(path)?,
        None => None,
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        // A quiet stream still gets a heartbeat comment every 15 s: much longer silence means
        // the connection is dead (a pod gone without closing its sockets), so reconnect.
        .read_timeout(Duration::from_secs(45))
        .build()?;
    let mut consumer = Consumer {
        args,
        http,
        saved_id: last_id.clone(),
        last_id,
        // What EventSource assumes until the server sends `retry:`.
        retry: Duration::from_secs(3),
        printed: 0,
    };
    if consumer.args.max_events == Some(0) {
        return Ok(());
    }

    let mut failures_in_a_row = 0u32;
    for attempt in 0.. {
        let gateways = &consumer.args.gateways;
        let gateway = gateways[attempt % gateways.len()].clone();
        let printed_before = consumer.printed;
        let (reason, wait) = match consumer.stream_once(&gateway).await? {
            Outcome::Done => return Ok(()),
            Outcome::Reconnect { reason, wait } => (reason, wait),
        };
        // Back off while nothing gets through (every gateway down), up to 16 × the delay.
        failures_in_a_row = if consumer.printed > printed_before {
            0
        } else {
            (failures_in_a_row + 1).min(4)
        };
        let delay = wait.unwrap_or(consumer.retry * 2u32.pow(failures_in_a_row.saturating_sub(1)));
        // Jitter, so that the clients of a gateway that died do not all come back at once.
        let delay = delay.mul_f64(rand::random_range(0.5..1.5)).min(Duration::from_secs(60));
        eprintln!(
            "sluice-consume: {gateway}: {reason}; reconnecting in {:.2}s",
            delay.as_secs_f64()
        );
        tokio::time::sleep(delay).await;
    }
    unreachable!("the loop above only ends by returning")
}

impl Consumer {
    /// One connection: open the stream, print its events, return when it ends.
    async fn stream_once(&mut self, gateway: &str) -> anyhow::Result<Outcome> {
        let url = self.stream_url(gateway)?;
        let mut request = self.http.get(url.clone()).header(header::ACCEPT, "text/event-stream");
        if let Some(id) = &self.last_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Ok(reconnect(format!("cannot connect: {:#}", anyhow::Error::from(e)))),
        };
        let status = response.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Too many connections, or draining: the gateway says when to come back.
            let wait = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs);
            let body = response.text().await.unwrap_or_default();
            return Ok(Outcome::Reconnect {
                reason: format!("{status} {body}"),
                wait,
            });
        }
        if !status.is_success() {
            // 400 (a bad cursor or query) or 404 (no such stream): retrying will not help.
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("{url}: {status} {body}");
        }

        // A fresh parser per connection; the cursor lives on in `self.last_id`.
        let mut parser = Parser::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => return Ok(reconnect(format!("connection lost: {:#}", anyhow::Error::from(e)))),
            };
            for event in parser.feed(&chunk) {
                if event.event_type == "gap" {
                    eprintln!(
                        "sluice-consume: warning: events were lost to Kafka's retention: {}",
                        event.data
                    );
                } else if event.event_type == "sluice.caught-up" {
                    // Everything the stream held when this connection opened has been printed;
                    // what follows is live. Not an event of the stream: not printed.
                    eprintln!("sluice-consume: caught up: what follows is live");
                } else {
                    let line = Line {
                        id: event.id.as_deref(),
                        event: &event.event_type,
                        data: &event.data,
                    };
                    println!("{}", serde_json::to_string(&line)?);
                    self.printed += 1;
                }
                if let Some(id) = event.id {
                    self.last_id = Some(id);
                }
                if Some(self.printed) == self.args.max_events {
                    self.save_cursor()?;
                    return Ok(Outcome::Done);
                }
            }
            // After the events: an id-only checkpoint frame moves the cursor without an event.
            if let Some(id) = parser.last_event_id() {
                self.last_id = Some(id.to_owned());
            }
            if let Some(ms) = parser.retry_ms() {
                self.retry = Duration::from_millis(ms);
            }
            // Saved after printing: a crash in between repeats a few events on restart, never
            // loses one.
            self.save_cursor()?;
        }
        Ok(reconnect("the gateway ended the stream".into()))
    }

    fn stream_url(&self, gateway: &str) -> anyhow::Result<reqwest::Url> {
        let base = format!("{}/v1/streams/{}", gateway.trim_end_matches('/'), self.args.stream);
        let mut url = reqwest::Url::parse(&base).with_context(|| format!("bad gateway URL {gateway:?}"))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("from", &self.args.from);
            for key in &self.args.key {
                query.append_pair("key", key);
            }
            for event_type in &self.args.types {
                query.append_pair("type", event_type);
            }
        }
        Ok(url)
    }

    /// Writes the cursor file if the cursor moved: to a temporary file, then renamed over the
    /// old one, so a crash never leaves half a cursor.
    fn save_cursor(&mut self) -> anyhow::Result<()> {
        let (Some(path), Some(id)) = (&self.args.cursor_file, &self.last_id) else {
            return Ok(());
        };
        if self.saved_id.as_ref() == Some(id) {
            return Ok(());
        }
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, format!("{id}\n")).with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
        self.saved_id = Some(id.clone());
        Ok(())
    }
}

fn reconnect(reason: String) -> Outcome {
    Outcome::Reconnect { reason, wait: None }
}

/// The cursor saved by an earlier run; none when the file does not exist yet.
fn load_cursor(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|id| !id.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
