//! `report.md`: header, environment, summary table, a section per workload,
//! the micro-benchmarks and the gate.

use std::fmt::Write as _;

use loadgen::{LoadResult, Outcome};

use crate::model::gate::VerdictKind;
use crate::model::report::Spread;
use crate::model::report::{RepeatReport, Report, WorkloadReport};
use crate::model::units::{bytes, cpu_micros, escape, micros, percent, plural, rate, thousands};
use crate::render::environment::environment_rows;

fn med(s: &Option<Spread>, f: impl Fn(f64) -> String) -> String {
    s.map(|s| f(s.median)).unwrap_or_else(|| "–".into())
}

fn spread(s: &Option<Spread>, f: impl Fn(f64) -> String) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.min == s.max => f(s.median),
        Some(s) => format!("{} ({} – {})", f(s.median), f(s.min), f(s.max)),
    }
}

// ---- Markdown ---------------------------------------------------------------

/// `report.md`: header, summary table, a section per workload, the gate.
pub fn render_markdown(report: &Report) -> String {
    let mut md = String::new();
    let env = &report.environment;
    let _ = writeln!(md, "# Bench report `{}`\n", report.run_id);
    let load = report.has_load();
    if env.emulated && !load {
        let _ = writeln!(
            md,
            "> **EMULATED**: the benchmarks ran under emulation ({}). The numbers measure the emulator on this host, not the target CPU; never compare them with native runs.\n",
            env.runner
        );
    } else if env.emulated {
        let _ = writeln!(
            md,
            "> **EMULATED**: the broker ran under emulation ({}). These numbers say whether it works, not how fast the target is; never compare them with native runs.{}\n",
            env.runner,
            if report.gate.as_ref().is_some_and(|g| {
                g.verdicts
                    .iter()
                    .any(|v| v.verdict == VerdictKind::Informational)
            }) {
                " The gate reports throughput, latency, CPU and memory as informational (not gated); binary size and functional results are gated."
            } else {
                ""
            }
        );
    }
    for row in environment_rows(report) {
        let _ = writeln!(md, "- **{}**: {}", row.key, row.value);
    }
    if !load {
        if let Some(micro) = &report.micro {
            let _ = writeln!(md, "\n{}", crate::render::micro::markdown_section(micro));
        }
        return md;
    }
    if let Some(exit) = &report.broker_exit {
        let _ = writeln!(md, "\n**The broker {exit} during the run.**");
    }

    let _ = writeln!(md, "\n## Summary\n");
    if report.repeat > 1 {
        let _ = writeln!(
            md,
            "Medians of {} repeats; the workload sections give min and max.\n",
            report.repeat
        );
    }
    let _ = writeln!(
        md,
        "| workload | scenario | received | e2e p50 | e2e p99 | connections | lost | broker peak RSS | broker CPU per msg | broker CPU | loadgen CPU | status |"
    );
    let _ = writeln!(
        md,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for w in &report.workloads {
        let s = w.summary.clone().unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            w.name,
            w.workload.scenario.as_str(),
            med(&s.received_per_sec, rate),
            med(&s.e2e_p50_us, micros),
            med(&s.e2e_p99_us, micros),
            med(&s.connections_established, |n| thousands(n as u64)),
            med(&s.lost, |n| thousands(n as u64)),
            med(&s.broker_peak_rss_bytes, bytes),
            s.cpu_per_work_text(),
            med(&s.broker_avg_cpu_percent, percent),
            med(&s.loadgen_cpu_percent, percent),
            escape(&w.status.describe()),
        );
    }
    let _ = writeln!(
        md,
        "\nBroker CPU per msg: broker CPU time (user + system) in the measured window over the messages delivered in it (per established connection for a storm); it is the figure to compare and gate, since it moves little with what else runs on the machine. The other CPU figures are % of the {} cores this run could use (affinity and cgroup quota; the machine has {}), averaged over the measured window.",
        env.usable(),
        env.cores
    );
    md.push_str(&crate::render::max_rate::markdown(&report.workloads));

    for w in &report.workloads {
        render_workload(&mut md, w);
    }
    if let Some(micro) = &report.micro {
        let _ = writeln!(md, "\n{}", crate::render::micro::markdown_section(micro));
    }

    if let Some(gate) = &report.gate {
        let _ = writeln!(md, "\n## Gate: profile `{}`\n", gate.profile);
        let _ = writeln!(md, "{}", crate::render::gate::markdown_table(gate));
        let _ = writeln!(md, "\n{}", crate::render::gate::verdict_line(gate));
    }

    let _ = writeln!(md, "\n## How measured\n");
    for p in crate::render::how_measured::paragraphs(report) {
        let _ = writeln!(md, "{p}\n");
    }
    md
}

fn render_workload(md: &mut String, w: &WorkloadReport) {
    workload_header(md, w);

    let with: Vec<(&RepeatReport, &LoadResult)> = w
        .repeats
        .iter()
        .filter_map(|r| r.result.as_ref().map(|res| (r, res)))
        .collect();
    if with.is_empty() {
        for r in &w.repeats {
            if let Some(f) = &r.failure {
                let _ = writeln!(
                    md,
                    "- repeat {}: {} (log `{}`)",
                    r.repeat,
                    escape(f),
                    r.log_file
                );
            }
        }
        return;
    }
    let multi = w.repeats.len() > 1;
    latency_table(md, &with, multi);
    counts_table(md, &with, multi);
    connections_table(md, &with, multi);
    summary_and_problems(md, w, &with, multi);
}

/// Title, description, what the workload does and its status.
fn workload_header(md: &mut String, w: &WorkloadReport) {
    let wl = &w.workload;
    let _ = writeln!(md, "\n## {}\n", w.name);
    if !wl.description.is_empty() {
        let _ = writeln!(md, "{}\n", wl.description);
    }
    let rate_text = match wl.total_rate() {
        0 => "unpaced".to_string(),
        r => format!("{} msg/s", thousands(r)),
    };
    let delivery = match wl.protocol {
        loadgen::Protocol::Kafka => {
            let k = wl.kafka_options();
            format!(
                "acks {}, linger {} ms, compression {}, {} ({} consumers)",
                wl.kafka_acks(),
                k.linger_ms,
                k.compression,
                plural(u64::from(k.partitions), "partition"),
                k.consumer
            )
        }
        _ => format!("QoS {}", wl.qos),
    };
    let _ = writeln!(
        md,
        "{} {}: {}, {}, {}, {}, {} B payload, {}; warm-up {} s, measured {} s, drain {} s. Effective workload: `{}` (from `{}`).\n",
        wl.protocol,
        wl.scenario.as_str(),
        plural(u64::from(wl.publishers), "publisher"),
        plural(u64::from(wl.subscribers), "subscriber"),
        plural(u64::from(wl.idle_connections), "idle connection"),
        delivery,
        wl.payload_bytes,
        rate_text,
        wl.warmup_secs,
        wl.duration_secs,
        wl.drain_secs,
        w.effective_file,
        w.source
    );
    let _ = writeln!(md, "Status: **{}**\n", escape(&w.status.describe()));
}

/// Latency percentiles per repeat.
fn latency_table(md: &mut String, with: &[(&RepeatReport, &LoadResult)], multi: bool) {
    let label = |r: &RepeatReport, what: &str| repeat_label(multi, r, what);
    let _ = writeln!(
        md,
        "| latency | count | p50 | p90 | p99 | p99.9 | p99.99 | max |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut any_latency = false;
    for (r, res) in with {
        for (what, l) in [
            ("end to end", &res.latency.end_to_end),
            ("publish delay", &res.latency.publish_delay),
            ("ack", &res.latency.ack),
        ] {
            if let Some(l) = l {
                any_latency = true;
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    label(r, what),
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
    if !any_latency {
        let _ = writeln!(md, "| (no messages) | – | – | – | – | – | – | – |");
    }
}

/// Message counts and rates per repeat. Counts are about the measured
/// messages (intended in the window); rates count what happened inside the
/// window: offered by the schedule, sent by send time, delivered by receive
/// time (docs/bench.md).
fn counts_table(md: &mut String, with: &[(&RepeatReport, &LoadResult)], multi: bool) {
    let label = |r: &RepeatReport, what: &str| repeat_label(multi, r, what);
    let _ = writeln!(
        md,
        "\n| counts | guarantee | sent | acked | received | expected | lost | late | duplicated | out of order | offered/s | sent/s | acked/s | delivered/s |"
    );
    let _ = writeln!(
        md,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (r, res) in with {
        let c = &res.counts;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            label(
                r,
                if res.outcome == Outcome::Aborted {
                    "aborted"
                } else {
                    "completed"
                }
            ),
            res.workload.delivery(),
            thousands(c.sent),
            thousands(c.acked),
            thousands(c.received),
            thousands(c.expected),
            thousands(c.lost),
            thousands(c.late),
            thousands(c.duplicated),
            thousands(c.out_of_order),
            if res.rates.offered_per_sec > 0.0 {
                rate(res.rates.offered_per_sec)
            } else {
                "unpaced".into()
            },
            rate(res.rates.sent_per_sec),
            rate(res.rates.acked_per_sec),
            rate(res.rates.received_per_sec),
        );
    }
}

/// Connections and resource use per repeat.
fn connections_table(md: &mut String, with: &[(&RepeatReport, &LoadResult)], multi: bool) {
    let label = |r: &RepeatReport, what: &str| repeat_label(multi, r, what);
    let _ = writeln!(
        md,
        "\n| connections | attempted | established | failed | time to establish | broker peak RSS | broker CPU per msg | broker CPU avg / peak | loadgen CPU |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (r, res) in with {
        let c = &res.connections;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.2} s | {} | {} | {} | {} |",
            label(r, "run"),
            thousands(c.attempted),
            thousands(c.established),
            thousands(c.failed),
            c.time_to_establish_secs,
            r.broker_peak_rss_bytes
                .map(|b| bytes(b as f64))
                .unwrap_or_else(|| "–".into()),
            cpu_per_work(r),
            r.broker_usage
                .map(|u| format!(
                    "{} / {}",
                    percent(u.avg_cpu_machine_percent),
                    percent(u.peak_cpu_machine_percent)
                ))
                .unwrap_or_else(|| "–".into()),
            r.loadgen_cpu_percent
                .map(percent)
                .unwrap_or_else(|| "–".into()),
        );
    }
}

/// `3.17 µs/msg`, `52.4 µs/conn` or `–` for one repeat.
fn cpu_per_work(r: &RepeatReport) -> String {
    crate::model::report::cpu_per_work_text(
        r.broker_cpu_us_per_message,
        r.broker_cpu_us_per_connection,
    )
    .unwrap_or_else(|| "–".into())
}

/// With repeats, the median (min – max) line; then every error seen.
fn summary_and_problems(
    md: &mut String,
    w: &WorkloadReport,
    with: &[(&RepeatReport, &LoadResult)],
    multi: bool,
) {
    if let (true, Some(s)) = (multi, &w.summary) {
        let _ = writeln!(
            md,
            "\nAcross {} repeats, median (min – max): received {}; e2e p50 {}, p99 {}, p99.9 {}, max {}; publish delay p99 {}; broker peak RSS {}, CPU {} ({} per message).",
            s.repeats,
            spread(&s.received_per_sec, rate),
            spread(&s.e2e_p50_us, micros),
            spread(&s.e2e_p99_us, micros),
            spread(&s.e2e_p999_us, micros),
            spread(&s.e2e_max_us, micros),
            spread(&s.publish_delay_p99_us, micros),
            spread(&s.broker_peak_rss_bytes, bytes),
            spread(&s.broker_avg_cpu_percent, percent),
            spread(&s.broker_cpu_us_per_message, cpu_micros),
        );
    }

    let mut problems = Vec::new();
    for (r, res) in with {
        let prefix = if multi {
            format!("repeat {}: ", r.repeat)
        } else {
            String::new()
        };
        if let Some(e) = &res.error {
            problems.push(format!("{prefix}error: {e}"));
        }
        if let Some(f) = &r.failure {
            problems.push(format!("{prefix}{f} (log `{}`)", r.log_file));
        }
        for (kind, n) in &res.connections.errors {
            problems.push(format!(
                "{prefix}connection errors `{kind}`: {}",
                thousands(*n)
            ));
        }
        for (kind, n) in &res.errors {
            problems.push(format!("{prefix}`{kind}`: {}", thousands(*n)));
        }
    }
    for r in w.repeats.iter().filter(|r| r.result.is_none()) {
        if let Some(f) = &r.failure {
            problems.push(format!("repeat {}: {f} (log `{}`)", r.repeat, r.log_file));
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(md, "\nErrors:\n");
        for p in problems {
            let _ = writeln!(md, "- {}", escape(&p));
        }
    }
}

/// `what`, with the repeat number when there are several.
fn repeat_label(multi: bool, r: &RepeatReport, what: &str) -> String {
    if multi {
        format!("{what} (repeat {})", r.repeat)
    } else {
        what.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::report::test_support::{repeat, report, result, workload, workload_report};
    use crate::model::report::Spread;
    use crate::model::report::{Status, Summary};

    #[test]
    fn spread_takes_min_median_max() {
        let s = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Spread::of([4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 10.0));
        assert!(Spread::of([]).is_none());
    }

    #[test]
    fn summary_spans_repeats() {
        let w = workload("fanin", "fan_in");
        let repeats = vec![
            repeat(1, Some(result(&w, 100_000.0, 4_000)), 30_000_000, 40.0),
            repeat(2, Some(result(&w, 120_000.0, 2_000)), 50_000_000, 60.0),
            repeat(3, Some(result(&w, 90_000.0, 9_000)), 40_000_000, 50.0),
            repeat(4, None, 0, 0.0),
        ];
        let s = Summary::of(&repeats).unwrap();
        assert_eq!(s.repeats, 3);
        assert!(!s.partial);
        let r = s.received_per_sec.unwrap();
        assert_eq!((r.min, r.median, r.max), (90_000.0, 100_000.0, 120_000.0));
        let p99 = s.e2e_p99_us.unwrap();
        assert_eq!((p99.min, p99.median, p99.max), (2_000.0, 4_000.0, 9_000.0));
        let rss = s.broker_peak_rss_bytes.unwrap();
        assert_eq!(rss.max, 50_000_000.0);
        assert_eq!(s.broker_avg_cpu_percent.unwrap().median, 50.0);
        assert!(Summary::of(&[repeat(1, None, 0, 0.0)]).is_none());
    }

    #[test]
    fn report_round_trips_and_checks_its_version() {
        let w = workload("lat", "latency");
        let r = report(vec![workload_report(
            w.clone(),
            vec![repeat(1, Some(result(&w, 1000.0, 3000)), 1, 1.0)],
            Status::Ok,
        )]);
        let back = Report::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
        let old = r
            .to_json()
            .replacen("\"schema_version\": 1", "\"schema_version\": 0", 1);
        let err = Report::from_json(&old).unwrap_err().to_string();
        assert!(err.contains("schema_version"), "{err}");
    }

    #[test]
    fn markdown_has_a_row_per_workload_and_the_sections() {
        let fanin = workload("mqtt-fanin", "fan_in");
        let lat = workload("mqtt-lat", "latency");
        let storm = workload("mqtt-storm", "connection_storm");
        let r = report(vec![
            workload_report(
                fanin.clone(),
                vec![repeat(
                    1,
                    Some(result(&fanin, 123_456.0, 8_000)),
                    42_000_000,
                    75.0,
                )],
                Status::Ok,
            ),
            workload_report(
                lat.clone(),
                vec![repeat(
                    1,
                    Some(result(&lat, 1_000.0, 1_500)),
                    20_000_000,
                    3.0,
                )],
                Status::Failed {
                    reason: "broker exited with code 1".into(),
                },
            ),
            workload_report(
                storm,
                Vec::new(),
                Status::NotRun {
                    reason: "broker exited during mqtt-lat".into(),
                },
            ),
        ]);
        let md = render_markdown(&r);
        assert!(md.contains("- **CPU**: Test CPU, 2 cores"), "{md}");
        assert!(
            md.contains("| mqtt-fanin | fan_in | 123,456/s | 2.00 ms | 8.00 ms | 3 | 0 | 42.0 MB | 2.43 µs/msg | 75.0 % | 12.5 % | ok |"),
            "{md}"
        );
        assert!(
            md.contains("| mqtt-lat | latency | 1,000/s | 375 µs | 1.50 ms |"),
            "{md}"
        );
        assert!(md.contains("failed: broker exited with code 1 |"), "{md}");
        assert!(
            md.contains("| mqtt-storm | connection_storm | – | – | – | – | – | – | – | – | – | not run: broker exited during mqtt-lat |"),
            "{md}"
        );
        for section in [
            "## mqtt-fanin",
            "## mqtt-lat",
            "## mqtt-storm",
            "## How measured",
        ] {
            assert!(md.contains(section), "{section}");
        }
        assert!(md.contains("| end to end | 1,000 | 2.00 ms |"), "{md}");
        assert!(!md.contains("EMULATED"));
    }

    #[test]
    fn emulated_markdown_shows_informational_verdicts() {
        let w = workload("mqtt-fanin", "fan_in");
        let mut r = report(vec![workload_report(
            w.clone(),
            vec![repeat(
                1,
                Some(result(&w, 5_000.0, 8_000)),
                42_000_000,
                75.0,
            )],
            Status::Ok,
        )]);
        let native_md = render_markdown(&r);
        r.environment.emulated = true;
        r.environment.runner = "qemu-aarch64".into();
        let profile = crate::model::gate::Profile::parse(
            std::path::Path::new("targets/profiles/t.toml"),
            "[throughput]\nabove_msg_per_sec = 400_000\nfrom = \"x\"\n",
        )
        .unwrap();
        r.gate = Some(crate::analysis::gate::evaluate(&r, &profile));
        let md = render_markdown(&r);
        assert!(md.contains("> **EMULATED**"), "{md}");
        assert!(md.contains("as informational (not gated)"), "{md}");
        assert!(
            md.contains("| throughput (mqtt) | > 400,000 msg/s | 5,000 msg/s (mqtt-fanin) under qemu-aarch64: reported, not gated | _info (emulated)_ | x |"),
            "{md}"
        );
        assert!(
            md.contains("1 informational under emulation (not gated)"),
            "{md}"
        );
        assert!(!native_md.contains("informational"));
    }

    #[test]
    fn micro_report_renders_only_its_section() {
        let mut env = report(Vec::new()).environment;
        env.emulated = true;
        env.runner = "qemu-aarch64".into();
        env.target_triple = "aarch64-unknown-linux-gnu".into();
        let r = crate::model::report::micro_report(
            "20250101T000000Z-aarch64-unknown-linux-gnu".into(),
            env,
            crate::infra::criterion::test_support::section(true),
            "2025-01-01T00:00:00Z".into(),
            "2025-01-01T00:01:00Z".into(),
        );
        let md = render_markdown(&r);
        assert!(md.starts_with("# Bench report `20250101T000000Z-aarch64-unknown-linux-gnu`\n\n> **EMULATED**: the benchmarks ran under emulation (qemu-aarch64)"), "{md}");
        assert!(md.contains("## Micro-benchmarks"), "{md}");
        assert!(
            md.contains("| mqtt_decode/publish_1KiB | 1.05 µs |"),
            "{md}"
        );
        assert!(md.contains("- **Host CPU features**: sse4.2, avx2"), "{md}");
        for load_only in [
            "## Summary",
            "## How measured",
            "**Broker**",
            "**Suite**",
            "| workload |",
        ] {
            assert!(!md.contains(load_only), "{load_only} in {md}");
        }
        // Floats may lose their last bit in JSON; the rendering may not change.
        let back = Report::from_json(&r.to_json()).unwrap();
        assert_eq!(render_markdown(&back), md);
        assert_eq!(back.micro.as_ref().map(|m| m.benchmarks.len()), Some(2));
        assert!(!back.has_load());
    }

    #[test]
    fn load_reports_without_micro_keep_their_json() {
        let r = report(Vec::new());
        assert!(!r.to_json().contains("\"micro\""));
        assert!(r.has_load());
        let committed = std::fs::read_to_string(
            crate::infra::cargo::project_root()
                .join("reports/baselines/x86_64-unknown-linux-gnu.json"),
        )
        .unwrap();
        let side = crate::model::baseline::Baseline::from_json(&committed).unwrap();
        assert!(side.micro.is_none() && !side.workloads.is_empty());
    }

    #[test]
    fn formatting_reads_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(micros(850.0), "850 µs");
        assert_eq!(micros(12_345.0), "12.35 ms");
        assert_eq!(micros(250_000.0), "250 ms");
        assert_eq!(micros(2_500_000.0), "2.50 s");
        assert_eq!(bytes(42_000_000.0), "42.0 MB");
        assert_eq!(bytes(1_500_000_000.0), "1.50 GB");
    }

    #[test]
    fn rows_are_built_once_for_both_renderings() {
        let r = report(Vec::new());
        let rows = crate::render::environment::environment_rows(&r);
        assert_eq!(rows.first().map(|r| r.key), Some("Revision"));
        assert!(rows.iter().all(|r| !r.value.is_empty()));
        let md = render_markdown(&r);
        let html = crate::render::html::render(&r);
        for row in &rows {
            assert!(
                md.contains(&format!("- **{}**: {}", row.key, row.value)),
                "{md}"
            );
            assert!(html.contains(&format!("<dt>{}</dt>", row.key)), "{html}");
        }
    }
}
