//! The in-memory partition log: batches in a deque, found by binary search.

use std::collections::VecDeque;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::batch::{self, BatchHeader};
use super::LogConfig;
use crate::storage::{millis_since_epoch, StorageError};

struct StoredBatch {
    base_offset: i64,
    last_offset: i64,
    /// When it was appended (ms since the epoch), for time retention.
    appended_ms: i64,
    data: Bytes,
}

pub struct MemoryLog {
    batches: VecDeque<StoredBatch>,
    start_offset: i64,
    next_offset: i64,
    bytes: u64,
    config: LogConfig,
}

impl MemoryLog {
    pub fn new(config: LogConfig) -> MemoryLog {
        MemoryLog {
            batches: VecDeque::new(),
            start_offset: 0,
            next_offset: 0,
            bytes: 0,
            config,
        }
    }

    pub fn append(&mut self, mut data: BytesMut, header: &BatchHeader) -> i64 {
        let base = self.next_offset;
        batch::set_base_offset(&mut data, base);
        self.next_offset = base.saturating_add(header.offset_count());
        self.bytes += data.len() as u64;
        self.batches.push_back(StoredBatch {
            base_offset: base,
            last_offset: self.next_offset - 1,
            appended_ms: millis_since_epoch(SystemTime::now()),
            data: data.freeze(),
        });
        base
    }

    fn check_range(&self, offset: i64) -> Result<(), StorageError> {
        if offset < self.start_offset || offset > self.next_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                start: self.start_offset,
                end: self.next_offset,
            });
        }
        Ok(())
    }

    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, StorageError> {
        self.check_range(offset)?;
        let first = self.batches.partition_point(|b| b.last_offset < offset);
        let mut out = BytesMut::new();
        for b in self.batches.iter().skip(first) {
            if !out.is_empty() && out.len() + b.data.len() > max_bytes {
                break;
            }
            if out.is_empty() && b.data.len() >= max_bytes {
                // One batch that fills the budget: share it instead of copying.
                return Ok(b.data.clone());
            }
            out.extend_from_slice(&b.data);
        }
        Ok(out.freeze())
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Option<i64> {
        self.batches.iter().find_map(|b| {
            let header = BatchHeader::parse(&b.data).ok()?;
            if header.max_timestamp < ts {
                return None;
            }
            Some(batch::first_offset_at_or_after(&b.data, &header, ts).unwrap_or(b.base_offset))
        })
    }

    pub fn start_offset(&self) -> i64 {
        self.start_offset
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn enforce_retention(&mut self, now: SystemTime) -> u64 {
        let now_ms = millis_since_epoch(now);
        let mut freed = 0;
        // The newest batch is always kept, like Kafka keeps the active segment.
        while self.batches.len() > 1 {
            let oldest = &self.batches[0];
            let too_big = self
                .config
                .retention_bytes
                .is_some_and(|limit| self.bytes > limit);
            let too_old = self.config.retention.is_some_and(|keep| {
                now_ms.saturating_sub(oldest.appended_ms)
                    > i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)
            });
            if !(too_big || too_old) {
                break;
            }
            let gone = self.batches.pop_front().expect("non-empty");
            self.bytes -= gone.data.len() as u64;
            freed += gone.data.len() as u64;
            self.start_offset = gone.last_offset + 1;
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::kafka::batch;
    use crate::storage::batch::validate_batches;
    use std::time::Duration;

    fn append(log: &mut MemoryLog, values: &[&str], ts: i64) -> i64 {
        let b = batch(values, ts);
        let h = BatchHeader::parse(&b).unwrap();
        log.append(b, &h)
    }

    #[test]
    fn offsets_are_assigned_in_order_and_read_back() {
        let mut log = MemoryLog::new(LogConfig::default());
        assert_eq!(append(&mut log, &["a", "b"], 10), 0);
        assert_eq!(append(&mut log, &["c"], 20), 2);
        assert_eq!(log.next_offset(), 3);
        let all = log.read(0, 1 << 20).unwrap();
        let found = validate_batches(&all).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].1.base_offset, 2);
        // Reading from the middle of the first batch returns that whole batch.
        let mid = log.read(1, 1 << 20).unwrap();
        assert_eq!(validate_batches(&mid).unwrap()[0].1.base_offset, 0);
        // At the end: nothing; beyond it: out of range.
        assert!(log.read(3, 100).unwrap().is_empty());
        assert!(matches!(
            log.read(4, 100),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // A tiny budget still returns one whole batch.
        let one = log.read(0, 1).unwrap();
        assert_eq!(validate_batches(&one).unwrap().len(), 1);
    }

    #[test]
    fn timestamp_lookup() {
        let mut log = MemoryLog::new(LogConfig::default());
        append(&mut log, &["a", "b"], 100);
        append(&mut log, &["c", "d"], 200);
        assert_eq!(log.offset_for_timestamp(0), Some(0));
        assert_eq!(log.offset_for_timestamp(101), Some(1));
        assert_eq!(log.offset_for_timestamp(150), Some(2));
        assert_eq!(log.offset_for_timestamp(201), Some(3));
        assert_eq!(log.offset_for_timestamp(202), None);
    }

    #[test]
    fn retention_by_size_keeps_the_newest() {
        let mut log = MemoryLog::new(LogConfig {
            retention_bytes: Some(1),
            ..LogConfig::default()
        });
        for i in 0..5 {
            append(&mut log, &["x"], i);
        }
        assert!(log.enforce_retention(SystemTime::now()) > 0);
        assert_eq!(log.start_offset(), 4);
        assert_eq!(log.next_offset(), 5);
        assert!(log.read(0, 100).is_err());
        assert_eq!(
            validate_batches(&log.read(4, 100).unwrap()).unwrap().len(),
            1
        );
    }

    #[test]
    fn retention_by_time() {
        let mut log = MemoryLog::new(LogConfig {
            retention: Some(Duration::from_secs(60)),
            ..LogConfig::default()
        });
        append(&mut log, &["a"], 0);
        append(&mut log, &["b"], 0);
        assert_eq!(log.enforce_retention(SystemTime::now()), 0);
        let later = SystemTime::now() + Duration::from_secs(120);
        assert!(log.enforce_retention(later) > 0);
        assert_eq!(log.start_offset(), 1);
    }
}
