//! Regressions of a run against a baseline: worse beyond both the noise and
//! the allowed regression, and only between comparable runs (same target,
//! same emulation).

use anyhow::{bail, Result};

use crate::analysis::compare::Comparison;
use crate::analysis::compare::Verdict;
use crate::model::baseline::Baseline;

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
