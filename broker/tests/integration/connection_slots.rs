//! Connection slots and idle sockets: per-protocol connection limits, the
//! handshake deadline of every protocol, and the Kafka idle timeout. Silent
//! sockets of one protocol must not lock the others out, and every wait is
//! bounded by a short deadline set through the config.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{amqp_connect, amqp_round_trip, start_broker_with, WAIT};
use crate::raw::{self, mqtt_round_trip};
use crate::raw_kafka::api_versions_ok;

/// Waits (bounded) until the broker closes `s`; returns how long that took.
async fn closed_by_broker(s: &mut TcpStream) -> Duration {
    let since = Instant::now();
    let mut byte = [0u8; 64];
    loop {
        match timeout(WAIT, s.read(&mut byte))
            .await
            .expect("the broker closes the connection in time")
        {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => continue,
        }
    }
}

/// Asserts `s` is still open: nothing to read and no EOF within `within`.
async fn still_open(s: &mut TcpStream, within: Duration) {
    let mut byte = [0u8; 1];
    if let Ok(r) = timeout(within, s.read(&mut byte)).await {
        panic!("expected the connection to stay open, read returned {r:?}");
    }
}

fn metric_line(b: &broker::RunningBroker, line: &str) -> bool {
    b.metrics.encode().lines().any(|l| l == line)
}

#[tokio::test]
async fn silent_kafka_sockets_no_longer_lock_out_mqtt_and_amqp() {
    // The setup: five slots for everyone. Kafka may hold two of them,
    // and only until its first-request deadline.
    let b = start_broker_with(|c| {
        c.server.max_connections = Some(5);
        c.kafka.max_connections = Some(2);
        c.kafka.first_request_timeout_ms = 1_500;
    })
    .await;
    let kafka = b.kafka_addr.unwrap();
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(raw::tcp(kafka).await);
    }
    // Three of the five are over Kafka's own limit: closed at once.
    let mut refused = 0;
    for s in &mut silent[2..] {
        closed_by_broker(s).await;
        refused += 1;
    }
    assert_eq!(refused, 3);
    assert!(
        metric_line(
            &b,
            "broker_connections_refused_total{protocol=\"kafka\",kind=\"protocol_max_connections\"} 3"
        ),
        "{}",
        b.metrics.encode()
    );
    // While the two silent sockets still hold their slots, MQTT and AMQP get in.
    mqtt_round_trip(b.mqtt_addr, "slots-mqtt").await;
    amqp_round_trip(&b, "slots-amqp").await;
    // The two that were let in are closed when the deadline passes.
    for s in &mut silent[..2] {
        closed_by_broker(s).await;
    }
    assert!(
        metric_line(
            &b,
            "broker_protocol_errors_total{protocol=\"kafka\",kind=\"handshake_timeout\"} 2"
        ),
        "{}",
        b.metrics.encode()
    );
    // Kafka itself is served again.
    let mut client = raw::tcp(kafka).await;
    api_versions_ok(&mut client, 7).await;
    b.shutdown().await;
}

#[tokio::test]
async fn mqtt_and_amqp_refuse_at_their_own_limit_and_kafka_still_works() {
    let b = start_broker_with(|c| {
        c.server.max_connections = Some(100);
        c.mqtt.max_connections = Some(1);
        c.amqp.max_connections = Some(1);
    })
    .await;
    let _first = raw::session(b.mqtt_addr, 4, "slots-first", 30).await;
    // The second MQTT client gets the same answer as at the global limit.
    let mut second = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut second, &raw::connect(5, "slots-second", true, 30)).await;
    let connack = raw::expect_packet(&mut second, 2).await;
    assert_eq!(connack[..2], [0x00, 0x97], "CONNACK Quota exceeded");
    raw::expect_closed(&mut second).await;

    let amqp_first = amqp_connect(&b).await;
    let mut amqp_second = raw::tcp(b.amqp_addr.unwrap()).await;
    closed_by_broker(&mut amqp_second).await;
    let text = b.metrics.encode();
    for protocol in ["mqtt", "amqp"] {
        let line = format!("broker_connections_refused_total{{protocol=\"{protocol}\",kind=\"protocol_max_connections\"}} 1");
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
    // The bystander protocol is not affected.
    let mut kafka = raw::tcp(b.kafka_addr.unwrap()).await;
    api_versions_ok(&mut kafka, 1).await;
    amqp_first.close(200, "bye").await.expect("closed");
    b.shutdown().await;
}

#[tokio::test]
async fn amqp_client_that_sends_only_the_protocol_header_is_closed_after_the_deadline() {
    let b = start_broker_with(|c| c.amqp.handshake_timeout_secs = 1).await;
    let amqp = b.amqp_addr.unwrap();
    let started = Instant::now();
    let mut header_only = raw::tcp(amqp).await;
    header_only
        .write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .unwrap();
    let mut silent = raw::tcp(amqp).await;
    // connection.start arrives; then nothing more is sent by the client.
    let mut start = [0u8; 7];
    timeout(WAIT, header_only.read_exact(&mut start))
        .await
        .expect("connection.start in time")
        .expect("a frame header");
    assert_eq!(start[0], 1, "a method frame");
    closed_by_broker(&mut header_only).await;
    closed_by_broker(&mut silent).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed only after the deadline, took {waited:?}"
    );
    assert!(
        metric_line(
            &b,
            "broker_protocol_errors_total{protocol=\"amqp\",kind=\"handshake_timeout\"} 2"
        ),
        "{}",
        b.metrics.encode()
    );
    mqtt_round_trip(b.mqtt_addr, "slots-after-amqp").await;
    b.shutdown().await;
}

#[tokio::test]
async fn idle_kafka_connection_is_closed_and_a_busy_one_is_not() {
    let b = start_broker_with(|c| c.kafka.connections_max_idle_ms = 600).await;
    let kafka = b.kafka_addr.unwrap();
    let mut idle = raw::tcp(kafka).await;
    api_versions_ok(&mut idle, 1).await;
    let mut busy = raw::tcp(kafka).await;
    // Busy: a request every 200 ms for twice the idle timeout.
    for i in 0..6 {
        api_versions_ok(&mut busy, i).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waited = closed_by_broker(&mut idle).await;
    assert!(waited < WAIT, "{waited:?}");
    api_versions_ok(&mut busy, 99).await;
    still_open(&mut busy, Duration::from_millis(100)).await;
    assert!(
        metric_line(
            &b,
            "broker_protocol_errors_total{protocol=\"kafka\",kind=\"idle_timeout\"} 1"
        ),
        "{}",
        b.metrics.encode()
    );
    amqp_round_trip(&b, "slots-after-kafka").await;
    mqtt_round_trip(b.mqtt_addr, "slots-after-kafka").await;
    b.shutdown().await;
}
