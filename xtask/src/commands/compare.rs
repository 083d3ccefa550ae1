//! `cargo xtask compare <A> <B>`: for each workload and metric, A, B, the
//! ratio B/A and a verdict (better / worse / within noise) that rests on the
//! spread of the repeats, never on a single pair of numbers; written as
//! `compare.md` and `compare.html`. A and B are run directories, report.json
//! files or baselines (`reports/baselines/*.json`).
//!
//! The noise rule, by the repeats each side has:
//! - fewer than 2 on either side: no spread exists, so a documented default
//!   band per metric ([`Metric::band`]) decides, and the output says so;
//! - 2 to 4 on both sides: within noise when the min–max ranges overlap;
//! - 5 or more on both sides: a bootstrap (2,000 resamples, fixed seed) of
//!   the ratio of medians; within noise when its 95 % interval holds 1.
//!
//! Differences smaller than a metric's resolution ([`Metric::floor`]) are
//! always within noise. Under emulation the speed and resource metrics
//! measure the emulator: a native side against an emulated one gets no
//! better/worse verdict on them, only a label (functional metrics, connections
//! and lost messages, are still judged).
//!
//! Micro-benchmark runs (`cargo xtask micro`) are compared per criterion
//! benchmark id: faster or slower when the 95 % CIs of the two means do not
//! overlap and the means differ by more than the 2 % noise threshold `micro` gives criterion,
//! else within noise; again no verdict between emulated and native numbers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::analysis::compare::compare;
use crate::model::baseline::load_side;
use crate::render::compare::{render_html, render_markdown};

/// `cargo xtask compare <A> <B> [--out DIR]`.
pub fn run(a: &Path, b: &Path, out: Option<&Path>) -> Result<()> {
    let (sa, sb) = (load_side(a)?, load_side(b)?);
    let out: PathBuf = match out {
        Some(dir) => dir.to_path_buf(),
        None => crate::infra::cargo::project_root()
            .join("reports/runs")
            .join(format!("compare-{}-vs-{}", sa.run_id, sb.run_id)),
    };
    let c = compare(sa, sb, &a.display().to_string(), &b.display().to_string());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let md = render_markdown(&c);
    let (md_file, html_file) = (out.join("compare.md"), out.join("compare.html"));
    std::fs::write(&md_file, &md).with_context(|| format!("cannot write {}", md_file.display()))?;
    std::fs::write(&html_file, render_html(&c))
        .with_context(|| format!("cannot write {}", html_file.display()))?;
    println!("{md}");
    println!(
        "written: {}\n         {}",
        md_file.display(),
        html_file.display()
    );
    Ok(())
}
