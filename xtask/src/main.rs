//! `cargo xtask`: the project's orchestrator. This file only parses flags and
//! dispatches; each command lives in its own module with a `run` function.

mod ci;
mod setup_tools;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, test and benchmark the broker workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// What CI runs: install missing tools, rustfmt check, clippy, release
    /// build of the broker, workspace tests (interop tests required)
    Ci {
        /// Install nothing; report missing tools and carry on
        #[arg(long)]
        no_install: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => {
            Cli::command().print_help()?;
            Ok(())
        }
        Some(Command::Ci { no_install }) => ci::run(&ci::Options {
            install: !no_install,
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ci_flags_parse() {
        let cli = Cli::try_parse_from(["xtask", "ci", "--no-install"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Ci { no_install: true })
        ));
        let cli = Cli::try_parse_from(["xtask"]).unwrap();
        assert!(cli.command.is_none());
        assert!(Cli::try_parse_from(["xtask", "ci", "--bogus"]).is_err());
    }

    #[test]
    fn project_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(project_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
