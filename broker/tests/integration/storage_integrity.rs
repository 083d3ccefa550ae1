//! Storage integrity seen from the wire: a Kafka batch whose header claims
//! more offsets than it has records is refused (INVALID_RECORD) instead of
//! bending the log's offsets, every valid batch stays fetchable at each of
//! its offsets (also after a restart), and durable AMQP queues with the
//! longest names survive a restart. Each case ends with an MQTT bystander
//! round trip.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use broker::storage::StorageMode;
use broker::{Config, RunningBroker};

use crate::common::{start_broker_with, WAIT};
use crate::mqtt_client::{MqttClient, QoS, V311};
use crate::raw_kafka::batch;

const TOPIC: &str = "integrity";
const INVALID_RECORD: i16 = 87;

/// Rewrites attributes, last offset delta and record count, and the CRC32C
/// over them, as a client that makes its header up would.
fn forge(b: &mut [u8], attributes: i16, last_offset_delta: i32, record_count: i32) {
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    b[57..61].copy_from_slice(&record_count.to_be_bytes());
    let crc = broker::accel::crc32c::checksum(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Sends one request and decodes its response.
async fn call<Req, Resp>(
    s: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    req: &Req,
) -> Resp
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("integrity")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, Req::header_version(version))
        .unwrap();
    req.encode(&mut body, version).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    s.write_all(&frame).await.unwrap();
    let size = timeout(WAIT, s.read_i32()).await.unwrap().unwrap();
    let mut answer = vec![0u8; size as usize];
    timeout(WAIT, s.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let mut answer = Bytes::from(answer);
    let header = ResponseHeader::decode(&mut answer, Resp::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    let resp = Resp::decode(&mut answer, version).unwrap();
    assert_eq!(answer.remaining(), 0, "the whole response was read");
    resp
}

/// Produces `records` (one or more batches) to partition 0: (error code, base offset).
async fn produce(s: &mut TcpStream, id: i32, records: Bytes) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let resp: ProduceResponse = call(s, ApiKey::Produce, 7, id, &req).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Fetches from `offset` with room for about one batch: the base offsets
/// of the batches returned.
async fn fetch(s: &mut TcpStream, id: i32, offset: i64) -> Vec<i64> {
    let req = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1)])]);
    let resp: FetchResponse = call(s, ApiKey::Fetch, 11, id, &req).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "fetch at {offset}");
    let mut data = p.records.clone().unwrap_or_default();
    let mut bases = Vec::new();
    while data.remaining() >= 12 {
        let base = data.get_i64();
        let len = data.get_i32() as usize;
        bases.push(base);
        data.advance(len.min(data.remaining()));
    }
    bases
}

fn on_disk(data_dir: &std::path::Path) -> impl FnOnce(&mut Config) + '_ {
    move |c| {
        c.server.data_dir = data_dir.to_path_buf();
        c.kafka.storage = broker::kafka::config::KafkaStorage::Disk;
        c.amqp.storage = StorageMode::Disk;
    }
}

/// An MQTT client still completes a QoS 1 round trip through the broker.
async fn mqtt_round_trip(broker: &RunningBroker, tag: &str) {
    let mut c = V311::connect(broker, &format!("bystander-{tag}")).await;
    let topic = format!("probe/{tag}");
    c.subscribe(&topic, QoS::AtLeastOnce)
        .await
        .expect("subscribed");
    c.publish(&topic, QoS::AtLeastOnce, false, tag.as_bytes())
        .await;
    let got = c.next_publish().await;
    assert_eq!(got.topic, topic);
    assert_eq!(got.payload, tag.as_bytes());
}

#[tokio::test]
async fn kafka_batches_must_back_their_offsets_and_every_valid_one_stays_fetchable() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(on_disk(dir.path())).await;
    broker
        .kafka
        .as_ref()
        .unwrap()
        .topics
        .get_or_create(TOPIC, 1)
        .unwrap();
    let mut s = TcpStream::connect(broker.kafka_addr.unwrap())
        .await
        .unwrap();

    // The four batches: one record each, deltas 2^31-1, 2^31-1, 0, 0.
    let mut id = 0;
    let mut answers = Vec::new();
    for delta in [i32::MAX, i32::MAX, 0, 0] {
        let mut b = batch(5_000);
        forge(&mut b, 0, delta, 1);
        id += 1;
        answers.push(produce(&mut s, id, b.freeze()).await);
    }
    assert_eq!(
        answers,
        [(INVALID_RECORD, -1), (INVALID_RECORD, -1), (0, 0), (0, 1)],
        "a header whose delta its records do not back is INVALID_RECORD"
    );
    // An uncompressed batch announcing more records than it holds.
    let mut b = batch(10);
    forge(&mut b, 0, 4, 5);
    id += 1;
    assert_eq!(produce(&mut s, id, b.freeze()).await.0, INVALID_RECORD);

    // Compressed batches are not decompressed, so these wide ones (the
    // largest a record count allows) are valid; the log must still find
    // every offset, past 2^32 from where the log started.
    let wide = i64::from(i32::MAX);
    let mut bases = vec![0, 1];
    for offsets in [i32::MAX, i32::MAX, i32::MAX, 1, 1] {
        let mut b = batch(5_000);
        forge(&mut b, 1, offsets - 1, offsets);
        id += 1;
        let (error, base) = produce(&mut s, id, b.freeze()).await;
        assert_eq!(error, 0);
        bases.push(base);
    }
    assert_eq!(
        bases,
        [0, 1, 2, 2 + wide, 2 + 2 * wide, 2 + 3 * wide, 3 + 3 * wide]
    );

    for (i, &base) in bases.iter().enumerate() {
        let last = bases.get(i + 1).map_or(base, |next| next - 1);
        for offset in [base, last] {
            id += 1;
            let got = fetch(&mut s, id, offset).await;
            assert_eq!(got.first(), Some(&base), "a fetch at {offset}");
        }
    }
    let errors = broker.metrics.encode();
    assert!(errors.contains("kind=\"produce_refused\""), "{errors}");
    mqtt_round_trip(&broker, "kafka-before-restart").await;
    drop(s);
    broker.shutdown().await;

    // Recovery rebuilds the same index from the files.
    let broker = start_broker_with(on_disk(dir.path())).await;
    let mut s = TcpStream::connect(broker.kafka_addr.unwrap())
        .await
        .unwrap();
    for (i, &base) in bases.iter().enumerate() {
        let last = bases.get(i + 1).map_or(base, |next| next - 1);
        for offset in [base, (base + last) / 2, last] {
            id += 1;
            let got = fetch(&mut s, id, offset).await;
            assert_eq!(
                got.first(),
                Some(&base),
                "after restart, a fetch at {offset}"
            );
        }
    }
    mqtt_round_trip(&broker, "kafka-after-restart").await;
    broker.shutdown().await;
}

/// Declares durable `name` and publishes `body` into it persistently, confirmed.
async fn durable_queue_with(conn: &lapin::Connection, name: &str, body: &[u8]) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        name,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("a durable queue with a 200-byte name is declared");
    let confirm = ch
        .basic_publish(
            "",
            name,
            BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    assert!(timeout(WAIT, confirm).await.unwrap().unwrap().is_ack());
    ch.close(200, "done").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_queues_with_the_longest_names_survive_a_restart() {
    use lapin::options::BasicGetOptions;
    // Hex-encoded, these names take 400 bytes: more than a file name may.
    // They share their first 150 bytes, so a prefix cannot tell them apart.
    let first = format!("{}{}", "q".repeat(150), "a".repeat(50));
    let second = format!("{}{}", "q".repeat(150), "b".repeat(50));
    let short = "short-durable";
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(on_disk(dir.path())).await;
    let conn = crate::common::amqp_connect(&broker).await;
    for name in [first.as_str(), second.as_str(), short] {
        durable_queue_with(&conn, name, name.as_bytes()).await;
    }
    conn.close(200, "bye").await.unwrap();
    mqtt_round_trip(&broker, "amqp-before-restart").await;
    broker.shutdown().await;

    let broker = start_broker_with(on_disk(dir.path())).await;
    let conn = crate::common::amqp_connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    for name in [first.as_str(), second.as_str(), short] {
        let got = ch
            .basic_get(name, BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the message of '{name}' survived"));
        assert_eq!(got.delivery.data, name.as_bytes());
    }
    conn.close(200, "bye").await.unwrap();
    mqtt_round_trip(&broker, "amqp-after-restart").await;
    broker.shutdown().await;
}
