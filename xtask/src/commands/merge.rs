//! `cargo xtask merge <results...> --out FILE`: several loadgen workers that
//! ran the same workload at the same time, as one result. Counts, rates and
//! connections add up; latency histograms are added (loadgen's
//! `histogram::merge`) and the percentiles read from the sum, never averaged.

use std::path::Path;

use crate::analysis::merge::merge;
use anyhow::{Context, Result};
use loadgen::LoadResult;

/// `cargo xtask merge <results...> --out FILE`.
pub fn run(files: &[impl AsRef<Path>], out: &Path) -> Result<()> {
    let mut parts = Vec::new();
    for f in files {
        let f = f.as_ref();
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        parts.push(
            LoadResult::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
        );
    }
    let merged = merge(&parts)?;
    std::fs::write(out, merged.to_json())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let e2e = merged
        .latency
        .end_to_end
        .as_ref()
        .map(|l| {
            format!(
                ", e2e p50 {} p99 {} over {} samples",
                crate::render::format::micros(l.p50_us as f64),
                crate::render::format::micros(l.p99_us as f64),
                crate::render::format::thousands(l.count)
            )
        })
        .unwrap_or_default();
    println!(
        "merged {} results of `{}`: received {}{e2e}\n{}",
        parts.len(),
        merged.workload.name,
        crate::render::format::rate(merged.rates.received_per_sec),
        out.display()
    );
    Ok(())
}
