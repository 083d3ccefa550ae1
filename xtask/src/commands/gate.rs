//! Threshold profiles (`targets/profiles/*.toml`) and the gate: verdicts of a
//! bench report against a profile, and `cargo xtask gate <run> --profile NAME`.
//!
//! Each threshold is pass, fail, *not measured* or *informational*. Not
//! measured (the run did not exercise it at its scale) never counts as a pass,
//! and never fails the gate either; a workload that failed makes the
//! thresholds it would have exercised fail. Informational: under emulation
//! (qemu-user) the performance thresholds are reported, not gated, unless the
//! profile says `gate_emulated = true`.

use std::path::{Path};

use anyhow::{bail, Result};

use crate::model::report::Report;




use crate::analysis::gate::{evaluate};
use crate::analysis::regression::{check_comparable, regressions};
use crate::model::gate::{Profile};
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
        bail!("gate `{}` failed", gate.profile);
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
    bail!(
        "baseline gate: {} regression{} beyond noise and {:.0} %",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        max_regression * 100.0
    )
}

