//! Every fast path of `broker::accel` against the portable code on the same
//! inputs. CI runs this natively (x86_64: SSE4.2 CRC, AVX2/SSE4.2 UTF-8) and
//! under qemu-aarch64 (ARMv8 CRC, NEON), so each architecture's path runs.
//!
//! On a CPU without the features only the portable code can be compared, and
//! the tests say so in their output. CI sets `FAST_PATHS_REQUIRED=1`: there a
//! missing accelerated path is a failure, not a note, so the comparison can
//! never quietly turn into portable-against-portable.

use broker::accel::{crc32c, utf8};

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Whether CI demands that the accelerated paths actually ran.
fn required() -> bool {
    std::env::var_os("FAST_PATHS_REQUIRED").is_some_and(|v| v == "1")
}

/// Fails under `FAST_PATHS_REQUIRED=1` when `what` has no accelerated
/// implementation on this CPU; otherwise says so in the output.
fn accelerated_or_note(what: &str, implementation: &str) {
    if implementation == "portable" {
        assert!(
            !required(),
            "FAST_PATHS_REQUIRED=1 but this CPU has no accelerated {what}: \
             the test would only compare portable code with portable code"
        );
        eprintln!("note: this CPU has no accelerated {what}; only the portable path was compared");
    }
}

const PORTABLE_CRC32C: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

#[test]
fn crc32c_accelerated_matches_the_portable_tables() {
    eprintln!(
        "crc32c implementation on this CPU: {}",
        crc32c::implementation()
    );
    accelerated_or_note("CRC-32C", crc32c::implementation());
    // The check value of CRC-32/ISCSI.
    assert_eq!(crc32c::checksum(b"123456789"), 0xE306_9283);
    let data = noise(70_008, 42);
    // Every length up to 300 (the hardware path handles 8-byte words,
    // then a tail), every start alignment, and large blocks (interleaved
    // streams in the hardware path).
    for len in (0..300).chain([1023, 1024, 4095, 4096, 8192, 65_536, 69_999]) {
        for start in 0..8 {
            let slice = &data[start..start + len];
            assert_eq!(
                crc32c::checksum(slice),
                PORTABLE_CRC32C.checksum(slice),
                "len {len} start {start}"
            );
        }
    }
}

/// Inputs around the places UTF-8 validators get wrong: sequences cut at
/// the end, overlong forms, surrogates, code points past U+10FFFF, and a
/// bad byte at every position of a SIMD block.
fn utf8_cases() -> Vec<Vec<u8>> {
    let mut cases: Vec<Vec<u8>> = Vec::new();
    let text = "Grüße aus Zürich, 東京 と 🚀 — temperature=21.5°C ".repeat(40);
    for len in [0, 1, 15, 16, 63, 64, 65, 127, 128, 1000, text.len()] {
        cases.push(text.as_bytes()[..len.min(text.len())].to_vec());
    }
    let bad: [&[u8]; 9] = [
        b"\xC0\xAF",         // overlong '/'
        b"\xE0\x80\xAF",     // overlong, 3 bytes
        b"\xED\xA0\x80",     // surrogate U+D800
        b"\xF4\x90\x80\x80", // U+110000
        b"\xF8\x88\x80\x80", // 5-byte form
        b"\x80",             // lone continuation
        b"\xE6\x9D",         // cut 3-byte sequence
        b"\xF0\x9F\x9A",     // cut 4-byte sequence
        b"\xFF",
    ];
    let ascii = vec![b'a'; 200];
    for seq in bad {
        for at in [0, 1, 31, 32, 63, 64, 65, 127, 190] {
            let mut case = ascii.clone();
            case.splice(at..at, seq.iter().copied());
            cases.push(case);
        }
    }
    for seed in 0..200 {
        let mut case = text.as_bytes()[..300].to_vec();
        let n = noise(2, seed);
        case[n[0] as usize] = n[1];
        cases.push(case);
        cases.push(noise(100 + seed as usize, seed));
    }
    cases
}

#[test]
fn utf8_accelerated_matches_std() {
    eprintln!(
        "utf8 implementation on this CPU: {}",
        utf8::implementation()
    );
    let cases = utf8_cases();
    let invalid = cases
        .iter()
        .filter(|c| std::str::from_utf8(c).is_err())
        .count();
    assert!(
        invalid > 100 && invalid < cases.len() - 10,
        "both kinds covered"
    );
    for case in &cases {
        assert_eq!(
            utf8::validate(case),
            std::str::from_utf8(case).ok(),
            "{case:02x?}"
        );
    }
}

/// The dispatcher above picks one implementation; run each one this CPU
/// has directly, so a fallback cannot hide a broken SIMD path.
#[test]
#[cfg(target_arch = "x86_64")]
fn utf8_every_x86_implementation_matches_std() {
    use simdutf8::basic::imp::x86::{avx2, sse42};
    let cases = utf8_cases();
    let mut ran = Vec::new();
    if std::arch::is_x86_feature_detected!("avx2") {
        ran.push("avx2");
        for case in &cases {
            let ok = unsafe { avx2::validate_utf8(case) }.is_ok();
            assert_eq!(ok, std::str::from_utf8(case).is_ok(), "avx2 {case:02x?}");
        }
    }
    if std::arch::is_x86_feature_detected!("sse4.2") {
        ran.push("sse4.2");
        for case in &cases {
            let ok = unsafe { sse42::validate_utf8(case) }.is_ok();
            assert_eq!(ok, std::str::from_utf8(case).is_ok(), "sse4.2 {case:02x?}");
        }
    }
    eprintln!("utf8 implementations compared with std: {ran:?}");
    accelerated_or_note(
        "UTF-8 validation",
        ran.first().copied().unwrap_or("portable"),
    );
}

/// NEON is part of every aarch64 CPU, so there is nothing to detect; run it
/// directly all the same, as on x86_64.
#[test]
#[cfg(target_arch = "aarch64")]
fn utf8_neon_implementation_matches_std() {
    use simdutf8::basic::imp::aarch64::neon;
    for case in &utf8_cases() {
        let ok = unsafe { neon::validate_utf8(case) }.is_ok();
        assert_eq!(ok, std::str::from_utf8(case).is_ok(), "neon {case:02x?}");
    }
    eprintln!("utf8 implementations compared with std: [\"neon\"]");
}
