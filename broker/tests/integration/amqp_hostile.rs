//! Hostile input at the AMQP listener of a real `broker` process, sent
//! before any login: methods only a server may send, with field tables
//! nested deep enough to overflow a recursive parser. The process must answer
//! with connection.close and stay up for MQTT and Kafka clients. A separate
//! process, not the in-process harness, because a stack overflow aborts the
//! whole process and would take the test binary down with it; flat server
//! methods, which cannot crash anything, are checked in-process with the
//! metric that counts them.

use std::net::SocketAddr;
use std::time::Duration;

use amq_protocol::protocol::{connection, AMQPClass};
use broker::amqp::codec::{self, Frame};
use bytes::{BufMut, BytesMut};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::broker_process::BrokerProcess;
use crate::common::{start_broker, WAIT};
use crate::raw_kafka;

/// Arrays nested in the crash frame: ~130 KB, under the default frame_max of 128 KiB.
const CRASH_DEPTH: usize = 26_000;

/// Flags for a broker process serving MQTT, Kafka and AMQP on ephemeral ports.
const THREE_PROTOCOLS: &[&str] = &[
    "--mqtt-bind",
    "127.0.0.1:0",
    "--kafka-bind",
    "127.0.0.1:0",
    "--amqp-bind",
    "127.0.0.1:0",
    "--no-websocket",
    "--no-metrics",
    "--stats-interval",
    "0",
];

/// Says how the process ended, with the end of its stderr.
fn death_note(broker: &mut BrokerProcess) -> String {
    let status = broker
        .exited(Duration::from_secs(2))
        .map_or("still running".to_string(), |s| s.to_string());
    let stderr = broker.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n");
    format!("broker process: {status}; stderr tail:\n{tail}")
}

/// A method frame on channel 0 around `payload`.
fn method_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + codec::FRAME_OVERHEAD);
    f.put_u8(1);
    f.put_u16(0);
    f.put_u32(payload.len() as u32);
    f.put_slice(payload);
    f.put_u8(0xCE);
    f
}

/// connection.start (class 10, method 10) whose server_properties hold
/// `{"a": [[[…]]]}`, `depth` arrays deep; mechanisms and locales follow.
fn nested_connection_start(depth: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 * depth + 64);
    p.put_u16(10);
    p.put_u16(10);
    p.put_u8(0);
    p.put_u8(9);
    p.put_u32((2 + 5 * depth) as u32);
    p.put_u8(1);
    p.put_u8(b'a');
    for level in 0..depth {
        p.put_u8(b'A');
        p.put_u32((5 * (depth - level - 1)) as u32);
    }
    for s in [&b"PLAIN"[..], b"en_US"] {
        p.put_u32(s.len() as u32);
        p.put_slice(s);
    }
    method_frame(&p)
}

/// Reads frames until one whole frame is there; `Err` on EOF or reset.
async fn next_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Result<Frame, String> {
    loop {
        if let Some(f) = codec::next_frame(buf, 1 << 20).map_err(|e| e.to_string())? {
            return Ok(f);
        }
        match timeout(WAIT, s.read_buf(buf)).await {
            Err(_) => return Err("no frame in time".into()),
            Ok(Ok(0)) => return Err("connection closed without a frame".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
        }
    }
}

/// Opens an AMQP connection and reads the server's connection.start.
async fn amqp_hello(addr: SocketAddr) -> (TcpStream, BytesMut) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(codec::PROTOCOL_HEADER).await.unwrap();
    let mut buf = BytesMut::new();
    match next_frame(&mut s, &mut buf).await {
        Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_)))) => {}
        other => panic!("expected connection.start, got {other:?}"),
    }
    (s, buf)
}

/// Reads frames until connection.close and returns (reply code, class id, method id).
async fn close_of(s: &mut TcpStream, buf: &mut BytesMut) -> (u16, u16, u16) {
    loop {
        match next_frame(s, buf).await {
            Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
                return (c.reply_code, c.class_id, c.method_id)
            }
            Ok(_) => {}
            Err(e) => panic!("expected connection.close: {e}"),
        }
    }
}

/// Sends `method` on `channel` as a client would.
async fn send_method(s: &mut TcpStream, channel: u16, method: AMQPClass) {
    let mut out = BytesMut::new();
    codec::put_method(&mut out, channel, method);
    s.write_all(&out).await.unwrap();
}

/// One MQTT round trip: subscribe, publish at QoS 1, receive it back.
async fn mqtt_round_trip(c: &AsyncClient, el: &mut EventLoop, topic: &str) {
    c.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    c.publish(topic, QoS::AtLeastOnce, false, b"still here".to_vec())
        .await
        .unwrap();
    timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    assert_eq!(&p.payload[..], b"still here");
                    return;
                }
                Ok(_) => {}
                Err(e) => panic!("MQTT bystander lost its connection: {e:?}"),
            }
        }
    })
    .await
    .expect("MQTT bystander gets its message back in time");
}

#[tokio::test]
async fn nested_connection_start_is_refused_and_the_broker_survives() {
    let mut broker = BrokerProcess::spawn_with_data_dir(THREE_PROTOCOLS);
    let mut opts = MqttOptions::new(
        "bystander",
        broker.mqtt().ip().to_string(),
        broker.mqtt().port(),
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (mqtt, mut el) = AsyncClient::new(opts, 16);
    mqtt_round_trip(&mqtt, &mut el, "hostile/before").await;

    let (mut s, mut buf) = amqp_hello(broker.amqp()).await;
    let crash = nested_connection_start(CRASH_DEPTH);
    assert!(
        crash.len() > 130_000 && crash.len() <= 131_072,
        "{}",
        crash.len()
    );
    // The peer may close (or die) before reading all of it.
    let _ = s.write_all(&crash).await;
    let close = match next_frame(&mut s, &mut buf).await {
        Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => c,
        Ok(other) => panic!("expected connection.close, got {other:?}"),
        Err(e) => panic!(
            "expected connection.close, got: {e}; {}",
            death_note(&mut broker)
        ),
    };
    assert!(
        matches!(close.reply_code, 503 | 505),
        "reply code {} ({})",
        close.reply_code,
        close.reply_text
    );
    assert_eq!(
        (close.class_id, close.method_id),
        (10, 10),
        "names connection.start"
    );
    drop(s);

    assert_eq!(
        broker.exited(Duration::from_millis(200)),
        None,
        "the broker process is alive"
    );
    mqtt_round_trip(&mqtt, &mut el, "hostile/after").await;
    raw_kafka::round_trip(broker.kafka()).await;
    // The AMQP listener itself still greets new clients.
    drop(amqp_hello(broker.amqp()).await);
    assert_eq!(
        broker.exited(Duration::ZERO),
        None,
        "still alive at the end"
    );
}

#[tokio::test]
async fn server_methods_are_refused_in_and_after_the_handshake_and_counted() {
    let broker = start_broker().await;
    let amqp = broker.amqp_addr.unwrap();
    // In the handshake, where start-ok is expected: a basic.deliver.
    let (mut s, mut buf) = amqp_hello(amqp).await;
    let deliver = AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Deliver(
        amq_protocol::protocol::basic::Deliver {
            consumer_tag: "c".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: "k".into(),
        },
    ));
    send_method(&mut s, 0, deliver).await;
    assert_eq!(close_of(&mut s, &mut buf).await, (503, 60, 60));

    // After a complete handshake: a connection.tune.
    let (mut s, mut buf) = amqp_hello(amqp).await;
    send_method(
        &mut s,
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: Default::default(),
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
    )
    .await;
    let tune = match next_frame(&mut s, &mut buf).await {
        Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t)))) => t,
        other => panic!("expected connection.tune, got {other:?}"),
    };
    send_method(
        &mut s,
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        })),
    )
    .await;
    send_method(
        &mut s,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    )
    .await;
    match next_frame(&mut s, &mut buf).await {
        Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))) => {}
        other => panic!("expected connection.open-ok, got {other:?}"),
    }
    send_method(
        &mut s,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Tune(tune)),
    )
    .await;
    assert_eq!(close_of(&mut s, &mut buf).await, (503, 10, 30));

    let metrics = broker.metrics.encode();
    assert!(
        metrics
            .contains("broker_protocol_errors_total{protocol=\"amqp\",kind=\"server_method\"} 2"),
        "{metrics}"
    );
    broker.shutdown().await;
}
