//! Shared parts of the fuzz targets: a counting global allocator for the
//! allocation-factor check, and fix-ups that give inputs valid checksums so
//! the fuzzer gets past CRC checks into the code behind them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The global allocator of every target: `System`, counting the bytes live
/// and the peak since the last [`peak_during`].
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(by: usize) {
    LIVE.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// Runs `f` and returns its result with the most bytes that were live at
/// once during it beyond those live before it (what `f` allocated at its peak).
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    (r, peak)
}

/// The allocation factor every decoder must keep: at its peak a decode has
/// allocated at most `k * received + c` bytes, `received` being the bytes of
/// the frame (or file) it was given.
#[derive(Debug, Clone, Copy)]
pub struct Factor {
    pub k: usize,
    pub c: usize,
    /// false: excesses are reported (each new worst ratio, on stderr), not
    /// failed, for a decoder whose excess is known and being fixed elsewhere.
    pub enforce: bool,
}

static WORST_PERMILLE: AtomicUsize = AtomicUsize::new(0);

impl Factor {
    /// Panics (a fuzz finding) when `peak` is beyond the factor.
    /// `BROKER_FUZZ_ALLOC=off` turns the check off, `report` reports instead
    /// of failing, `strict` fails even where `enforce` is false.
    pub fn check(self, what: &str, received: usize, peak: usize) {
        let bound = self.k.saturating_mul(received).saturating_add(self.c);
        if peak <= bound {
            return;
        }
        let message = format!(
            "allocation factor: {what}: {peak} bytes allocated for {received} received \
             (bound {} * {received} + {} = {bound})",
            self.k, self.c
        );
        let mode = std::env::var("BROKER_FUZZ_ALLOC").unwrap_or_default();
        let enforce = match mode.as_str() {
            "off" => return,
            "report" => false,
            "strict" => true,
            _ => self.enforce,
        };
        if enforce {
            panic!("{message}");
        }
        // Report each new worst ratio of (peak - c) to the bytes received.
        let permille = peak.saturating_sub(self.c).saturating_mul(1000) / received.max(1);
        if WORST_PERMILLE.fetch_max(permille, Ordering::Relaxed) < permille {
            eprintln!(
                "{message}; new worst factor {}.{:03} (not enforced)",
                permille / 1000,
                permille % 1000
            );
        }
    }
}

/// Kafka record batch layout (v2): base offset, length, leader epoch, magic,
/// CRC32C of everything from the attributes on.
const BATCH_LEN_AT: usize = 8;
const BATCH_CRC_AT: usize = 17;
const BATCH_CRC_START: usize = 21;
const BATCH_DELTA_AT: usize = 23;
const BATCH_HEADER_LEN: usize = 61;

/// Walks `buf` as consecutive record batches and rewrites each whole batch's
/// CRC32C (and, with `offsets`, its base offset so batches follow each other
/// from `first_offset` as a log stores them). Stops at the first batch that
/// does not fit.
pub fn fix_batches(buf: &mut [u8], offsets: bool, first_offset: i64) {
    let mut at = 0usize;
    let mut next = first_offset;
    while buf.len() - at >= BATCH_HEADER_LEN {
        let b = &mut buf[at..];
        let length = i32::from_be_bytes(b[BATCH_LEN_AT..BATCH_LEN_AT + 4].try_into().unwrap());
        let Ok(length) = usize::try_from(length) else {
            return;
        };
        let Some(total) = length.checked_add(12).filter(|&t| t <= b.len()) else {
            return;
        };
        if total < BATCH_HEADER_LEN {
            return;
        }
        if offsets {
            b[..8].copy_from_slice(&next.to_be_bytes());
            let delta =
                i32::from_be_bytes(b[BATCH_DELTA_AT..BATCH_DELTA_AT + 4].try_into().unwrap());
            next = next.saturating_add(i64::from(delta)).saturating_add(1);
        }
        let crc = broker::accel::crc32c::checksum(&b[BATCH_CRC_START..total]);
        b[BATCH_CRC_AT..BATCH_CRC_START].copy_from_slice(&crc.to_be_bytes());
        at += total;
    }
}

/// Walks `buf` as consecutive records of a record file (`len: u32`,
/// `crc32c: u32`, payload) and rewrites each whole record's checksum.
pub fn fix_records(buf: &mut [u8]) {
    let mut at = 0usize;
    while buf.len() - at >= 8 {
        let b = &mut buf[at..];
        let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        let Some(total) = len.checked_add(8).filter(|&t| t <= b.len()) else {
            return;
        };
        let crc = broker::accel::crc32c::checksum(&b[8..total]);
        b[4..8].copy_from_slice(&crc.to_be_bytes());
        at += total;
    }
}

/// A scratch directory on tmpfs when there is one: recovery fsyncs, and an
/// fsync per execution on a disk would slow the fuzzer to a crawl.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("broker-fuzz-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("broker-fuzz-")
        .tempdir()
        .expect("temporary directory")
}
