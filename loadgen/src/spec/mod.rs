//! Workload specs: what load to generate, read from `bench/workloads/*.toml`.
//!
//! One schema for every protocol: the common keys describe clients, rates
//! and timing; `[mqtt]`, `[kafka]` and `[amqp]` hold what only one protocol
//! has. Unknown keys and bad values are errors that name the file and key.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod options;
mod validate;

pub use options::{AmqpOptions, KafkaOptions, MqttOptions};

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
