//! The `fanout` and `latency` scenarios: one stream, many subscribers, a steady publisher.
//!
//! Holder processes open `--connections` subscriptions (`from=latest`) on one stream of one
//! gateway. Once all are established and have settled, the bench publishes `--rate` events/s
//! for `--duration` through ingest, one request in flight at a time (so each partition gets
//! the events in the order they were numbered), each request carrying the events due since
//! the previous one. Every event's data is `{"lane":L,"seq":S,"sent_us":T,"pad":"…"}`: one
//! event key per lane, so a lane lives in one partition and must arrive in order; `seq`
//! numbers the lane's events; `sent_us` is the wall clock when the request was sent.
//!
//! Each connection checks its lanes run 0, 1, 2, … (a skip is a gap, a repeat a duplicate),
//! and, when the bench stops it with the per-lane counts published, counts the events it never
//! got (also gaps). Latency is receive time minus `sent_us` — publish through ingest, Kafka,
//! gateway and the client's socket — recorded per delivery into HDR histograms that the
//! holders send back and the bench merges exactly.
//!
//! After the publisher stops, the bench waits (at most `--drain`) for deliveries to finish.
//! Deliveries/s is all bench events received ÷ `--duration`; gateway CPU per million
//! deliveries is the gateway's CPU time from the first publish to the end of the drain.
//!
//! `fanout` (10,000 subscribers × 100 events/s) measures delivery capacity; `latency` (1,000
//! subscribers × 1,000 events/s) the latency of a well-provisioned gateway. Same machinery.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use tokio::time::Instant;

use crate::cli::parse_positive_duration;
use crate::hold::ErrorSample;
use crate::machine::Machine;
use crate::report::{
    format_count, format_duration, format_rate, latency_histogram, write_json, LatencySummary, Table, LATENCY_HEADERS,
};
use crate::rig::{
    cpu_seconds, header, ClientArgs, Fleet, FleetPlan, JsonHeader, Rig, RigArgs, MAX_CONNECTIONS_PER_PROCESS,
};

/// Flags of `sluice-bench fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers, all on one stream of one gateway.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNECTIONS_PER_PROCESS)))]
    pub connections: u32,

    /// Events published per second.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,

    #[command(flatten)]
    pub publish: PublishArgs,
}

/// Flags of `sluice-bench latency`.
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Subscribers, all on one stream of one gateway.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNECTIONS_PER_PROCESS)))]
    pub connections: u32,

    /// Events published per second.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,

    #[command(flatten)]
    pub publish: PublishArgs,
}

/// Flags shared by `fanout` and `latency`.
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

    /// Interval between publish requests; each carries the events due since the previous one
    /// (at most 1,000).
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = parse_positive_duration)]
    pub batch_interval: Duration,

    /// Size in bytes of each event's JSON `data`, padding included.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub payload_bytes: usize,

    /// Event keys (lanes) the events rotate over; each lane is checked for order, gaps and
    /// duplicates on every connection.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub lanes: u32,

    #[command(flatten)]
    pub clients: ClientArgs,

    #[command(flatten)]
    pub rig: RigArgs,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// Runs `fanout` or `latency` (`scenario` names it) under the `--timeout` limit.
pub async fn run(scenario: &'static str, connections: u32, rate: u32, args: PublishArgs) -> anyhow::Result<()> {
    let limit = args.rig.timeout;
    match tokio::time::timeout(limit, run_inner(scenario, connections, rate, args)).await {
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
    deliveries_per_sec: f64,
    gaps: u64,
    /// Of the gaps, events never received after a connection's last one (lost or late).
    missing_tail: u64,
    duplicates: u64,
    latency: LatencySummary,
    /// Ingest's acknowledgement time per publish request: the part of `latency` spent before
    /// Kafka has the events.
    ingest_ack_latency: LatencySummary,
    gateway_cpu_secs: Option<f64>,
    gateway_cpu_secs_per_million_deliveries: Option<f64>,
    /// Gateway CPU as a share of one CPU over the publish+drain window, in percent.
    gateway_cpu_percent: Option<f64>,
    ingest_cpu_secs: Option<f64>,
    broker_cpu_secs: Option<f64>,
    holders_cpu_secs: Option<f64>,
    gateway_rss_end_bytes: Option<u64>,
    errors: std::collections::BTreeMap<String, ErrorSample>,
}

async fn run_inner(scenario: &'static str, connections: u32, rate: u32, args: PublishArgs) -> anyhow::Result<()> {
    let machine = Machine::detect();
    let max_connections = args.rig.gateway_max_connections.unwrap_or(connections + 1_000);
    let mut rig = Rig::start(&args.rig, max_connections).await?;
    rig.create_stream().await?;
    rig.preflight_subscribe("").await?;

    eprintln!(
        "opening {} subscriptions at {}/s over {} helper processes…",
        format_count(u64::from(connections)),
        format_count(u64::from(args.clients.ramp_per_sec)),
        args.clients.client_processes
    );
    let mut fleet = Fleet::spawn(&FleetPlan {
        target: rig.gateway_addr,
        path: rig.stream_path(""),
        connections,
        clients: args.clients.clone(),
        lanes: args.lanes,
        deadline: args.rig.timeout + Duration::from_secs(30),
    })?;
    let ramp_timeout = Duration::from_secs_f64(f64::from(connections) / f64::from(args.clients.ramp_per_sec))
        + args.clients.connect_timeout
        + Duration::from_secs(10);
    let ramp = fleet.wait_established(&mut rig, ramp_timeout).await?;
    tokio::time::sleep(args.settle).await;
    let at_start = fleet.counts();
    if at_start.open() == 0 {
        bail!("no subscription is open; nothing to measure");
    }

    eprintln!(
        "publishing {} events/s for {} to {} subscribers…",
        format_count(u64::from(rate)),
        format_duration(args.duration),
        format_count(at_start.open())
    );
    let cpu_before = (rig.cpu(), fleet.cpu());
    let publish_start = Instant::now();
    let publisher = Publisher::new(&rig, &args, rate)?;
    let published = publisher.run(&mut rig, &fleet).await?;
    let publish_secs = (Instant::now() - publish_start).as_secs_f64();

    // Drain: until every open connection has every event, deliveries stall, or --drain passes.
    let drain_start = Instant::now();
    let expected = published.events * at_start.open();
    let mut last = (fleet.counts().probes, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let received = fleet.counts().probes;
        let now = Instant::now();
        if received >= expected || now - drain_start >= args.drain {
            break;
        }
        if received > last.0 {
            last = (received, now);
        } else if now - last.1 >= Duration::from_secs(2) {
            break;
        }
    }
    let drain_secs = (Instant::now() - drain_start).as_secs_f64();
    let cpu_after = (rig.cpu(), fleet.cpu());
    let rss_end = rig.gateway_rss();
    let fleet_result = fleet.stop(&published.per_lane).await?;

    let deliveries = fleet_result.counts.probes;
    let gateway_cpu = cpu_seconds(cpu_before.0.gateway, cpu_after.0.gateway);
    let window = publish_secs + drain_secs;
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
        deliveries_per_sec: deliveries as f64 / args.duration.as_secs_f64(),
        gaps: fleet_result.gaps,
        missing_tail: fleet_result.missing_tail,
        duplicates: fleet_result.duplicates,
        latency: LatencySummary::from_histogram(&fleet_result.latency),
        ingest_ack_latency: LatencySummary::from_histogram(&published.ack_latency),
        gateway_cpu_secs: gateway_cpu,
        gateway_cpu_secs_per_million_deliveries: gateway_cpu
            .filter(|_| deliveries > 0)
            .map(|cpu| cpu / deliveries as f64 * 1e6),
        gateway_cpu_percent: gateway_cpu.map(|cpu| cpu / window * 100.0),
        ingest_cpu_secs: cpu_seconds(cpu_before.0.ingest, cpu_after.0.ingest),
        broker_cpu_secs: cpu_seconds(cpu_before.0.broker, cpu_after.0.broker),
        holders_cpu_secs: cpu_seconds(cpu_before.1, cpu_after.1),
        gateway_rss_end_bytes: rss_end,
        errors: fleet_result.errors.clone(),
    };

    let workload = format!(
        "{} subscribers on stream `{}` (from=latest) from {} helper processes; {} events/s of \
         {}-byte data over {} keys for {} through ingest, one request per {}",
        format_count(u64::from(connections)),
        rig.stream,
        args.clients.client_processes,
        format_count(u64::from(rate)),
        args.payload_bytes,
        args.lanes,
        format_duration(args.duration),
        format_duration(args.batch_interval),
    );
    print!("{}", header(scenario, &machine, &rig, &workload));
    print!("\n{}", results_table(&result));
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
        #[derive(Serialize)]
        struct Report<'a> {
            #[serde(flatten)]
            header: JsonHeader<'a>,
            settings: serde_json::Value,
            results: &'a FanoutResult,
        }
        let report = Report {
            header: JsonHeader {
                tool: "sluice-bench",
                version: env!("CARGO_PKG_VERSION"),
                scenario,
                machine: &machine,
                kafka_bootstrap: &rig.kafka_bootstrap,
                gateway: format!("http://{}", rig.gateway_addr),
            },
            settings: serde_json::json!({
                "connections": connections,
                "rate": rate,
                "duration_secs": args.duration.as_secs_f64(),
                "settle_secs": args.settle.as_secs_f64(),
                "drain_secs": args.drain.as_secs_f64(),
                "batch_interval_secs": args.batch_interval.as_secs_f64(),
                "payload_bytes": args.payload_bytes,
                "lanes": args.lanes,
                "ramp_per_sec": args.clients.ramp_per_sec,
                "client_processes": args.clients.client_processes,
                "stream": rig.stream,
                "gateway_max_connections": max_connections,
                "gateway_args": args.rig.gateway_args,
            }),
            results: &result,
        };
        write_json(path, &report)?;
    }
    rig.stop().await?;
    if result.deliveries == 0 {
        bail!("not one event was delivered");
    }
    Ok(())
}

impl FanoutResult {
    fn unknown_or_lost(&self) -> bool {
        self.gaps > 0 || self.duplicates > 0
    }
}

/// The main figures as a two-column table.
fn results_table(result: &FanoutResult) -> String {
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
        ["ingest ack (per request)".to_owned(), format_count(ingest_ack.count)]
            .into_iter()
            .chain(ingest_ack.cells()),
    );
    table.render()
}

/// Publishes the bench events through ingest at a fixed rate.
#[derive(Debug)]
struct Publisher {
    client: reqwest::Client,
    url: String,
    rate: u32,
    duration: Duration,
    interval: Duration,
    lanes: u32,
    pad: String,
}

/// What was published.
#[derive(Debug)]
struct Published {
    events: u64,
    /// Events per lane (a lane's sequence numbers run 0..count).
    per_lane: Vec<u64>,
    requests: u64,
    errors: u64,
    error_example: Option<String>,
    /// Time from sending each publish request to ingest's acknowledgement (successes only).
    ack_latency: Histogram<u64>,
}

impl Published {
    fn new(lanes: u32) -> Self {
        Self {
            events: 0,
            per_lane: vec![0; lanes as usize],
            requests: 0,
            errors: 0,
            error_example: None,
            ack_latency: latency_histogram(),
        }
    }
}

/// Most events in one ingest request (ingest's own default limit).
const MAX_BATCH: u64 = 1_000;

impl Publisher {
    fn new(rig: &Rig, args: &PublishArgs, rate: u32) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the publisher's HTTP client")?;
        Ok(Self {
            client,
            url: rig.events_url(),
            rate,
            duration: args.duration,
            interval: args.batch_interval,
            lanes: args.lanes,
            pad: padding(args.payload_bytes),
        })
    }

    /// Publishes for `duration`, one request in flight, printing progress each second.
    async fn run(&self, rig: &mut Rig, fleet: &Fleet) -> anyhow::Result<Published> {
        let start = Instant::now();
        let end = start + self.duration;
        let total = (f64::from(self.rate) * self.duration.as_secs_f64()).round() as u64;
        let mut published = Published::new(self.lanes);
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_print = start + Duration::from_secs(1);
        let mut printed = (0, fleet.counts().probes);
        loop {
            ticks.tick().await;
            let now = Instant::now();
            if now >= next_print {
                next_print += Duration::from_secs(1);
                rig.ensure_running()?;
                let counts = fleet.counts();
                eprintln!(
                    "  publish {:>3}s: {:>6} events/s sent, {:>10} deliveries/s, {} open",
                    (now - start).as_secs(),
                    format_count(published.events - printed.0),
                    format_count(counts.probes - printed.1),
                    format_count(counts.open()),
                );
                printed = (published.events, counts.probes);
            }
            let due = if now >= end {
                total
            } else {
                ((now - start).as_secs_f64() * f64::from(self.rate)) as u64
            }
            .min(total);
            let batch = (due - published.events).min(MAX_BATCH);
            if batch > 0 {
                let body = self.body(&mut published, batch);
                published.requests += 1;
                let sent = Instant::now();
                match self.post(body).await {
                    Ok(()) => {
                        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        published.ack_latency.saturating_record(micros.max(1));
                    }
                    Err(err) => {
                        published.errors += 1;
                        published.error_example.get_or_insert(err);
                    }
                }
            }
            if published.events >= total {
                return Ok(published);
            }
            // Bounded even if ingest stalls: give up on the remainder well past the end.
            if now >= end + Duration::from_secs(10) {
                return Ok(published);
            }
        }
    }

    /// A JSON array of `count` events, advancing the lane counters.
    fn body(&self, published: &mut Published, count: u64) -> String {
        let sent_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros());
        let mut body = String::with_capacity(count as usize * (self.pad.len() + 100) + 2);
        body.push('[');
        for index in 0..count {
            let lane = (published.events % u64::from(self.lanes)) as usize;
            let seq = published.per_lane[lane];
            published.per_lane[lane] += 1;
            published.events += 1;
            if index > 0 {
                body.push(',');
            }
            body.push_str(&event_json(lane, seq, sent_us, &self.pad));
        }
        body.push(']');
        body
    }

    async fn post(&self, body: String) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status();
        if status.is_success() {
            // The acknowledgements are not needed; reading the body frees the connection.
            let _ = response.bytes().await;
            Ok(())
        } else {
            let text = response.text().await.unwrap_or_default();
            Err(format!("{status}: {}", text.chars().take(200).collect::<String>()))
        }
    }
}

/// One event, `{"key":"lane-L","data":{"lane":L,"seq":S,"sent_us":T,"pad":"…"}}`.
fn event_json(lane: usize, seq: u64, sent_us: u128, pad: &str) -> String {
    format!(r#"{{"key":"lane-{lane}","data":{{"lane":{lane},"seq":{seq},"sent_us":{sent_us},"pad":"{pad}"}}}}"#)
}

/// Padding that brings a typical event's data to `payload_bytes` (a 16-digit timestamp, a
/// 6-digit sequence number, a 1-digit lane).
fn padding(payload_bytes: usize) -> String {
    let typical = r#"{"lane":0,"seq":000000,"sent_us":0000000000000000,"pad":""}"#.len();
    "x".repeat(payload_bytes.saturating_sub(typical))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::sse_wire::{parse_probe, Probe};

    #[test]
    fn events_carry_a_probe_the_holders_can_read() {
        let pad = padding(100);
        let event = event_json(3, 123_456, 1_732_000_000_000_000, &pad);
        let value: serde_json::Value = serde_json::from_str(&event).unwrap();
        assert_eq!(value["key"], "lane-3");
        let data = serde_json::to_string(&value["data"]).unwrap();
        assert_eq!(data.len(), 100, "{data}");
        assert_eq!(
            parse_probe(data.as_bytes()),
            Some(Probe {
                lane: 3,
                seq: 123_456,
                sent_us: 1_732_000_000_000_000
            })
        );
    }

    #[test]
    fn batches_rotate_lanes_and_number_each_lane_from_zero() {
        let publisher = Publisher {
            client: reqwest::Client::new(),
            url: String::new(),
            rate: 100,
            duration: Duration::from_secs(1),
            interval: Duration::from_millis(10),
            lanes: 3,
            pad: String::new(),
        };
        let mut published = Published::new(3);
        let first: serde_json::Value = serde_json::from_str(&publisher.body(&mut published, 4)).unwrap();
        let second: serde_json::Value = serde_json::from_str(&publisher.body(&mut published, 3)).unwrap();
        let probes: Vec<(u64, u64)> = first
            .as_array()
            .unwrap()
            .iter()
            .chain(second.as_array().unwrap())
            .map(|event| {
                (
                    event["data"]["lane"].as_u64().unwrap(),
                    event["data"]["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(probes, [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]);
        assert_eq!(published.events, 7);
        assert_eq!(published.per_lane, [3, 2, 2]);
    }

    #[test]
    fn scenario_defaults_differ_only_in_scale() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().command;
        let Command::Fanout(fanout) = parse(&["sluice-bench", "fanout"]) else {
            panic!("not fanout");
        };
        assert_eq!((fanout.connections, fanout.rate), (10_000, 100));
        let Command::Latency(latency) = parse(&["sluice-bench", "latency"]) else {
            panic!("not latency");
        };
        assert_eq!((latency.connections, latency.rate), (1_000, 1_000));
        assert_eq!(latency.publish.duration, Duration::from_secs(20));
        assert_eq!(latency.publish.clients.client_processes, 2);
        assert_eq!(latency.publish.clients.source_addrs.len(), 8);
        assert!(Cli::try_parse_from(["sluice-bench", "fanout", "--connections", "20000"]).is_err());
    }
}
