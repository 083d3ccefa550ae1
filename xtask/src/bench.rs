//! `cargo xtask bench`: build the broker and loadgen (release), start the broker, run
//! every workload through the loadgen binary while sampling the broker from
//! /proc, then write report.json and report.md and gate them.
//!
//! Nothing here waits unbounded: the broker must be ready within 60 s, each
//! loadgen run has a budget (warm-up + duration + drain + 45 s), and a broker
//! that dies mid-run ends the bench (report written) within a few seconds.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use loadgen::{LoadResult, Outcome, Protocol};
use xshell::{cmd, Shell};

use crate::build_all;
use crate::environment::{self, Environment};
use crate::gate::{self, Profile};
use crate::launcher::{self, RunningBroker};
use crate::report::{self, RepeatReport, Report, Status, Summary, WorkloadReport};
use crate::sampler::{Sampler, Usage};
use crate::suite::{self, Overrides, PlannedWorkload};
use crate::targets::{self, HostFacts, Target};

/// Slack on top of a workload's own timing before loadgen counts as hung:
/// more than loadgen's own 30 s deadline slack, so that it normally cuts
/// itself off and writes its partial result first.
const LOADGEN_SLACK: Duration = Duration::from_secs(45);
/// How long loadgen gets to notice a dead broker and write its partial result.
const ABORT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub enum BrokerChoice {
    /// Build this workspace's broker in release mode and start it.
    Built,
    /// Someone else's broker at `mqtt` (and `kafka`, `amqp`, if it speaks
    /// Kafka or AMQP); sample `pid` if given.
    External {
        mqtt: String,
        kafka: Option<String>,
        amqp: Option<String>,
        pid: Option<u32>,
    },
    /// The system mosquitto with a generated config.
    Mosquitto,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Cross-build for this triple and run the broker through its runner.
    pub target: Option<String>,
    pub suite: String,
    /// Workload files replacing the suite.
    pub workloads: Vec<PathBuf>,
    /// Overrides every workload's duration.
    pub duration: Option<f64>,
    pub repeat: u32,
    pub broker: BrokerChoice,
    /// Threshold profile; default: the host's platform class.
    pub profile: Option<String>,
    /// Exit non-zero when the gate fails (`--no-gate-exit` turns it off).
    pub gate_exit: bool,
    /// Run directory; default `reports/runs/<timestamp>-<triple>/`.
    pub out: Option<PathBuf>,
}

pub fn run(options: &Options) -> Result<()> {
    let root = crate::project_root();
    let sh = Shell::new()?;
    sh.change_dir(&root);
    if options.repeat == 0 {
        bail!("--repeat 0: must be at least 1");
    }

    // Bad input costs no build: plan workloads and load the profile first.
    let cli = Overrides {
        duration_secs: options.duration,
        ..Overrides::default()
    };
    let (suite_name, planned) = if options.workloads.is_empty() {
        let planned = suite::plan_suite(&root, &options.suite, &cli)?;
        (options.suite.clone(), planned)
    } else {
        (
            "custom".to_string(),
            suite::plan_files(&options.workloads, &cli)?,
        )
    };
    let explicit_profile = options
        .profile
        .as_deref()
        .map(|name| Profile::load(&root, name))
        .transpose()?;

    let cross_target = options
        .target
        .as_deref()
        .map(|triple| load_target(&root, triple))
        .transpose()?;

    let mut env = Environment::capture(&sh, &root);
    if let Some(t) = &cross_target {
        env.target_triple = t.triple().to_string();
        env.runner = t.runner_name();
        env.emulated = t.emulated();
    }
    let run_id = environment::run_id(&env.timestamp, &env.target_triple);

    let cargo = crate::cargo();
    let cross_binary = cross_target
        .as_ref()
        .map(|t| build_for_target(&root, t))
        .transpose()?;
    println!("==> build (release)");
    // Two builds, not one `-p broker -p loadgen`: cargo unifies dependency
    // features across the packages of one invocation, which would make a
    // broker binary different from what `cargo build --release -p broker`
    // (and `cargo xtask ci`'s tests) produce, and rebuild it every time the
    // two commands alternate.
    if options.broker == BrokerChoice::Built && cross_target.is_none() {
        cmd!(sh, "{cargo} build --release -p broker")
            .run()
            .context("release build of the broker failed")?;
    }
    cmd!(sh, "{cargo} build --release -p loadgen")
        .run()
        .context("release build of loadgen failed")?;
    let loadgen_bin = crate::release_binary("loadgen");

    let reports_dir = root.join("reports");
    let (run_dir, is_default_dir) = match &options.out {
        Some(dir) => (absolute(dir)?, false),
        None => (reports_dir.join("runs").join(&run_id), true),
    };
    prepare_run_dir(&run_dir)?;
    println!(
        "==> bench {run_id}: {} workloads, run directory {}",
        planned.len(),
        run_dir.display()
    );

    // Effective workloads: what exactly runs, for loadgen and for the report.
    let mut effective = Vec::new();
    for p in &planned {
        let file = run_dir
            .join("workloads")
            .join(format!("{}.toml", p.workload.name));
        let origin = if options.workloads.is_empty() {
            format!("the `{suite_name}` suite's and the command line's overrides")
        } else {
            "the command line's overrides".to_string()
        };
        let text = format!(
            "# Effective workload: {} with {origin}.\n{}",
            p.source.display(),
            toml::to_string(&p.workload).context("serializing a workload")?
        );
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        effective.push(file);
    }

    let epoch = Instant::now();
    let started_at = environment::timestamp(SystemTime::now());
    let mut broker = match &options.broker {
        BrokerChoice::Built => {
            let host_binary = crate::release_binary("broker");
            launcher::start_built(
                launcher::Invocation {
                    binary: cross_binary.as_deref().unwrap_or(&host_binary),
                    target: cross_target.as_ref(),
                },
                &run_dir,
            )?
        }
        BrokerChoice::Mosquitto => launcher::start_mosquitto(&run_dir)?,
        BrokerChoice::External {
            mqtt,
            kafka,
            amqp,
            pid,
        } => launcher::external(mqtt, kafka.as_deref(), amqp.as_deref(), *pid)?,
    };
    println!(
        "==> broker ({}) ready at {}{}",
        broker.info.kind.as_str(),
        broker.address(),
        broker
            .pid()
            .map(|p| format!(", pid {p}"))
            .unwrap_or_default()
    );
    if env.emulated {
        println!(
            "    EMULATED: the broker runs under {}; speed thresholds are reported, not gated",
            env.runner
        );
    }
    let profile = match explicit_profile {
        Some(p) => p,
        None => {
            let class = cross_target.as_ref().and_then(|t| t.def.class.profile());
            Profile::load(
                &root,
                class.unwrap_or_else(|| {
                    default_profile(broker.info.platform.as_deref(), &env.target_triple)
                }),
            )?
        }
    };
    let sampler = broker
        .pid()
        .map(|pid| Sampler::start(pid, env.cores, epoch));
    if sampler.is_none() {
        println!("    no broker pid: memory and CPU are not sampled (give --broker-pid)");
    }

    let context = RunContext {
        run_dir: &run_dir,
        loadgen: &loadgen_bin,
        cores: env.cores,
        epoch,
    };
    let total = planned.len();
    let mut workloads = Vec::new();
    let mut broker_exit: Option<String> = None;
    for (index, (p, file)) in planned.iter().zip(&effective).enumerate() {
        let name = &p.workload.name;
        let mut repeats = Vec::new();
        let mut status = Status::Ok;
        if let Some(died_during) = broker_exit.as_ref().map(|_| died_in(&workloads)) {
            status = Status::NotRun {
                reason: format!("broker exited during {died_during}"),
            };
        } else if let Err(reason) = target_address(&broker, p.workload.protocol) {
            println!("==> [{}/{total}] {name}: skipped: {reason}", index + 1);
            status = Status::Skipped { reason };
        } else {
            for repeat in 1..=options.repeat {
                if let Some(how) = broker.exited() {
                    broker_exit = Some(how.clone());
                    status = Status::NotRun {
                        reason: format!("broker {how} before this workload"),
                    };
                    break;
                }
                println!(
                    "==> [{}/{total}] {name} ({}){}",
                    index + 1,
                    p.workload.scenario.as_str(),
                    if options.repeat > 1 {
                        format!(", repeat {repeat}/{}", options.repeat)
                    } else {
                        String::new()
                    }
                );
                let (r, death) = context.run_repeat(p, file, repeat, &mut broker, sampler.as_ref());
                println!("    {}", one_line(&r));
                if let (Some(failure), Status::Ok) = (&r.failure, &status) {
                    status = Status::Failed {
                        reason: if options.repeat > 1 {
                            format!("repeat {repeat}: {failure}")
                        } else {
                            failure.clone()
                        },
                    };
                }
                repeats.push(r);
                if let Some(how) = death {
                    println!("    broker {how}: the remaining workloads are not run");
                    broker_exit = Some(how);
                    break;
                }
            }
        }
        workloads.push(WorkloadReport {
            name: name.clone(),
            source: display_relative(&p.source, &root),
            effective_file: format!("workloads/{name}.toml"),
            workload: p.workload.clone(),
            status,
            summary: Summary::of(&repeats),
            repeats,
        });
    }

    let samples = sampler.map(Sampler::finish).unwrap_or_default();
    broker.stop();
    let mut report = Report {
        schema_version: report::REPORT_SCHEMA_VERSION,
        run_id,
        environment: env,
        broker: broker.info.clone(),
        suite: suite_name,
        profile: profile.name.clone(),
        repeat: options.repeat,
        started_at,
        finished_at: environment::timestamp(SystemTime::now()),
        broker_exit,
        broker_usage: Usage::of(&samples),
        workloads,
        gate: None,
        micro: None,
    };
    let gate = gate::evaluate(&report, &profile);
    report.gate = Some(gate.clone());
    let json = run_dir.join("report.json");
    std::fs::write(&json, report.to_json())
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md = run_dir.join("report.md");
    std::fs::write(&md, report::render_markdown(&report))
        .with_context(|| format!("cannot write {}", md.display()))?;
    crate::html::write(&run_dir, &report)?;
    if is_default_dir {
        point_latest(&reports_dir, &run_dir)?;
    }

    println!(
        "==> gate: profile `{}` ({})",
        gate.profile,
        display_relative(&profile.file, &root)
    );
    println!("{}", gate::text_table(&gate));
    println!("{}", gate::verdict_line(&gate));
    println!("report: {}", md.display());
    println!("        {}", json.display());
    if is_default_dir {
        println!("        (reports/latest points to it)");
    }

    for w in report.workloads.iter().filter(|w| w.status.is_skipped()) {
        println!("    {}: {}", w.name, w.status.describe());
    }
    let failed: Vec<&WorkloadReport> = report
        .workloads
        .iter()
        .filter(|w| !w.status.is_ok() && !w.status.is_skipped())
        .collect();
    if let Some(how) = &report.broker_exit {
        bail!(
            "broker {how} during the run; {} of {total} workloads failed or did not run",
            failed.len()
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} of {total} workloads failed: {}",
            failed.len(),
            failed
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if gate.failed() {
        if options.gate_exit {
            bail!(
                "gate `{}` failed (use --no-gate-exit to report without failing)",
                gate.profile
            );
        }
        println!(
            "gate `{}` failed; not failing the command (--no-gate-exit)",
            gate.profile
        );
    }
    Ok(())
}

/// `targets/<triple>.toml`, which must be runnable here.
pub(crate) fn load_target(root: &Path, triple: &str) -> Result<Target> {
    let all = targets::load_all(root)?;
    let target = targets::select(all, &[triple.to_string()])?.remove(0);
    if target.build_only() {
        bail!(
            "--target {triple}: build only ([runner] kind = \"none\" in {}); nothing on this host can run it",
            target.file.display()
        );
    }
    let host = HostFacts::probe(std::slice::from_ref(&target));
    if let Err(why) = targets::runner_ready(&target, &host) {
        bail!(
            "--target {triple}: cannot run it here: {why} (cargo xtask setup --targets {triple})"
        );
    }
    Ok(target)
}

/// Cross-builds the broker for `target` with its first usable backend and
/// profile, as build-all would; returns the binary.
fn build_for_target(root: &Path, target: &Target) -> Result<PathBuf> {
    let host = HostFacts::probe(std::slice::from_ref(target));
    let backend = targets::choose_backend(target, None, &host).map_err(|why| {
        anyhow::anyhow!(
            "--target {}: cannot build it here: {why} (cargo xtask setup --targets {})",
            target.triple(),
            target.triple()
        )
    })?;
    let profile = &target.def.profile;
    println!(
        "==> build broker for {} ({backend}, profile {profile})",
        target.triple()
    );
    let dir = build_all::cargo_target_dir(target.triple());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = dir.join("bench-build.log");
    let binary = build_all::build(root, target, backend, profile, &log, &|_| {})?;
    println!("    {}", binary.display());
    Ok(binary)
}

/// Where loadgen sends a workload of `protocol`, or why it cannot run.
pub fn target_address(broker: &RunningBroker, protocol: Protocol) -> Result<String, String> {
    match protocol {
        Protocol::Mqtt => Ok(broker.address().to_string()),
        Protocol::Kafka => broker.kafka_address().map(str::to_string).ok_or_else(|| {
            match broker.info.kind {
                launcher::BrokerKind::External => {
                    "a Kafka workload, and no Kafka address for the external broker: give --kafka HOST:PORT".to_string()
                }
                kind => format!(
                    "a Kafka workload, and the {} broker has no Kafka listener",
                    kind.as_str()
                ),
            }
        }),
        Protocol::Amqp => broker.amqp_address().map(str::to_string).ok_or_else(|| {
            match broker.info.kind {
                launcher::BrokerKind::External => {
                    "an AMQP workload, and no AMQP address for the external broker: give --amqp HOST:PORT".to_string()
                }
                kind => format!(
                    "an AMQP workload, and the {} broker has no AMQP listener",
                    kind.as_str()
                ),
            }
        }),
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

/// What one bench run shares across its workloads.
struct RunContext<'a> {
    run_dir: &'a Path,
    loadgen: &'a Path,
    cores: usize,
    epoch: Instant,
}

/// How a loadgen process ended.
enum Ended {
    Exited(ExitStatus),
    /// Killed by us: over its time budget.
    Overran(Duration),
    /// Killed by us: the broker died and loadgen did not stop in time.
    KilledAfterBrokerDeath,
    SpawnFailed(String),
}

impl RunContext<'_> {
    fn secs(&self, t: Instant) -> f64 {
        t.duration_since(self.epoch).as_secs_f64()
    }

    /// Runs loadgen once; returns the repeat's report and, if the broker died
    /// meanwhile, how.
    fn run_repeat(
        &self,
        planned: &PlannedWorkload,
        effective_file: &Path,
        repeat: u32,
        broker: &mut RunningBroker,
        sampler: Option<&Sampler>,
    ) -> (RepeatReport, Option<String>) {
        let name = &planned.workload.name;
        let result_rel = format!("results/{name}-{repeat}.json");
        let log_rel = format!("logs/{name}-{repeat}.log");
        let result_file = self.run_dir.join(&result_rel);
        let log_file = self.run_dir.join(&log_rel);
        let budget = budget(&planned.workload);

        let started = Instant::now();
        let mut death = None;
        let spawned = target_address(broker, planned.workload.protocol)
            .map_err(anyhow::Error::msg)
            .and_then(|target| {
                self.spawn_loadgen(effective_file, &target, &result_file, &log_file)
            });
        let ended = match spawned {
            Err(e) => Ended::SpawnFailed(format!("{e:#}")),
            Ok(mut child) => wait_for_loadgen(&mut child, broker, budget, &mut death),
        };
        let finished = Instant::now();

        let (result, unreadable) = match std::fs::read_to_string(&result_file) {
            Ok(text) => match LoadResult::from_json(&text) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(format!("{result_rel}: {e}"))),
            },
            Err(_) => (None, None),
        };
        let failure = failure(
            &ended,
            result.as_ref(),
            unreadable,
            death.as_deref(),
            &log_file,
        );

        let (from, to) = (self.secs(started), self.secs(finished));
        let (measured_from, measured_to) =
            measured_window(from, to, &planned.workload, result.as_ref());
        let lifetime = sampler.map(|s| s.between(from, to)).unwrap_or_default();
        let window: Vec<_> = lifetime
            .iter()
            .copied()
            .filter(|s| s.t >= measured_from && s.t <= measured_to)
            .collect();
        // A window shorter than one sampling interval has no sample of its own.
        let broker_usage = Usage::of(&window).or_else(|| Usage::of(&lifetime));
        let wall = to - from;
        let loadgen_cpu_percent = result.as_ref().filter(|_| wall > 0.0).map(|r| {
            (r.loadgen.cpu_user_secs + r.loadgen.cpu_system_secs) / wall / self.cores.max(1) as f64
                * 100.0
        });
        let report = RepeatReport {
            repeat,
            result_file: result_rel,
            log_file: log_rel,
            loadgen_exit: match &ended {
                Ended::Exited(status) => Some(launcher::describe_exit(*status)),
                Ended::Overran(_) | Ended::KilledAfterBrokerDeath => Some("killed by xtask".into()),
                Ended::SpawnFailed(_) => None,
            },
            failure,
            started: from,
            ended: to,
            measured_from,
            measured_to,
            broker_peak_rss_bytes: Usage::of(&lifetime).map(|u| u.peak_rss_bytes),
            broker_samples: lifetime,
            broker_usage,
            loadgen_cpu_percent,
            result,
        };
        (report, death)
    }

    fn spawn_loadgen(
        &self,
        workload: &Path,
        target: &str,
        out: &Path,
        log: &Path,
    ) -> Result<Child> {
        let log = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        Command::new(self.loadgen)
            .arg("run")
            .arg("--workload")
            .arg(workload)
            .args(["--target", target])
            .arg("--out")
            .arg(out)
            .arg("--quiet")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", self.loadgen.display()))
    }
}

/// Warm-up + duration + drain + connecting at the workload's connect rate + slack.
fn budget(w: &loadgen::Workload) -> Duration {
    let clients =
        u64::from(w.publishers) + u64::from(w.subscribers) + u64::from(w.idle_connections);
    let connecting = if w.connect_rate > 0 {
        clients as f64 / w.connect_rate as f64
    } else {
        0.0
    };
    Duration::from_secs_f64(w.warmup_secs + w.duration_secs + w.drain_secs + connecting)
        + LOADGEN_SLACK
}

/// Polls loadgen and the broker every 100 ms until loadgen ends; kills
/// loadgen when it overruns `budget` or outlives the broker by `ABORT_GRACE`.
fn wait_for_loadgen(
    child: &mut Child,
    broker: &mut RunningBroker,
    budget: Duration,
    death: &mut Option<String>,
) -> Ended {
    let start = Instant::now();
    let mut died_at: Option<Instant> = None;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if death.is_none() {
                    // Loadgen may have ended because the broker did.
                    *death = broker.exited();
                }
                return Ended::Exited(status);
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Ended::SpawnFailed(format!("cannot wait for loadgen: {e}"));
            }
        }
        if died_at.is_none() {
            if let Some(how) = broker.exited() {
                println!(
                    "    broker {how}; waiting up to {} s for loadgen to stop",
                    ABORT_GRACE.as_secs()
                );
                *death = Some(how);
                died_at = Some(Instant::now());
            }
        }
        if died_at.is_some_and(|t| t.elapsed() > ABORT_GRACE) {
            launcher::terminate(child, Duration::from_secs(1));
            let _ = child.wait();
            return Ended::KilledAfterBrokerDeath;
        }
        if start.elapsed() > budget {
            launcher::terminate(child, Duration::from_secs(2));
            let _ = child.wait();
            return Ended::Overran(budget);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why a repeat failed, if it did, in one line.
fn failure(
    ended: &Ended,
    result: Option<&LoadResult>,
    unreadable: Option<String>,
    death: Option<&str>,
    log: &Path,
) -> Option<String> {
    if let Some(how) = death {
        return Some(format!("broker {how} during this workload"));
    }
    let last_line = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|| "(no output)".into())
    };
    let aborted = |r: &LoadResult| {
        format!(
            "loadgen aborted: {}",
            r.error.clone().unwrap_or_else(|| "no reason given".into())
        )
    };
    match ended {
        Ended::SpawnFailed(e) => Some(e.clone()),
        Ended::Overran(budget) => Some(format!(
            "loadgen still running after {} s (connecting + warm-up + duration + drain + {} s); killed",
            budget.as_secs(),
            LOADGEN_SLACK.as_secs()
        )),
        Ended::KilledAfterBrokerDeath => Some("loadgen killed after the broker died".into()),
        Ended::Exited(status) => match (status.code(), result) {
            (_, _) if unreadable.is_some() => unreadable,
            (Some(0), Some(r)) if r.outcome == Outcome::Completed => None,
            (Some(0) | Some(3), Some(r)) if r.outcome == Outcome::Aborted => Some(aborted(r)),
            (Some(0), _) => Some("loadgen exited 0 but wrote no result".into()),
            (Some(3), _) => Some(format!("loadgen aborted without a result: {}", last_line())),
            (Some(2), _) => Some(format!("loadgen rejected its input: {}", last_line())),
            _ => Some(format!(
                "loadgen {}: {}",
                launcher::describe_exit(*status),
                last_line()
            )),
        },
    }
}

/// The measured window (seconds since the run started), estimated from the
/// result: after connecting and warm-up, `measured_secs` long, inside the
/// loadgen process's lifetime. Without a result: the whole lifetime.
fn measured_window(
    from: f64,
    to: f64,
    w: &loadgen::Workload,
    result: Option<&LoadResult>,
) -> (f64, f64) {
    let Some(r) = result else {
        return (from, to);
    };
    let start = (from + r.connections.time_to_establish_secs + w.warmup_secs).min(to);
    let end = (start + r.measured_secs).min(to);
    (start, end)
}

fn one_line(r: &RepeatReport) -> String {
    let took = r.ended - r.started;
    let Some(res) = &r.result else {
        return format!(
            "FAILED after {took:.1} s: {} (log: {})",
            r.failure.as_deref().unwrap_or("no result"),
            r.log_file
        );
    };
    let mut parts = Vec::new();
    if res.counts.sent > 0 || res.counts.received > 0 {
        parts.push(format!(
            "received {}",
            report::rate(res.rates.received_per_sec)
        ));
    }
    if let Some(e2e) = &res.latency.end_to_end {
        parts.push(format!(
            "e2e p50 {} p99 {}",
            report::micros(e2e.p50_us as f64),
            report::micros(e2e.p99_us as f64)
        ));
    }
    parts.push(format!(
        "connections {}/{}",
        report::thousands(res.connections.established),
        report::thousands(res.connections.attempted)
    ));
    if res.counts.lost > 0 {
        parts.push(format!("lost {}", report::thousands(res.counts.lost)));
    }
    if let Some(rss) = r.broker_peak_rss_bytes {
        parts.push(format!("broker RSS {}", report::bytes(rss as f64)));
    }
    if let Some(u) = r.broker_usage {
        parts.push(format!(
            "broker CPU {}",
            report::percent(u.avg_cpu_machine_percent)
        ));
    }
    match &r.failure {
        None => format!("ok in {took:.1} s: {}", parts.join(", ")),
        Some(f) => format!(
            "FAILED after {took:.1} s: {f} ({}; log: {})",
            parts.join(", "),
            r.log_file
        ),
    }
}

/// The workload during which the broker died: the last one that ran.
fn died_in(workloads: &[WorkloadReport]) -> String {
    workloads
        .iter()
        .rev()
        .find(|w| !w.repeats.is_empty())
        .map(|w| w.name.clone())
        .unwrap_or_else(|| "an earlier workload".into())
}

pub(crate) fn absolute(dir: &Path) -> Result<PathBuf> {
    Ok(if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    })
}

/// Creates the run directory; a reused one (`--out`) loses only what an
/// earlier bench wrote there, so stale results never mix with new ones.
fn prepare_run_dir(dir: &Path) -> Result<()> {
    for sub in ["results", "logs", "workloads", "broker-data"] {
        let path = dir.join(sub);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot clear {}", path.display()))?;
        }
    }
    for file in [
        "report.json",
        "report.md",
        "broker.log",
        "broker.toml",
        "mosquitto.conf",
    ] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    for sub in ["results", "logs", "workloads"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(())
}

/// Makes `reports/latest` a relative symlink to the run, replacing the old
/// link atomically.
pub(crate) fn point_latest(reports: &Path, run_dir: &Path) -> Result<()> {
    let link = reports.join("latest");
    let target = run_dir.strip_prefix(reports).unwrap_or(run_dir);
    let tmp = reports.join(".latest.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::rename(&tmp, &link).with_context(|| {
        format!(
            "cannot point {} at {} (is it a directory? remove it)",
            link.display(),
            target.display()
        )
    })
}

fn display_relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{result, workload};

    #[test]
    fn kafka_workloads_go_to_the_kafka_address_or_say_why_not() {
        let mqtt = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let kafka = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (m, k) = (
            mqtt.local_addr().unwrap().to_string(),
            kafka.local_addr().unwrap().to_string(),
        );
        let both = launcher::external(&m, Some(&k), None, None).unwrap();
        assert_eq!(target_address(&both, Protocol::Mqtt).unwrap(), m);
        assert_eq!(target_address(&both, Protocol::Kafka).unwrap(), k);
        let mqtt_only = launcher::external(&m, None, None, None).unwrap();
        let reason = target_address(&mqtt_only, Protocol::Kafka).unwrap_err();
        assert!(reason.contains("--kafka HOST:PORT"), "{reason}");
    }

    #[test]
    fn amqp_workloads_go_to_the_amqp_address_or_say_why_not() {
        let mqtt = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let amqp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (m, a) = (
            mqtt.local_addr().unwrap().to_string(),
            amqp.local_addr().unwrap().to_string(),
        );
        let both = launcher::external(&m, None, Some(&a), None).unwrap();
        assert_eq!(target_address(&both, Protocol::Amqp).unwrap(), a);
        assert!(target_address(&both, Protocol::Kafka).is_err());
        let mqtt_only = launcher::external(&m, None, None, None).unwrap();
        let reason = target_address(&mqtt_only, Protocol::Amqp).unwrap_err();
        assert!(reason.contains("--amqp HOST:PORT"), "{reason}");
        let mut mosquitto = mqtt_only;
        mosquitto.info.kind = launcher::BrokerKind::Mosquitto;
        let reason = target_address(&mosquitto, Protocol::Amqp).unwrap_err();
        assert!(
            reason.contains("mosquitto broker has no AMQP listener"),
            "{reason}"
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let err = launcher::external(&m, None, Some(&closed), None)
            .err()
            .expect("a closed AMQP port is refused")
            .to_string();
        assert!(err.contains("AMQP listener"), "{err}");
    }

    #[test]
    fn default_profile_follows_the_platform_class() {
        let x86 = "x86_64-unknown-linux-gnu";
        assert_eq!(default_profile(None, x86), "high_perf");
        assert_eq!(
            default_profile(None, "aarch64-unknown-linux-gnu"),
            "high_perf"
        );
        assert_eq!(
            default_profile(None, "armv7-unknown-linux-gnueabihf"),
            "embedded"
        );
        assert_eq!(
            default_profile(None, "riscv64gc-unknown-linux-gnu"),
            "embedded"
        );
        let printed = "platform: arch=x86_64 class=high_perf\neffective class: embedded; runtime: current_thread\n";
        assert_eq!(default_profile(Some(printed), x86), "embedded");
        let generic = "effective class: generic; runtime: multi_thread (2 workers)\n";
        assert_eq!(default_profile(Some(generic), x86), "high_perf");
    }

    #[test]
    fn budget_covers_the_workload_plus_slack() {
        let mut w = workload("w", "fan_in");
        w.warmup_secs = 0.5;
        w.duration_secs = 2.0;
        w.drain_secs = 1.0;
        assert_eq!(budget(&w), Duration::from_secs_f64(3.5) + LOADGEN_SLACK);
        let mut storm = workload("s", "connection_storm");
        storm.connect_rate = 100;
        storm.warmup_secs = 0.0;
        storm.duration_secs = 5.0;
        storm.drain_secs = 0.0;
        assert_eq!(budget(&storm), Duration::from_secs(5 + 10) + LOADGEN_SLACK);
    }

    #[test]
    fn measured_window_skips_connecting_and_warmup() {
        let mut w = workload("w", "latency");
        w.warmup_secs = 1.0;
        let mut r = result(&w, 1000.0, 1000);
        r.connections.time_to_establish_secs = 0.5;
        r.measured_secs = 2.0;
        assert_eq!(measured_window(10.0, 20.0, &w, Some(&r)), (11.5, 13.5));
        assert_eq!(measured_window(10.0, 12.0, &w, Some(&r)), (11.5, 12.0));
        assert_eq!(measured_window(10.0, 20.0, &w, None), (10.0, 20.0));
    }

    #[cfg(unix)]
    #[test]
    fn failures_are_one_line_with_the_cause() {
        use std::os::unix::process::ExitStatusExt;
        let log =
            std::env::temp_dir().join(format!("xtask-bench-failure-{}.log", std::process::id()));
        std::fs::write(&log, "starting\nerror: --target: connection refused\n\n").unwrap();
        let w = workload("w", "fan_in");
        let ok = result(&w, 1.0, 1);
        let mut aborted = ok.clone();
        aborted.outcome = Outcome::Aborted;
        aborted.error = Some("broker closed 3 connections".into());
        let exit = |code: i32| Ended::Exited(ExitStatus::from_raw(code << 8));

        assert_eq!(failure(&exit(0), Some(&ok), None, None, &log), None);
        assert_eq!(
            failure(&exit(3), Some(&aborted), None, None, &log).unwrap(),
            "loadgen aborted: broker closed 3 connections"
        );
        assert_eq!(
            failure(&exit(2), None, None, None, &log).unwrap(),
            "loadgen rejected its input: error: --target: connection refused"
        );
        assert_eq!(
            failure(&exit(1), None, None, None, &log).unwrap(),
            "loadgen exited with code 1: error: --target: connection refused"
        );
        assert!(failure(&exit(0), None, None, None, &log)
            .unwrap()
            .contains("no result"));
        assert!(
            failure(&exit(0), Some(&ok), None, Some("killed by signal 9"), &log)
                .unwrap()
                .starts_with("broker killed by signal 9")
        );
        assert!(failure(
            &Ended::Overran(Duration::from_secs(33)),
            None,
            None,
            None,
            &log
        )
        .unwrap()
        .contains("after 33 s"));
        std::fs::remove_file(&log).unwrap();
    }

    #[test]
    fn bench_target_must_be_defined_and_runnable() {
        let root = crate::project_root();
        let e = load_target(&root, "aarch64-apple-darwin")
            .unwrap_err()
            .to_string();
        assert!(e.contains("build only"), "{e}");
        let e = load_target(&root, "mips-unknown-linux-gnu")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown target"), "{e}");
    }

    #[test]
    fn latest_symlink_is_replaced() {
        let dir = std::env::temp_dir().join(format!("xtask-latest-{}", std::process::id()));
        let reports = dir.join("reports");
        for run in ["a", "b"] {
            std::fs::create_dir_all(reports.join("runs").join(run)).unwrap();
        }
        point_latest(&reports, &reports.join("runs/a")).unwrap();
        point_latest(&reports, &reports.join("runs/b")).unwrap();
        assert_eq!(
            std::fs::read_link(reports.join("latest")).unwrap(),
            Path::new("runs/b")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
