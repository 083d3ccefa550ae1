//! The Kafka listener driven by librdkafka (the rdkafka crate): producers with
//! keys, acks 0/1/-1 and idempotence; consumers with and without groups;
//! rebalancing; committed offsets; topic auto-creation on and off.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::common::{kafka_bootstrap, start_broker_with, WAIT};
use broker::storage::BatchHeader;

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000");
    c
}

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = client(bootstrap);
    c.set("message.timeout.ms", "10000").set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer is created")
}

fn consumer(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = client(bootstrap);
    c.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("consumer is created")
}

/// A received message: (partition, offset, key, value).
type Got = (i32, i64, String, String);

fn to_got<M: Message>(m: &M) -> Got {
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    (m.partition(), m.offset(), text(m.key()), text(m.payload()))
}

/// Polls until `count` messages arrived or `within` passed.
fn poll_n(consumer: &BaseConsumer, count: usize, within: Duration) -> Vec<Got> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => got.push(to_got(&m)),
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    got
}

/// Reads partitions 0..n of `topic` from the beginning, without a group.
fn read_all(bootstrap: &str, topic: &str, partitions: i32, count: usize) -> Vec<Got> {
    let c = consumer(bootstrap, "unused", &[]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    poll_n(&c, count, WAIT)
}

async fn send(p: &FutureProducer, topic: &str, key: &str, value: &str) -> (i32, i64) {
    let d = p
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("delivery to {topic} failed: {e}"));
    (d.partition, d.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_messages_spread_over_partitions_and_keep_order() {
    let broker = start_broker_with(|c| c.kafka.default_partitions = 3).await;
    let bootstrap = kafka_bootstrap(&broker);
    let p = producer(&bootstrap, &[("acks", "all")]);
    let mut partition_of_key: HashMap<String, i32> = HashMap::new();
    let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for i in 0..60 {
        let key = format!("key-{}", i % 10);
        let (partition, offset) = send(&p, "keyed", &key, &format!("v{i}")).await;
        let first = *partition_of_key.entry(key.clone()).or_insert(partition);
        assert_eq!(first, partition, "{key} always lands on one partition");
        offsets.entry(partition).or_default().push(offset);
    }
    assert!(
        offsets.len() >= 2,
        "10 keys use more than one of 3 partitions: {offsets:?}"
    );
    for (partition, list) in &offsets {
        let expected: Vec<i64> = (0..list.len() as i64).collect();
        assert_eq!(
            list, &expected,
            "offsets of partition {partition} count up from 0"
        );
    }

    let got = read_all(&bootstrap, "keyed", 3, 60);
    assert_eq!(got.len(), 60, "every message comes back");
    let mut per_partition: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for (partition, offset, key, value) in got {
        assert_eq!(partition_of_key[&key], partition);
        per_partition
            .entry(partition)
            .or_default()
            .push((offset, value));
    }
    for (partition, list) in per_partition {
        let offsets: Vec<i64> = list.iter().map(|(o, _)| *o).collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "partition {partition} in order: {offsets:?}"
        );
        // Values in a partition appear in the order they were sent.
        let sent_order: Vec<usize> = list.iter().map(|(_, v)| v[1..].parse().unwrap()).collect();
        assert!(sent_order.windows(2).all(|w| w[0] < w[1]), "{sent_order:?}");
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_one_and_all_deliver() {
    let broker = start_broker_with(|_| {}).await;
    let bootstrap = kafka_bootstrap(&broker);
    for acks in ["0", "1", "all"] {
        let topic = format!("acks-{acks}");
        let p = producer(&bootstrap, &[("acks", acks)]);
        let mut reported = Vec::new();
        for i in 0..20 {
            reported.push(send(&p, &topic, "k", &format!("{acks}-{i}")).await.1);
        }
        p.flush(Duration::from_secs(10)).unwrap();
        if acks == "0" {
            // Nothing is acknowledged, so the client cannot know offsets.
            assert!(reported.iter().all(|o| *o < 0), "{reported:?}");
        } else {
            assert_eq!(reported, (0..20).collect::<Vec<i64>>());
        }
        let got = read_all(&bootstrap, &topic, 1, 20);
        let values: Vec<String> = got.into_iter().map(|g| g.3).collect();
        let expected: Vec<String> = (0..20).map(|i| format!("{acks}-{i}")).collect();
        assert_eq!(values, expected, "acks={acks}");
    }
    broker.shutdown().await;
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_splits_partitions_and_rebalances_when_one_leaves() {
    let broker = start_broker_with(|c| c.kafka.default_partitions = 4).await;
    let bootstrap = kafka_bootstrap(&broker);
    let p = producer(&bootstrap, &[("acks", "all")]);
    send(&p, "grouped", "warm", "up").await;

    let a = consumer(
        &bootstrap,
        "split",
        &[("partition.assignment.strategy", "range")],
    );
    let b = consumer(
        &bootstrap,
        "split",
        &[("partition.assignment.strategy", "range")],
    );
    a.subscribe(&["grouped"]).unwrap();
    b.subscribe(&["grouped"]).unwrap();
    let mut received: Vec<Got> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(assigned(&a).len() == 2 && assigned(&b).len() == 2) {
        assert!(
            Instant::now() < deadline,
            "no 2+2 split: a {:?} b {:?}",
            assigned(&a),
            assigned(&b)
        );
        for c in [&a, &b] {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                received.push(to_got(&m));
            }
        }
    }
    let (pa, pb) = (assigned(&a), assigned(&b));
    assert!(pa.is_disjoint(&pb), "{pa:?} {pb:?}");
    assert_eq!(
        pa.union(&pb).copied().collect::<BTreeSet<_>>(),
        (0..4).collect()
    );

    // Messages to every partition reach the member that owns it.
    for i in 0..40 {
        send(&p, "grouped", &format!("k{i}"), &format!("m{i}")).await;
    }
    let mut by_member: [Vec<Got>; 2] = [Vec::new(), Vec::new()];
    let deadline = Instant::now() + WAIT;
    while by_member[0].len() + by_member[1].len() < 40 && Instant::now() < deadline {
        for (i, c) in [&a, &b].iter().enumerate() {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                let g = to_got(&m);
                if g.3 != "up" {
                    by_member[i].push(g);
                }
            }
        }
    }
    assert_eq!(by_member[0].len() + by_member[1].len(), 40);
    assert!(by_member[0].iter().all(|g| pa.contains(&g.0)));
    assert!(by_member[1].iter().all(|g| pb.contains(&g.0)));
    assert!(!by_member[0].is_empty() && !by_member[1].is_empty());

    // b leaves (LeaveGroup on close): a takes over all four partitions.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(30);
    while assigned(&a).len() != 4 {
        assert!(
            Instant::now() < deadline,
            "a never got all partitions: {:?}",
            assigned(&a)
        );
        let _ = a.poll(Duration::from_millis(100));
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_are_resumed_by_a_new_consumer() {
    let broker = start_broker_with(|_| {}).await;
    let bootstrap = kafka_bootstrap(&broker);
    let p = producer(&bootstrap, &[("acks", "all")]);
    for i in 0..10 {
        send(&p, "resume", "k", &format!("m{i}")).await;
    }
    {
        let c = consumer(&bootstrap, "resumers", &[]);
        c.subscribe(&["resume"]).unwrap();
        let got = poll_n(&c, 4, Duration::from_secs(30));
        assert_eq!(
            got.iter().map(|g| g.3.as_str()).collect::<Vec<_>>(),
            ["m0", "m1", "m2", "m3"]
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("resume", 0, Offset::Offset(4))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
        let committed = c.committed(Duration::from_secs(10)).unwrap();
        assert_eq!(
            committed.find_partition("resume", 0).unwrap().offset(),
            Offset::Offset(4)
        );
    }
    let c = consumer(&bootstrap, "resumers", &[]);
    c.subscribe(&["resume"]).unwrap();
    let got = poll_n(&c, 6, Duration::from_secs(30));
    assert_eq!(
        got.iter().map(|g| g.3.as_str()).collect::<Vec<_>>(),
        ["m4", "m5", "m6", "m7", "m8", "m9"],
        "the new consumer starts at the committed offset"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_writes_each_message_once() {
    let broker = start_broker_with(|_| {}).await;
    let bootstrap = kafka_bootstrap(&broker);
    let p = producer(
        &bootstrap,
        &[("enable.idempotence", "true"), ("acks", "all")],
    );
    let values: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let sends: Vec<_> = values
        .iter()
        .map(|v| {
            p.send(
                FutureRecord::to("idem").key("k").payload(v),
                Duration::from_secs(10),
            )
        })
        .collect();
    let mut offsets = Vec::new();
    for s in sends {
        offsets.push(s.await.unwrap_or_else(|(e, _)| panic!("{e}")).offset);
    }
    assert_eq!(offsets, (0..200).collect::<Vec<i64>>());
    // The batches carry the producer id the broker handed out.
    let hub = broker.kafka.as_ref().unwrap();
    let data = hub.topics.get("idem").unwrap().partitions[0]
        .read(0, 1 << 20)
        .unwrap();
    let header = BatchHeader::parse(&data).unwrap();
    assert!(header.producer_id >= 0, "idempotent batch: {header:?}");
    assert_eq!(header.base_sequence, 0);
    let got = read_all(&bootstrap, "idem", 1, 200);
    let received: Vec<String> = got.into_iter().map(|g| g.3).collect();
    assert_eq!(received, values);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_on_and_off() {
    // On: a producer's metadata request creates the topic with the default partition count.
    let broker = start_broker_with(|c| c.kafka.default_partitions = 5).await;
    let bootstrap = kafka_bootstrap(&broker);
    let p = producer(&bootstrap, &[]);
    send(&p, "fresh", "k", "v").await;
    let md = p
        .client()
        .fetch_metadata(Some("fresh"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);
    assert_eq!(
        md.brokers()[0].port(),
        broker.kafka_addr.unwrap().port() as i32,
        "advertises the bound port"
    );
    broker.shutdown().await;

    // Off: unknown topics stay unknown until created explicitly.
    let broker = start_broker_with(|c| c.kafka.auto_create_topics = false).await;
    let bootstrap = kafka_bootstrap(&broker);
    let p = producer(&bootstrap, &[("message.timeout.ms", "2000")]);
    let md = p
        .client()
        .fetch_metadata(Some("absent"), Duration::from_secs(10))
        .unwrap();
    let code = md.topics()[0].error().map(RDKafkaErrorCode::from);
    assert_eq!(code, Some(RDKafkaErrorCode::UnknownTopicOrPartition));
    let err = p
        .send(
            FutureRecord::to("absent").key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await
        .expect_err("no such topic");
    assert!(
        matches!(
            err.0,
            KafkaError::MessageProduction(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::MessageTimedOut
            )
        ),
        "{:?}",
        err.0
    );
    assert!(broker
        .kafka
        .as_ref()
        .unwrap()
        .topics
        .get("absent")
        .is_none());

    let admin: AdminClient<DefaultClientContext> = client(&bootstrap).create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    let created = admin
        .create_topics(
            &[NewTopic::new("made", 2, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(created, vec![Ok("made".to_string())]);
    let again = admin
        .create_topics(
            &[NewTopic::new("made", 2, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert!(
        matches!(&again[0], Err((_, RDKafkaErrorCode::TopicAlreadyExists))),
        "{again:?}"
    );
    let p = producer(&bootstrap, &[]);
    let (partition, offset) = send(&p, "made", "k", "v").await;
    assert!((0..2).contains(&partition));
    assert_eq!(offset, 0);
    let deleted = admin.delete_topics(&["made"], &opts).await.unwrap();
    assert_eq!(deleted, vec![Ok("made".to_string())]);
    assert!(broker.kafka.as_ref().unwrap().topics.get("made").is_none());
    broker.shutdown().await;
}
