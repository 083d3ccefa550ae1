//! The message as routed inside the broker, whatever protocol it came in on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::QoS;

/// Client identifiers are shared between the session table and the
/// subscription trie, so they are reference counted.
pub type ClientId = Arc<str>;

/// Metadata carried alongside the payload and passed through unchanged
/// (MQTT 5.0 publish properties; later Kafka headers and AMQP properties map here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
}

/// One published message. Shared by every subscriber it is delivered to.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: MessageProperties,
    /// Who published it (for MQTT 5.0 No Local); `None` for wills and internal messages.
    pub publisher: Option<ClientId>,
    /// When the message expires (MQTT 5.0 Message Expiry Interval), if ever.
    pub expires_at: Option<Instant>,
}

impl Message {
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Seconds left before expiry, rounded up, as MQTT 5.0 requires the
    /// forwarded Message Expiry Interval to be the remaining lifetime.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX).max(1)
        })
    }

    pub fn expiry_from_interval(now: Instant, interval: Option<u32>) -> Option<Instant> {
        interval.map(|secs| now + Duration::from_secs(u64::from(secs)))
    }
}
