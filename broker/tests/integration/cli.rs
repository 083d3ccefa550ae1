//! The broker's command line as a container or a script drives it: the
//! readiness file, `BROKER_…` environment overrides, `RUST_LOG`, and clap's
//! usage errors and help.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::broker_process::{broker_bin, BrokerProcess};

/// The broker with `args` and `envs` (and no stats lines), ready.
fn start(args: &[&str], envs: &[(&str, &str)]) -> BrokerProcess {
    let args = [args, &["--stats-interval", "0"]].concat();
    BrokerProcess::spawn_configured(&args, |command| {
        command.envs(envs.iter().copied());
    })
}

/// Sends SIGTERM and returns the exit code and everything logged on stderr.
#[cfg(unix)]
fn terminate(mut broker: BrokerProcess) -> (Option<i32>, String) {
    let code = broker.stop().code();
    (code, broker.stderr())
}

/// The address the ready file lists for `listener`, or None for `null`.
fn addr(broker: &BrokerProcess, listener: &str) -> Option<SocketAddr> {
    match &broker.ready_json()[listener] {
        Value::Null => None,
        Value::String(s) => Some(s.parse().expect("an address")),
        other => panic!("{listener}: {other} is neither an address nor null"),
    }
}

fn mqtt_connects(addr: SocketAddr) -> bool {
    let mut options =
        rumqttc::MqttOptions::new("ready-file-probe", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (_client, mut connection) = rumqttc::Client::new(options, 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match connection.recv_timeout(Duration::from_secs(1)) {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)))) => {
                return ack.code == rumqttc::ConnectReturnCode::Success;
            }
            Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => panic!("MQTT connect to {addr}: {e}"),
            Err(e) => panic!("MQTT connect to {addr}: {e:?}"),
        }
    }
    false
}

#[cfg(unix)]
#[test]
fn ready_file_lists_every_bound_address_and_goes_on_sigterm() {
    let broker = start(
        &[
            "--mqtt-bind",
            "127.0.0.1:0",
            "--ws-bind",
            "127.0.0.1:0",
            "--kafka-bind",
            "127.0.0.1:0",
            "--amqp-bind",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(
        broker.ready_json()["pid"].as_u64(),
        Some(u64::from(broker.pid())),
        "{}",
        broker.ready_json()
    );
    let mqtt = addr(&broker, "mqtt").expect("MQTT is always on");
    assert_ne!(mqtt.port(), 0, "the bound port, not the requested 0");
    assert!(mqtt_connects(mqtt), "MQTT CONNACK from {mqtt}");
    for listener in ["websocket", "kafka", "amqp", "metrics"] {
        let addr = addr(&broker, listener).unwrap_or_else(|| panic!("{listener} is on"));
        assert_ne!(addr.port(), 0, "{listener}");
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{listener} at {addr}: {e}"));
    }
    let ready_file = broker.ready_file().to_path_buf();
    assert!(
        !PathBuf::from(format!("{}.tmp", ready_file.display())).exists(),
        "the temporary file was renamed into place"
    );
    let (code, stderr) = terminate(broker);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!ready_file.exists(), "ready file removed on clean shutdown");
    assert!(
        stderr.contains(&format!("listening: mqtt {mqtt} ")),
        "the human line stays: {stderr}"
    );
}

#[cfg(unix)]
#[test]
fn ready_file_says_null_for_listeners_that_are_off() {
    let broker = start(
        &[
            "--mqtt-bind",
            "127.0.0.1:0",
            "--no-websocket",
            "--no-kafka",
            "--no-amqp",
            "--no-metrics",
        ],
        &[],
    );
    for listener in ["websocket", "kafka", "amqp", "metrics"] {
        assert!(
            broker.ready_json()[listener].is_null(),
            "{}",
            broker.ready_json()
        );
    }
    let ready_file = broker.ready_file().to_path_buf();
    let (code, stderr) = terminate(broker);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!ready_file.exists());
}

/// MQTT and Kafka listeners only, on ephemeral ports.
const MQTT_AND_KAFKA: [&str; 7] = [
    "--mqtt-bind",
    "127.0.0.1:0",
    "--kafka-bind",
    "127.0.0.1:0",
    "--no-websocket",
    "--no-amqp",
    "--no-metrics",
];

fn is_debug(line: &str) -> bool {
    line.contains("DEBUG")
}

#[cfg(unix)]
#[test]
fn rust_log_turns_on_debug_for_the_named_module_only() {
    let broker = start(&MQTT_AND_KAFKA, &[("RUST_LOG", "broker::kafka=debug")]);
    // A completed MQTT handshake has passed the MQTT connection's debug line
    // (see the RUST_LOG=debug test below): it must be filtered out.
    assert!(mqtt_connects(addr(&broker, "mqtt").unwrap()));
    // A Kafka connection closing logs at debug in broker::kafka.
    drop(TcpStream::connect(addr(&broker, "kafka").unwrap()).unwrap());
    broker.wait_for_log("Kafka debug line", |l| {
        is_debug(l) && l.contains("broker::kafka")
    });
    let (code, stderr) = terminate(broker);
    assert_eq!(code, Some(0), "{stderr}");
    let stray: Vec<&str> = stderr
        .lines()
        .filter(|l| is_debug(l) && !l.contains("broker::kafka"))
        .collect();
    assert!(
        stray.is_empty(),
        "debug lines outside broker::kafka: {stray:#?}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("INFO") && l.contains("listening: mqtt ")),
        "targets RUST_LOG does not name keep --log-level (info):\n{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn rust_log_debug_shows_the_mqtt_debug_line_too() {
    let broker = start(&MQTT_AND_KAFKA, &[("RUST_LOG", "debug")]);
    assert!(mqtt_connects(addr(&broker, "mqtt").unwrap()));
    broker.wait_for_log("MQTT debug line", |l| {
        is_debug(l) && l.contains("broker::mqtt")
    });
}

#[cfg(unix)]
#[test]
fn log_level_applies_when_rust_log_is_unset() {
    let broker = start(&MQTT_AND_KAFKA, &[("BROKER_LOG_LEVEL", "warn")]);
    drop(TcpStream::connect(addr(&broker, "kafka").unwrap()).unwrap());
    assert!(mqtt_connects(addr(&broker, "mqtt").unwrap()));
    let (code, stderr) = terminate(broker);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stderr.contains("INFO") && !is_debug(&stderr),
        "warn and above only:\n{stderr}"
    );
}

#[test]
fn bad_rust_log_is_one_clear_line_and_exit_2() {
    let out = Command::new(broker_bin())
        .args(["--print-platform"])
        .env("RUST_LOG", "broker::kafka=loud")
        .stdin(Stdio::null())
        .output()
        .expect("broker binary runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: RUST_LOG=`broker::kafka=loud`") && stderr.contains("debug"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing printed before the check");
}

fn run_broker_with(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(broker_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("broker binary runs")
}

#[test]
fn typo_in_a_flag_gets_clap_tip_and_exit_2() {
    let out = run_broker_with(&["--max-connection", "5"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: unexpected argument '--max-connection'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tip: a similar argument exists: '--max-connections'"),
        "{stderr}"
    );
    assert!(stderr.contains("Usage: broker"), "{stderr}");
}

#[test]
fn help_lists_class_and_runtime_values_and_the_environment() {
    let out = run_broker_with(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for value in [
        "high_perf",
        "embedded",
        "generic",
        "multi_thread",
        "current_thread",
    ] {
        assert!(help.contains(value), "{value} missing from --help:\n{help}");
    }
    for var in [
        "BROKER_MQTT_BIND",
        "BROKER_MAX_CONNECTIONS",
        "BROKER_LOG_LEVEL",
        "BROKER_READY_FILE",
        "BROKER_NO_KAFKA",
    ] {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
    }
}

#[test]
fn class_and_runtime_accept_any_case_and_dashes() {
    let out = run_broker_with(
        &[
            "--class",
            "High-Perf",
            "--runtime",
            "current-thread",
            "--print-platform",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("effective class: high_perf; runtime: current_thread"),
        "{stdout}"
    );
}

#[test]
fn environment_overrides_limits_and_flags_win_over_it() {
    let envs = [
        ("BROKER_MAX_CONNECTIONS", "7"),
        ("BROKER_CLASS", "embedded"),
    ];
    let out = run_broker_with(&["--print-platform"], &envs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("effective class: embedded;"), "{stdout}");
    assert!(stdout.contains("max_connections: 7,"), "{stdout}");

    let out = run_broker_with(&["--print-platform", "--max-connections", "9"], &envs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("max_connections: 9,"), "{stdout}");

    let out = run_broker_with(&["--print-platform"], &[("BROKER_MAX_CONNECTIONS", "lots")]);
    assert_eq!(out.status.code(), Some(2), "a bad value is a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'lots'"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn environment_sets_listeners_like_the_flags() {
    let broker = start(
        &[],
        &[
            ("BROKER_MQTT_BIND", "127.0.0.1:0"),
            ("BROKER_NO_WEBSOCKET", "1"),
            ("BROKER_NO_KAFKA", "true"),
            ("BROKER_NO_AMQP", "yes"),
            ("BROKER_METRICS_BIND", "127.0.0.1:0"),
        ],
    );
    let mqtt = addr(&broker, "mqtt").unwrap();
    assert!(mqtt.ip().is_loopback() && mqtt.port() != 1883, "{mqtt}");
    let metrics = addr(&broker, "metrics").expect("metrics stay on");
    assert_ne!(metrics.port(), 9090, "{metrics}");
    for off in ["websocket", "kafka", "amqp"] {
        assert!(
            broker.ready_json()[off].is_null(),
            "{}",
            broker.ready_json()
        );
    }
}

/// The soft and hard "Max open files" of a running process, from /proc.
#[cfg(target_os = "linux")]
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[cfg(target_os = "linux")]
#[test]
fn broker_raises_its_open_files_limit_to_the_hard_limit() {
    use std::os::unix::process::CommandExt;
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let low = 256.min(hard);
    let broker = BrokerProcess::spawn_configured(
        &[
            "--mqtt-bind",
            "127.0.0.1:0",
            "--no-websocket",
            "--no-kafka",
            "--no-amqp",
            "--no-metrics",
            "--stats-interval",
            "0",
        ],
        |command| {
            // SAFETY: setrlimit is async-signal-safe, and only touches the child.
            unsafe {
                command.pre_exec(move || rlimit::Resource::NOFILE.set(low, hard));
            }
        },
    );
    assert_eq!(
        open_files_limits(broker.pid()),
        (hard, hard),
        "soft limit raised from {low}"
    );
}
