//! The per-protocol tables of a workload file: `[mqtt]`, `[kafka]`, `[amqp]`.

use serde::{Deserialize, Serialize};

/// `[mqtt]` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttOptions {
    /// "3.1.1" or "5".
    pub version: String,
    pub keep_alive_secs: u16,
    pub clean_session: bool,
    /// Client ids are `{prefix}-{role}-{index}`.
    pub client_id_prefix: String,
    /// Messages rumqttc may have in flight per client (QoS 1/2).
    pub inflight: u16,
}

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            version: "3.1.1".into(),
            keep_alive_secs: 30,
            clean_session: true,
            client_id_prefix: "lg".into(),
            inflight: 100,
        }
    }
}

/// `[kafka]` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaOptions {
    /// Producer acks: 0, 1, -1 or "all"; unset = from `qos` (0/1/2 -> 0/1/-1).
    #[serde(
        deserialize_with = "deserialize_acks",
        skip_serializing_if = "Option::is_none"
    )]
    pub acks: Option<i16>,
    /// librdkafka `linger.ms`: how long a batch may wait for more records.
    pub linger_ms: u32,
    /// librdkafka `batch.size`: most bytes in one partition's batch.
    pub batch_size: u32,
    /// "none", "lz4" or "zstd" (zstd only if librdkafka was built with it).
    pub compression: String,
    /// Partitions of every workload topic. The topics are created with this
    /// count before anyone connects; an existing topic must already have it.
    pub partitions: u32,
    /// "assign": every subscriber reads all partitions of its topic (each gets
    /// every message); "group": subscribers join `group_id` and split the
    /// partitions (each message reaches one of them).
    pub consumer: String,
    /// Consumer group of `consumer = "group"`.
    pub group_id: String,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            acks: None,
            linger_ms: 5,
            batch_size: 1_000_000,
            compression: "none".into(),
            partitions: 1,
            consumer: "assign".into(),
            group_id: "loadgen".into(),
        }
    }
}

/// `[amqp]` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpOptions {
    /// "direct", "fanout" or "topic": the type of the exchange publishers
    /// publish to (routing key = `topic`; queues are bound with `subscribe`).
    pub exchange_type: String,
    /// The exchange's name; unset = `loadgen.<exchange_type>` (with
    /// `.durable` when durable); "" = the default exchange (every queue by
    /// its name: `subscribe` names the queue, `topic` must name it too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// Publisher confirms (confirm.select); unset = from `qos` (1 = confirms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirms: Option<bool>,
    /// Most unconfirmed publishes in flight per publisher (with confirms).
    pub confirm_window: u32,
    /// basic.qos prefetch_count per consumer; 0 = no limit. Only matters
    /// with `ack = "manual"` (auto-ack deliveries are never outstanding).
    pub prefetch: u16,
    /// "auto" (no-ack consume) or "manual" (basic.ack per delivery).
    pub ack: String,
    /// "per_subscriber": each subscriber its own queue (every subscriber
    /// gets every matching message); "shared": subscribers with the same
    /// `subscribe` consume one queue (each message reaches one of them).
    pub queues: String,
    /// Declare the exchange and queues durable.
    pub durable: bool,
    /// Publish with delivery mode 2 (persistent); stored on disk only in
    /// durable queues of a broker with disk storage.
    pub persistent: bool,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            exchange_type: "direct".into(),
            exchange: None,
            confirms: None,
            confirm_window: 1_000,
            prefetch: 0,
            ack: "auto".into(),
            queues: "per_subscriber".into(),
            durable: false,
            persistent: false,
        }
    }
}

impl AmqpOptions {
    /// The exchange publishers publish to ("" = the default exchange).
    pub fn exchange_name(&self) -> String {
        match &self.exchange {
            Some(name) => name.clone(),
            None if self.durable => format!("loadgen.{}.durable", self.exchange_type),
            None => format!("loadgen.{}", self.exchange_type),
        }
    }

    pub fn manual_ack(&self) -> bool {
        self.ack == "manual"
    }

    pub fn shared_queues(&self) -> bool {
        self.queues == "shared"
    }
}

fn deserialize_acks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Acks {
        Number(i64),
        Text(String),
    }
    match Acks::deserialize(d)? {
        Acks::Number(n @ -1..=1) => Ok(Some(n as i16)),
        Acks::Text(t) if t == "all" => Ok(Some(-1)),
        _ => Err(serde::de::Error::custom("acks must be 0, 1, -1 or \"all\"")),
    }
}
