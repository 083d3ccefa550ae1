//! CPU-feature fast paths, each chosen at run time with a portable fallback:
//! CRC32C for Kafka record batches and the record logs, and UTF-8
//! validation of MQTT strings and payloads.
//!
//! Both come from well-kept crates that do the run-time detection
//! themselves and cache it (no per-call probing): `crc32c` (SSE4.2 `crc32`
//! on x86_64, the ARMv8 CRC extension on aarch64, slice-by-8 tables
//! elsewhere) and `simdutf8` (AVX2 or SSE4.2 on x86_64, NEON on aarch64, the
//! standard library below 64 bytes and elsewhere). Each is kept because
//! `bench/benches/fast_paths.rs` shows it beating the portable code on the
//! architecture it targets; docs/micro.md has the numbers. A fast path that
//! does not pay does not belong here.
//!
//! `bench/tests/fast_paths.rs` checks every accelerated path against the
//! portable one on the same inputs; CI runs it natively and under
//! qemu-aarch64, so both architectures' instructions are exercised.

/// CRC-32C (Castagnoli), as Kafka record batches (magic 2) and the broker's
/// own record logs carry it.
pub mod crc32c {
    /// The checksum of `data`: hardware CRC instructions when the CPU has
    /// them, tables otherwise.
    #[inline]
    pub fn checksum(data: &[u8]) -> u32 {
        ::crc32c::crc32c(data)
    }

    /// Which implementation [`checksum`] runs on this CPU: the same probe
    /// the `crc32c` crate (0.6) makes, repeated here only to name it.
    pub fn implementation() -> &'static str {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.2") {
            return "sse4.2";
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("crc") {
            return "armv8-crc";
        }
        "portable"
    }
}

/// UTF-8 validation (MQTT strings, and payloads flagged as UTF-8).
pub mod utf8 {
    /// `Some(str)` when `bytes` are valid UTF-8 (overlong forms and
    /// surrogates rejected, exactly as `std::str::from_utf8` does).
    #[inline]
    pub fn validate(bytes: &[u8]) -> Option<&str> {
        // simdutf8 itself sends inputs shorter than one SIMD block (64 bytes,
        // most topic names and client ids) to the standard library's code, and
        // caches the implementation it picked on first use.
        simdutf8::basic::from_utf8(bytes).ok()
    }

    /// Which implementation [`validate`] runs on this CPU for inputs of 64
    /// bytes and more (shorter ones always take the standard library's path).
    pub fn implementation() -> &'static str {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return "avx2";
            }
            if std::arch::is_x86_feature_detected!("sse4.2") {
                return "sse4.2";
            }
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        return "neon";
        #[allow(unreachable_code)]
        "portable"
    }
}

/// `crc32c=<impl> utf8=<impl>`, for the start-up line and reports.
pub fn summary() -> String {
    format!(
        "crc32c={} utf8={}",
        crc32c::implementation(),
        utf8::implementation()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_both() {
        let s = summary();
        assert!(s.starts_with("crc32c=") && s.contains(" utf8="), "{s}");
    }
}
