//! Kafka topic limits and segment files: a partition flood through
//! CreateTopics is refused with Kafka's codes and leaves the descriptor count
//! bounded; a data directory with more partitions than the open-files limit
//! starts and serves; topic creation does not stall the single-threaded
//! runtime. Each test runs the broker as a child process, counts its open
//! descriptors in /proc/PID/fd, and checks a bystander MQTT client.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::broker_process::BrokerProcess;
use crate::common::WAIT;
use crate::raw;
use crate::raw_kafka::{request, response, round_trip};

const CREATE_TOPICS: i16 = 19;
const DESCRIBE_CONFIGS: i16 = 32;
const INVALID_PARTITIONS: i16 = 37;
const POLICY_VIOLATION: i16 = 44;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// MQTT on an ephemeral port, Kafka on another, nothing else; `config` is a
/// TOML file path.
fn kafka_and_mqtt(config: &str) -> Vec<&str> {
    vec![
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

/// Writes `toml` to a config file in a temporary directory the caller keeps.
fn config_file(toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_str().expect("UTF-8 temp path").to_string();
    (dir, path)
}

/// The broker's open descriptors now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the broker's /proc/PID/fd")
        .count()
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

/// CreateTopics v2: `(name, partitions)`, replication factor -1, no configs.
fn create_topics(topics: &[(&str, i32)], validate_only: bool) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(topics.len() as i32);
    for (name, partitions) in topics {
        put_str(&mut b, name);
        b.put_i32(*partitions);
        b.put_i16(-1);
        b.put_i32(0); // assignments
        b.put_i32(0); // configs
    }
    b.put_i32(60_000);
    b.put_u8(u8::from(validate_only));
    b
}

fn get_str(b: &mut BytesMut) -> Option<String> {
    let len = b.get_i16();
    if len < 0 {
        return None;
    }
    let s = String::from_utf8_lossy(&b[..len as usize]).into_owned();
    b.advance(len as usize);
    Some(s)
}

/// Parses a CreateTopics v2 response: (name, error code, message) per topic.
fn created(mut body: BytesMut) -> Vec<(String, i16, Option<String>)> {
    let _throttle = body.get_i32();
    let n = body.get_i32();
    (0..n)
        .map(|_| {
            let name = get_str(&mut body).expect("a topic name");
            let code = body.get_i16();
            let message = get_str(&mut body);
            (name, code, message)
        })
        .collect()
}

/// Reads one response frame, waiting up to `limit` (CreateTopics of
/// thousands of partitions takes longer than the helpers' 10 s).
async fn slow_response(s: &mut TcpStream, limit: Duration) -> (i32, BytesMut) {
    timeout(limit, async {
        let size = s.read_i32().await.expect("a response");
        let mut body = vec![0u8; size as usize];
        s.read_exact(&mut body).await.expect("the whole response");
        let mut body = BytesMut::from(&body[..]);
        (body.get_i32(), body)
    })
    .await
    .expect("answered in time")
}

async fn kafka(addr: SocketAddr) -> TcpStream {
    timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("Kafka connect in time")
        .expect("Kafka listener accepts")
}

/// Sends CreateTopics on a new connection and reads the answer (60 s at most).
async fn create(addr: SocketAddr, topics: &[(&str, i32)]) -> Vec<(String, i16, Option<String>)> {
    let mut s = kafka(addr).await;
    s.write_all(&request(
        CREATE_TOPICS,
        2,
        11,
        &create_topics(topics, false),
    ))
    .await
    .unwrap();
    let (id, body) = slow_response(&mut s, Duration::from_secs(60)).await;
    assert_eq!(id, 11);
    created(body)
}

/// An MQTT 3.1.1 client subscribes and gets its own QoS 1 message back.
async fn mqtt_round_trip(addr: SocketAddr, id: &str) {
    let mut s = raw::session(addr, 4, id, 30).await;
    raw::send(&mut s, &raw::subscribe(4, 1, "limits/echo", 1)).await;
    raw::expect_packet(&mut s, 9).await;
    raw::send(&mut s, &raw::publish(4, 1, "limits/echo", 2, b"hello")).await;
    // PUBACK and the delivery, in either order.
    let mut got = Vec::new();
    for _ in 0..2 {
        let (kind, body) = raw::read_packet(&mut s).await.expect("a packet");
        got.push((kind >> 4, body));
    }
    assert!(got.iter().any(|(k, _)| *k == 4), "PUBACK: {got:x?}");
    assert!(
        got.iter().any(|(k, b)| *k == 3 && b.ends_with(b"hello")),
        "the message: {got:x?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_flood_is_refused_with_kafka_codes_and_fds_stay_bounded() {
    // The defaults of the high_perf class, except a total small enough to reach here.
    let (_c, config) = config_file(
        "[server]\nclass = \"high_perf\"\n[kafka]\nstorage = \"disk\"\nmax_partitions = 1500\nmax_open_segment_files = 64\n",
    );
    let broker = BrokerProcess::spawn_with_data_dir(&kafka_and_mqtt(&config));
    let pid = broker.pid();
    let before = open_fds(pid);

    // The flood that took the broker to 19,998 descriptors: refused per topic.
    let answer = create(broker.kafka(), &[("big", 9990), ("big2", 5000)]).await;
    assert_eq!(answer.len(), 2);
    for (name, code, message) in &answer {
        assert_eq!(*code, INVALID_PARTITIONS, "{name}: {message:?}");
        let message = message.as_deref().unwrap_or_default();
        assert!(message.contains("1000"), "{name}: {message}");
    }
    for bad in [0, -5] {
        let answer = create(broker.kafka(), &[("zero", bad)]).await;
        assert_eq!(answer[0].1, INVALID_PARTITIONS, "{bad} partitions");
    }
    // Within the per-topic limit, the broker-wide total decides: the first
    // fits, the second would exceed kafka.max_partitions.
    let answer = create(broker.kafka(), &[("ok1", 1000), ("ok2", 1000)]).await;
    assert_eq!(answer[0].1, 0, "{answer:?}");
    assert_eq!(answer[1].1, POLICY_VIOLATION, "{answer:?}");
    assert!(answer[1]
        .2
        .as_deref()
        .is_some_and(|m| m.contains("max_partitions")));
    let answer = create(broker.kafka(), &[("ok1", 1)]).await;
    assert_eq!(answer[0].1, TOPIC_ALREADY_EXISTS);

    // 1,000 partitions exist, yet the broker holds at most the 64 cached
    // segment files more than before (without the cache: 2,000 more).
    let after = open_fds(pid);
    println!("open fds: {before} before, {after} after 1000 partitions");
    assert!(
        after <= before + 64 + 8,
        "{after} descriptors open (was {before}; cache of 64)"
    );
    // New connections still work, of Kafka and of another protocol.
    round_trip(broker.kafka()).await;
    mqtt_round_trip(broker.mqtt(), "flood-bystander").await;

    // And the broker restarts on its own data directory.
    let data = broker.kill().expect("the data directory");
    let broker = BrokerProcess::respawn(data, &kafka_and_mqtt(&config));
    let answer = create(broker.kafka(), &[("ok1", 1)]).await;
    assert_eq!(answer[0].1, TOPIC_ALREADY_EXISTS, "ok1 came back");
    // Recovery may still hold a few descriptors of its own (blocking-pool
    // work, the listener sockets of a loaded machine): a wider margin, still
    // far below the 2,000 files of 1,000 partitions without the cache.
    let restarted = open_fds(broker.pid());
    assert!(
        restarted <= before + 64 + 32,
        "{restarted} descriptors open after restart (was {before}; cache of 64)"
    );
    mqtt_round_trip(broker.mqtt(), "flood-bystander-2").await;
}

/// Lays out `partitions` partition directories of topic `name` with one
/// small segment each, as a broker leaves them.
fn lay_out_partitions(data_dir: &Path, name: &str, partitions: i32, seed: &Path) {
    let root = data_dir.join("kafka/topics");
    for p in 0..partitions {
        let dir = root.join(format!("{name}-{p}"));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(seed).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
}

/// The soft and hard open-files limit the broker child is started with.
const CHILD_NOFILE: u64 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_with_more_partitions_than_the_open_files_limit() {
    let (_c, config) = config_file(
        "[server]\nclass = \"generic\"\nmax_connections = 100\n[kafka]\nstorage = \"disk\"\n",
    );
    let args = kafka_and_mqtt(&config);
    // One partition with a message in it, written by a broker, as the seed.
    let seeder = BrokerProcess::spawn_with_data_dir(&args);
    let answer = create(seeder.kafka(), &[("seed", 1)]).await;
    assert_eq!(answer[0].1, 0);
    produce_and_fetch(seeder.kafka(), "seed", 0, "seeded").await;
    let data = seeder.kill().expect("the data directory");
    let seed = data.path().join("kafka/topics/seed-0");

    // 600 partitions (1,200 segment and index files) under a limit of 256.
    lay_out_partitions(data.path(), "flood", 600, &seed);
    let broker = BrokerProcess::respawn_configured(data, &args, |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: CHILD_NOFILE,
                    rlim_max: CHILD_NOFILE,
                };
                match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
    });
    let pid = broker.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "{limits}"
    );
    // Every recovered partition serves what it had and takes more.
    for p in [0, 299, 599] {
        produce_and_fetch(broker.kafka(), "flood", p, &format!("after-restart-{p}")).await;
    }
    // A quarter of the limit for segment files (64), plus the broker's own.
    let fds = open_fds(pid);
    println!("open fds with 600 partitions under a limit of {CHILD_NOFILE}: {fds}");
    assert!(fds < 160, "{fds} descriptors open");
    mqtt_round_trip(broker.mqtt(), "restart-bystander").await;
    round_trip(broker.kafka()).await;
}

/// Produces `value` to `topic`/`partition` (acks=all) and reads the
/// partition from the beginning until it comes back; the message stored
/// before it (the seed's) must come first.
async fn produce_and_fetch(addr: SocketAddr, topic: &str, partition: i32, value: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let delivered = producer
        .send(
            FutureRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(value),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("delivery to {topic}-{partition} failed: {e}"));
    assert_eq!(delivered.partition, partition);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "limits")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !got.iter().any(|v| v == value) && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(got.last().map(String::as_str), Some(value), "{got:?}");
    if delivered.offset > 0 {
        assert_eq!(got.first().map(String::as_str), Some("seeded"), "{got:?}");
    }
}

/// DescribeConfigs v1 for one topic: a request that looks the topic up on
/// the connection's own task (so, on the current-thread runtime, on the one
/// thread that serves every protocol).
fn describe_topic(name: &str) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(1);
    b.put_i8(2); // topic
    put_str(&mut b, name);
    b.put_i32(-1); // every key
    b.put_u8(0); // no synonyms
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_creation_does_not_stall_the_current_thread_runtime() {
    let (_c, config) = config_file(
        "[server]\nclass = \"generic\"\nruntime = \"current_thread\"\n[kafka]\nstorage = \"disk\"\nmax_partitions = 20000\nmax_topics = 100\nmax_open_segment_files = 64\n",
    );
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_str().expect("UTF-8 temp path");
    let mut args = kafka_and_mqtt(&config);
    args.extend(["--data-dir", data_path]);
    let broker = BrokerProcess::spawn(&args);
    let addr = broker.kafka();
    assert_eq!(create(addr, &[("existing", 1)]).await[0].1, 0);

    // A large creation (2,000 partitions: directories, files, fsyncs; some
    // seconds) ...
    let names: Vec<String> = (0..2).map(|i| format!("slow{i}")).collect();
    let big: Vec<(&str, i32)> = names.iter().map(|n| (n.as_str(), 1000)).collect();
    let mut creator = kafka(addr).await;
    let started = Instant::now();
    creator
        .write_all(&request(CREATE_TOPICS, 2, 21, &create_topics(&big, false)))
        .await
        .unwrap();
    // ... and a second creation of one of its names, racing it.
    let racer = tokio::spawn(async move { create(addr, &[("slow1", 1000)]).await });
    // Once the creation has started (its first directories exist) ...
    let first = data.path().join("kafka/topics/slow0-0");
    let deadline = Instant::now() + WAIT;
    while !first.exists() {
        assert!(Instant::now() < deadline, "the creation never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Meanwhile a lookup of another topic on the runtime thread, and a
    // bystander MQTT round trip: both answered at once, not after the creation.
    let mut looker = kafka(addr).await;
    looker
        .write_all(&request(
            DESCRIBE_CONFIGS,
            1,
            22,
            &describe_topic("existing"),
        ))
        .await
        .unwrap();
    let (id, mut body) = timeout(Duration::from_secs(3), response(&mut looker))
        .await
        .expect("DescribeConfigs answered while topics are being created");
    assert_eq!(id, 22);
    let _throttle = body.get_i32();
    assert_eq!(body.get_i32(), 1);
    assert_eq!(body.get_i16(), 0, "the existing topic is described");
    timeout(
        Duration::from_secs(3),
        mqtt_round_trip(broker.mqtt(), "create-bystander"),
    )
    .await
    .expect("MQTT round trip while topics are being created");
    let bystanders_done = started.elapsed();

    let (id, body) = slow_response(&mut creator, Duration::from_secs(120)).await;
    let took = started.elapsed();
    assert_eq!(id, 21);
    let answer = created(body);
    println!("2,000 partitions created in {took:?}; bystanders done after {bystanders_done:?}");
    let racer = racer.await.unwrap();
    // One of the two creations of slow1 won; the other was told it exists.
    let big_slow1 = answer.iter().find(|t| t.0 == "slow1").unwrap().1;
    assert!(
        [big_slow1, racer[0].1] == [0, TOPIC_ALREADY_EXISTS]
            || [big_slow1, racer[0].1] == [TOPIC_ALREADY_EXISTS, 0],
        "slow1: {big_slow1} and {racer:?}"
    );
    for (name, code, message) in &answer {
        if name != "slow1" {
            assert_eq!(*code, 0, "{name}: {message:?}");
        }
    }
    assert!(
        took > bystanders_done,
        "the bystanders finished ({bystanders_done:?}) before the creation ({took:?})"
    );
    assert!(open_fds(broker.pid()) < 64 + 100);
}
