//! Broker configuration: a TOML file, with defaults per platform class.
//!
//! Keys left out of the file take the defaults below; keys marked "class
//! default" take the value recommended for the detected (or configured)
//! platform class (see `platform::ClassDefaults`). Unknown keys and bad values
//! are errors that name the file, the key and what to do.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::platform::{ClassDefaults, PlatformClass, RuntimeFlavor};

/// MQTT's largest encodable packet: 1 type byte, 4 length bytes, 268,435,455 body bytes.
pub const MQTT_MAX_PACKET_SIZE: usize = 268_435_460;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub mqtt: MqttConfig,
    pub kafka: KafkaConfig,
    pub amqp: AmqpConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Platform class; `None` = detect from the machine.
    pub class: Option<PlatformClass>,
    /// Tokio runtime flavour; `None` = the class default.
    pub runtime: Option<RuntimeFlavor>,
    /// Worker threads for the multi-threaded runtime; `None` = the class default.
    pub worker_threads: Option<usize>,
    /// Connection limit over all protocols; `None` = the class default.
    pub max_connections: Option<usize>,
    /// Seconds between stats lines on stderr; 0 turns them off.
    pub stats_interval_secs: u64,
    /// Where on-disk storage lives (used by the Kafka and durable AMQP stores).
    pub data_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            class: None,
            runtime: None,
            worker_threads: None,
            max_connections: None,
            stats_interval_secs: 30,
            data_dir: PathBuf::from("./data"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// MQTT over TCP.
    pub bind: SocketAddr,
    /// Serve MQTT over WebSocket as well.
    pub websocket: bool,
    pub ws_bind: SocketAddr,
    /// HTTP path of the WebSocket endpoint.
    pub ws_path: String,
    /// Largest packet accepted (and announced to 5.0 clients); class default.
    pub max_packet_size: Option<usize>,
    /// QoS 1/2 messages in flight per client, both ways (5.0 Receive Maximum); class default.
    pub max_inflight: Option<u16>,
    /// Messages queued per session beyond the in-flight window; class default.
    pub max_queued_messages: Option<usize>,
    /// Topic aliases a 5.0 client may use towards the broker (0 = none).
    pub topic_alias_maximum: u16,
    /// Topic aliases the broker uses towards a 5.0 client, at most what the client allows.
    pub outgoing_topic_aliases: u16,
    /// Highest QoS granted and accepted (0, 1 or 2).
    pub max_qos: u8,
    pub retain_available: bool,
    /// Accept clients without a user name (only sensible on loopback or behind a gateway).
    pub allow_anonymous: bool,
    /// User name → password; when non-empty, a user name must match.
    pub users: BTreeMap<String, String>,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Longest session expiry (seconds) granted to 5.0 clients; u32::MAX = no limit.
    pub max_session_expiry_secs: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            websocket: true,
            ws_bind: SocketAddr::from(([127, 0, 0, 1], 8083)),
            ws_path: "/mqtt".to_string(),
            max_packet_size: None,
            max_inflight: None,
            max_queued_messages: None,
            topic_alias_maximum: 10,
            outgoing_topic_aliases: 10,
            max_qos: 2,
            retain_available: true,
            allow_anonymous: true,
            users: BTreeMap::new(),
            connect_timeout_secs: 10,
            max_session_expiry_secs: u32::MAX,
        }
    }
}

/// Where a protocol keeps what must survive a restart (Kafka logs, durable AMQP queues).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StorageMode {
    /// Files under `server.data_dir/<protocol>`; survives restarts.
    Disk,
    /// Nothing on disk; everything is lost when the broker stops.
    Memory,
}

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

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Serve the Kafka wire protocol.
    pub enabled: bool,
    pub bind: SocketAddr,
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
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9092)),
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
        }
    }
}

/// When durable AMQP queue files are fsynced. Persistent messages published
/// on a channel in confirm mode are always fsynced before they are confirmed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AmqpFlushPolicy {
    /// Every batch of persistent publishes read from a connection is fsynced
    /// before the next batch is read, confirms or not.
    EveryPublish,
    /// Unconfirmed persistent messages are fsynced every `flush_interval_ms`.
    Interval,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Serve AMQP 0.9.1.
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Largest frame offered in connection.tune (clients may ask for less).
    pub frame_max: u32,
    /// Highest channel number offered in connection.tune.
    pub channel_max: u16,
    /// Heartbeat interval offered in connection.tune (seconds; 0 = none).
    pub heartbeat_secs: u16,
    /// Where durable queues, exchanges and bindings live: `server.data_dir/amqp` or memory.
    pub storage: StorageMode,
    pub flush: AmqpFlushPolicy,
    /// Period of the background fsync with `flush = "interval"`.
    pub flush_interval_ms: u64,
    /// Largest message body accepted; a larger one closes the channel (406).
    pub max_message_bytes: u64,
    /// Message limit of queues declared without `x-max-length`; `None` = unbounded.
    pub default_max_length: Option<u64>,
    /// Seconds a new connection has to finish the handshake (header to connection.open).
    pub handshake_timeout_secs: u64,
    /// Accept any user name and password while `users` is empty.
    pub allow_anonymous: bool,
    /// User name → password (PLAIN and AMQPLAIN); when non-empty, a login must match.
    pub users: BTreeMap<String, String>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 5672)),
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_secs: 60,
            storage: StorageMode::Disk,
            flush: AmqpFlushPolicy::Interval,
            flush_interval_ms: 1000,
            max_message_bytes: 128 * 1024 * 1024,
            default_max_length: None,
            handshake_timeout_secs: 10,
            allow_anonymous: true,
            users: BTreeMap::new(),
        }
    }
}

impl AmqpConfig {
    fn validate(&self) -> Result<(), String> {
        // 8192 is amq-protocol's frame-min-size: lapin never tunes below it.
        if !(8192..=(16 << 20)).contains(&self.frame_max) {
            return Err(format!(
                "amqp.frame_max = {}: must be between 8192 and 16777216 (try 131072)",
                self.frame_max
            ));
        }
        if self.channel_max == 0 {
            return Err("amqp.channel_max = 0: must be at least 1 (try 2047)".into());
        }
        if self.flush_interval_ms == 0 {
            return Err("amqp.flush_interval_ms = 0: must be at least 1 (try 1000)".into());
        }
        if !(1..=(1 << 30)).contains(&self.max_message_bytes) {
            return Err(format!(
                "amqp.max_message_bytes = {}: must be between 1 and 1073741824 (try 134217728)",
                self.max_message_bytes
            ));
        }
        if self.default_max_length == Some(0) {
            return Err(
                "amqp.default_max_length = 0: must be at least 1, or left out for no limit".into(),
            );
        }
        if self.handshake_timeout_secs == 0 {
            return Err("amqp.handshake_timeout_secs = 0: must be at least 1 (try 10)".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at http://<bind>/metrics.
    pub enabled: bool,
    pub bind: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// A configuration problem, phrased for the person who wrote the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or "command line" / "configuration".
    pub source: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source.clone(),
            message: format!("cannot read config file: {e}"),
        })?;
        let config = Self::parse(&text).map_err(|message| ConfigError {
            source: source.clone(),
            message,
        })?;
        config
            .validate()
            .map_err(|message| ConfigError { source, message })?;
        Ok(config)
    }

    /// Parses TOML text into a config; the error is one line naming the key.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| describe_toml_error(text, &e))
    }

    /// A config for tests and embedding: every listener on 127.0.0.1 port 0
    /// (the OS picks free ports), no stats line.
    pub fn ephemeral() -> Config {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config::default();
        config.mqtt.bind = any;
        config.mqtt.ws_bind = any;
        config.metrics.bind = any;
        config.kafka.bind = any;
        config.kafka.storage = KafkaStorage::Memory;
        config.amqp.bind = any;
        config.amqp.storage = StorageMode::Memory;
        config.server.stats_interval_secs = 0;
        config
    }

    /// Checks values that the types alone cannot; each message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let m = &self.mqtt;
        if m.max_qos > 2 {
            return Err(format!("mqtt.max_qos = {}: must be 0, 1 or 2", m.max_qos));
        }
        if let Some(size) = m.max_packet_size {
            if !(64..=MQTT_MAX_PACKET_SIZE).contains(&size) {
                return Err(format!(
                    "mqtt.max_packet_size = {size}: must be between 64 and {MQTT_MAX_PACKET_SIZE} bytes"
                ));
            }
        }
        if m.max_inflight == Some(0) {
            return Err("mqtt.max_inflight = 0: must be at least 1 (try 20)".into());
        }
        if m.max_queued_messages == Some(0) {
            return Err("mqtt.max_queued_messages = 0: must be at least 1 (try 1000)".into());
        }
        if !m.ws_path.starts_with('/') {
            return Err(format!(
                "mqtt.ws_path = {:?}: must start with '/' (e.g. \"/mqtt\")",
                m.ws_path
            ));
        }
        if m.connect_timeout_secs == 0 {
            return Err("mqtt.connect_timeout_secs = 0: must be at least 1 (try 10)".into());
        }
        self.kafka.validate()?;
        self.amqp.validate()?;
        if self.server.max_connections == Some(0) {
            return Err("server.max_connections = 0: must be at least 1".into());
        }
        if self.server.worker_threads == Some(0) {
            return Err(
                "server.worker_threads = 0: must be at least 1 (leave it out for one per core)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The limits in force once class defaults fill what the file left out.
    pub fn limits(&self, class: PlatformClass) -> Limits {
        let d: ClassDefaults = class.defaults();
        Limits {
            max_connections: self.server.max_connections.unwrap_or(d.max_connections),
            max_packet_size: self.mqtt.max_packet_size.unwrap_or(d.max_packet_size),
            max_inflight: self.mqtt.max_inflight.unwrap_or(d.max_inflight),
            max_queued_messages: self
                .mqtt
                .max_queued_messages
                .unwrap_or(d.max_queued_messages),
            read_buffer_size: d.read_buffer_size,
        }
    }
}

impl KafkaConfig {
    fn validate(&self) -> Result<(), String> {
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
        if self.advertised_host.as_deref().is_some_and(str::is_empty) {
            return Err(
                "kafka.advertised_host = \"\": give a host name or leave the key out".into(),
            );
        }
        if self.advertised_port == Some(0) {
            return Err(
                "kafka.advertised_port = 0: give the port clients connect to, or leave the key out"
                    .into(),
            );
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

    /// The log settings of every partition.
    pub fn log_config(&self) -> crate::storage::LogConfig {
        let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
        crate::storage::LogConfig {
            segment_bytes: self.segment_bytes,
            retention_bytes: positive(self.retention_bytes),
            retention: positive(self.retention_ms).map(std::time::Duration::from_millis),
        }
    }
}

/// Resolved limits (config over class defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_packet_size: usize,
    pub max_inflight: u16,
    pub max_queued_messages: usize,
    pub read_buffer_size: usize,
}

/// Turns a toml error into one line: line number, the offending line's key,
/// and serde's complaint (which lists the expected keys for unknown ones).
/// (`loadgen::spec::describe_toml_error` does the same for the toolchain's
/// files; the broker does not depend on the load generator.)
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().replace('\n', " ");
    let Some(span) = err.span() else {
        return message;
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let section = text[..span.start.min(text.len())]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(['[', ']']).to_string());
    let key = line.split('=').next().unwrap_or("").trim();
    let key = match (&section, key.is_empty() || line.starts_with('[')) {
        (_, true) => String::new(),
        (Some(s), false) => format!(" key `{s}.{key}`"),
        (None, false) => format!(" key `{key}`"),
    };
    format!("line {line_no}{key}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.mqtt.bind.port(), 1883);
        assert_eq!(c.mqtt.ws_bind.port(), 8083);
        assert_eq!(c.metrics.bind.port(), 9090);
        assert!(c.mqtt.bind.ip().is_loopback());
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
            [server]
            class = "embedded"
            runtime = "multi_thread"
            max_connections = 500
            [mqtt]
            bind = "0.0.0.0:1884"
            max_packet_size = 4096
            users = { alice = "secret" }
            [metrics]
            enabled = false
            "#,
        )
        .unwrap();
        assert_eq!(c.server.class, Some(PlatformClass::Embedded));
        assert_eq!(c.server.runtime, Some(RuntimeFlavor::MultiThread));
        assert_eq!(c.mqtt.bind.port(), 1884);
        assert_eq!(c.mqtt.users["alice"], "secret");
        c.validate().unwrap();
        let limits = c.limits(PlatformClass::Embedded);
        assert_eq!(limits.max_connections, 500);
        assert_eq!(limits.max_packet_size, 4096);
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let err = Config::parse("[mqtt]\nmax_conections = 5\n").unwrap_err();
        assert!(err.starts_with("line 2 key `mqtt.max_conections`"), "{err}");
        assert!(err.contains("unknown field"), "{err}");
        assert!(err.contains("max_packet_size"), "lists valid keys: {err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::parse("[server]\nmax_connections = \"many\"\n").unwrap_err();
        assert!(err.contains("server.max_connections"), "{err}");
        let err = Config::parse("[server]\nclass = \"huge\"\n").unwrap_err();
        assert!(
            err.contains("server.class") && err.contains("embedded"),
            "{err}"
        );
        let err = Config::parse("[mqtt]\nbind = \"localhost\"\n").unwrap_err();
        assert!(err.contains("mqtt.bind"), "{err}");
    }

    #[test]
    fn semantic_checks_name_the_key() {
        let mut c = Config::default();
        c.mqtt.max_qos = 3;
        assert!(c.validate().unwrap_err().starts_with("mqtt.max_qos"));
        let mut c = Config::default();
        c.mqtt.max_packet_size = Some(10);
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("mqtt.max_packet_size"));
        let mut c = Config::default();
        c.mqtt.ws_path = "mqtt".into();
        assert!(c.validate().unwrap_err().starts_with("mqtt.ws_path"));
        let mut c = Config::default();
        c.kafka.default_partitions = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("kafka.default_partitions"));
        let mut c = Config::default();
        c.kafka.retention_ms = 0;
        assert!(c.validate().unwrap_err().starts_with("kafka.retention_ms"));
        let mut c = Config::default();
        c.kafka.max_frame_bytes = 10;
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("kafka.max_frame_bytes"));
    }

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
    fn amqp_section_parses_and_names_bad_keys() {
        let c = Config::parse(
            r#"
            [amqp]
            bind = "0.0.0.0:5673"
            frame_max = 65536
            heartbeat_secs = 10
            storage = "memory"
            flush = "every_publish"
            default_max_length = 1000
            users = { guest = "guest" }
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.amqp.bind.port(), 5673);
        assert_eq!(c.amqp.storage, StorageMode::Memory);
        assert_eq!(c.amqp.flush, AmqpFlushPolicy::EveryPublish);
        assert_eq!(c.amqp.default_max_length, Some(1000));
        let d = Config::default();
        assert_eq!(d.amqp.bind.port(), 5672);
        assert!(d.amqp.bind.ip().is_loopback());
        assert_eq!(d.amqp.storage, StorageMode::Disk);
        let e = Config::ephemeral();
        assert_eq!(e.amqp.bind.port(), 0);
        assert_eq!(e.amqp.storage, StorageMode::Memory);

        let err = Config::parse("[amqp]\nflush = \"often\"\n").unwrap_err();
        assert!(err.starts_with("line 2 key `amqp.flush`"), "{err}");
        assert!(err.contains("every_publish"), "{err}");
        let err = Config::parse("[amqp]\nframe_size = 3\n").unwrap_err();
        assert!(
            err.contains("amqp.frame_size") && err.contains("frame_max"),
            "{err}"
        );
        let mut c = Config::default();
        c.amqp.frame_max = 100;
        assert!(c.validate().unwrap_err().starts_with("amqp.frame_max"));
        let mut c = Config::default();
        c.amqp.default_max_length = Some(0);
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("amqp.default_max_length"));
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, "[mqtt]\nmax_qos = 7\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("broker.toml") && err.contains("mqtt.max_qos"),
            "{err}"
        );
        let err = Config::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.toml") && err.contains("cannot read"),
            "{err}"
        );
    }
}
