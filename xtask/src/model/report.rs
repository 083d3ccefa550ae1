//! The bench report: `report.json` (schema below, read back by `gate`) and
//! its Markdown rendering `report.md`; `cargo xtask report <run>` re-renders
//! `report.md` and `report.html` from the JSON.

use std::path::Path;

use anyhow::{bail, Context, Result};
use loadgen::result::LatencySummary;
use loadgen::{LoadResult, Outcome, Workload};
use serde::{Deserialize, Serialize};

use crate::infra::environment::Environment;
use crate::model::gate::GateReport;
use crate::model::broker::BrokerInfo;
use crate::model::micro::MicroSection;
use crate::infra::sampler::Sample;
use crate::infra::sampler::Usage;

/// Bumped on any incompatible change of [`Report`].
pub const REPORT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// The run directory's name: `<UTC timestamp>-<host triple>`.
    pub run_id: String,
    pub environment: Environment,
    pub broker: BrokerInfo,
    /// Suite name, or `custom` when `--workload` files replaced the suite.
    pub suite: String,
    /// Threshold profile the gate verdicts below were taken against.
    pub profile: String,
    /// Runs per workload (`--repeat`).
    pub repeat: u32,
    pub started_at: String,
    pub finished_at: String,
    /// How the broker ended, if it exited while load was running.
    pub broker_exit: Option<String>,
    /// Broker usage over the whole run (every sample, between workloads too).
    pub broker_usage: Option<Usage>,
    pub workloads: Vec<WorkloadReport>,
    pub gate: Option<GateReport>,
    /// Criterion micro-benchmarks (`cargo xtask micro`); absent in load runs
    /// and in reports written before micro existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro: Option<MicroSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadReport {
    pub name: String,
    /// The workload file the run started from.
    pub source: String,
    /// The effective workload (after suite and command-line overrides) as
    /// written into the run directory, relative to it.
    pub effective_file: String,
    pub workload: Workload,
    pub status: Status,
    pub repeats: Vec<RepeatReport>,
    /// Min/median/max across repeats; None when no repeat produced a result.
    pub summary: Option<Summary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed {
        reason: String,
    },
    /// Planned but did not run because something went wrong (the broker died).
    NotRun {
        reason: String,
    },
    /// Not applicable to the broker under test (it has no listener for the
    /// workload's protocol): excluded from the gate, which then says
    /// `not measured` for what only this workload would have exercised.
    Skipped {
        reason: String,
    },
}

impl Status {
    pub fn is_ok(&self) -> bool {
        matches!(self, Status::Ok)
    }

    pub fn is_skipped(&self) -> bool {
        matches!(self, Status::Skipped { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Status::Ok => "ok".into(),
            Status::Failed { reason } => format!("failed: {reason}"),
            Status::NotRun { reason } => format!("not run: {reason}"),
            Status::Skipped { reason } => format!("skipped: {reason}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepeatReport {
    /// 1-based.
    pub repeat: u32,
    /// Relative to the run directory.
    pub result_file: String,
    pub log_file: String,
    /// How the loadgen process ended.
    pub loadgen_exit: Option<String>,
    /// Why this repeat counts as failed, if it does.
    pub failure: Option<String>,
    /// Seconds since the run started: loadgen started and ended.
    pub started: f64,
    pub ended: f64,
    /// The measured window (warm-up and drain excluded) as estimated from
    /// the result, seconds since the run started; CPU figures cover it.
    pub measured_from: f64,
    pub measured_to: f64,
    /// loadgen's result file, embedded whole.
    pub result: Option<LoadResult>,
    /// Broker samples while loadgen ran.
    pub broker_samples: Vec<Sample>,
    /// Broker CPU over the measured window.
    pub broker_usage: Option<Usage>,
    /// Broker peak RSS while loadgen ran (connect and drain included).
    pub broker_peak_rss_bytes: Option<u64>,
    /// loadgen's CPU time (its SelfUsage) over its wall time, % of the machine.
    pub loadgen_cpu_percent: Option<f64>,
}

/// Smallest, median and largest value across repeats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// None for no values. The median of an even count is the mean of the middle two.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            min: v[0],
            median,
            max: v[n - 1],
        })
    }
}

/// Across the repeats that produced a result. Latencies in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Repeats the numbers come from.
    pub repeats: usize,
    /// Some of them were aborted: their numbers are partial.
    pub partial: bool,
    pub sent_per_sec: Option<Spread>,
    pub received_per_sec: Option<Spread>,
    pub acked_per_sec: Option<Spread>,
    pub e2e_p50_us: Option<Spread>,
    pub e2e_p99_us: Option<Spread>,
    pub e2e_p999_us: Option<Spread>,
    pub e2e_max_us: Option<Spread>,
    pub publish_delay_p99_us: Option<Spread>,
    pub connections_established: Option<Spread>,
    pub connection_time_secs: Option<Spread>,
    pub lost: Option<Spread>,
    pub duplicated: Option<Spread>,
    pub out_of_order: Option<Spread>,
    pub broker_peak_rss_bytes: Option<Spread>,
    /// Broker CPU, % of the whole machine, averaged over the measured window.
    pub broker_avg_cpu_percent: Option<Spread>,
    /// loadgen CPU, % of the whole machine.
    pub loadgen_cpu_percent: Option<Spread>,
}

impl Summary {
    pub fn of(repeats: &[RepeatReport]) -> Option<Summary> {
        let with: Vec<(&RepeatReport, &LoadResult)> = repeats
            .iter()
            .filter_map(|r| r.result.as_ref().map(|res| (r, res)))
            .collect();
        if with.is_empty() {
            return None;
        }
        let of = |f: &dyn Fn(&RepeatReport, &LoadResult) -> Option<f64>| {
            Spread::of(with.iter().filter_map(|(r, res)| f(r, res)))
        };
        let e2e = |pick: fn(&LatencySummary) -> u64| {
            move |_: &RepeatReport, res: &LoadResult| {
                res.latency.end_to_end.as_ref().map(|l| pick(l) as f64)
            }
        };
        let connected = |res: &LoadResult| res.connections.attempted > 0;
        Some(Summary {
            repeats: with.len(),
            partial: with.iter().any(|(_, res)| res.outcome == Outcome::Aborted),
            sent_per_sec: of(&|_, res| Some(res.rates.sent_per_sec)),
            received_per_sec: of(&|_, res| Some(res.rates.received_per_sec)),
            acked_per_sec: of(&|_, res| Some(res.rates.acked_per_sec)),
            e2e_p50_us: of(&e2e(|l| l.p50_us)),
            e2e_p99_us: of(&e2e(|l| l.p99_us)),
            e2e_p999_us: of(&e2e(|l| l.p999_us)),
            e2e_max_us: of(&e2e(|l| l.max_us)),
            publish_delay_p99_us: of(&|_, res| {
                res.latency.publish_delay.as_ref().map(|l| l.p99_us as f64)
            }),
            connections_established: of(&|_, res| {
                connected(res).then_some(res.connections.established as f64)
            }),
            connection_time_secs: of(&|_, res| {
                connected(res).then_some(res.connections.time_to_establish_secs)
            }),
            lost: of(&|_, res| Some(res.counts.lost as f64)),
            duplicated: of(&|_, res| Some(res.counts.duplicated as f64)),
            out_of_order: of(&|_, res| Some(res.counts.out_of_order as f64)),
            broker_peak_rss_bytes: of(&|r, _| r.broker_peak_rss_bytes.map(|b| b as f64)),
            broker_avg_cpu_percent: of(&|r, _| r.broker_usage.map(|u| u.avg_cpu_machine_percent)),
            loadgen_cpu_percent: of(&|r, _| r.loadgen_cpu_percent),
        })
    }
}

impl Report {
    /// Reads a report from a run directory or a `report.json` path.
    pub fn load(path: &Path) -> Result<Report> {
        let file = if path.is_dir() {
            path.join("report.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "cannot read {} (give a bench run directory or its report.json)",
                file.display()
            )
        })?;
        Report::from_json(&text).with_context(|| format!("{}", file.display()))
    }

    pub fn from_json(text: &str) -> Result<Report> {
        let value: serde_json::Value =
            serde_json::from_str(text).context("not a bench report (invalid JSON)")?;
        let version = value.get("schema_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(REPORT_SCHEMA_VERSION)) {
            bail!(
                "report schema_version {version:?} is not {REPORT_SCHEMA_VERSION}: written by another xtask version"
            );
        }
        serde_json::from_value(value).context("malformed bench report")
    }

    /// Whether load workloads ran (a `cargo xtask micro` run has none).
    pub fn has_load(&self) -> bool {
        !self.workloads.is_empty() || self.micro.is_none()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize")
    }
}

