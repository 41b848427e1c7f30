//! What the kernel says about a child process, read from `/proc`: what a test measures a
//! service by from the outside, as an operator would.
//!
//! - [`rss_bytes`] and [`threads`]: the `VmRSS` and `Threads` fields of `/proc/<pid>/status`;
//!   [`thread_names`]: how many threads carry each name;
//! - [`tcp_connections_to`]: how many of the process's sockets (the `socket:[inode]` links in
//!   `/proc/<pid>/fd`) are TCP connections whose remote port is one of the given ports
//!   (`/proc/net/tcp` and `tcp6`) — e.g. a gateway's connections to its Kafka brokers.
//!
//! Linux only. The parsers are pure functions over the files' text, tested without a process.

use std::collections::{BTreeMap, HashSet};

/// Resident memory of `pid` in bytes, if the process exists.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS").map(|kib| kib * 1024)
}

/// The number of threads of `pid`, if the process exists.
pub fn threads(pid: u32) -> Option<u64> {
    status_field(pid, "Threads")
}

/// How many threads of `pid` carry each name (`/proc/<pid>/task/*/comm`, e.g. `rdk:broker1`
/// or `tokio-runtime-w`), if the process exists: what a thread count is made of.
pub fn thread_names(pid: u32) -> Option<BTreeMap<String, usize>> {
    let mut names = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(Result::ok)
    {
        // A thread that ended between the listing and the read is simply not counted.
        if let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) {
            *names.entry(comm.trim_end().to_owned()).or_insert(0) += 1;
        }
    }
    Some(names)
}

/// TCP connections of `pid` to any of `remote_ports` (on any address), if the process exists.
/// Listening sockets have no remote port and never count.
pub fn tcp_connections_to(pid: u32, remote_ports: &[u16]) -> Option<usize> {
    let inodes = socket_inodes(pid)?;
    let count = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| parse_net_tcp(&text))
        .filter(|socket| remote_ports.contains(&socket.remote_port) && inodes.contains(&socket.inode))
        .count();
    Some(count)
}

/// The ports of a `host:port,host:port` bootstrap list (Kafka's `bootstrap.servers`).
pub fn ports_of(bootstrap: &str) -> Vec<u16> {
    bootstrap
        .split(',')
        .filter_map(|server| server.trim().rsplit_once(':')?.1.parse().ok())
        .collect()
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    parse_status_field(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, name)
}

/// The number of a `Name:   1234 kB` or `Threads:  12` line of `/proc/<pid>/status`.
fn parse_status_field(status: &str, name: &str) -> Option<u64> {
    let (_, value) = status
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == name)?;
    value.split_whitespace().next()?.parse().ok()
}

/// The inodes of every socket `pid` has open.
fn socket_inodes(pid: u32) -> Option<HashSet<u64>> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let inodes = entries
        .filter_map(Result::ok)
        // A descriptor closed between the listing and the read is simply not counted.
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| socket_inode(target.to_str()?))
        .collect();
    Some(inodes)
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// One row of `/proc/net/tcp` (or `tcp6`): the parts a count needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpSocket {
    remote_port: u16,
    inode: u64,
}

/// Parses the rows of `/proc/net/tcp` or `/proc/net/tcp6`: after the header line, columns
/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode`,
/// addresses as `HEXADDR:HEXPORT`.
fn parse_net_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, port) = fields.get(2)?.rsplit_once(':')?;
            Some(TcpSocket {
                remote_port: u16::from_str_radix(port, 16).ok()?,
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_threads_and_rss_from_status() {
        let status = "Name:\tsluice-gateway\nVmRSS:\t   12345 kB\nThreads:\t67\nSigQ:\t0/1\n";
        assert_eq!(parse_status_field(status, "Threads"), Some(67));
        assert_eq!(parse_status_field(status, "VmRSS"), Some(12_345));
        assert_eq!(parse_status_field(status, "VmSwap"), None);
    }

    #[test]
    fn reads_remote_ports_and_inodes_of_tcp_rows() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n\
   1: 0100007F:C350 0100007F:2382 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0 20 4 30 10 -1\n\
   garbage\n";
        assert_eq!(
            parse_net_tcp(tcp),
            [
                TcpSocket {
                    remote_port: 0,
                    inode: 4242
                },
                TcpSocket {
                    remote_port: 9090,
                    inode: 777
                }
            ]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:C350 00000000000000000000000001000000:2382 01 00000000:00000000 00:00000000 00000000  1000        0 99 1 0 20 4 30 10 -1\n";
        assert_eq!(
            parse_net_tcp(tcp6),
            [TcpSocket {
                remote_port: 9090,
                inode: 99
            }]
        );
    }

    #[test]
    fn reads_socket_links_and_bootstrap_ports() {
        assert_eq!(socket_inode("socket:[31337]"), Some(31_337));
        assert_eq!(socket_inode("pipe:[31337]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(ports_of("127.0.0.1:9092, localhost:39093"), [9092, 39093]);
        assert_eq!(ports_of("nonsense"), Vec::<u16>::new());
    }

    #[test]
    fn counts_this_processs_own_connection_to_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pid = std::process::id();
        assert_eq!(tcp_connections_to(pid, &[port]), Some(0));
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(tcp_connections_to(pid, &[port]), Some(1));
        assert!(threads(pid).is_some_and(|n| n >= 1));
        assert!(thread_names(pid).is_some_and(|names| names.values().sum::<usize>() >= 1));
        assert!(rss_bytes(pid).is_some_and(|bytes| bytes > 0));
    }
}
