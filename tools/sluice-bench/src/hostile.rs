//! The `hostile` scenario: clients that never read, on large events, beside normal subscribers.
//!
//! 1. `--subscribers` normal subscribers (from latest) connect and stay.
//! 2. `--backlog` events of `--payload-bytes` are published; the gateway's feed holds them.
//! 3. The gateway's RSS is the baseline. `--stalled` clients then open `?from=earliest` on raw
//!    sockets with a 4 KiB receive buffer and never read a byte.
//! 4. `--rate` events/s are published for `--duration` while the RSS is sampled every 200 ms.
//!
//! Reported: the RSS growth per stalled client ((peak − baseline − what the ring grew by with
//! the live events) ÷ stalled), and the normal
//! subscribers' publish→receive latency and losses (sequence gaps) over the whole run. The
//! stalled clients are closed by the bench at the end; `--write-timeout` is the gateway's.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

use crate::cli::parse_positive_duration;
use crate::fanout::parse_rate;
use crate::hold::ErrorSample;
use crate::publish::{EventArgs, Publisher};
use crate::report::{format_bytes, format_count, format_duration, LatencySummary, Table};
use crate::rig::{
    header, publish_with_progress, write_report, ClientArgs, Fleet, FleetPlan, Rig, RigArgs, RunStart, ServerKind,
};

/// Bytes a ring entry holds beyond its event's data: the frame's id and field names, the
/// entry's fields (an estimate; it is small against the large events this scenario uses).
const RING_ENTRY_OVERHEAD: u64 = 300;

/// Flags of `sluice-bench hostile`.
#[derive(Debug, Clone, clap::Args)]
pub struct HostileArgs {
    /// Clients that open `?from=earliest` and never read.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub stalled: u32,

    /// Normal subscribers beside them.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub subscribers: u32,

    /// Events on the stream before the stalled clients come.
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub backlog: u64,

    /// Events per second published while the stalled clients sit.
    #[arg(long, value_name = "N", default_value_t = 10.0, value_parser = parse_rate)]
    pub rate: f64,

    /// How long to publish at `--rate`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub duration: Duration,

    #[command(flatten)]
    pub events: EventArgs,

    #[command(flatten)]
    pub clients: ClientArgs,

    #[command(flatten)]
    pub rig: RigArgs,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// The measurements of one run, as printed and written to JSON.
#[derive(Debug, Serialize)]
struct HostileResult {
    stalled: u32,
    subscribers: u32,
    payload_bytes: usize,
    events_published: u64,
    gateway_rss_baseline_bytes: Option<u64>,
    gateway_rss_peak_bytes: Option<u64>,
    /// What the ring grew by with the live events (estimated from their size), shared.
    ring_growth_bytes: u64,
    /// (peak − baseline − ring growth) ÷ stalled clients.
    rss_per_stalled_client_bytes: Option<u64>,
    /// Connections the gateway closed for `--write-timeout` during the run.
    write_timeouts: f64,
    deliveries: u64,
    gaps: u64,
    missing_tail: u64,
    duplicates: u64,
    latency: LatencySummary,
    errors: std::collections::BTreeMap<String, ErrorSample>,
}

/// Runs the scenario under the `--timeout` limit.
pub async fn run(args: HostileArgs) -> anyhow::Result<()> {
    let limit = args.rig.timeout;
    match tokio::time::timeout(limit, run_inner(args)).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("the run exceeded --timeout {} and was stopped", format_duration(limit)),
    }
}

async fn run_inner(args: HostileArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rig.server == ServerKind::Gateway,
        "the hostile scenario measures the gateway; it has no baseline form"
    );
    anyhow::ensure!(
        args.rig.auth == crate::auth::AuthMode::None,
        "the hostile scenario's stalled clients send no token: run it with --auth none"
    );
    let start = RunStart::now();
    let mut rig = Rig::start(&args.rig, args.stalled + args.subscribers + 100).await?;
    rig.create_stream().await?;
    rig.preflight_subscribe("").await?;

    let mut plan = FleetPlan::new(
        &rig,
        rig.stream_path(""),
        args.subscribers,
        &args.clients,
        args.rig.timeout + Duration::from_secs(30),
    );
    plan.lanes = 1;
    let mut fleet = Fleet::spawn(&plan)?;
    fleet.wait_established(&mut rig, Duration::from_secs(60)).await?;

    eprintln!(
        "publishing a backlog of {} events of {}…",
        args.backlog,
        format_bytes(args.events.payload_bytes as u64)
    );
    let fill_rate = (args.backlog as f64).max(1.0);
    let filler = Publisher::new(&rig, &args.events, fill_rate, Duration::from_secs(1), 1).await?;
    let backlog = publish_with_progress(&mut rig, Some(&fleet), filler).await?;
    let subscribers = u64::from(args.subscribers);
    fleet.drain(backlog.events * subscribers, Duration::from_secs(30)).await;
    let baseline = rig.gateway_rss();

    eprintln!("opening {} clients that never read…", args.stalled);
    let mut stalled = Vec::new();
    for _ in 0..args.stalled {
        stalled.push(stalled_client(rig.gateway_addr(), &rig.stream_path("from=earliest")).await?);
    }

    let live = Publisher::new(&rig, &args.events, args.rate, args.duration, 1)
        .await?
        .continuing(&backlog);
    let mut live_run = tokio::spawn(live.run());
    let mut peak = baseline;
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    let started = Instant::now();
    let mut next_print = started + Duration::from_secs(1);
    let published = loop {
        tokio::select! {
            done = &mut live_run => break done?,
            _ = ticks.tick() => {
                rig.ensure_running()?;
                peak = peak.max(rig.gateway_rss());
                if Instant::now() >= next_print {
                    next_print += Duration::from_secs(1);
                    eprintln!(
                        "  {:>3}s: gateway RSS {}",
                        started.elapsed().as_secs(),
                        rig.gateway_rss().map_or("?".to_owned(), format_bytes)
                    );
                }
            }
        }
    };
    fleet
        .drain(published.events * subscribers, Duration::from_secs(30))
        .await;
    peak = peak.max(rig.gateway_rss());
    let metrics = rig.metrics(0).await.unwrap_or_default();
    let tally = fleet.stop(&published.per_lane).await?;
    drop(stalled);

    // The ring keeps every live event (shared by all connections): its growth is not the
    // stalled clients' cost. Each frame is the data plus an id and the field names.
    let ring_growth = (published.events - backlog.events) * (args.events.payload_bytes as u64 + RING_ENTRY_OVERHEAD);
    let growth = peak
        .zip(baseline)
        .map(|(p, b)| p.saturating_sub(b).saturating_sub(ring_growth));
    let result = HostileResult {
        stalled: args.stalled,
        subscribers: args.subscribers,
        payload_bytes: args.events.payload_bytes,
        events_published: published.events,
        gateway_rss_baseline_bytes: baseline,
        gateway_rss_peak_bytes: peak,
        ring_growth_bytes: ring_growth,
        rss_per_stalled_client_bytes: growth.map(|g| g / u64::from(args.stalled)),
        write_timeouts: crate::procfs::sum_metric(
            &metrics,
            "sluice_gateway_disconnects_total",
            "reason=\"write_timeout\"",
        ),
        deliveries: tally.counts.probes,
        gaps: tally.gaps,
        missing_tail: tally.missing_tail,
        duplicates: tally.duplicates,
        latency: LatencySummary::from_histogram(&tally.latency),
        errors: tally.errors.clone(),
    };
    let workload = format!(
        "{} clients on `?from=earliest` that never read, beside {} subscribers; {} events of {} \
         before them, then {}/s for {}",
        args.stalled,
        args.subscribers,
        args.backlog,
        format_bytes(args.events.payload_bytes as u64),
        args.rate,
        format_duration(args.duration),
    );
    print!("{}", header("hostile", &start, &rig, &workload));
    print!("\n{}", results_table(&result));
    if let Some(path) = &args.json {
        let settings = serde_json::json!({
            "stalled": args.stalled,
            "subscribers": args.subscribers,
            "backlog": args.backlog,
            "rate": args.rate,
            "duration_secs": args.duration.as_secs_f64(),
            "payload_bytes": args.events.payload_bytes,
            "publish_via": args.events.publish_via,
            "gateway_args": args.rig.gateway_args,
        });
        write_report(path, "hostile", &start, &rig, settings, &result)?;
    }
    rig.stop().await
}

/// A client that sends its request and never reads; its small receive buffer fills at once.
async fn stalled_client(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
        .await?;
    Ok(stream)
}

fn results_table(result: &HostileResult) -> String {
    let bytes = |value: Option<u64>| value.map_or("-".to_owned(), format_bytes);
    let mut table = Table::new(["measure", "value"]);
    table.row([
        "gateway RSS: baseline / peak".to_owned(),
        format!(
            "{} / {}",
            bytes(result.gateway_rss_baseline_bytes),
            bytes(result.gateway_rss_peak_bytes)
        ),
    ]);
    table.row([
        "ring growth (live events, shared)".to_owned(),
        format_bytes(result.ring_growth_bytes),
    ]);
    table.row([
        "RSS per stalled client (aim <= 256 KiB)".to_owned(),
        bytes(result.rss_per_stalled_client_bytes),
    ]);
    table.row([
        "normal subscribers: latency p50 / p99".to_owned(),
        format!(
            "{:.1} ms / {:.1} ms",
            result.latency.p50_us as f64 / 1000.0,
            result.latency.p99_us as f64 / 1000.0
        ),
    ]);
    table.row([
        "normal subscribers: deliveries, gaps / missing / duplicates".to_owned(),
        format!(
            "{}, {} / {} / {}",
            format_count(result.deliveries),
            format_count(result.gaps),
            format_count(result.missing_tail),
            format_count(result.duplicates)
        ),
    ]);
    table.row([
        "closed for --write-timeout".to_owned(),
        format_count(result.write_timeouts as u64),
    ]);
    table.render()
}
