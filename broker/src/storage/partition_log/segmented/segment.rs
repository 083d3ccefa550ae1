//! One segment of the partition log: its log and index files (opened through
//! the shared file cache), appends with index entries, reads by offset, and
//! recovery of a torn tail.

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::partition_log::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use crate::storage::partition_log::file_cache::FileCache;
use crate::storage::{sync_dir, StorageError};

/// Log bytes between two index entries.
pub(super) const INDEX_INTERVAL_BYTES: u64 = 4096;
pub(super) const INDEX_ENTRY_LEN: usize = 8;
/// Enough of a batch header to know its offsets and length.
const PEEK_LEN: usize = 27;

/// One segment: its files are opened through the shared [`FileCache`] when
/// used, so a segment holds no file descriptor of its own.
pub(super) struct Segment {
    pub(super) base_offset: i64,
    pub(super) log_path: PathBuf,
    pub(super) index_path: PathBuf,
    pub(super) files: Arc<FileCache>,
    pub(super) size: u64,
    /// (offset - base_offset, byte position), ascending.
    pub(super) index_entries: Vec<(u32, u32)>,
    pub(super) last_indexed_pos: Option<u64>,
}

pub(super) fn segment_paths(dir: &Path, base: i64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{base:020}.log")),
        dir.join(format!("{base:020}.index")),
    )
}

/// Reads exactly `buf.len()` bytes at `pos` without moving a file cursor.
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, pos)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                pos + done as u64,
            )?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

impl Segment {
    pub(super) fn create(
        dir: &Path,
        base: i64,
        files: &Arc<FileCache>,
    ) -> Result<Segment, StorageError> {
        let (log_path, index_path) = segment_paths(dir, base);
        for p in [&log_path, &index_path] {
            files
                .create(p)
                .map_err(StorageError::io("cannot create segment", p))?;
        }
        sync_dir(dir).map_err(StorageError::io("cannot sync directory", dir))?;
        Ok(Segment {
            base_offset: base,
            log_path,
            index_path,
            files: files.clone(),
            size: 0,
            index_entries: Vec::new(),
            last_indexed_pos: None,
        })
    }

    /// An existing segment; nothing is opened (its size comes from the directory).
    pub(super) fn open(
        dir: &Path,
        base: i64,
        files: &Arc<FileCache>,
    ) -> Result<Segment, StorageError> {
        let (log_path, index_path) = segment_paths(dir, base);
        let size = fs::metadata(&log_path)
            .map_err(StorageError::io("cannot stat segment", &log_path))?
            .len();
        Ok(Segment {
            base_offset: base,
            log_path,
            index_path,
            files: files.clone(),
            size,
            index_entries: Vec::new(),
            last_indexed_pos: None,
        })
    }

    /// The log file, opened (again) when the cache closed it.
    pub(super) fn log(&self) -> Result<Arc<File>, StorageError> {
        self.files
            .get(&self.log_path)
            .map_err(StorageError::io("cannot open segment", &self.log_path))
    }

    /// The index file; created empty when it is missing (it is rebuilt from the log).
    pub(super) fn index(&self) -> Result<Arc<File>, StorageError> {
        match self.files.get(&self.index_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.files.create(&self.index_path)
            }
            other => other,
        }
        .map_err(StorageError::io("cannot open index", &self.index_path))
    }

    /// Loads the index file; false when it is missing or does not fit the log.
    pub(super) fn load_index(&mut self) -> Result<bool, StorageError> {
        // Read without the cache: a sealed segment's index is loaded once.
        let raw = match fs::read(&self.index_path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(StorageError::io("cannot read index", &self.index_path)(e));
            }
        };
        if raw.is_empty() || raw.len() % INDEX_ENTRY_LEN != 0 {
            return Ok(false);
        }
        let entries: Vec<(u32, u32)> = raw
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|e| {
                (
                    u32::from_be_bytes(e[..4].try_into().expect("4 bytes")),
                    u32::from_be_bytes(e[4..].try_into().expect("4 bytes")),
                )
            })
            .collect();
        let ordered = entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        if !ordered
            || entries.first().map(|e| e.1) != Some(0)
            || u64::from(entries.last().expect("non-empty").1) >= self.size
        {
            return Ok(false);
        }
        self.last_indexed_pos = entries.last().map(|e| u64::from(e.1));
        self.index_entries = entries;
        Ok(true)
    }

    /// Scans every batch, truncates the file after the last valid one, and
    /// rewrites the index; returns the offset after the last valid batch.
    pub(super) fn recover(&mut self) -> Result<i64, StorageError> {
        let log = self.log()?;
        let mut reader = BufReader::with_capacity(1 << 16, &*log);
        reader
            .seek(SeekFrom::Start(0))
            .map_err(StorageError::io("cannot read segment", &self.log_path))?;
        let mut pos = 0u64;
        let mut expected = self.base_offset;
        let mut entries = Vec::new();
        let mut last_indexed: Option<u64> = None;
        let mut buf = Vec::new();
        let mut why = None;
        while pos < self.size {
            let mut prefix = [0u8; LOG_OVERHEAD];
            if reader.read_exact(&mut prefix).is_err() {
                why = Some("partial batch header".to_string());
                break;
            }
            let length = i32::from_be_bytes(prefix[8..12].try_into().expect("4 bytes"));
            let total = LOG_OVERHEAD as u64 + u64::try_from(length).unwrap_or(0);
            if length < (HEADER_LEN - LOG_OVERHEAD) as i32 || pos + total > self.size {
                why = Some(format!(
                    "batch of {total} bytes at byte {pos} runs past the end"
                ));
                break;
            }
            buf.clear();
            buf.extend_from_slice(&prefix);
            buf.resize(total as usize, 0);
            if reader.read_exact(&mut buf[LOG_OVERHEAD..]).is_err() {
                why = Some("partial batch".to_string());
                break;
            }
            let checked =
                BatchHeader::parse(&buf).and_then(|h| batch::check_crc(&buf, &h).map(|()| h));
            let header = match checked {
                Ok(h) if h.base_offset == expected => h,
                Ok(h) => {
                    why = Some(format!(
                        "batch at byte {pos} has offset {} where {expected} was expected",
                        h.base_offset
                    ));
                    break;
                }
                Err(e) => {
                    why = Some(format!("batch at byte {pos}: {e}"));
                    break;
                }
            };
            // A segment written before the log rolled at the u32 limits may
            // hold batches no entry can point to: those are found by scanning
            // forward from the entry before them.
            let entry = u32::try_from(expected - self.base_offset)
                .ok()
                .zip(u32::try_from(pos).ok());
            if let Some(entry) =
                entry.filter(|_| last_indexed.is_none_or(|p| pos - p >= INDEX_INTERVAL_BYTES))
            {
                entries.push(entry);
                last_indexed = Some(pos);
            }
            expected = header.last_offset().saturating_add(1);
            pos += total;
        }
        drop(reader);
        if let Some(why) = why {
            tracing::warn!(
                "kafka log {}: truncating torn tail at byte {pos} of {} ({why})",
                self.log_path.display(),
                self.size
            );
            log.set_len(pos)
                .and_then(|()| log.sync_all())
                .map_err(StorageError::io("cannot truncate segment", &self.log_path))?;
            self.size = pos;
        }
        let mut raw = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
        for (rel, p) in &entries {
            raw.extend_from_slice(&rel.to_be_bytes());
            raw.extend_from_slice(&p.to_be_bytes());
        }
        let index = self.index()?;
        index
            .set_len(0)
            .and_then(|()| (&*index).write_all(&raw))
            .map_err(StorageError::io("cannot rewrite index", &self.index_path))?;
        self.index_entries = entries;
        self.last_indexed_pos = last_indexed;
        Ok(expected)
    }

    /// Position of the batch holding `offset`, and that batch's length; None
    /// when the segment has no batch at or after `offset`.
    pub(super) fn locate(&self, offset: i64) -> Result<Option<(u64, usize)>, StorageError> {
        let rel = offset - self.base_offset;
        let i = self
            .index_entries
            .partition_point(|&(r, _)| i64::from(r) <= rel);
        let mut pos = if i == 0 {
            0
        } else {
            u64::from(self.index_entries[i - 1].1)
        };
        let mut head = [0u8; PEEK_LEN];
        let log = self.log()?;
        while pos + (HEADER_LEN as u64) <= self.size {
            read_at(&log, &mut head, pos)
                .map_err(StorageError::io("cannot read segment", &self.log_path))?;
            let base = i64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
            let length = i32::from_be_bytes(head[8..12].try_into().expect("4 bytes"));
            let delta = i32::from_be_bytes(head[23..27].try_into().expect("4 bytes"));
            let total = LOG_OVERHEAD + usize::try_from(length).unwrap_or(0);
            if base.saturating_add(i64::from(delta)) >= offset {
                return Ok(Some((pos, total)));
            }
            pos += total as u64;
        }
        Ok(None)
    }

    pub(super) fn read_bytes(&self, pos: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let mut buf = vec![0u8; len];
        read_at(&*self.log()?, &mut buf, pos)
            .map_err(StorageError::io("cannot read segment", &self.log_path))?;
        Ok(buf)
    }

    /// Every batch header and start position, in order.
    pub(super) fn headers(&self) -> Result<Vec<(u64, BatchHeader)>, StorageError> {
        let mut out = Vec::new();
        let mut pos = 0;
        let mut head = [0u8; HEADER_LEN];
        let log = self.log()?;
        while pos + (HEADER_LEN as u64) <= self.size {
            read_at(&log, &mut head, pos)
                .map_err(StorageError::io("cannot read segment", &self.log_path))?;
            let Ok(h) = BatchHeader::parse(&head) else {
                break;
            };
            out.push((pos, h));
            pos += h.total_len() as u64;
        }
        Ok(out)
    }

    pub(super) fn delete(self) -> Result<(), StorageError> {
        let Segment {
            log_path,
            index_path,
            files,
            ..
        } = self;
        files.forget(&log_path);
        files.forget(&index_path);
        fs::remove_file(&log_path).map_err(StorageError::io("cannot delete segment", &log_path))?;
        let _ = fs::remove_file(&index_path);
        Ok(())
    }
}
