//! Malformed and forbidden input as raw bytes: each case gets the behaviour the
//! spec requires (CONNACK code, DISCONNECT reason, or a closed connection), and
//! a second client connected at the same time keeps working.

use std::net::SocketAddr;

use broker::RunningBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{self, WAIT};
use crate::mqtt_client::{MqttClient, QoS, V311};

/// CONNECT, MQTT 3.1.1, clean session, keep alive 60, client id "bad".
const CONNECT_V311: &[u8] = &[
    0x10, 0x0f, // CONNECT, remaining length 15
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x04, // level 4
    0x02, // flags: clean session
    0x00, 0x3c, // keep alive 60
    0x00, 0x03, b'b', b'a', b'd', // client id
];

/// CONNECT, MQTT 5.0, clean start, keep alive 60, no properties, client id "bad".
const CONNECT_V5: &[u8] = &[
    0x10, 0x10, // CONNECT, remaining length 16
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x05, // level 5
    0x02, // flags: clean start
    0x00, 0x3c, // keep alive 60
    0x00, // properties: none
    0x00, 0x03, b'b', b'a', b'd', // client id
];

const CONNACK_OK: &[u8] = &[0x20, 0x02, 0x00, 0x00];
const CONNACK_OK_V5_PREFIX: &[u8] = &[0x20];

/// Writes `bytes`, then collects everything the broker sends until it closes
/// the connection. Panics if it is still open after [`WAIT`].
async fn send_and_collect_until_close(stream: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    stream.write_all(bytes).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("broker did not close the connection; received so far {got:02x?}"),
        }
    }
}

/// Connects raw and completes the handshake at the given level.
async fn raw_connected(addr: SocketAddr, v5: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(if v5 { CONNECT_V5 } else { CONNECT_V311 })
        .await
        .unwrap();
    let mut head = [0u8; 2];
    timeout(WAIT, s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[0], 0x20, "CONNACK expected");
    let mut rest = vec![0u8; head[1] as usize];
    timeout(WAIT, s.read_exact(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest[1], 0x00, "connection accepted");
    s
}

/// Parses a 5.0 DISCONNECT and returns its reason code (0 when omitted).
fn disconnect_reason(bytes: &[u8]) -> u8 {
    assert_eq!(
        bytes.first(),
        Some(&0xe0),
        "DISCONNECT expected, got {bytes:02x?}"
    );
    if bytes.get(1) == Some(&0) {
        0
    } else {
        bytes[2]
    }
}

/// A well-behaved subscriber on `probe/#`, connected before the bad client.
struct Bystander(V311);

impl Bystander {
    async fn join(broker: &RunningBroker, id: &str) -> Bystander {
        let mut c = V311::connect(broker, id).await;
        c.subscribe("probe/#", QoS::AtLeastOnce)
            .await
            .expect("bystander subscribed");
        Bystander(c)
    }

    /// Publishes to itself and proves the round trip still works.
    async fn still_served(mut self, tag: &str) {
        let topic = format!("probe/{tag}");
        self.0
            .publish(&topic, QoS::AtLeastOnce, false, tag.as_bytes())
            .await;
        let got = self.0.next_publish().await;
        assert_eq!(got.topic, topic);
        assert_eq!(got.payload, tag.as_bytes());
    }
}

/// Runs one bad-input case: a bystander connects, the bad client does its
/// thing and must see exactly `expect(bytes)`, then the bystander round-trips.
async fn case(
    name: &str,
    v5: bool,
    setup: impl FnOnce(&mut broker::Config),
    bad: &[u8],
    expect: impl FnOnce(&[u8]),
) {
    let broker = common::start_broker_with(setup).await;
    let bystander = Bystander::join(&broker, &format!("bystander-{name}")).await;
    let mut stream = raw_connected(broker.mqtt_addr, v5).await;
    let got = send_and_collect_until_close(&mut stream, bad).await;
    expect(&got);
    bystander.still_served(name).await;
    let metrics = broker.metrics.encode();
    assert!(
        metrics.contains("broker_protocol_errors_total{"),
        "protocol error counted: {metrics}"
    );
    broker.shutdown().await;
}

/// The usual pair: a 3.1.1 client is closed without a word (3.1.1 has no
/// server DISCONNECT), a 5.0 client gets DISCONNECT with `reason_v5` first.
async fn at_both_levels(
    name: &str,
    setup: impl Fn(&mut broker::Config) + Copy,
    bad_v311: &[u8],
    bad_v5: &[u8],
    reason_v5: u8,
) {
    case(&format!("{name}-311"), false, setup, bad_v311, |got| {
        assert!(got.is_empty(), "{got:02x?}")
    })
    .await;
    case(&format!("{name}-5"), true, setup, bad_v5, |got| {
        assert_eq!(disconnect_reason(got), reason_v5)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_remaining_length_closes_the_connection() {
    // PUBLISH whose remaining length has a 5th continuation byte.
    let bad = [0x30, 0xff, 0xff, 0xff, 0xff, 0x01];
    at_both_levels("remlen", |_| {}, &bad, &bad, 0x81).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_name_is_closed_without_connack() {
    let broker = common::start_broker().await;
    let bystander = Bystander::join(&broker, "bystander-name").await;
    let mut s = TcpStream::connect(broker.mqtt_addr).await.unwrap();
    let mut connect = CONNECT_V311.to_vec();
    connect[7] = b'X'; // "MQTX"
    let got = send_and_collect_until_close(&mut s, &connect).await;
    assert!(
        got.is_empty(),
        "no CONNACK for a foreign protocol: {got:02x?}"
    );
    bystander.still_served("name").await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_gets_connack_1() {
    let broker = common::start_broker().await;
    let bystander = Bystander::join(&broker, "bystander-level").await;
    let mut s = TcpStream::connect(broker.mqtt_addr).await.unwrap();
    let mut connect = CONNECT_V311.to_vec();
    connect[8] = 6; // protocol level 6
    let got = send_and_collect_until_close(&mut s, &connect).await;
    assert_eq!(
        got,
        [0x20, 0x02, 0x00, 0x01],
        "unacceptable protocol version"
    );
    bystander.still_served("level").await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_before_connect_closes_the_connection() {
    let broker = common::start_broker().await;
    let bystander = Bystander::join(&broker, "bystander-first").await;
    for first in [
        &[0xc0, 0x00][..],
        &[0x30, 0x05, 0x00, 0x01, b'a', b'h', b'i'][..],
    ] {
        let mut s = TcpStream::connect(broker.mqtt_addr).await.unwrap();
        let got = send_and_collect_until_close(&mut s, first).await;
        assert!(
            got.is_empty(),
            "nothing answered before CONNECT: {got:02x?}"
        );
    }
    bystander.still_served("first").await;
    assert!(broker.metrics.encode().contains(
        "broker_protocol_errors_total{protocol=\"mqtt\",kind=\"packet_before_connect\"} 2"
    ));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_is_a_protocol_error() {
    at_both_levels("connect", |_| {}, CONNECT_V311, CONNECT_V5, 0x82).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packet_is_refused_from_its_header() {
    // Only the fixed header of a 100,000-byte PUBLISH: the broker must not wait for the body.
    let header = [0x30, 0xa0, 0x8d, 0x06];
    let small = |c: &mut broker::Config| c.mqtt.max_packet_size = Some(1024);
    at_both_levels("big", small, &header, &header, 0x95).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_topic_is_malformed() {
    let bad = [
        0x30, 0x07, // PUBLISH QoS 0, remaining 7
        0x00, 0x03, b'a', 0xff, b'b', // topic "a\xffb": invalid UTF-8
        b'h', b'i', // payload
    ];
    let bad5 = [
        0x30, 0x08, // PUBLISH QoS 0, remaining 8
        0x00, 0x03, b'a', 0xff, b'b', // topic "a\xffb": invalid UTF-8
        0x00, // properties: none
        b'h', b'i', // payload
    ];
    at_both_levels("utf8", |_| {}, &bad, &bad5, 0x81).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_in_publish_topic_is_refused() {
    let v311 = [
        0x30, 0x07, // PUBLISH QoS 0, remaining 7
        0x00, 0x03, b'a', b'/', b'#', // topic "a/#"
        b'h', b'i', // payload
    ];
    let v5 = [
        0x30, 0x08, // PUBLISH QoS 0, remaining 8
        0x00, 0x03, b'a', b'/', b'+', // topic "a/+"
        0x00, // properties: none
        b'h', b'i', // payload
    ];
    at_both_levels("wild", |_| {}, &v311, &v5, 0x90).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_3_is_malformed() {
    let bad = [
        0x36, 0x09, // PUBLISH with QoS bits 11, remaining 9
        0x00, 0x03, b'a', b'/', b'b', // topic
        0x00, 0x01, // packet id
        b'h', b'i', // payload
    ];
    at_both_levels("qos3", |_| {}, &bad, &bad, 0x81).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_connect_still_works_after_garbage() {
    // Sanity check of the raw vectors themselves, so the cases above fail for the right reason.
    let broker = common::start_broker().await;
    for (connect, v5) in [(CONNECT_V311, false), (CONNECT_V5, true)] {
        let mut s = TcpStream::connect(broker.mqtt_addr).await.unwrap();
        s.write_all(connect).await.unwrap();
        let mut buf = [0u8; 64];
        let n = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        if v5 {
            assert!(
                buf[..n].starts_with(CONNACK_OK_V5_PREFIX) && buf[3] == 0,
                "{:02x?}",
                &buf[..n]
            );
        } else {
            assert_eq!(&buf[..n], CONNACK_OK);
        }
    }
    broker.shutdown().await;
}
