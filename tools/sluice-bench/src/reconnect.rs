//! The `reconnect` scenario: a reconnect storm after a gateway dies.
//!
//! Two gateways, A and B, read one broker. `--connections` clients subscribe to A while
//! events flow (`--rate`, open loop). After `--kill-after`, the bench SIGKILLs A, as a pod
//! that crashes or is evicted dies: no drain, no goodbye. Every client sees its stream end,
//! pauses (jittered uniformly over `--reconnect-jitter`, as browsers honour the gateway's
//! jittered `retry:`) and reconnects to B carrying the last id it received as
//! `Last-Event-ID`, while the events keep coming.
//!
//! Measured:
//! - **time until all are back**: from the kill to the last client's `200` from B (the
//!   holders stamp each reconnect with the wall clock), and each client's outage;
//! - **replayed events**: events delivered after a resume that were published before it,
//!   i.e. the history B served from its ring or from Kafka, and their rate over the storm;
//! - **gaps and duplicates**, by each lane's sequence numbers *and* by cursor (each id must
//!   move the stream on by exactly one offset, across the resume too): the contract says zero;
//! - **where resumes were served from**: B's `sluice_gateway_resumes_total` by `source`
//!   (`memory`: the ring every pod keeps; `kafka`: a catch-up read).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde::Serialize;
use tokio::time::Instant;

use crate::cli::{parse_duration, parse_positive_duration};
use crate::fanout::{parse_rate, ramp_timeout};
use crate::hold::ErrorSample;
use crate::procfs::sum_metric;
use crate::publish::{EventArgs, Publisher};
use crate::report::{format_count, format_duration, format_micros, format_rate, LatencySummary, Table};
use crate::rig::{
    cpu_seconds, header, write_report, ClientArgs, Fleet, FleetPlan, Rig, RigArgs, RunStart, ServerKind,
    MAX_CONNECTIONS_PER_PROCESS,
};

/// Flags of `sluice-bench reconnect`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconnectArgs {
    /// Clients, all on gateway A until it dies.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNECTIONS_PER_PROCESS)))]
    pub connections: u32,

    /// Events published per second, before, during and after the storm.
    #[arg(long, value_name = "N", default_value_t = 20.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Event keys (lanes) the events rotate over.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub lanes: u32,

    /// Publishing time before gateway A is killed.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_duration)]
    pub kill_after: Duration,

    /// Publishing time after the kill: the storm window. Clients not back by its end count as
    /// not back.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_positive_duration)]
    pub storm: Duration,

    /// Longest pause of a client before it reconnects; pauses are spread uniformly over it.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub reconnect_jitter: Duration,

    /// Pause between the last connection established and the first event published.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_positive_duration)]
    pub settle: Duration,

    /// After publishing, how long to wait at most for the last deliveries.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub drain: Duration,

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
struct ReconnectResult {
    connections_requested: u32,
    established: u64,
    failed: u64,
    /// Clients connected to A when it was killed.
    on_a_at_kill: u64,
    /// Clients whose stream ended (A's death).
    lost: u64,
    reconnected: u64,
    reconnect_failures: u64,
    /// Open at the end of the storm window.
    open_after_storm: u64,
    all_back: bool,
    /// Kill → the last client's `200` from B, in seconds.
    secs_until_all_back: Option<f64>,
    /// Per client: its stream ending → its next `200`.
    outage: LatencySummary,
    events_published: u64,
    deliveries_expected: u64,
    deliveries: u64,
    /// Events delivered after a resume that were published before it.
    replayed: u64,
    /// Replayed events ÷ time until all were back.
    replayed_per_sec: Option<f64>,
    gaps: u64,
    missing_tail: u64,
    duplicates: u64,
    cursor_gaps: u64,
    cursor_duplicates: u64,
    /// Gateway B's `sluice_gateway_resumes_total`, by source.
    resumes_from_memory: f64,
    resumes_from_kafka: f64,
    resumes_memory_share: Option<f64>,
    latency: LatencySummary,
    gateway_b_cpu_secs: Option<f64>,
    errors: std::collections::BTreeMap<String, ErrorSample>,
}

/// Runs the scenario under the `--timeout` limit.
pub async fn run(args: ReconnectArgs) -> anyhow::Result<()> {
    let limit = args.rig.timeout;
    match tokio::time::timeout(limit, run_inner(args)).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("the run exceeded --timeout {} and was stopped", format_duration(limit)),
    }
}

async fn run_inner(args: ReconnectArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rig.server == ServerKind::Gateway,
        "the reconnect storm needs two gateways; it has no baseline form"
    );
    let start = RunStart::now();
    let max_connections = args.rig.gateway_max_connections.unwrap_or(args.connections + 1_000);
    let mut rig = Rig::start_many(&args.rig, max_connections, 2).await?;
    rig.create_stream().await?;
    rig.preflight_subscribe("").await?;

    eprintln!(
        "opening {} subscriptions on gateway A at {}/s…",
        format_count(u64::from(args.connections)),
        format_count(u64::from(args.clients.ramp_rate)),
    );
    let mut plan = FleetPlan::new(
        &rig,
        rig.stream_path(""),
        args.connections,
        &args.clients,
        args.rig.timeout + Duration::from_secs(30),
    );
    plan.lanes = args.lanes;
    plan.check_cursors = true;
    plan.reconnect_jitter = Some(args.reconnect_jitter);
    plan.status_interval = Duration::from_millis(100);
    let mut fleet = Fleet::spawn(&plan)?;
    fleet
        .wait_established(&mut rig, ramp_timeout(args.connections, &args.clients))
        .await?;
    tokio::time::sleep(args.settle).await;
    let at_start = fleet.counts();

    let duration = args.kill_after + args.storm;
    let publisher = Publisher::new(&rig, &args.events, args.rate, duration, args.lanes).await?;
    let sent = publisher.progress();
    let mut publishing = tokio::spawn(publisher.run());
    let publish_start = Instant::now();
    eprintln!(
        "publishing {} events/s; gateway A dies in {}…",
        format_rate(args.rate),
        format_duration(args.kill_after)
    );

    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    let mut next_print = publish_start + Duration::from_secs(1);
    let mut kill: Option<(u64, u64)> = None; // (wall clock µs, clients on A)
    let mut cpu_b_before = None;
    let published = loop {
        tokio::select! {
            done = &mut publishing => break done.context("the publisher task failed")?,
            _ = ticks.tick() => {}
        }
        let now = Instant::now();
        if kill.is_none() && now - publish_start >= args.kill_after {
            let on_a = fleet.counts().open();
            cpu_b_before = rig.server_cpu(1);
            let at = unix_micros();
            rig.kill_server(0).await?;
            eprintln!("  killed gateway A (SIGKILL) with {} clients on it", format_count(on_a));
            kill = Some((at, on_a));
        }
        rig.ensure_running()?;
        if now >= next_print {
            next_print += Duration::from_secs(1);
            let counts = fleet.counts();
            eprintln!(
                "  {:>3}s: {} events sent, {} open, {} reconnected, {} replayed",
                (now - publish_start).as_secs(),
                format_count(sent.load(Ordering::Relaxed)),
                format_count(counts.open()),
                format_count(counts.reconnects),
                format_count(counts.replayed),
            );
        }
    };
    let (kill_us, on_a) = kill.context("the publisher ended before the kill")?;
    let after_storm = fleet.counts();

    let expected = published.events * at_start.open();
    fleet.drain(expected, args.drain).await;
    let cpu_b = cpu_seconds(cpu_b_before, rig.server_cpu(1));
    let metrics = rig.metrics(1).await.unwrap_or_default();
    let fleet_result = fleet.stop(&published.per_lane).await?;

    let counts = fleet_result.counts;
    let all_back = after_storm.reconnects >= on_a && after_storm.open() >= on_a;
    let secs_until_all_back = all_back.then(|| counts.last_reconnect_unix_us.saturating_sub(kill_us) as f64 / 1e6);
    let memory = sum_metric(&metrics, "sluice_gateway_resumes_total", "source=\"memory\"");
    let kafka = sum_metric(&metrics, "sluice_gateway_resumes_total", "source=\"kafka\"");
    let result = ReconnectResult {
        connections_requested: args.connections,
        established: at_start.established,
        failed: at_start.failed,
        on_a_at_kill: on_a,
        lost: counts.closed,
        reconnected: counts.reconnects,
        reconnect_failures: counts.reconnect_failures,
        open_after_storm: after_storm.open(),
        all_back,
        secs_until_all_back,
        outage: LatencySummary::from_histogram(&fleet_result.outage),
        events_published: published.events,
        deliveries_expected: expected,
        deliveries: counts.probes,
        replayed: counts.replayed,
        replayed_per_sec: secs_until_all_back
            .filter(|&secs| secs > 0.0)
            .map(|secs| counts.replayed as f64 / secs),
        gaps: fleet_result.gaps,
        missing_tail: fleet_result.missing_tail,
        duplicates: fleet_result.duplicates,
        cursor_gaps: fleet_result.cursor_gaps,
        cursor_duplicates: fleet_result.cursor_duplicates,
        resumes_from_memory: memory,
        resumes_from_kafka: kafka,
        resumes_memory_share: (memory + kafka > 0.0).then(|| memory / (memory + kafka)),
        latency: LatencySummary::from_histogram(&fleet_result.latency),
        gateway_b_cpu_secs: cpu_b,
        errors: fleet_result.errors.clone(),
    };

    let workload = format!(
        "{} clients on gateway A of 2, stream `{}`; {} events/s over {} keys via {:?}; A SIGKILLed after \
         {}; clients reconnect to B with Last-Event-ID after a pause uniform over 0..{}; storm window {}",
        format_count(u64::from(args.connections)),
        rig.stream,
        format_rate(args.rate),
        args.lanes,
        args.events.publish_via,
        format_duration(args.kill_after),
        format_duration(args.reconnect_jitter),
        format_duration(args.storm),
    );
    print!("{}", header("reconnect", &start, &rig, &workload));
    print!("\n{}", results_table(&result));
    if !fleet_result.errors.is_empty() {
        print!("\nconnection closes and failures:\n{}", fleet_result.error_lines());
    }
    if let Some(path) = &args.json {
        let settings = serde_json::json!({
            "connections": args.connections,
            "rate": args.rate,
            "lanes": args.lanes,
            "kill_after_secs": args.kill_after.as_secs_f64(),
            "storm_secs": args.storm.as_secs_f64(),
            "reconnect_jitter_secs": args.reconnect_jitter.as_secs_f64(),
            "publish_via": args.events.publish_via,
            "ramp_rate": args.clients.ramp_rate,
            "client_processes": args.clients.client_processes,
            "gateway_args": args.rig.gateway_args,
        });
        write_report(path, "reconnect", &start, &rig, settings, &result)?;
    }
    rig.stop().await?;
    Ok(())
}

fn results_table(result: &ReconnectResult) -> String {
    let mut table = Table::new(["measure", "value"]);
    table.row([
        "clients on A when killed".to_owned(),
        format!(
            "{} of {} requested",
            format_count(result.on_a_at_kill),
            format_count(u64::from(result.connections_requested))
        ),
    ]);
    table.row([
        "streams lost / reconnected".to_owned(),
        format!("{} / {}", format_count(result.lost), format_count(result.reconnected)),
    ]);
    table.row([
        "reconnect attempts that failed".to_owned(),
        format_count(result.reconnect_failures),
    ]);
    table.row([
        "time until all back".to_owned(),
        result.secs_until_all_back.map_or(
            format!("not all back ({} open)", format_count(result.open_after_storm)),
            |secs| format!("{secs:.2} s"),
        ),
    ]);
    table.row([
        "outage per client p50 / p99 / max".to_owned(),
        format!(
            "{} / {} / {}",
            format_micros(result.outage.p50_us),
            format_micros(result.outage.p99_us),
            format_micros(result.outage.max_us)
        ),
    ]);
    table.row([
        "events replayed (sent before the resume)".to_owned(),
        format!(
            "{} = {}/s over the storm",
            format_count(result.replayed),
            result.replayed_per_sec.map_or("-".to_owned(), format_rate)
        ),
    ]);
    table.row([
        "deliveries".to_owned(),
        format!(
            "{} of {} expected",
            format_count(result.deliveries),
            format_count(result.deliveries_expected)
        ),
    ]);
    table.row([
        "gaps / duplicates (sequence)".to_owned(),
        format!("{} / {}", format_count(result.gaps), format_count(result.duplicates)),
    ]);
    table.row([
        "gaps / duplicates (cursor)".to_owned(),
        format!(
            "{} / {}",
            format_count(result.cursor_gaps),
            format_count(result.cursor_duplicates)
        ),
    ]);
    table.row([
        "B's resumes: memory / Kafka".to_owned(),
        format!(
            "{} / {} ({})",
            format_count(result.resumes_from_memory as u64),
            format_count(result.resumes_from_kafka as u64),
            result
                .resumes_memory_share
                .map_or("-".to_owned(), |share| format!("{:.1}% from memory", share * 100.0))
        ),
    ]);
    table.row([
        "gateway B CPU-s from the kill on".to_owned(),
        result
            .gateway_b_cpu_secs
            .map_or("-".to_owned(), |cpu| format!("{cpu:.2}")),
    ]);
    table.render()
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}
