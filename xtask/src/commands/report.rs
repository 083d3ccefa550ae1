//! `cargo xtask report <run>`: re-render `report.md` and `report.html` of a run
//! from its `report.json` (after a renderer changed, or for a copied report).

use std::path::Path;

use anyhow::{Context, Result};

use crate::model::report::Report;
use crate::render::markdown::render_markdown;

/// `cargo xtask report <run dir | report.json>`: writes `report.md` and
/// `report.html` next to the JSON again (after a renderer changed, or for a
/// report copied from another machine).
pub fn run(path: &Path) -> Result<()> {
    let report = Report::load(path)?;
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let md = dir.join("report.md");
    std::fs::write(&md, render_markdown(&report))
        .with_context(|| format!("cannot write {}", md.display()))?;
    let html = crate::render::html::write(&dir, &report)?;
    println!("{}\n{}", md.display(), html.display());
    Ok(())
}

// ---- formatting -------------------------------------------------------------
