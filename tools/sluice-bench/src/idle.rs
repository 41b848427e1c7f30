//! The `idle` scenario: what an open, quiet SSE connection costs the gateway.
//!
//! Most SSE connections spend their lives waiting, so the number that sizes a gateway fleet
//! is memory per idle connection. The bench starts the gateway as its own process, opens one
//! subscription to start the stream's feed (its Kafka consumer and ring are per stream, not
//! per connection, and must not be charged to the connections), then measures the gateway's
//! resident memory: the **baseline**. Holder processes then open `--connections` at
//! `--ramp-per-sec`, and hold them for `--hold` while RSS is sampled once a second; the last
//! sample, minus the baseline, divided by the connections established, is the user-space
//! memory per idle connection. CPU while idle (heartbeats and timers only) is the gateway's
//! CPU time over the hold window.
//!
//! The kernel's share — socket structures and buffers — is not in any process's RSS. The
//! report gives the change in `/proc/net/sockstat`'s TCP buffer memory and in `/proc/meminfo`'s
//! slab total; both are system-wide and loopback puts both ends on this machine, so their
//! per-connection figures cover client *and* server socket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tokio::time::Instant;

use crate::cli::parse_positive_duration;
use crate::fanout::ramp_timeout;
use crate::procfs::KernelSocketMemory;
use crate::report::{format_bytes, format_count, format_duration, Table};
use crate::rig::{
    cpu_seconds, header, write_report, ClientArgs, Fleet, FleetPlan, Rig, RigArgs, RunStart,
    MAX_CONNECTIONS_PER_PROCESS,
};

/// Flags of `sluice-bench idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// SSE connections to open and hold, all on one stream of one gateway.
    /// (The gateway's and each helper's open-file limit bound it: spread the helpers with
    /// `--client-processes`.)
    #[arg(long, value_name = "N", default_value_t = 15_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNECTIONS_PER_PROCESS)))]
    pub connections: u32,

    /// How long to hold the connections once all are established; RSS is sampled each second
    /// and the last sample counts. A minute sees four of the gateway's 15 s heartbeats.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_positive_duration)]
    pub hold: Duration,

    /// How long to let the gateway settle after the preflight subscription, before the
    /// baseline RSS is read.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_positive_duration)]
    pub settle: Duration,

    #[command(flatten)]
    pub clients: ClientArgs,

    #[command(flatten)]
    pub rig: RigArgs,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// Runs the scenario under the `--timeout` limit.
pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let limit = args.rig.timeout;
    match tokio::time::timeout(limit, run_inner(args)).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("the run exceeded --timeout {} and was stopped", format_duration(limit)),
    }
}

/// The measurements of one run, as printed and written to JSON.
#[derive(Debug, Serialize)]
struct IdleResult {
    connections_requested: u32,
    established: u64,
    failed: u64,
    closed_during_hold: u64,
    ramp_secs: f64,
    hold_secs: f64,
    gateway_connections_active: Option<f64>,
    gateway_rss_start_bytes: Option<u64>,
    gateway_rss_baseline_bytes: Option<u64>,
    /// RSS samples during the hold, one per second; the last is `gateway_rss_held_bytes`.
    gateway_rss_samples_bytes: Vec<u64>,
    gateway_rss_held_bytes: Option<u64>,
    rss_per_connection_bytes: Option<f64>,
    gateway_cpu_percent_idle: Option<f64>,
    kernel_before: KernelSocketMemory,
    kernel_after: KernelSocketMemory,
    /// Change in TCP buffer memory per connection, both ends together.
    kernel_tcp_buffer_per_connection_bytes: Option<f64>,
    /// Change in slab memory per connection, both ends together.
    kernel_slab_per_connection_bytes: Option<f64>,
    heartbeats_received: u64,
    errors: std::collections::BTreeMap<String, crate::hold::ErrorSample>,
}

async fn run_inner(args: IdleArgs) -> anyhow::Result<()> {
    let start = RunStart::now();
    let max_connections = args.rig.gateway_max_connections.unwrap_or(args.connections + 1_000);
    let mut rig = Rig::start(&args.rig, max_connections).await?;
    let rss_start = rig.gateway_rss();
    rig.create_stream().await?;
    rig.preflight_subscribe("").await?;
    tokio::time::sleep(args.settle).await;
    let rss_baseline = rig.gateway_rss();
    let kernel_before = KernelSocketMemory::read();
    eprintln!(
        "gateway ready: RSS {} at start, {} with the stream's feed running",
        rss_start.map_or("?".into(), format_bytes),
        rss_baseline.map_or("?".into(), format_bytes)
    );

    eprintln!(
        "opening {} connections at {}/s over {} helper processes…",
        format_count(u64::from(args.connections)),
        format_count(u64::from(args.clients.ramp_rate)),
        args.clients.client_processes
    );
    let mut fleet = Fleet::spawn(&FleetPlan::new(
        &rig,
        rig.stream_path(""),
        args.connections,
        &args.clients,
        args.rig.timeout + Duration::from_secs(30),
    ))?;
    let ramp = fleet
        .wait_established(&mut rig, ramp_timeout(args.connections, &args.clients))
        .await?;
    let at_hold = fleet.counts();

    eprintln!("holding for {}…", format_duration(args.hold));
    let cpu_before = rig.cpu().gateway;
    let hold_start = Instant::now();
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval_at(hold_start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        let now = ticks.tick().await.min(hold_start + args.hold);
        rig.ensure_running()?;
        if let Some(rss) = rig.gateway_rss() {
            samples.push(rss);
        }
        let counts = fleet.counts();
        eprintln!(
            "  hold {:>3}s: {} open, gateway RSS {}",
            (now - hold_start).as_secs(),
            format_count(counts.open()),
            samples.last().map_or("?".into(), |&rss| format_bytes(rss)),
        );
        if now >= hold_start + args.hold {
            break;
        }
    }
    let hold_secs = (Instant::now() - hold_start).as_secs_f64();
    let cpu_after = rig.cpu().gateway;
    let kernel_after = KernelSocketMemory::read();
    let active = rig.connections_active().await;
    let fleet_result = fleet.stop(&[]).await?;

    let established = at_hold.established;
    let per_connection = |before: Option<u64>, after: Option<u64>| {
        let (before, after) = (before?, after?);
        (established > 0).then(|| (after as f64 - before as f64) / established as f64)
    };
    let rss_held = samples.last().copied();
    let result = IdleResult {
        connections_requested: args.connections,
        established,
        failed: at_hold.failed,
        closed_during_hold: fleet_result.counts.closed.saturating_sub(at_hold.closed),
        ramp_secs: ramp.as_secs_f64(),
        hold_secs,
        gateway_connections_active: active,
        gateway_rss_start_bytes: rss_start,
        gateway_rss_baseline_bytes: rss_baseline,
        gateway_rss_samples_bytes: samples,
        gateway_rss_held_bytes: rss_held,
        rss_per_connection_bytes: per_connection(rss_baseline, rss_held),
        gateway_cpu_percent_idle: cpu_seconds(cpu_before, cpu_after).map(|cpu| cpu / hold_secs * 100.0),
        kernel_before,
        kernel_after,
        kernel_tcp_buffer_per_connection_bytes: per_connection(
            kernel_before.tcp_buffer_bytes,
            kernel_after.tcp_buffer_bytes,
        ),
        kernel_slab_per_connection_bytes: per_connection(kernel_before.slab_bytes, kernel_after.slab_bytes),
        heartbeats_received: fleet_result.counts.heartbeats,
        errors: fleet_result.errors.clone(),
    };

    let workload = format!(
        "{} idle SSE connections on stream `{}` (from=latest, nothing published), opened at {}/s \
         from {} helper processes, held {}",
        format_count(u64::from(args.connections)),
        rig.stream,
        format_count(u64::from(args.clients.ramp_rate)),
        args.clients.client_processes,
        format_duration(args.hold),
    );
    print!("{}", header("idle", &start, &rig, &workload));
    print!("\n{}", results_table(&result));
    if !fleet_result.errors.is_empty() {
        print!("\nconnection failures and closes:\n{}", fleet_result.error_lines());
    }
    if let Some(path) = &args.json {
        let settings = serde_json::json!({
            "connections": args.connections,
            "hold_secs": args.hold.as_secs_f64(),
            "ramp_rate": args.clients.ramp_rate,
            "client_processes": args.clients.client_processes,
            "stream": rig.stream,
            "gateway_max_connections": max_connections,
            "gateway_args": args.rig.gateway_args,
        });
        write_report(path, "idle", &start, &rig, settings, &result)?;
    }
    rig.stop().await?;
    if result.established == 0 {
        bail!("not one connection was established");
    }
    Ok(())
}

/// The results as a two-column table.
fn results_table(result: &IdleResult) -> String {
    let bytes = |value: Option<u64>| value.map_or("-".to_owned(), format_bytes);
    let signed = |value: Option<f64>| match value {
        None => "-".to_owned(),
        Some(value) if value < 0.0 => format!("-{}", format_bytes((-value).round() as u64)),
        Some(value) => format_bytes(value.round() as u64),
    };
    let mut table = Table::new(["measure", "value"]);
    table.row([
        "connections established".to_owned(),
        format!(
            "{} of {}",
            format_count(result.established),
            format_count(u64::from(result.connections_requested))
        ),
    ]);
    table.row(["connections failed".to_owned(), format_count(result.failed)]);
    table.row(["closed during hold".to_owned(), format_count(result.closed_during_hold)]);
    table.row([
        "gateway connections_active".to_owned(),
        result
            .gateway_connections_active
            .map_or("-".to_owned(), |value| format_count(value as u64)),
    ]);
    table.row(["ramp time".to_owned(), format!("{:.1}s", result.ramp_secs)]);
    table.row(["gateway RSS at start".to_owned(), bytes(result.gateway_rss_start_bytes)]);
    table.row([
        "gateway RSS baseline (feed running)".to_owned(),
        bytes(result.gateway_rss_baseline_bytes),
    ]);
    table.row([
        "gateway RSS held (last sample)".to_owned(),
        bytes(result.gateway_rss_held_bytes),
    ]);
    table.row([
        "gateway RSS per idle connection".to_owned(),
        signed(result.rss_per_connection_bytes),
    ]);
    table.row([
        "kernel TCP buffers per conn. (both ends)".to_owned(),
        signed(result.kernel_tcp_buffer_per_connection_bytes),
    ]);
    table.row([
        "kernel slab per conn. (both ends)".to_owned(),
        signed(result.kernel_slab_per_connection_bytes),
    ]);
    table.row([
        "gateway CPU while idle".to_owned(),
        result
            .gateway_cpu_percent_idle
            .map_or("-".to_owned(), |cpu| format!("{cpu:.2}% of one CPU")),
    ]);
    table.row([
        "heartbeats received".to_owned(),
        format_count(result.heartbeats_received),
    ]);
    table.render()
}
