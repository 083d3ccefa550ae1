//! Where a bench run happened: the machine, the toolchain and the source
//! revision, recorded in every report so numbers are never without context.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use xshell::{cmd, Shell};

use crate::infra::targets::Target;

// The broker's feature probe, compiled into xtask: std only, no dependency on
// the broker crate. `from_cpuinfo` is only called on hosts without a std
// detection macro.
#[allow(dead_code)]
#[path = "../../../broker/src/platform/cpu_features.rs"]
mod cpu_features;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// `git rev-parse HEAD`; None outside a git checkout.
    pub git_revision: Option<String>,
    /// Uncommitted changes to tracked files when the run started.
    pub git_dirty: bool,
    /// The host's triple (`rustc -vV`); the load generator always runs here.
    pub host_triple: String,
    /// The triple the broker was built for (the host's, for native runs).
    pub target_triple: String,
    /// How the broker ran: `native` (later: `qemu-user`, `ssh`).
    pub runner: String,
    /// True when the broker ran under emulation: numbers not comparable with native ones.
    pub emulated: bool,
    pub cpu_model: String,
    /// Logical CPUs of the machine (`/proc/cpuinfo`), whether or not this
    /// process may run on all of them.
    pub cores: usize,
    /// The CPUs this process may actually run on: its affinity mask and
    /// cgroup CPU quota (`std::thread::available_parallelism`). "% of the
    /// machine" CPU figures divide by this; 0 in reports written before it
    /// was recorded (read as `cores`, see [`Environment::usable`]).
    #[serde(default)]
    pub usable_cores: usize,
    pub memory_bytes: u64,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os: String,
    /// `rustc --version`'s first line equivalent: `rustc 1.x.y (hash date)`.
    pub rustc: String,
    /// RFC 3339 UTC time the run started.
    pub timestamp: String,
    pub hostname: String,
    /// CPU features of the host that the broker's fast paths can use (as
    /// `broker::platform` names them), by the broker's own probe; empty in reports
    /// written before it was recorded.
    #[serde(default)]
    pub cpu_features: Vec<String>,
    /// CPU µs per loopback round trip on this machine, measured around the
    /// run (`infra::cpu_reference`); the gate scales CPU-per-message
    /// thresholds by it. None: not measured (micro, merge, older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_reference: Option<crate::infra::cpu_reference::CpuReference>,
}

impl Environment {
    /// This machine, with the target, runner and emulation of `target`
    /// when the broker (or benchmark) runs as that target's binary.
    pub fn capture_for(sh: &Shell, root: &Path, target: Option<&Target>) -> Environment {
        let mut env = Environment::capture(sh, root);
        if let Some(t) = target {
            env.target_triple = t.triple().to_string();
            env.runner = t.runner_name();
            env.emulated = t.emulated();
        }
        env
    }

    /// Captures the environment of this host, now.
    pub fn capture(sh: &Shell, root: &Path) -> Environment {
        let rustc_vv = cmd!(sh, "rustc -vV").quiet().read().unwrap_or_default();
        let (host_triple, rustc) = parse_rustc_vv(&rustc_vv);
        let host_triple = host_triple.unwrap_or_else(fallback_triple);
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let git_revision = cmd!(sh, "git -C {root} rev-parse HEAD")
            .quiet()
            .ignore_stderr()
            .read()
            .ok()
            .filter(|s| !s.is_empty());
        let git_dirty = git_revision.is_some()
            && cmd!(sh, "git -C {root} status --porcelain --untracked-files=no")
                .quiet()
                .ignore_stderr()
                .read()
                .map(|s| !s.trim().is_empty())
                .unwrap_or(false);
        let cpuinfo = read("/proc/cpuinfo");
        Environment {
            git_revision,
            git_dirty,
            target_triple: host_triple.clone(),
            host_triple,
            runner: "native".into(),
            emulated: false,
            cpu_model: parse_cpu_model(&cpuinfo)
                .unwrap_or_else(|| format!("unknown {}", std::env::consts::ARCH)),
            cores: count_processors(&cpuinfo).unwrap_or_else(usable_cores),
            usable_cores: usable_cores(),
            memory_bytes: parse_mem_total(&read("/proc/meminfo")).unwrap_or(0),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os: parse_os_release(&read("/etc/os-release"))
                .unwrap_or_else(|| std::env::consts::OS.to_string()),
            rustc: rustc.unwrap_or_else(|| "unknown".into()),
            timestamp: timestamp(SystemTime::now()),
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            cpu_features: host_cpu_features(),
            cpu_reference: None,
        }
    }
}

impl Environment {
    /// The cores the run could use (older reports: the machine's).
    pub fn usable(&self) -> usize {
        match self.usable_cores {
            0 => self.cores.max(1),
            n => n,
        }
    }
}

/// The CPUs this process may run on: std honours the affinity mask
/// (`sched_getaffinity`) and cgroup v1/v2 CPU quotas (`cpu.max`), which
/// `/proc/cpuinfo` does not.
pub fn usable_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// RFC 3339 UTC, whole seconds: `2025-01-31T12:00:00Z`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A run id from a timestamp: `20250131T120000Z-<triple>`.
pub fn run_id(timestamp: &str, triple: &str) -> String {
    let compact: String = timestamp
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{compact}-{triple}")
}

fn fallback_triple() -> String {
    format!(
        "{}-unknown-{}",
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// `(host triple, "rustc 1.x.y (hash date)")` from `rustc -vV`.
pub fn parse_rustc_vv(text: &str) -> (Option<String>, Option<String>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let version = text.lines().next().map(|l| l.trim().to_string());
    (field("host:"), version.filter(|v| !v.is_empty()))
}

/// `model name` (x86), or what ARM and RISC-V kernels offer instead.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    for key in [
        "model name",
        "Model",
        "Hardware",
        "uarch",
        "cpu model",
        "Processor",
    ] {
        let found = cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

fn count_processors(cpuinfo: &str) -> Option<usize> {
    let n = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    (n > 0).then_some(n)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The host's CPU features, detected by the broker's own code (the same
/// file, compiled in here) so host and target lists read alike.
fn host_cpu_features() -> Vec<String> {
    cpu_features::detect()
        .into_iter()
        .map(String::from)
        .collect()
}

pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustc_vv_gives_triple_and_version() {
        let text = "rustc 1.85.0 (4d91de4e4 2025-02-17)\nbinary: rustc\nhost: aarch64-unknown-linux-gnu\nrelease: 1.85.0\n";
        let (triple, version) = parse_rustc_vv(text);
        assert_eq!(triple.as_deref(), Some("aarch64-unknown-linux-gnu"));
        assert_eq!(
            version.as_deref(),
            Some("rustc 1.85.0 (4d91de4e4 2025-02-17)")
        );
    }

    #[test]
    fn proc_files_parse() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(count_processors(cpuinfo), Some(2));
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nHardware\t: BCM2835\nModel\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(
            parse_cpu_model(arm).as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert_eq!(
            parse_mem_total("MemTotal:       16318480 kB\nMemFree: 1 kB\n"),
            Some(16318480 * 1024)
        );
        assert_eq!(
            parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn host_cpu_features_are_the_brokers_probe() {
        let found = host_cpu_features();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            found.iter().any(|f| f == "sse4.2"),
            std::arch::is_x86_feature_detected!("sse4.2"),
            "{found:?}"
        );
        #[cfg(target_arch = "aarch64")]
        assert!(found.iter().any(|f| f == "neon"), "{found:?}");
        let _ = found;
    }

    #[test]
    fn environment_without_cpu_features_still_loads() {
        let json = r#"{"git_revision":null,"git_dirty":false,"host_triple":"x","target_triple":"x","runner":"native","emulated":false,"cpu_model":"c","cores":1,"memory_bytes":1,"kernel":"k","os":"o","rustc":"r","timestamp":"t","hostname":"h"}"#;
        let env: Environment = serde_json::from_str(json).unwrap();
        assert!(env.cpu_features.is_empty());
    }

    /// Pinned to one CPU (as `taskset -c 0` or a cgroup quota of one CPU
    /// would), the run records one usable core, and the machine's count apart.
    #[cfg(target_os = "linux")]
    #[test]
    fn usable_cores_follow_the_affinity_mask_not_cpuinfo() {
        let machine = count_processors(&std::fs::read_to_string("/proc/cpuinfo").unwrap());
        let env = std::thread::spawn(|| {
            // SAFETY: a zeroed cpu_set_t is a valid empty set; the mask
            // applies to this (the spawned) thread only.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                    0
                );
            }
            let sh = Shell::new().unwrap();
            Environment::capture(&sh, &crate::infra::cargo::project_root())
        })
        .join()
        .unwrap();
        assert_eq!(env.usable_cores, 1, "{env:?}");
        assert_eq!(env.usable(), 1);
        assert_eq!(Some(env.cores), machine);
    }

    #[test]
    fn reports_without_usable_cores_use_the_machines() {
        let json = r#"{"git_revision":null,"git_dirty":false,"host_triple":"x","target_triple":"x","runner":"native","emulated":false,"cpu_model":"c","cores":8,"memory_bytes":1,"kernel":"k","os":"o","rustc":"r","timestamp":"t","hostname":"h"}"#;
        let mut env: Environment = serde_json::from_str(json).unwrap();
        assert_eq!((env.usable_cores, env.usable()), (0, 8));
        env.usable_cores = 2;
        assert_eq!(env.usable(), 2);
        let back: Environment =
            serde_json::from_str(&serde_json::to_string(&env).unwrap()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn run_id_is_compact_utc_plus_triple() {
        assert_eq!(
            run_id("2025-01-31T12:03:04Z", "x86_64-unknown-linux-gnu"),
            "20250131T120304Z-x86_64-unknown-linux-gnu"
        );
        let now = timestamp(SystemTime::UNIX_EPOCH);
        assert_eq!(now, "1970-01-01T00:00:00Z");
    }
}
