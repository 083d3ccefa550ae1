//! `cargo xtask compare <A> <B>`: compare two runs or baselines per workload
//! and metric and write `compare.md` and `compare.html` (the noise rule is in
//! `analysis::compare`).

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
