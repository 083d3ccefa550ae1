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

/// Issue 16, defect 9: with backtraces asked for, an expected gate failure
/// is still its verdict table, one summary line and exit 1, never an
/// `Error:` with a stack backtrace.
#[test]
fn gate_failure_with_rust_backtrace_set_is_the_table_and_one_summary_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["gate", REPORT, "--profile", "embedded"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .expect("xtask runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The verdict table, with the threshold that failed, then its verdict.
    let table = stdout
        .lines()
        .find(|l| l.starts_with("binary size"))
        .unwrap_or_else(|| panic!("no binary size row in\n{stdout}"));
    assert!(table.contains("FAIL"), "{table}");
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("gate `embedded`: FAIL (1 failed,")),
        "{stdout}"
    );
    // One summary line on stderr, and nothing that looks like a crash.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(stderr.trim(), "FAILED: gate `embedded` failed");
    for text in [&stdout, &stderr] {
        // anyhow says "Stack backtrace:", a panic "stack backtrace:".
        assert!(!text.to_lowercase().contains("stack backtrace"), "{text}");
        assert!(!text.contains("Error:"), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
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

/// Issue 16, item 5: a baseline from another CPU model is bad input (exit
/// 2, one line naming the fix) unless --force-machine; forced, the fixture's
/// single repeat is not judged, which fails the gate (exit 1).
#[test]
fn baseline_from_another_machine_exits_2_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.json");
    let out = xtask(&["baseline", REPORT, "--out", base.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = std::fs::read_to_string(&base).unwrap();
    let other = text.replacen(
        "\"cpu_model\": \"AMD EPYC\"",
        "\"cpu_model\": \"Ampere Altra\"",
        1,
    );
    assert_ne!(text, other, "fixture's cpu_model changed: fix this test");
    std::fs::write(&base, other).unwrap();
    let b = base.to_str().unwrap();
    let out = xtask(&["gate", REPORT, "--baseline", b]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Ampere Altra") && stderr.contains("--force-machine"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let out = xtask(&["gate", REPORT, "--baseline", b, "--force-machine"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not judged"), "{stdout}");
}
