//! Topics and partitions: each partition owns a log (memory or disk), the
//! idempotent-producer state that guards appends, and a watch on its high
//! watermark that wakes long-polling fetches.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use tokio::sync::watch;

use super::config::KafkaStorage;
use super::producer::{ProducerStates, SequenceCheck};
use crate::storage::batch::{self, BatchError};
use crate::storage::{LogConfig, MemoryLog, PartitionLog, SegmentedLog, StorageError};

/// Topic names Kafka accepts: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why an append was refused; each maps to a Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Corrupt(#[from] BatchError),
    #[error("sequence {got} of producer {producer_id} does not follow {expected}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {got} is older than {current}")]
    FencedEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error("transactional batches are not supported")]
    Transactional,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl AppendError {
    pub fn code(&self) -> i16 {
        match self {
            AppendError::Corrupt(e) if e.is_invalid_record() => ResponseError::InvalidRecord.code(),
            AppendError::Corrupt(_) => ResponseError::CorruptMessage.code(),
            AppendError::OutOfOrderSequence { .. } => {
                ResponseError::OutOfOrderSequenceNumber.code()
            }
            AppendError::FencedEpoch { .. } => ResponseError::InvalidProducerEpoch.code(),
            AppendError::Transactional => ResponseError::InvalidTxnState.code(),
            AppendError::Storage(_) => ResponseError::KafkaStorageError.code(),
        }
    }
}

struct PartitionState {
    log: PartitionLog,
    producers: ProducerStates,
}

pub struct Partition {
    pub index: i32,
    state: Mutex<PartitionState>,
    high_watermark: watch::Sender<i64>,
}

impl Partition {
    fn new(index: i32, log: PartitionLog) -> Partition {
        let next = log.next_offset();
        Partition {
            index,
            state: Mutex::new(PartitionState {
                log,
                producers: ProducerStates::default(),
            }),
            high_watermark: watch::Sender::new(next),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PartitionState> {
        // A panic while holding the lock leaves a consistent log (appends are
        // all-or-nothing in memory), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the batches of one produce request; returns the base offset of
    /// the first and the number of records. `fsync` makes them durable first.
    pub fn append(&self, records: &Bytes, fsync: bool) -> Result<(i64, u64), AppendError> {
        let batches = batch::validate_batches(records)?;
        if batches.is_empty() {
            return Err(BatchError::Truncated {
                have: 0,
                need: batch::HEADER_LEN,
            }
            .into());
        }
        let mut state = self.lock();
        let mut first = None;
        let mut count = 0u64;
        let mut appended = false;
        for (range, header) in batches {
            if header.is_transactional() || header.is_control() {
                return Err(AppendError::Transactional);
            }
            let base = match state.producers.check(&header)? {
                SequenceCheck::Duplicate { base_offset } => base_offset,
                SequenceCheck::Append => {
                    let base = state.log.append(BytesMut::from(&records[range]), &header)?;
                    state.producers.record(&header, base);
                    appended = true;
                    count += u64::try_from(header.record_count).unwrap_or(0);
                    base
                }
            };
            first.get_or_insert(base);
        }
        if fsync && appended {
            state.log.flush()?;
        }
        let next = state.log.next_offset();
        drop(state);
        if appended {
            self.high_watermark.send_replace(next);
        }
        Ok((first.expect("at least one batch"), count))
    }

    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, StorageError> {
        self.lock().log.read(offset, max_bytes)
    }

    /// (log start offset, high watermark)
    pub fn offsets(&self) -> (i64, i64) {
        let state = self.lock();
        (state.log.start_offset(), state.log.next_offset())
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<i64>, StorageError> {
        self.lock().log.offset_for_timestamp(ts)
    }

    /// A receiver that sees every change of the high watermark from now on.
    pub fn watch(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn flush(&self) -> Result<(), StorageError> {
        self.lock().log.flush()
    }

    pub fn enforce_retention(&self, now: SystemTime) -> Result<u64, StorageError> {
        self.lock().log.enforce_retention(now)
    }
}

pub struct Topic {
    pub name: String,
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("topic already exists")]
    AlreadyExists,
    #[error("invalid topic name")]
    InvalidName,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CreateError {
    pub fn code(&self) -> i16 {
        match self {
            CreateError::AlreadyExists => ResponseError::TopicAlreadyExists.code(),
            CreateError::InvalidName => ResponseError::InvalidTopicException.code(),
            CreateError::Storage(_) => ResponseError::KafkaStorageError.code(),
        }
    }
}

/// Every topic of the broker.
pub struct Topics {
    map: RwLock<HashMap<String, Arc<Topic>>>,
    /// `data_dir/kafka/topics` with disk storage.
    root: Option<PathBuf>,
    log_config: LogConfig,
}

impl Topics {
    /// With disk storage, reopens every partition found under `root`.
    pub fn open(
        storage: KafkaStorage,
        root: &Path,
        log_config: LogConfig,
    ) -> Result<Topics, StorageError> {
        let topics = Topics {
            map: RwLock::new(HashMap::new()),
            root: (storage == KafkaStorage::Disk).then(|| root.to_path_buf()),
            log_config,
        };
        let Some(root) = &topics.root else {
            return Ok(topics);
        };
        crate::storage::create_dir_durable(root)
            .map_err(StorageError::io("cannot create", root))?;
        let mut found: BTreeMap<String, i32> = BTreeMap::new();
        for entry in fs::read_dir(root).map_err(StorageError::io("cannot list", root))? {
            let name = entry
                .map_err(StorageError::io("cannot list", root))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<i32>() else {
                continue;
            };
            if valid_topic_name(topic) && index >= 0 {
                let count = found.entry(topic.to_string()).or_default();
                *count = (*count).max(index + 1);
            }
        }
        for (name, count) in found {
            let topic = topics.build(&name, count)?;
            tracing::info!("kafka: recovered topic {name} ({count} partitions)");
            topics.write().insert(name, topic);
        }
        Ok(topics)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn partition_dir(root: &Path, topic: &str, index: i32) -> PathBuf {
        root.join(format!("{topic}-{index}"))
    }

    fn build(&self, name: &str, partitions: i32) -> Result<Arc<Topic>, StorageError> {
        let partitions = (0..partitions)
            .map(|i| {
                let log = match &self.root {
                    Some(root) => PartitionLog::Disk(SegmentedLog::open(
                        &Self::partition_dir(root, name, i),
                        self.log_config,
                    )?),
                    None => PartitionLog::Memory(MemoryLog::new(self.log_config)),
                };
                Ok(Arc::new(Partition::new(i, log)))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok(Arc::new(Topic {
            name: name.to_string(),
            partitions,
        }))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().get(name).cloned()
    }

    pub fn create(&self, name: &str, partitions: i32) -> Result<Arc<Topic>, CreateError> {
        if !valid_topic_name(name) {
            return Err(CreateError::InvalidName);
        }
        let mut map = self.write();
        if map.contains_key(name) {
            return Err(CreateError::AlreadyExists);
        }
        let topic = self.build(name, partitions)?;
        map.insert(name.to_string(), topic.clone());
        tracing::debug!("kafka: created topic {name} ({partitions} partitions)");
        Ok(topic)
    }

    /// The topic, created with `partitions` when it does not exist yet.
    pub fn get_or_create(&self, name: &str, partitions: i32) -> Result<Arc<Topic>, CreateError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        match self.create(name, partitions) {
            Err(CreateError::AlreadyExists) => self.get(name).ok_or(CreateError::AlreadyExists),
            other => other,
        }
    }

    /// Removes a topic and its data; false when there was no such topic.
    pub fn delete(&self, name: &str) -> Result<bool, StorageError> {
        let Some(topic) = self.write().remove(name) else {
            return Ok(false);
        };
        if let Some(root) = &self.root {
            for p in &topic.partitions {
                let dir = Self::partition_dir(root, name, p.index);
                fs::remove_dir_all(&dir).map_err(StorageError::io("cannot delete", &dir))?;
            }
            crate::storage::sync_dir(root).map_err(StorageError::io("cannot sync", root))?;
        }
        Ok(true)
    }

    /// Every topic, by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn is_disk(&self) -> bool {
        self.root.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::kafka::{batch, batch_from};

    #[test]
    fn topic_names() {
        for ok in ["a", "orders.v1", "my_topic-2", &"x".repeat(249)] {
            assert!(valid_topic_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250)] {
            assert!(!valid_topic_name(bad), "{bad}");
        }
    }

    #[test]
    fn disk_topics_come_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::open(KafkaStorage::Disk, dir.path(), LogConfig::default()).unwrap();
        let t = topics.create("orders", 3).unwrap();
        t.partitions[2]
            .append(&batch(&["a", "b"], 1).freeze(), true)
            .unwrap();
        assert!(matches!(
            topics.create("orders", 3),
            Err(CreateError::AlreadyExists)
        ));
        assert!(matches!(
            topics.create("a/b", 1),
            Err(CreateError::InvalidName)
        ));
        topics.create("gone", 1).unwrap();
        assert!(topics.delete("gone").unwrap());
        assert!(!topics.delete("gone").unwrap());
        drop((t, topics));
        let topics = Topics::open(KafkaStorage::Disk, dir.path(), LogConfig::default()).unwrap();
        let names: Vec<_> = topics.all().iter().map(|t| t.name.clone()).collect();
        assert_eq!(names, ["orders"]);
        let t = topics.get("orders").unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.partitions[2].offsets(), (0, 2));
        assert_eq!(t.partitions[0].offsets(), (0, 0));
    }

    #[test]
    fn append_wakes_watchers_and_dedups_idempotent_retries() {
        let topics = Topics::open(
            KafkaStorage::Memory,
            Path::new("unused"),
            LogConfig::default(),
        )
        .unwrap();
        let t = topics.get_or_create("t", 1).unwrap();
        let p = &t.partitions[0];
        let mut w = p.watch();
        let first = batch_from(&["a", "b"], 1, 9, 0, 0).freeze();
        assert_eq!(p.append(&first, false).unwrap(), (0, 2));
        assert!(w.has_changed().unwrap());
        assert_eq!(*w.borrow_and_update(), 2);
        // The same batch again (a retry after a lost answer) is not stored twice.
        assert_eq!(p.append(&first, false).unwrap(), (0, 0));
        assert!(!w.has_changed().unwrap());
        let next = batch_from(&["c"], 2, 9, 0, 2).freeze();
        assert_eq!(p.append(&next, false).unwrap(), (2, 1));
        // A gap in the sequence is refused.
        let gap = batch_from(&["e"], 3, 9, 0, 7).freeze();
        assert!(matches!(
            p.append(&gap, false),
            Err(AppendError::OutOfOrderSequence {
                expected: 3,
                got: 7,
                ..
            })
        ));
        assert_eq!(p.offsets(), (0, 3));
        let mut corrupt = BytesMut::from(&batch(&["x"], 1)[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let err = p.append(&corrupt.freeze(), false).unwrap_err();
        assert_eq!(err.code(), 2, "CORRUPT_MESSAGE");
    }
}
