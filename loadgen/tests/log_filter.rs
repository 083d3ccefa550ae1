//! `loadgen run` honours `RUST_LOG` (a tracing `Targets` filter) and refuses a
//! malformed one with exit 2.

use std::path::Path;
use std::process::{Command, Output};

/// `loadgen run` of the MQTT workload against a port nothing listens on: the
/// runner logs the connection failure at error level and the run aborts (exit 3).
fn run_unreachable(rust_log: &str) -> Output {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .env("RUST_LOG", rust_log)
        .args(["run", "--duration", "1", "--target"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--workload")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/workloads/mqtt-qos1.toml"))
        .arg("--out")
        .arg(dir.path().join("result.json"))
        .output()
        .unwrap()
}

fn error_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn rust_log_names_the_runner_target() {
    let out = run_unreachable("loadgen=error");
    assert_eq!(out.status.code(), Some(3));
    let errors = error_lines(&out);
    assert!(
        errors
            .iter()
            .any(|l| l.contains("loadgen::runner") && l.contains("cannot connect")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rust_log_can_silence_one_module() {
    let out = run_unreachable("loadgen::runner=off");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(error_lines(&out).is_empty(), "{stderr}");
    assert!(
        stderr.contains("run aborted: cannot connect"),
        "the summary line is not a log line: {stderr}"
    );
}

#[test]
fn bad_rust_log_is_one_line_and_exit_2() {
    let out = run_unreachable("loadgen=chatty");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("loadgen: RUST_LOG=`loadgen=chatty`"),
        "{stderr}"
    );
}
