//! The `broker` binary as a user runs it: flags, config errors, exit codes,
//! signals, and interop with the mosquitto command-line clients.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};

use crate::broker_process::{broker_bin, BrokerProcess, MQTT_ONLY};
use crate::common::external_tool;

fn run_broker(args: &[&str]) -> Output {
    Command::new(broker_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("broker binary runs")
}

fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr).trim().to_string();
    assert_eq!(
        text.lines().count(),
        1,
        "exactly one line on stderr, got:\n{text}"
    );
    text
}

#[test]
fn bad_config_file_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    std::fs::write(&path, "[mqtt]\nmax_conections = 10\n").unwrap();
    let out = run_broker(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let line = one_line(&out.stderr);
    assert!(line.contains("broker.toml"), "names the file: {line}");
    assert!(
        line.contains("mqtt.max_conections"),
        "names the key: {line}"
    );
    assert!(line.contains("max_packet_size"), "lists valid keys: {line}");

    std::fs::write(&path, "[mqtt]\nmax_qos = 3\n").unwrap();
    let out = run_broker(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let line = one_line(&out.stderr);
    assert!(
        line.contains("mqtt.max_qos") && line.contains("0, 1 or 2"),
        "{line}"
    );
}

#[test]
fn bad_flag_is_clap_error_and_exit_2() {
    for args in [
        &["--max-connections", "lots"][..],
        &["--no-such-flag"][..],
        &["--class", "mainframe"][..],
        &["--mqtt-bind", "localhost"][..],
    ] {
        let out = run_broker(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        // clap's whole message (tip, usage); its first line says what is wrong.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr.lines().next().unwrap_or_default();
        assert!(line.starts_with("error: "), "{line}");
        assert!(stderr.contains("--help"), "points to --help: {stderr}");
        assert!(
            line.contains(args[0]) || line.contains(args[args.len() - 1]),
            "names the flag or value: {line}"
        );
    }
}

#[test]
fn bind_failure_names_the_address_and_exits_nonzero() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_broker(&["--mqtt-bind", &addr, "--no-websocket", "--no-metrics"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(line.contains(&addr) && line.contains("MQTT"), "{line}");
}

#[test]
fn amqp_bind_failure_names_the_flag_and_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_broker(&[
        "--mqtt-bind",
        "127.0.0.1:0",
        "--no-websocket",
        "--no-kafka",
        "--no-metrics",
        "--amqp-bind",
        &addr,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(
        line.contains(&addr) && line.contains("AMQP") && line.contains("--amqp-bind"),
        "{line}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_shuts_down_cleanly() {
    let mut broker = BrokerProcess::spawn(MQTT_ONLY);
    let ready = broker.addresses().clone();
    assert!(
        ready.websocket.is_none()
            && ready.kafka.is_none()
            && ready.amqp.is_none()
            && ready.metrics.is_none(),
        "listeners that are off are null: {ready:?}"
    );
    assert_eq!(broker.stop().code(), Some(0), "{}", broker.stderr());
    assert!(
        !broker.ready_file().exists(),
        "a clean shutdown removes the ready file"
    );
}

/// mosquitto_pub/mosquitto_sub are what a user tries first. They come from the
/// Debian package mosquitto-clients, which `cargo xtask ci` installs.
fn mosquitto(tool: &str) -> Command {
    external_tool(tool, "--help", "mosquitto-clients")
}

/// A running `mosquitto_sub` and what it printed so far.
struct Subscriber {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

/// Starts `mosquitto_sub` for `count` messages on `filter`, after publishing a
/// retained probe on `ready_topic` (inside the filter): the probe arriving is
/// the proof that the subscription is in place, so nothing published later is missed.
fn subscriber(
    port: &str,
    version: &str,
    qos: &str,
    filter: &str,
    ready_topic: &str,
    count: usize,
) -> Subscriber {
    publish(port, version, "1", ready_topic, "ready", true);
    let mut child = mosquitto("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-V",
            version,
            "-q",
            qos,
            "-t",
            filter,
        ])
        .args(["-C", &(count + 1).to_string(), "-W", "20", "-v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let first = lines.next().and_then(Result::ok);
    assert_eq!(
        first,
        Some(format!("{ready_topic} ready")),
        "mosquitto_sub -V {version} got the retained probe"
    );
    Subscriber { child, lines }
}

impl Subscriber {
    fn finish(mut self) -> Vec<String> {
        let lines: Vec<String> = self.lines.by_ref().map_while(Result::ok).collect();
        let status = self.child.wait().expect("mosquitto_sub finishes");
        assert!(status.success(), "mosquitto_sub exited with {status}");
        lines
    }
}

fn publish(port: &str, version: &str, qos: &str, topic: &str, message: &str, retain: bool) {
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-V",
        version,
        "-q",
        qos,
        "-t",
        topic,
        "-m",
        message,
    ]);
    if retain {
        cmd.arg("-r");
    }
    let out = cmd.output().expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "mosquitto_pub -V {version} -q {qos} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mosquitto_clients_interoperate() {
    let broker = BrokerProcess::spawn(MQTT_ONLY);
    let port = broker.mqtt().port().to_string();
    for version in ["mqttv311", "mqttv5"] {
        for qos in ["0", "1", "2"] {
            let topic = format!("interop/{version}/q{qos}");
            let sub = subscriber(
                &port,
                version,
                qos,
                &format!("{topic}/#"),
                &format!("{topic}/ready"),
                3,
            );
            publish(&port, version, qos, &format!("{topic}/x"), "one", false);
            publish(&port, version, qos, &format!("{topic}/x"), "two", false);
            publish(&port, version, qos, &format!("{topic}/y"), "three", false);
            assert_eq!(
                sub.finish(),
                [
                    format!("{topic}/x one"),
                    format!("{topic}/x two"),
                    format!("{topic}/y three")
                ],
                "-V {version} -q {qos}"
            );
        }
        // Retained: set, replace, and a new subscriber sees only the newest; clearing removes it.
        let topic = format!("interop/{version}/retained");
        publish(&port, version, "1", &topic, "old", true);
        publish(&port, version, "1", &topic, "new", true);
        let out = mosquitto("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-t",
                &topic,
                "-C",
                "1",
                "-W",
                "10",
                "-v",
            ])
            .output()
            .expect("mosquitto_sub runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{topic} new")
        );
        publish(&port, version, "1", &topic, "", true);
        let out = mosquitto("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-t",
                &topic,
                "-W",
                "1",
                "-v",
            ])
            .output()
            .expect("mosquitto_sub runs");
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "cleared retained message is gone"
        );
    }
}
