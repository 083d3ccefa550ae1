//! Recovery of a corrupted AMQP record file (`storage::record_file`): the
//! input is written as a file and `RecordLog::open` recovers it. Recovery
//! must not panic, and the records it returns must be exactly the whole,
//! checksummed records at the start of the file, which is cut after them.
//! The same bytes as the definitions file and as a durable queue's file of
//! an AMQP store then go through `Store::open` and `Store::open_queue_log`,
//! which decode every record (AMQP method, content header and body frames).
//!
//! First byte bit 0: give every whole record a correct CRC32C first.
#![no_main]

use std::fs;

use broker::amqp::store::Store;
use broker::storage::RecordLog;
use broker_fuzz::{fix_records, peak_during, scratch_dir, Counting, Factor};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Records are returned (a `Vec` of 24 bytes per record of at least 8 bytes),
/// read through a 64 KiB buffer.
const FACTOR: Factor = Factor {
    k: 8,
    c: 256 * 1024,
    enforce: true,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut input = rest.to_vec();
    if flags & 1 == 1 {
        fix_records(&mut input);
    }
    let dir = scratch_dir();
    let path = dir.path().join("q.log");
    fs::write(&path, &input).unwrap();

    let (opened, peak) = peak_during(|| RecordLog::open(&path));
    FACTOR.check("record file recovery", input.len(), peak);
    let (log, records) = opened.expect("recovery of a corrupted record file must succeed");

    let kept = fs::read(&path).unwrap();
    assert!(
        input.starts_with(&kept),
        "recovery kept bytes that were not written"
    );
    assert_eq!(log.len(), kept.len() as u64);
    let mut pos = 0usize;
    for record in &records {
        let head = &kept[pos..pos + 8];
        let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let crc = u32::from_be_bytes(head[4..].try_into().unwrap());
        assert_eq!(len, record.len());
        assert_eq!(&kept[pos + 8..pos + 8 + len], &record[..]);
        assert_eq!(broker::accel::crc32c::checksum(record), crc);
        pos += 8 + len;
    }
    assert_eq!(
        pos,
        kept.len(),
        "the file is cut right after the last record returned"
    );
    drop(log);

    // The same bytes as an AMQP store's definitions: every record decoded.
    let root = dir.path().join("store");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("definitions.log"), &input).unwrap();
    let (opened, peak) = peak_during(|| Store::open(&root));
    FACTOR.check("amqp store open", input.len(), peak);
    let (mut store, definitions) = opened.expect("a store with corrupted definitions must open");
    assert!(definitions.len() <= records.len());

    // And as the file of durable queue "q" (hex name 71): every record
    // decoded as an enqueue (content frames) or a removal.
    let queues = root.join("queues");
    fs::create_dir(&queues).unwrap();
    fs::write(queues.join("71.log"), &input).unwrap();
    let (opened, peak) = peak_during(|| store.open_queue_log("q").map(|(_, m)| m.len()));
    FACTOR.check("amqp queue file open", input.len(), peak);
    let messages = opened.expect("a corrupted queue file must open");
    assert!(messages <= records.len());
});
