//! MQTT state bounds: offline sessions, session expiry (3.1.1 default, 5.0
//! cap announced in CONNACK), subscriptions per client, retained messages
//! (count and bytes), the server keep-alive cap, and the WebSocket Origin
//! allow-list. Each test sends the hostile input over raw TCP, checks the
//! documented answer, and has a client of another protocol (Kafka or AMQP)
//! complete a round trip meanwhile.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{amqp_round_trip, start_broker_with, WAIT};
use crate::raw;
use crate::raw_kafka;

/// Value of a Prometheus line for `metric{protocol="mqtt",kind="…"}`, 0 when absent.
fn mqtt_counter(b: &broker::RunningBroker, metric: &str, kind: &str) -> u64 {
    let prefix = format!("{metric}{{protocol=\"mqtt\",kind=\"{kind}\"}} ");
    b.metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// CONNECT at level 5 with the given Session Expiry Interval (when `Some`).
fn connect_v5(client_id: &str, clean: bool, keep_alive: u16, expiry: Option<u32>) -> Vec<u8> {
    let mut body = raw::str("MQTT");
    body.push(5);
    body.push(if clean { 0x02 } else { 0x00 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    match expiry {
        Some(e) => {
            body.push(5);
            body.push(0x11);
            body.extend_from_slice(&e.to_be_bytes());
        }
        None => body.push(0),
    }
    body.extend_from_slice(&raw::str(client_id));
    raw::packet(0x10, &body)
}

/// The properties of a 5.0 CONNACK we look at: (Session Expiry Interval, Server Keep Alive).
fn connack_v5_props(connack: &[u8]) -> (Option<u32>, Option<u16>) {
    assert_eq!(connack[1], 0, "CONNACK reason: {connack:x?}");
    let len = usize::from(connack[2]);
    assert!(len < 128, "short property list");
    let mut p = &connack[3..3 + len];
    let (mut expiry, mut keep_alive) = (None, None);
    while let Some((&id, rest)) = p.split_first() {
        let size = match id {
            0x11 | 0x27 => 4,
            0x13 | 0x21 | 0x22 => 2,
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x12 | 0x1A | 0x1C | 0x1F => 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]])),
            other => panic!("unexpected CONNACK property {other:#x} in {connack:x?}"),
        };
        match id {
            0x11 => expiry = Some(u32::from_be_bytes(rest[..4].try_into().unwrap())),
            0x13 => keep_alive = Some(u16::from_be_bytes([rest[0], rest[1]])),
            _ => {}
        }
        p = &rest[size..];
    }
    (expiry, keep_alive)
}

/// CONNECT, CONNACK; returns the stream and the CONNACK body.
async fn connect_raw(addr: std::net::SocketAddr, connect: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut s = raw::tcp(addr).await;
    raw::send(&mut s, connect).await;
    let connack = raw::expect_packet(&mut s, 2).await;
    (s, connack)
}

/// DISCONNECT (reason 0 / no body) and wait for the broker to close.
async fn disconnect(mut s: TcpStream) {
    raw::send(&mut s, &[0xE0, 0x00]).await;
    raw::expect_closed(&mut s).await;
}

/// Waits (bounded by WAIT) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let since = Instant::now();
    while !cond() {
        assert!(since.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn connect_subscribe_disconnect_flood_keeps_a_bounded_number_of_sessions() {
    // The issue's flood: 3,000 persistent 3.1.1 sessions subscribed to `#`.
    // With `mqtt.max_offline_sessions = 200`, the broker keeps the 200 that
    // left last; the older ones end as if expired (their subscriptions too).
    const CYCLES: usize = 3_000;
    const LIMIT: usize = 200;
    let b = start_broker_with(|c| c.mqtt.max_offline_sessions = Some(LIMIT)).await;
    let started = Instant::now();
    for i in 0..CYCLES {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "flood bounded in time"
        );
        let (mut s, connack) = connect_raw(
            b.mqtt_addr,
            &raw::connect(4, &format!("flood-{i}"), false, 30),
        )
        .await;
        assert_eq!(connack, [0, 0]);
        raw::send(&mut s, &raw::subscribe(4, 1, "#", 1)).await;
        raw::expect_packet(&mut s, 9).await;
        disconnect(s).await;
    }
    eventually("every departure processed", || {
        mqtt_counter(
            &b,
            "broker_messages_dropped_total",
            "offline_session_evicted",
        ) as usize
            == CYCLES - LIMIT
    })
    .await;
    // The bound: sessions stored (and their `#` subscriptions) never exceed the limit.
    assert_eq!(b.hub.session_count(), LIMIT);
    assert_eq!(b.hub.offline_session_count(), LIMIT);
    assert_eq!(b.metrics.mqtt.subscriptions.get(), LIMIT as i64);
    assert_eq!(b.metrics.mqtt.sessions.get(), LIMIT as i64);
    // The newest session is still there; the oldest is gone.
    let (s, newest) = connect_raw(
        b.mqtt_addr,
        &raw::connect(4, &format!("flood-{}", CYCLES - 1), false, 30),
    )
    .await;
    assert_eq!(newest, [1, 0], "session present for the newest client");
    disconnect(s).await;
    let (s, oldest) = connect_raw(b.mqtt_addr, &raw::connect(4, "flood-0", false, 30)).await;
    assert_eq!(oldest, [0, 0], "the oldest offline session was ended");
    disconnect(s).await;
    raw_kafka::round_trip(b.kafka_addr.unwrap()).await;
    b.shutdown().await;
}

#[tokio::test]
async fn v311_persistent_sessions_expire_and_v5_expiry_is_capped_in_connack() {
    let b = start_broker_with(|c| c.mqtt.persistent_session_expiry_secs = 1).await;
    // 3.1.1, clean session 0: kept for persistent_session_expiry_secs, not forever.
    let (mut s, ack) = connect_raw(b.mqtt_addr, &raw::connect(4, "old-311", false, 30)).await;
    assert_eq!(ack, [0, 0]);
    raw::send(&mut s, &raw::subscribe(4, 1, "a/#", 1)).await;
    raw::expect_packet(&mut s, 9).await;
    disconnect(s).await;
    let (s, ack) = connect_raw(b.mqtt_addr, &raw::connect(4, "old-311", false, 30)).await;
    assert_eq!(ack, [1, 0], "resumed before the expiry");
    disconnect(s).await;
    eventually("the 3.1.1 session expired", || b.hub.session_count() == 0).await;
    let (s, ack) = connect_raw(b.mqtt_addr, &raw::connect(4, "old-311", false, 30)).await;
    assert_eq!(ack, [0, 0], "no session present after the expiry");
    disconnect(s).await;
    b.shutdown().await;

    // 5.0 with the default cap (7,200 s): asking "never" (0xFFFFFFFF) gets the
    // cap, announced in CONNACK; asking less is granted as is (no property).
    let b = start_broker_with(|_| {}).await;
    let (s, ack) = connect_raw(
        b.mqtt_addr,
        &connect_v5("forever", true, 30, Some(u32::MAX)),
    )
    .await;
    assert_eq!(connack_v5_props(&ack).0, Some(7200));
    disconnect(s).await;
    let (s, ack) = connect_raw(b.mqtt_addr, &connect_v5("short", true, 30, Some(60))).await;
    assert_eq!(connack_v5_props(&ack).0, None);
    disconnect(s).await;
    amqp_round_trip(&b, "mqtt-limits-expiry").await;
    b.shutdown().await;
}

#[tokio::test]
async fn subscriptions_per_client_are_capped_with_quota_exceeded() {
    let b = start_broker_with(|c| c.mqtt.max_subscriptions_per_client = 3).await;
    for level in [5u8, 4] {
        let mut s = raw::session(b.mqtt_addr, level, &format!("subs-{level}"), 30).await;
        for (i, filter) in ["a/#", "b/+", "c"].iter().enumerate() {
            raw::send(&mut s, &raw::subscribe(level, i as u16 + 1, filter, 1)).await;
            let ack = raw::expect_packet(&mut s, 9).await;
            assert_eq!(*ack.last().unwrap(), 1, "granted QoS 1: {ack:x?}");
        }
        // A fourth filter is refused: 5.0 0x97 Quota exceeded, 3.1.1 0x80.
        raw::send(&mut s, &raw::subscribe(level, 9, "d/#", 1)).await;
        let ack = raw::expect_packet(&mut s, 9).await;
        let refused = if level == 5 { 0x97 } else { 0x80 };
        assert_eq!(*ack.last().unwrap(), refused, "{ack:x?}");
        // Replacing one of the three still works, and the connection lives on.
        raw::send(&mut s, &raw::subscribe(level, 10, "b/+", 0)).await;
        let ack = raw::expect_packet(&mut s, 9).await;
        assert_eq!(*ack.last().unwrap(), 0, "{ack:x?}");
        raw::send(&mut s, &[0xC0, 0x00]).await;
        raw::expect_packet(&mut s, 13).await;
        disconnect(s).await;
    }
    assert_eq!(
        mqtt_counter(&b, "broker_protocol_errors_total", "max_subscriptions"),
        2
    );
    raw_kafka::round_trip(b.kafka_addr.unwrap()).await;
    b.shutdown().await;
}

/// PUBLISH 5.0 retained QoS 1; returns the PUBACK reason code.
async fn retain_v5(s: &mut TcpStream, id: u16, topic: &str, payload: &[u8]) -> u8 {
    let mut p = raw::publish(5, 1, topic, id, payload);
    p[0] |= 0x01;
    raw::send(s, &p).await;
    let ack = raw::expect_packet(s, 4).await;
    assert_eq!(ack[..2], id.to_be_bytes());
    ack.get(2).copied().unwrap_or(0)
}

/// Subscribes a fresh 5.0 client to `filter` and collects the retained
/// messages' topics it gets within a short while.
async fn retained_topics(addr: std::net::SocketAddr, filter: &str) -> Vec<String> {
    let mut s = raw::session(addr, 5, "retained-reader", 30).await;
    raw::send(&mut s, &raw::subscribe(5, 1, filter, 0)).await;
    raw::expect_packet(&mut s, 9).await;
    let mut topics = Vec::new();
    // A PINGREQ after the SUBSCRIBE: its PINGRESP comes after the retained messages.
    raw::send(&mut s, &[0xC0, 0x00]).await;
    loop {
        match raw::read_packet(&mut s).await {
            Some((first, body)) if first >> 4 == 3 => {
                let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                topics.push(String::from_utf8(body[2..2 + len].to_vec()).unwrap());
            }
            Some((0xD0, _)) => break,
            other => panic!("unexpected {other:x?}"),
        }
    }
    disconnect(s).await;
    topics.sort();
    topics
}

#[tokio::test]
async fn retained_messages_are_bounded_in_count_and_bytes() {
    let b = start_broker_with(|c| {
        c.mqtt.max_retained_messages = 3;
        c.mqtt.max_retained_bytes = 100;
    })
    .await;
    let mut p = raw::session(b.mqtt_addr, 5, "retainer", 30).await;
    assert_eq!(retain_v5(&mut p, 1, "r/1", b"one").await, 0);
    assert_eq!(retain_v5(&mut p, 2, "r/2", b"two").await, 0);
    assert_eq!(retain_v5(&mut p, 3, "$SYS/r", b"three").await, 0);
    // A fourth topic: 5.0 QoS 1 publisher gets PUBACK 0x97, nothing stored.
    assert_eq!(retain_v5(&mut p, 4, "r/4", b"four").await, 0x97);
    // Replacing a stored topic is fine; growing it past the byte limit is not.
    assert_eq!(retain_v5(&mut p, 5, "r/1", b"uno").await, 0);
    assert_eq!(retain_v5(&mut p, 6, "r/2", &[b'x'; 120]).await, 0x97);
    // A 3.1.1 QoS 0 publisher cannot be told: its message is not retained.
    let mut q = raw::session(b.mqtt_addr, 4, "retainer-311", 30).await;
    let mut publish = raw::publish(4, 0, "r/5", 0, b"five");
    publish[0] |= 0x01;
    raw::send(&mut q, &publish).await;
    raw::send(&mut q, &[0xC0, 0x00]).await;
    raw::expect_packet(&mut q, 13).await;
    disconnect(q).await;
    // `#` does not match `$SYS/…` (trie, first-level `$` rule).
    assert_eq!(retained_topics(b.mqtt_addr, "#").await, ["r/1", "r/2"]);
    assert_eq!(
        retained_topics(b.mqtt_addr, "+/r").await,
        Vec::<String>::new()
    );
    assert_eq!(retained_topics(b.mqtt_addr, "$SYS/+").await, ["$SYS/r"]);
    assert_eq!(
        mqtt_counter(&b, "broker_messages_dropped_total", "retained_count_limit"),
        2
    );
    assert_eq!(
        mqtt_counter(&b, "broker_messages_dropped_total", "retained_bytes_limit"),
        1
    );
    // Clearing one makes room for a new topic.
    assert_eq!(retain_v5(&mut p, 7, "r/2", b"").await, 0);
    assert_eq!(retain_v5(&mut p, 8, "r/4", b"four").await, 0);
    assert_eq!(retained_topics(b.mqtt_addr, "r/#").await, ["r/1", "r/4"]);
    disconnect(p).await;
    amqp_round_trip(&b, "mqtt-limits-retained").await;
    b.shutdown().await;
}

#[tokio::test]
async fn keep_alive_zero_gets_the_server_cap() {
    // Default cap: 65,535 s, announced to a 5.0 client asking 0; a client
    // asking less keeps its own value (no property).
    let b = start_broker_with(|_| {}).await;
    let (s, ack) = connect_raw(b.mqtt_addr, &connect_v5("ka-default", true, 0, None)).await;
    assert_eq!(connack_v5_props(&ack).1, Some(u16::MAX));
    disconnect(s).await;
    let (s, ack) = connect_raw(b.mqtt_addr, &connect_v5("ka-own", true, 30, None)).await;
    assert_eq!(connack_v5_props(&ack).1, None);
    disconnect(s).await;
    b.shutdown().await;

    let b = start_broker_with(|c| c.mqtt.max_keep_alive_secs = 1).await;
    // 5.0: 0 and 600 both become 1 s, told in CONNACK, and enforced (1.5 × 1 s).
    for asked in [0u16, 600] {
        let (mut s, ack) = connect_raw(
            b.mqtt_addr,
            &connect_v5(&format!("ka5-{asked}"), true, asked, None),
        )
        .await;
        assert_eq!(connack_v5_props(&ack).1, Some(1));
        let since = Instant::now();
        raw::expect_server_close(&mut s, 5, 0x8D).await;
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{:?}",
            since.elapsed()
        );
    }
    // 3.1.1 cannot be told, but a silent keep-alive-0 client is closed too.
    let (mut s, ack) = connect_raw(b.mqtt_addr, &raw::connect(4, "ka311", true, 0)).await;
    assert_eq!(ack, [0, 0]);
    let since = Instant::now();
    raw::expect_closed(&mut s).await;
    assert!(
        since.elapsed() < Duration::from_secs(5),
        "{:?}",
        since.elapsed()
    );
    assert_eq!(
        mqtt_counter(&b, "broker_protocol_errors_total", "keep_alive_timeout"),
        3
    );
    raw_kafka::round_trip(b.kafka_addr.unwrap()).await;
    b.shutdown().await;
}

/// Sends a WebSocket upgrade request with `origin`; returns the HTTP status line.
async fn ws_upgrade(addr: std::net::SocketAddr, origin: Option<&str>) -> String {
    let mut s = raw::tcp(addr).await;
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let request = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n{origin}\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 512];
    timeout(WAIT, async {
        while !response.windows(2).any(|w| w == b"\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the broker answers the upgrade in time");
    let text = String::from_utf8_lossy(&response);
    text.lines().next().unwrap_or("").to_string()
}

#[tokio::test]
async fn websocket_upgrades_from_foreign_origins_are_refused() {
    let b = start_broker_with(|c| {
        c.mqtt.websocket_allowed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let ws = b.ws_addr.expect("WebSocket listener");
    // A page on another site (or a rebinding one) gets 403 before the upgrade.
    for evil in [
        "http://evil.example",
        "http://localhost.evil.example:8083",
        "null",
    ] {
        let status = ws_upgrade(ws, Some(evil)).await;
        assert!(status.starts_with("HTTP/1.1 403"), "{evil}: {status}");
    }
    // No Origin (non-browser client), same-host and listed origins are upgraded.
    for ok in [
        None,
        Some("http://localhost:3000"),
        Some("http://127.0.0.1:8083"),
        Some("http://[::1]"),
        Some("https://app.example.com"),
    ] {
        let status = ws_upgrade(ws, ok).await;
        assert!(status.starts_with("HTTP/1.1 101"), "{ok:?}: {status}");
    }
    eventually("refusals counted", || {
        mqtt_counter(&b, "broker_connections_refused_total", "websocket_origin") == 3
    })
    .await;
    raw_kafka::round_trip(b.kafka_addr.unwrap()).await;
    b.shutdown().await;
}
