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
    /// AMQP connections open at once; `None` = only `server.max_connections` applies.
    pub max_connections: Option<usize>,
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
            max_connections: None,
            allow_anonymous: true,
            users: BTreeMap::new(),
        }
    }
}

impl AmqpConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
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
        if self.max_connections == Some(0) {
            return Err(
                "amqp.max_connections = 0: must be at least 1 (leave it out for the global limit)"
                    .into(),
            );
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
}
