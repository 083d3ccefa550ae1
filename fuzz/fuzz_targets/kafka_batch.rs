//! Record-batch validation, the check Produce runs on client data before it
//! reaches a log (`storage::partition_log::batch::validate_batches`), plus
//! the header walks fetch and ListOffsets make over stored batches.
//!
//! First byte bit 0: give every whole batch a correct CRC32C first, so the
//! fuzzer explores the checks behind the checksum.
#![no_main]

use broker::storage::partition_log::batch;
use broker_fuzz::{fix_batches, peak_during, Counting, Factor};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// One (range, header) entry per batch of at least 61 bytes.
const FACTOR: Factor = Factor {
    k: 4,
    c: 4096,
    enforce: true,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut input = rest.to_vec();
    if flags & 1 == 1 {
        fix_batches(&mut input, false, 0);
    }
    let (result, peak) = peak_during(|| batch::validate_batches(&input));
    FACTOR.check("validate_batches", input.len(), peak);
    let Ok(batches) = result else {
        return;
    };
    let mut at = 0;
    for (range, header) in &batches {
        assert_eq!(range.start, at, "batches must be contiguous");
        assert_eq!(range.len(), header.total_len());
        assert!(header.record_count > 0);
        assert_eq!(header.offset_count(), i64::from(header.record_count));
        let b = &input[range.clone()];
        let _ = batch::first_offset_at_or_after(b, header, header.max_timestamp);
        let _ = header.last_offset();
        let _ = header.last_sequence();
        at = range.end;
    }
    assert_eq!(at, input.len(), "validated batches must cover the data");
    let _ = batch::count_records(&input);
});
