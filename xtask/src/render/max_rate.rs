//! The maximum-sustainable-rate section in every rendering: a terminal line
//! per step, Markdown and HTML tables, and the latency-versus-offered-rate
//! chart of `--sweep` (one set of lines per run when comparing).

use std::fmt::Write as _;

use crate::model::baseline::Baseline;
use crate::model::max_rate::{MaxRateSection, SearchStep, StepOutcome, SweepPoint};
use crate::model::report::WorkloadReport;
use crate::model::units::{cpu_micros, micros, thousands};
use crate::render::chart::{line_chart, Series};
use crate::render::escape::esc;

fn us(v: Option<u64>) -> String {
    v.map(|v| micros(v as f64)).unwrap_or_else(|| "–".into())
}

fn per_msg(o: &StepOutcome) -> String {
    o.cpu_us_per_message
        .map(|v| format!("{}/msg", cpu_micros(v)))
        .unwrap_or_else(|| "–".into())
}

/// `step 3: 4,000 msg/s → delivered 3,998 msg/s, p99 1.20 ms: sustained`.
pub fn step_line(n: usize, s: &SearchStep) -> String {
    format!(
        "step {n}: {} msg/s → delivered {} msg/s, p99 {}: {}",
        thousands(s.rate_per_sec),
        thousands(s.outcome.delivered_per_sec.round() as u64),
        us(s.outcome.p99_us),
        s.verdict.text()
    )
}

/// The terminal's summary of a search.
pub fn summary_line(m: &MaxRateSection) -> String {
    match m.found_per_sec {
        Some(f) => format!(
            "max sustainable {} msg/s ({}, {} steps; {}); service run at {} msg/s",
            thousands(f),
            m.found_by,
            m.steps.len(),
            m.stopped,
            thousands(m.service_rate_per_sec.unwrap_or(0))
        ),
        None => format!(
            "no sustainable rate ({} steps; {})",
            m.steps.len(),
            m.stopped
        ),
    }
}

/// Service-run percentiles: the workload's median repeat summary.
fn service_latency(w: &WorkloadReport) -> (String, String, String) {
    let lat = w
        .repeats
        .iter()
        .filter_map(|r| r.result.as_ref()?.latency.end_to_end.as_ref())
        .next();
    match lat {
        Some(l) => (
            micros(l.p50_us as f64),
            micros(l.p99_us as f64),
            micros(l.p999_us as f64),
        ),
        None => ("–".into(), "–".into(), "–".into()),
    }
}

fn service_cpu(w: &WorkloadReport) -> String {
    w.repeats
        .iter()
        .find_map(|r| r.broker_cpu_us_per_message)
        .map(|v| format!("{}/msg", cpu_micros(v)))
        .unwrap_or_else(|| "–".into())
}

/// `## Maximum sustainable rate` with one row per searched workload and a
/// step table each; empty when no workload searched.
pub fn markdown(workloads: &[WorkloadReport]) -> String {
    let with: Vec<(&WorkloadReport, &MaxRateSection)> = workloads
        .iter()
        .filter_map(|w| w.max_rate.as_ref().map(|m| (w, m)))
        .collect();
    if with.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Maximum sustainable rate\n\n");
    s.push_str("| workload | max sustainable | service rate (50 %) | service p50 | p99 | p99.9 | CPU/msg | steps |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (w, m) in &with {
        let (p50, p99, p999) = service_latency(w);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {p50} | {p99} | {p999} | {} | {} |",
            w.name,
            m.found_per_sec
                .map(|f| format!("{} msg/s", thousands(f)))
                .unwrap_or_else(|| "none".into()),
            m.service_rate_per_sec
                .map(|f| format!("{} msg/s", thousands(f)))
                .unwrap_or_else(|| "–".into()),
            service_cpu(w),
            m.steps.len()
        );
    }
    for (w, m) in &with {
        let _ = writeln!(
            s,
            "\n### {}: search ({}; p99 < {} ms, delivered ≥ {} % of offered)\n",
            w.name,
            m.stopped,
            m.search.p99_below_ms,
            m.search.delivered_fraction * 100.0
        );
        s.push_str("| step | offered msg/s | delivered msg/s | p50 | p99 | p99.9 | lost | CPU/msg | verdict |\n|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for (i, st) in m.steps.iter().enumerate() {
            let o = &st.outcome;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                i + 1,
                thousands(st.rate_per_sec),
                thousands(o.delivered_per_sec.round() as u64),
                us(o.p50_us),
                us(o.p99_us),
                us(o.p999_us),
                thousands(o.lost),
                per_msg(o),
                st.verdict.text()
            );
        }
        if !m.sweep.is_empty() {
            let _ = writeln!(s, "\n### {}: sweep\n", w.name);
            s.push_str("| fraction | offered msg/s | delivered msg/s | p50 | p99 | p99.9 | lost |\n|---:|---:|---:|---:|---:|---:|---:|\n");
            for p in &m.sweep {
                let o = &p.outcome;
                let _ = writeln!(
                    s,
                    "| {:.2} | {} | {} | {} | {} | {} | {} |",
                    p.fraction,
                    thousands(p.rate_per_sec),
                    thousands(o.delivered_per_sec.round() as u64),
                    us(o.p50_us),
                    us(o.p99_us),
                    us(o.p999_us),
                    thousands(o.lost)
                );
            }
        }
    }
    s
}

/// p50, p99 and p99.9 (ms) against offered msg/s, one series per percentile,
/// each label prefixed with `run` when given; points with no latency are left out.
pub fn sweep_series(run: Option<&str>, points: &[SweepPoint]) -> Vec<Series> {
    let mut sorted: Vec<&SweepPoint> = points.iter().collect();
    sorted.sort_by_key(|p| p.rate_per_sec);
    let series = |name: &str, f: fn(&StepOutcome) -> Option<u64>| -> Series {
        let label = match run {
            Some(r) => format!("{r} {name}"),
            None => name.to_string(),
        };
        let pts = sorted
            .iter()
            .filter_map(|p| f(&p.outcome).map(|v| (p.rate_per_sec as f64, v as f64 / 1_000.0)))
            .collect();
        (label, pts)
    };
    vec![
        series("p50", |o| o.p50_us),
        series("p99", |o| o.p99_us),
        series("p99.9", |o| o.p999_us),
    ]
}

/// The sweep chart as inline SVG.
pub fn sweep_chart(title: &str, series: &[Series]) -> Option<String> {
    line_chart(title, "offered rate (msg/s)", "latency (ms)", series)
}

/// The HTML section: summary table, step tables, sweep charts.
pub fn html(h: &mut String, workloads: &[WorkloadReport]) {
    let with: Vec<(&WorkloadReport, &MaxRateSection)> = workloads
        .iter()
        .filter_map(|w| w.max_rate.as_ref().map(|m| (w, m)))
        .collect();
    if with.is_empty() {
        return;
    }
    h.push_str("<section id=\"max-rate\"><h2>Maximum sustainable rate</h2>\n<table><tr><th class=\"text\">workload</th><th>max sustainable</th><th>service rate (50 %)</th><th>service p50</th><th>p99</th><th>p99.9</th><th>CPU/msg</th><th>steps</th></tr>\n");
    for (w, m) in &with {
        let (p50, p99, p999) = service_latency(w);
        let _ = writeln!(
            h,
            "<tr class=\"max-row\"><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{p50}</td><td>{p99}</td><td>{p999}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.name),
            m.found_per_sec.map(|f| format!("{} msg/s", thousands(f))).unwrap_or_else(|| "none".into()),
            m.service_rate_per_sec.map(|f| format!("{} msg/s", thousands(f))).unwrap_or_else(|| "–".into()),
            service_cpu(w),
            m.steps.len()
        );
    }
    h.push_str("</table>\n");
    for (w, m) in &with {
        let _ = writeln!(
            h,
            "<h3>{}: search</h3><p class=\"note\">{}; sustained = p99 &lt; {} ms and delivered ≥ {} % of offered.</p>",
            esc(&w.name),
            esc(&m.stopped),
            m.search.p99_below_ms,
            m.search.delivered_fraction * 100.0
        );
        h.push_str("<table><tr><th>step</th><th>offered msg/s</th><th>delivered msg/s</th><th>p50</th><th>p99</th><th>p99.9</th><th>lost</th><th>CPU/msg</th><th class=\"text\">verdict</th></tr>\n");
        for (i, st) in m.steps.iter().enumerate() {
            let o = &st.outcome;
            let _ = writeln!(
                h,
                "<tr class=\"step-row\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td></tr>",
                i + 1,
                thousands(st.rate_per_sec),
                thousands(o.delivered_per_sec.round() as u64),
                us(o.p50_us),
                us(o.p99_us),
                us(o.p999_us),
                thousands(o.lost),
                per_msg(o),
                esc(&st.verdict.text())
            );
        }
        h.push_str("</table>\n");
        if let Some(svg) = sweep_chart(
            &format!("{}: latency vs offered rate", w.name),
            &sweep_series(None, &m.sweep),
        )
        .filter(|_| !m.sweep.is_empty())
        {
            let _ = writeln!(h, "<div class=\"charts sweep\">{svg}</div>");
        }
    }
    h.push_str("</section>\n");
}

/// The sweep charts of `compare.html`: run A's and run B's lines.
pub fn compare_section(h: &mut String, a: &Baseline, b: &Baseline) {
    let sweeps = |side: &Baseline| -> Vec<(String, Vec<SweepPoint>)> {
        side.workloads
            .iter()
            .map(|w| (w.name.clone(), w.sweep.clone()))
            .collect()
    };
    let (sa, sb) = (sweeps(a), sweeps(b));
    compare_html(h, &[("A", &sa), ("B", &sb)]);
}

/// `compare.html`: per workload swept in either run, one chart with each
/// run's p50/p99/p99.9 lines.
/// One compared run: its label and the sweep points per workload.
pub type SweepRun<'a> = (&'a str, &'a [(String, Vec<SweepPoint>)]);

pub fn compare_html(h: &mut String, runs: &[SweepRun<'_>]) {
    let mut names: Vec<&str> = Vec::new();
    for (_, sweeps) in runs {
        for (name, points) in sweeps.iter() {
            if !points.is_empty() && !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        return;
    }
    h.push_str("<section id=\"sweep\"><h2>Latency versus offered rate</h2>\n<div class=\"charts sweep\">\n");
    for name in names {
        let series: Vec<Series> = runs
            .iter()
            .flat_map(|(run, sweeps)| {
                sweeps
                    .iter()
                    .filter(|(n, _)| n == name)
                    .flat_map(|(_, pts)| sweep_series(Some(run), pts))
            })
            .collect();
        if let Some(svg) = sweep_chart(&format!("{name}: latency vs offered rate"), &series) {
            h.push_str(&svg);
            h.push('\n');
        }
    }
    h.push_str("</div></section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_rate::SearchSpec;

    pub(crate) fn point(fraction: f64, rate: u64, p50: u64) -> SweepPoint {
        SweepPoint {
            fraction,
            rate_per_sec: rate,
            outcome: StepOutcome {
                offered_per_sec: rate as f64,
                delivered_per_sec: rate as f64,
                p50_us: Some(p50),
                p99_us: Some(p50 * 4),
                p999_us: Some(p50 * 10),
                ..StepOutcome::default()
            },
            result_file: String::new(),
        }
    }

    fn points() -> Vec<SweepPoint> {
        // Out of order on purpose: the chart sorts by rate.
        vec![
            point(1.0, 100_000, 9_000),
            point(0.1, 10_000, 500),
            point(0.5, 50_000, 1_000),
        ]
    }

    #[test]
    fn series_have_one_point_per_fraction_sorted_by_rate() {
        let s = sweep_series(Some("A"), &points());
        assert_eq!(
            s.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(),
            ["A p50", "A p99", "A p99.9"]
        );
        for (_, pts) in &s {
            assert_eq!(pts.len(), 3);
            assert_eq!(
                pts.iter().map(|p| p.0).collect::<Vec<_>>(),
                [10_000.0, 50_000.0, 100_000.0]
            );
        }
        assert_eq!(s[2].1[2].1, 90.0, "p99.9 of the top point in ms");
    }

    /// The x coordinates of the polylines plotters draws, per line.
    fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split("<polyline")
            .skip(1)
            .filter_map(|p| {
                let pts = p.split("points=\"").nth(1)?.split('"').next()?;
                Some(
                    pts.split_whitespace()
                        .filter_map(|xy| {
                            let (x, y) = xy.split_once(',')?;
                            Some((x.parse().ok()?, y.parse().ok()?))
                        })
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn svg_has_one_vertex_per_fraction_and_axes_from_the_data() {
        let svg = sweep_chart("t", &sweep_series(None, &points())).unwrap();
        let lines: Vec<_> = polylines(&svg)
            .into_iter()
            .filter(|l| l.len() == 3)
            .collect();
        assert_eq!(lines.len(), 3, "p50, p99 and p99.9 lines: {svg}");
        for l in &lines {
            assert!(
                l[0].0 < l[1].0 && l[1].0 < l[2].0,
                "x grows with rate: {l:?}"
            );
            // Rate 50k sits 4/9 of the way from 10k to 100k.
            let frac = (l[1].0 - l[0].0) / (l[2].0 - l[0].0);
            assert!(
                (frac - 4.0 / 9.0).abs() < 0.02,
                "x scaled from the data: {frac}"
            );
        }
        // The y axis reaches the largest value (90 ms p99.9): its top point
        // is near the top of the plot, above every other.
        let top = lines
            .iter()
            .flat_map(|l| l.iter().map(|p| p.1))
            .fold(f64::MAX, f64::min);
        assert!(top < 60.0, "highest point near the top margin: {top}");
        assert!(svg.contains("offered rate (msg/s)"));
    }

    #[test]
    fn compare_chart_has_lines_for_each_run() {
        let a = vec![("w".to_string(), points())];
        let b = vec![("w".to_string(), points()[..2].to_vec())];
        let mut h = String::new();
        compare_html(&mut h, &[("A", &a), ("B", &b)]);
        assert_eq!(h.matches("<svg").count(), 1);
        for label in ["A p50", "A p99.9", "B p50", "B p99"] {
            assert!(h.contains(label), "{label}");
        }
        let lines = polylines(&h);
        assert!(lines.iter().filter(|l| l.len() == 3).count() >= 3);
        assert!(lines.iter().filter(|l| l.len() == 2).count() >= 3);
        let mut none = String::new();
        compare_html(&mut none, &[("A", &[])]);
        assert!(none.is_empty());
    }

    #[test]
    fn baseline_and_compare_carry_the_found_rate_and_the_sweep() {
        use crate::model::report::test_support as t;
        let side = |found: u64, sweep: Vec<SweepPoint>| {
            let w = t::workload("m", "fan_in");
            let res = t::result(&w, 5_000.0, 2_000);
            let r = t::repeat(1, Some(res), 1_000_000, 10.0);
            let mut wr = t::workload_report(w, vec![r], crate::model::report::Status::Ok);
            wr.max_rate = Some(MaxRateSection {
                found_per_sec: Some(found),
                found_by: "search".into(),
                stopped: "test".into(),
                service_rate_per_sec: Some(found / 2),
                search: SearchSpec::default(),
                steps: Vec::new(),
                sweep,
            });
            Baseline::of(&t::report(vec![wr]), "test".into())
        };
        let (a, b) = (
            side(100_000, points()),
            side(60_000, points()[..2].to_vec()),
        );
        assert_eq!(
            a.workloads[0].metrics["max_sustainable_per_sec"],
            [100_000.0]
        );
        assert_eq!(a.workloads[0].sweep.len(), 3);
        let c = crate::analysis::compare::compare(a, b, "A", "B");
        let row = c
            .rows
            .iter()
            .find(|r| r.metric.key == "max_sustainable_per_sec")
            .expect("a max sustainable row");
        assert_eq!(row.verdict.class(), "worse", "{:?}", row.verdict);
        let mut html = String::new();
        compare_section(&mut html, &c.a, &c.b);
        assert!(html.contains("id=\"sweep\"") && html.contains("B p99.9"));
    }

    #[test]
    fn tables_list_steps_and_service_figures() {
        let w = crate::model::report::test_support::workload("m", "fan_in");
        let res = crate::model::report::test_support::result(&w, 5_000.0, 2_000);
        let r = crate::model::report::test_support::repeat(1, Some(res), 1_000_000, 10.0);
        let mut wr = crate::model::report::test_support::workload_report(
            w,
            vec![r],
            crate::model::report::Status::Ok,
        );
        let steps = crate::analysis::max_rate::search(&SearchSpec::default(), |rate| StepOutcome {
            offered_per_sec: rate as f64,
            delivered_per_sec: (rate as f64).min(10_000.0),
            p99_us: Some(1_000),
            ..StepOutcome::default()
        });
        wr.max_rate = Some(MaxRateSection {
            found_per_sec: steps.found_per_sec,
            found_by: "search".into(),
            stopped: steps.stopped.clone(),
            service_rate_per_sec: steps.found_per_sec.map(|f| f / 2),
            search: SearchSpec::default(),
            steps: steps.steps.clone(),
            sweep: points(),
        });
        let md = markdown(std::slice::from_ref(&wr));
        assert!(md.contains("## Maximum sustainable rate"));
        let found = thousands(steps.found_per_sec.unwrap());
        assert!(md.contains(&format!("| m | {found} msg/s |")), "{md}");
        assert_eq!(
            md.matches("delivered too few").count(),
            steps
                .steps
                .iter()
                .filter(|s| !s.verdict.is_sustained())
                .count()
        );
        let mut h = String::new();
        html(&mut h, std::slice::from_ref(&wr));
        assert_eq!(h.matches("class=\"step-row\"").count(), steps.steps.len());
        assert_eq!(h.matches("<svg").count(), 1);
        assert!(markdown(&[]).is_empty());
    }
}
