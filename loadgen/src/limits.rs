//! Host limits for many connections: the open-files limit and local source
//! addresses (each loopback address has its own ephemeral port range).

use std::net::{IpAddr, Ipv4Addr};

/// Raises the soft `RLIMIT_NOFILE` as far as the system allows; returns the
/// new soft limit. The `rlimit` crate caps the request at what the kernel
/// accepts, which on macOS is `kern.maxfilesperproc`, not the hard limit that
/// reads as infinite.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Descriptors the process needs besides its sockets (stdio, runtime, files).
pub const SPARE_FILES: u64 = 64;

/// Number of ephemeral ports per source address, from
/// `/proc/sys/net/ipv4/ip_local_port_range` (Linux default 32768..=60999).
pub fn ephemeral_port_count() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| parse_port_range(&text))
        .unwrap_or(60999 - 32768 + 1)
}

fn parse_port_range(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    let (lo, hi) = (parts.next()?.ok()?, parts.next()?.ok()?);
    (hi >= lo).then(|| hi - lo + 1)
}

/// Most loopback source addresses spread over (127.0.0.1 ..= 127.0.0.250).
pub const MAX_SOURCE_ADDRESSES: u64 = 250;

/// Source addresses for `connections` to one loopback target: one address
/// while its ephemeral ports suffice (with 10 % headroom for other sockets),
/// else as many of 127.0.0.1, 127.0.0.2, ... as needed. Non-loopback
/// targets get an empty list: the kernel chooses, never a loopback source.
pub fn source_addresses(target_is_loopback: bool, connections: u64, ports: u64) -> Vec<IpAddr> {
    if !target_is_loopback {
        return Vec::new();
    }
    let usable = (ports * 9 / 10).max(1);
    let needed = connections.div_ceil(usable).clamp(1, MAX_SOURCE_ADDRESSES);
    (1..=needed)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_parses() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(28232));
        assert_eq!(parse_port_range("1024 1024"), Some(1));
        assert_eq!(parse_port_range("garbage"), None);
        assert!(ephemeral_port_count() > 0);
    }

    #[test]
    fn one_address_until_ports_run_out() {
        assert_eq!(
            source_addresses(true, 10_000, 28_232),
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        );
        let many = source_addresses(true, 100_000, 28_232);
        assert_eq!(many.len(), 4, "25,408 usable ports per address");
        assert_eq!(many[3], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
        assert!(many.iter().all(IpAddr::is_loopback));
        assert_eq!(source_addresses(true, 100_000_000, 28_232).len(), 250);
        assert!(source_addresses(false, 100_000, 28_232).is_empty());
    }

    #[test]
    fn open_files_limit_is_at_least_what_it_was() {
        let raised = raise_open_files_limit().unwrap();
        assert!(raised >= 256, "{raised}");
    }
}
