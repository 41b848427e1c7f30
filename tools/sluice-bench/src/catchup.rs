//! The `catchup` scenario: one client resuming far behind, until it is live.
//!
//! 1. The bench subscribes to the gateway, publishes one marker event and keeps the `id:` it
//!    arrives with: a real cursor, minted by the gateway.
//! 2. It publishes `--behind` bench events (at `--fill-rate`, open loop; straight to Kafka is
//!    the fast way), then asks Kafka for every partition's watermarks: the events after the
//!    cursor that Kafka **still holds**. librdkafka's mock broker keeps about 5 MiB (and at most
//!    100,000 message sets) per partition, so the topic is created with `--partitions` (16 by
//!    default) to hold a million events; whatever retention dropped anyway is reported, not
//!    hidden (the gateway then starts the client with an `event: gap`).
//! 3. One client resumes with that cursor as `Last-Event-ID` while `--live-rate` events/s keep
//!    arriving. It is **live** once it has received every held backlog event; the figure is
//!    backlog ÷ time to live. Gaps and duplicates are checked by sequence and by cursor over
//!    the whole catch-up and the join with the live feed.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;
use serde::Serialize;
use tokio::time::Instant;

use crate::cli::parse_positive_duration;
use crate::fanout::parse_rate;
use crate::hold::ErrorSample;
use crate::procfs::sum_metric;
use crate::publish::{EventArgs, Publisher};
use crate::report::{format_count, format_duration, format_rate, LatencySummary, Table};
use crate::rig::{
    cpu_seconds, header, publish_with_progress, write_report, ClientArgs, Fleet, FleetPlan, Rig, RigArgs, RunStart,
    ServerKind,
};

/// Partitions of the catch-up topic unless `--partitions` says otherwise.
const DEFAULT_PARTITIONS: u32 = 16;

/// Flags of `sluice-bench catchup`.
#[derive(Debug, Clone, clap::Args)]
pub struct CatchupArgs {
    /// Events published between the client's cursor and its resume: how far behind it is.
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub behind: u64,

    /// Events per second while publishing the backlog.
    #[arg(long, value_name = "N", default_value_t = 100_000.0, value_parser = parse_rate)]
    pub fill_rate: f64,

    /// Events per second published while the client catches up (the live feed it must join).
    #[arg(long, value_name = "N", default_value_t = 100.0, value_parser = parse_rate)]
    pub live_rate: f64,

    /// Event keys (lanes) the events rotate over.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub lanes: u32,

    /// Longest the client may take to catch up before the run fails.
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = parse_positive_duration)]
    pub catchup_timeout: Duration,

    /// After publishing the backlog, a pause for the gateway's own feed to read it.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_positive_duration)]
    pub settle: Duration,

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
struct CatchupResult {
    partitions: u32,
    /// Backlog events published after the cursor.
    behind_published: u64,
    fill_secs: f64,
    fill_events_per_sec: f64,
    /// Of them, those Kafka still held when the client resumed.
    behind_held: u64,
    /// Dropped by the mock broker's retention before the resume.
    lost_to_retention: u64,
    secs_to_first_event: Option<f64>,
    secs_to_live: Option<f64>,
    /// Held backlog ÷ time to live.
    catchup_events_per_sec: Option<f64>,
    live_events_published: u64,
    deliveries: u64,
    gaps: u64,
    duplicates: u64,
    cursor_gaps: u64,
    cursor_duplicates: u64,
    /// Every delivery, backlog included: the backlog's age dominates it.
    latency: LatencySummary,
    gateway_cpu_secs_catchup: Option<f64>,
    /// The mock broker's and the resuming client's CPU over the same window: which of the
    /// three was busy tells where a slow catch-up is bound.
    broker_cpu_secs_catchup: Option<f64>,
    client_cpu_secs_catchup: Option<f64>,
    gateway_rss_end_bytes: Option<u64>,
    /// The gateway's `sluice_gateway_resumes_total` by source: where the resume started.
    resumes_from_memory: f64,
    resumes_from_kafka: f64,
    errors: std::collections::BTreeMap<String, ErrorSample>,
}

/// Runs the scenario under the `--timeout` limit.
pub async fn run(args: CatchupArgs) -> anyhow::Result<()> {
    let limit = args.rig.timeout;
    match tokio::time::timeout(limit, run_inner(args)).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("the run exceeded --timeout {} and was stopped", format_duration(limit)),
    }
}

async fn run_inner(mut args: CatchupArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rig.server == ServerKind::Gateway,
        "catch-up reads history from Kafka; it has no baseline form"
    );
    let start = RunStart::now();
    let partitions = *args.rig.partitions.get_or_insert(DEFAULT_PARTITIONS);
    let mut rig = Rig::start(&args.rig, 1_000).await?;
    rig.create_stream().await?;
    rig.preflight_subscribe("").await?;

    // 1. A cursor minted by the gateway: the id of a marker event.
    let cursor = rig.first_event_id("", rig.create_stream()).await?;
    let offsets = sluice_sse::Cursor::decode(&cursor)
        .with_context(|| format!("the marker's id {cursor:?} is not a cursor"))?
        .offsets;

    // 2. The backlog.
    eprintln!(
        "publishing {} events at {}/s via {:?} into {partitions} partitions…",
        format_count(args.behind),
        format_rate(args.fill_rate),
        args.events.publish_via
    );
    let fill_duration = Duration::from_secs_f64(args.behind as f64 / args.fill_rate);
    let filler = Publisher::new(&rig, &args.events, args.fill_rate, fill_duration, args.lanes).await?;
    let fill_start = Instant::now();
    let backlog = publish_with_progress(&mut rig, None, filler).await?;
    let fill_secs = fill_start.elapsed().as_secs_f64();
    if backlog.errors > 0 {
        bail!(
            "{} backlog events were not acknowledged (first: {})",
            backlog.errors,
            backlog.error_example.as_deref().unwrap_or("?")
        );
    }
    tokio::time::sleep(args.settle).await;
    let bootstrap = rig.kafka_bootstrap.clone().context("the rig has no Kafka")?;
    let watermarks = watermarks(&bootstrap, &rig.stream, partitions).await?;
    let held = held_after(&offsets, &watermarks);
    let lost = backlog.events.saturating_sub(held);
    eprintln!(
        "backlog: {} published, {} still held by Kafka ({} lost to retention)",
        format_count(backlog.events),
        format_count(held),
        format_count(lost)
    );

    // 3. The resume, with live events arriving meanwhile.
    let mut plan = FleetPlan::new(
        &rig,
        rig.stream_path(""),
        1,
        &args.clients,
        args.rig.timeout + Duration::from_secs(30),
    );
    plan.lanes = args.lanes;
    plan.check_cursors = true;
    plan.last_event_id = Some(cursor);
    plan.status_interval = Duration::from_millis(50);
    plan.clients.client_processes = 1;
    let live = Publisher::new(&rig, &args.events, args.live_rate, args.catchup_timeout, args.lanes)
        .await?
        .continuing(&backlog);
    let stop_live = live.stopper();
    let cpu_before = rig.cpu();
    let resume_start = Instant::now();
    let fleet = Fleet::spawn(&plan)?;
    let holder_cpu_before = fleet.cpu();
    let live_run = tokio::spawn(live.run());

    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    let mut next_print = resume_start + Duration::from_secs(1);
    let mut first_event = None;
    let live_at = loop {
        ticks.tick().await;
        rig.ensure_running()?;
        let counts = fleet.counts();
        let now = Instant::now();
        if first_event.is_none() && counts.probes > 0 {
            first_event = Some(now - resume_start);
        }
        // Live once every held record after the cursor has arrived (live events may
        // interleave; `events` counts all of them, the producer's warm-up record included,
        // as `held` does).
        if counts.events >= held && counts.events > 0 {
            break Some(now - resume_start);
        }
        if now - resume_start > args.catchup_timeout {
            break None;
        }
        if now >= next_print {
            next_print += Duration::from_secs(1);
            eprintln!(
                "  catch-up {:>3}s: {} of {} events",
                (now - resume_start).as_secs(),
                format_count(counts.probes),
                format_count(held)
            );
        }
    };
    let cpu_after = rig.cpu();
    let cpu_catchup = cpu_seconds(cpu_before.gateway, cpu_after.gateway);
    let broker_cpu = cpu_seconds(cpu_before.broker, cpu_after.broker);
    let holder_cpu = cpu_seconds(holder_cpu_before, fleet.cpu());
    // A little live traffic after catching up proves the join with the live feed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_live.store(true, Ordering::Relaxed);
    let published = live_run.await.context("the live publisher failed")?;
    let live_events = published.events - backlog.events;
    fleet.drain(held + live_events, Duration::from_secs(5)).await;
    let rss_end = rig.gateway_rss();
    let metrics = rig.metrics(0).await.unwrap_or_default();
    let fleet_result = fleet.stop(&published.per_lane).await?;

    let result = CatchupResult {
        partitions,
        behind_published: backlog.events,
        fill_secs,
        fill_events_per_sec: backlog.events as f64 / fill_secs,
        behind_held: held,
        lost_to_retention: lost,
        secs_to_first_event: first_event.map(|at| at.as_secs_f64()),
        secs_to_live: live_at.map(|at| at.as_secs_f64()),
        catchup_events_per_sec: live_at.map(|at| held as f64 / at.as_secs_f64()),
        live_events_published: live_events,
        deliveries: fleet_result.counts.probes,
        gaps: fleet_result.gaps,
        duplicates: fleet_result.duplicates,
        cursor_gaps: fleet_result.cursor_gaps,
        cursor_duplicates: fleet_result.cursor_duplicates,
        latency: LatencySummary::from_histogram(&fleet_result.latency),
        gateway_cpu_secs_catchup: cpu_catchup,
        broker_cpu_secs_catchup: broker_cpu,
        client_cpu_secs_catchup: holder_cpu,
        gateway_rss_end_bytes: rss_end,
        resumes_from_memory: sum_metric(&metrics, "sluice_gateway_resumes_total", "source=\"memory\""),
        resumes_from_kafka: sum_metric(&metrics, "sluice_gateway_resumes_total", "source=\"kafka\""),
        errors: fleet_result.errors.clone(),
    };

    let workload = format!(
        "one client resuming {} events behind on stream `{}` ({partitions} partitions); backlog \
         published at {}/s via {:?}; {} live events/s meanwhile",
        format_count(args.behind),
        rig.stream,
        format_rate(args.fill_rate),
        args.events.publish_via,
        format_rate(args.live_rate),
    );
    print!("{}", header("catchup", &start, &rig, &workload));
    print!("\n{}", results_table(&result));
    if !fleet_result.errors.is_empty() {
        print!("\nconnection closes and failures:\n{}", fleet_result.error_lines());
    }
    if let Some(path) = &args.json {
        let settings = serde_json::json!({
            "behind": args.behind,
            "fill_rate": args.fill_rate,
            "live_rate": args.live_rate,
            "lanes": args.lanes,
            "partitions": partitions,
            "publish_via": args.events.publish_via,
            "payload_bytes": args.events.payload_bytes,
            "gateway_args": args.rig.gateway_args,
        });
        write_report(path, "catchup", &start, &rig, settings, &result)?;
    }
    rig.stop().await?;
    if live_at.is_none() {
        bail!(
            "the client did not catch up within --catchup-timeout {}",
            format_duration(args.catchup_timeout)
        );
    }
    Ok(())
}

/// Low and high watermark of every partition.
async fn watermarks(bootstrap: &str, topic: &str, partitions: u32) -> anyhow::Result<Vec<(i64, i64)>> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "sluice-bench-watermarks")
            .create()
            .context("creating a Kafka client for watermarks")?;
        (0..partitions)
            .map(|partition| {
                consumer
                    .fetch_watermarks(&topic, partition as i32, Duration::from_secs(10))
                    .with_context(|| format!("watermarks of {topic} [{partition}]"))
            })
            .collect()
    })
    .await
    .context("the watermark task failed")?
}

/// Events after `cursor` (next offset per partition) that Kafka still holds.
fn held_after(cursor: &[i64], watermarks: &[(i64, i64)]) -> u64 {
    watermarks
        .iter()
        .enumerate()
        .map(|(partition, &(low, high))| {
            let from = cursor.get(partition).copied().unwrap_or(0).max(low);
            u64::try_from(high - from).unwrap_or(0)
        })
        .sum()
}

fn results_table(result: &CatchupResult) -> String {
    let secs = |value: Option<f64>| value.map_or("-".to_owned(), |secs| format!("{secs:.2} s"));
    let mut table = Table::new(["measure", "value"]);
    table.row([
        "backlog published".to_owned(),
        format!(
            "{} in {:.1} s ({}/s), {} partitions",
            format_count(result.behind_published),
            result.fill_secs,
            format_rate(result.fill_events_per_sec),
            result.partitions
        ),
    ]);
    table.row([
        "held by Kafka at the resume".to_owned(),
        format!(
            "{} ({} lost to retention)",
            format_count(result.behind_held),
            format_count(result.lost_to_retention)
        ),
    ]);
    table.row(["first event after".to_owned(), secs(result.secs_to_first_event)]);
    table.row(["live after".to_owned(), secs(result.secs_to_live)]);
    table.row([
        "catch-up rate".to_owned(),
        result
            .catchup_events_per_sec
            .map_or("-".to_owned(), |rate| format!("{} events/s", format_rate(rate))),
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
        "resume started from memory / Kafka".to_owned(),
        format!(
            "{} / {}",
            format_count(result.resumes_from_memory as u64),
            format_count(result.resumes_from_kafka as u64)
        ),
    ]);
    let cpu = |value: Option<f64>| value.map_or("-".to_owned(), |cpu| format!("{cpu:.2}"));
    table.row([
        "CPU-s during the catch-up: gateway / broker / client".to_owned(),
        format!(
            "{} / {} / {}",
            cpu(result.gateway_cpu_secs_catchup),
            cpu(result.broker_cpu_secs_catchup),
            cpu(result.client_cpu_secs_catchup)
        ),
    ]);
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_kafka_still_holds_after_the_cursor() {
        // Partition 0: cursor at 10, all kept up to 110. Partition 1: retention moved the
        // start to 50, past the cursor's 5. Partition 2: not in the cursor (from 0).
        let held = held_after(&[10, 5], &[(0, 110), (50, 150), (0, 7)]);
        assert_eq!(held, 100 + 100 + 7);
    }
}
