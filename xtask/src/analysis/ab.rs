//! Judging an interleaved A/B run: per workload and metric, the per-pair
//! ratios candidate/base, a paired bootstrap interval of their median (fixed
//! seed: the same numbers give the same verdict), and a regression only when
//! the whole interval is worse than the allowed regression (better: the
//! whole interval better by as much) and the median
//! pair difference is beyond the metric's resolution. Drift that moves both
//! sides of a pair together cancels in its ratio.

use std::collections::BTreeSet;

use crate::analysis::compare::SplitMix64;
use crate::analysis::regression::median;
use crate::model::ab::{AbMetric, AbVerdict, AbWorkload};
use crate::model::baseline::{metric_value, Baseline};
use crate::model::metric::{Direction, Metric, METRICS};
use crate::model::report::Report;

/// Pairs a metric needs for a verdict: with 5, the 95 % bootstrap interval
/// of the median is the range of the ratios, so a regression means every
/// pair got worse beyond the allowance (a sign test's p = 1/32).
pub const MIN_PAIRS: usize = 5;
pub const RESAMPLES: usize = 2_000;
pub const CONFIDENCE: f64 = 0.95;
const SEED: u64 = 0x0ab0_5eed_d15c_0de5;

/// Verdict on one metric from its (base, candidate) pairs, `allowed` the
/// regression tolerated (0.10 = 10 %).
pub fn judge_pairs(m: &Metric, pairs: &[(f64, f64)], allowed: f64) -> AbMetric {
    // A pair whose base is 0 has no ratio unless the candidate is 0 too.
    let ratios: Vec<f64> = pairs
        .iter()
        .filter_map(|&(b, c)| {
            if b == 0.0 {
                (c == 0.0).then_some(1.0)
            } else {
                Some(c / b)
            }
        })
        .collect();
    let mut out = AbMetric {
        key: m.key.to_string(),
        label: m.label.to_string(),
        base: pairs.iter().map(|p| p.0).collect(),
        candidate: pairs.iter().map(|p| p.1).collect(),
        median_ratio: median(&ratios),
        ci_low: None,
        ci_high: None,
        verdict: AbVerdict::WithinNoise,
    };
    if ratios.len() < MIN_PAIRS {
        out.verdict = AbVerdict::NotJudged(format!(
            "{} pair{} with a ratio; needs {MIN_PAIRS} (--repeat {MIN_PAIRS})",
            ratios.len(),
            if ratios.len() == 1 { "" } else { "s" }
        ));
        return out;
    }
    let (low, high) = bootstrap_median(&ratios, RESAMPLES, SEED);
    out.ci_low = Some(low);
    out.ci_high = Some(high);
    let diffs: Vec<f64> = pairs.iter().map(|&(b, c)| c - b).collect();
    let diff = median(&diffs).unwrap_or(0.0);
    let (worse_beyond_allowed, better, worse_by) = match m.direction {
        Direction::HigherIsBetter => (high < 1.0 - allowed, low > 1.0 + allowed, -diff),
        Direction::LowerIsBetter => (low > 1.0 + allowed, high < 1.0 - allowed, diff),
    };
    out.verdict = if worse_beyond_allowed && worse_by > m.floor {
        AbVerdict::Regression
    } else if better && -worse_by > m.floor {
        AbVerdict::Better
    } else {
        AbVerdict::WithinNoise
    };
    out
}

/// The [`CONFIDENCE`] percentile interval of the median of `values`
/// resampled with replacement `resamples` times from `seed`.
pub fn bootstrap_median(values: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let mut rng = SplitMix64::seeded(seed);
    let mut medians: Vec<f64> = (0..resamples)
        .map(|_| {
            let picked: Vec<f64> = (0..values.len())
                .map(|_| values[rng.below(values.len())])
                .collect();
            median(&picked).expect("non-empty")
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    let at = |q: f64| medians[((medians.len() - 1) as f64 * q).round() as usize];
    (at(tail), at(1.0 - tail))
}

/// Every workload of the candidate's report judged against the base's,
/// pairing repeat k of one with repeat k of the other.
pub fn judge_reports(base: &Report, candidate: &Report, allowed: f64) -> Vec<AbWorkload> {
    let (nb, nc) = (
        Baseline::of(base, String::new()),
        Baseline::of(candidate, String::new()),
    );
    candidate
        .workloads
        .iter()
        .map(|cw| {
            let bw = base.workloads.iter().find(|w| w.name == cw.name);
            let status = match bw {
                None => "not run on the base".to_string(),
                Some(bw) if bw.status.is_ok() && cw.status.is_ok() => "ok".into(),
                Some(bw) => format!(
                    "base: {}; candidate: {}",
                    bw.status.describe(),
                    cw.status.describe()
                ),
            };
            let keys: BTreeSet<&str> = [&nb, &nc]
                .iter()
                .filter_map(|n| n.workloads.iter().find(|w| w.name == cw.name))
                .flat_map(|w| w.metrics.keys().map(String::as_str))
                .collect();
            let metrics = METRICS
                .iter()
                .filter(|m| m.performance && keys.contains(m.key))
                .map(|m| {
                    let pairs: Vec<(f64, f64)> = cw
                        .repeats
                        .iter()
                        .filter_map(|cr| {
                            let br = bw?.repeats.iter().find(|r| r.repeat == cr.repeat)?;
                            let (b, c) = (metric_value(m.key, br)?, metric_value(m.key, cr)?);
                            (b.is_finite() && c.is_finite()).then_some((b, c))
                        })
                        .collect();
                    judge_pairs(m, &pairs, allowed)
                })
                .collect();
            AbWorkload {
                name: cw.name.clone(),
                scenario: cw.workload.scenario.as_str().to_string(),
                status,
                metrics,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(key: &str) -> &'static Metric {
        METRICS.iter().find(|m| m.key == key).unwrap()
    }

    /// Deterministic noise in [-1, 1).
    fn noise(seed: u64, n: usize) -> Vec<f64> {
        let mut rng = SplitMix64::seeded(seed);
        (0..n)
            .map(|_| rng.below(1 << 20) as f64 / (1 << 19) as f64 - 1.0)
            .collect()
    }

    /// Pairs of a throughput around `level`, the candidate × `factor`, each
    /// value with ±`spread` noise, and `drift` per pair on both sides.
    fn pairs(seed: u64, n: usize, factor: f64, spread: f64, drift: f64) -> Vec<(f64, f64)> {
        let e = noise(seed, 2 * n);
        (0..n)
            .map(|i| {
                let level = 100_000.0 * (1.0 - drift * i as f64);
                (
                    level * (1.0 + spread * e[2 * i]),
                    level * factor * (1.0 + spread * e[2 * i + 1]),
                )
            })
            .collect()
    }

    #[test]
    fn identical_distributions_are_no_regression() {
        let m = metric("received_per_sec");
        for seed in 0..200 {
            let j = judge_pairs(m, &pairs(seed, 5, 1.0, 0.08, 0.0), 0.10);
            assert_ne!(j.verdict, AbVerdict::Regression, "seed {seed}: {j:?}");
            let (low, high) = (j.ci_low.unwrap(), j.ci_high.unwrap());
            assert!(low <= high && low < 1.2 && high > 0.8, "{j:?}");
        }
    }

    #[test]
    fn a_20_percent_slowdown_with_noise_is_a_regression() {
        let tput = metric("received_per_sec");
        let lat = metric("e2e_p99_us");
        for seed in 0..100 {
            let j = judge_pairs(tput, &pairs(seed, 5, 0.8, 0.03, 0.0), 0.10);
            assert_eq!(j.verdict, AbVerdict::Regression, "seed {seed}: {j:?}");
            assert!((j.median_ratio.unwrap() - 0.8).abs() < 0.05, "{j:?}");
            // Latency 20 % up (values in µs, far above the 100 µs resolution).
            let up: Vec<(f64, f64)> = pairs(seed + 500, 5, 1.2, 0.03, 0.0);
            assert_eq!(judge_pairs(lat, &up, 0.10).verdict, AbVerdict::Regression);
        }
        // Allowed 30 %: a 20 % slowdown passes.
        let j = judge_pairs(tput, &pairs(1, 5, 0.8, 0.03, 0.0), 0.30);
        assert_eq!(j.verdict, AbVerdict::WithinNoise);
    }

    #[test]
    fn drift_that_slows_both_sides_is_no_regression() {
        let m = metric("received_per_sec");
        for seed in 0..100 {
            // The machine gets 8 % slower every pair: by the fifth pair both
            // sides run about a third slower than at the start.
            let p = pairs(seed, 5, 1.0, 0.02, 0.08);
            assert!(p[4].1 < 0.75 * p[0].0, "{p:?}");
            let j = judge_pairs(m, &p, 0.10);
            assert_eq!(j.verdict, AbVerdict::WithinNoise, "seed {seed}: {j:?}");
        }
    }

    #[test]
    fn few_pairs_are_not_judged_and_tiny_differences_are_noise() {
        let m = metric("received_per_sec");
        let j = judge_pairs(m, &pairs(3, 3, 0.5, 0.0, 0.0), 0.10);
        assert!(matches!(j.verdict, AbVerdict::NotJudged(ref w) if w.contains("needs 5")));
        assert!(j.verdict.fails());
        // p50 from 100 µs to 140 µs: +40 %, but within the 50 µs resolution.
        let p50 = metric("e2e_p50_us");
        let small: Vec<(f64, f64)> = (0..5)
            .map(|i| (100.0 + i as f64, 140.0 + i as f64))
            .collect();
        assert_eq!(
            judge_pairs(p50, &small, 0.10).verdict,
            AbVerdict::WithinNoise
        );
        // Bootstrap intervals are reproducible.
        let v = [1.0, 1.1, 0.9, 1.05, 0.95];
        assert_eq!(bootstrap_median(&v, 500, 7), bootstrap_median(&v, 500, 7));
    }

    #[test]
    fn the_allowance_comes_from_the_profile() {
        use crate::model::gate::Profile;
        let root = crate::infra::cargo::project_root();
        assert_eq!(Profile::load(&root, "ci").unwrap().max_regression, 0.10);
        let file = std::path::Path::new("p.toml");
        let p = Profile::parse(file, "max_regression_percent = 25\n").unwrap();
        assert_eq!(p.max_regression, 0.25);
        assert_eq!(Profile::parse(file, "").unwrap().max_regression, 0.10);
        let err = Profile::parse(file, "max_regression_percent = 150\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("p.toml: max_regression_percent = 150: give a percentage"),
            "{err}"
        );
    }
}
