//! Kafka SASL (SASL_PLAINTEXT) with real clients: librdkafka (the rdkafka
//! crate, PLAIN: the workspace's build has no OpenSSL, which SCRAM needs),
//! Debian's kcat (SCRAM-SHA-256), kafka-python (SCRAM-SHA-256/512; its
//! SaslHandshake v0 sends the tokens as raw frames); and raw frames for the
//! refusals: a request before the login, a mechanism not enabled, tokens
//! too large. Each refusal is answered as Kafka answers it and closes the
//! connection, and the broker keeps serving a bystander.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use broker::RunningBroker;
use bytes::{Buf, BufMut, BytesMut};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{external_tool, kafka_bootstrap, start_broker_with_users, WAIT};
use crate::raw_kafka;

const USERS: &[(&str, &str)] = &[("alice", "alice-secret"), ("bob", "bob-secret")];

fn logins(b: &RunningBroker, mechanism: &'static str, ok: bool) -> u64 {
    b.metrics.kafka.sasl_logins(mechanism, ok)
}

pub fn rdkafka_client(bootstrap: &str, user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000")
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", user)
        .set("sasl.password", password);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sasl_plain_rdkafka_produces_and_consumes() {
    let b = start_broker_with_users(USERS, |_| {}).await;
    let bootstrap = kafka_bootstrap(&b);
    let producer: FutureProducer = rdkafka_client(&bootstrap, "alice", "alice-secret")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    for i in 0..3 {
        let value = format!("plain {i}");
        producer
            .send(
                FutureRecord::<(), _>::to("sasl_plain").payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("produced after a PLAIN login");
    }
    let got = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka_client(&bootstrap, "bob", "bob-secret")
            .set("group.id", "unused")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("sasl_plain", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let (deadline, mut got) = (Instant::now() + WAIT, Vec::new());
        while got.len() < 3 && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.expect("consumed after a PLAIN login");
                got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
        }
        got
    })
    .await
    .unwrap();
    assert_eq!(got, ["plain 0", "plain 1", "plain 2"]);
    assert!(logins(&b, "PLAIN", true) >= 2);
    assert_eq!(logins(&b, "PLAIN", false), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sasl_plain_wrong_password_is_refused() {
    let b = start_broker_with_users(USERS, |_| {}).await;
    let bootstrap = kafka_bootstrap(&b);
    let err = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka_client(&bootstrap, "alice", "wrong")
            .create()
            .unwrap();
        consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .expect_err("no metadata without a login")
    })
    .await
    .unwrap();
    assert!(logins(&b, "PLAIN", false) >= 1, "{err}");
    assert_eq!(logins(&b, "PLAIN", true), 0);
    // The answer librdkafka got, on a raw connection.
    let mut s = connect(&b).await;
    assert_eq!(handshake(&mut s, 1, "PLAIN").await.0, 0);
    let (code, message) = authenticate(&mut s, b"\0alice\0wrong").await;
    assert_eq!(code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(
        message.contains("Invalid username or password"),
        "{message}"
    );
    expect_closed(&mut s).await;
}

/// kcat from Debian links the system librdkafka (with OpenSSL, so SCRAM);
/// LD_LIBRARY_PATH set by cargo would load rdkafka-sys's build instead.
pub fn kcat(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = external_tool("kcat", "-V", "kcat")
        .env_remove("LD_LIBRARY_PATH")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat starts");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).expect("kcat reads stdin");
    }
    child.wait_with_output().expect("kcat finishes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sasl_scram_sha256_kcat() {
    let b = start_broker_with_users(USERS, |_| {}).await;
    let bootstrap = kafka_bootstrap(&b);
    let sasl = |user: &'static str, password: &'static str| {
        let mut args = vec!["-b".to_string(), bootstrap.clone()];
        for x in [
            "security.protocol=SASL_PLAINTEXT".to_string(),
            "sasl.mechanisms=SCRAM-SHA-256".into(),
            format!("sasl.username={user}"),
            format!("sasl.password={password}"),
        ] {
            args.extend(["-X".to_string(), x]);
        }
        args
    };
    let (good, bad) = (sasl("alice", "alice-secret"), sasl("alice", "wrong"));
    let out = tokio::task::spawn_blocking(move || {
        let mut produce = good.clone();
        produce.extend(["-P", "-t", "sasl_scram", "-X", "acks=all"].map(String::from));
        let args: Vec<&str> = produce.iter().map(String::as_str).collect();
        let p = kcat(&args, Some("one\ntwo\n"));
        assert!(
            p.status.success(),
            "kcat -P: {}",
            String::from_utf8_lossy(&p.stderr)
        );
        let mut consume = good;
        consume.extend(
            ["-C", "-t", "sasl_scram", "-o", "beginning", "-e", "-c", "2"].map(String::from),
        );
        let args: Vec<&str> = consume.iter().map(String::as_str).collect();
        let c = kcat(&args, None);
        assert!(
            c.status.success(),
            "kcat -C: {}",
            String::from_utf8_lossy(&c.stderr)
        );
        let mut list = bad;
        list.extend(["-L", "-m", "5"].map(String::from));
        let args: Vec<&str> = list.iter().map(String::as_str).collect();
        (c, kcat(&args, None))
    })
    .await
    .unwrap();
    let (consumed, refused) = out;
    assert_eq!(String::from_utf8_lossy(&consumed.stdout), "one\ntwo\n");
    assert!(
        !refused.status.success(),
        "a wrong SCRAM password must not list metadata"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Authentication failed"), "{stderr}");
    assert!(logins(&b, "SCRAM-SHA-256", true) >= 2);
    assert!(logins(&b, "SCRAM-SHA-256", false) >= 1);
}

/// kafka-python: produce 3 messages and read them back, printing
/// `consumed a,b,c`, or `refused <error>` when the login fails.
const KAFKA_PYTHON: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
bootstrap, mechanism, user, password, topic = sys.argv[1:6]
common = dict(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
    sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password,
    request_timeout_ms=10000, api_version=(2, 5, 0))
try:
    p = KafkaProducer(max_block_ms=8000, **common)
    for i in range(3):
        p.send(topic, ("%s %d" % (mechanism, i)).encode()).get(timeout=10)
    p.close()
except Exception as e:
    print("refused %s: %s" % (type(e).__name__, e), flush=True)
    sys.exit(0)
c = KafkaConsumer(consumer_timeout_ms=10000, **common)
tp = TopicPartition(topic, 0)
c.assign([tp])
c.seek_to_beginning(tp)
got = []
for m in c:
    got.append(m.value.decode())
    if len(got) == 3:
        break
c.close()
print("consumed " + ",".join(got), flush=True)
"#;

/// A Python with the kafka module: `python3` on PATH, else the system one
/// (Debian's python3-kafka), which a pyenv or venv python3 does not see.
pub fn python_with_kafka() -> &'static str {
    for python in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(python)
            .args(["-c", "import kafka"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return python;
        }
    }
    panic!("python3 with kafka-python is needed: install the Debian package python3-kafka (cargo xtask ci installs it)")
}

async fn kafka_python(
    b: &RunningBroker,
    mechanism: &str,
    user: &str,
    password: &str,
    topic: &str,
) -> String {
    let args = [
        "-c",
        KAFKA_PYTHON,
        &kafka_bootstrap(b),
        mechanism,
        user,
        password,
        topic,
    ]
    .map(String::from);
    let out = tokio::task::spawn_blocking(move || {
        let child = Command::new(python_with_kafka())
            .args(&args)
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "kafka-python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sasl_scram_kafka_python_sha256_and_sha512() {
    let b = start_broker_with_users(USERS, |_| {}).await;
    for (mechanism, topic) in [("SCRAM-SHA-256", "py256"), ("SCRAM-SHA-512", "py512")] {
        let got = kafka_python(&b, mechanism, "bob", "bob-secret", topic).await;
        assert_eq!(
            got,
            format!("consumed {mechanism} 0,{mechanism} 1,{mechanism} 2")
        );
    }
    assert!(logins(&b, "SCRAM-SHA-256", true) >= 2);
    assert!(logins(&b, "SCRAM-SHA-512", true) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sasl_scram_wrong_password_and_unknown_user_are_refused() {
    let b = start_broker_with_users(USERS, |_| {}).await;
    let wrong = kafka_python(&b, "SCRAM-SHA-512", "alice", "wrong", "py_no").await;
    assert!(wrong.starts_with("refused"), "{wrong}");
    let unknown = kafka_python(&b, "SCRAM-SHA-256", "mallory", "x", "py_no").await;
    assert!(unknown.starts_with("refused"), "{unknown}");
    assert!(logins(&b, "SCRAM-SHA-512", false) >= 1);
    assert!(logins(&b, "SCRAM-SHA-256", false) >= 1);
    assert_eq!(
        logins(&b, "SCRAM-SHA-256", true) + logins(&b, "SCRAM-SHA-512", true),
        0
    );

    // An unknown user gets a server-first like a known one, and the failure
    // comes at the proof with the same message.
    let mut s = connect(&b).await;
    assert_eq!(handshake(&mut s, 1, "SCRAM-SHA-256").await.0, 0);
    let (code, first) = authenticate_token(&mut s, b"n,,n=mallory,r=abcdef").await;
    assert_eq!(code, 0);
    let first = String::from_utf8(first).unwrap();
    assert!(
        first.starts_with("r=abcdef") && first.contains(",s=") && first.ends_with(",i=4096"),
        "{first}"
    );
    let nonce = first.split(',').next().unwrap();
    let (code, message) = authenticate(&mut s, format!("c=biws,{nonce},p=AAAA").as_bytes()).await;
    assert_eq!(code, 58);
    assert!(message.contains("invalid credentials"), "{message}");
    expect_closed(&mut s).await;
}

#[tokio::test]
async fn kafka_sasl_request_before_login_closes_when_anonymous_is_off() {
    let b = start_broker_with_users(USERS, |_| {}).await;
    let mut s = connect(&b).await;
    raw_kafka::api_versions_ok(&mut s, 1).await;
    // Metadata v1, all topics.
    send(&mut s, &raw_kafka::request(3, 1, 2, &(-1i32).to_be_bytes())).await;
    expect_closed(&mut s).await;
    // With anonymous access switched on, the same request is answered.
    let open = start_broker_with_users(USERS, |c| c.kafka.allow_anonymous = Some(true)).await;
    let mut s = connect(&open).await;
    send(&mut s, &raw_kafka::request(3, 1, 2, &(-1i32).to_be_bytes())).await;
    assert_eq!(raw_kafka::response(&mut s).await.0, 2);
}

#[tokio::test]
async fn kafka_sasl_mechanism_not_enabled_is_unsupported() {
    let b =
        start_broker_with_users(USERS, |c| c.kafka.sasl_mechanisms = vec!["PLAIN".into()]).await;
    let mut s = connect(&b).await;
    let (code, mechanisms) = handshake(&mut s, 1, "SCRAM-SHA-256").await;
    assert_eq!(code, 33, "UNSUPPORTED_SASL_MECHANISM");
    assert_eq!(mechanisms, ["PLAIN"]);
    expect_closed(&mut s).await;
    // SaslAuthenticate without a handshake: ILLEGAL_SASL_STATE.
    let mut s = connect(&b).await;
    let (code, _) = authenticate(&mut s, b"\0alice\0alice-secret").await;
    assert_eq!(code, 34, "ILLEGAL_SASL_STATE");
    expect_closed(&mut s).await;
}

#[tokio::test]
async fn kafka_sasl_oversize_tokens_close_the_connection() {
    let b = start_broker_with_users(USERS, |_| {}).await;
    // In SaslAuthenticate: answered, then closed.
    let mut s = connect(&b).await;
    handshake(&mut s, 1, "PLAIN").await;
    let (code, message) = authenticate(&mut s, &vec![b'x'; 8 * 1024 + 1]).await;
    assert_eq!(code, 58);
    assert!(message.contains("beyond the limit of 8192"), "{message}");
    expect_closed(&mut s).await;
    // A raw token (after SaslHandshake v0) announced too large: closed at its size.
    let mut s = connect(&b).await;
    handshake(&mut s, 0, "PLAIN").await;
    send(&mut s, &(1i32 << 20).to_be_bytes()).await;
    expect_closed(&mut s).await;
    // A large request before the login: closed at its size.
    let mut s = connect(&b).await;
    send(&mut s, &raw_kafka::request(0, 9, 1, &vec![0; 64 * 1024])).await;
    expect_closed(&mut s).await;
    // The broker still serves a client that logs in, here in raw v0 frames.
    let mut s = connect(&b).await;
    assert_eq!(handshake(&mut s, 0, "PLAIN").await.0, 0);
    let token = b"\0alice\0alice-secret";
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(token);
    send(&mut s, &frame).await;
    let answer = timeout(WAIT, s.read_i32()).await.unwrap().unwrap();
    assert_eq!(answer, 0, "an empty PLAIN answer");
    raw_kafka::api_versions_ok(&mut s, 9).await;
    send(
        &mut s,
        &raw_kafka::request(3, 1, 10, &(-1i32).to_be_bytes()),
    )
    .await;
    assert_eq!(raw_kafka::response(&mut s).await.0, 10);
}

pub async fn connect(b: &RunningBroker) -> TcpStream {
    let addr = b.kafka_addr.expect("Kafka listener");
    timeout(WAIT, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap()
}

async fn send(s: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
    s.write_all(bytes).await.expect("written");
    s.flush().await.expect("flushed");
}

/// The connection is closed by the broker (end of stream or reset), with
/// nothing more to read.
pub async fn expect_closed(s: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 64];
    match timeout(WAIT, s.read(&mut buf))
        .await
        .expect("closed in time")
    {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "expected the connection closed, got {n} bytes: {:x?}",
            &buf[..n]
        ),
    }
}

fn string(b: &mut BytesMut) -> String {
    let len = b.get_i16();
    if len < 0 {
        return String::new();
    }
    String::from_utf8(b.split_to(len as usize).to_vec()).unwrap()
}

/// SaslHandshake `version` (0 or 1): (error code, enabled mechanisms).
pub async fn handshake(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    version: i16,
    mechanism: &str,
) -> (i16, Vec<String>) {
    let mut body = BytesMut::new();
    body.put_i16(mechanism.len() as i16);
    body.put_slice(mechanism.as_bytes());
    send(s, &raw_kafka::request(17, version, 17, &body)).await;
    let (id, mut resp) = raw_kafka::response(s).await;
    assert_eq!(id, 17);
    let code = resp.get_i16();
    let n = resp.get_i32();
    (code, (0..n).map(|_| string(&mut resp)).collect())
}

/// SaslAuthenticate v1: (error code, error message).
pub async fn authenticate(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    token: &[u8],
) -> (i16, String) {
    let (code, message, _) = authenticate_v1(s, token).await;
    (code, message)
}

/// SaslAuthenticate v1: (error code, the server's token).
async fn authenticate_token(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    token: &[u8],
) -> (i16, Vec<u8>) {
    let (code, _, answer) = authenticate_v1(s, token).await;
    (code, answer)
}

async fn authenticate_v1(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    token: &[u8],
) -> (i16, String, Vec<u8>) {
    let mut body = BytesMut::new();
    body.put_i32(token.len() as i32);
    body.put_slice(token);
    send(s, &raw_kafka::request(36, 1, 36, &body)).await;
    let (id, mut resp) = raw_kafka::response(s).await;
    assert_eq!(id, 36);
    let code = resp.get_i16();
    let message = string(&mut resp);
    let len = resp.get_i32();
    let answer = resp.split_to(len.max(0) as usize).to_vec();
    assert_eq!(resp.get_i64(), 0, "session lifetime: no re-authentication");
    (code, message, answer)
}
