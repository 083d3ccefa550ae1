//! The result of one workload run, as written by `loadgen` (JSON,
//! schema-versioned) and read by `cargo xtask bench`, `gate` and `compare`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::Workload;

/// Bumped on any incompatible change of [`LoadResult`].
pub const RESULT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ran for its whole duration.
    Completed,
    /// Ended early (broker unreachable or gone); numbers are partial.
    Aborted,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Messages handed to the client library during the measured window.
    pub sent: u64,
    /// Of those, acknowledged by the broker (QoS 1/2, confirms, acks).
    pub acked: u64,
    /// Messages received by subscribers during the window (all copies).
    pub received: u64,
    /// Deliveries expected: sent × subscribers that match (fan-out counts each copy).
    pub expected: u64,
    /// Expected deliveries never received (only meaningful for acknowledged delivery).
    pub lost: u64,
    /// Deliveries of a (publisher, sequence) a subscriber had already seen.
    pub duplicated: u64,
    /// Deliveries older than one the subscriber had already seen from that publisher.
    pub out_of_order: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub sent_per_sec: f64,
    pub acked_per_sec: f64,
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

/// One second of the measured window.
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
