//! The `longpoll` scenario: many clients long-polling one stream while events are published
//! at a fixed rate (issue 14's `GET /v1/streams/{stream}/poll`).
//!
//! Each of `--clients` clients first polls with `wait=0` for a cursor at the stream's head,
//! then loops `GET …/poll?cursor=…&wait=…&limit=…`, each time with the page's `cursor`, on
//! its own keep-alive connection (one `reqwest` client, whose pool gives every concurrent
//! request its own connection and reuses it for the next). Once every client holds a cursor,
//! the open-loop publisher sends `--rate` events/s for `--duration`; after it the bench waits
//! (at most `--drain`) until every client has every event, then stops the clients.
//!
//! Every client checks what it gets as an SSE subscriber would be checked: the bench
//! payload's lanes run 0, 1, 2, … (gaps, duplicates), each event's `id` moves the stream on
//! by exactly one offset from the cursor before it (the first from the head cursor), and when
//! stopped it counts the events it never got. Event age is the poll's receive time minus the
//! event's `timestamp` (Kafka's, in ms: set when ingest produced it); publish → receive is
//! against the event's scheduled send time, as in `fanout`. Polls/s and events/s are counted
//! over the publish + drain window, gateway CPU over the same window.
//!
//! The clients run in the bench's own process (a runtime of `--threads`), not in helper
//! processes: a thousand keep-alive connections fit one process, and their CPU is reported.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::parse_positive_duration;
use crate::fanout::parse_rate;
use crate::hold::{count_error, ErrorSample};
use crate::procfs;
use crate::publish::{EventArgs, Publisher};
use crate::report::{
    format_bytes, format_count, format_duration, format_rate, latency_histogram, LatencySummary, Table,
};
use crate::rig::{cpu_seconds, header, write_report, Rig, RigArgs, RunStart, ServerKind};
use crate::sse_wire::{parse_probe, CursorStep, CursorTracker, LaneTracker, Observation};

/// How long after the clients stopped the gateway's RSS is read again.
const AFTER_STOP: Duration = Duration::from_secs(5);

/// Flags of `sluice-bench longpoll`.
#[derive(Debug, Clone, clap::Args)]
pub struct LongpollArgs {
    /// Long-poll clients, each on its own keep-alive connection.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=15_000))]
    pub clients: u32,

    /// Events published per second.
    #[arg(long, value_name = "N", default_value_t = 10.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Event keys (lanes) the events rotate over, each checked for order on every client.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub lanes: u32,

    /// `wait` of every poll: how long the gateway may hold it open for the next event.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub wait: Duration,

    /// `limit` of every poll: most events per page.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,

    /// Clients started per second (each takes its first cursor as it starts).
    #[arg(long, alias = "ramp-per-sec", value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub ramp_rate: u32,

    /// How long to publish.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_positive_duration)]
    pub duration: Duration,

    /// Pause between every client holding a cursor and the first event published.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_positive_duration)]
    pub settle: Duration,

    /// After publishing, how long to wait at most for the last events to reach every client.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_positive_duration)]
    pub drain: Duration,

    #[command(flatten)]
    pub events: EventArgs,

    #[command(flatten)]
    pub rig: RigArgs,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// The part of a poll's answer the bench reads.
#[derive(Debug, Deserialize)]
struct Page {
    events: Vec<PolledEvent>,
    cursor: String,
    #[serde(default)]
    gap: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct PolledEvent {
    id: String,
    data: String,
    /// Kafka's timestamp, ms since the epoch.
    timestamp: i64,
}

/// Live counts over all clients.
#[derive(Debug, Default)]
struct Counters {
    /// Clients holding their first cursor.
    ready: AtomicU64,
    polls: AtomicU64,
    empty_polls: AtomicU64,
    /// Bench events received.
    events: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn read(&self) -> [u64; 4] {
        [&self.polls, &self.empty_polls, &self.events, &self.errors].map(|count| count.load(Ordering::Relaxed))
    }
}

/// What the clients share: the HTTP client, the counters, and the books they merge into.
struct Shared {
    http: reqwest::Client,
    /// The poll endpoint, without a query.
    url: reqwest::Url,
    wait: String,
    limit: String,
    lanes: u32,
    counters: Counters,
    books: Mutex<Books>,
}

/// Everything the clients tally, merged under one lock a page at a time.
struct Books {
    /// Receive time − the event's Kafka timestamp.
    age: Histogram<u64>,
    /// Receive time − the event's scheduled send time.
    latency: Histogram<u64>,
    gaps: u64,
    duplicates: u64,
    unknown_lane: u64,
    cursor_gaps: u64,
    cursor_duplicates: u64,
    cursor_unreadable: u64,
    gap_pages: u64,
    /// Clients that saw any gap or duplicate (by lane or by cursor) or missed an event.
    clients_not_clean: u64,
    missing_tail: u64,
    errors: BTreeMap<String, ErrorSample>,
}

impl Default for Books {
    fn default() -> Self {
        Self {
            age: latency_histogram(),
            latency: latency_histogram(),
            gaps: 0,
            duplicates: 0,
            unknown_lane: 0,
            cursor_gaps: 0,
            cursor_duplicates: 0,
            cursor_unreadable: 0,
            gap_pages: 0,
            clients_not_clean: 0,
            missing_tail: 0,
            errors: BTreeMap::new(),
        }
    }
}

fn lock(books: &Mutex<Books>) -> std::sync::MutexGuard<'_, Books> {
    books.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The measurements of one run, as printed and written to JSON.
#[derive(Debug, Serialize)]
struct LongpollResult {
    clients: u32,
    /// Clients that got their first cursor.
    clients_ready: u64,
    ramp_secs: f64,
    publish_secs: f64,
    drain_secs: f64,
    events_published: u64,
    publish_errors: u64,
    publish_error_example: Option<String>,
    publisher_max_lag_ms: f64,
    /// Polls answered over the publish + drain window.
    polls: u64,
    polls_per_sec: f64,
    /// Of them, answered with no event (`wait` ran out).
    empty_polls: u64,
    events_per_poll: f64,
    deliveries_expected: u64,
    deliveries: u64,
    /// Events delivered per second over the publish + drain window, over all clients.
    deliveries_per_sec: f64,
    gaps: u64,
    missing_tail: u64,
    duplicates: u64,
    unknown_lane: u64,
    cursor_gaps: u64,
    cursor_duplicates: u64,
    cursor_unreadable: u64,
    /// Pages that reported a gap (events lost to retention or a reset).
    gap_pages: u64,
    clients_not_clean: u64,
    /// Failed polls (transport errors and statuses other than 200), ramp included.
    errors_total: u64,
    errors: BTreeMap<String, ErrorSample>,
    /// Receive time − Kafka timestamp (ms resolution), per event per client.
    age: LatencySummary,
    /// Receive time − scheduled send time, per event per client.
    latency: LatencySummary,
    gateway_cpu_secs: Option<f64>,
    gateway_cpu_percent: Option<f64>,
    gateway_cpu_secs_per_million_deliveries: Option<f64>,
    gateway_cpu_us_per_poll: Option<f64>,
    gateway_rss_before_bytes: Option<u64>,
    gateway_rss_held_bytes: Option<u64>,
    gateway_rss_end_bytes: Option<u64>,
    /// [`AFTER_STOP`] after every client stopped: no poll open.
    gateway_rss_after_stop_bytes: Option<u64>,
    /// The bench process's CPU (the clients and the publisher) over the window.
    clients_cpu_secs: Option<f64>,
    ingest_cpu_secs: Option<f64>,
    broker_cpu_secs: Option<f64>,
    /// `sluice_gateway_polls_total` by outcome, grown over the publish + drain window.
    gateway_polls_by_outcome: BTreeMap<String, f64>,
}

/// Runs `longpoll` under the `--timeout` limit.
pub async fn run(args: LongpollArgs) -> anyhow::Result<()> {
    let limit = args.rig.timeout;
    match tokio::time::timeout(limit, run_inner(args)).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("the run exceeded --timeout {} and was stopped", format_duration(limit)),
    }
}

async fn run_inner(args: LongpollArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rig.server == ServerKind::Gateway,
        "longpoll measures the gateway's poll endpoint; the baseline server has none"
    );
    let start = RunStart::now();
    let max_connections = args.rig.gateway_max_connections.unwrap_or(args.clients + 1_000);
    let mut rig = Rig::start(&args.rig, max_connections).await?;
    rig.create_stream().await?;
    rig.preflight_subscribe("").await?;
    let rss_before = rig.gateway_rss();

    let shared = Arc::new(Shared {
        http: reqwest::Client::builder()
            .no_proxy()
            .default_headers(rig.auth.bench_headers()?)
            .tcp_nodelay(true)
            // Past `wait` the gateway still answers within its catch-up allowance (2 s).
            .timeout(args.wait + Duration::from_secs(15))
            .build()
            .context("building the clients' HTTP client")?,
        url: reqwest::Url::parse(&format!("http://{}{}/poll", rig.gateway_addr(), rig.stream_path("")))
            .context("the poll URL")?,
        wait: format!("{}", args.wait.as_secs_f64()),
        limit: args.limit.to_string(),
        lanes: args.lanes,
        counters: Counters::default(),
        books: Mutex::new(Books::default()),
    });
    eprintln!(
        "starting {} long-poll clients at {}/s…",
        format_count(u64::from(args.clients)),
        format_count(u64::from(args.ramp_rate))
    );
    let (stop_tx, stop_rx) = watch::channel(None::<Arc<Vec<u64>>>);
    let ramp_start = Instant::now();
    let mut clients = JoinSet::new();
    for index in 0..args.clients {
        let due = ramp_start + Duration::from_secs_f64(f64::from(index) / f64::from(args.ramp_rate));
        clients.spawn(client(due, Arc::clone(&shared), stop_rx.clone()));
    }
    let ramp_secs = wait_ready(&mut rig, &shared, args.clients, args.clients / args.ramp_rate + 30).await?;
    tokio::time::sleep(args.settle).await;
    let rss_held = rig.gateway_rss();
    let metrics_before = polls_by_outcome(&rig).await;

    eprintln!(
        "publishing {} events/s for {} to {} long-poll clients (wait={}s, limit={})…",
        format_rate(args.rate),
        format_duration(args.duration),
        format_count(u64::from(args.clients)),
        shared.wait,
        args.limit
    );
    let self_pid = std::process::id();
    let cpu_before = (rig.cpu(), procfs::cpu_time(self_pid));
    let counts_before = shared.counters.read();
    let publish_start = Instant::now();
    let publisher = Publisher::new(&rig, &args.events, args.rate, args.duration, args.lanes).await?;
    let published = publish(&mut rig, &shared, publisher).await?;
    let publish_secs = publish_start.elapsed().as_secs_f64();
    let ready = shared.counters.ready.load(Ordering::Relaxed);
    let expected = published.events * ready;
    let drain_secs = drain(&shared, expected, args.drain).await.as_secs_f64();
    let cpu_after = (rig.cpu(), procfs::cpu_time(self_pid));
    let counts_after = shared.counters.read();
    let rss_end = rig.gateway_rss();
    let metrics_after = polls_by_outcome(&rig).await;

    let _ = stop_tx.send(Some(Arc::new(published.per_lane.clone())));
    let finish = async { while clients.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(20), finish).await.is_err() {
        eprintln!("some clients did not finish within 20s of the stop");
    }
    // A measurement pause, not synchronisation: what the gateway still holds once no poll is
    // open tells memory held per poll in flight from memory the allocator kept.
    tokio::time::sleep(AFTER_STOP).await;
    let rss_after_stop = rig.gateway_rss();

    let window = publish_secs + drain_secs;
    let [polls, empty_polls, deliveries, _] = std::array::from_fn(|i| counts_after[i].saturating_sub(counts_before[i]));
    let gateway_cpu = cpu_seconds(cpu_before.0.gateway, cpu_after.0.gateway);
    let books = std::mem::take(&mut *lock(&shared.books));
    let result = LongpollResult {
        clients: args.clients,
        clients_ready: ready,
        ramp_secs,
        publish_secs,
        drain_secs,
        events_published: published.events,
        publish_errors: published.errors,
        publish_error_example: published.error_example.clone(),
        publisher_max_lag_ms: published.max_lag.as_secs_f64() * 1e3,
        polls,
        polls_per_sec: polls as f64 / window,
        empty_polls,
        events_per_poll: if polls > 0 {
            deliveries as f64 / polls as f64
        } else {
            0.0
        },
        deliveries_expected: expected,
        deliveries,
        deliveries_per_sec: deliveries as f64 / window,
        gaps: books.gaps,
        missing_tail: books.missing_tail,
        duplicates: books.duplicates,
        unknown_lane: books.unknown_lane,
        cursor_gaps: books.cursor_gaps,
        cursor_duplicates: books.cursor_duplicates,
        cursor_unreadable: books.cursor_unreadable,
        gap_pages: books.gap_pages,
        clients_not_clean: books.clients_not_clean,
        errors_total: counts_after[3],
        errors: books.errors.clone(),
        age: LatencySummary::from_histogram(&books.age),
        latency: LatencySummary::from_histogram(&books.latency),
        gateway_cpu_secs: gateway_cpu,
        gateway_cpu_percent: gateway_cpu.map(|cpu| cpu / window * 100.0),
        gateway_cpu_secs_per_million_deliveries: gateway_cpu
            .filter(|_| deliveries > 0)
            .map(|cpu| cpu / deliveries as f64 * 1e6),
        gateway_cpu_us_per_poll: gateway_cpu.filter(|_| polls > 0).map(|cpu| cpu / polls as f64 * 1e6),
        gateway_rss_before_bytes: rss_before,
        gateway_rss_held_bytes: rss_held,
        gateway_rss_end_bytes: rss_end,
        gateway_rss_after_stop_bytes: rss_after_stop,
        clients_cpu_secs: cpu_seconds(cpu_before.1, cpu_after.1),
        ingest_cpu_secs: cpu_seconds(cpu_before.0.ingest, cpu_after.0.ingest),
        broker_cpu_secs: cpu_seconds(cpu_before.0.broker, cpu_after.0.broker),
        gateway_polls_by_outcome: metrics_after
            .into_iter()
            .map(|(outcome, after)| {
                let before = metrics_before.get(&outcome).copied().unwrap_or(0.0);
                (outcome, after - before)
            })
            .collect(),
    };
    report(&args, &start, &rig, &result)?;
    rig.stop().await?;
    if result.deliveries == 0 {
        bail!("not one event was delivered");
    }
    Ok(())
}

/// Waits until every client holds a cursor; returns how long that took.
async fn wait_ready(rig: &mut Rig, shared: &Shared, clients: u32, limit_secs: u32) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    let mut next_print = start + Duration::from_secs(1);
    loop {
        ticks.tick().await;
        rig.ensure_running()?;
        let ready = shared.counters.ready.load(Ordering::Relaxed);
        let errors = shared.counters.errors.load(Ordering::Relaxed);
        if ready >= u64::from(clients) {
            eprintln!(
                "  every client holds a cursor after {:.1}s ({errors} errors)",
                start.elapsed().as_secs_f64()
            );
            return Ok(start.elapsed().as_secs_f64());
        }
        if Instant::now() >= next_print {
            next_print += Duration::from_secs(1);
            eprintln!(
                "  ramp {:>3}s: {ready} clients hold a cursor, {errors} errors",
                start.elapsed().as_secs()
            );
        }
        if start.elapsed() > Duration::from_secs(u64::from(limit_secs)) {
            bail!("only {ready} of {clients} clients got a first cursor within {limit_secs}s ({errors} errors)");
        }
    }
}

/// Runs the publisher to the end, printing sent events, polls and deliveries once a second.
async fn publish(rig: &mut Rig, shared: &Shared, publisher: Publisher) -> anyhow::Result<crate::publish::Published> {
    let sent = publisher.progress();
    let mut run = tokio::spawn(publisher.run());
    let start = Instant::now();
    let mut ticks = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut printed = (0, shared.counters.read());
    loop {
        tokio::select! {
            done = &mut run => return done.context("the publisher task failed"),
            _ = ticks.tick() => {
                rig.ensure_running()?;
                let events = sent.load(Ordering::Relaxed);
                let now = shared.counters.read();
                eprintln!(
                    "  publish {:>3}s: {:>5} events/s sent, {:>7} polls/s, {:>8} events/s delivered, {} errors",
                    start.elapsed().as_secs(),
                    format_count(events - printed.0),
                    format_count(now[0] - printed.1[0]),
                    format_count(now[2] - printed.1[2]),
                    format_count(now[3]),
                );
                printed = (events, now);
            }
        }
    }
}

/// Waits until `expected` events were delivered, deliveries stall for 2 s, or `limit` passes.
async fn drain(shared: &Shared, expected: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    let received = || shared.counters.events.load(Ordering::Relaxed);
    let mut last = (received(), start);
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let count = received();
        if count >= expected || now - start >= limit {
            return now - start;
        }
        if count > last.0 {
            last = (count, now);
        } else if now - last.1 >= Duration::from_secs(2) {
            return now - start;
        }
    }
}

/// `sluice_gateway_polls_total` by outcome.
async fn polls_by_outcome(rig: &Rig) -> BTreeMap<String, f64> {
    let exposition = rig.metrics(0).await.unwrap_or_default();
    parse_polls_by_outcome(&exposition)
}

fn parse_polls_by_outcome(exposition: &str) -> BTreeMap<String, f64> {
    let mut outcomes = BTreeMap::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("sluice_gateway_polls_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let outcome = labels
            .split(',')
            .find_map(|pair| pair.strip_prefix("outcome=\""))
            .and_then(|value| value.strip_suffix('"'));
        if let (Some(outcome), Ok(value)) = (outcome, value.trim().parse::<f64>()) {
            *outcomes.entry(outcome.to_owned()).or_insert(0.0) += value;
        }
    }
    outcomes
}

/// The receiving end of the stop: `Some(published per lane)` once the bench said stop.
type StopRx = watch::Receiver<Option<Arc<Vec<u64>>>>;

/// One client: a first cursor at `due`, then polls until stopped; at the stop it adds what it
/// never got to the books.
async fn client(due: Instant, shared: Arc<Shared>, mut stop: StopRx) {
    tokio::time::sleep_until(due).await;
    let mut state = ClientState {
        lanes: LaneTracker::new(shared.lanes as usize),
        cursors: CursorTracker::default(),
        not_clean: false,
    };
    let mut cursor: Option<String> = None;
    loop {
        let wait = if cursor.is_some() { shared.wait.as_str() } else { "0" };
        let answer = tokio::select! {
            biased;
            _ = stop.wait_for(Option::is_some) => break,
            answer = poll(&shared, cursor.as_deref(), wait) => answer,
        };
        match answer {
            Ok(page) => {
                if cursor.is_none() {
                    shared.counters.ready.fetch_add(1, Ordering::Relaxed);
                    state.cursors.observe(page.cursor.as_bytes());
                } else {
                    state.absorb(&shared, &page);
                }
                cursor = Some(page.cursor);
            }
            Err((kind, detail)) => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                count_error(&mut lock(&shared.books).errors, kind, detail);
                // A refused or failed poll is retried with the same cursor, after a pause so a
                // failing gateway is not hammered.
                let pause = tokio::time::sleep(Duration::from_millis(200));
                tokio::select! {
                    _ = stop.wait_for(Option::is_some) => break,
                    () = pause => {}
                }
            }
        }
    }
    let published = stop.borrow().clone().unwrap_or_default();
    let missing = state.lanes.missing_tail(&published);
    let mut books = lock(&shared.books);
    books.missing_tail += missing;
    books.gaps += missing;
    if state.not_clean || missing > 0 {
        books.clients_not_clean += 1;
    }
}

/// One client's own bookkeeping.
struct ClientState {
    lanes: LaneTracker,
    cursors: CursorTracker,
    not_clean: bool,
}

impl ClientState {
    /// Tallies one page: counts, lanes, cursors, ages.
    fn absorb(&mut self, shared: &Shared, page: &Page) {
        let counters = &shared.counters;
        counters.polls.fetch_add(1, Ordering::Relaxed);
        if page.events.is_empty() {
            counters.empty_polls.fetch_add(1, Ordering::Relaxed);
        }
        let now_us = unix_micros();
        let mut books = lock(&shared.books);
        if !page.gap.is_empty() {
            books.gap_pages += 1;
            self.not_clean = true;
        }
        for event in &page.events {
            match self.cursors.observe(event.id.as_bytes()) {
                CursorStep::First | CursorStep::Next => {}
                CursorStep::Gap(skipped) => {
                    books.cursor_gaps += skipped;
                    self.not_clean = true;
                }
                CursorStep::Duplicate => {
                    books.cursor_duplicates += 1;
                    self.not_clean = true;
                }
                CursorStep::Unreadable => books.cursor_unreadable += 1,
            }
            let Some(probe) = parse_probe(event.data.as_bytes()) else {
                continue;
            };
            counters.events.fetch_add(1, Ordering::Relaxed);
            let age = now_us.saturating_sub(u64::try_from(event.timestamp).unwrap_or(0) * 1_000);
            books.age.saturating_record(age.max(1));
            books
                .latency
                .saturating_record(now_us.saturating_sub(probe.sent_us).max(1));
            match self.lanes.observe(probe.lane, probe.seq) {
                Observation::InOrder => {}
                Observation::Gap(skipped) => {
                    books.gaps += skipped;
                    self.not_clean = true;
                }
                Observation::Duplicate => {
                    books.duplicates += 1;
                    self.not_clean = true;
                }
                Observation::UnknownLane => books.unknown_lane += 1,
            }
        }
    }
}

/// One poll: `Err((kind, detail))` for a transport error or any status but 200.
async fn poll(shared: &Shared, cursor: Option<&str>, wait: &str) -> Result<Page, (String, String)> {
    let mut url = shared.url.clone();
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("wait", wait).append_pair("limit", &shared.limit);
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
    }
    let response = shared
        .http
        .get(url)
        .send()
        .await
        .map_err(|err| (transport_kind(&err).to_owned(), error_chain(&err)))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        let body = response.text().await.unwrap_or_default();
        return Err((format!("http {}", status.as_u16()), body.chars().take(200).collect()));
    }
    let body = response
        .bytes()
        .await
        .map_err(|err| ("read body".to_owned(), err.to_string()))?;
    serde_json::from_slice(&body).map_err(|err| ("bad page".to_owned(), err.to_string()))
}

/// An error with its sources: reqwest's own message ("error sending request") names no cause.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn transport_kind(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// Prints the report and writes the JSON.
fn report(args: &LongpollArgs, start: &RunStart, rig: &Rig, result: &LongpollResult) -> anyhow::Result<()> {
    let workload = format!(
        "{} long-poll clients on stream `{}` (GET …/poll?cursor=…&wait={}&limit={}, keep-alive, in the \
         bench process); {} events/s of {}-byte data over {} keys for {} via {:?}",
        format_count(u64::from(args.clients)),
        rig.stream,
        args.wait.as_secs_f64(),
        args.limit,
        format_rate(args.rate),
        args.events.payload_bytes,
        args.lanes,
        format_duration(args.duration),
        args.events.publish_via,
    );
    print!("{}", header("longpoll", start, rig, &workload));
    print!("\n{}", results_table(result));
    let mut latency = Table::new(["latency", "samples", "p50", "p90", "p99", "p99.9", "max"]);
    for (label, summary) in [
        ("event age (receive − Kafka timestamp)", &result.age),
        ("publish → receive (scheduled send)", &result.latency),
    ] {
        latency.row(
            [label.to_owned(), format_count(summary.count)]
                .into_iter()
                .chain(summary.cells()),
        );
    }
    print!("\n{}", latency.render());
    if !result.errors.is_empty() {
        print!("\nfailed polls:\n{}", crate::hold::error_lines(&result.errors));
    }
    if let Some(example) = &result.publish_error_example {
        print!(
            "\npublish errors: {} (first: {example})\n",
            format_count(result.publish_errors)
        );
    }
    if let Some(path) = &args.json {
        let settings = serde_json::json!({
            "clients": args.clients,
            "rate": args.rate,
            "lanes": args.lanes,
            "wait_secs": args.wait.as_secs_f64(),
            "limit": args.limit,
            "duration_secs": args.duration.as_secs_f64(),
            "settle_secs": args.settle.as_secs_f64(),
            "drain_secs": args.drain.as_secs_f64(),
            "publish_via": args.events.publish_via,
            "payload_bytes": args.events.payload_bytes,
            "ramp_rate": args.ramp_rate,
            "stream": rig.stream,
            "gateway_args": args.rig.gateway_args,
        });
        write_report(path, "longpoll", start, rig, settings, result)?;
    }
    Ok(())
}

fn results_table(result: &LongpollResult) -> String {
    let optional = |value: Option<f64>, decimals: usize| value.map_or("-".to_owned(), |v| format!("{v:.decimals$}"));
    let mut table = Table::new(["measure", "value"]);
    let mut row = |label: &str, value: String| table.row([label.to_owned(), value]);
    row(
        "clients holding a cursor",
        format!(
            "{} of {}",
            format_count(result.clients_ready),
            format_count(u64::from(result.clients))
        ),
    );
    row(
        "events published",
        format!(
            "{} ({} errors)",
            format_count(result.events_published),
            format_count(result.publish_errors)
        ),
    );
    row(
        "polls answered (empty) / polls/s",
        format!(
            "{} ({}) / {}",
            format_count(result.polls),
            format_count(result.empty_polls),
            format_rate(result.polls_per_sec)
        ),
    );
    row("events per poll, mean", format!("{:.2}", result.events_per_poll));
    row(
        "deliveries of expected / per s",
        format!(
            "{} of {} / {}",
            format_count(result.deliveries),
            format_count(result.deliveries_expected),
            format_rate(result.deliveries_per_sec)
        ),
    );
    row(
        "gaps (never arrived) / duplicates",
        format!(
            "{} ({}) / {}",
            format_count(result.gaps),
            format_count(result.missing_tail),
            format_count(result.duplicates)
        ),
    );
    row(
        "by cursor: gaps / duplicates / unreadable",
        format!(
            "{} / {} / {}",
            format_count(result.cursor_gaps),
            format_count(result.cursor_duplicates),
            format_count(result.cursor_unreadable)
        ),
    );
    row(
        "clients that lost or repeated anything",
        format!(
            "{} (pages with a gap: {})",
            format_count(result.clients_not_clean),
            format_count(result.gap_pages)
        ),
    );
    row("failed polls", format_count(result.errors_total));
    row(
        "gateway CPU (publish + drain)",
        format!(
            "{} s = {}% of one CPU",
            optional(result.gateway_cpu_secs, 2),
            optional(result.gateway_cpu_percent, 1)
        ),
    );
    row("gateway CPU-µs per poll", optional(result.gateway_cpu_us_per_poll, 1));
    row(
        "gateway CPU-s per 1M events delivered",
        optional(result.gateway_cpu_secs_per_million_deliveries, 2),
    );
    row(
        "gateway RSS before → clients polling → end → 5 s after they stopped",
        [
            result.gateway_rss_before_bytes,
            result.gateway_rss_held_bytes,
            result.gateway_rss_end_bytes,
            result.gateway_rss_after_stop_bytes,
        ]
        .map(|bytes| bytes.map_or("-".to_owned(), format_bytes))
        .join(" → "),
    );
    row(
        "CPU-s clients (bench) / ingest / broker",
        format!(
            "{} / {} / {}",
            optional(result.clients_cpu_secs, 2),
            optional(result.ingest_cpu_secs, 2),
            optional(result.broker_cpu_secs, 2)
        ),
    );
    row(
        "gateway polls by outcome (metric)",
        result
            .gateway_polls_by_outcome
            .iter()
            .map(|(outcome, count)| format!("{outcome} {}", format_count(count.max(0.0) as u64)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    row(
        "window (publish + drain)",
        format!("{:.1}s + {:.1}s", result.publish_secs, result.drain_secs),
    );
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_carry_their_causes() {
        #[derive(Debug)]
        struct Sending(std::io::Error);
        impl std::fmt::Display for Sending {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Sending {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(error_chain(&Sending(reset)), "error sending request: reset by peer");
        assert_eq!(error_chain(&std::io::Error::other("alone")), "alone");
    }

    #[test]
    fn reads_poll_outcomes_from_the_metrics() {
        let exposition = "# TYPE sluice_gateway_polls_total counter\n\
            sluice_gateway_polls_total{outcome=\"events\"} 12\n\
            sluice_gateway_polls_total{outcome=\"empty\",pod=\"a\"} 3\n\
            sluice_gateway_polls_total_other{outcome=\"events\"} 99\n";
        let outcomes = parse_polls_by_outcome(exposition);
        assert_eq!(outcomes.len(), 2);
        assert_eq!(outcomes["events"], 12.0);
        assert_eq!(outcomes["empty"], 3.0);
    }

    fn shared(lanes: u32) -> Shared {
        Shared {
            http: reqwest::Client::new(),
            url: reqwest::Url::parse("http://127.0.0.1:1/").unwrap(),
            wait: "10".into(),
            limit: "100".into(),
            lanes,
            counters: Counters::default(),
            books: Mutex::new(Books::default()),
        }
    }

    #[test]
    fn a_client_counts_repeats_and_skips_by_lane_and_by_cursor() {
        use sluice_sse::Cursor;
        let shared = shared(1);
        let mut state = ClientState {
            lanes: LaneTracker::new(1),
            cursors: CursorTracker::default(),
            not_clean: false,
        };
        let event = |offset: i64, seq: u64| PolledEvent {
            id: Cursor::new(1, vec![offset]).encode(),
            data: crate::publish::event_data(0, seq, 1, ""),
            timestamp: 1,
        };
        state.cursors.observe(Cursor::new(1, vec![0]).encode().as_bytes());
        let page = |events| Page {
            events,
            cursor: String::new(),
            gap: Vec::new(),
        };
        state.absorb(&shared, &page(vec![event(1, 0), event(2, 1)]));
        assert!(!state.not_clean);
        state.absorb(&shared, &page(vec![event(2, 1)]));
        state.absorb(&shared, &page(vec![event(4, 3)]));
        state.absorb(&shared, &page(Vec::new()));
        let books = lock(&shared.books);
        assert!(state.not_clean);
        assert_eq!((books.duplicates, books.cursor_duplicates), (1, 1));
        assert_eq!((books.gaps, books.cursor_gaps), (1, 1));
        assert_eq!(shared.counters.read(), [4, 1, 4, 0]);
        assert_eq!(books.age.len(), 4);
    }
}
