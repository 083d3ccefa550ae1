//! The CPU features the broker reports (start-up line, metrics, reports):
//! std's run-time detection on x86/x86_64 and aarch64, `/proc/cpuinfo`
//! elsewhere.
//!
//! Std only, no crate dependencies: `xtask` compiles this same file (by
//! `#[path]`) for the host's features in report environments, so the host
//! and target lists use the same probes and names.

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub fn detect() -> Vec<&'static str> {
    let mut found = Vec::new();
    macro_rules! probe {
        ($($name:tt),*) => {
            $(if std::is_x86_feature_detected!($name) { found.push($name); })*
        };
    }
    probe!(
        "sse4.2",
        "popcnt",
        "avx",
        "avx2",
        "avx512f",
        "aes",
        "pclmulqdq",
        "bmi2"
    );
    found
}

#[cfg(target_arch = "aarch64")]
pub fn detect() -> Vec<&'static str> {
    let mut found = Vec::new();
    macro_rules! probe {
        ($($name:tt),*) => {
            $(if std::arch::is_aarch64_feature_detected!($name) { found.push($name); })*
        };
    }
    probe!("neon", "crc", "aes", "sha2", "lse", "sve");
    found
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
pub fn detect() -> Vec<&'static str> {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|text| from_cpuinfo(&text))
        .unwrap_or_default()
}

/// Features worth reporting from `/proc/cpuinfo` on architectures without a
/// std detection macro: ARM `Features` flags and RISC-V `isa` extensions.
#[rustfmt::skip]
const CPUINFO_FEATURES: &[&str] = &[
    // 32-bit ARM
    "neon", "vfp", "vfpv3", "vfpv4", "idiva", "idivt", "lpae", "crc32", "aes", "pmull",
    "sha1", "sha2", "thumb", "edsp", "half",
    // RISC-V single-letter and multi-letter extensions
    "i", "m", "a", "f", "d", "c", "v",
    "zba", "zbb", "zbc", "zbs", "zicsr", "zifencei", "zicbom", "zicboz", "zihintpause",
    "zfh", "zvfh", "zkt",
    // MIPS (`ASEs implemented`)
    "mips16", "dsp", "dsp2", "msa", "vz",
];

/// Parse `/proc/cpuinfo` text best-effort: the first `Features` line (ARM),
/// `isa` line (RISC-V) or `ASEs implemented` line (MIPS). Unknown flags are
/// dropped so the result can stay `&'static str`.
pub fn from_cpuinfo(cpuinfo: &str) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = Vec::new();
    let mut push = |name: &str| {
        if let Some(known) = CPUINFO_FEATURES.iter().find(|k| **k == name) {
            if !found.contains(known) {
                found.push(known);
            }
        }
    };
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "Features" | "ASEs implemented" => {
                value.split_whitespace().for_each(&mut push);
                break;
            }
            "isa" => {
                let isa = value.trim().to_ascii_lowercase();
                let mut parts = isa.split('_');
                let base = parts.next().unwrap_or_default();
                let letters = base
                    .strip_prefix("rv64")
                    .or_else(|| base.strip_prefix("rv32"))
                    .unwrap_or_default();
                let mut buf = [0u8; 4];
                for letter in letters.chars() {
                    push(letter.encode_utf8(&mut buf));
                }
                parts.for_each(&mut push);
                break;
            }
            _ => {}
        }
    }
    found
}
