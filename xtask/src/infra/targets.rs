//! Target definitions (`targets/<triple>.toml`), what this machine has for
//! them, and which build backend (`cross`, `cargo` with a system linker,
//! `zigbuild`) each one gets.
//!
//! Loading and choosing are pure (unit-tested without a machine); probing
//! the machine happens once, in [`HostFacts::probe`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::infra::tools::{find_on_path, output, output_within};

/// `targets/<triple>.toml`, which must be runnable here.
pub(crate) fn load_target(root: &Path, triple: &str) -> Result<Target> {
    let all = load_all(root)?;
    let target = select(all, &[triple.to_string()])?.remove(0);
    if target.build_only() {
        bail!(
            "--target {triple}: build only ([runner] kind = \"none\" in {}); nothing on this host can run it",
            target.file.display()
        );
    }
    let host = HostFacts::probe(std::slice::from_ref(&target));
    if let Err(why) = runner_ready(&target, &host) {
        bail!(
            "--target {triple}: cannot run it here: {why} (cargo xtask setup --targets {triple})"
        );
    }
    Ok(target)
}

/// Platform class of a target; names the threshold profile it is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    HighPerf,
    Embedded,
    Generic,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::HighPerf => "high_perf",
            Class::Embedded => "embedded",
            Class::Generic => "generic",
        }
    }

    /// The threshold profile in `targets/profiles/` (generic: none of its own).
    pub fn profile(self) -> Option<&'static str> {
        match self {
            Class::HighPerf => Some("high_perf"),
            Class::Embedded => Some("embedded"),
            Class::Generic => None,
        }
    }
}

/// A way to build for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// `cross build`: a container with the target's toolchain (needs an engine).
    Cross,
    /// `cargo build --target` with the system cross linker.
    Cargo,
    /// `cargo zigbuild`: zig as linker (macOS, pinned glibc, odd ABIs).
    Zigbuild,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cross => "cross",
            Backend::Cargo => "cargo",
            Backend::Zigbuild => "zigbuild",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a built artifact runs on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerKind {
    /// Directly: the host can execute it.
    Native,
    /// qemu user-mode emulation (`qemu-<arch>-static`).
    Qemu,
    /// wine: Windows binaries on Linux (a compatibility layer).
    Wine,
    /// Nothing here can run it: build only.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linker {
    /// The linker cargo gets (`CARGO_TARGET_<TRIPLE>_LINKER`).
    pub command: String,
    /// Debian packages that provide it (and the target's libc).
    #[serde(default)]
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runner {
    pub kind: RunnerKind,
    /// The emulator or wine executable (qemu and wine runners).
    pub command: Option<String>,
    /// Arguments before the binary, e.g. `-L <sysroot>` for dynamic glibc targets.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub packages: Vec<String>,
}

/// One `targets/<triple>.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    pub triple: String,
    #[serde(default)]
    pub description: String,
    pub class: Class,
    /// Cargo profile: `release`, or `embedded` (size over speed).
    pub profile: String,
    /// Backends in order of preference for `--backend auto`.
    pub backends: Vec<Backend>,
    /// Target name for cargo-zigbuild, e.g. with a glibc version suffix.
    pub zig_target: Option<String>,
    pub linker: Option<Linker>,
    pub runner: Runner,
}

/// A validated target definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub def: TargetFile,
    pub file: PathBuf,
}

/// The cargo profiles the workspace defines (Cargo.toml).
const PROFILES: [&str; 3] = ["release", "embedded", "dev"];

impl Target {
    pub fn triple(&self) -> &str {
        &self.def.triple
    }

    pub fn build_only(&self) -> bool {
        self.def.runner.kind == RunnerKind::None
    }

    /// `native`, `qemu-aarch64`, `wine`, `none`: what reports call the runner.
    pub fn runner_name(&self) -> String {
        match self.def.runner.kind {
            RunnerKind::Native => "native".into(),
            RunnerKind::None => "none".into(),
            RunnerKind::Wine => "wine".into(),
            RunnerKind::Qemu => {
                let command = self.def.runner.command.as_deref().unwrap_or("qemu");
                let name = Path::new(command)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                name.strip_suffix("-static").unwrap_or(&name).to_string()
            }
        }
    }

    /// Whether results from this runner are not comparable with native ones.
    pub fn emulated(&self) -> bool {
        matches!(self.def.runner.kind, RunnerKind::Qemu | RunnerKind::Wine)
    }

    /// The executable's file name (`broker`, `broker.exe`).
    pub fn exe_name(&self, name: &str) -> String {
        if self.triple().contains("windows") {
            format!("{name}.exe")
        } else {
            name.to_string()
        }
    }

    /// The command that runs `binary` through this target's runner (without
    /// the broker's own arguments); None for build-only targets.
    pub fn run_command(&self, binary: &Path) -> Option<Command> {
        let runner = &self.def.runner;
        match runner.kind {
            RunnerKind::None => None,
            RunnerKind::Native => Some(Command::new(binary)),
            RunnerKind::Qemu | RunnerKind::Wine => {
                let mut command = Command::new(runner.command.as_deref()?);
                command.args(&runner.args).arg(binary);
                if runner.kind == RunnerKind::Wine {
                    // Wine's own chatter would drown the broker's log.
                    command.env("WINEDEBUG", "-all");
                }
                Some(command)
            }
        }
    }

    /// The name cargo-zigbuild is given for `--target`.
    pub fn zig_target(&self) -> &str {
        self.def.zig_target.as_deref().unwrap_or(&self.def.triple)
    }
}

/// Reads and validates one target file; errors name the file, the key and the fix.
pub fn load_file(path: &Path) -> Result<Target> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Target> {
    let def: TargetFile = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            path.display(),
            loadgen::spec::describe_toml_error(text, &e)
        )
    })?;
    let file = path.display();
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if stem.as_deref() != Some(def.triple.as_str()) {
        bail!(
            "{file}: `triple = \"{}\"` does not match the file name; name the file {}.toml",
            def.triple,
            def.triple
        );
    }
    if def.triple.split('-').count() < 3 {
        bail!(
            "{file}: `triple = \"{}\"` is not a target triple (arch-vendor-os[-env])",
            def.triple
        );
    }
    if !PROFILES.contains(&def.profile.as_str()) {
        bail!(
            "{file}: `profile = \"{}\"` is not a cargo profile of this workspace; use one of: {}",
            def.profile,
            PROFILES.join(", ")
        );
    }
    if def.backends.is_empty() {
        bail!(
            "{file}: `backends` is empty; list at least one of \"cross\", \"cargo\", \"zigbuild\""
        );
    }
    let unique: BTreeSet<_> = def.backends.iter().collect();
    if unique.len() != def.backends.len() {
        bail!("{file}: `backends` lists a backend twice");
    }
    if def.backends.contains(&Backend::Cargo)
        && def.linker.is_none()
        && def.runner.kind != RunnerKind::Native
    {
        bail!(
            "{file}: `backends` includes \"cargo\" but there is no [linker] table; add\n    \
             [linker]\n    command = \"<cross gcc, e.g. aarch64-linux-gnu-gcc>\"\n    \
             packages = [\"<Debian package providing it>\"]\n\
             or remove \"cargo\" from `backends`"
        );
    }
    if let Some(linker) = &def.linker {
        if linker.command.trim().is_empty() {
            bail!("{file}: [linker] `command` is empty; name the linker executable");
        }
    }
    let runner = &def.runner;
    match runner.kind {
        RunnerKind::Qemu | RunnerKind::Wine if runner.command.is_none() => bail!(
            "{file}: [runner] kind = \"{}\" needs `command` (e.g. \"{}\")",
            if runner.kind == RunnerKind::Qemu {
                "qemu"
            } else {
                "wine"
            },
            if runner.kind == RunnerKind::Qemu {
                "qemu-aarch64-static"
            } else {
                "wine"
            }
        ),
        RunnerKind::Native | RunnerKind::None
            if runner.command.is_some() || !runner.args.is_empty() =>
        {
            bail!(
                "{file}: [runner] kind = \"{}\" takes no `command` or `args`",
                if runner.kind == RunnerKind::Native {
                    "native"
                } else {
                    "none"
                }
            )
        }
        _ => {}
    }
    Ok(Target {
        def,
        file: path.to_path_buf(),
    })
}

pub fn targets_dir(root: &Path) -> PathBuf {
    root.join("targets")
}

/// Every `targets/*.toml` (not the profiles), sorted by triple.
pub fn load_all(root: &Path) -> Result<Vec<Target>> {
    let dir = targets_dir(root);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load_file(p)).collect()
}

/// The targets named in `--targets` (comma-separated triples, or `all`).
pub fn select(all: Vec<Target>, names: &[String]) -> Result<Vec<Target>> {
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return Ok(all);
    }
    let mut chosen = Vec::new();
    for name in names {
        match all.iter().find(|t| t.triple() == name) {
            Some(t) => {
                if !chosen.iter().any(|c: &Target| c.triple() == name) {
                    chosen.push(t.clone());
                }
            }
            None => bail!(
                "unknown target `{name}`; defined in targets/: {} (add targets/{name}.toml to define it)",
                all.iter().map(Target::triple).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    Ok(chosen)
}

/// What this machine offers, probed once.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub host_triple: String,
    /// Triples whose rust-std is in the active toolchain's sysroot.
    pub installed_std: BTreeSet<String>,
    /// `Ok(engine)` when `docker info`/`podman info` answered, else why not.
    pub container_engine: std::result::Result<String, String>,
    /// `cross` on PATH.
    pub cross: bool,
    /// `Ok(version)` when `cargo zigbuild` and zig are usable, else why not.
    pub zigbuild: std::result::Result<String, String>,
    /// Executables found on PATH, from the ones the targets name.
    pub executables: BTreeSet<String>,
    /// `wine --version` (e.g. `wine-8.0 (Debian 8.0~repack-4)`), when a
    /// target runs under wine and wine is here.
    pub wine_version: Option<String>,
}

impl HostFacts {
    pub fn probe(targets: &[Target]) -> HostFacts {
        let path = std::env::var_os("PATH");
        let on_path = |name: &str| find_on_path(name, path.as_deref()).is_some();
        let mut executables = BTreeSet::new();
        for t in targets {
            let names = t
                .def
                .linker
                .iter()
                .map(|l| l.command.as_str())
                .chain(t.def.runner.command.as_deref());
            for name in names {
                if on_path(name) {
                    executables.insert(name.to_string());
                }
            }
        }
        let rustc_vv = output("rustc", &["-vV"]).unwrap_or_default();
        let host_triple = crate::infra::environment::parse_rustc_vv(&rustc_vv)
            .0
            .unwrap_or_default();
        let wine_version = targets
            .iter()
            .filter(|t| t.def.runner.kind == RunnerKind::Wine)
            .filter_map(|t| t.def.runner.command.as_deref())
            .find(|c| executables.contains(*c))
            .and_then(|c| output(c, &["--version"]))
            .map(|v| v.trim().to_string());
        HostFacts {
            wine_version,
            installed_std: installed_std(),
            container_engine: probe_container_engine(&on_path),
            cross: on_path("cross"),
            zigbuild: probe_zigbuild(&on_path),
            executables,
            host_triple,
        }
    }

    pub fn has(&self, executable: &str) -> bool {
        self.executables.contains(executable)
    }

    pub fn std_installed(&self, triple: &str) -> bool {
        self.installed_std.contains(triple)
    }
}

/// rust-std components present in the active toolchain's sysroot.
pub fn installed_std() -> BTreeSet<String> {
    let Some(sysroot) = output("rustc", &["--print", "sysroot"]) else {
        return BTreeSet::new();
    };
    let rustlib = Path::new(sysroot.trim()).join("lib/rustlib");
    std::fs::read_dir(rustlib)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("lib").is_dir())
                .filter(|e| {
                    // rust-std ships libstd-*.rlib; the host dir always has it.
                    std::fs::read_dir(e.path().join("lib"))
                        .map(|files| {
                            files.filter_map(|f| f.ok()).any(|f| {
                                let name = f.file_name();
                                let name = name.to_string_lossy();
                                name.starts_with("libstd-") && name.ends_with(".rlib")
                            })
                        })
                        .unwrap_or(false)
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn probe_container_engine(on_path: &dyn Fn(&str) -> bool) -> std::result::Result<String, String> {
    let mut reasons = Vec::new();
    for engine in ["docker", "podman"] {
        if !on_path(engine) {
            continue;
        }
        match output_within(engine, &["info"], Duration::from_secs(10)) {
            Ok(_) => return Ok(engine.to_string()),
            Err(why) => reasons.push(format!(
                "{engine} client found but no engine answers ({why})"
            )),
        }
    }
    if reasons.is_empty() {
        Err("no docker or podman on PATH".into())
    } else {
        Err(reasons.join("; "))
    }
}

fn probe_zigbuild(on_path: &dyn Fn(&str) -> bool) -> std::result::Result<String, String> {
    // `cargo zigbuild --version` is not a thing; the binary answers.
    let version = output_within("cargo-zigbuild", &["--version"], Duration::from_secs(20))
        .map_err(|_| "cargo-zigbuild not installed (cargo install cargo-zigbuild)".to_string())?;
    // cargo-zigbuild finds zig on PATH or as the `ziglang` Python package.
    let zig = if on_path("zig") {
        output("zig", &["version"])
    } else {
        output("python3", &["-m", "ziglang", "version"])
    };
    match zig {
        Some(v) => Ok(format!("{} (zig {})", version.trim(), v.trim())),
        None => Err("cargo-zigbuild found but no zig (pip install ziglang)".into()),
    }
}

/// The backend a target would be built with, or why it cannot be built here.
pub fn choose_backend(
    target: &Target,
    requested: Option<Backend>,
    host: &HostFacts,
) -> std::result::Result<Backend, String> {
    let triple = target.triple();
    if !host.std_installed(triple) {
        return Err(format!(
            "rust-std for {triple} is not installed in this toolchain (`rustup target add {triple}`; \
             cargo xtask setup tries it and says if rustup has none)"
        ));
    }
    let candidates: Vec<Backend> = match requested {
        Some(b) if !target.def.backends.contains(&b) => {
            return Err(format!(
                "backend {b} is not listed for {triple} in {} (backends = {:?})",
                target.file.display(),
                target
                    .def
                    .backends
                    .iter()
                    .map(|b| b.as_str())
                    .collect::<Vec<_>>()
            ))
        }
        Some(b) => vec![b],
        None => target.def.backends.clone(),
    };
    let mut reasons = Vec::new();
    for backend in candidates {
        match backend_ready(target, backend, host) {
            Ok(()) => return Ok(backend),
            Err(why) => reasons.push(format!("{backend}: {why}")),
        }
    }
    Err(reasons.join("; "))
}

fn backend_ready(
    target: &Target,
    backend: Backend,
    host: &HostFacts,
) -> std::result::Result<(), String> {
    match backend {
        Backend::Cross => {
            let engine = host.container_engine.as_ref().map_err(Clone::clone)?;
            if host.cross {
                Ok(())
            } else {
                Err(format!(
                    "{engine} answers but `cross` is not installed (cargo install cross)"
                ))
            }
        }
        Backend::Cargo => match &target.def.linker {
            None if target.def.runner.kind == RunnerKind::Native => Ok(()),
            None => Err("no [linker] in the target file".into()),
            Some(linker) if host.has(&linker.command) => Ok(()),
            Some(linker) => Err(format!(
                "linker {} not found (Debian: {})",
                linker.command,
                linker.packages.join(" ")
            )),
        },
        Backend::Zigbuild => host.zigbuild.as_ref().map(|_| ()).map_err(Clone::clone),
    }
}

/// Whether the runner's executable is here (native: always; none: never).
pub fn runner_ready(target: &Target, host: &HostFacts) -> std::result::Result<(), String> {
    let runner = &target.def.runner;
    match runner.kind {
        RunnerKind::Native => Ok(()),
        RunnerKind::None => Err("build only: nothing on this host can run it".into()),
        RunnerKind::Qemu | RunnerKind::Wine => {
            let command = runner.command.as_deref().unwrap_or_default();
            if host.has(command) {
                if runner.kind == RunnerKind::Wine {
                    return wine_can_run_rust(host.wine_version.as_deref());
                }
                Ok(())
            } else {
                Err(format!(
                    "{command} not found (Debian: {})",
                    runner.packages.join(" ")
                ))
            }
        }
    }
}

/// Rust ≥ 1.78's Windows std imports `ProcessPrng` from
/// bcryptprimitives.dll, which wine provides from 8.13 on: older wine cannot
/// even load the binary (exit code 53).
fn wine_can_run_rust(version: Option<&str>) -> std::result::Result<(), String> {
    let Some(version) = version else {
        return Err("wine found but `wine --version` did not answer".into());
    };
    let number = version
        .trim_start_matches("wine-")
        .split([' ', '-', '~'])
        .next()
        .unwrap_or("");
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) >= (8, 13) => Ok(()),
        (Some(_), Some(_)) => Err(format!(
            "{version} cannot load Rust Windows binaries: Rust's std (1.78+) imports ProcessPrng \
             from bcryptprimitives.dll, which wine has from 8.13 on (Debian 12 ships wine 8.0; \
             cross's Windows image has wine 9)"
        )),
        _ => Err(format!("cannot read wine's version from `{version}`")),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Fixtures other modules' tests build on.

    use super::*;

    pub(crate) const AARCH64: &str = r#"
triple = "aarch64-unknown-linux-gnu"
class = "high_perf"
profile = "release"
backends = ["cross", "cargo", "zigbuild"]
[linker]
command = "aarch64-linux-gnu-gcc"
packages = ["gcc-aarch64-linux-gnu"]
[runner]
kind = "qemu"
command = "qemu-aarch64-static"
args = ["-L", "/usr/aarch64-linux-gnu"]
packages = ["qemu-user-static"]
"#;

    pub(crate) fn target(triple: &str, text: &str) -> Target {
        parse(Path::new(&format!("targets/{triple}.toml")), text).unwrap()
    }

    pub(crate) fn err(triple: &str, text: &str) -> String {
        format!(
            "{:#}",
            parse(Path::new(&format!("targets/{triple}.toml")), text).unwrap_err()
        )
    }

    pub(crate) fn facts(std: &[&str], executables: &[&str], engine: bool) -> HostFacts {
        HostFacts {
            host_triple: "x86_64-unknown-linux-gnu".into(),
            installed_std: std.iter().map(|s| s.to_string()).collect(),
            container_engine: if engine {
                Ok("docker".into())
            } else {
                Err("docker client found but no engine answers".into())
            },
            cross: engine,
            zigbuild: Ok("cargo-zigbuild 0.24 (zig 0.15)".into()),
            executables: executables.iter().map(|s| s.to_string()).collect(),
            wine_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::targets::test_support::{err, facts, target, AARCH64};

    #[test]
    fn wine_older_than_8_13_cannot_run_rust_binaries() {
        let why = wine_can_run_rust(Some("wine-8.0 (Debian 8.0~repack-4)")).unwrap_err();
        assert!(
            why.contains("bcryptprimitives") && why.contains("8.13"),
            "{why}"
        );
        assert!(wine_can_run_rust(Some("wine-8.13")).is_ok());
        assert!(wine_can_run_rust(Some("wine-9.0 (Ubuntu 9.0~repack-4build3)")).is_ok());
        assert!(wine_can_run_rust(Some("wine-10.0-rc1")).is_ok());
        assert!(wine_can_run_rust(Some("nonsense")).is_err());
        assert!(wine_can_run_rust(None).is_err());
    }

    #[test]
    fn every_committed_target_file_is_valid() {
        let all = load_all(&crate::infra::cargo::project_root()).unwrap();
        let triples: Vec<&str> = all.iter().map(Target::triple).collect();
        for required in [
            "x86_64-unknown-linux-gnu",
            "x86_64-unknown-linux-musl",
            "aarch64-unknown-linux-gnu",
            "aarch64-unknown-linux-musl",
            "armv7-unknown-linux-gnueabihf",
            "arm-unknown-linux-musleabi",
            "riscv64gc-unknown-linux-gnu",
            "x86_64-pc-windows-gnu",
            "aarch64-apple-darwin",
            "x86_64-apple-darwin",
        ] {
            assert!(
                triples.contains(&required),
                "missing targets/{required}.toml"
            );
        }
        for t in &all {
            // DESIGN.md: 32-bit ARM and RISC-V are embedded and get the size profile.
            if t.def.class == Class::Embedded {
                assert_eq!(t.def.profile, "embedded", "{}", t.triple());
            }
            if t.triple().contains("apple") {
                assert!(t.build_only(), "{}", t.triple());
                assert_eq!(t.def.backends, [Backend::Zigbuild]);
            }
        }
    }

    #[test]
    fn a_good_file_parses_into_its_runner_command() {
        let t = target("aarch64-unknown-linux-gnu", AARCH64);
        assert_eq!(t.runner_name(), "qemu-aarch64");
        assert!(t.emulated() && !t.build_only());
        let cmd = t.run_command(Path::new("/d/broker")).unwrap();
        assert_eq!(cmd.get_program(), "qemu-aarch64-static");
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["-L", "/usr/aarch64-linux-gnu", "/d/broker"]);
        assert_eq!(t.zig_target(), "aarch64-unknown-linux-gnu");
        assert_eq!(t.exe_name("broker"), "broker");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = AARCH64.replace(
            "profile = \"release\"",
            "profile = \"release\"\nlinkr = \"x\"",
        );
        let e = err("aarch64-unknown-linux-gnu", &text);
        assert!(e.contains("targets/aarch64-unknown-linux-gnu.toml"), "{e}");
        assert!(e.contains("linkr"), "{e}");
        assert!(e.contains("line 5"), "line number in: {e}");
    }

    #[test]
    fn unknown_class_lists_the_classes() {
        let text = AARCH64.replace("\"high_perf\"", "\"server\"");
        let e = err("aarch64-unknown-linux-gnu", &text);
        assert!(e.contains("server"), "{e}");
        assert!(
            e.contains("high_perf") && e.contains("embedded") && e.contains("generic"),
            "{e}"
        );
    }

    #[test]
    fn cargo_backend_without_linker_says_how_to_fix_it() {
        let text = AARCH64.replace(
            "[linker]\ncommand = \"aarch64-linux-gnu-gcc\"\npackages = [\"gcc-aarch64-linux-gnu\"]\n",
            "",
        );
        let e = err("aarch64-unknown-linux-gnu", &text);
        assert!(e.contains("no [linker] table"), "{e}");
        assert!(e.contains("remove \"cargo\""), "{e}");
        // Without cargo among the backends, no linker is needed.
        let text = text.replace("[\"cross\", \"cargo\", \"zigbuild\"]", "[\"zigbuild\"]");
        parse(Path::new("targets/aarch64-unknown-linux-gnu.toml"), &text).unwrap();
    }

    #[test]
    fn other_mistakes_are_caught() {
        let e = err("aarch64-unknown-linux-musl", AARCH64);
        assert!(e.contains("does not match the file name"), "{e}");
        let e = err(
            "aarch64-unknown-linux-gnu",
            &AARCH64.replace("profile = \"release\"", "profile = \"fast\""),
        );
        assert!(e.contains("release, embedded"), "{e}");
        let e = err(
            "aarch64-unknown-linux-gnu",
            &AARCH64.replace("command = \"qemu-aarch64-static\"\n", ""),
        );
        assert!(e.contains("needs `command`"), "{e}");
        let e = err(
            "aarch64-unknown-linux-gnu",
            &AARCH64.replace("\"cross\", \"cargo\", \"zigbuild\"", "\"cargo\", \"cargo\""),
        );
        assert!(e.contains("twice"), "{e}");
        let e = err(
            "aarch64-unknown-linux-gnu",
            &AARCH64.replace("\"cross\", \"cargo\", \"zigbuild\"", "\"docker\""),
        );
        assert!(e.contains("docker") && e.contains("zigbuild"), "{e}");
    }

    #[test]
    fn auto_picks_cross_only_when_an_engine_answers() {
        let t = target("aarch64-unknown-linux-gnu", AARCH64);
        let std = ["aarch64-unknown-linux-gnu"];
        let gcc = ["aarch64-linux-gnu-gcc"];
        assert_eq!(
            choose_backend(&t, None, &facts(&std, &gcc, true)),
            Ok(Backend::Cross)
        );
        assert_eq!(
            choose_backend(&t, None, &facts(&std, &gcc, false)),
            Ok(Backend::Cargo)
        );
        // No engine, no linker: zig.
        assert_eq!(
            choose_backend(&t, None, &facts(&std, &[], false)),
            Ok(Backend::Zigbuild)
        );
        // Asked for cross without an engine: unavailable, saying why.
        let why = choose_backend(&t, Some(Backend::Cross), &facts(&std, &gcc, false)).unwrap_err();
        assert!(why.contains("no engine answers"), "{why}");
    }

    #[test]
    fn unavailable_reasons_cover_every_backend() {
        let t = target("aarch64-unknown-linux-gnu", AARCH64);
        let why = choose_backend(&t, None, &facts(&[], &[], true)).unwrap_err();
        assert!(
            why.contains("rust-std for aarch64-unknown-linux-gnu is not installed"),
            "{why}"
        );
        let mut host = facts(&["aarch64-unknown-linux-gnu"], &[], false);
        host.zigbuild = Err("cargo-zigbuild not installed".into());
        let why = choose_backend(&t, None, &host).unwrap_err();
        assert!(why.contains("cross: docker client found"), "{why}");
        assert!(
            why.contains(
                "cargo: linker aarch64-linux-gnu-gcc not found (Debian: gcc-aarch64-linux-gnu)"
            ),
            "{why}"
        );
        assert!(
            why.contains("zigbuild: cargo-zigbuild not installed"),
            "{why}"
        );
    }

    #[test]
    fn backend_not_listed_for_the_target_is_refused() {
        let all = load_all(&crate::infra::cargo::project_root()).unwrap();
        let mac = all
            .iter()
            .find(|t| t.triple() == "aarch64-apple-darwin")
            .unwrap();
        let host = facts(&["aarch64-apple-darwin"], &[], true);
        assert_eq!(choose_backend(mac, None, &host), Ok(Backend::Zigbuild));
        let why = choose_backend(mac, Some(Backend::Cargo), &host).unwrap_err();
        assert!(why.contains("not listed"), "{why}");
    }

    #[test]
    fn selection_by_name() {
        let all = load_all(&crate::infra::cargo::project_root()).unwrap();
        let n = all.len();
        assert_eq!(select(all.clone(), &[]).unwrap().len(), n);
        assert_eq!(select(all.clone(), &["all".into()]).unwrap().len(), n);
        let two = select(
            all.clone(),
            &[
                "armv7-unknown-linux-gnueabihf".into(),
                "aarch64-unknown-linux-musl".into(),
            ],
        )
        .unwrap();
        assert_eq!(two[0].triple(), "armv7-unknown-linux-gnueabihf");
        assert_eq!(two.len(), 2);
        let e = select(all, &["mips-unknown-linux-gnu".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown target `mips-unknown-linux-gnu`") && e.contains("armv7"),
            "{e}"
        );
    }

    #[test]
    fn cross_toml_has_an_image_for_every_cross_target() {
        let root = crate::infra::cargo::project_root();
        let cross: toml::Table =
            toml::from_str(&std::fs::read_to_string(root.join("Cross.toml")).unwrap()).unwrap();
        let sections = cross.get("target").and_then(|t| t.as_table()).unwrap();
        for t in load_all(&root).unwrap() {
            let listed = t.def.backends.contains(&Backend::Cross);
            let image = sections
                .get(t.triple())
                .and_then(|s| s.get("image"))
                .and_then(|i| i.as_str());
            assert_eq!(
                listed,
                image.is_some(),
                "{}: cross backend vs Cross.toml",
                t.triple()
            );
        }
    }

    #[test]
    fn cargo_config_agrees_with_the_target_files() {
        // .cargo/config.toml carries linker and runner for plain `cargo run
        // --target`; it must say what targets/*.toml say.
        let root = crate::infra::cargo::project_root();
        let config: toml::Table =
            toml::from_str(&std::fs::read_to_string(root.join(".cargo/config.toml")).unwrap())
                .unwrap();
        let sections = config.get("target").and_then(|t| t.as_table()).unwrap();
        for t in load_all(&root).unwrap() {
            let section = sections.get(t.triple()).and_then(|s| s.as_table());
            if let (Some(linker), true) = (&t.def.linker, t.def.backends.contains(&Backend::Cargo))
            {
                let section = section.unwrap_or_else(|| {
                    panic!("[target.{}] missing in .cargo/config.toml", t.triple())
                });
                assert_eq!(
                    section.get("linker").and_then(|l| l.as_str()),
                    Some(linker.command.as_str()),
                    "{}",
                    t.triple()
                );
            }
            if matches!(t.def.runner.kind, RunnerKind::Qemu | RunnerKind::Wine) {
                let runner: Vec<String> = section
                    .and_then(|s| s.get("runner"))
                    .and_then(|r| r.as_array())
                    .unwrap_or_else(|| panic!("[target.{}] runner missing", t.triple()))
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                let mut expected = vec![t.def.runner.command.clone().unwrap()];
                expected.extend(t.def.runner.args.iter().cloned());
                assert_eq!(runner, expected, "{}", t.triple());
            }
        }
    }
}
