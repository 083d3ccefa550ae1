//! MQTT 5.0 behaviour driven by the rumqttc v5 client (and raw bytes where
//! rumqttc refuses to send what the test needs).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use broker::RunningBroker;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, DisconnectReasonCode, Filter, LastWill, LastWillProperties, Packet,
    Publish, PublishProperties, RetainForwardRule, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::{Outgoing, Transport};
use tokio::time::timeout;

use crate::common::{self, WAIT};
use crate::raw;

fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Starts the client and polls until CONNACK; panics on refusal.
async fn start(opts: MqttOptions) -> (AsyncClient, EventLoop, ConnAck) {
    let (client, mut el) = AsyncClient::new(opts, 64);
    let ack = timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return ack,
                Ok(_) => {}
                Err(e) => panic!("connect failed: {e:?}"),
            }
        }
    })
    .await
    .expect("CONNACK in time");
    (client, el, ack)
}

/// The reason code of a refused CONNECT.
async fn refused(opts: MqttOptions) -> ConnectReturnCode {
    let (_client, mut el) = AsyncClient::new(opts, 8);
    match timeout(WAIT, el.poll()).await.expect("CONNACK in time") {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

async fn connect(b: &RunningBroker, id: &str) -> (AsyncClient, EventLoop) {
    let (c, el, ack) = start(options(b.mqtt_addr, id)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    (c, el)
}

/// Connects with the given Clean Start and Session Expiry Interval.
async fn connect_session(
    b: &RunningBroker,
    id: &str,
    clean_start: bool,
    expiry: u32,
) -> (AsyncClient, EventLoop, bool) {
    let mut o = options(b.mqtt_addr, id);
    o.set_clean_start(clean_start);
    o.set_session_expiry_interval(Some(expiry));
    let (c, el, ack) = start(o).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    (c, el, ack.session_present)
}

/// Polls until `f` picks an event; panics on a connection error or timeout.
async fn wait_for<T>(el: &mut EventLoop, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                }
                Err(e) => panic!("waiting for {what}: connection error {e:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn subscribe_filter(
    c: &AsyncClient,
    el: &mut EventLoop,
    filter: Filter,
) -> SubscribeReasonCode {
    c.subscribe_many(vec![filter]).await.unwrap();
    wait_for(el, "SUBACK", |ev| match ev {
        Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes[0]),
        _ => None,
    })
    .await
}

async fn subscribe(
    c: &AsyncClient,
    el: &mut EventLoop,
    filter: &str,
    qos: QoS,
) -> SubscribeReasonCode {
    subscribe_filter(c, el, Filter::new(filter, qos)).await
}

async fn unsubscribe(c: &AsyncClient, el: &mut EventLoop, filter: &str) {
    c.unsubscribe(filter).await.unwrap();
    wait_for(el, "UNSUBACK", |ev| {
        matches!(ev, Event::Incoming(Packet::UnsubAck(_))).then_some(())
    })
    .await
}

async fn wait_publish_flow(el: &mut EventLoop, qos: QoS) {
    wait_for(el, "publish flow", |ev| {
        let done = match qos {
            QoS::AtMostOnce => matches!(ev, Event::Outgoing(Outgoing::Publish(_))),
            QoS::AtLeastOnce => matches!(ev, Event::Incoming(Packet::PubAck(_))),
            QoS::ExactlyOnce => matches!(ev, Event::Incoming(Packet::PubComp(_))),
        };
        done.then_some(())
    })
    .await
}

/// Publishes and waits until the flow is complete (sent / PUBACK / PUBCOMP).
async fn publish(
    c: &AsyncClient,
    el: &mut EventLoop,
    topic: &str,
    qos: QoS,
    retain: bool,
    payload: impl Into<Bytes>,
) {
    c.publish(topic, qos, retain, payload).await.unwrap();
    wait_publish_flow(el, qos).await
}

async fn publish_with(
    c: &AsyncClient,
    el: &mut EventLoop,
    topic: &str,
    qos: QoS,
    payload: impl Into<Bytes>,
    properties: PublishProperties,
) {
    c.publish_with_properties(topic, qos, false, payload, properties)
        .await
        .unwrap();
    wait_publish_flow(el, qos).await
}

async fn next_publish(el: &mut EventLoop) -> Publish {
    wait_for(el, "PUBLISH", |ev| match ev {
        Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await
}

/// Polls for `window` and fails if a PUBLISH (or a connection error) shows up.
async fn expect_no_publish(el: &mut EventLoop, window: Duration) {
    let got = timeout(window, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return Ok(p),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match got {
        Err(_elapsed) => {}
        Ok(Ok(p)) => panic!("unexpected PUBLISH: {p:?}"),
        Ok(Err(e)) => panic!("connection error while expecting silence: {e:?}"),
    }
}

/// Sends DISCONNECT and waits until the broker has closed the connection,
/// i.e. has detached the session (so later messages are queued, not sent).
async fn disconnect(c: AsyncClient, mut el: EventLoop) {
    c.disconnect().await.unwrap();
    wait_for(&mut el, "outgoing DISCONNECT", |ev| {
        matches!(ev, Event::Outgoing(Outgoing::Disconnect)).then_some(())
    })
    .await;
    expect_connection_closed(&mut el).await;
}

/// Polls until the connection fails; returns the error.
async fn expect_connection_closed(el: &mut EventLoop) -> ConnectionError {
    timeout(WAIT, async {
        loop {
            if let Err(e) = el.poll().await {
                return e;
            }
        }
    })
    .await
    .expect("the broker closes the connection in time")
}

/// Polls until the broker ends the connection and checks that rumqttc saw
/// the broker's DISCONNECT with `reason` first.
async fn expect_server_disconnect(el: &mut EventLoop, reason: DisconnectReasonCode) {
    match expect_connection_closed(el).await {
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
            assert_eq!(reason_code, reason)
        }
        other => panic!("expected a DISCONNECT {reason:?} from the broker, got {other:?}"),
    }
}

fn payload(p: &Publish) -> String {
    String::from_utf8(p.payload.to_vec()).unwrap()
}

fn topic(p: &Publish) -> String {
    String::from_utf8(p.topic.to_vec()).unwrap()
}

fn will_properties(delay: Option<u32>) -> LastWillProperties {
    LastWillProperties {
        delay_interval: delay,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    }
}

/// A raw 5.0 client: CONNECT sent and a successful CONNACK read.
async fn raw_v5(b: &RunningBroker, id: &str, keep_alive: u16) -> tokio::net::TcpStream {
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &raw::connect(5, id, true, keep_alive)).await;
    let connack = raw::expect_packet(&mut s, 2).await;
    assert_eq!(connack[..2], [0x00, 0x00], "CONNACK accepted: {connack:x?}");
    s
}

/// Reads the broker's DISCONNECT and returns its reason code.
async fn raw_expect_disconnect(s: &mut tokio::net::TcpStream) -> u8 {
    let body = raw::expect_packet(s, 14).await;
    assert!(!body.is_empty(), "DISCONNECT with a reason code");
    body[0]
}

// 1. CONNECT / CONNACK

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_connect_accepted_with_properties() {
    let b = common::start_broker_with(|cfg| cfg.mqtt.max_inflight = Some(7)).await;
    let (_c, _el, ack) = start(options(b.mqtt_addr, "v5-hello")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(!ack.session_present);
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(props.receive_max, Some(7));
    assert_eq!(props.topic_alias_max, Some(10));
    assert_eq!(props.assigned_client_identifier, None);
    assert!(props.max_packet_size.is_some());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_empty_client_id_gets_assigned_identifier() {
    let b = common::start_broker().await;
    let (_c1, _el1, ack1) = start(options(b.mqtt_addr, "")).await;
    let (_c2, _el2, ack2) = start(options(b.mqtt_addr, "")).await;
    let id1 = ack1.properties.and_then(|p| p.assigned_client_identifier);
    let id2 = ack2.properties.and_then(|p| p.assigned_client_identifier);
    let (id1, id2) = (id1.expect("assigned id"), id2.expect("assigned id"));
    assert!(!id1.is_empty());
    assert_ne!(id1, id2, "assigned identifiers are unique");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_credentials_are_checked() {
    let b = common::start_broker_with(|cfg| {
        cfg.mqtt.users.insert("alice".into(), "secret".into());
    })
    .await;
    let mut o = options(b.mqtt_addr, "v5-bad-pass");
    o.set_credentials("alice", "wrong");
    assert_eq!(refused(o).await, ConnectReturnCode::BadUserNamePassword);
    let mut o = options(b.mqtt_addr, "v5-good-pass");
    o.set_credentials("alice", "secret");
    let (_c, _el, ack) = start(o).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_anonymous_refused_when_not_allowed() {
    let b = common::start_broker_with(|cfg| cfg.mqtt.allow_anonymous = false).await;
    let o = options(b.mqtt_addr, "v5-anon");
    assert_eq!(refused(o).await, ConnectReturnCode::NotAuthorized);
    assert!(b
        .metrics
        .encode()
        .contains("broker_connections_refused_total{protocol=\"mqtt\",kind=\"not_authorized\"} 1"));
    b.shutdown().await;
}

// 2. Client id takeover

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_client_id_takeover_sends_0x8e() {
    let b = common::start_broker().await;
    let (_a, mut a_el) = connect(&b, "dup").await;
    let (bc, mut b_el) = connect(&b, "dup").await;
    expect_server_disconnect(&mut a_el, DisconnectReasonCode::SessionTakenOver).await;
    drop(a_el); // never poll A again: it would reconnect and take the id back

    // The same with a raw first connection, to see the DISCONNECT bytes.
    let mut raw_a = raw_v5(&b, "dup-raw", 60).await;
    let (_c, _c_el) = connect(&b, "dup-raw").await;
    assert_eq!(raw_expect_disconnect(&mut raw_a).await, 0x8E);
    raw::expect_closed(&mut raw_a).await;

    subscribe(&bc, &mut b_el, "dup/t", QoS::AtLeastOnce).await;
    publish(
        &bc,
        &mut b_el,
        "dup/t",
        QoS::AtLeastOnce,
        false,
        "still here",
    )
    .await;
    assert_eq!(payload(&next_publish(&mut b_el).await), "still here");
    b.shutdown().await;
}

// 3. Keep-alive

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_keep_alive_timeout_sends_0x8d() {
    let b = common::start_broker().await;
    let mut s = raw_v5(&b, "v5-silent", 1).await;
    let t0 = Instant::now();
    let got = raw::read_packet_within(&mut s, Duration::from_secs(3)).await;
    let elapsed = t0.elapsed();
    assert_eq!(
        got,
        Some((0xE0, vec![0x8D, 0x00])),
        "DISCONNECT keep alive timeout"
    );
    assert!(
        elapsed >= Duration::from_millis(1200),
        "closed too early: {elapsed:?}"
    );
    raw::expect_closed(&mut s).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_pings_keep_the_connection_alive() {
    let b = common::start_broker().await;
    // rumqttc's v5 client refuses keep alives under 5 s (it panics), so a raw
    // 5.0 client with keep alive 1 s pings every 500 ms instead.
    let mut s = raw_v5(&b, "v5-pinger", 1).await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        raw::send(&mut s, &[0xC0, 0x00]).await;
        let pong = raw::read_packet(&mut s).await;
        assert_eq!(
            pong,
            Some((0xD0, vec![])),
            "PINGRESP after {:?}",
            t0.elapsed()
        );
    }
    // Still connected: a SUBSCRIBE is answered.
    let mut sub = vec![0x00, 0x01, 0x00];
    sub.extend_from_slice(&raw::str("ping/t"));
    sub.push(0x01);
    raw::send(&mut s, &raw::packet(0x82, &sub)).await;
    assert_eq!(
        raw::expect_packet(&mut s, 9).await,
        [0x00, 0x01, 0x00, 0x01]
    );
    b.shutdown().await;
}

// 4. QoS 0/1/2 both ways, QoS downgrade

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_qos_levels_both_directions() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v5-qos-sub").await;
    let (pc, mut pel) = connect(&b, "v5-qos-pub").await;
    assert_eq!(
        subscribe(&sc, &mut sel, "qos/t", QoS::ExactlyOnce).await,
        SubscribeReasonCode::Success(QoS::ExactlyOnce)
    );

    publish(&pc, &mut pel, "qos/t", QoS::AtMostOnce, false, "q0").await;
    let p = next_publish(&mut sel).await;
    assert_eq!((payload(&p).as_str(), p.qos), ("q0", QoS::AtMostOnce));

    publish(&pc, &mut pel, "qos/t", QoS::AtLeastOnce, false, "q1").await;
    let p = next_publish(&mut sel).await;
    assert_eq!((payload(&p).as_str(), p.qos), ("q1", QoS::AtLeastOnce));

    pc.publish("qos/t", QoS::ExactlyOnce, false, "q2")
        .await
        .unwrap();
    let mut seen = Vec::new();
    wait_for(&mut pel, "PUBCOMP", |ev| match ev {
        Event::Incoming(Packet::PubRec(_)) => {
            seen.push("PUBREC");
            None
        }
        Event::Outgoing(Outgoing::PubRel(_)) => {
            seen.push("PUBREL");
            None
        }
        Event::Incoming(Packet::PubComp(_)) => {
            seen.push("PUBCOMP");
            Some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(seen, ["PUBREC", "PUBREL", "PUBCOMP"]);

    let p = next_publish(&mut sel).await;
    assert_eq!((payload(&p).as_str(), p.qos), ("q2", QoS::ExactlyOnce));
    let pkid = p.pkid;
    let rel = wait_for(&mut sel, "PUBREL", |ev| match ev {
        Event::Incoming(Packet::PubRel(r)) => Some(r.pkid),
        _ => None,
    })
    .await;
    assert_eq!(rel, pkid);
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_subscription_qos_downgrades_delivery() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v5-down-sub").await;
    let (pc, mut pel) = connect(&b, "v5-down-pub").await;
    assert_eq!(
        subscribe(&sc, &mut sel, "down/0", QoS::AtMostOnce).await,
        SubscribeReasonCode::Success(QoS::AtMostOnce)
    );
    assert_eq!(
        subscribe(&sc, &mut sel, "down/1", QoS::AtLeastOnce).await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    publish(&pc, &mut pel, "down/0", QoS::ExactlyOnce, false, "a").await;
    let p = next_publish(&mut sel).await;
    assert_eq!((topic(&p).as_str(), p.qos), ("down/0", QoS::AtMostOnce));
    publish(&pc, &mut pel, "down/1", QoS::ExactlyOnce, false, "b").await;
    let p = next_publish(&mut sel).await;
    assert_eq!((topic(&p).as_str(), p.qos), ("down/1", QoS::AtLeastOnce));
    b.shutdown().await;
}

// 5. DUP retransmission of an unreleased QoS 2 message: delivered once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_qos2_dup_is_delivered_exactly_once() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v5-once-sub").await;
    subscribe(&sc, &mut sel, "once/t", QoS::ExactlyOnce).await;

    let mut s = raw_v5(&b, "v5-once-raw", 60).await;
    let mut body = raw::str("once/t");
    body.extend_from_slice(&[0x00, 0x07, 0x00]); // packet id 7, no properties
    body.extend_from_slice(b"only once");
    let ok_for_7 = |body: Vec<u8>| {
        assert_eq!(body[..2], [0x00, 0x07], "{body:x?}");
        assert!(body.len() == 2 || body[2] == 0x00, "success: {body:x?}");
    };
    raw::send(&mut s, &raw::packet(0x34, &body)).await;
    ok_for_7(raw::expect_packet(&mut s, 5).await); // PUBREC
    raw::send(&mut s, &raw::packet(0x3C, &body)).await; // DUP
    ok_for_7(raw::expect_packet(&mut s, 5).await); // PUBREC again
    raw::send(&mut s, &raw::packet(0x62, &[0x00, 0x07])).await; // PUBREL
    ok_for_7(raw::expect_packet(&mut s, 7).await); // PUBCOMP

    let p = next_publish(&mut sel).await;
    assert_eq!(payload(&p), "only once");
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    b.shutdown().await;
}

// 6. In-flight window (Receive Maximum)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_receive_maximum_limits_inflight() {
    let b = common::start_broker_with(|cfg| cfg.mqtt.max_inflight = Some(7)).await;
    let mut o = options(b.mqtt_addr, "v5-window");
    o.set_receive_maximum(Some(2));
    o.set_manual_acks(true);
    let (sc, mut sel, ack) = start(o).await;
    assert_eq!(ack.properties.and_then(|p| p.receive_max), Some(7));
    subscribe(&sc, &mut sel, "win/t", QoS::AtLeastOnce).await;
    let (pc, mut pel) = connect(&b, "v5-window-pub").await;
    for i in 0..5 {
        publish(
            &pc,
            &mut pel,
            "win/t",
            QoS::AtLeastOnce,
            false,
            format!("w{i}"),
        )
        .await;
    }
    let mut got = vec![next_publish(&mut sel).await, next_publish(&mut sel).await];
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    for i in 0..3 {
        sc.ack(&got[i]).await.unwrap();
        let p = next_publish(&mut sel).await;
        got.push(p);
        if i < 2 {
            expect_no_publish(&mut sel, Duration::from_millis(200)).await;
        }
    }
    let payloads: Vec<String> = got.iter().map(payload).collect();
    assert_eq!(payloads, ["w0", "w1", "w2", "w3", "w4"]);
    for p in &got[3..] {
        sc.ack(p).await.unwrap();
    }
    expect_no_publish(&mut sel, Duration::from_millis(200)).await;
    b.shutdown().await;
}

// 7. SUBSCRIBE / UNSUBSCRIBE

/// Subscribes `filter`, publishes every topic in `topics` then an end marker,
/// and returns the topics the subscriber got; unsubscribes again.
async fn matched_topics(
    (sc, sel): (&AsyncClient, &mut EventLoop),
    (pc, pel): (&AsyncClient, &mut EventLoop),
    filter: &str,
    topics: &[&str],
) -> BTreeSet<String> {
    assert_eq!(
        subscribe(sc, sel, filter, QoS::AtLeastOnce).await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce),
        "{filter}"
    );
    for t in topics {
        publish(pc, pel, t, QoS::AtLeastOnce, false, "x").await;
    }
    publish(pc, pel, "zz/end", QoS::AtLeastOnce, false, "end").await;
    let mut got = BTreeSet::new();
    loop {
        let p = next_publish(sel).await;
        if topic(&p) == "zz/end" && p.payload.as_ref() == b"end" {
            break;
        }
        assert!(
            got.insert(topic(&p)),
            "duplicate {} for {filter}",
            topic(&p)
        );
    }
    unsubscribe(sc, sel, filter).await;
    got
}

fn set(topics: &[&str]) -> BTreeSet<String> {
    topics.iter().map(|t| t.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_wildcards_match_per_spec() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v5-wild-sub").await;
    let (pc, mut pel) = connect(&b, "v5-wild-pub").await;
    subscribe(&sc, &mut sel, "zz/end", QoS::AtLeastOnce).await;
    let topics = [
        "a",
        "a/b",
        "a/b/c",
        "a//c",
        "a/b/c/d",
        "b/b/c",
        "ab",
        "foo/bar",
        "/bar",
        "foo/bar/baz",
        "$foo/bar",
        "$foo",
        "$SYS/x",
    ];
    let cases: [(&str, &[&str]); 6] = [
        ("a/+/c", &["a/b/c", "a//c"]),
        ("a/#", &["a", "a/b", "a/b/c", "a//c", "a/b/c/d"]),
        ("+/bar", &["foo/bar", "/bar"]),
        ("+", &["a", "ab"]),
        (
            "#",
            &[
                "a",
                "a/b",
                "a/b/c",
                "a//c",
                "a/b/c/d",
                "b/b/c",
                "ab",
                "foo/bar",
                "/bar",
                "foo/bar/baz",
            ],
        ),
        ("$foo/#", &["$foo/bar", "$foo"]),
    ];
    for (filter, expected) in cases {
        let got = matched_topics((&sc, &mut sel), (&pc, &mut pel), filter, &topics).await;
        assert_eq!(got, set(expected), "filter {filter}");
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_unsubscribe_stops_delivery() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v5-unsub-sub").await;
    let (pc, mut pel) = connect(&b, "v5-unsub-pub").await;
    subscribe(&sc, &mut sel, "unsub/t", QoS::AtLeastOnce).await;
    publish(&pc, &mut pel, "unsub/t", QoS::AtLeastOnce, false, "before").await;
    assert_eq!(payload(&next_publish(&mut sel).await), "before");
    unsubscribe(&sc, &mut sel, "unsub/t").await;
    publish(&pc, &mut pel, "unsub/t", QoS::AtLeastOnce, false, "after").await;
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_invalid_filter_gets_0x8f() {
    // rumqttc refuses to send `a/#/b`, so the SUBSCRIBE is written by hand.
    let b = common::start_broker().await;
    let mut s = raw_v5(&b, "v5-badfilter", 60).await;
    let mut body = vec![0x00, 0x01, 0x00]; // packet id 1, no properties
    body.extend_from_slice(&raw::str("a/#/b"));
    body.push(0x01);
    body.extend_from_slice(&raw::str("ok/+"));
    body.push(0x01);
    raw::send(&mut s, &raw::packet(0x82, &body)).await;
    assert_eq!(
        raw::expect_packet(&mut s, 9).await,
        [0x00, 0x01, 0x00, 0x8F, 0x01],
        "SUBACK: 0x8F for a/#/b, QoS 1 for ok/+"
    );
    raw::send(&mut s, &[0xC0, 0x00]).await;
    assert!(raw::expect_packet(&mut s, 13).await.is_empty());
    b.shutdown().await;
}

// 8. Shared subscriptions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_shared_subscription_round_robin() {
    let b = common::start_broker().await;
    let mut members = Vec::new();
    for i in 0..3 {
        let (c, mut el) = connect(&b, &format!("v5-share-{i}")).await;
        assert_eq!(
            subscribe(&c, &mut el, "$share/g/jobs/+", QoS::AtLeastOnce).await,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
        members.push((c, el));
    }
    let (nc, mut nel) = connect(&b, "v5-share-normal").await;
    subscribe(&nc, &mut nel, "jobs/+", QoS::AtLeastOnce).await;
    let (pc, mut pel) = connect(&b, "v5-share-pub").await;
    for i in 0..9 {
        publish(
            &pc,
            &mut pel,
            "jobs/x",
            QoS::AtLeastOnce,
            false,
            format!("job{i}"),
        )
        .await;
    }
    let mut all = BTreeSet::new();
    for (_, el) in members.iter_mut() {
        for _ in 0..3 {
            let p = next_publish(el).await;
            assert_eq!(topic(&p), "jobs/x");
            assert!(all.insert(payload(&p)), "duplicate {}", payload(&p));
        }
        expect_no_publish(el, Duration::from_millis(300)).await;
    }
    assert_eq!(all, (0..9).map(|i| format!("job{i}")).collect());
    for i in 0..9 {
        assert_eq!(payload(&next_publish(&mut nel).await), format!("job{i}"));
    }
    b.shutdown().await;
}

// 9. Subscription options

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_no_local() {
    let b = common::start_broker().await;
    let (c, mut el) = connect(&b, "v5-nolocal").await;
    let mut f = Filter::new("nl/t", QoS::AtLeastOnce);
    f.nolocal = true;
    subscribe_filter(&c, &mut el, f).await;
    // Control: without No Local the client does get its own messages.
    subscribe(&c, &mut el, "nl/control", QoS::AtLeastOnce).await;
    publish(
        &c,
        &mut el,
        "nl/control",
        QoS::AtLeastOnce,
        false,
        "own control",
    )
    .await;
    assert_eq!(payload(&next_publish(&mut el).await), "own control");

    publish(&c, &mut el, "nl/t", QoS::AtLeastOnce, false, "own").await;
    expect_no_publish(&mut el, Duration::from_millis(300)).await;
    let (oc, mut oel) = connect(&b, "v5-nolocal-other").await;
    publish(&oc, &mut oel, "nl/t", QoS::AtLeastOnce, false, "other").await;
    assert_eq!(payload(&next_publish(&mut el).await), "other");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_retain_as_published() {
    let b = common::start_broker().await;
    let (kc, mut kel) = connect(&b, "v5-rap-keep").await;
    let mut f = Filter::new("rap/t", QoS::AtLeastOnce);
    f.preserve_retain = true;
    subscribe_filter(&kc, &mut kel, f).await;
    let (cc, mut cel) = connect(&b, "v5-rap-clear").await;
    subscribe(&cc, &mut cel, "rap/t", QoS::AtLeastOnce).await;
    let (pc, mut pel) = connect(&b, "v5-rap-pub").await;

    publish(&pc, &mut pel, "rap/t", QoS::AtLeastOnce, true, "retained").await;
    let p = next_publish(&mut kel).await;
    assert_eq!((payload(&p).as_str(), p.retain), ("retained", true));
    let p = next_publish(&mut cel).await;
    assert_eq!((payload(&p).as_str(), p.retain), ("retained", false));

    publish(&pc, &mut pel, "rap/t", QoS::AtLeastOnce, false, "plain").await;
    let p = next_publish(&mut kel).await;
    assert_eq!((payload(&p).as_str(), p.retain), ("plain", false));
    let p = next_publish(&mut cel).await;
    assert_eq!((payload(&p).as_str(), p.retain), ("plain", false));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_retain_handling() {
    let b = common::start_broker().await;
    let (pc, mut pel) = connect(&b, "v5-rh-pub").await;
    publish(&pc, &mut pel, "rh/t", QoS::AtLeastOnce, true, "kept").await;
    let filter = |rule| {
        let mut f = Filter::new("rh/t", QoS::AtLeastOnce);
        f.retain_forward_rule = rule;
        f
    };

    // 0: on every subscribe.
    let (c0, mut el0) = connect(&b, "v5-rh-0").await;
    for _ in 0..2 {
        subscribe_filter(&c0, &mut el0, filter(RetainForwardRule::OnEverySubscribe)).await;
        let p = next_publish(&mut el0).await;
        assert_eq!((payload(&p).as_str(), p.retain), ("kept", true));
    }

    // 1: only when the subscription is new.
    let (c1, mut el1) = connect(&b, "v5-rh-1").await;
    subscribe_filter(&c1, &mut el1, filter(RetainForwardRule::OnNewSubscribe)).await;
    let p = next_publish(&mut el1).await;
    assert_eq!((payload(&p).as_str(), p.retain), ("kept", true));
    subscribe_filter(&c1, &mut el1, filter(RetainForwardRule::OnNewSubscribe)).await;
    expect_no_publish(&mut el1, Duration::from_millis(300)).await;

    // 2: never.
    let (c2, mut el2) = connect(&b, "v5-rh-2").await;
    subscribe_filter(&c2, &mut el2, filter(RetainForwardRule::Never)).await;
    expect_no_publish(&mut el2, Duration::from_millis(300)).await;
    // ... but the subscription itself works.
    publish(&pc, &mut pel, "rh/t", QoS::AtLeastOnce, false, "live").await;
    assert_eq!(payload(&next_publish(&mut el2).await), "live");
    b.shutdown().await;
}

// 10. Retained messages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_retained_set_replace_clear() {
    let b = common::start_broker().await;
    let (pc, mut pel) = connect(&b, "v5-ret-pub").await;
    publish(&pc, &mut pel, "ret/t", QoS::AtLeastOnce, true, "v1").await;
    publish(&pc, &mut pel, "ret/t", QoS::AtLeastOnce, true, "v2").await;

    let (sc, mut sel) = connect(&b, "v5-ret-new").await;
    subscribe(&sc, &mut sel, "ret/t", QoS::ExactlyOnce).await;
    let p = next_publish(&mut sel).await;
    assert_eq!(
        (payload(&p).as_str(), p.retain, p.qos),
        ("v2", true, QoS::AtLeastOnce)
    );
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;

    publish(&pc, &mut pel, "ret2/a", QoS::AtMostOnce, true, "A").await;
    publish(&pc, &mut pel, "ret2/b/c", QoS::AtLeastOnce, true, "BC").await;
    let (hc, mut hel) = connect(&b, "v5-ret-hash").await;
    subscribe(&hc, &mut hel, "#", QoS::AtLeastOnce).await;
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        let p = next_publish(&mut hel).await;
        assert!(p.retain, "{p:?}");
        got.insert((topic(&p), payload(&p)));
    }
    let expected: BTreeSet<(String, String)> =
        [("ret/t", "v2"), ("ret2/a", "A"), ("ret2/b/c", "BC")]
            .iter()
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect();
    assert_eq!(got, expected);
    expect_no_publish(&mut hel, Duration::from_millis(300)).await;

    publish(&pc, &mut pel, "ret/t", QoS::AtLeastOnce, true, Bytes::new()).await;
    // The clearing message itself still reaches existing subscribers.
    assert_eq!(payload(&next_publish(&mut sel).await), "");
    let (cc, mut cel) = connect(&b, "v5-ret-cleared").await;
    subscribe(&cc, &mut cel, "ret/#", QoS::AtLeastOnce).await;
    expect_no_publish(&mut cel, Duration::from_millis(300)).await;
    b.shutdown().await;
}

// 11. Last will

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_will_on_abnormal_disconnect_only() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v5-will-watch").await;
    let mut f = Filter::new("will/#", QoS::ExactlyOnce);
    f.preserve_retain = true;
    subscribe_filter(&sc, &mut sel, f).await;

    let mut o = options(b.mqtt_addr, "v5-will-1");
    o.set_last_will(LastWill::new(
        "will/one",
        "gone",
        QoS::AtLeastOnce,
        true,
        None,
    ));
    let (c1, el1, _) = start(o).await;
    drop(el1);
    drop(c1);
    let p = next_publish(&mut sel).await;
    assert_eq!(
        (topic(&p).as_str(), payload(&p).as_str(), p.qos, p.retain),
        ("will/one", "gone", QoS::AtLeastOnce, true)
    );

    let mut o = options(b.mqtt_addr, "v5-will-2");
    o.set_last_will(LastWill::new(
        "will/two",
        "gone",
        QoS::AtLeastOnce,
        true,
        None,
    ));
    let (c2, el2, _) = start(o).await;
    disconnect(c2, el2).await;
    expect_no_publish(&mut sel, Duration::from_millis(500)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_will_delay_and_cancel_on_reconnect() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v5-wd-watch").await;
    subscribe(&sc, &mut sel, "wd/#", QoS::AtLeastOnce).await;
    let delayed = |id: &str, will_topic: &str| {
        let mut o = options(b.mqtt_addr, id);
        o.set_session_expiry_interval(Some(10));
        o.set_last_will(LastWill::new(
            will_topic,
            "late",
            QoS::AtLeastOnce,
            false,
            Some(will_properties(Some(2))),
        ));
        o
    };
    let (c1, el1, _) = start(delayed("v5-wd-1", "wd/one")).await;
    let (c2, el2, _) = start(delayed("v5-wd-2", "wd/two")).await;
    let t0 = Instant::now();
    drop((c1, el1, c2, el2));

    // wd-2 comes back within the delay: its will is cancelled.
    let mut o = delayed("v5-wd-2", "wd/two");
    o.set_clean_start(false);
    let (_c2, _el2, ack) = start(o).await;
    assert!(ack.session_present);

    let p = next_publish(&mut sel).await;
    let elapsed = t0.elapsed();
    assert_eq!(topic(&p), "wd/one");
    assert!(
        elapsed >= Duration::from_millis(1800),
        "will sent after {elapsed:?}, before its 2 s delay"
    );
    // Well past wd-2's delay: still nothing.
    expect_no_publish(&mut sel, Duration::from_millis(1000)).await;
    b.shutdown().await;
}

// 12. Sessions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_session_expiry_interval() {
    let b = common::start_broker().await;
    let (pc, mut pel) = connect(&b, "v5-se-pub").await;
    let (sc, mut sel, present) = connect_session(&b, "v5-se-short", true, 1).await;
    assert!(!present);
    subscribe(&sc, &mut sel, "se/t", QoS::AtLeastOnce).await;
    disconnect(sc, sel).await;
    let (lc, mut lel, _) = connect_session(&b, "v5-se-long", true, 60).await;
    subscribe(&lc, &mut lel, "se/t", QoS::AtLeastOnce).await;
    disconnect(lc, lel).await;

    publish(&pc, &mut pel, "se/t", QoS::AtLeastOnce, false, "m0").await;
    publish(&pc, &mut pel, "se/t", QoS::AtMostOnce, false, "m1-q0").await;
    publish(&pc, &mut pel, "se/t", QoS::AtLeastOnce, false, "m2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (_sc, mut sel, present) = connect_session(&b, "v5-se-short", false, 1).await;
    assert!(!present, "a 1 s session must be gone after 2 s");
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;

    let (_lc, mut lel, present) = connect_session(&b, "v5-se-long", false, 60).await;
    assert!(present);
    assert_eq!(payload(&next_publish(&mut lel).await), "m0");
    assert_eq!(payload(&next_publish(&mut lel).await), "m2");
    expect_no_publish(&mut lel, Duration::from_millis(300)).await;
    publish(&pc, &mut pel, "se/t", QoS::AtLeastOnce, false, "live").await;
    assert_eq!(payload(&next_publish(&mut lel).await), "live");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_offline_queue_limit_drops_newest() {
    let b = common::start_broker_with(|cfg| cfg.mqtt.max_queued_messages = Some(5)).await;
    let (pc, mut pel) = connect(&b, "v5-q-pub").await;
    let (sc, mut sel, _) = connect_session(&b, "v5-q", true, 60).await;
    subscribe(&sc, &mut sel, "q/t", QoS::AtLeastOnce).await;
    disconnect(sc, sel).await;
    for i in 0..8 {
        publish(
            &pc,
            &mut pel,
            "q/t",
            QoS::AtLeastOnce,
            false,
            format!("m{i}"),
        )
        .await;
    }
    let (_sc, mut sel, present) = connect_session(&b, "v5-q", false, 60).await;
    assert!(present);
    for i in 0..5 {
        assert_eq!(payload(&next_publish(&mut sel).await), format!("m{i}"));
    }
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    let text = b.metrics.encode();
    assert!(
        text.contains("broker_messages_dropped_total{protocol=\"mqtt\",kind=\"queue_full\"} 3"),
        "{text}"
    );
    b.shutdown().await;
}

// 13. Topic aliases

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_topic_alias_from_broker() {
    let b = common::start_broker().await;
    let mut o = options(b.mqtt_addr, "v5-ta-sub");
    o.set_topic_alias_max(Some(10));
    let (ac, mut ael, _) = start(o).await;
    subscribe(&ac, &mut ael, "ta/t", QoS::AtLeastOnce).await;
    let (nc, mut nel) = connect(&b, "v5-ta-plain").await;
    subscribe(&nc, &mut nel, "ta/t", QoS::AtLeastOnce).await;
    // A raw client shows what is on the wire.
    let mut s = raw::tcp(b.mqtt_addr).await;
    let mut hello = raw::str("MQTT");
    hello.extend_from_slice(&[5, 0x02, 0x00, 0x3C, 0x03, 0x22, 0x00, 0x0A]); // topic alias max 10
    hello.extend_from_slice(&raw::str("v5-ta-raw"));
    raw::send(&mut s, &raw::packet(0x10, &hello)).await;
    assert_eq!(raw::expect_packet(&mut s, 2).await[..2], [0x00, 0x00]);
    let mut sub = vec![0x00, 0x01, 0x00];
    sub.extend_from_slice(&raw::str("ta/t"));
    sub.push(0x00);
    raw::send(&mut s, &raw::packet(0x82, &sub)).await;
    raw::expect_packet(&mut s, 9).await;

    let (pc, mut pel) = connect(&b, "v5-ta-pub").await;
    publish(&pc, &mut pel, "ta/t", QoS::AtLeastOnce, false, "one").await;
    publish(&pc, &mut pel, "ta/t", QoS::AtLeastOnce, false, "two").await;

    let alias = |p: &Publish| p.properties.as_ref().and_then(|pr| pr.topic_alias);
    let p1 = next_publish(&mut ael).await;
    let p2 = next_publish(&mut ael).await;
    assert_eq!(
        (topic(&p1).as_str(), payload(&p1).as_str()),
        ("ta/t", "one")
    );
    assert!(alias(&p1).is_some());
    assert_eq!(
        alias(&p2),
        alias(&p1),
        "the second message reuses the alias"
    );
    // rumqttc 0.25 records the event before resolving the alias, so the event
    // may carry the empty wire topic; resolve it the way the client does.
    let resolved = match topic(&p2) {
        t if t.is_empty() => topic(&p1),
        t => t,
    };
    assert_eq!((resolved.as_str(), payload(&p2).as_str()), ("ta/t", "two"));
    // A client that allows no aliases gets none.
    for expected in ["one", "two"] {
        let p = next_publish(&mut nel).await;
        assert_eq!(
            (topic(&p).as_str(), payload(&p).as_str()),
            ("ta/t", expected)
        );
        assert_eq!(alias(&p), None);
    }
    // On the wire: topic then alias only (empty topic name) the second time.
    let first = raw::expect_packet(&mut s, 3).await;
    assert_eq!(first[..6], *b"\x00\x04ta/t");
    let second = raw::expect_packet(&mut s, 3).await;
    assert_eq!(second[..2], [0x00, 0x00], "empty topic: {second:x?}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_topic_alias_from_client() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v5-tb-sub").await;
    subscribe(&sc, &mut sel, "tb/t", QoS::AtLeastOnce).await;
    let (pc, mut pel, ack) = start(options(b.mqtt_addr, "v5-tb-pub")).await;
    assert_eq!(ack.properties.and_then(|p| p.topic_alias_max), Some(10));
    let with_alias = || PublishProperties {
        topic_alias: Some(1),
        ..Default::default()
    };
    publish_with(
        &pc,
        &mut pel,
        "tb/t",
        QoS::AtLeastOnce,
        "first",
        with_alias(),
    )
    .await;
    publish_with(&pc, &mut pel, "", QoS::AtLeastOnce, "second", with_alias()).await;
    for expected in ["first", "second"] {
        let p = next_publish(&mut sel).await;
        assert_eq!(
            (topic(&p).as_str(), payload(&p).as_str()),
            ("tb/t", expected)
        );
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_topic_alias_above_maximum_is_0x94() {
    // rumqttc refuses to exceed the broker's maximum, so the PUBLISH is raw.
    let b = common::start_broker().await;
    let mut s = raw_v5(&b, "v5-tc-raw", 60).await;
    let mut body = raw::str("tc/t");
    body.extend_from_slice(&[0x03, 0x23, 0x00, 0x0B]); // topic alias 11 > 10
    body.extend_from_slice(b"x");
    raw::send(&mut s, &raw::packet(0x30, &body)).await;
    assert_eq!(raw_expect_disconnect(&mut s).await, 0x94);
    raw::expect_closed(&mut s).await;
    b.shutdown().await;
}

// 14. Message expiry and pass-through properties

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_message_expiry_interval() {
    let b = common::start_broker().await;
    let (pc, mut pel) = connect(&b, "v5-mx-pub").await;
    let (sc, mut sel, _) = connect_session(&b, "v5-mx", true, 60).await;
    subscribe(&sc, &mut sel, "mx/t", QoS::AtLeastOnce).await;
    disconnect(sc, sel).await;
    let expiring = |secs| PublishProperties {
        message_expiry_interval: Some(secs),
        ..Default::default()
    };
    publish_with(
        &pc,
        &mut pel,
        "mx/t",
        QoS::AtLeastOnce,
        "short",
        expiring(1),
    )
    .await;
    publish_with(
        &pc,
        &mut pel,
        "mx/t",
        QoS::AtLeastOnce,
        "long",
        expiring(60),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (_sc, mut sel, present) = connect_session(&b, "v5-mx", false, 60).await;
    assert!(present);
    let p = next_publish(&mut sel).await;
    assert_eq!(payload(&p), "long");
    let left = p.properties.and_then(|pr| pr.message_expiry_interval);
    let left = left.expect("remaining expiry forwarded");
    assert!((50..=58).contains(&left), "remaining expiry {left} s");
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    let text = b.metrics.encode();
    assert!(
        text.contains("broker_messages_dropped_total{protocol=\"mqtt\",kind=\"expired\"} 1"),
        "{text}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_publish_properties_pass_through() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v5-props-sub").await;
    subscribe(&sc, &mut sel, "props/t", QoS::AtLeastOnce).await;
    let (pc, mut pel) = connect(&b, "v5-props-pub").await;
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            ("k".into(), "v1".into()),
            ("k".into(), "v2".into()),
            ("other".into(), "x".into()),
        ],
        ..Default::default()
    };
    publish_with(
        &pc,
        &mut pel,
        "props/t",
        QoS::AtLeastOnce,
        "{}",
        sent.clone(),
    )
    .await;
    let p = next_publish(&mut sel).await;
    let got = p.properties.expect("properties forwarded");
    assert_eq!(got, sent);
    b.shutdown().await;
}

// 15. Maximum Packet Size

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_client_maximum_packet_size_is_respected() {
    let b = common::start_broker().await;
    let mut o = options(b.mqtt_addr, "v5-mps-small");
    o.set_max_packet_size(Some(200));
    let (sc, mut sel, _) = start(o).await;
    subscribe(&sc, &mut sel, "mps/t", QoS::AtLeastOnce).await;
    let (pc, mut pel) = connect(&b, "v5-mps-pub").await;
    publish(
        &pc,
        &mut pel,
        "mps/t",
        QoS::AtLeastOnce,
        false,
        vec![b'L'; 1000],
    )
    .await;
    publish(
        &pc,
        &mut pel,
        "mps/t",
        QoS::AtLeastOnce,
        false,
        vec![b's'; 50],
    )
    .await;
    let p = next_publish(&mut sel).await;
    assert_eq!(p.payload.as_ref(), &[b's'; 50][..]);
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    let text = b.metrics.encode();
    assert!(
        text.contains(
            "broker_messages_dropped_total{protocol=\"mqtt\",kind=\"too_large_for_client\"} 1"
        ),
        "{text}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_dropped_oversized_message_does_not_set_a_topic_alias() {
    let b = common::start_broker().await;
    let mut o = options(b.mqtt_addr, "v5-mps-alias");
    o.set_max_packet_size(Some(200));
    o.set_topic_alias_max(Some(10));
    let (sc, mut sel, _) = start(o).await;
    subscribe(&sc, &mut sel, "mps/alias", QoS::AtLeastOnce).await;
    let (pc, mut pel) = connect(&b, "v5-mps-alias-pub").await;
    publish(
        &pc,
        &mut pel,
        "mps/alias",
        QoS::AtLeastOnce,
        false,
        vec![b'L'; 1000],
    )
    .await;
    publish(
        &pc,
        &mut pel,
        "mps/alias",
        QoS::AtLeastOnce,
        false,
        vec![b's'; 50],
    )
    .await;
    // The dropped message must not have used up the alias: the first message the
    // client sees on the topic carries the topic name along with the alias.
    let p = next_publish(&mut sel).await;
    assert_eq!(topic(&p), "mps/alias");
    assert_eq!(p.properties.as_ref().and_then(|pr| pr.topic_alias), Some(1));
    assert_eq!(p.payload.as_ref(), &[b's'; 50][..]);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_packet_above_broker_maximum_is_0x95() {
    let b = common::start_broker_with(|cfg| cfg.mqtt.max_packet_size = Some(1024)).await;
    let (oc, mut oel, ack) = start(options(b.mqtt_addr, "v5-mps-bystander")).await;
    assert_eq!(ack.properties.and_then(|p| p.max_packet_size), Some(1024));
    subscribe(&oc, &mut oel, "big/#", QoS::AtLeastOnce).await;

    // rumqttc enforces the announced maximum itself, so the big PUBLISH is raw.
    let mut s = raw_v5(&b, "v5-mps-raw", 60).await;
    let mut body = raw::str("big/t");
    body.push(0x00); // no properties
    body.extend_from_slice(&[b'x'; 2000]);
    raw::send(&mut s, &raw::packet(0x30, &body)).await;
    assert_eq!(raw_expect_disconnect(&mut s).await, 0x95);
    raw::expect_closed(&mut s).await;

    // Nothing of it was routed, and the other client carries on.
    publish(&oc, &mut oel, "big/ok", QoS::AtLeastOnce, false, "fine").await;
    let p = next_publish(&mut oel).await;
    assert_eq!(
        (topic(&p).as_str(), payload(&p).as_str()),
        ("big/ok", "fine")
    );
    b.shutdown().await;
}

// 16. Connection limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_max_connections() {
    let b = common::start_broker_with(|cfg| cfg.server.max_connections = Some(2)).await;
    let (c1, mut el1) = connect(&b, "v5-lim-1").await;
    let (_c2, _el2) = connect(&b, "v5-lim-2").await;
    assert_eq!(
        refused(options(b.mqtt_addr, "v5-lim-3")).await,
        ConnectReturnCode::QuotaExceeded
    );
    let text = b.metrics.encode();
    assert!(
        text.contains(
            "broker_connections_refused_total{protocol=\"mqtt\",kind=\"max_connections\"} 1"
        ),
        "{text}"
    );
    c1.disconnect().await.unwrap();
    expect_connection_closed(&mut el1).await;
    drop(el1);
    common::wait_for_free_permits(&b, 1).await;
    let (_c4, _el4) = connect(&b, "v5-lim-4").await;
    b.shutdown().await;
}

// 17. Shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_shutdown_sends_0x8b_and_wills() {
    let b = common::start_broker().await;
    let mut o = options(b.mqtt_addr, "v5-sd");
    o.set_last_will(LastWill::new(
        "will/sd",
        "bye",
        QoS::AtLeastOnce,
        true,
        None,
    ));
    let (_c, mut el, _) = start(o).await;
    let mut s = raw_v5(&b, "v5-sd-raw", 60).await;
    let metrics = b.metrics.clone();
    assert_eq!(metrics.retained_messages.get(), 0);
    let stopping = tokio::spawn(b.shutdown());
    assert_eq!(raw_expect_disconnect(&mut s).await, 0x8B);
    raw::expect_closed(&mut s).await;
    expect_server_disconnect(&mut el, DisconnectReasonCode::ServerShuttingDown).await;
    stopping.await.unwrap();
    // The retained will is the observable trace once every client is gone.
    assert_eq!(metrics.retained_messages.get(), 1);
}

// 18. WebSocket

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_websocket_and_tcp_interoperate() {
    let b = common::start_broker().await;
    let ws = b.ws_addr.expect("WebSocket listener on");
    let mut o = MqttOptions::new(
        "v5-ws",
        format!("ws://127.0.0.1:{}/mqtt", ws.port()),
        ws.port(),
    );
    o.set_transport(Transport::Ws);
    let (wc, mut wel, ack) = start(o).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let (tc, mut tel) = connect(&b, "v5-tcp").await;
    subscribe(&wc, &mut wel, "ws/in", QoS::AtLeastOnce).await;
    subscribe(&tc, &mut tel, "ws/out", QoS::AtLeastOnce).await;

    publish(&wc, &mut wel, "ws/out", QoS::AtLeastOnce, false, "from ws").await;
    let p = next_publish(&mut tel).await;
    assert_eq!(
        (topic(&p).as_str(), payload(&p).as_str()),
        ("ws/out", "from ws")
    );

    publish(&tc, &mut tel, "ws/in", QoS::ExactlyOnce, false, "from tcp").await;
    let p = next_publish(&mut wel).await;
    assert_eq!(
        (topic(&p).as_str(), payload(&p).as_str(), p.qos),
        ("ws/in", "from tcp", QoS::AtLeastOnce)
    );
    b.shutdown().await;
}
