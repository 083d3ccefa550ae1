//! The on-disk partition log: append-only segment files with a sparse offset
//! index, rolled at `segment_bytes`, deleted by retention, and recovered on
//! open by scanning the active segment and truncating a torn tail.
//!
//! A partition directory holds `<base offset, 20 digits>.log` (batches exactly
//! as produced, base offsets assigned) and `.index` beside each: 8-byte entries
//! (offset relative to the segment base u32, byte position u32), one about
//! every 4 KiB of log. As in Kafka, the log rolls to a new segment before a
//! batch whose offset or position would not fit those u32 fields, so every
//! entry is exact (a batch may cover up to 2^31 - 1 offsets). Segments before
//! the active one are fsynced when the log rolls, so only the active segment
//! can have a torn tail.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::batch::{self, BatchHeader, LOG_OVERHEAD};
use super::file_cache::{FileCache, PRIVATE_CAPACITY};
use super::LogConfig;
use crate::storage::{
    append_or_roll_back, create_dir_durable, sync_dir, AppendFailure, StorageError,
};

mod segment;

use segment::{Segment, INDEX_ENTRY_LEN, INDEX_INTERVAL_BYTES};

pub struct SegmentedLog {
    dir: PathBuf,
    config: LogConfig,
    files: Arc<FileCache>,
    segments: BTreeMap<i64, Segment>,
    next_offset: i64,
    /// Appends since the last fsync of the active segment.
    dirty: bool,
    /// A failed append could not be cut back: later batches would follow a
    /// torn one, where recovery stops, so appends are refused until restart.
    torn: bool,
    /// The topic was deleted: its files are gone (or belong to a new topic
    /// of the same name), so every operation fails.
    retired: bool,
}

impl SegmentedLog {
    /// Opens (or creates) the log in `dir` with a small cache of open files
    /// of its own (for tools and tests; the broker shares one cache).
    pub fn open(dir: &Path, config: LogConfig) -> Result<SegmentedLog, StorageError> {
        Self::open_in(dir, config, &FileCache::new(PRIVATE_CAPACITY))
    }

    /// Opens (or creates) the log in `dir`, recovering the active segment,
    /// with its files opened through `files`: no descriptor stays open
    /// beyond what the cache keeps.
    pub fn open_in(
        dir: &Path,
        config: LogConfig,
        files: &Arc<FileCache>,
    ) -> Result<SegmentedLog, StorageError> {
        // A new partition directory is fsynced into its parent, or a crash
        // could lose the directory with every acknowledged batch in it.
        create_dir_durable(dir).map_err(StorageError::io("cannot create log directory", dir))?;
        let mut bases: Vec<i64> = fs::read_dir(dir)
            .map_err(StorageError::io("cannot list log directory", dir))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut next_offset = 0;
        for (i, &base) in bases.iter().enumerate() {
            let mut segment = Segment::open(dir, base, files)?;
            let last = i + 1 == bases.len();
            if last {
                next_offset = segment.recover()?;
            } else {
                if !segment.load_index()? {
                    segment.recover()?;
                }
                next_offset = bases[i + 1];
            }
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            segments.insert(0, Segment::create(dir, 0, files)?);
        }
        Ok(SegmentedLog {
            dir: dir.to_path_buf(),
            config,
            files: files.clone(),
            segments,
            next_offset,
            dirty: false,
            torn: false,
            retired: false,
        })
    }

    /// Marks the log deleted (its topic is gone) and closes its files; every
    /// later operation fails instead of touching files that may by then
    /// belong to a new topic of the same name.
    pub fn retire(&mut self) {
        self.retired = true;
        self.files.forget_under(&self.dir);
    }

    fn check_live(&self) -> Result<(), StorageError> {
        match self.retired {
            false => Ok(()),
            true => Err(StorageError::Io {
                what: "partition deleted",
                path: self.dir.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            }),
        }
    }

    fn active(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    pub fn append(
        &mut self,
        mut data: BytesMut,
        header: &BatchHeader,
    ) -> Result<i64, StorageError> {
        self.check_live()?;
        if self.torn {
            return Err(StorageError::Torn {
                path: self.active().log_path.clone(),
            });
        }
        let len = data.len() as u64;
        let (size, segment_bytes) = (self.active().size, self.config.segment_bytes);
        let relative = self.next_offset - self.active().base_offset;
        let past_index_range = relative > i64::from(u32::MAX) || size > u64::from(u32::MAX);
        if size > 0 && (size + len > segment_bytes || past_index_range) {
            self.roll()?;
        }
        let base = self.next_offset;
        batch::set_base_offset(&mut data, base);
        let segment = self.active();
        let pos = segment.size;
        let log = segment.log()?;
        // Leave no partial batch behind for the next append to follow.
        if let Err(failure) = append_or_roll_back(&mut &*log, pos, &data) {
            let torn = matches!(failure, AppendFailure::Torn);
            let error = failure.into_storage_error("cannot append to segment", &segment.log_path);
            self.torn = torn;
            return Err(error);
        }
        // The roll above keeps both fields in range; try_from only guards that.
        let fits = u32::try_from(base - segment.base_offset)
            .ok()
            .zip(u32::try_from(pos).ok());
        if let Some((rel, at)) = fits.filter(|_| {
            segment
                .last_indexed_pos
                .is_none_or(|p| pos - p >= INDEX_INTERVAL_BYTES)
        }) {
            let mut entry = [0u8; INDEX_ENTRY_LEN];
            entry[..4].copy_from_slice(&rel.to_be_bytes());
            entry[4..].copy_from_slice(&at.to_be_bytes());
            // The index of the active segment is rebuilt on recovery, so a lost entry is harmless.
            if segment
                .index()
                .is_ok_and(|index| (&*index).write_all(&entry).is_ok())
            {
                segment.index_entries.push((rel, at));
                segment.last_indexed_pos = Some(pos);
            }
        }
        segment.size += len;
        self.next_offset = base.saturating_add(header.offset_count());
        self.dirty = true;
        Ok(base)
    }

    /// Seals the active segment (fsynced with its index) and starts a new one.
    fn roll(&mut self) -> Result<(), StorageError> {
        let segment = self.active();
        segment
            .log()?
            .sync_data()
            .map_err(StorageError::io("cannot sync segment", &segment.log_path))?;
        segment
            .index()?
            .sync_data()
            .map_err(StorageError::io("cannot sync index", &segment.index_path))?;
        let base = self.next_offset;
        let segment = Segment::create(&self.dir, base, &self.files)?;
        self.segments.insert(base, segment);
        self.dirty = false;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), StorageError> {
        if self.dirty && !self.retired {
            let segment = self.active();
            segment
                .log()?
                .sync_data()
                .map_err(StorageError::io("cannot sync segment", &segment.log_path))?;
            self.dirty = false;
        }
        Ok(())
    }

    pub fn start_offset(&self) -> i64 {
        *self
            .segments
            .keys()
            .next()
            .expect("a log always has a segment")
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, StorageError> {
        self.check_live()?;
        let start = self.start_offset();
        if offset < start || offset > self.next_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                start,
                end: self.next_offset,
            });
        }
        let first = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(start, |(b, _)| *b);
        for segment in self.segments.range(first..).map(|(_, s)| s) {
            let Some((pos, first_len)) = segment.locate(offset)? else {
                continue;
            };
            let want = first_len.max(max_bytes.min((segment.size - pos) as usize));
            let buf = segment.read_bytes(pos, want)?;
            // Keep whole batches only.
            let mut end = 0;
            while end + LOG_OVERHEAD <= buf.len() {
                let length =
                    i32::from_be_bytes(buf[end + 8..end + 12].try_into().expect("4 bytes"));
                let next = end + LOG_OVERHEAD + usize::try_from(length).unwrap_or(usize::MAX / 2);
                if next > buf.len() {
                    break;
                }
                end = next;
            }
            let mut buf = buf;
            buf.truncate(end);
            return Ok(Bytes::from(buf));
        }
        Ok(Bytes::new())
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<i64>, StorageError> {
        self.check_live()?;
        for segment in self.segments.values() {
            for (pos, h) in segment.headers()? {
                if h.max_timestamp >= ts {
                    let whole = segment.read_bytes(pos, h.total_len())?;
                    return Ok(Some(
                        batch::first_offset_at_or_after(&whole, &h, ts).unwrap_or(h.base_offset),
                    ));
                }
            }
        }
        Ok(None)
    }

    /// Deletes the oldest segments (never the active one) while the log stays
    /// at or above `retention_bytes` without them, or while their last write is
    /// older than the retention time.
    pub fn enforce_retention(&mut self, now: SystemTime) -> Result<u64, StorageError> {
        if self.retired {
            return Ok(0);
        }
        let mut freed = 0;
        let mut total: u64 = self.segments.values().map(|s| s.size).sum();
        while self.segments.len() > 1 {
            let oldest = self.segments.values().next().expect("non-empty");
            let too_big = self
                .config
                .retention_bytes
                .is_some_and(|limit| total - oldest.size >= limit);
            let too_old = self.config.retention.is_some_and(|keep| {
                fs::metadata(&oldest.log_path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|modified| now.duration_since(modified).is_ok_and(|age| age > keep))
            });
            if !(too_big || too_old) {
                break;
            }
            let base = oldest.base_offset;
            let segment = self.segments.remove(&base).expect("present");
            total -= segment.size;
            freed += segment.size;
            segment.delete()?;
        }
        if freed > 0 {
            sync_dir(&self.dir).map_err(StorageError::io("cannot sync directory", &self.dir))?;
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::segment::segment_paths;
    use super::*;
    use crate::fixtures::kafka::{batch, forge};
    use crate::storage::batch::validate_batches;
    use std::time::Duration;

    fn append(log: &mut SegmentedLog, values: &[&str], ts: i64) -> i64 {
        let b = batch(values, ts);
        let h = BatchHeader::parse(&b).unwrap();
        log.append(b, &h).unwrap()
    }

    fn values_from(log: &SegmentedLog, offset: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut at = offset;
        for _ in 0..10_000 {
            let data = log.read(at, 1 << 20).unwrap();
            if data.is_empty() {
                break;
            }
            for (_, h) in validate_batches(&data).unwrap() {
                out.extend(h.base_offset..=h.last_offset());
                at = h.last_offset() + 1;
            }
        }
        out
    }

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 300,
            retention_bytes: None,
            retention: None,
        }
    }

    #[test]
    fn append_read_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentedLog::open(dir.path(), small_segments()).unwrap();
        for i in 0..20 {
            assert_eq!(append(&mut log, &["a", "b"], i), i * 2);
        }
        log.flush().unwrap();
        assert!(log.segments.len() > 3, "rolled into several segments");
        assert_eq!(values_from(&log, 0), (0..40).collect::<Vec<_>>());
        assert_eq!(values_from(&log, 17), (16..40).collect::<Vec<_>>());
        drop(log);
        let log = SegmentedLog::open(dir.path(), small_segments()).unwrap();
        assert_eq!(log.next_offset(), 40);
        assert_eq!(values_from(&log, 0), (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn recovery_truncates_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentedLog::open(dir.path(), LogConfig::default()).unwrap();
        append(&mut log, &["one"], 1);
        append(&mut log, &["two", "three"], 2);
        log.flush().unwrap();
        drop(log);
        let path = segment_paths(dir.path(), 0).0;
        let good_len = fs::metadata(&path).unwrap().len();
        // A half-written third batch, as a crash mid-write leaves it.
        let third = batch(&["four"], 3);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&third[..third.len() / 2]).unwrap();
        drop(f);
        let mut log = SegmentedLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.next_offset(), 3);
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
        assert_eq!(values_from(&log, 0), vec![0, 1, 2]);
        // Appends continue where the valid data ends.
        assert_eq!(append(&mut log, &["five"], 4), 3);
        assert_eq!(values_from(&log, 0), vec![0, 1, 2, 3]);
    }

    #[test]
    fn recovery_truncates_at_a_corrupt_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentedLog::open(dir.path(), LogConfig::default()).unwrap();
        append(&mut log, &["one"], 1);
        let second_at = log.active().size;
        append(&mut log, &["two"], 2);
        append(&mut log, &["three"], 3);
        drop(log);
        let path = segment_paths(dir.path(), 0).0;
        let mut bytes = fs::read(&path).unwrap();
        bytes[second_at as usize + 70] ^= 0xff; // inside the second batch's records
        fs::write(&path, &bytes).unwrap();
        let log = SegmentedLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.next_offset(), 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), second_at);
    }

    #[test]
    fn index_lookup_lands_on_the_right_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentedLog::open(dir.path(), LogConfig::default()).unwrap();
        let big = "x".repeat(1000);
        for i in 0..50 {
            append(&mut log, &[&big, &big], i);
        }
        let segment = log.active();
        assert!(
            segment.index_entries.len() > 5,
            "sparse index has entries: {}",
            segment.index_entries.len()
        );
        assert!(segment.index_entries.len() < 50, "but not one per batch");
        for offset in [0, 1, 37, 64, 99] {
            let data = log.read(offset, 1).unwrap();
            let found = validate_batches(&data).unwrap();
            assert_eq!(found.len(), 1);
            let h = found[0].1;
            assert!(
                h.base_offset <= offset && offset <= h.last_offset(),
                "offset {offset} in {h:?}"
            );
        }
        // The index survives a reopen as a sealed segment's index.
        drop(log);
        let mut log = SegmentedLog::open(dir.path(), LogConfig::default()).unwrap();
        log.roll().unwrap();
        drop(log);
        let log = SegmentedLog::open(dir.path(), LogConfig::default()).unwrap();
        let first = log.segments.values().next().unwrap();
        assert!(first.index_entries.len() > 5);
        assert_eq!(values_from(&log, 50).first(), Some(&50));
    }

    #[test]
    fn timestamp_lookup_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentedLog::open(dir.path(), small_segments()).unwrap();
        for i in 0..10 {
            append(&mut log, &["a", "b"], i * 100);
        }
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
        assert_eq!(log.offset_for_timestamp(501).unwrap(), Some(11));
        assert_eq!(log.offset_for_timestamp(550).unwrap(), Some(12));
        assert_eq!(log.offset_for_timestamp(10_000).unwrap(), None);
    }

    #[test]
    fn retention_by_size_and_time_deletes_whole_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 300,
            retention_bytes: Some(600),
            retention: None,
        };
        let mut log = SegmentedLog::open(dir.path(), config).unwrap();
        for i in 0..20 {
            append(&mut log, &["a"], i);
        }
        let before = log.segments.len();
        let total_before: u64 = log.segments.values().map(|s| s.size).sum();
        let freed = log.enforce_retention(SystemTime::now()).unwrap();
        assert!(freed > 0);
        let total_after: u64 = log.segments.values().map(|s| s.size).sum();
        assert!(
            total_after >= 600 && total_after < total_before,
            "{total_after}"
        );
        assert!(log.segments.len() < before);
        let start = log.start_offset();
        assert!(start > 0);
        assert!(log.read(0, 100).is_err());
        assert_eq!(values_from(&log, start).last(), Some(&19));
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(
            files,
            log.segments.len() * 2,
            "deleted segments leave no files"
        );

        let config = LogConfig {
            segment_bytes: 300,
            retention_bytes: None,
            retention: Some(Duration::from_secs(60)),
        };
        let mut log = SegmentedLog::open(dir.path(), config).unwrap();
        assert_eq!(log.enforce_retention(SystemTime::now()).unwrap(), 0);
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert!(log.enforce_retention(later).unwrap() > 0);
        assert_eq!(log.segments.len(), 1, "only the active segment is left");
        assert_eq!(
            log.start_offset(),
            log.segments.keys().next().copied().unwrap()
        );
    }

    #[test]
    fn many_logs_work_through_a_cache_of_two_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileCache::new(2);
        let open_all = |files: &Arc<FileCache>| {
            (0..12)
                .map(|p| {
                    SegmentedLog::open_in(
                        &dir.path().join(format!("t-{p}")),
                        small_segments(),
                        files,
                    )
                    .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let mut logs = open_all(&files);
        assert!(files.open_files() <= 2);
        // Interleaved appends: every log's files are evicted between its turns.
        for round in 0..15 {
            for log in &mut logs {
                append(log, &["a", "b"], round);
            }
        }
        assert!(files.open_files() <= 2);
        assert!(
            files.stats().1 > 100,
            "files were evicted: {:?}",
            files.stats()
        );
        for log in &mut logs {
            log.flush().unwrap();
            assert!(log.segments.len() > 3, "rolled into several segments");
        }
        for (p, log) in logs.iter().enumerate() {
            assert_eq!(values_from(log, 0), (0..30).collect::<Vec<_>>(), "log {p}");
            assert_eq!(
                values_from(log, 17),
                (16..30).collect::<Vec<_>>(),
                "log {p}"
            );
            assert_eq!(log.offset_for_timestamp(8).unwrap(), Some(15));
        }
        assert!(files.open_files() <= 2);
        let active = *logs[5].segments.keys().next_back().unwrap();
        drop(logs);
        // A torn tail in one log is recovered when all reopen through the same small cache.
        let torn = segment_paths(&dir.path().join("t-5"), active).0;
        assert!(torn.exists());
        let mut f = fs::OpenOptions::new().append(true).open(&torn).unwrap();
        f.write_all(&batch(&["half"], 9)[..30]).unwrap();
        drop(f);
        let files = FileCache::new(2);
        let mut logs = open_all(&files);
        assert!(files.open_files() <= 2);
        for log in &mut logs {
            assert_eq!(log.next_offset(), 30);
            assert_eq!(append(log, &["c"], 99), 30);
        }
        for log in &logs {
            assert_eq!(values_from(log, 0), (0..31).collect::<Vec<_>>());
        }
        // Retention deletes through the cache too, and a retired log refuses everything.
        let mut log = logs.pop().unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        log.config.retention = Some(Duration::from_secs(60));
        assert!(log.enforce_retention(later).unwrap() > 0);
        log.retire();
        assert!(log.read(30, 100).is_err());
        assert!(append_result(&mut log).is_err());
        assert!(files.open_files() <= 2);
    }

    fn append_result(log: &mut SegmentedLog) -> Result<i64, StorageError> {
        let b = batch(&["x"], 1);
        let h = BatchHeader::parse(&b).unwrap();
        log.append(b, &h)
    }

    /// Appends a compressed-looking batch of `offsets` offsets (the records
    /// are not decompressed, so any count up to i32::MAX is accepted), large
    /// enough that every batch gets an index entry.
    fn append_wide(log: &mut SegmentedLog, offsets: i32) -> i64 {
        let mut b = batch(&[&"w".repeat(5000)], 1);
        forge(&mut b, 1, offsets - 1, offsets);
        let h = validate_batches(&b).unwrap()[0].1;
        log.append(b, &h).unwrap()
    }

    #[test]
    fn offsets_past_u32_from_the_segment_base_are_found() {
        const WIDE: i32 = i32::MAX;
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentedLog::open(dir.path(), LogConfig::default()).unwrap();
        let mut bases = Vec::new();
        for offsets in [WIDE, WIDE, WIDE, 1, 1] {
            bases.push(append_wide(&mut log, offsets));
        }
        let w = i64::from(WIDE);
        assert_eq!(bases, [0, w, 2 * w, 3 * w, 3 * w + 1]);
        let check = |log: &SegmentedLog| {
            for (i, &base) in bases.iter().enumerate() {
                let last = bases.get(i + 1).map_or(base, |next| next - 1);
                for offset in [base, (base + last) / 2, last] {
                    let data = log.read(offset, 1).unwrap();
                    let found = validate_batches(&data).unwrap();
                    assert_eq!(
                        found[0].1.base_offset, base,
                        "a fetch at {offset} returns the batch holding it"
                    );
                }
            }
            // A consumer reading on from 0 gets all five batches, none skipped.
            let mut found = Vec::new();
            let mut at = 0;
            while found.len() < 10 {
                let data = log.read(at, 1 << 20).unwrap();
                if data.is_empty() {
                    break;
                }
                for (_, h) in validate_batches(&data).unwrap() {
                    found.push(h.base_offset);
                    at = h.last_offset() + 1;
                }
            }
            assert_eq!(found, bases);
        };
        check(&log);
        assert_eq!(log.next_offset(), 3 * w + 2);
        drop(log);
        let log = SegmentedLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.next_offset(), 3 * w + 2);
        check(&log);
    }
}
