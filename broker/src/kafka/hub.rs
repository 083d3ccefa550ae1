//! The state every Kafka connection shares: topics, consumer groups,
//! committed offsets, producer ids; and the background upkeep of the logs
//! (interval fsync, retention, group timeouts).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

use super::config::{FlushPolicy, KafkaConfig, KafkaStorage};
use super::connection::Listener;
use super::group::{GroupConfig, GroupCoordinator};
use super::offsets::OffsetStore;
use super::producer::ProducerIds;
use super::sasl::SaslSettings;
use super::topic::Topics;
use crate::core::slots::ConnectionSlots;
use crate::metrics::Metrics;
use crate::storage::StorageError;

/// How often retention is enforced (Kafka's log.retention.check.interval.ms is 5 min).
const RETENTION_CHECK_EVERY: Duration = Duration::from_secs(30);
/// How often session and rebalance timeouts are checked.
const GROUP_TICK_EVERY: Duration = Duration::from_millis(100);

/// The broker's node id in every answer (a single-node cluster).
pub const NODE_ID: i32 = 0;
pub const CLUSTER_ID: &str = "bench-broker";

pub struct KafkaHub {
    pub config: KafkaConfig,
    pub advertised_host: String,
    pub advertised_port: i32,
    /// The port announced to clients of the TLS listener (when it is on).
    pub tls_advertised_port: Option<i32>,
    pub topics: Topics,
    pub groups: GroupCoordinator,
    offsets: Mutex<OffsetStore>,
    pub producer_ids: ProducerIds,
    pub metrics: Arc<Metrics>,
    /// The global connection limit and `kafka.max_connections`.
    pub connection_permits: ConnectionSlots,
    /// `kafka.decode_budget_bytes`: one permit per byte of a request being
    /// read and decoded, taken before its body is read.
    pub decode_budget: Arc<Semaphore>,
    /// The budget's size: a request larger than this is refused outright.
    pub decode_budget_bytes: usize,
    /// The SASL mechanisms offered (`kafka.sasl_mechanisms`).
    pub sasl: SaslSettings,
}

impl KafkaHub {
    /// The port announced to a client of `listener`.
    pub fn port_for(&self, listener: Listener) -> i32 {
        match listener {
            Listener::Plain => self.advertised_port,
            Listener::Tls => self.tls_advertised_port.unwrap_or(self.advertised_port),
        }
    }

    /// Opens the stores (recovering the disk log) for a listener bound at
    /// `bound` (and a TLS listener at `tls_bound`).
    pub fn open(
        config: KafkaConfig,
        data_dir: &Path,
        bound: SocketAddr,
        tls_bound: Option<SocketAddr>,
        metrics: Arc<Metrics>,
        connection_permits: Arc<Semaphore>,
    ) -> Result<Arc<KafkaHub>, StorageError> {
        let root = data_dir.join("kafka");
        let limits = config.resolved_topic_limits();
        if config.default_partitions > limits.max_partitions_per_topic {
            tracing::warn!(
                "kafka.default_partitions = {} exceeds kafka.max_partitions_per_topic ({}): auto-created topics will be refused with INVALID_PARTITIONS",
                config.default_partitions,
                limits.max_partitions_per_topic
            );
        }
        let topics = Topics::open_with_limits(
            config.storage,
            &root.join("topics"),
            config.log_config(),
            limits,
        )?;
        let offsets = match config.storage {
            KafkaStorage::Disk => OffsetStore::open(&root.join("consumer_offsets.log"))?,
            KafkaStorage::Memory => OffsetStore::in_memory(),
        };
        let advertised_host = config.advertised_host.clone().unwrap_or_else(|| {
            if bound.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                bound.ip().to_string()
            }
        });
        let advertised_port = i32::from(config.advertised_port.unwrap_or(bound.port()));
        let tls_advertised_port =
            tls_bound.map(|tls| i32::from(config.tls_advertised_port.unwrap_or(tls.port())));
        let groups = GroupCoordinator::new(GroupConfig {
            min_session_timeout: Duration::from_millis(config.group_min_session_timeout_ms),
            max_session_timeout: Duration::from_millis(config.group_max_session_timeout_ms),
            initial_rebalance_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            max_groups: config.max_groups,
            max_members: config.group_max_size,
            max_member_metadata_bytes: config.group_max_member_metadata_bytes,
            max_total_bytes: config.group_max_total_bytes,
        });
        let connection_permits = ConnectionSlots::new(connection_permits, config.max_connections);
        // Resolved from the platform class by `server::start`; this fallback is
        // the generic class's (tests that open a hub directly).
        let decode_budget_bytes = config.decode_budget_bytes.unwrap_or(128 << 20);
        let sasl = SaslSettings::new(&config.sasl_mechanisms);
        Ok(Arc::new(KafkaHub {
            sasl,
            config,
            advertised_host,
            advertised_port,
            tls_advertised_port,
            topics,
            groups,
            offsets: Mutex::new(offsets),
            producer_ids: ProducerIds::default(),
            metrics,
            connection_permits,
            decode_budget: Arc::new(Semaphore::new(decode_budget_bytes)),
            decode_budget_bytes,
        }))
    }

    pub fn offsets(&self) -> MutexGuard<'_, OffsetStore> {
        self.offsets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs storage work off the async threads when it touches the disk.
    pub async fn storage_io<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        if self.topics.is_disk() {
            match tokio::task::spawn_blocking(work).await {
                Ok(t) => t,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        } else {
            work()
        }
    }

    /// Whether acks=0/1 produce requests are fsynced before they are answered.
    pub fn fsync_every_produce(&self) -> bool {
        self.config.flush == FlushPolicy::EveryProduce
    }

    /// fsyncs every partition with unflushed appends.
    pub fn flush_all(&self) {
        for topic in self.topics.all() {
            for p in &topic.partitions {
                if let Err(e) = p.flush() {
                    tracing::error!("kafka: flush of {}-{} failed: {e}", topic.name, p.index);
                }
            }
        }
    }

    fn enforce_retention(&self) {
        let now = SystemTime::now();
        for topic in self.topics.all() {
            for p in &topic.partitions {
                match p.enforce_retention(now) {
                    Ok(0) => {}
                    Ok(freed) => tracing::debug!(
                        "kafka: retention freed {freed} bytes of {}-{}",
                        topic.name,
                        p.index
                    ),
                    Err(e) => tracing::error!(
                        "kafka: retention on {}-{} failed: {e}",
                        topic.name,
                        p.index
                    ),
                }
            }
        }
    }

    /// Background upkeep until `shutdown` completes; flushes once more at the end.
    pub async fn maintain(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut groups = tokio::time::interval(GROUP_TICK_EVERY);
        let mut flush = tokio::time::interval(Duration::from_millis(self.config.flush_interval_ms));
        let mut retention = tokio::time::interval(RETENTION_CHECK_EVERY);
        for t in [&mut groups, &mut flush, &mut retention] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = groups.tick() => self.groups.tick(Instant::now()),
                _ = flush.tick(), if self.topics.is_disk() => {
                    let hub = self.clone();
                    self.storage_io(move || hub.flush_all()).await;
                }
                _ = retention.tick() => {
                    let hub = self.clone();
                    self.storage_io(move || hub.enforce_retention()).await;
                }
            }
        }
        let hub = self.clone();
        self.storage_io(move || hub.flush_all()).await;
    }
}
