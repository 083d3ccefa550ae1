//! Maximum sustainable rate: the `[search]` settings of a `rate = "max"`
//! workload and the `max_rate` section a bench report keeps per workload
//! (search steps, the found rate, the service run's rate, sweep points).

use serde::{Deserialize, Serialize};

/// `[search]` of a `rate = "max"` workload. Every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSpec {
    /// First rate tried, msg/s over all publishers.
    pub start_per_sec: u64,
    /// Factor the rate grows by while steps are sustained.
    pub growth: f64,
    /// Bisection steps at most once a step failed.
    pub bisect_steps: u32,
    /// Stop bisecting when (failed − sustained) ≤ tolerance × failed.
    pub tolerance: f64,
    /// Measured seconds of each step.
    pub step_secs: f64,
    /// A step is sustained only with end-to-end p99 under this.
    pub p99_below_ms: f64,
    /// … and delivered msg/s at least this fraction of the offered rate
    /// (lost deliveries at most 1 − this of the expected ones).
    pub delivered_fraction: f64,
    /// Never offer more than this (msg/s).
    pub ceiling_per_sec: u64,
    /// Steps in all (growth and bisection) at most.
    pub max_steps: u32,
}

impl Default for SearchSpec {
    fn default() -> Self {
        SearchSpec {
            start_per_sec: 1_000,
            growth: 2.0,
            bisect_steps: 6,
            tolerance: 0.05,
            step_secs: 3.0,
            p99_below_ms: 100.0,
            delivered_fraction: 0.999,
            ceiling_per_sec: 10_000_000,
            max_steps: 24,
        }
    }
}

/// The keys of `[search]`, for the unknown-key message.
pub const SEARCH_KEYS: [&str; 9] = [
    "start_per_sec",
    "growth",
    "bisect_steps",
    "tolerance",
    "step_secs",
    "p99_below_ms",
    "delivered_fraction",
    "ceiling_per_sec",
    "max_steps",
];

/// Largest `max_steps` accepted: a search stays within minutes.
pub const MAX_STEPS_LIMIT: u32 = 60;

impl SearchSpec {
    /// Checks the values; the message names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, v: String, fix: &str| Err(format!("key `search.{key}` = {v}: {fix}"));
        if self.start_per_sec == 0 {
            return bad("start_per_sec", "0".into(), "must be at least 1 msg/s");
        }
        if !(self.growth.is_finite() && self.growth > 1.0 && self.growth <= 100.0) {
            return bad(
                "growth",
                self.growth.to_string(),
                "must be above 1 (e.g. 2)",
            );
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0 && self.tolerance < 1.0) {
            return bad(
                "tolerance",
                self.tolerance.to_string(),
                "must be a fraction between 0 and 1 (0.05 = 5 %)",
            );
        }
        if !(self.step_secs.is_finite() && self.step_secs > 0.0 && self.step_secs <= 600.0) {
            return bad(
                "step_secs",
                self.step_secs.to_string(),
                "must be a positive number of seconds (at most 600)",
            );
        }
        if !(self.p99_below_ms.is_finite() && self.p99_below_ms > 0.0) {
            return bad(
                "p99_below_ms",
                self.p99_below_ms.to_string(),
                "must be a positive number of milliseconds",
            );
        }
        if !(self.delivered_fraction > 0.0 && self.delivered_fraction <= 1.0) {
            return bad(
                "delivered_fraction",
                self.delivered_fraction.to_string(),
                "must be a fraction above 0, at most 1 (0.999 = 99.9 %)",
            );
        }
        if self.ceiling_per_sec < self.start_per_sec {
            return bad(
                "ceiling_per_sec",
                self.ceiling_per_sec.to_string(),
                "must be at least start_per_sec",
            );
        }
        if self.max_steps == 0 || self.max_steps > MAX_STEPS_LIMIT {
            return bad(
                "max_steps",
                self.max_steps.to_string(),
                &format!("must be 1..={MAX_STEPS_LIMIT}"),
            );
        }
        Ok(())
    }
}

/// Why a step was or was not sustained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum StepVerdict {
    Sustained,
    /// Delivered below `delivered_fraction` of offered.
    TooFewDelivered,
    /// Lost more than 1 − `delivered_fraction` of the expected deliveries.
    Lost,
    /// p99 at or above `p99_below_ms`.
    P99Over,
    /// The run itself failed (loadgen error, broker died): not sustained.
    Failed {
        reason: String,
    },
}

impl StepVerdict {
    pub fn is_sustained(&self) -> bool {
        matches!(self, StepVerdict::Sustained)
    }

    pub fn text(&self) -> String {
        match self {
            StepVerdict::Sustained => "sustained".into(),
            StepVerdict::TooFewDelivered => "delivered too few".into(),
            StepVerdict::Lost => "lost messages".into(),
            StepVerdict::P99Over => "p99 over bound".into(),
            StepVerdict::Failed { reason } => format!("failed: {reason}"),
        }
    }
}

/// What one step (a short loadgen run at a fixed rate) measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// The rate asked for, msg/s over all publishers.
    pub offered_per_sec: f64,
    /// Delivered msg/s per published message (fan-out copies divided out).
    pub delivered_per_sec: f64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p999_us: Option<u64>,
    pub expected: u64,
    pub lost: u64,
    /// Broker CPU µs per delivered message, when sampled.
    #[serde(default)]
    pub cpu_us_per_message: Option<f64>,
    /// Why the run failed, if it did.
    pub failure: Option<String>,
}

/// One tried rate of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchStep {
    pub rate_per_sec: u64,
    pub outcome: StepOutcome,
    #[serde(flatten)]
    pub verdict: StepVerdict,
    /// loadgen's result, relative to the run directory (empty in tests).
    #[serde(default)]
    pub result_file: String,
}

/// One point of `--sweep`: a short run at `fraction` of the maximum rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub fraction: f64,
    pub rate_per_sec: u64,
    pub outcome: StepOutcome,
    #[serde(default)]
    pub result_file: String,
}

/// The `max_rate` section of one workload in report.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaxRateSection {
    /// The highest sustained rate; None when even the first step failed.
    pub found_per_sec: Option<u64>,
    /// `search`, or `--sweep-max` when the rate was given, not searched.
    pub found_by: String,
    /// Why the search stopped.
    pub stopped: String,
    /// The service run's rate: half the found one (its results are the
    /// workload's repeats).
    pub service_rate_per_sec: Option<u64>,
    pub search: SearchSpec,
    pub steps: Vec<SearchStep>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<SweepPoint>,
}
