//! A second AMQP client library: pika (Python) publishes with publisher
//! confirms, consumes with a prefetch window and acks, reads a message that
//! lapin published, and closes cleanly. pika comes from PyPI, which
//! `cargo xtask ci` installs; without it this test fails and says how to
//! install it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;

use crate::common::{amqp_connect as connect, start_broker};

const SCRIPT: &str = r#"
import sys
import pika

host, port = sys.argv[1], int(sys.argv[2])
params = pika.ConnectionParameters(host=host, port=port,
    credentials=pika.PlainCredentials("guest", "guest"), heartbeat=30)
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare(queue="pika_q", durable=False)
for i in range(10):
    ch.basic_publish(exchange="", routing_key="pika_q", body=("m%d" % i).encode(),
        properties=pika.BasicProperties(delivery_mode=2, headers={"n": i}),
        mandatory=True)
print("published 10", flush=True)
try:
    ch.basic_publish(exchange="amq.direct", routing_key="nowhere", body=b"x", mandatory=True)
    print("unroutable accepted", flush=True)
except pika.exceptions.UnroutableError:
    print("unroutable returned", flush=True)
ch.basic_qos(prefetch_count=3)
seen = []
for method, props, body in ch.consume("pika_q", inactivity_timeout=10):
    if method is None:
        break
    seen.append(body.decode())
    ch.basic_ack(method.delivery_tag)
    if len(seen) == 10:
        break
ch.cancel()
print("consumed " + ",".join(seen), flush=True)
method, props, body = ch.basic_get("from_lapin", auto_ack=True)
print("from lapin " + (body.decode() if body else "nothing"), flush=True)
conn.close()
print("closed", flush=True)
"#;

fn python_has_pika() -> bool {
    Command::new("python3")
        .args(["-c", "import pika"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_publishes_and_consumes() {
    assert!(
        python_has_pika(),
        "python3 with pika is needed for this test: python3 -m pip install pika (cargo xtask ci installs it)"
    );
    let broker = start_broker().await;
    let addr = broker.amqp_addr.expect("AMQP listener");
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "from_lapin",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        "",
        "from_lapin",
        BasicPublishOptions::default(),
        b"hello pika",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let mut child = Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
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
        "pika script failed:\n{stdout}\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let expected_consumed = format!(
        "consumed {}",
        (0..10)
            .map(|i| format!("m{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(
        lines,
        [
            "published 10",
            "unroutable returned",
            expected_consumed.as_str(),
            "from lapin hello pika",
            "closed"
        ],
        "stderr: {stderr}"
    );
    assert_eq!(broker.amqp.as_ref().unwrap().queue_len("pika_q"), Some(0));
    broker.shutdown().await;
}
