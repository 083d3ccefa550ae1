//! `cargo xtask ci`: the test command CI runs; green here means green in CI.
//!
//! Steps: tools, rustfmt check, workload and suite files, lint of the CI
//! workflows, Dockerfiles and scripts (`cargo xtask lint`), clippy with
//! warnings denied, compile every criterion bench (`cargo bench --no-run`, so
//! benches nobody runs in CI cannot rot), release build of the broker, workspace tests against that
//! release binary with the interop tests required rather than skipped,
//! every fuzz target for ~30 s (`fuzz (short)`, docs/fuzz.md),
//! cross-builds with smoke runs under qemu-user for two targets, and the
//! quick bench suite gated by the `ci` threshold profile.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::infra::install::Mode;
use crate::infra::targets;
use crate::model::gate::{GateResult, VerdictKind};
use crate::model::suite;
use crate::model::verdict::{is_verdict, VerdictFailed};

pub struct Options {
    /// Install missing tools (as opposed to only reporting them).
    pub install: bool,
}

pub fn run(options: &Options) -> Result<()> {
    let sh = Shell::new()?;
    let root = crate::infra::cargo::project_root();
    sh.change_dir(&root);
    let cargo = crate::infra::cargo::cargo();
    let release_bin = crate::infra::cargo::release_binary("broker")?;
    // The build-all and bench steps run this very binary as their commands,
    // so each stays one command of its own (commands never import each other).
    let xtask = std::env::current_exe().context("cannot find the running xtask binary")?;

    let mut steps = Steps::default();
    let result = (|| -> Result<()> {
        let mode = if options.install {
            Mode::Install
        } else {
            Mode::ReportOnly
        };
        let cross = targets::select(targets::load_all(&root)?, &cross_targets())?;
        let tools = crate::infra::install::ci_tools(&cross);
        match mode {
            Mode::Install => steps.run("tools", || {
                let outcome = crate::infra::install::ensure(&sh, &tools, mode)?;
                match outcome.unavailable_std.first() {
                    Some((triple, why)) => bail!("CI cross-builds {triple}, but {why}"),
                    None => Ok(()),
                }
            })?,
            // Nothing installed, so the step is not "ok": it is skipped, and
            // a tool a later step needs that is missing fails it here, by name.
            Mode::ReportOnly => steps.run_skipped("tools", "--no-install", || {
                let plan = crate::infra::install::Plan::new(&tools, |t| {
                    crate::infra::install::is_present(&sh, t)
                });
                plan.require_present(crate::infra::install::is_root(&sh), "--no-install")
            })?,
        }
        steps.run(
            "fmt",
            || Ok(cmd!(sh, "{cargo} fmt --all -- --check").run()?),
        )?;
        steps.run("workloads", || suite::validate_all(&root))?;
        steps.run("lint ci workflows and Dockerfile", || {
            crate::infra::lint::check(&sh, &root)
        })?;
        steps.run("clippy", || {
            Ok(cmd!(
                sh,
                "{cargo} clippy --workspace --all-targets -- -D warnings"
            )
            .run()?)
        })?;
        // Compiled, not run: criterion's numbers on a shared CI runner are
        // noise, but a bench that no longer builds is a defect.
        // `--benches`: only the bench targets, not every crate's test
        // harness rebuilt in release mode (that doubled the step's time).
        steps.run("compile benches", || {
            Ok(cmd!(sh, "{cargo} bench --workspace --benches --no-run").run()?)
        })?;
        steps.run("build release broker", || {
            Ok(cmd!(sh, "{cargo} build --release -p broker").run()?)
        })?;
        steps.run("test", || {
            let _bin = sh.push_env("BROKER_RELEASE_BIN", &release_bin);
            // bench/tests/fast_paths.rs fails instead of noting it when the
            // CPU's accelerated paths are missing.
            let _required = sh.push_env("FAST_PATHS_REQUIRED", "1");
            // The broker's seed test writes the fuzz corpora on the way.
            let (var, corpus) = crate::infra::fuzz::corpus_env(&root);
            let _seeds = sh.push_env(var, corpus);
            println!("    BROKER_RELEASE_BIN={}", release_bin.display());
            Ok(cmd!(sh, "{cargo} test --workspace").run()?)
        })?;
        // Every fuzz target for a short time (seeds, one nightly build, then
        // ~30 s each): a decoder crash found by then fails CI with its reproducer.
        steps.run("fuzz (short)", || {
            let seconds = crate::infra::fuzz::SHORT_RUN.as_secs();
            let results = crate::infra::fuzz::seed_build_run(
                &sh,
                &root,
                crate::infra::fuzz::TARGETS,
                seconds,
                &[],
                true,
            )?;
            match crate::infra::fuzz::crash_report(&root, &results) {
                Some(report) => Err(VerdictFailed(report).into()),
                None => Ok(()),
            }
        })?;
        steps.run("cross-build + smoke (aarch64 musl, armv7)", || {
            let targets = cross_targets().join(",");
            Ok(cmd!(sh, "{xtask} build-all --targets {targets} --jobs 2 --smoke").run()?)
        })?;
        // The aarch64 fast paths (ARMv8 CRC, NEON UTF-8) checked against the
        // portable code on an emulated CPU that has those features; the
        // x86_64 ones ran natively in the test step.
        steps.run("fast paths under qemu-aarch64", || {
            let target = FAST_PATH_TARGET;
            let _required = sh.push_env("FAST_PATHS_REQUIRED", "1");
            Ok(cmd!(
                sh,
                "{cargo} test -p bench --test fast_paths --target {target} -- --nocapture"
            )
            .run()?)
        })?;
        // Out of the source tree, so CI runs never touch reports/.
        let bench_dir = crate::infra::cargo::target_dir()?.join("ci-bench");
        steps.run("bench (quick suite, ci profile)", || {
            bench_step(
                || {
                    let args = bench_args(&bench_dir);
                    cmd!(sh, "{xtask} {args...}")
                        .run()
                        .map_err(anyhow::Error::from)
                },
                &bench_dir,
            )
        })?;
        Ok(())
    })();
    println!("{}", steps.summary(result.is_ok()));
    // A red step is CI's verdict (exit 1), whatever kind of error it was.
    result.map_err(|e| match is_verdict(&e) {
        true => e,
        false => VerdictFailed(format!("{e:#}")).into(),
    })
}

/// Where `bench/tests/fast_paths.rs` runs under emulation: the static musl
/// target needs no sysroot and its rust-std is installed for the cross step.
const FAST_PATH_TARGET: &str = "aarch64-unknown-linux-musl";

/// The targets CI cross-builds and smoke-runs under qemu-user: a 64-bit
/// server target (static) and the 32-bit embedded one with its size budget.
fn cross_targets() -> Vec<String> {
    vec![
        "aarch64-unknown-linux-musl".into(),
        "armv7-unknown-linux-gnueabihf".into(),
    ]
}

/// `cargo xtask bench --suite quick --profile ci --out <dir>`.
pub(crate) fn bench_args(out: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["bench", "--suite", "quick", "--profile", "ci", "--out"]
        .map(OsString::from)
        .into();
    args.push(out.into());
    args
}

/// Runs the bench (`run`) and judges what it wrote to `dir`: CI is green
/// only when the bench succeeded *and* its gate passed every threshold. A
/// gate that failed, or ended `incomplete` (something not measured: a
/// skipped protocol, a threshold the suite did not exercise), fails the
/// step, whatever the bench command's exit status said.
pub(crate) fn bench_step(run: impl FnOnce() -> Result<()>, dir: &Path) -> Result<()> {
    let ran = run();
    println!("    bench report: {}", dir.join("report.md").display());
    ran?;
    let report = crate::model::report::Report::load(dir)?;
    let Some(gate) = report.gate.as_ref() else {
        return Err(VerdictFailed(format!(
            "the bench report in {} has no gate verdict",
            dir.display()
        ))
        .into());
    };
    let problems: Vec<String> = gate
        .verdicts
        .iter()
        .filter(|v| v.verdict != VerdictKind::Pass)
        .map(|v| format!("{} {} ({})", v.label(), v.verdict.as_str(), v.measured))
        .collect();
    match gate.result {
        GateResult::Pass => Ok(()),
        GateResult::Fail => Err(VerdictFailed(format!(
            "gate `{}` FAIL: {}",
            gate.profile,
            problems.join("; ")
        ))
        .into()),
        GateResult::Incomplete => Err(VerdictFailed(format!(
            "gate `{}` incomplete, and CI needs every threshold measured: {}",
            gate.profile,
            problems.join("; ")
        ))
        .into()),
    }
}

/// The steps run so far and how long each took.
#[derive(Default)]
struct Steps {
    /// Name, time, and why it was skipped (None: it ran and passed).
    done: Vec<(&'static str, Duration, Option<&'static str>)>,
    failed: Option<(&'static str, Duration)>,
    started: Option<Instant>,
}

impl Steps {
    fn run(&mut self, name: &'static str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        self.step(name, None, f)
    }

    /// A step whose work is skipped (`why`, e.g. `--no-install`): `check`
    /// still decides whether CI can go on, but it is never reported as ok.
    fn run_skipped(
        &mut self,
        name: &'static str,
        why: &'static str,
        check: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        self.step(name, Some(why), check)
    }

    fn step(
        &mut self,
        name: &'static str,
        skipped: Option<&'static str>,
        f: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        self.started.get_or_insert_with(Instant::now);
        println!("==> {name}");
        let start = Instant::now();
        let result = f();
        let took = start.elapsed();
        match (&result, skipped) {
            (Ok(()), None) => println!("    {name}: ok in {}", format_duration(took)),
            (Ok(()), Some(why)) => println!("    {name}: skipped ({why})"),
            (Err(_), _) => println!("    {name}: FAILED after {}", format_duration(took)),
        }
        match &result {
            Ok(()) => self.done.push((name, took, skipped)),
            Err(_) => self.failed = Some((name, took)),
        }
        result.with_context(|| format!("ci step `{name}` failed"))
    }

    fn summary(&self, ok: bool) -> String {
        let total = self.started.map(|s| s.elapsed()).unwrap_or_default();
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(name, took, skipped)| match skipped {
                None => format!("{name} {}", format_duration(*took)),
                Some(why) => format!("{name} skipped ({why})"),
            })
            .collect();
        let skipped = self.done.iter().filter(|(_, _, s)| s.is_some()).count();
        match (ok, self.failed) {
            (true, _) => format!(
                "ci: ok, {} steps in {}{} ({})",
                self.done.len() - skipped,
                format_duration(total),
                if skipped > 0 {
                    format!(", {skipped} skipped")
                } else {
                    String::new()
                },
                parts.join(", ")
            ),
            (false, Some((name, _))) => format!(
                "ci: FAILED at `{name}` after {} (passed: {})",
                format_duration(total),
                if parts.is_empty() {
                    "none".to_owned()
                } else {
                    parts.join(", ")
                }
            ),
            (false, None) => format!("ci: FAILED after {}", format_duration(total)),
        }
    }
}

/// `0.4s`, `12.3s`, `2m05s`.
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_millis(420)), "0.4s");
        assert_eq!(format_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn failing_step_is_named_in_error_and_summary() {
        let mut steps = Steps::default();
        steps.run("first", || Ok(())).unwrap();
        let err = steps
            .run("second", || Err(anyhow::anyhow!("boom")))
            .unwrap_err();
        assert_eq!(err.to_string(), "ci step `second` failed");
        assert_eq!(err.root_cause().to_string(), "boom");
        let summary = steps.summary(false);
        assert!(summary.starts_with("ci: FAILED at `second`"), "{summary}");
        assert!(summary.contains("passed: first"), "{summary}");
        assert!(!summary.contains('\n'));
    }

    /// A bench run that wrote a report with this gate, and exited 0 (as
    /// bench does for `incomplete`, or with --no-gate-exit for a FAIL).
    fn bench_wrote(dir: &Path, result: GateResult) -> impl FnOnce() -> Result<()> + '_ {
        move || {
            let mut report = crate::model::report::test_support::quick_run(25_000.0, 3_000);
            let root = crate::infra::cargo::project_root();
            let profile = crate::model::gate::Profile::load(&root, "ci").unwrap();
            let mut gate = crate::analysis::gate::evaluate(&report, &profile);
            gate.result = result;
            if result == GateResult::Fail {
                gate.verdicts[0].verdict = VerdictKind::Fail;
            }
            report.gate = Some(gate);
            std::fs::write(dir.join("report.json"), report.to_json()).unwrap();
            Ok(())
        }
    }

    #[test]
    fn a_gate_fail_or_incomplete_fails_the_bench_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut steps = Steps::default();
        let err = steps
            .run("bench", || {
                bench_step(bench_wrote(dir.path(), GateResult::Fail), dir.path())
            })
            .unwrap_err();
        assert!(is_verdict(&err), "{err:#}");
        assert!(format!("{err:#}").contains("gate `ci` FAIL"), "{err:#}");
        assert!(steps.summary(false).starts_with("ci: FAILED at `bench`"));

        let err =
            bench_step(bench_wrote(dir.path(), GateResult::Incomplete), dir.path()).unwrap_err();
        assert!(is_verdict(&err));
        assert!(format!("{err:#}").contains("incomplete"), "{err:#}");

        bench_step(bench_wrote(dir.path(), GateResult::Pass), dir.path()).unwrap();

        // The bench command itself failing (its own gate exit) stays a failure.
        let err = bench_step(
            || Err(VerdictFailed("gate `ci` failed".into()).into()),
            dir.path(),
        )
        .unwrap_err();
        assert!(is_verdict(&err));
        // No report at all is an error too, never a pass.
        let empty = tempfile::tempdir().unwrap();
        assert!(bench_step(|| Ok(()), empty.path()).is_err());
    }

    #[test]
    fn a_skipped_tools_step_is_never_reported_ok() {
        let mut steps = Steps::default();
        steps
            .run_skipped("tools", "--no-install", || Ok(()))
            .unwrap();
        steps.run("fmt", || Ok(())).unwrap();
        let summary = steps.summary(true);
        assert!(summary.starts_with("ci: ok, 1 steps in "), "{summary}");
        assert!(summary.contains(", 1 skipped ("), "{summary}");
        assert!(
            summary.contains("tools skipped (--no-install)"),
            "{summary}"
        );

        // Missing tools still fail the skipped step, naming them.
        let mut steps = Steps::default();
        let err = steps
            .run_skipped("tools", "--no-install", || {
                Err(anyhow::anyhow!("mosquitto missing"))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "ci step `tools` failed");
        assert!(steps.summary(false).starts_with("ci: FAILED at `tools`"));
    }

    /// ci/test.yml's runner user is not root and its Python is externally
    /// managed, so the workflow installs what the tools step would: every
    /// apt package by name, Python modules as Debian's `python3-<module>`,
    /// pip-installed executables with pipx.
    #[test]
    fn the_test_workflow_installs_every_tool_ci_needs() {
        use crate::infra::install::{Install, Probe};
        let root = crate::infra::cargo::project_root();
        let workflow = std::fs::read_to_string(root.join("ci/test.yml")).unwrap();
        let words: Vec<&str> = workflow
            .split(|c: char| c.is_whitespace() || c == '\\')
            .collect();
        let cross = targets::select(targets::load_all(&root).unwrap(), &cross_targets()).unwrap();
        let mut missing = Vec::new();
        for tool in crate::infra::install::ci_tools(&cross) {
            let wanted = match (&tool.probe, &tool.install) {
                (_, Install::Apt(package)) => package.clone(),
                (Probe::PythonModule(module), Install::Pip(_)) => format!("python3-{module}"),
                (_, Install::Pip(package)) => package.clone(),
                // rustup and cargo installs work as the runner user.
                _ => continue,
            };
            if !words.contains(&wanted.as_str()) {
                missing.push(format!("{} ({wanted})", tool.name));
            }
        }
        assert!(
            missing.is_empty(),
            "ci/test.yml does not install: {missing:?}"
        );
    }

    /// A runner without a committed baseline (aarch64, today) must not pass
    /// the baseline step silently.
    #[test]
    fn the_bench_workflow_says_when_no_baseline_was_compared() {
        let root = crate::infra::cargo::project_root();
        let workflow = std::fs::read_to_string(root.join("ci/bench.yml")).unwrap();
        let step = workflow
            .split("- name: ")
            .find(|s| s.starts_with("Gate against the baseline"))
            .expect("a baseline gate step");
        assert!(
            step.contains("::warning") && step.contains("not compared: no baseline for $TRIPLE"),
            "{step}"
        );
        assert!(step.contains("GITHUB_STEP_SUMMARY"), "{step}");
    }

    #[test]
    fn success_summary_counts_steps() {
        let mut steps = Steps::default();
        steps.run("a", || Ok(())).unwrap();
        steps.run("b", || Ok(())).unwrap();
        let summary = steps.summary(true);
        assert!(summary.starts_with("ci: ok, 2 steps in "), "{summary}");
        assert!(
            summary.contains("(a ") && summary.contains(", b "),
            "{summary}"
        );
    }
}
