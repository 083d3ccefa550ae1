//! MQTT behaviour both protocol versions share, written once over
//! [`MqttClient`] (and raw bytes where rumqttc refuses to send what the test
//! needs); `mqtt_scenarios!` makes each one a test in rumqttc_v311.rs and
//! rumqttc_v5.rs. Where the versions answer differently (refusal codes, a
//! server DISCONNECT), the client type says what to expect.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{self, WAIT};
use crate::mqtt_client::{Event, MqttClient, Options, QoS};
use crate::raw;

/// Instantiates every shared scenario as a test for one client type.
macro_rules! mqtt_scenarios {
    ($client:ty) => {
        $crate::mqtt_scenarios::mqtt_scenarios!(
            @tests $client;
            connect_accepted,
            credentials_are_checked,
            anonymous_refused_when_not_allowed,
            client_id_takeover,
            keep_alive_timeout_closes_silent_client,
            qos_levels_both_directions,
            subscription_qos_downgrades_delivery,
            qos2_dup_is_delivered_exactly_once,
            wildcards_match_per_spec,
            unsubscribe_stops_delivery,
            invalid_filter_gets_suback_failure,
            shared_subscription_round_robin,
            retained_set_replace_clear,
            will_on_abnormal_disconnect_only,
            persistent_session_queues_qos1,
            offline_queue_limit_drops_newest,
            max_connections,
            shutdown_closes_and_sends_wills,
            websocket_and_tcp_interoperate,
        );
    };
    (@tests $client:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::mqtt_scenarios::$name::<$client>().await;
            }
        )*
    };
}
pub(crate) use mqtt_scenarios;

// 1. CONNECT / CONNACK

pub async fn connect_accepted<C: MqttClient>() {
    let b = common::start_broker().await;
    let (_c, ack) = C::start(Options::new(b.mqtt_addr, "hello")).await;
    assert_eq!(ack.code, C::SUCCESS);
    assert!(!ack.session_present);
    // An empty client id is fine with a clean session.
    let (_c2, ack) = C::start(Options::new(b.mqtt_addr, "")).await;
    assert_eq!(ack.code, C::SUCCESS);
    assert!(b
        .metrics
        .encode()
        .contains("broker_connections_total{protocol=\"mqtt\"} 2"));
    b.shutdown().await;
}

pub async fn credentials_are_checked<C: MqttClient>() {
    let b = common::start_broker_with_users(&[("alice", "secret")], |_| {}).await;
    let o = Options::new(b.mqtt_addr, "bad-pass").credentials("alice", "wrong");
    assert_eq!(C::refused(o).await, C::BAD_CREDENTIALS);
    let o = Options::new(b.mqtt_addr, "no-such-user").credentials("mallory", "secret");
    assert_eq!(C::refused(o).await, C::BAD_CREDENTIALS);
    let o = Options::new(b.mqtt_addr, "good-pass").credentials("alice", "secret");
    let (_c, ack) = C::start(o).await;
    assert_eq!(ack.code, C::SUCCESS);
    assert!(b.metrics.encode().contains(
        "broker_connections_refused_total{protocol=\"mqtt\",kind=\"bad_credentials\"} 2"
    ));
    b.shutdown().await;
}

pub async fn anonymous_refused_when_not_allowed<C: MqttClient>() {
    // A password file turns anonymous access off, even on loopback.
    let b = common::start_broker_with_users(&[("alice", "secret")], |_| {}).await;
    let o = Options::new(b.mqtt_addr, "anon");
    assert_eq!(C::refused(o).await, C::NOT_AUTHORIZED);
    assert!(b
        .metrics
        .encode()
        .contains("broker_connections_refused_total{protocol=\"mqtt\",kind=\"not_authorized\"} 1"));
    let o = Options::new(b.mqtt_addr, "alice").credentials("alice", "secret");
    let (_c, ack) = C::start(o).await;
    assert_eq!(ack.code, C::SUCCESS);
    b.shutdown().await;
}

// 2. Client id takeover

pub async fn client_id_takeover<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut a = C::connect(&b, "dup").await;
    let mut bc = C::connect(&b, "dup").await;
    C::check_taken_over(a.expect_connection_closed().await);
    drop(a); // never poll A again: it would reconnect and take the id back
    assert_eq!(
        bc.subscribe("dup/t", QoS::AtLeastOnce).await,
        Ok(QoS::AtLeastOnce)
    );
    bc.publish("dup/t", QoS::AtLeastOnce, false, "still here")
        .await;
    assert_eq!(bc.next_publish().await.text(), "still here");
    b.shutdown().await;
}

// 3. Keep-alive

pub async fn keep_alive_timeout_closes_silent_client<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut s = raw::session(b.mqtt_addr, C::LEVEL, "silent", 1).await;
    let t0 = Instant::now();
    let got = raw::read_packet_within(&mut s, Duration::from_secs(3)).await;
    let elapsed = t0.elapsed();
    // 5.0 says why (DISCONNECT keep alive timeout); 3.1.1 just closes.
    let expected = (C::LEVEL == 5).then(|| (0xE0, vec![0x8D, 0x00]));
    assert_eq!(got, expected, "what the silent client gets");
    assert!(
        elapsed >= Duration::from_millis(1200),
        "closed too early: {elapsed:?}"
    );
    raw::expect_closed(&mut s).await;
    assert!(b
        .metrics
        .encode()
        .contains("broker_protocol_errors_total{protocol=\"mqtt\",kind=\"keep_alive_timeout\"} 1"));
    b.shutdown().await;
}

// 4. QoS 0/1/2 both ways, QoS downgrade

pub async fn qos_levels_both_directions<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut sc = C::connect(&b, "qos-sub").await;
    let mut pc = C::connect(&b, "qos-pub").await;
    assert_eq!(
        sc.subscribe("qos/t", QoS::ExactlyOnce).await,
        Ok(QoS::ExactlyOnce)
    );

    pc.publish("qos/t", QoS::AtMostOnce, false, "q0").await;
    let p = sc.next_publish().await;
    assert_eq!((p.text().as_str(), p.qos), ("q0", QoS::AtMostOnce));

    pc.publish("qos/t", QoS::AtLeastOnce, false, "q1").await;
    let p = sc.next_publish().await;
    assert_eq!((p.text().as_str(), p.qos), ("q1", QoS::AtLeastOnce));

    // Publisher side of QoS 2: PUBREC, then (after our PUBREL) PUBCOMP.
    pc.publish_request("qos/t", QoS::ExactlyOnce, false, b"q2".to_vec())
        .await;
    let mut seen = Vec::new();
    pc.wait_for("PUBCOMP", |ev| match ev {
        Event::PubRec => {
            seen.push("PUBREC");
            None
        }
        Event::Sent(rumqttc::Outgoing::PubRel(_)) => {
            seen.push("PUBREL");
            None
        }
        Event::PubComp => {
            seen.push("PUBCOMP");
            Some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(seen, ["PUBREC", "PUBREL", "PUBCOMP"]);

    // Subscriber side of QoS 2: PUBLISH, (our PUBREC), PUBREL from the broker.
    let p = sc.next_publish().await;
    assert_eq!((p.text().as_str(), p.qos), ("q2", QoS::ExactlyOnce));
    let rel = sc
        .wait_for("PUBREL", |ev| match ev {
            Event::PubRel(pkid) => Some(*pkid),
            _ => None,
        })
        .await;
    assert_eq!(rel, p.pkid);
    sc.expect_no_publish(Duration::from_millis(300)).await;
    b.shutdown().await;
}

pub async fn subscription_qos_downgrades_delivery<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut sc = C::connect(&b, "down-sub").await;
    let mut pc = C::connect(&b, "down-pub").await;
    assert_eq!(
        sc.subscribe("down/0", QoS::AtMostOnce).await,
        Ok(QoS::AtMostOnce)
    );
    assert_eq!(
        sc.subscribe("down/1", QoS::AtLeastOnce).await,
        Ok(QoS::AtLeastOnce)
    );
    pc.publish("down/0", QoS::ExactlyOnce, false, "a").await;
    let p = sc.next_publish().await;
    assert_eq!((p.topic.as_str(), p.qos), ("down/0", QoS::AtMostOnce));
    pc.publish("down/1", QoS::ExactlyOnce, false, "b").await;
    let p = sc.next_publish().await;
    assert_eq!((p.topic.as_str(), p.qos), ("down/1", QoS::AtLeastOnce));
    b.shutdown().await;
}

// 5. DUP retransmission of an unreleased QoS 2 message: delivered once.

pub async fn qos2_dup_is_delivered_exactly_once<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut sc = C::connect(&b, "once-sub").await;
    sc.subscribe("once/t", QoS::ExactlyOnce).await.unwrap();

    let mut s = raw::session(b.mqtt_addr, C::LEVEL, "once-raw", 60).await;
    let qos2 = raw::publish(C::LEVEL, 2, "once/t", 7, b"only once");
    let mut dup = qos2.clone();
    dup[0] |= 0x08; // DUP
                    // 3.1.1 acks are the packet id alone; 5.0 may add reason code 0 (success).
    let ok_for_7 = |body: Vec<u8>| {
        assert_eq!(body[..2], [0x00, 0x07], "{body:x?}");
        assert!(
            body.len() == 2 || (C::LEVEL == 5 && body[2] == 0x00),
            "success: {body:x?}"
        );
    };
    raw::send(&mut s, &qos2).await;
    ok_for_7(raw::expect_packet(&mut s, 5).await); // PUBREC
    raw::send(&mut s, &dup).await;
    ok_for_7(raw::expect_packet(&mut s, 5).await); // PUBREC again
    raw::send(&mut s, &raw::packet(0x62, &[0x00, 0x07])).await; // PUBREL
    ok_for_7(raw::expect_packet(&mut s, 7).await); // PUBCOMP

    assert_eq!(sc.next_publish().await.text(), "only once");
    sc.expect_no_publish(Duration::from_millis(300)).await;
    b.shutdown().await;
}

// 7. SUBSCRIBE / UNSUBSCRIBE

/// Subscribes `filter`, publishes every topic in `topics` then an end marker,
/// and returns the topics the subscriber got; unsubscribes again.
async fn matched_topics<C: MqttClient>(
    sc: &mut C,
    pc: &mut C,
    filter: &str,
    topics: &[&str],
) -> BTreeSet<String> {
    assert_eq!(
        sc.subscribe(filter, QoS::AtLeastOnce).await,
        Ok(QoS::AtLeastOnce),
        "{filter}"
    );
    for t in topics {
        pc.publish(t, QoS::AtLeastOnce, false, "x").await;
    }
    pc.publish("zz/end", QoS::AtLeastOnce, false, "end").await;
    let mut got = BTreeSet::new();
    loop {
        let p = sc.next_publish().await;
        if p.topic == "zz/end" && p.payload == b"end" {
            break;
        }
        assert!(
            got.insert(p.topic.clone()),
            "duplicate {} for {filter}",
            p.topic
        );
    }
    sc.unsubscribe(filter).await;
    got
}

fn set(topics: &[&str]) -> BTreeSet<String> {
    topics.iter().map(|t| t.to_string()).collect()
}

pub async fn wildcards_match_per_spec<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut sc = C::connect(&b, "wild-sub").await;
    let mut pc = C::connect(&b, "wild-pub").await;
    sc.subscribe("zz/end", QoS::AtLeastOnce).await.unwrap();
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
        let got = matched_topics(&mut sc, &mut pc, filter, &topics).await;
        assert_eq!(got, set(expected), "filter {filter}");
    }
    b.shutdown().await;
}

pub async fn unsubscribe_stops_delivery<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut sc = C::connect(&b, "unsub-sub").await;
    let mut pc = C::connect(&b, "unsub-pub").await;
    sc.subscribe("unsub/t", QoS::AtLeastOnce).await.unwrap();
    pc.publish("unsub/t", QoS::AtLeastOnce, false, "before")
        .await;
    assert_eq!(sc.next_publish().await.text(), "before");
    sc.unsubscribe("unsub/t").await;
    pc.publish("unsub/t", QoS::AtLeastOnce, false, "after")
        .await;
    sc.expect_no_publish(Duration::from_millis(300)).await;
    b.shutdown().await;
}

pub async fn invalid_filter_gets_suback_failure<C: MqttClient>() {
    // rumqttc refuses to send `a/#/b`, so the SUBSCRIBE is written by hand.
    let b = common::start_broker().await;
    let mut s = raw::session(b.mqtt_addr, C::LEVEL, "badfilter", 60).await;
    let mut body = vec![0x00, 0x01]; // packet id 1
    body.extend_from_slice(raw::no_properties(C::LEVEL));
    body.extend_from_slice(&raw::str("a/#/b"));
    body.push(0x01);
    body.extend_from_slice(&raw::str("ok/+"));
    body.push(0x01);
    raw::send(&mut s, &raw::packet(0x82, &body)).await;
    // 3.1.1 has one failure code (0x80); 5.0 says why (0x8F topic filter invalid).
    let failure = if C::LEVEL == 5 { 0x8F } else { 0x80 };
    let mut expected = vec![0x00, 0x01];
    expected.extend_from_slice(raw::no_properties(C::LEVEL));
    expected.extend_from_slice(&[failure, 0x01]);
    assert_eq!(
        raw::expect_packet(&mut s, 9).await,
        expected,
        "SUBACK: {failure:#x} for a/#/b, QoS 1 for ok/+"
    );
    // The connection stays usable.
    raw::send(&mut s, &[0xC0, 0x00]).await;
    assert!(raw::expect_packet(&mut s, 13).await.is_empty());
    b.shutdown().await;
}

// 8. Shared subscriptions

pub async fn shared_subscription_round_robin<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut members = Vec::new();
    for i in 0..3 {
        let mut c = C::connect(&b, &format!("share-{i}")).await;
        assert_eq!(
            c.subscribe("$share/g/jobs/+", QoS::AtLeastOnce).await,
            Ok(QoS::AtLeastOnce)
        );
        members.push(c);
    }
    let mut nc = C::connect(&b, "share-normal").await;
    nc.subscribe("jobs/+", QoS::AtLeastOnce).await.unwrap();
    let mut pc = C::connect(&b, "share-pub").await;
    for i in 0..9 {
        pc.publish("jobs/x", QoS::AtLeastOnce, false, format!("job{i}"))
            .await;
    }
    let mut all = BTreeSet::new();
    for member in members.iter_mut() {
        for _ in 0..3 {
            let p = member.next_publish().await;
            assert_eq!(p.topic, "jobs/x");
            assert!(all.insert(p.text()), "duplicate {}", p.text());
        }
        member.expect_no_publish(Duration::from_millis(300)).await;
    }
    assert_eq!(all, (0..9).map(|i| format!("job{i}")).collect());
    for i in 0..9 {
        assert_eq!(nc.next_publish().await.text(), format!("job{i}"));
    }
    b.shutdown().await;
}

// 10. Retained messages

pub async fn retained_set_replace_clear<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut pc = C::connect(&b, "ret-pub").await;
    // A live subscriber: RETAIN is cleared on messages for established
    // subscriptions (3.1.1, and 5.0 without Retain As Published).
    let mut lc = C::connect(&b, "ret-live").await;
    lc.subscribe("ret/t", QoS::AtLeastOnce).await.unwrap();

    pc.publish("ret/t", QoS::AtLeastOnce, true, "v1").await;
    pc.publish("ret/t", QoS::AtLeastOnce, true, "v2").await;
    for v in ["v1", "v2"] {
        let p = lc.next_publish().await;
        assert_eq!(p.text(), v);
        assert!(!p.retain, "live delivery keeps RETAIN set");
    }

    // A new subscriber gets the newest only, flagged retained, at min(QoS).
    let mut sc = C::connect(&b, "ret-new").await;
    sc.subscribe("ret/t", QoS::ExactlyOnce).await.unwrap();
    let p = sc.next_publish().await;
    assert_eq!(
        (p.text().as_str(), p.retain, p.qos),
        ("v2", true, QoS::AtLeastOnce)
    );
    sc.expect_no_publish(Duration::from_millis(300)).await;

    // Several retained topics arrive for `#`.
    pc.publish("ret2/a", QoS::AtMostOnce, true, "A").await;
    pc.publish("ret2/b/c", QoS::AtLeastOnce, true, "BC").await;
    let mut hc = C::connect(&b, "ret-hash").await;
    hc.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        let p = hc.next_publish().await;
        assert!(p.retain, "{p:?}");
        got.insert((p.topic.clone(), p.text()));
    }
    let expected: BTreeSet<(String, String)> =
        [("ret/t", "v2"), ("ret2/a", "A"), ("ret2/b/c", "BC")]
            .iter()
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect();
    assert_eq!(got, expected);
    hc.expect_no_publish(Duration::from_millis(300)).await;

    // An empty retained payload clears it.
    pc.publish("ret/t", QoS::AtLeastOnce, true, "").await;
    // The clearing message itself still reaches existing subscribers.
    assert_eq!(sc.next_publish().await.text(), "");
    let mut cc = C::connect(&b, "ret-cleared").await;
    cc.subscribe("ret/#", QoS::AtLeastOnce).await.unwrap();
    cc.expect_no_publish(Duration::from_millis(300)).await;
    b.shutdown().await;
}

// 11. Last will

pub async fn will_on_abnormal_disconnect_only<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut sc = C::connect(&b, "will-watch").await;
    sc.subscribe("will/#", QoS::ExactlyOnce).await.unwrap();

    // Abnormal: the socket goes away without DISCONNECT.
    let o = Options::new(b.mqtt_addr, "will-1").will("will/one", "gone", QoS::AtLeastOnce, true);
    let (c1, _) = C::start(o).await;
    drop(c1);
    let p = sc.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.text().as_str(), p.qos),
        ("will/one", "gone", QoS::AtLeastOnce)
    );
    // The will was retained: a later subscriber sees it with RETAIN set.
    let mut lc = C::connect(&b, "will-late").await;
    lc.subscribe("will/one", QoS::ExactlyOnce).await.unwrap();
    let p = lc.next_publish().await;
    assert_eq!(
        (p.text().as_str(), p.retain, p.qos),
        ("gone", true, QoS::AtLeastOnce)
    );

    // Normal DISCONNECT: no will.
    let o = Options::new(b.mqtt_addr, "will-2").will("will/two", "gone", QoS::AtLeastOnce, true);
    let (c2, _) = C::start(o).await;
    c2.disconnect().await;
    sc.expect_no_publish(Duration::from_millis(500)).await;
    b.shutdown().await;
}

// 12. Sessions

pub async fn persistent_session_queues_qos1<C: MqttClient>() {
    let b = common::start_broker().await;
    let mut pc = C::connect(&b, "sess-pub").await;
    let (mut sc, _) = C::connect_session(&b, "sess", true).await;
    sc.subscribe("sess/t", QoS::AtLeastOnce).await.unwrap();
    sc.disconnect().await;

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
        pc.publish("sess/t", qos, false, format!("m{i}-q{}", qos as u8))
            .await;
    }

    let (mut sc, present) = C::connect_session(&b, "sess", true).await;
    assert!(present);
    for expected in ["m0-q1", "m2-q1", "m4-q1"] {
        let p = sc.next_publish().await;
        assert_eq!((p.text().as_str(), p.qos), (expected, QoS::AtLeastOnce));
    }
    sc.expect_no_publish(Duration::from_millis(300)).await;
    // The subscription survived.
    pc.publish("sess/t", QoS::AtLeastOnce, false, "live").await;
    assert_eq!(sc.next_publish().await.text(), "live");

    // Clean session: the old session (and what was queued for it) is gone.
    sc.disconnect().await;
    pc.publish("sess/t", QoS::AtLeastOnce, false, "queued")
        .await;
    let (mut sc, present) = C::connect_session(&b, "sess", false).await;
    assert!(!present);
    sc.expect_no_publish(Duration::from_millis(300)).await;
    pc.publish("sess/t", QoS::AtLeastOnce, false, "no sub")
        .await;
    sc.expect_no_publish(Duration::from_millis(300)).await;
    b.shutdown().await;
}

pub async fn offline_queue_limit_drops_newest<C: MqttClient>() {
    let b = common::start_broker_with(|cfg| cfg.mqtt.max_queued_messages = Some(5)).await;
    let mut pc = C::connect(&b, "q-pub").await;
    let (mut sc, _) = C::connect_session(&b, "q", true).await;
    sc.subscribe("q/t", QoS::AtLeastOnce).await.unwrap();
    sc.disconnect().await;
    for i in 0..8 {
        pc.publish("q/t", QoS::AtLeastOnce, false, format!("m{i}"))
            .await;
    }
    let (mut sc, present) = C::connect_session(&b, "q", true).await;
    assert!(present);
    for i in 0..5 {
        assert_eq!(sc.next_publish().await.text(), format!("m{i}"));
    }
    sc.expect_no_publish(Duration::from_millis(300)).await;
    let text = b.metrics.encode();
    assert!(
        text.contains("broker_messages_dropped_total{protocol=\"mqtt\",kind=\"queue_full\"} 3"),
        "{text}"
    );
    b.shutdown().await;
}

// 16. Connection limit

pub async fn max_connections<C: MqttClient>() {
    let b = common::start_broker_with(|cfg| cfg.server.max_connections = Some(2)).await;
    let c1 = C::connect(&b, "lim-1").await;
    let _c2 = C::connect(&b, "lim-2").await;
    assert_eq!(
        C::refused(Options::new(b.mqtt_addr, "lim-3")).await,
        C::CONNECTION_LIMIT
    );
    let text = b.metrics.encode();
    assert!(
        text.contains(
            "broker_connections_refused_total{protocol=\"mqtt\",kind=\"max_connections\"} 1"
        ),
        "{text}"
    );
    c1.disconnect().await;
    common::wait_for_free_permits(&b, 1).await;
    let _c4 = C::connect(&b, "lim-4").await;
    b.shutdown().await;
}

// 17. Shutdown: connections closed, wills sent.

pub async fn shutdown_closes_and_sends_wills<C: MqttClient>() {
    let b = common::start_broker().await;
    let o = Options::new(b.mqtt_addr, "sd").will("will/sd", "bye", QoS::AtLeastOnce, true);
    let (mut c, _) = C::start(o).await;
    let mut s = raw::session(b.mqtt_addr, C::LEVEL, "sd-raw", 60).await;
    let metrics = b.metrics.clone();
    assert_eq!(metrics.mqtt.retained_messages.get(), 0);
    let stopping = tokio::spawn(b.shutdown());
    raw::expect_server_close(&mut s, C::LEVEL, 0x8B).await; // 5.0: server shutting down
    C::check_shutdown(c.expect_connection_closed().await);
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown in time")
        .unwrap();
    // The subscribers are gone too, so the retained will is the observable trace.
    assert_eq!(metrics.mqtt.retained_messages.get(), 1);
}

// 18. WebSocket

pub async fn websocket_and_tcp_interoperate<C: MqttClient>() {
    let b = common::start_broker().await;
    let ws = b.ws_addr.expect("WebSocket listener on");
    let (mut wc, ack) = C::start(Options::new(ws, "ws").websocket()).await;
    assert_eq!(ack.code, C::SUCCESS);
    let mut tc = C::connect(&b, "tcp").await;
    wc.subscribe("ws/in", QoS::AtLeastOnce).await.unwrap();
    tc.subscribe("ws/out", QoS::AtLeastOnce).await.unwrap();

    wc.publish("ws/out", QoS::AtLeastOnce, false, "from ws")
        .await;
    let p = tc.next_publish().await;
    assert_eq!((p.topic.as_str(), p.text().as_str()), ("ws/out", "from ws"));

    tc.publish("ws/in", QoS::ExactlyOnce, false, "from tcp")
        .await;
    let p = wc.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.text().as_str(), p.qos),
        ("ws/in", "from tcp", QoS::AtLeastOnce)
    );
    b.shutdown().await;
}
