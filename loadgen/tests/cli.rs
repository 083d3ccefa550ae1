//! The `loadgen` binary: exit codes, one-line input errors, the result file.

use std::path::Path;
use std::process::Command;

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

fn workloads_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/workloads")
}

#[test]
fn help_lists_the_commands() {
    let out = loadgen().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run") && text.contains("validate"), "{text}");
}

#[test]
fn validate_accepts_the_shipped_workloads() {
    let files: Vec<_> = std::fs::read_dir(workloads_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        // `rate = "max"` files are for `cargo xtask bench` (it runs each
        // search step at a fixed rate); xtask's tests parse them.
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap()
                .contains("rate = \"max\"")
        })
        .collect();
    assert!(files.len() >= 5);
    let out = loadgen().arg("validate").args(&files).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_workload_is_one_line_naming_file_and_key_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "protocol = \"mqtt\"\nscenario = \"fan_in\"\npublishers = 1\nqos = 7\n",
    )
    .unwrap();
    let out = loadgen().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("bad.toml") && err.contains("qos"), "{err}");

    let out = loadgen()
        .args(["run", "--target", "127.0.0.1:1", "--out"])
        .arg(dir.path().join("r.json"))
        .arg("--workload")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("r.json").exists());

    let out = loadgen()
        .args(["run", "--target", "nonsense", "--out"])
        .arg(dir.path().join("r.json"))
        .arg("--workload")
        .arg(workloads_dir().join("mqtt-qos1.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--target"));

    let out = loadgen().args(["run", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects unknown flags");
}

#[test]
fn unreachable_broker_writes_an_aborted_result_and_exits_3() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out/result.json");
    let out = loadgen()
        .args(["run", "--quiet", "--duration", "1", "--target"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--workload")
        .arg(workloads_dir().join("mqtt-qos1.toml"))
        .arg("--out")
        .arg(&out_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to 127.0.0.1:{port}: Connection refused"
        )),
        "{stderr}"
    );
    let result =
        loadgen::LoadResult::from_json(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(result.outcome, loadgen::Outcome::Aborted);
    assert_eq!(result.workload.duration_secs, 1.0, "--duration applies");
    assert_eq!(result.workload.name, "mqtt-qos1");
}
