//! Kafka byte bounds (issue 15): Fetch responses are capped broker-side
//! (`kafka.fetch_max_bytes`, `kafka.max_partition_fetch_bytes`) and a
//! partition listed many times in one request is answered once; requests
//! other than Produce are held to `kafka.max_request_bytes` from their size
//! and api key, before any body is read; array counts that cannot fit in the
//! bytes left are refused before anything is allocated; and the bytes of
//! requests being read at once stay within `kafka.decode_budget_bytes`.
//! Memory is checked on a broker child process (VmRSS / VmHWM); every case
//! ends with a bystander of another protocol completing a round trip.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::broker_process::BrokerProcess;
use crate::common::{start_broker_with, WAIT};
use crate::raw;
use crate::raw_kafka::batch;
use crate::raw_kafka::{self, api_versions_ok, request};

/// Flags for a broker process serving MQTT, Kafka and AMQP on ephemeral ports.
const THREE_PROTOCOLS: &[&str] = &[
    "--mqtt-bind",
    "127.0.0.1:0",
    "--kafka-bind",
    "127.0.0.1:0",
    "--amqp-bind",
    "127.0.0.1:0",
    "--no-websocket",
    "--no-metrics",
    "--stats-interval",
    "0",
];

const MIB: usize = 1 << 20;

/// A field of /proc/PID/status in bytes (VmRSS, VmHWM).
fn proc_status_bytes(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kb * 1024
}

/// A child broker with the `[kafka]` keys in `kafka_toml`; the returned
/// directory holds its config file.
fn spawn_with_kafka_config(kafka_toml: &str) -> (BrokerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir for the config");
    let path = dir.path().join("broker.toml");
    std::fs::write(&path, format!("[kafka]\n{kafka_toml}\n")).expect("config written");
    let mut args: Vec<&str> = THREE_PROTOCOLS.to_vec();
    let path = path.to_str().expect("utf-8 path").to_string();
    args.push("--config");
    args.push(&path);
    (BrokerProcess::spawn_with_data_dir(&args), dir)
}

/// An MQTT 3.1.1 client subscribes and gets its own QoS 0 message back.
async fn mqtt_round_trip(addr: SocketAddr, id: &str) {
    let mut s = raw::session(addr, 4, id, 30).await;
    raw::send(&mut s, &raw::subscribe(4, 1, "bounds/echo", 0)).await;
    raw::expect_packet(&mut s, 9).await;
    raw::send(&mut s, &raw::publish(4, 0, "bounds/echo", 0, b"hello")).await;
    let publish = raw::expect_packet(&mut s, 3).await;
    assert!(publish.ends_with(b"hello"), "{publish:x?}");
}

async fn connect(addr: SocketAddr) -> TcpStream {
    timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("Kafka connect in time")
        .expect("Kafka listener accepts")
}

/// Waits (bounded) until the broker closes `s`, discarding anything it sends.
async fn closed_by_broker(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match timeout(WAIT, s.read(&mut buf))
            .await
            .expect("the broker closes the connection in time")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Encodes one request frame.
fn frame<Req: Encodable + HeaderVersion>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    req: &Req,
) -> BytesMut {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("bounds")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, Req::header_version(version))
        .unwrap();
    req.encode(&mut body, version).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    frame
}

/// Reads one response frame: (its size on the wire, the body after the header).
async fn read_response<Resp: Decodable + HeaderVersion>(
    s: &mut TcpStream,
    version: i16,
    correlation_id: i32,
) -> (usize, Resp) {
    let size = timeout(WAIT, s.read_i32()).await.unwrap().unwrap();
    let size = usize::try_from(size).expect("a positive response size");
    assert!(size <= 256 * MIB, "response of {size} bytes");
    let mut answer = vec![0u8; size];
    timeout(WAIT, s.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let mut answer = Bytes::from(answer);
    let header = ResponseHeader::decode(&mut answer, Resp::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    (4 + size, Resp::decode(&mut answer, version).unwrap())
}

/// Creates `topic` (Metadata v1 auto-creates) and appends `batches` batches
/// of one `value_len`-byte record each to partition 0; returns the bytes stored.
async fn fill(s: &mut TcpStream, topic: &'static str, batches: usize, value_len: usize) -> usize {
    let meta = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str(topic))))]));
    s.write_all(&frame(ApiKey::Metadata, 1, 1, &meta))
        .await
        .unwrap();
    let (_, meta): (_, MetadataResponse) = read_response(s, 1, 1).await;
    assert_eq!(meta.topics[0].error_code, 0, "topic {topic} created");
    let mut stored = 0;
    for i in 0..batches {
        let records = batch(value_len).freeze();
        stored += records.len();
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records))])]);
        let id = 100 + i as i32;
        s.write_all(&frame(ApiKey::Produce, 7, id, &req))
            .await
            .unwrap();
        let (_, resp): (_, ProduceResponse) = read_response(s, 7, id).await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    }
    stored
}

/// Fetch v4 of `topic` partition 0 from offset 0, the entry repeated
/// `copies` times, with `max_bytes` and `partition_max_bytes` as given.
fn fetch_request(
    topic: &'static str,
    copies: usize,
    max_bytes: i32,
    partition_max_bytes: i32,
) -> FetchRequest {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(partition_max_bytes);
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(topic)))
            .with_partitions(vec![partition; copies])])
}

/// (records bytes per partition entry answered, response bytes on the wire).
async fn fetch(s: &mut TcpStream, id: i32, req: &FetchRequest) -> (Vec<usize>, usize) {
    s.write_all(&frame(ApiKey::Fetch, 4, id, req))
        .await
        .unwrap();
    let (size, resp): (_, FetchResponse) = read_response(s, 4, id).await;
    let per_partition = resp
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
            p.records.as_ref().map_or(0, |r| r.len())
        })
        .collect();
    (per_partition, size)
}

/// The 1,071-byte request of the issue (partition 0 listed 64 times,
/// max_bytes = i32::MAX) returned 67 MB. Duplicates are now answered once, so
/// the response carries the partition's ~1 MiB once: under 2 MiB, and the
/// broker's resident memory grows by less than 24 MiB.
#[tokio::test]
async fn a_partition_listed_64_times_is_answered_once_and_rss_stays_bounded() {
    let (broker, _config) = spawn_with_kafka_config("");
    let mut s = connect(broker.kafka()).await;
    let stored = fill(&mut s, "amplified", 64, 16_000).await;
    assert!(
        stored > MIB - 64 * 1024 && stored < MIB + 64 * 1024,
        "{stored}"
    );
    let rss_before = proc_status_bytes(broker.pid(), "VmRSS");

    let req = fetch_request("amplified", 64, i32::MAX, i32::MAX);
    let request_bytes = frame(ApiKey::Fetch, 4, 9, &req).len();
    assert!(
        request_bytes < 1_200,
        "the hostile request is {request_bytes} bytes"
    );
    let (records, response_bytes) = fetch(&mut s, 9, &req).await;
    assert_eq!(
        records,
        vec![stored],
        "one answer, with the whole partition"
    );
    assert!(
        response_bytes < 2 * MIB,
        "response of {response_bytes} bytes to a {request_bytes}-byte request"
    );
    let rss_after = proc_status_bytes(broker.pid(), "VmRSS");
    eprintln!("fetch: request {request_bytes} B, response {response_bytes} B, RSS {rss_before} -> {rss_after}");
    assert!(
        rss_after < rss_before + 24 * MIB,
        "RSS grew from {rss_before} to {rss_after}"
    );

    api_versions_ok(&mut s, 10).await;
    mqtt_round_trip(broker.mqtt(), "bounds-fetch").await;
}

/// With small caps configured: a client asking for i32::MAX gets at most
/// the partition cap (plus at most the batch that crosses it), a batch larger
/// than every cap still comes back whole so consumers progress, duplicates
/// are counted, and an rdkafka consumer still reads every message.
#[tokio::test]
async fn fetch_caps_hold_and_a_consumer_still_reads_everything() {
    let b = start_broker_with(|c| {
        c.kafka.fetch_max_bytes = 48 * 1024;
        c.kafka.max_partition_fetch_bytes = 16 * 1024;
    })
    .await;
    let addr = b.kafka_addr.unwrap();
    let mut s = connect(addr).await;
    let stored = fill(&mut s, "capped", 100, 1_000).await;
    let one_batch = stored / 100;
    let (records, _) = fetch(&mut s, 1, &fetch_request("capped", 1, i32::MAX, i32::MAX)).await;
    assert_eq!(records.len(), 1);
    assert!(
        records[0] <= 16 * 1024 && records[0] > 16 * 1024 - one_batch,
        "partition cap: {} bytes",
        records[0]
    );
    // The client's smaller partition limit still applies.
    let (records, _) = fetch(&mut s, 2, &fetch_request("capped", 1, i32::MAX, 4096)).await;
    assert!(
        records[0] <= 4096 && records[0] > 4096 - one_batch,
        "{records:?}"
    );
    // Duplicates: one answer, counted.
    let (records, _) = fetch(&mut s, 3, &fetch_request("capped", 3, i32::MAX, i32::MAX)).await;
    assert_eq!(records.len(), 1);
    assert!(
        b.metrics.encode().lines().any(|l| l
            == "broker_protocol_errors_total{protocol=\"kafka\",kind=\"fetch_duplicate_partition\"} 1"),
        "{}",
        b.metrics.encode()
    );
    // A 100 KB batch, larger than both caps, is still returned whole.
    let big = fill(&mut s, "oversized", 1, 100_000).await;
    let (records, _) = fetch(&mut s, 4, &fetch_request("oversized", 1, i32::MAX, 1024)).await;
    assert_eq!(records, vec![big]);

    // A normal consumer reads all 100 messages through the caps.
    let bootstrap = addr.to_string();
    let got = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("broker.address.family", "v4")
            .set("group.id", "bounds")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("capped", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).expect("assigned");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut offsets = Vec::new();
        while offsets.len() < 100 && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.expect("a message");
                assert_eq!(m.payload().map(<[u8]>::len), Some(1_000));
                offsets.push(m.offset());
            }
        }
        offsets
    })
    .await
    .unwrap();
    assert_eq!(
        got,
        (0..100).collect::<Vec<i64>>(),
        "every message, in order"
    );
    mqtt_round_trip(b.mqtt_addr, "bounds-caps").await;
    b.shutdown().await;
}

/// Metadata v1 whose topic array announces 2^31 - 1 entries, in a frame of
/// `size` bytes (the rest zeros: empty topic names).
fn huge_metadata(size: usize) -> BytesMut {
    let mut body = vec![0u8; size - 4 - 11];
    body[..4].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let f = request(3, 1, 3, &body);
    assert_eq!(f.len(), size);
    f
}

/// The 20 MiB Metadata frame (array count 0x7fffffff) raised RSS by
/// 627 MB. Every request but Produce is now held to 1 MiB, refused from its
/// first 6 bytes: the connection is closed and RSS grows by under 8 MiB.
#[tokio::test]
async fn a_20_mib_metadata_frame_is_refused_before_its_body_and_rss_stays_bounded() {
    let (mut broker, _config) = spawn_with_kafka_config("");
    let mut bystander = connect(broker.kafka()).await;
    api_versions_ok(&mut bystander, 1).await;
    let hwm_before = proc_status_bytes(broker.pid(), "VmHWM");

    let hostile = huge_metadata(20 * MIB);
    let mut s = connect(broker.kafka()).await;
    // The broker closes after the header: the rest may not be written.
    let _ = timeout(WAIT, s.write_all(&hostile)).await;
    closed_by_broker(&mut s).await;

    let hwm_after = proc_status_bytes(broker.pid(), "VmHWM");
    eprintln!("20 MiB metadata: peak RSS {hwm_before} -> {hwm_after}");
    assert!(
        hwm_after < hwm_before + 8 * MIB,
        "peak RSS grew from {hwm_before} to {hwm_after}"
    );
    assert_eq!(broker.exited(Duration::ZERO), None, "the broker is alive");
    api_versions_ok(&mut bystander, 2).await;
    mqtt_round_trip(broker.mqtt(), "bounds-metadata").await;
}

/// In-process, with the metric: a Metadata frame under the request limit
/// whose array count cannot fit in its bytes is a decode error (closed), a
/// 2 MiB Metadata is refused as too large, and a 2 MiB Produce is not.
#[tokio::test]
async fn request_limits_and_array_counts_are_refused_and_counted() {
    let b = start_broker_with(|_| {}).await;
    let addr = b.kafka_addr.unwrap();
    let counted = |kind: &str, n: u32| {
        let line =
            format!("broker_protocol_errors_total{{protocol=\"kafka\",kind=\"{kind}\"}} {n}");
        b.metrics.encode().lines().any(|l| l == line)
    };

    // 512 KiB, count 2^31 - 1, each topic at least 2 bytes: refused before allocating.
    let mut s = connect(addr).await;
    s.write_all(&huge_metadata(512 * 1024)).await.unwrap();
    closed_by_broker(&mut s).await;
    assert!(counted("malformed_request", 1), "{}", b.metrics.encode());

    let mut s = connect(addr).await;
    let _ = s.write_all(&huge_metadata(2 * MIB)).await;
    closed_by_broker(&mut s).await;
    assert!(counted("request_too_large", 1), "{}", b.metrics.encode());

    // Produce v3, 2 MiB: null transactional id, acks 0, no topics, padding.
    let mut body = vec![0u8; 2 * MIB];
    body[..2].copy_from_slice(&(-1i16).to_be_bytes());
    let mut s = connect(addr).await;
    s.write_all(&request(0, 3, 4, &body)).await.unwrap();
    api_versions_ok(&mut s, 5).await;
    assert!(counted("request_too_large", 1), "{}", b.metrics.encode());

    mqtt_round_trip(b.mqtt_addr, "bounds-limits").await;
    b.shutdown().await;
}

/// Eight connections each send all but the last byte of a 12 MiB Produce
/// frame (96 MiB) to a broker with a 16 MiB decode budget. Without the
/// budget all eight bodies sit in the broker's read buffers at once; with it
/// one is read while the others wait (their bytes stay in the kernel's socket
/// buffers), so the broker's RSS, measured while they all wait, grows by less
/// than the budget + 24 MiB. Then the last bytes go out and every frame is
/// read and answered (the connection serves ApiVersions after it). A 20 MiB
/// Produce, larger than the whole budget, is refused.
#[tokio::test]
async fn concurrent_large_produce_frames_stay_within_the_decode_budget() {
    let (mut broker, _config) = spawn_with_kafka_config("decode_budget_bytes = 16777216");
    let addr = broker.kafka();
    let rss_before = proc_status_bytes(broker.pid(), "VmRSS");

    let produce = |size: usize, id: i32| {
        let mut body = vec![0u8; size - 4 - 11];
        body[..2].copy_from_slice(&(-1i16).to_be_bytes());
        request(0, 3, id, &body)
    };
    let (go, _) = tokio::sync::watch::channel(false);
    let senders: Vec<_> = (0..8)
        .map(|i| {
            let f = produce(12 * MIB, i);
            let mut go = go.subscribe();
            tokio::spawn(async move {
                let mut s = connect(addr).await;
                let (most, last) = f.split_at(f.len() - 1);
                let within = Duration::from_secs(60);
                timeout(within, s.write_all(most))
                    .await
                    .expect("written in time")
                    .expect("written");
                timeout(within, go.wait_for(|go| *go))
                    .await
                    .expect("go in time")
                    .expect("go");
                s.write_all(last).await.expect("last byte written");
                api_versions_ok(&mut s, 1000 + i).await;
            })
        })
        .collect();
    // All eight have sent what the broker will take.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_waiting = proc_status_bytes(broker.pid(), "VmRSS");
    eprintln!("8 x 12 MiB produce, all but the last byte sent: RSS {rss_before} -> {rss_waiting}");
    assert!(
        rss_waiting < rss_before + 16 * MIB + 24 * MIB,
        "RSS grew from {rss_before} to {rss_waiting} (8 x 12 MiB pending)"
    );
    go.send_replace(true);
    for t in senders {
        t.await.expect("each large Produce is read and answered");
    }

    let mut s = connect(addr).await;
    let _ = timeout(WAIT, s.write_all(&produce(20 * MIB, 9))).await;
    closed_by_broker(&mut s).await;

    assert_eq!(broker.exited(Duration::ZERO), None, "the broker is alive");
    raw_kafka::round_trip(addr).await;
    mqtt_round_trip(broker.mqtt(), "bounds-budget").await;
}
