//! Committed consumer-group offsets, kept in memory and, with disk storage,
//! in an append-only file (`data_dir/kafka/consumer_offsets.log`) replayed at
//! start-up. Each record is `[len u32][crc32c u32][payload]`; a torn tail is
//! cut off on replay, and a commit whose write fails is rolled back to the
//! last complete record so later commits stay readable; the file is
//! rewritten compactly when it has grown to several times the live entries.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, BytesMut};

use crate::storage::{append_or_roll_back, create_dir_durable, AppendFailure, StorageError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub metadata: String,
}

type Key = (String, String, i32);

/// The offsets file: where it is, and the length of its complete records.
struct OffsetFile {
    path: PathBuf,
    file: File,
    len: u64,
    /// A failed write could not be rolled back; commits are refused.
    torn: bool,
}

pub struct OffsetStore {
    map: HashMap<Key, Committed>,
    file: Option<OffsetFile>,
    records_in_file: usize,
}

fn put_str(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    b.put_u16(s.len() as u16);
    b.put_slice(s);
}

fn get_str(b: &mut &[u8]) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_u16() as usize;
    if b.remaining() < n {
        return None;
    }
    let s = String::from_utf8_lossy(&b[..n]).into_owned();
    b.advance(n);
    Some(s)
}

fn encode(key: &Key, value: &Committed) -> BytesMut {
    let mut payload = BytesMut::new();
    put_str(&mut payload, &key.0);
    put_str(&mut payload, &key.1);
    payload.put_i32(key.2);
    payload.put_i64(value.offset);
    put_str(&mut payload, &value.metadata);
    let mut record = BytesMut::with_capacity(payload.len() + 8);
    record.put_u32(payload.len() as u32);
    record.put_u32(crate::accel::crc32c::checksum(&payload));
    record.put_slice(&payload);
    record
}

fn decode(mut payload: &[u8]) -> Option<(Key, Committed)> {
    let group = get_str(&mut payload)?;
    let topic = get_str(&mut payload)?;
    if payload.remaining() < 12 {
        return None;
    }
    let partition = payload.get_i32();
    let offset = payload.get_i64();
    let metadata = get_str(&mut payload)?;
    Some(((group, topic, partition), Committed { offset, metadata }))
}

impl OffsetStore {
    pub fn in_memory() -> OffsetStore {
        OffsetStore {
            map: HashMap::new(),
            file: None,
            records_in_file: 0,
        }
    }

    /// Replays `path` (creating it if needed), cutting off a torn tail.
    pub fn open(path: &Path) -> Result<OffsetStore, StorageError> {
        if let Some(dir) = path.parent() {
            create_dir_durable(dir).map_err(StorageError::io("cannot create", dir))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(StorageError::io("cannot open", path))?;
        let total = file
            .metadata()
            .map_err(StorageError::io("cannot stat", path))?
            .len();
        let mut reader = BufReader::with_capacity(1 << 16, &file);
        let mut map = HashMap::new();
        let mut at = 0u64;
        let mut records = 0;
        let mut payload = Vec::new();
        while total - at >= 8 {
            let mut header = [0u8; 8];
            reader
                .read_exact(&mut header)
                .map_err(StorageError::io("cannot read", path))?;
            let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
            let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
            if total - at - 8 < u64::from(len) {
                break;
            }
            payload.resize(len as usize, 0);
            reader
                .read_exact(&mut payload)
                .map_err(StorageError::io("cannot read", path))?;
            if crate::accel::crc32c::checksum(&payload) != crc {
                break;
            }
            let Some((key, value)) = decode(&payload) else {
                break;
            };
            map.insert(key, value);
            records += 1;
            at += 8 + u64::from(len);
        }
        drop(reader);
        if at < total {
            tracing::warn!(
                "kafka: {}: cutting off a torn tail of {} bytes",
                path.display(),
                total - at
            );
            file.set_len(at)
                .and_then(|()| file.sync_all())
                .map_err(StorageError::io("cannot truncate", path))?;
        }
        Ok(OffsetStore {
            map,
            file: Some(OffsetFile {
                path: path.to_path_buf(),
                file,
                len: at,
                torn: false,
            }),
            records_in_file: records,
        })
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.map
            .get(&(group.to_string(), topic.to_string(), partition))
    }

    /// Every committed partition of a group: (topic, partition, offset).
    pub fn of_group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        let mut out: Vec<_> = self
            .map
            .iter()
            .filter(|(k, _)| k.0 == group)
            .map(|(k, v)| (k.1.clone(), k.2, v.clone()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// Stores the offsets of one OffsetCommit, durably (fsynced) on disk.
    pub fn commit(
        &mut self,
        group: &str,
        entries: Vec<(String, i32, Committed)>,
    ) -> Result<(), StorageError> {
        let entries: Vec<(Key, Committed)> = entries
            .into_iter()
            .map(|(topic, partition, value)| ((group.to_string(), topic, partition), value))
            .collect();
        if let Some(f) = &mut self.file {
            if f.torn {
                return Err(StorageError::Torn {
                    path: f.path.clone(),
                });
            }
            let mut batch = BytesMut::new();
            for (key, value) in &entries {
                batch.extend_from_slice(&encode(key, value));
            }
            // Written and fsynced before the offsets count as committed.
            if let Err(failure) = append_or_roll_back(&mut f.file, f.len, &batch) {
                f.torn = matches!(failure, AppendFailure::Torn);
                return Err(failure.into_storage_error("cannot write", &f.path));
            }
            f.len += batch.len() as u64;
            f.file
                .sync_data()
                .map_err(StorageError::io("cannot sync", f.path.clone()))?;
            self.records_in_file += entries.len();
        }
        self.map.extend(entries);
        if self.records_in_file > 4 * self.map.len() + 1000 {
            self.compact()?;
        }
        Ok(())
    }

    /// Forgets every offset of a deleted topic.
    pub fn forget_topic(&mut self, topic: &str) -> Result<(), StorageError> {
        let before = self.map.len();
        self.map.retain(|k, _| k.1 != topic);
        if self.map.len() != before {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with the live entries only (write, fsync, rename).
    fn compact(&mut self) -> Result<(), StorageError> {
        let Some(OffsetFile { path, .. }) = &self.file else {
            return Ok(());
        };
        let path = path.clone();
        let tmp = path.with_extension("log.tmp");
        let mut data = BytesMut::new();
        for (k, v) in &self.map {
            data.extend_from_slice(&encode(k, v));
        }
        let write = || -> std::io::Result<File> {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                #[cfg(unix)]
                File::open(dir)?.sync_all()?;
                let _ = dir;
            }
            OpenOptions::new().read(true).append(true).open(&path)
        };
        let file = write().map_err(StorageError::io("cannot compact", path.clone()))?;
        self.file = Some(OffsetFile {
            path,
            file,
            len: data.len() as u64,
            torn: false,
        });
        self.records_in_file = self.map.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(offset: i64) -> Committed {
        Committed {
            offset,
            metadata: String::new(),
        }
    }

    #[test]
    fn commits_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.log");
        let mut store = OffsetStore::open(&path).unwrap();
        store
            .commit("g", vec![("t".into(), 0, c(5)), ("t".into(), 1, c(7))])
            .unwrap();
        store.commit("g", vec![("t".into(), 0, c(9))]).unwrap();
        drop(store);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 40, 1, 2]).unwrap();
        drop(f);
        let mut store = OffsetStore::open(&path).unwrap();
        assert_eq!(store.get("g", "t", 0), Some(&c(9)));
        assert_eq!(store.get("g", "t", 1), Some(&c(7)));
        assert_eq!(store.get("h", "t", 0), None);
        store.commit("g", vec![("u".into(), 0, c(1))]).unwrap();
        drop(store);
        let mut store = OffsetStore::open(&path).unwrap();
        assert_eq!(store.of_group("g").len(), 3);
        store.forget_topic("t").unwrap();
        drop(store);
        let store = OffsetStore::open(&path).unwrap();
        assert_eq!(store.of_group("g"), vec![("u".to_string(), 0, c(1))]);
    }

    #[test]
    fn compaction_keeps_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.log");
        let mut store = OffsetStore::open(&path).unwrap();
        for i in 0..2000 {
            store.commit("g", vec![("t".into(), 0, c(i))]).unwrap();
        }
        assert!(store.records_in_file < 2000, "compacted");
        drop(store);
        assert!(fs::metadata(&path).unwrap().len() < 2000 * 20);
        let store = OffsetStore::open(&path).unwrap();
        assert_eq!(store.get("g", "t", 0), Some(&c(1999)));
    }
}
