//! Kafka record batches (magic 2) as the logs store them: header parsing,
//! CRC32C verification, and offset assignment, without decoding records.
//!
//! Layout of one batch (big-endian):
//! ```text
//!  0 base offset i64 | 8 batch length i32 | 12 partition leader epoch i32 | 16 magic i8
//! 17 crc u32 (CRC32C of bytes 21..end) | 21 attributes i16 | 23 last offset delta i32
//! 27 base timestamp i64 | 35 max timestamp i64 | 43 producer id i64 | 51 producer epoch i16
//! 53 base sequence i32 | 57 record count i32 | 61 records...
//! ```
//! The base offset sits outside the CRC, so the broker can assign offsets
//! without recomputing it.

use std::ops::Range;

/// Bytes of the batch header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// Base offset and batch length: what precedes the length-counted part.
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

/// Why a record batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: {have} bytes, need {need}")]
    Truncated { have: usize, need: usize },
    #[error("record batch length {0} is invalid")]
    BadLength(i32),
    #[error("record batch magic {0} is not supported (only magic 2, Kafka 0.11+)")]
    UnsupportedMagic(i8),
    #[error(
        "record batch CRC32C mismatch: header says {stored:#010x}, data gives {computed:#010x}"
    )]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch last offset delta {0} is invalid")]
    BadOffsetDelta(i32),
    #[error("record batch record count {0} is invalid")]
    BadRecordCount(i32),
    #[error(
        "record batch last offset delta {last_offset_delta} does not fit its record count {record_count}"
    )]
    InconsistentOffsets {
        last_offset_delta: i32,
        record_count: i32,
    },
    #[error("record batch announces {announced} records, its bytes hold {found}")]
    RecordCountMismatch { announced: i32, found: u64 },
}

impl BatchError {
    /// Whether the batch is well formed but its header contradicts itself
    /// (Kafka's INVALID_RECORD), rather than damaged (CORRUPT_MESSAGE).
    pub fn is_invalid_record(&self) -> bool {
        matches!(
            self,
            BatchError::BadOffsetDelta(_)
                | BatchError::BadRecordCount(_)
                | BatchError::InconsistentOffsets { .. }
                | BatchError::RecordCountMismatch { .. }
        )
    }
}

/// The fixed header of one record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the length field (so the batch takes `LOG_OVERHEAD + batch_length`).
    pub batch_length: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `b` (which may hold more than one batch).
    pub fn parse(b: &[u8]) -> Result<BatchHeader, BatchError> {
        if b.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                have: b.len(),
                need: HEADER_LEN,
            });
        }
        let header = BatchHeader {
            base_offset: i64_at(b, 0),
            batch_length: i32_at(b, 8),
            magic: b[16] as i8,
            crc: u32::from_be_bytes(b[17..21].try_into().expect("4 bytes")),
            attributes: i16_at(b, 21),
            last_offset_delta: i32_at(b, 23),
            base_timestamp: i64_at(b, 27),
            max_timestamp: i64_at(b, 35),
            producer_id: i64_at(b, 43),
            producer_epoch: i16_at(b, 51),
            base_sequence: i32_at(b, 53),
            record_count: i32_at(b, 57),
        };
        if header.magic != 2 {
            return Err(BatchError::UnsupportedMagic(header.magic));
        }
        if (header.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::BadLength(header.batch_length));
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::BadOffsetDelta(header.last_offset_delta));
        }
        Ok(header)
    }

    /// Bytes the whole batch takes, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// The offset of the last record (saturating: a client may send any base offset).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Records carried, as offsets: `last_offset_delta + 1`.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// Compression codec bits of the attributes (0 = none).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// The last sequence number of an idempotent batch (sequences wrap at i32::MAX).
    pub fn last_sequence(&self) -> i32 {
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

/// Splits produce data into its batches, checking each one's length, magic,
/// CRC32C and that its offsets fit its records (see [`check_offsets`]).
/// Returns the byte range and header of every batch.
pub fn validate_batches(data: &[u8]) -> Result<Vec<(Range<usize>, BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated {
                have: rest.len(),
                need: LOG_OVERHEAD,
            });
        }
        let header = BatchHeader::parse(rest)?;
        let len = header.total_len();
        if rest.len() < len {
            return Err(BatchError::Truncated {
                have: rest.len(),
                need: len,
            });
        }
        check_crc(&rest[..len], &header)?;
        check_offsets(&rest[..len], &header)?;
        out.push((at..at + len, header));
        at += len;
    }
    Ok(out)
}

/// Records in fetched data (whole batches), by walking the headers only.
pub fn count_records(data: &[u8]) -> u64 {
    let mut at = 0;
    let mut n = 0u64;
    while let Ok(h) = BatchHeader::parse(&data[at..]) {
        n += u64::try_from(h.record_count).unwrap_or(0);
        at += h.total_len();
        if at >= data.len() {
            break;
        }
    }
    n
}

/// What Kafka's broker checks of a client's batch before assigning offsets:
/// at least one record, `last_offset_delta == record_count - 1` (the log
/// advances by `last_offset_delta + 1`, so a delta the records do not back
/// would make the log skip or misplace offsets), and, for an uncompressed
/// batch, exactly `record_count` length-prefixed records filling the batch.
/// A compressed batch's records are not decompressed here.
pub fn check_offsets(b: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    if header.record_count <= 0 {
        return Err(BatchError::BadRecordCount(header.record_count));
    }
    if i64::from(header.last_offset_delta) + 1 != i64::from(header.record_count) {
        return Err(BatchError::InconsistentOffsets {
            last_offset_delta: header.last_offset_delta,
            record_count: header.record_count,
        });
    }
    if header.compression() != 0 {
        return Ok(());
    }
    let mut rest = b.get(HEADER_LEN..).unwrap_or_default();
    let mut found = 0u64;
    while !rest.is_empty() {
        let mismatch = BatchError::RecordCountMismatch {
            announced: header.record_count,
            found,
        };
        let (len, n) = read_varint(rest).ok_or(mismatch.clone())?;
        let len = usize::try_from(len).map_err(|_| mismatch.clone())?;
        rest = rest.get(n..).and_then(|r| r.get(len..)).ok_or(mismatch)?;
        found += 1;
    }
    if found != u64::try_from(header.record_count).unwrap_or(0) {
        return Err(BatchError::RecordCountMismatch {
            announced: header.record_count,
            found,
        });
    }
    Ok(())
}

/// Checks the CRC32C of one whole batch (`b` holds exactly the batch).
pub fn check_crc(b: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let computed = crate::accel::crc32c::checksum(&b[CRC_START..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Writes the base offset the log assigns into a batch's first 8 bytes.
pub fn set_base_offset(b: &mut [u8], base_offset: i64) {
    b[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// The offset of the first record with a timestamp at or after `target` in an
/// uncompressed batch (`b` holds exactly the batch); `None` when no record
/// qualifies or the records cannot be read without decompressing.
pub fn first_offset_at_or_after(b: &[u8], header: &BatchHeader, target: i64) -> Option<i64> {
    if header.compression() != 0 {
        return None;
    }
    let mut rest = b.get(HEADER_LEN..)?;
    for _ in 0..header.record_count.max(0) {
        let (len, n) = read_varint(rest)?;
        let len = usize::try_from(len).ok()?;
        let record = rest.get(n..)?.get(..len)?;
        // attributes (1 byte), timestamp delta (varlong), offset delta (varint)
        let (ts_delta, m) = read_varint(record.get(1..)?)?;
        let (offset_delta, _) = read_varint(record.get(1 + m..)?)?;
        if header.base_timestamp.saturating_add(ts_delta) >= target {
            return Some(header.base_offset.saturating_add(offset_delta));
        }
        rest = rest.get(n..)?.get(len..)?;
    }
    None
}

/// A zig-zag varint (as Kafka records use) and the bytes it took.
fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let signed = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((signed, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    // Shared with the benchmarks in bench/.
    use crate::fixtures::kafka::{batch, batch_from, forge};

    #[test]
    fn parses_and_checks_an_encoded_batch() {
        let b = batch(&["a", "bb", "ccc"], 1_000);
        let found = validate_batches(&b).unwrap();
        assert_eq!(found.len(), 1);
        let (range, h) = &found[0];
        assert_eq!(*range, 0..b.len());
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_002);
        assert_eq!(h.producer_id, -1);
    }

    #[test]
    fn two_batches_back_to_back() {
        let mut b = batch(&["a"], 1);
        b.extend_from_slice(&batch(&["b", "c"], 5));
        let found = validate_batches(&b).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].1.record_count, 2);
        assert_eq!(found[1].0.end, b.len());
    }

    #[test]
    fn offset_rewrite_keeps_the_crc_valid() {
        let mut b = batch(&["a", "b"], 1);
        set_base_offset(&mut b, 42);
        let found = validate_batches(&b).unwrap();
        assert_eq!(found[0].1.base_offset, 42);
        assert_eq!(found[0].1.last_offset(), 43);
    }

    #[test]
    fn corrupted_byte_fails_the_crc() {
        let mut b = batch(&["hello"], 1);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(
            validate_batches(&b),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn malformed_batches_are_refused() {
        let b = batch(&["hello"], 1);
        // Cut short: the length field promises more than is there.
        assert!(matches!(
            validate_batches(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate_batches(&b[..5]),
            Err(BatchError::Truncated { .. })
        ));
        // Magic 1 (old message sets) is refused.
        let mut old = b.clone();
        old[16] = 1;
        assert_eq!(validate_batches(&old), Err(BatchError::UnsupportedMagic(1)));
        // A length smaller than a header.
        let mut short = b.clone();
        short[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(validate_batches(&short), Err(BatchError::BadLength(10)));
        // Negative length.
        let mut neg = b.clone();
        neg[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(validate_batches(&neg), Err(BatchError::BadLength(-1)));
    }

    #[test]
    fn finds_the_first_record_at_a_timestamp() {
        let mut b = batch(&["a", "b", "c"], 100);
        set_base_offset(&mut b, 10);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(first_offset_at_or_after(&b, &h, 0), Some(10));
        assert_eq!(first_offset_at_or_after(&b, &h, 101), Some(11));
        assert_eq!(first_offset_at_or_after(&b, &h, 102), Some(12));
        assert_eq!(first_offset_at_or_after(&b, &h, 103), None);
    }

    #[test]
    fn idempotent_batch_fields() {
        let b = batch_from(&["a", "b"], 1, 7, 0, 5);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.producer_id, 7);
        assert_eq!(h.base_sequence, 5);
        assert_eq!(h.last_sequence(), 6);
    }

    #[test]
    fn offsets_must_fit_the_record_count() {
        // The issue's batch: one record claiming 2^31 offsets.
        let mut b = batch(&["a"], 1);
        forge(&mut b, 0, i32::MAX, 1);
        let err = validate_batches(&b).unwrap_err();
        assert_eq!(
            err,
            BatchError::InconsistentOffsets {
                last_offset_delta: i32::MAX,
                record_count: 1
            }
        );
        assert!(err.is_invalid_record());
        // A consistent header the records do not back (uncompressed: counted).
        forge(&mut b, 0, 2, 3);
        assert_eq!(
            validate_batches(&b),
            Err(BatchError::RecordCountMismatch {
                announced: 3,
                found: 1
            })
        );
        // Fewer records announced than present.
        let mut two = batch(&["a", "b"], 1);
        forge(&mut two, 0, 0, 1);
        assert_eq!(
            validate_batches(&two),
            Err(BatchError::RecordCountMismatch {
                announced: 1,
                found: 2
            })
        );
        for count in [0, -1, i32::MIN] {
            forge(&mut b, 0, 0, count);
            assert_eq!(validate_batches(&b), Err(BatchError::BadRecordCount(count)));
        }
        // The largest delta a batch can back; compressed records are not counted.
        forge(&mut b, 1, i32::MAX - 1, i32::MAX);
        let h = validate_batches(&b).unwrap()[0].1;
        assert_eq!(h.offset_count(), i64::from(i32::MAX));
        // CRC damage stays CORRUPT_MESSAGE, not INVALID_RECORD.
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(!validate_batches(&b).unwrap_err().is_invalid_record());
    }

    #[test]
    fn a_record_length_past_the_batch_is_a_mismatch_not_a_panic() {
        let mut b = batch(&["abc"], 1);
        // The first record's length varint: 2^31 - 1 bytes, far past the batch.
        b[HEADER_LEN..HEADER_LEN + 5].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        forge(&mut b, 0, 0, 1);
        assert!(matches!(
            validate_batches(&b),
            Err(BatchError::RecordCountMismatch { .. })
        ));
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(first_offset_at_or_after(&b, &h, 0), None);
    }

    #[test]
    fn extreme_header_values_do_not_overflow() {
        let mut b = batch(&["a", "b"], 1);
        set_base_offset(&mut b, i64::MAX);
        b[27..35].copy_from_slice(&i64::MAX.to_be_bytes()); // base timestamp
        b[53..57].copy_from_slice(&i32::MAX.to_be_bytes()); // base sequence
        forge(&mut b, 0, 1, 2);
        let h = validate_batches(&b).unwrap()[0].1;
        assert_eq!(h.last_offset(), i64::MAX);
        assert_eq!(h.last_sequence(), 0, "sequences wrap");
        // Timestamp deltas of 0 and 1 on i64::MAX saturate instead of wrapping.
        assert_eq!(first_offset_at_or_after(&b, &h, i64::MAX), Some(i64::MAX));
        b[27..35].copy_from_slice(&i64::MIN.to_be_bytes());
        forge(&mut b, 0, 1, 2);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(first_offset_at_or_after(&b, &h, i64::MIN), Some(i64::MAX));
        assert_eq!(first_offset_at_or_after(&b, &h, i64::MAX), None);
        let mut neg = BatchHeader::parse(&b).unwrap();
        neg.base_offset = i64::MIN;
        neg.base_sequence = i32::MIN;
        assert_eq!(neg.last_offset(), i64::MIN + 1);
        let _ = neg.last_sequence();
        // A negative record count counts as none.
        let mut c = batch(&["a"], 1);
        forge(&mut c, 0, 0, -5);
        assert_eq!(count_records(&c), 0);
        assert_eq!(count_records(&[]), 0);
    }
}
