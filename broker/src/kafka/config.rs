//! The `[kafka]` section of the config file: listener, advertised address,
//! topic defaults, log storage and retention, and consumer-group timeouts.

use std::net::SocketAddr;

use serde::Deserialize;

use super::sasl::SaslMechanism;
use crate::platform::{KafkaTopicDefaults, PlatformClass};
use crate::storage::{LogConfig, StorageMode};

/// The Kafka listener's storage setting (the same choice as every protocol's).
pub type KafkaStorage = StorageMode;

/// When the disk log is fsynced. Produce requests with acks=-1 are always
/// fsynced before they are answered, whatever the policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FlushPolicy {
    /// Every produce request (acks 0, 1 and -1) is fsynced before it is answered.
    EveryProduce,
    /// acks=0/1 data is fsynced every `flush_interval_ms` in the background.
    Interval,
}

/// Kafka's `fetch.max.bytes` default (55 MiB).
pub const DEFAULT_FETCH_MAX_BYTES: usize = 55 * 1024 * 1024;
/// Ten times the clients' default `max.partition.fetch.bytes` (1 MiB).
pub const DEFAULT_MAX_PARTITION_FETCH_BYTES: usize = 10 * 1024 * 1024;
/// Every request but Produce: Metadata, offsets, groups, admin.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Serve the Kafka wire protocol.
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Serve Kafka over TLS (SSL) as well, once `[tls]` has a certificate.
    pub tls: bool,
    pub tls_bind: SocketAddr,
    /// Port announced in Metadata and FindCoordinator to clients of the TLS
    /// listener; default: the port `tls_bind` bound.
    pub tls_advertised_port: Option<u16>,
    /// Host name given to clients in Metadata and FindCoordinator; default: the bind address
    /// (127.0.0.1 when bound to an unspecified address).
    pub advertised_host: Option<String>,
    /// Port given to clients; default: the port actually bound.
    pub advertised_port: Option<u16>,
    /// Partitions of auto-created topics and of CreateTopics with num_partitions = -1.
    pub default_partitions: u32,
    /// Create a topic when a client asks for its metadata (as Apache Kafka does by default).
    pub auto_create_topics: bool,
    pub storage: KafkaStorage,
    /// Size at which the disk log starts a new segment file.
    pub segment_bytes: u64,
    /// Per partition: the oldest segments are deleted beyond this size; -1 = no limit.
    pub retention_bytes: i64,
    /// Segments whose last write is older than this are deleted; -1 = kept forever.
    pub retention_ms: i64,
    pub flush: FlushPolicy,
    /// Period of the background fsync with `flush = "interval"`.
    pub flush_interval_ms: u64,
    /// Largest request frame; a larger (or negative) size closes the connection.
    pub max_frame_bytes: usize,
    /// Consumer-group session timeouts clients may ask for.
    pub group_min_session_timeout_ms: u64,
    pub group_max_session_timeout_ms: u64,
    /// How long the first rebalance of an empty group waits for more members.
    pub group_initial_rebalance_delay_ms: u64,
    /// Consumer groups that may exist at once.
    pub max_groups: usize,
    /// Members per consumer group (Kafka's `group.max.size`).
    pub group_max_size: usize,
    /// One member's protocol metadata, and one member's assignment.
    pub group_max_member_metadata_bytes: usize,
    /// Everything all consumer groups keep (metadata, assignments, ids).
    pub group_max_total_bytes: usize,
    /// Kafka connections open at once; `None` = only `server.max_connections` applies.
    pub max_connections: Option<usize>,
    /// Time a new connection has to send its first complete request.
    pub first_request_timeout_ms: u64,
    /// A connection with no request for this long is closed (Kafka's
    /// `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// Most partitions of one topic (CreateTopics, auto-creation); more is
    /// INVALID_PARTITIONS. `None` = the class default.
    pub max_partitions_per_topic: Option<u32>,
    /// Most topics; a topic beyond it is POLICY_VIOLATION. `None` = the class default.
    pub max_topics: Option<u32>,
    /// Most partitions over all topics; a topic beyond it is POLICY_VIOLATION.
    /// `None` = the class default.
    pub max_partitions: Option<u32>,
    /// Segment and index files kept open at once over all partitions (the
    /// rest are opened when used); `None` = the class default. Capped at a
    /// quarter of the open-files limit at start-up.
    pub max_open_segment_files: Option<usize>,
    /// Records in one Fetch response, whatever the client's `max_bytes`
    /// (Kafka's `fetch.max.bytes`). The first batch of the first non-empty
    /// partition is returned even when larger, so a consumer always progresses.
    pub fetch_max_bytes: usize,
    /// Records of one partition in one Fetch response, whatever the client's
    /// `partition_max_bytes` (with the same first-batch exception).
    pub max_partition_fetch_bytes: usize,
    /// Largest request frame of every API except Produce (which has
    /// `max_frame_bytes`); refused from its size and api key, before the body is read.
    pub max_request_bytes: usize,
    /// Bytes of requests being read and decoded at once, over all Kafka
    /// connections; `None` = the platform class default.
    pub decode_budget_bytes: Option<usize>,
    /// Clients that do not log in with SASL may use the broker; default: only
    /// on a loopback bind and only while `auth.password_file` is not set.
    pub allow_anonymous: Option<bool>,
    /// SASL mechanisms offered in SaslHandshake.
    pub sasl_mechanisms: Vec<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9092)),
            tls: true,
            tls_bind: SocketAddr::from(([127, 0, 0, 1], 9093)),
            tls_advertised_port: None,
            advertised_host: None,
            advertised_port: None,
            default_partitions: 1,
            auto_create_topics: true,
            storage: KafkaStorage::Disk,
            segment_bytes: 1 << 30,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3_600_000,
            flush: FlushPolicy::Interval,
            flush_interval_ms: 1000,
            max_frame_bytes: 100 * 1024 * 1024,
            group_min_session_timeout_ms: 1000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 0,
            max_groups: 10_000,
            group_max_size: 1_000,
            group_max_member_metadata_bytes: 256 * 1024,
            group_max_total_bytes: 32 * 1024 * 1024,
            max_connections: None,
            first_request_timeout_ms: 10_000,
            connections_max_idle_ms: 600_000,
            max_partitions_per_topic: None,
            max_topics: None,
            max_partitions: None,
            max_open_segment_files: None,
            fetch_max_bytes: DEFAULT_FETCH_MAX_BYTES,
            max_partition_fetch_bytes: DEFAULT_MAX_PARTITION_FETCH_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            decode_budget_bytes: None,
            allow_anonymous: None,
            sasl_mechanisms: SaslMechanism::ALL
                .iter()
                .map(|m| m.name().to_string())
                .collect(),
        }
    }
}

impl KafkaConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(1..=10_000).contains(&self.default_partitions) {
            return Err(format!(
                "kafka.default_partitions = {}: must be between 1 and 10000",
                self.default_partitions
            ));
        }
        if !(4096..=(1 << 31)).contains(&self.segment_bytes) {
            return Err(format!(
                "kafka.segment_bytes = {}: must be between 4096 and 2147483648 (try 1073741824)",
                self.segment_bytes
            ));
        }
        for (key, value) in [
            ("retention_bytes", self.retention_bytes),
            ("retention_ms", self.retention_ms),
        ] {
            if value == 0 || value < -1 {
                return Err(format!(
                    "kafka.{key} = {value}: must be positive, or -1 for no limit"
                ));
            }
        }
        if self.flush_interval_ms == 0 {
            return Err("kafka.flush_interval_ms = 0: must be at least 1 (try 1000)".into());
        }
        if !(1024..=i32::MAX as usize).contains(&self.max_frame_bytes) {
            return Err(format!(
                "kafka.max_frame_bytes = {}: must be between 1024 and 2147483647 (try 104857600)",
                self.max_frame_bytes
            ));
        }
        for (key, value, hint) in [
            (
                "fetch_max_bytes",
                self.fetch_max_bytes,
                DEFAULT_FETCH_MAX_BYTES,
            ),
            (
                "max_partition_fetch_bytes",
                self.max_partition_fetch_bytes,
                DEFAULT_MAX_PARTITION_FETCH_BYTES,
            ),
            (
                "max_request_bytes",
                self.max_request_bytes,
                DEFAULT_MAX_REQUEST_BYTES,
            ),
        ] {
            if !(1024..=(1 << 30)).contains(&value) {
                return Err(format!(
                    "kafka.{key} = {value}: must be between 1024 and 1073741824 (try {hint})"
                ));
            }
        }
        if let Some(budget) = self.decode_budget_bytes {
            if budget < self.max_request_bytes || budget > i32::MAX as usize {
                return Err(format!(
                    "kafka.decode_budget_bytes = {budget}: must be at least kafka.max_request_bytes ({}) and at most 2147483647 (leave it out for the class default)",
                    self.max_request_bytes
                ));
            }
        }
        if self.max_connections == Some(0) {
            return Err(
                "kafka.max_connections = 0: must be at least 1 (leave it out for the global limit)"
                    .into(),
            );
        }
        for (key, value, hint) in [
            (
                "first_request_timeout_ms",
                self.first_request_timeout_ms,
                10_000,
            ),
            (
                "connections_max_idle_ms",
                self.connections_max_idle_ms,
                600_000,
            ),
        ] {
            if value == 0 {
                return Err(format!("kafka.{key} = 0: must be at least 1 (try {hint})"));
            }
        }
        for (key, value, hint) in [
            (
                "max_partitions_per_topic",
                self.max_partitions_per_topic,
                1000,
            ),
            ("max_topics", self.max_topics, 1000),
            ("max_partitions", self.max_partitions, 4000),
        ] {
            if value.is_some_and(|v| !(1..=1_000_000).contains(&v)) {
                return Err(format!(
                    "kafka.{key} = {}: must be between 1 and 1000000 (try {hint}, or leave it out for the class default)",
                    value.unwrap_or_default()
                ));
            }
        }
        if let Some(per_topic) = self.max_partitions_per_topic {
            if self.default_partitions > per_topic {
                return Err(format!(
                    "kafka.default_partitions = {}: must not exceed kafka.max_partitions_per_topic ({per_topic})",
                    self.default_partitions
                ));
            }
        }
        if let Some(files) = self
            .max_open_segment_files
            .filter(|f| !(4..=1 << 20).contains(f))
        {
            return Err(format!(
                "kafka.max_open_segment_files = {files}: must be between 4 and 1048576 (try 1024, or leave it out for the class default)"
            ));
        }
        if self.advertised_host.as_deref().is_some_and(str::is_empty) {
            return Err(
                "kafka.advertised_host = \"\": give a host name or leave the key out".into(),
            );
        }
        if self.tls_advertised_port == Some(0) {
            return Err(
                "kafka.tls_advertised_port = 0: give the port TLS clients connect to, or leave the key out"
                    .into(),
            );
        }
        if self.advertised_port == Some(0) {
            return Err(
                "kafka.advertised_port = 0: give the port clients connect to, or leave the key out"
                    .into(),
            );
        }
        for (key, value, hint) in [
            ("max_groups", self.max_groups, "10000"),
            ("group_max_size", self.group_max_size, "1000"),
            (
                "group_max_member_metadata_bytes",
                self.group_max_member_metadata_bytes,
                "262144",
            ),
            (
                "group_max_total_bytes",
                self.group_max_total_bytes,
                "33554432",
            ),
        ] {
            if value == 0 {
                return Err(format!("kafka.{key} = 0: must be at least 1 (try {hint})"));
            }
        }
        if self.group_max_total_bytes < self.group_max_member_metadata_bytes {
            return Err(format!(
                "kafka.group_max_total_bytes = {}: must be at least kafka.group_max_member_metadata_bytes ({})",
                self.group_max_total_bytes, self.group_max_member_metadata_bytes
            ));
        }
        if let Some(unknown) = self
            .sasl_mechanisms
            .iter()
            .find(|m| SaslMechanism::from_name(m).is_none())
        {
            let valid: Vec<&str> = SaslMechanism::ALL.iter().map(|m| m.name()).collect();
            return Err(format!(
                "kafka.sasl_mechanisms: unknown mechanism `{}` (valid: {})",
                unknown.escape_debug(),
                valid.join(", ")
            ));
        }
        if self.group_min_session_timeout_ms == 0
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            return Err(format!(
                "kafka.group_min_session_timeout_ms = {}: must be at least 1 and at most kafka.group_max_session_timeout_ms ({})",
                self.group_min_session_timeout_ms, self.group_max_session_timeout_ms
            ));
        }
        Ok(())
    }

    /// The topic limits: the keys set in the file, class defaults for the rest.
    pub fn topic_limits(&self, class: KafkaTopicDefaults) -> KafkaTopicDefaults {
        KafkaTopicDefaults {
            max_partitions_per_topic: self
                .max_partitions_per_topic
                .unwrap_or(class.max_partitions_per_topic),
            max_topics: self.max_topics.unwrap_or(class.max_topics),
            max_partitions: self.max_partitions.unwrap_or(class.max_partitions),
            max_open_segment_files: self
                .max_open_segment_files
                .unwrap_or(class.max_open_segment_files),
        }
    }

    /// This config with every topic limit left out set to the class default
    /// (what the server hands the Kafka hub).
    pub fn with_class_defaults(mut self, class: KafkaTopicDefaults) -> KafkaConfig {
        let l = self.topic_limits(class);
        self.max_partitions_per_topic = Some(l.max_partitions_per_topic);
        self.max_topics = Some(l.max_topics);
        self.max_partitions = Some(l.max_partitions);
        self.max_open_segment_files = Some(l.max_open_segment_files);
        self
    }

    /// The topic limits in force (the generic class's defaults for keys left
    /// out when no class was applied, as in tests).
    pub fn resolved_topic_limits(&self) -> KafkaTopicDefaults {
        self.topic_limits(PlatformClass::Generic.defaults().kafka_topics)
    }

    /// The log settings of every partition.
    pub fn log_config(&self) -> LogConfig {
        let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
        LogConfig {
            segment_bytes: self.segment_bytes,
            retention_bytes: positive(self.retention_bytes),
            retention: positive(self.retention_ms).map(std::time::Duration::from_millis),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn kafka_section_parses_and_names_bad_keys() {
        let c = Config::parse(
            r#"
            [kafka]
            bind = "0.0.0.0:9093"
            advertised_host = "broker.example"
            default_partitions = 6
            auto_create_topics = false
            storage = "memory"
            flush = "every_produce"
            retention_bytes = 1048576
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.kafka.bind.port(), 9093);
        assert_eq!(c.kafka.storage, KafkaStorage::Memory);
        assert_eq!(c.kafka.flush, FlushPolicy::EveryProduce);
        assert_eq!(c.kafka.log_config().retention_bytes, Some(1_048_576));
        let d = Config::default();
        assert_eq!(d.kafka.bind.port(), 9092);
        assert!(d.kafka.bind.ip().is_loopback());
        assert_eq!(d.kafka.storage, KafkaStorage::Disk);
        assert_eq!(d.kafka.log_config().retention_bytes, None);
        assert_eq!(d.kafka.max_connections, None);
        assert_eq!(d.kafka.first_request_timeout_ms, 10_000);
        assert_eq!(d.kafka.connections_max_idle_ms, 600_000);
        let mut c = Config::default();
        c.kafka.max_connections = Some(0);
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("kafka.max_connections"));
        let mut c = Config::default();
        c.kafka.connections_max_idle_ms = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("kafka.connections_max_idle_ms"));
        let c = Config::parse("[kafka]\nmax_connections = 2\nfirst_request_timeout_ms = 500\n")
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.kafka.max_connections, Some(2));

        // Topic limits: class defaults unless set, bad values name the key.
        let embedded = Config::default()
            .limits(PlatformClass::Embedded)
            .kafka_topics;
        assert_eq!(embedded.max_partitions_per_topic, 100);
        let high = Config::default()
            .limits(PlatformClass::HighPerf)
            .kafka_topics;
        assert_eq!(high.max_partitions_per_topic, 1000);
        assert!(high.max_open_segment_files < 1 << 16);
        let c =
            Config::parse("[kafka]\nmax_partitions_per_topic = 12\nmax_open_segment_files = 64\n")
                .unwrap();
        c.validate().unwrap();
        let l = c.limits(PlatformClass::HighPerf).kafka_topics;
        assert_eq!(
            (l.max_partitions_per_topic, l.max_open_segment_files),
            (12, 64)
        );
        assert_eq!(l.max_partitions, high.max_partitions);
        let resolved = c.kafka.clone().with_class_defaults(embedded);
        assert_eq!(
            resolved.resolved_topic_limits().max_topics,
            embedded.max_topics
        );
        assert_eq!(resolved.max_partitions_per_topic, Some(12));
        for (text, key) in [
            (
                "max_partitions_per_topic = 0",
                "kafka.max_partitions_per_topic",
            ),
            ("max_topics = 0", "kafka.max_topics"),
            ("max_partitions = 2000000", "kafka.max_partitions"),
            ("max_open_segment_files = 1", "kafka.max_open_segment_files"),
            (
                "max_partitions_per_topic = 4\ndefault_partitions = 5",
                "kafka.default_partitions",
            ),
        ] {
            let err = Config::parse(&format!("[kafka]\n{text}\n"))
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.starts_with(key), "{text}: {err}");
        }

        let err = Config::parse("[kafka]\nflush = \"sometimes\"\n").unwrap_err();
        assert!(err.starts_with("line 2 key `kafka.flush`"), "{err}");
        assert!(err.contains("every_produce"), "{err}");
        let err = Config::parse("[kafka]\npartitions = 3\n").unwrap_err();
        assert!(
            err.contains("kafka.partitions") && err.contains("default_partitions"),
            "{err}"
        );
    }

    #[test]
    fn sasl_keys_default_and_unknown_mechanisms_are_named() {
        let d = Config::default();
        assert_eq!(d.kafka.allow_anonymous, None);
        assert_eq!(
            d.kafka.sasl_mechanisms,
            ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        );
        let c = Config::parse(
            "[kafka]\nallow_anonymous = false\nsasl_mechanisms = [\"SCRAM-SHA-512\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.kafka.allow_anonymous, Some(false));
        let err = Config::parse("[kafka]\nsasl_mechanisms = [\"PLAIN\", \"GSSAPI\"]\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(
            err,
            "kafka.sasl_mechanisms: unknown mechanism `GSSAPI` (valid: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
        );
    }
}
