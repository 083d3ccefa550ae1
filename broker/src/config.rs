//! Broker configuration: a TOML file, with defaults per platform class.
//!
//! Each protocol's section (`[mqtt]`, `[kafka]`, `[amqp]`) is defined and
//! checked in that protocol's `config` module; this one combines them with
//! `[server]` and `[metrics]`, loads the file and reports errors.
//!
//! Keys left out of the file take the defaults below; keys marked "class
//! default" take the value recommended for the detected (or configured)
//! platform class (see `platform::ClassDefaults`). Unknown keys and bad values
//! are errors that name the file, the key and what to do.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::amqp::config::{AmqpConfig, AmqpFlushPolicy};
pub use crate::auth::AuthConfig;
pub use crate::kafka::config::{FlushPolicy, KafkaConfig, KafkaStorage};
pub use crate::mqtt::config::{MqttConfig, MQTT_MAX_PACKET_SIZE};
use crate::platform::{ClassDefaults, KafkaTopicDefaults, PlatformClass, RuntimeFlavor};
pub use crate::storage::StorageMode;
pub use crate::tls::{ClientAuth, TlsConfig};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub mqtt: MqttConfig,
    pub kafka: KafkaConfig,
    pub amqp: AmqpConfig,
    pub metrics: MetricsConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
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
pub struct MetricsConfig {
    /// Serve Prometheus metrics at http://<bind>/metrics.
    pub enabled: bool,
    pub bind: SocketAddr,
    /// A file holding the bearer token scrapes must send
    /// (`Authorization: Bearer …`); relative to the config file.
    pub bearer_token_file: Option<PathBuf>,
    /// Users of `auth.password_file` who may scrape with HTTP basic auth.
    pub users: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9090)),
            bearer_token_file: None,
            users: Vec::new(),
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
        let mut config = Self::parse(&text).map_err(|message| ConfigError {
            source: source.clone(),
            message,
        })?;
        // Certificate paths are relative to the file that names them.
        let dir = path.parent().unwrap_or(Path::new("."));
        config.tls.resolve_paths(dir);
        config.auth.resolve_paths(dir);
        crate::metrics::access::resolve(&mut config.metrics.bearer_token_file, dir);
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
        config.mqtt.tls_bind = any;
        config.mqtt.wss_bind = any;
        config.kafka.tls_bind = any;
        config.amqp.tls_bind = any;
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
        self.mqtt.validate()?;
        self.kafka.validate()?;
        self.amqp.validate()?;
        self.tls.validate()?;
        if self.mqtt.use_identity_as_username && self.tls.client_auth != ClientAuth::Require {
            return Err(format!(
                "mqtt.use_identity_as_username = true needs tls.client_auth = \"require\" (now \"{}\"): the user name comes from the client certificate",
                self.tls.client_auth.as_str()
            ));
        }
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
            max_offline_sessions: self
                .mqtt
                .max_offline_sessions
                .unwrap_or(d.max_offline_sessions),
            kafka_topics: self.kafka.topic_limits(d.kafka_topics),
            kafka_decode_budget_bytes: self
                .kafka
                .decode_budget_bytes
                .unwrap_or(d.kafka_decode_budget_bytes),
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
    /// MQTT sessions kept while their client is offline.
    pub max_offline_sessions: usize,
    /// Kafka topic limits and the segment-file cache (class defaults under
    /// the `kafka.max_*` keys).
    pub kafka_topics: KafkaTopicDefaults,
    /// `kafka.decode_budget_bytes` or the class default.
    pub kafka_decode_budget_bytes: usize,
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
            allow_anonymous = false
            [metrics]
            enabled = false
            [auth]
            password_file = "passwd"
            "#,
        )
        .unwrap();
        assert_eq!(c.server.class, Some(PlatformClass::Embedded));
        assert_eq!(c.server.runtime, Some(RuntimeFlavor::MultiThread));
        assert_eq!(c.mqtt.bind.port(), 1884);
        assert_eq!(c.mqtt.allow_anonymous, Some(false));
        assert_eq!(c.auth.password_file.as_deref(), Some(Path::new("passwd")));
        c.validate().unwrap();
        let limits = c.limits(PlatformClass::Embedded);
        assert_eq!(limits.max_connections, 500);
        assert_eq!(limits.max_packet_size, 4096);
    }

    #[test]
    fn plain_text_users_are_refused_with_how_to_hash_them() {
        for section in ["mqtt", "amqp"] {
            let c =
                Config::parse(&format!("[{section}]\nusers = {{ alice = \"secret\" }}\n")).unwrap();
            let err = c.validate().unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "{section}.users: plain-text passwords are refused"
                )),
                "{err}"
            );
            assert!(
                err.contains("broker passwd FILE USER") && err.contains("password_file"),
                "{err}"
            );
        }
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
