//! The `build-all` manifest (`manifest.json`): per target what was built, by
//! which backend, its size against the budget and the smoke result.

use serde::{Deserialize, Serialize};

use crate::infra::targets::Backend;

pub const MANIFEST_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Built,
    Failed,
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub limit_bytes: u64,
    /// As the profile says it, e.g. `< 5 MB`.
    pub limit: String,
    /// Threshold profile the budget comes from.
    pub profile: String,
    pub from: String,
    /// limit − size: negative when over budget.
    pub margin_bytes: i64,
    pub within: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmokeStatus {
    Passed,
    Failed,
    /// Not run: build only, runner missing, or the build did not succeed.
    NotRun,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Smoke {
    pub status: SmokeStatus,
    /// What happened, or why it did not run.
    pub detail: String,
    pub connect_ms: Option<f64>,
    pub round_trip_ms: Option<f64>,
    /// The runner it ran through (`native`, `qemu-aarch64`, `wine`).
    pub runner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub triple: String,
    pub class: String,
    pub description: String,
    pub backend: Option<Backend>,
    pub profile: String,
    pub status: Status,
    /// Why unavailable, or how the build failed.
    pub reason: Option<String>,
    /// Relative to the dist directory.
    pub artifact: Option<String>,
    pub size_bytes: Option<u64>,
    pub stripped_size_bytes: Option<u64>,
    pub sha256: Option<String>,
    pub build_seconds: Option<f64>,
    pub budget: Option<Budget>,
    pub runner: String,
    pub emulated: bool,
    pub build_only: bool,
    pub smoke: Option<Smoke>,
    /// The build's cargo output, relative to the dist directory.
    pub log: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub created: String,
    pub host_triple: String,
    pub rustc: String,
    pub git_revision: Option<String>,
    pub git_dirty: bool,
    /// Concurrent builds.
    pub jobs: usize,
    /// Wall time of the whole command.
    pub total_seconds: f64,
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Problems that make the command fail: failed builds, sizes over
    /// budget, failed smoke runs, and unavailable targets or smoke runs that
    /// did not happen for targets that were asked for by name.
    pub fn problems(&self, requested_by_name: bool) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.entries {
            match e.status {
                Status::Failed => out.push(format!(
                    "{}: build FAILED: {}",
                    e.triple,
                    e.reason.as_deref().unwrap_or("see its log")
                )),
                Status::Unavailable if requested_by_name => out.push(format!(
                    "{}: asked for by name but unavailable: {}",
                    e.triple,
                    e.reason.as_deref().unwrap_or("")
                )),
                _ => {}
            }
            if let Some(b) = e.budget.as_ref().filter(|b| !b.within) {
                out.push(format!(
                    "{}: binary {} is OVER the {} budget ({}) by {}",
                    e.triple,
                    crate::model::units::bytes(e.size_bytes.unwrap_or(0) as f64),
                    b.profile,
                    b.limit,
                    crate::model::units::bytes(-b.margin_bytes as f64)
                ));
            }
            match e.smoke.as_ref() {
                Some(s) if s.status == SmokeStatus::Failed => {
                    out.push(format!("{}: smoke run FAILED: {}", e.triple, s.detail))
                }
                // As for an unavailable build: a target named with --smoke
                // must be smoke-run, unless it is build only by definition.
                // (One that did not build is reported above already.)
                Some(s)
                    if s.status == SmokeStatus::NotRun
                        && requested_by_name
                        && e.status == Status::Built
                        && !e.build_only =>
                {
                    out.push(format!(
                        "{}: asked for by name with --smoke, but not run: {}",
                        e.triple, s.detail
                    ))
                }
                _ => {}
            }
        }
        out
    }
}
