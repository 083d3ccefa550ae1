//! The bench report `report.json`: its schema (versioned), loading and
//! saving. Everything that renders or judges a run reads it through here.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use loadgen::result::LatencySummary;
use loadgen::{LoadResult, Outcome, Workload};
use serde::{Deserialize, Serialize};

use crate::infra::environment::Environment;
use crate::infra::sampler::Sample;
use crate::infra::sampler::Usage;
use crate::model::broker::{BrokerInfo, BrokerKind};
use crate::model::gate::GateReport;
use crate::model::micro::MicroSection;

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
    /// `rate = "max"` workloads: the search; the repeats are the service run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<crate::model::max_rate::MaxRateSection>,
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
    /// Broker CPU seconds (user + system) over the measured window.
    #[serde(default)]
    pub broker_cpu_secs: Option<f64>,
    /// Broker CPU microseconds per message delivered in the measured window
    /// (`counts.delivered`): the efficiency figure, stable where "% of the
    /// machine" moves with what else runs. None when nothing was delivered.
    #[serde(default)]
    pub broker_cpu_us_per_message: Option<f64>,
    /// Connection storms: broker CPU microseconds per established
    /// connection, over the whole storm (connect, hold, close).
    #[serde(default)]
    pub broker_cpu_us_per_connection: Option<f64>,
}

/// `3.17 µs/msg`, or `52.4 µs/conn` for a storm; None without either.
pub fn cpu_per_work_text(per_message: Option<f64>, per_connection: Option<f64>) -> Option<String> {
    use crate::model::units::cpu_micros;
    match (per_message, per_connection) {
        (Some(m), _) => Some(format!("{}/msg", cpu_micros(m))),
        (None, Some(c)) => Some(format!("{}/conn", cpu_micros(c))),
        (None, None) => None,
    }
}

/// Broker CPU microseconds per unit of work (message or connection); None
/// without CPU figures or without work.
pub fn cpu_us_per(cpu_secs: Option<f64>, work: u64) -> Option<f64> {
    cpu_secs.filter(|_| work > 0).map(|s| s * 1e6 / work as f64)
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
    /// Broker CPU, % of the cores the run could use, averaged over the measured window.
    pub broker_avg_cpu_percent: Option<Spread>,
    /// loadgen CPU, % of the cores the run could use.
    pub loadgen_cpu_percent: Option<Spread>,
    /// Broker CPU µs per delivered message (per connection for storms).
    #[serde(default)]
    pub broker_cpu_us_per_message: Option<Spread>,
    #[serde(default)]
    pub broker_cpu_us_per_connection: Option<Spread>,
}

impl Summary {
    /// Broker CPU per unit of work, median: `3.17 µs/msg`, or `52.4 µs/conn`
    /// for a storm; `–` without CPU figures or deliveries.
    pub fn cpu_per_work_text(&self) -> String {
        cpu_per_work_text(
            self.broker_cpu_us_per_message.map(|s| s.median),
            self.broker_cpu_us_per_connection.map(|s| s.median),
        )
        .unwrap_or_else(|| "–".into())
    }

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
            broker_cpu_us_per_message: of(&|r, _| r.broker_cpu_us_per_message),
            broker_cpu_us_per_connection: of(&|r, _| r.broker_cpu_us_per_connection),
        })
    }
}

/// A run directory's `report.json`, or the file itself.
pub fn report_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("report.json")
    } else {
        path.to_path_buf()
    }
}

impl Report {
    /// Reads a report from a run directory or a `report.json` path.
    pub fn load(path: &Path) -> Result<Report> {
        let file = report_file(path);
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
/// A report holding only a micro section: no broker was started, no load
/// workloads ran and nothing is gated (micro numbers are not thresholds).
pub fn micro_report(
    run_id: String,
    environment: Environment,
    micro: MicroSection,
    started_at: String,
    finished_at: String,
) -> Report {
    Report {
        schema_version: REPORT_SCHEMA_VERSION,
        run_id,
        environment,
        broker: BrokerInfo {
            kind: BrokerKind::None,
            binary: None,
            binary_size_bytes: None,
            address: String::new(),
            kafka_address: None,
            amqp_address: None,
            pid: None,
            config: None,
            version: None,
            platform: None,
            log: None,
        },
        suite: "micro".into(),
        profile: "none".into(),
        repeat: 1,
        started_at,
        finished_at,
        broker_exit: None,
        broker_usage: None,
        workloads: Vec::new(),
        gate: None,
        micro: Some(micro),
    }
}

// ---- rendering --------------------------------------------------------------

#[cfg(test)]
pub(crate) mod test_support {
    //! Fixtures other modules' tests build on.

    use super::*;
    use crate::model::broker::BrokerKind;
    use crate::model::report::REPORT_SCHEMA_VERSION;
    use loadgen::result::{ConnectionStats, Counts, Latencies, Rates, SelfUsage};

    pub(crate) fn workload(name: &str, scenario: &str) -> Workload {
        let extra = if scenario == "connection_storm" {
            "idle_connections = 1000\n"
        } else {
            "publishers = 2\nsubscribers = 1\n"
        };
        let mut w = Workload::parse(&format!(
            "description = \"test {name}\"\nprotocol = \"mqtt\"\nscenario = \"{scenario}\"\n{extra}"
        ))
        .unwrap();
        w.name = name.into();
        w
    }

    pub(crate) fn latency(p50: u64, p99: u64) -> LatencySummary {
        LatencySummary {
            count: 1000,
            min_us: p50 / 2,
            mean_us: p50 as f64,
            p50_us: p50,
            p90_us: (p50 + p99) / 2,
            p99_us: p99,
            p999_us: p99 * 2,
            p9999_us: p99 * 3,
            max_us: p99 * 4,
            histogram: String::new(),
        }
    }

    pub(crate) fn result(w: &Workload, received_per_sec: f64, p99_us: u64) -> LoadResult {
        LoadResult {
            schema_version: loadgen::RESULT_SCHEMA_VERSION,
            workload: w.clone(),
            target: "127.0.0.1:1883".into(),
            started_at: "2025-01-01T00:00:00Z".into(),
            measured_secs: w.duration_secs,
            outcome: Outcome::Completed,
            error: None,
            counts: Counts {
                sent: (received_per_sec * w.duration_secs) as u64,
                received: (received_per_sec * w.duration_secs) as u64,
                delivered: (received_per_sec * w.duration_secs) as u64,
                expected: (received_per_sec * w.duration_secs) as u64,
                ..Counts::default()
            },
            rates: Rates {
                offered_per_sec: 0.0,
                sent_per_sec: received_per_sec,
                acked_per_sec: 0.0,
                received_per_sec,
            },
            latency: Latencies {
                end_to_end: Some(latency(p99_us / 4, p99_us)),
                publish_delay: Some(latency(10, 50)),
                ack: None,
            },
            connections: ConnectionStats {
                attempted: 3,
                established: 3,
                time_to_establish_secs: 0.05,
                ..ConnectionStats::default()
            },
            timeline: Vec::new(),
            errors: Default::default(),
            loadgen: SelfUsage {
                cpu_user_secs: 1.0,
                cpu_system_secs: 0.5,
                max_rss_bytes: 20_000_000,
            },
        }
    }

    pub(crate) fn repeat(n: u32, result: Option<LoadResult>, rss: u64, cpu: f64) -> RepeatReport {
        let usage = Usage {
            samples: 4,
            peak_rss_bytes: rss,
            avg_cpu_machine_percent: cpu,
            peak_cpu_machine_percent: cpu * 1.5,
            avg_cpu_core_percent: cpu * 2.0,
            peak_cpu_core_percent: cpu * 3.0,
        };
        // `cpu` % of a 2-core machine over the 2 s window.
        let cpu_secs = Some(cpu / 100.0 * 2.0 * 2.0);
        let per_message = result
            .as_ref()
            .and_then(|r| cpu_us_per(cpu_secs, r.counts.delivered));
        RepeatReport {
            repeat: n,
            result_file: format!("results/x-{n}.json"),
            log_file: format!("logs/x-{n}.log"),
            loadgen_exit: Some("exited with code 0".into()),
            failure: None,
            started: 0.0,
            ended: 3.0,
            measured_from: 1.0,
            measured_to: 3.0,
            result,
            broker_samples: Vec::new(),
            broker_usage: Some(usage),
            broker_peak_rss_bytes: Some(rss),
            loadgen_cpu_percent: Some(12.5),
            broker_cpu_secs: cpu_secs,
            broker_cpu_us_per_message: per_message,
            broker_cpu_us_per_connection: None,
        }
    }

    pub(crate) fn workload_report(
        w: Workload,
        repeats: Vec<RepeatReport>,
        status: Status,
    ) -> WorkloadReport {
        WorkloadReport {
            name: w.name.clone(),
            source: format!("bench/workloads/{}.toml", w.name),
            effective_file: format!("workloads/{}.toml", w.name),
            summary: Summary::of(&repeats),
            workload: w,
            status,
            repeats,
            max_rate: None,
        }
    }

    pub(crate) fn report(workloads: Vec<WorkloadReport>) -> Report {
        Report {
            schema_version: REPORT_SCHEMA_VERSION,
            run_id: "20250101T000000Z-x86_64-unknown-linux-gnu".into(),
            environment: Environment {
                git_revision: Some("abc123".into()),
                git_dirty: false,
                host_triple: "x86_64-unknown-linux-gnu".into(),
                target_triple: "x86_64-unknown-linux-gnu".into(),
                runner: "native".into(),
                emulated: false,
                cpu_model: "Test CPU".into(),
                cores: 2,
                usable_cores: 2,
                memory_bytes: 8_000_000_000,
                kernel: "6.1.0".into(),
                os: "Debian GNU/Linux 12 (bookworm)".into(),
                rustc: "rustc 1.85.0".into(),
                timestamp: "2025-01-01T00:00:00Z".into(),
                hostname: "testhost".into(),
                cpu_features: vec!["sse4.2".into(), "avx2".into()],
                cpu_reference: None,
            },
            broker: BrokerInfo {
                kind: BrokerKind::Built,
                binary: Some("target/release/broker".into()),
                binary_size_bytes: Some(3_500_000),
                address: "127.0.0.1:40000".into(),
                kafka_address: Some("127.0.0.1:40001".into()),
                amqp_address: Some("127.0.0.1:40002".into()),
                pid: Some(1234),
                config: Some("[mqtt]\n".into()),
                version: Some("broker 0.1.0".into()),
                platform: None,
                log: Some("broker.log".into()),
            },
            suite: "quick".into(),
            profile: "ci".into(),
            repeat: 1,
            started_at: "2025-01-01T00:00:00Z".into(),
            finished_at: "2025-01-01T00:00:30Z".into(),
            broker_exit: None,
            broker_usage: Some(Usage {
                samples: 100,
                peak_rss_bytes: 50_000_000,
                ..Usage::default()
            }),
            workloads,
            gate: None,
            micro: None,
        }
    }

    pub(crate) fn quick_run(fanin_rate: f64, p99_us: u64) -> Report {
        let fanin = workload("fanin", "fan_in");
        let lat = workload("lat", "latency");
        let storm = workload("storm", "connection_storm");
        let mut storm_result = result(&storm, 0.0, 1);
        storm_result.connections.attempted = 1_000;
        storm_result.connections.established = 1_000;
        storm_result.latency.end_to_end = None;
        report(vec![
            workload_report(
                fanin.clone(),
                vec![repeat(
                    1,
                    Some(result(&fanin, fanin_rate, 9_000)),
                    40_000_000,
                    90.0,
                )],
                Status::Ok,
            ),
            workload_report(
                lat.clone(),
                vec![repeat(
                    1,
                    Some(result(&lat, 1_000.0, p99_us)),
                    30_000_000,
                    5.0,
                )],
                Status::Ok,
            ),
            workload_report(
                storm.clone(),
                vec![repeat(1, Some(storm_result), 45_000_000, 20.0)],
                Status::Ok,
            ),
        ])
    }
}
