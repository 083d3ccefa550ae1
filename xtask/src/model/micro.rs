//! The `micro` section of a report: criterion settings and, per benchmark,
//! its estimates, throughput and change against a baseline.

use serde::{Deserialize, Serialize};

/// Cargo builds `cargo bench` targets with its `bench` profile (inherits
/// `release`) for every triple; target files' size-over-speed profiles are
/// for the shipped broker, not for measuring its code paths.
pub const BENCH_PROFILE: &str = "bench";
/// `--quick`: long enough for criterion's statistics, short enough for a
/// QEMU smoke run of every benchmark in a few minutes.
pub const QUICK_WARM_UP_SECS: f64 = 0.3;
pub const QUICK_MEASUREMENT_SECS: f64 = 1.0;
/// The noise threshold passed to criterion (`--noise-threshold`) and used by
/// `compare`: changes of the mean within ±2 % are not reported as
/// improvements or regressions. Criterion's own default is 1 %, tighter than
/// run-to-run drift on a shared 2-core machine.
pub const NOISE_THRESHOLD: f64 = 0.02;
/// The `micro` section of report.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MicroSection {
    pub target_triple: String,
    /// `native`, `qemu-aarch64`, ...
    pub runner: String,
    /// The runner's command line before the executable (empty when native).
    pub runner_command: Vec<String>,
    /// Measured under emulation: the numbers are the emulator's on this host.
    pub emulated: bool,
    /// Cargo profile of the bench executables.
    pub cargo_profile: String,
    pub criterion: CriterionSettings,
    /// What `broker::platform::Platform::detect()` found where the benchmarks
    /// ran (under QEMU: the emulated CPU's features).
    pub cpu_features: Vec<String>,
    /// The bench executables that ran (cargo bench target names).
    pub executables: Vec<String>,
    /// In the order criterion ran them.
    pub benchmarks: Vec<MicroBenchmark>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionSettings {
    /// None: criterion's default (3 s warm-up, 5 s measurement).
    pub warm_up_secs: Option<f64>,
    pub measurement_secs: Option<f64>,
    pub filter: Option<String>,
    pub baseline: Option<String>,
    pub save_baseline: Option<String>,
    /// Relative change of the mean below which criterion sees no change.
    pub noise_threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MicroBenchmark {
    /// Criterion's full id, e.g. `mqtt_decode/publish_1KiB`.
    pub id: String,
    pub group: String,
    pub function: Option<String>,
    pub value: Option<String>,
    /// Time per iteration, nanoseconds.
    pub mean_ns: f64,
    pub ci_lower_ns: f64,
    pub ci_upper_ns: f64,
    /// Of the mean's confidence interval, e.g. 0.95.
    pub confidence_level: f64,
    pub median_ns: f64,
    pub std_dev_ns: f64,
    /// The slope of the linear regression over iteration counts, when
    /// criterion sampled linearly: the figure its terminal output leads
    /// with (`time: [low slope high]`), so it can differ from the mean.
    #[serde(default)]
    pub slope_ns: Option<f64>,
    pub throughput: Option<Throughput>,
    /// Against `--baseline NAME`; None without one or when the baseline
    /// lacks this benchmark.
    pub change: Option<Change>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThroughputUnit {
    /// `Throughput::Bytes`: shown in binary units (KiB/s, MiB/s, GiB/s).
    Bytes,
    /// `Throughput::BytesDecimal`: shown in decimal units (kB/s, MB/s, GB/s),
    /// as criterion shows it.
    BytesDecimal,
    Elements,
    Bits,
}

/// Work per iteration as the benchmark declared it, and the rate it implies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub unit: ThroughputUnit,
    pub per_iteration: u64,
    /// Units per second at the mean time.
    pub per_sec: f64,
    /// At the slow end of the mean's CI (its upper time bound).
    pub per_sec_ci_lower: f64,
    /// At the fast end (its lower time bound).
    pub per_sec_ci_upper: f64,
}

impl Throughput {
    pub(crate) fn of(
        unit: ThroughputUnit,
        per_iteration: u64,
        mean_ns: f64,
        lo_ns: f64,
        hi_ns: f64,
    ) -> Self {
        let rate = |ns: f64| {
            if ns > 0.0 {
                per_iteration as f64 * 1e9 / ns
            } else {
                0.0
            }
        };
        Throughput {
            unit,
            per_iteration,
            per_sec: rate(mean_ns),
            per_sec_ci_lower: rate(hi_ns),
            per_sec_ci_upper: rate(lo_ns),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeVerdict {
    Improved,
    Regressed,
    NoChange,
}

impl ChangeVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeVerdict::Improved => "improved",
            ChangeVerdict::Regressed => "regressed",
            ChangeVerdict::NoChange => "no change",
        }
    }
}

/// Criterion's `change/estimates.json`: relative change of the mean time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub baseline: String,
    /// +5.0 = 5 % slower than the baseline.
    pub mean_change_pct: f64,
    pub ci_lower_pct: f64,
    pub ci_upper_pct: f64,
    pub verdict: ChangeVerdict,
}

/// Criterion's rule without its p-value (which it does not save): the whole
/// CI of the change beyond the noise threshold in one direction.
pub fn change_verdict(ci_lower: f64, ci_upper: f64, noise: f64) -> ChangeVerdict {
    if ci_upper < -noise {
        ChangeVerdict::Improved
    } else if ci_lower > noise {
        ChangeVerdict::Regressed
    } else {
        ChangeVerdict::NoChange
    }
}

// ---- criterion's files ------------------------------------------------------
