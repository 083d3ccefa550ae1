//! Baselines: the numbers of a bench run that `compare` and the regression
//! gate need (per workload and metric, one value per repeat; no histograms),
//! small enough to commit as `reports/baselines/<target triple>.json`.
//! `cargo xtask baseline <run>` writes one; `cargo xtask gate <run>
//! --baseline FILE --max-regression 10%` fails only on regressions beyond
//! both the noise and the allowed regression.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use loadgen::Scenario;
use serde::{Deserialize, Serialize};

use crate::compare::{self, Comparison, Verdict, METRICS};
use crate::environment::Environment;
use crate::micro::MicroSection;
use crate::report::{RepeatReport, Report};

pub const BASELINE_SCHEMA_VERSION: u32 = 1;
const KIND: &str = "bench-baseline";

/// A run reduced to its compared numbers. Also what `compare` reads a full
/// report as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub schema_version: u32,
    /// Always `bench-baseline`: tells a baseline from a report.
    pub kind: String,
    /// Where the numbers come from, for people: machine, suite, command.
    pub about: String,
    /// The run the numbers were taken from.
    pub run_id: String,
    pub environment: Environment,
    /// Broker kind and version.
    pub broker: String,
    pub suite: String,
    pub repeat: u32,
    pub workloads: Vec<WorkloadNumbers>,
    /// A micro run's criterion estimates, as the report has them (for `compare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro: Option<MicroSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadNumbers {
    pub name: String,
    pub scenario: String,
    /// `ok`, `failed: …`, `not run: …`.
    pub status: String,
    /// Metric key (see `compare::METRICS`) → one value per repeat that
    /// produced a result. Units: msg/s, µs, bytes, % of the machine, counts.
    pub metrics: BTreeMap<String, Vec<f64>>,
}

/// The value of a metric in one repeat, if that repeat measured it.
pub fn metric_value(key: &str, r: &RepeatReport) -> Option<f64> {
    let res = r.result.as_ref()?;
    let e2e = res.latency.end_to_end.as_ref();
    match key {
        "received_per_sec" => Some(res.rates.received_per_sec),
        "e2e_p50_us" => e2e.map(|l| l.p50_us as f64),
        "e2e_p99_us" => e2e.map(|l| l.p99_us as f64),
        "broker_peak_rss_bytes" => r.broker_peak_rss_bytes.map(|b| b as f64),
        "broker_cpu_percent" => r.broker_usage.map(|u| u.avg_cpu_machine_percent),
        "connections_established" => {
            (res.connections.attempted > 0).then_some(res.connections.established as f64)
        }
        "lost" => Some(res.counts.lost as f64),
        _ => None,
    }
}

impl Baseline {
    pub fn of(report: &Report, about: String) -> Baseline {
        let workloads = report
            .workloads
            .iter()
            .map(|w| {
                let mut metrics = BTreeMap::new();
                for m in &METRICS {
                    // Connection storms exist to connect: their message
                    // numbers are incidental.
                    if w.workload.scenario == Scenario::ConnectionStorm
                        && m.key != "connections_established"
                        && m.key != "broker_peak_rss_bytes"
                    {
                        continue;
                    }
                    // Unpaced workloads use whatever CPU they get (the
                    // threshold gate skips them for CPU too): their CPU says
                    // how busy the machine was, not how efficient the broker is.
                    if m.key == "broker_cpu_percent" && w.workload.total_rate() == 0 {
                        continue;
                    }
                    // QoS 0 may drop under load by design: its `lost` is
                    // not a defect, so not a metric to hold a run to.
                    if m.key == "lost" && w.workload.qos == 0 {
                        continue;
                    }
                    let values: Vec<f64> = w
                        .repeats
                        .iter()
                        .filter_map(|r| metric_value(m.key, r))
                        .filter(|v| v.is_finite())
                        .collect();
                    if !values.is_empty() {
                        metrics.insert(m.key.to_string(), values);
                    }
                }
                WorkloadNumbers {
                    name: w.name.clone(),
                    scenario: w.workload.scenario.as_str().to_string(),
                    status: w.status.describe(),
                    metrics,
                }
            })
            .collect();
        Baseline {
            schema_version: BASELINE_SCHEMA_VERSION,
            kind: KIND.into(),
            about,
            run_id: report.run_id.clone(),
            environment: report.environment.clone(),
            broker: format!(
                "{} {}",
                report.broker.kind.as_str(),
                report.broker.version.as_deref().unwrap_or("")
            )
            .trim()
            .to_string(),
            suite: report.suite.clone(),
            repeat: report.repeat,
            workloads,
            micro: report.micro.clone(),
        }
    }

    /// Whether JSON text is a baseline (rather than a report).
    pub fn is_baseline(text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(|k| k == KIND))
            .unwrap_or(false)
    }

    pub fn from_json(text: &str) -> Result<Baseline> {
        let value: serde_json::Value =
            serde_json::from_str(text).context("not a baseline (invalid JSON)")?;
        let version = value.get("schema_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(BASELINE_SCHEMA_VERSION)) {
            bail!(
                "baseline schema_version {version:?} is not {BASELINE_SCHEMA_VERSION}: written by another xtask version"
            );
        }
        serde_json::from_value(value).context("malformed baseline")
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("baselines serialize") + "\n"
    }
}

/// Where `baseline` writes by default: `reports/baselines/<triple>.json`,
/// with `-emulated` for runs under emulation so they never pass for native.
pub fn default_file(root: &Path, env: &Environment) -> PathBuf {
    let name = if env.emulated {
        format!("{}-emulated.json", env.target_triple)
    } else {
        format!("{}.json", env.target_triple)
    };
    root.join("reports/baselines").join(name)
}

/// `cargo xtask baseline <run> [--out FILE]`.
pub fn run(path: &Path, out: Option<&Path>) -> Result<()> {
    let report = Report::load(path)?;
    if !report.has_load() {
        bail!(
            "{} is a micro-benchmark run: criterion keeps micro baselines itself (`cargo xtask micro --save-baseline NAME`, then `--baseline NAME`); `compare` sets two micro runs side by side",
            path.display()
        );
    }
    if report.environment.git_dirty {
        eprintln!("warning: the run was taken with uncommitted changes; the baseline records that (environment.git_dirty)");
    }
    let env = &report.environment;
    let about = format!(
        "Baseline from `cargo xtask bench --suite {}{}` on {} ({}, {} cores, {} memory, {}), target {} ({}), revision {}{}, {}.",
        report.suite,
        if report.repeat > 1 {
            format!(" --repeat {}", report.repeat)
        } else {
            String::new()
        },
        env.hostname,
        env.cpu_model,
        env.cores,
        crate::report::bytes(env.memory_bytes as f64),
        env.os,
        env.target_triple,
        if env.emulated {
            format!("emulated by {}", env.runner)
        } else {
            "native".into()
        },
        env.git_revision.as_deref().unwrap_or("unknown"),
        if env.git_dirty { " (dirty)" } else { "" },
        env.timestamp
    );
    let baseline = Baseline::of(&report, about);
    let file = match out {
        Some(f) => f.to_path_buf(),
        None => default_file(&crate::project_root(), env),
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&file, baseline.to_json())
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("{}\n{}", baseline.about, file.display());
    Ok(())
}

/// A metric that got worse beyond the noise and beyond the allowed regression.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    pub workload: String,
    pub metric: &'static str,
    /// Fraction worse than the baseline (0.3 = 30 %); infinite from 0.
    pub by: f64,
    pub line: String,
}

/// The regressions of B (the run) against A (the baseline) in `c`.
pub fn regressions(c: &Comparison, max_regression: f64) -> Vec<Regression> {
    c.rows
        .iter()
        .filter(|r| r.verdict == Verdict::Worse)
        .filter_map(|r| {
            let by = r.regression()?;
            (by > max_regression).then(|| Regression {
                workload: r.workload.clone(),
                metric: r.metric.key,
                by,
                line: format!(
                    "{} {}: {} → {} ({} worse)",
                    r.workload,
                    r.metric.label,
                    r.a.map(|s| (r.metric.format)(s.median)).unwrap_or_default(),
                    r.b.map(|s| (r.metric.format)(s.median)).unwrap_or_default(),
                    if by.is_finite() {
                        format!("{:.0} %", by * 100.0)
                    } else {
                        "from zero".into()
                    }
                ),
            })
        })
        .collect()
}

/// Refuses a baseline from another target or another way of running.
pub fn check_comparable(baseline: &Baseline, run: &Baseline) -> Result<()> {
    let (b, r) = (&baseline.environment, &run.environment);
    if b.target_triple != r.target_triple || b.emulated != r.emulated || b.runner != r.runner {
        bail!(
            "baseline is for {} ({}), the run is {} ({}): a regression gate needs the same target run the same way; pick reports/baselines/{}.json or make a baseline with `cargo xtask baseline <run>`",
            b.target_triple,
            b.runner,
            r.target_triple,
            r.runner,
            r.target_triple
        );
    }
    Ok(())
}

/// Parses `10%`, `10 %` or `10` as 0.10.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v / 100.0),
        _ => Err(format!("`{s}` is not a percentage (e.g. 10%)")),
    }
}

/// `cargo xtask gate <run> --baseline FILE --max-regression PCT`: prints the
/// comparison and fails if any metric regressed beyond noise and `max`.
pub fn gate(run_path: &Path, baseline_file: &Path, max_regression: f64) -> Result<()> {
    let baseline = compare::load_side(baseline_file)?;
    let run = compare::load_side(run_path)?;
    if run.workloads.is_empty() && run.micro.is_some() {
        bail!(
            "{} is a micro-benchmark run: a load baseline has nothing to gate in it (compare two micro runs with `cargo xtask compare A B`, or use criterion's own `cargo xtask micro --baseline NAME`)",
            run_path.display()
        );
    }
    check_comparable(&baseline, &run)?;
    let suite = baseline.suite.clone();
    let c = compare::compare(
        baseline,
        run,
        &baseline_file.display().to_string(),
        &run_path.display().to_string(),
    );
    println!("{}", compare::render_markdown(&c));
    // A gate that compared nothing has not passed: every row missing means
    // the run and the baseline share no workload.
    if c.rows
        .iter()
        .all(|r| matches!(r.verdict, compare::Verdict::Missing(_)))
    {
        bail!(
            "baseline gate: the run and {} share no workload, so nothing was compared; gate a run of the baseline's suite (`cargo xtask bench --suite {}`) or make a new baseline with `cargo xtask baseline <run>`",
            baseline_file.display(),
            suite
        );
    }
    let found = regressions(&c, max_regression);
    if found.is_empty() {
        println!(
            "baseline gate: pass (no metric worse than the baseline beyond noise and {:.0} %)",
            max_regression * 100.0
        );
        return Ok(());
    }
    for r in &found {
        println!("REGRESSION {}", r.line);
    }
    bail!(
        "baseline gate: {} regression{} beyond noise and {:.0} %",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        max_regression * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{repeat, report, result, workload, workload_report};
    use crate::report::Status;

    /// A quick-suite-like run: fan-in with `rate` msg/s, latency with `p99` µs.
    fn run(rate: f64, p99: u64, repeats: usize) -> Report {
        let fanin = workload("mqtt-fanin", "fan_in");
        let mut lat = workload("mqtt-latency", "latency");
        lat.rate = 1_000;
        let storm = workload("mqtt-storm", "connection_storm");
        let reps = |w: &loadgen::Workload, rate: f64, p99: u64| -> Vec<RepeatReport> {
            (0..repeats)
                .map(|i| {
                    // ±1 % spread between repeats.
                    let wobble = 1.0 + (i as f64 - 1.0) * 0.01;
                    repeat(
                        i as u32 + 1,
                        Some(result(w, rate * wobble, (p99 as f64 * wobble) as u64)),
                        40_000_000,
                        30.0,
                    )
                })
                .collect()
        };
        let mut r = report(vec![
            workload_report(fanin.clone(), reps(&fanin, rate, 8_000), Status::Ok),
            workload_report(lat.clone(), reps(&lat, 1_000.0, p99), Status::Ok),
            workload_report(storm.clone(), reps(&storm, 0.0, 1), Status::Ok),
        ]);
        r.repeat = repeats as u32;
        r
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A one-repeat run and its baseline file `b.json` in `dir`.
    fn one_repeat_baseline(dir: &Path) -> (Report, PathBuf) {
        let base = run(100_000.0, 4_000, 1);
        let file = write(dir, "b.json", &Baseline::of(&base, String::new()).to_json());
        (base, file)
    }

    #[test]
    fn baseline_is_small_and_round_trips() {
        let r = run(100_000.0, 4_000, 3);
        let b = Baseline::of(&r, "test machine, quick suite".into());
        let json = b.to_json();
        assert!(Baseline::is_baseline(&json));
        assert!(!Baseline::is_baseline(&r.to_json()));
        assert_eq!(Baseline::from_json(&json).unwrap(), b);
        assert!(!json.contains("histogram"));
        let fanin = &b.workloads[0].metrics;
        assert_eq!(fanin["received_per_sec"].len(), 3);
        assert_eq!(fanin["e2e_p99_us"][1], 8_000.0);
        // The storm keeps only what storms measure.
        let storm = &b.workloads[2].metrics;
        assert!(storm.contains_key("connections_established"));
        assert!(!storm.contains_key("received_per_sec"));
        // Fan-in fixtures are unpaced: no CPU; the latency workload is paced.
        assert!(!fanin.contains_key("broker_cpu_percent"));
        assert_eq!(b.workloads[1].metrics["broker_cpu_percent"], [30.0; 3]);
        // The fixtures are QoS 0: no `lost`; at QoS 1 it is kept.
        assert!(!fanin.contains_key("lost"));
        let mut q1 = r.clone();
        q1.workloads[0].workload.qos = 1;
        let b1 = Baseline::of(&q1, String::new());
        assert_eq!(b1.workloads[0].metrics["lost"], [0.0, 0.0, 0.0]);
        let old = json.replacen("\"schema_version\": 1", "\"schema_version\": 9", 1);
        assert!(Baseline::from_json(&old).is_err());
    }

    #[test]
    fn gate_fails_on_a_run_30_percent_slower_and_passes_on_the_run_itself() {
        let dir = tempfile::tempdir().unwrap();
        for repeats in [1, 3, 5] {
            let base = run(100_000.0, 4_000, repeats);
            let baseline = write(
                dir.path(),
                "baseline.json",
                &Baseline::of(&base, "fixture".into()).to_json(),
            );
            let same = write(dir.path(), "same.json", &base.to_json());
            gate(&same, &baseline, 0.10).unwrap();

            // 30 % slower: throughput × 0.7, p99 × 1.3.
            let slow = write(
                dir.path(),
                "slow.json",
                &run(70_000.0, 5_200, repeats).to_json(),
            );
            let err = gate(&slow, &baseline, 0.10).unwrap_err().to_string();
            assert!(err.contains("regression"), "{repeats}: {err}");
            let c = compare::compare(
                compare::load_side(&baseline).unwrap(),
                compare::load_side(&slow).unwrap(),
                "base",
                "slow",
            );
            let found = regressions(&c, 0.10);
            let keys: Vec<_> = found
                .iter()
                .map(|r| (r.workload.as_str(), r.metric))
                .collect();
            assert!(
                keys.contains(&("mqtt-fanin", "received_per_sec")),
                "{keys:?}"
            );
            assert!(keys.contains(&("mqtt-latency", "e2e_p99_us")), "{keys:?}");
            // A 30 % regression passes a 50 % allowance.
            gate(&slow, &baseline, 0.50).unwrap();
        }
    }

    #[test]
    fn gate_ignores_regressions_within_the_noise() {
        let dir = tempfile::tempdir().unwrap();
        let (_, baseline) = one_repeat_baseline(dir.path());
        // p99 20 % up with no repeats: inside the ±25 % default band.
        let noisy = write(dir.path(), "n.json", &run(100_000.0, 4_800, 1).to_json());
        gate(&noisy, &baseline, 0.10).unwrap();
    }

    #[test]
    fn gate_refuses_another_target_or_emulation() {
        let dir = tempfile::tempdir().unwrap();
        let (base, baseline) = one_repeat_baseline(dir.path());
        let mut q = base.clone();
        q.environment.emulated = true;
        q.environment.runner = "qemu-aarch64".into();
        q.environment.target_triple = "aarch64-unknown-linux-gnu".into();
        let q = write(dir.path(), "q.json", &q.to_json());
        let err = gate(&q, &baseline, 0.10).unwrap_err().to_string();
        assert!(err.contains("same target run the same way"), "{err}");
    }

    #[test]
    fn gate_that_compared_nothing_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (base, baseline) = one_repeat_baseline(dir.path());
        let mut other = base.clone();
        for (i, w) in other.workloads.iter_mut().enumerate() {
            w.name = format!("renamed-{i}");
        }
        let other = write(dir.path(), "o.json", &other.to_json());
        let err = gate(&other, &baseline, 0.10).unwrap_err().to_string();
        assert!(err.contains("nothing was compared"), "{err}");
    }

    #[test]
    fn default_file_names_say_emulated() {
        let r = run(1.0, 1, 1);
        let mut env = r.environment.clone();
        assert_eq!(
            default_file(Path::new("/ws"), &env),
            Path::new("/ws/reports/baselines/x86_64-unknown-linux-gnu.json")
        );
        env.emulated = true;
        env.target_triple = "aarch64-unknown-linux-gnu".into();
        assert!(default_file(Path::new("/ws"), &env)
            .ends_with("aarch64-unknown-linux-gnu-emulated.json"));
    }

    #[test]
    fn percentages_parse() {
        assert_eq!(parse_percent("10%"), Ok(0.10));
        assert_eq!(parse_percent("25 %"), Ok(0.25));
        assert_eq!(parse_percent("5"), Ok(0.05));
        assert!(parse_percent("-3%").is_err());
        assert!(parse_percent("ten").is_err());
    }
}
