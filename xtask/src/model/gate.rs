//! Threshold profiles (`targets/profiles/*.toml`) and the gate's result
//! types: thresholds, verdicts and the gate report stored in report.json.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::units::{fraction_text, parse_size};

/// What a threshold is about; each has a fixed comparison (DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdKind {
    /// Established connections ≥ limit.
    Connections,
    /// Received messages per second > limit.
    Throughput,
    /// End-to-end p99 latency < limit (microseconds).
    P99Latency,
    /// Broker peak RSS < limit (bytes).
    BrokerMemory,
    /// Broker CPU, % of the machine, < limit.
    Cpu,
    /// Broker binary size < limit (bytes).
    BinarySize,
    /// Lost deliveries of workloads with a delivery guarantee (MQTT QoS ≥ 1,
    /// Kafka acks ≥ 1, AMQP confirms or persistent): ≤ limit, always 0.
    LostGuaranteed,
    /// Lost deliveries of best-effort workloads, as a fraction of the
    /// expected ones: ≤ limit.
    LostBestEffort,
    /// Duplicated deliveries, fraction of expected, of workloads whose
    /// guarantee rules duplicates out (at-most-once, exactly-once): ≤ limit.
    Duplicated,
    /// Out-of-order deliveries, fraction of expected, of workloads whose
    /// protocol keeps order: ≤ limit.
    Reordered,
    /// One workload: broker CPU µs per delivered message < limit (median
    /// over repeats).
    CpuPerMessage,
    /// One connection storm: broker CPU µs per established connection < limit.
    CpuPerConnection,
    /// One workload: broker peak RSS while it ran < limit (bytes).
    WorkloadMemory,
    /// One workload: delivered msg/s > limit (median over repeats).
    WorkloadThroughput,
    /// One `rate = "max"` workload: maximum sustainable msg/s > limit.
    MaxSustainable,
}

impl ThresholdKind {
    pub fn name(self) -> &'static str {
        match self {
            ThresholdKind::Connections => "connections",
            ThresholdKind::Throughput => "throughput",
            ThresholdKind::P99Latency => "p99 latency",
            ThresholdKind::BrokerMemory => "broker memory",
            ThresholdKind::Cpu => "CPU",
            ThresholdKind::BinarySize => "binary size",
            ThresholdKind::LostGuaranteed => "lost (at-least-once)",
            ThresholdKind::LostBestEffort => "lost (at-most-once)",
            ThresholdKind::Duplicated => "duplicated",
            ThresholdKind::Reordered => "reordered",
            ThresholdKind::CpuPerMessage => "CPU per message",
            ThresholdKind::CpuPerConnection => "CPU per connection",
            ThresholdKind::WorkloadMemory => "peak RSS",
            ThresholdKind::WorkloadThroughput => "delivered",
            ThresholdKind::MaxSustainable => "max sustainable",
        }
    }

    /// Thresholds about speed and resources: under qemu-user they measure the
    /// emulator (its slowdown, its own RSS and CPU), not the target.
    pub(crate) fn is_performance(self) -> bool {
        matches!(
            self,
            ThresholdKind::Throughput
                | ThresholdKind::P99Latency
                | ThresholdKind::Cpu
                | ThresholdKind::BrokerMemory
                | ThresholdKind::CpuPerMessage
                | ThresholdKind::CpuPerConnection
                | ThresholdKind::WorkloadMemory
                | ThresholdKind::WorkloadThroughput
                | ThresholdKind::MaxSustainable
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub kind: ThresholdKind,
    /// In the unit the kind compares in (count, msg/s, µs, bytes, %).
    pub limit: f64,
    /// `≥ 1,000,000`, `< 15 ms`: as the profile file says it.
    pub limit_text: String,
    /// Where the number comes from.
    pub from: String,
    /// The workload it judges (`[workloads.NAME]` tables); None: the run.
    pub workload: Option<String>,
}

/// A named set of thresholds: one platform class (or the CI box).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub thresholds: Vec<Threshold>,
    /// Gate throughput, latency, CPU and memory even when the broker ran
    /// under emulation (`gate_emulated = true`; default: informational).
    pub gate_emulated: bool,
    /// Regression an A/B run tolerates (`max_regression_percent`, default 10).
    pub max_regression: f64,
    /// The machine's CPU reference (µs per loopback round trip,
    /// `infra::cpu_reference`) where the CPU-per-message and per-connection
    /// thresholds were measured: on a machine whose reference is higher,
    /// the gate scales them by the ratio (`analysis::gate::cpu_scale`).
    /// None: never scaled.
    pub cpu_reference_us: Option<f64>,
}

// The file format. Every table is optional: a threshold a class does not
// have (CPU for embedded, binary size for high_perf) is simply absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    gate_emulated: bool,
    max_regression_percent: Option<f64>,
    cpu_reference_us_per_round_trip: Option<f64>,
    connections: Option<AtLeast>,
    throughput: Option<Above>,
    p99_latency: Option<BelowMs>,
    broker_memory: Option<BelowSize>,
    cpu: Option<BelowPercent>,
    binary_size: Option<BelowSize>,
    lost: Option<Lost>,
    duplicated: Option<AtMostFraction>,
    reordered: Option<AtMostFraction>,
    /// Per-workload bounds, by workload name.
    #[serde(default)]
    workloads: std::collections::BTreeMap<String, WorkloadBounds>,
}

/// `[workloads.NAME]`: bounds on one workload's own figures. Every key but
/// `from` is optional; at least one must be given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkloadBounds {
    cpu_us_per_message_below: Option<f64>,
    cpu_us_per_connection_below: Option<f64>,
    peak_rss_below: Option<String>,
    delivered_above_msg_per_sec: Option<f64>,
    max_rate_above_msg_per_sec: Option<f64>,
    from: String,
}

/// `[lost]`: zero loss for guaranteed delivery is not configurable; the
/// best-effort fraction is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Lost {
    at_most_once_max_fraction: f64,
    from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AtMostFraction {
    max_fraction: f64,
    from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AtLeast {
    at_least: u64,
    from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Above {
    above_msg_per_sec: f64,
    from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BelowMs {
    below_ms: f64,
    from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BelowSize {
    below: String,
    from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BelowPercent {
    below_percent: f64,
    from: String,
}

pub fn profiles_dir(root: &Path) -> PathBuf {
    root.join("targets/profiles")
}

/// Profile names available in `dir` (file stems), sorted.
pub fn available(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl Profile {
    /// `targets/profiles/<name>.toml`; an unknown name lists the available ones.
    pub fn load(root: &Path, name: &str) -> Result<Profile> {
        let dir = profiles_dir(root);
        let file = dir.join(format!("{name}.toml"));
        if name.contains(['/', '\\']) || !file.is_file() {
            bail!(
                "unknown threshold profile `{name}`; available: {} (files in {})",
                available(&dir).join(", "),
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        Profile::parse(&file, &text)
    }

    /// Parses a profile file; any problem is one line naming the file and key.
    pub fn parse(file: &Path, text: &str) -> Result<Profile> {
        let f = file.display();
        let parsed: ProfileFile = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!("{f}: {}", loadgen::spec::describe_toml_error(text, &e))
        })?;
        let positive = |key: &str, v: f64| -> Result<f64> {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                bail!("{f}: key `{key}` = {v}: must be a positive number")
            }
        };
        let mut thresholds = Vec::new();
        if let Some(t) = parsed.connections {
            let v = positive("connections.at_least", t.at_least as f64)?;
            thresholds.push(Threshold {
                kind: ThresholdKind::Connections,
                limit: v,
                limit_text: format!("≥ {}", crate::model::units::thousands(t.at_least)),
                from: t.from,
                workload: None,
            });
        }
        if let Some(t) = parsed.throughput {
            let v = positive("throughput.above_msg_per_sec", t.above_msg_per_sec)?;
            thresholds.push(Threshold {
                kind: ThresholdKind::Throughput,
                limit: v,
                limit_text: format!("> {} msg/s", crate::model::units::thousands(v as u64)),
                from: t.from,
                workload: None,
            });
        }
        if let Some(t) = parsed.p99_latency {
            let v = positive("p99_latency.below_ms", t.below_ms)?;
            thresholds.push(Threshold {
                kind: ThresholdKind::P99Latency,
                limit: v * 1_000.0,
                limit_text: format!("< {v} ms"),
                from: t.from,
                workload: None,
            });
        }
        if let Some(t) = parsed.broker_memory {
            let v = parse_size(&t.below).map_err(|e| {
                anyhow::anyhow!("{f}: key `broker_memory.below` = {:?}: {e}", t.below)
            })?;
            thresholds.push(Threshold {
                kind: ThresholdKind::BrokerMemory,
                limit: v,
                limit_text: format!("< {}", t.below.trim()),
                from: t.from,
                workload: None,
            });
        }
        if let Some(t) = parsed.cpu {
            let v = positive("cpu.below_percent", t.below_percent)?;
            thresholds.push(Threshold {
                kind: ThresholdKind::Cpu,
                limit: v,
                limit_text: format!("< {v} % of machine"),
                from: t.from,
                workload: None,
            });
        }
        if let Some(t) = parsed.binary_size {
            let v = parse_size(&t.below).map_err(|e| {
                anyhow::anyhow!("{f}: key `binary_size.below` = {:?}: {e}", t.below)
            })?;
            thresholds.push(Threshold {
                kind: ThresholdKind::BinarySize,
                limit: v,
                limit_text: format!("< {}", t.below.trim()),
                from: t.from,
                workload: None,
            });
        }
        let fraction = |key: &str, v: f64| -> Result<f64> {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                bail!("{f}: key `{key}` = {v}: must be a fraction from 0 to 1 (0.01 = 1 %)")
            }
        };
        if let Some(t) = parsed.lost {
            let v = fraction(
                "lost.at_most_once_max_fraction",
                t.at_most_once_max_fraction,
            )?;
            thresholds.push(Threshold {
                kind: ThresholdKind::LostGuaranteed,
                limit: 0.0,
                limit_text: "0".into(),
                from: "delivery guarantee: acknowledged messages are never lost".into(),
                workload: None,
            });
            thresholds.push(Threshold {
                kind: ThresholdKind::LostBestEffort,
                limit: v,
                limit_text: format!("≤ {} of expected", fraction_text(v)),
                from: t.from,
                workload: None,
            });
        }
        for (kind, key, table) in [
            (ThresholdKind::Duplicated, "duplicated", parsed.duplicated),
            (ThresholdKind::Reordered, "reordered", parsed.reordered),
        ] {
            if let Some(t) = table {
                let v = fraction(&format!("{key}.max_fraction"), t.max_fraction)?;
                thresholds.push(Threshold {
                    kind,
                    limit: v,
                    limit_text: format!("≤ {} of expected", fraction_text(v)),
                    from: t.from,
                    workload: None,
                });
            }
        }
        for (name, w) in parsed.workloads {
            let key = |k: &str| format!("workloads.{name}.{k}");
            let before = thresholds.len();
            if let Some(v) = w.cpu_us_per_message_below {
                let v = positive(&key("cpu_us_per_message_below"), v)?;
                thresholds.push(Threshold {
                    kind: ThresholdKind::CpuPerMessage,
                    limit: v,
                    limit_text: format!("< {}/msg", crate::model::units::cpu_micros(v)),
                    from: w.from.clone(),
                    workload: Some(name.clone()),
                });
            }
            if let Some(v) = w.cpu_us_per_connection_below {
                let v = positive(&key("cpu_us_per_connection_below"), v)?;
                thresholds.push(Threshold {
                    kind: ThresholdKind::CpuPerConnection,
                    limit: v,
                    limit_text: format!("< {}/conn", crate::model::units::cpu_micros(v)),
                    from: w.from.clone(),
                    workload: Some(name.clone()),
                });
            }
            if let Some(text) = &w.peak_rss_below {
                let v = parse_size(text).map_err(|e| {
                    anyhow::anyhow!("{f}: key `{}` = {text:?}: {e}", key("peak_rss_below"))
                })?;
                thresholds.push(Threshold {
                    kind: ThresholdKind::WorkloadMemory,
                    limit: v,
                    limit_text: format!("< {}", text.trim()),
                    from: w.from.clone(),
                    workload: Some(name.clone()),
                });
            }
            if let Some(v) = w.delivered_above_msg_per_sec {
                let v = positive(&key("delivered_above_msg_per_sec"), v)?;
                thresholds.push(Threshold {
                    kind: ThresholdKind::WorkloadThroughput,
                    limit: v,
                    limit_text: format!("> {} msg/s", crate::model::units::thousands(v as u64)),
                    from: w.from.clone(),
                    workload: Some(name.clone()),
                });
            }
            if let Some(v) = w.max_rate_above_msg_per_sec {
                let v = positive(&key("max_rate_above_msg_per_sec"), v)?;
                thresholds.push(Threshold {
                    kind: ThresholdKind::MaxSustainable,
                    limit: v,
                    limit_text: format!("> {} msg/s", crate::model::units::thousands(v as u64)),
                    from: w.from.clone(),
                    workload: Some(name.clone()),
                });
            }
            if thresholds.len() == before {
                bail!(
                    "{f}: table `workloads.{name}` has no bound: give cpu_us_per_message_below, \
                     cpu_us_per_connection_below, peak_rss_below, delivered_above_msg_per_sec or \
                     max_rate_above_msg_per_sec"
                );
            }
        }
        Ok(Profile {
            name: file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            file: file.to_path_buf(),
            description: parsed.description,
            thresholds,
            gate_emulated: parsed.gate_emulated,
            max_regression: match parsed.max_regression_percent {
                None => 0.10,
                Some(p) if p.is_finite() && (0.0..100.0).contains(&p) => p / 100.0,
                Some(p) => bail!(
                    "{f}: max_regression_percent = {p}: give a percentage from 0 to 100 (e.g. 10)"
                ),
            },
            cpu_reference_us: parsed
                .cpu_reference_us_per_round_trip
                .map(|v| positive("cpu_reference_us_per_round_trip", v))
                .transpose()?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Pass,
    Fail,
    NotMeasured,
    /// Measured under emulation and reported, not gated: neither a pass nor a fail.
    Informational,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Pass => "pass",
            VerdictKind::Fail => "FAIL",
            VerdictKind::NotMeasured => "not measured",
            VerdictKind::Informational => "info (emulated)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub threshold: String,
    /// The protocol the verdict is about (throughput and latency are judged
    /// per protocol); None for the whole broker.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The workload a per-workload bound judged.
    #[serde(default)]
    pub workload: Option<String>,
    pub limit: String,
    /// What was measured, or why nothing was.
    pub measured: String,
    /// The measured number in the threshold's unit (count, msg/s, µs, bytes, %).
    pub value: Option<f64>,
    pub verdict: VerdictKind,
    pub from: String,
}

impl Verdict {
    /// `throughput (mqtt)`, `broker memory`: the threshold and its scope.
    pub fn label(&self) -> String {
        match (&self.workload, &self.protocol) {
            (Some(w), _) => format!("{} ({w})", self.threshold),
            (None, Some(p)) => format!("{} ({p})", self.threshold),
            (None, None) => self.threshold.clone(),
        }
    }
}

/// `pass`: every threshold passed; `incomplete`: none failed but some were
/// not measured or informational; `fail`: at least one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateResult {
    Pass,
    Incomplete,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub profile: String,
    pub profile_file: String,
    pub result: GateResult,
    pub verdicts: Vec<Verdict>,
}

impl GateReport {
    pub fn failed(&self) -> bool {
        self.result == GateResult::Fail
    }

    pub(crate) fn count(&self, kind: VerdictKind) -> usize {
        self.verdicts.iter().filter(|v| v.verdict == kind).count()
    }
}

/// The profile for a platform class: from the broker's `--print-platform`
/// when we have it, else from the triple. Classes without a profile of their
/// own (`generic`) are judged by the triple.
pub fn default_profile(platform: Option<&str>, triple: &str) -> &'static str {
    let class = platform.and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("effective class: "))
            .and_then(|rest| rest.split([';', ' ']).next())
    });
    match class {
        Some("high_perf") => "high_perf",
        Some("embedded") => "embedded",
        _ => class_for_triple(triple),
    }
}

/// DESIGN.md: x86_64 and aarch64 are servers; 32-bit ARM and RISC-V (and
/// other small targets) are embedded.
pub fn class_for_triple(triple: &str) -> &'static str {
    let arch = triple.split('-').next().unwrap_or("");
    if ["x86_64", "aarch64", "arm64", "powerpc64", "s390x"]
        .iter()
        .any(|a| arch.starts_with(a))
    {
        "high_perf"
    } else {
        "embedded"
    }
}
