//! Live progress: one line per second on stderr while a phase runs.
//!
//! A ten-second phase that prints nothing looks hung, and a throughput that collapses half-way
//! (a broker stall, a GC-like pause in the server) is invisible in the final average. Load
//! tasks bump shared atomic counters on every completed request (relaxed increments: cheap
//! enough not to disturb what is measured); a reporter task samples them once a second and
//! prints the rates of the last interval. The final numbers never come from here: they come
//! from the per-task tallies the scenario merges, restricted to the measurement window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::report::format_count;

/// Running totals, shared by every load task of a phase and its reporter.
#[derive(Debug, Default)]
pub struct Counters {
    requests_ok: AtomicU64,
    items_ok: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    /// A successful request that carried `items` items (events, for ingest).
    pub fn success(&self, items: u64) {
        self.requests_ok.fetch_add(1, Ordering::Relaxed);
        self.items_ok.fetch_add(items, Ordering::Relaxed);
    }

    /// A failed request, whatever the failure.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; 3] {
        [
            self.requests_ok.load(Ordering::Relaxed),
            self.items_ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        ]
    }
}

/// What the reporter prints about a phase.
#[derive(Debug, Clone)]
pub struct PhaseClock {
    /// Printed at the start of every line, e.g. `batch=100`.
    pub label: String,
    /// What the counted items are called, e.g. `events`.
    pub item_name: &'static str,
    /// When the phase (its warmup included) began.
    pub start: Instant,
    /// When warmup ends and measurement begins.
    pub measure_start: Instant,
    /// When measurement ends; the reporter stops by itself after this.
    pub end: Instant,
}

/// Spawns the once-a-second reporter. It ends on its own at `clock.end`; aborting it earlier
/// (when the phase fails) is harmless.
pub fn spawn_reporter(clock: PhaseClock, counters: Arc<Counters>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = Duration::from_secs(1);
        let mut ticks = tokio::time::interval_at(clock.start + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous = ([0; 3], clock.start);
        loop {
            let now = ticks.tick().await;
            if now > clock.end {
                return;
            }
            let totals = counters.snapshot();
            let seconds = (now - previous.1).as_secs_f64().max(f64::EPSILON);
            let rate = |i: usize| (totals[i] - previous.0[i]) as f64 / seconds;
            let stage = if now <= clock.measure_start {
                "warmup "
            } else {
                "measure"
            };
            eprintln!(
                "  {label} {stage} {elapsed:>4}s  {items:>10} {item_name}/s  {requests:>8} req/s  {errors} errors",
                label = clock.label,
                elapsed = (now - clock.start).as_secs(),
                items = format_count(rate(1).round() as u64),
                item_name = clock.item_name,
                requests = format_count(rate(0).round() as u64),
                errors = format_count(totals[2] - previous.0[2]),
            );
            previous = (totals, now);
        }
    })
}
