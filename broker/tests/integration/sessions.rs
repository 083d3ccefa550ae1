//! Session edge cases driven with raw packets: concurrent takeovers, wills at
//! the end of a session, paced re-sending after a resume, limits that only
//! 5.0 clients were told about, and hostile topic depth.

use std::time::Duration;

use broker::RunningBroker;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::common;
use crate::mqtt_client::{MqttClient, QoS, V311};
use crate::raw;

/// Properties of a 5.0 CONNECT, as raw property bytes.
fn session_expiry(secs: u32) -> Vec<u8> {
    let mut p = vec![0x11];
    p.extend_from_slice(&secs.to_be_bytes());
    p
}

fn receive_maximum(n: u16) -> Vec<u8> {
    let mut p = vec![0x21];
    p.extend_from_slice(&n.to_be_bytes());
    p
}

fn will_delay(secs: u32) -> Vec<u8> {
    let mut p = vec![0x18];
    p.extend_from_slice(&secs.to_be_bytes());
    p
}

struct Will<'a> {
    topic: &'a str,
    payload: &'a [u8],
    retain: bool,
    properties: Vec<u8>,
}

/// A 5.0 CONNECT with the given properties and optional will (QoS 0).
fn connect_v5(client_id: &str, clean: bool, properties: &[u8], will: Option<&Will<'_>>) -> Vec<u8> {
    let mut body = raw::str("MQTT");
    body.push(5);
    let mut flags = if clean { 0x02 } else { 0x00 };
    if let Some(w) = will {
        flags |= 0x04;
        if w.retain {
            flags |= 0x20;
        }
    }
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    body.push(properties.len() as u8);
    body.extend_from_slice(properties);
    body.extend_from_slice(&raw::str(client_id));
    if let Some(w) = will {
        body.push(w.properties.len() as u8);
        body.extend_from_slice(&w.properties);
        body.extend_from_slice(&raw::str(w.topic));
        body.extend_from_slice(&(w.payload.len() as u16).to_be_bytes());
        body.extend_from_slice(w.payload);
    }
    raw::packet(0x10, &body)
}

/// Connects and returns the stream and the CONNACK's session-present flag.
async fn connected(b: &RunningBroker, connect: &[u8]) -> (TcpStream, bool) {
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, connect).await;
    let ack = raw::expect_packet(&mut s, 2).await;
    assert_eq!(ack[1], 0, "CONNECT accepted: {ack:x?}");
    (s, ack[0] & 1 == 1)
}

/// True if the connection answers PINGREQ; false if the broker closed it
/// (after whatever DISCONNECT it sent).
async fn alive(s: &mut TcpStream) -> bool {
    use tokio::io::AsyncWriteExt;
    if s.write_all(&[0xc0, 0x00]).await.is_err() {
        return false;
    }
    loop {
        match raw::read_packet(s).await {
            Some((0xd0, _)) => return true,
            Some(_) => continue,
            None => return false,
        }
    }
}

/// Nothing arrives on `s` within `quiet`.
async fn expect_silence(s: &mut TcpStream, quiet: Duration) {
    if let Ok(p) = timeout(quiet, raw::read_packet(s)).await {
        panic!("expected nothing, got {p:x?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takeovers_leave_exactly_one_connection() {
    let b = common::start_broker().await;
    let connect = connect_v5("twin", true, &[], None);
    let (mut first, _) = connected(&b, &connect).await;
    let ((mut second, _), (mut third, _)) =
        tokio::join!(connected(&b, &connect), connected(&b, &connect));
    let alive = [
        alive(&mut first).await,
        alive(&mut second).await,
        alive(&mut third).await,
    ];
    assert_eq!(
        alive.iter().filter(|a| **a).count(),
        1,
        "one client id, one live connection: {alive:?}"
    );
    assert!(!alive[0], "the original connection was taken over");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_of_a_stuck_connection_still_leaves_one_owner() {
    let b = common::start_broker().await;
    // The first owner subscribes and then stops reading: once the socket buffers are
    // full, the broker's write to it blocks and it cannot react to being taken over.
    let (mut stuck, _) = connected(&b, &connect_v5("stuck", true, &[], None)).await;
    raw::send(&mut stuck, &raw::subscribe(5, 1, "big", 0)).await;
    raw::expect_packet(&mut stuck, 9).await;
    let (mut flooder, _) = connected(&b, &connect_v5("flooder", true, &[], None)).await;
    let chunk = raw::publish(5, 0, "big", 0, &vec![b'x'; 64 * 1024]);
    for _ in 0..400 {
        raw::send(&mut flooder, &chunk).await;
    }
    // Two new connections for the same id, the second while the first still waits.
    let connect = connect_v5("stuck", true, &[], None);
    let first = connected(&b, &connect);
    let second = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        connected(&b, &connect).await
    };
    let ((mut first, _), (mut second, _)) = tokio::join!(first, second);
    assert!(
        !alive(&mut first).await,
        "the earlier taker was taken over in turn"
    );
    assert!(
        alive(&mut second).await,
        "the last CONNECT owns the client id"
    );
    drop(stuck);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_start_takeover_sends_a_delayed_will_at_once() {
    let b = common::start_broker().await;
    let (mut watcher, _) = connected(&b, &connect_v5("will-watcher", true, &[], None)).await;
    raw::send(&mut watcher, &raw::subscribe(5, 1, "tw/will", 0)).await;
    raw::expect_packet(&mut watcher, 9).await;

    let will = Will {
        topic: "tw/will",
        payload: b"gone",
        retain: false,
        properties: will_delay(30),
    };
    let (_old, _) = connected(
        &b,
        &connect_v5("tw", true, &session_expiry(100), Some(&will)),
    )
    .await;
    let started = Instant::now();
    // A clean start ends the old session, so the will is due now, not in 30 s (5.0 3.1.4).
    let (_new, present) = connected(&b, &connect_v5("tw", true, &[], None)).await;
    assert!(!present);
    let (first, body) = raw::read_packet_within(&mut watcher, Duration::from_secs(5))
        .await
        .expect("will delivered");
    assert_eq!(first >> 4, 3, "PUBLISH");
    assert!(body.ends_with(b"gone"), "{body:x?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_resends_within_the_new_receive_maximum() {
    let b = common::start_broker().await;
    let (mut sub, _) = connected(&b, &connect_v5("pacer", true, &session_expiry(60), None)).await;
    raw::send(&mut sub, &raw::subscribe(5, 1, "pace/t", 1)).await;
    raw::expect_packet(&mut sub, 9).await;
    let (mut publisher, _) = connected(&b, &connect_v5("pace-pub", true, &[], None)).await;
    for id in 1..=3u16 {
        raw::send(
            &mut publisher,
            &raw::publish(5, 1, "pace/t", id, format!("m{id}").as_bytes()),
        )
        .await;
        raw::expect_packet(&mut publisher, 4).await;
    }
    for _ in 0..3 {
        raw::expect_packet(&mut sub, 3).await; // received, never acknowledged
    }
    drop(sub);

    let props = [session_expiry(60), receive_maximum(1)].concat();
    let (mut sub, present) = connected(&b, &connect_v5("pacer", false, &props, None)).await;
    assert!(present, "session resumed");
    for expected in ["m1", "m2", "m3"] {
        let (first, body) = raw::read_packet(&mut sub).await.expect("re-sent PUBLISH");
        assert_eq!(first, 0x3a, "PUBLISH QoS 1 with DUP: {first:x}");
        assert!(body.ends_with(expected.as_bytes()), "{body:x?}");
        // Receive Maximum 1: nothing more until this one is acknowledged.
        expect_silence(&mut sub, Duration::from_millis(300)).await;
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let packet_id = &body[2 + topic_len..4 + topic_len];
        raw::send(&mut sub, &raw::packet(0x40, packet_id)).await;
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_qos2_burst_is_not_held_to_an_unannounced_receive_maximum() {
    let b = common::start_broker_with(|c| c.mqtt.max_inflight = Some(5)).await;
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &raw::connect(4, "burst", true, 60)).await;
    raw::expect_packet(&mut s, 2).await;
    let burst: Vec<u8> = (1..=10u16)
        .flat_map(|id| raw::publish(4, 2, "burst/t", id, b"x"))
        .collect();
    raw::send(&mut s, &burst).await;
    for id in 1..=10u16 {
        let rec = raw::expect_packet(&mut s, 5).await;
        assert_eq!(rec, id.to_be_bytes(), "PUBREC {id}");
    }
    assert!(
        alive(&mut s).await,
        "3.1.1 clients were never told a Receive Maximum"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_cap_does_not_touch_v311_persistent_sessions() {
    let b = common::start_broker_with(|c| c.mqtt.max_session_expiry_secs = 0).await;
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &raw::connect(4, "keeper", false, 60)).await;
    raw::expect_packet(&mut s, 2).await;
    raw::send(&mut s, &[0xe0, 0x00]).await;
    raw::expect_closed(&mut s).await;
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &raw::connect(4, "keeper", false, 60)).await;
    let ack = raw::expect_packet(&mut s, 2).await;
    assert_eq!(ack, [0x01, 0x00], "session present");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_publishes_delayed_wills() {
    let b = common::start_broker().await;
    let metrics = b.metrics.clone();
    let will = Will {
        topic: "sd/will",
        payload: b"bye",
        retain: true,
        properties: will_delay(60),
    };
    let (_s, _) = connected(
        &b,
        &connect_v5("sd", true, &session_expiry(100), Some(&will)),
    )
    .await;
    assert_eq!(metrics.mqtt.retained_messages.get(), 0);
    b.shutdown().await;
    assert_eq!(
        metrics.mqtt.retained_messages.get(),
        1,
        "the retained will was published at shutdown, not left to its 60 s delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurdly_deep_filters_are_refused_and_the_broker_lives() {
    let b = common::start_broker().await;
    let deep = format!("x{}", "/x".repeat(5000));
    for (level, failure) in [(4, 0x80u8), (5, 0x8f)] {
        let mut s = raw::session(b.mqtt_addr, level, &format!("deep{level}"), 60).await;
        raw::send(&mut s, &raw::subscribe(level, 1, &deep, 0)).await;
        let ack = raw::expect_packet(&mut s, 9).await;
        assert_eq!(
            *ack.last().unwrap(),
            failure,
            "SUBACK failure for a 5001-level filter"
        );
        drop(s);
    }
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &raw::connect(4, "after", true, 60)).await;
    raw::expect_packet(&mut s, 2).await;
    assert!(alive(&mut s).await);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_live_subscriber_slows_qos1_publishers_instead_of_losing_messages() {
    let b = common::start_broker_with(|c| {
        c.mqtt.max_queued_messages = Some(10);
        c.mqtt.max_inflight = Some(1);
    })
    .await;
    let mut sub = V311::connect(&b, "slow-sub").await;
    sub.subscribe("flow/t", QoS::AtLeastOnce)
        .await
        .expect("subscribed");

    // 500 QoS 1 messages in one burst, 50 times the subscriber's queue limit.
    let mut publisher = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut publisher, &raw::connect(4, "burst-pub", true, 60)).await;
    raw::expect_packet(&mut publisher, 2).await;
    let burst: Vec<u8> = (1..=500u16)
        .flat_map(|id| raw::publish(4, 1, "flow/t", id, &id.to_be_bytes()))
        .collect();
    let acks = tokio::spawn(async move {
        raw::send(&mut publisher, &burst).await;
        for _ in 0..500 {
            raw::expect_packet(&mut publisher, 4).await;
        }
        publisher
    });
    let mut got = Vec::new();
    timeout(Duration::from_secs(30), async {
        while got.len() < 500 {
            let p = sub.next_publish().await;
            got.push(u16::from_be_bytes([p.payload[0], p.payload[1]]));
        }
    })
    .await
    .expect("all 500 delivered");
    assert_eq!(
        got,
        (1..=500).collect::<Vec<u16>>(),
        "every message, in order"
    );
    drop(acks.await.unwrap());
    let metrics = b.metrics.encode();
    assert!(
        !metrics.contains("kind=\"queue_full\""),
        "nothing dropped: {metrics}"
    );
    b.shutdown().await;
}
