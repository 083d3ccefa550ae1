//! `cargo xtask micro`: build the criterion benchmarks of the `bench` crate
//! for a target, run them natively or through the target's runner (qemu-user),
//! and write their estimates into a run's report (`micro` section of
//! report.json, rendered in report.md and report.html).
//!
//! Criterion keeps its data in a per-target `CRITERION_HOME`
//! (`target/micro/<triple>/criterion`), so named baselines
//! (`--save-baseline NAME`, later `--baseline NAME`) survive between runs and
//! never mix numbers of different targets.

use serde::{Deserialize, Serialize};

use crate::infra::environment::Environment;
use crate::model::broker::BrokerInfo;
use crate::model::broker::BrokerKind;
use crate::model::report::Report;
use crate::model::report::REPORT_SCHEMA_VERSION;

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

/// A report holding only a micro section: no broker was started, no load
/// workloads ran and nothing is gated (micro numbers are not thresholds).
pub fn micro_report(
    run_id: String,
    environment: Environment,
    micro: MicroSection,
    started_at: String,
    finished_at: String,
) -> Report {
    Report {
        schema_version: REPORT_SCHEMA_VERSION,
        run_id,
        environment,
        broker: BrokerInfo {
            kind: BrokerKind::None,
            binary: None,
            binary_size_bytes: None,
            address: String::new(),
            kafka_address: None,
            amqp_address: None,
            pid: None,
            config: None,
            version: None,
            platform: None,
            log: None,
        },
        suite: "micro".into(),
        profile: "none".into(),
        repeat: 1,
        started_at,
        finished_at,
        broker_exit: None,
        broker_usage: None,
        workloads: Vec::new(),
        gate: None,
        micro: Some(micro),
    }
}

// ---- rendering --------------------------------------------------------------
#[cfg(test)]
pub(crate) mod test_support {
    //! Fixtures other modules' tests build on.

    use std::path::Path;

    use super::*;
    use crate::infra::criterion::collect;

    pub(crate) const ESTIMATES: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1020.0,"upper_bound":1080.0},"point_estimate":1050.0,"standard_error":15.0},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1010.0,"upper_bound":1060.0},"point_estimate":1040.0,"standard_error":12.0},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":5.0,"upper_bound":9.0},"point_estimate":7.0,"standard_error":1.0},"slope":null,"std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":20.0,"upper_bound":40.0},"point_estimate":30.0,"standard_error":5.0}}"#;

    pub(crate) fn write(dir: &Path, rel: &str, text: &str) {
        let file = dir.join(rel);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    pub(crate) fn estimates(mean: f64, lo: f64, hi: f64) -> String {
        ESTIMATES
            .replace("1050.0", &mean.to_string())
            .replace("1020.0", &lo.to_string())
            .replace("1080.0", &hi.to_string())
            .replace(
                "\"slope\":null",
                &format!("\"slope\":{{\"confidence_interval\":{{\"confidence_level\":0.95,\"lower_bound\":{lo},\"upper_bound\":{hi}}},\"point_estimate\":{},\"standard_error\":1.0}}", mean * 0.98),
            )
    }

    /// A criterion home with two benchmarks, one compared with baseline `main`.
    pub(crate) fn fixture_home(home: &Path) {
        write(
            home,
            "mqtt_decode/publish_1KiB/new/benchmark.json",
            r#"{"group_id":"mqtt_decode","function_id":null,"value_str":"publish_1KiB","throughput":{"Bytes":1069},"full_id":"mqtt_decode/publish_1KiB","directory_name":"mqtt_decode/publish_1KiB","title":"mqtt_decode/publish_1KiB"}"#,
        );
        write(
            home,
            "mqtt_decode/publish_1KiB/new/estimates.json",
            ESTIMATES,
        );
        write(
            home,
            "mqtt_decode/publish_1KiB/change/estimates.json",
            r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":-0.081,"upper_bound":-0.042},"point_estimate":-0.06,"standard_error":0.01},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":-0.07,"upper_bound":-0.05},"point_estimate":-0.06,"standard_error":0.01}}"#,
        );
        write(
            home,
            "topic_match/exact/new/benchmark.json",
            r#"{"group_id":"topic_match","function_id":"exact","value_str":null,"throughput":{"Elements":1000},"full_id":"topic_match/exact","directory_name":"topic_match/exact","title":"topic_match/exact"}"#,
        );
        write(
            home,
            "topic_match/exact/new/estimates.json",
            &estimates(2_000_000.0, 1_900_000.0, 2_100_000.0),
        );
    }

    pub(crate) fn section(emulated: bool) -> MicroSection {
        let dir = tempfile::tempdir().unwrap();
        fixture_home(dir.path());
        MicroSection {
            target_triple: if emulated {
                "aarch64-unknown-linux-gnu".into()
            } else {
                "x86_64-unknown-linux-gnu".into()
            },
            runner: if emulated {
                "qemu-aarch64".into()
            } else {
                "native".into()
            },
            runner_command: Vec::new(),
            emulated,
            cargo_profile: BENCH_PROFILE.into(),
            criterion: CriterionSettings {
                warm_up_secs: Some(QUICK_WARM_UP_SECS),
                measurement_secs: Some(QUICK_MEASUREMENT_SECS),
                filter: None,
                baseline: Some("main".into()),
                save_baseline: None,
                noise_threshold: NOISE_THRESHOLD,
            },
            cpu_features: vec!["sse4.2".into(), "avx2".into()],
            executables: vec!["mqtt_codec".into()],
            benchmarks: collect(dir.path(), None, Some("main")).unwrap(),
        }
    }
}
