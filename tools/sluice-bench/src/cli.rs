//! The command line: one subcommand per scenario, plus the few parsers scenarios share.
//!
//! Each scenario declares its own flags next to its code (`ingest::IngestArgs`), and flattens
//! in the shared groups (`stack::DevStackArgs`) it needs; this module only ties them together
//! so that `sluice-bench --help` lists the scenarios and `sluice-bench <scenario> --help`
//! documents every flag.

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::baseline::BaselineArgs;
use crate::benchmarks::ReportArgs;
use crate::broker::BrokerArgs;
use crate::catchup::CatchupArgs;
use crate::fanout::{FanoutArgs, KeyedArgs, LatencyArgs};
use crate::hold::HoldArgs;
use crate::hostile::HostileArgs;
use crate::idle::IdleArgs;
use crate::ingest::IngestArgs;
use crate::longpoll::LongpollArgs;
use crate::multistream::MultistreamArgs;
use crate::reconnect::ReconnectArgs;
use crate::streams::StreamsArgs;

/// Benchmark harness for Sluice.
///
/// Runs a scenario against a Sluice service, either one already running (`--url`) or a dev
/// stack (`sluice-dev`) it starts for the purpose, and reports throughput and latency along
/// with the machine they were measured on.
#[derive(Debug, Parser)]
#[command(name = "sluice-bench", version, propagate_version = true)]
pub struct Cli {
    /// Worker threads of the load generator's async runtime [default: one per logical CPU].
    ///
    /// When the server runs on the same machine, fewer threads leave it more CPU; the report
    /// states the machine either way.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    #[command(subcommand)]
    pub command: Command,
}

/// A benchmark scenario.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive the ingest HTTP API (`POST /v1/streams/{stream}/events`) with closed-loop load,
    /// one phase per batch size, and report events/s, requests/s, errors and latency.
    Ingest(IngestArgs),

    /// Open many idle SSE connections (15,000) to one gateway (its own process) and report its
    /// memory per connection (RSS growth ÷ connections), the kernel's socket memory, and its
    /// CPU while idle. `--server baseline` measures the bare floor instead.
    Idle(IdleArgs),

    /// Many subscribers on one stream, a steady open-loop publisher: report deliveries/s,
    /// gateway CPU-seconds per million deliveries, publish→receive latency, gaps and
    /// duplicates. `--server baseline` measures the bare floor instead.
    Fanout(FanoutArgs),

    /// The fanout machinery at 1,000 subscribers × 1,000 events/s: publish→receive latency
    /// percentiles of a gateway with headroom.
    Latency(LatencyArgs),

    /// 10,000 subscribers each on its own key (`?key=lane-{i}`), events spread over the keys:
    /// the key index's cost per event (gateway CPU-s per 1M events), deliveries/s, latency.
    Keyed(KeyedArgs),

    /// Reconnect storm: two gateways, 10,000 clients on A, A SIGKILLed while events flow;
    /// clients resume on B with Last-Event-ID. Time until all are back, replayed events/s,
    /// gaps and duplicates, resumes served from memory vs Kafka.
    Reconnect(ReconnectArgs),

    /// One client resuming 1,000,000 events behind: events/s until it is live.
    Catchup(CatchupArgs),

    /// Clients that never read, on large events (`--payload-bytes`), beside normal
    /// subscribers: the gateway's RSS per stalled client, the others' latency and losses.
    Hostile(HostileArgs),

    /// Many streams on one gateway (1, 100, 1,000 by default), one subscriber each: the
    /// gateway's threads, RSS and broker connections per stream count, and the time to open
    /// them all.
    Streams(StreamsArgs),

    /// Several streams per connection against one connection per stream, same deliveries,
    /// same run (5,000 connections × 4 streams against 20,000): gateway CPU per delivery, RSS
    /// per connection, latency, and that every connection got every event.
    Multistream(MultistreamArgs),

    /// Long-poll clients (1,000) looping `GET /v1/streams/{stream}/poll?wait=10&cursor=…`
    /// while events are published: polls/s, events/s, event age, errors, losses and repeats.
    Longpoll(LongpollArgs),

    /// Write BENCHMARKS.md from the scenarios' JSON results and a template holding the prose.
    Report(ReportArgs),

    /// Internal: a helper process that holds SSE connections for the gateway scenarios,
    /// reporting to its parent on stdout.
    #[command(hide = true)]
    Hold(HoldArgs),

    /// Internal: the bare SSE server measured by `--server baseline`.
    #[command(hide = true)]
    BaselineServer(BaselineArgs),

    /// Internal: librdkafka's mock cluster with a topic of `--partitions` partitions.
    #[command(hide = true)]
    Broker(BrokerArgs),
}

/// Parses a duration such as `10s`, `500ms`, `1.5s`, `2m` or `1h`; a bare number means seconds.
///
/// Hand-rolled rather than pulling a crate in: the bench needs these five forms and nothing else.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m or h (e.g. 10s)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 10s, 500ms or 2m"))?;
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|err| format!("`{text}` is out of range: {err}"))
}

/// Like [`parse_duration`], but rejects zero: for windows that must measure something.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_with_and_without_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in ["", "s", "10x", "ten", "1.2.3s", "-1s", "10 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn positive_duration_rejects_zero() {
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("3s"), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn every_flag_is_documented() {
        use clap::CommandFactory as _;
        let command = Cli::command();
        command.clone().debug_assert();
        fn check(command: &clap::Command) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "`{} --{id}` has no help text",
                    command.get_name()
                );
            }
            for sub in command.get_subcommands() {
                check(sub);
            }
        }
        check(&command);
    }
}
