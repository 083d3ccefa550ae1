//! `cargo xtask docker`: the multi-arch broker image with `docker buildx`.
//!
//! Platforms are checked against targets/*.toml before anything runs (each
//! maps to a target triple, static musl where a target file exists), then the
//! buildx command line is built, and only then is the machine asked for
//! buildx and a running engine: without them the command says what is
//! missing and which command it would have run, and fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::infra::targets;
use crate::infra::targets::Target;

/// The `--platforms` default: the server platforms and the 32-bit board one.
pub const DEFAULT_PLATFORMS: &str = "linux/amd64,linux/arm64,linux/arm/v7";

/// Docker platforms we know, with the triples that can serve each, in order
/// of preference: static (musl) first, since a static binary needs nothing
/// from the runtime image.
/// (No linux/riscv64: Debian bookworm, the runtime base, has no riscv64 port.)
const PLATFORMS: [(&str, &[&str]); 3] = [
    (
        "linux/amd64",
        &["x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"],
    ),
    (
        "linux/arm64",
        &["aarch64-unknown-linux-musl", "aarch64-unknown-linux-gnu"],
    ),
    (
        "linux/arm/v7",
        &[
            "armv7-unknown-linux-musleabihf",
            "armv7-unknown-linux-gnueabihf",
        ],
    ),
];

pub struct Options {
    pub platforms: Vec<String>,
    pub push: bool,
    pub tag: String,
}

/// One platform of the image and what builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformBuild {
    /// `linux/arm64`.
    pub platform: String,
    /// `aarch64-unknown-linux-musl`.
    pub triple: String,
    /// The cargo profile of the target file (`release`, `embedded`).
    pub profile: String,
    /// The cross gcc `cargo build --target` links with.
    pub linker: String,
    /// Debian packages providing the linker (installed in the build stage).
    pub packages: Vec<String>,
}

/// Maps each platform to the first of its triples that has a target file
/// with a linker; an unknown platform is an error listing the known ones.
pub fn resolve(platforms: &[String], targets: &[Target]) -> Result<Vec<PlatformBuild>> {
    if platforms.is_empty() {
        bail!("--platforms is empty; give e.g. --platforms {DEFAULT_PLATFORMS}");
    }
    let mut builds: Vec<PlatformBuild> = Vec::new();
    for platform in platforms {
        let platform = platform.trim();
        let Some((_, triples)) = PLATFORMS.iter().find(|(p, _)| *p == platform) else {
            bail!(
                "unknown platform `{platform}`; known platforms: {}",
                known_platforms(targets).join(", ")
            );
        };
        let Some((target, linker)) = triples.iter().find_map(|triple| {
            let t = targets.iter().find(|t| t.triple() == *triple)?;
            Some((t, t.def.linker.as_ref()?))
        }) else {
            bail!(
                "platform `{platform}` needs one of the targets {} with a [linker] in targets/, and none is defined",
                triples.join(", ")
            );
        };
        if builds.iter().any(|b| b.platform == platform) {
            continue;
        }
        builds.push(PlatformBuild {
            platform: platform.to_string(),
            triple: target.triple().to_string(),
            profile: target.def.profile.clone(),
            linker: linker.command.clone(),
            packages: linker.packages.clone(),
        });
    }
    Ok(builds)
}

/// The platforms some target file can serve.
fn known_platforms(targets: &[Target]) -> Vec<&'static str> {
    PLATFORMS
        .iter()
        .filter(|(_, triples)| {
            triples.iter().any(|tr| {
                targets
                    .iter()
                    .any(|t| t.triple() == *tr && t.def.linker.is_some())
            })
        })
        .map(|(p, _)| *p)
        .collect()
}

/// Where an image that is neither pushed nor loaded goes (an OCI archive):
/// the classic docker image store cannot hold a multi-platform image.
pub fn oci_archive(target_dir: &Path) -> PathBuf {
    target_dir.join("docker").join("broker-image.oci.tar")
}

/// The `docker buildx build` arguments (without `docker`), run from the
/// workspace root: `--push` to a registry, `--load` for one platform, else
/// an OCI archive at `archive`.
pub fn buildx_args(builds: &[PlatformBuild], tag: &str, push: bool, archive: &Path) -> Vec<String> {
    let platforms: Vec<&str> = builds.iter().map(|b| b.platform.as_str()).collect();
    let mut args: Vec<String> = [
        "buildx",
        "build",
        "--platform",
        &platforms.join(","),
        "--file",
        "docker/Dockerfile",
        "--tag",
        tag,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if push {
        args.push("--push".into());
    } else if builds.len() == 1 {
        args.push("--load".into());
    } else {
        args.push("--output".into());
        args.push(format!("type=oci,dest={}", archive.display()));
    }
    args.push(".".into());
    args
}

/// `Ok(())` when `docker buildx` and a running engine answer, else what is missing.
fn engine_ready() -> std::result::Result<(), String> {
    let limit = Duration::from_secs(20);
    let mut missing = Vec::new();
    if let Err(why) = crate::infra::tools::output_within("docker", &["buildx", "version"], limit) {
        missing.push(format!("docker buildx ({why})"));
    }
    if let Err(why) = crate::infra::tools::output_within("docker", &["info"], limit) {
        missing.push(format!("a running container engine ({why})"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

pub fn run(options: &Options) -> Result<()> {
    let root = crate::infra::cargo::project_root();
    let all = targets::load_all(&root)?;
    let builds = resolve(&options.platforms, &all)?;
    for b in &builds {
        println!(
            "    {:<14} {} ({} profile, linker {})",
            b.platform, b.triple, b.profile, b.linker
        );
    }
    let archive = oci_archive(&crate::infra::cargo::target_dir()?);
    let args = buildx_args(&builds, &options.tag, options.push, &archive);
    let line = format!("docker {}", args.join(" "));
    if let Err(missing) = engine_ready() {
        bail!(
            "cannot build the image here: `cargo xtask docker` needs docker buildx and a running container engine (Docker, or Podman's docker API). Missing: {missing}.\n    would run: {line}"
        );
    }
    if !options.push && builds.len() > 1 {
        if let Some(dir) = archive.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    println!("    $ {line}");
    let status = std::process::Command::new("docker")
        .args(&args)
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    if !options.push && builds.len() > 1 {
        println!("    image (all platforms): {}", archive.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_targets() -> Vec<Target> {
        targets::load_all(&crate::infra::cargo::project_root()).unwrap()
    }

    fn strings(list: &str) -> Vec<String> {
        list.split(',').map(String::from).collect()
    }

    #[test]
    fn default_platforms_map_to_static_triples_where_a_file_exists() {
        let builds = resolve(&strings(DEFAULT_PLATFORMS), &repo_targets()).unwrap();
        let got: Vec<(&str, &str, &str)> = builds
            .iter()
            .map(|b| (b.platform.as_str(), b.triple.as_str(), b.profile.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("linux/amd64", "x86_64-unknown-linux-musl", "release"),
                ("linux/arm64", "aarch64-unknown-linux-musl", "release"),
                // No armv7 musl target file: the glibc one, size profile.
                ("linux/arm/v7", "armv7-unknown-linux-gnueabihf", "embedded"),
            ]
        );
        assert_eq!(builds[1].linker, "aarch64-linux-gnu-gcc");
        assert_eq!(builds[1].packages, ["gcc-aarch64-linux-gnu"]);
    }

    #[test]
    fn unknown_platform_lists_the_known_ones() {
        let err = resolve(&strings("linux/amd64,linux/s390x"), &repo_targets())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown platform `linux/s390x`"), "{err}");
        assert!(
            err.contains("known platforms: linux/amd64, linux/arm64, linux/arm/v7"),
            "{err}"
        );
        assert!(resolve(&[], &repo_targets()).is_err());
    }

    #[test]
    fn platform_without_a_target_file_says_which_are_needed() {
        let only_x86: Vec<Target> = repo_targets()
            .into_iter()
            .filter(|t| t.triple().starts_with("x86_64"))
            .collect();
        let err = resolve(&strings("linux/arm64"), &only_x86)
            .unwrap_err()
            .to_string();
        assert!(err.contains("aarch64-unknown-linux-musl"), "{err}");
        assert_eq!(known_platforms(&only_x86), ["linux/amd64"]);
    }

    #[test]
    fn buildx_line_pushes_loads_or_writes_an_archive() {
        let all = repo_targets();
        let archive = Path::new("/ws/target/docker/broker-image.oci.tar");
        let multi = resolve(&strings("linux/amd64,linux/arm64"), &all).unwrap();
        assert_eq!(
            buildx_args(&multi, "ghcr.io/x/broker:1", true, archive).join(" "),
            "buildx build --platform linux/amd64,linux/arm64 --file docker/Dockerfile \
             --tag ghcr.io/x/broker:1 --push ."
        );
        assert_eq!(
            buildx_args(&multi, "broker:dev", false, archive).join(" "),
            "buildx build --platform linux/amd64,linux/arm64 --file docker/Dockerfile \
             --tag broker:dev --output type=oci,dest=/ws/target/docker/broker-image.oci.tar ."
        );
        let one = resolve(&strings("linux/arm/v7"), &all).unwrap();
        assert_eq!(
            buildx_args(&one, "broker:dev", false, archive).join(" "),
            "buildx build --platform linux/arm/v7 --file docker/Dockerfile --tag broker:dev --load ."
        );
    }

    #[test]
    fn duplicate_platforms_build_once() {
        let builds = resolve(&strings("linux/arm64,linux/arm64"), &repo_targets()).unwrap();
        assert_eq!(builds.len(), 1);
    }

    /// The Dockerfile's build stage picks triple, profile, packages and
    /// linker per `$TARGETPLATFORM` itself (buildx runs one build per
    /// platform); it must agree with targets/*.toml as resolved here.
    #[test]
    fn dockerfile_agrees_with_target_files() {
        let dockerfile =
            std::fs::read_to_string(crate::infra::cargo::project_root().join("docker/Dockerfile"))
                .unwrap();
        let platforms: Vec<String> = PLATFORMS.iter().map(|(p, _)| p.to_string()).collect();
        for b in resolve(&platforms, &repo_targets()).unwrap() {
            let arm = format!(
                "{}) echo \"{} {} {} {}\"",
                b.platform,
                b.triple,
                b.profile,
                b.packages.join(","),
                b.linker
            );
            assert!(
                dockerfile.contains(&arm),
                "docker/Dockerfile should have the case arm\n    {arm}"
            );
        }
    }
}
