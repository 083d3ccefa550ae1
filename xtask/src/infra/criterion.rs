//! `cargo xtask micro`: build the criterion benchmarks of the `bench` crate
//! for a target, run them natively or through the target's runner (qemu-user),
//! and write their estimates into a run's report (`micro` section of
//! report.json, rendered in report.md and report.html).
//!
//! Criterion keeps its data in a per-target `CRITERION_HOME`
//! (`target/micro/<triple>/criterion`), so named baselines
//! (`--save-baseline NAME`, later `--baseline NAME`) survive between runs and
//! never mix numbers of different targets.

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
