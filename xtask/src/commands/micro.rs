//! `cargo xtask micro`: build the criterion benchmarks of the `bench` crate
//! for a target, run them natively or through the target's runner (qemu-user),
//! and write their estimates into a run's report (`micro` section of
//! report.json, rendered in report.md and report.html).
//!
//! Criterion keeps its data in a per-target `CRITERION_HOME`
//! (`target/micro/<triple>/criterion`), so named baselines
//! (`--save-baseline NAME`, later `--baseline NAME`) survive between runs and
//! never mix numbers of different targets.

use crate::infra::cargo::CPU_FEATURES_BIN;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::infra::cargo::{artifacts, Artifact, ArtifactKind};
use crate::infra::criterion::{baseline_exists, collect, criterion_home};
use crate::infra::environment;
use crate::infra::environment::Environment;
use crate::infra::host::HostFacts;
use crate::infra::targets::Backend;
use crate::infra::targets::Target;
use crate::model::micro::{
    CriterionSettings, MicroSection, BENCH_PROFILE, NOISE_THRESHOLD, QUICK_MEASUREMENT_SECS,
    QUICK_WARM_UP_SECS,
};
use crate::model::report::{micro_report, Report};
use crate::render::micro::markdown_section;

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

/// A name criterion can use as a baseline directory without clobbering its own.
pub(crate) fn check_baseline_name(flag: &str, name: &str) -> Result<()> {
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

/// `cargo bench -p bench --no-run` for the host or `target` (cargo backend,
/// the target file's linker, build-all's per-target directory); the artifacts.
pub(crate) fn build(
    sh: &Shell,
    target: Option<&Target>,
    benches: &[String],
) -> Result<Vec<Artifact>> {
    let cargo = crate::infra::cargo::cargo();
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
        crate::infra::host::choose_backend(t, Some(Backend::Cargo), &host).map_err(|why| {
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
            crate::infra::cargo::cargo_target_dir(t.triple())?
                .display()
                .to_string(),
        ]);
        linker = t.def.linker.as_ref().map(|l| {
            (
                crate::infra::cargo::linker_env(t.triple()),
                l.command.clone(),
            )
        });
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
pub(crate) fn detect_cpu_features(target: Option<&Target>, artifacts: &[Artifact]) -> Vec<String> {
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
                crate::infra::launcher::describe_exit(o.status)
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

/// `--baseline NAME` must name a criterion baseline saved for this target.
fn check_baseline_exists(options: &Options, home: &Path, triple: &str) -> Result<()> {
    if let Some(name) = &options.baseline {
        if !baseline_exists(home, name) {
            bail!(
                "no criterion baseline `{name}` for {} (looked in {}): save one first with `cargo xtask micro{} --save-baseline {name}`",
                triple,
                home.display(),
                options
                    .target
                    .as_deref()
                    .map(|t| format!(" --target {t}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Runs every bench executable with criterion's `args`; returns the names
/// run and those that failed.
fn run_benches(
    target: Option<&Target>,
    built: &[Artifact],
    args: &[String],
    home: &Path,
    root: &Path,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut executables = Vec::new();
    let mut failed = Vec::new();
    for bench in built.iter().filter(|a| a.kind == ArtifactKind::Bench) {
        println!("==> {} {}", bench.name, args.join(" "));
        let status = command_for(target, &bench.executable)?
            .args(args)
            .env("CRITERION_HOME", home)
            .current_dir(root)
            .status()
            .with_context(|| format!("cannot start {}", bench.executable.display()))?;
        executables.push(bench.name.clone());
        if !status.success() {
            eprintln!(
                "    {}: {}",
                bench.name,
                crate::infra::launcher::describe_exit(status)
            );
            failed.push(bench.name.clone());
        }
    }
    Ok((executables, failed))
}

/// Writes report.json, report.md and report.html; returns their paths.
fn write_report(run_dir: &Path, report: &Report) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let json = run_dir.join("report.json");
    std::fs::write(&json, report.to_json())
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md_text = crate::render::markdown::render_markdown(report);
    let md = run_dir.join("report.md");
    std::fs::write(&md, &md_text).with_context(|| format!("cannot write {}", md.display()))?;
    let html = crate::render::html::write(run_dir, report)?;
    Ok((json, md, html))
}

/// The runner a target's benchmarks went through under emulation (empty natively).
fn runner_command(target: Option<&Target>) -> Vec<String> {
    match target {
        Some(t) if t.emulated() => t
            .def
            .runner
            .command
            .iter()
            .chain(&t.def.runner.args)
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

pub fn run(options: &Options) -> Result<()> {
    let root = crate::infra::cargo::project_root();
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
        .map(|triple| crate::infra::host::load_target(&root, triple))
        .transpose()?;

    let env = Environment::capture_for(&sh, &root, target.as_ref());
    let home = criterion_home(&crate::infra::cargo::target_dir()?, &env.target_triple);
    check_baseline_exists(options, &home, &env.target_triple)?;
    let settings = options.settings();

    let built = build(&sh, target.as_ref(), &options.benches)?;
    let cpu_features = detect_cpu_features(target.as_ref(), &built);
    let run_id = environment::run_id(&env.timestamp, &env.target_triple);
    let reports_dir = root.join("reports");
    let (run_dir, is_default_dir) = match &options.out {
        Some(dir) => (crate::infra::run_dir::absolute(dir)?, false),
        None => (reports_dir.join("runs").join(&run_id), true),
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    for file in ["report.json", "report.md", "report.html"] {
        let _ = std::fs::remove_file(run_dir.join(file));
    }
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;

    let runner_command = runner_command(target.as_ref());
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
    let (executables, failed) = run_benches(target.as_ref(), &built, &args, &home, &root)?;
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
    let (json, md, html) = write_report(&run_dir, &report)?;
    if is_default_dir {
        crate::infra::run_dir::point_latest(&reports_dir, &run_dir)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::criterion::test_support::{fixture_home, section, write, ESTIMATES};
    use crate::model::micro::{change_verdict, ChangeVerdict, ThroughputUnit};
    use crate::render::micro::{duration_ns, rate};

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
        // Whole messages as cargo writes them; cargo_metadata reads a line it
        // cannot parse as text, which must not count as an artifact.
        let artifact = |package: &str, kind: &str, name: &str, src: &str, exe: Option<&str>| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "package_id": format!("path+file:///w/{package}#0.1.0"),
                "manifest_path": format!("/w/{package}/Cargo.toml"),
                "target": {"kind": [kind], "crate_types": [if kind == "lib" { "lib" } else { "bin" }],
                    "name": name, "src_path": src, "edition": "2021",
                    "doc": true, "doctest": false, "test": true},
                "profile": {"opt_level": "3", "debuginfo": 0, "debug_assertions": false,
                    "overflow_checks": false, "test": false},
                "features": [],
                "filenames": [exe.unwrap_or("/w/target/release/deps/libbroker.rlib")],
                "executable": exe,
                "fresh": false,
            })
            .to_string()
        };
        let json = [
            artifact("broker", "lib", "broker", "/w/broker/src/lib.rs", None),
            artifact("broker", "bin", "broker", "/w/broker/src/main.rs", Some("/w/target/release/broker")),
            r#"{"reason":"build-script-executed","package_id":"path+file:///w/x#0.1.0","linked_libs":[],"linked_paths":[],"cfgs":[],"env":[],"out_dir":"/w/out"}"#.to_string(),
            artifact("bench", "bin", "cpu_features", "/w/bench/src/bin/cpu_features.rs", Some("/w/target/release/cpu_features")),
            artifact("bench", "bench", "topic_match", "/w/bench/benches/topic_match.rs", Some("/w/target/release/deps/topic_match-1234")),
            artifact("bench", "bench", "mqtt_codec", "/w/bench/benches/mqtt_codec.rs", Some("/w/target/release/deps/mqtt_codec-abcd")),
            artifact("bench", "test", "it", "/w/bench/tests/it.rs", Some("/w/target/release/deps/it-1")),
            // A message with the reason but not the shape of an artifact.
            r#"{"reason":"compiler-artifact","target":{"kind":["bench"],"name":"stub"},"executable":"/w/x"}"#.to_string(),
            "not json: a stray line".to_string(),
            r#"{"reason":"build-finished","success":true}"#.to_string(),
        ]
        .join("\n");
        let json = json.as_str();
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
        let t = crate::infra::targets::test_support::target(
            "aarch64-unknown-linux-gnu",
            crate::infra::targets::test_support::AARCH64,
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
