//! The state machine fed with byte vectors: frames a client sends, annotated
//! where they are written out by hand, and the frames the broker queues.

use std::path::Path;

use amq_protocol::protocol::queue;
use amq_protocol::types::FieldTable;
use tokio::sync::{mpsc, Semaphore};

use super::*;
use crate::amqp::config::AmqpConfig;
use crate::fixtures::amqp as fx;
use crate::metrics::Metrics;
use crate::platform::Platform;
use crate::storage::StorageMode;

/// channel.open on channel 1.
const CHANNEL_OPEN: &[u8] = &[
    0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, // method frame, channel 1, size 5
    0x00, 0x14, 0x00, 0x0A, // class 20 (channel), method 10 (open)
    0x00, // reserved short string
    0xCE, // frame end
];

/// channel.open-ok on channel 1.
const CHANNEL_OPEN_OK: &[u8] = &[
    0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x08, // method frame, channel 1, size 8
    0x00, 0x14, 0x00, 0x0B, // class 20 (channel), method 11 (open-ok)
    0x00, 0x00, 0x00, 0x00, // reserved long string
    0xCE,
];

/// connection.close from the client: 200, no text, no failing method.
const CONNECTION_CLOSE: &[u8] = &[
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0B, // method frame, channel 0, size 11
    0x00, 0x0A, 0x00, 0x32, // class 10 (connection), method 50 (close)
    0x00, 0xC8, 0x00, // reply code 200, empty reply text
    0x00, 0x00, 0x00, 0x00, // class id 0, method id 0
    0xCE,
];

/// connection.close-ok.
const CONNECTION_CLOSE_OK: &[u8] = &[
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, // method frame, channel 0, size 4
    0x00, 0x0A, 0x00, 0x33, // class 10 (connection), method 51 (close-ok)
    0xCE,
];

struct Client {
    session: Session,
    rx: mpsc::UnboundedReceiver<Bytes>,
}

fn client(configure: impl FnOnce(&mut AmqpConfig)) -> Client {
    let mut config = AmqpConfig {
        storage: StorageMode::Memory,
        ..AmqpConfig::default()
    };
    configure(&mut config);
    let metrics = Metrics::new(&Platform::detect(), 10);
    let hub = AmqpHub::open(
        config,
        Path::new("."),
        metrics,
        Arc::new(Semaphore::new(10)),
    )
    .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let tuning = Tuning {
        frame_max: 131_072,
        channel_max: 16,
        heartbeat: 0,
        blocked_capable: false,
    };
    let out = hub.outbound(tx);
    let conn = hub.connect(out.clone(), tuning.frame_max);
    Client {
        session: Session::new(hub, conn, out, tuning),
        rx,
    }
}

impl Client {
    /// Feeds `bytes` and returns the bytes queued for the client.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::from(bytes);
        self.session.process(&mut buf);
        self.sent()
    }

    fn sent(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Ok(b) = self.rx.try_recv() {
            out.extend_from_slice(&b);
        }
        out
    }

    /// The methods among `bytes` (content frames skipped).
    fn methods(bytes: &[u8]) -> Vec<(u16, AMQPClass)> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec::next_frame(&mut buf, u32::MAX).unwrap() {
            if let Frame::Method(ch, m) = f {
                out.push((ch, m));
            }
        }
        out
    }

    fn errors(&self) -> String {
        self.session.hub.metrics.encode()
    }
}

fn method_bytes(channel: u16, method: AMQPClass) -> Vec<u8> {
    method_frame(channel, method).to_vec()
}

/// The reply code of the connection.close among `bytes`.
fn connection_close_code(bytes: &[u8]) -> u16 {
    match Client::methods(bytes).as_slice() {
        [(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))] => c.reply_code,
        other => panic!("expected one connection.close, got {other:?}"),
    }
}

#[test]
fn channel_open_is_answered_with_open_ok() {
    let mut c = client(|_| {});
    assert_eq!(c.feed(CHANNEL_OPEN), CHANNEL_OPEN_OK);
}

#[test]
fn a_partial_frame_waits_for_more_bytes() {
    let mut c = client(|_| {});
    let mut buf = BytesMut::from(&CHANNEL_OPEN[..6]);
    c.session.process(&mut buf);
    assert_eq!(buf.len(), 6);
    assert!(c.sent().is_empty());
    buf.extend_from_slice(&CHANNEL_OPEN[6..]);
    c.session.process(&mut buf);
    assert!(buf.is_empty());
    assert_eq!(c.sent(), CHANNEL_OPEN_OK);
}

#[test]
fn client_close_is_answered_and_ends_the_connection() {
    let mut c = client(|_| {});
    assert_eq!(c.feed(CONNECTION_CLOSE), CONNECTION_CLOSE_OK);
    assert_eq!(c.session.done.as_deref(), Some("closed by the client"));
}

#[test]
fn a_bad_frame_end_is_a_frame_error() {
    let mut c = client(|_| {});
    let mut bad = CHANNEL_OPEN.to_vec();
    *bad.last_mut().unwrap() = 0x00; // frame end must be 0xCE
    let out = c.feed(&bad);
    assert_eq!(connection_close_code(&out), 501); // FRAME_ERROR
    assert!(
        c.session.done.is_some(),
        "framing is lost: the connection ends"
    );
    assert!(c.errors().contains("protocol=\"amqp\""));
}

#[test]
fn a_method_on_an_unopened_channel_closes_the_connection() {
    let mut c = client(|_| {});
    let select = AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
        nowait: false,
    }));
    let out = c.feed(&method_bytes(3, select));
    assert_eq!(connection_close_code(&out), 504); // CHANNEL_ERROR
    assert!(c.session.closing.is_some() && c.session.done.is_none());
    // Until close-ok only close-ok counts: a channel.open is dropped.
    assert!(c.feed(CHANNEL_OPEN).is_empty());
    assert!(c.feed(CONNECTION_CLOSE_OK).is_empty());
    assert_eq!(c.session.done.as_deref(), Some("closed by the broker"));
    assert!(c
        .errors()
        .contains("broker_protocol_errors_total{protocol=\"amqp\",kind=\"connection_error\"} 1"));
}

#[test]
fn a_channel_above_channel_max_is_refused() {
    let mut c = client(|_| {});
    let mut open = CHANNEL_OPEN.to_vec();
    open[1..3].copy_from_slice(&17u16.to_be_bytes()); // channel 17 > channel_max 16
    assert_eq!(connection_close_code(&c.feed(&open)), 504);
}

#[test]
fn a_content_header_without_publish_is_unexpected() {
    let mut c = client(|_| {});
    c.feed(CHANNEL_OPEN);
    let mut frames = fx::publish_frames(1, b"hi", 131_072);
    // Drop the basic.publish method frame: header and body remain.
    let mut all = frames.clone();
    let Some(Frame::Method(..)) = codec::next_frame(&mut frames, u32::MAX).unwrap() else {
        panic!("fixture starts with a method");
    };
    let orphan = all.split_off(all.len() - frames.len());
    assert_eq!(connection_close_code(&c.feed(&orphan)), 505); // UNEXPECTED_FRAME
}

#[test]
fn confirmed_publish_is_acked_after_the_batch() {
    let mut c = client(|_| {});
    c.feed(CHANNEL_OPEN);
    let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: "orders.eu".into(),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        nowait: true,
        arguments: FieldTable::default(),
    }));
    c.feed(&method_bytes(1, declare));
    let select = AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
        nowait: false,
    }));
    let out = c.feed(&method_bytes(1, select));
    assert!(matches!(
        Client::methods(&out).as_slice(),
        [(1, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)))]
    ));
    // Two publishes in one read: one `multiple` ack once the batch is done.
    let publish = |body: &[u8], out: &mut BytesMut| {
        let method = basic::Publish {
            exchange: "".into(), // the default exchange routes to the queue by name
            ..fx::publish_method()
        };
        codec::put_method(out, 1, AMQPClass::Basic(basic::AMQPMethod::Publish(method)));
        codec::put_content(out, 1, &fx::properties(), body, 131_072);
    };
    let mut two = BytesMut::new();
    publish(b"one", &mut two);
    publish(b"two", &mut two);
    assert!(c.feed(&two).is_empty(), "confirms wait for the batch");
    assert!(
        c.session.take_need_sync().is_none(),
        "nothing persistent on disk in memory mode"
    );
    c.session.send_confirms();
    match Client::methods(&c.sent()).as_slice() {
        [(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a)))] => {
            assert_eq!((a.delivery_tag, a.multiple), (2, true));
        }
        other => panic!("expected one basic.ack, got {other:?}"),
    }
}

#[test]
fn a_too_large_message_closes_only_its_channel() {
    let mut c = client(|config| config.max_message_bytes = 2);
    c.feed(CHANNEL_OPEN);
    let out = c.feed(&fx::publish_frames(1, b"too big", 131_072));
    match Client::methods(&out).as_slice() {
        [(1, AMQPClass::Channel(channel::AMQPMethod::Close(close)))] => {
            assert_eq!(close.reply_code, 406); // PRECONDITION_FAILED
        }
        other => panic!("expected channel.close, got {other:?}"),
    }
    assert!(c.session.closing.is_none(), "the connection stays open");
    assert!(c
        .errors()
        .contains("broker_protocol_errors_total{protocol=\"amqp\",kind=\"channel_error\"} 1"));
}

/// basic.publish on `ch`, a content header announcing `size` bytes, and
/// `body` as one body frame.
fn partial_publish(ch: u16, size: u64, body: &[u8]) -> Vec<u8> {
    let mut out = method_bytes(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Publish(fx::publish_method())),
    );
    out.extend_from_slice(&[2]);
    out.extend_from_slice(&ch.to_be_bytes());
    out.extend_from_slice(&14u32.to_be_bytes());
    out.extend_from_slice(&60u16.to_be_bytes()); // class basic
    out.extend_from_slice(&0u16.to_be_bytes()); // weight
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // no properties
    out.push(0xCE);
    out.push(3);
    out.extend_from_slice(&ch.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out.push(0xCE);
    out
}

fn channel_open(ch: u16) -> Vec<u8> {
    let mut open = CHANNEL_OPEN.to_vec();
    open[1..3].copy_from_slice(&ch.to_be_bytes());
    open
}

#[test]
fn content_being_assembled_is_capped_over_all_channels() {
    let mut c = client(|config| config.max_connection_content_bytes = 10);
    c.feed(&channel_open(1));
    c.feed(&channel_open(2));
    // (Frames sent count in the memory total too: no writer marks them written here.)
    let base = c.session.hub.memory_held();
    assert!(c.feed(&partial_publish(1, 100, b"abcdef")).is_empty());
    assert_eq!(c.session.content.bytes(), 6);
    assert_eq!(
        c.session.hub.memory_held(),
        base + 6,
        "counted in the memory total"
    );
    let out = c.feed(&partial_publish(2, 100, b"ghijk"));
    assert_eq!(connection_close_code(&out), 506); // RESOURCE_ERROR
    assert_eq!(c.session.content.bytes(), 0);
    assert!(c.errors().contains("kind=\"max_connection_content_bytes\""));
}
