//! `report.html`: the bench report as one self-contained page (inline CSS and
//! SVG charts drawn with plotters, no script, nothing fetched): per workload
//! a latency percentile curve, throughput, broker memory and CPU over time;
//! a summary table and the gate verdicts, coloured.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::model::gate::GateResult;
use crate::model::gate::VerdictKind;
use crate::model::micro::ChangeVerdict;
use crate::model::micro::MicroBenchmark;
use crate::model::micro::MicroSection;
use crate::model::micro::ThroughputUnit;
use crate::model::report::WorkloadReport;
use crate::model::report::{RepeatReport, Report};
use crate::model::units::bytes;
use crate::model::units::micros;
use crate::model::units::percent;
use crate::model::units::rate;
use crate::model::units::thousands;
use crate::render::chart::{
    color, finish, latency_chart, line_chart, percentile_curve, short_number, Series, CHART_SIZE,
};
use crate::render::environment::{environment_rows, html_value};
use crate::render::escape::esc;
use loadgen::LoadResult;

/// Writes `report.html` into `dir`; returns its path.
pub fn write(dir: &Path, report: &Report) -> Result<PathBuf> {
    let file = dir.join("report.html");
    std::fs::write(&file, render(report))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(file)
}

/// The page's stylesheet, shared with `compare.html`.
pub const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
.banner { padding: 0.8em 1em; margin: 1em 0; border-radius: 4px; font-weight: 600; }
.banner.emulated { background: #fff3cd; border: 2px solid #e0a800; color: #6b4e00; }
.pass, .better { background: #d4edda; color: #155724; }
.fail, .worse { background: #f8d7da; color: #721c24; font-weight: 600; }
.not-measured, .within-noise { background: #eceff1; color: #37474f; }
.info, .not-comparable { background: #fff3cd; color: #6b4e00; }
.missing { background: #eceff1; color: #777; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
.charts svg { border: 1px solid #ddd; }
dl.env { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.env dt { font-weight: 600; } dl.env dd { margin: 0; }
.note { color: #555; font-size: 0.9em; }
"#;

pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let env = &report.environment;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Bench report {}</title><style>{STYLE}</style></head><body>\n",
        esc(&report.run_id)
    );
    let load = report.has_load();
    if env.emulated && !load {
        let _ = writeln!(
            h,
            "<div class=\"banner emulated\" id=\"emulated\">EMULATED: the benchmarks ran under emulation ({}). \
The numbers measure the emulator on this host, not {}'s CPU; never compare them with native runs.</div>",
            esc(&env.runner),
            esc(&env.target_triple)
        );
    } else if env.emulated {
        let _ = writeln!(
            h,
            "<div class=\"banner emulated\" id=\"emulated\">EMULATED: the broker ran under emulation ({}). \
These numbers say whether it works, not how fast {} is; never compare them with native runs.</div>",
            esc(&env.runner),
            esc(&env.target_triple)
        );
    }
    let _ = writeln!(
        h,
        "<h1>Bench report <code>{}</code></h1>",
        esc(&report.run_id)
    );
    h.push_str("<dl class=\"env\">\n");
    for row in environment_rows(report) {
        let _ = writeln!(
            h,
            "<dt>{}</dt><dd>{}</dd>",
            row.key,
            html_value(&row.value, esc)
        );
    }
    h.push_str("</dl>\n");
    if let Some(exit) = &report.broker_exit {
        let _ = writeln!(
            h,
            "<p class=\"fail\">The broker {} during the run.</p>",
            esc(exit)
        );
    }

    if !load {
        if let Some(micro) = &report.micro {
            micro_section(&mut h, micro);
        }
        h.push_str("</body></html>\n");
        return h;
    }
    summary_table(&mut h, report);
    if let Some(gate) = &report.gate {
        let _ = writeln!(h, "<h2>Gate: profile {}</h2>", esc(&gate.profile));
        h.push_str("<table class=\"gate\"><tr><th class=\"text\">threshold</th><th class=\"text\">limit</th><th class=\"text\">measured</th><th class=\"text\">verdict</th><th class=\"text\">from</th></tr>\n");
        for v in &gate.verdicts {
            let _ = writeln!(
                h,
                "<tr class=\"verdict\"><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text {}\">{}</td><td class=\"text\">{}</td></tr>",
                esc(&v.label()),
                esc(&v.limit),
                esc(&v.measured),
                verdict_class(v.verdict),
                esc(v.verdict.as_str()),
                esc(&v.from)
            );
        }
        h.push_str("</table>\n");
        let class = match gate.result {
            GateResult::Pass => "pass",
            GateResult::Fail => "fail",
            GateResult::Incomplete => "not-measured",
        };
        let _ = writeln!(
            h,
            "<p class=\"{class}\">{}</p>",
            esc(&crate::render::gate::verdict_line(gate))
        );
    }
    crate::render::max_rate::html(&mut h, &report.workloads);
    for w in &report.workloads {
        workload_section(&mut h, w);
    }
    h.push_str("<h2>How measured</h2>");
    for p in crate::render::how_measured::paragraphs(report) {
        let _ = write!(h, "<p class=\"note\">{}</p>", esc(&p));
    }
    h.push('\n');
    if let Some(micro) = &report.micro {
        micro_section(&mut h, micro);
    }
    h.push_str("</body></html>\n");
    h
}

/// The micro-benchmarks: per criterion group a table and a bar chart.
pub(crate) fn micro_section(h: &mut String, m: &MicroSection) {
    h.push_str("<h2 id=\"micro\">Micro-benchmarks</h2>\n");
    if m.emulated {
        let _ = writeln!(
            h,
            "<div class=\"banner emulated\">{}</div>",
            esc(&crate::render::micro::emulated_note(m))
        );
    }
    let _ = writeln!(
        h,
        "<p class=\"note\">{}</p>",
        esc(&crate::render::micro::settings_text(m))
    );
    let ci = crate::render::micro::ci_label(&m.benchmarks);
    let with_change = m.benchmarks.iter().any(|b| b.change.is_some());
    for (group, benches) in crate::render::micro::by_group(&m.benchmarks) {
        let _ = writeln!(h, "<h3>{}</h3>", esc(group));
        let _ = writeln!(
            h,
            "<table class=\"micro\"><tr><th class=\"text\">benchmark</th><th>mean</th><th>{ci}</th><th>throughput</th>{}</tr>",
            if with_change {
                "<th class=\"text\">change vs baseline</th>"
            } else {
                ""
            }
        );
        for b in &benches {
            let change = match (&b.change, with_change) {
                (_, false) => String::new(),
                (None, true) => "<td class=\"text missing\">not in baseline</td>".into(),
                (Some(c), true) => format!(
                    "<td class=\"text {}\">{}</td>",
                    match c.verdict {
                        ChangeVerdict::Improved => "better",
                        ChangeVerdict::Regressed => "worse",
                        ChangeVerdict::NoChange => "within-noise",
                    },
                    esc(&crate::render::micro::change_text(c))
                ),
            };
            let _ = writeln!(
                h,
                "<tr class=\"micro-row\"><td class=\"text\">{}</td><td>{}</td><td>{} – {}</td><td>{}</td>{change}</tr>",
                esc(&b.id),
                esc(&crate::render::micro::duration_ns(b.mean_ns)),
                esc(&crate::render::micro::duration_ns(b.ci_lower_ns)),
                esc(&crate::render::micro::duration_ns(b.ci_upper_ns)),
                esc(&b
                    .throughput
                    .as_ref()
                    .map(|t| crate::render::micro::rate(t.unit, t.per_sec))
                    .unwrap_or_else(|| "–".into()))
            );
        }
        h.push_str("</table>\n");
        if let Some(svg) = micro_chart(group, &benches) {
            let _ = writeln!(h, "<div class=\"charts\">{svg}</div>");
        }
    }
}

/// Horizontal bars per benchmark of a group: throughput when every
/// benchmark declares it in one unit, else mean time; whiskers span the CI.
pub(crate) fn micro_chart(group: &str, benches: &[&MicroBenchmark]) -> Option<String> {
    let unit = benches.first()?.throughput.as_ref().map(|t| t.unit);
    let by_throughput = unit.is_some()
        && benches
            .iter()
            .all(|b| b.throughput.as_ref().map(|t| t.unit) == unit);
    // (label, value, low, high) in display units.
    let (scale, what): (f64, String) = if let (true, Some(unit)) = (by_throughput, unit) {
        let max = benches
            .iter()
            .filter_map(|b| b.throughput.as_ref())
            .map(|t| t.per_sec_ci_upper)
            .fold(0.0, f64::max);
        let (scale, name) = match unit {
            ThroughputUnit::Bytes if max >= 1024.0 * 1024.0 * 1024.0 => {
                (1024.0 * 1024.0 * 1024.0, "GiB/s")
            }
            ThroughputUnit::Bytes => (1024.0 * 1024.0, "MiB/s"),
            ThroughputUnit::BytesDecimal if max >= 1e9 => (1e9, "GB/s"),
            ThroughputUnit::BytesDecimal => (1e6, "MB/s"),
            ThroughputUnit::Elements => (1e6, "Melem/s"),
            ThroughputUnit::Bits => (1e6, "Mbit/s"),
        };
        (scale, format!("throughput ({name}, higher is better)"))
    } else {
        (1e3, "mean time (µs, lower is better)".into())
    };
    let bars: Vec<(String, f64, f64, f64)> = benches
        .iter()
        .map(|b| {
            let label =
                b.id.strip_prefix(&format!("{}/", b.group))
                    .unwrap_or(&b.id)
                    .to_string();
            match (&b.throughput, by_throughput) {
                (Some(t), true) => (
                    label,
                    t.per_sec / scale,
                    t.per_sec_ci_lower / scale,
                    t.per_sec_ci_upper / scale,
                ),
                _ => (
                    label,
                    b.mean_ns / scale,
                    b.ci_lower_ns / scale,
                    b.ci_upper_ns / scale,
                ),
            }
        })
        .collect();
    let max = bars.iter().map(|b| b.3).fold(0.0, f64::max);
    if !(max.is_finite() && max > 0.0) {
        return None;
    }
    let n = bars.len();
    let height = 80 + 30 * n as u32;
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root =
            SVGBackend::with_string(&mut svg, (CHART_SIZE.0 + 160, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(group, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(150)
            .build_cartesian_2d(0.0..max * 1.1, 0.0..n as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(what.as_str())
            .x_label_formatter(&|x| short_number(*x))
            .draw()?;
        for (i, (label, value, low, high)) in bars.iter().enumerate() {
            // Top to bottom in table order.
            let y = (n - 1 - i) as f64;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.2), (*value, y + 0.8)],
                color(0).mix(0.7).filled(),
            )))?;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(*low, y + 0.5), (*high, y + 0.5)],
                BLACK.stroke_width(2),
            )))?;
            let (x, py) = chart.backend_coord(&(0.0, y + 0.5));
            root.draw(&Text::new(
                label.clone(),
                (x - 145, py - 6),
                ("sans-serif", 12),
            ))?;
        }
        finish(&root)
    })();
    drawn.ok().map(|_| svg)
}

pub(crate) fn verdict_class(v: VerdictKind) -> &'static str {
    match v {
        VerdictKind::Pass => "pass",
        VerdictKind::Fail => "fail",
        VerdictKind::NotMeasured => "not-measured",
        VerdictKind::Informational => "info",
    }
}

pub(crate) fn summary_table(h: &mut String, report: &Report) {
    h.push_str("<h2>Summary</h2>\n");
    if report.repeat > 1 {
        let _ = writeln!(
            h,
            "<p class=\"note\">Medians of {} repeats.</p>",
            report.repeat
        );
    }
    h.push_str("<table class=\"summary\"><tr><th class=\"text\">workload</th><th class=\"text\">scenario</th><th>received</th><th>e2e p50</th><th>e2e p99</th><th>connections</th><th>lost</th><th>broker peak RSS</th><th>broker CPU per msg</th><th>broker CPU</th><th>loadgen CPU</th><th class=\"text\">status</th></tr>\n");
    let med = |s: &Option<crate::model::report::Spread>, f: &dyn Fn(f64) -> String| {
        s.map(|s| f(s.median)).unwrap_or_else(|| "–".into())
    };
    for w in &report.workloads {
        let s = w.summary.clone().unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr class=\"workload\"><td class=\"text\"><a href=\"#w-{}\">{}</a></td><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text {}\">{}</td></tr>",
            esc(&w.name),
            esc(&w.name),
            w.workload.scenario.as_str(),
            med(&s.received_per_sec, &rate),
            med(&s.e2e_p50_us, &micros),
            med(&s.e2e_p99_us, &micros),
            med(&s.connections_established, &|n| thousands(n as u64)),
            med(&s.lost, &|n| thousands(n as u64)),
            med(&s.broker_peak_rss_bytes, &bytes),
            esc(&s.cpu_per_work_text()),
            med(&s.broker_avg_cpu_percent, &percent),
            med(&s.loadgen_cpu_percent, &percent),
            if w.status.is_ok() { "pass" } else { "fail" },
            esc(&w.status.describe()),
        );
    }
    h.push_str("</table>\n");
}

pub(crate) fn workload_section(h: &mut String, w: &WorkloadReport) {
    let _ = writeln!(
        h,
        "<section class=\"workload\" id=\"w-{}\"><h2>{}</h2>",
        esc(&w.name),
        esc(&w.name)
    );
    if !w.workload.description.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", esc(&w.workload.description));
    }
    let _ = writeln!(
        h,
        "<p>Status: <span class=\"{}\">{}</span></p>",
        if w.status.is_ok() { "pass" } else { "fail" },
        esc(&w.status.describe())
    );
    let with: Vec<_> = w
        .repeats
        .iter()
        .filter_map(|r| r.result.as_ref().map(|res| (r, res)))
        .collect();
    if with.is_empty() {
        h.push_str("<p class=\"note\">No result: no charts.</p></section>\n");
        return;
    }
    let multi = w.repeats.len() > 1;
    let [latency, throughput, memory, cpu] = chart_series(&with, multi);
    h.push_str("<div class=\"charts\">\n");
    for svg in [
        latency_chart(&format!("{}: latency by percentile", w.name), &latency),
        line_chart(
            &format!("{}: throughput", w.name),
            "seconds into the measured window",
            "msg/s",
            &throughput,
        ),
        line_chart(
            &format!("{}: broker memory", w.name),
            "seconds since loadgen started",
            "RSS (MB)",
            &memory,
        ),
        line_chart(
            &format!("{}: broker CPU", w.name),
            "seconds since loadgen started",
            "% of the machine",
            &cpu,
        ),
    ]
    .into_iter()
    .flatten()
    {
        h.push_str(&svg);
        h.push('\n');
    }
    h.push_str("</div>\n");

    latency_table(h, &with, multi);
    h.push_str("</table></section>\n");
}

/// The four charts' series, one line per repeat: latency percentiles,
/// throughput over time, broker memory and CPU.
fn chart_series(with: &[(&RepeatReport, &LoadResult)], multi: bool) -> [Vec<Series>; 4] {
    let name = |r: &RepeatReport, what: &str| repeat_name(multi, r, what);
    let mut latency = Vec::new();
    for (r, res) in with {
        for (what, l) in [
            ("end to end", &res.latency.end_to_end),
            ("publish delay", &res.latency.publish_delay),
            ("ack", &res.latency.ack),
        ] {
            if let Some(l) = l {
                latency.push((name(r, what), percentile_curve(l)));
            }
        }
    }
    let mut throughput = Vec::new();
    for (r, res) in with {
        let mut prev = 0.0;
        let mut received = Vec::new();
        let mut sent = Vec::new();
        // Steps: each tick's count is spread over the second it covers.
        for tick in &res.timeline {
            let dt = if tick.t > prev { tick.t - prev } else { 1.0 };
            for (series, n) in [(&mut received, tick.received), (&mut sent, tick.sent)] {
                series.push((tick.t - dt, n as f64 / dt));
                series.push((tick.t, n as f64 / dt));
            }
            prev = tick.t;
        }
        throughput.push((name(r, "delivered/s"), received));
        throughput.push((name(r, "sent/s"), sent));
    }
    let mut memory = Vec::new();
    let mut cpu = Vec::new();
    for (r, _) in with {
        let t0 = r.started;
        memory.push((
            name(r, "broker RSS"),
            r.broker_samples
                .iter()
                .map(|s| (s.t - t0, s.rss_bytes as f64 / 1e6))
                .collect(),
        ));
        cpu.push((
            name(r, "broker CPU"),
            r.broker_samples
                .iter()
                .map(|s| (s.t - t0, s.cpu_machine_percent))
                .collect(),
        ));
    }
    [latency, throughput, memory, cpu]
}

/// The latency percentiles of every repeat as a table.
fn latency_table(h: &mut String, with: &[(&RepeatReport, &LoadResult)], multi: bool) {
    let name = |r: &RepeatReport, what: &str| repeat_name(multi, r, what);
    h.push_str("<table class=\"latency\"><tr><th class=\"text\">latency</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th></tr>\n");
    for (label, l) in with.iter().flat_map(|(r, res)| {
        [
            (name(r, "end to end"), &res.latency.end_to_end),
            (name(r, "publish delay"), &res.latency.publish_delay),
            (name(r, "ack"), &res.latency.ack),
        ]
    }) {
        if let Some(l) = l {
            let _ = writeln!(
                h,
                "<tr><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&label),
                thousands(l.count),
                micros(l.p50_us as f64),
                micros(l.p90_us as f64),
                micros(l.p99_us as f64),
                micros(l.p999_us as f64),
                micros(l.p9999_us as f64),
                micros(l.max_us as f64)
            );
        }
    }
}

/// `what`, numbered by repeat when there are several.
fn repeat_name(multi: bool, r: &RepeatReport, what: &str) -> String {
    if multi {
        format!("{what} #{}", r.repeat)
    } else {
        what.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::sampler::Sample;
    use crate::model::report::test_support::{repeat, report, result, workload, workload_report};
    use crate::model::report::Status;
    use crate::render::chart::percentile_label;
    use loadgen::result::LatencySummary;
    use loadgen::result::Tick;
    use std::time::Duration;

    fn summary_of(values: impl IntoIterator<Item = u64>) -> LatencySummary {
        let mut h = loadgen::histogram::new_latency();
        for v in values {
            loadgen::histogram::record(&mut h, Duration::from_micros(v));
        }
        loadgen::histogram::summarize(&h).unwrap()
    }

    fn fixture(emulated: bool) -> Report {
        let fanin = workload("mqtt-fanin", "fan_in");
        let lat = workload("mqtt-lat", "latency");
        let storm = workload("mqtt-storm", "connection_storm");
        let mut res = result(&fanin, 50_000.0, 8_000);
        res.latency.end_to_end = Some(summary_of((1..=20_000).map(|i| 100 + i % 5_000)));
        res.timeline = (1..=3)
            .map(|t| Tick {
                t: f64::from(t),
                sent: 50_000,
                acked: 0,
                received: 49_000 + t as u64,
            })
            .collect();
        let mut r = repeat(1, Some(res), 42_000_000, 75.0);
        r.broker_samples = (0..12)
            .map(|i| Sample {
                t: i as f64 * 0.25,
                rss_bytes: 30_000_000 + i as u64 * 1_000_000,
                cpu_core_percent: 120.0,
                cpu_machine_percent: 60.0,
                cpu_secs: 0.3,
                interval_secs: 0.25,
            })
            .collect();
        let mut rep = report(vec![
            workload_report(fanin, vec![r], Status::Ok),
            workload_report(
                lat.clone(),
                vec![repeat(1, Some(result(&lat, 1_000.0, 1_500)), 1, 1.0)],
                Status::Failed {
                    reason: "p99 <too> high".into(),
                },
            ),
            workload_report(
                storm,
                Vec::new(),
                Status::NotRun {
                    reason: "broker exited".into(),
                },
            ),
        ]);
        rep.environment.emulated = emulated;
        if emulated {
            rep.environment.runner = "qemu-aarch64".into();
            rep.environment.target_triple = "aarch64-unknown-linux-gnu".into();
        }
        let profile = crate::model::gate::Profile::parse(
            Path::new("targets/profiles/t.toml"),
            "[throughput]\nabove_msg_per_sec = 400_000\nfrom = \"x\"\n[binary_size]\nbelow = \"1 MB\"\nfrom = \"y\"\n",
        )
        .unwrap();
        rep.gate = Some(crate::analysis::gate::evaluate(&rep, &profile));
        rep
    }

    #[test]
    fn page_has_charts_tables_and_coloured_verdicts() {
        let html = render(&fixture(false));
        assert!(html.starts_with("<!DOCTYPE html>"));
        // fan-in: latency, throughput, memory, CPU; the latency workload has
        // a latency curve (from its percentiles) but no timeline or samples;
        // the storm did not run.
        assert_eq!(html.matches("<svg").count(), 5, "{html}");
        assert_eq!(html.matches("</svg>").count(), 5);
        assert_eq!(html.matches("<tr class=\"workload\">").count(), 3);
        assert_eq!(html.matches("<tr class=\"verdict\">").count(), 2);
        assert!(html.contains("<td class=\"text fail\">FAIL</td>"), "{html}");
        assert!(html.contains("mqtt-fanin: latency by percentile"));
        assert!(html.contains("99.9%"), "percentile axis labels");
        assert!(html.contains("p99 &lt;too&gt; high"), "escaped");
        assert!(!html.contains("p99 <too>"));
        assert!(!html.contains("EMULATED"));
        assert!(html.contains("No result: no charts."));
        // Self-contained: nothing to fetch, no script.
        assert!(!html.contains("<script") && !html.contains("src="));
        assert!(!html.contains("href=\"http"));
        assert_eq!(
            html.matches("<table").count(),
            html.matches("</table>").count()
        );
    }

    #[test]
    fn emulated_page_carries_the_banner_and_informational_verdicts() {
        let html = render(&fixture(true));
        assert!(html.contains("<div class=\"banner emulated\" id=\"emulated\">EMULATED"));
        assert!(html.contains("qemu-aarch64"));
        assert!(
            html.contains("<td class=\"text info\">info (emulated)</td>"),
            "{html}"
        );
    }

    #[test]
    fn real_quick_suite_report_renders_every_chart() {
        let report = Report::from_json(include_str!(
            "../../tests/fixtures/report-quick-x86_64.json"
        ))
        .unwrap();
        let html = render(&report);
        // Four charts for each message workload; the storm sends no
        // messages, so it has no latency curve.
        assert_eq!(html.matches("<svg").count(), 4 * 4 + 3, "{html}");
        assert_eq!(
            html.matches("<tr class=\"workload\">").count(),
            report.workloads.len()
        );
        assert_eq!(
            html.matches("<tr class=\"verdict\">").count(),
            report.gate.as_ref().unwrap().verdicts.len()
        );
        for w in &report.workloads {
            assert!(
                html.contains(&format!("{}: latency by percentile", w.name))
                    || w.name.contains("storm")
            );
            assert!(html.contains(&format!("{}: broker memory", w.name)));
        }
        assert!(!html.contains("class=\"banner emulated\""));
    }

    #[test]
    fn micro_page_has_a_table_and_chart_per_group_and_no_load_sections() {
        let mut env = report(Vec::new()).environment;
        env.emulated = true;
        env.runner = "qemu-aarch64".into();
        let r = crate::model::report::micro_report(
            "run".into(),
            env,
            crate::infra::criterion::test_support::section(true),
            "2025-01-01T00:00:00Z".into(),
            "2025-01-01T00:01:00Z".into(),
        );
        let html = render(&r);
        assert!(
            html.contains(
                "id=\"emulated\">EMULATED: the benchmarks ran under emulation (qemu-aarch64)"
            ),
            "{html}"
        );
        assert!(html.contains("<h2 id=\"micro\">Micro-benchmarks</h2>"));
        assert!(html.contains("not the target CPU"));
        assert_eq!(html.matches("<tr class=\"micro-row\">").count(), 2);
        assert_eq!(html.matches("<svg").count(), 2, "one bar chart per group");
        assert!(
            html.contains("throughput (MiB/s, higher is better)"),
            "{html}"
        );
        assert!(html.contains("-6.0 % (-8.1 % – -4.2 %) improved"));
        for load_only in ["<h2>Summary</h2>", "How measured", "<dt>Broker</dt>"] {
            assert!(!html.contains(load_only), "{load_only}");
        }
    }

    #[test]
    fn percentile_curve_follows_the_histogram() {
        let l = summary_of(1..=10_000);
        let points = percentile_curve(&l);
        assert!(points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let at = |x: f64| {
            points
                .iter()
                .min_by(|a, b| (a.0 - x).abs().total_cmp(&(b.0 - x).abs()))
                .unwrap()
                .1
        };
        // x = 10 is p90 (9 ms), x = 100 is p99 (9.9 ms), within 5 %.
        assert!((at(10.0) - 9.0).abs() < 0.45, "{}", at(10.0));
        assert!((at(100.0) - 9.9).abs() < 0.5, "{}", at(100.0));
        assert_eq!(points.last().unwrap().1, l.max_us as f64 / 1000.0);
        assert_eq!(percentile_label(&1000.0), "99.9%");
        assert_eq!(percentile_label(&10.0), "90%");
    }
}
