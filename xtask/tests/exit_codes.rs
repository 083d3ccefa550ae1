//! xtask's exit codes, as CI and scripts see them: 0 pass, 1 a verdict
//! failed, 2 bad usage or input.

use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("xtask runs")
}

const REPORT: &str = "xtask/tests/fixtures/report-quick-x86_64.json";

#[test]
fn gate_that_passes_exits_0() {
    let out = xtask(&["gate", REPORT, "--profile", "ci"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn gate_that_fails_is_a_verdict_exit_1_without_backtrace() {
    // The fixture (a quick run on a 2-core x86_64 box) misses embedded thresholds.
    let out = xtask(&["gate", REPORT, "--profile", "embedded"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("gate `embedded`: FAIL"), "{stdout}");
    assert_eq!(stderr.trim(), "FAILED: gate `embedded` failed");
}

#[test]
fn missing_input_and_bad_flags_exit_2() {
    let out = xtask(&["gate", "/nonexistent/report.json", "--profile", "ci"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot read /nonexistent/report.json"),
        "{stderr}"
    );
    let out = xtask(&["gate", REPORT, "--profiel", "ci"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
