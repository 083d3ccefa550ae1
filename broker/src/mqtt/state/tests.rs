//! The state machine fed with byte vectors: what a client sends, annotated,
//! and the exact bytes the broker queues in answer.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::Semaphore;

use super::*;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::platform::Platform;

/// CONNECT, 3.1.1: "MQTT" level 4, clean session, keep-alive 60, client id "a".
const CONNECT_V311: &[u8] = &[
    0x10, 0x0D, // CONNECT, remaining length 13
    0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // protocol name, level 4
    0x02, 0x00, 0x3C, // flags: clean session; keep-alive 60 s
    0x00, 0x01, b'a', // client id
];

/// CONNECT, 5.0: level 5, clean start, keep-alive 60, no properties, client id "a".
const CONNECT_V5: &[u8] = &[
    0x10, 0x0E, // CONNECT, remaining length 14
    0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, // protocol name, level 5
    0x02, 0x00, 0x3C, // flags: clean start; keep-alive 60 s
    0x00, // no properties
    0x00, 0x01, b'a', // client id
];

/// A connection past `connect` (a CONNECT packet), on a hub built from `config`.
async fn connected(connect: &[u8], configure: impl FnOnce(&mut Config)) -> Connection {
    let mut config = Config::ephemeral();
    configure(&mut config);
    let platform = Platform::detect();
    let limits = config.limits(platform.class);
    let metrics = Metrics::new(&platform, limits.max_connections);
    let hub = MqttHub::new(
        config.mqtt,
        limits,
        metrics,
        Arc::new(Semaphore::new(limits.max_connections)),
    );
    let mut buf = BytesMut::from(connect);
    let Ok(Some(Packet::Connect(mut connect))) =
        codec::decode(&mut buf, ProtocolVersion::V311, limits.max_packet_size)
    else {
        panic!("not a CONNECT");
    };
    let attached = hub
        .attach(&connect.client_id, connect.protocol, true, 0)
        .await;
    let client_id = connect.client_id.as_str().into();
    Connection::new(
        hub,
        attached.session,
        attached.connection_id,
        client_id,
        &mut connect,
        0,
    )
}

/// Feeds `bytes`, returns the step and takes what was queued for the client.
/// (A server DISCONNECT is encoded with its reason code and an empty
/// property length: `E0 02 rc 00`.)
fn feed(conn: &mut Connection, bytes: &[u8]) -> (Step, Vec<u8>) {
    let mut buf = BytesMut::from(bytes);
    let step = conn.process(&mut buf);
    if !matches!(step, Step::Failed) {
        assert!(buf.is_empty(), "left unread: {buf:02x?}");
    }
    let out = conn.out.split().to_vec();
    (step, out)
}

fn metrics_text(conn: &Connection) -> String {
    conn.hub.metrics.encode()
}

#[tokio::test]
async fn pingreq_is_answered_with_pingresp() {
    let mut c = connected(CONNECT_V311, |_| {}).await;
    let (step, out) = feed(&mut c, &[0xC0, 0x00]);
    assert!(matches!(step, Step::Idle), "{step:?}");
    assert_eq!(out, [0xD0, 0x00]);
}

#[tokio::test]
async fn a_partial_packet_waits_for_more_bytes() {
    let mut c = connected(CONNECT_V311, |_| {}).await;
    // PUBLISH QoS 0, remaining length 5, only 1 byte of it so far.
    let mut buf = BytesMut::from(&[0x30, 0x05, 0x00][..]);
    assert!(matches!(c.process(&mut buf), Step::Idle));
    assert_eq!(&buf[..], [0x30, 0x05, 0x00]);
    assert!(c.out.is_empty());
    // The rest arrives: topic "t", payload "hi"; nobody subscribed, nothing answered.
    buf.extend_from_slice(&[0x01, b't', b'h', b'i']);
    assert!(matches!(c.process(&mut buf), Step::Idle));
    assert!(buf.is_empty() && c.out.is_empty());
    assert_eq!(c.counters.messages_received.get(), 1);
}

#[tokio::test]
async fn qos1_publish_is_acknowledged() {
    let mut c = connected(CONNECT_V311, |_| {}).await;
    let publish = [
        0x32, 0x07, // PUBLISH QoS 1, remaining length 7
        0x00, 0x01, b't', // topic "t"
        0x00, 0x07, // packet id 7
        b'h', b'i', // payload
    ];
    let (_, out) = feed(&mut c, &publish);
    assert_eq!(out, [0x40, 0x02, 0x00, 0x07]); // PUBACK 7
    assert_eq!(c.counters.messages_received.get(), 1);
}

#[tokio::test]
async fn qos2_publish_is_routed_once_and_released() {
    let mut c = connected(CONNECT_V311, |_| {}).await;
    let publish = [0x34, 0x07, 0x00, 0x01, b't', 0x00, 0x07, b'h', b'i']; // QoS 2, id 7
    let (_, out) = feed(&mut c, &publish);
    assert_eq!(out, [0x50, 0x02, 0x00, 0x07]); // PUBREC 7
                                               // A retransmission (DUP) is acknowledged again but not routed again.
    let dup = [0x3C, 0x07, 0x00, 0x01, b't', 0x00, 0x07, b'h', b'i'];
    let (_, out) = feed(&mut c, &dup);
    assert_eq!(out, [0x50, 0x02, 0x00, 0x07]);
    assert_eq!(c.counters.messages_received.get(), 1);
    let (_, out) = feed(&mut c, &[0x62, 0x02, 0x00, 0x07]); // PUBREL 7
    assert_eq!(out, [0x70, 0x02, 0x00, 0x07]); // PUBCOMP 7
}

#[tokio::test]
async fn v5_pubrel_for_an_unknown_id_says_so() {
    let mut c = connected(CONNECT_V5, |_| {}).await;
    let (_, out) = feed(&mut c, &[0x62, 0x02, 0x00, 0x09]); // PUBREL 9, never published
                                                            // PUBCOMP 9, reason 0x92 Packet Identifier not found.
    assert_eq!(out, [0x70, 0x03, 0x00, 0x09, 0x92]);
}

#[tokio::test]
async fn subscriber_receives_its_own_publish_after_drain() {
    let mut c = connected(CONNECT_V311, |_| {}).await;
    let subscribe = [
        0x82, 0x06, // SUBSCRIBE, remaining length 6
        0x00, 0x01, // packet id 1
        0x00, 0x01, b't', 0x01, // filter "t", QoS 1
    ];
    let (_, out) = feed(&mut c, &subscribe);
    assert_eq!(out, [0x90, 0x03, 0x00, 0x01, 0x01]); // SUBACK 1: granted QoS 1
    let publish = [0x30, 0x05, 0x00, 0x01, b't', b'h', b'i']; // QoS 0 to "t"
    let (_, out) = feed(&mut c, &publish);
    assert!(out.is_empty(), "delivery waits for the drain: {out:02x?}");
    c.drain_queue();
    assert_eq!(&c.out[..], publish);
    assert_eq!(c.counters.messages_sent.get(), 1);
}

#[tokio::test]
async fn invalid_filter_is_refused_in_suback() {
    let mut c = connected(CONNECT_V311, |_| {}).await;
    let subscribe = [0x82, 0x07, 0x00, 0x02, 0x00, 0x02, b'a', b'#', 0x00]; // filter "a#"
    let (step, out) = feed(&mut c, &subscribe);
    assert!(matches!(step, Step::Idle));
    assert_eq!(out, [0x90, 0x03, 0x00, 0x02, 0x80]); // SUBACK 2: failure
    assert!(metrics_text(&c).contains(
        "broker_protocol_errors_total{protocol=\"mqtt\",kind=\"topic_filter_invalid\"} 1"
    ));
}

#[tokio::test]
async fn malformed_packet_fails_with_a_v5_disconnect() {
    let mut c = connected(CONNECT_V5, |_| {}).await;
    // PINGREQ with reserved flag bits set: malformed.
    let (step, out) = feed(&mut c, &[0xC1, 0x00]);
    assert!(matches!(step, Step::Failed), "{step:?}");
    assert_eq!(out, [0xE0, 0x02, 0x81, 0x00]); // DISCONNECT, reason 0x81 Malformed Packet
    assert!(metrics_text(&c)
        .contains("broker_protocol_errors_total{protocol=\"mqtt\",kind=\"malformed_packet\"} 1"));
}

#[tokio::test]
async fn malformed_packet_closes_a_v311_client_silently() {
    let mut c = connected(CONNECT_V311, |_| {}).await;
    let (step, out) = feed(&mut c, &[0xC1, 0x00]);
    assert!(matches!(step, Step::Failed), "{step:?}");
    assert!(
        out.is_empty(),
        "3.1.1 has no DISCONNECT from the server: {out:02x?}"
    );
}

#[tokio::test]
async fn answers_before_a_bad_packet_go_out_with_the_farewell() {
    let mut c = connected(CONNECT_V5, |_| {}).await;
    // PINGREQ, then a second CONNECT: a protocol error.
    let mut bytes = vec![0xC0, 0x00];
    bytes.extend_from_slice(CONNECT_V5);
    let (step, out) = feed(&mut c, &bytes);
    assert!(matches!(step, Step::Failed));
    assert_eq!(out, [0xD0, 0x00, 0xE0, 0x02, 0x82, 0x00]); // PINGRESP; DISCONNECT 0x82
    assert!(metrics_text(&c)
        .contains("broker_protocol_errors_total{protocol=\"mqtt\",kind=\"second_connect\"} 1"));
}

#[tokio::test]
async fn server_packets_from_a_client_are_refused() {
    let mut c = connected(CONNECT_V5, |_| {}).await;
    let (step, out) = feed(&mut c, &[0x20, 0x03, 0x00, 0x00, 0x00]); // CONNACK
    assert!(matches!(step, Step::Failed));
    assert_eq!(out, [0xE0, 0x02, 0x82, 0x00]);
}

#[tokio::test]
async fn oversized_packet_is_refused_before_its_body_arrives() {
    let mut c = connected(CONNECT_V5, |config| config.mqtt.max_packet_size = Some(64)).await;
    // PUBLISH announcing 100 bytes (0x64); none of them sent yet.
    let mut buf = BytesMut::from(&[0x30, 0x64][..]);
    assert!(matches!(c.process(&mut buf), Step::Failed));
    assert_eq!(&c.out[..], [0xE0, 0x02, 0x95, 0x00]); // DISCONNECT 0x95 Packet too large
}

#[tokio::test]
async fn disconnect_decides_about_the_will() {
    let mut c = connected(CONNECT_V311, |_| {}).await;
    let (step, _) = feed(&mut c, &[0xE0, 0x00]);
    assert!(matches!(step, Step::Exit(Exit::Normal)), "{step:?}");
    let mut c = connected(CONNECT_V5, |_| {}).await;
    // 5.0 DISCONNECT with reason 0x04: Disconnect with Will Message.
    let (step, _) = feed(&mut c, &[0xE0, 0x01, 0x04]);
    assert!(matches!(step, Step::Exit(Exit::WithWill)), "{step:?}");
}

#[tokio::test]
async fn a_flood_yields_every_64_packets() {
    let mut c = connected(CONNECT_V311, |_| {}).await;
    let pings: Vec<u8> = [0xC0, 0x00].repeat(65);
    let mut buf = BytesMut::from(&pings[..]);
    assert!(matches!(c.process(&mut buf), Step::Yield));
    assert_eq!(c.out.len(), 64 * 2);
    assert_eq!(buf.len(), 2);
    assert!(matches!(c.process(&mut buf), Step::Idle));
    assert_eq!(c.out.len(), 65 * 2);
}

#[tokio::test]
async fn keep_alive_expiry_is_counted_and_told() {
    let mut c = connected(CONNECT_V5, |_| {}).await;
    c.keep_alive_expired();
    assert_eq!(&c.out[..], [0xE0, 0x02, 0x8D, 0x00]); // DISCONNECT 0x8D Keep Alive timeout
    assert!(metrics_text(&c)
        .contains("broker_protocol_errors_total{protocol=\"mqtt\",kind=\"keep_alive_timeout\"} 1"));
}

#[tokio::test]
async fn a_publisher_waits_for_a_full_subscriber_only_until_the_deadline() {
    let mut publisher = connected(CONNECT_V311, |c| {
        c.mqtt.max_queued_messages = Some(1);
        c.mqtt.slow_subscriber_wait_ms = 100;
    })
    .await;
    let hub = publisher.hub.clone();
    let sub = hub
        .attach("sub", ProtocolVersion::V311, true, 0)
        .await
        .session;
    let options = crate::mqtt::packet::SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    hub.subscribe(&sub, "t", options, None);
    let publish = |id: u8| [0x32, 0x06, 0x00, 0x01, b't', 0x00, id, b'x'];
    let (step, out) = feed(&mut publisher, &publish(1));
    assert!(matches!(step, Step::Idle), "{step:?}");
    assert_eq!(
        out,
        [0x40, 0x02, 0x00, 0x01],
        "acknowledged before the pause"
    );
    assert_eq!(
        publisher.paused_on.len(),
        1,
        "paused on the full subscriber"
    );
    let since = publisher.paused_since.expect("pause started");
    assert!(!publisher.recheck_paused(since + Duration::from_millis(99)));
    assert!(!sub.is_slow());
    // The wait is over: the subscriber is marked slow and not waited for again.
    assert!(publisher.recheck_paused(since + Duration::from_millis(100)));
    assert!(sub.is_slow());
    assert!(publisher.paused_since.is_none());
    let (_, out) = feed(&mut publisher, &publish(2));
    assert_eq!(out, [0x40, 0x02, 0x00, 0x02]);
    assert!(
        publisher.paused_on.is_empty(),
        "never waits for a slow subscriber"
    );
    let text = metrics_text(&publisher);
    for line in [
        "broker_protocol_errors_total{protocol=\"mqtt\",kind=\"slow_subscriber\"} 1",
        "broker_messages_dropped_total{protocol=\"mqtt\",kind=\"slow_subscriber\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_unacknowledged_message_past_the_inflight_timeout_disconnects() {
    let mut c = connected(CONNECT_V5, |c| c.mqtt.inflight_timeout_secs = 5).await;
    let options = crate::mqtt::packet::SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    c.hub.subscribe(&c.session, "t", options, None);
    assert_eq!(c.inflight_deadline(), None);
    // The client publishes to itself (QoS 1, 5.0: empty properties), never acknowledges.
    let (_, _) = feed(
        &mut c,
        &[0x32, 0x07, 0x00, 0x01, b't', 0x00, 0x01, 0x00, b'x'],
    );
    let sent = Instant::now();
    c.drain_queue();
    let deadline = c.inflight_deadline().expect("a message in flight");
    assert_eq!(deadline.duration_since(sent).as_secs(), 5);
    c.out.clear();
    c.inflight_timed_out();
    assert_eq!(&c.out[..], [0xE0, 0x02, 0x97, 0x00]); // DISCONNECT 0x97 Quota exceeded
    assert!(metrics_text(&c)
        .contains("broker_protocol_errors_total{protocol=\"mqtt\",kind=\"inflight_timeout\"} 1"));
}
