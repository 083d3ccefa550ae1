//! An interleaved A/B run's result (`ab.json` in its run directory): per
//! workload and metric the paired numbers of the base and the candidate
//! broker, the median candidate/base ratio, its bootstrap interval and the
//! verdict; with load/save.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::infra::environment::Environment;

pub const AB_SCHEMA_VERSION: u32 = 1;
pub(crate) const KIND: &str = "bench-ab";
pub const AB_FILE: &str = "ab.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbReport {
    pub schema_version: u32,
    /// Always `bench-ab`.
    pub kind: String,
    pub run_id: String,
    pub environment: Environment,
    pub suite: String,
    /// The broker measured as A (what the candidate is judged against).
    pub base: AbSide,
    /// The broker measured as B (this working tree's build).
    pub candidate: AbSide,
    /// A/B pairs per workload (`--repeat`), run A B, B A, A B, …
    pub pairs: u32,
    /// Allowed regression (0.10 = 10 %), from the threshold profile.
    pub max_regression: f64,
    /// The threshold profile `max_regression` came from.
    pub profile: String,
    /// Coverage of the bootstrap interval (0.95).
    pub confidence: f64,
    pub started_at: String,
    pub finished_at: String,
    pub workloads: Vec<AbWorkload>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbSide {
    /// What the user named: `HEAD~1`, a binary path, `working tree`.
    pub label: String,
    /// The commit built, when built from git.
    pub revision: Option<String>,
    pub binary: String,
    /// That side's own run directory (report.json of its repeats), relative
    /// to the A/B run directory.
    pub run_dir: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbWorkload {
    pub name: String,
    pub scenario: String,
    /// `ok`, or what failed on either side.
    pub status: String,
    pub metrics: Vec<AbMetric>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbMetric {
    /// Metric key (see `crate::model::metric::METRICS`).
    pub key: String,
    pub label: String,
    /// Per pair, in pair order; pairs missing a side's value are left out.
    pub base: Vec<f64>,
    pub candidate: Vec<f64>,
    /// Median of the per-pair candidate/base ratios.
    pub median_ratio: Option<f64>,
    /// Bootstrap interval of that median.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub verdict: AbVerdict,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbVerdict {
    /// The whole interval is worse than the allowed regression.
    Regression,
    /// The whole interval is better by more than the allowed regression.
    Better,
    WithinNoise,
    /// Too few pairs, or a side failed (a failure of the A/B gate).
    NotJudged(String),
}

impl AbVerdict {
    pub fn text(&self) -> String {
        match self {
            AbVerdict::Regression => "REGRESSION".into(),
            AbVerdict::Better => "better".into(),
            AbVerdict::WithinNoise => "within noise".into(),
            AbVerdict::NotJudged(why) => format!("not judged ({why})"),
        }
    }

    pub fn fails(&self) -> bool {
        matches!(self, AbVerdict::Regression | AbVerdict::NotJudged(_))
    }
}

impl AbReport {
    /// (workload, metric) of every verdict that fails the gate.
    pub fn failures(&self) -> Vec<(&AbWorkload, &AbMetric)> {
        self.workloads
            .iter()
            .flat_map(|w| w.metrics.iter().map(move |m| (w, m)))
            .filter(|(_, m)| m.verdict.fails())
            .collect()
    }

    /// Workloads that did not end `ok` on a side.
    pub fn broken(&self) -> Vec<&AbWorkload> {
        self.workloads.iter().filter(|w| w.status != "ok").collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("A/B reports serialize") + "\n"
    }

    pub fn from_json(text: &str) -> Result<AbReport> {
        let value: serde_json::Value =
            serde_json::from_str(text).context("not an A/B report (invalid JSON)")?;
        if value.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
            bail!("not an A/B report (kind is not `{KIND}`): give the directory of a `cargo xtask bench --ab REV` run");
        }
        let version = value.get("schema_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(AB_SCHEMA_VERSION)) {
            bail!("A/B report schema_version {version:?} is not {AB_SCHEMA_VERSION}: written by another xtask version");
        }
        serde_json::from_value(value).context("malformed A/B report")
    }

    /// Loads `ab.json` from a run directory, or the file itself.
    pub fn load(path: &Path) -> Result<AbReport> {
        let file: PathBuf = if path.is_dir() {
            path.join(AB_FILE)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "cannot read {} (give the directory of a `cargo xtask bench --ab REV` run or its {AB_FILE})",
                file.display()
            )
        })?;
        AbReport::from_json(&text).with_context(|| format!("{}", file.display()))
    }
}
