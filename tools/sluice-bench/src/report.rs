//! Turning measurements into something a person (or a script) can read.
//!
//! Latencies are recorded into HDR histograms at microsecond resolution with three significant
//! digits: percentiles up to p99.9 stay exact to 0.1 % whatever the spread, and merging the
//! per-task histograms at the end is exact too (averaging per-task percentiles would not be).
//! Everything here is pure formatting over plain data, so scenarios share one look and the
//! formatting is unit-tested.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram tracks: one hour in microseconds. Larger values saturate to it.
const MAX_TRACKED_MICROS: u64 = 3_600_000_000;

/// An empty latency histogram, microsecond units, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3).expect("static histogram bounds are valid")
}

/// The percentiles a report shows, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of recorded samples.
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        // hdrhistogram reports the highest value equivalent to the bucket's; with 3
        // significant digits that is within 0.1 % of the true value.
        Self {
            count: histogram.len(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }

    /// The table cells for p50, p90, p99, p99.9 and max; dashes when nothing was recorded.
    pub fn cells(&self) -> [String; 5] {
        if self.count == 0 {
            return std::array::from_fn(|_| "-".to_owned());
        }
        [self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us].map(format_micros)
    }
}

/// Headers matching [`LatencySummary::cells`].
pub const LATENCY_HEADERS: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

/// A latency in human units with three significant figures: `870µs`, `1.24ms`, `12.3ms`, `2.05s`.
pub fn format_micros(micros: u64) -> String {
    fn three_figures(value: f64, unit: &str) -> String {
        let decimals = if value < 10.0 {
            2
        } else if value < 100.0 {
            1
        } else {
            0
        };
        format!("{value:.decimals$}{unit}")
    }
    match micros {
        0..1_000 => format!("{micros}µs"),
        1_000..1_000_000 => three_figures(micros as f64 / 1e3, "ms"),
        _ => three_figures(micros as f64 / 1e6, "s"),
    }
}

/// A configured duration as people write it: `10s`, `1.5s`, `500ms`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{duration:?}")
    }
}

/// An integer with thousands separators: `1234567` → `1,234,567`.
pub fn format_count(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A size in bytes with binary units and three significant figures: `870 B`, `11.2 KiB`,
/// `123 MiB`, `1.50 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.decimals$} {unit}")
}

/// A per-second rate, rounded to a whole number with separators (rates below 10 keep a decimal).
pub fn format_rate(per_second: f64) -> String {
    if per_second < 10.0 {
        format!("{per_second:.1}")
    } else {
        format_count(per_second.round() as u64)
    }
}

/// A plain-text table: first column left-aligned (it names the row), the rest right-aligned
/// (they hold numbers), columns two spaces apart.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: impl IntoIterator<Item = impl Into<String>>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn render(&self) -> String {
        // Widths in chars, not bytes: `µs` is one column wide but two bytes long.
        let width = |cell: &String| cell.chars().count();
        let columns = std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (column, cell) in line.iter().enumerate() {
                widths[column] = widths[column].max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (column, cell) in line.iter().enumerate() {
                let pad = " ".repeat(widths[column] - width(cell));
                if column == 0 {
                    text.push_str(cell);
                    text.push_str(&pad);
                } else {
                    text.push_str("  ");
                    text.push_str(&pad);
                    text.push_str(cell);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Writes `value` as pretty JSON to `path`, with a trailing newline.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("serialising the results")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("results written to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_latencies_with_three_significant_figures() {
        assert_eq!(format_micros(0), "0µs");
        assert_eq!(format_micros(870), "870µs");
        assert_eq!(format_micros(999), "999µs");
        assert_eq!(format_micros(1_000), "1.00ms");
        assert_eq!(format_micros(1_236), "1.24ms");
        assert_eq!(format_micros(12_340), "12.3ms");
        assert_eq!(format_micros(123_400), "123ms");
        assert_eq!(format_micros(2_050_000), "2.05s");
        assert_eq!(format_micros(125_000_000), "125s");
    }

    #[test]
    fn formats_durations_as_written_on_the_command_line() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn formats_counts_with_thousands_separators() {
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(999), "999");
        assert_eq!(format_count(1_000), "1,000");
        assert_eq!(format_count(1_234_567), "1,234,567");
        assert_eq!(format_rate(2.46), "2.5");
        assert_eq!(format_rate(12_345.6), "12,346");
    }

    #[test]
    fn formats_sizes_in_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.00 KiB");
        assert_eq!(format_bytes(11_469), "11.2 KiB");
        assert_eq!(format_bytes(123 << 20), "123 MiB");
        assert_eq!(format_bytes(3 << 29), "1.50 GiB");
    }

    #[test]
    fn summarises_a_histogram() {
        let mut histogram = latency_histogram();
        for micros in 1..=1_000 {
            histogram.record(micros).unwrap();
        }
        let summary = LatencySummary::from_histogram(&histogram);
        assert_eq!(summary.count, 1_000);
        assert_eq!(summary.p50_us, 500);
        assert_eq!(summary.p90_us, 900);
        assert_eq!(summary.p99_us, 990);
        assert_eq!(summary.p999_us, 999);
        assert_eq!(summary.max_us, 1_000);
        assert_eq!(
            summary.cells(),
            ["500µs", "900µs", "990µs", "999µs", "1.00ms"].map(String::from)
        );
    }

    #[test]
    fn empty_histogram_renders_dashes() {
        let summary = LatencySummary::from_histogram(&latency_histogram());
        assert_eq!(summary.count, 0);
        assert_eq!(summary.cells(), std::array::from_fn(|_| "-".to_owned()));
    }

    #[test]
    fn table_aligns_columns_by_characters() {
        let mut table = Table::new(["phase", "req/s", "p50"]);
        table.row(["batch=1", "12,345", "870µs"]);
        table.row(["batch=100", "321", "12.3ms"]);
        assert_eq!(
            table.render(),
            "\
phase       req/s     p50
batch=1    12,345   870µs
batch=100     321  12.3ms
"
        );
    }
}
