//! `cargo xtask bench`: build the broker and loadgen (release), start the broker, run
//! every workload through the loadgen binary while sampling the broker from
//! /proc, then write report.json and report.md and gate them.
//!
//! Nothing here waits unbounded: the broker must be ready within 60 s, each
//! loadgen run has a budget (warm-up + duration + drain + 45 s), and a broker
//! that dies mid-run ends the bench (report written) within a few seconds.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::infra::environment;
use crate::infra::environment::Environment;
use crate::infra::host::load_target;
use crate::infra::host::HostFacts;
use crate::infra::launcher::target_address;
use crate::infra::launcher::RunningBroker;
use crate::infra::loadgen::expected;
use crate::infra::loadgen::RunContext;
use crate::infra::run_dir::{absolute, display_relative, point_latest, prepare_run_dir};
use crate::infra::sampler::Sampler;
use crate::infra::sampler::Usage;
use crate::infra::targets::Target;
use crate::model::gate::default_profile;
use crate::model::gate::GateReport;
use crate::model::gate::Profile;
use crate::model::report::RepeatReport;
use crate::model::report::Report;
use crate::model::report::Status;
use crate::model::report::Summary;
use crate::model::report::WorkloadReport;
use crate::model::suite;
use crate::model::suite::{Overrides, PlannedWorkload};
use crate::model::verdict::failed;
use crate::render::terminal::{one_line, RepeatProgress};

mod ab;

/// The base of an interleaved A/B run (`--ab REV` / `--ab-binary PATH`).
#[derive(Debug, Clone, PartialEq)]
pub enum AbBase {
    /// Built from this git revision in a worktree under target/ab/.
    Rev(String),
    /// A broker binary given directly.
    Binary(PathBuf),
}
mod max_rate;

#[derive(Debug, Clone, PartialEq)]
pub enum BrokerChoice {
    /// Build this workspace's broker in release mode and start it.
    Built,
    /// Someone else's broker at `mqtt`, `kafka` and `amqp` (at least one;
    /// the workloads of a protocol without an address are skipped and the
    /// gate lists that protocol as not measured); sample `pid` if given.
    External {
        mqtt: Option<String>,
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
    /// Measure this base and the working tree's broker interleaved.
    pub ab: Option<AbBase>,
    /// `--sweep`: fractions of the maximum rate to run `rate = "max"` workloads at.
    pub sweep: Option<Vec<f64>>,
    /// `--sweep-max`: the maximum rate, given instead of searched.
    pub sweep_max: Option<u64>,
}

pub fn run(options: &Options) -> Result<()> {
    let root = crate::infra::cargo::project_root();
    let sh = Shell::new()?;
    sh.change_dir(&root);
    if options.repeat == 0 {
        bail!("--repeat 0: must be at least 1");
    }
    if let Some(base) = &options.ab {
        return ab::run(options, base);
    }

    // Bad input costs no build: plan workloads and load the profile first.
    let (suite_name, planned) = plan(options, &root)?;
    if (options.sweep.is_some() || options.sweep_max.is_some())
        && !planned.iter().any(|p| p.search.is_some())
    {
        bail!("--sweep and --sweep-max need a workload with `rate = \"max\"` (e.g. --suite max)");
    }
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

    let env = Environment::capture_for(&sh, &root, cross_target.as_ref());
    let run_id = environment::run_id(&env.timestamp, &env.target_triple);

    let cross_binary = cross_target
        .as_ref()
        .map(|t| build_for_target(&root, t))
        .transpose()?;
    build_release(&sh, options, cross_target.is_some())?;
    let loadgen_bin = crate::infra::cargo::release_binary("loadgen")?;

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
    let effective = write_effective(&run_dir, &planned, options, &suite_name)?;

    let epoch = Instant::now();
    let started_at = environment::timestamp(SystemTime::now());
    let host_binary = crate::infra::cargo::release_binary("broker")?;
    let binary = cross_binary.as_deref().unwrap_or(&host_binary);
    // The machine's CPU reference, before the broker starts and after it
    // stops, while xtask has no other thread: the gate scales CPU-per-message
    // thresholds by it (infra::cpu_reference).
    let mut reference = crate::infra::cpu_reference::measure_or_warn("before the run");
    let mut broker = start_broker(options, binary, cross_target.as_ref(), &run_dir)?;
    if env.emulated {
        println!(
            "    EMULATED: the broker runs under {}; speed thresholds are reported, not gated",
            env.runner
        );
    }
    let profile = match explicit_profile {
        Some(p) => p,
        None => implied_profile(&root, cross_target.as_ref(), &broker, &env)?,
    };
    // "% of the machine" is of the cores this run may use (affinity, cgroup
    // quota), not of every core /proc/cpuinfo lists.
    let sampler = start_sampler(&broker, env.usable(), epoch);

    let context = RunContext {
        run_dir: &run_dir,
        loadgen: &loadgen_bin,
        cores: env.usable(),
        epoch,
    };
    let (workloads, broker_exit) = run_workloads(
        &context,
        options,
        &root,
        &planned,
        &effective,
        &mut broker,
        sampler.as_ref(),
    );

    let samples = sampler.map(Sampler::finish).unwrap_or_default();
    broker.stop();
    reference.extend(crate::infra::cpu_reference::measure_or_warn(
        "after the run",
    ));
    let mut env = env;
    env.cpu_reference = crate::infra::cpu_reference::CpuReference::of(
        reference,
        crate::infra::cpu_reference::ROUND_TRIPS,
    );
    let mut report = Report {
        schema_version: crate::model::report::REPORT_SCHEMA_VERSION,
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
    let gate = crate::analysis::gate::evaluate(&report, &profile);
    report.gate = Some(gate.clone());
    let (json, md) = write_report(&run_dir, &report)?;
    if is_default_dir {
        point_latest(&reports_dir, &run_dir)?;
    }

    print_summary(&gate, &profile, &root, (&json, &md), is_default_dir);
    verdict(&report, &gate, options.gate_exit)
}

/// The threshold profile when none is given: the cross target's platform
/// class, else the one the broker's platform or the triple implies.
fn implied_profile(
    root: &Path,
    cross_target: Option<&Target>,
    broker: &RunningBroker,
    env: &Environment,
) -> Result<Profile> {
    let class = cross_target.and_then(|t| t.def.class.profile());
    Profile::load(
        root,
        class.unwrap_or_else(|| {
            default_profile(broker.info.platform.as_deref(), &env.target_triple)
        }),
    )
}

/// Samples the broker's memory and CPU, when its pid is known.
fn start_sampler(broker: &RunningBroker, cores: usize, epoch: Instant) -> Option<Sampler> {
    let sampler = broker.pid().map(|pid| Sampler::start(pid, cores, epoch));
    if sampler.is_none() {
        println!("    no broker pid: memory and CPU are not sampled (give --broker-pid)");
    }
    sampler
}

/// The workloads to run: the suite's, or the files given, with the command
/// line's overrides.
fn plan(options: &Options, root: &Path) -> Result<(String, Vec<PlannedWorkload>)> {
    let cli = Overrides {
        duration_secs: options.duration,
        ..Overrides::default()
    };
    Ok(if options.workloads.is_empty() {
        let planned = suite::plan_suite(root, &options.suite, &cli)?;
        (options.suite.clone(), planned)
    } else {
        (
            "custom".to_string(),
            suite::plan_files(&options.workloads, &cli)?,
        )
    })
}

/// Release builds of loadgen and, unless it is cross-built or not ours, the broker.
fn build_release(sh: &Shell, options: &Options, cross: bool) -> Result<()> {
    let cargo = crate::infra::cargo::cargo();
    println!("==> build (release)");
    // Two builds, not one `-p broker -p loadgen`: cargo unifies dependency
    // features across the packages of one invocation, which would make a
    // broker binary different from what `cargo build --release -p broker`
    // (and `cargo xtask ci`'s tests) produce, and rebuild it every time the
    // two commands alternate.
    if options.broker == BrokerChoice::Built && !cross {
        cmd!(sh, "{cargo} build --release -p broker")
            .run()
            .context("release build of the broker failed")?;
    }
    cmd!(sh, "{cargo} build --release -p loadgen")
        .run()
        .context("release build of loadgen failed")?;
    Ok(())
}

/// Writes each effective workload (what exactly runs, for loadgen and for the
/// report) into the run directory; returns the files.
fn write_effective(
    run_dir: &Path,
    planned: &[PlannedWorkload],
    options: &Options,
    suite_name: &str,
) -> Result<Vec<PathBuf>> {
    let mut effective = Vec::new();
    for p in planned {
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
    Ok(effective)
}

/// Starts the broker under test and says where it listens.
fn start_broker(
    options: &Options,
    binary: &Path,
    cross_target: Option<&Target>,
    run_dir: &Path,
) -> Result<RunningBroker> {
    let broker = match &options.broker {
        BrokerChoice::Built => crate::infra::launcher::start_built(
            crate::infra::launcher::Invocation {
                binary,
                target: cross_target,
            },
            run_dir,
        )?,
        BrokerChoice::Mosquitto => crate::infra::launcher::start_mosquitto(run_dir)?,
        BrokerChoice::External {
            mqtt,
            kafka,
            amqp,
            pid,
        } => crate::infra::launcher::external(
            mqtt.as_deref(),
            kafka.as_deref(),
            amqp.as_deref(),
            *pid,
        )?,
    };
    println!(
        "==> broker ({}) ready at {}{}",
        broker.info.kind.as_str(),
        crate::render::environment::listeners(&broker.info),
        broker
            .pid()
            .map(|p| format!(", pid {p}"))
            .unwrap_or_default()
    );
    Ok(broker)
}

/// Runs every planned workload `options.repeat` times; after the broker
/// died, the rest are recorded as not run. Returns them and how the broker
/// exited, if it did.
fn run_workloads(
    context: &RunContext<'_>,
    options: &Options,
    root: &Path,
    planned: &[PlannedWorkload],
    effective: &[PathBuf],
    broker: &mut RunningBroker,
    sampler: Option<&Sampler>,
) -> (Vec<WorkloadReport>, Option<String>) {
    let total = planned.len();
    let mut workloads = Vec::new();
    let mut broker_exit: Option<String> = None;
    for (index, (p, file)) in planned.iter().zip(effective).enumerate() {
        let name = &p.workload.name;
        let label = format!("[{}/{total}] {name}", index + 1);
        let (mut workload, mut max_section) = (p.workload.clone(), None);
        let (status, repeats) =
            if let Some(died_during) = broker_exit.as_ref().map(|_| died_in(&workloads)) {
                let reason = format!("broker exited during {died_during}");
                (Status::NotRun { reason }, Vec::new())
            } else if let Err(reason) = target_address(broker, p.workload.protocol) {
                if broker.info.kind == crate::model::broker::BrokerKind::Built {
                    // Our broker serves every protocol: a missing listener
                    // is a failure, never a skip the gate would not see.
                    println!("==> {label}: FAILED: {reason}");
                    (Status::Failed { reason }, Vec::new())
                } else {
                    println!("==> {label}: skipped: {reason}");
                    (Status::Skipped { reason }, Vec::new())
                }
            } else if let Some(spec) = &p.search {
                let live = max_rate::Live {
                    broker: &mut *broker,
                    sampler,
                    broker_exit: &mut broker_exit,
                };
                let run = max_rate::run(context, options, &label, (p, file, spec), live);
                (workload, max_section) = (run.service, Some(run.section));
                (run.status, run.repeats)
            } else {
                run_workload(
                    context,
                    options,
                    &label,
                    (p, file),
                    broker,
                    sampler,
                    &mut broker_exit,
                )
            };
        workloads.push(WorkloadReport {
            name: name.clone(),
            source: display_relative(&p.source, root),
            effective_file: format!("workloads/{name}.toml"),
            workload,
            status,
            summary: Summary::of(&repeats),
            repeats,
            max_rate: max_section,
        });
    }
    (workloads, broker_exit)
}

/// The repeats of one workload and its status; sets `broker_exit` when the
/// broker dies before or during a repeat.
fn run_workload(
    context: &RunContext<'_>,
    options: &Options,
    label: &str,
    (p, file): (&PlannedWorkload, &Path),
    broker: &mut RunningBroker,
    sampler: Option<&Sampler>,
    broker_exit: &mut Option<String>,
) -> (Status, Vec<RepeatReport>) {
    let mut repeats = Vec::new();
    let mut status = Status::Ok;
    for repeat in 1..=options.repeat {
        if let Some(how) = broker.exited() {
            *broker_exit = Some(how.clone());
            status = Status::NotRun {
                reason: format!("broker {how} before this workload"),
            };
            break;
        }
        println!(
            "==> {label} ({}){}",
            p.workload.scenario.as_str(),
            if options.repeat > 1 {
                format!(", repeat {repeat}/{}", options.repeat)
            } else {
                String::new()
            }
        );
        let progress = RepeatProgress::start(label, expected(&p.workload));
        let (r, death) = context.run_repeat(p, file, repeat, broker, sampler);
        progress.finish();
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
            *broker_exit = Some(how);
            break;
        }
    }
    (status, repeats)
}

/// Writes report.json, report.md and report.html; returns the first two.
fn write_report(run_dir: &Path, report: &Report) -> Result<(PathBuf, PathBuf)> {
    let json = run_dir.join("report.json");
    std::fs::write(&json, report.to_json())
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md = run_dir.join("report.md");
    std::fs::write(&md, crate::render::markdown::render_markdown(report))
        .with_context(|| format!("cannot write {}", md.display()))?;
    crate::render::html::write(run_dir, report)?;
    Ok((json, md))
}

/// The gate table and verdict, and where the report went.
fn print_summary(
    gate: &GateReport,
    profile: &Profile,
    root: &Path,
    (json, md): (&Path, &Path),
    is_default_dir: bool,
) {
    println!(
        "==> gate: profile `{}` ({})",
        gate.profile,
        display_relative(&profile.file, root)
    );
    println!("{}", crate::render::gate::text_table(gate));
    println!("{}", crate::render::gate::verdict_line(gate));
    println!("report: {}", md.display());
    println!("        {}", json.display());
    if is_default_dir {
        println!("        (reports/latest points to it)");
    }
}

/// The command's outcome: an error when the broker died, a workload failed,
/// or the gate failed (unless `gate_exit` is off).
fn verdict(report: &Report, gate: &GateReport, gate_exit: bool) -> Result<()> {
    let total = report.workloads.len();
    for w in report.workloads.iter().filter(|w| w.status.is_skipped()) {
        println!("    {}: {}", w.name, w.status.describe());
    }
    let broken: Vec<&WorkloadReport> = report
        .workloads
        .iter()
        .filter(|w| !w.status.is_ok() && !w.status.is_skipped())
        .collect();
    if let Some(how) = &report.broker_exit {
        return failed(format!(
            "broker {how} during the run; {} of {total} workloads failed or did not run",
            broken.len()
        ));
    }
    if !broken.is_empty() {
        return failed(format!(
            "{} of {total} workloads failed: {}",
            broken.len(),
            broken
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if gate.failed() {
        if gate_exit {
            return failed(format!(
                "gate `{}` failed (use --no-gate-exit to report without failing)",
                gate.profile
            ));
        }
        println!(
            "gate `{}` failed; not failing the command (--no-gate-exit)",
            gate.profile
        );
    }
    Ok(())
}

/// Cross-builds the broker for `target` with its first usable backend and
/// profile, as build-all would; returns the binary.
pub(crate) fn build_for_target(root: &Path, target: &Target) -> Result<PathBuf> {
    let host = HostFacts::probe(std::slice::from_ref(target));
    let backend = crate::infra::host::choose_backend(target, None, &host).map_err(|why| {
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
    let dir = crate::infra::cargo::cargo_target_dir(target.triple())?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = dir.join("bench-build.log");
    let binary = crate::infra::build::build(root, target, backend, profile, &log, &|_| {})?;
    println!("    {}", binary.display());
    Ok(binary)
}

/// The workload during which the broker died: the last one that ran.
pub(crate) fn died_in(workloads: &[WorkloadReport]) -> String {
    workloads
        .iter()
        .rev()
        .find(|w| !w.repeats.is_empty())
        .map(|w| w.name.clone())
        .unwrap_or_else(|| "an earlier workload".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::loadgen::failure;
    use crate::infra::loadgen::{budget, measured_window, Ended, LOADGEN_SLACK};
    use crate::model::report::test_support::{result, workload};
    use loadgen::{Outcome, Protocol};
    use std::process::ExitStatus;
    use std::time::Duration;

    #[test]
    fn kafka_workloads_go_to_the_kafka_address_or_say_why_not() {
        let mqtt = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let kafka = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (m, k) = (
            mqtt.local_addr().unwrap().to_string(),
            kafka.local_addr().unwrap().to_string(),
        );
        let both = crate::infra::launcher::external(Some(&m), Some(&k), None, None).unwrap();
        assert_eq!(target_address(&both, Protocol::Mqtt).unwrap(), m);
        assert_eq!(target_address(&both, Protocol::Kafka).unwrap(), k);
        let mqtt_only = crate::infra::launcher::external(Some(&m), None, None, None).unwrap();
        let reason = target_address(&mqtt_only, Protocol::Kafka).unwrap_err();
        assert!(reason.contains("--kafka HOST:PORT"), "{reason}");
        // An AMQP-only broker (RabbitMQ without its MQTT plugin): no --mqtt.
        let amqp_only = crate::infra::launcher::external(None, None, Some(&k), None).unwrap();
        assert_eq!(target_address(&amqp_only, Protocol::Amqp).unwrap(), k);
        let reason = target_address(&amqp_only, Protocol::Mqtt).unwrap_err();
        assert!(reason.contains("--mqtt HOST:PORT"), "{reason}");
        let err = crate::infra::launcher::external(None, None, None, None)
            .err()
            .expect("an external broker needs some address")
            .to_string();
        assert!(err.contains("--mqtt, --kafka or --amqp"), "{err}");
    }

    #[test]
    fn amqp_workloads_go_to_the_amqp_address_or_say_why_not() {
        let mqtt = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let amqp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (m, a) = (
            mqtt.local_addr().unwrap().to_string(),
            amqp.local_addr().unwrap().to_string(),
        );
        let both = crate::infra::launcher::external(Some(&m), None, Some(&a), None).unwrap();
        assert_eq!(target_address(&both, Protocol::Amqp).unwrap(), a);
        assert!(target_address(&both, Protocol::Kafka).is_err());
        let mqtt_only = crate::infra::launcher::external(Some(&m), None, None, None).unwrap();
        let reason = target_address(&mqtt_only, Protocol::Amqp).unwrap_err();
        assert!(reason.contains("--amqp HOST:PORT"), "{reason}");
        let mut mosquitto = mqtt_only;
        mosquitto.info.kind = crate::model::broker::BrokerKind::Mosquitto;
        let reason = target_address(&mosquitto, Protocol::Amqp).unwrap_err();
        assert!(
            reason.contains("mosquitto broker has no AMQP listener"),
            "{reason}"
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let err = crate::infra::launcher::external(Some(&m), None, Some(&closed), None)
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
        w.late_secs = 2.0;
        assert_eq!(budget(&w), Duration::from_secs_f64(5.5) + LOADGEN_SLACK);
        let mut storm = workload("s", "connection_storm");
        storm.connect_rate = 100;
        storm.warmup_secs = 0.0;
        storm.duration_secs = 5.0;
        storm.drain_secs = 0.0;
        storm.late_secs = 0.0;
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
        let root = crate::infra::cargo::project_root();
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
