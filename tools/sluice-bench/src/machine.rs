//! The machine a benchmark ran on.
//!
//! A throughput figure means nothing without its hardware: "40k events/s" on a 2-core laptop
//! and on a 64-core server are different claims. Every report therefore opens with the CPU
//! model, logical CPU count, memory and kernel, read from `/proc` on Linux (and marked unknown
//! elsewhere rather than guessed). The parsers are pure functions over the files' text so they
//! are tested without depending on the machine running the tests.

use std::fmt;

use serde::Serialize;

/// Hardware and OS facts that qualify every number in a report.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` of the first processor in `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Logical CPUs the kernel knows about (`processor` entries in `/proc/cpuinfo`).
    pub logical_cpus: usize,
    /// CPUs this process may actually use (affinity and cgroup quota), when known; in a
    /// container this can be fewer than `logical_cpus`.
    pub usable_cpus: Option<usize>,
    /// `MemTotal` from `/proc/meminfo`, in bytes.
    pub memory_bytes: Option<u64>,
    /// Kernel release, as `uname -r` prints it.
    pub kernel: Option<String>,
    /// `std::env::consts::OS`, e.g. `linux`.
    pub os: &'static str,
    /// `std::env::consts::ARCH`, e.g. `x86_64`.
    pub arch: &'static str,
}

impl Machine {
    /// Describes the machine this process runs on. Never fails: what cannot be read is `None`.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let usable_cpus = std::thread::available_parallelism().ok().map(|n| n.get());
        let logical_cpus = match count_processors(&cpuinfo) {
            0 => usable_cpus.unwrap_or(1),
            n => n,
        };
        Self {
            cpu_model: parse_cpu_model(&cpuinfo),
            logical_cpus,
            usable_cpus,
            memory_bytes: parse_mem_total(&meminfo),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|release| release.trim().to_owned())
                .filter(|release| !release.is_empty()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        }
    }
}

/// One line: `<cpu model>, <n> logical CPUs, <mem> RAM, <os> <kernel> (<arch>)`.
impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cpu_model.as_deref().unwrap_or("unknown CPU"))?;
        write!(f, ", {} logical CPUs", self.logical_cpus)?;
        if let Some(usable) = self.usable_cpus.filter(|&n| n != self.logical_cpus) {
            write!(f, " ({usable} usable by this process)")?;
        }
        match self.memory_bytes {
            Some(bytes) => write!(f, ", {:.1} GiB RAM", bytes as f64 / GIB)?,
            None => f.write_str(", unknown RAM")?,
        }
        match &self.kernel {
            Some(kernel) => write!(f, ", {} {kernel}", self.os)?,
            None => write!(f, ", {}", self.os)?,
        }
        write!(f, " ({})", self.arch)
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// The value of the first `model name` line of `/proc/cpuinfo` (x86; most ARM kernels omit it).
fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|model| !model.is_empty())
}

/// Number of `processor` entries in `/proc/cpuinfo`: one per logical CPU.
fn count_processors(cpuinfo: &str) -> usize {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| key.trim() == "processor")
        .count()
}

/// `MemTotal` from `/proc/meminfo`, converted from the kernel's kB (KiB, in fact) to bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let (_, value) = meminfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "MemTotal")?;
    let kib = value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu vme

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
";

    #[test]
    fn reads_cpu_model_and_count_from_cpuinfo() {
        assert_eq!(
            parse_cpu_model(CPUINFO).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(count_processors(CPUINFO), 2);
    }

    #[test]
    fn cpuinfo_without_model_name_yields_none() {
        let arm = "processor\t: 0\nBogoMIPS\t: 48.00\nCPU part\t: 0xd0c\n";
        assert_eq!(parse_cpu_model(arm), None);
        assert_eq!(count_processors(arm), 1);
        assert_eq!(count_processors(""), 0);
    }

    #[test]
    fn reads_mem_total_in_bytes() {
        let meminfo = "MemTotal:        8048576 kB\nMemFree:          123456 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(8_048_576 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots\n"), None);
    }

    #[test]
    fn one_line_description_names_everything() {
        let machine = Machine {
            cpu_model: Some("Example CPU".into()),
            logical_cpus: 8,
            usable_cpus: Some(2),
            memory_bytes: Some(16 << 30),
            kernel: Some("6.1.0".into()),
            os: "linux",
            arch: "x86_64",
        };
        assert_eq!(
            machine.to_string(),
            "Example CPU, 8 logical CPUs (2 usable by this process), 16.0 GiB RAM, linux 6.1.0 (x86_64)"
        );
        let unknown = Machine {
            cpu_model: None,
            usable_cpus: Some(8),
            memory_bytes: None,
            kernel: None,
            ..machine
        };
        assert_eq!(
            unknown.to_string(),
            "unknown CPU, 8 logical CPUs, unknown RAM, linux (x86_64)"
        );
    }
}
