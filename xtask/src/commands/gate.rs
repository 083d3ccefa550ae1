//! `cargo xtask gate <run> --profile NAME`: judge a bench report against a
//! threshold profile; with `--baseline FILE --max-regression 10%`, fail on
//! statistically significant regressions beyond the allowed one (and on
//! metrics not judged or not compared).

use std::path::Path;

use anyhow::{bail, Result};

use crate::model::report::Report;
use crate::model::verdict::failed;

use crate::analysis::gate::evaluate;
use crate::analysis::regression::{check_comparable, judge, Judgement, MIN_REPEATS};
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

/// `cargo xtask gate <run> --baseline FILE --max-regression PCT`: judges
/// every workload and metric of the run against the baseline's repeats
/// (rank test, [`MIN_REPEATS`] on both sides) and fails on a regression, a
/// metric not judged or a workload on one side only. Another machine's
/// baseline is refused (exit 2) unless `force_machine`.
pub fn run_baseline(
    run_path: &Path,
    baseline_file: &Path,
    max_regression: f64,
    force_machine: bool,
) -> Result<()> {
    let baseline = crate::model::baseline::load_side(baseline_file)?;
    let run = crate::model::baseline::load_side(run_path)?;
    if run.workloads.is_empty() && run.micro.is_some() {
        bail!(
            "{} is a micro-benchmark run: a load baseline has nothing to gate in it (compare two micro runs with `cargo xtask compare A B`, or use criterion's own `cargo xtask micro --baseline NAME`)",
            run_path.display()
        );
    }
    for note in check_comparable(&baseline, &run, force_machine)? {
        println!("{note}");
    }
    let rows = judge(&baseline, &run, max_regression);
    println!(
        "baseline gate: {} against {} ({:.0} % allowed)",
        run_path.display(),
        baseline_file.display(),
        max_regression * 100.0
    );
    println!("{}", crate::render::regression::text_table(&rows));
    let count = |f: fn(&Judgement) -> bool| rows.iter().filter(|r| f(&r.judgement)).count();
    let regressed = count(|j| *j == Judgement::Regression);
    let not_judged = count(|j| matches!(j, Judgement::NotJudged(_)));
    let not_compared = count(|j| matches!(j, Judgement::NotCompared(_)));
    if rows.is_empty() || rows.iter().any(|r| r.judgement.fails()) {
        return failed(format!(
            "baseline gate: {regressed} regression{} beyond {:.0} %, {not_judged} metric{} not judged (fewer than {MIN_REPEATS} repeats a side), {not_compared} not compared (on one side only){}",
            if regressed == 1 { "" } else { "s" },
            max_regression * 100.0,
            if not_judged == 1 { "" } else { "s" },
            if rows.is_empty() { "; nothing to compare" } else { "" }
        ));
    }
    println!(
        "baseline gate: pass ({} metrics, none significantly worse than the baseline beyond {:.0} %)",
        rows.len(),
        max_regression * 100.0
    );
    Ok(())
}

/// `cargo xtask gate <A/B run> --ab`: prints an A/B run's verdicts again
/// and fails on a regression, a metric not judged or a failed workload.
pub fn run_ab(path: &Path) -> Result<()> {
    let ab = crate::model::ab::AbReport::load(path)?;
    println!("{}", crate::render::ab::terminal(&ab));
    if ab.failures().is_empty() && ab.broken().is_empty() {
        return Ok(());
    }
    failed(crate::render::ab::verdict_line(&ab))
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
    use crate::model::verdict::is_verdict;
    use std::path::PathBuf;

    /// A quick-suite-like run: fan-in with `rate` msg/s, latency with `p99` µs.
    fn sample_run(rate: f64, p99: u64, repeats: usize) -> Report {
        sample_run_seeded(rate, p99, repeats, 0)
    }

    /// The same with ±5 % noise between repeats drawn from `seed`; seed 0:
    /// ±1 % steps (values that survive a JSON round trip exactly).
    fn sample_run_seeded(rate: f64, p99: u64, repeats: usize, seed: u64) -> Report {
        let fanin = workload("mqtt-fanin", "fan_in");
        let mut lat = workload("mqtt-latency", "latency");
        lat.rate = 1_000;
        let storm = workload("mqtt-storm", "connection_storm");
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
        let mut wobble = move |i: usize| {
            if seed == 0 {
                return 1.0 + (i as f64 - 1.0) * 0.01;
            }
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            1.0 + 0.05 * (((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
        };
        let mut reps = |w: &loadgen::Workload, rate: f64, p99: u64| -> Vec<RepeatReport> {
            (0..repeats)
                .map(|i| {
                    let (a, b) = (wobble(i), wobble(i));
                    repeat(
                        i as u32 + 1,
                        Some(result(w, rate * a, (p99 as f64 * b) as u64)),
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

    /// A five-repeat baseline of `sample_run_seeded(.., seed 1)` in `dir`.
    fn five_repeat_baseline(dir: &Path) -> (Report, PathBuf) {
        let base = sample_run_seeded(100_000.0, 4_000, 5, 1);
        let file = write(dir, "b.json", &Baseline::of(&base, String::new()).to_json());
        (base, file)
    }

    #[test]
    fn same_commit_reruns_pass_with_five_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let (_, baseline) = five_repeat_baseline(dir.path());
        // Ten reruns from the same distribution (±5 % noise, other seeds).
        for seed in 2..12 {
            let rerun = write(
                dir.path(),
                "rerun.json",
                &sample_run_seeded(100_000.0, 4_000, 5, seed).to_json(),
            );
            run_baseline(&rerun, &baseline, 0.10, false)
                .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        }
    }

    #[test]
    fn a_30_percent_regression_on_five_repeats_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (_, baseline) = five_repeat_baseline(dir.path());
        // 30 % slower: throughput × 0.7, p99 × 1.3.
        let slow = sample_run_seeded(70_000.0, 5_200, 5, 7);
        let slow_file = write(dir.path(), "slow.json", &slow.to_json());
        let err = run_baseline(&slow_file, &baseline, 0.10, false).unwrap_err();
        assert!(is_verdict(&err), "{err:#}");
        assert!(err.to_string().contains("4 regressions"), "{err:#}");
        let rows = judge(
            &crate::model::baseline::load_side(&baseline).unwrap(),
            &Baseline::of(&slow, String::new()),
            0.10,
        );
        let regressed: Vec<_> = rows
            .iter()
            .filter(|r| r.judgement == Judgement::Regression)
            .map(|r| (r.workload.as_str(), r.metric.unwrap().key))
            .collect();
        // The fixture's CPU is fixed, so fewer messages cost more CPU each,
        // and its p50 follows its p99.
        assert_eq!(
            regressed,
            [
                ("mqtt-fanin", "received_per_sec"),
                ("mqtt-fanin", "broker_cpu_us_per_msg"),
                ("mqtt-latency", "e2e_p50_us"),
                ("mqtt-latency", "e2e_p99_us")
            ]
        );
        // A 30 % regression passes a 50 % allowance.
        run_baseline(&slow_file, &baseline, 0.50, false).unwrap();
    }

    #[test]
    fn too_few_repeats_are_not_judged_and_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (_, baseline) = five_repeat_baseline(dir.path());
        // The old ci/bench.yml shape: one repeat against the baseline.
        let one = write(
            dir.path(),
            "one.json",
            &sample_run_seeded(100_000.0, 4_000, 1, 3).to_json(),
        );
        let err = run_baseline(&one, &baseline, 0.10, false).unwrap_err();
        assert!(is_verdict(&err), "{err:#}");
        assert!(err.to_string().contains("not judged"), "{err:#}");
        // A baseline of three repeats is not enough either, whatever the run has.
        let three = sample_run_seeded(100_000.0, 4_000, 3, 4);
        let three = write(
            dir.path(),
            "b3.json",
            &Baseline::of(&three, String::new()).to_json(),
        );
        let five = write(
            dir.path(),
            "five.json",
            &sample_run_seeded(100_000.0, 4_000, 5, 5).to_json(),
        );
        let err = run_baseline(&five, &three, 0.10, false).unwrap_err();
        assert!(err.to_string().contains("not judged"), "{err:#}");
    }

    #[test]
    fn gate_refuses_another_target_or_emulation() {
        let dir = tempfile::tempdir().unwrap();
        let (base, baseline) = five_repeat_baseline(dir.path());
        let mut q = base.clone();
        q.environment.emulated = true;
        q.environment.runner = "qemu-aarch64".into();
        q.environment.target_triple = "aarch64-unknown-linux-gnu".into();
        let q = write(dir.path(), "q.json", &q.to_json());
        let err = run_baseline(&q, &baseline, 0.10, false).unwrap_err();
        assert!(!is_verdict(&err));
        assert!(
            err.to_string().contains("same target run the same way"),
            "{err}"
        );
    }

    #[test]
    fn gate_refuses_another_machine_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let (base, baseline) = five_repeat_baseline(dir.path());
        for change in [
            |r: &mut Report| r.environment.cpu_model = "AMD EPYC 7763 64-Core Processor".into(),
            |r: &mut Report| r.environment.usable_cores = r.environment.usable() + 2,
        ] {
            let mut other = base.clone();
            change(&mut other);
            let other = write(dir.path(), "other.json", &other.to_json());
            let err = run_baseline(&other, &baseline, 0.10, false).unwrap_err();
            // Bad input (exit 2), not a verdict.
            assert!(!is_verdict(&err), "{err:#}");
            let text = err.to_string();
            assert!(text.contains("--force-machine"), "{text}");
            assert!(text.contains("usable cores"), "{text}");
            run_baseline(&other, &baseline, 0.10, true).unwrap();
        }
    }

    #[test]
    fn missing_workloads_are_not_compared_and_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (base, baseline) = five_repeat_baseline(dir.path());
        // The run lacks the storm: every other metric passes, still a failure.
        let mut fewer = sample_run_seeded(100_000.0, 4_000, 5, 9);
        fewer.workloads.retain(|w| w.name != "mqtt-storm");
        let fewer = write(dir.path(), "fewer.json", &fewer.to_json());
        let err = run_baseline(&fewer, &baseline, 0.10, false).unwrap_err();
        assert!(is_verdict(&err), "{err:#}");
        assert!(err.to_string().contains("1 not compared"), "{err:#}");
        // A workload the baseline lacks fails the same way.
        let mut more = base.clone();
        let mut extra = more.workloads[0].clone();
        extra.name = "mqtt-new".into();
        more.workloads.push(extra);
        let more = write(dir.path(), "more.json", &more.to_json());
        let err = run_baseline(&more, &baseline, 0.10, false).unwrap_err();
        assert!(err.to_string().contains("1 not compared"), "{err:#}");
        // Nothing shared at all.
        let mut other = base.clone();
        for (i, w) in other.workloads.iter_mut().enumerate() {
            w.name = format!("renamed-{i}");
        }
        let other = write(dir.path(), "o.json", &other.to_json());
        let err = run_baseline(&other, &baseline, 0.10, false).unwrap_err();
        assert!(err.to_string().contains("6 not compared"), "{err:#}");
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
        let err = run_baseline(dir.path(), &baseline, 0.1, false).unwrap_err();
        assert!(err.to_string().contains("nothing to gate"), "{err}");
    }

    /// An A/B report of the quick-suite-like fixture: the candidate at
    /// `factor` × the base's throughput, five pairs.
    fn ab_report(factor: f64) -> crate::model::ab::AbReport {
        let base = sample_run_seeded(100_000.0, 4_000, 5, 21);
        let cand = sample_run_seeded(100_000.0 * factor, 4_000, 5, 22);
        crate::model::ab::AbReport {
            schema_version: crate::model::ab::AB_SCHEMA_VERSION,
            kind: crate::model::ab::KIND.into(),
            run_id: "ab-test".into(),
            environment: base.environment.clone(),
            suite: "quick".into(),
            base: crate::model::ab::AbSide {
                label: "HEAD~1".into(),
                revision: Some("0".repeat(40)),
                binary: "target/ab/bin/broker-000000000000".into(),
                run_dir: "base".into(),
            },
            candidate: crate::model::ab::AbSide {
                label: "working tree".into(),
                revision: None,
                binary: "target/release/broker".into(),
                run_dir: "candidate".into(),
            },
            pairs: 5,
            max_regression: 0.10,
            profile: "ci".into(),
            confidence: 0.95,
            started_at: "t0".into(),
            finished_at: "t1".into(),
            workloads: crate::analysis::ab::judge_reports(&base, &cand, 0.10),
        }
    }

    #[test]
    fn gate_ab_fails_on_a_regression_and_passes_an_unchanged_candidate() {
        let dir = tempfile::tempdir().unwrap();
        let same = ab_report(1.0);
        std::fs::write(dir.path().join("ab.json"), same.to_json()).unwrap();
        let loaded = crate::model::ab::AbReport::load(dir.path()).unwrap();
        let verdicts = |r: &crate::model::ab::AbReport| -> Vec<_> {
            r.workloads
                .iter()
                .flat_map(|w| w.metrics.iter().map(|m| (m.key.clone(), m.verdict.clone())))
                .collect()
        };
        assert_eq!(verdicts(&loaded), verdicts(&same), "round trip");
        assert_eq!((loaded.run_id.as_str(), loaded.pairs), ("ab-test", 5));
        run_ab(dir.path()).unwrap();
        let slow = ab_report(0.7);
        let fanin = &slow.workloads[0].metrics;
        let tput = fanin.iter().find(|m| m.key == "received_per_sec").unwrap();
        assert_eq!(tput.verdict, crate::model::ab::AbVerdict::Regression);
        assert!((tput.median_ratio.unwrap() - 0.7).abs() < 0.08, "{tput:?}");
        std::fs::write(dir.path().join("ab.json"), slow.to_json()).unwrap();
        let err = run_ab(dir.path()).unwrap_err();
        assert!(is_verdict(&err), "{err:#}");
        assert!(err.to_string().starts_with("A/B gate: FAIL ("), "{err:#}");
        let md = crate::render::ab::markdown(&slow);
        assert!(md.contains("| mqtt-fanin | delivered msg/s |"), "{md}");
        assert!(crate::render::ab::html(&slow).contains("class=\"regression\""));
        // A plain bench report is not an A/B report: bad input, exit 2.
        std::fs::write(dir.path().join("ab.json"), sample_run(1.0, 1, 1).to_json()).unwrap();
        let err = run_ab(dir.path()).unwrap_err();
        assert!(!is_verdict(&err));
        assert!(format!("{err:#}").contains("not an A/B report"), "{err:#}");
    }
}
