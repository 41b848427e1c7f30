//! `sluice-bench`: the load generator and benchmark harness for Sluice.
//!
//! Each scenario is a subcommand with its own module: [`ingest`] drives the ingest API;
//! [`idle`], [`fanout`] (which also serves `latency` and `keyed`), [`reconnect`] (a storm
//! after a gateway dies), [`catchup`] (one client far behind) and [`hostile`] (clients that
//! never read, on large events), [`streams`] (many streams at once: threads and broker
//! connections per stream), [`multistream`] (several streams per connection against one
//! connection per stream) and [`longpoll`] (clients of the poll endpoint) measure the gateway,
//! with the help of [`rig`] (broker, ingest and gateways as separate processes; the fleet of subscriber
//! processes), [`hold`] (the hidden `hold` subcommand those subscriber processes run),
//! [`publish`] (the open-loop publisher, through ingest or straight to Kafka), [`sse_wire`]
//! (the SSE client's byte-level parsing and gap/duplicate accounting), [`procfs`] (memory
//! and CPU from `/proc`) and [`auth`] (keys and tokens when `--auth` turns access control
//! on). [`baseline`] is the bare SSE server the same scenarios run against for this machine's
//! floor, [`broker`] a mock Kafka with a topic of many partitions, and [`benchmarks`] writes
//! BENCHMARKS.md from the results. The modules around them hold what every scenario needs, so
//! a new one is mostly its load loop:
//!
//! - [`cli`]: the command line, and the argument parsers scenarios share;
//! - [`machine`]: what hardware the numbers were measured on, because a figure without its
//!   machine cannot be compared with anything;
//! - [`stack`]: spawning the dev stack (`sluice-dev`) as the system under test and owning it
//!   until the run ends;
//! - [`progress`]: one line of live progress per second on stderr;
//! - [`report`]: latency summaries from HDR histograms, tables, number formatting, JSON output.
//!
//! This file only builds the runtime and dispatches; results go to stdout, progress and
//! diagnostics to stderr, so `sluice-bench ingest > result.txt` captures just the report.

mod auth;
mod baseline;
mod benchmarks;
mod broker;
mod catchup;
mod cli;
mod fanout;
mod hold;
mod hostile;
mod idle;
mod ingest;
mod longpoll;
mod machine;
mod multistream;
mod procfs;
mod progress;
mod publish;
mod reconnect;
mod report;
mod rig;
mod sse_wire;
mod stack;
mod streams;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

/// Exit code after Ctrl-C, as a shell reports a SIGINT death (128 + 2).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Helpers run on runtimes of their own (or none); the parent measures, so it stays out of
    // the way.
    let helper = match cli.command {
        Command::Hold(args) => hold::run_blocking(args),
        Command::BaselineServer(args) => baseline::run_blocking(args),
        Command::Broker(args) => broker::run_blocking(&args),
        Command::Report(args) => benchmarks::run(&args),
        command => return run_scenario(Cli { command, ..cli }),
    };
    match helper {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_scenario(cli: Cli) -> ExitCode {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.into());
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };

    runtime.block_on(async {
        // Dropping the scenario future on Ctrl-C drops everything it owns, including the
        // spawned dev stack, whose `kill_on_drop` then takes it down with us.
        let outcome = tokio::select! {
            outcome = run(cli.command) => outcome,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted");
                return ExitCode::from(EXIT_INTERRUPTED);
            }
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Ingest(args) => ingest::run(args).await,
        Command::Idle(args) => idle::run(args).await,
        Command::Fanout(args) => {
            let shape = fanout::Shape::fanout("fanout", args.connections, args.rate, args.lanes);
            fanout::run(shape, args.publish).await
        }
        Command::Latency(args) => {
            let shape = fanout::Shape::fanout("latency", args.connections, args.rate, args.lanes);
            fanout::run(shape, args.publish).await
        }
        Command::Keyed(args) => fanout::run(fanout::Shape::keyed(args.connections, args.rate), args.publish).await,
        Command::Reconnect(args) => reconnect::run(args).await,
        Command::Catchup(args) => catchup::run(args).await,
        Command::Hostile(args) => hostile::run(args).await,
        Command::Streams(args) => streams::run(args).await,
        Command::Multistream(args) => multistream::run(args).await,
        Command::Longpoll(args) => longpoll::run(args).await,
        Command::Hold(_) | Command::BaselineServer(_) | Command::Broker(_) | Command::Report(_) => {
            unreachable!("helpers and the report are dispatched in main")
        }
    }
}
