//! The `multistream` scenario: several streams in one connection against one connection per
//! stream, carrying the same deliveries in the same run (issue 14).
//!
//! The broker holds `--streams` topics `{stream}-0` … `{stream}-{S-1}`. Gateway 0 serves
//! `--connections` C connections that each follow every stream
//! (`/v1/streams/{stream}-0,{stream}-1,…`); one or more other gateways serve C × S
//! single-stream connections, C per stream. One open-loop publisher per stream sends
//! `--rate` events/s to it, so both sides are offered exactly the same deliveries:
//! C × S × rate per second each. Separate gateway processes are what make the comparison
//! clean: each side's CPU time and resident memory are read from its own processes, and
//! 20,000 single-stream sockets would not fit one process's 20,000 open files anyway (they
//! are spread so no gateway holds more than `--single-per-gateway`, a stream's connections
//! all on one gateway).
//!
//! Lanes: stream j's publisher numbers its lanes `j × L … j × L + L - 1` (L = `--lanes`), so a
//! several-stream connection tracks S × L lanes and a single-stream one its stream's L; each
//! checks every lane runs 0, 1, 2, … (gaps, duplicates), counts what it never got when
//! stopped, and checks ids by cursor (v2 ids on the several-stream side: every event moves
//! one partition of one stream by one). "Every connection got every event" means every
//! connection opened and stayed open, and there was no gap, duplicate or missing delivery.
//!
//! Figures per side: gateway CPU-seconds per million deliveries over the publish + drain
//! window, gateway RSS growth per connection (and per stream subscription) between the feeds
//! started and all connections held, and publish → receive latency.

use std::time::Duration;

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::fanout::{parse_rate, ramp_timeout, PublishArgs};
use crate::hold::{ErrorSample, Tally};
use crate::publish::{Published, Publisher};
use crate::report::{format_bytes, format_count, format_duration, format_rate, LatencySummary, Table};
use crate::rig::{
    cpu_seconds, drain_fleets, header, write_report, ClientArgs, Fleet, FleetPlan, Rig, RunStart, ServerKind,
    MAX_CONNECTIONS_PER_PROCESS,
};

/// Flags of `sluice-bench multistream`.
#[derive(Debug, Clone, clap::Args)]
pub struct MultistreamArgs {
    /// Connections that each follow every stream, all on one gateway; the other side opens
    /// this many single-stream connections per stream.
    #[arg(long, value_name = "N", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNECTIONS_PER_PROCESS)))]
    pub connections: u32,

    /// Streams each several-stream connection follows (the gateway's
    /// `--max-streams-per-connection` is 8 by default).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub streams: u32,

    /// Events published per second on each stream (at the default size, 40,000 deliveries/s
    /// per side: what two shared cores sustain for both sides and the helpers at once).
    #[arg(long, value_name = "N", default_value_t = 2.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Event keys (lanes) per stream, each checked for order, gaps and duplicates on every
    /// connection.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub lanes: u32,

    /// Most single-stream connections on one gateway process; more gateways share them, a
    /// stream's connections all on one.
    #[arg(long, value_name = "N", default_value_t = 15_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNECTIONS_PER_PROCESS)))]
    pub single_per_gateway: u32,

    #[command(flatten)]
    pub publish: PublishArgs,
}

/// Gateways the single-stream side needs: the fewest such that no gateway holds more than
/// `per_gateway` connections when streams are dealt round robin, `None` if even one stream
/// per gateway is too many.
pub fn single_gateways(connections: u32, streams: u32, per_gateway: u32) -> Option<u32> {
    (1..=streams).find(|&gateways| streams.div_ceil(gateways) * connections <= per_gateway)
}

/// One side's figures.
#[derive(Debug, Serialize)]
struct Side {
    connections_requested: u32,
    established: u64,
    failed: u64,
    closed_early: u64,
    gateways: u32,
    deliveries_expected: u64,
    deliveries: u64,
    gaps: u64,
    missing_tail: u64,
    duplicates: u64,
    unknown_lane: u64,
    cursor_gaps: u64,
    cursor_duplicates: u64,
    cursor_unreadable: u64,
    /// Every connection opened and stayed open, and received every event once, in order.
    every_connection_got_every_event: bool,
    latency: LatencySummary,
    gateway_cpu_secs: Option<f64>,
    gateway_cpu_secs_per_million_deliveries: Option<f64>,
    gateway_rss_before_bytes: Option<u64>,
    gateway_rss_held_bytes: Option<u64>,
    gateway_rss_end_bytes: Option<u64>,
    /// RSS growth from the feeds started to every connection held, per connection.
    gateway_rss_per_connection_bytes: Option<f64>,
    /// The same per stream followed (a several-stream connection follows `streams`).
    gateway_rss_per_stream_subscription_bytes: Option<f64>,
    holders_cpu_secs: Option<f64>,
    errors: std::collections::BTreeMap<String, ErrorSample>,
}

/// The measurements of one run, as printed and written to JSON.
#[derive(Debug, Serialize)]
struct MultistreamResult {
    streams: u32,
    rate_per_stream: f64,
    ramp_secs: f64,
    publish_secs: f64,
    drain_secs: f64,
    events_published: u64,
    publish_errors: u64,
    publish_error_example: Option<String>,
    publisher_max_lag_ms: f64,
    /// Several streams per connection.
    multi: Side,
    /// One stream per connection.
    single: Side,
    /// Several-stream CPU per delivery ÷ single-stream CPU per delivery.
    cpu_per_delivery_ratio: Option<f64>,
    /// Several-stream RSS per stream subscription ÷ single-stream RSS per connection.
    rss_per_subscription_ratio: Option<f64>,
    ingest_cpu_secs: Option<f64>,
    broker_cpu_secs: Option<f64>,
}

/// Runs `multistream` under the `--timeout` limit.
pub async fn run(args: MultistreamArgs) -> anyhow::Result<()> {
    let limit = args.publish.rig.timeout;
    match tokio::time::timeout(limit, run_inner(args)).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("the run exceeded --timeout {} and was stopped", format_duration(limit)),
    }
}

/// The fleets of a run: several-stream connections, then one fleet per stream.
struct Fleets {
    multi: Fleet,
    single: Vec<Fleet>,
}

impl Fleets {
    fn all(&self) -> Vec<&Fleet> {
        std::iter::once(&self.multi).chain(&self.single).collect()
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.multi.ensure_running()?;
        self.single.iter_mut().try_for_each(Fleet::ensure_running)
    }
}

/// Which servers each side uses, and their memory before any connection.
struct Layout {
    single_gateways: u32,
    rss_before: Vec<Option<u64>>,
}

impl Layout {
    /// The server of stream `j`'s single-stream connections.
    fn single_server(&self, stream: u32) -> usize {
        1 + (stream % self.single_gateways) as usize
    }

    fn single_servers(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.single_gateways as usize
    }
}

async fn run_inner(args: MultistreamArgs) -> anyhow::Result<()> {
    let start = RunStart::now();
    let (connections, streams) = (args.connections, args.streams);
    let Some(single_gateways) = single_gateways(connections, streams, args.single_per_gateway) else {
        bail!("--connections {connections} exceed --single-per-gateway even with one stream per gateway");
    };
    anyhow::ensure!(
        args.publish.rig.server == ServerKind::Gateway,
        "multistream measures the gateway; there is no baseline for several streams"
    );
    let per_gateway = streams.div_ceil(single_gateways) * connections;
    let max_connections = args
        .publish
        .rig
        .gateway_max_connections
        .unwrap_or(per_gateway.max(connections) + 1_000);
    let mut rig = Rig::start_gateways_with_numbered_topics(
        &args.publish.rig,
        max_connections,
        1 + single_gateways as usize,
        streams,
    )
    .await?;
    let names: Vec<String> = (0..streams).map(|j| format!("{}-{j}", rig.stream)).collect();
    let multi_path = format!("/v1/streams/{}", names.join(","));
    let mut layout = Layout {
        single_gateways,
        rss_before: Vec::new(),
    };
    rig.preflight(0, &multi_path).await?;
    for (j, name) in (0..).zip(&names) {
        rig.preflight(layout.single_server(j), &format!("/v1/streams/{name}"))
            .await?;
    }
    layout.rss_before = (0..=single_gateways as usize).map(|i| rig.server_rss(i)).collect();

    let total = connections + connections * streams;
    eprintln!(
        "opening {} several-stream connections ({streams} streams each) on gateway 0 and {} \
         single-stream ones on {single_gateways} other gateway(s), {}/s…",
        format_count(u64::from(connections)),
        format_count(u64::from(connections * streams)),
        format_count(u64::from(args.publish.clients.ramp_rate)),
    );
    let mut fleets = spawn_fleets(&rig, &args, &layout, &multi_path, &names)?;
    let ramp_limit = ramp_timeout(total, &args.publish.clients);
    let ramp_start = Instant::now();
    for fleet in std::iter::once(&mut fleets.multi).chain(&mut fleets.single) {
        fleet.wait_established(&mut rig, ramp_limit).await?;
    }
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    tokio::time::sleep(args.publish.settle).await;
    let open_multi = fleets.multi.counts().open();
    let open_single: Vec<u64> = fleets.single.iter().map(|fleet| fleet.counts().open()).collect();
    if open_multi == 0 || open_single.iter().sum::<u64>() == 0 {
        bail!("a side has no open connection; nothing to compare");
    }
    let rss_held: Vec<Option<u64>> = (0..=single_gateways as usize).map(|i| rig.server_rss(i)).collect();

    eprintln!(
        "publishing {} events/s on each of {streams} streams for {}…",
        format_rate(args.rate),
        format_duration(args.publish.duration)
    );
    let cpu_before = Snapshot::take(&rig, &fleets, &layout);
    let publish_start = Instant::now();
    let published = publish_all(&mut rig, &mut fleets, &args, &names).await?;
    let publish_secs = publish_start.elapsed().as_secs_f64();
    let events: Vec<u64> = published.iter().map(|p| p.events).collect();
    let expected_multi = open_multi * events.iter().sum::<u64>();
    let expected_single: u64 = open_single.iter().zip(&events).map(|(open, sent)| open * sent).sum();
    let drain_secs = drain_fleets(&fleets.all(), expected_multi + expected_single, args.publish.drain)
        .await
        .as_secs_f64();
    let cpu_after = Snapshot::take(&rig, &fleets, &layout);
    let rss_end: Vec<Option<u64>> = (0..=single_gateways as usize).map(|i| rig.server_rss(i)).collect();

    let all_lanes: Vec<u64> = published.iter().flat_map(|p| p.per_lane.iter().copied()).collect();
    let multi_tally = fleets.multi.stop(&all_lanes).await?;
    let mut single_tallies = Vec::new();
    for (fleet, sent) in fleets.single.into_iter().zip(&published) {
        single_tallies.push(fleet.stop(&sent.per_lane).await?);
    }
    let single_tally = merge(single_tallies);

    let sum = |values: &[Option<u64>], servers: &mut dyn Iterator<Item = usize>| -> Option<u64> {
        servers.map(|i| values.get(i).copied().flatten()).sum()
    };
    let multi = Side::new(
        &multi_tally,
        connections,
        1,
        expected_multi,
        cpu_seconds(cpu_before.servers[0], cpu_after.servers[0]),
        [layout.rss_before[0], rss_held[0], rss_end[0]],
        streams,
        cpu_seconds(cpu_before.multi_holders, cpu_after.multi_holders),
    );
    let single_cpu = layout
        .single_servers()
        .map(|i| cpu_seconds(cpu_before.servers[i], cpu_after.servers[i]))
        .sum::<Option<f64>>();
    let single = Side::new(
        &single_tally,
        connections * streams,
        single_gateways,
        expected_single,
        single_cpu,
        [
            sum(&layout.rss_before, &mut layout.single_servers()),
            sum(&rss_held, &mut layout.single_servers()),
            sum(&rss_end, &mut layout.single_servers()),
        ],
        1,
        cpu_seconds(cpu_before.single_holders, cpu_after.single_holders),
    );
    let result = MultistreamResult {
        streams,
        rate_per_stream: args.rate,
        ramp_secs,
        publish_secs,
        drain_secs,
        events_published: events.iter().sum(),
        publish_errors: published.iter().map(|p| p.errors).sum(),
        publish_error_example: published.iter().find_map(|p| p.error_example.clone()),
        publisher_max_lag_ms: published
            .iter()
            .map(|p| p.max_lag.as_secs_f64() * 1e3)
            .fold(0.0, f64::max),
        cpu_per_delivery_ratio: crate::benchmarks::ratio(
            multi.gateway_cpu_secs_per_million_deliveries,
            single.gateway_cpu_secs_per_million_deliveries,
        ),
        rss_per_subscription_ratio: crate::benchmarks::ratio(
            multi.gateway_rss_per_stream_subscription_bytes,
            single.gateway_rss_per_connection_bytes,
        ),
        multi,
        single,
        ingest_cpu_secs: cpu_seconds(cpu_before.ingest, cpu_after.ingest),
        broker_cpu_secs: cpu_seconds(cpu_before.broker, cpu_after.broker),
    };
    report(&args, &start, &rig, &names, &result)?;
    rig.stop().await?;
    if result.multi.deliveries == 0 || result.single.deliveries == 0 {
        bail!("a side received no event");
    }
    Ok(())
}

/// The several-stream fleet on gateway 0, and a fleet per stream on its single-stream gateway;
/// each ramps at its share of `--ramp-rate`.
fn spawn_fleets(
    rig: &Rig,
    args: &MultistreamArgs,
    layout: &Layout,
    multi_path: &str,
    names: &[String],
) -> anyhow::Result<Fleets> {
    let clients = &args.publish.clients;
    let total = args.connections * (1 + args.streams);
    let share = |connections: u32, processes: u32| ClientArgs {
        ramp_rate: (u64::from(clients.ramp_rate) * u64::from(connections) / u64::from(total)).max(1) as u32,
        client_processes: processes.max(1),
        ..clients.clone()
    };
    let deadline = args.publish.rig.timeout + Duration::from_secs(30);
    let addrs = rig.server_addrs();
    let multi_clients = share(args.connections, clients.client_processes);
    let mut plan = FleetPlan::new(rig, multi_path.to_owned(), args.connections, &multi_clients, deadline);
    plan.targets = vec![addrs[0]];
    plan.lanes = args.streams * args.lanes;
    plan.check_cursors = true;
    let multi = Fleet::spawn(&plan)?;
    let mut single = Vec::new();
    for (j, name) in (0..).zip(names) {
        // The several-stream side's processes, spread over the streams.
        let single_clients = share(args.connections, clients.client_processes / args.streams);
        let mut plan = FleetPlan::new(
            rig,
            format!("/v1/streams/{name}"),
            args.connections,
            &single_clients,
            deadline,
        );
        plan.targets = vec![addrs[layout.single_server(j)]];
        plan.lanes = args.lanes;
        plan.lane_offset = j * args.lanes;
        plan.check_cursors = true;
        single.push(Fleet::spawn(&plan)?);
    }
    Ok(Fleets { multi, single })
}

/// CPU time of every process that matters, at one instant.
struct Snapshot {
    servers: Vec<Option<Duration>>,
    ingest: Option<Duration>,
    broker: Option<Duration>,
    multi_holders: Option<Duration>,
    single_holders: Option<Duration>,
}

impl Snapshot {
    fn take(rig: &Rig, fleets: &Fleets, layout: &Layout) -> Self {
        let services = rig.cpu();
        Self {
            servers: (0..=layout.single_gateways as usize)
                .map(|i| rig.server_cpu(i))
                .collect(),
            ingest: services.ingest,
            broker: services.broker,
            multi_holders: fleets.multi.cpu(),
            single_holders: fleets.single.iter().map(Fleet::cpu).sum(),
        }
    }
}

/// Runs one publisher per stream (stream j's lanes numbered from j × `--lanes`) to the end,
/// printing progress once a second and failing as soon as a process dies.
async fn publish_all(
    rig: &mut Rig,
    fleets: &mut Fleets,
    args: &MultistreamArgs,
    names: &[String],
) -> anyhow::Result<Vec<Published>> {
    let mut runs = Vec::new();
    let mut sent = Vec::new();
    for (j, name) in (0..).zip(names) {
        let publisher = Publisher::on_stream(
            rig,
            name,
            &args.publish.events,
            args.rate,
            args.publish.duration,
            args.lanes,
        )
        .await?
        .with_lane_offset(j * args.lanes);
        sent.push(publisher.progress());
        runs.push(tokio::spawn(publisher.run()));
    }
    let start = Instant::now();
    let mut ticks = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let deliveries = |fleets: &Fleets| {
        (
            fleets.multi.counts().probes,
            fleets.single.iter().map(|fleet| fleet.counts().probes).sum::<u64>(),
        )
    };
    let mut printed = (0, deliveries(fleets));
    while !runs.iter().all(tokio::task::JoinHandle::is_finished) {
        ticks.tick().await;
        rig.ensure_running()?;
        fleets.ensure_running()?;
        let events: u64 = sent
            .iter()
            .map(|count| count.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let now = deliveries(fleets);
        eprintln!(
            "  publish {:>3}s: {:>6} events/s sent, deliveries/s {:>9} several-stream, {:>9} single-stream",
            start.elapsed().as_secs(),
            format_count(events - printed.0),
            format_count(now.0 - (printed.1).0),
            format_count(now.1 - (printed.1).1),
        );
        printed = (events, now);
    }
    let mut published = Vec::new();
    for run in runs {
        published.push(run.await?);
    }
    Ok(published)
}

/// Sums the final tallies of several fleets.
fn merge(tallies: Vec<Tally>) -> Tally {
    let mut merged = Tally::default();
    for tally in tallies {
        merged.counts.add(&tally.counts);
        merged.gaps += tally.gaps;
        merged.missing_tail += tally.missing_tail;
        merged.duplicates += tally.duplicates;
        merged.unknown_lane += tally.unknown_lane;
        merged.cursor_gaps += tally.cursor_gaps;
        merged.cursor_duplicates += tally.cursor_duplicates;
        merged.cursor_unreadable += tally.cursor_unreadable;
        add_histogram(&mut merged.latency, &tally.latency);
        for (kind, sample) in tally.errors {
            merged
                .errors
                .entry(kind)
                .and_modify(|ours| ours.count += sample.count)
                .or_insert(sample);
        }
    }
    merged
}

fn add_histogram(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Same bounds on both sides (both from `latency_histogram`), so this cannot fail.
    let _ = into.add(from);
}

impl Side {
    #[allow(clippy::too_many_arguments)]
    fn new(
        tally: &Tally,
        requested: u32,
        gateways: u32,
        expected: u64,
        gateway_cpu: Option<f64>,
        [rss_before, rss_held, rss_end]: [Option<u64>; 3],
        streams_per_connection: u32,
        holders_cpu: Option<f64>,
    ) -> Self {
        let deliveries = tally.counts.probes;
        let established = tally.counts.established;
        let growth = match (rss_before, rss_held) {
            (Some(before), Some(held)) if established > 0 => Some((held as f64 - before as f64) / established as f64),
            _ => None,
        };
        let clean = established == u64::from(requested)
            && tally.counts.failed == 0
            && tally.counts.closed == 0
            && tally.gaps == 0
            && tally.duplicates == 0
            && tally.unknown_lane == 0
            && tally.cursor_gaps == 0
            && tally.cursor_duplicates == 0
            && deliveries == expected;
        Self {
            connections_requested: requested,
            established,
            failed: tally.counts.failed,
            closed_early: tally.counts.closed,
            gateways,
            deliveries_expected: expected,
            deliveries,
            gaps: tally.gaps,
            missing_tail: tally.missing_tail,
            duplicates: tally.duplicates,
            unknown_lane: tally.unknown_lane,
            cursor_gaps: tally.cursor_gaps,
            cursor_duplicates: tally.cursor_duplicates,
            cursor_unreadable: tally.cursor_unreadable,
            every_connection_got_every_event: clean,
            latency: LatencySummary::from_histogram(&tally.latency),
            gateway_cpu_secs: gateway_cpu,
            gateway_cpu_secs_per_million_deliveries: gateway_cpu
                .filter(|_| deliveries > 0)
                .map(|cpu| cpu / deliveries as f64 * 1e6),
            gateway_rss_before_bytes: rss_before,
            gateway_rss_held_bytes: rss_held,
            gateway_rss_end_bytes: rss_end,
            gateway_rss_per_connection_bytes: growth,
            gateway_rss_per_stream_subscription_bytes: growth.map(|bytes| bytes / f64::from(streams_per_connection)),
            holders_cpu_secs: holders_cpu,
            errors: tally.errors.clone(),
        }
    }
}

/// Prints the report and writes the JSON.
fn report(
    args: &MultistreamArgs,
    start: &RunStart,
    rig: &Rig,
    names: &[String],
    result: &MultistreamResult,
) -> anyhow::Result<()> {
    let workload = format!(
        "{} connections × {} streams ({}) on gateway 0, against {} single-stream connections on {} \
         other gateway(s); {} events/s of {}-byte data per stream over {} keys each for {} via {:?}",
        format_count(u64::from(args.connections)),
        args.streams,
        names.join(","),
        format_count(u64::from(args.connections * args.streams)),
        result.single.gateways,
        format_rate(args.rate),
        args.publish.events.payload_bytes,
        args.lanes,
        format_duration(args.publish.duration),
        args.publish.events.publish_via,
    );
    print!("{}", header("multistream", start, rig, &workload));
    print!("\n{}", results_table(result));
    for (label, side) in [("several streams", &result.multi), ("one stream", &result.single)] {
        if !side.errors.is_empty() {
            print!(
                "\n{label}: connection failures and closes:\n{}",
                crate::hold::error_lines(&side.errors)
            );
        }
    }
    if let Some(example) = &result.publish_error_example {
        print!(
            "\npublish errors: {} (first: {example})\n",
            format_count(result.publish_errors)
        );
    }
    if let Some(path) = &args.publish.json {
        let settings = serde_json::json!({
            "connections": args.connections,
            "streams": args.streams,
            "single_connections": args.connections * args.streams,
            "single_gateways": result.single.gateways,
            "rate_per_stream": args.rate,
            "lanes_per_stream": args.lanes,
            "duration_secs": args.publish.duration.as_secs_f64(),
            "settle_secs": args.publish.settle.as_secs_f64(),
            "drain_secs": args.publish.drain.as_secs_f64(),
            "publish_via": args.publish.events.publish_via,
            "payload_bytes": args.publish.events.payload_bytes,
            "ramp_rate": args.publish.clients.ramp_rate,
            "client_processes": args.publish.clients.client_processes,
            "streams_names": names,
            "gateway_args": args.publish.rig.gateway_args,
        });
        write_report(path, "multistream", start, rig, settings, result)?;
    }
    Ok(())
}

/// The figures side by side.
fn results_table(result: &MultistreamResult) -> String {
    let optional = |value: Option<f64>, decimals: usize| value.map_or("-".to_owned(), |v| format!("{v:.decimals$}"));
    let bytes = |value: Option<f64>| {
        value.map_or("-".to_owned(), |v| {
            if v < 0.0 {
                format!("-{}", format_bytes((-v) as u64))
            } else {
                format_bytes(v as u64)
            }
        })
    };
    let mut table = Table::new(["measure", "several streams / connection", "one stream / connection"]);
    let mut row = |label: &str, cell: &dyn Fn(&Side) -> String| {
        table.row([label.to_owned(), cell(&result.multi), cell(&result.single)]);
    };
    row("connections (gateways)", &|s| {
        format!(
            "{} of {} ({} failed, {} closed) on {}",
            format_count(s.established),
            format_count(u64::from(s.connections_requested)),
            format_count(s.failed),
            format_count(s.closed_early),
            s.gateways
        )
    });
    row("deliveries of expected", &|s| {
        format!(
            "{} of {}",
            format_count(s.deliveries),
            format_count(s.deliveries_expected)
        )
    });
    row("gaps (never arrived) / duplicates", &|s| {
        format!(
            "{} ({}) / {}",
            format_count(s.gaps),
            format_count(s.missing_tail),
            format_count(s.duplicates)
        )
    });
    row("by cursor: gaps / duplicates / unreadable", &|s| {
        format!(
            "{} / {} / {}",
            format_count(s.cursor_gaps),
            format_count(s.cursor_duplicates),
            format_count(s.cursor_unreadable)
        )
    });
    row("every connection got every event", &|s| {
        if s.every_connection_got_every_event {
            "yes"
        } else {
            "NO"
        }
        .to_owned()
    });
    row("gateway CPU-s (publish + drain)", &|s| optional(s.gateway_cpu_secs, 2));
    row("gateway CPU-s per 1M deliveries", &|s| {
        optional(s.gateway_cpu_secs_per_million_deliveries, 2)
    });
    row("gateway RSS before → held", &|s| {
        format!(
            "{} → {}",
            s.gateway_rss_before_bytes.map_or("-".to_owned(), format_bytes),
            s.gateway_rss_held_bytes.map_or("-".to_owned(), format_bytes)
        )
    });
    row("gateway RSS per connection", &|s| {
        bytes(s.gateway_rss_per_connection_bytes)
    });
    row("gateway RSS per stream followed", &|s| {
        bytes(s.gateway_rss_per_stream_subscription_bytes)
    });
    row("latency p50 / p99 / max", &|s| {
        let [p50, _, p99, _, max] = s.latency.cells();
        format!("{p50} / {p99} / {max}")
    });
    row("helper processes' CPU-s", &|s| optional(s.holders_cpu_secs, 2));
    let mut text = table.render();
    text.push_str(&format!(
        "\nseveral ÷ one: CPU per delivery {}, RSS per stream followed {}\n\
         events published {} ({} errors); publisher behind schedule at worst {:.1} ms; \
         window {:.1}s + {:.1}s drain; ramp {:.1}s; CPU-s ingest / broker {} / {}\n",
        optional(result.cpu_per_delivery_ratio, 2),
        optional(result.rss_per_subscription_ratio, 2),
        format_count(result.events_published),
        format_count(result.publish_errors),
        result.publisher_max_lag_ms,
        result.publish_secs,
        result.drain_secs,
        result.ramp_secs,
        optional(result.ingest_cpu_secs, 2),
        optional(result.broker_cpu_secs, 2),
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_issues_size() {
        use clap::Parser as _;
        let parse = |argv: &[&str]| crate::cli::Cli::try_parse_from(argv).map(|cli| cli.command);
        let Ok(crate::cli::Command::Multistream(args)) = parse(&["sluice-bench", "multistream"]) else {
            panic!("not multistream");
        };
        assert_eq!((args.connections, args.streams), (5_000, 4));
        assert_eq!(
            single_gateways(args.connections, args.streams, args.single_per_gateway),
            Some(2)
        );
        assert!(parse(&["sluice-bench", "multistream", "--connections", "0"]).is_err());
        assert!(parse(&["sluice-bench", "multistream", "--streams", "0"]).is_err());
        let Ok(crate::cli::Command::Longpoll(poll)) = parse(&["sluice-bench", "longpoll"]) else {
            panic!("not longpoll");
        };
        assert_eq!(
            (poll.clients, poll.wait, poll.limit),
            (1_000, Duration::from_secs(10), 100)
        );
    }

    #[test]
    fn single_stream_connections_are_spread_so_no_gateway_holds_too_many() {
        // The issue's size: 20,000 single-stream connections on two gateways of 10,000.
        assert_eq!(single_gateways(5_000, 4, 15_000), Some(2));
        assert_eq!(single_gateways(1_000, 4, 15_000), Some(1));
        // Three streams dealt over two gateways put two streams on the first.
        assert_eq!(single_gateways(7_000, 3, 15_000), Some(2));
        assert_eq!(single_gateways(8_000, 3, 15_000), Some(3));
        assert_eq!(single_gateways(16_000, 4, 15_000), None);
    }

    #[test]
    fn a_side_is_clean_only_when_every_delivery_arrived_once() {
        let mut tally = Tally {
            counts: crate::hold::HolderCounts {
                established: 10,
                probes: 40,
                ..Default::default()
            },
            ..Tally::default()
        };
        let rss = [Some(1_000), Some(11_000), Some(12_000)];
        let clean = Side::new(&tally, 10, 1, 40, Some(2.0), rss, 4, None);
        assert!(clean.every_connection_got_every_event);
        assert_eq!(clean.gateway_rss_per_connection_bytes, Some(1_000.0));
        assert_eq!(clean.gateway_rss_per_stream_subscription_bytes, Some(250.0));
        assert_eq!(clean.gateway_cpu_secs_per_million_deliveries, Some(50_000.0));
        assert!(!Side::new(&tally, 10, 1, 41, None, rss, 4, None).every_connection_got_every_event);
        tally.cursor_duplicates = 1;
        assert!(!Side::new(&tally, 10, 1, 40, None, rss, 4, None).every_connection_got_every_event);
    }

    #[test]
    fn merged_tallies_add_up() {
        let mut one = Tally {
            gaps: 2,
            ..Tally::default()
        };
        one.latency.record(100).unwrap();
        let mut two = Tally {
            gaps: 3,
            ..Tally::default()
        };
        two.latency.record(300).unwrap();
        let merged = merge(vec![one, two]);
        assert_eq!(merged.gaps, 5);
        assert_eq!(merged.latency.len(), 2);
    }
}
