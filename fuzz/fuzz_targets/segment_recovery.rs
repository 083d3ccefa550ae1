//! Recovery of a corrupted Kafka log segment: the input is written as the
//! only segment of a partition directory and `SegmentedLog::open` recovers
//! it. Recovery must not panic, and everything the log then returns must be
//! whole, valid batches that were written, in order, from the start of the
//! file (what recovery keeps is a prefix of what was on disk).
//!
//! First byte bit 0: give every whole batch a correct CRC32C; bit 1: also
//! number the batches from offset 0 as the log does (so recovery keeps them).
#![no_main]

use std::fs;

use broker::storage::partition_log::{batch, LogConfig, SegmentedLog};
use broker_fuzz::{fix_batches, peak_during, scratch_dir, Counting, Factor};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Recovery reads through a 64 KiB buffer and keeps one batch plus one index
/// entry (8 bytes) per 4 KiB of log.
const FACTOR: Factor = Factor {
    k: 4,
    c: 256 * 1024,
    enforce: true,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut input = rest.to_vec();
    if flags & 3 != 0 {
        fix_batches(&mut input, flags & 2 != 0, 0);
    }
    let dir = scratch_dir();
    let part = dir.path().join("t-0");
    fs::create_dir(&part).unwrap();
    let seg = part.join(format!("{:020}.log", 0));
    fs::write(&seg, &input).unwrap();

    let (log, peak) = peak_during(|| SegmentedLog::open(&part, LogConfig::default()));
    FACTOR.check("segment recovery", input.len(), peak);
    let log = log.expect("recovery of a corrupted segment must succeed");

    let kept = fs::read(&seg).unwrap();
    assert!(
        input.starts_with(&kept),
        "recovery kept bytes that were not written"
    );
    assert_eq!(log.start_offset(), 0);

    // Read the whole log back: whole valid batches, the file's bytes in order.
    let mut offset = 0i64;
    let mut pos = 0usize;
    for _ in 0..=kept.len() / batch::HEADER_LEN {
        if offset >= log.next_offset() {
            break;
        }
        let bytes = log.read(offset, 1 << 20).expect("read of a recovered log");
        if bytes.is_empty() {
            break;
        }
        assert!(
            kept[pos..].starts_with(&bytes),
            "read returned bytes that are not the next ones in the file"
        );
        let mut at = 0;
        while at < bytes.len() {
            let h = batch::BatchHeader::parse(&bytes[at..]).expect("a whole batch header");
            let whole = &bytes[at..at + h.total_len()];
            batch::check_crc(whole, &h).expect("a batch with a valid CRC");
            assert_eq!(h.base_offset, offset, "batches follow each other");
            offset = h.last_offset().saturating_add(1);
            at += h.total_len();
        }
        pos += bytes.len();
    }
    assert_eq!(pos, kept.len(), "every kept byte is readable");
    assert_eq!(
        offset,
        log.next_offset(),
        "next offset follows the last batch"
    );
    let next = log.next_offset();
    drop(log);

    // Recovery is idempotent: a second open keeps the same log.
    let again = SegmentedLog::open(&part, LogConfig::default()).expect("second recovery");
    assert_eq!(again.next_offset(), next);
    assert_eq!(fs::read(&seg).unwrap(), kept);
});
