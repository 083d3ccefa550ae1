//! Target definitions (`targets/<triple>.toml`), what this machine has for
//! them, and which build backend (`cross`, `cargo` with a system linker,
//! `zigbuild`) each one gets.
//!
//! Loading is pure (unit-tested without a machine); what this machine has
//! for them and the backend choice are in `infra::host`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::targets::test_support::{err, target, AARCH64};

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
