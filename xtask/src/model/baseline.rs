//! Baselines: the numbers of a bench run that `compare` and the regression
//! gate need (per workload and metric, one value per repeat; no histograms),
//! small enough to commit as `reports/baselines/<target triple>.json`; also
//! either side of a comparison loaded from a run, report.json or baseline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::model::micro::MicroSection;

use anyhow::bail;
use loadgen::Scenario;
use serde::{Deserialize, Serialize};

use crate::infra::environment::Environment;
use crate::model::metric::METRICS;
use crate::model::report::RepeatReport;
use crate::model::report::Report;

/// Loads a run directory, report.json or baseline file as numbers to compare.
pub fn load_side(path: &Path) -> Result<Baseline> {
    let file = crate::model::report::report_file(path);
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read {} (give a bench run directory, its report.json or a baseline file)",
            file.display()
        )
    })?;
    if Baseline::is_baseline(&text) {
        Baseline::from_json(&text).with_context(|| format!("{}", file.display()))
    } else {
        let report = crate::model::report::Report::from_json(&text)
            .with_context(|| format!("{}", file.display()))?;
        Ok(Baseline::of(&report, String::new()))
    }
}

pub(crate) fn describe(side: &Baseline) -> String {
    let e = &side.environment;
    let what = match &side.micro {
        Some(m) if side.workloads.is_empty() => format!(
            "micro-benchmarks ({} from {})",
            m.benchmarks.len(),
            m.executables.join(", ")
        ),
        _ => format!(
            "suite {}, {} repeat{}",
            side.suite,
            side.repeat,
            if side.repeat == 1 { "" } else { "s" }
        ),
    };
    format!(
        "{} {} on {} ({}, {} cores), {what}",
        e.target_triple,
        if e.emulated {
            format!("emulated by {}", e.runner)
        } else {
            "native".into()
        },
        e.hostname,
        e.cpu_model,
        e.cores,
    )
}

pub const BASELINE_SCHEMA_VERSION: u32 = 1;
pub(crate) const KIND: &str = "bench-baseline";

/// A run reduced to its compared numbers. Also what `compare` reads a full
/// report as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub schema_version: u32,
    /// Always `bench-baseline`: tells a baseline from a report.
    pub kind: String,
    /// Where the numbers come from, for people: machine, suite, command.
    pub about: String,
    /// The run the numbers were taken from.
    pub run_id: String,
    pub environment: Environment,
    /// Broker kind and version.
    pub broker: String,
    pub suite: String,
    pub repeat: u32,
    pub workloads: Vec<WorkloadNumbers>,
    /// A micro run's criterion estimates, as the report has them (for `compare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro: Option<MicroSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadNumbers {
    pub name: String,
    pub scenario: String,
    /// `ok`, `failed: …`, `not run: …`.
    pub status: String,
    /// Metric key (see `crate::model::metric::METRICS`) → one value per repeat that
    /// produced a result. Units: msg/s, µs, bytes, % of the machine, counts.
    pub metrics: BTreeMap<String, Vec<f64>>,
    /// `--sweep` points of a `rate = "max"` workload, for compare's chart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<crate::model::max_rate::SweepPoint>,
}

/// The value of a metric in one repeat, if that repeat measured it.
pub fn metric_value(key: &str, r: &RepeatReport) -> Option<f64> {
    let res = r.result.as_ref()?;
    let e2e = res.latency.end_to_end.as_ref();
    match key {
        "received_per_sec" => Some(res.rates.received_per_sec),
        "e2e_p50_us" => e2e.map(|l| l.p50_us as f64),
        "e2e_p99_us" => e2e.map(|l| l.p99_us as f64),
        "broker_peak_rss_bytes" => r.broker_peak_rss_bytes.map(|b| b as f64),
        "broker_cpu_percent" => r.broker_usage.map(|u| u.avg_cpu_machine_percent),
        "broker_cpu_us_per_msg" => r.broker_cpu_us_per_message,
        "broker_cpu_us_per_conn" => r.broker_cpu_us_per_connection,
        "connections_established" => {
            (res.connections.attempted > 0).then_some(res.connections.established as f64)
        }
        "lost" => Some(res.counts.lost as f64),
        _ => None,
    }
}

impl Baseline {
    pub fn of(report: &Report, about: String) -> Baseline {
        let workloads = report
            .workloads
            .iter()
            .map(|w| {
                let mut metrics = BTreeMap::new();
                for m in &METRICS {
                    // Connection storms exist to connect: their message
                    // numbers are incidental.
                    if w.workload.scenario == Scenario::ConnectionStorm
                        && m.key != "connections_established"
                        && m.key != "broker_peak_rss_bytes"
                        && m.key != "broker_cpu_us_per_conn"
                    {
                        continue;
                    }
                    // Unpaced workloads use whatever CPU they get (the
                    // threshold gate skips them for CPU too): their CPU says
                    // how busy the machine was, not how efficient the broker is.
                    if m.key == "broker_cpu_percent" && w.workload.total_rate() == 0 {
                        continue;
                    }
                    // Best-effort delivery (MQTT QoS 0, Kafka acks=0, AMQP
                    // without confirms or persistence) may drop under load
                    // by design: its `lost` is judged as a fraction by the
                    // gate, not held to a count here. Every other guarantee
                    // (Kafka acks=1/all too, whatever `qos` says) is.
                    if m.key == "lost" && !w.workload.delivery().forbids_loss() {
                        continue;
                    }
                    let values: Vec<f64> = if m.key == "max_sustainable_per_sec" {
                        let found = w.max_rate.as_ref().and_then(|x| x.found_per_sec);
                        found.map(|f| f as f64).into_iter().collect()
                    } else {
                        w.repeats
                            .iter()
                            .filter_map(|r| metric_value(m.key, r))
                            .filter(|v| v.is_finite())
                            .collect()
                    };
                    if !values.is_empty() {
                        metrics.insert(m.key.to_string(), values);
                    }
                }
                WorkloadNumbers {
                    name: w.name.clone(),
                    scenario: w.workload.scenario.as_str().to_string(),
                    status: w.status.describe(),
                    metrics,
                    sweep: w
                        .max_rate
                        .as_ref()
                        .map(|m| m.sweep.clone())
                        .unwrap_or_default(),
                }
            })
            .collect();
        Baseline {
            schema_version: BASELINE_SCHEMA_VERSION,
            kind: KIND.into(),
            about,
            run_id: report.run_id.clone(),
            environment: report.environment.clone(),
            broker: format!(
                "{} {}",
                report.broker.kind.as_str(),
                report.broker.version.as_deref().unwrap_or("")
            )
            .trim()
            .to_string(),
            suite: report.suite.clone(),
            repeat: report.repeat,
            workloads,
            micro: report.micro.clone(),
        }
    }

    /// Whether JSON text is a baseline (rather than a report).
    pub fn is_baseline(text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(|k| k == KIND))
            .unwrap_or(false)
    }

    pub fn from_json(text: &str) -> Result<Baseline> {
        let value: serde_json::Value =
            serde_json::from_str(text).context("not a baseline (invalid JSON)")?;
        let version = value.get("schema_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(BASELINE_SCHEMA_VERSION)) {
            bail!(
                "baseline schema_version {version:?} is not {BASELINE_SCHEMA_VERSION}: written by another xtask version"
            );
        }
        serde_json::from_value(value).context("malformed baseline")
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("baselines serialize") + "\n"
    }
}

/// Where `baseline` writes by default: `reports/baselines/<triple>.json`,
/// with `-emulated` for runs under emulation so they never pass for native.
pub fn default_file(root: &Path, env: &Environment) -> PathBuf {
    let name = if env.emulated {
        format!("{}-emulated.json", env.target_triple)
    } else {
        format!("{}.json", env.target_triple)
    };
    root.join("reports/baselines").join(name)
}
