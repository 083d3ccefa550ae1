//! AMQP virtual hosts and `[[amqp]]` permissions, with lapin and pika:
//! vhosts are isolated, an unknown or forbidden vhost is refused with 530,
//! a denied configure/write/read closes the channel with 403, and durable
//! queues of every vhost (and the old `/` layout) survive a restart.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker::RunningBroker;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::time::timeout;

use crate::common::{self, WAIT};

async fn connect(b: &RunningBroker, user: &str, vhost: &str) -> Result<Connection, lapin::Error> {
    let addr = b.amqp_addr.expect("AMQP listener");
    let vhost = vhost.replace('/', "%2f");
    let uri = format!("amqp://{user}:{user}-pw@{addr}/{vhost}");
    timeout(
        WAIT,
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await
    .expect("the AMQP handshake ends in time")
}

async fn get(ch: &lapin::Channel, queue: &str) -> Option<Vec<u8>> {
    ch.basic_get(queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .map(|m| m.delivery.data)
}

async fn publish(ch: &lapin::Channel, exchange: &str, key: &str, body: &[u8]) {
    ch.basic_publish(
        exchange,
        key,
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_vhost_same_queue_name_stays_isolated() {
    let b = common::start_broker_with(|c| c.amqp.vhosts = vec!["/".into(), "staging".into()]).await;
    let root = connect(&b, "guest", "/").await.unwrap();
    let staging = connect(&b, "guest", "staging").await.unwrap();
    let (r, s) = (
        root.create_channel().await.unwrap(),
        staging.create_channel().await.unwrap(),
    );
    for ch in [&r, &s] {
        ch.queue_declare(
            "jobs",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
    }
    publish(&r, "", "jobs", b"root").await;
    publish(&s, "", "jobs", b"staging-1").await;
    publish(&s, "amq.direct", "nowhere", b"x").await;
    let hub = b.amqp.as_ref().unwrap();
    assert_eq!(hub.queue_len_in("/", "jobs"), Some(1));
    assert_eq!(hub.queue_len_in("staging", "jobs"), Some(1));
    assert_eq!(get(&r, "jobs").await.as_deref(), Some(&b"root"[..]));
    assert_eq!(get(&s, "jobs").await.as_deref(), Some(&b"staging-1"[..]));
    // An exchange declared in one vhost is not in the other.
    r.exchange_declare(
        "only-root",
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let e = s
        .exchange_declare(
            "only-root",
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(
        format!("{e:?}").contains("NOT_FOUND - no exchange 'only-root' in vhost 'staging'"),
        "{e:?}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_vhost_unknown_vhost_is_refused_with_530() {
    let b = common::start_broker().await;
    let e = connect(&b, "guest", "nope").await.unwrap_err();
    let text = format!("{e:?}");
    assert!(
        text.contains("NOT_ALLOWED - vhost 'nope' not found"),
        "{text}"
    );
    assert!(b.metrics.encode().contains("kind=\"vhost_not_allowed\"} 1"));
    b.shutdown().await;
}

const ACL: &str = r##"
[[rule]]
user = "alice"
topic = "#"
access = "readwrite"

[[amqp]]
user = "alice"
vhost = "/"
configure = "^amq\\.gen.*|^alice-.*"
write = "^alice-.*|^amq\\.default$"
read = "^alice-in$"

[[amqp]]
user = "bob"
vhost = "staging"
configure = ".*"
write = ".*"
read = ".*"
"##;

async fn acl_broker() -> (RunningBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(&acl, ACL).unwrap();
    let users = common::password_file(dir.path(), &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let b = common::start_broker_with(|c| {
        c.auth.password_file = Some(users);
        c.auth.acl_file = Some(acl);
        c.amqp.vhosts = vec!["/".into(), "staging".into()];
    })
    .await;
    (b, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_vhost_without_permission_is_refused_with_530_and_rules_apply() {
    let (b, _dir) = acl_broker().await;
    let e = connect(&b, "bob", "/").await.unwrap_err();
    assert!(
        format!("{e:?}").contains("NOT_ALLOWED - access to vhost '/' refused for user 'bob'"),
        "{e:?}"
    );
    assert!(connect(&b, "alice", "staging").await.is_err());
    let bob = connect(&b, "bob", "staging").await.unwrap();
    bob.create_channel()
        .await
        .unwrap()
        .queue_declare(
            "anything",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Configure denied: 403 on the channel, the queue is not made.
    let alice = connect(&b, "alice", "/").await.unwrap();
    let ch = alice.create_channel().await.unwrap();
    let e = ch
        .queue_declare(
            "other",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(
        format!("{e:?}").contains(
            "ACCESS_REFUSED - configure access to queue 'other' in vhost '/' refused for user 'alice' (queue.declare)"
        ),
        "{e:?}"
    );
    let hub = b.amqp.as_ref().unwrap();
    assert_eq!(hub.queue_len("other"), None);
    // Server-named queues match ^amq\.gen.
    let ch = alice.create_channel().await.unwrap();
    ch.queue_declare("", QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    assert!(b
        .metrics
        .encode()
        .contains("broker_protocol_errors_total{protocol=\"amqp\",kind=\"access_refused\"} 1"));
    b.shutdown().await;
}

const PIKA: &str = r#"
import sys
import pika

host, port = sys.argv[1], int(sys.argv[2])
def connect():
    params = pika.ConnectionParameters(host=host, port=port, virtual_host="/",
        credentials=pika.PlainCredentials("alice", "alice-pw"))
    return pika.BlockingConnection(params)
conn = connect()
ch = conn.channel()
ch.queue_declare(queue="alice-in")
ch.queue_declare(queue="alice-out")
ch.confirm_delivery()
ch.basic_publish(exchange="", routing_key="alice-in", body=b"ok")
print("published to the default exchange", flush=True)
def refused(what, op):
    ch = conn.channel()
    try:
        op(ch)
        print(what + " allowed", flush=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        print("%s %d %s" % (what, e.reply_code, e.reply_text), flush=True)
refused("publish", lambda ch: (ch.basic_publish(exchange="amq.fanout", routing_key="", body=b"x"), ch.queue_declare(queue="alice-in", passive=True)))
refused("consume", lambda ch: ch.basic_consume(queue="alice-out", on_message_callback=lambda *a: None))
refused("get", lambda ch: ch.basic_get(queue="alice-out"))
refused("purge", lambda ch: ch.queue_purge(queue="alice-out"))
refused("bind", lambda ch: ch.queue_bind(queue="alice-out", exchange="amq.direct", routing_key="k"))
refused("declare", lambda ch: ch.exchange_declare(exchange="bob-x", exchange_type="fanout"))
ch = conn.channel()
method, props, body = ch.basic_get(queue="alice-in", auto_ack=True)
print("got " + body.decode(), flush=True)
conn.close()
try:
    pika.BlockingConnection(pika.ConnectionParameters(host=host, port=port, virtual_host="staging",
        credentials=pika.PlainCredentials("alice", "alice-pw")))
    print("staging opened", flush=True)
except pika.exceptions.ProbableAccessDeniedError as e:
    print("staging refused " + str(e), flush=True)
except pika.exceptions.ConnectionClosedByBroker as e:
    print("staging %d %s" % (e.reply_code, e.reply_text), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_vhost_pika_meets_403_for_write_read_and_configure() {
    let (b, _dir) = acl_broker().await;
    let addr = b.amqp_addr.unwrap();
    let mut child = Command::new("python3")
        .args(["-c", PIKA, &addr.ip().to_string(), &addr.port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the pika script did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pika failed (python3 -m pip install pika):\n{stdout}\n{stderr}"
    );
    let refused = |op: &str, access: &str, what: &str, method: &str| {
        format!("{op} 403 ACCESS_REFUSED - {access} access to {what} in vhost '/' refused for user 'alice' ({method})")
    };
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..8],
        [
            "published to the default exchange",
            &refused("publish", "write", "exchange 'amq.fanout'", "basic.publish"),
            &refused("consume", "read", "queue 'alice-out'", "basic.consume"),
            &refused("get", "read", "queue 'alice-out'", "basic.get"),
            &refused("purge", "read", "queue 'alice-out'", "queue.purge"),
            &refused("bind", "read", "exchange 'amq.direct'", "queue.bind"),
            &refused(
                "declare",
                "configure",
                "exchange 'bob-x'",
                "exchange.declare"
            ),
            "got ok",
        ],
        "stderr: {stderr}"
    );
    assert!(lines[8].starts_with("staging "), "{stdout}");
    assert!(!lines[8].contains("opened"), "{stdout}");
    // The refused publish was not routed anywhere.
    assert!(
        b.metrics
            .encode()
            .contains("broker_messages_dropped_total{protocol=\"amqp\",kind=\"not_authorized\"} 1"),
        "{}",
        b.metrics.encode()
    );
    b.shutdown().await;
}

async fn disk_broker(data: &std::path::Path, vhosts: &[&str]) -> RunningBroker {
    let data = data.to_path_buf();
    let vhosts: Vec<String> = vhosts.iter().map(|v| v.to_string()).collect();
    common::start_broker_with(move |c| {
        c.amqp.storage = broker::storage::StorageMode::Disk;
        c.server.data_dir = data;
        c.amqp.vhosts = vhosts;
    })
    .await
}

async fn durable_with(b: &RunningBroker, vhost: &str, queue: &str, n: u8) {
    let conn = connect(b, "guest", vhost).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue, durable, FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        publish(&ch, "", queue, &[i]).await;
    }
    conn.close(200, "bye").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_vhost_durable_queues_survive_a_restart_and_the_old_layout_loads() {
    let dir = tempfile::tempdir().unwrap();
    // A broker that knows only "/" writes the layout of before vhosts.
    let b = disk_broker(dir.path(), &["/"]).await;
    durable_with(&b, "/", "orders", 3).await;
    b.shutdown().await;
    let amqp = dir.path().join("amqp");
    assert!(amqp.join("definitions.log").exists());
    assert!(
        !amqp.join("vhosts").exists(),
        "/ is stored where it always was"
    );

    let b = disk_broker(dir.path(), &["/", "prod"]).await;
    durable_with(&b, "prod", "orders", 5).await;
    let hub = b.amqp.as_ref().unwrap();
    assert_eq!(
        hub.queue_len_in("/", "orders"),
        Some(3),
        "old layout loaded"
    );
    b.shutdown().await;
    // "prod" in hex.
    assert!(amqp.join("vhosts/70726f64/definitions.log").exists());

    let b = disk_broker(dir.path(), &["/", "prod"]).await;
    let hub = b.amqp.as_ref().unwrap();
    assert_eq!(hub.queue_len_in("/", "orders"), Some(3));
    assert_eq!(hub.queue_len_in("prod", "orders"), Some(5));
    let conn = connect(&b, "guest", "prod").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(get(&ch, "orders").await, Some(vec![0]));
    b.shutdown().await;
}
