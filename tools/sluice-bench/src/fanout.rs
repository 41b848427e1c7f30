//! The `fanout`, `latency` and `keyed` scenarios: one stream, many subscribers, a steady
//! publisher.
//!
//! Holder processes open `--connections` subscriptions (`from=latest`) on one stream of one
//! gateway. Once all are established and have settled, the bench publishes `--rate` events/s
//! for `--duration`, open loop (see [`crate::publish`]), through ingest or straight to Kafka.
//!
//! Each connection checks its lanes run 0, 1, 2, … (a skip is a gap, a repeat a duplicate),
//! checks every event's cursor moves the stream on by exactly one offset, and, when the bench
//! stops it with the per-lane counts published, counts the events it never got (also gaps).
//! Latency is receive time minus the event's scheduled send time — publish through ingest or
//! the producer, Kafka, gateway and the client's socket — recorded per delivery into HDR
//! histograms that the holders send back and the bench merges exactly.
//!
//! After the publisher stops, the bench waits (at most `--drain`) for deliveries to finish.
//! Deliveries/s is all bench events received ÷ the time from the first publish to the end of
//! the drain (so deliveries that lag behind the offered load lower it); gateway CPU per
//! million deliveries is the gateway's CPU time over that same window.
//!
//! The scenarios differ in shape only: `fanout` (10,000 subscribers × 100 events/s) measures
//! delivery capacity; `latency` (1,000 × 1,000) the latency of a gateway with headroom;
//! `keyed` gives each of 10,000 subscribers its own key (`?key=lane-{i}`) and spreads the
//! events over those keys, so each event has one subscriber: the cost of the key index per
//! event published. The `--server baseline` runs of `fanout` are the machine's floor.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tokio::time::Instant;

use crate::cli::parse_positive_duration;
use crate::hold::ErrorSample;
use crate::publish::{EventArgs, Publisher};
use crate::report::{format_count, format_duration, format_rate, LatencySummary, Table, LATENCY_HEADERS};
use crate::rig::{
    cpu_seconds, header, publish_with_progress, write_report, ClientArgs, Fleet, FleetPlan, Rig, RigArgs, RunStart,
    ServerKind, MAX_CONNECTIONS_PER_PROCESS,
};
use crate::sse_wire::expand_path;

/// Flags of `sluice-bench fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers, all on one stream of one gateway.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = connections_in_range)]
    pub connections: u32,

    /// Events published per second.
    #[arg(long, value_name = "N", default_value_t = 100.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Event keys (lanes) the events rotate over; each lane is checked for order, gaps and
    /// duplicates on every connection.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub lanes: u32,

    #[command(flatten)]
    pub publish: PublishArgs,
}

/// Flags of `sluice-bench latency`.
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Subscribers, all on one stream of one gateway.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = connections_in_range)]
    pub connections: u32,

    /// Events published per second.
    #[arg(long, value_name = "N", default_value_t = 1_000.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Event keys (lanes) the events rotate over; each lane is checked for order, gaps and
    /// duplicates on every connection.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub lanes: u32,

    #[command(flatten)]
    pub publish: PublishArgs,
}

/// Flags of `sluice-bench keyed`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyedArgs {
    /// Subscribers, each on its own key (`?key=lane-{i}`); the events rotate over the same
    /// number of keys, so every event has exactly one subscriber.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = connections_in_range)]
    pub connections: u32,

    /// Events published per second, over all keys.
    #[arg(long, value_name = "N", default_value_t = 5_000.0, value_parser = parse_rate)]
    pub rate: f64,

    #[command(flatten)]
    pub publish: PublishArgs,
}

/// Flags shared by `fanout`, `latency` and `keyed`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// How long to publish.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_positive_duration)]
    pub duration: Duration,

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

/// 1 to 19,000: one gateway process holds every connection, within its open-file limit.
fn connections_in_range(text: &str) -> Result<u32, String> {
    let value: u32 = text.parse().map_err(|_| format!("`{text}` is not a whole number"))?;
    if !(1..=MAX_CONNECTIONS_PER_PROCESS).contains(&value) {
        return Err(format!(
            "must be 1 to {MAX_CONNECTIONS_PER_PROCESS}: one gateway process holds them all, within \
             its open-file limit"
        ));
    }
    Ok(value)
}

/// A positive events-per-second rate, fractions allowed (`0.5` is one event every 2 s).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of events per second"))?;
    if !(rate > 0.0 && rate <= 1_000_000.0) {
        return Err("must be more than 0 and at most 1,000,000 events/s".to_owned());
    }
    Ok(rate)
}

/// What distinguishes the three scenarios.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub scenario: &'static str,
    pub connections: u32,
    pub rate: f64,
    pub lanes: u32,
    /// Each subscriber on its own key (`keyed`), instead of everyone on the whole stream.
    pub keyed: bool,
}

impl Shape {
    pub fn fanout(scenario: &'static str, connections: u32, rate: f64, lanes: u32) -> Self {
        Self {
            scenario,
            connections,
            rate,
            lanes,
            keyed: false,
        }
    }

    pub fn keyed(connections: u32, rate: f64) -> Self {
        Self {
            scenario: "keyed",
            connections,
            rate,
            lanes: connections,
            keyed: true,
        }
    }

    /// The subscription query (`{i}` is the connection's index).
    fn query(&self) -> &'static str {
        if self.keyed {
            "key=lane-{i}"
        } else {
            ""
        }
    }

    /// Deliveries a perfect run makes of `events` to `open` subscribers.
    fn expected_deliveries(&self, events: u64, open: u64) -> u64 {
        if self.keyed {
            events
        } else {
            events * open
        }
    }
}

/// Runs `fanout`, `latency` or `keyed` under the `--timeout` limit.
pub async fn run(shape: Shape, args: PublishArgs) -> anyhow::Result<()> {
    let limit = args.rig.timeout;
    match tokio::time::timeout(limit, run_inner(shape, args)).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("the run exceeded --timeout {} and was stopped", format_duration(limit)),
    }
}

/// The measurements of one run, as printed and written to JSON.
#[derive(Debug, Serialize)]
struct FanoutResult {
    connections_requested: u32,
    established: u64,
    failed: u64,
    /// Connections that ended before the bench stopped them.
    closed_early: u64,
    ramp_secs: f64,
    publish_secs: f64,
    drain_secs: f64,
    events_published: u64,
    publish_requests: u64,
    publish_errors: u64,
    publish_error_example: Option<String>,
    /// Deliveries a perfect run would make: events published × connections open at the start.
    deliveries_expected: u64,
    deliveries: u64,
    /// Deliveries ÷ the publish + drain window: what was sustained, however late.
    deliveries_per_sec: f64,
    /// Keyed: events of another subscriber's key received (the key index misrouted them).
    misrouted: u64,
    gaps: u64,
    /// Of the gaps, events never received after a connection's last one (lost or late).
    missing_tail: u64,
    duplicates: u64,
    /// Offsets skipped between consecutive ids on a connection (unfiltered streams only).
    cursor_gaps: u64,
    /// Ids that did not move the stream on (unfiltered streams only).
    cursor_duplicates: u64,
    latency: LatencySummary,
    /// Acknowledgement time per publish request (ingest) or record batch (Kafka): the part of
    /// `latency` spent before Kafka has the events.
    ingest_ack_latency: LatencySummary,
    /// How far the publisher fell behind its schedule at worst, in milliseconds.
    publisher_max_lag_ms: f64,
    gateway_cpu_secs: Option<f64>,
    gateway_cpu_secs_per_million_deliveries: Option<f64>,
    /// Gateway CPU-seconds per million events published (the `keyed` figure).
    gateway_cpu_secs_per_million_events: Option<f64>,
    /// Gateway CPU as a share of one CPU over the publish+drain window, in percent.
    gateway_cpu_percent: Option<f64>,
    ingest_cpu_secs: Option<f64>,
    broker_cpu_secs: Option<f64>,
    holders_cpu_secs: Option<f64>,
    gateway_rss_end_bytes: Option<u64>,
    errors: std::collections::BTreeMap<String, ErrorSample>,
}

async fn run_inner(shape: Shape, args: PublishArgs) -> anyhow::Result<()> {
    let start = RunStart::now();
    let connections = shape.connections;
    let max_connections = args.rig.gateway_max_connections.unwrap_or(connections + 1_000);
    let mut rig = Rig::start(&args.rig, max_connections).await?;
    rig.create_stream().await?;
    rig.preflight_subscribe(&expand_path(shape.query(), 0)).await?;

    eprintln!(
        "opening {} subscriptions at {}/s over {} helper processes…",
        format_count(u64::from(connections)),
        format_count(u64::from(args.clients.ramp_rate)),
        args.clients.client_processes
    );
    let mut plan = FleetPlan::new(
        &rig,
        rig.stream_path(shape.query()),
        connections,
        &args.clients,
        args.rig.timeout + Duration::from_secs(30),
    );
    plan.lanes = shape.lanes;
    plan.lane_per_connection = shape.keyed;
    // A key filter skips offsets by design: cursors are checked on whole streams only.
    plan.check_cursors = !shape.keyed && rig.kind == ServerKind::Gateway;
    let mut fleet = Fleet::spawn(&plan)?;
    let ramp = fleet
        .wait_established(&mut rig, ramp_timeout(connections, &args.clients))
        .await?;
    tokio::time::sleep(args.settle).await;
    let at_start = fleet.counts();
    if at_start.open() == 0 {
        bail!("no subscription is open; nothing to measure");
    }

    eprintln!(
        "publishing {} events/s for {} to {} subscribers ({:?})…",
        format_rate(shape.rate),
        format_duration(args.duration),
        format_count(at_start.open()),
        args.events.publish_via,
    );
    let cpu_before = (rig.cpu(), fleet.cpu());
    let publish_start = Instant::now();
    let publisher = Publisher::new(&rig, &args.events, shape.rate, args.duration, shape.lanes).await?;
    let published = publish_with_progress(&mut rig, Some(&fleet), publisher).await?;
    let publish_secs = (Instant::now() - publish_start).as_secs_f64();

    let expected = shape.expected_deliveries(published.events, at_start.open());
    let drain_secs = fleet.drain(expected, args.drain).await.as_secs_f64();
    let cpu_after = (rig.cpu(), fleet.cpu());
    let rss_end = rig.gateway_rss();
    let fleet_result = fleet.stop(&published.per_lane).await?;

    let deliveries = fleet_result.counts.probes;
    let gateway_cpu = cpu_seconds(cpu_before.0.gateway, cpu_after.0.gateway);
    let window = publish_secs + drain_secs;
    let per_million = |count: u64| gateway_cpu.filter(|_| count > 0).map(|cpu| cpu / count as f64 * 1e6);
    let result = FanoutResult {
        connections_requested: connections,
        established: at_start.established,
        failed: at_start.failed,
        closed_early: fleet_result.counts.closed,
        ramp_secs: ramp.as_secs_f64(),
        publish_secs,
        drain_secs,
        events_published: published.events,
        publish_requests: published.requests,
        publish_errors: published.errors,
        publish_error_example: published.error_example.clone(),
        deliveries_expected: expected,
        deliveries,
        deliveries_per_sec: deliveries as f64 / window,
        misrouted: fleet_result.unknown_lane,
        gaps: fleet_result.gaps,
        missing_tail: fleet_result.missing_tail,
        duplicates: fleet_result.duplicates,
        cursor_gaps: fleet_result.cursor_gaps,
        cursor_duplicates: fleet_result.cursor_duplicates,
        latency: LatencySummary::from_histogram(&fleet_result.latency),
        ingest_ack_latency: LatencySummary::from_histogram(&published.ack_latency),
        publisher_max_lag_ms: published.max_lag.as_secs_f64() * 1e3,
        gateway_cpu_secs: gateway_cpu,
        gateway_cpu_secs_per_million_deliveries: per_million(deliveries),
        gateway_cpu_secs_per_million_events: per_million(published.events),
        gateway_cpu_percent: gateway_cpu.map(|cpu| cpu / window * 100.0),
        ingest_cpu_secs: cpu_seconds(cpu_before.0.ingest, cpu_after.0.ingest),
        broker_cpu_secs: cpu_seconds(cpu_before.0.broker, cpu_after.0.broker),
        holders_cpu_secs: cpu_seconds(cpu_before.1, cpu_after.1),
        gateway_rss_end_bytes: rss_end,
        errors: fleet_result.errors.clone(),
    };

    let subscriptions = if shape.keyed {
        "each on its own key (key=lane-{i})"
    } else {
        "(from=latest)"
    };
    let workload = format!(
        "{} subscribers on stream `{}` {subscriptions} from {} helper processes; {} events/s of \
         {}-byte data over {} keys for {} via {:?}, a batch per {}",
        format_count(u64::from(connections)),
        rig.stream,
        args.clients.client_processes,
        format_rate(shape.rate),
        args.events.payload_bytes,
        shape.lanes,
        format_duration(args.duration),
        args.events.publish_via,
        format_duration(args.events.batch_interval),
    );
    print!("{}", header(shape.scenario, &start, &rig, &workload));
    print!("\n{}", results_table(&result, shape.keyed));
    print!("\n{}", latency_table(&result.latency, &result.ingest_ack_latency));
    if let Some(example) = &result.publish_error_example {
        print!(
            "\npublish errors: {} (first: {example})\n",
            format_count(result.publish_errors)
        );
    }
    if !fleet_result.errors.is_empty() {
        print!("\nconnection failures and closes:\n{}", fleet_result.error_lines());
    }
    if result.unknown_or_lost() {
        print!(
            "\nnote: {} gaps ({} of them after a connection's last event: lost, or still in flight \
             when the drain ended), {} duplicates\n",
            format_count(result.gaps),
            format_count(result.missing_tail),
            format_count(result.duplicates)
        );
    }
    if let Some(path) = &args.json {
        let settings = serde_json::json!({
            "connections": connections,
            "rate": shape.rate,
            "keyed": shape.keyed,
            "duration_secs": args.duration.as_secs_f64(),
            "settle_secs": args.settle.as_secs_f64(),
            "drain_secs": args.drain.as_secs_f64(),
            "publish_via": args.events.publish_via,
            "batch_interval_secs": args.events.batch_interval.as_secs_f64(),
            "payload_bytes": args.events.payload_bytes,
            "lanes": shape.lanes,
            "ramp_rate": args.clients.ramp_rate,
            "client_processes": args.clients.client_processes,
            "stream": rig.stream,
            "gateway_max_connections": max_connections,
            "gateway_args": args.rig.gateway_args,
        });
        write_report(path, shape.scenario, &start, &rig, settings, &result)?;
    }
    rig.stop().await?;
    if result.deliveries == 0 {
        bail!("not one event was delivered");
    }
    Ok(())
}

/// How long a ramp of `connections` may take before the bench gives up.
pub fn ramp_timeout(connections: u32, clients: &ClientArgs) -> Duration {
    Duration::from_secs_f64(f64::from(connections) / f64::from(clients.ramp_rate))
        + clients.connect_timeout
        + Duration::from_secs(10)
}

impl FanoutResult {
    fn unknown_or_lost(&self) -> bool {
        self.gaps > 0 || self.duplicates > 0 || self.cursor_gaps > 0 || self.cursor_duplicates > 0
    }
}

/// The main figures as a two-column table.
fn results_table(result: &FanoutResult, keyed: bool) -> String {
    let optional =
        |value: Option<f64>, decimals: usize| value.map_or("-".to_owned(), |value| format!("{value:.decimals$}"));
    let mut table = Table::new(["measure", "value"]);
    table.row([
        "subscribers established".to_owned(),
        format!(
            "{} of {} ({} failed)",
            format_count(result.established),
            format_count(u64::from(result.connections_requested)),
            format_count(result.failed)
        ),
    ]);
    table.row(["closed before the end".to_owned(), format_count(result.closed_early)]);
    table.row([
        "events published".to_owned(),
        format!(
            "{} in {} requests, {} errors",
            format_count(result.events_published),
            format_count(result.publish_requests),
            format_count(result.publish_errors)
        ),
    ]);
    let delivered_share = if result.deliveries_expected > 0 {
        result.deliveries as f64 / result.deliveries_expected as f64 * 100.0
    } else {
        0.0
    };
    table.row([
        "deliveries".to_owned(),
        format!(
            "{} of {} expected ({delivered_share:.2}%)",
            format_count(result.deliveries),
            format_count(result.deliveries_expected)
        ),
    ]);
    table.row(["deliveries/s".to_owned(), format_rate(result.deliveries_per_sec)]);
    table.row([
        "gaps (of which never arrived)".to_owned(),
        format!("{} ({})", format_count(result.gaps), format_count(result.missing_tail)),
    ]);
    table.row(["duplicates".to_owned(), format_count(result.duplicates)]);
    if keyed {
        table.row([
            "misrouted (another key's events)".to_owned(),
            format_count(result.misrouted),
        ]);
        table.row([
            "gateway CPU-s per 1M events published".to_owned(),
            optional(result.gateway_cpu_secs_per_million_events, 2),
        ]);
    } else {
        table.row([
            "by cursor: gaps / duplicates".to_owned(),
            format!(
                "{} / {}",
                format_count(result.cursor_gaps),
                format_count(result.cursor_duplicates)
            ),
        ]);
    }
    table.row([
        "publisher behind schedule, at worst".to_owned(),
        format!("{:.1} ms", result.publisher_max_lag_ms),
    ]);
    table.row([
        "gateway CPU-s per 1M deliveries".to_owned(),
        optional(result.gateway_cpu_secs_per_million_deliveries, 2),
    ]);
    table.row([
        "gateway CPU (publish + drain)".to_owned(),
        format!(
            "{} s = {}% of one CPU",
            optional(result.gateway_cpu_secs, 2),
            optional(result.gateway_cpu_percent, 1)
        ),
    ]);
    table.row([
        "CPU-s ingest / broker / holders".to_owned(),
        format!(
            "{} / {} / {}",
            optional(result.ingest_cpu_secs, 2),
            optional(result.broker_cpu_secs, 2),
            optional(result.holders_cpu_secs, 2)
        ),
    ]);
    table.row([
        "window (publish + drain)".to_owned(),
        format!("{:.1}s + {:.1}s", result.publish_secs, result.drain_secs),
    ]);
    table.render()
}

/// The publish→receive latency percentiles, and ingest's share of them.
fn latency_table(latency: &LatencySummary, ingest_ack: &LatencySummary) -> String {
    let mut table = Table::new(["latency", "samples"].into_iter().chain(LATENCY_HEADERS));
    table.row(
        ["publish→receive (per delivery)".to_owned(), format_count(latency.count)]
            .into_iter()
            .chain(latency.cells()),
    );
    table.row(
        [
            "publish ack (per request/batch)".to_owned(),
            format_count(ingest_ack.count),
        ]
        .into_iter()
        .chain(ingest_ack.cells()),
    );
    table.render()
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn scenario_defaults_differ_only_in_scale() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().command;
        let Command::Fanout(fanout) = parse(&["sluice-bench", "fanout"]) else {
            panic!("not fanout");
        };
        assert_eq!((fanout.connections, fanout.rate), (10_000, 100.0));
        let Command::Latency(latency) = parse(&["sluice-bench", "latency"]) else {
            panic!("not latency");
        };
        assert_eq!((latency.connections, latency.rate), (1_000, 1_000.0));
        assert_eq!(latency.publish.duration, Duration::from_secs(20));
        assert_eq!(latency.publish.clients.client_processes, 2);
        assert_eq!(latency.publish.clients.source_addrs.len(), 8);
        let Command::Keyed(keyed) = parse(&["sluice-bench", "keyed", "--ramp-per-sec", "500"]) else {
            panic!("not keyed");
        };
        assert_eq!((keyed.connections, keyed.publish.clients.ramp_rate), (10_000, 500));
        assert!(Cli::try_parse_from(["sluice-bench", "fanout", "--rate", "0"]).is_err());
        assert!(Cli::try_parse_from(["sluice-bench", "fanout", "--connections", "20000"]).is_err());
        assert!(Cli::try_parse_from(["sluice-bench", "keyed", "--connections", "0"]).is_err());
    }

    #[test]
    fn keyed_runs_expect_one_delivery_per_event() {
        let keyed = Shape::keyed(10_000, 5_000.0);
        assert_eq!(keyed.lanes, 10_000);
        assert_eq!(keyed.expected_deliveries(150_000, 10_000), 150_000);
        assert_eq!(expand_path(keyed.query(), 42), "key=lane-42");
        let fanout = Shape::fanout("fanout", 10_000, 100.0, 8);
        assert_eq!(fanout.expected_deliveries(2_000, 10_000), 20_000_000);
    }
}
