//! `cargo xtask build-all`: the broker for every target triple in
//! `targets/`, in parallel, each through the backend that can build it here;
//! artifacts in `target/dist/<triple>/`, and a manifest (`manifest.json`,
//! `manifest.md`) saying per target what came out, or why nothing could.
//!
//! With `--smoke`, every runnable artifact is started through its runner
//! (natively, qemu-user, wine) and must pass an MQTT connect / subscribe /
//! publish / receive round trip from the host, then stop cleanly.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::infra::build::build;
use crate::infra::environment;
use crate::infra::host::HostFacts;
use crate::infra::launcher::Invocation;
use crate::infra::targets;
use crate::infra::targets::Backend;
use crate::infra::targets::Target;
use crate::infra::tools::llvm_strip;
use crate::model::gate::Profile;
use crate::model::gate::ThresholdKind;
use crate::model::manifest::{
    Budget, Entry, Manifest, Smoke, SmokeStatus, Status, MANIFEST_SCHEMA,
};
use crate::model::verdict::failed;
use crate::render::manifest::{markdown_table, render_markdown, smoke_summary, status_word, View};

#[derive(Debug, Clone)]
pub struct Options {
    /// Triples to build; empty (or `all`): every file in targets/.
    pub targets: Vec<String>,
    /// Force one backend; None: each target's first usable one.
    pub backend: Option<Backend>,
    /// Cargo profile for every target; None: each target file's own.
    pub profile: Option<String>,
    /// Targets built at the same time.
    pub jobs: usize,
    pub smoke: bool,
    /// Artifacts and manifest; default `target/dist`.
    pub out: Option<PathBuf>,
}

pub fn dist_dir() -> Result<PathBuf> {
    Ok(crate::infra::cargo::target_dir()?.join("dist"))
}

pub fn run(options: &Options) -> Result<()> {
    let started = Instant::now();
    let root = crate::infra::cargo::project_root();
    let all = targets::load_all(&root)?;
    let requested_by_name =
        !options.targets.is_empty() && !options.targets.iter().any(|t| t == "all");
    let selected = targets::select(all, &options.targets)?;
    if let Some(profile) = &options.profile {
        check_profile(profile)?;
    }
    let jobs = options.jobs.max(1);
    let host = HostFacts::probe(&selected);
    let env = environment::Environment::capture(&xshell::Shell::new()?, &root);
    let dist = match &options.out {
        Some(dir) => dir.clone(),
        None => dist_dir()?,
    };
    std::fs::create_dir_all(&dist).with_context(|| format!("cannot create {}", dist.display()))?;

    println!(
        "==> build-all: {} targets, {jobs} at a time; artifacts in {}",
        selected.len(),
        dist.display()
    );
    match &host.container_engine {
        Ok(engine) => println!("    container engine: {engine}"),
        Err(why) => println!("    cross backend unavailable: {why}"),
    }

    let view = View::new();
    let queue: Mutex<VecDeque<(usize, &Target)>> =
        Mutex::new(selected.iter().enumerate().collect());
    let results: Mutex<Vec<(usize, Entry)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(selected.len()) {
            scope.spawn(|| loop {
                let Some((index, target)) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let entry = build_entry(&root, target, options, &host, &dist, &view);
                results.lock().unwrap().push((index, entry));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut entries: Vec<Entry> = results.into_iter().map(|(_, e)| e).collect();

    if options.smoke {
        println!("==> smoke runs (MQTT round trip from the host)");
        for (entry, target) in entries.iter_mut().zip(&selected) {
            let smoke = smoke_entry(entry, target, &host, &dist);
            println!(
                "    {:<34} {}",
                entry.triple,
                match smoke.status {
                    SmokeStatus::Passed => format!("passed ({})", smoke.detail),
                    SmokeStatus::Failed => format!("FAILED: {}", smoke.detail),
                    SmokeStatus::NotRun => format!("not run: {}", smoke.detail),
                }
            );
            entry.smoke = Some(smoke);
        }
    }

    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        created: environment::timestamp(SystemTime::now()),
        host_triple: env.host_triple,
        rustc: env.rustc,
        git_revision: env.git_revision,
        git_dirty: env.git_dirty,
        jobs,
        total_seconds: started.elapsed().as_secs_f64(),
        entries,
    };
    write_manifest(&dist, &manifest)?;
    println!("{}", markdown_table(&manifest));
    let built = manifest
        .entries
        .iter()
        .filter(|e| e.status == Status::Built)
        .count();
    println!(
        "build-all: {built} of {} built in {:.0} s{}; manifest: {}",
        manifest.entries.len(),
        manifest.total_seconds,
        smoke_summary(&manifest)
            .map(|s| format!("; {s}"))
            .unwrap_or_default(),
        dist.join("manifest.md").display()
    );
    let problems = manifest.problems(requested_by_name);
    if !problems.is_empty() {
        for p in &problems {
            println!("error: {p}");
        }
        return failed(format!(
            "build-all: {} problem(s), see above",
            problems.len()
        ));
    }
    Ok(())
}

pub(crate) fn check_profile(profile: &str) -> Result<()> {
    if !["release", "embedded", "dev"].contains(&profile) {
        bail!("--profile {profile}: not a cargo profile of this workspace; use release, embedded or dev");
    }
    Ok(())
}

/// Builds one target (or says why it cannot) and describes the artifact.
pub(crate) fn build_entry(
    root: &Path,
    target: &Target,
    options: &Options,
    host: &HostFacts,
    dist: &Path,
    view: &View,
) -> Entry {
    let profile = options
        .profile
        .clone()
        .unwrap_or_else(|| target.def.profile.clone());
    let mut entry = Entry {
        triple: target.triple().to_string(),
        class: target.def.class.as_str().to_string(),
        description: target.def.description.clone(),
        backend: None,
        profile: profile.clone(),
        status: Status::Unavailable,
        reason: None,
        artifact: None,
        size_bytes: None,
        stripped_size_bytes: None,
        sha256: None,
        build_seconds: None,
        budget: None,
        runner: target.runner_name(),
        emulated: target.emulated(),
        build_only: target.build_only(),
        smoke: None,
        log: None,
    };
    let line = view.line(target.triple());
    let backend = match crate::infra::host::choose_backend(target, options.backend, host) {
        Ok(b) => b,
        Err(why) => {
            line.finish(format!("unavailable: {why}"));
            entry.reason = Some(why);
            return entry;
        }
    };
    entry.backend = Some(backend);
    let out_dir = dist.join(target.triple());
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        entry.status = Status::Failed;
        entry.reason = Some(format!("cannot create {}: {e}", out_dir.display()));
        return entry;
    }
    let log = out_dir.join("build.log");
    entry.log = Some(format!("{}/build.log", target.triple()));
    line.set(format!("building with {backend}, profile {profile}"));
    let start = Instant::now();
    let built = build(root, target, backend, &profile, &log, &|msg| line.set(msg));
    entry.build_seconds = Some(round1(start.elapsed().as_secs_f64()));
    let binary = match built {
        Ok(binary) => binary,
        Err(e) => {
            entry.status = Status::Failed;
            entry.reason = Some(format!("{e:#}"));
            line.finish(format!(
                "FAILED after {:.0} s: see {}",
                start.elapsed().as_secs_f64(),
                log.display()
            ));
            return entry;
        }
    };
    match describe_artifact(root, target, &binary, &out_dir, &mut entry) {
        Ok(()) => {
            entry.status = Status::Built;
            let budget = entry
                .budget
                .as_ref()
                .map(|b| {
                    if b.within {
                        format!(
                            ", {} under the {} budget",
                            crate::model::units::bytes(b.margin_bytes as f64),
                            b.limit
                        )
                    } else {
                        format!(", OVER the {} budget", b.limit)
                    }
                })
                .unwrap_or_default();
            line.finish(format!(
                "built with {backend} in {:.0} s: {}{budget}",
                start.elapsed().as_secs_f64(),
                crate::model::units::bytes(entry.size_bytes.unwrap_or(0) as f64)
            ));
        }
        Err(e) => {
            entry.status = Status::Failed;
            entry.reason = Some(format!("{e:#}"));
            line.finish(format!("FAILED: {e:#}"));
        }
    }
    entry
}

/// Copies the binary into the dist directory and fills in sizes, hash and budget.
pub(crate) fn describe_artifact(
    root: &Path,
    target: &Target,
    binary: &Path,
    out_dir: &Path,
    entry: &mut Entry,
) -> Result<()> {
    let name = target.exe_name("broker");
    let artifact = out_dir.join(&name);
    std::fs::copy(binary, &artifact)
        .with_context(|| format!("cannot copy {} to {}", binary.display(), artifact.display()))?;
    let bytes =
        std::fs::read(&artifact).with_context(|| format!("cannot read {}", artifact.display()))?;
    let size = bytes.len() as u64;
    entry.artifact = Some(format!("{}/{name}", target.triple()));
    entry.size_bytes = Some(size);
    entry.sha256 = Some(hex(&Sha256::digest(&bytes)));
    entry.stripped_size_bytes = stripped_size(&artifact);
    entry.budget = budget(root, target, size)?;
    Ok(())
}

/// The size after `llvm-strip` (rustup component llvm-tools), which reads
/// ELF, Mach-O and PE alike; None without it.
pub(crate) fn stripped_size(artifact: &Path) -> Option<u64> {
    let strip = llvm_strip()?;
    let stripped = artifact.with_extension("stripped.tmp");
    let ok = Command::new(strip)
        .arg("-o")
        .arg(&stripped)
        .arg(artifact)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let size = ok
        .then(|| std::fs::metadata(&stripped).ok().map(|m| m.len()))
        .flatten();
    let _ = std::fs::remove_file(&stripped);
    size
}

/// The class profile's binary size threshold, checked against `size`.
pub(crate) fn budget(root: &Path, target: &Target, size: u64) -> Result<Option<Budget>> {
    let Some(name) = target.def.class.profile() else {
        return Ok(None);
    };
    let profile = Profile::load(root, name)?;
    Ok(profile
        .thresholds
        .iter()
        .find(|t| t.kind == ThresholdKind::BinarySize)
        .map(|t| {
            let limit = t.limit as u64;
            Budget {
                limit_bytes: limit,
                limit: t.limit_text.clone(),
                profile: profile.name.clone(),
                from: t.from.clone(),
                margin_bytes: limit as i64 - size as i64,
                within: size < limit,
            }
        }))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Starts a built artifact through its runner and does the MQTT round trip.
pub(crate) fn smoke_entry(entry: &Entry, target: &Target, host: &HostFacts, dist: &Path) -> Smoke {
    let runner = entry.runner.clone();
    let not_run = |detail: String| Smoke {
        status: SmokeStatus::NotRun,
        detail,
        connect_ms: None,
        round_trip_ms: None,
        runner: runner.clone(),
    };
    if entry.status != Status::Built {
        return not_run(format!("not built ({})", status_word(entry.status)));
    }
    if let Err(why) = crate::infra::host::runner_ready(target, host) {
        return not_run(format!("cannot run here: {why}"));
    }
    // From here the target is built and runnable here: a smoke run that does
    // not happen is a failure, never a quiet "not run".
    let failed = |detail: String| Smoke {
        status: SmokeStatus::Failed,
        detail,
        connect_ms: None,
        round_trip_ms: None,
        runner: runner.clone(),
    };
    let Some(artifact) = entry.artifact.as_ref().map(|a| dist.join(a)) else {
        return failed("built and runnable here, but the manifest names no artifact to run".into());
    };
    let dir = dist.join(target.triple()).join("smoke");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return failed(format!("cannot create {}: {e}", dir.display()));
    }
    let invocation = Invocation {
        binary: &artifact,
        target: Some(target),
    };
    let mut broker = match crate::infra::launcher::start_built(invocation, &dir) {
        Ok(b) => b,
        Err(e) => return failed(format!("did not start: {e:#}")),
    };
    let addr = broker.address().to_string();
    let trip = addr
        .parse()
        .context("broker address")
        .and_then(|a| crate::infra::smoke::mqtt_round_trip(a, Duration::from_secs(20)));
    broker.stop();
    let exit = broker.exited().unwrap_or_else(|| "still running".into());
    let log = dir.join("broker.log");
    match trip {
        Err(e) => failed(format!(
            "round trip via {addr}: {e:#}; broker log {}",
            log.display()
        )),
        // Wine does not forward SIGTERM to the Windows process as a console
        // event; there a kill is the expected way out.
        Ok(_) if exit != "exited with code 0" && target.def.runner.kind != targets::RunnerKind::Wine => {
            failed(format!(
                "round trip passed, but on SIGTERM the broker {exit} (expected a clean exit 0); log {}",
                log.display()
            ))
        }
        Ok(trip) => Smoke {
            status: SmokeStatus::Passed,
            detail: format!(
                "connect {:.2} ms, publish→receive {:.2} ms, then {exit} on SIGTERM",
                trip.connect_ms, trip.round_trip_ms
            ),
            connect_ms: Some(trip.connect_ms),
            round_trip_ms: Some(trip.round_trip_ms),
            runner,
        },
    }
}

pub(crate) fn write_manifest(dist: &Path, manifest: &Manifest) -> Result<()> {
    let json = dist.join("manifest.json");
    std::fs::write(&json, serde_json::to_string_pretty(manifest)? + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md = dist.join("manifest.md");
    std::fs::write(&md, render_markdown(manifest))
        .with_context(|| format!("cannot write {}", md.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::cargo::linker_env;

    fn entry(triple: &str, status: Status) -> Entry {
        Entry {
            triple: triple.into(),
            class: "embedded".into(),
            description: String::new(),
            backend: Some(Backend::Cargo),
            profile: "embedded".into(),
            status,
            reason: None,
            artifact: None,
            size_bytes: Some(1_400_000),
            stripped_size_bytes: Some(1_400_000),
            sha256: Some("ab".repeat(32)),
            build_seconds: Some(84.0),
            budget: None,
            runner: "qemu-arm".into(),
            emulated: true,
            build_only: false,
            smoke: None,
            log: None,
        }
    }

    /// The embedded budget with `margin` bytes left (negative: over).
    fn five_mb_budget(margin: i64) -> Budget {
        Budget {
            limit_bytes: 5_000_000,
            limit: "< 5 MB".into(),
            profile: "embedded".into(),
            from: "origin".into(),
            margin_bytes: margin,
            within: margin > 0,
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest {
            schema: MANIFEST_SCHEMA,
            created: "2026-11-22T00:00:00Z".into(),
            host_triple: "x86_64-unknown-linux-gnu".into(),
            rustc: "rustc 1.95.0".into(),
            git_revision: Some("0123456789abcdef".into()),
            git_dirty: false,
            jobs: 2,
            total_seconds: 100.0,
            entries,
        }
    }

    #[test]
    fn linker_env_follows_cargo_naming() {
        assert_eq!(
            linker_env("aarch64-unknown-linux-gnu"),
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"
        );
        assert_eq!(
            linker_env("riscv64gc-unknown-linux-gnu"),
            "CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_LINKER"
        );
    }

    #[test]
    fn embedded_budget_comes_from_the_profile() {
        let root = crate::infra::cargo::project_root();
        let all = targets::load_all(&root).unwrap();
        let armv7 = all
            .iter()
            .find(|t| t.triple() == "armv7-unknown-linux-gnueabihf")
            .unwrap();
        let b = budget(&root, armv7, 1_500_000).unwrap().unwrap();
        assert_eq!(b.limit_bytes, 5_000_000);
        assert_eq!(b.margin_bytes, 3_500_000);
        assert!(b.within);
        let b = budget(&root, armv7, 6_000_000).unwrap().unwrap();
        assert!(!b.within && b.margin_bytes == -1_000_000);
        let x86 = all
            .iter()
            .find(|t| t.triple() == "x86_64-unknown-linux-gnu")
            .unwrap();
        assert_eq!(budget(&root, x86, 50_000_000).unwrap(), None);
    }

    #[test]
    fn problems_fail_the_command_but_unavailable_only_when_named() {
        let mut over = entry("armv7-unknown-linux-gnueabihf", Status::Built);
        over.budget = Some(five_mb_budget(-200_000));
        let mut unavailable = entry("arm-unknown-linux-musleabi", Status::Unavailable);
        unavailable.reason = Some("rust-std not installed".into());
        let m = manifest(vec![over, unavailable]);
        let p = m.problems(false);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("OVER") && p[0].contains("200 kB"), "{p:?}");
        assert_eq!(m.problems(true).len(), 2);

        let mut smoke_failed = entry("riscv64gc-unknown-linux-gnu", Status::Built);
        smoke_failed.smoke = Some(Smoke {
            status: SmokeStatus::Failed,
            detail: "timed out waiting for SUBACK".into(),
            connect_ms: None,
            round_trip_ms: None,
            runner: "qemu-riscv64".into(),
        });
        let failed = entry("x86_64-pc-windows-gnu", Status::Failed);
        let p = manifest(vec![smoke_failed, failed]).problems(false);
        assert!(p[0].contains("smoke run FAILED: timed out"), "{p:?}");
        assert!(p[1].contains("build FAILED"), "{p:?}");
        assert!(manifest(vec![entry("a-b-c", Status::Built)])
            .problems(true)
            .is_empty());
    }

    #[test]
    fn markdown_marks_failures_and_reasons() {
        let mut over = entry("armv7-unknown-linux-gnueabihf", Status::Built);
        over.budget = Some(five_mb_budget(-200_000));
        let mut ok = entry("aarch64-unknown-linux-musl", Status::Built);
        ok.budget = Some(five_mb_budget(3_600_000));
        let mut mac = entry("aarch64-apple-darwin", Status::Unavailable);
        mac.reason = Some("zigbuild: cargo-zigbuild not installed".into());
        mac.build_only = true;
        mac.runner = "none".into();
        let md = render_markdown(&manifest(vec![over, ok, mac]));
        assert!(md.contains("**OVER** < 5 MB (by 200 kB)"), "{md}");
        assert!(md.contains("< 5 MB (3.6 MB left)"), "{md}");
        assert!(md.contains("none (build only)"), "{md}");
        assert!(
            md.contains(
                "- **aarch64-apple-darwin** (unavailable): zigbuild: cargo-zigbuild not installed"
            ),
            "{md}"
        );
        assert!(md.contains("git 0123456789ab"), "{md}");
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let m = manifest(vec![entry("a-b-c", Status::Built)]);
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"status\":\"built\"") && text.contains("\"backend\":\"cargo\""));
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
    }

    /// `--smoke` for a target that is built and runnable here: a smoke run
    /// that did not happen fails; one that cannot run here says so, plainly.
    #[test]
    fn a_runnable_target_whose_smoke_did_not_happen_fails() {
        use crate::infra::host::test_support::facts;
        use crate::infra::targets::test_support::{target, AARCH64};
        let t = target("aarch64-unknown-linux-gnu", AARCH64);
        let dist = tempfile::tempdir().unwrap();
        let mut built = entry("aarch64-unknown-linux-gnu", Status::Built);
        built.runner = t.runner_name();
        let with_qemu = facts(&[], &["qemu-aarch64-static"], false);

        // Built, qemu here, and nothing to run: a failure, not "not run".
        let smoke = smoke_entry(&built, &t, &with_qemu, dist.path());
        assert_eq!(smoke.status, SmokeStatus::Failed, "{smoke:?}");
        built.smoke = Some(smoke);
        let problems = manifest(vec![built.clone()]).problems(false);
        assert!(
            problems.len() == 1 && problems[0].contains("smoke run FAILED"),
            "{problems:?}"
        );

        // No qemu for it: not run, saying why, and not a failure...
        let smoke = smoke_entry(&built, &t, &facts(&[], &[], false), dist.path());
        assert_eq!(smoke.status, SmokeStatus::NotRun, "{smoke:?}");
        assert!(
            smoke
                .detail
                .starts_with("cannot run here: qemu-aarch64-static not found"),
            "{smoke:?}"
        );
        built.smoke = Some(smoke);
        let m = manifest(vec![built]);
        assert!(m.problems(false).is_empty());
        assert_eq!(
            smoke_summary(&m).unwrap(),
            "smoke: 0 passed, 1 NOT RUN (aarch64-unknown-linux-gnu: cannot run here: \
             qemu-aarch64-static not found (Debian: qemu-user-static))"
        );
        // ...unless it was asked for by name.
        let p = m.problems(true);
        assert!(
            p.len() == 1 && p[0].contains("asked for by name with --smoke, but not run"),
            "{p:?}"
        );
    }

    #[test]
    fn bad_profile_is_refused_before_building() {
        let e = check_profile("fast").unwrap_err().to_string();
        assert!(e.contains("release, embedded or dev"), "{e}");
        check_profile("embedded").unwrap();
    }
}
