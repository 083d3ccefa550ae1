//! What the broker keeps on disk (or, with `storage = "memory"`, in memory),
//! named by what is stored: Kafka partition logs (`partition_log`) and the
//! checksummed record file of durable AMQP queues (`record_file`).

pub mod partition_log;
pub mod record_file;

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

pub use partition_log::{
    batch, BatchError, BatchHeader, FileCache, LogConfig, MemoryLog, PartitionLog, SegmentedLog,
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
    #[error(
        "{path}: an earlier failed write could not be rolled back; refusing to append after it"
    )]
    Torn { path: PathBuf },
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

/// A file that is only appended to, with a way back to a known length.
pub(crate) trait AppendTarget: Write {
    /// Cuts the file to `len` bytes and puts the write position there.
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()>;
}

impl AppendTarget for File {
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len)).map(|_| ())
    }
}

/// A shared file (from the segment file cache) is appended to the same way.
impl AppendTarget for &File {
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len)).map(|_| ())
    }
}

/// Why [`append_or_roll_back`] failed.
#[derive(Debug)]
pub(crate) enum AppendFailure {
    /// Nothing of the record is left in the file.
    RolledBack(std::io::Error),
    /// Part of the record may still be there: later appends would follow a
    /// torn record, which recovery stops at, losing them.
    Torn,
}

impl AppendFailure {
    pub(crate) fn into_storage_error(self, what: &'static str, path: &Path) -> StorageError {
        match self {
            AppendFailure::RolledBack(source) => StorageError::Io {
                what,
                path: path.to_path_buf(),
                source,
            },
            AppendFailure::Torn => StorageError::Torn {
                path: path.to_path_buf(),
            },
        }
    }
}

/// Appends `bytes` to a file whose complete records end at `good_len`. A
/// failed write (disk full, I/O error) may have left part of `bytes` behind;
/// the file is cut back to `good_len` so that the next record follows the
/// last complete one, as the Kafka segment log does.
pub(crate) fn append_or_roll_back(
    file: &mut impl AppendTarget,
    good_len: u64,
    bytes: &[u8],
) -> Result<(), AppendFailure> {
    let Err(e) = file.write_all(bytes) else {
        return Ok(());
    };
    match file.truncate_to(good_len) {
        Ok(()) => Err(AppendFailure::RolledBack(e)),
        Err(rollback) => {
            tracing::error!("storage: cannot roll back a failed write ({e}): {rollback}");
            Err(AppendFailure::Torn)
        }
    }
}

/// Makes a new or removed directory entry in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// `create_dir_all`, then fsyncs the parent of every directory it created,
/// so that a new directory (and what is later created in it) survives a crash.
pub(crate) fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Another thread made it first; its parent entry is that thread's to sync.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A file stand-in whose writes fail after a byte budget, for the
    //! roll-back paths a real disk only shows when it fills up.

    use super::AppendTarget;

    #[derive(Default)]
    pub struct FailingFile {
        pub data: Vec<u8>,
        /// Bytes the next writes may still take before failing (None = no limit).
        pub budget: Option<usize>,
        pub truncate_fails: bool,
    }

    impl std::io::Write for FailingFile {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = match &mut self.budget {
                None => buf.len(),
                Some(0) => return Err(std::io::Error::other("no space left (injected)")),
                Some(left) => {
                    let n = buf.len().min(*left);
                    *left -= n;
                    n
                }
            };
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl AppendTarget for FailingFile {
        fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
            if self.truncate_fails {
                return Err(std::io::Error::other("truncate failed (injected)"));
            }
            self.data.truncate(len as usize);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_directories_are_created_with_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("kafka/topics/t-0");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durable(&deep).unwrap();
        // A file where a directory should be is reported, not hidden.
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(create_dir_durable(&file.join("sub")).is_err());
    }
}
