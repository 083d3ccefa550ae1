//! What this machine has for the targets (std, linkers, runners, a
//! container engine, zig) and which build backend each target gets here.
//! Probing happens once, in [`HostFacts::probe`]; choosing is pure.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use std::collections::BTreeSet;

use crate::infra::targets::{load_all, select, Backend, RunnerKind, Target};
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
    //! A host with exactly the tools a test names.

    use super::*;

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
    use crate::infra::host::test_support::facts;
    use crate::infra::targets::test_support::{target, AARCH64};

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
}
