//! An A/B run as text: `ab.md` and `ab.html` (per workload and metric the
//! median candidate/base ratio, its interval and the verdict) and the same
//! table for the terminal, with one verdict line.

use std::fmt::Write as _;

use crate::analysis::regression::median;
use crate::model::ab::{AbMetric, AbReport, AbVerdict};
use crate::model::metric::METRICS;
use crate::model::units::escape;

fn value(key: &str, values: &[f64]) -> String {
    match (METRICS.iter().find(|m| m.key == key), median(values)) {
        (Some(m), Some(v)) => (m.format)(v),
        _ => "–".into(),
    }
}

fn ratio(v: Option<f64>) -> String {
    v.map(|r| format!("{r:.3}")).unwrap_or_else(|| "–".into())
}

fn interval(m: &AbMetric) -> String {
    match (m.ci_low, m.ci_high) {
        (Some(l), Some(h)) => format!("{l:.3} – {h:.3}"),
        _ => "–".into(),
    }
}

/// Rows of `workload, metric, base, candidate, ratio, interval, verdict`.
fn rows(ab: &AbReport) -> Vec<[String; 7]> {
    let mut out = Vec::new();
    for w in &ab.workloads {
        if w.status != "ok" {
            out.push([
                w.name.clone(),
                "(workload)".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                format!("FAILED: {}", w.status),
            ]);
        }
        for m in &w.metrics {
            out.push([
                w.name.clone(),
                m.label.clone(),
                value(&m.key, &m.base),
                value(&m.key, &m.candidate),
                ratio(m.median_ratio),
                interval(m),
                m.verdict.text(),
            ]);
        }
    }
    out
}

const HEADER: [&str; 7] = [
    "workload",
    "metric",
    "base (median)",
    "candidate (median)",
    "ratio B/A",
    "95 % interval",
    "verdict",
];

/// One line: pass, or how many metrics failed and why.
pub fn verdict_line(ab: &AbReport) -> String {
    let failures = ab.failures();
    let regressions = failures
        .iter()
        .filter(|(_, m)| m.verdict == AbVerdict::Regression)
        .count();
    let broken = ab.broken().len();
    if failures.is_empty() && broken == 0 {
        format!(
            "A/B gate: pass ({} pairs, no metric worse than the base beyond {:.0} %)",
            ab.pairs,
            ab.max_regression * 100.0
        )
    } else {
        format!(
            "A/B gate: FAIL ({regressions} regression{} beyond {:.0} %, {} not judged, {broken} workload{} failed)",
            if regressions == 1 { "" } else { "s" },
            ab.max_regression * 100.0,
            failures.len() - regressions,
            if broken == 1 { "" } else { "s" }
        )
    }
}

fn about(ab: &AbReport) -> String {
    format!(
        "A = {} ({}), B = {} ({}); suite {}, {} pairs per workload run A B, B A, …; profile `{}` allows {:.0} %",
        ab.base.label,
        ab.base.revision.as_deref().unwrap_or(&ab.base.binary),
        ab.candidate.label,
        ab.candidate.revision.as_deref().unwrap_or(&ab.candidate.binary),
        ab.suite,
        ab.pairs,
        ab.profile,
        ab.max_regression * 100.0
    )
}

const HOW: &str = "Each pair runs the workload once on each broker, on the same machine, one after the other (order alternating), each with a fresh broker. Per pair the ratio candidate/base; the interval is a paired bootstrap (2,000 resamples, fixed seed) of the median ratio. A regression is an interval wholly worse than the allowed regression, with the median pair difference above the metric's resolution; better, an interval wholly better by as much.";

/// `ab.md`.
pub fn markdown(ab: &AbReport) -> String {
    let mut out = format!("# A/B run {}\n\n{}\n\n{HOW}\n\n", ab.run_id, about(ab));
    let _ = writeln!(out, "| {} |", HEADER.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
    for row in rows(ab) {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(out, "\n**{}**", verdict_line(ab));
    out
}

/// `ab.html`: the same table on one page.
pub fn html(ab: &AbReport) -> String {
    let mut out = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>A/B run {id}</title>\n<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.regression{{background:#fdd}}.better{{background:#dfd}}.not-judged{{background:#ffd}}</style></head><body>\n<h1>A/B run {id}</h1>\n<p>{about}</p>\n<p>{how}</p>\n<table>\n<tr>",
        id = escape(&ab.run_id),
        about = escape(&about(ab)),
        how = escape(HOW)
    );
    for h in HEADER {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for row in rows(ab) {
        let class = if row[6].starts_with("REGRESSION") || row[6].starts_with("FAILED") {
            "regression"
        } else if row[6] == "better" {
            "better"
        } else if row[6].starts_with("not judged") {
            "not-judged"
        } else {
            ""
        };
        let _ = write!(out, "<tr class=\"{class}\">");
        for c in &row {
            let _ = write!(out, "<td>{}</td>", escape(c));
        }
        out.push_str("</tr>\n");
    }
    let _ = write!(
        out,
        "</table>\n<p><strong>{}</strong></p>\n</body></html>\n",
        escape(&verdict_line(ab))
    );
    out
}

/// The table aligned for a terminal, then the verdict line.
pub fn terminal(ab: &AbReport) -> String {
    let mut table: Vec<[String; 7]> = vec![HEADER.map(String::from)];
    table.extend(rows(ab));
    let mut widths = [0usize; 7];
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!("{}\n", about(ab));
    for row in &table {
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i == 6 {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c}{}  ", " ".repeat(w - c.chars().count()));
            }
        }
        out.push('\n');
    }
    out.push_str(&verdict_line(ab));
    out
}
