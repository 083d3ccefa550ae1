//! Criterion's on-disk results (`CRITERION_HOME`, one per target under
//! `target/micro/<triple>/criterion`): estimates, throughput and the change
//! against a named baseline, read back into [`MicroBenchmark`]s.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::model::micro::{
    change_verdict, Change, MicroBenchmark, Throughput, ThroughputUnit, NOISE_THRESHOLD,
};

#[derive(Deserialize)]
pub(crate) struct CriterionEstimate {
    point_estimate: f64,
    confidence_interval: CriterionInterval,
}

#[derive(Deserialize)]
pub(crate) struct CriterionInterval {
    confidence_level: f64,
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Deserialize)]
pub(crate) struct CriterionEstimates {
    mean: CriterionEstimate,
    median: CriterionEstimate,
    std_dev: CriterionEstimate,
    slope: Option<CriterionEstimate>,
}

#[derive(Deserialize)]
pub(crate) struct CriterionChange {
    mean: CriterionEstimate,
}

#[derive(Deserialize)]
pub(crate) struct CriterionBenchmark {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<serde_json::Value>,
    full_id: String,
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not what criterion 0.7 writes", file.display()))
}

/// `{"Bytes": 1069}`, `{"Elements": 10}`, ... as criterion serializes its
/// `Throughput`; None for no throughput or a kind we do not know.
pub(crate) fn throughput_kind(value: &serde_json::Value) -> Option<(ThroughputUnit, u64)> {
    let (kind, n) = value.as_object()?.iter().next()?;
    let unit = match kind.as_str() {
        "Bytes" => ThroughputUnit::Bytes,
        "BytesDecimal" => ThroughputUnit::BytesDecimal,
        "Elements" => ThroughputUnit::Elements,
        "Bits" => ThroughputUnit::Bits,
        _ => return None,
    };
    Some((unit, n.as_u64()?))
}

pub(crate) fn modified(file: &Path) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

/// Reads one benchmark from its criterion directory (the one holding `new/`
/// and, after a comparison, `change/`). A `change/` older than `since` is
/// from an earlier run and ignored.
pub fn read_benchmark(
    dir: &Path,
    baseline: Option<&str>,
    since: Option<SystemTime>,
) -> Result<MicroBenchmark> {
    let new = dir.join("new");
    let id: CriterionBenchmark = read_json(&new.join("benchmark.json"))?;
    let est: CriterionEstimates = read_json(&new.join("estimates.json"))?;
    let mean = &est.mean;
    let (lo, hi) = (
        mean.confidence_interval.lower_bound,
        mean.confidence_interval.upper_bound,
    );
    let throughput = id
        .throughput
        .as_ref()
        .and_then(throughput_kind)
        .map(|(unit, n)| Throughput::of(unit, n, mean.point_estimate, lo, hi));
    let change_file = dir.join("change").join("estimates.json");
    let fresh = match since {
        None => true,
        Some(t) => modified(&change_file).is_some_and(|m| m >= t),
    };
    let change = match baseline {
        Some(name) if change_file.is_file() && fresh => {
            let c: CriterionChange = read_json(&change_file)?;
            let ci = &c.mean.confidence_interval;
            Some(Change {
                baseline: name.to_string(),
                mean_change_pct: c.mean.point_estimate * 100.0,
                ci_lower_pct: ci.lower_bound * 100.0,
                ci_upper_pct: ci.upper_bound * 100.0,
                verdict: change_verdict(ci.lower_bound, ci.upper_bound, NOISE_THRESHOLD),
            })
        }
        _ => None,
    };
    Ok(MicroBenchmark {
        id: id.full_id,
        group: id.group_id,
        function: id.function_id,
        value: id.value_str,
        mean_ns: mean.point_estimate,
        ci_lower_ns: lo,
        ci_upper_ns: hi,
        confidence_level: mean.confidence_interval.confidence_level,
        median_ns: est.median.point_estimate,
        std_dev_ns: est.std_dev.point_estimate,
        slope_ns: est.slope.as_ref().map(|s| s.point_estimate),
        throughput,
        change,
    })
}

/// Every directory under `home` holding criterion's `new/benchmark.json`.
pub(crate) fn benchmark_dirs(home: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(home) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", home.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if path.join("benchmark.json").is_file() {
                found.push(path.parent().expect("new/ has a parent").to_path_buf());
            }
        } else {
            benchmark_dirs(&path, found)?;
        }
    }
    Ok(())
}

/// The benchmarks criterion wrote under `home` since `since` (all of them
/// for None), in the order it wrote them.
pub fn collect(
    home: &Path,
    since: Option<SystemTime>,
    baseline: Option<&str>,
) -> Result<Vec<MicroBenchmark>> {
    let mut dirs = Vec::new();
    benchmark_dirs(home, &mut dirs)?;
    let mut dated = Vec::new();
    for dir in dirs {
        let written = modified(&dir.join("new").join("estimates.json"));
        if since.is_some_and(|t| written.is_none_or(|w| w < t)) {
            continue;
        }
        dated.push((written, read_benchmark(&dir, baseline, since)?));
    }
    dated.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.id.cmp(&y.id)));
    Ok(dated.into_iter().map(|(_, b)| b).collect())
}

/// Whether criterion saved a baseline `name` for any benchmark under `home`.
pub fn baseline_exists(home: &Path, name: &str) -> bool {
    let mut dirs = Vec::new();
    benchmark_dirs(home, &mut dirs).is_ok()
        && dirs
            .iter()
            .any(|d| d.join(name).join("estimates.json").is_file())
}

/// Criterion's data for a target: persistent, so named baselines survive.
pub fn criterion_home(target_dir: &Path, triple: &str) -> PathBuf {
    target_dir.join("micro").join(triple).join("criterion")
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Fixtures other modules' tests build on.

    use std::path::Path;

    use super::*;
    use crate::model::micro::{
        CriterionSettings, MicroSection, BENCH_PROFILE, NOISE_THRESHOLD, QUICK_MEASUREMENT_SECS,
        QUICK_WARM_UP_SECS,
    };

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
