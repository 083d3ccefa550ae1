//! The linters over the CI workflows (actionlint, with shellcheck over their
//! `run:` scripts), the Dockerfiles (hadolint) and the shell scripts
//! (shellcheck); `cargo xtask lint` and the `ci` step of that name run them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The files each linter gets, relative to the workspace root.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Files {
    pub workflows: Vec<PathBuf>,
    pub dockerfiles: Vec<PathBuf>,
    pub scripts: Vec<PathBuf>,
}

/// ci/*.yml, docker/Dockerfile and docker/*.Dockerfile, and the *.sh of ci/,
/// docker/ and broker/examples/secure/ (make-certs.sh, which users run).
pub fn files(root: &Path) -> Result<Files> {
    let mut files = Files::default();
    for dir in ["ci", "docker", "broker/examples/secure"] {
        let path = root.join(dir);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let rel = Path::new(dir).join(name.as_ref());
            if dir == "ci" && (name.ends_with(".yml") || name.ends_with(".yaml")) {
                files.workflows.push(rel);
            } else if name == "Dockerfile" || name.ends_with(".Dockerfile") {
                files.dockerfiles.push(rel);
            } else if name.ends_with(".sh") {
                files.scripts.push(rel);
            }
        }
    }
    if files.workflows.is_empty() || files.dockerfiles.is_empty() {
        bail!("expected workflows in ci/*.yml and docker/Dockerfile; found neither or one");
    }
    Ok(files)
}

/// Runs every linter; all of them run, and any finding fails the check.
pub fn check(sh: &Shell, root: &Path) -> Result<()> {
    let found = files(root)?;
    let (workflows, dockerfiles, scripts) = (&found.workflows, &found.dockerfiles, &found.scripts);
    let mut failed = Vec::new();
    // actionlint runs shellcheck on `run:` scripts when it is on PATH (the
    // tools step installs it), so those are checked too.
    if cmd!(sh, "actionlint -no-color {workflows...}")
        .run()
        .is_err()
    {
        failed.push("actionlint");
    } else {
        println!("    actionlint: {} workflow(s) clean", workflows.len());
    }
    if cmd!(
        sh,
        "hadolint --no-color --config docker/.hadolint.yaml {dockerfiles...}"
    )
    .run()
    .is_err()
    {
        failed.push("hadolint");
    } else {
        println!("    hadolint: {} Dockerfile(s) clean", dockerfiles.len());
    }
    if !scripts.is_empty() {
        if cmd!(sh, "shellcheck {scripts...}").run().is_err() {
            failed.push("shellcheck");
        } else {
            println!("    shellcheck: {} script(s) clean", scripts.len());
        }
    }
    if !failed.is_empty() {
        bail!("findings from {} (see above)", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_files_are_found_by_kind() {
        let f = files(&crate::infra::cargo::project_root()).unwrap();
        for w in ["ci/build-all.yml", "ci/test.yml", "ci/bench.yml"] {
            assert!(f.workflows.contains(&PathBuf::from(w)), "{w}: {f:?}");
        }
        assert!(f.dockerfiles.contains(&PathBuf::from("docker/Dockerfile")));
        assert!(f
            .dockerfiles
            .contains(&PathBuf::from("docker/loadgen.Dockerfile")));
        assert!(f
            .scripts
            .contains(&PathBuf::from("docker/build-multiarch.sh")));
        assert!(f
            .scripts
            .contains(&PathBuf::from("broker/examples/secure/make-certs.sh")));
        assert!(f.workflows.iter().all(|p| p.starts_with("ci")));
    }

    /// The scale-out worker templates are valid workloads once
    /// docker/loadgen-worker.sh has put a worker id in, and each worker gets
    /// its own topic and client ids.
    #[test]
    fn scaleout_workload_templates_parse_per_worker() {
        let dir = crate::infra::cargo::project_root().join("docker/workloads");
        let mut templates = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains("@WORKER@"),
                "{}: no @WORKER@, so workers would collide",
                path.display()
            );
            let one = loadgen::Workload::parse(&text.replace("@WORKER@", "1")).unwrap();
            let two = loadgen::Workload::parse(&text.replace("@WORKER@", "2")).unwrap();
            assert_eq!(one.name, two.name, "merge needs one workload name");
            assert_ne!(one.publisher_topic(0), two.publisher_topic(0));
            templates += 1;
        }
        assert!(templates > 0);
    }
}
