//! Durability of the disk log: messages acknowledged with acks=-1 survive a
//! SIGKILL of the broker process, and come back exactly once, in order per
//! partition, after a restart on the same data directory.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::broker_process::BrokerProcess;

/// The flags for MQTT (always on) and Kafka on ephemeral ports, nothing else.
fn kafka_only(config: &str) -> [&str; 11] {
    [
        "--config",
        config,
        "--mqtt-bind",
        "127.0.0.1:0",
        "--kafka-bind",
        "127.0.0.1:0",
        "--no-websocket",
        "--no-amqp",
        "--no-metrics",
        "--stats-interval",
        "0",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    // The interval policy: only acks=-1 forces an fsync before the answer.
    std::fs::write(
        &config,
        "[kafka]\nstorage = \"disk\"\ndefault_partitions = 3\nflush = \"interval\"\nflush_interval_ms = 60000\nsegment_bytes = 65536\n",
    )
    .unwrap();
    let args = kafka_only(config.to_str().expect("UTF-8 temp path"));
    let broker = BrokerProcess::spawn_with_data_dir(&args);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.kafka().to_string())
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let values: Vec<String> = (0..600)
        .map(|i| format!("m{i:04}-{}", "x".repeat(200)))
        .collect();
    let keys: Vec<String> = (0..600).map(|i| format!("k{}", i % 17)).collect();
    let sends: Vec<_> = values
        .iter()
        .zip(&keys)
        .map(|(v, k)| {
            producer.send(
                FutureRecord::to("durable").key(k).payload(v),
                Duration::from_secs(10),
            )
        })
        .collect();
    // (partition, offset) → value, for every acknowledged message.
    let mut acked: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for (send, v) in sends.into_iter().zip(&values) {
        let d = send
            .await
            .unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
        acked.insert((d.partition, d.offset), v.clone());
    }
    assert_eq!(acked.len(), 600);
    // More messages in flight while the broker dies: they may or may not survive.
    let in_flight: Vec<String> = (0..200).map(|i| format!("late{i}")).collect();
    let late: Vec<_> = in_flight
        .iter()
        .map(|v| {
            producer.send(
                FutureRecord::to("durable").key("late").payload(v),
                Duration::from_secs(1),
            )
        })
        .collect();
    // SIGKILL: no shutdown path runs.
    let data = broker.kill().expect("the data directory");
    drop(late);
    drop(producer);

    let broker = BrokerProcess::respawn(data, &args);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.kafka().to_string())
        .set("group.id", "durability")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("durable", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_acked = 0;
    while seen_acked < acked.len() && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume after restart");
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            if acked.contains_key(&(m.partition(), m.offset())) {
                seen_acked += 1;
            }
            got.entry(m.partition())
                .or_default()
                .push((m.offset(), value));
        }
    }
    // Every acknowledged message, at its acknowledged offset, exactly once.
    let mut found = BTreeSet::new();
    for (partition, list) in &got {
        let offsets: Vec<i64> = list.iter().map(|(o, _)| *o).collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "partition {partition}: in order, no gaps or repeats"
        );
        for (offset, value) in list {
            if let Some(expected) = acked.get(&(*partition, *offset)) {
                assert_eq!(value, expected, "partition {partition} offset {offset}");
                assert!(found.insert((*partition, *offset)));
            } else {
                assert!(
                    value.starts_with("late"),
                    "only unacknowledged late messages are extra: {value}"
                );
            }
        }
    }
    let missing: Vec<_> = acked
        .keys()
        .filter(|k| !found.contains(k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?} ...");
    let values_seen: BTreeSet<&String> = got.values().flatten().map(|(_, v)| v).collect();
    assert_eq!(
        values_seen
            .iter()
            .filter(|v| !v.starts_with("late"))
            .count(),
        600,
        "each acknowledged value exactly once"
    );
}
