//! Kafka partition logs: an in-memory log and an on-disk segmented log with
//! the same operations (append a batch, read from an offset, find an offset
//! by timestamp, flush, enforce retention), over record batches (`batch`).

pub mod batch;
pub mod file_cache;
pub mod memory;
pub mod segmented;

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};

pub use batch::{BatchError, BatchHeader};
pub use file_cache::FileCache;
pub use memory::MemoryLog;
pub use segmented::SegmentedLog;

use super::StorageError;

/// What a log keeps and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// A new segment starts when the active one would grow beyond this.
    pub segment_bytes: u64,
    /// Oldest data is deleted while the log is larger (None = no limit).
    pub retention_bytes: Option<u64>,
    /// Data older than this is deleted (None = kept forever).
    pub retention: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            retention_bytes: None,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// One partition's records: in memory or on disk.
pub enum PartitionLog {
    Memory(MemoryLog),
    Disk(SegmentedLog),
}

impl PartitionLog {
    /// Appends one validated batch, assigning its offsets; returns the base offset.
    pub fn append(&mut self, batch: BytesMut, header: &BatchHeader) -> Result<i64, StorageError> {
        match self {
            PartitionLog::Memory(l) => Ok(l.append(batch, header)),
            PartitionLog::Disk(l) => l.append(batch, header),
        }
    }

    /// Whole batches from the one holding `offset`, up to about `max_bytes`
    /// (at least one batch, so a large batch is never stuck).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, StorageError> {
        match self {
            PartitionLog::Memory(l) => l.read(offset, max_bytes),
            PartitionLog::Disk(l) => l.read(offset, max_bytes),
        }
    }

    /// The offset of the first record with a timestamp at or after `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<i64>, StorageError> {
        match self {
            PartitionLog::Memory(l) => Ok(l.offset_for_timestamp(ts)),
            PartitionLog::Disk(l) => l.offset_for_timestamp(ts),
        }
    }

    pub fn start_offset(&self) -> i64 {
        match self {
            PartitionLog::Memory(l) => l.start_offset(),
            PartitionLog::Disk(l) => l.start_offset(),
        }
    }

    /// The offset the next record gets (the high watermark of a single broker).
    pub fn next_offset(&self) -> i64 {
        match self {
            PartitionLog::Memory(l) => l.next_offset(),
            PartitionLog::Disk(l) => l.next_offset(),
        }
    }

    /// Makes every appended batch durable (fsync); a no-op in memory.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        match self {
            PartitionLog::Memory(_) => Ok(()),
            PartitionLog::Disk(l) => l.flush(),
        }
    }

    /// Deletes what retention no longer covers; returns the bytes freed.
    pub fn enforce_retention(&mut self, now: SystemTime) -> Result<u64, StorageError> {
        match self {
            PartitionLog::Memory(l) => Ok(l.enforce_retention(now)),
            PartitionLog::Disk(l) => l.enforce_retention(now),
        }
    }

    pub fn is_disk(&self) -> bool {
        matches!(self, PartitionLog::Disk(_))
    }

    /// The log's topic was deleted: closes its files and fails every later
    /// operation (an in-flight request may still hold the partition).
    pub fn retire(&mut self) {
        if let PartitionLog::Disk(l) = self {
            l.retire();
        }
    }
}
