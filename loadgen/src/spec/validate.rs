//! Workload checks the types cannot express; each message names the key and a fix.

use super::{Protocol, Scenario, Workload, MIN_PAYLOAD_BYTES};

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

impl Workload {
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
}
