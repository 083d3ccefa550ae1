//! `cargo xtask bench --ab REV` (or `--ab-binary PATH`): the base broker and
//! this working tree's broker measured in one run on one machine, each
//! workload as pairs A B, B A, A B, … (a fresh broker for every run, order
//! alternating so drift cancels), then judged from the paired ratios
//! (`crate::analysis::ab`) into `ab.{json,md,html}`; exit 1 on a regression.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use xshell::Shell;

use super::{build_release, plan, write_effective, write_report, AbBase, Options};
use crate::infra::environment::{self, Environment};
use crate::infra::launcher::{Invocation, RunningBroker};
use crate::infra::loadgen::{expected, RunContext};
use crate::infra::run_dir::{absolute, display_relative, prepare_run_dir};
use crate::infra::sampler::{Sample, Sampler, Usage};
use crate::model::ab::{AbReport, AbSide, AB_FILE, AB_SCHEMA_VERSION};
use crate::model::gate::{default_profile, Profile};
use crate::model::report::{RepeatReport, Report, Status, Summary, WorkloadReport};
use crate::model::suite::PlannedWorkload;
use crate::model::verdict::failed;
use crate::render::terminal::{one_line, RepeatProgress};

/// One side of the comparison while it runs.
struct Side {
    name: &'static str,
    binary: PathBuf,
    dir: PathBuf,
    effective: Vec<PathBuf>,
    samples: Vec<Sample>,
    info: Option<crate::model::broker::BrokerInfo>,
    exit: Option<String>,
    /// This workload's repeats so far.
    pending: Vec<RepeatReport>,
    workloads: Vec<WorkloadReport>,
}

impl Side {
    /// One run of `p` on a fresh broker of this side (empty data directory).
    #[allow(clippy::too_many_arguments)]
    fn run_once(
        &mut self,
        label: &str,
        p: &PlannedWorkload,
        index: usize,
        pair: u32,
        loadgen: &Path,
        env: &Environment,
        epoch: Instant,
    ) -> Result<RepeatReport> {
        let data = self.dir.join("broker-data");
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("cannot clear {}", data.display()))?;
        }
        let mut broker: RunningBroker = crate::infra::launcher::start_built(
            Invocation {
                binary: &self.binary,
                target: None,
            },
            &self.dir,
        )
        .with_context(|| format!("the {} broker did not start", self.name))?;
        if self.info.is_none() {
            self.info = Some(broker.info.clone());
        }
        let sampler = broker
            .pid()
            .map(|pid| Sampler::start(pid, env.usable(), epoch));
        let context = RunContext {
            run_dir: &self.dir,
            loadgen,
            cores: env.usable(),
            epoch,
        };
        let progress = RepeatProgress::start(label, expected(&p.workload));
        let (r, death) = context.run_repeat(
            p,
            &self.effective[index],
            pair,
            &mut broker,
            sampler.as_ref(),
        );
        progress.finish();
        if let Some(s) = sampler {
            self.samples.extend(s.finish());
        }
        broker.stop();
        if let Some(how) = death {
            self.exit.get_or_insert(how);
        }
        // Every run starts its own broker: keep each one's log.
        let log = self.dir.join("broker.log");
        let kept = self
            .dir
            .join("logs")
            .join(format!("broker-{}-{pair}.log", p.workload.name));
        let _ = std::fs::rename(log, kept);
        Ok(r)
    }

    /// Files the workload's repeats as a [`WorkloadReport`].
    fn finish_workload(&mut self, p: &PlannedWorkload, root: &Path) {
        let repeats = std::mem::take(&mut self.pending);
        let status = repeats
            .iter()
            .find_map(|r| {
                r.failure.as_ref().map(|f| Status::Failed {
                    reason: format!("pair {}: {f}", r.repeat),
                })
            })
            .unwrap_or(Status::Ok);
        let name = &p.workload.name;
        self.workloads.push(WorkloadReport {
            name: name.clone(),
            source: display_relative(&p.source, root),
            effective_file: format!("workloads/{name}.toml"),
            workload: p.workload.clone(),
            status,
            summary: Summary::of(&repeats),
            repeats,
            max_rate: None,
        });
    }
}

pub(super) fn run(options: &Options, base: &AbBase) -> Result<()> {
    let root = crate::infra::cargo::project_root();
    let sh = Shell::new()?;
    sh.change_dir(&root);
    let (suite_name, planned) = plan(options, &root)?;
    let env = Environment::capture_for(&sh, &root, None);
    let profile = Profile::load(
        &root,
        options
            .profile
            .as_deref()
            .unwrap_or_else(|| default_profile(None, &env.target_triple)),
    )?;
    let (base_side, base_binary) = match base {
        AbBase::Binary(path) => {
            if !path.is_file() {
                bail!(
                    "--ab-binary {}: no such file; give the path of a broker binary built from the base",
                    path.display()
                );
            }
            let side = AbSide {
                label: path.display().to_string(),
                revision: None,
                binary: path.display().to_string(),
                run_dir: "base".into(),
            };
            (side, absolute(path)?)
        }
        AbBase::Rev(rev) => {
            let (sha, binary) = crate::infra::ab_build::build_at(&sh, &root, rev)?;
            let side = AbSide {
                label: rev.clone(),
                revision: Some(sha),
                binary: display_relative(&binary, &root),
                run_dir: "base".into(),
            };
            (side, binary)
        }
    };
    build_release(&sh, options, false)?;
    let candidate_binary = crate::infra::cargo::release_binary("broker")?;
    let loadgen_bin = crate::infra::cargo::release_binary("loadgen")?;

    let run_id = format!(
        "{}-ab",
        environment::run_id(&env.timestamp, &env.target_triple)
    );
    let run_dir = match &options.out {
        Some(dir) => absolute(dir)?,
        None => root.join("reports").join("runs").join(&run_id),
    };
    let mut sides = Vec::new();
    for (name, binary) in [("base", base_binary), ("candidate", candidate_binary)] {
        let dir = run_dir.join(name);
        prepare_run_dir(&dir)?;
        let effective = write_effective(&dir, &planned, options, &suite_name)?;
        sides.push(Side {
            name,
            binary,
            dir,
            effective,
            samples: Vec::new(),
            info: None,
            exit: None,
            pending: Vec::new(),
            workloads: Vec::new(),
        });
    }
    println!(
        "==> A/B {run_id}: {} workloads × {} pairs, A = {}, B = working tree; run directory {}",
        planned.len(),
        options.repeat,
        base_side.label,
        run_dir.display()
    );
    let epoch = Instant::now();
    let started_at = environment::timestamp(SystemTime::now());
    for (index, p) in planned.iter().enumerate() {
        let label = format!("[{}/{}] {}", index + 1, planned.len(), p.workload.name);
        run_pairs(
            options,
            &label,
            index,
            p,
            &mut sides,
            &loadgen_bin,
            &env,
            epoch,
        )?;
        for side in sides.iter_mut() {
            side.finish_workload(p, &root);
        }
    }
    let finished_at = environment::timestamp(SystemTime::now());
    let mut reports = Vec::new();
    for side in &sides {
        let mut report = Report {
            schema_version: crate::model::report::REPORT_SCHEMA_VERSION,
            run_id: format!("{run_id}-{}", side.name),
            environment: env.clone(),
            broker: side.info.clone().context("no broker started")?,
            suite: suite_name.clone(),
            profile: profile.name.clone(),
            repeat: options.repeat,
            started_at: started_at.clone(),
            finished_at: finished_at.clone(),
            broker_exit: side.exit.clone(),
            broker_usage: Usage::of(&side.samples),
            workloads: side.workloads.clone(),
            gate: None,
            micro: None,
        };
        report.gate = Some(crate::analysis::gate::evaluate(&report, &profile));
        write_report(&side.dir, &report)?;
        reports.push(report);
    }
    let ab = AbReport {
        schema_version: AB_SCHEMA_VERSION,
        kind: crate::model::ab::KIND.into(),
        run_id,
        environment: env,
        suite: suite_name,
        base: base_side,
        candidate: AbSide {
            label: "working tree".into(),
            revision: reports[1].environment.git_revision.clone(),
            binary: display_relative(&sides[1].binary, &root),
            run_dir: "candidate".into(),
        },
        pairs: options.repeat,
        max_regression: profile.max_regression,
        profile: profile.name.clone(),
        confidence: crate::analysis::ab::CONFIDENCE,
        started_at,
        finished_at,
        workloads: crate::analysis::ab::judge_reports(
            &reports[0],
            &reports[1],
            profile.max_regression,
        ),
    };
    write_ab(&run_dir, &ab)?;
    println!("{}", crate::render::ab::terminal(&ab));
    println!("report: {}", run_dir.join("ab.md").display());
    judge(&ab)
}

/// Exit 1 when a metric regressed, was not judged or a workload failed.
pub(crate) fn judge(ab: &AbReport) -> Result<()> {
    if ab.failures().is_empty() && ab.broken().is_empty() {
        return Ok(());
    }
    failed(crate::render::ab::verdict_line(ab))
}

fn write_ab(run_dir: &Path, ab: &AbReport) -> Result<()> {
    for (name, text) in [
        (AB_FILE, ab.to_json()),
        ("ab.md", crate::render::ab::markdown(ab)),
        ("ab.html", crate::render::ab::html(ab)),
    ] {
        let file = run_dir.join(name);
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// The pairs of one workload: pair k runs A then B when k is odd, B then A
/// when it is even.
#[allow(clippy::too_many_arguments)]
fn run_pairs(
    options: &Options,
    label: &str,
    index: usize,
    p: &PlannedWorkload,
    sides: &mut [Side],
    loadgen: &Path,
    env: &Environment,
    epoch: Instant,
) -> Result<()> {
    for pair in 1..=options.repeat {
        let order: [usize; 2] = if pair % 2 == 1 { [0, 1] } else { [1, 0] };
        for which in order {
            let side = &mut sides[which];
            println!(
                "==> {label} ({}), pair {pair}/{}: {}",
                p.workload.scenario.as_str(),
                options.repeat,
                side.name
            );
            let r = side.run_once(label, p, index, pair, loadgen, env, epoch)?;
            println!("    {}", one_line(&r));
            side.pending.push(r);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The bench workflow gates with five repeats and runs the A/B gate
    /// against the base branch (ci/bench.yml, issue 16 items 5 and 6).
    #[test]
    fn the_bench_workflow_gates_with_five_repeats_and_an_ab_run() {
        let root = crate::infra::cargo::project_root();
        let workflow = std::fs::read_to_string(root.join("ci/bench.yml")).unwrap();
        let step = |name: &str| {
            workflow
                .split("- name: ")
                .find(|s| s.starts_with(name))
                .unwrap_or_else(|| panic!("no step `{name}` in ci/bench.yml"))
                .to_string()
        };
        assert!(step("Bench (quick suite").contains("--repeat 5"));
        let ab = step("A/B regression gate");
        assert!(ab.contains("cargo xtask bench --ab \"$base\""), "{ab}");
        assert!(
            ab.contains("origin/$GITHUB_BASE_REF") && ab.contains("--repeat 5"),
            "{ab}"
        );
        assert!(ab.contains("exit \"$status\""), "{ab}");
        assert!(workflow.contains("fetch-depth: 0"));
    }
}
