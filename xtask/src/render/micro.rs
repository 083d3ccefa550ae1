//! Micro-benchmark results as text: durations, throughput, changes, and the
//! Markdown section of report.md.

use std::fmt::Write as _;

use crate::model::micro::{Change, MicroBenchmark, MicroSection, ThroughputUnit};

/// `850.0 ns`, `1.25 µs`, `3.40 ms`, `1.20 s`.
pub fn duration_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A rate in human units: `512.0 MiB/s`, `1.25 GiB/s`, `3.20 Melem/s`.
pub fn rate(unit: ThroughputUnit, per_sec: f64) -> String {
    match unit {
        ThroughputUnit::Bytes => {
            const KIB: f64 = 1024.0;
            if per_sec >= KIB * KIB * KIB {
                format!("{:.2} GiB/s", per_sec / (KIB * KIB * KIB))
            } else if per_sec >= KIB * KIB {
                format!("{:.1} MiB/s", per_sec / (KIB * KIB))
            } else if per_sec >= KIB {
                format!("{:.1} KiB/s", per_sec / KIB)
            } else {
                format!("{per_sec:.0} B/s")
            }
        }
        // Decimal bytes read as the rest of the report writes them.
        ThroughputUnit::BytesDecimal => format!("{}/s", crate::model::units::bytes(per_sec)),
        ThroughputUnit::Elements | ThroughputUnit::Bits => {
            let what = if unit == ThroughputUnit::Bits {
                "bit"
            } else {
                "elem"
            };
            if per_sec >= 1e9 {
                format!("{:.2} G{what}/s", per_sec / 1e9)
            } else if per_sec >= 1e6 {
                format!("{:.2} M{what}/s", per_sec / 1e6)
            } else if per_sec >= 1e3 {
                format!("{:.1} K{what}/s", per_sec / 1e3)
            } else {
                format!("{per_sec:.0} {what}/s")
            }
        }
    }
}

/// `+3.1 % (+2.2 % – +4.0 %) regressed`.
pub fn change_text(c: &Change) -> String {
    format!(
        "{:+.1} % ({:+.1} % – {:+.1} %) {}",
        c.mean_change_pct,
        c.ci_lower_pct,
        c.ci_upper_pct,
        c.verdict.as_str()
    )
}

/// The benchmarks grouped by criterion group, groups in first-run order.
pub fn by_group(benchmarks: &[MicroBenchmark]) -> Vec<(&str, Vec<&MicroBenchmark>)> {
    let mut groups: Vec<(&str, Vec<&MicroBenchmark>)> = Vec::new();
    for b in benchmarks {
        match groups.iter_mut().find(|(g, _)| *g == b.group) {
            Some((_, v)) => v.push(b),
            None => groups.push((&b.group, vec![b])),
        }
    }
    groups
}

/// `95% CI`, from the benchmarks' confidence level.
pub fn ci_label(benchmarks: &[MicroBenchmark]) -> String {
    let level = benchmarks
        .first()
        .map(|b| b.confidence_level)
        .unwrap_or(0.95);
    format!("{:.0}% CI", level * 100.0)
}

/// The label under which a section says it was emulated.
pub fn emulated_note(m: &MicroSection) -> String {
    format!(
        "EMULATED: measured under {}: the numbers measure the emulator on this host, not the target CPU ({}); never compare them with native runs.",
        m.runner, m.target_triple
    )
}

/// One line on how the numbers were taken.
pub fn settings_text(m: &MicroSection) -> String {
    let s = &m.criterion;
    let secs = |v: Option<f64>, default: &str| {
        v.map(|v| format!("{v} s"))
            .unwrap_or_else(|| format!("{default} (criterion's default)"))
    };
    let mut text = format!(
        "Target `{}`, runner {}{}, cargo profile `{}`; criterion warm-up {}, measurement {}, noise threshold {:.0} %",
        m.target_triple,
        m.runner,
        if m.runner_command.is_empty() {
            String::new()
        } else {
            format!(" (`{}`)", m.runner_command.join(" "))
        },
        m.cargo_profile,
        secs(s.warm_up_secs, "3 s"),
        secs(s.measurement_secs, "5 s"),
        s.noise_threshold * 100.0
    );
    if let Some(f) = &s.filter {
        let _ = write!(text, ", filter `{f}`");
    }
    if let Some(b) = &s.baseline {
        let _ = write!(text, ", compared with baseline `{b}`");
    }
    if let Some(b) = &s.save_baseline {
        let _ = write!(text, ", saved as baseline `{b}`");
    }
    let _ = write!(
        text,
        ". Executables: {}. CPU features where they ran: {}.",
        if m.executables.is_empty() {
            "none".to_string()
        } else {
            m.executables.join(", ")
        },
        if m.cpu_features.is_empty() {
            "none detected".to_string()
        } else {
            m.cpu_features.join(", ")
        }
    );
    text
}

/// The `## Micro-benchmarks` section of report.md.
pub fn markdown_section(m: &MicroSection) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Micro-benchmarks\n");
    if m.emulated {
        let _ = writeln!(md, "> **{}**\n", emulated_note(m));
    }
    let _ = writeln!(md, "{}\n", settings_text(m));
    if m.benchmarks.is_empty() {
        let _ = writeln!(md, "No benchmark ran.");
        return md;
    }
    let with_change = m.benchmarks.iter().any(|b| b.change.is_some());
    let ci = ci_label(&m.benchmarks);
    for (group, benches) in by_group(&m.benchmarks) {
        let _ = writeln!(md, "### {group}\n");
        let change_head = m
            .criterion
            .baseline
            .as_deref()
            .filter(|_| with_change)
            .map(|b| format!(" change vs `{b}` |"))
            .unwrap_or_default();
        let _ = writeln!(md, "| benchmark | mean | {ci} | throughput |{change_head}");
        let _ = writeln!(
            md,
            "|---|---:|---:|---:|{}",
            if change_head.is_empty() { "" } else { "---|" }
        );
        for b in benches {
            let change = if change_head.is_empty() {
                String::new()
            } else {
                format!(
                    " {} |",
                    b.change
                        .as_ref()
                        .map(change_text)
                        .unwrap_or_else(|| "– (not in baseline)".into())
                )
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} – {} | {} |{change}",
                b.id.replace('|', "\\|"),
                duration_ns(b.mean_ns),
                duration_ns(b.ci_lower_ns),
                duration_ns(b.ci_upper_ns),
                b.throughput
                    .as_ref()
                    .map(|t| rate(t.unit, t.per_sec))
                    .unwrap_or_else(|| "–".into()),
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Mean time per iteration (the mean of criterion's per-iteration sample times, with its bootstrap {ci}; criterion's terminal line leads with the regression slope instead, kept in report.json as `slope_ns`). Throughput is the work per iteration the benchmark declares divided by the mean time."
    );
    md
}
