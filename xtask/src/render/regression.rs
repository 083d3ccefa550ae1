//! The statistical baseline gate as terminal text: one row per workload and
//! metric with both medians, the repeats, the p-value and the judgement.

use std::fmt::Write as _;

use crate::analysis::regression::{median, Judged, SIGNIFICANCE};

/// `workload | metric | baseline | run | worse by | n | p | verdict`, aligned.
pub fn text_table(rows: &[Judged]) -> String {
    let header = [
        "workload", "metric", "baseline", "run", "worse by", "n", "p", "verdict",
    ]
    .map(String::from);
    let mut table: Vec<[String; 8]> = vec![header];
    for j in rows {
        let fmt = |v: &[f64]| match (j.metric, median(v)) {
            (Some(m), Some(x)) => (m.format)(x),
            _ => "–".into(),
        };
        table.push([
            j.workload.clone(),
            j.metric.map(|m| m.label).unwrap_or("(workload)").into(),
            fmt(&j.base),
            fmt(&j.run),
            j.worse_by()
                .map(|w| format!("{:+.1} %", w * 100.0))
                .unwrap_or_else(|| "–".into()),
            format!("{}/{}", j.base.len(), j.run.len()),
            j.p.map(|p| format!("{p:.3}")).unwrap_or_else(|| "–".into()),
            j.judgement.text(),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i == 7 {
                let _ = write!(out, "{c}");
            } else {
                let _ = write!(out, "{c}{}  ", " ".repeat(w - c.chars().count()));
            }
        }
        out.push('\n');
    }
    let _ = write!(
        out,
        "(p: one-sided Mann-Whitney U of the run against the baseline moved by the allowed regression; a regression below {SIGNIFICANCE})"
    );
    out
}
