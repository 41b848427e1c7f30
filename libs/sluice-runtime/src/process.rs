//! Process metrics every service exports beside its own: today the resident memory, under the
//! name Prometheus' client libraries use (`process_resident_memory_bytes`), so dashboards divide
//! it by a gateway's open connections to show memory per connection.
//!
//! Read from `/proc/self/status` at each scrape (a few microseconds, once per scrape, never on a
//! request path). Where there is no `/proc` (not Linux) the family is left out of the scrape
//! rather than reported as zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// Registers the process collector in `registry` (at its root: the names carry no prefix).
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(rss) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| resident_bytes(&status))
        else {
            return Ok(());
        };
        let gauge = ConstGauge::new(rss as i64);
        let metric = encoder.encode_descriptor(
            "process_resident_memory",
            "Resident memory of the process (VmRSS)",
            Some(&Unit::Bytes),
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes (the kernel writes it in kB).
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_bytes_reads_vmrss_in_kib() {
        let status = "Name:\tsluice\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t4\n";
        assert_eq!(resident_bytes(status), Some(1234 * 1024));
        assert_eq!(resident_bytes("VmRSS:\tlots kB\n"), None);
        assert_eq!(resident_bytes("Name:\tsluice\n"), None);
    }

    #[test]
    fn scrape_carries_the_resident_memory_of_this_process() {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if cfg!(target_os = "linux") {
            let line = text
                .lines()
                .find(|l| l.starts_with("process_resident_memory_bytes "))
                .unwrap_or_else(|| panic!("no sample in {text}"));
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(value > 1e5, "{line}");
        }
    }
}
