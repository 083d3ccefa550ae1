//! The fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer, nightly toolchain):
//! writing their seed corpora, building them once, running each for a time
//! and reading libFuzzer's figures (executions, coverage) and crashes.
//! Used by `cargo xtask fuzz` and by the "fuzz (short)" step of `cargo xtask ci`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// Every fuzz target (a `[[bin]]` of fuzz/Cargo.toml), in the order they run.
pub const TARGETS: &[&str] = &[
    "mqtt",
    "kafka_request",
    "amqp_frame",
    "kafka_batch",
    "segment_recovery",
    "record_file_recovery",
];

/// The toolchain the fuzz crate is built with (`-Z` flags, sanitizer coverage).
pub use crate::infra::install::FUZZ_TOOLCHAIN as TOOLCHAIN;

/// Where things live: `fuzz/`, its corpora, crash artifacts and logs.
pub struct Layout {
    pub fuzz_dir: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            fuzz_dir: root.join("fuzz"),
        }
    }
    pub fn corpus(&self, target: &str) -> PathBuf {
        self.fuzz_dir.join("corpus").join(target)
    }
    pub fn artifacts(&self, target: &str) -> PathBuf {
        self.fuzz_dir.join("artifacts").join(target)
    }
    pub fn log(&self, target: &str) -> PathBuf {
        self.fuzz_dir.join("logs").join(format!("{target}.log"))
    }
    fn target_dir(&self) -> PathBuf {
        self.fuzz_dir.join("target")
    }
    /// The built target: `fuzz/target/<host triple>/release/<target>`.
    fn binary(&self, target: &str) -> Result<PathBuf> {
        let dir = self.target_dir();
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries.flatten() {
            let candidate = entry.path().join("release").join(target);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        bail!(
            "fuzz target `{target}` is not built under {} (run `cargo xtask fuzz`)",
            dir.display()
        )
    }
}

/// Checks a `--target` name.
pub fn check_target(name: &str) -> Result<()> {
    if TARGETS.contains(&name) {
        return Ok(());
    }
    bail!(
        "no fuzz target `{name}`; the targets are: {}",
        TARGETS.join(", ")
    )
}

/// `rustup run nightly cargo ...` with the outer cargo's variables removed,
/// so the nightly cargo (and cargo-fuzz under it) pick their own toolchain.
fn nightly_cargo(sh: &Shell) -> xshell::Cmd<'_> {
    cmd!(sh, "rustup run {TOOLCHAIN} cargo")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
}

/// The variable that makes the broker's seed test write the corpora: CI sets
/// it for its test step, which runs that test anyway, so the fuzz step needs
/// no build of its own for the seeds.
pub fn corpus_env(root: &Path) -> (&'static str, PathBuf) {
    ("BROKER_FUZZ_CORPUS", root.join("fuzz").join("corpus"))
}

/// Writes the seed corpora (`fuzz/corpus/<target>/seed-*`) with the broker's
/// seed writer, a unit test built from its fixtures (broker/src/fixtures/fuzz_seeds.rs).
pub fn write_seeds(sh: &Shell, root: &Path) -> Result<()> {
    let cargo = crate::infra::cargo::cargo();
    let (var, corpus) = corpus_env(root);
    let _env = sh.push_env(var, &corpus);
    cmd!(
        sh,
        "{cargo} test -p broker --lib fixtures::fuzz_seeds -- --nocapture"
    )
    .run()
    .context("writing the fuzz seed corpora")?;
    Ok(())
}

/// Builds every target once: optimized, with debug assertions (overflow
/// checks: an overflow on input is a finding) and without a sanitizer
/// (safe Rust needs none, and the targets run about twice as fast).
pub fn build(sh: &Shell, layout: &Layout) -> Result<()> {
    let _dir = sh.push_dir(&layout.fuzz_dir);
    let target_dir = layout.target_dir();
    nightly_cargo(sh)
        .args(["fuzz", "build", "-O", "--debug-assertions", "-s", "none"])
        .arg("--target-dir")
        .arg(&target_dir)
        .run()
        .context("building the fuzz targets (cargo +nightly fuzz build)")?;
    Ok(())
}

/// What one run of a target did, from libFuzzer's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    pub executions: u64,
    pub seconds: u64,
    pub cov: u64,
    pub ft: u64,
    pub corpus: u64,
    /// The input that crashed the target, as libFuzzer wrote it.
    pub crash: Option<String>,
}

impl RunStats {
    /// One line for a summary table.
    pub fn line(&self, target: &str) -> String {
        let rate = self.executions / self.seconds.max(1);
        format!(
            "{target:<22} {:>11} execs in {:>5}s ({rate:>6}/s)  cov {:>5}  ft {:>6}  corpus {:>5}  {}",
            self.executions,
            self.seconds,
            self.cov,
            self.ft,
            self.corpus,
            match &self.crash {
                Some(path) => format!("CRASH {path}"),
                None => "no crash".to_string(),
            }
        )
    }
}

/// Reads libFuzzer's output: the last status line (`#N ... cov: C ft: F
/// corp: K/..`), `-print_final_stats` figures and a crash artifact.
pub fn parse_output(out: &str) -> RunStats {
    let mut stats = RunStats::default();
    for line in out.lines() {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            stats.executions = n.trim().parse().unwrap_or(stats.executions);
        }
        if let Some(path) = line.split("Test unit written to ").nth(1) {
            stats.crash = Some(path.trim().to_string());
        }
        if !line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(count) = words.next().and_then(|w| w[1..].parse::<u64>().ok()) else {
            continue;
        };
        stats.executions = stats.executions.max(count);
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            let value = || pair[1].parse::<u64>().ok();
            match pair[0] {
                "cov:" => stats.cov = value().unwrap_or(stats.cov),
                "ft:" => stats.ft = value().unwrap_or(stats.ft),
                "corp:" => {
                    if let Some(n) = pair[1].split('/').next().and_then(|n| n.parse().ok()) {
                        stats.corpus = n;
                    }
                }
                _ => {}
            }
        }
    }
    stats
}

/// Runs one built target for `seconds` over its corpus (new inputs are
/// added to it), logging libFuzzer's output to `fuzz/logs/<target>.log`.
/// A crash is not an error here: it is in the returned stats.
pub fn run(layout: &Layout, target: &str, seconds: u64, extra: &[String]) -> Result<RunStats> {
    let binary = layout.binary(target)?;
    let corpus = layout.corpus(target);
    let artifacts = layout.artifacts(target);
    let log = layout.log(target);
    for dir in [
        &corpus,
        &artifacts,
        &log.parent().expect("logs dir").to_path_buf(),
    ] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut prefix = artifacts.into_os_string();
    prefix.push("/");
    let mut command = Command::new(&binary);
    command
        .arg(&corpus)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // Per input: a hang is a finding too.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg({
            let mut a = std::ffi::OsString::from("-artifact_prefix=");
            a.push(&prefix);
            a
        })
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let start = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    let took = start.elapsed();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let mut stats = parse_output(&out);
    stats.seconds = took.as_secs().max(1);
    if !status.success() && stats.crash.is_none() {
        let tail: Vec<&str> = out.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target `{target}` failed ({status}) without a crash artifact; {} ends:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(stats)
}

/// Seeds, builds and runs `targets` for `seconds` each; prints one line per
/// target as it finishes. Crashes are in the stats (see [`crash_report`]).
/// With `reuse_seeds`, seeds already in the corpora are not written again.
pub fn seed_build_run(
    sh: &Shell,
    root: &Path,
    targets: &[&str],
    seconds: u64,
    extra: &[String],
    reuse_seeds: bool,
) -> Result<Vec<(String, RunStats)>> {
    let layout = Layout::new(root);
    // CI's test step has written them already (see `corpus_env`).
    let seeded = targets
        .iter()
        .all(|t| layout.corpus(t).join("seed-000").is_file());
    if !seeded || !reuse_seeds {
        write_seeds(sh, root)?;
    }
    let start = Instant::now();
    build(sh, &layout)?;
    println!("    fuzz targets built in {}s", start.elapsed().as_secs());
    let mut results = Vec::new();
    for &target in targets {
        println!("    fuzzing {target} for {seconds}s");
        let stats = run(&layout, target, seconds, extra)?;
        println!("    {}", stats.line(target));
        results.push((target.to_string(), stats));
    }
    Ok(results)
}

/// The crashes among `results`, each with its reproducer command, or None.
pub fn crash_report(root: &Path, results: &[(String, RunStats)]) -> Option<String> {
    let layout = Layout::new(root);
    let crashed: Vec<String> = results
        .iter()
        .filter_map(|(t, s)| {
            let crash = s.crash.as_ref()?;
            let binary = layout
                .binary(t)
                .map(|b| b.display().to_string())
                .unwrap_or_else(|_| format!("fuzz/target/<triple>/release/{t}"));
            Some(format!(
                "{t}: {crash}\n      reproduce: {binary} {crash}\n      log: {}",
                layout.log(t).display()
            ))
        })
        .collect();
    (!crashed.is_empty()).then(|| {
        format!(
            "fuzzing found crashes (turn each into a regression test, see docs/fuzz.md):\n    {}",
            crashed.join("\n    ")
        )
    })
}

/// How long a short run (CI) gives each target.
pub const SHORT_RUN: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_output_gives_executions_coverage_and_crashes() {
        let out = "\
INFO: Seed: 1234
#2\tINITED cov: 120 ft: 130 corp: 5/1024b exec/s: 0 rss: 30Mb
#65536\tpulse  cov: 800 ft: 2100 corp: 90/9Kb lim: 120 exec/s: 21845 rss: 45Mb
#123456\tDONE   cov: 812 ft: 2150 corp: 93/9950b lim: 120 exec/s: 4115 rss: 60Mb
Done 123456 runs in 30 second(s)
stat::number_of_executed_units: 123460
stat::average_exec_per_sec:     4115
";
        let s = parse_output(out);
        assert_eq!(s.executions, 123_460);
        assert_eq!((s.cov, s.ft, s.corpus), (812, 2150, 93));
        assert_eq!(s.crash, None);

        let crash = "\
#100\tNEW    cov: 50 ft: 60 corp: 3/30b lim: 4 exec/s: 0 rss: 30Mb
==42== ERROR: libFuzzer: deadly signal
artifact_prefix='fuzz/artifacts/mqtt/'; Test unit written to fuzz/artifacts/mqtt/crash-abc
";
        let s = parse_output(crash);
        assert_eq!(s.crash.as_deref(), Some("fuzz/artifacts/mqtt/crash-abc"));
        assert_eq!(s.executions, 100);
        assert!(s
            .line("mqtt")
            .contains("CRASH fuzz/artifacts/mqtt/crash-abc"));
    }

    #[test]
    fn unknown_target_names_the_known_ones() {
        assert!(check_target("mqtt").is_ok());
        let e = check_target("mqt").unwrap_err().to_string();
        assert!(
            e.contains("kafka_request") && e.contains("record_file_recovery"),
            "{e}"
        );
    }

    #[test]
    fn every_target_is_a_bin_of_the_fuzz_crate() {
        let manifest =
            std::fs::read_to_string(crate::infra::cargo::project_root().join("fuzz/Cargo.toml"))
                .unwrap();
        for t in TARGETS {
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t}");
            assert!(manifest.contains(&format!("fuzz_targets/{t}.rs")), "{t}");
        }
    }
}
