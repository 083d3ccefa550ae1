//! `cargo xtask gate <run> --profile NAME`: judge a bench report against a
//! threshold profile; with `--baseline FILE --max-regression 10%`, fail only on
//! regressions beyond both the noise and the allowed regression.

use std::path::Path;

use anyhow::{bail, Result};

use crate::model::report::Report;
use crate::model::verdict::failed;

use crate::analysis::gate::evaluate;
use crate::analysis::regression::{check_comparable, regressions};
use crate::model::gate::Profile;
use crate::render::gate::{text_table, verdict_line};

/// `cargo xtask gate <run dir | report.json> [--profile NAME]`: re-evaluates
/// a report (default: against the profile it was run with); fails on any
/// failed threshold.
pub fn run(path: &Path, profile: Option<&str>) -> Result<()> {
    let report = Report::load(path)?;
    if !report.has_load() {
        bail!(
            "{} is a micro-benchmark run: micro numbers are not gated (compare two runs with `cargo xtask compare A B`)",
            path.display()
        );
    }
    let root = crate::infra::cargo::project_root();
    let name = profile.unwrap_or(&report.profile);
    let profile = Profile::load(&root, name)?;
    let gate = evaluate(&report, &profile);
    if report.environment.emulated {
        println!(
            "EMULATED: the broker ran under {}; numbers are not comparable with native runs{}",
            report.environment.runner,
            if profile.gate_emulated {
                " (profile sets gate_emulated: gated anyway)"
            } else {
                " (throughput, latency, CPU and memory are reported, not gated)"
            }
        );
    }
    println!(
        "run {} ({} suite, {}, {})",
        report.run_id, report.suite, report.environment.host_triple, report.environment.runner
    );
    println!("{}", text_table(&gate));
    println!("{}", verdict_line(&gate));
    if gate.failed() {
        return failed(format!("gate `{}` failed", gate.profile));
    }
    Ok(())
}

/// `cargo xtask gate <run> --baseline FILE --max-regression PCT`: prints the
/// comparison and fails if any metric regressed beyond noise and `max`.
pub fn run_baseline(run_path: &Path, baseline_file: &Path, max_regression: f64) -> Result<()> {
    let baseline = crate::model::baseline::load_side(baseline_file)?;
    let run = crate::model::baseline::load_side(run_path)?;
    if run.workloads.is_empty() && run.micro.is_some() {
        bail!(
            "{} is a micro-benchmark run: a load baseline has nothing to gate in it (compare two micro runs with `cargo xtask compare A B`, or use criterion's own `cargo xtask micro --baseline NAME`)",
            run_path.display()
        );
    }
    check_comparable(&baseline, &run)?;
    let suite = baseline.suite.clone();
    let c = crate::analysis::compare::compare(
        baseline,
        run,
        &baseline_file.display().to_string(),
        &run_path.display().to_string(),
    );
    println!("{}", crate::render::compare::render_markdown(&c));
    // A gate that compared nothing has not passed: every row missing means
    // the run and the baseline share no workload.
    if c.rows
        .iter()
        .all(|r| matches!(r.verdict, crate::analysis::compare::Verdict::Missing(_)))
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
    failed(format!(
        "baseline gate: {} regression{} beyond noise and {:.0} %",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        max_regression * 100.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::criterion::test_support::section;
    use crate::model::baseline::default_file;
    use crate::model::baseline::Baseline;
    use crate::model::report::micro_report;
    use crate::model::report::test_support::quick_run;
    use crate::model::report::test_support::{repeat, report, result, workload, workload_report};
    use crate::model::report::RepeatReport;
    use crate::model::report::Status;
    use std::path::PathBuf;

    /// A quick-suite-like run: fan-in with `rate` msg/s, latency with `p99` µs.
    fn sample_run(rate: f64, p99: u64, repeats: usize) -> Report {
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
        let base = sample_run(100_000.0, 4_000, 1);
        let file = write(dir, "b.json", &Baseline::of(&base, String::new()).to_json());
        (base, file)
    }

    #[test]
    fn baseline_is_small_and_round_trips() {
        let r = sample_run(100_000.0, 4_000, 3);
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
        // Kafka acks=1 promises delivery although `qos` is left at 0.
        let mut acks1 = r.clone();
        let k = &mut acks1.workloads[0].workload;
        k.protocol = loadgen::Protocol::Kafka;
        k.kafka = Some(loadgen::spec::KafkaOptions {
            acks: Some(1),
            ..Default::default()
        });
        assert_eq!(k.qos, 0);
        let b = Baseline::of(&acks1, String::new());
        assert_eq!(b.workloads[0].metrics["lost"], [0.0, 0.0, 0.0]);
        let old = json.replacen("\"schema_version\": 1", "\"schema_version\": 9", 1);
        assert!(Baseline::from_json(&old).is_err());
    }

    #[test]
    fn gate_fails_on_a_run_30_percent_slower_and_passes_on_the_run_itself() {
        let dir = tempfile::tempdir().unwrap();
        for repeats in [1, 3, 5] {
            let base = sample_run(100_000.0, 4_000, repeats);
            let baseline = write(
                dir.path(),
                "baseline.json",
                &Baseline::of(&base, "fixture".into()).to_json(),
            );
            let same = write(dir.path(), "same.json", &base.to_json());
            run_baseline(&same, &baseline, 0.10).unwrap();

            // 30 % slower: throughput × 0.7, p99 × 1.3.
            let slow = write(
                dir.path(),
                "slow.json",
                &sample_run(70_000.0, 5_200, repeats).to_json(),
            );
            let err = run_baseline(&slow, &baseline, 0.10)
                .unwrap_err()
                .to_string();
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
            run_baseline(&slow, &baseline, 0.50).unwrap();
        }
    }

    #[test]
    fn gate_ignores_regressions_within_the_noise() {
        let dir = tempfile::tempdir().unwrap();
        let (_, baseline) = one_repeat_baseline(dir.path());
        // p99 20 % up with no repeats: inside the ±25 % default band.
        let noisy = write(
            dir.path(),
            "n.json",
            &sample_run(100_000.0, 4_800, 1).to_json(),
        );
        run_baseline(&noisy, &baseline, 0.10).unwrap();
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
        let err = run_baseline(&q, &baseline, 0.10).unwrap_err().to_string();
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
        let err = run_baseline(&other, &baseline, 0.10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nothing was compared"), "{err}");
    }

    #[test]
    fn default_file_names_say_emulated() {
        let r = sample_run(1.0, 1, 1);
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
    fn gate_reads_a_report_file() {
        let dir = std::env::temp_dir().join(format!("xtask-gate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = quick_run(25_000.0, 3_000);
        r.profile = "embedded".into();
        std::fs::write(dir.join("report.json"), r.to_json()).unwrap();
        // Embedded: 1,000 connections ≥ 500, 25K > 3K, 3 ms < 150 ms, 50 MB < 1.5 GB, 3.5 MB < 5 MB.
        run(&dir, None).unwrap();
        let err = run(&dir.join("report.json"), Some("high_perf")).unwrap_err();
        assert!(err.to_string().contains("high_perf"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn micro_runs_are_not_gated() {
        let dir = tempfile::tempdir().unwrap();
        let env = crate::model::report::test_support::report(Vec::new()).environment;
        let r = micro_report(
            "run".into(),
            env,
            section(false),
            "2025-01-01T00:00:00Z".into(),
            "2025-01-01T00:01:00Z".into(),
        );
        std::fs::write(dir.path().join("report.json"), r.to_json()).unwrap();
        let err = run(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("not gated"), "{err}");
        // Nor against a load baseline: there would be no row to compare.
        let baseline = crate::infra::cargo::project_root()
            .join("reports/baselines/x86_64-unknown-linux-gnu.json");
        let err = run_baseline(dir.path(), &baseline, 0.1).unwrap_err();
        assert!(err.to_string().contains("nothing to gate"), "{err}");
    }
}
