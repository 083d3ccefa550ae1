//! The gate: verdicts of a bench report against a threshold profile.
//!
//! Each threshold is pass, fail, *not measured* or *informational*. Not
//! measured (the run did not exercise it at its scale) never counts as a pass,
//! and never fails the gate either; a workload that failed makes the
//! thresholds it would have exercised fail. Loss, duplicates and order are
//! judged per workload by its delivery guarantee. A protocol whose workloads
//! were all skipped (an external broker without that listener) gets a row of
//! its own: not measured. Informational: under emulation
//! (qemu-user) the performance thresholds are reported, not gated, unless the
//! profile says `gate_emulated = true`.

use loadgen::{DeliveryGuarantee, LoadResult, Protocol, Scenario};

use crate::analysis::cpu_scale::{cpu_scale, scale_cpu_threshold};
use crate::model::broker::BrokerKind;
use crate::model::gate::{
    GateReport, GateResult, Profile, Threshold, ThresholdKind, Verdict, VerdictKind,
};
use crate::model::report::Report;
use crate::model::report::WorkloadReport;

/// The verdict of every threshold of `profile` on `report`.
pub fn evaluate(report: &Report, profile: &Profile) -> GateReport {
    // Throughput and latency are judged per protocol: the best Kafka
    // producer must not hide a slow MQTT path, nor the other way round.
    let per_protocol = |t: &Threshold| -> Vec<Option<Protocol>> {
        let scenario = match t.kind {
            ThresholdKind::Throughput => Scenario::FanIn,
            ThresholdKind::P99Latency => Scenario::Latency,
            _ => return vec![None],
        };
        let protocols = protocols_of(report, scenario);
        if protocols.is_empty() {
            vec![None]
        } else {
            protocols.into_iter().map(Some).collect()
        }
    };
    let scale = cpu_scale(report, profile);
    let scaled: Vec<Threshold> = profile
        .thresholds
        .iter()
        .map(|t| scale_cpu_threshold(t, scale, report, profile))
        .collect();
    let verdicts: Vec<Verdict> = scaled
        .iter()
        .flat_map(|t| per_protocol(t).into_iter().map(move |p| (t, p)))
        .map(|(t, protocol)| {
            let (mut verdict, mut measured, value) = judge(report, t, protocol);
            // A Pass or Fail that carries a value was decided by comparing
            // that value with the limit (failed or missing workloads fail
            // without one): only such numbers become informational.
            let from_a_number =
                matches!(verdict, VerdictKind::Pass | VerdictKind::Fail) && value.is_some();
            if report.environment.emulated
                && !profile.gate_emulated
                && t.kind.is_performance()
                && from_a_number
            {
                verdict = VerdictKind::Informational;
                measured = format!(
                    "{measured} under {}: reported, not gated",
                    report.environment.runner
                );
            }
            Verdict {
                threshold: t.kind.name().to_string(),
                protocol: protocol.map(|p| p.as_str().to_string()),
                workload: t.workload.clone(),
                limit: t.limit_text.clone(),
                measured,
                value,
                verdict,
                from: t.from.clone(),
            }
        })
        .collect();
    let mut verdicts = verdicts;
    verdicts.extend(unmeasured_protocols(report));
    let result = if verdicts.iter().any(|v| v.verdict == VerdictKind::Fail) {
        GateResult::Fail
    } else if !verdicts.is_empty() && verdicts.iter().all(|v| v.verdict == VerdictKind::Pass) {
        GateResult::Pass
    } else {
        GateResult::Incomplete
    };
    GateReport {
        profile: profile.name.clone(),
        profile_file: profile.file.display().to_string(),
        result,
        verdicts,
    }
}

/// A "not measured" row for every protocol whose workloads were all skipped:
/// the gate must not read as if that protocol had been checked.
fn unmeasured_protocols(report: &Report) -> Vec<Verdict> {
    let mut protocols: Vec<Protocol> = Vec::new();
    for w in &report.workloads {
        if !protocols.contains(&w.workload.protocol) {
            protocols.push(w.workload.protocol);
        }
    }
    protocols
        .into_iter()
        .filter_map(|p| {
            let of_p: Vec<&WorkloadReport> = report
                .workloads
                .iter()
                .filter(|w| w.workload.protocol == p)
                .collect();
            if !of_p.iter().all(|w| w.status.is_skipped()) {
                return None;
            }
            let reason = of_p
                .first()
                .map(|w| w.status.describe())
                .unwrap_or_default();
            Some(Verdict {
                threshold: "protocol".into(),
                protocol: Some(p.as_str().to_string()),
                workload: None,
                limit: "measured".into(),
                measured: format!("{} workloads {reason}", of_p.len()),
                value: None,
                verdict: VerdictKind::NotMeasured,
                from: "the run".into(),
            })
        })
        .collect()
}

pub(crate) type Judgement = (VerdictKind, String, Option<f64>);

/// Workloads that deliver messages (not storms) and apply, filtered.
fn delivering(report: &Report, keep: impl Fn(&loadgen::Workload) -> bool) -> Vec<&WorkloadReport> {
    report
        .workloads
        .iter()
        .filter(|w| !w.status.is_skipped())
        .filter(|w| w.workload.scenario != Scenario::ConnectionStorm)
        .filter(|w| w.workload.publishers > 0 && w.workload.subscribers > 0)
        .filter(|w| keep(&w.workload))
        .collect()
}

/// The worst `count(result) / expected` over `workloads`, judged `≤ limit`
/// (`as_fraction`: else the count itself).
fn judge_counts(
    workloads: &[&WorkloadReport],
    what: &str,
    count: fn(&LoadResult) -> u64,
    limit: f64,
    as_fraction: bool,
) -> Judgement {
    use VerdictKind::*;
    if workloads.is_empty() {
        return (NotMeasured, format!("no {what} workload in this run"), None);
    }
    if let Some(reason) = first_failure(workloads) {
        return (Fail, reason, None);
    }
    let mut worst: Option<(&str, u64, u64, f64)> = None;
    let mut total_expected = 0;
    for (name, r) in results(workloads) {
        let (n, expected) = (count(r), r.counts.expected);
        total_expected += expected;
        let value = if as_fraction {
            if expected == 0 {
                0.0
            } else {
                n as f64 / expected as f64
            }
        } else {
            n as f64
        };
        if worst.is_none_or(|(_, _, _, w)| value > w) {
            worst = Some((name, n, expected, value));
        }
    }
    let Some((name, n, expected, value)) = worst else {
        return (Fail, format!("{what} workloads produced no result"), None);
    };
    let thousands = crate::model::units::thousands;
    let measured = if n == 0 {
        format!(
            "0 of {} expected over {} workloads",
            thousands(total_expected),
            workloads.len()
        )
    } else if as_fraction {
        format!(
            "{} ({name}: {} of {})",
            crate::model::units::fraction_text(value),
            thousands(n),
            thousands(expected)
        )
    } else {
        format!(
            "{} of {} expected ({name})",
            thousands(n),
            thousands(expected)
        )
    };
    (
        if value <= limit { Pass } else { Fail },
        measured,
        Some(value),
    )
}

pub(crate) fn judge(report: &Report, t: &Threshold, protocol: Option<Protocol>) -> Judgement {
    use VerdictKind::*;
    let limit = t.limit;
    let by = |pass: bool| if pass { Pass } else { Fail };
    match t.kind {
        ThresholdKind::Connections => {
            let storms = of_scenario(report, Scenario::ConnectionStorm, None);
            if let Some(j) = none_or_failed(&storms, Scenario::ConnectionStorm) {
                return j;
            }
            let results = results(&storms);
            let attempted = results
                .iter()
                .map(|(_, r)| r.connections.attempted)
                .max()
                .unwrap_or(0);
            let established = results
                .iter()
                .map(|(_, r)| r.connections.established)
                .max()
                .unwrap_or(0);
            let measured = format!(
                "{} established of {} attempted",
                crate::model::units::thousands(established),
                crate::model::units::thousands(attempted)
            );
            if (attempted as f64) < limit {
                return (
                    NotMeasured,
                    format!(
                        "attempted {} < {}",
                        crate::model::units::thousands(attempted),
                        crate::model::units::thousands(limit as u64)
                    ),
                    Some(established as f64),
                );
            }
            (
                by(established as f64 >= limit),
                measured,
                Some(established as f64),
            )
        }
        ThresholdKind::Throughput => {
            let fan_in = of_scenario(report, Scenario::FanIn, protocol);
            if let Some(j) = none_or_failed(&fan_in, Scenario::FanIn) {
                return j;
            }
            let Some((name, best)) = results(&fan_in)
                .into_iter()
                .map(|(w, r)| (w, r.rates.received_per_sec))
                .max_by(|a, b| a.1.total_cmp(&b.1))
            else {
                return (Fail, "fan_in workloads produced no result".into(), None);
            };
            (
                by(best > limit),
                format!(
                    "{} msg/s ({name})",
                    crate::model::units::thousands(best.round() as u64)
                ),
                Some(best),
            )
        }
        ThresholdKind::P99Latency => {
            let latency = of_scenario(report, Scenario::Latency, protocol);
            if let Some(j) = none_or_failed(&latency, Scenario::Latency) {
                return j;
            }
            let mut worst: Option<(&str, f64)> = None;
            for (name, r) in results(&latency) {
                let Some(e2e) = &r.latency.end_to_end else {
                    return (
                        Fail,
                        format!("{name}: no end-to-end latency (nothing received)"),
                        None,
                    );
                };
                let p99 = e2e.p99_us as f64;
                if worst.is_none_or(|(_, w)| p99 > w) {
                    worst = Some((name, p99));
                }
            }
            match worst {
                None => (Fail, "latency workloads produced no result".into(), None),
                Some((name, p99)) => (
                    by(p99 < limit),
                    format!("{} ({name})", crate::model::units::micros(p99)),
                    Some(p99),
                ),
            }
        }
        ThresholdKind::BrokerMemory => {
            if let Some(exit) = &report.broker_exit {
                return (Fail, format!("broker {exit} during the run"), None);
            }
            let all: Vec<&WorkloadReport> = report
                .workloads
                .iter()
                .filter(|w| !w.status.is_skipped())
                .collect();
            if let Some(reason) = first_failure(&all) {
                return (Fail, reason, None);
            }
            match report.broker_usage {
                Some(u) if u.samples > 0 => {
                    let peak = u.peak_rss_bytes as f64;
                    (
                        by(peak < limit),
                        format!("{} peak RSS", crate::model::units::bytes(peak)),
                        Some(peak),
                    )
                }
                _ => (
                    NotMeasured,
                    "no broker samples (external broker without --broker-pid?)".into(),
                    None,
                ),
            }
        }
        ThresholdKind::Cpu => {
            let latency = of_scenario(report, Scenario::Latency, None);
            if let Some(j) = none_or_failed(&latency, Scenario::Latency) {
                return j;
            }
            let worst = latency
                .iter()
                .flat_map(|w| w.repeats.iter().map(move |r| (w.name.as_str(), r)))
                .filter_map(|(name, r)| r.broker_usage.map(|u| (name, u.avg_cpu_machine_percent)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match worst {
                None => (
                    NotMeasured,
                    "no broker samples during latency workloads".into(),
                    None,
                ),
                Some((name, cpu)) => (
                    by(cpu < limit),
                    format!("{} avg ({name})", crate::model::units::percent(cpu)),
                    Some(cpu),
                ),
            }
        }
        ThresholdKind::LostGuaranteed => judge_counts(
            &delivering(report, |w| w.delivery().forbids_loss()),
            "at-least-once",
            |r| r.counts.lost,
            limit,
            false,
        ),
        ThresholdKind::LostBestEffort => judge_counts(
            &delivering(report, |w| !w.delivery().forbids_loss()),
            "at-most-once",
            |r| r.counts.lost,
            limit,
            true,
        ),
        ThresholdKind::Duplicated => judge_counts(
            &delivering(report, |w| w.delivery() != DeliveryGuarantee::AtLeastOnce),
            "at-most-once or exactly-once",
            |r| r.counts.duplicated,
            limit,
            true,
        ),
        ThresholdKind::Reordered => judge_counts(
            &delivering(report, |w| w.promises_order()),
            "order-keeping",
            |r| r.counts.out_of_order,
            limit,
            true,
        ),
        ThresholdKind::CpuPerMessage
        | ThresholdKind::CpuPerConnection
        | ThresholdKind::WorkloadMemory
        | ThresholdKind::WorkloadThroughput
        | ThresholdKind::MaxSustainable => judge_workload(report, t),
        ThresholdKind::BinarySize => match (report.broker.kind, report.broker.binary_size_bytes) {
            (BrokerKind::Built, Some(size)) => {
                let size = size as f64;
                (
                    by(size < limit),
                    crate::model::units::bytes(size),
                    Some(size),
                )
            }
            (BrokerKind::Built, None) => (NotMeasured, "binary size unknown".into(), None),
            (kind, _) => (
                NotMeasured,
                format!("{} broker: not our build", kind.as_str()),
                None,
            ),
        },
    }
}

/// A `[workloads.NAME]` bound: the median over the workload's repeats.
/// Not measured when the workload is not in the run (or was skipped, or has
/// no figure: no broker samples); fail when it failed.
fn judge_workload(report: &Report, t: &Threshold) -> Judgement {
    use crate::model::units::{bytes, cpu_micros, thousands};
    use VerdictKind::*;
    let name = t.workload.as_deref().unwrap_or_default();
    let Some(w) = report.workloads.iter().find(|w| w.name == name) else {
        return (NotMeasured, format!("{name} is not in this run"), None);
    };
    if w.status.is_skipped() {
        return (NotMeasured, w.status.describe(), None);
    }
    if let Some(reason) = first_failure(&[w]) {
        return (Fail, reason, None);
    }
    let values = |f: fn(&crate::model::report::RepeatReport) -> Option<f64>| {
        crate::model::report::Spread::of(w.repeats.iter().filter_map(f)).map(|s| s.median)
    };
    let (value, below) = match t.kind {
        ThresholdKind::CpuPerMessage => (values(|r| r.broker_cpu_us_per_message), true),
        ThresholdKind::CpuPerConnection => (values(|r| r.broker_cpu_us_per_connection), true),
        ThresholdKind::WorkloadMemory => {
            (values(|r| r.broker_peak_rss_bytes.map(|b| b as f64)), true)
        }
        ThresholdKind::MaxSustainable => {
            let found = w.max_rate.as_ref().and_then(|m| m.found_per_sec);
            (found.map(|f| f as f64), false)
        }
        _ => (
            values(|r| r.result.as_ref().map(|res| res.rates.received_per_sec)),
            false,
        ),
    };
    let Some(v) = value else {
        return (
            NotMeasured,
            "no figure (no broker samples, or nothing delivered)".into(),
            None,
        );
    };
    let text = match t.kind {
        ThresholdKind::CpuPerMessage => format!("{}/msg", cpu_micros(v)),
        ThresholdKind::CpuPerConnection => format!("{}/conn", cpu_micros(v)),
        ThresholdKind::WorkloadMemory => bytes(v),
        _ => format!("{} msg/s", thousands(v.round() as u64)),
    };
    let repeats = w.repeats.len();
    let text = if repeats > 1 && t.kind != ThresholdKind::MaxSustainable {
        format!("{text} (median of {repeats})")
    } else {
        text
    };
    let pass = if below { v < t.limit } else { v > t.limit };
    (if pass { Pass } else { Fail }, text, Some(v))
}

/// The workloads of `scenario` that apply to the broker (skipped ones do
/// not), of one protocol when `protocol` says so.
pub(crate) fn of_scenario(
    report: &Report,
    scenario: Scenario,
    protocol: Option<Protocol>,
) -> Vec<&WorkloadReport> {
    report
        .workloads
        .iter()
        .filter(|w| w.workload.scenario == scenario && !w.status.is_skipped())
        .filter(|w| protocol.is_none_or(|p| w.workload.protocol == p))
        .collect()
}

/// The protocols with workloads of `scenario` that apply, in report order.
pub(crate) fn protocols_of(report: &Report, scenario: Scenario) -> Vec<Protocol> {
    let mut out = Vec::new();
    for w in of_scenario(report, scenario, None) {
        if !out.contains(&w.workload.protocol) {
            out.push(w.workload.protocol);
        }
    }
    out
}

/// Not measured when no workload of the scenario was planned; fail when one
/// of them failed or did not run.
pub(crate) fn none_or_failed(
    workloads: &[&WorkloadReport],
    scenario: Scenario,
) -> Option<Judgement> {
    if workloads.is_empty() {
        return Some((
            VerdictKind::NotMeasured,
            format!("no {} workload in this run", scenario.as_str()),
            None,
        ));
    }
    first_failure(workloads).map(|reason| (VerdictKind::Fail, reason, None))
}

pub(crate) fn first_failure(workloads: &[&WorkloadReport]) -> Option<String> {
    workloads
        .iter()
        .find(|w| !w.status.is_ok())
        .map(|w| format!("{} {}", w.name, w.status.describe()))
}

pub(crate) fn results<'a>(workloads: &[&'a WorkloadReport]) -> Vec<(&'a str, &'a LoadResult)> {
    workloads
        .iter()
        .flat_map(|w| {
            w.repeats
                .iter()
                .filter_map(move |r| r.result.as_ref().map(|res| (w.name.as_str(), res)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gate::{available, profiles_dir};
    use crate::model::report::test_support::{
        quick_run, repeat, report, result, workload, workload_report,
    };
    use crate::model::report::Status;
    use crate::model::units::parse_size;
    use crate::render::gate::{markdown_table, text_table, verdict_line};
    use std::path::Path;

    fn profile(text: &str) -> Profile {
        Profile::parse(Path::new("targets/profiles/test.toml"), text).unwrap()
    }

    const ALL: &str = r#"
description = "test"
[connections]
at_least = 1_000_000
from = "origin"
[throughput]
above_msg_per_sec = 20_000
from = "ci"
[p99_latency]
below_ms = 15
from = "origin"
[broker_memory]
below = "512 MB"
from = "ci"
[cpu]
below_percent = 80
from = "origin"
[binary_size]
below = "5 MB"
from = "origin"
"#;

    #[test]
    fn per_workload_bounds_judge_cpu_per_message_memory_and_rate() {
        let mut run = quick_run(25_000.0, 3_000);
        // The fan-in: 90 % of 2 cores over a 2 s window = 3.6 CPU-s for
        // what it delivered in its window.
        let fanin = &run.workloads[0];
        let delivered = fanin.repeats[0].result.as_ref().unwrap().counts.delivered;
        let per_msg = 3.6e6 / delivered as f64;
        assert!(
            (fanin.repeats[0].broker_cpu_us_per_message.unwrap() - per_msg).abs() < 1e-9,
            "{:?}",
            fanin.repeats[0].broker_cpu_us_per_message
        );
        run.workloads[2].repeats[0].broker_cpu_us_per_connection = Some(80.0);
        let text = format!(
            r#"
[workloads.fanin]
cpu_us_per_message_below = {}
peak_rss_below = "41 MB"
delivered_above_msg_per_sec = 20_000
from = "measured"
[workloads.lat]
cpu_us_per_message_below = {}
from = "measured"
[workloads.storm]
cpu_us_per_connection_below = 100
peak_rss_below = "44 MB"
from = "measured"
[workloads.gone]
cpu_us_per_message_below = 1
from = "measured"
"#,
            per_msg * 1.01,
            0.001
        );
        let gate = evaluate(&run, &profile(&text));
        let find = |label: &str| {
            gate.verdicts
                .iter()
                .find(|v| v.label() == label)
                .unwrap_or_else(|| panic!("no {label} in {:?}", gate.verdicts))
        };
        let v = find("CPU per message (fanin)");
        assert_eq!(v.verdict, VerdictKind::Pass, "{v:?}");
        assert_eq!(v.value, Some(per_msg));
        assert_eq!(find("peak RSS (fanin)").verdict, VerdictKind::Pass);
        assert_eq!(find("delivered (fanin)").verdict, VerdictKind::Pass);
        // A bound below the figure fails.
        let v = find("CPU per message (lat)");
        assert_eq!(v.verdict, VerdictKind::Fail, "{v:?}");
        assert!(v.measured.ends_with("/msg"), "{v:?}");
        assert_eq!(
            find("CPU per connection (storm)").verdict,
            VerdictKind::Pass
        );
        assert_eq!(find("peak RSS (storm)").verdict, VerdictKind::Fail);
        let gone = find("CPU per message (gone)");
        assert_eq!(gone.verdict, VerdictKind::NotMeasured);
        assert_eq!(gone.measured, "gone is not in this run");
        assert_eq!(gate.result, GateResult::Fail);

        // A failed workload fails its bounds, never passes them.
        run.workloads[0].status = Status::Failed {
            reason: "loadgen exited with code 1".into(),
        };
        let gate = evaluate(&run, &profile(&text));
        let v = gate
            .verdicts
            .iter()
            .find(|v| v.label() == "CPU per message (fanin)")
            .unwrap();
        assert_eq!(v.verdict, VerdictKind::Fail);
        assert!(v.value.is_none());

        // Under emulation they are reported, not gated.
        let gate = evaluate(&emulated(quick_run(25_000.0, 3_000)), &profile(&text));
        let v = gate
            .verdicts
            .iter()
            .find(|v| v.label() == "CPU per message (lat)")
            .unwrap();
        assert_eq!(v.verdict, VerdictKind::Informational);
    }

    #[test]
    fn max_rate_bound_judges_the_found_rate() {
        use crate::model::max_rate::{MaxRateSection, SearchSpec};
        let mut run = quick_run(25_000.0, 3_000);
        let section = |found: Option<u64>| MaxRateSection {
            found_per_sec: found,
            found_by: "search".into(),
            stopped: "test".into(),
            service_rate_per_sec: found.map(|f| f / 2),
            search: SearchSpec::default(),
            steps: Vec::new(),
            sweep: Vec::new(),
        };
        run.workloads[0].max_rate = Some(section(Some(90_000)));
        let text = "[workloads.fanin]\nmax_rate_above_msg_per_sec = 80_000\nfrom = \"m\"\n\
                    [workloads.lat]\nmax_rate_above_msg_per_sec = 1\nfrom = \"m\"\n";
        let judge = |run: &Report| {
            let gate = evaluate(run, &profile(text));
            let get = |label: &str| {
                gate.verdicts
                    .iter()
                    .find(|v| v.label() == label)
                    .unwrap_or_else(|| panic!("no {label}"))
                    .clone()
            };
            (get("max sustainable (fanin)"), get("max sustainable (lat)"))
        };
        let (fanin, lat) = judge(&run);
        assert_eq!(fanin.verdict, VerdictKind::Pass, "{fanin:?}");
        assert_eq!(fanin.value, Some(90_000.0));
        assert_eq!(fanin.measured, "90,000 msg/s");
        // Not a searched workload: no figure.
        assert_eq!(lat.verdict, VerdictKind::NotMeasured, "{lat:?}");
        run.workloads[0].max_rate = Some(section(Some(70_000)));
        assert_eq!(judge(&run).0.verdict, VerdictKind::Fail);
        run.workloads[0].max_rate = Some(section(None));
        assert_eq!(judge(&run).0.verdict, VerdictKind::NotMeasured);
        let e = Profile::parse(
            std::path::Path::new("p.toml"),
            "[workloads.x]\nmax_rate_above_msg_per_sec = 0\nfrom = \"m\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("workloads.x.max_rate_above_msg_per_sec"), "{e}");
    }

    #[test]
    fn a_workload_table_without_a_bound_is_an_error_naming_it() {
        let e = Profile::parse(
            Path::new("targets/profiles/test.toml"),
            "[workloads.mqtt-qos1]\nfrom = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("targets/profiles/test.toml"), "{e}");
        assert!(e.contains("workloads.mqtt-qos1"), "{e}");
        let e = Profile::parse(
            Path::new("targets/profiles/test.toml"),
            "[workloads.mqtt-qos1]\ncpu_us_per_message_below = -1\nfrom = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("workloads.mqtt-qos1.cpu_us_per_message_below"),
            "{e}"
        );
    }

    fn verdict<'a>(gate: &'a GateReport, name: &str) -> &'a Verdict {
        gate.verdicts.iter().find(|v| v.threshold == name).unwrap()
    }

    #[test]
    fn pass_fail_and_not_measured() {
        let gate = evaluate(&quick_run(25_000.0, 3_000), &profile(ALL));
        let conn = verdict(&gate, "connections");
        assert_eq!(conn.verdict, VerdictKind::NotMeasured);
        assert_eq!(conn.measured, "attempted 1,000 < 1,000,000");
        assert_eq!(verdict(&gate, "throughput").verdict, VerdictKind::Pass);
        assert_eq!(
            verdict(&gate, "throughput").measured,
            "25,000 msg/s (fanin)"
        );
        assert_eq!(verdict(&gate, "p99 latency").verdict, VerdictKind::Pass);
        let mem = verdict(&gate, "broker memory");
        assert_eq!(mem.verdict, VerdictKind::Pass);
        assert_eq!(mem.value, Some(50_000_000.0));
        // CPU is judged on the latency workload (5 %), not the saturating fan-in (90 %).
        assert_eq!(verdict(&gate, "CPU").value, Some(5.0));
        assert_eq!(verdict(&gate, "binary size").verdict, VerdictKind::Pass);
        assert_eq!(gate.result, GateResult::Incomplete);
        assert!(!gate.failed());
        assert!(verdict_line(&gate).contains("not measured is not a pass"));

        let gate = evaluate(&quick_run(25_000.0, 20_000), &profile(ALL));
        let p99 = verdict(&gate, "p99 latency");
        assert_eq!(p99.verdict, VerdictKind::Fail);
        assert_eq!(p99.measured, "20.00 ms (lat)");
        assert!(gate.failed());
        assert!(verdict_line(&gate).contains("FAIL (1 failed"));
    }

    fn emulated(mut r: Report) -> Report {
        r.environment.emulated = true;
        r.environment.runner = "qemu-aarch64".into();
        r
    }

    /// `quick_run` with every performance number over the `ALL` limits:
    /// 1,000 msg/s, 20 ms p99, 600 MB peak RSS, 95 % CPU.
    fn bad_numbers() -> Report {
        let mut r = quick_run(1_000.0, 20_000);
        r.broker_usage.as_mut().unwrap().peak_rss_bytes = 600_000_000;
        r.workloads[1].repeats[0]
            .broker_usage
            .as_mut()
            .unwrap()
            .avg_cpu_machine_percent = 95.0;
        r
    }

    const PERFORMANCE: [&str; 4] = ["throughput", "p99 latency", "CPU", "broker memory"];

    #[test]
    fn emulated_performance_is_informational_not_a_pass() {
        let gate = evaluate(&emulated(quick_run(25_000.0, 3_000)), &profile(ALL));
        for name in PERFORMANCE {
            assert_eq!(
                verdict(&gate, name).verdict,
                VerdictKind::Informational,
                "{name}"
            );
        }
        let throughput = verdict(&gate, "throughput");
        assert_eq!(
            throughput.measured,
            "25,000 msg/s (fanin) under qemu-aarch64: reported, not gated"
        );
        assert_eq!(throughput.value, Some(25_000.0));
        assert_eq!(verdict(&gate, "binary size").verdict, VerdictKind::Pass);
        assert_eq!(
            verdict(&gate, "connections").verdict,
            VerdictKind::NotMeasured
        );
        assert_eq!(gate.result, GateResult::Incomplete);
        assert_eq!(
            verdict_line(&gate),
            "gate `test`: no threshold failed; 1 passed, 4 informational under emulation (not gated), 1 not measured; informational and not measured are not a pass"
        );

        // Without anything not measured, informational alone still is no pass.
        let p = profile("[throughput]\nabove_msg_per_sec = 1\nfrom = \"x\"\n");
        let gate = evaluate(&emulated(quick_run(25_000.0, 3_000)), &p);
        assert_eq!(gate.result, GateResult::Incomplete);
        assert!(verdict_line(&gate).ends_with("informational is not a pass"));

        let md = markdown_table(&gate);
        assert!(
            md.contains("| 25,000 msg/s (fanin) under qemu-aarch64: reported, not gated | _info (emulated)_ |"),
            "{md}"
        );
        assert!(text_table(&gate).contains("info (emulated)"));
        let json = serde_json::to_string(&gate).unwrap();
        assert!(json.contains("\"verdict\":\"informational\""), "{json}");
        assert_eq!(serde_json::from_str::<GateReport>(&json).unwrap(), gate);
    }

    #[test]
    fn emulated_bad_numbers_are_informational_not_fail() {
        let native = evaluate(&bad_numbers(), &profile(ALL));
        for name in PERFORMANCE {
            assert_eq!(verdict(&native, name).verdict, VerdictKind::Fail, "{name}");
        }
        let gate = evaluate(&emulated(bad_numbers()), &profile(ALL));
        for name in PERFORMANCE {
            let v = verdict(&gate, name);
            assert_eq!(v.verdict, VerdictKind::Informational, "{name}");
            assert_eq!(v.value, verdict(&native, name).value, "{name}");
            assert!(v
                .measured
                .ends_with("under qemu-aarch64: reported, not gated"));
        }
        assert_eq!(
            verdict(&gate, "p99 latency").measured,
            "20.00 ms (lat) under qemu-aarch64: reported, not gated"
        );
        assert_eq!(gate.result, GateResult::Incomplete);
        assert!(!gate.failed());
    }

    #[test]
    fn emulated_functional_failures_and_binary_size_still_fail() {
        let mut r = emulated(quick_run(25_000.0, 3_000));
        r.workloads[0].status = Status::Failed {
            reason: "loadgen exited with code 1".into(),
        };
        let gate = evaluate(&r, &profile(ALL));
        let throughput = verdict(&gate, "throughput");
        assert_eq!(throughput.verdict, VerdictKind::Fail);
        assert!(
            throughput.measured.contains("fanin failed: loadgen exited"),
            "{}",
            throughput.measured
        );
        // Any failed workload fails broker memory too; the others measured numbers.
        assert_eq!(verdict(&gate, "broker memory").verdict, VerdictKind::Fail);
        assert_eq!(
            verdict(&gate, "p99 latency").verdict,
            VerdictKind::Informational
        );
        assert_eq!(gate.result, GateResult::Fail);
        assert_eq!(
            verdict_line(&gate),
            "gate `test`: FAIL (2 failed, 1 passed, 2 informational under emulation, 1 not measured)"
        );

        let mut r = emulated(quick_run(25_000.0, 3_000));
        r.broker.binary_size_bytes = Some(6_000_000);
        let gate = evaluate(&r, &profile(ALL));
        assert_eq!(verdict(&gate, "binary size").verdict, VerdictKind::Fail);
        assert_eq!(verdict(&gate, "binary size").measured, "6.0 MB");
        assert!(gate.failed());

        // Connections are gated under emulation too.
        let p = profile("[connections]\nat_least = 1000\nfrom = \"ci\"\n");
        let mut r = emulated(quick_run(1.0, 1));
        r.workloads[2].repeats[0]
            .result
            .as_mut()
            .unwrap()
            .connections
            .established = 990;
        assert_eq!(evaluate(&r, &p).verdicts[0].verdict, VerdictKind::Fail);
    }

    #[test]
    fn gate_emulated_gates_like_a_native_run() {
        let strict = profile(&format!("gate_emulated = true\n{ALL}"));
        assert!(strict.gate_emulated);
        assert!(!profile(ALL).gate_emulated);
        for run in [quick_run(25_000.0, 3_000), bad_numbers()] {
            let native = evaluate(&run, &strict);
            let gate = evaluate(&emulated(run), &strict);
            assert_eq!(gate.verdicts, native.verdicts);
            assert_eq!(gate.result, native.result);
        }
        let gate = evaluate(&emulated(bad_numbers()), &strict);
        assert_eq!(verdict(&gate, "throughput").verdict, VerdictKind::Fail);
        assert!(gate.failed());
    }

    #[test]
    fn native_runs_have_no_informational_verdicts() {
        for run in [quick_run(25_000.0, 3_000), bad_numbers()] {
            let gate = evaluate(&run, &profile(ALL));
            assert_eq!(gate.count(VerdictKind::Informational), 0);
            assert!(!verdict_line(&gate).contains("informational"));
        }
    }

    #[test]
    fn connections_measured_when_storm_reaches_the_limit() {
        let p = profile("[connections]\nat_least = 1000\nfrom = \"ci\"\n");
        let gate = evaluate(&quick_run(1.0, 1), &p);
        assert_eq!(gate.verdicts[0].verdict, VerdictKind::Pass);
        assert_eq!(gate.result, GateResult::Pass);

        let mut r = quick_run(1.0, 1);
        let storm = r.workloads[2].repeats[0].result.as_mut().unwrap();
        storm.connections.established = 990;
        storm.connections.failed = 10;
        let gate = evaluate(&r, &p);
        assert_eq!(gate.verdicts[0].verdict, VerdictKind::Fail);
        assert_eq!(
            gate.verdicts[0].measured,
            "990 established of 1,000 attempted"
        );
    }

    #[test]
    fn failed_workload_fails_its_thresholds_never_passes() {
        let mut r = quick_run(25_000.0, 3_000);
        let lat = &mut r.workloads[1];
        lat.status = Status::Failed {
            reason: "loadgen aborted: broker closed the connection".into(),
        };
        lat.repeats[0].result.as_mut().unwrap().outcome = loadgen::Outcome::Aborted;
        let gate = evaluate(&r, &profile(ALL));
        for name in ["p99 latency", "CPU", "broker memory"] {
            let v = verdict(&gate, name);
            assert_eq!(v.verdict, VerdictKind::Fail, "{name}");
            assert!(
                v.measured.contains("lat failed: loadgen aborted"),
                "{}",
                v.measured
            );
        }
        assert_eq!(verdict(&gate, "throughput").verdict, VerdictKind::Pass);
        assert!(gate.failed());

        let mut r = quick_run(25_000.0, 3_000);
        r.broker_exit = Some("killed by signal 9".into());
        r.workloads[2].status = Status::NotRun {
            reason: "broker exited during lat".into(),
        };
        r.workloads[2].repeats.clear();
        let gate = evaluate(&r, &profile(ALL));
        assert_eq!(verdict(&gate, "connections").verdict, VerdictKind::Fail);
        assert!(verdict(&gate, "broker memory")
            .measured
            .contains("signal 9"));
    }

    #[test]
    fn missing_workloads_and_external_brokers_are_not_measured() {
        let mut r = quick_run(25_000.0, 3_000);
        r.workloads.retain(|w| w.name == "storm");
        r.broker.kind = BrokerKind::External;
        r.broker.binary_size_bytes = None;
        r.broker_usage = None;
        let gate = evaluate(&r, &profile(ALL));
        for name in [
            "throughput",
            "p99 latency",
            "CPU",
            "broker memory",
            "binary size",
        ] {
            assert_eq!(
                verdict(&gate, name).verdict,
                VerdictKind::NotMeasured,
                "{name}"
            );
        }
        assert_eq!(gate.result, GateResult::Incomplete);
    }

    #[test]
    fn throughput_and_latency_are_judged_per_protocol_and_skipped_workloads_ignored() {
        let mut r = quick_run(25_000.0, 2_000);
        let mut kafka = workload("kafka-produce", "fan_in");
        kafka.protocol = Protocol::Kafka;
        r.workloads.push(workload_report(
            kafka.clone(),
            vec![repeat(
                1,
                Some(result(&kafka, 900_000.0, 9_000)),
                40_000_000,
                90.0,
            )],
            Status::Ok,
        ));
        let gate = evaluate(&r, &profile(ALL));
        let throughput: Vec<&Verdict> = gate
            .verdicts
            .iter()
            .filter(|v| v.threshold == "throughput")
            .collect();
        assert_eq!(throughput.len(), 2, "{throughput:?}");
        assert_eq!(throughput[0].label(), "throughput (mqtt)");
        assert_eq!(throughput[0].verdict, VerdictKind::Pass);
        assert_eq!(throughput[1].label(), "throughput (kafka)");
        assert_eq!(throughput[1].value, Some(900_000.0));
        // A slow MQTT path is not hidden by a fast Kafka producer.
        let mut slow = r.clone();
        slow.workloads[0].repeats[0]
            .result
            .as_mut()
            .unwrap()
            .rates
            .received_per_sec = 5_000.0;
        let gate = evaluate(&slow, &profile(ALL));
        assert_eq!(verdict(&gate, "throughput").verdict, VerdictKind::Fail);

        // A broker without Kafka: the Kafka workload is skipped, not failed.
        let mut without = r.clone();
        without.workloads.last_mut().unwrap().status = Status::Skipped {
            reason: "no Kafka listener".into(),
        };
        without.workloads.last_mut().unwrap().repeats.clear();
        let gate = evaluate(&without, &profile(ALL));
        let labels: Vec<String> = gate.verdicts.iter().map(Verdict::label).collect();
        assert!(
            !labels.contains(&"throughput (kafka)".to_string()),
            "{labels:?}"
        );
        assert_eq!(verdict(&gate, "broker memory").verdict, VerdictKind::Pass);
        assert_ne!(gate.result, GateResult::Fail);
    }

    const LOSS: &str = r#"
[lost]
at_most_once_max_fraction = 0.2
from = "test"
[duplicated]
max_fraction = 0
from = "test"
[reordered]
max_fraction = 0
from = "test"
"#;

    /// `quick_run` plus an MQTT QoS 1 workload with `lost` lost deliveries.
    fn with_qos1(lost: u64) -> Report {
        let mut r = quick_run(25_000.0, 3_000);
        let mut w = workload("mqtt-qos1", "acknowledged");
        w.qos = 1;
        let mut res = result(&w, 50_000.0, 4_000);
        res.counts.expected = res.counts.sent;
        res.counts.lost = lost;
        res.counts.received = res.counts.sent - lost;
        r.workloads.push(workload_report(
            w,
            vec![repeat(1, Some(res), 30_000_000, 50.0)],
            Status::Ok,
        ));
        r
    }

    /// The mosquitto run of issue 16: `max_queued_messages 10` lost 441,683
    /// QoS 1 messages in mqtt-qos1 and the ci gate said "incomplete". Now it fails.
    #[test]
    fn lost_acknowledged_messages_fail_the_ci_gate() {
        let root = crate::infra::cargo::project_root();
        let ci = Profile::load(&root, "ci").unwrap();
        let mut r = with_qos1(441_683);
        r.broker.kind = BrokerKind::Mosquitto;
        let gate = evaluate(&r, &ci);
        let lost = verdict(&gate, "lost (at-least-once)");
        assert_eq!(lost.verdict, VerdictKind::Fail);
        assert_eq!(lost.measured, "441,683 of 500,000 expected (mqtt-qos1)");
        assert_eq!(gate.result, GateResult::Fail);

        let gate = evaluate(&with_qos1(0), &profile(LOSS));
        let lost = verdict(&gate, "lost (at-least-once)");
        assert_eq!(lost.verdict, VerdictKind::Pass, "{lost:?}");
        assert_eq!(lost.measured, "0 of 500,000 expected over 1 workloads");
        // A single lost acknowledged message fails.
        let gate = evaluate(&with_qos1(1), &profile(LOSS));
        assert_eq!(
            verdict(&gate, "lost (at-least-once)").verdict,
            VerdictKind::Fail
        );
    }

    #[test]
    fn kafka_acks_one_is_held_to_zero_loss_whatever_qos_says() {
        let mut r = quick_run(25_000.0, 3_000);
        let mut w = workload("kafka-produce", "fan_in");
        w.protocol = Protocol::Kafka;
        w.topic = "bench-produce".into();
        w.kafka = Some(loadgen::spec::KafkaOptions {
            acks: Some(1),
            ..Default::default()
        });
        assert_eq!(w.qos, 0);
        let mut res = result(&w, 100_000.0, 4_000);
        res.counts.expected = res.counts.sent;
        res.counts.lost = 431_401;
        r.workloads.push(workload_report(
            w,
            vec![repeat(1, Some(res), 30_000_000, 50.0)],
            Status::Ok,
        ));
        let gate = evaluate(&r, &profile(LOSS));
        let lost = verdict(&gate, "lost (at-least-once)");
        assert_eq!(lost.verdict, VerdictKind::Fail);
        assert!(lost.measured.contains("431,401"), "{}", lost.measured);
    }

    #[test]
    fn best_effort_loss_is_a_bounded_fraction_and_duplicates_break_at_most_once() {
        let mut r = quick_run(25_000.0, 3_000);
        // The QoS 0 fan-in: 25,000 msg/s for 10 s expected.
        let fanin = r.workloads[0].repeats[0].result.as_mut().unwrap();
        fanin.counts.expected = 250_000;
        fanin.counts.lost = 37_500; // 15 %, as issue 19 measured
        let gate = evaluate(&r, &profile(LOSS));
        let v = verdict(&gate, "lost (at-most-once)");
        assert_eq!(v.verdict, VerdictKind::Pass, "{v:?}");
        assert_eq!(v.measured, "15 % (fanin: 37,500 of 250,000)");
        assert_eq!(v.limit, "≤ 20 % of expected");
        let fanin = r.workloads[0].repeats[0].result.as_mut().unwrap();
        fanin.counts.lost = 125_000; // half
        let gate = evaluate(&r, &profile(LOSS));
        assert_eq!(
            verdict(&gate, "lost (at-most-once)").verdict,
            VerdictKind::Fail
        );
        // Best-effort loss never counts against the at-least-once row.
        assert_eq!(
            verdict(&gate, "lost (at-least-once)").verdict,
            VerdictKind::NotMeasured
        );

        let mut r = with_qos1(0);
        r.workloads[0].repeats[0]
            .result
            .as_mut()
            .unwrap()
            .counts
            .duplicated = 3;
        let gate = evaluate(&r, &profile(LOSS));
        assert_eq!(verdict(&gate, "duplicated").verdict, VerdictKind::Fail);
        // QoS 1 may redeliver: its duplicates are not judged.
        let mut r = with_qos1(0);
        r.workloads[3].repeats[0]
            .result
            .as_mut()
            .unwrap()
            .counts
            .duplicated = 3;
        r.workloads[3].repeats[0]
            .result
            .as_mut()
            .unwrap()
            .counts
            .out_of_order = 2;
        let gate = evaluate(&r, &profile(LOSS));
        assert_eq!(verdict(&gate, "duplicated").verdict, VerdictKind::Pass);
        let reordered = verdict(&gate, "reordered");
        assert_eq!(reordered.verdict, VerdictKind::Fail);
        assert!(
            reordered.measured.contains("mqtt-qos1"),
            "{}",
            reordered.measured
        );
    }

    #[test]
    fn a_protocol_whose_workloads_were_all_skipped_is_listed_as_not_measured() {
        let mut r = quick_run(25_000.0, 3_000);
        for name in ["amqp-publish", "amqp-latency"] {
            let mut w = workload(name, "fan_in");
            w.protocol = Protocol::Amqp;
            r.workloads.push(workload_report(
                w,
                Vec::new(),
                Status::Skipped {
                    reason: "no AMQP address for the external broker".into(),
                },
            ));
        }
        r.broker.kind = BrokerKind::External;
        let gate = evaluate(
            &r,
            &profile("[connections]\nat_least = 1000\nfrom = \"ci\"\n"),
        );
        let row = gate
            .verdicts
            .iter()
            .find(|v| v.label() == "protocol (amqp)")
            .expect("a row for AMQP");
        assert_eq!(row.verdict, VerdictKind::NotMeasured);
        assert!(
            row.measured.contains("2 workloads skipped"),
            "{}",
            row.measured
        );
        assert!(gate.verdicts.iter().all(|v| v.label() != "protocol (mqtt)"));
        assert_eq!(gate.result, GateResult::Incomplete, "not a pass");
    }

    #[test]
    fn tables_have_a_row_per_threshold() {
        let gate = evaluate(&quick_run(25_000.0, 20_000), &profile(ALL));
        let md = markdown_table(&gate);
        assert!(md.starts_with("| threshold | limit | measured | verdict | from |"));
        assert!(
            md.contains("| p99 latency (mqtt) | < 15 ms | 20.00 ms (lat) | **FAIL** | origin |"),
            "{md}"
        );
        assert_eq!(md.lines().count(), 2 + 6);
        let text = text_table(&gate);
        assert_eq!(text.lines().count(), 1 + 6);
        assert!(text
            .lines()
            .any(|l| l.starts_with("connections") && l.contains("not measured")));
    }

    #[test]
    fn profile_errors_name_file_and_key() {
        let file = Path::new("targets/profiles/bad.toml");
        let err = Profile::parse(file, "[p99_latency]\nbelow = 15\nfrom = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("targets/profiles/bad.toml: line 2 key `p99_latency.below`"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        let err = Profile::parse(file, "[broker_memory]\nbelow = \"60 GiGs\"\nfrom = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.toml") && err.contains("broker_memory.below"),
            "{err}"
        );
        let err = Profile::parse(file, "[cpu]\nbelow_percent = -5\nfrom = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cpu.below_percent"), "{err}");
        let err = Profile::parse(file, "[throughput]\nabove_msg_per_sec = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("table `throughput`") && err.contains("from"),
            "{err}"
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("60 GB"), Ok(60e9));
        assert_eq!(parse_size("1.5 GB"), Ok(1.5e9));
        assert_eq!(parse_size("512 MiB"), Ok(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse_size("5MB"), Ok(5e6));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 MBs").is_err());
    }

    #[test]
    fn shipped_profiles_parse_and_carry_the_design_numbers() {
        let root = crate::infra::cargo::project_root();
        assert_eq!(
            available(&profiles_dir(&root)),
            ["ci", "embedded", "high_perf"]
        );
        let limits = |name: &str| -> Vec<(ThresholdKind, f64)> {
            Profile::load(&root, name)
                .unwrap()
                .thresholds
                .iter()
                .map(|t| (t.kind, t.limit))
                .collect()
        };
        use ThresholdKind::*;
        assert_eq!(
            limits("high_perf"),
            [
                (Connections, 1_000_000.0),
                (Throughput, 400_000.0),
                (P99Latency, 15_000.0),
                (BrokerMemory, 60e9),
                (Cpu, 80.0),
                (LostGuaranteed, 0.0),
                (LostBestEffort, 0.30),
                (Duplicated, 0.0),
                (Reordered, 0.0),
            ]
        );
        assert_eq!(
            limits("embedded"),
            [
                (Connections, 500.0),
                (Throughput, 3_000.0),
                (P99Latency, 150_000.0),
                (BrokerMemory, 1.5e9),
                (BinarySize, 5e6),
                (LostGuaranteed, 0.0),
                (LostBestEffort, 0.30),
                (Duplicated, 0.0),
                (Reordered, 0.0),
            ]
        );
        assert_eq!(limits("ci").len(), 22);
        let err = Profile::load(&root, "mainframe").unwrap_err().to_string();
        assert!(
            err.contains("mainframe") && err.contains("ci, embedded, high_perf"),
            "{err}"
        );
    }

    /// The "how the gate judges" comment block documents the file format
    /// (including `gate_emulated`) and must read the same in every profile.
    #[test]
    fn shipped_profiles_share_the_documentation_block() {
        let root = crate::infra::cargo::project_root();
        let block = |name: &str| -> String {
            let text =
                std::fs::read_to_string(profiles_dir(&root).join(format!("{name}.toml"))).unwrap();
            text.lines()
                .skip_while(|l| !l.starts_with("# How `cargo xtask gate`"))
                .take_while(|l| l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let ci = block("ci");
        assert!(ci.contains("`gate_emulated = true`"), "{ci}");
        assert_eq!(block("embedded"), ci);
        assert_eq!(block("high_perf"), ci);
        for name in ["ci", "embedded", "high_perf"] {
            assert!(!Profile::load(&root, name).unwrap().gate_emulated, "{name}");
        }
    }

    fn fixture(name: &str) -> LoadResult {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        LoadResult::from_json(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Hand-written result files: a completed fan-in at 450K msg/s, a latency
    /// run aborted half way, a 1,000-connection storm; against high_perf.
    #[test]
    fn fixture_results_against_high_perf() {
        let mut workloads = Vec::new();
        for (file, status) in [
            ("fanin-completed.json", Status::Ok),
            (
                "latency-aborted.json",
                Status::Failed {
                    reason: "loadgen aborted: broker closed all connections".into(),
                },
            ),
            ("storm-1000.json", Status::Ok),
        ] {
            let r = fixture(file);
            workloads.push(workload_report(
                r.workload.clone(),
                vec![repeat(1, Some(r), 20_000_000, 10.0)],
                status,
            ));
        }
        let root = crate::infra::cargo::project_root();
        let gate = evaluate(
            &report(workloads),
            &Profile::load(&root, "high_perf").unwrap(),
        );
        let v = |name| verdict(&gate, name).verdict;
        assert_eq!(v("connections"), VerdictKind::NotMeasured);
        assert_eq!(v("throughput"), VerdictKind::Pass);
        assert_eq!(verdict(&gate, "throughput").value, Some(450_000.0));
        // The aborted latency run's p99 (2.4 ms) is under 15 ms, but an
        // aborted run never passes.
        assert_eq!(v("p99 latency"), VerdictKind::Fail);
        assert!(verdict(&gate, "p99 latency")
            .measured
            .contains("mqtt-latency failed"));
        assert_eq!(v("CPU"), VerdictKind::Fail);
        assert_eq!(v("broker memory"), VerdictKind::Fail);
        assert_eq!(gate.result, GateResult::Fail);
    }

    mod cpu_scaled {
        use std::path::Path;

        use crate::analysis::cpu_scale::{cpu_scale, MAX_CPU_SCALE};
        use crate::analysis::gate::evaluate;
        use crate::infra::cpu_reference::CpuReference;
        use crate::model::gate::Profile;
        use crate::model::gate::VerdictKind;
        use crate::model::report::test_support::quick_run;
        use crate::model::report::Report;

        fn profile(reference: Option<f64>, limit: f64) -> Profile {
            let top = reference
                .map(|r| format!("cpu_reference_us_per_round_trip = {r}\n"))
                .unwrap_or_default();
            Profile::parse(
                Path::new("targets/profiles/test.toml"),
                &format!(
                    "{top}[workloads.fanin]\ncpu_us_per_message_below = {limit}\nfrom = \"measured\"\n"
                ),
            )
            .unwrap()
        }

        fn run_with_reference(us: Option<f64>) -> Report {
            let mut run = quick_run(25_000.0, 3_000);
            run.environment.cpu_reference = us.map(|u| CpuReference::of(vec![u], 2_000).unwrap());
            run
        }

        fn fanin_per_msg(run: &Report) -> f64 {
            run.workloads[0].repeats[0]
                .broker_cpu_us_per_message
                .unwrap()
        }

        fn verdict(run: &Report, p: &Profile) -> crate::model::gate::Verdict {
            evaluate(run, p)
                .verdicts
                .into_iter()
                .find(|v| v.label() == "CPU per message (fanin)")
                .unwrap()
        }

        #[test]
        fn a_dearer_machine_scales_cpu_thresholds_by_the_reference_ratio() {
            let run = run_with_reference(Some(50.0));
            let per_msg = fanin_per_msg(&run);
            // The figure is 1.5x the limit: fails unscaled, passes on a machine
            // whose round trip costs 2x the profile's.
            let limit = per_msg / 1.5;
            let p = profile(Some(25.0), limit);
            assert_eq!(cpu_scale(&run, &p), 2.0);
            let v = verdict(&run, &p);
            assert_eq!(v.verdict, VerdictKind::Pass, "{v:?}");
            assert!(v.limit.contains("x 2.00"), "{v:?}");
            assert!(v.from.contains("CPU reference"), "{v:?}");
            // The same run without a profile reference, or without its own,
            // is judged against the limit as written: it fails.
            assert_eq!(
                verdict(&run, &profile(None, limit)).verdict,
                VerdictKind::Fail
            );
            let bare = run_with_reference(None);
            assert_eq!(cpu_scale(&bare, &p), 1.0);
            assert_eq!(verdict(&bare, &p).verdict, VerdictKind::Fail);
            // A regression beyond the scaled limit still fails: 1.5x the figure
            // against a 2x machine with the limit at a third of the figure.
            let v = verdict(&run, &profile(Some(25.0), per_msg / 3.0));
            assert_eq!(v.verdict, VerdictKind::Fail, "{v:?}");
        }

        #[test]
        fn a_faster_machine_keeps_the_limits_and_the_scale_is_capped() {
            let p = profile(Some(25.0), 1.0);
            assert_eq!(cpu_scale(&run_with_reference(Some(10.0)), &p), 1.0);
            let v = verdict(&run_with_reference(Some(10.0)), &p);
            assert_eq!(v.limit, "< 1.00 µs/msg", "unscaled text: {v:?}");
            let hog = run_with_reference(Some(1_000.0));
            assert_eq!(cpu_scale(&hog, &p), MAX_CPU_SCALE);
            assert!(verdict(&hog, &p).limit.contains("(capped)"));
            // Under emulation the host's reference says nothing of the emulator.
            let mut emulated = run_with_reference(Some(50.0));
            emulated.environment.emulated = true;
            assert_eq!(cpu_scale(&emulated, &p), 1.0);
        }
    }
}
