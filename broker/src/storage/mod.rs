//! What the broker keeps on disk (or, with `storage = "memory"`, in memory),
//! named by what is stored: Kafka partition logs (`partition_log`) and the
//! checksummed record file of durable AMQP queues (`record_file`).

pub mod partition_log;
pub mod record_file;

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Deserialize;

pub use partition_log::{
    batch, BatchError, BatchHeader, LogConfig, MemoryLog, PartitionLog, SegmentedLog,
};
pub use record_file::RecordLog;

/// Where a protocol keeps what must survive a restart (Kafka logs, durable AMQP queues).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StorageMode {
    /// Files under `server.data_dir/<protocol>`; survives restarts.
    Disk,
    /// Nothing on disk; everything is lost when the broker stops.
    Memory,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("offset {offset} is outside the log [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
}

impl StorageError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io { what, path, source }
    }
}

pub(crate) fn millis_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
