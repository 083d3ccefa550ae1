//! Raw bytes at the AMQP listener: a wrong protocol header, a frame without
//! its end octet, a frame above the negotiated frame_max, a method on a
//! channel never opened, a content body without a header, and a silent
//! peer. Each gets what the spec says (the supported header, or
//! connection.close with the right reply code, or a dropped socket) and a
//! lapin connection opened beforehand keeps working.

use amq_protocol::protocol::{basic, channel, connection, queue, AMQPClass};
use broker::amqp::codec::{self, Frame};
use broker::RunningBroker;
use bytes::{BufMut, BytesMut};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Duration};

use crate::common::{amqp_connect as connect, start_broker, start_broker_with, WAIT};

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(broker: &RunningBroker) -> Raw {
        let stream = TcpStream::connect(broker.amqp_addr.unwrap()).await.unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Header, start-ok (PLAIN guest), tune-ok with `heartbeat`, open.
    async fn handshake(broker: &RunningBroker, heartbeat: u16) -> Raw {
        let mut raw = Raw::connect(broker).await;
        raw.write(codec::PROTOCOL_HEADER).await;
        match raw.recv().await {
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => {
                let caps = s.server_properties.inner().get("capabilities").cloned();
                let text = format!("{caps:?}");
                for cap in [
                    "publisher_confirms",
                    "basic.nack",
                    "consumer_cancel_notify",
                    "exchange_exchange_bindings",
                ] {
                    assert!(text.contains(cap), "capability {cap} in {text}");
                }
                assert!(String::from_utf8_lossy(s.mechanisms.as_bytes()).contains("PLAIN"));
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
        raw.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            })),
        )
        .await;
        let tune = match raw.recv().await {
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        raw.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat,
            })),
        )
        .await;
        raw.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        )
        .await;
        match raw.recv().await {
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
        raw
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn method(&mut self, channel: u16, m: AMQPClass) {
        let mut out = BytesMut::new();
        codec::put_method(&mut out, channel, m);
        self.write(&out).await;
    }

    /// The next frame (heartbeats included).
    async fn recv(&mut self) -> Frame {
        loop {
            if let Some(f) =
                codec::next_frame(&mut self.buf, u32::MAX).expect("the broker sends valid frames")
            {
                return f;
            }
            let n = timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("a frame in time")
                .expect("read");
            assert!(n > 0, "connection closed while waiting for a frame");
        }
    }

    /// Expects connection.close with `code`, answers close-ok, then EOF.
    async fn expect_connection_close(&mut self, code: u16) {
        loop {
            match self.recv().await {
                Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
                    assert_eq!(c.reply_code, code, "{c:?}");
                    break;
                }
                Frame::Heartbeat(_) => continue,
                other => panic!("expected connection.close {code}, got {other:?}"),
            }
        }
        self.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        )
        .await;
        self.expect_eof().await;
    }

    async fn expect_eof(&mut self) {
        let mut rest = [0u8; 64];
        loop {
            match timeout(WAIT, self.stream.read(&mut rest))
                .await
                .expect("closed in time")
            {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }
}

/// A lapin connection that must be unaffected by what the raw ones do.
async fn bystander_works(conn: &lapin::Connection) {
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "bystander",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        "",
        "bystander",
        BasicPublishOptions::default(),
        b"ok",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let got = ch
        .basic_get("bystander", BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert_eq!(got.map(|m| m.delivery.data), Some(b"ok".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_protocol_header_is_answered_with_the_supported_one() {
    let broker = start_broker().await;
    let bystander = connect(&broker).await;
    for header in [
        &b"AMQP\x01\x01\x00\x0a"[..],
        b"AMQP\x00\x00\x08\x00",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut raw = Raw::connect(&broker).await;
        raw.write(header).await;
        let mut answer = [0u8; 8];
        timeout(WAIT, raw.stream.read_exact(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&answer, codec::PROTOCOL_HEADER, "for {header:?}");
        raw.expect_eof().await;
    }
    bystander_works(&bystander).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_without_end_octet_is_a_frame_error() {
    let broker = start_broker().await;
    let bystander = connect(&broker).await;
    let mut raw = Raw::handshake(&broker, 0).await;
    let mut out = BytesMut::new();
    codec::put_method(
        &mut out,
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    let last = out.len() - 1;
    out[last] = 0x00;
    raw.write(&out).await;
    raw.expect_connection_close(501).await;
    bystander_works(&bystander).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_above_frame_max_is_refused_before_its_payload() {
    let broker = start_broker().await;
    let bystander = connect(&broker).await;
    let mut raw = Raw::handshake(&broker, 0).await;
    raw.method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    assert!(matches!(
        raw.recv().await,
        Frame::Method(1, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))
    ));
    // A body frame announcing 1 GiB: only its 7-byte header is sent.
    let mut out = BytesMut::new();
    out.put_u8(3);
    out.put_u16(1);
    out.put_u32(1 << 30);
    raw.write(&out).await;
    raw.expect_connection_close(501).await;
    // One byte over the negotiated 131072 (frame = 7 + size + 1).
    let mut raw = Raw::handshake(&broker, 0).await;
    let mut out = BytesMut::new();
    out.put_u8(3);
    out.put_u16(1);
    out.put_u32(131_072 - 8 + 1);
    raw.write(&out).await;
    raw.expect_connection_close(501).await;
    bystander_works(&bystander).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_on_an_unopened_channel_is_a_channel_error() {
    let broker = start_broker().await;
    let bystander = connect(&broker).await;
    let mut raw = Raw::handshake(&broker, 0).await;
    raw.method(
        5,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    raw.expect_connection_close(504).await;
    bystander_works(&bystander).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_body_without_header_is_an_unexpected_frame() {
    let broker = start_broker().await;
    let bystander = connect(&broker).await;
    let mut raw = Raw::handshake(&broker, 0).await;
    raw.method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    assert!(matches!(
        raw.recv().await,
        Frame::Method(1, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))
    ));
    raw.write(&[3, 0, 1, 0, 0, 0, 2, b'h', b'i', 0xCE]).await;
    raw.expect_connection_close(505).await;
    // A publish followed by another method instead of its header: 505 as well.
    let mut raw = Raw::handshake(&broker, 0).await;
    raw.method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    raw.recv().await;
    raw.method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: false,
        })),
    )
    .await;
    raw.method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        })),
    )
    .await;
    raw.expect_connection_close(505).await;
    bystander_works(&bystander).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_sent_and_a_silent_peer_is_dropped() {
    let broker = start_broker_with(|c| c.amqp.heartbeat_secs = 1).await;
    let bystander = connect(&broker).await;
    let mut raw = Raw::handshake(&broker, 1).await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        raw.recv().await,
        Frame::Heartbeat(0),
        "the broker sends heartbeats when idle"
    );
    // Stay silent: the broker gives up after two intervals.
    raw.expect_eof().await;
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500) && after < WAIT,
        "dropped after {after:?}"
    );
    bystander_works(&bystander).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_field_tables_do_not_crash_the_broker() {
    let broker = start_broker().await;
    let bystander = connect(&broker).await;
    let mut raw = Raw::handshake(&broker, 0).await;
    raw.method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    raw.recv().await;
    // queue.declare whose arguments nest tables 18,000 deep ('F' + length each),
    // inside one frame under frame_max.
    let depth = 18_000usize;
    let mut table = Vec::new();
    for i in 0..depth {
        // key "a", type 'F', then the inner table's length.
        let inner = (depth - i - 1) * 7;
        table.extend_from_slice(&[1, b'a', b'F']);
        table.extend_from_slice(&(inner as u32).to_be_bytes());
    }
    let mut payload = BytesMut::new();
    payload.put_u16(50);
    payload.put_u16(10);
    payload.put_u16(0);
    payload.put_u8(1);
    payload.put_u8(b'q');
    payload.put_u8(0);
    payload.put_u32(table.len() as u32);
    payload.put_slice(&table);
    let mut out = BytesMut::new();
    out.put_u8(1);
    out.put_u16(1);
    out.put_u32(payload.len() as u32);
    out.put_slice(&payload);
    out.put_u8(0xCE);
    raw.write(&out).await;
    raw.expect_connection_close(502).await;
    bystander_works(&bystander).await;
    broker.shutdown().await;
}
