//! Regressions of a run against a baseline, judged statistically: a metric
//! regressed when its repeats are significantly worse (one-sided
//! Mann-Whitney U, p < [`SIGNIFICANCE`]) than the baseline's repeats moved
//! by the allowed regression; only between runs of one machine, target and
//! way of running; a metric with fewer than [`MIN_REPEATS`] repeats on a
//! side, and a workload or metric on one side only, fails the gate as not
//! judged / not compared instead of passing silently.

use anyhow::{bail, Result};

use crate::analysis::rank_test::{p_greater, p_less};
use crate::model::baseline::{Baseline, WorkloadNumbers};
use crate::model::metric::{Direction, Metric, METRICS};

/// Repeats each side needs before a verdict: with 5 and 5 the smallest
/// one-sided p-value a rank test can give is 1/252 ≈ 0.004; with 4 and 4
/// it is 1/70 ≈ 0.014, above [`SIGNIFICANCE`].
pub const MIN_REPEATS: usize = 5;

/// One-sided significance level. A gate tests some fifty metrics per suite:
/// 1 % keeps the chance of a false alarm on a same-commit rerun low while a
/// clean shift (every run repeat worse than every baseline repeat, p = 0.004
/// at 5 and 5) still counts.
pub const SIGNIFICANCE: f64 = 0.01;

#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Not significantly worse than the baseline moved by the allowance.
    Pass,
    /// Significantly worse than the baseline moved by the allowance.
    Regression,
    /// Too few repeats for a verdict (a failure of the gate).
    NotJudged(String),
    /// On one side only (a failure of the gate).
    NotCompared(String),
}

impl Judgement {
    pub fn text(&self) -> String {
        match self {
            Judgement::Pass => "pass".into(),
            Judgement::Regression => "REGRESSION".into(),
            Judgement::NotJudged(why) => format!("not judged ({why})"),
            Judgement::NotCompared(why) => format!("not compared ({why})"),
        }
    }

    pub fn fails(&self) -> bool {
        !matches!(self, Judgement::Pass)
    }
}

/// One workload and metric (or a whole workload, `metric` None) judged.
#[derive(Debug, Clone)]
pub struct Judged {
    pub workload: String,
    pub metric: Option<&'static Metric>,
    pub base: Vec<f64>,
    pub run: Vec<f64>,
    /// One-sided p-value of "worse than the moved baseline".
    pub p: Option<f64>,
    pub judgement: Judgement,
}

impl Judged {
    /// How much worse the run's median is than the baseline's (0.3 = 30 %).
    pub fn worse_by(&self) -> Option<f64> {
        let (a, b) = (median(&self.base)?, median(&self.run)?);
        if a == 0.0 {
            return None;
        }
        Some(match self.metric?.direction {
            Direction::HigherIsBetter => (a - b) / a.abs(),
            Direction::LowerIsBetter => (b - a) / a.abs(),
        })
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// Every workload and metric of `baseline` and `run`, judged with
/// `max_regression` allowed (0.10 = 10 %).
pub fn judge(baseline: &Baseline, run: &Baseline, max_regression: f64) -> Vec<Judged> {
    let mut out = Vec::new();
    for b in &baseline.workloads {
        match run.workloads.iter().find(|r| r.name == b.name) {
            Some(r) => out.extend(judge_workload(b, r, max_regression)),
            None => out.push(whole(
                &b.name,
                "workload not in the run: run the baseline's suite".into(),
            )),
        }
    }
    for r in &run.workloads {
        if !baseline.workloads.iter().any(|b| b.name == r.name) {
            out.push(whole(
                &r.name,
                "workload not in the baseline: regenerate it with `cargo xtask baseline <run>`"
                    .into(),
            ));
        }
    }
    out
}

fn whole(workload: &str, why: String) -> Judged {
    Judged {
        workload: workload.to_string(),
        metric: None,
        base: Vec::new(),
        run: Vec::new(),
        p: None,
        judgement: Judgement::NotCompared(why),
    }
}

fn judge_workload(b: &WorkloadNumbers, r: &WorkloadNumbers, allowed: f64) -> Vec<Judged> {
    METRICS
        .iter()
        .filter_map(|m| {
            let (base, run) = (b.metrics.get(m.key), r.metrics.get(m.key));
            if base.is_none() && run.is_none() {
                return None;
            }
            let base = base.cloned().unwrap_or_default();
            let run = run.cloned().unwrap_or_default();
            let judgement = if base.is_empty() {
                Judgement::NotCompared("not in the baseline".into())
            } else if run.is_empty() {
                Judgement::NotCompared("not measured in the run".into())
            } else if base.len() < MIN_REPEATS || run.len() < MIN_REPEATS {
                Judgement::NotJudged(format!(
                    "{} and {} repeats; needs {MIN_REPEATS} on both sides (--repeat {MIN_REPEATS})",
                    base.len(),
                    run.len()
                ))
            } else {
                Judgement::Pass
            };
            let p = (judgement == Judgement::Pass).then(|| p_worse(m, &base, &run, allowed));
            let judgement = match p {
                Some(p) if p < SIGNIFICANCE => Judgement::Regression,
                _ => judgement,
            };
            Some(Judged {
                workload: b.name.clone(),
                metric: Some(m),
                base,
                run,
                p,
                judgement,
            })
        })
        .collect()
}

/// One-sided p-value that `run` is worse than `base` moved by the allowance
/// (or by the metric's resolution, whichever is larger): below it for
/// higher-is-better metrics, above it for lower-is-better ones.
pub fn p_worse(m: &Metric, base: &[f64], run: &[f64], allowed: f64) -> f64 {
    let moved: Vec<f64> = base
        .iter()
        .map(|v| {
            let by = (v.abs() * allowed).max(m.floor);
            match m.direction {
                Direction::HigherIsBetter => v - by,
                Direction::LowerIsBetter => v + by,
            }
        })
        .collect();
    match m.direction {
        Direction::HigherIsBetter => p_less(run, &moved),
        Direction::LowerIsBetter => p_greater(run, &moved),
    }
}

/// Refuses a baseline from another target, way of running or machine (CPU
/// model, usable cores); with `force_machine` another machine is only noted.
/// Returns the notes to print.
pub fn check_comparable(
    baseline: &Baseline,
    run: &Baseline,
    force_machine: bool,
) -> Result<Vec<String>> {
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
    let machine = |e: &crate::infra::environment::Environment| {
        format!("{}, {} usable cores", e.cpu_model, e.usable())
    };
    if b.cpu_model != r.cpu_model || b.usable() != r.usable() {
        let line = format!(
            "baseline machine ({}) is not this run's ({}): numbers from another machine do not gate this one; make a baseline here (`cargo xtask bench --suite {} --repeat {MIN_REPEATS}`, then `cargo xtask baseline <run>`), gate with `cargo xtask bench --ab REV` (both sides on one machine), or pass --force-machine",
            machine(b),
            machine(r),
            baseline.suite
        );
        if !force_machine {
            bail!("{line}");
        }
        return Ok(vec![format!("--force-machine: {line}")]);
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn metric(key: &str) -> &'static Metric {
        METRICS.iter().find(|m| m.key == key).unwrap()
    }

    /// Deterministic noise in [-1, 1) from a simple LCG.
    fn noise(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn numbers(name: &str, rate: &[f64]) -> WorkloadNumbers {
        let mut metrics = BTreeMap::new();
        metrics.insert("received_per_sec".to_string(), rate.to_vec());
        WorkloadNumbers {
            name: name.into(),
            scenario: "fan_in".into(),
            status: "ok".into(),
            metrics,
            sweep: Vec::new(),
        }
    }

    #[test]
    fn same_distribution_reruns_pass_and_a_30_percent_drop_fails() {
        let m = metric("received_per_sec");
        // 200 same-commit reruns: 5 vs 5 drawn from one distribution with
        // ±8 % noise, each gated with 10 % allowed.
        let mut false_alarms = 0;
        for seed in 0..200u64 {
            let draw = |s| -> Vec<f64> {
                noise(s, 5)
                    .into_iter()
                    .map(|e| 10_000.0 * (1.0 + 0.08 * e))
                    .collect()
            };
            let (base, run) = (draw(seed * 2 + 1), draw(seed * 2 + 2));
            if p_worse(m, &base, &run, 0.10) < SIGNIFICANCE {
                false_alarms += 1;
            }
        }
        assert_eq!(false_alarms, 0);
        // The same machine 30 % slower (throughput × 0.7) with that noise.
        for seed in 0..50u64 {
            let base: Vec<f64> = noise(seed + 1000, 5)
                .into_iter()
                .map(|e| 10_000.0 * (1.0 + 0.08 * e))
                .collect();
            let run: Vec<f64> = noise(seed + 2000, 5)
                .into_iter()
                .map(|e| 7_000.0 * (1.0 + 0.08 * e))
                .collect();
            assert!(p_worse(m, &base, &run, 0.10) < SIGNIFICANCE, "seed {seed}");
        }
    }

    #[test]
    fn lower_is_better_metrics_regress_upwards_beyond_their_floor() {
        let m = metric("e2e_p99_us");
        let base = [1000.0, 1010.0, 990.0, 1005.0, 995.0];
        let worse: Vec<f64> = base.iter().map(|v| v * 1.3).collect();
        assert!(p_worse(m, &base, &worse, 0.10) < SIGNIFICANCE);
        let better: Vec<f64> = base.iter().map(|v| v * 0.7).collect();
        assert!(p_worse(m, &base, &better, 0.10) > 0.5);
        // 30 µs up on a 100 µs resolution: noise, not a regression.
        let tiny = [100.0, 101.0, 99.0, 100.5, 99.5];
        let up: Vec<f64> = tiny.iter().map(|v| v + 30.0).collect();
        assert!(p_worse(m, &tiny, &up, 0.10) >= SIGNIFICANCE);
    }

    #[test]
    fn few_repeats_and_one_sided_workloads_fail_the_gate() {
        let mut base = Baseline::of(
            &crate::model::report::test_support::report(Vec::new()),
            String::new(),
        );
        let mut run = base.clone();
        base.workloads = vec![numbers("a", &[1.0, 1.0, 1.0]), numbers("b", &[1.0; 5])];
        run.workloads = vec![numbers("a", &[1.0; 5]), numbers("c", &[1.0; 5])];
        let j = judge(&base, &run, 0.10);
        let by = |w: &str| {
            j.iter()
                .find(|x| x.workload == w)
                .unwrap()
                .judgement
                .clone()
        };
        assert!(
            matches!(by("a"), Judgement::NotJudged(ref why) if why.contains("needs 5")),
            "{j:?}"
        );
        assert!(
            matches!(by("b"), Judgement::NotCompared(ref why) if why.contains("not in the run"))
        );
        assert!(
            matches!(by("c"), Judgement::NotCompared(ref why) if why.contains("not in the baseline"))
        );
        assert!(j.iter().all(|x| x.judgement.fails()));
    }
}
