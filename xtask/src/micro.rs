//! `cargo xtask micro`: build the criterion benchmarks of the `bench` crate
//! for a target, run them natively or through the target's runner (qemu-user),
//! and write their estimates into a run's report (`micro` section of
//! report.json, rendered in report.md and report.html).
//!
//! Criterion keeps its data in a per-target `CRITERION_HOME`
//! (`target/micro/<triple>/criterion`), so named baselines
//! (`--save-baseline NAME`, later `--baseline NAME`) survive between runs and
//! never mix numbers of different targets.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use crate::environment::{self, Environment};
use crate::launcher::{BrokerInfo, BrokerKind};
use crate::report::{Report, REPORT_SCHEMA_VERSION};
use crate::targets::{self, Backend, HostFacts, Target};

/// Cargo builds `cargo bench` targets with its `bench` profile (inherits
/// `release`) for every triple; target files' size-over-speed profiles are
/// for the shipped broker, not for measuring its code paths.
pub const BENCH_PROFILE: &str = "bench";
/// `--quick`: long enough for criterion's statistics, short enough for a
/// QEMU smoke run of every benchmark in a few minutes.
pub const QUICK_WARM_UP_SECS: f64 = 0.3;
pub const QUICK_MEASUREMENT_SECS: f64 = 1.0;
/// The noise threshold passed to criterion (`--noise-threshold`) and used by
/// `compare`: changes of the mean within ±2 % are not reported as
/// improvements or regressions. Criterion's own default is 1 %, tighter than
/// run-to-run drift on a shared 2-core machine.
pub const NOISE_THRESHOLD: f64 = 0.02;
/// The helper binary of the bench crate that prints the detected CPU features.
const CPU_FEATURES_BIN: &str = "cpu_features";

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Triple of targets/<triple>.toml; None: the host, natively.
    pub target: Option<String>,
    /// Bench executables to build and run (`--bench`); empty: all.
    pub benches: Vec<String>,
    /// Criterion's filter (a regex over benchmark ids).
    pub filter: Option<String>,
    pub quick: bool,
    pub warm_up_secs: Option<f64>,
    pub measurement_secs: Option<f64>,
    /// Compare with this criterion baseline (saved earlier with `save_baseline`).
    pub baseline: Option<String>,
    pub save_baseline: Option<String>,
    /// Run directory; default `reports/runs/<run id>/`.
    pub out: Option<PathBuf>,
}

impl Options {
    /// The criterion settings this run uses (quick defaults, then explicit flags).
    pub fn settings(&self) -> CriterionSettings {
        let quick = |v| self.quick.then_some(v);
        CriterionSettings {
            warm_up_secs: self.warm_up_secs.or(quick(QUICK_WARM_UP_SECS)),
            measurement_secs: self.measurement_secs.or(quick(QUICK_MEASUREMENT_SECS)),
            filter: self.filter.clone(),
            baseline: self.baseline.clone(),
            save_baseline: self.save_baseline.clone(),
            noise_threshold: NOISE_THRESHOLD,
        }
    }
}

// ---- report schema ----------------------------------------------------------

/// The `micro` section of report.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MicroSection {
    pub target_triple: String,
    /// `native`, `qemu-aarch64`, ...
    pub runner: String,
    /// The runner's command line before the executable (empty when native).
    pub runner_command: Vec<String>,
    /// Measured under emulation: the numbers are the emulator's on this host.
    pub emulated: bool,
    /// Cargo profile of the bench executables.
    pub cargo_profile: String,
    pub criterion: CriterionSettings,
    /// What `broker::platform::Platform::detect()` found where the benchmarks
    /// ran (under QEMU: the emulated CPU's features).
    pub cpu_features: Vec<String>,
    /// The bench executables that ran (cargo bench target names).
    pub executables: Vec<String>,
    /// In the order criterion ran them.
    pub benchmarks: Vec<MicroBenchmark>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionSettings {
    /// None: criterion's default (3 s warm-up, 5 s measurement).
    pub warm_up_secs: Option<f64>,
    pub measurement_secs: Option<f64>,
    pub filter: Option<String>,
    pub baseline: Option<String>,
    pub save_baseline: Option<String>,
    /// Relative change of the mean below which criterion sees no change.
    pub noise_threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MicroBenchmark {
    /// Criterion's full id, e.g. `mqtt_decode/publish_1KiB`.
    pub id: String,
    pub group: String,
    pub function: Option<String>,
    pub value: Option<String>,
    /// Time per iteration, nanoseconds.
    pub mean_ns: f64,
    pub ci_lower_ns: f64,
    pub ci_upper_ns: f64,
    /// Of the mean's confidence interval, e.g. 0.95.
    pub confidence_level: f64,
    pub median_ns: f64,
    pub std_dev_ns: f64,
    /// The slope of the linear regression over iteration counts, when
    /// criterion sampled linearly: the figure its terminal output leads
    /// with (`time: [low slope high]`), so it can differ from the mean.
    #[serde(default)]
    pub slope_ns: Option<f64>,
    pub throughput: Option<Throughput>,
    /// Against `--baseline NAME`; None without one or when the baseline
    /// lacks this benchmark.
    pub change: Option<Change>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThroughputUnit {
    /// `Throughput::Bytes`: shown in binary units (KiB/s, MiB/s, GiB/s).
    Bytes,
    /// `Throughput::BytesDecimal`: shown in decimal units (kB/s, MB/s, GB/s),
    /// as criterion shows it.
    BytesDecimal,
    Elements,
    Bits,
}

/// Work per iteration as the benchmark declared it, and the rate it implies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub unit: ThroughputUnit,
    pub per_iteration: u64,
    /// Units per second at the mean time.
    pub per_sec: f64,
    /// At the slow end of the mean's CI (its upper time bound).
    pub per_sec_ci_lower: f64,
    /// At the fast end (its lower time bound).
    pub per_sec_ci_upper: f64,
}

impl Throughput {
    fn of(unit: ThroughputUnit, per_iteration: u64, mean_ns: f64, lo_ns: f64, hi_ns: f64) -> Self {
        let rate = |ns: f64| {
            if ns > 0.0 {
                per_iteration as f64 * 1e9 / ns
            } else {
                0.0
            }
        };
        Throughput {
            unit,
            per_iteration,
            per_sec: rate(mean_ns),
            per_sec_ci_lower: rate(hi_ns),
            per_sec_ci_upper: rate(lo_ns),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeVerdict {
    Improved,
    Regressed,
    NoChange,
}

impl ChangeVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeVerdict::Improved => "improved",
            ChangeVerdict::Regressed => "regressed",
            ChangeVerdict::NoChange => "no change",
        }
    }
}

/// Criterion's `change/estimates.json`: relative change of the mean time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub baseline: String,
    /// +5.0 = 5 % slower than the baseline.
    pub mean_change_pct: f64,
    pub ci_lower_pct: f64,
    pub ci_upper_pct: f64,
    pub verdict: ChangeVerdict,
}

/// Criterion's rule without its p-value (which it does not save): the whole
/// CI of the change beyond the noise threshold in one direction.
pub fn change_verdict(ci_lower: f64, ci_upper: f64, noise: f64) -> ChangeVerdict {
    if ci_upper < -noise {
        ChangeVerdict::Improved
    } else if ci_lower > noise {
        ChangeVerdict::Regressed
    } else {
        ChangeVerdict::NoChange
    }
}

// ---- criterion's files ------------------------------------------------------

#[derive(Deserialize)]
struct CriterionEstimate {
    point_estimate: f64,
    confidence_interval: CriterionInterval,
}

#[derive(Deserialize)]
struct CriterionInterval {
    confidence_level: f64,
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Deserialize)]
struct CriterionEstimates {
    mean: CriterionEstimate,
    median: CriterionEstimate,
    std_dev: CriterionEstimate,
    slope: Option<CriterionEstimate>,
}

#[derive(Deserialize)]
struct CriterionChange {
    mean: CriterionEstimate,
}

#[derive(Deserialize)]
struct CriterionBenchmark {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<serde_json::Value>,
    full_id: String,
}

fn read_json<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not what criterion 0.7 writes", file.display()))
}

/// `{"Bytes": 1069}`, `{"Elements": 10}`, ... as criterion serializes its
/// `Throughput`; None for no throughput or a kind we do not know.
fn throughput_kind(value: &serde_json::Value) -> Option<(ThroughputUnit, u64)> {
    let (kind, n) = value.as_object()?.iter().next()?;
    let unit = match kind.as_str() {
        "Bytes" => ThroughputUnit::Bytes,
        "BytesDecimal" => ThroughputUnit::BytesDecimal,
        "Elements" => ThroughputUnit::Elements,
        "Bits" => ThroughputUnit::Bits,
        _ => return None,
    };
    Some((unit, n.as_u64()?))
}

fn modified(file: &Path) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

/// Reads one benchmark from its criterion directory (the one holding `new/`
/// and, after a comparison, `change/`). A `change/` older than `since` is
/// from an earlier run and ignored.
pub fn read_benchmark(
    dir: &Path,
    baseline: Option<&str>,
    since: Option<SystemTime>,
) -> Result<MicroBenchmark> {
    let new = dir.join("new");
    let id: CriterionBenchmark = read_json(&new.join("benchmark.json"))?;
    let est: CriterionEstimates = read_json(&new.join("estimates.json"))?;
    let mean = &est.mean;
    let (lo, hi) = (
        mean.confidence_interval.lower_bound,
        mean.confidence_interval.upper_bound,
    );
    let throughput = id
        .throughput
        .as_ref()
        .and_then(throughput_kind)
        .map(|(unit, n)| Throughput::of(unit, n, mean.point_estimate, lo, hi));
    let change_file = dir.join("change").join("estimates.json");
    let fresh = match since {
        None => true,
        Some(t) => modified(&change_file).is_some_and(|m| m >= t),
    };
    let change = match baseline {
        Some(name) if change_file.is_file() && fresh => {
            let c: CriterionChange = read_json(&change_file)?;
            let ci = &c.mean.confidence_interval;
            Some(Change {
                baseline: name.to_string(),
                mean_change_pct: c.mean.point_estimate * 100.0,
                ci_lower_pct: ci.lower_bound * 100.0,
                ci_upper_pct: ci.upper_bound * 100.0,
                verdict: change_verdict(ci.lower_bound, ci.upper_bound, NOISE_THRESHOLD),
            })
        }
        _ => None,
    };
    Ok(MicroBenchmark {
        id: id.full_id,
        group: id.group_id,
        function: id.function_id,
        value: id.value_str,
        mean_ns: mean.point_estimate,
        ci_lower_ns: lo,
        ci_upper_ns: hi,
        confidence_level: mean.confidence_interval.confidence_level,
        median_ns: est.median.point_estimate,
        std_dev_ns: est.std_dev.point_estimate,
        slope_ns: est.slope.as_ref().map(|s| s.point_estimate),
        throughput,
        change,
    })
}

/// Every directory under `home` holding criterion's `new/benchmark.json`.
fn benchmark_dirs(home: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(home) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", home.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if path.join("benchmark.json").is_file() {
                found.push(path.parent().expect("new/ has a parent").to_path_buf());
            }
        } else {
            benchmark_dirs(&path, found)?;
        }
    }
    Ok(())
}

/// The benchmarks criterion wrote under `home` since `since` (all of them
/// for None), in the order it wrote them.
pub fn collect(
    home: &Path,
    since: Option<SystemTime>,
    baseline: Option<&str>,
) -> Result<Vec<MicroBenchmark>> {
    let mut dirs = Vec::new();
    benchmark_dirs(home, &mut dirs)?;
    let mut dated = Vec::new();
    for dir in dirs {
        let written = modified(&dir.join("new").join("estimates.json"));
        if since.is_some_and(|t| written.is_none_or(|w| w < t)) {
            continue;
        }
        dated.push((written, read_benchmark(&dir, baseline, since)?));
    }
    dated.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.id.cmp(&y.id)));
    Ok(dated.into_iter().map(|(_, b)| b).collect())
}

/// Whether criterion saved a baseline `name` for any benchmark under `home`.
pub fn baseline_exists(home: &Path, name: &str) -> bool {
    let mut dirs = Vec::new();
    benchmark_dirs(home, &mut dirs).is_ok()
        && dirs
            .iter()
            .any(|d| d.join(name).join("estimates.json").is_file())
}

/// Criterion's data for a target: persistent, so named baselines survive.
pub fn criterion_home(target_dir: &Path, triple: &str) -> PathBuf {
    target_dir.join("micro").join(triple).join("criterion")
}

/// A name criterion can use as a baseline directory without clobbering its own.
fn check_baseline_name(flag: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !matches!(name, "new" | "change" | "report" | "." | "..");
    if !ok {
        bail!("{flag} `{name}`: use letters, digits, `-`, `_` or `.` (not `new`, `change` or `report`, criterion's own directories)");
    }
    Ok(())
}

// ---- build ------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactKind {
    Bench,
    /// The bench crate's `cpu_features` helper.
    CpuFeatures,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub kind: ArtifactKind,
    pub executable: PathBuf,
}

/// The bench executables and the `cpu_features` helper among cargo's
/// `--message-format=json` lines (other lines and messages are skipped).
pub fn artifacts(cargo_json: &str) -> Vec<Artifact> {
    let mut found = Vec::new();
    for line in cargo_json.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        let kinds: Vec<&str> = msg["target"]["kind"]
            .as_array()
            .map(|k| k.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let kind = if kinds.contains(&"bench") {
            ArtifactKind::Bench
        } else if kinds.contains(&"bin") && name == CPU_FEATURES_BIN {
            ArtifactKind::CpuFeatures
        } else {
            continue;
        };
        found.push(Artifact {
            name: name.to_string(),
            kind,
            executable: PathBuf::from(exe),
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found.dedup();
    found
}

/// `cargo bench -p bench --no-run` for the host or `target` (cargo backend,
/// the target file's linker, build-all's per-target directory); the artifacts.
fn build(sh: &Shell, target: Option<&Target>, benches: &[String]) -> Result<Vec<Artifact>> {
    let cargo = crate::cargo();
    let mut args: Vec<String> = vec![
        "bench".into(),
        "-p".into(),
        "bench".into(),
        "--no-run".into(),
        "--message-format=json-render-diagnostics".into(),
    ];
    for b in benches {
        args.extend(["--bench".into(), b.clone()]);
    }
    let mut linker = None;
    if let Some(t) = target {
        let host = HostFacts::probe(std::slice::from_ref(t));
        // Only the cargo backend: cross reports container paths for its
        // artifacts and cargo-zigbuild has no `bench` subcommand.
        targets::choose_backend(t, Some(Backend::Cargo), &host).map_err(|why| {
            anyhow::anyhow!(
                "--target {}: cannot build the benchmarks here: {why} (cargo xtask setup --targets {})",
                t.triple(),
                t.triple()
            )
        })?;
        args.extend([
            "--target".into(),
            t.triple().into(),
            "--target-dir".into(),
            crate::build_all::cargo_target_dir(t.triple())
                .display()
                .to_string(),
        ]);
        linker = t
            .def
            .linker
            .as_ref()
            .map(|l| (crate::build_all::linker_env(t.triple()), l.command.clone()));
    }
    println!(
        "==> build benchmarks ({}, profile {BENCH_PROFILE})",
        target.map(|t| t.triple()).unwrap_or("host")
    );
    let mut command = cmd!(sh, "{cargo} {args...}");
    if let Some((key, value)) = linker {
        command = command.env(key, value);
    }
    let stdout = command
        .read()
        .context("building the benchmarks (cargo bench --no-run) failed")?;
    let found = artifacts(&stdout);
    if !found.iter().any(|a| a.kind == ArtifactKind::Bench) {
        bail!("cargo bench --no-run built no bench executable (is `bench/benches/` empty?)");
    }
    Ok(found)
}

/// How to start `exe`: directly, or through the target's runner.
pub fn command_for(target: Option<&Target>, exe: &Path) -> Result<Command> {
    match target {
        None => Ok(Command::new(exe)),
        Some(t) => t
            .run_command(exe)
            .with_context(|| format!("{} has no runner (build only)", t.triple())),
    }
}

/// The arguments every bench executable gets after `--bench`.
pub fn criterion_args(s: &CriterionSettings) -> Vec<String> {
    let mut args = vec!["--bench".to_string()];
    if let Some(w) = s.warm_up_secs {
        args.extend(["--warm-up-time".into(), w.to_string()]);
    }
    if let Some(m) = s.measurement_secs {
        args.extend(["--measurement-time".into(), m.to_string()]);
    }
    args.extend(["--noise-threshold".into(), s.noise_threshold.to_string()]);
    if let Some(b) = &s.baseline {
        // Lenient: benchmarks added since the baseline was saved run without
        // a change instead of panicking; we check that the baseline exists.
        args.extend(["--baseline-lenient".into(), b.clone()]);
    }
    if let Some(b) = &s.save_baseline {
        args.extend(["--save-baseline".into(), b.clone()]);
    }
    if let Some(f) = &s.filter {
        args.push(f.clone());
    }
    args
}

/// Runs the `cpu_features` helper where the benchmarks run; empty (with a
/// warning) if it cannot say.
fn detect_cpu_features(target: Option<&Target>, artifacts: &[Artifact]) -> Vec<String> {
    let Some(helper) = artifacts
        .iter()
        .find(|a| a.kind == ArtifactKind::CpuFeatures)
    else {
        eprintln!(
            "    warning: cargo built no `{CPU_FEATURES_BIN}` helper: CPU features not recorded"
        );
        return Vec::new();
    };
    let output = command_for(target, &helper.executable).and_then(|mut c| {
        c.output()
            .with_context(|| format!("cannot run {}", helper.executable.display()))
    });
    match output {
        Ok(o) if o.status.success() => {
            match serde_json::from_slice::<Vec<String>>(o.stdout.trim_ascii()) {
                Ok(features) => features,
                Err(e) => {
                    eprintln!("    warning: {CPU_FEATURES_BIN} printed no JSON array: {e}");
                    Vec::new()
                }
            }
        }
        Ok(o) => {
            eprintln!(
                "    warning: {CPU_FEATURES_BIN} {}",
                crate::launcher::describe_exit(o.status)
            );
            Vec::new()
        }
        Err(e) => {
            eprintln!("    warning: {e:#}");
            Vec::new()
        }
    }
}

// ---- the command ------------------------------------------------------------

pub fn run(options: &Options) -> Result<()> {
    let root = crate::project_root();
    let sh = Shell::new()?;
    sh.change_dir(&root);
    for (flag, name) in [
        ("--baseline", &options.baseline),
        ("--save-baseline", &options.save_baseline),
    ] {
        if let Some(n) = name {
            check_baseline_name(flag, n)?;
        }
    }
    let target = options
        .target
        .as_deref()
        .map(|triple| crate::bench::load_target(&root, triple))
        .transpose()?;

    let mut env = Environment::capture(&sh, &root);
    if let Some(t) = &target {
        env.target_triple = t.triple().to_string();
        env.runner = t.runner_name();
        env.emulated = t.emulated();
    }
    let home = criterion_home(&crate::target_dir(), &env.target_triple);
    if let Some(name) = &options.baseline {
        if !baseline_exists(&home, name) {
            bail!(
                "no criterion baseline `{name}` for {} (looked in {}): save one first with `cargo xtask micro{} --save-baseline {name}`",
                env.target_triple,
                home.display(),
                options
                    .target
                    .as_deref()
                    .map(|t| format!(" --target {t}"))
                    .unwrap_or_default()
            );
        }
    }
    let settings = options.settings();

    let built = build(&sh, target.as_ref(), &options.benches)?;
    let cpu_features = detect_cpu_features(target.as_ref(), &built);
    let run_id = environment::run_id(&env.timestamp, &env.target_triple);
    let reports_dir = root.join("reports");
    let (run_dir, is_default_dir) = match &options.out {
        Some(dir) => (crate::bench::absolute(dir)?, false),
        None => (reports_dir.join("runs").join(&run_id), true),
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    for file in ["report.json", "report.md", "report.html"] {
        let _ = std::fs::remove_file(run_dir.join(file));
    }
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;

    let runner_command: Vec<String> = match &target {
        Some(t) if t.emulated() => t
            .def
            .runner
            .command
            .iter()
            .chain(&t.def.runner.args)
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    println!(
        "==> micro {run_id}: CRITERION_HOME={}{}",
        home.display(),
        if env.emulated {
            format!(
                "\n    EMULATED: under {}, the numbers measure the emulator on this host, not the target CPU",
                env.runner
            )
        } else {
            String::new()
        }
    );
    if !cpu_features.is_empty() {
        println!("    CPU features: {}", cpu_features.join(", "));
    }

    let started_at = environment::timestamp(SystemTime::now());
    // Criterion rewrites `new/` of every benchmark it runs; anything older
    // than this is from an earlier run (or another filter) and not ours.
    let since = SystemTime::now();
    let args = criterion_args(&settings);
    let mut executables = Vec::new();
    let mut failed = Vec::new();
    for bench in built.iter().filter(|a| a.kind == ArtifactKind::Bench) {
        println!("==> {} {}", bench.name, args.join(" "));
        let status = command_for(target.as_ref(), &bench.executable)?
            .args(&args)
            .env("CRITERION_HOME", &home)
            .current_dir(&root)
            .status()
            .with_context(|| format!("cannot start {}", bench.executable.display()))?;
        executables.push(bench.name.clone());
        if !status.success() {
            eprintln!(
                "    {}: {}",
                bench.name,
                crate::launcher::describe_exit(status)
            );
            failed.push(bench.name.clone());
        }
    }
    let benchmarks = collect(&home, Some(since), options.baseline.as_deref())?;
    let finished_at = environment::timestamp(SystemTime::now());

    let section = MicroSection {
        target_triple: env.target_triple.clone(),
        runner: env.runner.clone(),
        runner_command,
        emulated: env.emulated,
        cargo_profile: BENCH_PROFILE.into(),
        criterion: settings,
        cpu_features,
        executables,
        benchmarks,
    };
    let report = micro_report(run_id, env, section, started_at, finished_at);
    let json = run_dir.join("report.json");
    std::fs::write(&json, report.to_json())
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md_text = crate::report::render_markdown(&report);
    let md = run_dir.join("report.md");
    std::fs::write(&md, &md_text).with_context(|| format!("cannot write {}", md.display()))?;
    let html = crate::html::write(&run_dir, &report)?;
    if is_default_dir {
        crate::bench::point_latest(&reports_dir, &run_dir)?;
    }
    let micro = report.micro.as_ref().expect("set above");
    println!("{}", markdown_section(micro));
    println!(
        "report: {}\n        {}\n        {}{}",
        md.display(),
        json.display(),
        html.display(),
        if is_default_dir {
            "\n        (reports/latest points to it)"
        } else {
            ""
        }
    );
    if !failed.is_empty() {
        bail!("bench executable(s) failed: {}", failed.join(", "));
    }
    if micro.benchmarks.is_empty() {
        bail!(
            "no benchmark ran{}",
            options
                .filter
                .as_deref()
                .map(|f| format!(" (does the filter `{f}` match any benchmark id?)"))
                .unwrap_or_default()
        );
    }
    Ok(())
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

/// `850.0 ns`, `1.25 µs`, `3.40 ms`, `1.20 s`.
pub fn duration_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A rate in human units: `512.0 MiB/s`, `1.25 GiB/s`, `3.20 Melem/s`.
pub fn rate(unit: ThroughputUnit, per_sec: f64) -> String {
    match unit {
        ThroughputUnit::Bytes => {
            const KIB: f64 = 1024.0;
            if per_sec >= KIB * KIB * KIB {
                format!("{:.2} GiB/s", per_sec / (KIB * KIB * KIB))
            } else if per_sec >= KIB * KIB {
                format!("{:.1} MiB/s", per_sec / (KIB * KIB))
            } else if per_sec >= KIB {
                format!("{:.1} KiB/s", per_sec / KIB)
            } else {
                format!("{per_sec:.0} B/s")
            }
        }
        // Decimal bytes read as the rest of the report writes them.
        ThroughputUnit::BytesDecimal => format!("{}/s", crate::report::bytes(per_sec)),
        ThroughputUnit::Elements | ThroughputUnit::Bits => {
            let what = if unit == ThroughputUnit::Bits {
                "bit"
            } else {
                "elem"
            };
            if per_sec >= 1e9 {
                format!("{:.2} G{what}/s", per_sec / 1e9)
            } else if per_sec >= 1e6 {
                format!("{:.2} M{what}/s", per_sec / 1e6)
            } else if per_sec >= 1e3 {
                format!("{:.1} K{what}/s", per_sec / 1e3)
            } else {
                format!("{per_sec:.0} {what}/s")
            }
        }
    }
}

/// `+3.1 % (+2.2 % – +4.0 %) regressed`.
pub fn change_text(c: &Change) -> String {
    format!(
        "{:+.1} % ({:+.1} % – {:+.1} %) {}",
        c.mean_change_pct,
        c.ci_lower_pct,
        c.ci_upper_pct,
        c.verdict.as_str()
    )
}

/// The benchmarks grouped by criterion group, groups in first-run order.
pub fn by_group(benchmarks: &[MicroBenchmark]) -> Vec<(&str, Vec<&MicroBenchmark>)> {
    let mut groups: Vec<(&str, Vec<&MicroBenchmark>)> = Vec::new();
    for b in benchmarks {
        match groups.iter_mut().find(|(g, _)| *g == b.group) {
            Some((_, v)) => v.push(b),
            None => groups.push((&b.group, vec![b])),
        }
    }
    groups
}

/// `95% CI`, from the benchmarks' confidence level.
pub fn ci_label(benchmarks: &[MicroBenchmark]) -> String {
    let level = benchmarks
        .first()
        .map(|b| b.confidence_level)
        .unwrap_or(0.95);
    format!("{:.0}% CI", level * 100.0)
}

/// The label under which a section says it was emulated.
pub fn emulated_note(m: &MicroSection) -> String {
    format!(
        "EMULATED: measured under {}: the numbers measure the emulator on this host, not the target CPU ({}); never compare them with native runs.",
        m.runner, m.target_triple
    )
}

/// One line on how the numbers were taken.
pub fn settings_text(m: &MicroSection) -> String {
    let s = &m.criterion;
    let secs = |v: Option<f64>, default: &str| {
        v.map(|v| format!("{v} s"))
            .unwrap_or_else(|| format!("{default} (criterion's default)"))
    };
    let mut text = format!(
        "Target `{}`, runner {}{}, cargo profile `{}`; criterion warm-up {}, measurement {}, noise threshold {:.0} %",
        m.target_triple,
        m.runner,
        if m.runner_command.is_empty() {
            String::new()
        } else {
            format!(" (`{}`)", m.runner_command.join(" "))
        },
        m.cargo_profile,
        secs(s.warm_up_secs, "3 s"),
        secs(s.measurement_secs, "5 s"),
        s.noise_threshold * 100.0
    );
    if let Some(f) = &s.filter {
        let _ = write!(text, ", filter `{f}`");
    }
    if let Some(b) = &s.baseline {
        let _ = write!(text, ", compared with baseline `{b}`");
    }
    if let Some(b) = &s.save_baseline {
        let _ = write!(text, ", saved as baseline `{b}`");
    }
    let _ = write!(
        text,
        ". Executables: {}. CPU features where they ran: {}.",
        if m.executables.is_empty() {
            "none".to_string()
        } else {
            m.executables.join(", ")
        },
        if m.cpu_features.is_empty() {
            "none detected".to_string()
        } else {
            m.cpu_features.join(", ")
        }
    );
    text
}

/// The `## Micro-benchmarks` section of report.md.
pub fn markdown_section(m: &MicroSection) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Micro-benchmarks\n");
    if m.emulated {
        let _ = writeln!(md, "> **{}**\n", emulated_note(m));
    }
    let _ = writeln!(md, "{}\n", settings_text(m));
    if m.benchmarks.is_empty() {
        let _ = writeln!(md, "No benchmark ran.");
        return md;
    }
    let with_change = m.benchmarks.iter().any(|b| b.change.is_some());
    let ci = ci_label(&m.benchmarks);
    for (group, benches) in by_group(&m.benchmarks) {
        let _ = writeln!(md, "### {group}\n");
        let change_head = m
            .criterion
            .baseline
            .as_deref()
            .filter(|_| with_change)
            .map(|b| format!(" change vs `{b}` |"))
            .unwrap_or_default();
        let _ = writeln!(md, "| benchmark | mean | {ci} | throughput |{change_head}");
        let _ = writeln!(
            md,
            "|---|---:|---:|---:|{}",
            if change_head.is_empty() { "" } else { "---|" }
        );
        for b in benches {
            let change = if change_head.is_empty() {
                String::new()
            } else {
                format!(
                    " {} |",
                    b.change
                        .as_ref()
                        .map(change_text)
                        .unwrap_or_else(|| "– (not in baseline)".into())
                )
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} – {} | {} |{change}",
                b.id.replace('|', "\\|"),
                duration_ns(b.mean_ns),
                duration_ns(b.ci_lower_ns),
                duration_ns(b.ci_upper_ns),
                b.throughput
                    .as_ref()
                    .map(|t| rate(t.unit, t.per_sec))
                    .unwrap_or_else(|| "–".into()),
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Mean time per iteration (the mean of criterion's per-iteration sample times, with its bootstrap {ci}; criterion's terminal line leads with the regression slope instead, kept in report.json as `slope_ns`). Throughput is the work per iteration the benchmark declares divided by the mean time."
    );
    md
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub const ESTIMATES: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1020.0,"upper_bound":1080.0},"point_estimate":1050.0,"standard_error":15.0},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1010.0,"upper_bound":1060.0},"point_estimate":1040.0,"standard_error":12.0},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":5.0,"upper_bound":9.0},"point_estimate":7.0,"standard_error":1.0},"slope":null,"std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":20.0,"upper_bound":40.0},"point_estimate":30.0,"standard_error":5.0}}"#;

    fn write(dir: &Path, rel: &str, text: &str) {
        let file = dir.join(rel);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    fn estimates(mean: f64, lo: f64, hi: f64) -> String {
        ESTIMATES
            .replace("1050.0", &mean.to_string())
            .replace("1020.0", &lo.to_string())
            .replace("1080.0", &hi.to_string())
            .replace(
                "\"slope\":null",
                &format!("\"slope\":{{\"confidence_interval\":{{\"confidence_level\":0.95,\"lower_bound\":{lo},\"upper_bound\":{hi}}},\"point_estimate\":{},\"standard_error\":1.0}}", mean * 0.98),
            )
    }

    /// A criterion home with two benchmarks, one compared with baseline `main`.
    pub fn fixture_home(home: &Path) {
        write(
            home,
            "mqtt_decode/publish_1KiB/new/benchmark.json",
            r#"{"group_id":"mqtt_decode","function_id":null,"value_str":"publish_1KiB","throughput":{"Bytes":1069},"full_id":"mqtt_decode/publish_1KiB","directory_name":"mqtt_decode/publish_1KiB","title":"mqtt_decode/publish_1KiB"}"#,
        );
        write(
            home,
            "mqtt_decode/publish_1KiB/new/estimates.json",
            ESTIMATES,
        );
        write(
            home,
            "mqtt_decode/publish_1KiB/change/estimates.json",
            r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":-0.081,"upper_bound":-0.042},"point_estimate":-0.06,"standard_error":0.01},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":-0.07,"upper_bound":-0.05},"point_estimate":-0.06,"standard_error":0.01}}"#,
        );
        write(
            home,
            "topic_match/exact/new/benchmark.json",
            r#"{"group_id":"topic_match","function_id":"exact","value_str":null,"throughput":{"Elements":1000},"full_id":"topic_match/exact","directory_name":"topic_match/exact","title":"topic_match/exact"}"#,
        );
        write(
            home,
            "topic_match/exact/new/estimates.json",
            &estimates(2_000_000.0, 1_900_000.0, 2_100_000.0),
        );
    }

    pub fn section(emulated: bool) -> MicroSection {
        let dir = tempfile::tempdir().unwrap();
        fixture_home(dir.path());
        MicroSection {
            target_triple: if emulated {
                "aarch64-unknown-linux-gnu".into()
            } else {
                "x86_64-unknown-linux-gnu".into()
            },
            runner: if emulated {
                "qemu-aarch64".into()
            } else {
                "native".into()
            },
            runner_command: Vec::new(),
            emulated,
            cargo_profile: BENCH_PROFILE.into(),
            criterion: Options {
                quick: true,
                baseline: Some("main".into()),
                ..Options::default()
            }
            .settings(),
            cpu_features: vec!["sse4.2".into(), "avx2".into()],
            executables: vec!["mqtt_codec".into()],
            benchmarks: collect(dir.path(), None, Some("main")).unwrap(),
        }
    }

    #[test]
    fn criterion_directory_parses_into_benchmarks() {
        let dir = tempfile::tempdir().unwrap();
        fixture_home(dir.path());
        let mut found = collect(dir.path(), None, Some("main")).unwrap();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(found.len(), 2);
        let b = &found[0];
        assert_eq!(b.id, "mqtt_decode/publish_1KiB");
        assert_eq!(
            (b.group.as_str(), b.function.as_deref(), b.value.as_deref()),
            ("mqtt_decode", None, Some("publish_1KiB"))
        );
        assert_eq!(
            (b.mean_ns, b.ci_lower_ns, b.ci_upper_ns),
            (1050.0, 1020.0, 1080.0)
        );
        assert_eq!(
            (b.median_ns, b.std_dev_ns, b.confidence_level),
            (1040.0, 30.0, 0.95)
        );
        assert_eq!(b.slope_ns, None);
        let t = b.throughput.as_ref().unwrap();
        assert_eq!((t.unit, t.per_iteration), (ThroughputUnit::Bytes, 1069));
        assert!((t.per_sec - 1069.0 * 1e9 / 1050.0).abs() < 1e-3);
        assert!(t.per_sec_ci_lower < t.per_sec && t.per_sec < t.per_sec_ci_upper);
        assert!((t.per_sec_ci_lower - 1069.0 * 1e9 / 1080.0).abs() < 1e-3);
        let c = b.change.as_ref().unwrap();
        assert_eq!(c.baseline, "main");
        assert!((c.mean_change_pct + 6.0).abs() < 1e-9);
        assert!((c.ci_lower_pct + 8.1).abs() < 1e-9 && (c.ci_upper_pct + 4.2).abs() < 1e-9);
        assert_eq!(c.verdict, ChangeVerdict::Improved);

        let e = &found[1];
        assert_eq!(e.function.as_deref(), Some("exact"));
        assert_eq!(
            e.throughput.as_ref().unwrap().unit,
            ThroughputUnit::Elements
        );
        assert!(e.change.is_none(), "no change/ directory");
        assert_eq!(e.slope_ns, Some(1_960_000.0));

        // Without --baseline, a change/ left by criterion's default
        // comparison with the previous run is not reported.
        let plain = collect(dir.path(), None, None).unwrap();
        assert!(plain.iter().all(|b| b.change.is_none()));
        // Only what was written since the run started counts.
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(collect(dir.path(), Some(later), None).unwrap().is_empty());
        assert!(baseline_exists(dir.path(), "new"));
        assert!(!baseline_exists(dir.path(), "main"));
        write(
            dir.path(),
            "topic_match/exact/main/estimates.json",
            ESTIMATES,
        );
        assert!(baseline_exists(dir.path(), "main"));
        assert!(collect(&dir.path().join("missing"), None, None)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn malformed_criterion_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "g/x/new/benchmark.json", "{\"group_id\": 3}");
        write(dir.path(), "g/x/new/estimates.json", ESTIMATES);
        let err = format!("{:#}", collect(dir.path(), None, None).unwrap_err());
        assert!(err.contains("benchmark.json"), "{err}");
    }

    #[test]
    fn change_verdict_needs_the_whole_ci_beyond_the_noise() {
        assert_eq!(change_verdict(-0.08, -0.03, 0.02), ChangeVerdict::Improved);
        assert_eq!(change_verdict(0.03, 0.08, 0.02), ChangeVerdict::Regressed);
        assert_eq!(change_verdict(-0.08, -0.01, 0.02), ChangeVerdict::NoChange);
        assert_eq!(change_verdict(-0.01, 0.05, 0.02), ChangeVerdict::NoChange);
    }

    #[test]
    fn cargo_messages_give_bench_executables_and_the_helper_only() {
        let json = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/broker#0.1.0","target":{"kind":["lib"],"crate_types":["lib"],"name":"broker","src_path":"/w/broker/src/lib.rs"},"profile":{"test":false},"filenames":["/w/target/release/deps/libbroker.rlib"],"executable":null,"fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/broker#0.1.0","target":{"kind":["bin"],"crate_types":["bin"],"name":"broker","src_path":"/w/broker/src/main.rs"},"executable":"/w/target/release/broker","fresh":true}
{"reason":"build-script-executed","package_id":"x","linked_libs":[],"out_dir":"/w/out"}
{"reason":"compiler-artifact","package_id":"path+file:///w/bench#0.1.0","target":{"kind":["bin"],"crate_types":["bin"],"name":"cpu_features","src_path":"/w/bench/src/bin/cpu_features.rs"},"executable":"/w/target/release/cpu_features","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/bench#0.1.0","target":{"kind":["bench"],"crate_types":["bin"],"name":"topic_match","src_path":"/w/bench/benches/topic_match.rs"},"executable":"/w/target/release/deps/topic_match-1234","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/bench#0.1.0","target":{"kind":["bench"],"crate_types":["bin"],"name":"mqtt_codec","src_path":"/w/bench/benches/mqtt_codec.rs"},"executable":"/w/target/release/deps/mqtt_codec-abcd","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/bench#0.1.0","target":{"kind":["test"],"crate_types":["bin"],"name":"it","src_path":"/w/bench/tests/it.rs"},"executable":"/w/target/release/deps/it-1","fresh":false}
not json: a stray line
{"reason":"build-finished","success":true}"#;
        let found = artifacts(json);
        let names: Vec<(&str, &ArtifactKind)> =
            found.iter().map(|a| (a.name.as_str(), &a.kind)).collect();
        assert_eq!(
            names,
            [
                ("cpu_features", &ArtifactKind::CpuFeatures),
                ("mqtt_codec", &ArtifactKind::Bench),
                ("topic_match", &ArtifactKind::Bench),
            ]
        );
        assert_eq!(
            found[1].executable,
            Path::new("/w/target/release/deps/mqtt_codec-abcd")
        );
    }

    #[test]
    fn qemu_target_runs_benches_through_its_runner() {
        let t = crate::targets::tests::target(
            "aarch64-unknown-linux-gnu",
            crate::targets::tests::AARCH64,
        );
        let exe = Path::new("/t/deps/mqtt_codec-1");
        let mut c = command_for(Some(&t), exe).unwrap();
        c.args(criterion_args(
            &Options {
                quick: true,
                filter: Some("decode".into()),
                ..Options::default()
            }
            .settings(),
        ));
        let argv: Vec<String> = std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv.join(" "),
            "qemu-aarch64-static -L /usr/aarch64-linux-gnu /t/deps/mqtt_codec-1 --bench --warm-up-time 0.3 --measurement-time 1 --noise-threshold 0.02 decode"
        );
        let native = command_for(None, exe).unwrap();
        assert_eq!(native.get_program(), exe.as_os_str());
        assert_eq!(native.get_args().count(), 0);
    }

    #[test]
    fn explicit_times_override_quick_and_baselines_pass_through() {
        let s = Options {
            quick: true,
            measurement_secs: Some(4.0),
            baseline: Some("main".into()),
            ..Options::default()
        }
        .settings();
        assert_eq!((s.warm_up_secs, s.measurement_secs), (Some(0.3), Some(4.0)));
        let args = criterion_args(&s).join(" ");
        assert!(args.contains("--baseline-lenient main"), "{args}");
        let s = Options::default().settings();
        assert_eq!((s.warm_up_secs, s.measurement_secs), (None, None));
        assert_eq!(criterion_args(&s), ["--bench", "--noise-threshold", "0.02"]);
        assert!(check_baseline_name("--baseline", "main-2024.1").is_ok());
        assert!(check_baseline_name("--baseline", "new").is_err());
        assert!(check_baseline_name("--baseline", "../x").is_err());
    }

    #[test]
    fn micro_runs_are_neither_gated_nor_load_baselines() {
        let dir = tempfile::tempdir().unwrap();
        let env = crate::report::tests::report(Vec::new()).environment;
        let r = micro_report(
            "run".into(),
            env,
            section(false),
            "2025-01-01T00:00:00Z".into(),
            "2025-01-01T00:01:00Z".into(),
        );
        std::fs::write(dir.path().join("report.json"), r.to_json()).unwrap();
        let out = dir.path().join("baseline.json");
        let err = crate::baseline::run(dir.path(), Some(&out)).unwrap_err();
        assert!(err.to_string().contains("--save-baseline NAME"), "{err}");
        assert!(!out.exists());
        let err = crate::gate::run(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("not gated"), "{err}");
        // Nor against a load baseline: there would be no row to compare.
        let baseline =
            crate::project_root().join("reports/baselines/x86_64-unknown-linux-gnu.json");
        let err = crate::baseline::gate(dir.path(), &baseline, 0.1).unwrap_err();
        assert!(err.to_string().contains("nothing to gate"), "{err}");
    }

    #[test]
    fn units_read_well() {
        assert_eq!(duration_ns(850.0), "850.0 ns");
        assert_eq!(duration_ns(1_250.0), "1.25 µs");
        assert_eq!(duration_ns(3_400_000.0), "3.40 ms");
        assert_eq!(
            rate(ThroughputUnit::Bytes, 512.0 * 1024.0 * 1024.0),
            "512.0 MiB/s"
        );
        assert_eq!(
            rate(ThroughputUnit::Bytes, 1.25 * 1024.0 * 1024.0 * 1024.0),
            "1.25 GiB/s"
        );
        assert_eq!(rate(ThroughputUnit::BytesDecimal, 2.5e9), "2.50 GB/s");
        assert_eq!(rate(ThroughputUnit::Elements, 3_200_000.0), "3.20 Melem/s");
    }

    #[test]
    fn markdown_section_groups_rows_with_units_and_labels_emulation() {
        let native = markdown_section(&section(false));
        assert!(native.contains("### mqtt_decode"), "{native}");
        assert!(native.contains("### topic_match"), "{native}");
        assert!(
            native.contains("| benchmark | mean | 95% CI | throughput | change vs `main` |"),
            "{native}"
        );
        assert!(
            native.contains("| mqtt_decode/publish_1KiB | 1.05 µs | 1.02 µs – 1.08 µs | 970.9 MiB/s | -6.0 % (-8.1 % – -4.2 %) improved |"),
            "{native}"
        );
        assert!(
            native.contains("| topic_match/exact | 2.00 ms | 1.90 ms – 2.10 ms | 500.0 Kelem/s | – (not in baseline) |"),
            "{native}"
        );
        assert!(native.contains("CPU features where they ran: sse4.2, avx2"));
        assert!(!native.contains("EMULATED"));
        let emulated = markdown_section(&section(true));
        assert!(
            emulated.contains("> **EMULATED: measured under qemu-aarch64"),
            "{emulated}"
        );
        assert!(emulated.contains("not the target CPU"));
    }
}
