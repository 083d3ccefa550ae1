//! The `build-all` manifest as Markdown (`manifest.md`) and the live
//! per-target progress lines on a terminal.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::model::manifest::{Entry, Manifest, SmokeStatus, Status};

pub(crate) fn status_word(status: Status) -> &'static str {
    match status {
        Status::Built => "built",
        Status::Failed => "FAILED",
        Status::Unavailable => "unavailable",
    }
}

pub fn render_markdown(m: &Manifest) -> String {
    let mut out = String::from("# build-all manifest\n\n");
    let _ = writeln!(
        out,
        "Built on {} with {}, git {}{}, {} at a time, {:.0} s in all ({}).\n",
        m.host_triple,
        m.rustc,
        m.git_revision
            .as_deref()
            .map(|r| &r[..r.len().min(12)])
            .unwrap_or("unknown"),
        if m.git_dirty {
            " (uncommitted changes)"
        } else {
            ""
        },
        m.jobs,
        m.total_seconds,
        m.created
    );
    out.push_str(&markdown_table(m));
    let unavailable: Vec<&Entry> = m
        .entries
        .iter()
        .filter(|e| e.status != Status::Built)
        .collect();
    if !unavailable.is_empty() {
        out.push_str("\n\n## Not built\n\n");
        for e in unavailable {
            let _ = writeln!(
                out,
                "- **{}** ({}): {}",
                e.triple,
                status_word(e.status),
                e.reason.as_deref().unwrap_or("no reason recorded")
            );
        }
    }
    let smokes: Vec<&Entry> = m.entries.iter().filter(|e| e.smoke.is_some()).collect();
    if !smokes.is_empty() {
        out.push_str("\n## Smoke runs\n\nMQTT 3.1.1 connect, subscribe (QoS 1), publish (QoS 1) and receive from the host, then SIGTERM.\n\n");
        for e in smokes {
            let s = e.smoke.as_ref().expect("filtered");
            let _ = writeln!(
                out,
                "- **{}** via {}: {} ({})",
                e.triple,
                s.runner,
                match s.status {
                    SmokeStatus::Passed => "passed",
                    SmokeStatus::Failed => "**FAILED**",
                    SmokeStatus::NotRun => "not run",
                },
                s.detail
            );
        }
    }
    out.push('\n');
    out
}

/// `smoke: 2 passed, 1 FAILED, 1 NOT RUN (triple: why)` for the command's
/// summary line; None when no smoke run was asked for.
pub fn smoke_summary(m: &Manifest) -> Option<String> {
    let smokes: Vec<(&Entry, &crate::model::manifest::Smoke)> = m
        .entries
        .iter()
        .filter_map(|e| e.smoke.as_ref().map(|s| (e, s)))
        .collect();
    if smokes.is_empty() {
        return None;
    }
    let count = |status| smokes.iter().filter(|(_, s)| s.status == status).count();
    let mut out = format!("smoke: {} passed", count(SmokeStatus::Passed));
    let failed = count(SmokeStatus::Failed);
    if failed > 0 {
        let _ = write!(out, ", {failed} FAILED");
    }
    let not_run: Vec<String> = smokes
        .iter()
        .filter(|(_, s)| s.status == SmokeStatus::NotRun)
        .map(|(e, s)| format!("{}: {}", e.triple, s.detail))
        .collect();
    if !not_run.is_empty() {
        let _ = write!(out, ", {} NOT RUN ({})", not_run.len(), not_run.join("; "));
    }
    Some(out)
}

/// One row per target: what came out.
pub fn markdown_table(m: &Manifest) -> String {
    let mut out = String::from(
        "| target | class | backend | profile | status | size | stripped | budget (margin) | sha256 | build | runner | smoke |\n\
         |---|---|---|---|---|---:|---:|---|---|---:|---|---|\n",
    );
    let size = |b: Option<u64>| {
        b.map(|b| crate::model::units::bytes(b as f64))
            .unwrap_or_else(|| "–".into())
    };
    for e in &m.entries {
        let budget = match &e.budget {
            None => "–".to_string(),
            Some(b) if b.within => format!(
                "{} ({} left)",
                b.limit,
                crate::model::units::bytes(b.margin_bytes as f64)
            ),
            Some(b) => format!(
                "**OVER** {} (by {})",
                b.limit,
                crate::model::units::bytes(-b.margin_bytes as f64)
            ),
        };
        let smoke = match &e.smoke {
            None => "–",
            Some(s) => match s.status {
                SmokeStatus::Passed => "passed",
                SmokeStatus::Failed => "**FAILED**",
                SmokeStatus::NotRun => "not run",
            },
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} | {} |",
            e.triple,
            e.class,
            e.backend.map(|b| b.as_str()).unwrap_or("–"),
            e.profile,
            match e.status {
                Status::Built => "built",
                Status::Failed => "**FAILED**",
                Status::Unavailable => "unavailable",
            },
            size(e.size_bytes),
            size(e.stripped_size_bytes),
            budget,
            e.sha256.as_deref().map(|h| &h[..12]).unwrap_or("–"),
            e.build_seconds
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_else(|| "–".into()),
            e.runner,
            if e.build_only { " (build only)" } else { "" },
            smoke
        );
    }
    out.trim_end().to_string()
}

/// The multi-progress view on a terminal, plain lines otherwise.
pub(crate) struct View {
    bars: Option<MultiProgress>,
}

pub(crate) struct Line {
    triple: String,
    bar: Option<ProgressBar>,
}

impl View {
    pub(crate) fn new() -> View {
        View {
            bars: std::io::stderr().is_terminal().then(MultiProgress::new),
        }
    }

    pub(crate) fn line(&self, triple: &str) -> Line {
        let bar = self.bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:34} {elapsed:>4} {wide_msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(triple.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Line {
            triple: triple.to_string(),
            bar,
        }
    }
}

impl Line {
    pub(crate) fn set(&self, msg: String) {
        match &self.bar {
            Some(bar) => bar.set_message(msg),
            // Plain output: only the start, not every crate.
            None if !msg.starts_with("Compiling") && !msg.starts_with("Finished") => {
                println!("    {:<34} {msg}", self.triple)
            }
            None => {}
        }
    }

    pub(crate) fn finish(&self, msg: String) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(msg),
            None => println!("    {:<34} {msg}", self.triple),
        }
    }
}
