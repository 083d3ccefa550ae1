//! Workload specs: what load to generate, read from `bench/workloads/*.toml`.
//!
//! One schema for every protocol: the common keys describe clients, rates
//! and timing; `[mqtt]`, `[kafka]` and `[amqp]` hold what only one protocol
//! has. Unknown keys and bad values are errors that name the file and key.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Mqtt,
    Kafka,
    Amqp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Kafka => "kafka",
            Protocol::Amqp => "amqp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a workload measures; decides which thresholds it can exercise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Many publishers, one or a few subscribers, as fast as allowed.
    FanIn,
    /// One (or few) publishers, many subscribers.
    FanOut,
    /// N connections at a given rate; time until all are established.
    ConnectionStorm,
    /// Acknowledged delivery (MQTT QoS 1, Kafka acks, AMQP confirms).
    Acknowledged,
    /// End-to-end latency at a fixed rate below saturation.
    Latency,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::FanIn => "fan_in",
            Scenario::FanOut => "fan_out",
            Scenario::ConnectionStorm => "connection_storm",
            Scenario::Acknowledged => "acknowledged",
            Scenario::Latency => "latency",
        }
    }
}

/// One workload. Field docs are the TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Short name used in reports (defaults to the file stem).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub protocol: Protocol,
    pub scenario: Scenario,
    /// Publishing clients.
    #[serde(default)]
    pub publishers: u32,
    /// Consuming clients.
    #[serde(default)]
    pub subscribers: u32,
    /// Extra clients that only connect and stay idle (connection storm).
    #[serde(default)]
    pub idle_connections: u32,
    /// Topic (Kafka topic, AMQP routing key) publishers send to; `{publisher}`
    /// is replaced by the publisher index and `{n}` by `index % topics`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// What subscribers subscribe to; `{subscriber}` is replaced by the subscriber index.
    #[serde(default = "default_subscribe")]
    pub subscribe: String,
    /// Distinct topics `{n}` ranges over (Kafka partitions, AMQP queues).
    #[serde(default = "one")]
    pub topics: u32,
    /// Delivery guarantee: MQTT QoS 0/1/2; Kafka acks 0/1/-1 mapped from 0/1/2
    /// (unless `kafka.acks` says otherwise); AMQP 0 = no confirms, 1 = confirms
    /// (unless `amqp.confirms` says otherwise).
    #[serde(default)]
    pub qos: u8,
    /// Payload size in bytes (at least 24: the sequence header lives in the payload).
    #[serde(default = "default_payload")]
    pub payload_bytes: usize,
    /// Messages per second over all publishers; 0 = as fast as possible.
    #[serde(default)]
    pub rate: u64,
    /// Messages per second per publisher (alternative to `rate`); 0 = unset.
    #[serde(default)]
    pub rate_per_publisher: u64,
    /// New connections per second while connecting; 0 = as fast as possible.
    #[serde(default)]
    pub connect_rate: u64,
    /// Seconds of load before measuring starts (excluded from results).
    #[serde(default = "one_f64")]
    pub warmup_secs: f64,
    /// Seconds of measured load.
    #[serde(default = "default_duration")]
    pub duration_secs: f64,
    /// Stop after this many messages per publisher (0 = no limit).
    #[serde(default)]
    pub max_messages: u64,
    /// Seconds to wait for in-flight messages after publishing stops;
    /// deliveries of measured messages that arrive within it are on time.
    #[serde(default = "default_drain")]
    pub drain_secs: f64,
    /// Seconds to keep listening after the drain when deliveries are still
    /// missing: what arrives then counts as `late` (and in latency), what
    /// never arrives as `lost`.
    #[serde(default = "default_late")]
    pub late_secs: f64,
    #[serde(default)]
    pub mqtt: MqttOptions,
    /// `[kafka]`; only with `protocol = "kafka"` (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaOptions>,
    /// `[amqp]`; only with `protocol = "amqp"` (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp: Option<AmqpOptions>,
}

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

/// Longest Kafka topic name.
const MAX_KAFKA_TOPIC_LEN: usize = 249;

fn kafka_topic_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name == "." || name == ".." {
        Some("is not a usable Kafka topic name")
    } else if name.len() > MAX_KAFKA_TOPIC_LEN {
        Some("is longer than Kafka's 249 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("may only contain letters, digits, '.', '_' and '-' in Kafka")
    } else {
        None
    }
}

fn default_topic() -> String {
    "bench/{n}".into()
}
fn default_subscribe() -> String {
    "bench/#".into()
}
fn one() -> u32 {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn default_payload() -> usize {
    64
}
fn default_duration() -> f64 {
    10.0
}
fn default_drain() -> f64 {
    2.0
}
fn default_late() -> f64 {
    3.0
}

/// What a workload's protocol settings promise about delivery, whatever the
/// protocol; the gate judges loss, duplicates and order by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryGuarantee {
    /// Best effort: MQTT QoS 0, Kafka acks=0, AMQP without confirms and
    /// without persistent delivery. Some loss is allowed (a bounded fraction).
    AtMostOnce,
    /// Acknowledged: MQTT QoS 1, Kafka acks=1/all, AMQP confirms or
    /// persistent delivery. No loss allowed.
    AtLeastOnce,
    /// MQTT QoS 2: no loss and no duplicates.
    ExactlyOnce,
}

impl DeliveryGuarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryGuarantee::AtMostOnce => "at-most-once",
            DeliveryGuarantee::AtLeastOnce => "at-least-once",
            DeliveryGuarantee::ExactlyOnce => "exactly-once",
        }
    }

    /// Whether every expected delivery must arrive (zero loss).
    pub fn forbids_loss(self) -> bool {
        self != DeliveryGuarantee::AtMostOnce
    }
}

impl fmt::Display for DeliveryGuarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Smallest payload: the header carries a magic, publisher id, sequence number and send time.
pub const MIN_PAYLOAD_BYTES: usize = 24;

/// A workload file problem, phrased for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SpecError {
    pub file: String,
    pub message: String,
}

impl Workload {
    /// Reads, parses and validates a workload file; the name defaults to the file stem.
    pub fn load(path: &Path) -> Result<Workload, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: file.clone(),
            message: format!("cannot read workload file: {e}"),
        })?;
        let mut w = Workload::parse(&text).map_err(|message| SpecError {
            file: file.clone(),
            message,
        })?;
        if w.name.is_empty() {
            w.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(w)
    }

    /// Parses and validates TOML text; errors are one line naming the key.
    pub fn parse(text: &str) -> Result<Workload, String> {
        let w: Workload = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        w.validate()?;
        Ok(w)
    }

    /// Checks what the types cannot; each message names the key and a fix.
    pub fn validate(&self) -> Result<(), String> {
        let max_qos = match self.protocol {
            Protocol::Mqtt => 2,
            Protocol::Kafka => 2,
            Protocol::Amqp => 1,
        };
        if self.qos > max_qos {
            return Err(format!(
                "qos = {}: must be 0..={max_qos} for {}",
                self.qos, self.protocol
            ));
        }
        if self.payload_bytes < MIN_PAYLOAD_BYTES {
            return Err(format!(
                "payload_bytes = {}: must be at least {MIN_PAYLOAD_BYTES} (the sequence header lives in the payload)",
                self.payload_bytes
            ));
        }
        if self.duration_secs <= 0.0 || !self.duration_secs.is_finite() {
            return Err(format!(
                "duration_secs = {}: must be a positive number of seconds",
                self.duration_secs
            ));
        }
        if self.warmup_secs < 0.0 || !self.warmup_secs.is_finite() {
            return Err(format!(
                "warmup_secs = {}: must be 0 or more",
                self.warmup_secs
            ));
        }
        if self.drain_secs < 0.0 || !self.drain_secs.is_finite() {
            return Err(format!(
                "drain_secs = {}: must be 0 or more",
                self.drain_secs
            ));
        }
        if self.late_secs < 0.0 || !self.late_secs.is_finite() {
            return Err(format!("late_secs = {}: must be 0 or more", self.late_secs));
        }
        if self.rate > 0 && self.rate_per_publisher > 0 {
            return Err("rate and rate_per_publisher are both set: keep one".into());
        }
        if self.topics == 0 {
            return Err("topics = 0: must be at least 1".into());
        }
        let clients = u64::from(self.publishers)
            + u64::from(self.subscribers)
            + u64::from(self.idle_connections);
        if clients == 0 {
            return Err("no clients: set publishers, subscribers or idle_connections".into());
        }
        if self.scenario == Scenario::ConnectionStorm && self.idle_connections == 0 {
            return Err("scenario = \"connection_storm\" needs idle_connections > 0".into());
        }
        if self.protocol == Protocol::Mqtt && !matches!(self.mqtt.version.as_str(), "3.1.1" | "5") {
            return Err(format!(
                "mqtt.version = {:?}: must be \"3.1.1\" or \"5\"",
                self.mqtt.version
            ));
        }
        if self.protocol == Protocol::Kafka {
            self.validate_kafka()?;
        } else if self.kafka.is_some() {
            return Err(format!(
                "[kafka] is set but protocol = \"{}\": remove the table or set protocol = \"kafka\"",
                self.protocol
            ));
        }
        if self.protocol == Protocol::Amqp {
            self.validate_amqp()?;
        } else if self.amqp.is_some() {
            return Err(format!(
                "[amqp] is set but protocol = \"{}\": remove the table or set protocol = \"amqp\"",
                self.protocol
            ));
        }
        Ok(())
    }

    fn validate_amqp(&self) -> Result<(), String> {
        let a = self.amqp_options();
        if !matches!(a.exchange_type.as_str(), "direct" | "fanout" | "topic") {
            return Err(format!(
                "amqp.exchange_type = {:?}: must be \"direct\", \"fanout\" or \"topic\"",
                a.exchange_type
            ));
        }
        let exchange = a.exchange_name();
        if exchange.starts_with("amq.") {
            return Err(format!(
                "amqp.exchange = {exchange:?}: names starting with \"amq.\" are reserved; pick another name or leave the key out"
            ));
        }
        if exchange.is_empty() && a.exchange_type != "direct" {
            return Err(format!(
                "amqp.exchange = \"\" (the default exchange) routes directly by queue name, but amqp.exchange_type = {:?}: set exchange_type = \"direct\" or name an exchange",
                a.exchange_type
            ));
        }
        if a.confirm_window == 0 {
            return Err(
                "amqp.confirm_window = 0: must be at least 1 (unconfirmed publishes in flight)"
                    .into(),
            );
        }
        if !matches!(a.ack.as_str(), "auto" | "manual") {
            return Err(format!(
                "amqp.ack = {:?}: must be \"auto\" (no-ack consume) or \"manual\" (basic.ack per delivery)",
                a.ack
            ));
        }
        if !matches!(a.queues.as_str(), "per_subscriber" | "shared") {
            return Err(format!(
                "amqp.queues = {:?}: must be \"per_subscriber\" (every subscriber gets every message) or \"shared\" (subscribers split one queue)",
                a.queues
            ));
        }
        if a.prefetch > 0 && !a.manual_ack() {
            return Err(format!(
                "amqp.prefetch = {}: only limits manually acknowledged deliveries; set amqp.ack = \"manual\" or remove prefetch",
                a.prefetch
            ));
        }
        if exchange.is_empty() && !a.shared_queues() && self.subscribers > 1 {
            let filters: std::collections::BTreeSet<String> = (0..self.subscribers)
                .map(|i| self.subscriber_filter(i))
                .collect();
            if filters.len() < self.subscribers as usize {
                return Err(format!(
                    "subscribe = {:?}: with the default exchange (amqp.exchange = \"\") a subscriber's queue is named by subscribe, so per-subscriber queues need distinct names; use \"{{subscriber}}\" in subscribe or set amqp.queues = \"shared\"",
                    self.subscribe
                ));
            }
        }
        Ok(())
    }

    /// The `[amqp]` table, or its defaults when absent.
    pub fn amqp_options(&self) -> AmqpOptions {
        self.amqp.clone().unwrap_or_default()
    }

    /// Whether AMQP publishers put their channel in confirm mode:
    /// `amqp.confirms`, else from `qos` (1 = confirms).
    pub fn amqp_confirms(&self) -> bool {
        self.amqp
            .as_ref()
            .and_then(|a| a.confirms)
            .unwrap_or(self.qos > 0)
    }

    fn validate_kafka(&self) -> Result<(), String> {
        let k = self.kafka_options();
        for (key, names) in [
            (
                "topic",
                (0..self.publishers.max(1))
                    .map(|i| (self.topic.as_str(), self.publisher_topic(i)))
                    .collect::<Vec<_>>(),
            ),
            (
                "subscribe",
                (0..self.subscribers)
                    .map(|i| (self.subscribe.as_str(), self.subscriber_filter(i)))
                    .collect(),
            ),
        ] {
            for (pattern, name) in names {
                if let Some(problem) = kafka_topic_problem(&name) {
                    return Err(format!(
                        "{key} = {pattern:?}: {name:?} {problem}; set {key} to a name like \"bench-{{n}}\" (subscribe names the topic itself: no wildcards)"
                    ));
                }
            }
        }
        if !matches!(k.compression.as_str(), "none" | "lz4" | "zstd") {
            return Err(format!(
                "kafka.compression = {:?}: must be \"none\", \"lz4\" or \"zstd\"",
                k.compression
            ));
        }
        if !(1..=10_000).contains(&k.partitions) {
            return Err(format!(
                "kafka.partitions = {}: must be 1..=10000",
                k.partitions
            ));
        }
        if k.batch_size == 0 {
            return Err("kafka.batch_size = 0: must be at least 1 (bytes)".into());
        }
        match k.consumer.as_str() {
            "assign" => {}
            "group" => {
                if k.group_id.is_empty() {
                    return Err("kafka.group_id = \"\": set a consumer group name".into());
                }
                let mut per_topic = std::collections::BTreeMap::<String, u32>::new();
                for i in 0..self.subscribers {
                    *per_topic.entry(self.subscriber_filter(i)).or_default() += 1;
                }
                if let Some((topic, n)) = per_topic.iter().find(|(_, n)| **n > k.partitions) {
                    return Err(format!(
                        "kafka.consumer = \"group\": {n} subscribers of {topic:?} share {} partitions, so some would get none; raise kafka.partitions to at least {n} or lower subscribers",
                        k.partitions
                    ));
                }
            }
            other => {
                return Err(format!(
                    "kafka.consumer = {other:?}: must be \"assign\" (every subscriber reads every partition) or \"group\" (subscribers split the partitions)"
                ))
            }
        }
        Ok(())
    }

    /// The `[kafka]` table, or its defaults when absent.
    pub fn kafka_options(&self) -> KafkaOptions {
        self.kafka.clone().unwrap_or_default()
    }

    /// Kafka producer acks: `kafka.acks`, else from `qos` (0/1/2 -> 0/1/-1).
    pub fn kafka_acks(&self) -> i16 {
        self.kafka
            .as_ref()
            .and_then(|k| k.acks)
            .unwrap_or(match self.qos {
                0 => 0,
                1 => 1,
                _ => -1,
            })
    }

    /// Whether publishers get acknowledgements from the broker (so the drain
    /// waits for them).
    pub fn expects_acks(&self) -> bool {
        match self.protocol {
            Protocol::Kafka => self.kafka_acks() != 0,
            Protocol::Amqp => self.amqp_confirms(),
            Protocol::Mqtt => self.qos > 0,
        }
    }

    /// The delivery guarantee the workload's settings ask for, whatever the
    /// protocol: MQTT by `qos`; Kafka by the producer's acks (acks=1/all is
    /// at-least-once for the consumers); AMQP by confirms or persistent
    /// delivery.
    pub fn delivery(&self) -> DeliveryGuarantee {
        use DeliveryGuarantee::*;
        match self.protocol {
            Protocol::Mqtt => match self.qos {
                0 => AtMostOnce,
                1 => AtLeastOnce,
                _ => ExactlyOnce,
            },
            Protocol::Kafka => {
                if self.kafka_acks() == 0 {
                    AtMostOnce
                } else {
                    AtLeastOnce
                }
            }
            Protocol::Amqp => {
                if self.amqp_confirms() || self.amqp_options().persistent {
                    AtLeastOnce
                } else {
                    AtMostOnce
                }
            }
        }
    }

    /// Whether the protocol keeps one publisher's messages in order for the
    /// way this workload consumes them: everywhere except AMQP consumers
    /// sharing one queue (they take turns, so their merged view interleaves).
    /// Kafka publishers each write one partition, so their order holds.
    pub fn promises_order(&self) -> bool {
        !(self.protocol == Protocol::Amqp && self.amqp_options().shared_queues())
    }

    /// Total target rate in messages per second (0 = as fast as possible).
    pub fn total_rate(&self) -> u64 {
        if self.rate_per_publisher > 0 {
            self.rate_per_publisher * u64::from(self.publishers)
        } else {
            self.rate
        }
    }

    /// The topic publisher `index` sends to.
    pub fn publisher_topic(&self, index: u32) -> String {
        self.topic
            .replace("{publisher}", &index.to_string())
            .replace("{n}", &(index % self.topics).to_string())
    }

    /// What subscriber `index` subscribes to.
    pub fn subscriber_filter(&self, index: u32) -> String {
        self.subscribe
            .replace("{subscriber}", &index.to_string())
            .replace("{n}", &(index % self.topics).to_string())
    }
}

/// One line for a TOML error: line number, the key (or table) on that line,
/// and serde's complaint. Shared by every TOML file the toolchain reads
/// (workloads, suites, profiles); the broker keeps its own copy so that it
/// does not depend on the load generator.
pub fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().replace('\n', " ");
    let Some(span) = err.span() else {
        return message;
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(['[', ']']).to_string());
    let key = line.split('=').next().unwrap_or("").trim();
    let key = match (&section, key.is_empty() || line.starts_with('[')) {
        // The span is a table header: the complaint is about that table.
        _ if line.starts_with('[') => format!(" table `{}`", line.trim_matches(['[', ']'])),
        (Some(s), true) => format!(" table `{s}`"),
        (None, true) => String::new(),
        (Some(s), false) => format!(" key `{s}.{key}`"),
        (None, false) => format!(" key `{key}`"),
    };
    format!("line {line_no}{key}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "protocol = \"mqtt\"\nscenario = \"fan_in\"\npublishers = 2\nsubscribers = 1\n";

    #[test]
    fn minimal_workload_takes_defaults() {
        let w = Workload::parse(MINIMAL).unwrap();
        assert_eq!(w.protocol, Protocol::Mqtt);
        assert_eq!(w.payload_bytes, 64);
        assert_eq!(w.duration_secs, 10.0);
        assert_eq!(w.mqtt.version, "3.1.1");
        assert_eq!(w.publisher_topic(3), "bench/0");
        assert_eq!(w.subscriber_filter(0), "bench/#");
    }

    #[test]
    fn placeholders_and_rates() {
        let w = Workload::parse(&format!(
            "{MINIMAL}topic = \"t/{{publisher}}/{{n}}\"\ntopics = 2\nrate_per_publisher = 100\n"
        ))
        .unwrap();
        assert_eq!(w.publisher_topic(3), "t/3/1");
        assert_eq!(w.total_rate(), 200);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = Workload::parse(&format!("{MINIMAL}[mqtt]\nversoin = \"5\"\n")).unwrap_err();
        assert!(err.starts_with("line 6 key `mqtt.versoin`"), "{err}");
        assert!(err.contains("version"), "lists the valid keys: {err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Workload::parse(&format!("{MINIMAL}qos = 3\n")).unwrap_err();
        assert!(err.starts_with("qos = 3"), "{err}");
        let err = Workload::parse(&format!("{MINIMAL}payload_bytes = 8\n")).unwrap_err();
        assert!(err.starts_with("payload_bytes = 8"), "{err}");
        let err = Workload::parse("protocol = \"mqtt\"\nscenario = \"fanin\"\npublishers = 1\n")
            .unwrap_err();
        assert!(
            err.contains("key `scenario`") && err.contains("fan_in"),
            "{err}"
        );
        let err = Workload::parse(&format!("{MINIMAL}publishers = \"two\"\n")).unwrap_err();
        assert!(err.contains("publishers"), "{err}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("{MINIMAL}duration_secs = 0\n")).unwrap();
        let err = Workload::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.toml") && err.contains("duration_secs"),
            "{err}"
        );
        std::fs::write(&path, MINIMAL).unwrap();
        assert_eq!(Workload::load(&path).unwrap().name, "bad");
    }

    const KAFKA: &str = "protocol = \"kafka\"\nscenario = \"fan_in\"\npublishers = 2\nsubscribers = 1\ntopic = \"k-{n}\"\nsubscribe = \"k-0\"\n";

    #[test]
    fn kafka_table_takes_defaults_and_acks() {
        let w = Workload::parse(KAFKA).unwrap();
        let k = w.kafka_options();
        assert_eq!((k.partitions, k.consumer.as_str()), (1, "assign"));
        assert_eq!(w.kafka_acks(), 0);
        assert!(!w.expects_acks());
        let w = Workload::parse(&format!("{KAFKA}qos = 2\n")).unwrap();
        assert_eq!(w.kafka_acks(), -1);
        let w = Workload::parse(&format!(
            "{KAFKA}[kafka]\nacks = \"all\"\nlinger_ms = 10\ncompression = \"lz4\"\npartitions = 4\nconsumer = \"group\"\n"
        ))
        .unwrap();
        assert_eq!(w.kafka_acks(), -1);
        assert!(w.expects_acks());
        assert_eq!(w.kafka_options().linger_ms, 10);
        let w = Workload::parse(&format!("{KAFKA}qos = 1\n[kafka]\nacks = 0\n")).unwrap();
        assert_eq!(w.kafka_acks(), 0, "kafka.acks wins over qos");
    }

    #[test]
    fn every_workload_has_a_delivery_guarantee_from_its_protocol_settings() {
        use DeliveryGuarantee::*;
        let g = |text: String| Workload::parse(&text).unwrap().delivery();
        assert_eq!(g(MINIMAL.to_string()), AtMostOnce);
        assert_eq!(g(format!("{MINIMAL}qos = 1\n")), AtLeastOnce);
        assert_eq!(g(format!("{MINIMAL}qos = 2\n")), ExactlyOnce);
        // Kafka: qos left at 0, acks=1 in [kafka] still promises delivery.
        assert_eq!(g(KAFKA.to_string()), AtMostOnce);
        assert_eq!(g(format!("{KAFKA}[kafka]\nacks = 1\n")), AtLeastOnce);
        assert_eq!(g(format!("{KAFKA}[kafka]\nacks = \"all\"\n")), AtLeastOnce);
        assert_eq!(
            g(format!("{KAFKA}qos = 1\n[kafka]\nacks = 0\n")),
            AtMostOnce
        );
        // AMQP: confirms or persistent delivery; auto-ack without either is best effort.
        assert_eq!(g(AMQP.to_string()), AtMostOnce);
        assert_eq!(g(format!("{AMQP}qos = 1\n")), AtLeastOnce);
        assert_eq!(g(format!("{AMQP}[amqp]\npersistent = true\n")), AtLeastOnce);
        assert!(AtLeastOnce.forbids_loss() && ExactlyOnce.forbids_loss());
        assert!(!AtMostOnce.forbids_loss());
        let err = Workload::parse(&format!("{MINIMAL}late_secs = -1\n")).unwrap_err();
        assert!(err.starts_with("late_secs = -1"), "{err}");
    }

    #[test]
    fn kafka_keys_are_checked_and_named() {
        let bad = |extra: &str| Workload::parse(&format!("{KAFKA}{extra}")).unwrap_err();
        let err = bad("[kafka]\nacks = 2\n");
        assert!(
            err.contains("kafka.acks") && err.contains("\"all\""),
            "{err}"
        );
        let err = bad("[kafka]\nlinger = 5\n");
        assert!(
            err.contains("kafka.linger") && err.contains("linger_ms"),
            "{err}"
        );
        let err = bad("[kafka]\ncompression = \"snappy\"\n");
        assert!(err.starts_with("kafka.compression = \"snappy\""), "{err}");
        let err = bad("[kafka]\npartitions = 0\n");
        assert!(err.starts_with("kafka.partitions = 0"), "{err}");
        let err = bad("[kafka]\nconsumer = \"shared\"\n");
        assert!(err.starts_with("kafka.consumer = \"shared\""), "{err}");
        let err = Workload::parse(&format!(
            "{}subscribers = 3\n[kafka]\nconsumer = \"group\"\npartitions = 2\n",
            KAFKA.replace("subscribers = 1\n", "")
        ))
        .unwrap_err();
        assert!(
            err.contains("raise kafka.partitions to at least 3"),
            "{err}"
        );
        let err = Workload::parse("protocol = \"kafka\"\nscenario = \"fan_in\"\npublishers = 1\n")
            .unwrap_err();
        assert!(
            err.starts_with("topic = \"bench/{n}\"") && err.contains("bench-{n}"),
            "{err}"
        );
        let err = Workload::parse(&format!("{MINIMAL}[kafka]\npartitions = 2\n")).unwrap_err();
        assert!(err.contains("protocol = \"mqtt\""), "{err}");
    }

    const AMQP: &str = "protocol = \"amqp\"\nscenario = \"fan_in\"\npublishers = 2\nsubscribers = 1\ntopic = \"k\"\nsubscribe = \"k\"\n";

    #[test]
    fn amqp_table_takes_defaults_and_confirms() {
        let w = Workload::parse(AMQP).unwrap();
        let a = w.amqp_options();
        assert_eq!(a.exchange_name(), "loadgen.direct");
        assert_eq!(
            (a.ack.as_str(), a.queues.as_str()),
            ("auto", "per_subscriber")
        );
        assert!(!w.amqp_confirms() && !w.expects_acks());
        let w = Workload::parse(&format!("{AMQP}qos = 1\n")).unwrap();
        assert!(w.amqp_confirms() && w.expects_acks());
        let w = Workload::parse(&format!(
            "{AMQP}qos = 1\n[amqp]\nconfirms = false\nexchange_type = \"fanout\"\ndurable = true\n"
        ))
        .unwrap();
        assert!(!w.amqp_confirms(), "amqp.confirms wins over qos");
        assert_eq!(w.amqp_options().exchange_name(), "loadgen.fanout.durable");
        let w = Workload::parse(&format!(
            "{AMQP}[amqp]\nconfirms = true\nconfirm_window = 8\nack = \"manual\"\nprefetch = 50\nqueues = \"shared\"\nexchange = \"\"\npersistent = true\n"
        ))
        .unwrap();
        let a = w.amqp_options();
        assert!(w.expects_acks() && a.manual_ack() && a.shared_queues() && a.persistent);
        assert_eq!(
            (a.exchange_name().as_str(), a.confirm_window, a.prefetch),
            ("", 8, 50)
        );
    }

    #[test]
    fn amqp_keys_are_checked_and_named() {
        let bad = |extra: &str| Workload::parse(&format!("{AMQP}{extra}")).unwrap_err();
        let err = bad("[amqp]\nexchange_type = \"headers\"\n");
        assert!(
            err.starts_with("amqp.exchange_type = \"headers\"") && err.contains("\"topic\""),
            "{err}"
        );
        let err = bad("[amqp]\nconfrims = true\n");
        assert!(
            err.contains("amqp.confrims") && err.contains("confirms"),
            "{err}"
        );
        let err = bad("[amqp]\nconfirm_window = 0\n");
        assert!(err.starts_with("amqp.confirm_window = 0"), "{err}");
        let err = bad("[amqp]\nack = \"client\"\n");
        assert!(
            err.starts_with("amqp.ack = \"client\"") && err.contains("\"manual\""),
            "{err}"
        );
        let err = bad("[amqp]\nqueues = \"one\"\n");
        assert!(err.starts_with("amqp.queues = \"one\""), "{err}");
        let err = bad("[amqp]\nprefetch = 10\n");
        assert!(
            err.starts_with("amqp.prefetch = 10") && err.contains("ack = \"manual\""),
            "{err}"
        );
        let err = bad("[amqp]\nprefetch = 70000\n");
        assert!(err.contains("amqp.prefetch"), "{err}");
        let err = bad("[amqp]\nexchange = \"amq.direct\"\n");
        assert!(err.contains("reserved"), "{err}");
        let err = bad("[amqp]\nexchange = \"\"\nexchange_type = \"fanout\"\n");
        assert!(err.contains("exchange_type = \"direct\""), "{err}");
        let err = Workload::parse(&format!(
            "{}subscribers = 2\n[amqp]\nexchange = \"\"\n",
            AMQP.replace("subscribers = 1\n", "")
        ))
        .unwrap_err();
        assert!(
            err.starts_with("subscribe = \"k\"") && err.contains("{subscriber}"),
            "{err}"
        );
        let err = bad("qos = 2\n");
        assert!(err.starts_with("qos = 2"), "{err}");
        let err = Workload::parse(&format!("{MINIMAL}[amqp]\nprefetch = 2\n")).unwrap_err();
        assert!(err.contains("protocol = \"mqtt\""), "{err}");
    }

    #[test]
    fn shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/workloads");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // `rate = "max"` files are searched by `cargo xtask bench`, which
            // runs each step at a fixed rate; xtask's tests parse them.
            if text.contains("rate = \"max\"") {
                continue;
            }
            if path.extension().is_some_and(|e| e == "toml") {
                let w = Workload::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(!w.description.is_empty(), "{} has a description", w.name);
                seen += 1;
            }
        }
        assert!(
            seen >= 5,
            "the default suite's workloads are there ({seen})"
        );
    }
}
