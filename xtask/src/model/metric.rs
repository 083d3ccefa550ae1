//! The metrics a comparison and a baseline know: their key in the report,
//! which direction is better, how they are written and their noise band.

use crate::model::units::{bytes, cpu_micros, micros, percent, rate, thousands};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
}

/// A number compared between runs.
#[derive(Debug)]
pub struct Metric {
    /// Key in baselines (`metrics.<key>`).
    pub key: &'static str,
    pub label: &'static str,
    pub direction: Direction,
    /// Default noise band with no repeats: relative difference of the
    /// medians still called noise (0.10 = ±10 %).
    pub band: f64,
    /// Resolution: absolute differences up to this are noise (µs, bytes,
    /// percentage points, counts).
    pub floor: f64,
    /// Speed or resource use (meaningless across native and emulated);
    /// false for functional counts.
    pub performance: bool,
    pub format: fn(f64) -> String,
}

pub fn per_message(us: f64) -> String {
    format!("{}/msg", cpu_micros(us))
}

pub fn per_connection(us: f64) -> String {
    format!("{}/conn", cpu_micros(us))
}

pub fn count(n: f64) -> String {
    thousands(n.round().max(0.0) as u64)
}

/// The compared metrics. Default bands: run-to-run spread seen on a shared
/// 2-core box for the quick suite (throughput and memory vary ~5 %, latency
/// percentiles much more); functional counts have no band at all.
pub const METRICS: [Metric; 10] = [
    Metric {
        key: "received_per_sec",
        label: "delivered msg/s",
        direction: Direction::HigherIsBetter,
        band: 0.10,
        floor: 0.0,
        performance: true,
        format: rate,
    },
    // `rate = "max"` workloads: the search's result (one value per run);
    // their e2e figures above are the service run's, at half this rate.
    Metric {
        key: "max_sustainable_per_sec",
        label: "max sustainable msg/s",
        direction: Direction::HigherIsBetter,
        band: 0.15,
        floor: 0.0,
        performance: true,
        format: rate,
    },
    Metric {
        key: "e2e_p50_us",
        label: "e2e p50",
        direction: Direction::LowerIsBetter,
        band: 0.25,
        floor: 50.0,
        performance: true,
        format: micros,
    },
    Metric {
        key: "e2e_p99_us",
        label: "e2e p99",
        direction: Direction::LowerIsBetter,
        band: 0.25,
        floor: 100.0,
        performance: true,
        format: micros,
    },
    Metric {
        key: "broker_peak_rss_bytes",
        label: "broker peak RSS",
        direction: Direction::LowerIsBetter,
        band: 0.10,
        floor: 1_000_000.0,
        performance: true,
        format: bytes,
    },
    Metric {
        key: "broker_cpu_percent",
        label: "broker CPU",
        direction: Direction::LowerIsBetter,
        band: 0.15,
        floor: 2.0,
        performance: true,
        format: percent,
    },
    Metric {
        key: "broker_cpu_us_per_msg",
        label: "broker CPU per msg",
        direction: Direction::LowerIsBetter,
        band: 0.15,
        floor: 0.1,
        performance: true,
        format: per_message,
    },
    Metric {
        key: "broker_cpu_us_per_conn",
        label: "broker CPU per connection",
        direction: Direction::LowerIsBetter,
        band: 0.15,
        floor: 1.0,
        performance: true,
        format: per_connection,
    },
    Metric {
        key: "connections_established",
        label: "connections established",
        direction: Direction::HigherIsBetter,
        band: 0.0,
        floor: 0.0,
        performance: false,
        format: count,
    },
    Metric {
        key: "lost",
        label: "lost",
        direction: Direction::LowerIsBetter,
        band: 0.0,
        floor: 0.0,
        performance: false,
        format: count,
    },
];
