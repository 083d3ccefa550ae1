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
        steps.run("tools", || {
            let outcome =
                crate::infra::install::ensure(&sh, &crate::infra::install::ci_tools(&cross), mode)?;
            match outcome.unavailable_std.first() {
                Some((triple, why)) => bail!("CI cross-builds {triple}, but {why}"),
                None => Ok(()),
            }
        })?;
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
            let args = bench_args(&bench_dir);
            let result = cmd!(sh, "{xtask} {args...}")
                .run()
                .map_err(anyhow::Error::from);
            println!(
                "    bench report: {}",
                bench_dir.join("report.md").display()
            );
            result
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

/// The steps run so far and how long each took.
#[derive(Default)]
struct Steps {
    done: Vec<(&'static str, Duration)>,
    failed: Option<(&'static str, Duration)>,
    started: Option<Instant>,
}

impl Steps {
    fn run(&mut self, name: &'static str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        self.started.get_or_insert_with(Instant::now);
        println!("==> {name}");
        let start = Instant::now();
        let result = f();
        let took = start.elapsed();
        match &result {
            Ok(()) => {
                println!("    {name}: ok in {}", format_duration(took));
                self.done.push((name, took));
            }
            Err(_) => {
                println!("    {name}: FAILED after {}", format_duration(took));
                self.failed = Some((name, took));
            }
        }
        result.with_context(|| format!("ci step `{name}` failed"))
    }

    fn summary(&self, ok: bool) -> String {
        let total = self.started.map(|s| s.elapsed()).unwrap_or_default();
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(name, took)| format!("{name} {}", format_duration(*took)))
            .collect();
        match (ok, self.failed) {
            (true, _) => format!(
                "ci: ok, {} steps in {} ({})",
                self.done.len(),
                format_duration(total),
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
