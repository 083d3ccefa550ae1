//! An append-only file of checksummed records, for state that is replayed in
//! full at start-up (durable AMQP queues and their definitions).
//!
//! Each record is `len: u32 BE`, `crc32c(payload): u32 BE`, `payload`.
//! Recovery reads records (streaming, one record in memory besides those
//! returned) until the first one that is cut short or fails its checksum (a
//! write torn by a crash) and truncates the file there, so later appends
//! follow the last good record. A write that fails at run time (disk full)
//! is rolled back to the last good length for the same reason. The Kafka `SegmentedLog` does not fit
//! here: it stores Kafka record batches and only ever deletes whole segments,
//! while a queue removes single messages in any order.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{append_or_roll_back, create_dir_durable, sync_dir, AppendFailure, StorageError};

/// Records larger than this are treated as corruption at recovery (the
/// broker never writes one: messages are limited to 1 GiB by the config).
const MAX_RECORD: usize = (1 << 30) + (1 << 20);
/// Bytes a record takes besides its payload (length and checksum).
pub const RECORD_HEADER: usize = 8;

pub struct RecordLog {
    path: PathBuf,
    file: File,
    len: u64,
    dirty: bool,
    /// A failed append could not be rolled back: appending on would put
    /// records after a torn one, where recovery never reaches them.
    torn: bool,
}

impl RecordLog {
    /// Opens (creating) the file, returns it with every intact record; a torn
    /// tail is cut off.
    pub fn open(path: &Path) -> Result<(RecordLog, Vec<Vec<u8>>), StorageError> {
        if let Some(dir) = path.parent() {
            create_dir_durable(dir).map_err(StorageError::io("cannot create", dir))?;
        }
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StorageError::io("cannot open", path))?;
        if !existed {
            if let Some(dir) = path.parent() {
                sync_dir(dir).map_err(StorageError::io("cannot sync directory", dir))?;
            }
        }
        let file_len = file
            .metadata()
            .map_err(StorageError::io("cannot stat", path))?
            .len();
        let (records, good) = read_records(BufReader::with_capacity(1 << 16, &file), file_len)
            .map_err(StorageError::io("cannot read", path))?;
        if good < file_len {
            tracing::warn!(
                "{}: dropping a torn tail of {} bytes after {} intact records",
                path.display(),
                file_len - good,
                records.len()
            );
            file.set_len(good)
                .map_err(StorageError::io("cannot truncate", path))?;
        }
        file.seek(SeekFrom::Start(good))
            .map_err(StorageError::io("cannot seek", path))?;
        Ok((
            RecordLog {
                path: path.to_path_buf(),
                file,
                len: good,
                dirty: false,
                torn: false,
            },
            records,
        ))
    }

    /// Appends one record (buffered by the OS until it is fsynced); after a
    /// failed write the file is cut back to its last complete record.
    pub fn append(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        if self.torn {
            return Err(StorageError::Torn {
                path: self.path.clone(),
            });
        }
        let mut buf = Vec::with_capacity(RECORD_HEADER + payload.len());
        encode_record(&mut buf, payload);
        if let Err(failure) = append_or_roll_back(&mut self.file, self.len, &buf) {
            self.torn = matches!(failure, AppendFailure::Torn);
            return Err(failure.into_storage_error("cannot append to", &self.path));
        }
        self.len += buf.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Replaces the whole file with `records` (atomically: write aside, fsync, rename).
    pub fn rewrite<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StorageError> {
        let tmp = compaction_path(&self.path);
        let mut buf = Vec::new();
        for r in records {
            encode_record(&mut buf, r);
        }
        let mut file = File::create(&tmp).map_err(StorageError::io("cannot create", &tmp))?;
        file.write_all(&buf)
            .and_then(|()| file.sync_all())
            .map_err(StorageError::io("cannot write", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(StorageError::io("cannot rename", &tmp))?;
        // The rename is the commit point: without this a crash could bring
        // back the old file, and lose what is appended to the new one.
        if let Some(dir) = self.path.parent() {
            sync_dir(dir).map_err(StorageError::io("cannot sync", dir))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(StorageError::io("cannot open", &self.path))?;
        file.seek(SeekFrom::End(0))
            .map_err(StorageError::io("cannot seek", &self.path))?;
        self.file = file;
        self.len = buf.len() as u64;
        self.dirty = false;
        self.torn = false;
        Ok(())
    }

    /// Empties the file (every record it held is obsolete).
    pub fn clear(&mut self) -> Result<(), StorageError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(StorageError::io("cannot truncate", &self.path))?;
        self.len = 0;
        self.dirty = true;
        self.torn = false;
        Ok(())
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether appends wait for an fsync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// A handle to fsync outside whatever lock guards the log; the log counts
    /// as clean from now on.
    pub fn take_sync_handle(&mut self) -> Result<Option<File>, StorageError> {
        if !self.dirty {
            return Ok(None);
        }
        self.dirty = false;
        self.file.try_clone().map(Some).map_err(StorageError::io(
            "cannot duplicate the handle of",
            &self.path,
        ))
    }

    /// The first record of the file at `path`, if it is intact and at most
    /// `max_len` bytes, read without the rest of the file.
    pub fn first_record(path: &Path, max_len: usize) -> Result<Option<Vec<u8>>, StorageError> {
        let file = File::open(path).map_err(StorageError::io("cannot open", path))?;
        let total = file
            .metadata()
            .map_err(StorageError::io("cannot stat", path))?
            .len();
        let mut header = [0u8; RECORD_HEADER];
        if total < RECORD_HEADER as u64 || (&file).read_exact(&mut header).is_err() {
            return Ok(None);
        }
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        if len > max_len || total < (RECORD_HEADER + len) as u64 {
            return Ok(None);
        }
        let mut payload = vec![0u8; len];
        (&file)
            .read_exact(&mut payload)
            .map_err(StorageError::io("cannot read", path))?;
        let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
        Ok((crate::accel::crc32c::checksum(&payload) == crc).then_some(payload))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file.
    pub fn delete(self) -> Result<(), StorageError> {
        drop(self.file);
        std::fs::remove_file(&self.path).map_err(StorageError::io("cannot delete", &self.path))
    }
}

fn encode_record(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&crate::accel::crc32c::checksum(payload).to_be_bytes());
    buf.extend_from_slice(payload);
}

/// The intact records at the start of a file of `total` bytes read through
/// `r`, and how many bytes they span. A record's length is trusted only once
/// the file is known to hold that many bytes, so a corrupt length allocates
/// nothing.
fn read_records(mut r: impl Read, total: u64) -> std::io::Result<(Vec<Vec<u8>>, u64)> {
    let mut records = Vec::new();
    let mut pos = 0u64;
    while total - pos >= RECORD_HEADER as u64 {
        let mut header = [0u8; RECORD_HEADER];
        r.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
        let start = pos + RECORD_HEADER as u64;
        if len > MAX_RECORD || total - start < len as u64 {
            break;
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        if crate::accel::crc32c::checksum(&payload) != crc {
            break;
        }
        records.push(payload);
        pos = start + len as u64;
    }
    Ok((records, pos))
}

/// Where `rewrite` writes aside: `<stem>.compact` beside the file, or a
/// hashed name when that would pass the 255-byte file-name limit (a queue
/// file's hex name may take 254 bytes with `.log`).
fn compaction_path(path: &Path) -> PathBuf {
    let aside = path.with_extension("compact");
    match aside.file_name() {
        Some(name) if name.len() <= 255 => aside,
        _ => {
            let hash = path
                .as_os_str()
                .as_encoded_bytes()
                .iter()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
            path.with_file_name(format!("{hash:016x}.compact"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::FailingFile;

    fn decode_records(data: &[u8]) -> (Vec<Vec<u8>>, usize) {
        let (records, end) = read_records(data, data.len() as u64).unwrap();
        (records, end as usize)
    }

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_record(&mut buf, payload);
        buf
    }

    #[test]
    fn a_failed_write_is_rolled_back_so_later_records_survive_recovery() {
        let (one, two, three) = (record(b"one"), record(b"two"), record(b"three"));
        let mut file = FailingFile::default();
        append_or_roll_back(&mut file, 0, &one).unwrap();
        // The disk fills up half-way through the second record.
        file.budget = Some(5);
        let failed = append_or_roll_back(&mut file, one.len() as u64, &two);
        assert!(matches!(failed, Err(AppendFailure::RolledBack(_))));
        assert_eq!(file.data, one, "no partial record is left");
        // Space again: the next (acknowledged) record follows the last good one.
        file.budget = None;
        append_or_roll_back(&mut file, one.len() as u64, &three).unwrap();
        let (records, end) = decode_records(&file.data);
        assert_eq!(records, vec![b"one".to_vec(), b"three".to_vec()]);
        assert_eq!(end, file.data.len());

        // What happened before: the torn half stays and hides the next record.
        let mut unrolled = one.clone();
        unrolled.extend_from_slice(&two[..5]);
        unrolled.extend_from_slice(&three);
        assert_eq!(decode_records(&unrolled).0, vec![b"one".to_vec()]);

        // When even the roll-back fails, the caller learns the file is torn.
        let mut file = FailingFile {
            budget: Some(3),
            truncate_fails: true,
            ..FailingFile::default()
        };
        assert!(matches!(
            append_or_roll_back(&mut file, 0, &one),
            Err(AppendFailure::Torn)
        ));
    }

    #[test]
    fn recovery_streams_and_stops_at_a_length_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/dir/q.log");
        let (mut log, _) = RecordLog::open(&path).unwrap();
        log.append(&vec![7u8; 200_000]).unwrap();
        log.append(b"small").unwrap();
        drop(log);
        // A header announcing 1 GiB that the file does not hold.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (_, records) = RecordLog::open(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].len(), 200_000);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (2 * RECORD_HEADER + 200_000 + 5) as u64
        );
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.log");
        {
            let (mut log, old) = RecordLog::open(&path).unwrap();
            assert!(old.is_empty());
            log.append(b"one").unwrap();
            log.append(b"two").unwrap();
            assert!(log.is_dirty());
            let f = log
                .take_sync_handle()
                .unwrap()
                .expect("dirty log gives a handle");
            f.sync_data().unwrap();
            assert!(!log.is_dirty());
        }
        // A crash in the middle of a third record: header and half the payload.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 10, 1, 2, 3, 4, b'x']).unwrap();
        drop(f);
        let (mut log, records) = RecordLog::open(&path).unwrap();
        assert_eq!(records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * 11);
        log.append(b"three").unwrap();
        drop(log);
        let (_, records) = RecordLog::open(&path).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[2], b"three");
    }

    #[test]
    fn a_bad_checksum_ends_recovery() {
        let mut data = Vec::new();
        encode_record(&mut data, b"good");
        let good = data.len();
        encode_record(&mut data, b"flipped");
        let last = data.len() - 1;
        data[last] ^= 0xff;
        encode_record(&mut data, b"after");
        let (records, end) = decode_records(&data);
        assert_eq!(records, vec![b"good".to_vec()]);
        assert_eq!(end, good);
        // A length announcing 4 GiB is not trusted (and allocates nothing).
        let (records, end) = decode_records(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1]);
        assert!(records.is_empty());
        assert_eq!(end, 0);
    }

    #[test]
    fn rewrite_and_clear_replace_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.log");
        let (mut log, _) = RecordLog::open(&path).unwrap();
        for r in [&b"a"[..], b"b", b"c"] {
            log.append(r).unwrap();
        }
        log.rewrite([&b"b"[..]]).unwrap();
        log.append(b"d").unwrap();
        drop(log);
        let (mut log, records) = RecordLog::open(&path).unwrap();
        assert_eq!(records, vec![b"b".to_vec(), b"d".to_vec()]);
        log.clear().unwrap();
        assert!(log.is_empty());
        log.append(b"e").unwrap();
        drop(log);
        let (log, records) = RecordLog::open(&path).unwrap();
        assert_eq!(records, vec![b"e".to_vec()]);
        log.delete().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_file_with_the_longest_name_can_be_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        // A 125-byte queue name, hex-encoded, plus `.log`: 254 bytes.
        let path = dir.path().join(format!("{}.log", "ab".repeat(125)));
        let (mut log, _) = RecordLog::open(&path).unwrap();
        log.append(b"one").unwrap();
        log.rewrite([&b"two"[..]]).unwrap();
        drop(log);
        let (_, records) = RecordLog::open(&path).unwrap();
        assert_eq!(records, vec![b"two".to_vec()]);
    }
}
