//! Run directories under `reports/runs/`: created empty, linked as
//! `reports/latest`, paths shown relative to the workspace root.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub(crate) fn absolute(dir: &Path) -> Result<PathBuf> {
    Ok(if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    })
}

/// Creates the run directory; a reused one (`--out`) loses only what an
/// earlier bench wrote there, so stale results never mix with new ones.
pub(crate) fn prepare_run_dir(dir: &Path) -> Result<()> {
    for sub in ["results", "logs", "workloads", "broker-data"] {
        let path = dir.join(sub);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot clear {}", path.display()))?;
        }
    }
    for file in [
        "report.json",
        "report.md",
        "broker.log",
        "broker.toml",
        "mosquitto.conf",
    ] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    for sub in ["results", "logs", "workloads"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(())
}

/// Makes `reports/latest` a relative symlink to the run, replacing the old
/// link atomically.
pub(crate) fn point_latest(reports: &Path, run_dir: &Path) -> Result<()> {
    let link = reports.join("latest");
    let target = run_dir.strip_prefix(reports).unwrap_or(run_dir);
    let tmp = reports.join(".latest.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::rename(&tmp, &link).with_context(|| {
        format!(
            "cannot point {} at {} (is it a directory? remove it)",
            link.display(),
            target.display()
        )
    })
}

pub(crate) fn display_relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
