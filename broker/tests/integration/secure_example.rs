//! `broker/examples/secure/` as a user meets it: the folder copied to a
//! temporary directory, its make-certs.sh run, the ports in broker.toml
//! turned to 0 (the ready file tells where the broker listens), and the
//! broker started with that config. Then one real client per protocol over
//! TLS with the demo credentials: mosquitto_pub/mosquitto_sub (MQTT over
//! TLS, `--cafile`), kcat (Kafka SASL_SSL, SCRAM-SHA-256), pika (AMQPS,
//! PLAIN); and the refusals the ACL file promises.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::broker_process::BrokerProcess;
use crate::common::external_tool;
use crate::kafka_sasl::kcat;

const EXAMPLE_FILES: &[&str] = &[
    "broker.toml",
    "acl.toml",
    "passwd",
    "make-certs.sh",
    "README.md",
];

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/secure")
}

/// broker.toml with every `"127.0.0.1:PORT"` turned into port 0; panics
/// unless all nine listeners were found (so a change of the example that
/// this test no longer covers is noticed).
fn ephemeral_ports(config: &str) -> String {
    let mut replaced = 0;
    let text: Vec<String> = config
        .lines()
        .map(|line| {
            let Some(at) = line.find("\"127.0.0.1:") else {
                return line.to_string();
            };
            let port_start = at + "\"127.0.0.1:".len();
            let port_len = line[port_start..]
                .find('"')
                .expect("a closing quote after the port");
            replaced += 1;
            format!("{}0{}", &line[..port_start], &line[port_start + port_len..])
        })
        .collect();
    assert_eq!(
        replaced, 9,
        "broker.toml should bind 9 listeners to 127.0.0.1:\n{config}"
    );
    text.join("\n")
}

fn address(broker: &BrokerProcess, key: &str) -> SocketAddr {
    let ready = broker.ready_json();
    ready[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is on in the example: {ready}"))
        .parse()
        .expect("an address")
}

fn run(mut command: Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("the client runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mosquitto(tool: &str, dir: &Path, port: u16, args: &[&str]) -> Output {
    let mut cmd = external_tool(tool, "--help", "mosquitto-clients");
    cmd.args(["-h", "localhost", "-p", &port.to_string()])
        .arg("--cafile")
        .arg(dir.join("ca.pem"))
        .args(["-u", "demo", "-P", "demo-password", "-V", "mqttv311"])
        .args(args);
    run(cmd)
}

/// pika over AMQPS as demo: a round trip through demo.x / demo.q, then a
/// queue outside `^demo` (refused). Prints `got BODY` and `refused CODE`.
const PIKA_AMQPS: &str = r#"
import ssl, sys, time, pika
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
params = pika.ConnectionParameters(host="127.0.0.1", port=port, virtual_host="/",
    credentials=pika.PlainCredentials("demo", "demo-password"),
    ssl_options=pika.SSLOptions(ctx, "localhost"), heartbeat=30)
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.exchange_declare("demo.x", exchange_type="direct")
ch.queue_declare("demo.q")
ch.queue_bind("demo.q", "demo.x", routing_key="k")
ch.basic_publish("demo.x", "k", b"hello amqps")
for _ in range(100):
    method, props, body = ch.basic_get("demo.q", auto_ack=True)
    if method:
        print("got " + body.decode(), flush=True)
        break
    time.sleep(0.1)
try:
    ch.queue_declare("other.q")
except pika.exceptions.ChannelClosedByBroker as e:
    print("refused %d" % e.reply_code, flush=True)
conn.close()
"#;

#[test]
fn secure_example_serves_every_protocol_over_tls_with_the_demo_user() {
    let dir = tempfile::tempdir().unwrap();
    for file in EXAMPLE_FILES {
        std::fs::copy(example_dir().join(file), dir.path().join(file))
            .unwrap_or_else(|e| panic!("examples/secure/{file}: {e}"));
    }
    external_tool("openssl", "version", "openssl");
    let out = run({
        let mut c = Command::new("sh");
        c.arg(dir.path().join("make-certs.sh"));
        c
    });
    assert!(out.status.success(), "make-certs.sh: {}", text(&out));
    for made in [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ] {
        assert!(
            dir.path().join(made).is_file(),
            "make-certs.sh wrote {made}"
        );
    }
    let config = dir.path().join("broker.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, ephemeral_ports(&original)).unwrap();

    let broker = BrokerProcess::spawn_with_data_dir(&["--config", config.to_str().unwrap()]);
    let (mqtts, kafka_tls, amqps) = (
        address(&broker, "mqtt_tls"),
        address(&broker, "kafka_tls"),
        address(&broker, "amqp_tls"),
    );
    address(&broker, "wss");
    for addr in [mqtts, kafka_tls, amqps] {
        assert!(addr.ip().is_loopback(), "{addr}");
    }

    // MQTT over TLS: a retained message comes back to a subscriber.
    let published = mosquitto(
        "mosquitto_pub",
        dir.path(),
        mqtts.port(),
        &["-t", "demo/hello", "-m", "over tls", "-r", "-q", "1"],
    );
    assert!(
        published.status.success(),
        "mosquitto_pub: {}",
        text(&published)
    );
    let got = mosquitto(
        "mosquitto_sub",
        dir.path(),
        mqtts.port(),
        &["-t", "demo/#", "-C", "1", "-W", "10"],
    );
    assert!(got.status.success(), "mosquitto_sub: {}", text(&got));
    assert_eq!(String::from_utf8_lossy(&got.stdout), "over tls\n");
    // The refusal the ACL file promises: SUBACK 0x80 for test/nosubscribe.
    let refused = mosquitto(
        "mosquitto_sub",
        dir.path(),
        mqtts.port(),
        &["-t", "test/nosubscribe", "-d", "-C", "1", "-W", "5"],
    );
    let said = text(&refused);
    assert!(said.contains("Subscribed (mid: 1): 128"), "{said}");

    // Kafka SASL_SSL with SCRAM-SHA-256: produce and read back a demo topic.
    let kafka_args = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["-b".into(), kafka_tls.to_string()];
        for x in [
            "security.protocol=SASL_SSL".to_string(),
            format!("ssl.ca.location={}", dir.path().join("ca.pem").display()),
            "sasl.mechanisms=SCRAM-SHA-256".into(),
            "sasl.username=demo".into(),
            "sasl.password=demo-password".into(),
        ] {
            args.extend(["-X".to_string(), x]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let produce = kafka_args(&["-P", "-t", "demo-events", "-X", "acks=all"]);
    let produce: Vec<&str> = produce.iter().map(String::as_str).collect();
    let out = kcat(&produce, Some("one\ntwo\n"));
    assert!(
        out.status.success(),
        "kcat -P over SASL_SSL: {}",
        text(&out)
    );
    let consume = kafka_args(&[
        "-C",
        "-t",
        "demo-events",
        "-o",
        "beginning",
        "-e",
        "-c",
        "2",
    ]);
    let consume: Vec<&str> = consume.iter().map(String::as_str).collect();
    let out = kcat(&consume, None);
    assert!(
        out.status.success(),
        "kcat -C over SASL_SSL: {}",
        text(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    let list = kafka_args(&["-L", "-t", "other-events"]);
    let list: Vec<&str> = list.iter().map(String::as_str).collect();
    let out = kcat(&list, None);
    assert!(
        text(&out).contains("Topic authorization failed"),
        "other-events is not demo's: {}",
        text(&out)
    );

    // AMQPS with pika: a round trip on demo resources, a refusal outside them.
    let python_has_pika = Command::new("python3")
        .args(["-c", "import pika"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        python_has_pika,
        "python3 with pika is needed for this test: python3 -m pip install pika (cargo xtask ci installs it)"
    );
    let out = run({
        let mut c = Command::new("python3");
        c.args(["-c", PIKA_AMQPS, &amqps.port().to_string()])
            .arg(dir.path().join("ca.pem"))
            .env_remove("LD_LIBRARY_PATH");
        c
    });
    assert!(out.status.success(), "pika over AMQPS: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got hello amqps\nrefused 403\n"
    );
}

#[test]
fn secure_example_binds_loopback_only_and_needs_logins() {
    let config = std::fs::read_to_string(example_dir().join("broker.toml")).unwrap();
    let binds: Vec<&str> = config
        .lines()
        .filter(|l| {
            l.trim_start()
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .ends_with("bind")
        })
        .collect();
    assert_eq!(binds.len(), 9, "{binds:?}");
    assert!(
        binds.iter().all(|l| l.contains("\"127.0.0.1:")),
        "{binds:?}"
    );
    for section in ["[mqtt]", "[kafka]", "[amqp]"] {
        let body = config.split(section).nth(1).expect(section);
        let body = body.split("\n[").next().unwrap();
        assert!(
            body.contains("allow_anonymous = false"),
            "{section} turns anonymous access off"
        );
    }
    let passwd = std::fs::read_to_string(example_dir().join("passwd")).unwrap();
    assert!(passwd.starts_with("demo:$pbkdf2-sha256$"), "{passwd}");
}
