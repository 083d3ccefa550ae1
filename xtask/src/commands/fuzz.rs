//! `cargo xtask fuzz`: write the seed corpora, build the fuzz targets of
//! `fuzz/` once (cargo-fuzz, nightly) and run each for a time; fails when a
//! target crashes, naming the reproducer. See docs/fuzz.md.

use anyhow::Result;
use xshell::Shell;

use crate::infra::fuzz;
use crate::infra::install::Mode;
use crate::model::verdict::VerdictFailed;

pub struct Options {
    /// Targets to run (empty: all).
    pub targets: Vec<String>,
    pub seconds: u64,
    /// Only list the targets.
    pub list: bool,
    /// Passed to libFuzzer after ours.
    pub extra: Vec<String>,
}

pub fn run(options: &Options) -> Result<()> {
    if options.list {
        for t in fuzz::TARGETS {
            println!("{t}");
        }
        return Ok(());
    }
    for t in &options.targets {
        fuzz::check_target(t)?;
    }
    let targets: Vec<&str> = if options.targets.is_empty() {
        fuzz::TARGETS.to_vec()
    } else {
        options.targets.iter().map(String::as_str).collect()
    };
    let sh = Shell::new()?;
    let root = crate::infra::cargo::project_root();
    sh.change_dir(&root);
    println!("==> tools: nightly, cargo-fuzz");
    crate::infra::install::ensure(&sh, &crate::infra::install::fuzz_tools(), Mode::Install)?;
    println!(
        "==> fuzz {} for {}s each",
        targets.join(", "),
        options.seconds
    );
    let results =
        fuzz::seed_build_run(&sh, &root, &targets, options.seconds, &options.extra, false)?;
    println!("==> fuzz summary");
    for (t, s) in &results {
        println!("    {}", s.line(t));
    }
    match fuzz::crash_report(&root, &results) {
        // A crash is a verdict (exit 1), like a failed gate.
        Some(report) => Err(VerdictFailed(report).into()),
        None => Ok(()),
    }
}
