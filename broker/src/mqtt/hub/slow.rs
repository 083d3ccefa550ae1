//! Slow subscribers and stuck in-flight windows: marking, and the waits
//! that decide when a subscriber counts as slow.

use std::time::Duration;

use super::MqttHub;
use crate::metrics::Protocol;
use crate::mqtt::config::SlowSubscriberPolicy;
use crate::mqtt::session::Session;

impl MqttHub {
    /// Marks a subscriber slow (its queue stayed full past
    /// `mqtt.slow_subscriber_wait_ms`, or its in-flight window is stuck):
    /// from now on nobody waits for it, and under the `disconnect` policy its
    /// connection is asked to close. Counted once per marking.
    pub fn mark_slow(&self, session: &Session) {
        if !session.mark_slow() {
            return;
        }
        self.metrics
            .protocol_error(Protocol::Mqtt, "slow_subscriber");
        let policy = self.config.slow_subscriber_policy;
        tracing::info!(client = %session.client_id, ?policy, "subscriber marked slow");
        if policy == SlowSubscriberPolicy::Disconnect {
            session.request_eviction();
        }
    }

    /// How long a publisher waits for a full subscriber before marking it slow.
    pub fn slow_subscriber_wait(&self) -> Duration {
        Duration::from_millis(self.config.slow_subscriber_wait_ms)
    }

    /// How long a QoS 1/2 message may stay unacknowledged by a connected client.
    pub fn inflight_timeout(&self) -> Duration {
        Duration::from_secs(self.config.inflight_timeout_secs)
    }
}
