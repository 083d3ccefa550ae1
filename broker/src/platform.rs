//! Build-time and run-time platform detection: architecture, OS and libc, CPU
//! features, io_uring availability, cores, memory, and the platform class that
//! picks the broker's defaults.
//!
//! The broker runs on tokio (epoll) everywhere; io_uring is detected and
//! reported so that benchmark reports can say what the kernel offered, not
//! because the broker uses it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod cpu_features;
pub use cpu_features::from_cpuinfo as cpu_features_from_cpuinfo;

/// Below this much RAM a 64-bit server architecture still gets embedded defaults
/// (a Raspberry Pi Zero 2 or a small VM should not plan for a million sockets).
pub const HIGH_PERF_MIN_MEMORY_BYTES: u64 = 1 << 30;

/// Which family of defaults a machine gets (connection limits, runtime, buffers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum PlatformClass {
    /// Servers: x86_64 and aarch64 with at least 1 GiB of RAM.
    #[value(alias = "high-perf")]
    HighPerf,
    /// Small devices: 32-bit ARM, RISC-V, MIPS, or any machine under 1 GiB of RAM.
    Embedded,
    /// Everything else (32-bit x86, PowerPC, s390x, ...).
    Generic,
}

impl PlatformClass {
    pub const ALL: [PlatformClass; 3] = [Self::HighPerf, Self::Embedded, Self::Generic];
    const NAMES: &'static [&'static str] = &["high_perf", "embedded", "generic"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HighPerf => "high_perf",
            Self::Embedded => "embedded",
            Self::Generic => "generic",
        }
    }

    /// The broker's defaults for this class; a config file overrides them key by key.
    pub fn defaults(self) -> ClassDefaults {
        match self {
            Self::HighPerf => ClassDefaults {
                max_connections: 1_000_000,
                runtime: RuntimeFlavor::MultiThread,
                worker_threads: None,
                read_buffer_size: 8 * 1024,
                max_packet_size: 1024 * 1024,
                max_queued_messages: 1000,
                max_inflight: 100,
                max_offline_sessions: 1_000_000,
                kafka_topics: KafkaTopicDefaults {
                    max_partitions_per_topic: 1000,
                    max_topics: 10_000,
                    max_partitions: 20_000,
                    max_open_segment_files: 4096,
                },
                kafka_decode_budget_bytes: 256 * 1024 * 1024,
            },
            Self::Embedded => ClassDefaults {
                max_connections: 1024,
                runtime: RuntimeFlavor::CurrentThread,
                worker_threads: Some(1),
                read_buffer_size: 2 * 1024,
                max_packet_size: 256 * 1024,
                max_queued_messages: 100,
                max_inflight: 20,
                max_offline_sessions: 1024,
                kafka_topics: KafkaTopicDefaults {
                    max_partitions_per_topic: 100,
                    max_topics: 200,
                    max_partitions: 1000,
                    max_open_segment_files: 128,
                },
                kafka_decode_budget_bytes: 16 * 1024 * 1024,
            },
            Self::Generic => ClassDefaults {
                max_connections: 10_000,
                runtime: RuntimeFlavor::MultiThread,
                worker_threads: None,
                read_buffer_size: 4 * 1024,
                max_packet_size: 1024 * 1024,
                max_queued_messages: 1000,
                max_inflight: 20,
                max_offline_sessions: 10_000,
                kafka_topics: KafkaTopicDefaults {
                    max_partitions_per_topic: 1000,
                    max_topics: 1000,
                    max_partitions: 4000,
                    max_open_segment_files: 1024,
                },
                kafka_decode_budget_bytes: 128 * 1024 * 1024,
            },
        }
    }
}

impl fmt::Display for PlatformClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PlatformClass {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match normalize(s).as_str() {
            "high_perf" => Ok(Self::HighPerf),
            "embedded" => Ok(Self::Embedded),
            "generic" => Ok(Self::Generic),
            _ => Err(UnknownName::new("platform class", s, Self::NAMES)),
        }
    }
}

/// Which tokio runtime the broker starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum RuntimeFlavor {
    #[value(alias = "multi-thread")]
    MultiThread,
    #[value(alias = "current-thread")]
    CurrentThread,
}

impl RuntimeFlavor {
    const NAMES: &'static [&'static str] = &["multi_thread", "current_thread"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MultiThread => "multi_thread",
            Self::CurrentThread => "current_thread",
        }
    }
}

impl fmt::Display for RuntimeFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeFlavor {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match normalize(s).as_str() {
            "multi_thread" => Ok(Self::MultiThread),
            "current_thread" => Ok(Self::CurrentThread),
            _ => Err(UnknownName::new("runtime flavor", s, Self::NAMES)),
        }
    }
}

/// Accept `high-perf`, `High_Perf` and `high_perf` alike.
fn normalize(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('-', "_")
}

/// A name (class, runtime flavour) that is not one of the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}` (valid: {})", .valid.join(", "))]
pub struct UnknownName {
    pub what: &'static str,
    pub given: String,
    pub valid: &'static [&'static str],
}

impl UnknownName {
    fn new(what: &'static str, given: &str, valid: &'static [&'static str]) -> Self {
        Self {
            what,
            given: given.to_owned(),
            valid,
        }
    }
}

/// Per-class defaults; see [`PlatformClass::defaults`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassDefaults {
    pub max_connections: usize,
    pub runtime: RuntimeFlavor,
    /// `None` = one worker per core (tokio's default).
    pub worker_threads: Option<usize>,
    pub read_buffer_size: usize,
    pub max_packet_size: usize,
    pub max_queued_messages: usize,
    pub max_inflight: u16,
    /// MQTT sessions kept while their client is offline (`mqtt.max_offline_sessions`).
    pub max_offline_sessions: usize,
    /// Kafka topic and partition counts, and segment files kept open
    /// (`kafka.max_partitions_per_topic`, … ; see docs/limits.md).
    pub kafka_topics: KafkaTopicDefaults,
    /// Bytes of Kafka requests being read and decoded at once (all connections).
    pub kafka_decode_budget_bytes: usize,
}

/// Class defaults of the Kafka topic limits (each overridden by its `kafka.*` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaTopicDefaults {
    pub max_partitions_per_topic: u32,
    pub max_topics: u32,
    pub max_partitions: u32,
    /// Segment and index files open at once over all partitions (an fd
    /// cache); also capped at a quarter of the open-files limit at start-up.
    pub max_open_segment_files: usize,
}

/// Whether this kernel lets the process create an io_uring instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoUring {
    Available,
    /// Why not: kernel too old, sysctl, seccomp/container policy, not Linux.
    Unavailable(String),
}

impl IoUring {
    pub fn is_available(&self) -> bool {
        matches!(self, Self::Available)
    }
}

impl fmt::Display for IoUring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Available => f.write_str("available"),
            Self::Unavailable(why) => write!(f, "unavailable ({why})"),
        }
    }
}

/// What the broker is running on. `arch`, `os` and `libc` are fixed at build
/// time; the rest is probed when [`Platform::detect`] runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub arch: &'static str,
    pub os: &'static str,
    /// From `cfg(target_env)`: `gnu`, `musl`, `msvc`, `uclibc`, ... or `none`.
    pub libc: &'static str,
    pub cpu_features: Vec<&'static str>,
    pub io_uring: IoUring,
    pub cores: usize,
    pub total_memory_bytes: Option<u64>,
    pub class: PlatformClass,
}

impl Platform {
    pub fn detect() -> Platform {
        let total_memory_bytes = total_memory_bytes();
        Platform {
            arch: std::env::consts::ARCH,
            os: std::env::consts::OS,
            libc: TARGET_LIBC,
            cpu_features: cpu_features::detect(),
            io_uring: detect_io_uring(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            total_memory_bytes,
            class: class_for(std::env::consts::ARCH, total_memory_bytes),
        }
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        let memory = match self.total_memory_bytes {
            Some(bytes) => format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64),
            None => "unknown".to_owned(),
        };
        let features = if self.cpu_features.is_empty() {
            "none detected".to_owned()
        } else {
            self.cpu_features.join(",")
        };
        format!(
            "platform: arch={} os={}/{} cores={} memory={} class={} cpu_features={} fast_paths={} io_uring={}",
            self.arch,
            self.os,
            self.libc,
            self.cores,
            memory,
            self.class,
            features,
            crate::accel::summary().replace(' ', ","),
            self.io_uring
        )
    }
}

/// The class for an architecture name (`std::env::consts::ARCH` or the first
/// component of a target triple, e.g. `armv7`, `riscv64gc`, `mipsel`) and the
/// machine's RAM, if known.
pub fn class_for(arch: &str, total_memory_bytes: Option<u64>) -> PlatformClass {
    let arch = arch.to_ascii_lowercase();
    let server = arch.starts_with("x86_64") || arch.starts_with("aarch64") || arch == "arm64";
    let small = arch.starts_with("arm")
        || arch.starts_with("thumb")
        || arch.starts_with("riscv")
        || arch.starts_with("mips");
    if server {
        match total_memory_bytes {
            Some(bytes) if bytes < HIGH_PERF_MIN_MEMORY_BYTES => PlatformClass::Embedded,
            _ => PlatformClass::HighPerf,
        }
    } else if small {
        PlatformClass::Embedded
    } else {
        PlatformClass::Generic
    }
}

/// The class this binary was built for, before any run-time probing.
pub fn build_class() -> PlatformClass {
    class_for(std::env::consts::ARCH, None)
}

/// The C library the binary was built against (`cfg(target_env)`).
pub const TARGET_LIBC: &str = if cfg!(target_env = "gnu") {
    "gnu"
} else if cfg!(target_env = "musl") {
    "musl"
} else if cfg!(target_env = "msvc") {
    "msvc"
} else if cfg!(target_env = "uclibc") {
    "uclibc"
} else if cfg!(target_env = "newlib") {
    "newlib"
} else if cfg!(target_env = "sgx") {
    "sgx"
} else if cfg!(target_env = "ohos") {
    "ohos"
} else {
    "none"
};

fn total_memory_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_total(&text))
}

/// `MemTotal` from `/proc/meminfo` text, in bytes.
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    let scale = match fields.next() {
        Some("kB") | Some("KB") | Some("kiB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(scale)
}

#[cfg(target_os = "linux")]
fn detect_io_uring() -> IoUring {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok());
    if sysctl == Some(2) {
        return IoUring::Unavailable("disabled by sysctl kernel.io_uring_disabled=2".to_owned());
    }
    // struct io_uring_params is 120 bytes; all-zero asks for a plain ring.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes at most sizeof(io_uring_params)
    // (120) bytes through the pointer, which points at a live 120-byte buffer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1 as libc::c_uint,
            params.as_mut_ptr(),
        )
    };
    if ret >= 0 {
        // SAFETY: ret is a file descriptor we own and nothing else refers to.
        unsafe { libc::close(ret as libc::c_int) };
        return IoUring::Available;
    }
    let err = std::io::Error::last_os_error();
    IoUring::Unavailable(io_uring_error_reason(err.raw_os_error(), sysctl))
}

#[cfg(not(target_os = "linux"))]
fn detect_io_uring() -> IoUring {
    IoUring::Unavailable(format!("not Linux ({})", std::env::consts::OS))
}

/// Why `io_uring_setup` failed, from its errno and `kernel.io_uring_disabled`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn io_uring_error_reason(errno: Option<i32>, sysctl: Option<u8>) -> String {
    match errno {
        Some(libc::ENOSYS) => {
            "io_uring_setup: ENOSYS (kernel older than 5.1, built without io_uring, \
             or blocked by a seccomp filter)"
                .to_owned()
        }
        Some(libc::EPERM) if sysctl == Some(1) => {
            "io_uring_setup: EPERM (sysctl kernel.io_uring_disabled=1 allows only \
             privileged processes or members of kernel.io_uring_group)"
                .to_owned()
        }
        Some(libc::EPERM) => {
            "io_uring_setup: EPERM (blocked by seccomp or the container runtime)".to_owned()
        }
        Some(libc::EINVAL) => {
            "io_uring_setup: EINVAL (kernel too old for a default io_uring_params)".to_owned()
        }
        Some(libc::ENOMEM) => {
            "io_uring_setup: ENOMEM (locked-memory limit too low, see ulimit -l)".to_owned()
        }
        Some(code) => format!(
            "io_uring_setup: {}",
            std::io::Error::from_raw_os_error(code)
        ),
        None => "io_uring_setup failed without an errno".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn class_for_table() {
        let cases: &[(&str, Option<u64>, PlatformClass)] = &[
            ("x86_64", None, PlatformClass::HighPerf),
            ("x86_64", Some(16 * GIB), PlatformClass::HighPerf),
            ("x86_64", Some(GIB), PlatformClass::HighPerf),
            ("x86_64", Some(GIB - 1), PlatformClass::Embedded),
            ("aarch64", Some(8 * GIB), PlatformClass::HighPerf),
            ("aarch64", Some(512 << 20), PlatformClass::Embedded),
            ("arm64", None, PlatformClass::HighPerf),
            ("arm", Some(32 * GIB), PlatformClass::Embedded),
            ("armv7", None, PlatformClass::Embedded),
            ("thumbv7neon", None, PlatformClass::Embedded),
            ("riscv32", None, PlatformClass::Embedded),
            ("riscv64", Some(64 * GIB), PlatformClass::Embedded),
            ("riscv64gc", None, PlatformClass::Embedded),
            ("mips", None, PlatformClass::Embedded),
            ("mipsel", None, PlatformClass::Embedded),
            ("x86", Some(4 * GIB), PlatformClass::Generic),
            ("powerpc64", None, PlatformClass::Generic),
            ("s390x", Some(GIB / 2), PlatformClass::Generic),
            ("", None, PlatformClass::Generic),
        ];
        for (arch, mem, want) in cases {
            assert_eq!(class_for(arch, *mem), *want, "class_for({arch:?}, {mem:?})");
        }
    }

    #[test]
    fn class_names_round_trip() {
        for class in PlatformClass::ALL {
            assert_eq!(class.as_str().parse::<PlatformClass>(), Ok(class));
            assert_eq!(class.to_string(), class.as_str());
        }
        assert_eq!("High-Perf".parse(), Ok(PlatformClass::HighPerf));
        for flavor in [RuntimeFlavor::MultiThread, RuntimeFlavor::CurrentThread] {
            assert_eq!(flavor.as_str().parse::<RuntimeFlavor>(), Ok(flavor));
        }
        assert_eq!("current-thread".parse(), Ok(RuntimeFlavor::CurrentThread));
    }

    #[test]
    fn from_str_errors_list_valid_names() {
        let err = "server".parse::<PlatformClass>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown platform class `server` (valid: high_perf, embedded, generic)"
        );
        let err = "threaded".parse::<RuntimeFlavor>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown runtime flavor `threaded` (valid: multi_thread, current_thread)"
        );
    }

    #[test]
    fn serde_names_match_as_str() {
        // The config file and reports use the serde names; they must agree with as_str.
        #[derive(Deserialize)]
        struct Holder {
            class: PlatformClass,
            runtime: RuntimeFlavor,
        }
        let h: Holder = toml::from_str("class = \"embedded\"\nruntime = \"current_thread\"")
            .expect("valid toml");
        assert_eq!(h.class, PlatformClass::Embedded);
        assert_eq!(h.runtime, RuntimeFlavor::CurrentThread);
        assert!(toml::from_str::<Holder>("class = \"big\"\nruntime = \"multi_thread\"").is_err());
    }

    #[test]
    fn defaults_per_class() {
        let hp = PlatformClass::HighPerf.defaults();
        assert_eq!(hp.max_connections, 1_000_000);
        assert_eq!(hp.runtime, RuntimeFlavor::MultiThread);
        assert_eq!(hp.worker_threads, None);
        assert_eq!((hp.read_buffer_size, hp.max_packet_size), (8192, 1 << 20));
        assert_eq!((hp.max_queued_messages, hp.max_inflight), (1000, 100));

        let emb = PlatformClass::Embedded.defaults();
        assert_eq!(emb.max_connections, 1024);
        assert_eq!(emb.runtime, RuntimeFlavor::CurrentThread);
        assert_eq!(emb.worker_threads, Some(1));
        assert_eq!(
            (emb.read_buffer_size, emb.max_packet_size),
            (2048, 256 << 10)
        );
        assert_eq!((emb.max_queued_messages, emb.max_inflight), (100, 20));

        let gen = PlatformClass::Generic.defaults();
        assert_eq!(gen.max_connections, 10_000);
        assert_eq!(gen.runtime, RuntimeFlavor::MultiThread);
        assert_eq!(gen.worker_threads, None);
        assert_eq!((gen.read_buffer_size, gen.max_packet_size), (4096, 1 << 20));
        assert_eq!((gen.max_queued_messages, gen.max_inflight), (1000, 20));
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:       16318412 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(16318412 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 12 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: 12 MB\n"), None);
    }

    #[test]
    fn cpuinfo_parsing() {
        let armv7 = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\n\
                     Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm crc32\n\
                     processor\t: 1\nFeatures\t: half thumb neon\n";
        assert_eq!(
            cpu_features_from_cpuinfo(armv7),
            vec![
                "half", "thumb", "vfp", "edsp", "neon", "vfpv3", "vfpv4", "idiva", "idivt", "lpae",
                "crc32"
            ]
        );
        let riscv =
            "processor\t: 0\nhart\t\t: 0\nisa\t\t: rv64imafdcv_zicsr_zifencei_zba_zbb_sstc\n";
        assert_eq!(
            cpu_features_from_cpuinfo(riscv),
            vec!["i", "m", "a", "f", "d", "c", "v", "zicsr", "zifencei", "zba", "zbb"]
        );
        assert!(cpu_features_from_cpuinfo("").is_empty());
        assert!(cpu_features_from_cpuinfo("garbage without colon\n").is_empty());
    }

    #[test]
    fn io_uring_reasons_name_the_cause() {
        assert!(io_uring_error_reason(Some(libc::ENOSYS), None).contains("ENOSYS"));
        assert!(io_uring_error_reason(Some(libc::EPERM), Some(1))
            .contains("kernel.io_uring_disabled=1"));
        assert!(io_uring_error_reason(Some(libc::EPERM), Some(0)).contains("seccomp"));
        assert!(io_uring_error_reason(Some(libc::EINVAL), None).contains("EINVAL"));
    }

    #[test]
    fn detect_on_this_host() {
        let p = Platform::detect();
        assert_eq!(p.arch, std::env::consts::ARCH);
        assert_eq!(p.os, std::env::consts::OS);
        assert_eq!(p.class, class_for(p.arch, p.total_memory_bytes));
        assert!(p.cores >= 1);
        if cfg!(target_arch = "x86_64") {
            assert!(matches!(
                p.class,
                PlatformClass::HighPerf | PlatformClass::Embedded
            ));
            const PROBED: &[&str] = &[
                "sse4.2",
                "popcnt",
                "avx",
                "avx2",
                "avx512f",
                "aes",
                "pclmulqdq",
                "bmi2",
            ];
            assert!(
                p.cpu_features.iter().all(|f| PROBED.contains(f)),
                "{:?}",
                p.cpu_features
            );
            // AVX2 implies AVX; a detector that reports one without the other is broken.
            if p.cpu_features.contains(&"avx2") {
                assert!(p.cpu_features.contains(&"avx"), "{:?}", p.cpu_features);
            }
        }
        if cfg!(target_os = "linux") {
            let mem = p
                .total_memory_bytes
                .expect("/proc/meminfo MemTotal on Linux");
            assert!(mem > 16 << 20, "implausible MemTotal {mem}");
        } else {
            assert!(!p.io_uring.is_available());
        }
        let line = p.summary();
        assert!(line.contains(p.arch), "{line}");
        assert!(line.contains(p.class.as_str()), "{line}");
        assert!(line.contains("io_uring="), "{line}");
        assert!(line.contains(" fast_paths=crc32c="), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}
