//! What a report records about the broker under test: which kind, where it
//! listened, its binary, config and log.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerKind {
    /// This workspace's `broker`, built in release mode and started by us.
    Built,
    /// A broker someone else started; we only send load (and sample a pid if given).
    External,
    /// The system `mosquitto`, started by us with a generated config.
    Mosquitto,
    /// No broker: a `cargo xtask micro` run (criterion benchmarks only).
    None,
}

impl BrokerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerKind::Built => "built",
            BrokerKind::External => "external",
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::None => "none",
        }
    }
}

/// What the report says about the broker under test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub kind: BrokerKind,
    /// The executable we started (None for external brokers).
    pub binary: Option<String>,
    pub binary_size_bytes: Option<u64>,
    /// MQTT address the load was sent to; empty when the broker has no MQTT
    /// listener (an external broker without `--mqtt`).
    pub address: String,
    /// Kafka address Kafka workloads were sent to; None: the broker has no
    /// Kafka listener (mosquitto, or external without `--kafka`).
    #[serde(default)]
    pub kafka_address: Option<String>,
    /// AMQP address AMQP workloads were sent to; None: the broker has no
    /// AMQP listener (mosquitto, or external without `--amqp`).
    #[serde(default)]
    pub amqp_address: Option<String>,
    pub pid: Option<u32>,
    /// The config file's text, as the broker read it.
    pub config: Option<String>,
    pub version: Option<String>,
    /// `broker --print-platform` (built broker only).
    pub platform: Option<String>,
    /// The broker's stderr, relative to the run directory.
    pub log: Option<String>,
}
