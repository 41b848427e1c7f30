//! `sluice-bench hold` (hidden): a helper process that opens and holds SSE connections.
//!
//! A single process cannot hold 10,000 connections and more on this kind of machine (the file
//! descriptor limit is per process), and the load generator should not pile its memory and
//! CPU onto the parent that measures. So the gateway scenarios re-execute the bench as
//! several holder processes, each given its share of the connections.
//!
//! A holder runs on one thread: its connections are tasks on a `LocalSet` sharing one tally
//! and one read buffer, with no locks. Each connection is a bare `TcpStream` bound to one of
//! the `--source-addrs` (so the ephemeral ports of a single source address never run out),
//! speaking just enough HTTP/1.1 to send a GET and read a streaming response. Connections
//! open at `--ramp-per-sec`; each counts as established once the gateway's `200` head
//! arrives. Failures are not retried: they are what the benchmark reports.
//!
//! Talking to the parent: one JSON [`HolderMessage`] per line on stdout — a
//! [`HolderMessage::Status`] every `--status-interval`, and one [`HolderMessage::Final`]
//! at the end. The parent ends a holder by writing `stop` (optionally followed by the per-lane
//! published counts as a JSON array, so each connection can count what it never received) on
//! its stdin. The holder also stops, and exits, when its stdin closes (the parent died) or
//! after `--deadline`, so no holder ever outlives a run.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinSet, LocalSet};
use tokio::time::Instant;

use crate::cli::{parse_duration, parse_positive_duration};
use crate::report::latency_histogram;
use crate::sse_wire::{
    expand_path, parse_probe, parse_response_head, ChunkedDecoder, CursorStep, CursorTracker, Frame, LaneTracker,
    Observation, SseParser,
};

/// Flags of the hidden `sluice-bench hold` subcommand (spawned by the gateway scenarios).
#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    /// SSE listeners, `IP:PORT` (comma-separated). Connections open on the first; a
    /// reconnect moves on to the next one, round robin, as an ingress without stickiness
    /// would send it elsewhere.
    #[arg(long, value_name = "ADDR,ADDR,...", value_delimiter = ',', required = true)]
    pub target: Vec<SocketAddr>,

    /// Request path and query, e.g. `/v1/streams/bench?from=latest`; `{i}` is replaced by the
    /// connection's global index (`--index-offset` + its index here).
    #[arg(long, value_name = "PATH")]
    pub path: String,

    /// Global index of this process's first connection, for `{i}` and `--lane-per-connection`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub index_offset: u32,

    /// Connections this process opens and holds.
    #[arg(long, value_name = "N")]
    pub connections: u32,

    /// Connections opened per second by this process.
    #[arg(long, value_name = "N", default_value_t = 1000.0)]
    pub ramp_rate: f64,

    /// Local addresses connections are bound to, round robin (comma-separated).
    #[arg(long, value_name = "IP,IP,...", value_delimiter = ',', default_value = "127.0.0.1")]
    pub source_addrs: Vec<Ipv4Addr>,

    /// How long connecting and receiving the response head may take.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// Lanes of the bench payload to track for gaps and duplicates; 0 ignores payloads.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub lanes: u32,

    /// The lane number of this process's first lane: payload lane `N` is tracked as lane
    /// `N - offset` (the streams of a fleet carry lanes `offset..offset + --lanes`; a lower
    /// number counts as an unknown lane).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub lane_offset: u32,

    /// Each connection expects only lane `index % lanes` (key-filtered subscriptions); an
    /// event of another lane counts as misrouted.
    #[arg(long)]
    pub lane_per_connection: bool,

    /// Also account gaps and duplicates by cursor: every event's id must move the stream's
    /// offsets on by exactly one (unfiltered streams only).
    #[arg(long)]
    pub check_cursors: bool,

    /// Reconnect after the server closes a stream or a connect fails, carrying the last id
    /// seen as `Last-Event-ID`, after a jittered pause.
    #[arg(long)]
    pub reconnect: bool,

    /// Longest pause before a reconnect; each pause is spread uniformly over 0..this.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub reconnect_jitter: Duration,

    /// `Last-Event-ID` of every connection's first request: resume at this cursor.
    #[arg(long, value_name = "CURSOR")]
    pub last_event_id: Option<String>,

    /// File of bearer tokens, one per line: line k is sent by this process's connection k as
    /// `Authorization: Bearer`, on its first request and every reconnect.
    #[arg(long, value_name = "PATH")]
    pub tokens_file: Option<std::path::PathBuf>,

    /// Interval of status lines to the parent.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_positive_duration)]
    pub status_interval: Duration,

    /// Stop and exit after this long whatever happens: no holder outlives its run.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_positive_duration)]
    pub deadline: Duration,
}

/// One line from a holder to its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HolderMessage {
    Status(HolderCounts),
    Final(Box<HolderFinal>),
}

/// Running counts of one holder; the parent sums them over holders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderCounts {
    /// Connections attempted so far.
    pub attempted: u64,
    /// Connections whose `200` head arrived (including those closed since).
    pub established: u64,
    /// Connections that never got a `200`: refused, timed out, answered another status.
    pub failed: u64,
    /// Established connections that ended before the holder stopped them.
    pub closed: u64,
    /// Events (frames with data) received, over all connections.
    pub events: u64,
    /// Bench events (with a probe) received.
    pub probes: u64,
    /// Heartbeat comments received.
    pub heartbeats: u64,
    /// Body bytes received (after chunked decoding).
    pub body_bytes: u64,
    /// Connections re-established after a close (`--reconnect`).
    pub reconnects: u64,
    /// Reconnect attempts that failed (refused, timed out, not 200) and were retried.
    pub reconnect_failures: u64,
    /// Bench events received on a resumed connection that were sent before it resumed.
    pub replayed: u64,
    /// Wall clock (µs since the epoch) of the latest reconnect; merged by maximum.
    pub last_reconnect_unix_us: u64,
}

impl HolderCounts {
    pub fn add(&mut self, other: &Self) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.failed += other.failed;
        self.closed += other.closed;
        self.events += other.events;
        self.probes += other.probes;
        self.heartbeats += other.heartbeats;
        self.body_bytes += other.body_bytes;
        self.reconnects += other.reconnects;
        self.reconnect_failures += other.reconnect_failures;
        self.replayed += other.replayed;
        self.last_reconnect_unix_us = self.last_reconnect_unix_us.max(other.last_reconnect_unix_us);
    }

    /// Connections currently open.
    pub fn open(&self) -> u64 {
        (self.established + self.reconnects).saturating_sub(self.closed)
    }
}

/// A holder's last word.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HolderFinal {
    pub counts: HolderCounts,
    /// Bench events skipped inside a lane, plus those published but never received.
    pub gaps: u64,
    /// Of `gaps`, those published after the last event a connection received.
    pub missing_tail: u64,
    /// Bench events at or below a sequence number already received on their lane.
    pub duplicates: u64,
    /// Bench events with a lane number beyond `--lanes`, or of another connection's lane.
    pub unknown_lane: u64,
    /// Offsets skipped between consecutive ids (`--check-cursors`).
    pub cursor_gaps: u64,
    /// Ids that did not move the offsets on (`--check-cursors`).
    pub cursor_duplicates: u64,
    /// Ids that were not Sluice cursors (`--check-cursors`).
    pub cursor_unreadable: u64,
    /// Latency histogram, as (value in µs, count) pairs: mergeable exactly.
    pub latency_us: Vec<(u64, u64)>,
    /// Time from losing a connection to its next `200`, per reconnect, as (µs, count) pairs.
    pub outage_us: Vec<(u64, u64)>,
    /// Connection failures and closes, by kind, with a first example.
    pub errors: BTreeMap<String, ErrorSample>,
}

/// How often an error kind occurred, with the first example seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorSample {
    pub count: u64,
    pub example: String,
}

/// One line per error kind: count, kind, first example.
pub fn error_lines(errors: &BTreeMap<String, ErrorSample>) -> String {
    let mut text = String::new();
    for (kind, sample) in errors {
        text.push_str(&format!(
            "  {:>8} × {kind}  (first: {})\n",
            crate::report::format_count(sample.count),
            sample.example
        ));
    }
    text
}

/// Adds one occurrence of `kind` to `errors`.
pub fn count_error(errors: &mut BTreeMap<String, ErrorSample>, kind: String, example: String) {
    errors
        .entry(kind)
        .and_modify(|sample| sample.count += 1)
        .or_insert(ErrorSample { count: 1, example });
}

/// Histogram contents as (value, count) pairs.
pub fn histogram_pairs(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    histogram
        .iter_recorded()
        .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value()))
        .collect()
}

/// Adds (value, count) pairs to a histogram shaped like [`latency_histogram`]'s.
pub fn add_pairs(histogram: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        histogram.saturating_record_n(value, count);
    }
}

/// Everything the connections of this holder share.
struct Shared {
    args: HoldArgs,
    /// Connection k's token (`--tokens-file`); empty without access control.
    tokens: Vec<String>,
    tally: RefCell<Tally>,
    /// One read buffer for all connections: a task reads into it and parses before it yields.
    scratch: RefCell<Vec<u8>>,
}

/// What holders count: one holder's connections, or every holder's merged by the rig.
#[derive(Debug)]
pub struct Tally {
    pub counts: HolderCounts,
    pub gaps: u64,
    pub missing_tail: u64,
    pub duplicates: u64,
    pub unknown_lane: u64,
    pub cursor_gaps: u64,
    pub cursor_duplicates: u64,
    pub cursor_unreadable: u64,
    pub latency: Histogram<u64>,
    pub outage: Histogram<u64>,
    pub errors: BTreeMap<String, ErrorSample>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            counts: HolderCounts::default(),
            gaps: 0,
            missing_tail: 0,
            duplicates: 0,
            unknown_lane: 0,
            cursor_gaps: 0,
            cursor_duplicates: 0,
            cursor_unreadable: 0,
            latency: latency_histogram(),
            outage: latency_histogram(),
            errors: BTreeMap::new(),
        }
    }
}

/// Runs the holder until stopped; the caller provides a current-thread runtime.
pub async fn run(args: HoldArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.source_addrs.is_empty(), "--source-addrs is empty");
    anyhow::ensure!(args.ramp_rate > 0.0, "--ramp-rate must be positive");
    anyhow::ensure!(!args.target.is_empty(), "--target is empty");
    let tokens = match &args.tokens_file {
        Some(path) => read_tokens(path, args.connections)?,
        None => Vec::new(),
    };
    let shared = Rc::new(Shared {
        tokens,
        tally: RefCell::new(Tally::default()),
        scratch: RefCell::new(vec![0; 64 * 1024]),
        args,
    });
    LocalSet::new().run_until(hold(shared)).await
}

async fn hold(shared: Rc<Shared>) -> anyhow::Result<()> {
    let deadline = Instant::now() + shared.args.deadline;
    // `Some(published per lane)` once stopped; connections finish their books and end.
    let (stop_tx, stop_rx) = watch::channel(None::<Rc<Vec<u64>>>);
    let mut connections = JoinSet::new();

    let opener = {
        let shared = Rc::clone(&shared);
        let stop_rx = stop_rx.clone();
        tokio::task::spawn_local(async move {
            let start = Instant::now();
            let mut connections = JoinSet::new();
            for index in 0..shared.args.connections {
                if stop_rx.borrow().is_some() {
                    break;
                }
                let due = start + Duration::from_secs_f64(f64::from(index) / shared.args.ramp_rate);
                tokio::time::sleep_until(due).await;
                connections.spawn_local(client(index, Rc::clone(&shared), stop_rx.clone()));
            }
            connections
        })
    };

    let reporter = {
        let shared = Rc::clone(&shared);
        tokio::task::spawn_local(async move {
            let mut ticks = tokio::time::interval(shared.args.status_interval);
            loop {
                ticks.tick().await;
                let counts = shared.tally.borrow().counts;
                emit(&HolderMessage::Status(counts));
            }
        })
    };

    let published = tokio::select! {
        command = read_stop_command() => command,
        _ = tokio::time::sleep_until(deadline) => {
            eprintln!("holder: deadline reached, stopping");
            Vec::new()
        }
    };
    let lanes = shared.args.lanes as usize;
    let mut published = published;
    published.resize(lanes, 0);
    let _ = stop_tx.send(Some(Rc::new(published)));

    // The opener sees the stop before its next connection; its tasks then see it too.
    if let Ok(opened) = opener.await {
        connections = opened;
    }
    let finish = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), finish).await.is_err() {
        eprintln!("holder: connections did not finish within 10s of stop");
    }
    reporter.abort();

    let tally = shared.tally.borrow();
    emit(&HolderMessage::Final(Box::new(HolderFinal {
        counts: tally.counts,
        gaps: tally.gaps,
        missing_tail: tally.missing_tail,
        duplicates: tally.duplicates,
        unknown_lane: tally.unknown_lane,
        cursor_gaps: tally.cursor_gaps,
        cursor_duplicates: tally.cursor_duplicates,
        cursor_unreadable: tally.cursor_unreadable,
        latency_us: histogram_pairs(&tally.latency),
        outage_us: histogram_pairs(&tally.outage),
        errors: tally.errors.clone(),
    })));
    Ok(())
}

/// One token per connection, in order; fewer lines than connections is an error.
fn read_tokens(path: &std::path::Path, connections: u32) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
    anyhow::ensure!(
        tokens.len() >= connections as usize,
        "{}: {} tokens for {connections} connections",
        path.display(),
        tokens.len()
    );
    Ok(tokens)
}

/// Waits for `stop [counts]` on stdin; EOF (the parent is gone) also stops, with no counts.
async fn read_stop_command() -> Vec<u64> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if let Some(rest) = line.trim().strip_prefix("stop") {
                    return serde_json::from_str(rest.trim()).unwrap_or_default();
                }
            }
            Ok(None) | Err(_) => return Vec::new(),
        }
    }
}

/// Writes one message line to stdout; a parent that stopped listening is not our problem.
fn emit(message: &HolderMessage) {
    let mut line = serde_json::to_vec(message).expect("holder messages serialise");
    line.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&line).and_then(|()| stdout.flush());
}

/// The receiving end of a stop: `Some(published per lane)` once the parent said stop.
type StopRx = watch::Receiver<Option<Rc<Vec<u64>>>>;

/// One client, from its first connect to stop: with `--reconnect`, across every reconnect,
/// keeping its books (lanes, cursor, last id) as a browser's `EventSource` keeps its
/// `lastEventId`.
async fn client(index: u32, shared: Rc<Shared>, mut stop: StopRx) {
    let args = &shared.args;
    let global = args.index_offset + index;
    let path = expand_path(&args.path, global);
    let mut books = ClientBooks::new(args, global);
    let token = shared.tokens.get(index as usize).map(String::as_str);
    let mut target = 0;
    let mut attempt: u64 = 0;
    // When the current outage began; `None` until the first connection is established.
    let mut lost_at: Option<Instant> = None;
    let mut ever_connected = false;
    shared.tally.borrow_mut().counts.attempted += 1;
    loop {
        let source = args.source_addrs[(index as usize + attempt as usize) % args.source_addrs.len()];
        let opened = tokio::select! {
            opened = tokio::time::timeout(
                args.connect_timeout,
                open(args.target[target], source, &path, books.last_id.as_deref(), token),
            ) => opened.unwrap_or_else(|_| Err((
                "connect timeout".into(),
                format!("no 200 within {:?}", args.connect_timeout),
            ))),
            _ = stop.wait_for(Option::is_some) => break,
        };
        let (stream, body) = match opened {
            Ok(opened) => opened,
            Err((kind, detail)) => {
                {
                    let mut tally = shared.tally.borrow_mut();
                    if ever_connected {
                        tally.counts.reconnect_failures += 1;
                        count_error(&mut tally.errors, format!("reconnect: {kind}"), detail);
                    } else {
                        tally.counts.failed += 1;
                        count_error(&mut tally.errors, kind, detail);
                    }
                }
                if !(ever_connected && args.reconnect) {
                    break;
                }
                target = (target + 1) % args.target.len();
                attempt += 1;
                if !pause(jitter(args.reconnect_jitter, global, attempt), &mut stop).await {
                    break;
                }
                continue;
            }
        };
        {
            let mut tally = shared.tally.borrow_mut();
            match lost_at.take() {
                None => tally.counts.established += 1,
                Some(lost) => {
                    tally.counts.reconnects += 1;
                    let now = unix_micros();
                    tally.counts.last_reconnect_unix_us = tally.counts.last_reconnect_unix_us.max(now);
                    let outage = u64::try_from(lost.elapsed().as_micros()).unwrap_or(u64::MAX);
                    tally.outage.saturating_record(outage.max(1));
                    books.resumed_at_us = now;
                }
            }
        }
        ever_connected = true;
        let end = read_stream(&shared, stream, body, &mut books, &mut stop).await;
        let Some((kind, detail)) = end else {
            break;
        };
        {
            let mut tally = shared.tally.borrow_mut();
            tally.counts.closed += 1;
            count_error(&mut tally.errors, kind, detail);
        }
        if !args.reconnect {
            break;
        }
        lost_at = Some(Instant::now());
        target = (target + 1) % args.target.len();
        attempt += 1;
        if !pause(jitter(args.reconnect_jitter, global, attempt), &mut stop).await {
            break;
        }
    }
    // Whatever ended the client, it owes its missing tail to the books; wait for the stop.
    let published = match stop.wait_for(Option::is_some).await {
        Ok(published) => published.clone().unwrap_or_default(),
        Err(_) => Rc::default(),
    };
    let missing = books.missing_tail(&published);
    let mut tally = shared.tally.borrow_mut();
    tally.missing_tail += missing;
    tally.gaps += missing;
}

/// Sleeps `duration` unless stopped first; `false` when stopped.
async fn pause(duration: Duration, stop: &mut StopRx) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        _ = stop.wait_for(Option::is_some) => false,
    }
}

/// A pause spread uniformly over `0..max`, different for every client and attempt, and the
/// same on every run (a hash, not a random generator: runs stay comparable).
pub fn jitter(max: Duration, client: u32, attempt: u64) -> Duration {
    let fraction = (splitmix64((u64::from(client) << 32) ^ attempt) >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(fraction)
}

/// SplitMix64's finaliser: a well-spread 64-bit hash of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// Reads one response body until stopped (`None`) or the stream ends (`Some((kind, detail))`).
async fn read_stream(
    shared: &Shared,
    stream: TcpStream,
    body: OpenedBody,
    books: &mut ClientBooks,
    stop: &mut StopRx,
) -> Option<(String, String)> {
    let mut decoder = BodyDecoder {
        chunked: body.chunked.then(ChunkedDecoder::default),
        decoded: Vec::new(),
        sse: SseParser::default(),
    };
    if let Err(err) = decoder.absorb(shared, books, &body.leftover) {
        return Some(("bad chunked body".to_owned(), err));
    }
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(Option::is_some) => return None,
            ready = stream.readable() => {
                if let Err(err) = ready {
                    return Some(("read error".to_owned(), err.to_string()));
                }
                let mut scratch = shared.scratch.borrow_mut();
                match stream.try_read(&mut scratch) {
                    Ok(0) => return Some(("closed by server".to_owned(), "EOF".to_owned())),
                    Ok(n) => {
                        if let Err(err) = decoder.absorb(shared, books, &scratch[..n]) {
                            return Some(("bad chunked body".to_owned(), err));
                        }
                        if decoder.chunked.as_ref().is_some_and(ChunkedDecoder::is_done) {
                            return Some(("closed by server".to_owned(), "end of chunked body".to_owned()));
                        }
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(err) => return Some(("read error".to_owned(), err.to_string())),
                }
            }
        }
    }
}

/// A decoded response head and the body bytes that came in the same reads.
struct OpenedBody {
    chunked: bool,
    leftover: Vec<u8>,
}

/// Connects to `target` from `source`, sends the GET (with `Last-Event-ID` when resuming, and
/// the token when there is one) and reads the response head; `Err((kind, detail))`.
async fn open(
    target: SocketAddr,
    source: Ipv4Addr,
    path: &str,
    last_event_id: Option<&str>,
    token: Option<&str>,
) -> Result<(TcpStream, OpenedBody), (String, String)> {
    let socket = TcpSocket::new_v4().map_err(|err| ("socket".to_owned(), err.to_string()))?;
    socket
        .bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))
        .map_err(|err| ("bind".to_owned(), format!("{source}: {err}")))?;
    let mut stream = socket
        .connect(target)
        .await
        .map_err(|err| ("connect".to_owned(), err.to_string()))?;
    let _ = stream.set_nodelay(true);
    let request = request_head(path, target, last_event_id, token);
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| ("send request".to_owned(), err.to_string()))?;
    let mut head = Vec::new();
    loop {
        stream
            .readable()
            .await
            .map_err(|err| ("read head".to_owned(), err.to_string()))?;
        let mut buffer = [0u8; 4096];
        match stream.try_read(&mut buffer) {
            Ok(0) => return Err(("closed before response".to_owned(), "EOF".to_owned())),
            Ok(n) => head.extend_from_slice(&buffer[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(("read head".to_owned(), err.to_string())),
        }
        match parse_response_head(&head) {
            Ok(None) => continue,
            Err(err) => return Err(("bad response".to_owned(), err)),
            Ok(Some((parsed, len))) => {
                if parsed.status != 200 {
                    let excerpt = String::from_utf8_lossy(&head[len..head.len().min(len + 200)]).into_owned();
                    return Err((format!("http {}", parsed.status), excerpt));
                }
                if !parsed
                    .content_type
                    .as_deref()
                    .is_some_and(|value| value.starts_with("text/event-stream"))
                {
                    return Err((
                        "not an event stream".to_owned(),
                        format!("content-type {:?}", parsed.content_type),
                    ));
                }
                return Ok((
                    stream,
                    OpenedBody {
                        chunked: parsed.chunked,
                        leftover: head[len..].to_vec(),
                    },
                ));
            }
        }
    }
}

/// The GET that opens (or resumes) a subscription.
fn request_head(path: &str, target: SocketAddr, last_event_id: Option<&str>, token: Option<&str>) -> String {
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let authorization = token.map_or(String::new(), |token| format!("Authorization: Bearer {token}\r\n"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: text/event-stream\r\nUser-Agent: sluice-bench\r\n\
         {resume}{authorization}\r\n"
    )
}

/// One client's bookkeeping, kept across reconnects.
struct ClientBooks {
    lanes: LaneTracker,
    /// With `--lane-per-connection`: the only lane this client may receive (tracked as lane 0).
    own_lane: Option<u32>,
    cursors: Option<CursorTracker>,
    /// The last id received, sent back as `Last-Event-ID` (kept only with `--reconnect`).
    last_id: Option<String>,
    /// Wall clock of the latest resume (µs); events sent before it were replayed.
    resumed_at_us: u64,
}

impl ClientBooks {
    fn new(args: &HoldArgs, global_index: u32) -> Self {
        let own_lane = (args.lane_per_connection && args.lanes > 0).then(|| global_index % args.lanes);
        Self {
            lanes: LaneTracker::new(if own_lane.is_some() { 1 } else { args.lanes as usize }),
            own_lane,
            cursors: args.check_cursors.then(CursorTracker::default),
            last_id: args.last_event_id.clone().or_else(|| args.reconnect.then(String::new)),
            resumed_at_us: 0,
        }
    }

    /// Events published after the last one this client saw.
    fn missing_tail(&self, published: &[u64]) -> u64 {
        match self.own_lane {
            Some(lane) => self
                .lanes
                .missing_tail(&[published.get(lane as usize).copied().unwrap_or(0)]),
            None => self.lanes.missing_tail(published),
        }
    }

    fn remember_id(&mut self, id: &[u8]) {
        if let Some(last) = &mut self.last_id {
            last.clear();
            last.push_str(&String::from_utf8_lossy(id));
        }
    }
}

/// One response's body decoding.
struct BodyDecoder {
    chunked: Option<ChunkedDecoder>,
    decoded: Vec<u8>,
    sse: SseParser,
}

impl BodyDecoder {
    /// Decodes `received` body bytes and tallies the frames they complete.
    fn absorb(&mut self, shared: &Shared, books: &mut ClientBooks, received: &[u8]) -> Result<(), String> {
        let body: &[u8] = match &mut self.chunked {
            Some(decoder) => {
                self.decoded.clear();
                decoder.decode(received, &mut self.decoded)?;
                &self.decoded
            }
            None => received,
        };
        if body.is_empty() {
            return Ok(());
        }
        // One clock reading per read: the frames of one read arrived together.
        let now_us = unix_micros();
        let track = shared.args.lanes > 0;
        let mut tally = shared.tally.borrow_mut();
        let tally = &mut *tally;
        tally.counts.body_bytes += body.len() as u64;
        self.sse.feed(body, &mut |frame| match frame {
            Frame::Event { data, id } => {
                tally.counts.events += 1;
                if let Some(id) = id {
                    if let Some(cursors) = &mut books.cursors {
                        match cursors.observe(id) {
                            CursorStep::First | CursorStep::Next => {}
                            CursorStep::Gap(skipped) => tally.cursor_gaps += skipped,
                            CursorStep::Duplicate => tally.cursor_duplicates += 1,
                            CursorStep::Unreadable => tally.cursor_unreadable += 1,
                        }
                    }
                    books.remember_id(id);
                }
                if !track {
                    return;
                }
                let Some(probe) = parse_probe(data) else {
                    return;
                };
                tally.counts.probes += 1;
                tally
                    .latency
                    .saturating_record(now_us.saturating_sub(probe.sent_us).max(1));
                if probe.sent_us < books.resumed_at_us {
                    tally.counts.replayed += 1;
                }
                let Some(lane) = probe.lane.checked_sub(shared.args.lane_offset) else {
                    tally.unknown_lane += 1;
                    return;
                };
                let lane = match books.own_lane {
                    None => lane,
                    Some(own) if own == lane => 0,
                    Some(_) => {
                        tally.unknown_lane += 1;
                        return;
                    }
                };
                match books.lanes.observe(lane, probe.seq) {
                    Observation::InOrder => {}
                    Observation::Gap(skipped) => tally.gaps += skipped,
                    Observation::Duplicate => tally.duplicates += 1,
                    Observation::UnknownLane => tally.unknown_lane += 1,
                }
            }
            Frame::IdOnly { id } | Frame::Control { id: Some(id) } => books.remember_id(id),
            Frame::Control { id: None } => {}
            Frame::Comment => tally.counts.heartbeats += 1,
            Frame::Retry => {}
        });
        Ok(())
    }
}

/// Builds the holder's single-threaded runtime and runs it; used by `main` for `hold`.
pub fn run_blocking(args: HoldArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the holder runtime")?
        .block_on(run(args))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    fn hold_args(flags: &[&str]) -> HoldArgs {
        use clap::Parser as _;
        let argv = ["sluice-bench", "hold"].iter().chain(flags);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Hold(args) => args,
            _ => unreachable!("parsed as hold"),
        }
    }

    /// Accepts `count` connections, answers each with a one-event stream, and returns the
    /// request heads; the first `count - 1` are closed at once (so the client reconnects), the
    /// last stays open until the returned socket is dropped.
    async fn serve_heads(listener: tokio::net::TcpListener, count: usize) -> (Vec<String>, TcpStream) {
        let mut heads = Vec::new();
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                let n = socket.read(&mut buffer).await.unwrap();
                assert!(n > 0, "the client hung up mid-request");
                head.extend_from_slice(&buffer[..n]);
            }
            heads.push(String::from_utf8(head).unwrap());
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nid: c1\ndata: {}\n\n")
                .await
                .unwrap();
            if heads.len() == count {
                return (heads, socket);
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sends_its_token_on_the_first_request_and_on_every_reconnect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let args = hold_args(&[
            "--target",
            &target,
            "--path",
            "/v1/streams/s",
            "--connections",
            "1",
            "--source-addrs",
            "127.0.0.1",
            "--reconnect",
            "--reconnect-jitter",
            "0s",
        ]);
        let shared = Rc::new(Shared {
            args,
            tokens: vec!["token-0".to_owned()],
            tally: RefCell::new(Tally::default()),
            scratch: RefCell::new(vec![0; 4096]),
        });
        let (stop_tx, stop_rx) = watch::channel(None);
        let heads = LocalSet::new()
            .run_until(async {
                let client = tokio::task::spawn_local(client(0, Rc::clone(&shared), stop_rx));
                let served = tokio::time::timeout(Duration::from_secs(10), serve_heads(listener, 3)).await;
                stop_tx.send(Some(Rc::new(Vec::new()))).unwrap();
                client.await.unwrap();
                served.expect("the client reconnected twice").0
            })
            .await;
        for head in &heads {
            assert!(head.contains("\r\nAuthorization: Bearer token-0\r\n"), "{head}");
        }
        assert!(heads[2].contains("\r\nLast-Event-ID: c1\r\n"), "{}", heads[2]);
    }

    #[test]
    fn a_request_without_a_token_has_no_authorization_header() {
        let target: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(!request_head("/v1/streams/s", target, None, None).contains("Authorization"));
    }

    #[test]
    fn a_tokens_file_must_hold_a_token_per_connection() {
        let path = std::env::temp_dir().join(format!("sluice-bench-tokens-{}", std::process::id()));
        std::fs::write(&path, "a\nb").unwrap();
        assert_eq!(read_tokens(&path, 2).unwrap(), ["a", "b"]);
        let short = read_tokens(&path, 3).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(short.contains("2 tokens for 3 connections"), "{short}");
    }

    #[test]
    fn histograms_survive_the_trip_through_pairs() {
        let mut one = latency_histogram();
        let mut two = latency_histogram();
        for micros in [150, 900, 1_200, 45_000, 2_000_000] {
            one.record(micros).unwrap();
            two.record(micros * 3).unwrap();
        }
        let mut merged = latency_histogram();
        add_pairs(&mut merged, &histogram_pairs(&one));
        add_pairs(&mut merged, &histogram_pairs(&two));
        let mut direct = one.clone();
        direct.add(&two).unwrap();
        assert_eq!(merged.len(), 10);
        for quantile in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(merged.value_at_quantile(quantile), direct.value_at_quantile(quantile));
        }
    }

    #[test]
    fn messages_round_trip_as_json_lines() {
        let status = HolderMessage::Status(HolderCounts {
            attempted: 3,
            established: 2,
            failed: 1,
            ..HolderCounts::default()
        });
        let line = serde_json::to_string(&status).unwrap();
        assert!(line.starts_with(r#"{"type":"status","#), "{line}");
        let HolderMessage::Status(back) = serde_json::from_str(&line).unwrap() else {
            panic!("not a status: {line}");
        };
        assert_eq!(back.open(), 2);

        let mut errors = BTreeMap::new();
        count_error(&mut errors, "http 503".into(), "first".into());
        count_error(&mut errors, "http 503".into(), "second".into());
        let last = HolderMessage::Final(Box::new(HolderFinal {
            gaps: 4,
            errors,
            latency_us: vec![(100, 2)],
            ..HolderFinal::default()
        }));
        let line = serde_json::to_string(&last).unwrap();
        let HolderMessage::Final(back) = serde_json::from_str(&line).unwrap() else {
            panic!("not a final: {line}");
        };
        assert_eq!(back.gaps, 4);
        assert_eq!(back.errors["http 503"].count, 2);
        assert_eq!(back.errors["http 503"].example, "first");
    }

    #[test]
    fn jitter_spreads_pauses_within_the_bound() {
        let max = Duration::from_secs(2);
        let pauses: Vec<Duration> = (0..1_000).map(|client| jitter(max, client, 1)).collect();
        assert!(pauses.iter().all(|&pause| pause < max));
        let mean = pauses.iter().sum::<Duration>().as_secs_f64() / 1_000.0;
        assert!((0.9..1.1).contains(&mean), "mean pause {mean}s");
        assert_eq!(jitter(max, 7, 3), jitter(max, 7, 3));
        assert_ne!(jitter(max, 7, 3), jitter(max, 7, 4));
        assert_eq!(jitter(Duration::ZERO, 7, 3), Duration::ZERO);
    }

    #[test]
    fn open_counts_reconnected_clients() {
        let counts = HolderCounts {
            established: 10,
            reconnects: 7,
            closed: 10,
            ..HolderCounts::default()
        };
        assert_eq!(counts.open(), 7);
    }
}
