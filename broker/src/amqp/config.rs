//! The `[amqp]` section of the config file: listener, connection tuning,
//! durable storage and its flushing, message limits and logins.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::storage::StorageMode;

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

/// `amqp.default_max_queue_length` unless configured (RabbitMQ has none;
/// a finite default keeps a forgotten queue from holding memory forever).
pub const DEFAULT_MAX_QUEUE_LENGTH: u64 = 1_000_000;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Serve AMQP 0.9.1.
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Serve AMQPS (AMQP over TLS) as well, once `[tls]` has a certificate.
    pub tls: bool,
    pub tls_bind: SocketAddr,
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
    /// Message limit of queues declared without `x-max-length` (overflow
    /// reject-publish unless `x-overflow` says otherwise, so an accepted
    /// message is never dropped by the default). The key was called
    /// `default_max_length`, which is still accepted.
    #[serde(rename = "default_max_queue_length", alias = "default_max_length")]
    pub default_max_length: Option<u64>,
    /// Bytes of frames queued for one connection before it stops being read
    /// and deliveries to it wait (resumed below half of it).
    pub max_outbound_bytes: u64,
    /// Once a connection's outbound queue has reached `max_outbound_bytes`,
    /// seconds it has to drain below half of it before it is disconnected
    /// as a slow reader.
    pub slow_reader_timeout_secs: u64,
    /// Bytes of message bodies being assembled on one connection (all its
    /// channels together); more closes the connection with 506 RESOURCE_ERROR.
    pub max_connection_content_bytes: u64,
    /// What AMQP may hold (queued and unacknowledged messages, their bodies
    /// and ~0.5 KB each; outbound queues; content being assembled) before
    /// publishers are blocked (`connection.blocked`); `None` = 40% of the
    /// machine's memory (1 GiB when it cannot be read). Unblocked below
    /// three quarters of it.
    pub memory_high_watermark_bytes: Option<u64>,
    /// Queues in total; a declare beyond it closes the channel with 406.
    pub max_queues: u64,
    /// Exchanges in total (the built-in ones included); a declare beyond it closes the channel with 406.
    pub max_exchanges: u64,
    /// Bindings in total; a bind beyond it closes the channel with 406.
    pub max_bindings: u64,
    /// Seconds a new connection has to finish the handshake (header to connection.open).
    pub handshake_timeout_secs: u64,
    /// AMQP connections open at once; `None` = only `server.max_connections` applies.
    pub max_connections: Option<usize>,
    /// Without a password file, accept any user name and password. Unset:
    /// only on listeners bound to loopback, and not once
    /// `auth.password_file` is set (then logins are checked against it).
    pub allow_anonymous: Option<bool>,
    /// Refused (plain-text passwords): users live in `auth.password_file`.
    pub users: BTreeMap<String, toml::Value>,
    /// The virtual hosts clients may open, each with its own exchanges,
    /// queues and bindings (and its own `max_queues`, `max_exchanges`,
    /// `max_bindings`). `/` is stored under `data_dir/amqp`, any other
    /// under `data_dir/amqp/vhosts/<hex of the name>`.
    pub vhosts: Vec<String>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 5672)),
            tls: true,
            tls_bind: SocketAddr::from(([127, 0, 0, 1], 5671)),
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_secs: 60,
            storage: StorageMode::Disk,
            flush: AmqpFlushPolicy::Interval,
            flush_interval_ms: 1000,
            max_message_bytes: 128 * 1024 * 1024,
            default_max_length: Some(DEFAULT_MAX_QUEUE_LENGTH),
            max_outbound_bytes: 1 << 20,
            slow_reader_timeout_secs: 30,
            max_connection_content_bytes: 256 << 20,
            memory_high_watermark_bytes: None,
            max_queues: 100_000,
            max_exchanges: 10_000,
            max_bindings: 1_000_000,
            handshake_timeout_secs: 10,
            max_connections: None,
            allow_anonymous: None,
            users: BTreeMap::new(),
            vhosts: vec!["/".to_string()],
        }
    }
}

impl AmqpConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.users.is_empty() {
            return Err(crate::auth::plain_text_users_error("amqp"));
        }
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
                "amqp.default_max_queue_length = 0: must be at least 1 (try 1000000)".into(),
            );
        }
        if !(4096..=(1 << 30)).contains(&self.max_outbound_bytes) {
            return Err(format!(
                "amqp.max_outbound_bytes = {}: must be between 4096 and 1073741824 (try 1048576)",
                self.max_outbound_bytes
            ));
        }
        if self.slow_reader_timeout_secs == 0 {
            return Err("amqp.slow_reader_timeout_secs = 0: must be at least 1 (try 30)".into());
        }
        if self.max_connection_content_bytes == 0 {
            return Err(
                "amqp.max_connection_content_bytes = 0: must be at least 1 (try 268435456)".into(),
            );
        }
        if self
            .memory_high_watermark_bytes
            .is_some_and(|b| b < (1 << 20))
        {
            return Err(
                "amqp.memory_high_watermark_bytes: must be at least 1048576 (or left out for 40% of memory)"
                    .into(),
            );
        }
        for (key, value, hint) in [
            ("max_queues", self.max_queues, 100_000),
            ("max_exchanges", self.max_exchanges, 10_000),
            ("max_bindings", self.max_bindings, 1_000_000),
        ] {
            if value == 0 {
                return Err(format!("amqp.{key} = 0: must be at least 1 (try {hint})"));
            }
        }
        if self.max_exchanges < super::hub::BUILTIN_EXCHANGES.len() as u64 {
            return Err(format!(
                "amqp.max_exchanges = {}: must be at least {} (the built-in exchanges count)",
                self.max_exchanges,
                super::hub::BUILTIN_EXCHANGES.len()
            ));
        }
        if self.max_connections == Some(0) {
            return Err(
                "amqp.max_connections = 0: must be at least 1 (leave it out for the global limit)"
                    .into(),
            );
        }
        if self.vhosts.is_empty() {
            return Err("amqp.vhosts = []: name at least one virtual host (try [\"/\"])".into());
        }
        for (i, v) in self.vhosts.iter().enumerate() {
            if v.is_empty() || v.len() > 255 {
                return Err(format!(
                    "amqp.vhosts[{i}] = {v:?}: a vhost name has 1 to 255 bytes (connection.open carries it in a short string)"
                ));
            }
            if self.vhosts[..i].contains(v) {
                return Err(format!("amqp.vhosts[{i}] = {v:?}: named twice"));
            }
        }
        if self.handshake_timeout_secs == 0 {
            return Err("amqp.handshake_timeout_secs = 0: must be at least 1 (try 10)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
            max_outbound_bytes = 65536
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.amqp.bind.port(), 5673);
        assert_eq!(c.amqp.storage, StorageMode::Memory);
        assert_eq!(c.amqp.flush, AmqpFlushPolicy::EveryPublish);
        assert_eq!(
            c.amqp.default_max_length,
            Some(1000),
            "the old key still works"
        );
        assert_eq!(c.amqp.max_outbound_bytes, 65536);
        let n = Config::parse("[amqp]\ndefault_max_queue_length = 7\n").unwrap();
        assert_eq!(n.amqp.default_max_length, Some(7));
        assert_eq!(
            Config::default().amqp.default_max_length,
            Some(DEFAULT_MAX_QUEUE_LENGTH)
        );
        for (key, value) in [
            ("max_outbound_bytes", "10"),
            ("slow_reader_timeout_secs", "0"),
            ("max_connection_content_bytes", "0"),
            ("memory_high_watermark_bytes", "5"),
            ("max_queues", "0"),
            ("max_bindings", "0"),
            ("max_exchanges", "3"),
            ("vhosts", "[]"),
            ("vhosts", "[\"/\", \"\"]"),
            ("vhosts", "[\"a\", \"a\"]"),
        ] {
            let c = Config::parse(&format!("[amqp]\n{key} = {value}\n")).unwrap();
            let err = c.validate().unwrap_err();
            assert!(err.starts_with(&format!("amqp.{key}")), "{err}");
        }
        let d = Config::default();
        assert_eq!(d.amqp.vhosts, ["/"]);
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
            .starts_with("amqp.default_max_queue_length"));
    }
}
