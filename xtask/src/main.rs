//! `cargo xtask`: the project's orchestrator. This file only parses flags and
//! dispatches; each command lives in `commands/`, one file per command, and
//! imports only the layers below it: `render/` and `analysis/`, then
//! `model/` and `infra/` (checked by `tests/tidy.rs`).

mod analysis;
mod commands;
mod flags;
mod flags_sweep;
mod infra;
mod model;
mod render;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::commands::{
    baseline, bench, build_all, ci, compare, docker, fuzz, gate, lint, merge, micro, report, setup,
};
use crate::flags::{Cli, Command};
use crate::model::verdict::is_verdict;

/// Exit codes: 0 pass, 1 a verdict failed (gate, regression, smoke, CI
/// step), 2 bad usage or input or anything else that went wrong (clap exits
/// 2 for usage errors by itself).
fn main() -> ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_verdict(&e) => {
            eprintln!("FAILED: {e:#}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => {
            Cli::command().print_help()?;
            Ok(())
        }
        Some(Command::Ci { no_install }) => ci::run(&ci::Options {
            install: !no_install,
        }),
        Some(Command::Bench(args)) => bench::run(&args.options()?),
        Some(Command::Micro(args)) => micro::run(&args.options()),
        Some(Command::Gate {
            report,
            profile,
            baseline,
            max_regression,
            force_machine,
            ab,
        }) => match baseline {
            None if ab => gate::run_ab(&report),
            None => gate::run(&report, profile.as_deref()),
            Some(file) => {
                // Both judgements are printed before either fails the command.
                let thresholds = profile.map(|p| gate::run(&report, Some(&p)));
                gate::run_baseline(&report, &file, max_regression, force_machine)?;
                thresholds.unwrap_or(Ok(()))
            }
        },
        Some(Command::Report { report }) => report::run(&report),
        Some(Command::Compare { a, b, out }) => compare::run(&a, &b, out.as_deref()),
        Some(Command::Baseline { report, out }) => baseline::run(&report, out.as_deref()),
        Some(Command::Merge { results, out }) => merge::run(&results, &out),
        Some(Command::BuildAll(args)) => build_all::run(&args.options()),
        Some(Command::Setup {
            targets,
            no_install,
        }) => setup::setup(&targets, !no_install),
        Some(Command::Doctor { targets }) => setup::doctor(&targets),
        Some(Command::Lint { no_install }) => lint::run(!no_install),
        Some(Command::Fuzz {
            targets,
            seconds,
            list,
            extra,
        }) => fuzz::run(&fuzz::Options {
            targets,
            seconds,
            list,
            extra,
        }),
        Some(Command::Docker {
            platforms,
            push,
            tag,
        }) => docker::run(&docker::Options {
            platforms,
            push,
            tag,
        }),
    }
}
