//! `cargo xtask baseline <run>`: write a run's summary numbers as a baseline
//! file (`reports/baselines/<target triple>.json` by default).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::model::baseline::{default_file, Baseline};
use crate::model::report::Report;

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
    let needed = crate::analysis::regression::MIN_REPEATS;
    if (report.repeat as usize) < needed {
        eprintln!(
            "warning: the run has {} repeat{}; the regression gate needs {needed} to judge a metric (`cargo xtask bench --repeat {needed}`), so gating against this baseline fails as not judged",
            report.repeat,
            if report.repeat == 1 { "" } else { "s" }
        );
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
        crate::model::units::bytes(env.memory_bytes as f64),
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
        None => default_file(&crate::infra::cargo::project_root(), env),
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&file, baseline.to_json())
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("{}\n{}", baseline.about, file.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::criterion::test_support::section;
    use crate::model::report::micro_report;

    #[test]
    fn micro_runs_are_not_load_baselines() {
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
        let out = dir.path().join("baseline.json");
        let err = run(dir.path(), Some(&out)).unwrap_err();
        assert!(err.to_string().contains("--save-baseline NAME"), "{err}");
        assert!(!out.exists());
    }
}
