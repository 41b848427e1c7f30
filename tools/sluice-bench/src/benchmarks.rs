//! `sluice-bench report`: BENCHMARKS.md, generated from the scenarios' JSON results.
//!
//! Every gateway scenario writes a JSON document (`--json`; the `make bench-*` targets put
//! them under `target/bench/`). This module reads those documents and a hand-written template
//! holding the prose (`tools/sluice-bench/BENCHMARKS.template.md`), and fills the template's
//! placeholders with tables:
//!
//! | placeholder | what it becomes |
//! |---|---|
//! | `{{machine}}` | the machine the runs were measured on |
//! | `{{runs}}` | every run: its exact command and the load average at its start and end |
//! | `{{aims}}` | each aim with the measured figure, marked met / missed / not run |
//! | `{{results}}` | one table per scenario with its main figures (`multistream`: both sides in each row) |
//! | `{{ratios}}` | gateway figures as ratios to the baseline server measured in the same session |
//! | `{{perf_pass}}` | `docs/perf-pass.md` verbatim (another engineer's profiling notes), or a placeholder line |
//!
//! Rendering is a pure function of the template, the documents and the perf-pass text, so
//! it is unit-tested; only [`run`] touches files. A missing result renders as "not run" rather
//! than failing: a partial session still gives a truthful document.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use crate::report::{format_bytes, format_count, format_micros, format_rate};

/// Flags of `sluice-bench report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Directory of the scenarios' JSON results (`<scenario>.json`, `baseline-<scenario>.json`,
    /// `latency-aim.json`, `latency-sweep-<rate>.json`).
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    pub results: PathBuf,

    /// The template holding the prose, with `{{placeholders}}` for the generated parts.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "tools/sluice-bench/BENCHMARKS.template.md"
    )]
    pub template: PathBuf,

    /// Hand-written profiling notes included verbatim when the file exists.
    #[arg(long, value_name = "PATH", default_value = "docs/perf-pass.md")]
    pub perf_pass: PathBuf,

    /// Where to write the document.
    #[arg(long, value_name = "PATH", default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
}

/// Reads the results and the template, writes the document.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let template = std::fs::read_to_string(&args.template)
        .with_context(|| format!("reading the template {}", args.template.display()))?;
    let results = read_results(&args.results)?;
    anyhow::ensure!(
        !results.is_empty(),
        "no results in {}: run the scenarios first (make bench-all)",
        args.results.display()
    );
    let perf_pass = std::fs::read_to_string(&args.perf_pass).ok();
    let document = render(&template, &results, perf_pass.as_deref());
    std::fs::write(&args.out, document).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} from {} result files in {}",
        args.out.display(),
        results.len(),
        args.results.display()
    );
    Ok(())
}

/// Every `*.json` in `dir`, by file stem.
fn read_results(dir: &Path) -> anyhow::Result<Results> {
    let mut results = Results::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("json") {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        results.insert(stem.to_owned(), value);
    }
    Ok(results)
}

/// Result documents by name (`idle`, `baseline-fanout`, `latency-sweep-500`, …).
pub type Results = BTreeMap<String, Value>;

/// Fills the template's placeholders.
pub fn render(template: &str, results: &Results, perf_pass: Option<&str>) -> String {
    let perf_pass = match perf_pass {
        Some(text) => text.trim_end().to_owned(),
        None => "_No profiling notes yet: `docs/perf-pass.md` does not exist._".to_owned(),
    };
    template
        .replace("{{machine}}", &machine(results))
        .replace("{{runs}}", &runs(results))
        .replace("{{aims}}", &aims(results))
        .replace("{{results}}", &scenario_tables(results))
        .replace("{{ratios}}", &ratios(results))
        .replace("{{perf_pass}}", &perf_pass)
}

/// A number at a dotted path (`results.latency.p99_us`).
fn num(document: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(document, |value, key| value.get(key))
        .and_then(Value::as_f64)
}

/// `a / b`, when both exist and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b != 0.0).then(|| a / b)
}

/// Whether an aim was met, from the measured value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    NotRun,
}

impl Verdict {
    fn from_check(check: Option<bool>) -> Self {
        match check {
            Some(true) => Self::Met,
            Some(false) => Self::Missed,
            None => Self::NotRun,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "**missed**",
            Self::NotRun => "not run",
        }
    }
}

/// A markdown table; columns from `numbers_from` on hold numbers and are right-aligned.
fn table(headers: &[&str], numbers_from: usize, rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n|", headers.join(" | "));
    for (index, _) in headers.iter().enumerate() {
        out.push_str(if index < numbers_from { "---|" } else { "---:|" });
    }
    out.push('\n');
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

fn machine(results: &Results) -> String {
    let Some(document) = results.values().find(|document| document.get("machine").is_some()) else {
        return "_No results: the machine is unknown._".to_owned();
    };
    let machine = &document["machine"];
    let text = |key: &str| machine.get(key).and_then(Value::as_str).unwrap_or("unknown").to_owned();
    let rows = vec![
        vec!["CPU".to_owned(), text("cpu_model")],
        vec![
            "logical CPUs".to_owned(),
            or_dash(num(machine, "logical_cpus").map(|n| format!("{n}"))),
        ],
        vec![
            "memory".to_owned(),
            or_dash(num(machine, "memory_bytes").map(|bytes| format_bytes(bytes as u64))),
        ],
        vec![
            "OS".to_owned(),
            format!("{} {} ({})", text("os"), text("kernel"), text("arch")),
        ],
    ];
    table(&["", ""], 2, &rows)
}

fn load(document: &Value, key: &str) -> String {
    match document.get(key).and_then(Value::as_array) {
        Some(values) => values
            .iter()
            .filter_map(Value::as_f64)
            .map(|value| format!("{value:.2}"))
            .collect::<Vec<_>>()
            .join(" / "),
        None => "-".to_owned(),
    }
}

fn runs(results: &Results) -> String {
    let mut ordered: Vec<(&String, &Value)> = results.iter().collect();
    ordered.sort_by_key(|(name, document)| report_order(name, document));
    let rows: Vec<Vec<String>> = ordered
        .into_iter()
        .map(|(name, document)| {
            vec![
                name.clone(),
                format!("`{}`", document.get("command").and_then(Value::as_str).unwrap_or("?")),
                load(document, "load_average_start"),
                load(document, "load_average_end"),
            ]
        })
        .collect();
    table(
        &["result", "command", "load avg at start (1/5/15 min)", "at end"],
        4,
        &rows,
    )
}

/// Latency aim threshold: p99 ≤ 20 ms.
const LATENCY_AIM_US: f64 = 20_000.0;

/// The highest swept rate whose p99 stayed within the latency aim, with its p99.
pub fn best_sweep_rate(results: &Results) -> Option<(f64, f64)> {
    results
        .iter()
        .filter(|(name, _)| name.starts_with("latency-sweep-"))
        .filter_map(|(_, document)| {
            let rate = num(document, "settings.rate")?;
            let p99 = num(document, "results.latency.p99_us")?;
            let clean = num(document, "results.gaps") == Some(0.0);
            (p99 <= LATENCY_AIM_US && clean).then_some((rate, p99))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// What the latency sweep found, as a clause for the aims table.
fn sweep_summary(results: &Results, best: Option<(f64, f64)>) -> String {
    if let Some((rate, p99)) = best {
        return format!(
            "; p99 ≤ 20 ms held up to {} events/s × 5,000 ({})",
            format_rate(rate),
            format_micros(p99 as u64)
        );
    }
    let lowest = results
        .iter()
        .filter(|(name, _)| name.starts_with("latency-sweep-"))
        .filter_map(|(_, document)| {
            Some((
                num(document, "settings.rate")?,
                num(document, "results.latency.p99_us")?,
            ))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0));
    match lowest {
        Some((rate, p99)) => format!(
            "; in the sweep p99 ≤ 20 ms held at no rate, down to {} events/s × 5,000 (p99 {})",
            format_rate(rate),
            format_micros(p99 as u64)
        ),
        None => String::new(),
    }
}

/// Zero gaps and duplicates, by sequence and by cursor, in a document's results.
fn clean(document: &Value) -> Option<bool> {
    let keys = ["gaps", "duplicates", "cursor_gaps", "cursor_duplicates"];
    let values: Vec<f64> = keys
        .iter()
        .filter_map(|key| num(document, &format!("results.{key}")))
        .collect();
    (!values.is_empty()).then(|| values.iter().all(|&value| value == 0.0))
}

/// Gateway CPU efficiency relative to the baseline: baseline CPU-s per 1M deliveries ÷ the
/// gateway's (1.0 = as cheap as the floor).
pub fn fanout_efficiency(results: &Results) -> Option<f64> {
    let path = "results.gateway_cpu_secs_per_million_deliveries";
    ratio(
        results.get("baseline-fanout").and_then(|d| num(d, path)),
        results.get("fanout").and_then(|d| num(d, path)),
    )
}

fn aims(results: &Results) -> String {
    let get = |name: &str| results.get(name);
    let mut rows = Vec::new();

    let idle = get("idle");
    let per_conn = idle.and_then(|d| num(d, "results.rss_per_connection_bytes"));
    let established = idle.and_then(|d| num(d, "results.established"));
    rows.push(vec![
        "≤ 10 KiB of gateway user memory per idle connection, at 15,000".to_owned(),
        or_dash(per_conn.map(|bytes| {
            format!(
                "{} at {} connections",
                format_bytes(bytes.max(0.0) as u64),
                format_count(established.unwrap_or(0.0) as u64)
            )
        })),
        Verdict::from_check(per_conn.map(|bytes| bytes <= 10_240.0 && established.unwrap_or(0.0) >= 15_000.0))
            .label()
            .to_owned(),
    ]);

    let fanout = get("fanout");
    let deliveries = fanout.and_then(|d| num(d, "results.deliveries_per_sec"));
    rows.push(vec![
        "≥ 500,000 deliveries/s broadcast".to_owned(),
        or_dash(deliveries.map(|rate| format!("{}/s", format_rate(rate)))),
        Verdict::from_check(deliveries.map(|rate| rate >= 500_000.0 && fanout.and_then(clean).unwrap_or(false)))
            .label()
            .to_owned(),
    ]);
    let efficiency = fanout_efficiency(results);
    rows.push(vec![
        "fan-out ≥ 40 % of the baseline (CPU per delivery)".to_owned(),
        or_dash(efficiency.map(|share| format!("{:.0} % of the baseline's efficiency", share * 100.0))),
        Verdict::from_check(efficiency.map(|share| share >= 0.4))
            .label()
            .to_owned(),
    ]);

    let aim = get("latency-aim");
    let p99 = aim.and_then(|d| num(d, "results.latency.p99_us"));
    let best = best_sweep_rate(results);
    rows.push(vec![
        "publish → receive p99 ≤ 20 ms at 5,000 events/s × 5,000 subscribers".to_owned(),
        or_dash(p99.map(|p99| {
            let delivered =
                aim.and_then(|d| ratio(num(d, "results.deliveries"), num(d, "results.deliveries_expected")));
            format!(
                "p99 {}, {} of the expected deliveries arrived{}",
                format_micros(p99 as u64),
                delivered.map_or("?".to_owned(), |share| format!("{:.1} %", share * 100.0)),
                sweep_summary(results, best)
            )
        })),
        Verdict::from_check(p99.map(|p99| p99 <= LATENCY_AIM_US && aim.and_then(clean).unwrap_or(false)))
            .label()
            .to_owned(),
    ]);

    let storm = get("reconnect");
    let back = storm.and_then(|d| num(d, "results.secs_until_all_back"));
    let storm_clean = storm.and_then(clean);
    rows.push(vec![
        "reconnect storm: 10,000 clients all back within 10 s, zero gaps and duplicates".to_owned(),
        match (storm, back) {
            (None, _) => "-".to_owned(),
            (Some(_), None) => "not all back within the storm window".to_owned(),
            (Some(_), Some(secs)) => format!(
                "all back in {secs:.2} s; {}",
                if storm_clean == Some(true) {
                    "no gap, no duplicate"
                } else {
                    "gaps or duplicates seen"
                }
            ),
        },
        Verdict::from_check(storm.map(|_| back.is_some_and(|secs| secs <= 10.0) && storm_clean == Some(true)))
            .label()
            .to_owned(),
    ]);

    let catchup = get("catchup");
    let rate = catchup.and_then(|d| num(d, "results.catchup_events_per_sec"));
    rows.push(vec![
        "catch-up ≥ 200,000 events/s".to_owned(),
        or_dash(catchup.map(|d| {
            format!(
                "{} events/s over {} events behind",
                rate.map_or("-".to_owned(), format_rate),
                format_count(num(d, "results.behind_held").unwrap_or(0.0) as u64)
            )
        })),
        Verdict::from_check(catchup.map(|_| rate.is_some_and(|rate| rate >= 200_000.0)))
            .label()
            .to_owned(),
    ]);
    table(&["aim", "measured", ""], 3, &rows)
}

/// One row: a label and a value formatted from a number at `path`, if present.
fn row(document: &Value, label: &str, path: &str, format: impl Fn(f64) -> String) -> Vec<String> {
    vec![label.to_owned(), or_dash(num(document, path).map(format))]
}

fn count(value: f64) -> String {
    format_count(value.max(0.0).round() as u64)
}

fn micros(value: f64) -> String {
    format_micros(value.max(0.0) as u64)
}

fn scenario_tables(results: &Results) -> String {
    let bytes = |value: f64| {
        if value < 0.0 {
            format!("-{}", format_bytes((-value) as u64))
        } else {
            format_bytes(value as u64)
        }
    };
    let two = |value: f64| format!("{value:.2}");
    let mut out = String::new();
    let mut ordered: Vec<(&String, &Value)> = results.iter().collect();
    ordered.sort_by_key(|(name, document)| report_order(name, document));
    for (name, document) in ordered {
        let scenario = document.get("scenario").and_then(Value::as_str).unwrap_or("");
        if scenario == "ingest" {
            out.push_str(&ingest_table(name, document));
            continue;
        }
        let rows: Vec<Vec<String>> = match scenario {
            "idle" => vec![
                row(document, "connections established", "results.established", count),
                row(
                    document,
                    "server RSS before the connections",
                    "results.gateway_rss_baseline_bytes",
                    bytes,
                ),
                row(
                    document,
                    "server RSS with the connections held",
                    "results.gateway_rss_held_bytes",
                    bytes,
                ),
                row(
                    document,
                    "user memory per connection",
                    "results.rss_per_connection_bytes",
                    bytes,
                ),
                row(
                    document,
                    "kernel slab per connection (both ends)",
                    "results.kernel_slab_per_connection_bytes",
                    bytes,
                ),
                row(
                    document,
                    "kernel TCP buffers per connection (both ends)",
                    "results.kernel_tcp_buffer_per_connection_bytes",
                    bytes,
                ),
                row(
                    document,
                    "CPU while idle, % of one CPU",
                    "results.gateway_cpu_percent_idle",
                    two,
                ),
                row(document, "heartbeats received", "results.heartbeats_received", count),
            ],
            "fanout" | "latency" | "keyed" => vec![
                row(document, "subscribers", "results.established", count),
                row(document, "events published", "results.events_published", count),
                row(document, "deliveries", "results.deliveries", count),
                row(document, "deliveries expected", "results.deliveries_expected", count),
                row(document, "deliveries/s", "results.deliveries_per_sec", format_rate),
                row(document, "gaps", "results.gaps", count),
                row(document, "duplicates", "results.duplicates", count),
                row(document, "gaps (cursor)", "results.cursor_gaps", count),
                row(document, "duplicates (cursor)", "results.cursor_duplicates", count),
                row(document, "misrouted (keyed)", "results.misrouted", count),
                row(
                    document,
                    "server CPU-s per 1M deliveries",
                    "results.gateway_cpu_secs_per_million_deliveries",
                    two,
                ),
                row(
                    document,
                    "server CPU-s per 1M events published",
                    "results.gateway_cpu_secs_per_million_events",
                    two,
                ),
                row(document, "server CPU, % of one CPU", "results.gateway_cpu_percent", two),
                row(document, "helper processes' CPU-s", "results.holders_cpu_secs", two),
                row(document, "latency p50", "results.latency.p50_us", micros),
                row(document, "latency p99", "results.latency.p99_us", micros),
                row(document, "latency p99.9", "results.latency.p999_us", micros),
                row(document, "latency max", "results.latency.max_us", micros),
                row(document, "publish ack p99", "results.ingest_ack_latency.p99_us", micros),
                row(
                    document,
                    "publisher behind schedule at worst, ms",
                    "results.publisher_max_lag_ms",
                    two,
                ),
            ],
            "reconnect" => vec![
                row(document, "clients on A when killed", "results.on_a_at_kill", count),
                row(document, "streams lost", "results.lost", count),
                row(document, "reconnected", "results.reconnected", count),
                row(
                    document,
                    "failed reconnect attempts",
                    "results.reconnect_failures",
                    count,
                ),
                row(document, "seconds until all back", "results.secs_until_all_back", two),
                row(document, "outage per client p50", "results.outage.p50_us", micros),
                row(document, "outage per client p99", "results.outage.p99_us", micros),
                row(document, "events replayed", "results.replayed", count),
                row(document, "replayed events/s", "results.replayed_per_sec", format_rate),
                row(document, "gaps (sequence)", "results.gaps", count),
                row(document, "duplicates (sequence)", "results.duplicates", count),
                row(document, "gaps (cursor)", "results.cursor_gaps", count),
                row(document, "duplicates (cursor)", "results.cursor_duplicates", count),
                row(
                    document,
                    "B's resumes from memory",
                    "results.resumes_from_memory",
                    count,
                ),
                row(document, "B's resumes from Kafka", "results.resumes_from_kafka", count),
                row(
                    document,
                    "gateway B CPU-s from the kill on",
                    "results.gateway_b_cpu_secs",
                    two,
                ),
            ],
            "catchup" => vec![
                row(document, "partitions", "results.partitions", count),
                row(document, "backlog published", "results.behind_published", count),
                row(document, "held by Kafka at the resume", "results.behind_held", count),
                row(document, "lost to retention", "results.lost_to_retention", count),
                row(document, "first event after, s", "results.secs_to_first_event", two),
                row(document, "live after, s", "results.secs_to_live", two),
                row(
                    document,
                    "catch-up events/s",
                    "results.catchup_events_per_sec",
                    format_rate,
                ),
                row(document, "gaps (sequence)", "results.gaps", count),
                row(document, "duplicates (sequence)", "results.duplicates", count),
                row(document, "gaps (cursor)", "results.cursor_gaps", count),
                row(document, "duplicates (cursor)", "results.cursor_duplicates", count),
                row(
                    document,
                    "gateway CPU-s during the catch-up",
                    "results.gateway_cpu_secs_catchup",
                    two,
                ),
                row(
                    document,
                    "broker CPU-s during the catch-up",
                    "results.broker_cpu_secs_catchup",
                    two,
                ),
                row(
                    document,
                    "client CPU-s during the catch-up",
                    "results.client_cpu_secs_catchup",
                    two,
                ),
            ],
            "multistream" => multistream_rows(document),
            "longpoll" => vec![
                row(document, "clients holding a cursor", "results.clients_ready", count),
                row(document, "events published", "results.events_published", count),
                row(document, "polls/s", "results.polls_per_sec", format_rate),
                row(document, "events per poll", "results.events_per_poll", two),
                row(
                    document,
                    "events delivered/s",
                    "results.deliveries_per_sec",
                    format_rate,
                ),
                row(document, "deliveries", "results.deliveries", count),
                row(document, "deliveries expected", "results.deliveries_expected", count),
                row(document, "failed polls", "results.errors_total", count),
                row(document, "gaps", "results.gaps", count),
                row(document, "duplicates", "results.duplicates", count),
                row(document, "gaps (cursor)", "results.cursor_gaps", count),
                row(document, "duplicates (cursor)", "results.cursor_duplicates", count),
                row(
                    document,
                    "clients that lost or repeated anything",
                    "results.clients_not_clean",
                    count,
                ),
                row(document, "event age p50", "results.age.p50_us", micros),
                row(document, "event age p99", "results.age.p99_us", micros),
                row(document, "publish → receive p99", "results.latency.p99_us", micros),
                row(
                    document,
                    "gateway CPU-µs per poll",
                    "results.gateway_cpu_us_per_poll",
                    two,
                ),
                row(
                    document,
                    "gateway CPU, % of one CPU",
                    "results.gateway_cpu_percent",
                    two,
                ),
                row(
                    document,
                    "clients' CPU-s (bench process)",
                    "results.clients_cpu_secs",
                    two,
                ),
            ],
            _ => continue,
        };
        // Each figure only where it means something: key routing for keyed streams, cursor
        // accounting for whole streams.
        let keyed = scenario == "keyed";
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .filter(|row| match row[0].as_str() {
                "misrouted (keyed)" | "server CPU-s per 1M events published" => keyed,
                "gaps (cursor)" | "duplicates (cursor)" => !keyed,
                _ => true,
            })
            .collect();
        let server = document.get("server").and_then(Value::as_str).unwrap_or("gateway");
        out.push_str(&format!(
            "### `{name}` ({scenario}, {server})\n\n`{}`\n\n",
            document.get("command").and_then(Value::as_str).unwrap_or("?")
        ));
        out.push_str(&table(&["measure", "value"], 1, &rows));
        out.push('\n');
    }
    out.trim_end().to_owned()
}

/// `multistream` puts two sides side by side: each row reads "several streams / one stream".
fn multistream_rows(document: &Value) -> Vec<Vec<String>> {
    let pair = |label: &str, field: &str, format: &dyn Fn(f64) -> String| {
        let side = |name: &str| or_dash(num(document, &format!("results.{name}.{field}")).map(format));
        vec![label.to_owned(), format!("{} / {}", side("multi"), side("single"))]
    };
    let bytes = |value: f64| format_bytes(value.max(0.0) as u64);
    let two = |value: f64| format!("{value:.2}");
    let clean = |name: &str| match document
        .pointer(&format!("/results/{name}/every_connection_got_every_event"))
        .and_then(Value::as_bool)
    {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    vec![
        pair("connections", "established", &count),
        pair("deliveries", "deliveries", &count),
        pair("deliveries expected", "deliveries_expected", &count),
        pair("gaps", "gaps", &count),
        pair("duplicates", "duplicates", &count),
        vec![
            "every connection got every event".to_owned(),
            format!("{} / {}", clean("multi"), clean("single")),
        ],
        pair(
            "gateway CPU-s per 1M deliveries",
            "gateway_cpu_secs_per_million_deliveries",
            &two,
        ),
        pair("gateway RSS per connection", "gateway_rss_per_connection_bytes", &bytes),
        pair(
            "gateway RSS per stream followed",
            "gateway_rss_per_stream_subscription_bytes",
            &bytes,
        ),
        pair("latency p50", "latency.p50_us", &micros),
        pair("latency p99", "latency.p99_us", &micros),
    ]
}

/// Where a result goes in the document: gateway scenarios in the order of the aims, sweeps by
/// rate, then the baselines, then ingest.
fn report_order(name: &str, document: &Value) -> (u8, u64, String) {
    const ORDER: [&str; 9] = [
        "idle",
        "fanout",
        "latency",
        "keyed",
        "reconnect",
        "catchup",
        "multistream",
        "longpoll",
        "ingest",
    ];
    let scenario = document.get("scenario").and_then(Value::as_str).unwrap_or("");
    let position = ORDER.iter().position(|&known| known == scenario).unwrap_or(ORDER.len()) as u8;
    let baseline = name.starts_with("baseline-");
    let rate = num(document, "settings.rate").unwrap_or(0.0) as u64;
    (position + if baseline { 10 } else { 0 }, rate, name.to_owned())
}

/// `ingest` reports phases (one per batch size) rather than one set of figures.
fn ingest_table(name: &str, document: &Value) -> String {
    let phases = document
        .get("phases")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = phases
        .iter()
        .map(|phase| {
            vec![
                phase.get("name").and_then(Value::as_str).unwrap_or("?").to_owned(),
                or_dash(num(phase, "events_per_sec").map(format_rate)),
                or_dash(num(phase, "requests_per_sec").map(format_rate)),
                or_dash(num(phase, "errors_total").map(count)),
                or_dash(num(phase, "latency.p50_us").map(micros)),
                or_dash(num(phase, "latency.p99_us").map(micros)),
                or_dash(num(phase, "latency.max_us").map(micros)),
            ]
        })
        .collect();
    format!(
        "### `{name}` (ingest)\n\n`{}`\n\n{}\n",
        document.get("command").and_then(Value::as_str).unwrap_or("?"),
        table(
            &["phase", "events/s", "requests/s", "errors", "p50", "p99", "max"],
            1,
            &rows
        )
    )
}

fn ratios(results: &Results) -> String {
    let pair = |scenario: &str, path: &str| {
        (
            results.get(scenario).and_then(|d| num(d, path)),
            results.get(&format!("baseline-{scenario}")).and_then(|d| num(d, path)),
        )
    };
    let mut rows = Vec::new();
    let mut add = |label: &str, scenario: &str, path: &str, format: &dyn Fn(f64) -> String| {
        let (gateway, baseline) = pair(scenario, path);
        rows.push(vec![
            label.to_owned(),
            or_dash(gateway.map(format)),
            or_dash(baseline.map(format)),
            or_dash(ratio(gateway, baseline).map(|ratio| format!("{ratio:.2}×"))),
        ]);
    };
    let bytes = |value: f64| format_bytes(value.max(0.0) as u64);
    add(
        "idle: user memory per connection",
        "idle",
        "results.rss_per_connection_bytes",
        &bytes,
    );
    add(
        "idle: kernel slab per connection (both ends)",
        "idle",
        "results.kernel_slab_per_connection_bytes",
        &bytes,
    );
    add(
        "idle: CPU, % of one CPU",
        "idle",
        "results.gateway_cpu_percent_idle",
        &|v| format!("{v:.2}"),
    );
    add(
        "fan-out: deliveries/s",
        "fanout",
        "results.deliveries_per_sec",
        &format_rate,
    );
    add(
        "fan-out: server CPU-s per 1M deliveries",
        "fanout",
        "results.gateway_cpu_secs_per_million_deliveries",
        &|v| format!("{v:.2}"),
    );
    add("fan-out: latency p50", "fanout", "results.latency.p50_us", &|v| {
        format_micros(v as u64)
    });
    add("fan-out: latency p99", "fanout", "results.latency.p99_us", &|v| {
        format_micros(v as u64)
    });
    add(
        "5,000 subscribers × 10 events/s: latency p50",
        "latency-sweep-10",
        "results.latency.p50_us",
        &|v| format_micros(v as u64),
    );
    add(
        "5,000 subscribers × 10 events/s: latency p99",
        "latency-sweep-10",
        "results.latency.p99_us",
        &|v| format_micros(v as u64),
    );
    table(&["measure", "gateway", "baseline", "gateway ÷ baseline"], 1, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Results {
        let mut results = Results::new();
        results.insert(
            "idle".into(),
            json!({"scenario": "idle", "server": "gateway", "command": "sluice-bench idle",
                   "load_average_start": [1.0, 0.5, 0.25],
                   "machine": {"cpu_model": "Test CPU", "logical_cpus": 2, "memory_bytes": 1073741824u64,
                               "os": "linux", "kernel": "6.1", "arch": "x86_64"},
                   "results": {"established": 15000, "rss_per_connection_bytes": 9000.0}}),
        );
        results.insert(
            "baseline-idle".into(),
            json!({"scenario": "idle", "server": "baseline", "results": {"rss_per_connection_bytes": 3000.0}}),
        );
        results.insert(
            "fanout".into(),
            json!({"scenario": "fanout", "results": {"deliveries_per_sec": 600000.0, "gaps": 0, "duplicates": 0,
                   "cursor_gaps": 0, "cursor_duplicates": 0, "gateway_cpu_secs_per_million_deliveries": 1.0}}),
        );
        results.insert(
            "baseline-fanout".into(),
            json!({"scenario": "fanout", "server": "baseline",
                   "results": {"gateway_cpu_secs_per_million_deliveries": 0.3}}),
        );
        results.insert(
            "reconnect".into(),
            json!({"scenario": "reconnect", "results": {"secs_until_all_back": 4.5, "gaps": 0, "duplicates": 1,
                   "cursor_gaps": 0, "cursor_duplicates": 0}}),
        );
        for (rate, p99) in [(500.0, 9_000.0), (1_000.0, 18_000.0), (2_000.0, 45_000.0)] {
            results.insert(
                format!("latency-sweep-{rate}"),
                json!({"settings": {"rate": rate}, "results": {"gaps": 0, "latency": {"p99_us": p99}}}),
            );
        }
        results
    }

    #[test]
    fn multistream_results_show_both_sides_in_each_row() {
        let mut results = Results::new();
        results.insert(
            "multistream".into(),
            json!({"scenario": "multistream", "server": "gateway", "command": "sluice-bench multistream",
                   "results": {
                       "multi": {"established": 5000, "every_connection_got_every_event": true,
                                 "gateway_cpu_secs_per_million_deliveries": 1.5,
                                 "gateway_rss_per_connection_bytes": 40960.0},
                       "single": {"established": 20000, "every_connection_got_every_event": false,
                                  "gateway_cpu_secs_per_million_deliveries": 2.25}}}),
        );
        let tables = scenario_tables(&results);
        assert!(tables.contains("### `multistream` (multistream, gateway)"), "{tables}");
        for expected in ["5,000 / 20,000", "yes / no", "1.50 / 2.25", "40.0 KiB / -"] {
            assert!(tables.contains(expected), "{expected} missing from:\n{tables}");
        }
    }

    #[test]
    fn ratios_need_both_sides_and_a_nonzero_divisor() {
        assert_eq!(ratio(Some(3.0), Some(1.5)), Some(2.0));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(fanout_efficiency(&sample()), Some(0.3));
    }

    #[test]
    fn the_sweep_reports_the_highest_rate_within_the_aim() {
        assert_eq!(best_sweep_rate(&sample()), Some((1_000.0, 18_000.0)));
        assert_eq!(best_sweep_rate(&Results::new()), None);
    }

    #[test]
    fn aims_are_marked_met_missed_or_not_run() {
        let aims = aims(&sample());
        let line = |needle: &str| aims.lines().find(|line| line.contains(needle)).unwrap().to_owned();
        assert!(line("idle connection").ends_with("| met |"), "{aims}");
        assert!(line("500,000").ends_with("| met |"), "{aims}");
        // 0.3 CPU-s against 1.0: 30 % of the floor's efficiency.
        assert!(line("40 %").contains("30 %") && line("40 %").ends_with("| **missed** |"));
        // One duplicate fails the storm even though everyone was back in time.
        assert!(line("reconnect storm").ends_with("| **missed** |"), "{aims}");
        assert!(line("catch-up").ends_with("| - | not run |"), "{aims}");
    }

    #[test]
    fn renders_every_placeholder_and_includes_the_perf_pass_verbatim() {
        let template = "# B\n{{machine}}\n{{runs}}\n{{aims}}\n{{results}}\n{{ratios}}\n## Perf\n{{perf_pass}}\n";
        let with = render(template, &sample(), Some("Before: 1 ms.\nAfter: *0.5 ms*.\n"));
        assert!(!with.contains("{{"), "{with}");
        assert!(with.contains("| CPU | Test CPU |"));
        assert!(with.contains("|---|---|---|---|\n| idle |"), "runs are text: {with}");
        assert!(
            with.contains("| idle | `sluice-bench idle` | 1.00 / 0.50 / 0.25 | - |"),
            "{with}"
        );
        assert!(
            with.contains("| idle: user memory per connection | 8.79 KiB | 2.93 KiB | 3.00× |"),
            "{with}"
        );
        assert!(with.ends_with("## Perf\nBefore: 1 ms.\nAfter: *0.5 ms*.\n"), "{with}");
        let without = render(template, &sample(), None);
        assert!(without.contains("`docs/perf-pass.md` does not exist"));
    }

    #[test]
    fn a_sweep_with_no_rate_within_the_aim_says_so() {
        let mut results = sample();
        results.retain(|name, _| name != "latency-sweep-500" && name != "latency-sweep-1000");
        assert_eq!(best_sweep_rate(&results), None);
        assert_eq!(
            sweep_summary(&results, None),
            "; in the sweep p99 ≤ 20 ms held at no rate, down to 2,000 events/s × 5,000 (p99 45.0ms)"
        );
    }

    #[test]
    fn results_are_ordered_like_the_aims_with_baselines_last() {
        let tables = scenario_tables(&sample());
        let idle = tables.find("### `idle`").unwrap();
        let fanout = tables.find("### `fanout`").unwrap();
        let baseline = tables.find("### `baseline-idle`").unwrap();
        assert!(idle < fanout && fanout < baseline, "{tables}");
        // Keyed-only figures stay out of whole-stream tables.
        assert!(!tables.contains("misrouted"), "{tables}");
    }

    #[test]
    fn ingest_phases_render_one_row_each() {
        let document = json!({"scenario": "ingest", "command": "sluice-bench ingest", "phases": [
            {"name": "batch=1", "events_per_sec": 5385.2, "requests_per_sec": 5385.2, "errors_total": 0,
             "latency": {"p50_us": 5990, "p99_us": 9120, "max_us": 11400}}]});
        let text = ingest_table("ingest", &document);
        assert!(
            text.contains("| batch=1 | 5,385 | 5,385 | 0 | 5.99ms | 9.12ms | 11.4ms |"),
            "{text}"
        );
    }

    #[test]
    fn markdown_tables_right_align_numbers() {
        let text = table(&["a", "b"], 1, &[vec!["x".into(), "1".into()]]);
        assert_eq!(text, "| a | b |\n|---|---:|\n| x | 1 |\n");
    }
}
