//! The `streams` scenario: what each stream a gateway serves costs it in threads, memory and
//! connections to the broker (issue 12).
//!
//! Every other scenario puts its connections on one stream; a pod serving many streams at
//! once pays whatever the gateway spends per stream on top. For each count N of `--streams`
//! the bench starts a **fresh** stack (broker, ingest, gateway: nothing carries over from the
//! previous N) whose broker creates N topics `{stream}-0` … `{stream}-{N-1}` up front (4
//! partitions each, or `--partitions`), writes one record to each straight to Kafka, and reads the gateway
//! from `/proc` while it serves no stream: threads, RSS, and its TCP connections to the
//! broker's port. Helper processes then open one subscription per stream (`from=earliest`,
//! so the record is each stream's first event) and the bench waits until every one has
//! arrived: the time that took is the time to open all streams, and the gateway is read
//! again, at once and `--settle` later (threads that only ran a blocking metadata call leave
//! tokio's pool after 10 s idle; what stays is what the streams cost for good). A count whose streams do not all open within `--open-timeout`, or whose gateway
//! dies, is reported as far as it got, and the next count still runs: how the gateway fails
//! at a size is a finding too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use sluice_kafka::{headers, KafkaArgs, OutRecord, Producer, ProducerSettings};
use tokio::time::Instant;

use crate::cli::parse_positive_duration;
use crate::hold::ErrorSample;
use crate::procfs;
use crate::report::{format_bytes, format_count, format_duration, write_json, Table};
use crate::rig::{header, ClientArgs, Fleet, FleetPlan, JsonHeader, Rig, RigArgs, RunStart, ServerKind};

/// Flags of `sluice-bench streams`.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamsArgs {
    /// Stream counts to measure, each on a fresh broker and gateway, one subscriber per stream.
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', default_value = "1,100,1000",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub streams: Vec<u32>,

    /// How long to wait after every stream opened before reading the gateway again: opening
    /// streams runs metadata calls on tokio's blocking pool, whose idle threads leave after
    /// 10 s, so the later reading is what the streams cost for good.
    #[arg(long, value_name = "DURATION", default_value = "12s", value_parser = parse_positive_duration)]
    pub settle: Duration,

    /// How long one count's streams may take to open and deliver their first event; past it
    /// the count is reported as incomplete and the next one runs.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_positive_duration)]
    pub open_timeout: Duration,

    #[command(flatten)]
    pub clients: ClientArgs,

    #[command(flatten)]
    pub rig: RigArgs,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// The gateway process at one instant.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Footprint {
    threads: Option<u64>,
    rss_bytes: Option<u64>,
    /// TCP connections from the gateway to the broker's port(s).
    broker_connections: Option<u64>,
}

/// One count's measurements.
#[derive(Debug, Serialize)]
struct CountResult {
    streams: u32,
    /// `all streams open`, or what stopped the count short.
    outcome: String,
    established: u64,
    failed: u64,
    /// Events received over all subscribers (one per stream when all opened).
    first_events: u64,
    /// From the first subscriber's start until every stream's first event arrived (or the
    /// count stopped).
    open_secs: f64,
    /// Serving no stream, after the records were written.
    before_streams: Footprint,
    /// With every stream open (or as far as the count got), at once.
    with_streams: Footprint,
    /// The same, `--settle` later.
    settled: Footprint,
    catchup_readers_active: Option<f64>,
    errors: BTreeMap<String, ErrorSample>,
}

/// Runs the scenario under the `--timeout` limit.
pub async fn run(args: StreamsArgs) -> anyhow::Result<()> {
    let limit = args.rig.timeout;
    match tokio::time::timeout(limit, run_inner(args)).await {
        Ok(outcome) => outcome,
        Err(_) => anyhow::bail!("the run exceeded --timeout {} and was stopped", format_duration(limit)),
    }
}

async fn run_inner(args: StreamsArgs) -> anyhow::Result<()> {
    let start = RunStart::now();
    let workload = format!(
        "for each of {} streams: a fresh broker and gateway, that many topics `{}-<i>` ({} partitions, \
         one record each, written straight to Kafka), one SSE subscriber per stream (from=earliest) \
         over at most {} helper processes at {}/s; measured when every stream's first event arrived",
        args.streams.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        args.rig.stream,
        args.rig.partitions.unwrap_or(4),
        args.clients.client_processes,
        format_count(u64::from(args.clients.ramp_rate)),
    );
    let mut report_header = None;
    let mut results = Vec::new();
    for &count in &args.streams {
        eprintln!("{count} stream(s): starting a fresh broker, ingest and gateway…");
        let mut rig = Rig::start_with_numbered_topics(&args.rig, count + 1_000, count).await?;
        report_header.get_or_insert_with(|| header("streams", &start, &rig, &workload));
        let result = measure(&args, &mut rig, count).await?;
        eprintln!(
            "  {count} stream(s): {} — threads {} → {} → {}, broker connections {} → {} → {}",
            result.outcome,
            show(result.before_streams.threads),
            show(result.with_streams.threads),
            show(result.settled.threads),
            show(result.before_streams.broker_connections),
            show(result.with_streams.broker_connections),
            show(result.settled.broker_connections),
        );
        results.push(result);
        rig.stop().await?;
    }

    print!("{}", report_header.unwrap_or_default());
    print!("          a fresh stack per count: nothing carries over between rows\n\n");
    print!("{}", results_table(&results, args.settle));
    for result in results.iter().filter(|result| !result.errors.is_empty()) {
        print!(
            "\nsubscriber failures at {} streams:\n{}",
            result.streams,
            crate::hold::error_lines(&result.errors)
        );
    }
    if let Some(path) = &args.json {
        write_results(path, &args, &start, &results)?;
    }
    Ok(())
}

/// Writes the records, reads the gateway, opens one subscriber per stream, waits for every
/// first event and reads the gateway again.
async fn measure(args: &StreamsArgs, rig: &mut Rig, count: u32) -> anyhow::Result<CountResult> {
    let bootstrap = rig
        .kafka_bootstrap
        .clone()
        .context("the streams scenario needs the gateway")?;
    write_one_record_each(&bootstrap, &rig.stream, count).await?;
    let broker_ports: Vec<u16> = bootstrap
        .split(',')
        .filter_map(|server| server.rsplit_once(':')?.1.parse().ok())
        .collect();
    let before_streams = footprint(rig, &broker_ports);

    let path = format!("/v1/streams/{}-{{i}}?from=earliest", rig.stream);
    let deadline = args.open_timeout + Duration::from_secs(30);
    let fleet = Fleet::spawn(&FleetPlan::new(rig, path, count, &args.clients, deadline))?;
    let opened = Instant::now();
    let outcome = wait_for_first_events(rig, &fleet, count, args.open_timeout).await;
    let open_secs = opened.elapsed().as_secs_f64();
    let with_streams = footprint(rig, &broker_ports);
    // A measurement window, as `idle`'s settle: the subscribers stay open meanwhile.
    tokio::time::sleep(args.settle).await;
    let settled = footprint(rig, &broker_ports);
    let catchup_readers_active = match rig.metrics(0).await {
        Some(text) => procfs::parse_metric(&text, "sluice_gateway_catchup_readers_active"),
        None => None,
    };
    let counts = fleet.counts();
    let errors = match fleet.stop(&[]).await {
        Ok(tally) => tally.errors,
        Err(err) => BTreeMap::from([(
            "holder".to_owned(),
            ErrorSample {
                count: 1,
                example: format!("{err:#}"),
            },
        )]),
    };
    Ok(CountResult {
        streams: count,
        outcome,
        established: counts.established,
        failed: counts.failed,
        first_events: counts.events,
        open_secs,
        before_streams,
        with_streams,
        settled,
        catchup_readers_active,
        errors,
    })
}

/// One record on each topic `{stream}-{i}`, acknowledged, with the producer convention's
/// headers.
async fn write_one_record_each(bootstrap: &str, stream: &str, count: u32) -> anyhow::Result<()> {
    let producer = Producer::new(&KafkaArgs::new(bootstrap), ProducerSettings::default())
        .context("creating the Kafka producer")?;
    let mut pending = Vec::new();
    for index in 0..count {
        let record = OutRecord {
            topic: format!("{stream}-{index}"),
            value: format!("{{\"stream\":{index}}}").into_bytes(),
            headers: vec![
                (headers::EVENT_TYPE.to_owned(), b"message".to_vec()),
                (headers::CONTENT_TYPE.to_owned(), b"application/json".to_vec()),
            ],
            ..OutRecord::default()
        };
        pending.push(producer.enqueue(&record).context("enqueueing a record")?);
    }
    for record in pending {
        record.acknowledged().await.context("writing a stream's record")?;
    }
    Ok(())
}

/// Waits until `count` events arrived (one per stream), a subscriber failed, the gateway died
/// or `timeout` passed, printing progress each second; says which.
async fn wait_for_first_events(rig: &mut Rig, fleet: &Fleet, count: u32, timeout: Duration) -> String {
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    let mut next_print = start + Duration::from_secs(1);
    loop {
        ticks.tick().await;
        if let Err(err) = rig.ensure_running() {
            return format!("the gateway stack died: {err:#}");
        }
        let counts = fleet.counts();
        if counts.events >= u64::from(count) {
            return "all streams open".to_owned();
        }
        if counts.failed > 0 && counts.established + counts.failed >= u64::from(count) {
            return format!("{} subscriber(s) refused or timed out", format_count(counts.failed));
        }
        if start.elapsed() > timeout {
            return format!(
                "incomplete: {} of {count} first events after {}",
                format_count(counts.events),
                format_duration(timeout)
            );
        }
        if Instant::now() >= next_print {
            next_print += Duration::from_secs(1);
            eprintln!(
                "  open {:>3}s: {} established, {} first events, gateway threads {}",
                start.elapsed().as_secs(),
                format_count(counts.established),
                format_count(counts.events),
                show(procfs::threads(rig.gateway_pid())),
            );
        }
    }
}

fn footprint(rig: &Rig, broker_ports: &[u16]) -> Footprint {
    let pid = rig.gateway_pid();
    Footprint {
        threads: procfs::threads(pid),
        rss_bytes: procfs::rss_bytes(pid),
        broker_connections: procfs::tcp_connections_to(pid, broker_ports).map(|n| n as u64),
    }
}

fn show(value: Option<impl Into<u64>>) -> String {
    value.map_or("?".to_owned(), |value| format_count(value.into()))
}

/// One row per count: before → with the streams.
fn results_table(results: &[CountResult], settle: Duration) -> String {
    let bytes = |value: Option<u64>| value.map_or("?".to_owned(), format_bytes);
    let mut table = Table::new([
        "streams",
        "gateway threads",
        "gateway RSS",
        "broker TCP conns",
        "time to open all",
        "first events",
        "outcome",
    ]);
    for result in results {
        let (before, with, settled) = (&result.before_streams, &result.with_streams, &result.settled);
        table.row([
            format_count(u64::from(result.streams)),
            format!(
                "{} → {} → {}",
                show(before.threads),
                show(with.threads),
                show(settled.threads)
            ),
            format!("{} → {}", bytes(before.rss_bytes), bytes(settled.rss_bytes)),
            format!(
                "{} → {} → {}",
                show(before.broker_connections),
                show(with.broker_connections),
                show(settled.broker_connections)
            ),
            format!("{:.1}s", result.open_secs),
            format!(
                "{} of {}",
                format_count(result.first_events),
                format_count(u64::from(result.streams))
            ),
            result.outcome.clone(),
        ]);
    }
    format!(
        "{}(threads and broker conns: serving no stream → every stream open → {} later; RSS: no \
         stream → {} later)\n",
        table.render(),
        format_duration(settle),
        format_duration(settle)
    )
}

/// The `--json` document: the common header (no single stack: each count had its own), the
/// settings and a result per count.
fn write_results(
    path: &std::path::Path,
    args: &StreamsArgs,
    start: &RunStart,
    results: &[CountResult],
) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Report<'a> {
        #[serde(flatten)]
        header: JsonHeader<'a>,
        settings: serde_json::Value,
        results: &'a [CountResult],
    }
    let report = Report {
        header: JsonHeader {
            tool: "sluice-bench",
            version: env!("CARGO_PKG_VERSION"),
            scenario: "streams",
            command: crate::rig::command_line(),
            server: ServerKind::Gateway,
            auth: args.rig.auth,
            machine: &start.machine,
            load_average_start: start.load_average,
            load_average_end: procfs::load_average(),
            kafka_bootstrap: None,
            servers: Vec::new(),
        },
        settings: serde_json::json!({
            "streams": args.streams,
            "fresh_stack_per_count": true,
            "partitions_per_topic": args.rig.partitions.unwrap_or(4),
            "open_timeout_secs": args.open_timeout.as_secs_f64(),
            "settle_secs": args.settle.as_secs_f64(),
            "client_processes": args.clients.client_processes,
            "ramp_rate": args.clients.ramp_rate,
            "topic_prefix": args.rig.stream,
            "gateway_args": args.rig.gateway_args,
        }),
        results,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_json(path, &report)
}
