//! Baselines: the numbers of a bench run that `compare` and the regression
//! gate need (per workload and metric, one value per repeat; no histograms),
//! small enough to commit as `reports/baselines/<target triple>.json`.
//! `cargo xtask baseline <run>` writes one; `cargo xtask gate <run>
//! --baseline FILE --max-regression 10%` fails only on regressions beyond
//! both the noise and the allowed regression.


use anyhow::{bail, Result};

use crate::analysis::compare::Comparison;
use crate::analysis::compare::Verdict;
use crate::model::baseline::{Baseline};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{parse_percent};
    use crate::model::baseline::{default_file};
    use crate::model::report::test_support::{repeat, report, result, workload, workload_report};
    use crate::model::report::Status;

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
            let c = crate::analysis::compare::compare(
                crate::model::baseline::load_side(&baseline).unwrap(),
                crate::model::baseline::load_side(&slow).unwrap(),
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
