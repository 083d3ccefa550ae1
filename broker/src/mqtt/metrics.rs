//! MQTT's own gauges (sessions, subscriptions, retained messages), set by the
//! MQTT hub as it changes them and registered with the rest by `metrics.rs`.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What the MQTT hub holds right now.
#[derive(Debug, Default)]
pub struct MqttMetrics {
    pub sessions: Gauge,
    pub subscriptions: Gauge,
    pub retained_messages: Gauge,
}

impl MqttMetrics {
    /// Registers every gauge under `registry` (its prefix applies).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("sessions", "Client sessions held", self.sessions.clone());
        registry.register(
            "subscriptions",
            "Subscriptions held",
            self.subscriptions.clone(),
        );
        registry.register(
            "retained_messages",
            "Retained messages held",
            self.retained_messages.clone(),
        );
    }
}
