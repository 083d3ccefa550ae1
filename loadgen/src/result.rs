//! The result of one workload run, as written by `loadgen` (JSON,
//! schema-versioned) and read by `cargo xtask bench`, `gate` and `compare`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::Workload;

/// Bumped on any incompatible change of [`LoadResult`].
/// 2: rates by the time things happened inside the window (delivered by
/// receive time), offered/delivered/late counts, timeline by event time.
pub const RESULT_SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ran for its whole duration.
    Completed,
    /// Ended early (broker unreachable or gone); numbers are partial.
    Aborted,
}

/// Two sets of messages are counted. The *measured messages* are those whose
/// intended send time falls inside the measured window: loss, duplicates,
/// order, lateness and latency are about them, wherever they arrive. Rates
/// count events by the time they *happened* inside the window (a message
/// sent in the warm-up but delivered in the window is a delivery of the
/// window; one delivered during the drain is not).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Messages the open-loop schedule intended to send in the window
    /// (unpaced workloads: equal to `sent`).
    #[serde(default)]
    pub offered: u64,
    /// Measured messages handed to the client library.
    pub sent: u64,
    /// Of those, acknowledged by the broker (QoS 1/2, confirms, acks).
    pub acked: u64,
    /// Deliveries of measured messages received (all copies, duplicates
    /// included), on time or late.
    pub received: u64,
    /// Deliveries (duplicates excluded) *received* inside the measured
    /// window, of any message: what the broker delivered in the window.
    #[serde(default)]
    pub delivered: u64,
    /// Deliveries of measured messages that arrived after the drain
    /// (`drain_secs` after publishing stopped) but before loadgen stopped
    /// listening (`late_secs` more): not lost, and in the latency histogram.
    #[serde(default)]
    pub late: u64,
    /// Deliveries expected: sent × subscribers that match (fan-out counts each copy).
    pub expected: u64,
    /// Expected deliveries of measured messages never received, not even late.
    pub lost: u64,
    /// Deliveries of a (publisher, sequence) a subscriber had already seen.
    pub duplicated: u64,
    /// Deliveries older than one the subscriber had already seen from that publisher.
    pub out_of_order: u64,
}

/// Per second of the measured window, each counted by when it happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// The schedule's rate (`rate`); 0 for unpaced workloads (no intention).
    #[serde(default)]
    pub offered_per_sec: f64,
    /// Messages handed to the client library inside the window (by actual send time).
    pub sent_per_sec: f64,
    /// Acknowledgements received inside the window (by ack time).
    pub acked_per_sec: f64,
    /// Delivered msg/s: `counts.delivered` (duplicates excluded, by
    /// receive time inside the window) over the window's length. Never more
    /// than the broker actually delivered in the window.
    pub received_per_sec: f64,
}

/// Percentiles in microseconds plus the full histogram, so runs can be merged
/// by adding histograms (never by averaging percentiles).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
    /// HdrHistogram V2 serialization (deflate), base64; values in microseconds.
    pub histogram: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// Receive time minus the *intended* send time (open-loop schedule), so a
    /// stalled publisher shows up as latency (coordinated omission corrected).
    pub end_to_end: Option<LatencySummary>,
    /// Actual send time minus intended send time: how far the publishers fell behind.
    pub publish_delay: Option<LatencySummary>,
    /// Broker acknowledgement time minus intended send time (QoS 1/2, confirms).
    pub ack: Option<LatencySummary>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStats {
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    /// From the first attempt until the last connection was established.
    pub time_to_establish_secs: f64,
    /// Connection failures by kind (refused, timeout, protocol, ...).
    pub errors: BTreeMap<String, u64>,
    /// Local source addresses used (several when one address's ports would run out).
    pub source_addresses: Vec<String>,
}

/// One second of the measured window: each column counts events that
/// happened in that second (sent by send time, acked by ack time, received
/// by receive time), so a delivery stall shows as a dip in `received`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Seconds since the measured window started.
    pub t: f64,
    pub sent: u64,
    pub acked: u64,
    pub received: u64,
}

/// What the load generator itself consumed (so its cost can be reported).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SelfUsage {
    pub cpu_user_secs: f64,
    pub cpu_system_secs: f64,
    pub max_rss_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    pub schema_version: u32,
    pub workload: Workload,
    /// Broker address the load was sent to.
    pub target: String,
    /// RFC 3339 UTC time the run started.
    pub started_at: String,
    /// Length of the measured window (warm-up excluded), seconds.
    pub measured_secs: f64,
    pub outcome: Outcome,
    /// Why the run was aborted, if it was.
    pub error: Option<String>,
    pub counts: Counts,
    pub rates: Rates,
    pub latency: Latencies,
    pub connections: ConnectionStats,
    pub timeline: Vec<Tick>,
    /// Errors by kind during the run (publish failures, disconnects, ...).
    pub errors: BTreeMap<String, u64>,
    pub loadgen: SelfUsage,
}

impl LoadResult {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("results serialize")
    }

    /// Parses a result file's JSON, refusing other schema versions.
    pub fn from_json(text: &str) -> Result<LoadResult, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not a loadgen result: {e}"))?;
        let version = value.get("schema_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(RESULT_SCHEMA_VERSION)) {
            return Err(format!(
                "result schema_version {version:?} is not {RESULT_SCHEMA_VERSION}: produced by another loadgen version"
            ));
        }
        serde_json::from_value(value).map_err(|e| format!("malformed loadgen result: {e}"))
    }
}
