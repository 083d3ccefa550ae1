//! `cargo xtask lint`: the CI workflows (actionlint, with shellcheck over
//! their `run:` scripts), the Dockerfiles (hadolint, rules in
//! docker/.hadolint.yaml) and the shell scripts under ci/ and docker/
//! (shellcheck). `cargo xtask ci` runs the same checks as one step.

use anyhow::Result;
use xshell::Shell;

use crate::infra::install::Mode;
use crate::infra::lint::check;

pub fn run(install: bool) -> Result<()> {
    let sh = Shell::new()?;
    let root = crate::infra::cargo::project_root();
    sh.change_dir(&root);
    let mode = if install {
        Mode::Install
    } else {
        Mode::ReportOnly
    };
    crate::infra::install::ensure(&sh, &crate::infra::install::lint_tools(), mode)?;
    check(&sh, &root)
}
