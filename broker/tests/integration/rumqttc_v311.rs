//! MQTT 3.1.1 behaviour driven by the rumqttc client (and raw bytes where
//! rumqttc refuses to send what the test needs).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use broker::RunningBroker;
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill,
    MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeReasonCode, Transport,
};
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

/// The return code of a refused CONNECT.
async fn refused(opts: MqttOptions) -> ConnectReturnCode {
    let (_client, mut el) = AsyncClient::new(opts, 8);
    match timeout(WAIT, el.poll()).await.expect("CONNACK in time") {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

async fn connect(b: &RunningBroker, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
    let mut o = options(b.mqtt_addr, id);
    o.set_clean_session(clean);
    let (c, el, ack) = start(o).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    (c, el)
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

async fn subscribe(
    c: &AsyncClient,
    el: &mut EventLoop,
    filter: &str,
    qos: QoS,
) -> SubscribeReasonCode {
    c.subscribe(filter, qos).await.unwrap();
    wait_for(el, "SUBACK", |ev| match ev {
        Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes[0]),
        _ => None,
    })
    .await
}

async fn unsubscribe(c: &AsyncClient, el: &mut EventLoop, filter: &str) {
    c.unsubscribe(filter).await.unwrap();
    wait_for(el, "UNSUBACK", |ev| {
        matches!(ev, Event::Incoming(Packet::UnsubAck(_))).then_some(())
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
    payload: impl Into<Vec<u8>>,
) {
    c.publish(topic, qos, retain, payload).await.unwrap();
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

/// Polls until the connection fails (the broker closed it).
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

fn payload(p: &Publish) -> String {
    String::from_utf8(p.payload.to_vec()).unwrap()
}

// 1. CONNECT / CONNACK

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_connect_accepted() {
    let b = common::start_broker().await;
    let (_c, _el, ack) = start(options(b.mqtt_addr, "v311-hello")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(!ack.session_present);
    // An empty client id is fine with a clean session.
    let (_c2, _el2, ack) = start(options(b.mqtt_addr, "")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(b
        .metrics
        .encode()
        .contains("broker_connections_total{protocol=\"mqtt\"} 2"));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_empty_client_id_without_clean_session_is_rejected() {
    // rumqttc panics on this combination, so the CONNECT is written by hand.
    let b = common::start_broker().await;
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &raw::connect(4, "", false, 60)).await;
    let (first, body) = raw::read_packet(&mut s).await.expect("a CONNACK");
    assert_eq!((first, body.as_slice()), (0x20, &[0x00, 0x02][..]));
    raw::expect_closed(&mut s).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_credentials_are_checked() {
    let b = common::start_broker_with(|cfg| {
        cfg.mqtt.users.insert("alice".into(), "secret".into());
    })
    .await;
    let mut o = options(b.mqtt_addr, "v311-bad-pass");
    o.set_credentials("alice", "wrong");
    assert_eq!(refused(o).await, ConnectReturnCode::BadUserNamePassword);
    let mut o = options(b.mqtt_addr, "v311-no-such-user");
    o.set_credentials("mallory", "secret");
    assert_eq!(refused(o).await, ConnectReturnCode::BadUserNamePassword);
    let mut o = options(b.mqtt_addr, "v311-good-pass");
    o.set_credentials("alice", "secret");
    let (_c, _el, ack) = start(o).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(b.metrics.encode().contains(
        "broker_connections_refused_total{protocol=\"mqtt\",kind=\"bad_credentials\"} 2"
    ));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_anonymous_refused_when_not_allowed() {
    let b = common::start_broker_with(|cfg| {
        cfg.mqtt.allow_anonymous = false;
        cfg.mqtt.users.insert("alice".into(), "secret".into());
    })
    .await;
    let o = options(b.mqtt_addr, "v311-anon");
    assert_eq!(refused(o).await, ConnectReturnCode::NotAuthorized);
    let mut o = options(b.mqtt_addr, "v311-alice");
    o.set_credentials("alice", "secret");
    let (_c, _el, ack) = start(o).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    b.shutdown().await;
}

// 2. Client id takeover

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_client_id_takeover() {
    let b = common::start_broker().await;
    let (_a, mut a_el) = connect(&b, "dup", true).await;
    let (bc, mut b_el) = connect(&b, "dup", true).await;
    // A's connection is closed by the broker (3.1.1 has no server DISCONNECT).
    let err = expect_connection_closed(&mut a_el).await;
    assert!(
        !matches!(err, ConnectionError::ConnectionRefused(_)),
        "{err:?}"
    );
    drop(a_el); // never poll A again: it would reconnect and take the id back
    assert_eq!(
        subscribe(&bc, &mut b_el, "dup/t", QoS::AtLeastOnce).await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    publish(
        &bc,
        &mut b_el,
        "dup/t",
        QoS::AtLeastOnce,
        false,
        "still here",
    )
    .await;
    let p = next_publish(&mut b_el).await;
    assert_eq!(payload(&p), "still here");
    b.shutdown().await;
}

// 3. Keep-alive

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_keep_alive_timeout_closes_silent_client() {
    let b = common::start_broker().await;
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &raw::connect(4, "v311-silent", true, 1)).await;
    let (first, body) = raw::read_packet(&mut s).await.expect("a CONNACK");
    assert_eq!((first, body.as_slice()), (0x20, &[0x00, 0x00][..]));
    let t0 = Instant::now();
    let closed = raw::read_packet_within(&mut s, Duration::from_secs(3)).await;
    let elapsed = t0.elapsed();
    assert!(closed.is_none(), "3.1.1 gets no DISCONNECT: {closed:x?}");
    assert!(
        elapsed >= Duration::from_millis(1200),
        "closed too early: {elapsed:?}"
    );
    assert!(b
        .metrics
        .encode()
        .contains("broker_protocol_errors_total{protocol=\"mqtt\",kind=\"keep_alive_timeout\"} 1"));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_pings_keep_the_connection_alive() {
    let b = common::start_broker().await;
    let mut o = options(b.mqtt_addr, "v311-pinger");
    o.set_keep_alive(Duration::from_secs(1));
    let (c, mut el, _) = start(o).await;
    let until = Instant::now() + Duration::from_secs(3);
    let mut pongs = 0;
    while let Ok(ev) = tokio::time::timeout_at(until.into(), el.poll()).await {
        match ev {
            Ok(Event::Incoming(Packet::PingResp)) => pongs += 1,
            Ok(_) => {}
            Err(e) => panic!("connection lost despite pings: {e:?}"),
        }
    }
    assert!(pongs >= 2, "only {pongs} PINGRESP in 3 s");
    subscribe(&c, &mut el, "ping/t", QoS::AtLeastOnce).await;
    publish(&c, &mut el, "ping/t", QoS::AtLeastOnce, false, "alive").await;
    assert_eq!(payload(&next_publish(&mut el).await), "alive");
    b.shutdown().await;
}

// 4. QoS 0/1/2 both ways, QoS downgrade

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_qos_levels_both_directions() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v311-qos-sub", true).await;
    let (pc, mut pel) = connect(&b, "v311-qos-pub", true).await;
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

    // Publisher side of QoS 2: PUBREC, then (after our PUBREL) PUBCOMP.
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

    // Subscriber side of QoS 2: PUBLISH, (our PUBREC), PUBREL from the broker.
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
async fn rumqttc_v311_subscription_qos_downgrades_delivery() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v311-down-sub", true).await;
    let (pc, mut pel) = connect(&b, "v311-down-pub", true).await;
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
    assert_eq!((p.topic.as_str(), p.qos), ("down/0", QoS::AtMostOnce));
    publish(&pc, &mut pel, "down/1", QoS::ExactlyOnce, false, "b").await;
    let p = next_publish(&mut sel).await;
    assert_eq!((p.topic.as_str(), p.qos), ("down/1", QoS::AtLeastOnce));
    b.shutdown().await;
}

// 5. DUP retransmission of an unreleased QoS 2 message: delivered once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_qos2_dup_is_delivered_exactly_once() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v311-once-sub", true).await;
    subscribe(&sc, &mut sel, "once/t", QoS::ExactlyOnce).await;

    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &raw::connect(4, "v311-once-raw", true, 60)).await;
    assert_eq!(raw::expect_packet(&mut s, 2).await, [0x00, 0x00]);
    let mut body = raw::str("once/t");
    body.extend_from_slice(&[0x00, 0x07]);
    body.extend_from_slice(b"only once");
    raw::send(&mut s, &raw::packet(0x34, &body)).await; // QoS 2
    assert_eq!(raw::expect_packet(&mut s, 5).await, [0x00, 0x07]); // PUBREC
    raw::send(&mut s, &raw::packet(0x3C, &body)).await; // DUP + QoS 2
    assert_eq!(raw::expect_packet(&mut s, 5).await, [0x00, 0x07]); // PUBREC again
    raw::send(&mut s, &raw::packet(0x62, &[0x00, 0x07])).await; // PUBREL
    assert_eq!(raw::expect_packet(&mut s, 7).await, [0x00, 0x07]); // PUBCOMP

    let p = next_publish(&mut sel).await;
    assert_eq!(payload(&p), "only once");
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
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
        if p.topic == "zz/end" && p.payload.as_ref() == b"end" {
            break;
        }
        assert!(
            got.insert(p.topic.clone()),
            "duplicate {} for {filter}",
            p.topic
        );
    }
    unsubscribe(sc, sel, filter).await;
    got
}

fn set(topics: &[&str]) -> BTreeSet<String> {
    topics.iter().map(|t| t.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_wildcards_match_per_spec() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v311-wild-sub", true).await;
    let (pc, mut pel) = connect(&b, "v311-wild-pub", true).await;
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
async fn rumqttc_v311_unsubscribe_stops_delivery() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v311-unsub-sub", true).await;
    let (pc, mut pel) = connect(&b, "v311-unsub-pub", true).await;
    subscribe(&sc, &mut sel, "unsub/t", QoS::AtLeastOnce).await;
    publish(&pc, &mut pel, "unsub/t", QoS::AtLeastOnce, false, "before").await;
    assert_eq!(payload(&next_publish(&mut sel).await), "before");
    unsubscribe(&sc, &mut sel, "unsub/t").await;
    publish(&pc, &mut pel, "unsub/t", QoS::AtLeastOnce, false, "after").await;
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_invalid_filter_gets_suback_failure() {
    // rumqttc refuses to send `a/#/b`, so the SUBSCRIBE is written by hand.
    let b = common::start_broker().await;
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &raw::connect(4, "v311-badfilter", true, 60)).await;
    assert_eq!(raw::expect_packet(&mut s, 2).await, [0x00, 0x00]);
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&raw::str("a/#/b"));
    body.push(0x01);
    body.extend_from_slice(&raw::str("ok/+"));
    body.push(0x01);
    raw::send(&mut s, &raw::packet(0x82, &body)).await;
    assert_eq!(
        raw::expect_packet(&mut s, 9).await,
        [0x00, 0x01, 0x80, 0x01],
        "SUBACK: failure for a/#/b, QoS 1 for ok/+"
    );
    // The connection stays usable.
    raw::send(&mut s, &[0xC0, 0x00]).await;
    assert!(raw::expect_packet(&mut s, 13).await.is_empty());
    b.shutdown().await;
}

// 8. Shared subscriptions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_shared_subscription_round_robin() {
    let b = common::start_broker().await;
    let mut members = Vec::new();
    for i in 0..3 {
        let (c, mut el) = connect(&b, &format!("v311-share-{i}"), true).await;
        assert_eq!(
            subscribe(&c, &mut el, "$share/g/jobs/+", QoS::AtLeastOnce).await,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
        members.push((c, el));
    }
    let (nc, mut nel) = connect(&b, "v311-share-normal", true).await;
    subscribe(&nc, &mut nel, "jobs/+", QoS::AtLeastOnce).await;
    let (pc, mut pel) = connect(&b, "v311-share-pub", true).await;
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
            assert_eq!(p.topic, "jobs/x");
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

// 10. Retained messages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_retained_set_replace_clear() {
    let b = common::start_broker().await;
    let (pc, mut pel) = connect(&b, "v311-ret-pub", true).await;
    // A live subscriber: 3.1.1 clears RETAIN on messages for established subscriptions.
    let (lc, mut lel) = connect(&b, "v311-ret-live", true).await;
    subscribe(&lc, &mut lel, "ret/t", QoS::AtLeastOnce).await;

    publish(&pc, &mut pel, "ret/t", QoS::AtLeastOnce, true, "v1").await;
    publish(&pc, &mut pel, "ret/t", QoS::AtLeastOnce, true, "v2").await;
    for v in ["v1", "v2"] {
        let p = next_publish(&mut lel).await;
        assert_eq!(payload(&p), v);
        assert!(!p.retain, "live delivery keeps RETAIN set in 3.1.1");
    }

    // A new subscriber gets the newest only, flagged retained, at min(QoS).
    let (sc, mut sel) = connect(&b, "v311-ret-new", true).await;
    subscribe(&sc, &mut sel, "ret/t", QoS::ExactlyOnce).await;
    let p = next_publish(&mut sel).await;
    assert_eq!(
        (payload(&p).as_str(), p.retain, p.qos),
        ("v2", true, QoS::AtLeastOnce)
    );
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;

    // Several retained topics arrive for `#`.
    publish(&pc, &mut pel, "ret2/a", QoS::AtMostOnce, true, "A").await;
    publish(&pc, &mut pel, "ret2/b/c", QoS::AtLeastOnce, true, "BC").await;
    let (hc, mut hel) = connect(&b, "v311-ret-hash", true).await;
    subscribe(&hc, &mut hel, "#", QoS::AtLeastOnce).await;
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        let p = next_publish(&mut hel).await;
        assert!(p.retain, "{p:?}");
        got.insert((p.topic.clone(), payload(&p)));
    }
    let expected: BTreeSet<(String, String)> =
        [("ret/t", "v2"), ("ret2/a", "A"), ("ret2/b/c", "BC")]
            .iter()
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect();
    assert_eq!(got, expected);
    expect_no_publish(&mut hel, Duration::from_millis(300)).await;

    // An empty retained payload clears it.
    publish(&pc, &mut pel, "ret/t", QoS::AtLeastOnce, true, "").await;
    let (cc, mut cel) = connect(&b, "v311-ret-cleared", true).await;
    subscribe(&cc, &mut cel, "ret/#", QoS::AtLeastOnce).await;
    expect_no_publish(&mut cel, Duration::from_millis(300)).await;
    b.shutdown().await;
}

// 11. Last will

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_will_on_abnormal_disconnect_only() {
    let b = common::start_broker().await;
    let (sc, mut sel) = connect(&b, "v311-will-watch", true).await;
    subscribe(&sc, &mut sel, "will/#", QoS::ExactlyOnce).await;

    // Abnormal: the socket goes away without DISCONNECT.
    let mut o = options(b.mqtt_addr, "v311-will-1");
    o.set_last_will(LastWill::new("will/one", "gone", QoS::AtLeastOnce, true));
    let (c1, el1, _) = start(o).await;
    drop(el1);
    drop(c1);
    let p = next_publish(&mut sel).await;
    assert_eq!(
        (p.topic.as_str(), payload(&p).as_str(), p.qos),
        ("will/one", "gone", QoS::AtLeastOnce)
    );
    // The will was retained: a later subscriber sees it with RETAIN set.
    let (lc, mut lel) = connect(&b, "v311-will-late", true).await;
    subscribe(&lc, &mut lel, "will/one", QoS::ExactlyOnce).await;
    let p = next_publish(&mut lel).await;
    assert_eq!(
        (payload(&p).as_str(), p.retain, p.qos),
        ("gone", true, QoS::AtLeastOnce)
    );

    // Normal DISCONNECT: no will.
    let mut o = options(b.mqtt_addr, "v311-will-2");
    o.set_last_will(LastWill::new("will/two", "gone", QoS::AtLeastOnce, true));
    let (c2, el2, _) = start(o).await;
    disconnect(c2, el2).await;
    expect_no_publish(&mut sel, Duration::from_millis(500)).await;
    b.shutdown().await;
}

// 12. Sessions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_persistent_session_queues_qos1() {
    let b = common::start_broker().await;
    let (pc, mut pel) = connect(&b, "v311-sess-pub", true).await;
    let (sc, mut sel) = connect(&b, "v311-sess", false).await;
    subscribe(&sc, &mut sel, "sess/t", QoS::AtLeastOnce).await;
    disconnect(sc, sel).await;

    for (i, qos) in [
        QoS::AtLeastOnce,
        QoS::AtMostOnce,
        QoS::AtLeastOnce,
        QoS::AtMostOnce,
        QoS::AtLeastOnce,
    ]
    .into_iter()
    .enumerate()
    {
        publish(
            &pc,
            &mut pel,
            "sess/t",
            qos,
            false,
            format!("m{i}-q{}", qos as u8),
        )
        .await;
    }

    let mut o = options(b.mqtt_addr, "v311-sess");
    o.set_clean_session(false);
    let (sc, mut sel, ack) = start(o).await;
    assert!(ack.session_present);
    for expected in ["m0-q1", "m2-q1", "m4-q1"] {
        let p = next_publish(&mut sel).await;
        assert_eq!((payload(&p).as_str(), p.qos), (expected, QoS::AtLeastOnce));
    }
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    // The subscription survived.
    publish(&pc, &mut pel, "sess/t", QoS::AtLeastOnce, false, "live").await;
    assert_eq!(payload(&next_publish(&mut sel).await), "live");

    // Clean session: the old session (and what was queued for it) is gone.
    disconnect(sc, sel).await;
    publish(&pc, &mut pel, "sess/t", QoS::AtLeastOnce, false, "queued").await;
    let (_sc, mut sel, ack) = start(options(b.mqtt_addr, "v311-sess")).await;
    assert!(!ack.session_present);
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    publish(&pc, &mut pel, "sess/t", QoS::AtLeastOnce, false, "no sub").await;
    expect_no_publish(&mut sel, Duration::from_millis(300)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_offline_queue_limit_drops_newest() {
    let b = common::start_broker_with(|cfg| cfg.mqtt.max_queued_messages = Some(5)).await;
    let (pc, mut pel) = connect(&b, "v311-q-pub", true).await;
    let (sc, mut sel) = connect(&b, "v311-q", false).await;
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
    let (_sc, mut sel) = connect(&b, "v311-q", false).await;
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

// 16. Connection limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_max_connections() {
    let b = common::start_broker_with(|cfg| cfg.server.max_connections = Some(2)).await;
    let (c1, mut el1) = connect(&b, "v311-lim-1", true).await;
    let (_c2, _el2) = connect(&b, "v311-lim-2", true).await;
    assert_eq!(
        refused(options(b.mqtt_addr, "v311-lim-3")).await,
        ConnectReturnCode::ServiceUnavailable
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
    let (_c4, _el4) = connect(&b, "v311-lim-4", true).await;
    b.shutdown().await;
}

// 17. Shutdown: connections closed, wills sent.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_shutdown_closes_and_sends_wills() {
    let b = common::start_broker().await;
    let mut o = options(b.mqtt_addr, "v311-sd");
    o.set_last_will(LastWill::new("will/sd", "bye", QoS::AtLeastOnce, true));
    let (_c, mut el, _) = start(o).await;
    let metrics = b.metrics.clone();
    assert_eq!(metrics.retained_messages.get(), 0);
    b.shutdown().await;
    expect_connection_closed(&mut el).await;
    // The subscribers are gone too, so the retained will is the observable trace.
    assert_eq!(metrics.retained_messages.get(), 1);
}

// 18. WebSocket

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_websocket_and_tcp_interoperate() {
    let b = common::start_broker().await;
    let ws = b.ws_addr.expect("WebSocket listener on");
    let mut o = MqttOptions::new(
        "v311-ws",
        format!("ws://127.0.0.1:{}/mqtt", ws.port()),
        ws.port(),
    );
    o.set_transport(Transport::Ws);
    let (wc, mut wel, ack) = start(o).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let (tc, mut tel) = connect(&b, "v311-tcp", true).await;
    subscribe(&wc, &mut wel, "ws/in", QoS::AtLeastOnce).await;
    subscribe(&tc, &mut tel, "ws/out", QoS::AtLeastOnce).await;

    publish(&wc, &mut wel, "ws/out", QoS::AtLeastOnce, false, "from ws").await;
    let p = next_publish(&mut tel).await;
    assert_eq!(
        (p.topic.as_str(), payload(&p).as_str()),
        ("ws/out", "from ws")
    );

    publish(&tc, &mut tel, "ws/in", QoS::ExactlyOnce, false, "from tcp").await;
    let p = next_publish(&mut wel).await;
    assert_eq!(
        (p.topic.as_str(), payload(&p).as_str(), p.qos),
        ("ws/in", "from tcp", QoS::AtLeastOnce)
    );
    b.shutdown().await;
}
