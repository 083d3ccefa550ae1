//! MQTT 5.0 through rumqttc's v5 client: every shared scenario
//! (mqtt_scenarios.rs), plus what only 5.0 has: properties, reason codes,
//! subscription options, topic aliases, expiry intervals.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use broker::RunningBroker;
use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWill, LastWillProperties, PublishProperties, RetainForwardRule,
};

use crate::common;
use crate::mqtt_client::{to_v5, MqttClient, Options, QoS, V5};
use crate::mqtt_scenarios::mqtt_scenarios;
use crate::raw;

mqtt_scenarios!(V5);

fn options(addr: SocketAddr, id: &str) -> rumqttc::v5::MqttOptions {
    V5::mqtt_options(&Options::new(addr, id))
}

/// Connects with the given Clean Start and Session Expiry Interval; returns
/// whether a session was present.
async fn connect_session(
    b: &RunningBroker,
    id: &str,
    clean_start: bool,
    expiry: u32,
) -> (V5, bool) {
    let mut o = options(b.mqtt_addr, id);
    o.set_clean_start(clean_start);
    o.set_session_expiry_interval(Some(expiry));
    let (c, ack) = V5::start_with(o).await;
    assert_eq!(ack.code, V5::SUCCESS);
    (c, ack.session_present)
}

/// Subscribes with 5.0 subscription options; returns what the SUBACK grants.
async fn subscribe_filter(c: &mut V5, filter: Filter) -> Result<QoS, String> {
    c.client.subscribe_many(vec![filter]).await.unwrap();
    c.wait_for("SUBACK", |ev| match ev {
        crate::mqtt_client::Event::SubAck(granted) => Some(granted.clone()),
        _ => None,
    })
    .await
}

fn filter(topic: &str, qos: QoS) -> Filter {
    Filter::new(topic, to_v5(qos))
}

/// Publishes with properties and waits until the flow is complete.
async fn publish_with(
    c: &mut V5,
    topic: &str,
    qos: QoS,
    payload: &str,
    properties: PublishProperties,
) {
    c.client
        .publish_with_properties(topic, to_v5(qos), false, payload.to_string(), properties)
        .await
        .unwrap();
    c.wait_publish_flow(qos).await
}

fn will(topic: &str, payload: &str, retain: bool, delay: Option<u32>) -> LastWill {
    let properties = delay.map(|delay| LastWillProperties {
        delay_interval: Some(delay),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    });
    LastWill::new(topic, payload, to_v5(QoS::AtLeastOnce), retain, properties)
}

// 1. CONNECT / CONNACK

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_accepted_with_properties() {
    let b = common::start_broker_with(|cfg| cfg.mqtt.max_inflight = Some(7)).await;
    let (_c, ack) = V5::start(Options::new(b.mqtt_addr, "hello")).await;
    assert_eq!(ack.code, V5::SUCCESS);
    assert!(!ack.session_present);
    let props = ack.packet.properties.expect("CONNACK properties");
    assert_eq!(props.receive_max, Some(7));
    assert_eq!(props.topic_alias_max, Some(10));
    assert_eq!(props.assigned_client_identifier, None);
    assert!(props.max_packet_size.is_some());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_gets_assigned_identifier() {
    let b = common::start_broker().await;
    let (_c1, ack1) = V5::start(Options::new(b.mqtt_addr, "")).await;
    let (_c2, ack2) = V5::start(Options::new(b.mqtt_addr, "")).await;
    let id1 = ack1
        .packet
        .properties
        .and_then(|p| p.assigned_client_identifier);
    let id2 = ack2
        .packet
        .properties
        .and_then(|p| p.assigned_client_identifier);
    let (id1, id2) = (id1.expect("assigned id"), id2.expect("assigned id"));
    assert!(!id1.is_empty());
    assert_ne!(id1, id2, "assigned identifiers are unique");
    b.shutdown().await;
}

// 2. Client id takeover

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_takeover_sends_0x8e() {
    // A raw first connection, to see the DISCONNECT bytes.
    let b = common::start_broker().await;
    let mut raw_a = raw::session(b.mqtt_addr, 5, "dup-raw", 60).await;
    let _c = V5::connect(&b, "dup-raw").await;
    assert_eq!(raw::expect_disconnect(&mut raw_a).await, 0x8E);
    raw::expect_closed(&mut raw_a).await;
    b.shutdown().await;
}

// 3. Keep-alive

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_the_connection_alive() {
    let b = common::start_broker().await;
    // rumqttc's v5 client refuses keep alives under 5 s (it panics), so a raw
    // 5.0 client with keep alive 1 s pings every 500 ms instead.
    let mut s = raw::session(b.mqtt_addr, 5, "pinger", 1).await;
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
    raw::send(&mut s, &raw::subscribe(5, 1, "ping/t", 1)).await;
    assert_eq!(
        raw::expect_packet(&mut s, 9).await,
        [0x00, 0x01, 0x00, 0x01]
    );
    b.shutdown().await;
}

// 6. In-flight window (Receive Maximum)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_limits_inflight() {
    let b = common::start_broker_with(|cfg| cfg.mqtt.max_inflight = Some(7)).await;
    let mut o = options(b.mqtt_addr, "window");
    o.set_receive_maximum(Some(2));
    o.set_manual_acks(true);
    let (mut sc, ack) = V5::start_with(o).await;
    assert_eq!(ack.packet.properties.and_then(|p| p.receive_max), Some(7));
    sc.subscribe("win/t", QoS::AtLeastOnce).await.unwrap();
    let mut pc = V5::connect(&b, "window-pub").await;
    for i in 0..5 {
        pc.publish("win/t", QoS::AtLeastOnce, false, format!("w{i}"))
            .await;
    }
    let mut got = vec![sc.next_publish().await, sc.next_publish().await];
    sc.expect_no_publish(Duration::from_millis(300)).await;
    for i in 0..3 {
        sc.client.ack(&got[i].packet).await.unwrap();
        let p = sc.next_publish().await;
        got.push(p);
        if i < 2 {
            sc.expect_no_publish(Duration::from_millis(200)).await;
        }
    }
    let payloads: Vec<String> = got.iter().map(|p| p.text()).collect();
    assert_eq!(payloads, ["w0", "w1", "w2", "w3", "w4"]);
    for p in &got[3..] {
        sc.client.ack(&p.packet).await.unwrap();
    }
    sc.expect_no_publish(Duration::from_millis(200)).await;
    b.shutdown().await;
}

// 9. Subscription options

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local() {
    let b = common::start_broker().await;
    let mut c = V5::connect(&b, "nolocal").await;
    let mut f = filter("nl/t", QoS::AtLeastOnce);
    f.nolocal = true;
    subscribe_filter(&mut c, f).await.unwrap();
    // Control: without No Local the client does get its own messages.
    c.subscribe("nl/control", QoS::AtLeastOnce).await.unwrap();
    c.publish("nl/control", QoS::AtLeastOnce, false, "own control")
        .await;
    assert_eq!(c.next_publish().await.text(), "own control");

    c.publish("nl/t", QoS::AtLeastOnce, false, "own").await;
    c.expect_no_publish(Duration::from_millis(300)).await;
    let mut oc = V5::connect(&b, "nolocal-other").await;
    oc.publish("nl/t", QoS::AtLeastOnce, false, "other").await;
    assert_eq!(c.next_publish().await.text(), "other");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_as_published() {
    let b = common::start_broker().await;
    let mut kc = V5::connect(&b, "rap-keep").await;
    let mut f = filter("rap/t", QoS::AtLeastOnce);
    f.preserve_retain = true;
    subscribe_filter(&mut kc, f).await.unwrap();
    let mut cc = V5::connect(&b, "rap-clear").await;
    cc.subscribe("rap/t", QoS::AtLeastOnce).await.unwrap();
    let mut pc = V5::connect(&b, "rap-pub").await;

    pc.publish("rap/t", QoS::AtLeastOnce, true, "retained")
        .await;
    let p = kc.next_publish().await;
    assert_eq!((p.text().as_str(), p.retain), ("retained", true));
    let p = cc.next_publish().await;
    assert_eq!((p.text().as_str(), p.retain), ("retained", false));

    pc.publish("rap/t", QoS::AtLeastOnce, false, "plain").await;
    let p = kc.next_publish().await;
    assert_eq!((p.text().as_str(), p.retain), ("plain", false));
    let p = cc.next_publish().await;
    assert_eq!((p.text().as_str(), p.retain), ("plain", false));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling() {
    let b = common::start_broker().await;
    let mut pc = V5::connect(&b, "rh-pub").await;
    pc.publish("rh/t", QoS::AtLeastOnce, true, "kept").await;
    let with_rule = |rule| {
        let mut f = filter("rh/t", QoS::AtLeastOnce);
        f.retain_forward_rule = rule;
        f
    };

    // 0: on every subscribe.
    let mut c0 = V5::connect(&b, "rh-0").await;
    for _ in 0..2 {
        subscribe_filter(&mut c0, with_rule(RetainForwardRule::OnEverySubscribe))
            .await
            .unwrap();
        let p = c0.next_publish().await;
        assert_eq!((p.text().as_str(), p.retain), ("kept", true));
    }

    // 1: only when the subscription is new.
    let mut c1 = V5::connect(&b, "rh-1").await;
    subscribe_filter(&mut c1, with_rule(RetainForwardRule::OnNewSubscribe))
        .await
        .unwrap();
    let p = c1.next_publish().await;
    assert_eq!((p.text().as_str(), p.retain), ("kept", true));
    subscribe_filter(&mut c1, with_rule(RetainForwardRule::OnNewSubscribe))
        .await
        .unwrap();
    c1.expect_no_publish(Duration::from_millis(300)).await;

    // 2: never.
    let mut c2 = V5::connect(&b, "rh-2").await;
    subscribe_filter(&mut c2, with_rule(RetainForwardRule::Never))
        .await
        .unwrap();
    c2.expect_no_publish(Duration::from_millis(300)).await;
    // ... but the subscription itself works.
    pc.publish("rh/t", QoS::AtLeastOnce, false, "live").await;
    assert_eq!(c2.next_publish().await.text(), "live");
    b.shutdown().await;
}

// 11. Last will

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_keeps_retain_for_retain_as_published() {
    let b = common::start_broker().await;
    let mut sc = V5::connect(&b, "will-watch").await;
    let mut f = filter("will/#", QoS::ExactlyOnce);
    f.preserve_retain = true;
    subscribe_filter(&mut sc, f).await.unwrap();

    let mut o = options(b.mqtt_addr, "will-1");
    o.set_last_will(will("will/one", "gone", true, None));
    let (c1, _) = V5::start_with(o).await;
    drop(c1);
    let p = sc.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.text().as_str(), p.qos, p.retain),
        ("will/one", "gone", QoS::AtLeastOnce, true)
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_and_cancel_on_reconnect() {
    let b = common::start_broker().await;
    let mut sc = V5::connect(&b, "wd-watch").await;
    sc.subscribe("wd/#", QoS::AtLeastOnce).await.unwrap();
    let delayed = |id: &str, will_topic: &str| {
        let mut o = options(b.mqtt_addr, id);
        o.set_session_expiry_interval(Some(10));
        o.set_last_will(will(will_topic, "late", false, Some(2)));
        o
    };
    let (c1, _) = V5::start_with(delayed("wd-1", "wd/one")).await;
    let (c2, _) = V5::start_with(delayed("wd-2", "wd/two")).await;
    let t0 = Instant::now();
    drop((c1, c2));

    // wd-2 comes back within the delay: its will is cancelled.
    let mut o = delayed("wd-2", "wd/two");
    o.set_clean_start(false);
    let (_c2, ack) = V5::start_with(o).await;
    assert!(ack.session_present);

    let p = sc.next_publish().await;
    let elapsed = t0.elapsed();
    assert_eq!(p.topic, "wd/one");
    assert!(
        elapsed >= Duration::from_millis(1800),
        "will sent after {elapsed:?}, before its 2 s delay"
    );
    // Well past wd-2's delay: still nothing.
    sc.expect_no_publish(Duration::from_millis(1000)).await;
    b.shutdown().await;
}

// 12. Sessions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_interval() {
    let b = common::start_broker().await;
    let mut pc = V5::connect(&b, "se-pub").await;
    let (mut sc, present) = connect_session(&b, "se-short", true, 1).await;
    assert!(!present);
    sc.subscribe("se/t", QoS::AtLeastOnce).await.unwrap();
    sc.disconnect().await;
    let (mut lc, _) = connect_session(&b, "se-long", true, 60).await;
    lc.subscribe("se/t", QoS::AtLeastOnce).await.unwrap();
    lc.disconnect().await;

    pc.publish("se/t", QoS::AtLeastOnce, false, "m0").await;
    pc.publish("se/t", QoS::AtMostOnce, false, "m1-q0").await;
    pc.publish("se/t", QoS::AtLeastOnce, false, "m2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (mut sc, present) = connect_session(&b, "se-short", false, 1).await;
    assert!(!present, "a 1 s session must be gone after 2 s");
    sc.expect_no_publish(Duration::from_millis(300)).await;

    let (mut lc, present) = connect_session(&b, "se-long", false, 60).await;
    assert!(present);
    assert_eq!(lc.next_publish().await.text(), "m0");
    assert_eq!(lc.next_publish().await.text(), "m2");
    lc.expect_no_publish(Duration::from_millis(300)).await;
    pc.publish("se/t", QoS::AtLeastOnce, false, "live").await;
    assert_eq!(lc.next_publish().await.text(), "live");
    b.shutdown().await;
}

// 13. Topic aliases

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_from_broker() {
    let b = common::start_broker().await;
    let mut o = options(b.mqtt_addr, "ta-sub");
    o.set_topic_alias_max(Some(10));
    let (mut ac, _) = V5::start_with(o).await;
    ac.subscribe("ta/t", QoS::AtLeastOnce).await.unwrap();
    let mut nc = V5::connect(&b, "ta-plain").await;
    nc.subscribe("ta/t", QoS::AtLeastOnce).await.unwrap();
    // A raw client shows what is on the wire.
    let mut s = raw::tcp(b.mqtt_addr).await;
    let mut hello = raw::str("MQTT");
    hello.extend_from_slice(&[5, 0x02, 0x00, 0x3C, 0x03, 0x22, 0x00, 0x0A]); // topic alias max 10
    hello.extend_from_slice(&raw::str("ta-raw"));
    raw::send(&mut s, &raw::packet(0x10, &hello)).await;
    assert_eq!(raw::expect_packet(&mut s, 2).await[..2], [0x00, 0x00]);
    raw::send(&mut s, &raw::subscribe(5, 1, "ta/t", 0)).await;
    raw::expect_packet(&mut s, 9).await;

    let mut pc = V5::connect(&b, "ta-pub").await;
    pc.publish("ta/t", QoS::AtLeastOnce, false, "one").await;
    pc.publish("ta/t", QoS::AtLeastOnce, false, "two").await;

    let alias = |p: &rumqttc::v5::mqttbytes::v5::Publish| {
        p.properties.as_ref().and_then(|pr| pr.topic_alias)
    };
    let p1 = ac.next_publish().await;
    let p2 = ac.next_publish().await;
    assert_eq!((p1.topic.as_str(), p1.text().as_str()), ("ta/t", "one"));
    assert!(alias(&p1.packet).is_some());
    assert_eq!(
        alias(&p2.packet),
        alias(&p1.packet),
        "the second message reuses the alias"
    );
    // rumqttc 0.25 records the event before resolving the alias, so the event
    // may carry the empty wire topic; resolve it the way the client does.
    let resolved = match p2.topic.as_str() {
        "" => p1.topic.clone(),
        t => t.to_string(),
    };
    assert_eq!((resolved.as_str(), p2.text().as_str()), ("ta/t", "two"));
    // A client that allows no aliases gets none.
    for expected in ["one", "two"] {
        let p = nc.next_publish().await;
        assert_eq!((p.topic.as_str(), p.text().as_str()), ("ta/t", expected));
        assert_eq!(alias(&p.packet), None);
    }
    // On the wire: topic then alias only (empty topic name) the second time.
    let first = raw::expect_packet(&mut s, 3).await;
    assert_eq!(first[..6], *b"\x00\x04ta/t");
    let second = raw::expect_packet(&mut s, 3).await;
    assert_eq!(second[..2], [0x00, 0x00], "empty topic: {second:x?}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_from_client() {
    let b = common::start_broker().await;
    let mut sc = V5::connect(&b, "tb-sub").await;
    sc.subscribe("tb/t", QoS::AtLeastOnce).await.unwrap();
    let (mut pc, ack) = V5::start(Options::new(b.mqtt_addr, "tb-pub")).await;
    assert_eq!(
        ack.packet.properties.and_then(|p| p.topic_alias_max),
        Some(10)
    );
    let with_alias = || PublishProperties {
        topic_alias: Some(1),
        ..Default::default()
    };
    publish_with(&mut pc, "tb/t", QoS::AtLeastOnce, "first", with_alias()).await;
    publish_with(&mut pc, "", QoS::AtLeastOnce, "second", with_alias()).await;
    for expected in ["first", "second"] {
        let p = sc.next_publish().await;
        assert_eq!((p.topic.as_str(), p.text().as_str()), ("tb/t", expected));
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_above_maximum_is_0x94() {
    // rumqttc refuses to exceed the broker's maximum, so the PUBLISH is raw.
    let b = common::start_broker().await;
    let mut s = raw::session(b.mqtt_addr, 5, "tc-raw", 60).await;
    let mut body = raw::str("tc/t");
    body.extend_from_slice(&[0x03, 0x23, 0x00, 0x0B]); // topic alias 11 > 10
    body.extend_from_slice(b"x");
    raw::send(&mut s, &raw::packet(0x30, &body)).await;
    assert_eq!(raw::expect_disconnect(&mut s).await, 0x94);
    raw::expect_closed(&mut s).await;
    b.shutdown().await;
}

// 14. Message expiry and pass-through properties

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_interval() {
    let b = common::start_broker().await;
    let mut pc = V5::connect(&b, "mx-pub").await;
    let (mut sc, _) = connect_session(&b, "mx", true, 60).await;
    sc.subscribe("mx/t", QoS::AtLeastOnce).await.unwrap();
    sc.disconnect().await;
    let expiring = |secs| PublishProperties {
        message_expiry_interval: Some(secs),
        ..Default::default()
    };
    publish_with(&mut pc, "mx/t", QoS::AtLeastOnce, "short", expiring(1)).await;
    publish_with(&mut pc, "mx/t", QoS::AtLeastOnce, "long", expiring(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (mut sc, present) = connect_session(&b, "mx", false, 60).await;
    assert!(present);
    let p = sc.next_publish().await;
    assert_eq!(p.text(), "long");
    let left = p
        .packet
        .properties
        .and_then(|pr| pr.message_expiry_interval);
    let left = left.expect("remaining expiry forwarded");
    assert!((50..=58).contains(&left), "remaining expiry {left} s");
    sc.expect_no_publish(Duration::from_millis(300)).await;
    let text = b.metrics.encode();
    assert!(
        text.contains("broker_messages_dropped_total{protocol=\"mqtt\",kind=\"expired\"} 1"),
        "{text}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_properties_pass_through() {
    let b = common::start_broker().await;
    let mut sc = V5::connect(&b, "props-sub").await;
    sc.subscribe("props/t", QoS::AtLeastOnce).await.unwrap();
    let mut pc = V5::connect(&b, "props-pub").await;
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            ("k".into(), "v1".into()),
            ("k".into(), "v2".into()),
            ("other".into(), "x".into()),
        ],
        ..Default::default()
    };
    publish_with(&mut pc, "props/t", QoS::AtLeastOnce, "{}", sent.clone()).await;
    let p = sc.next_publish().await;
    let got = p.packet.properties.expect("properties forwarded");
    assert_eq!(got, sent);
    b.shutdown().await;
}

// 15. Maximum Packet Size

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_maximum_packet_size_is_respected() {
    let b = common::start_broker().await;
    let mut o = options(b.mqtt_addr, "mps-small");
    o.set_max_packet_size(Some(200));
    let (mut sc, _) = V5::start_with(o).await;
    sc.subscribe("mps/t", QoS::AtLeastOnce).await.unwrap();
    let mut pc = V5::connect(&b, "mps-pub").await;
    pc.publish("mps/t", QoS::AtLeastOnce, false, vec![b'L'; 1000])
        .await;
    pc.publish("mps/t", QoS::AtLeastOnce, false, vec![b's'; 50])
        .await;
    let p = sc.next_publish().await;
    assert_eq!(p.payload, [b's'; 50]);
    sc.expect_no_publish(Duration::from_millis(300)).await;
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
async fn dropped_oversized_message_does_not_set_a_topic_alias() {
    let b = common::start_broker().await;
    let mut o = options(b.mqtt_addr, "mps-alias");
    o.set_max_packet_size(Some(200));
    o.set_topic_alias_max(Some(10));
    let (mut sc, _) = V5::start_with(o).await;
    sc.subscribe("mps/alias", QoS::AtLeastOnce).await.unwrap();
    let mut pc = V5::connect(&b, "mps-alias-pub").await;
    pc.publish("mps/alias", QoS::AtLeastOnce, false, vec![b'L'; 1000])
        .await;
    pc.publish("mps/alias", QoS::AtLeastOnce, false, vec![b's'; 50])
        .await;
    // The dropped message must not have used up the alias: the first message the
    // client sees on the topic carries the topic name along with the alias.
    let p = sc.next_publish().await;
    assert_eq!(p.topic, "mps/alias");
    assert_eq!(
        p.packet.properties.as_ref().and_then(|pr| pr.topic_alias),
        Some(1)
    );
    assert_eq!(p.payload, [b's'; 50]);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_above_broker_maximum_is_0x95() {
    let b = common::start_broker_with(|cfg| cfg.mqtt.max_packet_size = Some(1024)).await;
    let (mut oc, ack) = V5::start(Options::new(b.mqtt_addr, "mps-bystander")).await;
    assert_eq!(
        ack.packet.properties.and_then(|p| p.max_packet_size),
        Some(1024)
    );
    oc.subscribe("big/#", QoS::AtLeastOnce).await.unwrap();

    // rumqttc enforces the announced maximum itself, so the big PUBLISH is raw.
    let mut s = raw::session(b.mqtt_addr, 5, "mps-raw", 60).await;
    raw::send(&mut s, &raw::publish(5, 0, "big/t", 0, &[b'x'; 2000])).await;
    assert_eq!(raw::expect_disconnect(&mut s).await, 0x95);
    raw::expect_closed(&mut s).await;

    // Nothing of it was routed, and the other client carries on.
    oc.publish("big/ok", QoS::AtLeastOnce, false, "fine").await;
    let p = oc.next_publish().await;
    assert_eq!((p.topic.as_str(), p.text().as_str()), ("big/ok", "fine"));
    b.shutdown().await;
}
