//! Running a `rate = "max"` workload: the search as short loadgen runs at
//! fixed rates, the service run at half the found rate (the workload's
//! repeats), and `--sweep`'s runs at fractions of the found rate.

use std::path::Path;

use loadgen::Workload;

use crate::analysis::max_rate::{judge, outcome_of, search, sweep_rates};
use crate::infra::launcher::RunningBroker;
use crate::infra::loadgen::RunContext;
use crate::infra::sampler::Sampler;
use crate::model::max_rate::{MaxRateSection, SearchSpec, SearchStep, StepOutcome, SweepPoint};
use crate::model::report::{RepeatReport, Status};
use crate::model::suite::PlannedWorkload;
use crate::render::max_rate::{step_line, summary_line};

use super::Options;

/// What a searched workload leaves for the report.
pub(super) struct MaxRun {
    pub(super) status: Status,
    pub(super) repeats: Vec<RepeatReport>,
    pub(super) section: MaxRateSection,
    /// The workload as the service run ran it (its rate is set).
    pub(super) service: Workload,
}

/// The broker and sampler a run shares, and where a broker death is noted.
pub(super) struct Live<'a> {
    pub(super) broker: &'a mut RunningBroker,
    pub(super) sampler: Option<&'a Sampler>,
    pub(super) broker_exit: &'a mut Option<String>,
}

pub(super) fn run(
    context: &RunContext<'_>,
    options: &Options,
    label: &str,
    (p, file, spec): (&PlannedWorkload, &Path, &SearchSpec),
    live: Live<'_>,
) -> MaxRun {
    let Live {
        broker,
        sampler,
        broker_exit,
    } = live;
    let name = &p.workload.name;
    let mut short = |step_name: String, rate: u64| -> (StepOutcome, String) {
        short_run(
            context,
            p,
            spec,
            (&step_name, rate),
            broker,
            sampler,
            broker_exit,
        )
    };
    let (found, found_by, stopped, steps) = match options.sweep_max {
        Some(rate) => (
            Some(rate),
            "--sweep-max",
            format!("given by --sweep-max {rate}"),
            Vec::new(),
        ),
        None => {
            println!(
                "==> {label} ({}): searching the maximum sustainable rate from {} msg/s ({} s steps)",
                p.workload.scenario.as_str(),
                spec.start_per_sec,
                spec.step_secs
            );
            let mut files = Vec::new();
            let result = search(spec, |rate| {
                let n = files.len() + 1;
                let (outcome, file) = short(format!("{name}-step{n:02}"), rate);
                files.push(file);
                let step = SearchStep {
                    rate_per_sec: rate,
                    verdict: judge(spec, &outcome),
                    outcome: outcome.clone(),
                    result_file: String::new(),
                };
                println!("    {}", step_line(n, &step));
                outcome
            });
            let steps = result
                .steps
                .into_iter()
                .zip(files)
                .map(|(s, f)| SearchStep {
                    result_file: f,
                    ..s
                })
                .collect();
            (result.found_per_sec, "search", result.stopped, steps)
        }
    };
    let mut section = MaxRateSection {
        found_per_sec: found,
        found_by: found_by.into(),
        stopped,
        service_rate_per_sec: found.map(|f| (f / 2).max(1)),
        search: spec.clone(),
        steps,
        sweep: Vec::new(),
    };
    println!("    {}", summary_line(&section));

    let mut service = p.workload.clone();
    let Some(service_rate) = section.service_rate_per_sec else {
        let reason = section.steps.first().map_or_else(
            || "no step ran".to_string(),
            |s| {
                format!(
                    "no sustainable rate: the first step ({} msg/s) was not sustained ({})",
                    s.rate_per_sec,
                    s.verdict.text()
                )
            },
        );
        return MaxRun {
            status: Status::Failed { reason },
            repeats: Vec::new(),
            section,
            service,
        };
    };
    service.rate = service_rate;
    service.description = format!(
        "{} [service run: 50 % of the maximum sustainable rate {} msg/s]",
        service.description,
        found.unwrap_or(0)
    );
    let planned = PlannedWorkload {
        source: p.source.clone(),
        workload: service.clone(),
        search: None,
    };
    if let Err(e) = write_workload(file, &service, "service run of a rate = \"max\" workload") {
        return MaxRun {
            status: Status::Failed {
                reason: format!("{e:#}"),
            },
            repeats: Vec::new(),
            section,
            service,
        };
    }
    let (status, repeats) = if broker_exit.is_some() {
        (
            Status::NotRun {
                reason: "the broker exited during the search".into(),
            },
            Vec::new(),
        )
    } else {
        super::run_workload(
            context,
            options,
            label,
            (&planned, file),
            broker,
            sampler,
            broker_exit,
        )
    };

    if let (Some(fractions), Some(max)) = (&options.sweep, found) {
        println!(
            "==> {label}: sweep at {} of {max} msg/s",
            fraction_list(fractions)
        );
        for (fraction, rate) in sweep_rates(max, fractions) {
            let pct = (fraction * 100.0).round() as u64;
            let (outcome, result_file) = short_run(
                context,
                p,
                spec,
                (&format!("{name}-sweep{pct:03}"), rate),
                broker,
                sampler,
                broker_exit,
            );
            println!(
                "    {pct} %: {} msg/s → p50 {:?} µs p99 {:?} µs p99.9 {:?} µs{}",
                rate,
                outcome.p50_us,
                outcome.p99_us,
                outcome.p999_us,
                outcome
                    .failure
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            );
            section.sweep.push(SweepPoint {
                fraction,
                rate_per_sec: rate,
                outcome,
                result_file,
            });
        }
    }
    MaxRun {
        status,
        repeats,
        section,
        service,
    }
}

fn fraction_list(fractions: &[f64]) -> String {
    fractions
        .iter()
        .map(|f| format!("{}", f))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One short run at `rate` (a search step or sweep point): its outcome and
/// result file. After the broker died, a failed outcome without running.
fn short_run(
    context: &RunContext<'_>,
    p: &PlannedWorkload,
    spec: &SearchSpec,
    (step_name, rate): (&str, u64),
    broker: &mut RunningBroker,
    sampler: Option<&Sampler>,
    broker_exit: &mut Option<String>,
) -> (StepOutcome, String) {
    let failed = |reason: String| StepOutcome {
        offered_per_sec: rate as f64,
        failure: Some(reason),
        ..StepOutcome::default()
    };
    if let Some(how) = broker_exit.clone().or_else(|| broker.exited()) {
        *broker_exit = Some(how.clone());
        return (failed(format!("broker {how}")), String::new());
    }
    let mut w = p.workload.clone();
    w.name = step_name.to_string();
    w.rate = rate;
    w.duration_secs = spec.step_secs;
    w.warmup_secs = w.warmup_secs.min(1.0);
    let file = context
        .run_dir
        .join("workloads")
        .join(format!("{step_name}.toml"));
    if let Err(e) = write_workload(&file, &w, "one step of a rate = \"max\" search") {
        return (failed(format!("{e:#}")), String::new());
    }
    let planned = PlannedWorkload {
        source: p.source.clone(),
        workload: w,
        search: None,
    };
    let (report, death) = context.run_repeat(&planned, &file, 1, broker, sampler);
    if let Some(how) = death {
        println!("    broker {how}: the search stops");
        *broker_exit = Some(how);
    }
    (outcome_of(rate, &report), report.result_file)
}

fn write_workload(file: &Path, w: &Workload, what: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = format!(
        "# Effective workload: {what}, at {} msg/s.\n{}",
        w.rate,
        toml::to_string(w).context("serializing a workload")?
    );
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))
}
