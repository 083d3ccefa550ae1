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
use crate::platform::KafkaTopicDefaults;
use crate::storage::batch::{self, BatchError};
use crate::storage::{FileCache, LogConfig, MemoryLog, PartitionLog, SegmentedLog, StorageError};

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
    /// Another request is creating the topic right now (auto-creation only;
    /// an explicit creation gets `AlreadyExists`).
    #[error("topic is being created")]
    InProgress,
    #[error("invalid topic name")]
    InvalidName,
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    PolicyViolation(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CreateError {
    pub fn code(&self) -> i16 {
        match self {
            CreateError::AlreadyExists => ResponseError::TopicAlreadyExists.code(),
            // What Kafka answers while a topic's partitions are not ready yet; clients retry.
            CreateError::InProgress => ResponseError::LeaderNotAvailable.code(),
            CreateError::InvalidName => ResponseError::InvalidTopicException.code(),
            CreateError::InvalidPartitions(_) => ResponseError::InvalidPartitions.code(),
            CreateError::PolicyViolation(_) => ResponseError::PolicyViolation.code(),
            CreateError::Storage(_) => ResponseError::KafkaStorageError.code(),
        }
    }

    /// The `errors{kind}` label of a refusal the client caused, if it is one.
    pub fn metric_kind(&self) -> Option<&'static str> {
        match self {
            CreateError::InvalidPartitions(_) => Some("invalid_partitions"),
            CreateError::PolicyViolation(_) => Some("policy_violation"),
            _ => None,
        }
    }
}

/// Topics by name, with the names being created and the partitions of both.
#[derive(Default)]
struct Registry {
    topics: HashMap<String, Arc<Topic>>,
    /// Names whose partitions are being built (outside the lock): taken, and
    /// counted against the limits, but not visible yet.
    reserved: HashMap<String, u32>,
    /// Partitions of `topics` and `reserved` together.
    partitions: u64,
}

/// A name reserved by [`Topics::create`] while its partitions are built.
struct Reservation<'a> {
    topics: &'a Topics,
    name: &'a str,
    partitions: u32,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut registry = self.topics.write();
        registry.reserved.remove(self.name);
        registry.partitions -= u64::from(self.partitions);
    }
}

/// Every topic of the broker.
pub struct Topics {
    map: RwLock<Registry>,
    /// `data_dir/kafka/topics` with disk storage.
    root: Option<PathBuf>,
    log_config: LogConfig,
    limits: KafkaTopicDefaults,
    /// Every partition's segment files are opened through this.
    files: Arc<FileCache>,
}

/// The file cache's size: `wanted`, but at most a quarter of the soft
/// open-files limit (the rest is for connections), and at least 4.
fn file_cache_capacity(wanted: usize) -> usize {
    let soft = rlimit::Resource::NOFILE
        .get_soft()
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(usize::MAX);
    let capped = wanted.min(soft / 4).max(4);
    if capped < wanted {
        tracing::info!(
            "kafka: keeping {capped} segment files open at most (kafka.max_open_segment_files = {wanted}, open-files limit {soft})"
        );
    }
    capped
}

impl Topics {
    /// With disk storage, reopens every partition found under `root`; the
    /// generic class's topic limits.
    pub fn open(
        storage: KafkaStorage,
        root: &Path,
        log_config: LogConfig,
    ) -> Result<Topics, StorageError> {
        Self::open_with_limits(
            storage,
            root,
            log_config,
            crate::platform::PlatformClass::Generic
                .defaults()
                .kafka_topics,
        )
    }

    /// With disk storage, reopens every partition found under `root`. What
    /// is found is loaded whatever the limits say (they only refuse new
    /// topics), and no partition keeps a file open: start-up needs no more
    /// descriptors with many partitions than with one.
    pub fn open_with_limits(
        storage: KafkaStorage,
        root: &Path,
        log_config: LogConfig,
        limits: KafkaTopicDefaults,
    ) -> Result<Topics, StorageError> {
        let topics = Topics {
            map: RwLock::new(Registry::default()),
            root: (storage == KafkaStorage::Disk).then(|| root.to_path_buf()),
            log_config,
            limits,
            files: FileCache::new(file_cache_capacity(limits.max_open_segment_files)),
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
            let mut registry = topics.write();
            registry.partitions += topic.partitions.len() as u64;
            registry.topics.insert(name, topic);
        }
        let registry = topics.read();
        if registry.topics.len() as u64 > u64::from(limits.max_topics)
            || registry.partitions > u64::from(limits.max_partitions)
        {
            tracing::warn!(
                "kafka: the data directory holds {} topics with {} partitions, beyond kafka.max_topics ({}) or kafka.max_partitions ({}): all are served, new topics are refused",
                registry.topics.len(),
                registry.partitions,
                limits.max_topics,
                limits.max_partitions
            );
        }
        drop(registry);
        Ok(topics)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn partition_dir(root: &Path, topic: &str, index: i32) -> PathBuf {
        root.join(format!("{topic}-{index}"))
    }

    /// Opens or creates the partitions (the file work: call without the lock).
    fn build(&self, name: &str, partitions: i32) -> Result<Arc<Topic>, StorageError> {
        let partitions = (0..partitions)
            .map(|i| {
                let log = match &self.root {
                    Some(root) => PartitionLog::Disk(SegmentedLog::open_in(
                        &Self::partition_dir(root, name, i),
                        self.log_config,
                        &self.files,
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
        self.read().topics.get(name).cloned()
    }

    /// The limits new topics are checked against.
    pub fn limits(&self) -> KafkaTopicDefaults {
        self.limits
    }

    /// (topics, partitions) now, counting those being created.
    pub fn counts(&self) -> (usize, u64) {
        let r = self.read();
        (r.topics.len() + r.reserved.len(), r.partitions)
    }

    /// Why a topic `name` with `partitions` partitions could not be created
    /// now, if it could not (what CreateTopics with validate_only answers).
    pub fn check(&self, name: &str, partitions: i32) -> Result<(), CreateError> {
        Self::admit(&self.read(), &self.limits, name, partitions).map(|_| ())
    }

    fn admit(
        registry: &Registry,
        limits: &KafkaTopicDefaults,
        name: &str,
        partitions: i32,
    ) -> Result<u32, CreateError> {
        if !valid_topic_name(name) {
            return Err(CreateError::InvalidName);
        }
        // A name being created is taken: of two concurrent creations, one
        // gets TOPIC_ALREADY_EXISTS.
        if registry.topics.contains_key(name) || registry.reserved.contains_key(name) {
            return Err(CreateError::AlreadyExists);
        }
        let per_topic = limits.max_partitions_per_topic;
        let n = u32::try_from(partitions)
            .ok()
            .filter(|n| (1..=per_topic).contains(n))
            .ok_or_else(|| {
                CreateError::InvalidPartitions(format!(
                    "{partitions} partitions: a topic has 1 to {per_topic} (kafka.max_partitions_per_topic)"
                ))
            })?;
        let topics = registry.topics.len() + registry.reserved.len();
        if topics >= limits.max_topics as usize {
            return Err(CreateError::PolicyViolation(format!(
                "the broker has {topics} topics, its limit (kafka.max_topics)"
            )));
        }
        if registry.partitions + u64::from(n) > u64::from(limits.max_partitions) {
            return Err(CreateError::PolicyViolation(format!(
                "{n} more partitions would exceed the broker's {} (kafka.max_partitions; {} in use)",
                limits.max_partitions, registry.partitions
            )));
        }
        Ok(n)
    }

    /// Creates a topic. The name is reserved (and counted against the
    /// limits) under the lock, the partitions are built without it, and the
    /// topic is published at the end: other requests are never held up by
    /// this one's file work, and of two creations of one name only the first
    /// succeeds.
    pub fn create(&self, name: &str, partitions: i32) -> Result<Arc<Topic>, CreateError> {
        let n = {
            let mut registry = self.write();
            let n = Self::admit(&registry, &self.limits, name, partitions)?;
            registry.reserved.insert(name.to_string(), n);
            registry.partitions += u64::from(n);
            n
        };
        // Released on every way out but success, a panic included.
        let reservation = Reservation {
            topics: self,
            name,
            partitions: n,
        };
        match self.build(name, partitions) {
            Ok(topic) => {
                std::mem::forget(reservation);
                let mut registry = self.write();
                registry.reserved.remove(name);
                registry.topics.insert(name.to_string(), topic.clone());
                drop(registry);
                tracing::debug!("kafka: created topic {name} ({partitions} partitions)");
                Ok(topic)
            }
            Err(e) => {
                // Leave no half-made topic for the next start-up to find; the
                // name stays reserved until then, so no new creation of it
                // can be building the directories removed here.
                if let Some(root) = &self.root {
                    for i in 0..partitions {
                        let dir = Self::partition_dir(root, name, i);
                        self.files.forget_under(&dir);
                        let _ = fs::remove_dir_all(&dir);
                    }
                }
                drop(reservation);
                Err(e.into())
            }
        }
    }

    /// The topic, created with `partitions` when it does not exist yet.
    pub fn get_or_create(&self, name: &str, partitions: i32) -> Result<Arc<Topic>, CreateError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        match self.create(name, partitions) {
            Err(CreateError::AlreadyExists) => self.get(name).ok_or(CreateError::InProgress),
            other => other,
        }
    }

    /// Removes a topic and its data; false when there was no such topic.
    pub fn delete(&self, name: &str) -> Result<bool, StorageError> {
        let topic = {
            let mut registry = self.write();
            let Some(topic) = registry.topics.remove(name) else {
                return Ok(false);
            };
            registry.partitions -= topic.partitions.len() as u64;
            topic
        };
        // A request still holding a partition gets an error from here on,
        // not the files of a new topic of the same name.
        for p in &topic.partitions {
            p.lock().log.retire();
        }
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
        let mut all: Vec<_> = self.read().topics.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn is_disk(&self) -> bool {
        self.root.is_some()
    }

    /// The cache every partition's segment files are opened through.
    pub fn file_cache(&self) -> &Arc<FileCache> {
        &self.files
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

    fn limits(per_topic: u32, topics: u32, partitions: u32) -> KafkaTopicDefaults {
        KafkaTopicDefaults {
            max_partitions_per_topic: per_topic,
            max_topics: topics,
            max_partitions: partitions,
            max_open_segment_files: 4,
        }
    }

    #[test]
    fn topic_and_partition_limits_refuse_with_kafka_codes() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            Topics::open_with_limits(
                KafkaStorage::Disk,
                dir.path(),
                LogConfig::default(),
                limits(10, 3, 15),
            )
            .unwrap()
        };
        let topics = open();
        for bad in [0, -1, -7, 11, i32::MAX] {
            let e = topics.create("t", bad).map(|_| ()).unwrap_err();
            assert_eq!(e.code(), 37, "INVALID_PARTITIONS for {bad}");
            assert_eq!(e.metric_kind(), Some("invalid_partitions"));
            assert!(e.to_string().contains("max_partitions_per_topic"), "{e}");
        }
        topics.create("a", 10).unwrap();
        assert!(topics.check("b", 5).is_ok());
        let e = topics.check("b", 6).unwrap_err();
        assert_eq!(e.code(), 44, "POLICY_VIOLATION past the total partitions");
        assert!(e.to_string().contains("kafka.max_partitions"), "{e}");
        assert_eq!(topics.create("b", 6).map(|_| ()).unwrap_err().code(), 44);
        topics.create("b", 4).unwrap();
        topics.create("c", 1).unwrap();
        let e = topics.create("d", 1).map(|_| ()).unwrap_err();
        assert_eq!(e.code(), 44, "POLICY_VIOLATION past the topic count");
        assert_eq!(e.metric_kind(), Some("policy_violation"));
        // Auto-creation (Metadata) meets the same limits.
        let e = topics.get_or_create("auto", 1).map(|_| ()).unwrap_err();
        assert_eq!(e.code(), 44);
        assert!(
            topics.get_or_create("a", 1).is_ok(),
            "an existing topic is found"
        );
        assert_eq!(topics.counts(), (3, 15));
        // A refused creation leaves nothing behind; a deletion frees its share.
        assert!(!dir.path().join("d-0").exists());
        assert!(topics.delete("a").unwrap());
        assert_eq!(topics.counts(), (2, 5));
        // A creation that fails half-way releases its name and its share,
        // and leaves none of its partition directories behind.
        let obstacle = dir.path().join("d-3");
        fs::write(&obstacle, b"not a directory").unwrap();
        let e = topics.create("d", 10).map(|_| ()).unwrap_err();
        assert_eq!(e.code(), 56, "KAFKA_STORAGE_ERROR: {e}");
        assert_eq!(topics.counts(), (2, 5));
        assert!(!dir.path().join("d-0").exists() && !dir.path().join("d-2").exists());
        fs::remove_file(&obstacle).unwrap();
        topics.create("d", 10).unwrap();
        // At most 4 segment files are open, whatever the partition count.
        assert!(topics.file_cache().open_files() <= 4);
        drop(topics);
        // Start-up loads what is there, even beyond tighter limits.
        let topics = Topics::open_with_limits(
            KafkaStorage::Disk,
            dir.path(),
            LogConfig::default(),
            limits(2, 1, 2),
        )
        .unwrap();
        assert_eq!(topics.counts(), (3, 15));
        assert_eq!(topics.get("d").unwrap().partitions.len(), 10);
        assert_eq!(topics.create("e", 1).map(|_| ()).unwrap_err().code(), 44);
    }

    #[test]
    fn concurrent_creations_of_one_name_give_one_topic_already_exists() {
        let dir = tempfile::tempdir().unwrap();
        let topics = Arc::new(
            Topics::open_with_limits(
                KafkaStorage::Disk,
                dir.path(),
                LogConfig::default(),
                limits(200, 10, 1000),
            )
            .unwrap(),
        );
        for round in 0..3 {
            let name = format!("race{round}");
            let outcomes: Vec<_> = (0..4)
                .map(|_| {
                    let (topics, name) = (topics.clone(), name.clone());
                    std::thread::spawn(move || topics.create(&name, 50).map(|_| ()))
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            let ok = outcomes.iter().filter(|o| o.is_ok()).count();
            assert_eq!(ok, 1, "{outcomes:?}");
            for e in outcomes.iter().filter_map(|o| o.as_ref().err()) {
                assert_eq!(e.code(), 36, "TOPIC_ALREADY_EXISTS: {e}");
            }
        }
        assert_eq!(topics.counts(), (3, 150));
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
