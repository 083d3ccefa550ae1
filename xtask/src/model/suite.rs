//! Benchmark suites (`bench/suites.toml`): which workload files a bench run
//! uses and the overrides (durations, storm size) applied to them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use loadgen::{Scenario, Workload};
use serde::Deserialize;

/// One `[name]` table of `bench/suites.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    #[serde(default)]
    pub description: String,
    /// File stems (or file names) in `bench/workloads/`.
    pub workloads: Vec<String>,
    // The override keys sit next to `workloads` (serde's `flatten` does not
    // combine with `deny_unknown_fields`, and typos must be errors).
    pub warmup_secs: Option<f64>,
    pub duration_secs: Option<f64>,
    pub drain_secs: Option<f64>,
    pub storm_connections: Option<u32>,
}

impl Suite {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            warmup_secs: self.warmup_secs,
            duration_secs: self.duration_secs,
            drain_secs: self.drain_secs,
            storm_connections: self.storm_connections,
        }
    }
}

/// What a suite or the command line changes in every workload it runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub warmup_secs: Option<f64>,
    pub duration_secs: Option<f64>,
    pub drain_secs: Option<f64>,
    /// Replaces `idle_connections` of connection-storm workloads.
    pub storm_connections: Option<u32>,
}

impl Overrides {
    /// `later`'s values win where set.
    pub fn then(&self, later: &Overrides) -> Overrides {
        Overrides {
            warmup_secs: later.warmup_secs.or(self.warmup_secs),
            duration_secs: later.duration_secs.or(self.duration_secs),
            drain_secs: later.drain_secs.or(self.drain_secs),
            storm_connections: later.storm_connections.or(self.storm_connections),
        }
    }

    /// Applies the overrides; returns what changed (`duration_secs 10 → 2`).
    pub fn apply(&self, workload: &mut Workload) -> Vec<String> {
        let mut changed = Vec::new();
        let mut set = |key: &str, field: &mut f64, value: Option<f64>| {
            if let Some(v) = value.filter(|v| v != field) {
                changed.push(format!("{key} {} → {v}", *field));
                *field = v;
            }
        };
        set("warmup_secs", &mut workload.warmup_secs, self.warmup_secs);
        set(
            "duration_secs",
            &mut workload.duration_secs,
            self.duration_secs,
        );
        set("drain_secs", &mut workload.drain_secs, self.drain_secs);
        if let (Some(n), Scenario::ConnectionStorm) = (self.storm_connections, workload.scenario) {
            if n != workload.idle_connections {
                changed.push(format!(
                    "idle_connections {} → {n}",
                    workload.idle_connections
                ));
                workload.idle_connections = n;
            }
        }
        changed
    }
}

/// A workload ready to run: where it came from and what it is after overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedWorkload {
    pub source: PathBuf,
    pub workload: Workload,
    /// `rate = "max"`: how to search for the maximum sustainable rate.
    pub search: Option<crate::model::max_rate::SearchSpec>,
}

/// Where suites and workload files live.
pub fn suites_file(root: &Path) -> PathBuf {
    root.join("bench/suites.toml")
}

pub fn workloads_dir(root: &Path) -> PathBuf {
    root.join("bench/workloads")
}

/// Parses `bench/suites.toml` text; errors name the file, line and key.
pub fn parse_suites(file: &Path, text: &str) -> Result<BTreeMap<String, Suite>> {
    let suites: BTreeMap<String, Suite> = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            file.display(),
            loadgen::spec::describe_toml_error(text, &e)
        )
    })?;
    for (name, suite) in &suites {
        if suite.workloads.is_empty() {
            bail!(
                "{}: key `{name}.workloads`: lists no workload; name at least one file of bench/workloads/",
                file.display()
            );
        }
    }
    Ok(suites)
}

pub fn load_suites(root: &Path) -> Result<BTreeMap<String, Suite>> {
    let file = suites_file(root);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    parse_suites(&file, &text)
}

/// The workloads of suite `name`, with the suite's overrides and then `extra`
/// (the command line's) applied and validated.
pub fn plan_suite(root: &Path, name: &str, extra: &Overrides) -> Result<Vec<PlannedWorkload>> {
    let suites = load_suites(root)?;
    let Some(suite) = suites.get(name) else {
        bail!(
            "no suite `{name}` in {}; available: {}",
            suites_file(root).display(),
            suites.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    let dir = workloads_dir(root);
    let files: Vec<PathBuf> = suite
        .workloads
        .iter()
        .map(|w| {
            if w.ends_with(".toml") {
                dir.join(w)
            } else {
                dir.join(format!("{w}.toml"))
            }
        })
        .collect();
    plan_files(&files, &suite.overrides().then(extra))
}

/// Loads workload files as written, applies `overrides`, validates the
/// result and makes names unique (they name result files).
pub fn plan_files(files: &[PathBuf], overrides: &Overrides) -> Result<Vec<PlannedWorkload>> {
    let mut planned: Vec<PlannedWorkload> = Vec::new();
    for file in files {
        let (mut workload, search) = crate::model::workload_file::load(file)?;
        let changed = overrides.apply(&mut workload);
        if !changed.is_empty() {
            // The file's description may quote the numbers just replaced.
            workload.description = format!(
                "{} [overridden: {}]",
                workload.description,
                changed.join(", ")
            );
        }
        workload.validate().map_err(|e| {
            anyhow::anyhow!(
                "{} (after suite/command-line overrides): {e}",
                file.display()
            )
        })?;
        let base = workload.name.clone();
        let mut n = 2;
        while planned.iter().any(|p| p.workload.name == workload.name) {
            workload.name = format!("{base}-{n}");
            n += 1;
        }
        planned.push(PlannedWorkload {
            source: file.clone(),
            workload,
            search,
        });
    }
    Ok(planned)
}

/// Every suite resolves and every shipped workload file parses: what CI
/// checks before spending minutes on builds.
pub fn validate_all(root: &Path) -> Result<()> {
    let suites = load_suites(root)?;
    for name in suites.keys() {
        let planned = plan_suite(root, name, &Overrides::default())?;
        println!("    suite {name}: {} workloads", planned.len());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(workloads_dir(root))
        .context("cannot list bench/workloads")?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    for file in &files {
        crate::model::workload_file::load(file)?;
    }
    println!("    {} workload files parse", files.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::infra::cargo::project_root()
    }

    #[test]
    fn quick_scales_storm_and_durations() {
        let planned = plan_suite(&root(), "quick", &Overrides::default()).unwrap();
        assert_eq!(planned.len(), 12);
        assert_eq!(
            planned
                .iter()
                .filter(|p| p.workload.protocol == loadgen::Protocol::Kafka)
                .count(),
            3,
            "quick covers the Kafka workloads"
        );
        assert_eq!(
            planned
                .iter()
                .filter(|p| p.workload.protocol == loadgen::Protocol::Amqp)
                .count(),
            4,
            "quick covers the AMQP workloads"
        );
        for p in &planned {
            let w = &p.workload;
            assert_eq!(w.duration_secs, 2.0, "{}", w.name);
            assert_eq!(w.warmup_secs, 0.5, "{}", w.name);
            if w.scenario == Scenario::ConnectionStorm {
                // The quick storm keeps the workload's 10,000 connections
                // (the ci profile bounds memory with 10,000 connections).
                assert_eq!(w.idle_connections, 10_000);
                assert!(
                    w.description.ends_with(
                        "[overridden: warmup_secs 0 → 0.5, duration_secs 5 → 2, drain_secs 2 → 1]"
                    ),
                    "{}",
                    w.description
                );
            }
        }
        assert!(planned
            .iter()
            .any(|p| p.workload.scenario == Scenario::ConnectionStorm));
    }

    #[test]
    fn default_suite_runs_files_as_written_and_covers_every_shipped_workload() {
        let planned = plan_suite(&root(), "default", &Overrides::default()).unwrap();
        for p in &planned {
            assert_eq!(p.workload, Workload::load(&p.source).unwrap());
        }
        let searched = plan_suite(&root(), "max", &Overrides::default()).unwrap();
        let shipped = std::fs::read_dir(workloads_dir(&root())).unwrap().count();
        assert_eq!(
            planned.len() + searched.len(),
            shipped,
            "every shipped workload is in `default` or (rate = \"max\") in `max`"
        );
        assert!(planned.iter().all(|p| p.search.is_none()));
    }

    #[test]
    fn max_suite_searches_four_protocol_setups_and_not_in_ci() {
        let planned = plan_suite(&root(), "max", &Overrides::default()).unwrap();
        let names: Vec<&str> = planned.iter().map(|p| p.workload.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "mqtt-qos0-max",
                "mqtt-qos1-max",
                "kafka-acks1-max",
                "amqp-confirms-max"
            ]
        );
        for p in &planned {
            let spec = p.search.as_ref().expect("searched");
            assert_eq!(spec.delivered_fraction, 0.999);
            assert_eq!((p.workload.rate, p.workload.duration_secs), (0, 10.0));
        }
        let quick = plan_suite(&root(), "quick", &Overrides::default()).unwrap();
        assert!(
            quick.iter().all(|p| p.search.is_none()),
            "CI's quick suite stays short"
        );
    }

    #[test]
    fn full_suite_is_long_with_a_big_storm() {
        let planned = plan_suite(&root(), "full", &Overrides::default()).unwrap();
        let storm = planned
            .iter()
            .find(|p| p.workload.scenario == Scenario::ConnectionStorm)
            .unwrap();
        assert_eq!(storm.workload.idle_connections, 50_000);
        assert!(planned.iter().all(|p| p.workload.duration_secs == 60.0));
    }

    #[test]
    fn command_line_duration_wins_over_the_suite() {
        let cli = Overrides {
            duration_secs: Some(7.0),
            ..Overrides::default()
        };
        let planned = plan_suite(&root(), "quick", &cli).unwrap();
        assert!(planned.iter().all(|p| p.workload.duration_secs == 7.0));
        assert!(planned.iter().all(|p| p.workload.warmup_secs == 0.5));
    }

    #[test]
    fn effective_workload_round_trips_through_toml() {
        let planned = plan_suite(&root(), "quick", &Overrides::default()).unwrap();
        for p in planned {
            let text = toml::to_string(&p.workload).unwrap();
            assert_eq!(Workload::parse(&text).unwrap(), p.workload);
        }
    }

    #[test]
    fn unknown_suite_lists_available_ones() {
        let err = plan_suite(&root(), "nightly", &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nightly") && err.contains("default, full, max, quick"),
            "{err}"
        );
    }

    #[test]
    fn bad_suite_key_names_file_and_key() {
        let file = Path::new("bench/suites.toml");
        let err = parse_suites(file, "[quick]\nworkloads = [\"a\"]\nduraton_secs = 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bench/suites.toml: line 3"), "{err}");
        assert!(err.contains("duraton_secs"), "{err}");
        let err = parse_suites(file, "[quick]\nworkloads = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("quick.workloads"), "{err}");
    }

    #[test]
    fn overrides_that_break_a_workload_name_the_file() {
        let cli = Overrides {
            duration_secs: Some(0.0),
            ..Overrides::default()
        };
        let err = plan_suite(&root(), "quick", &cli).unwrap_err().to_string();
        assert!(
            err.contains("duration_secs") && err.contains(".toml"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_get_a_suffix() {
        let file = workloads_dir(&root()).join("mqtt-latency.toml");
        let planned = plan_files(&[file.clone(), file], &Overrides::default()).unwrap();
        assert_eq!(planned[0].workload.name, "mqtt-latency");
        assert_eq!(planned[1].workload.name, "mqtt-latency-2");
    }

    #[test]
    fn shipped_suites_validate() {
        validate_all(&root()).unwrap();
    }
}
