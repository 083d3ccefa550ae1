//! Whole runs of the Kafka driver (rdkafka) against an in-process broker
//! whose Kafka listener is on port 0: delivery accounting with assigned
//! consumers and with a consumer group, and how the group splits partitions.

use std::sync::{Arc, Mutex};
use std::time::Instant;

mod common;

use bytes::Bytes;
use common::{assert_sane, run_against, start_broker, target, workload};
use loadgen::driver::{ClientEvents, ClientSpec, Connection, Driver, DriverError, Publisher, Role};
use loadgen::kafka::KafkaDriver;
use loadgen::payload::Header;
use loadgen::{Outcome, Protocol};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_produce_reaches_an_assigned_consumer_once_in_order() {
    let broker = start_broker().await;
    let w = workload(
        r#"
        protocol = "kafka"
        scenario = "latency"
        publishers = 2
        subscribers = 1
        topic = "lg-assign"
        subscribe = "lg-assign"
        payload_bytes = 100
        rate = 400
        warmup_secs = 0.5
        duration_secs = 2
        drain_secs = 5
        [kafka]
        acks = "all"
        linger_ms = 1
        compression = "lz4"
        partitions = 2
        "#,
    );
    let r = run_against(&broker, &w).await;
    let c = &r.counts;
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    // 400 msg/s for 2 s, give or take the window edges.
    assert!((760..=840).contains(&c.sent), "{c:?}");
    assert_eq!(c.expected, c.sent, "the one consumer reads every partition");
    assert_eq!(c.received, c.expected, "{c:?}");
    assert_eq!(c.acked, c.sent, "acks=all: every record acknowledged");
    assert_eq!((c.lost, c.duplicated, c.out_of_order), (0, 0, 0), "{c:?}");
    assert_sane(&r.latency.end_to_end, "end-to-end");
    assert_eq!(r.latency.end_to_end.as_ref().unwrap().count, c.received);
    assert!(r.latency.ack.as_ref().is_some_and(|a| a.count == c.acked));
    assert_eq!(r.connections.established, 3);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_counts_each_message_once_over_its_members() {
    let broker = start_broker().await;
    let w = workload(
        r#"
        protocol = "kafka"
        scenario = "fan_out"
        publishers = 4
        subscribers = 2
        topic = "lg-group"
        subscribe = "lg-group"
        rate = 800
        warmup_secs = 0.5
        duration_secs = 2
        drain_secs = 5
        [kafka]
        acks = 1
        partitions = 4
        consumer = "group"
        group_id = "lg-run"
        "#,
    );
    let r = run_against(&broker, &w).await;
    let c = &r.counts;
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    assert!(c.sent >= 1500, "{c:?}");
    assert_eq!(
        c.expected, c.sent,
        "a group gets each message once, not per member"
    );
    assert_eq!(c.received, c.sent, "{c:?}");
    assert_eq!((c.lost, c.duplicated), (0, 0), "{c:?}");
    assert!(r.latency.end_to_end.is_some());
    broker.shutdown().await;
}

/// Sequence numbers from here on are warm-up records, not counted.
const WARM_UP: u64 = 1_000_000;

/// What one group member received: measured records' publisher ids, and
/// warm-up records' publisher ids.
#[derive(Default)]
struct Seen {
    measured: Vec<u32>,
    warm_up: Vec<u32>,
}

/// Counts deliveries per publisher id, for one group member.
struct Counting(Arc<Mutex<Seen>>);

impl ClientEvents for Counting {
    fn delivered(&mut self, payload: &[u8], _at: Instant) {
        let header = Header::decode(payload).expect("our header");
        let mut seen = self.0.lock().unwrap();
        if header.sequence >= WARM_UP {
            seen.warm_up.push(header.publisher);
        } else {
            seen.measured.push(header.publisher);
        }
    }
    fn connection_lost(&mut self, error: DriverError) {
        panic!("connection lost: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_split_the_partitions() {
    let broker = start_broker().await;
    let w = workload(
        r#"
        protocol = "kafka"
        scenario = "fan_out"
        publishers = 4
        subscribers = 2
        topic = "lg-split"
        subscribe = "lg-split"
        [kafka]
        acks = 1
        partitions = 4
        consumer = "group"
        group_id = "lg-split"
        "#,
    );
    let driver = KafkaDriver::new(&w, &target(&broker, Protocol::Kafka)).unwrap();
    assert!(driver.subscribers_share_deliveries());
    let spec = |role, index| ClientSpec {
        role,
        index,
        source: None,
    };
    let seen: Vec<Arc<Mutex<Seen>>> = (0..2).map(|_| Arc::default()).collect();
    // Both members join at once; each connect returns when the group has settled.
    let (first, second) = (spec(Role::Subscriber, 0), spec(Role::Subscriber, 1));
    let (a, b) = tokio::join!(
        driver.connect_subscriber(&first, "lg-split", Box::new(Counting(seen[0].clone()))),
        driver.connect_subscriber(&second, "lg-split", Box::new(Counting(seen[1].clone()))),
    );
    let (a, b) = (a.expect("member 0 joins"), b.expect("member 1 joins"));
    struct NoEvents;
    impl ClientEvents for NoEvents {
        fn connection_lost(&mut self, error: DriverError) {
            panic!("connection lost: {error}");
        }
    }
    let mut publishers = Vec::new();
    for p in 0..4 {
        publishers.push(
            driver
                .connect_publisher(&spec(Role::Publisher, p), "lg-split", Box::new(NoEvents))
                .await
                .expect("publisher connects"),
        );
    }
    let mut buf = [0u8; 64];
    // Warm-up, as the bench has: a member starts at the partition's end once
    // librdkafka has looked the end up, which can come after the group has
    // settled on a loaded machine. Records before that are not the test's.
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let warmed = || {
        let mut ids: Vec<u32> = seen
            .iter()
            .flat_map(|s| s.lock().unwrap().warm_up.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len() == 4
    };
    let mut round = WARM_UP;
    while !warmed() && Instant::now() < deadline {
        for (p, publisher) in publishers.iter_mut().enumerate() {
            Header {
                publisher: p as u32,
                sequence: round,
                intended_nanos: 1,
            }
            .encode_into(&mut buf);
            publisher
                .publish(round, Bytes::copy_from_slice(&buf))
                .await
                .unwrap();
        }
        round += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(warmed(), "every partition delivers to a member within 20 s");
    for (p, publisher) in publishers.iter_mut().enumerate() {
        for sequence in 0..25 {
            Header {
                publisher: p as u32,
                sequence,
                intended_nanos: 1,
            }
            .encode_into(&mut buf);
            publisher
                .publish(sequence, Bytes::copy_from_slice(&buf))
                .await
                .unwrap();
        }
    }
    for publisher in publishers {
        publisher.close().await; // flushes
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let total = || {
        seen.iter()
            .map(|s| s.lock().unwrap().measured.len())
            .sum::<usize>()
    };
    while total() < 100 && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(total(), 100, "every record reaches exactly one member");
    let mut publishers_of = Vec::new();
    for s in &seen {
        let mut ids = s.lock().unwrap().measured.clone();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids.len(),
            2,
            "each member holds two of the four partitions: {ids:?}"
        );
        publishers_of.extend(ids);
    }
    publishers_of.sort_unstable();
    assert_eq!(
        publishers_of,
        vec![0, 1, 2, 3],
        "no partition is read twice"
    );
    a.close().await;
    b.close().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_topic_with_other_partitions_is_an_error_naming_the_key() {
    let broker = start_broker().await;
    let base = r#"
        protocol = "kafka"
        scenario = "fan_in"
        publishers = 1
        subscribers = 1
        topic = "lg-resize"
        subscribe = "lg-resize"
        rate = 100
        warmup_secs = 0
        duration_secs = 0.5
        "#;
    let r = run_against(
        &broker,
        &workload(&format!("{base}[kafka]\npartitions = 2\n")),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    let r = run_against(
        &broker,
        &workload(&format!("{base}[kafka]\npartitions = 3\n")),
    )
    .await;
    assert_ne!(r.outcome, Outcome::Completed);
    let error = r.error.expect("an error");
    assert!(
        error.contains("has 2 partitions") && error.contains("kafka.partitions = 3"),
        "{error}"
    );
    broker.shutdown().await;
}

#[test]
fn compression_without_codec_support_is_a_clear_error() {
    let w = workload(
        r#"
        protocol = "kafka"
        scenario = "fan_in"
        publishers = 1
        topic = "lg-zstd"
        [kafka]
        compression = "zstd"
        "#,
    );
    assert!(loadgen::kafka::compression_available("lz4"));
    assert!(loadgen::kafka::compression_available("none"));
    match KafkaDriver::new(&w, "127.0.0.1:9092") {
        Ok(_) => assert!(loadgen::kafka::compression_available("zstd")),
        Err(e) => {
            assert!(!loadgen::kafka::compression_available("zstd"));
            assert!(
                e.to_string().starts_with("kafka.compression = \"zstd\"")
                    && e.to_string().contains("\"lz4\""),
                "{e}"
            );
        }
    }
}
