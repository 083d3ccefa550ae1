//! `compare.md` and `compare.html`: a comparison's rows, verdicts and tallies.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::analysis::compare::{
    emulation_mismatch, Comparison, MicroComparison, MicroRow, MicroVerdict, Row, Rule, Verdict,
};
use crate::model::baseline::describe;
use crate::model::micro::MicroBenchmark;
use crate::model::report::Spread;
use crate::render::escape::esc;

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
        "\nA and B show the median of the repeats (min – max). Higher is better for delivered msg/s and connections; lower for latency, memory, CPU and lost messages."
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
    crate::render::max_rate::compare_section(&mut h, &c.a, &c.b);
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::compare::*;
    use crate::model::baseline::Baseline;
    use crate::model::metric::{Direction, Metric, METRICS};
    use crate::model::micro::MicroSection;
    use crate::model::report::test_support::{repeat, report, result, workload, workload_report};
    use crate::model::report::Report;
    use crate::model::report::Status;

    fn m(key: &str) -> &'static Metric {
        METRICS.iter().find(|m| m.key == key).unwrap()
    }

    /// A run with one fan-in workload per (rate, p99) repeat.
    pub fn run_of(repeats: &[(f64, u64)]) -> Report {
        let w = workload("mqtt-fanin", "fan_in");
        let reps = repeats
            .iter()
            .enumerate()
            .map(|(i, &(rate, p99))| {
                repeat(i as u32 + 1, Some(result(&w, rate, p99)), 40_000_000, 50.0)
            })
            .collect();
        let mut r = report(vec![workload_report(w, reps, Status::Ok)]);
        r.repeat = repeats.len() as u32;
        r
    }

    fn row<'a>(c: &'a Comparison, key: &str) -> &'a Row {
        c.rows.iter().find(|r| r.metric.key == key).unwrap()
    }

    #[test]
    fn one_repeat_uses_the_default_band() {
        let t = m("received_per_sec");
        assert_eq!(
            judge(t, &[100.0], &[95.0]),
            (Rule::DefaultBand, Verdict::WithinNoise)
        );
        assert_eq!(
            judge(t, &[100.0], &[85.0]),
            (Rule::DefaultBand, Verdict::Worse)
        );
        assert_eq!(
            judge(t, &[100.0], &[120.0]),
            (Rule::DefaultBand, Verdict::Better)
        );
        let p99 = m("e2e_p99_us");
        assert_eq!(judge(p99, &[4_000.0], &[4_900.0]).1, Verdict::WithinNoise);
        assert_eq!(judge(p99, &[4_000.0], &[5_200.0]).1, Verdict::Worse);
        // Below the resolution floor even a large ratio is noise.
        assert_eq!(judge(p99, &[20.0], &[90.0]).1, Verdict::WithinNoise);
        let lost = m("lost");
        assert_eq!(judge(lost, &[0.0], &[0.0]).1, Verdict::WithinNoise);
        assert_eq!(judge(lost, &[0.0], &[3.0]).1, Verdict::Worse);
    }

    #[test]
    fn two_to_four_repeats_use_min_max_overlap() {
        let t = m("received_per_sec");
        // Medians 10 % apart, but the ranges overlap: noise.
        assert_eq!(
            judge(t, &[90.0, 100.0, 110.0], &[85.0, 90.0, 95.0]),
            (Rule::MinMax, Verdict::WithinNoise)
        );
        // Medians 3 % apart with tight, disjoint ranges: a real difference.
        assert_eq!(
            judge(t, &[100.0, 100.5, 101.0], &[97.0, 97.5, 98.0]),
            (Rule::MinMax, Verdict::Worse)
        );
    }

    #[test]
    fn five_repeats_bootstrap_the_median_ratio() {
        let t = m("received_per_sec");
        let a = [100.0, 102.0, 98.0, 101.0, 99.0];
        let (rule, v) = judge(t, &a, &[100.5, 99.5, 101.5, 98.5, 100.0]);
        assert!(matches!(rule, Rule::Bootstrap { low, high } if low < 1.0 && high > 1.0));
        assert_eq!(v, Verdict::WithinNoise);
        let (rule, v) = judge(t, &a, &[110.0, 112.0, 108.0, 111.0, 109.0]);
        assert!(
            matches!(rule, Rule::Bootstrap { low, .. } if low > 1.0),
            "{rule:?}"
        );
        assert_eq!(v, Verdict::Better);
        // Deterministic.
        assert_eq!(
            bootstrap_median_ratio(&a, &a, 500),
            bootstrap_median_ratio(&a, &a, 500)
        );
    }

    #[test]
    fn same_run_is_within_noise_and_slower_run_is_worse() {
        let a = Baseline::of(&run_of(&[(100_000.0, 4_000)]), String::new());
        let c = compare(a.clone(), a.clone(), "A", "B");
        assert!(
            c.rows.iter().all(|r| r.verdict == Verdict::WithinNoise),
            "{:?}",
            c.rows
        );
        assert!(c.notes.iter().any(|n| n.contains("default band")));
        let b = Baseline::of(&run_of(&[(70_000.0, 5_200)]), String::new());
        let c = compare(a, b, "A", "B");
        let t = row(&c, "received_per_sec");
        assert_eq!(t.verdict, Verdict::Worse);
        assert!((t.ratio.unwrap() - 0.7).abs() < 1e-9);
        assert_eq!(row(&c, "e2e_p99_us").verdict, Verdict::Worse);
        let md = render_markdown(&c);
        assert!(
            md.contains("| mqtt-fanin | delivered msg/s | 100,000/s | 70,000/s | 0.70 | **worse** | default band ±10 % (no repeats) |"),
            "{md}"
        );
    }

    #[test]
    fn the_html_page_carries_the_sweep_chart_of_max_rate_workloads() {
        use crate::model::max_rate::{StepOutcome, SweepPoint};
        let point = |fraction: f64, rate: u64| SweepPoint {
            fraction,
            rate_per_sec: rate,
            outcome: StepOutcome {
                offered_per_sec: rate as f64,
                delivered_per_sec: rate as f64,
                p50_us: Some(500),
                p99_us: Some(2_000),
                p999_us: Some(5_000),
                ..StepOutcome::default()
            },
            result_file: String::new(),
        };
        let mut a = Baseline::of(&run_of(&[(100_000.0, 4_000)]), String::new());
        a.workloads[0].sweep = vec![point(0.5, 50_000), point(1.0, 100_000)];
        let b = Baseline::of(&run_of(&[(100_000.0, 4_000)]), String::new());
        let html = render_html(&compare(a.clone(), b.clone(), "A", "B"));
        assert!(html.contains("id=\"sweep\"") && html.contains("A p99.9"));
        let html = render_html(&compare(b.clone(), b, "A", "B"));
        assert!(!html.contains("id=\"sweep\""));
    }

    #[test]
    fn native_against_emulated_is_labelled_not_judged() {
        let mut native = run_of(&[(100_000.0, 4_000)]);
        native.workloads[0].workload.qos = 1;
        let a = Baseline::of(&native, String::new());
        let mut q = run_of(&[(5_000.0, 90_000)]);
        q.workloads[0].workload.qos = 1;
        // B lost 3 acknowledged messages: a count that differs, and is judged.
        q.workloads[0].repeats[0]
            .result
            .as_mut()
            .unwrap()
            .counts
            .lost = 3;
        q.environment.emulated = true;
        q.environment.runner = "qemu-aarch64".into();
        q.environment.target_triple = "aarch64-unknown-linux-gnu".into();
        let c = compare(a, Baseline::of(&q, String::new()), "native", "qemu");
        let t = row(&c, "received_per_sec");
        assert_eq!(
            t.verdict,
            Verdict::NotComparable("B emulated by qemu-aarch64".into())
        );
        // Functional counts are still judged.
        assert_eq!(row(&c, "lost").verdict, Verdict::Worse);
        assert!(c
            .notes
            .iter()
            .any(|n| n.contains("not an architecture comparison")));
        assert!(
            !c.rows
                .iter()
                .any(|r| r.metric.performance
                    && matches!(r.verdict, Verdict::Better | Verdict::Worse))
        );
        let md = render_markdown(&c);
        assert!(
            md.contains("not comparable (B emulated by qemu-aarch64)"),
            "{md}"
        );
        let html = render_html(&c);
        assert!(html.contains("class=\"banner emulated\""));
        assert!(html.contains("class=\"text not-comparable\""));
        assert_eq!(html.matches("<tr class=\"row\">").count(), c.rows.len());
    }

    #[test]
    fn native_architectures_are_compared_and_said_so() {
        let a = Baseline::of(&run_of(&[(100_000.0, 4_000)]), String::new());
        let mut arm = run_of(&[(130_000.0, 3_000)]);
        arm.environment.target_triple = "aarch64-unknown-linux-gnu".into();
        arm.environment.cpu_model = "Neoverse-N1".into();
        let c = compare(a, Baseline::of(&arm, String::new()), "x86", "arm");
        assert_eq!(row(&c, "received_per_sec").verdict, Verdict::Better);
        assert!(c.notes.iter().any(|n| n.starts_with("Architecture:")));
    }

    #[test]
    fn a_real_run_against_a_rerun_within_noise_is_within_noise_everywhere() {
        let text = include_str!("../../tests/fixtures/report-quick-x86_64.json");
        let r = Report::from_json(text).unwrap();
        let a = Baseline::of(&r, String::new());
        // B: every speed and resource number 5 % worse (inside every default
        // band), the functional counts as they were. Not identical data: a
        // judge that called any difference a change would fail here.
        let scaled = |factor_worse: f64| {
            let mut b = a.clone();
            for w in &mut b.workloads {
                for (key, values) in w.metrics.iter_mut() {
                    let metric = m(key);
                    if !metric.performance {
                        continue;
                    }
                    for v in values.iter_mut() {
                        *v = match metric.direction {
                            Direction::HigherIsBetter => *v / factor_worse,
                            Direction::LowerIsBetter => *v * factor_worse,
                        };
                    }
                }
            }
            b
        };
        let c = compare(a.clone(), scaled(1.05), "A", "B");
        assert!(c.rows.len() >= 5 * 4, "{}", c.rows.len());
        assert!(
            c.rows.iter().any(|r| r.ratio.is_some_and(|x| x != 1.0)),
            "B differs from A"
        );
        assert!(
            c.rows.iter().all(|r| r.verdict == Verdict::WithinNoise),
            "{:?}",
            c.rows
                .iter()
                .filter(|r| r.verdict != Verdict::WithinNoise)
                .collect::<Vec<_>>()
        );
        // Twice as slow: every throughput row is worse.
        let c = compare(a.clone(), scaled(2.0), "A", "B");
        let throughput: Vec<&Row> = c
            .rows
            .iter()
            .filter(|r| r.metric.key == "received_per_sec")
            .collect();
        assert!(!throughput.is_empty());
        assert!(throughput.iter().all(|r| r.verdict == Verdict::Worse));
    }

    #[test]
    fn missing_workloads_are_rows_without_verdicts() {
        let a = Baseline::of(&run_of(&[(100_000.0, 4_000)]), String::new());
        let mut b = a.clone();
        b.workloads[0].name = "other".into();
        let c = compare(a, b, "A", "B");
        assert!(c.rows.iter().any(
            |r| r.workload == "mqtt-fanin" && r.verdict == Verdict::Missing("not in B".into())
        ));
        assert!(c
            .rows
            .iter()
            .any(|r| r.workload == "other" && r.verdict == Verdict::Missing("not in A".into())));
    }

    /// A micro-only run around `section`, as `compare` loads it.
    fn micro_side(section: MicroSection) -> Baseline {
        let mut env = report(Vec::new()).environment;
        env.emulated = section.emulated;
        env.runner = section.runner.clone();
        env.target_triple = section.target_triple.clone();
        let r = crate::model::report::micro_report(
            format!("run-{}", section.target_triple),
            env,
            section,
            "2025-01-01T00:00:00Z".into(),
            "2025-01-01T00:01:00Z".into(),
        );
        Baseline::of(&r, String::new())
    }

    #[test]
    fn micro_sections_compare_by_ci_overlap_and_noise() {
        let a = crate::infra::criterion::test_support::section(false);
        let mut b = a.clone();
        // publish_1KiB: 20 % faster, CIs apart → faster.
        let p = &mut b.benchmarks[0];
        assert_eq!(p.id, "mqtt_decode/publish_1KiB");
        (p.mean_ns, p.ci_lower_ns, p.ci_upper_ns) = (840.0, 830.0, 850.0);
        p.throughput.as_mut().unwrap().per_sec *= 1.25;
        // exact: 3 % slower but CIs overlap → within noise.
        let e = &mut b.benchmarks[1];
        e.mean_ns *= 1.03;
        e.id = "topic_match/exact".into();
        let mut only_b = e.clone();
        only_b.id = "topic_match/wildcard".into();
        b.benchmarks.push(only_b);

        let c = compare(micro_side(a.clone()), micro_side(b.clone()), "A", "B");
        assert!(c.rows.is_empty(), "no load rows from micro runs");
        let m = c.micro.as_ref().unwrap();
        assert_eq!(m.rows.len(), 2);
        assert_eq!(m.rows[0].verdict, MicroVerdict::Faster);
        assert!((m.rows[0].time_ratio - 0.8).abs() < 1e-9);
        assert!((m.rows[0].throughput_ratio.unwrap() - 1.25).abs() < 1e-9);
        assert_eq!(m.rows[1].verdict, MicroVerdict::WithinNoise);
        assert_eq!(m.only_b, ["topic_match/wildcard"]);
        assert!(m.only_a.is_empty());
        assert!(
            !c.notes.iter().any(|n| n.contains("repeats")),
            "{:?}",
            c.notes
        );

        // Swapped: B is the slow one; CIs apart but under 2 % apart is noise.
        let c2 = compare(micro_side(b.clone()), micro_side(a.clone()), "B", "A");
        let m2 = c2.micro.unwrap();
        assert_eq!(m2.rows[0].verdict, MicroVerdict::Slower);
        assert_eq!(m2.only_a, ["topic_match/wildcard"]);
        let mut near = a.benchmarks[0].clone();
        (near.mean_ns, near.ci_lower_ns, near.ci_upper_ns) = (1070.0, 1069.0, 1071.0);
        let mut base = a.benchmarks[0].clone();
        (base.mean_ns, base.ci_lower_ns, base.ci_upper_ns) = (1050.0, 1049.0, 1051.0);
        assert_eq!(micro_verdict(&base, &near), MicroVerdict::WithinNoise);

        let md = render_markdown(&c);
        assert!(md.contains("## Micro-benchmarks"), "{md}");
        assert!(
            md.contains("| mqtt_decode/publish_1KiB | 1.05 µs (1.02 µs – 1.08 µs) | 840.0 ns (830.0 ns – 850.0 ns) | 0.800 | 1.250 | faster |"),
            "{md}"
        );
        assert!(md.contains("Only in B: topic_match/wildcard"), "{md}");
        assert!(
            !md.contains("| workload | metric |"),
            "no empty load table: {md}"
        );
        let html = render_html(&c);
        assert_eq!(html.matches("<tr class=\"micro-row\">").count(), 2);
        assert!(!html.contains("<th class=\"text\">workload</th>"));
    }

    #[test]
    fn micro_rows_with_changed_work_or_settings_are_flagged() {
        let mut a = crate::infra::criterion::test_support::section(false);
        (a.criterion.warm_up_secs, a.criterion.measurement_secs) = (None, None);
        let mut b = a.clone();
        // The benchmark now decodes a bigger packet: same id, other work.
        b.benchmarks[0].throughput.as_mut().unwrap().per_iteration += 1;
        b.benchmarks[0].mean_ns *= 0.5;
        b.criterion.warm_up_secs = Some(0.3);
        b.criterion.measurement_secs = Some(1.0);
        let c = compare(micro_side(a), micro_side(b), "A", "B");
        let m = c.micro.as_ref().unwrap();
        assert!(
            matches!(&m.rows[0].verdict, MicroVerdict::NotComparable(why) if why.starts_with("work per iteration changed")),
            "{:?}",
            m.rows[0].verdict
        );
        assert!(
            c.notes.iter().any(|n| n.contains(
                "A: warm-up 3 s (default), measurement 5 s (default); B: warm-up 0.3 s, measurement 1 s"
            )),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn micro_native_vs_emulated_gets_no_verdict() {
        let native = micro_side(crate::infra::criterion::test_support::section(false));
        let emulated = micro_side(crate::infra::criterion::test_support::section(true));
        let c = compare(native, emulated, "host", "aarch64");
        let m = c.micro.as_ref().unwrap();
        assert!(
            m.rows
                .iter()
                .all(|r| r.verdict
                    == MicroVerdict::NotComparable("B emulated by qemu-aarch64".into()))
        );
        assert!(c.notes.iter().any(|n| n.starts_with(
            "Emulation: B emulated by qemu-aarch64. Under emulation micro-benchmark times"
        )));
        let md = render_markdown(&c);
        assert!(
            md.contains("not comparable (B emulated by qemu-aarch64)"),
            "{md}"
        );
        assert!(render_html(&c).contains("id=\"emulated\""));
    }
}
