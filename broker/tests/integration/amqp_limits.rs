//! AMQP memory bounds (issue 15): the per-connection outbound bound with
//! backpressure (a publisher of unroutable mandatory messages that never
//! reads its returns is no longer read), the slow-reader disconnect, the
//! memory high-watermark (`connection.blocked` / `unblocked`, with pika),
//! the per-connection cap on content being assembled (506), and the limits
//! on queues, exchanges, bindings and the default queue length. Each test
//! finishes with a Kafka round trip on the same broker; the memory tests run
//! the broker as a child process and bound its RSS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use broker::amqp::codec::{self, Frame};
use bytes::{BufMut, BytesMut};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::{BasicProperties, ExchangeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::broker_process::BrokerProcess;
use crate::common::{amqp_connect, amqp_connect_to, start_broker_with, WAIT};
use crate::raw_kafka;

const MIB: usize = 1 << 20;

/// A broker process (on a temporary data directory) serving Kafka and AMQP
/// on ephemeral ports with `amqp` as the `[amqp]` section of its config file.
fn spawn_broker(amqp: &str) -> (BrokerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("broker.toml");
    std::fs::write(&path, format!("[amqp]\nstorage = \"memory\"\n{amqp}\n")).expect("config");
    let path = path.to_str().expect("utf-8 path").to_string();
    let broker = BrokerProcess::spawn_with_data_dir(&[
        "--config",
        &path,
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
    ]);
    (broker, dir)
}

/// A field of /proc/PID/status in bytes (VmRSS, VmHWM).
fn status_bytes(pid: u32, field: &str) -> usize {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// A raw AMQP client: frames built with the broker's codec.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects with small socket buffers (so the kernel hides little of
    /// what the broker holds back) and logs in as guest.
    async fn login(addr: SocketAddr) -> Raw {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
        socket.set_send_buffer_size(16 * 1024).expect("SO_SNDBUF");
        let stream = timeout(WAIT, socket.connect(addr))
            .await
            .expect("connect in time")
            .expect("AMQP listener accepts");
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
        };
        raw.write(codec::PROTOCOL_HEADER).await;
        match raw.recv().await {
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_))) => {}
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
                heartbeat: 0,
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
        timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    async fn method(&mut self, channel: u16, m: AMQPClass) {
        let mut out = BytesMut::new();
        codec::put_method(&mut out, channel, m);
        self.write(&out).await;
    }

    async fn open_channel(&mut self, ch: u16) {
        self.method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await;
        match self.recv().await {
            Frame::Method(c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) if c == ch => {}
            other => panic!("expected channel.open-ok on {ch}, got {other:?}"),
        }
    }

    /// The next frame.
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
}

/// A content header frame announcing `size` bytes of body (no properties).
fn content_header(ch: u16, size: u64) -> Vec<u8> {
    let mut f = Vec::new();
    f.put_u8(2);
    f.put_u16(ch);
    f.put_u32(14);
    f.put_u16(60); // class basic
    f.put_u16(0); // weight
    f.put_u64(size);
    f.put_u16(0); // no property flags
    f.put_u8(0xCE);
    f
}

/// A content body frame.
fn body_frame(ch: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + 8);
    f.put_u8(3);
    f.put_u16(ch);
    f.put_u32(body.len() as u32);
    f.put_slice(body);
    f.put_u8(0xCE);
    f
}

fn publish_method(ch: u16, exchange: &str, key: &str, mandatory: bool) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::put_method(
        &mut out,
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: key.into(),
            mandatory,
            immediate: false,
        })),
    );
    out.to_vec()
}

/// A publisher of unroutable mandatory messages that never reads its
/// basic.returns: once 64 KiB of frames wait for it, the broker stops
/// reading it, so the client's writes stall after little more than the
/// socket buffers hold and the broker's memory stays flat. Before, every
/// return was queued (unbounded) and the client could write all it liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_nobody_reads_stop_the_publisher_being_read() {
    let (broker, _dir) = spawn_broker("max_outbound_bytes = 65536");
    let pid = broker.pid();
    let mut raw = Raw::login(broker.amqp()).await;
    raw.open_channel(1).await;
    let rss_before = status_bytes(pid, "VmRSS");
    let body = vec![b'r'; 60 * 1024];
    let mut one = publish_method(1, "amq.direct", "nowhere", true);
    one.extend(content_header(1, body.len() as u64));
    one.extend(body_frame(1, &body));
    let written = Arc::new(AtomicUsize::new(0));
    let (mut rd, mut wr) = raw.stream.into_split();
    let flood = {
        let written = written.clone();
        tokio::spawn(async move {
            // At most 256 MiB, a bound for the test itself.
            while written.load(Ordering::SeqCst) < 256 * MIB {
                if wr.write_all(&one).await.is_err() {
                    break;
                }
                written.fetch_add(one.len(), Ordering::SeqCst);
            }
            wr
        })
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    let sent = written.load(Ordering::SeqCst);
    let rss = status_bytes(pid, "VmRSS");
    assert!(
        sent < 48 * MIB,
        "the broker kept reading a publisher whose returns nobody reads: {sent} bytes accepted"
    );
    assert!(
        rss < rss_before + 48 * MIB,
        "RSS grew from {rss_before} to {rss} bytes (bound: +48 MiB)"
    );
    // Reading the returns lets the publisher go on: they are all there.
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        match timeout(Duration::from_millis(500), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => {}
        }
    }
    assert!(got > MIB, "returns arrive once read ({got} bytes)");
    assert!(
        written.load(Ordering::SeqCst) > sent,
        "the publisher is read again once its returns are"
    );
    flood.abort();
    raw_kafka::round_trip(broker.kafka()).await;
}

/// A consumer that reads about 2 KB/s while megabytes wait for it: once its
/// outbound queue (64 KiB here) is full it must drain below half within
/// `slow_reader_timeout_secs` (2 s here) or be disconnected; its
/// unacknowledged deliveries go back to the queue. Before, a reader this
/// slow kept its connection (each 64 KiB write just finished within the
/// 30 s write timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reading_2_kb_per_second_is_disconnected() {
    let (broker, _dir) = spawn_broker("max_outbound_bytes = 65536\nslow_reader_timeout_secs = 2");
    let pid = broker.pid();
    let conn = amqp_connect_to(broker.amqp()).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        "slowq",
        QueueDeclareOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    const MESSAGES: u32 = 300;
    let body = vec![b's'; 64 * 1024];
    for _ in 0..MESSAGES {
        ch.basic_publish(
            "",
            "slowq",
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    }
    let rss_before = status_bytes(pid, "VmRSS");
    let mut raw = Raw::login(broker.amqp()).await;
    raw.open_channel(1).await;
    raw.method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "slowq".into(),
            consumer_tag: "slow".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: true,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    let started = Instant::now();
    let mut buf = [0u8; 2048];
    let mut slow = 0usize;
    for _ in 0..8 {
        if let Ok(Ok(n)) = timeout(Duration::from_millis(100), raw.stream.read(&mut buf)).await {
            slow += n;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rss = status_bytes(pid, "VmRSS");
    assert!(
        rss < rss_before + 32 * MIB,
        "a slow consumer does not make the broker buffer its queue: RSS {rss_before} -> {rss} ({slow} bytes read)"
    );
    // Now read as fast as possible: the broker must have closed the socket.
    let mut rest = vec![0u8; 256 * 1024];
    let mut fast = 0usize;
    let eof = timeout(Duration::from_secs(10), async {
        loop {
            match raw.stream.read(&mut rest).await {
                Ok(0) | Err(_) => return,
                Ok(n) => fast += n,
            }
        }
    })
    .await;
    assert!(
        eof.is_ok(),
        "a consumer reading ~2 KB/s was still connected after {:?} ({slow} + {fast} bytes read)",
        started.elapsed()
    );
    assert!(
        fast + slow < (MESSAGES as usize) * body.len() / 2,
        "disconnected long before the queue was delivered ({} bytes)",
        fast + slow
    );
    // Nothing acknowledged is lost: every delivery went back to the queue.
    let ok = timeout(WAIT, async {
        loop {
            let q = ch
                .queue_declare(
                    "slowq",
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .expect("passive declare");
            if q.message_count() == MESSAGES {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "the slow consumer's deliveries are requeued");
    raw_kafka::round_trip(broker.kafka()).await;
}

/// 64 channels each announce a 128 MiB message and send 1 MiB of it: the
/// connection's content being assembled (8 MiB allowed here) is capped and
/// the connection closed with 506 RESOURCE_ERROR. Peak RSS stays under the
/// cap plus a margin (+40 MiB); before, all 64 MiB were held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_being_assembled_is_capped_per_connection() {
    let (broker, _dir) = spawn_broker("max_connection_content_bytes = 8388608");
    let pid = broker.pid();
    let mut raw = Raw::login(broker.amqp()).await;
    for ch in 1..=64u16 {
        raw.open_channel(ch).await;
    }
    let rss_before = status_bytes(pid, "VmRSS");
    let part = vec![b'c'; 128 * 1024 - 8];
    let (mut rd, mut wr) = raw.stream.into_split();
    let flood = tokio::spawn(async move {
        for ch in 1..=64u16 {
            let mut start = publish_method(ch, "", "nowhere", false);
            start.extend(content_header(ch, 128 * MIB as u64));
            if wr.write_all(&start).await.is_err() {
                return;
            }
        }
        for ch in 1..=64u16 {
            for _ in 0..8 {
                if wr.write_all(&body_frame(ch, &part)).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut buf = raw.buf;
    let close = timeout(Duration::from_secs(30), async {
        loop {
            if let Some(f) = codec::next_frame(&mut buf, u32::MAX).expect("valid frames") {
                if let Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c))) = f
                {
                    return c;
                }
                continue;
            }
            let n = rd.read_buf(&mut buf).await.expect("read");
            assert!(n > 0, "closed without connection.close");
        }
    })
    .await
    .expect("connection.close in time");
    assert_eq!(close.reply_code, 506, "{close:?}");
    assert!(
        close
            .reply_text
            .as_str()
            .contains("max_connection_content_bytes"),
        "{close:?}"
    );
    flood.abort();
    let peak = status_bytes(pid, "VmHWM");
    assert!(
        peak < rss_before + 40 * MIB,
        "peak RSS {peak} bytes, from {rss_before} before (bound: 8 MiB cap + 32 MiB)"
    );
    raw_kafka::round_trip(broker.kafka()).await;
}

/// The pika script: publishes 256 KiB messages until the broker sends
/// connection.blocked, drains the queue on a second connection, waits for
/// connection.unblocked and publishes (with a confirm) again.
const BLOCKED_SCRIPT: &str = r#"
import sys, time
import pika

host, port = sys.argv[1], int(sys.argv[2])
params = pika.ConnectionParameters(host=host, port=port,
    credentials=pika.PlainCredentials("guest", "guest"), heartbeat=0)
pub = pika.BlockingConnection(params)
state = {"blocked": None, "unblocked": False}
def on_blocked(conn, frame):
    state["blocked"] = frame.method.reason
def on_unblocked(conn, frame):
    state["unblocked"] = True
pub.add_on_connection_blocked_callback(on_blocked)
pub.add_on_connection_unblocked_callback(on_unblocked)
ch = pub.channel()
ch.queue_declare(queue="wm")
body = b"w" * (256 * 1024)
sent = 0
deadline = time.time() + 30
while state["blocked"] is None and sent < 200 and time.time() < deadline:
    ch.basic_publish(exchange="", routing_key="wm", body=body)
    sent += 1
    pub.process_data_events(time_limit=0.02)
print("blocked %s after %d" % (state["blocked"], sent), flush=True)
if state["blocked"] is None:
    sys.exit(1)
con = pika.BlockingConnection(params)
cch = con.channel()
drained = 0
deadline = time.time() + 30
while not state["unblocked"] and time.time() < deadline:
    m, p, b = cch.basic_get("wm", auto_ack=True)
    if m is not None:
        drained += 1
    else:
        pub.process_data_events(time_limit=0.1)
print("unblocked %s after draining %d" % (state["unblocked"], drained), flush=True)
if not state["unblocked"]:
    sys.exit(2)
ch2 = pub.channel()
ch2.confirm_delivery()
ch2.basic_publish(exchange="", routing_key="wm", body=b"after", mandatory=True)
print("resumed", flush=True)
con.close()
pub.close()
"#;

/// The memory high-watermark: publishers are told `connection.blocked` (pika
/// announces the capability) and not read; once consumers have drained the
/// queues below the low watermark they get `connection.unblocked` and
/// publishing resumes. Before, nothing bounded the queued bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_blocked_at_the_memory_watermark_and_resume() {
    assert!(
        Command::new("python3")
            .args(["-c", "import pika"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "python3 with pika is needed: python3 -m pip install pika (cargo xtask ci installs it)"
    );
    let b = start_broker_with(|c| c.amqp.memory_high_watermark_bytes = Some(8 * MIB as u64)).await;
    let addr = b.amqp_addr.expect("AMQP");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["90", "python3", "-c", BLOCKED_SCRIPT])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("script thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pika: {stdout}\n{stderr}");
    assert!(stdout.contains("blocked low on memory"), "{stdout}");
    assert!(stdout.contains("unblocked True"), "{stdout}");
    assert!(stdout.contains("resumed"), "{stdout}");
    let hub = b.amqp.as_ref().expect("AMQP hub");
    assert!(
        hub.memory_held() < 8 * MIB,
        "held {} bytes",
        hub.memory_held()
    );
    assert!(
        b.metrics.encode().contains("kind=\"memory_alarm\""),
        "the alarm is counted"
    );
    raw_kafka::round_trip(b.kafka_addr.expect("Kafka")).await;
}

fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// Queues, exchanges and bindings are limited in total (406 on the channel,
/// as RabbitMQ answers its vhost limits), and a queue declared without
/// `x-max-length` gets `amqp.default_max_queue_length` (reject-publish), while an
/// explicit `x-max-length` wins. Each is counted in metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_exchange_and_binding_limits_and_default_queue_length() {
    let b = start_broker_with(|c| {
        c.amqp.max_queues = 3;
        c.amqp.max_exchanges = 7; // the 6 built-in ones and one more
        c.amqp.max_bindings = 2;
        c.amqp.default_max_length = Some(3);
    })
    .await;
    let conn = amqp_connect(&b).await;
    let ch = conn.create_channel().await.expect("channel");
    let declare = |name: &'static str, args: lapin::types::FieldTable| {
        let ch = ch.clone();
        async move {
            ch.queue_declare(name, QueueDeclareOptions::default(), args)
                .await
        }
    };
    declare("q1", lapin::types::FieldTable::default())
        .await
        .expect("q1");
    let mut wins = lapin::types::FieldTable::default();
    wins.insert("x-max-length".into(), AMQPValue::LongInt(10));
    declare("q2", wins).await.expect("q2");
    declare("q3", lapin::types::FieldTable::default())
        .await
        .expect("q3");
    declare("q1", lapin::types::FieldTable::default())
        .await
        .expect("redeclaring an existing queue is not a new one");
    let err = declare("q4", lapin::types::FieldTable::default())
        .await
        .expect_err("a fourth queue is over max_queues");
    assert_eq!(reply_code(&err), Some(406), "{err}");
    assert!(err.to_string().contains("queue limit"), "{err}");

    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        "x1",
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("x1");
    let err = ch
        .exchange_declare(
            "x2",
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect_err("over max_exchanges");
    assert_eq!(reply_code(&err), Some(406), "{err}");

    let ch = conn.create_channel().await.expect("channel");
    for key in ["a", "b"] {
        ch.queue_bind(
            "q1",
            "x1",
            key,
            QueueBindOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("binding under the limit");
    }
    let err = ch
        .queue_bind(
            "q1",
            "x1",
            "c",
            QueueBindOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect_err("over max_bindings");
    assert_eq!(reply_code(&err), Some(406), "{err}");

    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut nacked = Vec::new();
    for i in 0..5u8 {
        for q in ["q1", "q2"] {
            let confirm = ch
                .basic_publish(
                    "",
                    q,
                    BasicPublishOptions::default(),
                    &[i],
                    BasicProperties::default(),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            if confirm.is_nack() {
                nacked.push((q, i));
            }
        }
    }
    // The default limit refuses (reject-publish): the publisher is told with
    // a nack, and no message it was told is safe is dropped.
    assert_eq!(
        nacked,
        [("q1", 3), ("q1", 4)],
        "only q1's newest two nacked"
    );
    let hub = b.amqp.as_ref().expect("AMQP hub");
    assert_eq!(hub.queue_len("q1"), Some(3), "the default length limit");
    assert_eq!(hub.queue_len("q2"), Some(5), "x-max-length wins");
    let got = ch
        .basic_get("q1", lapin::options::BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(
        got.delivery.data,
        [0],
        "the oldest (acknowledged) message is kept"
    );
    let metrics = b.metrics.encode();
    for kind in ["max_queues", "max_exchanges", "max_bindings"] {
        assert!(
            metrics.contains(&format!("kind=\"{kind}\"")),
            "{kind} counted"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("kind=\"max_length_rejected\"") && l.ends_with(" 2")),
        "two refusals counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("max_length"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    raw_kafka::round_trip(b.kafka_addr.expect("Kafka")).await;
}
