//! The base broker of an A/B run built from a git revision: a detached
//! worktree at `<target>/ab/src`, its own `CARGO_TARGET_DIR` at
//! `<target>/ab/target` (kept, so later builds are incremental), and the
//! binary kept as `<target>/ab/bin/broker-<commit>` so a revision is built once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The full commit `rev` names; bad input (exit 2) when it names none.
pub fn resolve(sh: &Shell, root: &Path, rev: &str) -> Result<String> {
    let spec = format!("{rev}^{{commit}}");
    let out = cmd!(sh, "git -C {root} rev-parse --verify --quiet {spec}")
        .ignore_status()
        .quiet()
        .output()
        .context("cannot run git")?;
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || sha.is_empty() {
        bail!(
            "--ab {rev}: not a commit of this repository; give a branch, tag or commit (`git fetch origin main` first for origin/main), or a base binary with --ab-binary PATH"
        );
    }
    Ok(sha)
}

/// Builds the broker at `rev` (release profile, as `bench` builds the
/// working tree's) unless that commit's binary is already cached; returns
/// the commit and the binary.
pub fn build_at(sh: &Shell, root: &Path, rev: &str) -> Result<(String, PathBuf)> {
    let sha = resolve(sh, root, rev)?;
    let cache = crate::infra::cargo::target_dir()?.join("ab");
    let binary = cache.join("bin").join(format!(
        "broker-{}{}",
        &sha[..12],
        std::env::consts::EXE_SUFFIX
    ));
    if binary.is_file() {
        println!(
            "==> base broker at {rev} ({}): cached {}",
            &sha[..12],
            binary.display()
        );
        return Ok((sha, binary));
    }
    let src = cache.join("src");
    if src.join(".git").exists() {
        cmd!(sh, "git -C {src} checkout --quiet --force --detach {sha}")
            .run()
            .with_context(|| format!("cannot check out {sha} in {}", src.display()))?;
    } else {
        // A worktree directory removed by hand stays registered until pruned.
        cmd!(sh, "git -C {root} worktree prune").quiet().run()?;
        cmd!(sh, "git -C {root} worktree add --detach {src} {sha}")
            .run()
            .with_context(|| format!("cannot add a worktree for {sha} at {}", src.display()))?;
    }
    let target = cache.join("target");
    println!(
        "==> build base broker at {rev} ({}, release) in {}",
        &sha[..12],
        src.display()
    );
    let cargo = crate::infra::cargo::cargo();
    let _dir = sh.push_dir(&src);
    let _env = sh.push_env("CARGO_TARGET_DIR", &target);
    cmd!(sh, "{cargo} build --release -p broker")
        .run()
        .with_context(|| format!("release build of the broker at {rev} failed"))?;
    let built = target
        .join("release")
        .join(format!("broker{}", std::env::consts::EXE_SUFFIX));
    std::fs::create_dir_all(binary.parent().expect("bin dir"))?;
    std::fs::copy(&built, &binary)
        .with_context(|| format!("cannot copy {} to {}", built.display(), binary.display()))?;
    Ok((sha, binary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_resolve_or_say_what_to_give() {
        let root = crate::infra::cargo::project_root();
        let sh = Shell::new().unwrap();
        let head = resolve(&sh, &root, "HEAD").unwrap();
        assert_eq!(head.len(), 40, "{head}");
        let err = resolve(&sh, &root, "no-such-branch-xyz").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("--ab no-such-branch-xyz: not a commit"),
            "{text}"
        );
        assert!(text.contains("--ab-binary"), "{text}");
    }
}
