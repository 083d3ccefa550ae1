//! Building the broker for one target with one backend (cargo, cross,
//! cargo-zigbuild): what `build-all` does per target and `bench --target` once.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use cargo_metadata::Message;

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
    let target_dir = cargo_target_dir(triple)?;
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
            // Artifacts as JSON on stdout; diagnostics still rendered for the log.
            "--message-format=json-render-diagnostics",
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
    let artifact = std::thread::scope(|scope| {
        let out_file = file.try_clone();
        let reader = scope.spawn(move || {
            let mut out_file = out_file.ok();
            broker_artifact(BufReader::new(stdout), &mut out_file)
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
        reader.join().unwrap_or(None)
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
    // cross builds in a container: the paths in its messages are the
    // container's, so its binary is found where the target directory maps.
    let binary = artifact.filter(|p| p.is_file()).unwrap_or_else(|| {
        target_dir
            .join(triple)
            .join(profile_dir(profile))
            .join(target.exe_name("broker"))
    });
    if !binary.is_file() {
        bail!(
            "{backend} succeeded but {} is not there (log: {})",
            binary.display(),
            log.display()
        );
    }
    Ok(binary)
}

/// The `broker` executable among cargo's JSON messages; any other text
/// (a build script's output, a wrapper's lines) goes to `log`.
fn broker_artifact(stdout: impl BufRead, log: &mut Option<std::fs::File>) -> Option<PathBuf> {
    let mut found = None;
    for message in Message::parse_stream(stdout).map_while(Result::ok) {
        match message {
            Message::CompilerArtifact(a) if a.target.name == "broker" => {
                if let Some(exe) = a.executable {
                    found = Some(exe.into_std_path_buf());
                }
            }
            Message::TextLine(line) => {
                if let Some(f) = log {
                    let _ = writeln!(f, "{line}");
                }
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_binary_comes_from_cargos_messages() {
        let stdout = concat!(
            r#"{"reason":"compiler-artifact","package_id":"path+file:///ws/broker#0.1.0","manifest_path":"/ws/broker/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"broker","src_path":"/ws/broker/src/lib.rs","edition":"2021","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":false},"features":[],"filenames":["/t/libbroker.rlib"],"executable":null,"fresh":true}"#,
            "\n",
            "a line from a build script\n",
            r#"{"reason":"compiler-artifact","package_id":"path+file:///ws/broker#0.1.0","manifest_path":"/ws/broker/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"broker","src_path":"/ws/broker/src/main.rs","edition":"2021","doc":true,"doctest":false,"test":true},"profile":{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":false},"features":[],"filenames":["/t/aarch64/release/broker"],"executable":"/t/aarch64/release/broker","fresh":false}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("build.log");
        let mut log = Some(std::fs::File::create(&log_path).unwrap());
        let found = broker_artifact(stdout.as_bytes(), &mut log);
        assert_eq!(found, Some(PathBuf::from("/t/aarch64/release/broker")));
        drop(log);
        let logged = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(logged, "a line from a build script\n");
    }
}
