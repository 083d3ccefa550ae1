//! The standard `process_*` metrics every Prometheus client library exports
//! (CPU time, memory, file descriptors, start time), read from `/proc` at
//! each scrape. Linux only: elsewhere the collector is not registered.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Reads this process's figures when the registry is encoded. (Help texts
/// end with a period, as the registry writes them for registered metrics.)
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self/stat`, in the units Prometheus wants.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    start_after_boot_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted from its closing parenthesis.
fn parse_stat(text: &str, ticks_per_second: f64, page_size: u64) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // rest[0] is field 3 (state); field n is rest[n - 3].
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks_per_second,
        start_after_boot_seconds: field(22)? as f64 / ticks_per_second,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_size,
    })
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|&v| v > 0)
}

fn open_fds() -> Option<i64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle used to list the entries is one of them.
    Some(entries.count() as i64 - 1)
}

fn max_fds() -> Option<i64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX))
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
        let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t, ticks, page));
        if let Some(s) = stat {
            let seconds = Some(&Unit::Seconds);
            let bytes = Some(&Unit::Bytes);
            let e = &mut encoder;
            counter(
                e,
                "process_cpu",
                "Total user and system CPU time spent.",
                seconds,
                s.cpu_seconds,
            )?;
            gauge(
                e,
                "process_resident_memory",
                "Resident memory size.",
                bytes,
                s.resident_bytes as i64,
            )?;
            gauge(
                e,
                "process_virtual_memory",
                "Virtual memory size.",
                bytes,
                s.virtual_bytes as i64,
            )?;
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| parse_boot_time(&t));
            if let Some(boot) = boot {
                let start = boot as f64 + s.start_after_boot_seconds;
                gauge(
                    e,
                    "process_start_time",
                    "Start time of the process since the Unix epoch.",
                    seconds,
                    start,
                )?;
            }
        }
        if let Some(n) = open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors.",
                None,
                n,
            )?;
        }
        if let Some(n) = max_fds() {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Limit on open file descriptors.",
                None,
                n,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime priority nice threads itrealvalue
        // starttime vsize rss ...
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 150 0 0 20 0 4 0 12345 104857600 2560 18446744073709551615";
        let s = parse_stat(line, 100.0, 4096).unwrap();
        assert_eq!(s.cpu_seconds, 4.0);
        assert_eq!(s.start_after_boot_seconds, 123.45);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.resident_bytes, 2560 * 4096);
        assert_eq!(parse_stat("4242 (truncated", 100.0, 4096), None);
        assert_eq!(parse_stat("4242 (x) S 1 2", 100.0, 4096), None);
    }

    #[test]
    fn boot_time_comes_from_btime() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }
}
