//! `cargo xtask ci`: the test command CI runs; green here means green in CI.
//!
//! Steps: tools, rustfmt check, clippy with warnings denied, release build of
//! the broker, workspace tests against that release binary with the interop
//! tests required rather than skipped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::setup_tools::{self, Mode};

pub struct Options {
    /// Install missing tools (as opposed to only reporting them).
    pub install: bool,
}

pub fn run(options: &Options) -> Result<()> {
    let sh = Shell::new()?;
    let root = crate::project_root();
    sh.change_dir(&root);
    let cargo = crate::cargo();
    let release_bin = release_binary(
        &root,
        std::env::var_os("CARGO_TARGET_DIR"),
        std::env::var("CARGO_BUILD_TARGET").ok(),
    );

    let mut steps = Steps::default();
    let result = (|| -> Result<()> {
        let mode = if options.install {
            Mode::Install
        } else {
            Mode::ReportOnly
        };
        steps.run("tools", || {
            setup_tools::ensure(&sh, &setup_tools::ci_tools(), mode)
        })?;
        steps.run(
            "fmt",
            || Ok(cmd!(sh, "{cargo} fmt --all -- --check").run()?),
        )?;
        steps.run("clippy", || {
            Ok(cmd!(
                sh,
                "{cargo} clippy --workspace --all-targets -- -D warnings"
            )
            .run()?)
        })?;
        steps.run("build release broker", || {
            Ok(cmd!(sh, "{cargo} build --release -p broker").run()?)
        })?;
        steps.run("test", || {
            let _bin = sh.push_env("BROKER_RELEASE_BIN", &release_bin);
            println!("    BROKER_RELEASE_BIN={}", release_bin.display());
            Ok(cmd!(sh, "{cargo} test --workspace").run()?)
        })?;
        Ok(())
    })();
    println!("{}", steps.summary(result.is_ok()));
    result
}

/// Where `cargo build --release -p broker` puts the binary: `$CARGO_TARGET_DIR`
/// (relative to the workspace root, where we run cargo) or `<root>/target`,
/// plus the triple directory when `$CARGO_BUILD_TARGET` is set.
fn release_binary(
    root: &Path,
    cargo_target_dir: Option<OsString>,
    build_target: Option<String>,
) -> PathBuf {
    let mut dir = match cargo_target_dir {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    };
    if let Some(triple) = build_target.filter(|t| !t.is_empty()) {
        dir.push(triple);
    }
    dir.join("release")
        .join(format!("broker{}", std::env::consts::EXE_SUFFIX))
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
    fn release_binary_defaults_to_workspace_target() {
        let bin = release_binary(Path::new("/ws"), None, None);
        assert_eq!(
            bin,
            Path::new("/ws/target/release").join(format!("broker{}", std::env::consts::EXE_SUFFIX))
        );
    }

    #[test]
    fn release_binary_honours_cargo_target_dir() {
        let abs = release_binary(Path::new("/ws"), Some("/tmp/t".into()), None);
        assert!(abs.starts_with("/tmp/t/release"), "{}", abs.display());
        let rel = release_binary(Path::new("/ws"), Some("out".into()), None);
        assert!(rel.starts_with("/ws/out/release"), "{}", rel.display());
        let empty = release_binary(Path::new("/ws"), Some("".into()), None);
        assert!(
            empty.starts_with("/ws/target/release"),
            "{}",
            empty.display()
        );
    }

    #[test]
    fn release_binary_includes_build_target_triple() {
        let bin = release_binary(
            Path::new("/ws"),
            None,
            Some("aarch64-unknown-linux-gnu".into()),
        );
        assert!(
            bin.starts_with("/ws/target/aarch64-unknown-linux-gnu/release"),
            "{}",
            bin.display()
        );
    }

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
