//! Cargo as xtask uses it: `$CARGO`, the workspace root, the target directory
//! and where artifacts land (release binaries, per-triple cross builds, the
//! bench executables in cargo's JSON messages).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use cargo_metadata::{Message, MetadataCommand, TargetKind};

/// The helper binary of the bench crate that prints the detected CPU features.
pub const CPU_FEATURES_BIN: &str = "cpu_features";

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
/// `--message-format=json` messages (other lines and messages are skipped).
pub fn artifacts(cargo_json: &str) -> Vec<Artifact> {
    let mut found = Vec::new();
    for message in Message::parse_stream(cargo_json.as_bytes()).map_while(Result::ok) {
        let Message::CompilerArtifact(a) = message else {
            continue;
        };
        let Some(exe) = a.executable else {
            continue;
        };
        let kind = if a.target.kind.contains(&TargetKind::Bench) {
            ArtifactKind::Bench
        } else if a.target.kind.contains(&TargetKind::Bin) && a.target.name == CPU_FEATURES_BIN {
            ArtifactKind::CpuFeatures
        } else {
            continue;
        };
        found.push(Artifact {
            name: a.target.name,
            kind,
            executable: exe.into_std_path_buf(),
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found.dedup();
    found
}

/// The per-target cargo target directory: targets build side by side
/// without waiting on each other's build-directory locks.
pub fn cargo_target_dir(triple: &str) -> Result<PathBuf> {
    Ok(target_dir()?.join("cross").join(triple))
}

/// `CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER`.
pub fn linker_env(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        triple.to_uppercase().replace(['-', '.'], "_")
    )
}

/// The workspace root: the parent of the xtask crate.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo that invoked us (`$CARGO`), so the same toolchain runs every step.
pub(crate) fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Cargo's target directory as `cargo metadata` reports it for the
/// workspace, so `$CARGO_TARGET_DIR`, `build.target-dir` in a
/// `.cargo/config.toml` and `--config` all redirect it as they do cargo's
/// own builds. Asked once per xtask run.
pub(crate) fn target_dir() -> Result<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir.clone());
    }
    let dir = target_dir_of(&project_root(), &[], &[])?;
    Ok(DIR.get_or_init(|| dir).clone())
}

/// `cargo metadata`'s target directory for the workspace at `root`, with
/// extra `--config` values and environment variables (`(name, None)` removes one).
pub(crate) fn target_dir_of(
    root: &Path,
    config: &[&str],
    env: &[(&str, Option<&str>)],
) -> Result<PathBuf> {
    let mut metadata = MetadataCommand::new();
    metadata.cargo_path(cargo()).current_dir(root).no_deps();
    let mut options = Vec::new();
    for c in config {
        options.extend(["--config".to_string(), c.to_string()]);
    }
    metadata.other_options(options);
    let mut command = metadata.cargo_command();
    for (name, value) in env {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    let output = command
        .output()
        .with_context(|| format!("cannot run `cargo metadata` in {}", root.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "`cargo metadata` in {} failed: {}",
            root.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata = MetadataCommand::parse(String::from_utf8_lossy(&output.stdout))
        .context("cannot read `cargo metadata`'s output")?;
    Ok(metadata.target_directory.into_std_path_buf())
}

/// Where `cargo build --release -p <package>` puts binary `name`, including
/// the triple directory when `$CARGO_BUILD_TARGET` is set.
pub(crate) fn release_binary(name: &str) -> Result<PathBuf> {
    Ok(release_binary_in(
        &target_dir()?,
        std::env::var("CARGO_BUILD_TARGET").ok(),
        name,
    ))
}

pub(crate) fn release_binary_in(
    target_dir: &Path,
    build_target: Option<String>,
    name: &str,
) -> PathBuf {
    let mut dir = target_dir.to_path_buf();
    if let Some(triple) = build_target.filter(|t| !t.is_empty()) {
        dir.push(triple);
    }
    dir.join("release")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_binary_defaults_to_workspace_target() {
        assert_eq!(
            release_binary_in(Path::new("/ws/target"), None, "broker"),
            Path::new("/ws/target/release").join(format!("broker{}", std::env::consts::EXE_SUFFIX))
        );
    }

    /// A one-crate workspace cargo can describe without the network.
    fn scratch_workspace() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"probe\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        dir
    }

    const NO_ENV: (&str, Option<&str>) = ("CARGO_TARGET_DIR", None);

    #[test]
    fn target_dir_is_cargos_default_without_redirection() {
        let ws = scratch_workspace();
        let dir = target_dir_of(ws.path(), &[], &[NO_ENV]).unwrap();
        assert_eq!(dir, ws.path().join("target"));
    }

    #[test]
    fn target_dir_honours_cargo_target_dir() {
        let ws = scratch_workspace();
        let elsewhere = tempfile::tempdir().unwrap();
        let abs = elsewhere.path().to_str().unwrap();
        let dir = target_dir_of(ws.path(), &[], &[("CARGO_TARGET_DIR", Some(abs))]).unwrap();
        assert_eq!(dir, elsewhere.path());
        // Relative: to the directory cargo runs in, the workspace root.
        let dir = target_dir_of(ws.path(), &[], &[("CARGO_TARGET_DIR", Some("out"))]).unwrap();
        assert_eq!(dir, ws.path().join("out"));
    }

    #[test]
    fn target_dir_honours_build_target_dir_in_cargo_config() {
        let ws = scratch_workspace();
        std::fs::create_dir(ws.path().join(".cargo")).unwrap();
        std::fs::write(
            ws.path().join(".cargo/config.toml"),
            "[build]\ntarget-dir = \"from-config\"\n",
        )
        .unwrap();
        let dir = target_dir_of(ws.path(), &[], &[NO_ENV]).unwrap();
        assert_eq!(dir, ws.path().join("from-config"));
        // The environment wins over the file, as in cargo's own builds.
        let dir = target_dir_of(ws.path(), &[], &[("CARGO_TARGET_DIR", Some("env-wins"))]).unwrap();
        assert_eq!(dir, ws.path().join("env-wins"));
    }

    #[test]
    fn target_dir_honours_config_on_the_command_line() {
        let ws = scratch_workspace();
        let dir = target_dir_of(ws.path(), &["build.target-dir=\"via-flag\""], &[NO_ENV]).unwrap();
        assert_eq!(dir.file_name().unwrap(), "via-flag");
    }

    #[test]
    fn target_dir_of_a_missing_workspace_is_an_error() {
        let empty = tempfile::tempdir().unwrap();
        let err = target_dir_of(empty.path(), &[], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("cargo metadata"), "{err:#}");
    }

    #[test]
    fn release_binary_includes_build_target_triple() {
        let bin = release_binary_in(
            Path::new("/ws/target"),
            Some("aarch64-unknown-linux-gnu".into()),
            "loadgen",
        );
        assert!(
            bin.starts_with("/ws/target/aarch64-unknown-linux-gnu/release"),
            "{}",
            bin.display()
        );
    }

    #[test]
    fn project_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(project_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
