//! `cargo xtask setup`: install what the chosen targets need (idempotent);
//! `cargo xtask doctor`: say, per target, what this machine has for it.

use std::fmt::Write as _;

use anyhow::Result;
use xshell::Shell;

use crate::infra::host::HostFacts;
use crate::infra::install::Mode;
use crate::infra::targets;
use crate::infra::targets::RunnerKind;
use crate::infra::targets::Target;

pub fn setup(names: &[String], install: bool) -> Result<()> {
    let root = crate::infra::cargo::project_root();
    let selected = targets::select(targets::load_all(&root)?, names)?;
    let sh = Shell::new()?;
    println!(
        "==> setup for {} targets: rust-std, linkers, runners, zig; nightly and cargo-fuzz",
        selected.len()
    );
    let mut tools = crate::infra::install::target_tools(&selected, true);
    // `cargo xtask fuzz` and CI's "fuzz (short)" step.
    tools.extend(crate::infra::install::fuzz_tools());
    let mode = if install {
        Mode::Install
    } else {
        Mode::ReportOnly
    };
    let outcome = crate::infra::install::ensure(&sh, &tools, mode)?;
    for (triple, why) in &outcome.unavailable_std {
        println!("    {triple}: unavailable here: {why}");
    }
    doctor_for(&selected)
}

pub fn doctor(names: &[String]) -> Result<()> {
    let root = crate::infra::cargo::project_root();
    let selected = targets::select(targets::load_all(&root)?, names)?;
    doctor_for(&selected)
}

fn doctor_for(selected: &[Target]) -> Result<()> {
    let host = HostFacts::probe(selected);
    println!("==> doctor (host {})", host.host_triple);
    println!("{}", doctor_table(selected, &host));
    println!(
        "cross: {}",
        match (&host.container_engine, host.cross) {
            (Ok(engine), true) => format!("usable ({engine})"),
            (Ok(engine), false) => format!("{engine} answers, but `cross` is not installed"),
            (Err(why), _) => format!("unusable: {why}"),
        }
    );
    println!(
        "zigbuild: {}",
        match &host.zigbuild {
            Ok(v) => format!("usable ({v})"),
            Err(why) => format!("unusable: {why}"),
        }
    );
    // The figure a profile's `cpu_reference_us_per_round_trip` is set from.
    let bursts = crate::infra::cpu_reference::measure_or_warn("for doctor");
    if let Some(r) = crate::infra::cpu_reference::CpuReference::of(
        bursts,
        crate::infra::cpu_reference::ROUND_TRIPS,
    ) {
        println!(
            "CPU reference: {} CPU per 64-byte loopback round trip (median of {} bursts; \
             profiles: cpu_reference_us_per_round_trip)",
            crate::model::units::cpu_micros(r.us_per_round_trip),
            r.bursts.len()
        );
    }
    Ok(())
}

/// `target | std | linker | runner | backend`, aligned for a terminal.
pub fn doctor_table(selected: &[Target], host: &HostFacts) -> String {
    let mut rows = vec![[
        "target".to_string(),
        "std".to_string(),
        "linker".to_string(),
        "runner".to_string(),
        "backend".to_string(),
    ]];
    let mut notes = Vec::new();
    for t in selected {
        let std = if host.std_installed(t.triple()) {
            "yes"
        } else {
            "MISSING"
        };
        let linker = match &t.def.linker {
            None if t.def.backends == [targets::Backend::Zigbuild] => "zig (zigbuild)".to_string(),
            None => "host cc".to_string(),
            Some(l) if host.has(&l.command) => format!("{} (found)", l.command),
            Some(l) => format!("{} MISSING", l.command),
        };
        let runner = match t.def.runner.kind {
            RunnerKind::Native => "native".to_string(),
            RunnerKind::None => "none (build only)".to_string(),
            _ => {
                let command = t.def.runner.command.as_deref().unwrap_or("?");
                match crate::infra::host::runner_ready(t, host) {
                    Ok(()) => format!("{} (found)", t.runner_name()),
                    Err(why) if host.has(command) => {
                        notes.push(format!("{}: runner unusable: {why}", t.triple()));
                        format!("{command} UNUSABLE")
                    }
                    Err(_) => format!("{command} MISSING"),
                }
            }
        };
        let backend = match crate::infra::host::choose_backend(t, None, host) {
            Ok(b) => b.as_str().to_string(),
            Err(why) => {
                notes.push(format!("{}: unavailable: {why}", t.triple()));
                "unavailable".to_string()
            }
        };
        rows.push([t.triple().to_string(), std.into(), linker, runner, backend]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for note in notes {
        let _ = writeln!(out, "  {note}");
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::infra::host::test_support::facts;
    use crate::infra::targets::test_support::{target, AARCH64};

    #[test]
    fn doctor_says_what_is_missing_and_what_would_build() {
        let t = target("aarch64-unknown-linux-gnu", AARCH64);
        let ready = facts(
            &["aarch64-unknown-linux-gnu"],
            &["aarch64-linux-gnu-gcc", "qemu-aarch64-static"],
            false,
        );
        let table = doctor_table(std::slice::from_ref(&t), &ready);
        let row = table.lines().nth(1).unwrap();
        assert!(row.contains("yes"), "{row}");
        assert!(row.contains("aarch64-linux-gnu-gcc (found)"), "{row}");
        assert!(row.contains("qemu-aarch64 (found)"), "{row}");
        assert!(row.trim_end().ends_with("cargo"), "{row}");

        let bare = facts(&[], &[], false);
        let table = doctor_table(std::slice::from_ref(&t), &bare);
        assert!(table.contains("MISSING"), "{table}");
        assert!(table.contains("unavailable"), "{table}");
        assert!(
            table.contains("rustup target add aarch64-unknown-linux-gnu"),
            "{table}"
        );
    }

    #[test]
    fn target_tools_cover_std_linker_runner_and_zig() {
        let t = target("aarch64-unknown-linux-gnu", AARCH64);
        let tools = crate::infra::install::target_tools(std::slice::from_ref(&t), true);
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        assert!(
            names.contains(&"rust-std (aarch64-unknown-linux-gnu)"),
            "{names:?}"
        );
        assert!(names.contains(&"aarch64-linux-gnu-gcc"), "{names:?}");
        assert!(names.contains(&"qemu-aarch64-static"), "{names:?}");
        assert!(
            names.contains(&"cargo-zigbuild") && names.contains(&"zig"),
            "{names:?}"
        );
        let plan = crate::infra::install::Plan::new(&tools, |_| false);
        assert_eq!(plan.rustup_targets, ["aarch64-unknown-linux-gnu"]);
        assert_eq!(
            plan.apt_packages,
            ["gcc-aarch64-linux-gnu", "qemu-user-static"]
        );
        assert_eq!(plan.pip_packages, ["ziglang"]);
        assert_eq!(plan.cargo_installs, ["cargo-zigbuild"]);
        let commands = plan.commands(false);
        assert!(commands.contains(&"rustup target add aarch64-unknown-linux-gnu".to_string()));
        assert!(commands.contains(&"cargo install --locked cargo-zigbuild".to_string()));
        // CI needs no zig.
        let ci = crate::infra::install::ci_tools(std::slice::from_ref(&t));
        assert!(!ci.iter().any(|t| t.name == "cargo-zigbuild"));
        assert!(ci.iter().any(|t| t.name == "qemu-aarch64-static"));
    }
}
