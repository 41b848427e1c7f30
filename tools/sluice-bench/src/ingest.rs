//! The `ingest` scenario: how many events per second the ingest HTTP API accepts, and how
//! long a producer waits for each acknowledgement.
//!
//! Load is **closed-loop**: `--concurrency` tasks share one keep-alive connection pool, and
//! each sends its next `POST /v1/streams/{stream}/events` as soon as the previous one is
//! answered. That is how real producers behave (each waits for its ack, since a 2xx means Kafka
//! has the events), and it finds the throughput ceiling without queueing unboundedly. The
//! flip side, to keep in mind reading the numbers: when the server slows down, the load slows
//! with it, so latency percentiles describe the requests that were sent, not those a
//! fixed-rate producer would have wanted to send ("coordinated omission").
//!
//! One phase runs per `--batch-sizes` entry: batch size 1 sends a single JSON object per
//! request (the per-request overhead dominates), larger sizes send a JSON array (the
//! per-event cost dominates). Each phase warms up (connections, topic creation, JIT-like
//! caches in the broker) before a measurement window; only requests that *complete* inside
//! the window count, so the rates are completions per second of window.
//!
//! Every 2xx reply is checked to carry one acknowledgement (partition, offset) per event sent;
//! a short or malformed reply counts as an error, not a success: a fast ingest that drops
//! acknowledgements must not look good here.
//!
//! Request bodies are assembled from events serialised once at start-up, so the load
//! generator spends its CPU on HTTP rather than on JSON — it usually shares the machine with
//! the server it measures.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::{BufMut as _, Bytes, BytesMut};
use hdrhistogram::Histogram;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::{parse_duration, parse_positive_duration};
use crate::machine::Machine;
use crate::progress::{spawn_reporter, Counters, PhaseClock};
use crate::report::{
    format_count, format_duration, format_rate, latency_histogram, write_json, LatencySummary, Table, LATENCY_HEADERS,
};
use crate::stack::{DevStack, DevStackArgs};

/// Flags of `sluice-bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Base URL of an already-running ingest service, e.g. `http://127.0.0.1:8090` (plain
    /// HTTP). Without it, the bench spawns the dev stack and benchmarks that.
    #[arg(long, value_name = "URL", value_parser = parse_base_url, conflicts_with_all = ["dev_binary", "dev_args"])]
    pub url: Option<Url>,

    #[command(flatten)]
    pub dev: DevStackArgs,

    /// Stream to write to. The dev stack's mock broker creates the topic on first use; a real
    /// deployment must allow it (`--streams`).
    #[arg(long, value_name = "NAME", default_value = "bench", value_parser = parse_stream_name)]
    pub stream: String,

    /// Events per request, one phase per entry, run in order. 1 sends a single JSON object;
    /// larger sizes send a JSON array.
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "1,100",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub batch_sizes: Vec<u32>,

    /// Measurement window of each phase, e.g. `10s`, `1m`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub duration: Duration,

    /// Unmeasured load before each phase's window (connection set-up, topic creation).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Concurrent closed-loop clients: each has at most one request in flight.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Size in bytes of each event's JSON `data` (a padded object); the event adds its key
    /// and framing on top.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub payload_bytes: usize,

    /// Distinct event keys (`k0`, `k1`, …), used round-robin so partitions load evenly.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub keys: u32,

    /// Give up on a request after this long; it counts as a `timeout` error.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub request_timeout: Duration,

    /// Also write the results (machine, target, settings, phases) as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<std::path::PathBuf>,
}

/// Runs every phase and prints the report; fails if a phase had no successful request.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let machine = Machine::detect();
    let load_average_start = crate::procfs::load_average();

    let (target, mut stack) = match &args.url {
        Some(url) => (Target::external(url), None),
        None => {
            eprintln!("starting the dev stack…");
            let stack = DevStack::start(&args.dev).await?;
            eprintln!("dev stack ready: ingest at {}", stack.ingest_url);
            (Target::spawned(&stack), Some(stack))
        }
    };

    let client = Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency as usize)
        .timeout(args.request_timeout)
        .build()
        .context("building the HTTP client")?;
    let events_url = format!("{}/v1/streams/{}/events", target.url, args.stream);
    let pool = Arc::new(EventPool::new(args.keys as usize, args.payload_bytes));

    // One request before any load: a wrong URL or an unknown stream fails here with the
    // server's own words, instead of as a wall of identical errors; and the topic exists
    // before the first phase starts.
    preflight(&client, &events_url, &pool)
        .await
        .with_context(|| format!("preflight POST {events_url}"))?;
    print!("{}", header(&machine, &target, &args));

    let mut phases = Vec::new();
    let mut stack_failure = None;
    for &batch in &args.batch_sizes {
        if let Some(stack) = &mut stack {
            if let Err(err) = stack.ensure_running() {
                stack_failure = Some(err);
                break;
            }
        }
        let plan = PhasePlan {
            batch: batch as usize,
            concurrency: args.concurrency as usize,
            warmup: args.warmup,
            duration: args.duration,
        };
        phases.push(run_phase(&plan, &client, &events_url, &pool).await?);
    }

    print!("\n{}", results_table(&phases));
    print!("{}", error_details(&phases));
    if let Some(path) = &args.json {
        let report = JsonReport {
            tool: "sluice-bench",
            version: env!("CARGO_PKG_VERSION"),
            scenario: "ingest",
            command: crate::rig::command_line(),
            machine: &machine,
            load_average_start,
            load_average_end: crate::procfs::load_average(),
            target: &target,
            settings: Settings::from(&args),
            phases: &phases,
        };
        write_json(path, &report)?;
    }

    if let Some(err) = stack_failure {
        return Err(err);
    }
    if let Some(stack) = stack {
        stack.stop().await?;
    }
    let empty: Vec<&str> = phases
        .iter()
        .filter(|phase| phase.requests_ok == 0)
        .map(|phase| phase.name.as_str())
        .collect();
    if !empty.is_empty() {
        bail!("not one successful request in phase {}", empty.join(", "));
    }
    Ok(())
}

/// Where the load goes, and whether it shares this machine.
#[derive(Debug, Serialize)]
struct Target {
    /// Base URL of the ingest API, without a trailing slash.
    url: String,
    /// Whether the bench spawned the dev stack itself.
    spawned_dev_stack: bool,
    /// The dev stack's broker, when known.
    kafka_bootstrap: Option<String>,
    /// Whether the server certainly runs on this machine (spawned, or a loopback URL), so the
    /// two compete for the same CPUs.
    shares_machine: bool,
}

impl Target {
    fn external(url: &Url) -> Self {
        // `host_str` keeps IPv6 literals bracketed, as in the URL.
        let host = url.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let shares_machine =
            host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        Self {
            url: url.as_str().trim_end_matches('/').to_owned(),
            spawned_dev_stack: false,
            kafka_bootstrap: None,
            shares_machine,
        }
    }

    fn spawned(stack: &DevStack) -> Self {
        Self {
            url: stack.ingest_url.clone(),
            spawned_dev_stack: true,
            kafka_bootstrap: stack.kafka_bootstrap.clone(),
            shares_machine: true,
        }
    }
}

/// The report's opening lines: what was measured, on what, and how.
fn header(machine: &Machine, target: &Target, args: &IngestArgs) -> String {
    let mut text = format!(
        "sluice-bench {} — ingest\nmachine   {machine}\n",
        env!("CARGO_PKG_VERSION")
    );
    let origin = if target.spawned_dev_stack {
        match &target.kafka_bootstrap {
            Some(bootstrap) => format!("dev stack spawned by the bench, mock Kafka at {bootstrap}"),
            None => "dev stack spawned by the bench".to_owned(),
        }
    } else {
        "already running".to_owned()
    };
    text.push_str(&format!("target    {} ({origin})\n", target.url));
    if target.shares_machine {
        text.push_str(&format!(
            "          load generator and server share this machine and its {} logical CPUs: \
             the figures measure both together\n",
            machine.logical_cpus
        ));
    } else {
        text.push_str("          the machine above runs the load generator; the server may run elsewhere\n");
    }
    text.push_str(&format!(
        "workload  {} closed-loop clients, {}-byte payloads over {} keys, stream `{}`, \
         {} warmup + {} per phase\n",
        args.concurrency,
        args.payload_bytes,
        args.keys,
        args.stream,
        format_duration(args.warmup),
        format_duration(args.duration),
    ));
    text
}

/// One phase's parameters.
#[derive(Debug, Clone)]
struct PhasePlan {
    batch: usize,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
}

/// What every load task of a phase shares.
#[derive(Debug)]
struct PhaseContext {
    client: Client,
    url: String,
    pool: Arc<EventPool>,
    batch: usize,
    measure_start: Instant,
    end: Instant,
    counters: Arc<Counters>,
}

async fn run_phase(plan: &PhasePlan, client: &Client, url: &str, pool: &Arc<EventPool>) -> anyhow::Result<PhaseResult> {
    let name = format!("batch={}", plan.batch);
    eprintln!(
        "phase {name}: {} clients, {} warmup + {}",
        plan.concurrency,
        format_duration(plan.warmup),
        format_duration(plan.duration),
    );
    let start = Instant::now();
    let context = Arc::new(PhaseContext {
        client: client.clone(),
        url: url.to_owned(),
        pool: Arc::clone(pool),
        batch: plan.batch,
        measure_start: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
        counters: Arc::new(Counters::default()),
    });
    let reporter = spawn_reporter(
        PhaseClock {
            label: name.clone(),
            item_name: "events",
            start,
            measure_start: context.measure_start,
            end: context.end,
        },
        Arc::clone(&context.counters),
    );

    let mut tasks = JoinSet::new();
    for client_index in 0..plan.concurrency {
        // Start the clients at evenly spaced keys so concurrent requests hit different keys.
        let first_key = client_index * pool.len() / plan.concurrency;
        tasks.spawn(load_client(Arc::clone(&context), first_key));
    }
    let mut tally = Tally::new();
    while let Some(joined) = tasks.join_next().await {
        tally.merge(joined.context("a load task failed")?)?;
    }
    reporter.abort();

    Ok(PhaseResult::new(name, plan, tally))
}

/// One closed-loop client: send, wait for the answer, record, repeat until the phase ends.
async fn load_client(context: Arc<PhaseContext>, first_key: usize) -> Tally {
    let mut tally = Tally::new();
    let mut next_key = first_key;
    loop {
        let sent = Instant::now();
        if sent >= context.end {
            return tally;
        }
        let body = context.pool.body(context.batch, &mut next_key);
        let outcome = ingest_once(&context.client, &context.url, body, context.batch).await;
        let done = Instant::now();
        match &outcome {
            Ok(()) => context.counters.success(context.batch as u64),
            Err(_) => context.counters.error(),
        }
        // Count by completion time: requests completing after the window are discarded,
        // so every phase measures exactly `duration` of completions.
        if done >= context.measure_start && done < context.end {
            tally.record(outcome, context.batch, done - sent);
        }
    }
}

/// Sends one request and checks its reply.
async fn ingest_once(client: &Client, url: &str, body: Bytes, events: usize) -> Result<(), Failure> {
    let response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(Failure::transport)?;
    let status = response.status();
    let reply = response.bytes().await.map_err(Failure::transport)?;
    if !status.is_success() {
        return Err(Failure::status(status, &reply));
    }
    check_reply(&reply, events)
}

/// Makes one single-event request and requires it to succeed.
async fn preflight(client: &Client, url: &str, pool: &EventPool) -> anyhow::Result<()> {
    match ingest_once(client, url, pool.body(1, &mut 0), 1).await {
        Ok(()) => Ok(()),
        Err(failure) => bail!("{}: {}", failure.kind, failure.detail),
    }
}

/// The success body: `{"events":[{"partition":0,"offset":12,"timestamp":…}, …]}`.
#[derive(Debug, Deserialize)]
struct AckReply {
    events: Vec<Ack>,
}

/// One event's acknowledgement; `timestamp` is not checked (its type is the server's choice).
#[derive(Debug, Deserialize)]
struct Ack {
    partition: i32,
    offset: i64,
}

/// Checks a 2xx reply acknowledges exactly `events` events, each at a real position.
fn check_reply(body: &[u8], events: usize) -> Result<(), Failure> {
    let reply: AckReply = serde_json::from_slice(body).map_err(|err| Failure {
        kind: ErrorKind::BadReply,
        detail: format!("{err}: {}", excerpt(body)),
    })?;
    if reply.events.len() != events {
        return Err(Failure {
            kind: ErrorKind::CountMismatch,
            detail: format!("sent {events} events, {} acknowledged", reply.events.len()),
        });
    }
    if let Some(ack) = reply.events.iter().find(|ack| ack.partition < 0 || ack.offset < 0) {
        return Err(Failure {
            kind: ErrorKind::BadReply,
            detail: format!("acknowledgement at partition {} offset {}", ack.partition, ack.offset),
        });
    }
    Ok(())
}

/// Why a request did not count as a success.
#[derive(Debug)]
struct Failure {
    kind: ErrorKind,
    /// The first words of the server's error, or the client-side error, for the report.
    detail: String,
}

impl Failure {
    fn transport(err: reqwest::Error) -> Self {
        let kind = if err.is_timeout() {
            ErrorKind::Timeout
        } else if err.is_connect() {
            ErrorKind::Connect
        } else {
            ErrorKind::Transport
        };
        // `{:#}`-like chain: reqwest's own message is terse ("error sending request").
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        Self { kind, detail }
    }

    fn status(status: StatusCode, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct ErrorReply {
            error: ErrorBody,
        }
        #[derive(Deserialize)]
        struct ErrorBody {
            code: String,
            message: String,
        }
        let detail = match serde_json::from_slice::<ErrorReply>(body) {
            Ok(ErrorReply { error }) => format!("{}: {}", error.code, error.message),
            Err(_) => excerpt(body),
        };
        Self {
            kind: ErrorKind::Status(status.as_u16()),
            detail,
        }
    }
}

/// The start of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    const LIMIT: usize = 200;
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(empty body)".to_owned(),
        None => text.into_owned(),
    }
}

/// Kinds of failure, as the report groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ErrorKind {
    /// A non-2xx status.
    Status(u16),
    /// No complete answer within `--request-timeout`.
    Timeout,
    /// The connection could not be established.
    Connect,
    /// Any other client-side failure (reset connection, malformed HTTP).
    Transport,
    /// A 2xx whose body is not the documented JSON.
    BadReply,
    /// A 2xx acknowledging a different number of events than were sent.
    CountMismatch,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => write!(f, "http {code}"),
            Self::Timeout => f.write_str("timeout"),
            Self::Connect => f.write_str("connect"),
            Self::Transport => f.write_str("transport"),
            Self::BadReply => f.write_str("bad reply"),
            Self::CountMismatch => f.write_str("count mismatch"),
        }
    }
}

/// One load task's measurements inside the window; merged across tasks at the end.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    requests_ok: u64,
    events_ok: u64,
    errors: BTreeMap<ErrorKind, ErrorCount>,
}

/// How often an error kind occurred, with the first example seen.
#[derive(Debug, Clone, Serialize)]
struct ErrorCount {
    count: u64,
    example: String,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: latency_histogram(),
            requests_ok: 0,
            events_ok: 0,
            errors: BTreeMap::new(),
        }
    }

    /// Records one completed request. Latency is recorded for successes only: a refused
    /// connection answers in microseconds and would flatter the percentiles.
    fn record(&mut self, outcome: Result<(), Failure>, events: usize, latency: Duration) {
        match outcome {
            Ok(()) => {
                self.requests_ok += 1;
                self.events_ok += events as u64;
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency.saturating_record(micros.max(1));
            }
            Err(failure) => {
                self.errors
                    .entry(failure.kind)
                    .and_modify(|count| count.count += 1)
                    .or_insert(ErrorCount {
                        count: 1,
                        example: failure.detail,
                    });
            }
        }
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency.add(&other.latency).context("merging latency histograms")?;
        self.requests_ok += other.requests_ok;
        self.events_ok += other.events_ok;
        for (kind, theirs) in other.errors {
            self.errors
                .entry(kind)
                .and_modify(|ours| ours.count += theirs.count)
                .or_insert(theirs);
        }
        Ok(())
    }
}

/// One phase's results, as printed and as written to JSON.
#[derive(Debug, Serialize)]
struct PhaseResult {
    /// `batch=<n>`.
    name: String,
    batch_size: usize,
    concurrency: usize,
    warmup_secs: f64,
    duration_secs: f64,
    requests_ok: u64,
    events_ok: u64,
    requests_per_sec: f64,
    events_per_sec: f64,
    errors_total: u64,
    /// Keyed by kind: `http 503`, `timeout`, `connect`, `transport`, `bad reply`,
    /// `count mismatch`.
    errors: BTreeMap<String, ErrorCount>,
    /// Latency of successful requests, from send to complete reply.
    latency: LatencySummary,
}

impl PhaseResult {
    fn new(name: String, plan: &PhasePlan, tally: Tally) -> Self {
        let seconds = plan.duration.as_secs_f64();
        Self {
            name,
            batch_size: plan.batch,
            concurrency: plan.concurrency,
            warmup_secs: plan.warmup.as_secs_f64(),
            duration_secs: seconds,
            requests_ok: tally.requests_ok,
            events_ok: tally.events_ok,
            requests_per_sec: tally.requests_ok as f64 / seconds,
            events_per_sec: tally.events_ok as f64 / seconds,
            errors_total: tally.errors.values().map(|error| error.count).sum(),
            errors: tally
                .errors
                .into_iter()
                .map(|(kind, count)| (kind.to_string(), count))
                .collect(),
            latency: LatencySummary::from_histogram(&tally.latency),
        }
    }
}

/// One row per phase.
fn results_table(phases: &[PhaseResult]) -> String {
    let mut table = Table::new(
        ["phase", "events/s", "req/s", "ok req", "errors"]
            .into_iter()
            .chain(LATENCY_HEADERS),
    );
    for phase in phases {
        table.row(
            [
                phase.name.clone(),
                format_rate(phase.events_per_sec),
                format_rate(phase.requests_per_sec),
                format_count(phase.requests_ok),
                format_count(phase.errors_total),
            ]
            .into_iter()
            .chain(phase.latency.cells()),
        );
    }
    table.render()
}

/// A line per phase that had errors: counts by kind, each with its first example.
fn error_details(phases: &[PhaseResult]) -> String {
    let mut text = String::new();
    for phase in phases.iter().filter(|phase| !phase.errors.is_empty()) {
        text.push_str(&format!("\nerrors in {}:\n", phase.name));
        for (kind, error) in &phase.errors {
            text.push_str(&format!(
                "  {:>8} × {kind}  (first: {})\n",
                format_count(error.count),
                error.example
            ));
        }
    }
    text
}

/// The settings a run used, for the JSON report.
#[derive(Debug, Serialize)]
struct Settings {
    stream: String,
    concurrency: u32,
    payload_bytes: usize,
    keys: u32,
    batch_sizes: Vec<u32>,
    warmup_secs: f64,
    duration_secs: f64,
    request_timeout_secs: f64,
}

impl From<&IngestArgs> for Settings {
    fn from(args: &IngestArgs) -> Self {
        Self {
            stream: args.stream.clone(),
            concurrency: args.concurrency,
            payload_bytes: args.payload_bytes,
            keys: args.keys,
            batch_sizes: args.batch_sizes.clone(),
            warmup_secs: args.warmup.as_secs_f64(),
            duration_secs: args.duration.as_secs_f64(),
            request_timeout_secs: args.request_timeout.as_secs_f64(),
        }
    }
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    tool: &'static str,
    version: &'static str,
    scenario: &'static str,
    /// The command line of this run, as typed.
    command: String,
    machine: &'a Machine,
    /// `/proc/loadavg` when the run started and ended.
    load_average_start: Option<[f64; 3]>,
    load_average_end: Option<[f64; 3]>,
    target: &'a Target,
    settings: Settings,
    phases: &'a [PhaseResult],
}

/// Events serialised once at start-up, one per key, from which request bodies are assembled.
#[derive(Debug)]
struct EventPool {
    events: Vec<Bytes>,
    longest: usize,
}

impl EventPool {
    /// `keys` events `{"key":"k<i>","data":{"n":<i>,"pad":"…"}}` whose `data` is
    /// `payload_bytes` long (or as short as it can be, when that is smaller).
    ///
    /// The padding is pseudo-random alphanumerics rather than one repeated character, so a
    /// producer that compresses batches does not get an unrealistically easy job.
    fn new(keys: usize, payload_bytes: usize) -> Self {
        let mut random = 0x9E37_79B9_7F4A_7C15_u64;
        let mut events = Vec::with_capacity(keys);
        for index in 0..keys {
            let data_head = format!("{{\"n\":{index},\"pad\":\"");
            const DATA_TAIL: &str = "\"}";
            let pad = payload_bytes.saturating_sub(data_head.len() + DATA_TAIL.len());
            let mut event = format!("{{\"key\":\"k{index}\",\"data\":{data_head}").into_bytes();
            event.extend((0..pad).map(|_| {
                const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                // xorshift64: deterministic, fast, good enough to defeat compression.
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                ALPHABET[(random % ALPHABET.len() as u64) as usize]
            }));
            event.extend_from_slice(DATA_TAIL.as_bytes());
            event.push(b'}');
            events.push(Bytes::from(event));
        }
        let longest = events.iter().map(Bytes::len).max().unwrap_or(0);
        Self { events, longest }
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    /// A request body of `batch` events with consecutive keys from `*next_key`, which
    /// advances past them. One event is sent as a bare object, several as an array.
    fn body(&self, batch: usize, next_key: &mut usize) -> Bytes {
        let mut take = || {
            let event = &self.events[*next_key % self.events.len()];
            *next_key = (*next_key + 1) % self.events.len();
            event
        };
        if batch == 1 {
            return take().clone(); // a reference-count bump, no copy
        }
        let mut body = BytesMut::with_capacity(batch * (self.longest + 1) + 1);
        body.put_u8(b'[');
        for index in 0..batch {
            if index > 0 {
                body.put_u8(b',');
            }
            body.extend_from_slice(take());
        }
        body.put_u8(b']');
        body.freeze()
    }
}

/// Accepts an `http://` base URL; the bench is built without TLS.
fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|err| format!("`{text}` is not a URL: {err}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "`{text}`: only http:// URLs are supported (the bench is built without TLS)"
        ));
    }
    if url.host().is_none() {
        return Err(format!("`{text}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}`: give the base URL only, without ?query or #fragment"));
    }
    Ok(url)
}

/// Stream names are `[A-Za-z0-9._-]{1,249}` (Kafka's topic name rule).
fn parse_stream_name(text: &str) -> Result<String, String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if (1..=249).contains(&text.len()) && text.chars().all(valid_char) {
        Ok(text.to_owned())
    } else {
        Err("stream names are 1 to 249 characters from A-Z a-z 0-9 . _ -".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<IngestArgs, clap::Error> {
        let argv = ["sluice-bench", "ingest"].iter().chain(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Ingest(args) => args,
            other => panic!("parsed as {other:?}"),
        })
    }

    #[test]
    fn defaults_match_the_documented_workload() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.batch_sizes, [1, 100]);
        assert_eq!(args.duration, Duration::from_secs(10));
        assert_eq!(args.warmup, Duration::from_secs(2));
        assert_eq!(args.concurrency, 32);
        assert_eq!(args.payload_bytes, 100);
        assert_eq!(args.keys, 1000);
        assert_eq!(args.stream, "bench");
        assert!(args.url.is_none());
    }

    #[test]
    fn batch_sizes_are_a_comma_separated_list_of_positive_numbers() {
        assert_eq!(
            parse(&["--batch-sizes", "1,10,1000"]).unwrap().batch_sizes,
            [1, 10, 1000]
        );
        assert_eq!(parse(&["--batch-sizes", "50"]).unwrap().batch_sizes, [50]);
        for bad in ["0", "1,0", "1,x", "-5", "1,,2", ""] {
            assert!(
                parse(&["--batch-sizes", bad]).is_err(),
                "--batch-sizes {bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn url_must_be_a_plain_http_base() {
        let args = parse(&["--url", "http://127.0.0.1:8090/"]).unwrap();
        assert_eq!(
            Target::external(args.url.as_ref().unwrap()).url,
            "http://127.0.0.1:8090"
        );
        for bad in ["https://ingest:443", "127.0.0.1:8090", "http://h/?x=1"] {
            assert!(parse(&["--url", bad]).is_err(), "--url {bad:?} should be rejected");
        }
        assert!(parse(&["--url", "http://h", "--dev-binary", "/x"]).is_err());
    }

    #[test]
    fn loopback_targets_share_the_machine() {
        let shares = |url: &str| Target::external(&Url::parse(url).unwrap()).shares_machine;
        assert!(shares("http://127.0.0.1:8090"));
        assert!(shares("http://localhost:8090"));
        assert!(shares("http://[::1]:8090"));
        assert!(!shares("http://ingest.internal:8090"));
        assert!(!shares("http://10.0.0.7:8090"));
    }

    #[test]
    fn stream_names_follow_the_topic_rule() {
        assert!(parse(&["--stream", "orders.eu_west-1"]).is_ok());
        for bad in ["", "a/b", "spaces here", &"x".repeat(250)] {
            assert!(
                parse(&["--stream", bad]).is_err(),
                "--stream {bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn events_carry_a_payload_of_the_requested_size() {
        let pool = EventPool::new(1000, 100);
        assert_eq!(pool.len(), 1000);
        let mut keys = std::collections::HashSet::new();
        for event in &pool.events {
            let value: serde_json::Value = serde_json::from_slice(event).unwrap();
            let data = serde_json::to_string(&value["data"]).unwrap();
            assert_eq!(data.len(), 100, "{data}");
            keys.insert(value["key"].as_str().unwrap().to_owned());
        }
        assert_eq!(keys.len(), 1000);

        // Too small to fit: as small as possible, still valid JSON.
        let tiny = EventPool::new(3, 1);
        let value: serde_json::Value = serde_json::from_slice(&tiny.events[2]).unwrap();
        assert_eq!(value["data"], serde_json::json!({"n": 2, "pad": ""}));
    }

    #[test]
    fn bodies_are_an_object_for_one_event_and_an_array_for_more() {
        let pool = EventPool::new(10, 50);
        let mut next_key = 8;

        let single: serde_json::Value = serde_json::from_slice(&pool.body(1, &mut next_key)).unwrap();
        assert_eq!(single["key"], "k8");
        assert_eq!(next_key, 9);

        let batch: serde_json::Value = serde_json::from_slice(&pool.body(4, &mut next_key)).unwrap();
        let keys: Vec<_> = batch
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["k9", "k0", "k1", "k2"]);
        assert_eq!(next_key, 3);
    }

    #[test]
    fn replies_must_acknowledge_every_event() {
        let two = br#"{"events":[{"partition":0,"offset":12,"timestamp":1732000000000},
                                 {"partition":3,"offset":7,"timestamp":1732000000001}]}"#;
        assert!(check_reply(two, 2).is_ok());
        assert_eq!(check_reply(two, 3).unwrap_err().kind, ErrorKind::CountMismatch);
        assert_eq!(check_reply(b"{}", 1).unwrap_err().kind, ErrorKind::BadReply);
        assert_eq!(check_reply(b"", 1).unwrap_err().kind, ErrorKind::BadReply);
        let negative = br#"{"events":[{"partition":0,"offset":-1}]}"#;
        assert_eq!(check_reply(negative, 1).unwrap_err().kind, ErrorKind::BadReply);
    }

    #[test]
    fn error_replies_are_summarised_by_code_and_message() {
        let body = br#"{"error":{"code":"unavailable","message":"Kafka did not acknowledge in time"}}"#;
        let failure = Failure::status(StatusCode::SERVICE_UNAVAILABLE, body);
        assert_eq!(failure.kind, ErrorKind::Status(503));
        assert_eq!(failure.detail, "unavailable: Kafka did not acknowledge in time");
        let html = Failure::status(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(html.detail, "<html>bad gateway</html>");
        assert_eq!(Failure::status(StatusCode::NOT_FOUND, b"").detail, "(empty body)");
    }

    #[test]
    fn tallies_merge_counts_errors_and_latencies() {
        let failure = |kind, detail: &str| Failure {
            kind,
            detail: detail.to_owned(),
        };
        let mut a = Tally::new();
        a.record(Ok(()), 100, Duration::from_millis(2));
        a.record(Err(failure(ErrorKind::Status(503), "first")), 100, Duration::ZERO);
        let mut b = Tally::new();
        b.record(Ok(()), 100, Duration::from_millis(4));
        b.record(Err(failure(ErrorKind::Status(503), "second")), 100, Duration::ZERO);
        b.record(Err(failure(ErrorKind::Timeout, "slow")), 100, Duration::ZERO);
        a.merge(b).unwrap();

        assert_eq!((a.requests_ok, a.events_ok), (2, 200));
        assert_eq!(a.latency.len(), 2, "failures carry no latency");
        assert_eq!(a.errors[&ErrorKind::Status(503)].count, 2);
        assert_eq!(a.errors[&ErrorKind::Status(503)].example, "first");
        assert_eq!(a.errors[&ErrorKind::Timeout].count, 1);
    }

    #[test]
    fn results_table_has_one_row_per_phase() {
        let plan = |batch| PhasePlan {
            batch,
            concurrency: 32,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
        };
        let mut busy = Tally::new();
        for _ in 0..1_000 {
            busy.record(Ok(()), 100, Duration::from_micros(1_500));
        }
        busy.record(
            Err(Failure {
                kind: ErrorKind::Status(503),
                detail: "unavailable: slow broker".into(),
            }),
            100,
            Duration::ZERO,
        );
        let phases = [
            PhaseResult::new("batch=1".into(), &plan(1), Tally::new()),
            PhaseResult::new("batch=100".into(), &plan(100), busy),
        ];
        assert_eq!(phases[1].events_per_sec, 10_000.0);
        assert_eq!(
            results_table(&phases),
            "\
phase      events/s  req/s  ok req  errors     p50     p90     p99   p99.9     max
batch=1         0.0    0.0       0       0       -       -       -       -       -
batch=100    10,000    100   1,000       1  1.50ms  1.50ms  1.50ms  1.50ms  1.50ms
"
        );
        assert_eq!(
            error_details(&phases),
            "\nerrors in batch=100:\n         1 × http 503  (first: unavailable: slow broker)\n"
        );
    }
}
