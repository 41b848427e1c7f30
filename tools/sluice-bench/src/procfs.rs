//! What the kernel says about a process and about socket memory, read from `/proc`.
//!
//! The gateway scenarios measure the gateway from the outside, as an operator would: resident
//! memory (`VmRSS` in `/proc/<pid>/status`), threads, TCP connections to given ports (the
//! broker's), CPU time (`utime + stime` in `/proc/<pid>/stat`),
//! and the kernel memory that sockets cost, which no process's RSS includes: the pages TCP
//! buffers hold (`/proc/net/sockstat`, `TCP: … mem N`, in pages) and the slab caches that hold
//! the socket structures themselves (`Slab:` in `/proc/meminfo`). The last two are
//! system-wide, so they cover both ends of every loopback connection, and anything else the
//! machine does at the same time.
//!
//! The parsers are pure functions over the files' text, tested without a live process.

use std::time::Duration;

/// Resident memory of `pid` in bytes (`VmRSS`), if the process exists.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmRSS").map(|kib| kib * 1024)
}

/// Threads of `pid` (`Threads` in `/proc/<pid>/status`), if the process exists.
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let (_, value) = status
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| *key == "Threads")?;
    value.trim().parse().ok()
}

/// TCP connections of `pid` whose remote port is one of `remote_ports`: its sockets (the
/// `socket:[inode]` links in `/proc/<pid>/fd`) matched against the rows of `/proc/net/tcp`
/// and `tcp6`. The test kit's `procfs` reads the same way; the bench does not depend on the
/// test kit (testcontainers and all), so the few lines are here too.
pub fn tcp_connections_to(pid: u32, remote_ports: &[u16]) -> Option<usize> {
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect();
    let count = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| parse_net_tcp(&text))
        .filter(|(port, inode)| remote_ports.contains(port) && inodes.contains(inode))
        .count();
    Some(count)
}

/// `(remote port, inode)` of each row of `/proc/net/tcp` or `tcp6` (columns `sl local_address
/// rem_address st … inode`, addresses as `HEXADDR:HEXPORT`).
fn parse_net_tcp(text: &str) -> Vec<(u16, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, port) = fields.get(2)?.rsplit_once(':')?;
            Some((u16::from_str_radix(port, 16).ok()?, fields.get(9)?.parse().ok()?))
        })
        .collect()
}

/// CPU time `pid` has used so far, user plus system, if the process exists.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_cpu_ticks(&stat)?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec() as f64))
}

/// The load average (1, 5 and 15 minutes) from `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// Parses `0.52 0.58 0.59 1/467 12345`.
fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([fields.next()?.ok()?, fields.next()?.ok()?, fields.next()?.ok()?])
}

/// Sums every series of a (labelled) counter whose labels contain `label="value"`: e.g. the
/// `sluice_gateway_resumes_total` series with `source="memory"`, whatever their outcome.
pub fn sum_metric(exposition: &str, name: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels.split(',').any(|pair| pair == label).then_some(value)
        })
        .filter_map(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        // A fold from +0: an empty f64 `sum()` is -0, which prints as "-0".
        .fold(0.0, |sum, value| sum + value)
}

/// System-wide kernel memory relevant to sockets, at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelSocketMemory {
    /// Sockets in use by TCP (`TCP: inuse`), all processes.
    pub tcp_inuse: Option<u64>,
    /// Memory charged to TCP socket buffers (`TCP: mem`, converted from pages), in bytes.
    pub tcp_buffer_bytes: Option<u64>,
    /// All slab caches (`Slab:` in `/proc/meminfo`), in bytes: socket structures, inodes,
    /// epoll entries, and everything else the kernel allocates that way.
    pub slab_bytes: Option<u64>,
}

impl KernelSocketMemory {
    pub fn read() -> Self {
        let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let tcp = parse_sockstat_tcp(&sockstat);
        Self {
            tcp_inuse: tcp.map(|tcp| tcp.inuse),
            tcp_buffer_bytes: tcp.map(|tcp| tcp.mem_pages * page_size()),
            slab_bytes: parse_status_kib(&meminfo, "Slab").map(|kib| kib * 1024),
        }
    }
}

/// The `TCP:` line of `/proc/net/sockstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SockstatTcp {
    inuse: u64,
    mem_pages: u64,
}

/// Parses `TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1`.
fn parse_sockstat_tcp(sockstat: &str) -> Option<SockstatTcp> {
    let line = sockstat.lines().find_map(|line| line.strip_prefix("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        words
            .chunks_exact(2)
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair[1].parse::<u64>().ok())
    };
    Some(SockstatTcp {
        inuse: field("inuse")?,
        mem_pages: field("mem")?,
    })
}

/// A `Name:   1234 kB` field of `/proc/<pid>/status` or `/proc/meminfo`, in KiB.
fn parse_status_kib(text: &str, name: &str) -> Option<u64> {
    let (_, value) = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == name)?;
    value.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// `utime + stime` (fields 14 and 15) of `/proc/<pid>/stat`, in clock ticks.
///
/// The second field, the command name, is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted from the *last* `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the command: field 3 (state) is index 0, so utime (14) is index 11.
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)`, via `getconf` (the crate forbids `unsafe`); Linux's USER_HZ is 100
/// on every mainstream architecture, the fallback.
fn clock_ticks_per_sec() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| getconf("CLK_TCK").unwrap_or(100))
}

/// The page size `/proc/net/sockstat` counts in, via `getconf`; 4 KiB when unknown.
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| getconf("PAGESIZE").unwrap_or(4096))
}

fn getconf(name: &str) -> Option<u64> {
    let output = std::process::Command::new("getconf").arg(name).output().ok()?;
    String::from_utf8(output.stdout)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

/// Parses `sluice_gateway_connections_active <value>` out of a Prometheus text exposition.
pub fn parse_metric(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        // Exactly this metric: no labels expected, and not a longer name with this prefix.
        let value = rest.strip_prefix(' ').or_else(|| {
            let (_, after_labels) = rest.strip_prefix('{')?.split_once("} ")?;
            Some(after_labels)
        })?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_from_status() {
        let status = "Name:\tsluice-gateway\nVmPeak:\t  200000 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(12_345));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(
            parse_status_kib("MemTotal: 1 kB\nSlab:  5120 kB\n", "Slab"),
            Some(5_120)
        );
    }

    #[test]
    fn reads_cpu_ticks_after_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 9 0 100 \
                    1000000 3000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1_234 + 567));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn reads_tcp_sockstat() {
        let sockstat = "sockets: used 20123\nTCP: inuse 20005 orphan 0 tw 12 alloc 20010 mem 37\n\
                        UDP: inuse 1 mem 2\n";
        assert_eq!(
            parse_sockstat_tcp(sockstat),
            Some(SockstatTcp {
                inuse: 20_005,
                mem_pages: 37
            })
        );
        assert_eq!(parse_sockstat_tcp("UDP: inuse 1 mem 2\n"), None);
    }

    #[test]
    fn reads_an_unlabelled_gauge_and_not_its_longer_cousins() {
        let exposition = "\
# HELP sluice_gateway_connections_active Open SSE connections.
# TYPE sluice_gateway_connections_active gauge
sluice_gateway_connections_active_total 3
sluice_gateway_connections_active 9998
";
        assert_eq!(
            parse_metric(exposition, "sluice_gateway_connections_active"),
            Some(9_998.0)
        );
        assert_eq!(parse_metric("x{pod=\"a\"} 7\n", "x"), Some(7.0));
        assert_eq!(parse_metric("y 1\n", "x"), None);
    }

    #[test]
    fn reads_remote_ports_and_inodes_of_tcp_rows() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n\
   1: 0100007F:C350 0100007F:2382 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0 20 4 30 10 -1\n\
   garbage\n";
        assert_eq!(parse_net_tcp(tcp), [(0, 4242), (9090, 777)]);
    }

    #[test]
    fn counts_this_processs_own_connection_and_threads() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pid = std::process::id();
        assert_eq!(tcp_connections_to(pid, &[port]), Some(0));
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(tcp_connections_to(pid, &[port]), Some(1));
        assert!(threads(pid).is_some_and(|n| n >= 1));
    }

    #[test]
    fn reads_the_load_average() {
        assert_eq!(parse_loadavg("0.52 1.58 2.00 1/467 12345\n"), Some([0.52, 1.58, 2.0]));
        assert_eq!(parse_loadavg("garbage"), None);
    }

    #[test]
    fn sums_labelled_series_by_one_label() {
        let exposition = "\
# TYPE sluice_gateway_resumes_total counter
sluice_gateway_resumes_total{source=\"memory\",outcome=\"exact\"} 9000
sluice_gateway_resumes_total{source=\"memory\",outcome=\"gap\"} 2
sluice_gateway_resumes_total{source=\"kafka\",outcome=\"exact\"} 998
sluice_gateway_resumes_total_created 5
";
        let name = "sluice_gateway_resumes_total";
        assert_eq!(sum_metric(exposition, name, "source=\"memory\""), 9_002.0);
        assert_eq!(sum_metric(exposition, name, "source=\"kafka\""), 998.0);
        assert_eq!(sum_metric(exposition, name, "source=\"disk\""), 0.0);
    }
}
