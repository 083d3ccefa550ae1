//! Every CPU-feature fast path of `broker::accel` next to the portable code
//! it replaces, on the same inputs: a fast path stays only while this shows
//! a gain on the architecture it targets.
//!
//! - `crc32c/accelerated` is `broker::accel::crc32c::checksum` (the `crc32c`
//!   crate: SSE4.2 or ARMv8 CRC when detected); `crc32c/portable` is the
//!   `crc` crate's slice-by-16 tables, the fastest portable CRC-32C we know
//!   of (the crate's own fallback, slice-by-8, is not public).
//! - `utf8/accelerated` is `broker::accel::utf8::validate` (`simdutf8`:
//!   AVX2/SSE4.2/NEON at 64 bytes and more); `utf8/portable` is
//!   `std::str::from_utf8`, what the broker used before.

use std::hint::black_box;

use broker::accel;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PORTABLE_CRC32C: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

const SIZES: [(&str, usize); 4] = [
    ("64B", 64),
    ("1KiB", 1024),
    ("64KiB", 64 * 1024),
    ("1MiB", 1 << 20),
];

fn crc32c(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for (label, len) in SIZES {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("accelerated", label), &data, |b, d| {
            b.iter(|| accel::crc32c::checksum(black_box(d)))
        });
        group.bench_with_input(BenchmarkId::new("portable", label), &data, |b, d| {
            b.iter(|| PORTABLE_CRC32C.checksum(black_box(d)))
        });
    }
    group.finish();
}

/// Text of exactly `len` bytes: plain ASCII (JSON telemetry) or mixed
/// multi-byte (UTF-8 text in several scripts, cut on a character boundary
/// and padded with spaces).
fn text(len: usize, multibyte: bool) -> Vec<u8> {
    let unit = if multibyte {
        "Grüße aus Zürich, 東京 と 🚀 — 21.5°C; "
    } else {
        r#"{"device":"press-12","temperature":21.5,"ok":true},"#
    };
    let s = unit.repeat(len / unit.len() + 1);
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s.as_bytes()[..end].to_vec();
    out.resize(len, b' ');
    out
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    // 24 B is a typical topic name: below 64 B both sides run the same std
    // code, so any difference there is measurement noise.
    for (label, len) in [
        ("24B", 24),
        ("64B", 64),
        ("1KiB", 1024),
        ("64KiB", 64 * 1024),
    ] {
        for (kind, multibyte) in [("ascii", false), ("multibyte", true)] {
            let data = text(len, multibyte);
            assert!(std::str::from_utf8(&data).is_ok());
            group.throughput(Throughput::Bytes(data.len() as u64));
            let param = format!("{kind}_{label}");
            group.bench_with_input(BenchmarkId::new("accelerated", &param), &data, |b, d| {
                b.iter(|| accel::utf8::validate(black_box(d)).is_some())
            });
            group.bench_with_input(BenchmarkId::new("portable", &param), &data, |b, d| {
                b.iter(|| std::str::from_utf8(black_box(d)).is_ok())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, crc32c, utf8);
criterion_main!(benches);
