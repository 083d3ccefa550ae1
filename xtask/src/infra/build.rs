//! Building the broker for one target with one backend (cargo, cross,
//! cargo-zigbuild): what `build-all` does per target and `bench --target` once.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::infra::cargo::{cargo_target_dir, linker_env};
use crate::infra::targets::Backend;
use crate::infra::targets::Target;

/// Cargo's name for a profile's output directory.
pub(crate) fn profile_dir(profile: &str) -> &str {
    if profile == "dev" {
        "debug"
    } else {
        profile
    }
}

/// Builds the broker for `target` with `backend`; cargo's output goes to
/// `log` (its `Compiling …` lines also to `progress`). Returns the binary.
pub fn build(
    root: &Path,
    target: &Target,
    backend: Backend,
    profile: &str,
    log: &Path,
    progress: &dyn Fn(String),
) -> Result<PathBuf> {
    let triple = target.triple();
    let target_dir = cargo_target_dir(triple);
    let mut command = match backend {
        Backend::Cargo => {
            let mut c = Command::new(crate::infra::cargo::cargo());
            c.args(["build", "--target", triple]);
            if let Some(linker) = &target.def.linker {
                c.env(linker_env(triple), &linker.command);
            }
            c
        }
        Backend::Zigbuild => {
            let mut c = Command::new(crate::infra::cargo::cargo());
            c.args(["zigbuild", "--target", target.zig_target()]);
            c
        }
        Backend::Cross => {
            let mut c = Command::new("cross");
            c.args(["build", "--target", triple]);
            c
        }
    };
    command
        .args([
            "-p",
            "broker",
            "--bin",
            "broker",
            "--profile",
            profile,
            "--target-dir",
        ])
        .arg(&target_dir)
        .current_dir(root)
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let _ = writeln!(file, "$ {command:?}");
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {backend} for {triple}"))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let mut last_error = None;
    std::thread::scope(|scope| {
        let out_file = file.try_clone();
        scope.spawn(move || {
            if let Ok(mut f) = out_file {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            let trimmed = line.trim();
            if trimmed.starts_with("Compiling ") || trimmed.starts_with("Finished ") {
                progress(trimmed.to_string());
            }
            if trimmed.starts_with("error") && last_error.is_none() {
                last_error = Some(trimmed.to_string());
            }
        }
    });
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "{backend} {}: {} (log: {})",
            crate::infra::launcher::describe_exit(status),
            last_error.unwrap_or_else(|| "no error line".into()),
            log.display()
        );
    }
    let binary = target_dir
        .join(triple)
        .join(profile_dir(profile))
        .join(target.exe_name("broker"));
    if !binary.is_file() {
        bail!(
            "{backend} succeeded but {} is not there (log: {})",
            binary.display(),
            log.display()
        );
    }
    Ok(binary)
}
