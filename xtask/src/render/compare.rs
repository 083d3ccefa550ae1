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

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::analysis::compare::{
    emulation_mismatch, Comparison, MicroComparison, MicroRow, MicroVerdict, Row, Rule, Verdict,
};
use crate::model::baseline::describe;
use crate::model::micro::MicroBenchmark;
use crate::model::report::Spread;
use crate::render::html::esc;

pub(crate) fn cell(s: &Option<Spread>, n: usize, f: fn(f64) -> String) -> String {
    match s {
        None => "–".into(),
        Some(s) if n < 2 || f(s.min) == f(s.max) => f(s.median),
        Some(s) => format!("{} ({} – {})", f(s.median), f(s.min), f(s.max)),
    }
}

pub(crate) fn ratio_text(r: &Row) -> String {
    match (r.ratio, r.a, r.b) {
        (Some(x), _, _) => format!("{x:.2}"),
        (None, Some(a), Some(b)) if a.median == 0.0 && b.median == 0.0 => "=".into(),
        (None, Some(_), Some(_)) => "∞".into(),
        _ => "–".into(),
    }
}

pub(crate) fn rule_text(r: &Row) -> String {
    match r.rule {
        None => "–".into(),
        Some(Rule::DefaultBand) if r.metric.band == 0.0 => "exact (no repeats)".into(),
        Some(Rule::DefaultBand) => {
            format!("default band ±{:.0} % (no repeats)", r.metric.band * 100.0)
        }
        Some(Rule::MinMax) => format!("min–max overlap ({} vs {} repeats)", r.n_a, r.n_b),
        Some(Rule::Bootstrap { low, high }) => format!(
            "bootstrap 95 % CI of median ratio [{low:.2}, {high:.2}] ({} vs {} repeats)",
            r.n_a, r.n_b
        ),
    }
}

pub(crate) fn tally(c: &Comparison) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &c.rows {
        let key = match r.verdict {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::WithinNoise => "within noise",
            Verdict::NotComparable(_) => "not comparable",
            Verdict::Missing(_) => "missing",
        };
        *counts.entry(key).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{} rows: {}", c.rows.len(), parts.join(", "))
}

pub fn render_markdown(c: &Comparison) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Compare: A `{}` vs B `{}`\n", c.a_name, c.b_name);
    let _ = writeln!(md, "- **A**: {} — {}", c.a.run_id, describe(&c.a));
    let _ = writeln!(md, "- **B**: {} — {}", c.b.run_id, describe(&c.b));
    if !c.notes.is_empty() {
        let _ = writeln!(md);
        for n in &c.notes {
            let _ = writeln!(md, "> {n}\n");
        }
    }
    if let Some(m) = &c.micro {
        md.push_str(&micro_markdown(m));
        if c.rows.is_empty() {
            return md;
        }
    }
    let _ = writeln!(
        md,
        "\n| workload | metric | A | B | B/A | verdict | noise rule |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---|---|");
    for r in &c.rows {
        let verdict = match r.verdict {
            Verdict::Worse => "**worse**".to_string(),
            ref v => v.text(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.metric.label,
            cell(&r.a, r.n_a, r.metric.format),
            cell(&r.b, r.n_b, r.metric.format),
            ratio_text(r),
            verdict.replace('|', "\\|"),
            rule_text(r)
        );
    }
    let _ = writeln!(md, "\n{}", tally(c));
    let _ = writeln!(
        md,
        "\nA and B show the median of the repeats (min – max). Higher is better for received msg/s and connections; lower for latency, memory, CPU and lost messages."
    );
    md
}

/// `1.05 µs (1.02 µs – 1.08 µs)`.
pub(crate) fn micro_cell(b: &MicroBenchmark) -> String {
    format!(
        "{} ({} – {})",
        crate::render::micro::duration_ns(b.mean_ns),
        crate::render::micro::duration_ns(b.ci_lower_ns),
        crate::render::micro::duration_ns(b.ci_upper_ns)
    )
}

pub(crate) fn micro_ratios(r: &MicroRow) -> (String, String) {
    (
        format!("{:.3}", r.time_ratio),
        r.throughput_ratio
            .map(|t| format!("{t:.3}"))
            .unwrap_or_else(|| "–".into()),
    )
}

pub(crate) fn only_lines(m: &MicroComparison) -> Vec<String> {
    let mut lines = Vec::new();
    for (side, ids) in [("A", &m.only_a), ("B", &m.only_b)] {
        if !ids.is_empty() {
            lines.push(format!("Only in {side}: {}", ids.join(", ")));
        }
    }
    lines
}

pub(crate) fn micro_tally(m: &MicroComparison) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &m.rows {
        let key = match r.verdict {
            MicroVerdict::Faster => "faster",
            MicroVerdict::Slower => "slower",
            MicroVerdict::WithinNoise => "within noise",
            MicroVerdict::NotComparable(_) => "not comparable",
        };
        *counts.entry(key).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!(
        "{} benchmarks in both: {}",
        m.rows.len(),
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    )
}

/// The micro-benchmark table of compare.md.
pub fn micro_markdown(m: &MicroComparison) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "\n## Micro-benchmarks\n");
    if !m.rows.is_empty() {
        let _ = writeln!(
            md,
            "| benchmark | A mean (95% CI) | B mean (95% CI) | B/A time | B/A throughput | verdict |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---|");
        for r in &m.rows {
            let (time, throughput) = micro_ratios(r);
            let verdict = match r.verdict {
                MicroVerdict::Slower => "**slower**".to_string(),
                ref v => v.text(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {time} | {throughput} | {} |",
                r.id.replace('|', "\\|"),
                micro_cell(&r.a),
                micro_cell(&r.b),
                verdict.replace('|', "\\|")
            );
        }
    }
    for line in only_lines(m) {
        let _ = writeln!(md, "\n{line}");
    }
    let _ = writeln!(
        md,
        "\n{}. B/A time below 1: B is faster; B/A throughput above 1: B moves more per second.",
        micro_tally(m)
    );
    md
}

pub fn render_html(c: &Comparison) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Compare {} vs {}</title><style>{}</style></head><body>\n",
        esc(&c.a_name),
        esc(&c.b_name),
        crate::render::html::STYLE
    );
    if emulation_mismatch(&c.a, &c.b).is_some() || c.a.environment.emulated {
        let _ = writeln!(
            h,
            "<div class=\"banner emulated\" id=\"emulated\">EMULATED: at least one side ran under emulation; its speed is the emulator's, not the architecture's.</div>"
        );
    }
    let _ = writeln!(
        h,
        "<h1>Compare: A <code>{}</code> vs B <code>{}</code></h1>",
        esc(&c.a_name),
        esc(&c.b_name)
    );
    let _ = writeln!(
        h,
        "<dl class=\"env\"><dt>A</dt><dd>{} — {}</dd><dt>B</dt><dd>{} — {}</dd></dl>",
        esc(&c.a.run_id),
        esc(&describe(&c.a)),
        esc(&c.b.run_id),
        esc(&describe(&c.b))
    );
    for n in &c.notes {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(n));
    }
    if let Some(m) = &c.micro {
        h.push_str("<h2>Micro-benchmarks</h2>\n");
        if !m.rows.is_empty() {
            h.push_str("<table class=\"compare micro\"><tr><th class=\"text\">benchmark</th><th>A mean (95% CI)</th><th>B mean (95% CI)</th><th>B/A time</th><th>B/A throughput</th><th class=\"text\">verdict</th></tr>\n");
            for r in &m.rows {
                let (time, throughput) = micro_ratios(r);
                let _ = writeln!(
                    h,
                    "<tr class=\"micro-row\"><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{time}</td><td>{throughput}</td><td class=\"text {}\">{}</td></tr>",
                    esc(&r.id),
                    esc(&micro_cell(&r.a)),
                    esc(&micro_cell(&r.b)),
                    r.verdict.class(),
                    esc(&r.verdict.text())
                );
            }
            h.push_str("</table>\n");
        }
        for line in only_lines(m) {
            let _ = writeln!(h, "<p>{}</p>", esc(&line));
        }
        let _ = writeln!(h, "<p>{}</p>", esc(&micro_tally(m)));
        if c.rows.is_empty() {
            h.push_str("</body></html>\n");
            return h;
        }
        h.push_str("<h2>Load</h2>\n");
    }
    h.push_str("<table class=\"compare\"><tr><th class=\"text\">workload</th><th class=\"text\">metric</th><th>A</th><th>B</th><th>B/A</th><th class=\"text\">verdict</th><th class=\"text\">noise rule</th></tr>\n");
    for r in &c.rows {
        let _ = writeln!(
            h,
            "<tr class=\"row\"><td class=\"text\">{}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text {}\">{}</td><td class=\"text\">{}</td></tr>",
            esc(&r.workload),
            esc(r.metric.label),
            esc(&cell(&r.a, r.n_a, r.metric.format)),
            esc(&cell(&r.b, r.n_b, r.metric.format)),
            esc(&ratio_text(r)),
            r.verdict.class(),
            esc(&r.verdict.text()),
            esc(&rule_text(r))
        );
    }
    h.push_str("</table>\n");
    let _ = writeln!(h, "<p>{}</p>", esc(&tally(c)));
    h.push_str("</body></html>\n");
    h
}
