//! The `[mqtt]` section of the config file: listeners, limits and
//! authentication of MQTT over TCP and WebSocket, with defaults and checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

/// What happens to a subscriber marked slow (see `docs/mqtt.md`, "Slow subscribers").
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SlowSubscriberPolicy {
    /// Its messages go to its own queue only; beyond `max_queued_messages` they
    /// are dropped (`dropped{kind="slow_subscriber"}`). Like mosquitto.
    #[default]
    Drop,
    /// It is disconnected (5.0 DISCONNECT 0x97 Quota exceeded).
    Disconnect,
}

/// MQTT's largest encodable packet: 1 type byte, 4 length bytes, 268,435,455 body bytes.
pub const MQTT_MAX_PACKET_SIZE: usize = 268_435_460;

/// Longest `mqtt.slow_subscriber_wait_ms`: beyond a few seconds a stuck
/// subscriber would again stall its publishers.
const MAX_SLOW_SUBSCRIBER_WAIT_MS: u64 = 10_000;
/// Longest `mqtt.inflight_timeout_secs` (one day).
const MAX_INFLIGHT_TIMEOUT_SECS: u64 = 86_400;

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
    /// Serve MQTT over TLS, once `[tls]` has a certificate.
    pub tls: bool,
    pub tls_bind: SocketAddr,
    /// Serve MQTT over secure WebSocket (wss://, same path and origin
    /// policy), once `[tls]` has a certificate and `websocket` is on.
    pub wss: bool,
    pub wss_bind: SocketAddr,
    /// On TLS connections, the client certificate's subject common name is
    /// the user name (CONNECT's user name and password are not used), as
    /// mosquitto's `use_identity_as_username`. Needs `tls.client_auth = "require"`.
    pub use_identity_as_username: bool,
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
    /// Accept clients without a user name. Unset: only on listeners bound
    /// to loopback, and not once `auth.password_file` is set.
    pub allow_anonymous: Option<bool>,
    /// Refused (plain-text passwords): users live in `auth.password_file`.
    pub users: BTreeMap<String, toml::Value>,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Longest session expiry (seconds) granted to 5.0 clients (announced in
    /// CONNACK when lower than asked); u32::MAX = no limit.
    pub max_session_expiry_secs: u32,
    /// Seconds a 3.1.1 persistent session (clean session = 0) outlives its
    /// connection (mosquitto's `persistent_client_expiration`); u32::MAX = forever.
    pub persistent_session_expiry_secs: u32,
    /// Offline sessions kept at once; beyond it the session offline the
    /// longest ends (as if it had expired). Class default.
    pub max_offline_sessions: Option<usize>,
    /// Topic filters one session may hold; more: SUBACK failure (0x80 / 5.0 0x97).
    pub max_subscriptions_per_client: usize,
    /// Retained messages stored at once (topics).
    pub max_retained_messages: usize,
    /// Payload bytes of all retained messages together.
    pub max_retained_bytes: usize,
    /// Longest keep-alive granted: a client asking 0 (none) or more gets this
    /// (5.0: announced as Server Keep Alive; 3.1.1: enforced silently).
    pub max_keep_alive_secs: u16,
    /// Browser origins (`scheme://host[:port]`, or `*`) allowed to open a
    /// WebSocket, besides same-host ones (localhost, 127.0.0.1, ::1, the
    /// listener's address). Requests without `Origin` (non-browser clients) are allowed.
    pub websocket_allowed_origins: Vec<String>,
    /// MQTT connections (TCP and WebSocket) open at once; `None` = only
    /// `server.max_connections` applies.
    pub max_connections: Option<usize>,
    /// How long a publisher waits for a connected subscriber whose queue is
    /// full to make room before that subscriber is marked slow (0 = never wait).
    pub slow_subscriber_wait_ms: u64,
    /// What happens to a subscriber marked slow.
    pub slow_subscriber_policy: SlowSubscriberPolicy,
    /// Seconds a QoS 1/2 message sent to a connected client may stay
    /// unacknowledged before the client is disconnected (its window is stuck).
    pub inflight_timeout_secs: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            websocket: true,
            ws_bind: SocketAddr::from(([127, 0, 0, 1], 8083)),
            ws_path: "/mqtt".to_string(),
            tls: true,
            tls_bind: SocketAddr::from(([127, 0, 0, 1], 8883)),
            wss: true,
            wss_bind: SocketAddr::from(([127, 0, 0, 1], 8084)),
            use_identity_as_username: false,
            max_packet_size: None,
            max_inflight: None,
            max_queued_messages: None,
            topic_alias_maximum: 10,
            outgoing_topic_aliases: 10,
            max_qos: 2,
            retain_available: true,
            allow_anonymous: None,
            users: BTreeMap::new(),
            connect_timeout_secs: 10,
            max_session_expiry_secs: 7200,
            persistent_session_expiry_secs: 7200,
            max_offline_sessions: None,
            max_subscriptions_per_client: 1000,
            max_retained_messages: 100_000,
            max_retained_bytes: 64 * 1024 * 1024,
            max_keep_alive_secs: u16::MAX,
            websocket_allowed_origins: Vec::new(),
            max_connections: None,
            slow_subscriber_wait_ms: 500,
            slow_subscriber_policy: SlowSubscriberPolicy::Drop,
            inflight_timeout_secs: 60,
        }
    }
}

impl MqttConfig {
    /// Checks values that the types alone cannot; each message names the key.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let m = self;
        if !m.users.is_empty() {
            return Err(crate::auth::plain_text_users_error("mqtt"));
        }
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
        if m.max_connections == Some(0) {
            return Err(
                "mqtt.max_connections = 0: must be at least 1 (leave it out for the global limit)"
                    .into(),
            );
        }
        if m.max_offline_sessions == Some(0) {
            return Err("mqtt.max_offline_sessions = 0: must be at least 1 (try 10000)".into());
        }
        if m.max_subscriptions_per_client == 0 {
            return Err(
                "mqtt.max_subscriptions_per_client = 0: must be at least 1 (try 1000)".into(),
            );
        }
        if m.max_retained_messages == 0 && m.retain_available {
            return Err("mqtt.max_retained_messages = 0: must be at least 1 (try 100000), or set mqtt.retain_available = false".into());
        }
        if m.max_retained_bytes == 0 && m.retain_available {
            return Err("mqtt.max_retained_bytes = 0: must be at least 1 (try 67108864), or set mqtt.retain_available = false".into());
        }
        if m.max_keep_alive_secs == 0 {
            return Err(
                "mqtt.max_keep_alive_secs = 0: must be between 1 and 65535 (try 65535)".into(),
            );
        }
        for origin in &m.websocket_allowed_origins {
            let path = origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.contains('/'));
            if origin != "*" && origin != "null" && (!origin.contains("://") || path) {
                return Err(format!(
                    "mqtt.websocket_allowed_origins: {origin:?} is not an origin: write scheme://host[:port] without a path (e.g. \"https://app.example.com\"), \"*\" for any, or \"null\""
                ));
            }
        }
        if m.slow_subscriber_wait_ms > MAX_SLOW_SUBSCRIBER_WAIT_MS {
            return Err(format!(
                "mqtt.slow_subscriber_wait_ms = {}: must be at most {MAX_SLOW_SUBSCRIBER_WAIT_MS} \
                 (publishers wait this long on a full subscriber; try 500)",
                m.slow_subscriber_wait_ms
            ));
        }
        if !(1..=MAX_INFLIGHT_TIMEOUT_SECS).contains(&m.inflight_timeout_secs) {
            return Err(format!(
                "mqtt.inflight_timeout_secs = {}: must be between 1 and {MAX_INFLIGHT_TIMEOUT_SECS} (try 60)",
                m.inflight_timeout_secs
            ));
        }
        if m.connect_timeout_secs == 0 {
            return Err("mqtt.connect_timeout_secs = 0: must be at least 1 (try 10)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_limits_are_checked_and_name_their_key() {
        let check = |f: fn(&mut MqttConfig)| {
            let mut c = MqttConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        let err = check(|c| c.max_offline_sessions = Some(0));
        assert!(err.starts_with("mqtt.max_offline_sessions"), "{err}");
        let err = check(|c| c.max_subscriptions_per_client = 0);
        assert!(
            err.starts_with("mqtt.max_subscriptions_per_client"),
            "{err}"
        );
        let err = check(|c| c.max_retained_messages = 0);
        assert!(err.starts_with("mqtt.max_retained_messages"), "{err}");
        let err = check(|c| c.max_retained_bytes = 0);
        assert!(err.starts_with("mqtt.max_retained_bytes"), "{err}");
        let err = check(|c| c.max_keep_alive_secs = 0);
        assert!(err.starts_with("mqtt.max_keep_alive_secs"), "{err}");
        let err = check(|c| c.websocket_allowed_origins = vec!["example.com".into()]);
        assert!(err.starts_with("mqtt.websocket_allowed_origins"), "{err}");
        let err = check(|c| c.websocket_allowed_origins = vec!["https://a.example/".into()]);
        assert!(err.contains("without a path"), "{err}");
        // Retained limits of 0 are fine when retained messages are off.
        let mut c = MqttConfig {
            retain_available: false,
            max_retained_messages: 0,
            ..MqttConfig::default()
        };
        assert_eq!(c.validate(), Ok(()));
        c.websocket_allowed_origins = vec!["*".into(), "http://localhost:3000".into()];
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(MqttConfig::default().validate(), Ok(()));
    }
}

#[cfg(test)]
mod slow_subscriber_tests {
    use super::*;

    #[test]
    fn slow_subscriber_keys_are_checked_and_named() {
        let mut c = MqttConfig::default();
        assert_eq!(c.slow_subscriber_policy, SlowSubscriberPolicy::Drop);
        c.validate().unwrap();
        c.slow_subscriber_wait_ms = 10_001;
        let e = c.validate().unwrap_err();
        assert!(e.starts_with("mqtt.slow_subscriber_wait_ms = 10001"), "{e}");
        c.slow_subscriber_wait_ms = 0;
        c.inflight_timeout_secs = 0;
        let e = c.validate().unwrap_err();
        assert!(e.starts_with("mqtt.inflight_timeout_secs = 0"), "{e}");
    }

    #[test]
    fn policy_parses_from_toml() {
        #[derive(Deserialize)]
        struct Wrap {
            mqtt: MqttConfig,
        }
        let w: Wrap = toml::from_str("[mqtt]\nslow_subscriber_policy = \"disconnect\"\n").unwrap();
        assert_eq!(
            w.mqtt.slow_subscriber_policy,
            SlowSubscriberPolicy::Disconnect
        );
        let bad = toml::from_str::<Wrap>("[mqtt]\nslow_subscriber_policy = \"wait\"\n");
        assert!(bad.is_err());
    }
}
