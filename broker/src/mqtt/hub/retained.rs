//! The hub's retained store as subscriptions see it: what a new
//! subscription is sent, and whether a new retained message fits the limits.

use std::sync::Arc;
use std::time::Instant;

use super::{lock, MqttHub};
use crate::core::retained::RetainRefused;
use crate::core::topic::parse_filter;
use crate::core::Message;
use crate::mqtt::packet::{RetainHandling, SubscriptionOptions};

impl MqttHub {
    /// Retained messages to send for a new subscription, per its Retain Handling.
    /// Shared subscriptions never get retained messages (MQTT 5.0 4.8.2).
    pub fn retained_for(
        &self,
        raw_filter: &str,
        options: SubscriptionOptions,
        existed: bool,
    ) -> Vec<Arc<Message>> {
        let Some(spec) = parse_filter(raw_filter) else {
            return Vec::new();
        };
        let wanted = match options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
        if spec.share_group.is_some() || !wanted {
            return Vec::new();
        }
        let mut retained = lock(&self.retained);
        let found = retained.matching(spec.filter, Instant::now());
        self.metrics
            .mqtt
            .retained_messages
            .set(retained.len() as i64);
        found
    }

    /// Whether a new retained message on `topic` with `len` payload bytes
    /// fits the retained limits now (checked again when it is stored).
    pub fn retained_admits(&self, topic: &str, len: usize) -> Result<(), RetainRefused> {
        lock(&self.retained).admit(topic, len, Instant::now())
    }
}
