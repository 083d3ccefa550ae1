//! Cargo as xtask uses it: `$CARGO`, the workspace root, the target directory
//! and where artifacts land (release binaries, per-triple cross builds, the
//! bench executables in cargo's JSON messages).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

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

/// The per-target cargo target directory: targets build side by side
/// without waiting on each other's build-directory locks.
pub fn cargo_target_dir(triple: &str) -> PathBuf {
    crate::infra::cargo::target_dir().join("cross").join(triple)
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

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace
/// root, where we run cargo) or `<root>/target`.
pub(crate) fn target_dir() -> PathBuf {
    target_dir_from(&project_root(), std::env::var_os("CARGO_TARGET_DIR"))
}

pub(crate) fn target_dir_from(root: &Path, cargo_target_dir: Option<OsString>) -> PathBuf {
    match cargo_target_dir {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Where `cargo build --release -p <package>` puts binary `name`, including
/// the triple directory when `$CARGO_BUILD_TARGET` is set.
pub(crate) fn release_binary(name: &str) -> PathBuf {
    release_binary_in(
        &target_dir(),
        std::env::var("CARGO_BUILD_TARGET").ok(),
        name,
    )
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
        let dir = target_dir_from(Path::new("/ws"), None);
        assert_eq!(
            release_binary_in(&dir, None, "broker"),
            Path::new("/ws/target/release").join(format!("broker{}", std::env::consts::EXE_SUFFIX))
        );
    }

    #[test]
    fn target_dir_honours_cargo_target_dir() {
        assert_eq!(
            target_dir_from(Path::new("/ws"), Some("/tmp/t".into())),
            Path::new("/tmp/t")
        );
        assert_eq!(
            target_dir_from(Path::new("/ws"), Some("out".into())),
            Path::new("/ws/out")
        );
        assert_eq!(
            target_dir_from(Path::new("/ws"), Some("".into())),
            Path::new("/ws/target")
        );
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
