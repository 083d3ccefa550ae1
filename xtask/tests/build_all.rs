//! `cargo xtask build-all` for real, on the host target: the manifest must
//! describe the artifact that is actually there, and the smoke run must have
//! done its MQTT round trip.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

#[test]
fn host_build_manifest_describes_the_real_artifact() {
    let out = tempfile::tempdir().unwrap();
    // The host's own triple: every CI runner can build and run it.
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let rustc = String::from_utf8(rustc.stdout).unwrap();
    let triple = rustc
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .trim()
        .to_string();
    let triple = triple.as_str();
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["build-all", "--targets", triple, "--smoke", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "build-all failed: {status}");

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["schema"], 1);
    assert!(manifest["rustc"].as_str().unwrap().starts_with("rustc 1."));
    assert!(manifest["total_seconds"].as_f64().unwrap() > 0.0);
    let entries = manifest["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["triple"], triple);
    assert_eq!(e["status"], "built", "{e}");
    assert_eq!(e["backend"], "cargo", "no container engine here: {e}");
    assert_eq!(e["class"], "high_perf");
    assert_eq!(e["profile"], "release");
    if triple == "x86_64-unknown-linux-gnu" {
        assert_eq!(e["runner"], "native");
        assert_eq!(e["emulated"], false);
    }
    assert!(e["budget"].is_null(), "high_perf has no size budget: {e}");

    let artifact = out.path().join(e["artifact"].as_str().unwrap());
    let bytes = std::fs::read(&artifact).unwrap();
    assert_eq!(e["size_bytes"].as_u64().unwrap(), bytes.len() as u64);
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(e["sha256"].as_str().unwrap(), sha);
    let stripped = e["stripped_size_bytes"]
        .as_u64()
        .expect("llvm-tools installed by ci");
    assert!(stripped > 0 && stripped <= bytes.len() as u64, "{e}");
    assert!(e["build_seconds"].as_f64().unwrap() >= 0.0);

    assert_eq!(e["smoke"]["status"], "passed", "{e}");
    assert!(e["smoke"]["round_trip_ms"].as_f64().unwrap() > 0.0);
    assert!(Path::new(&artifact).is_file());

    let md = std::fs::read_to_string(out.path().join("manifest.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with(&format!("| {triple} |")))
        .unwrap_or_else(|| panic!("no row for {triple} in\n{md}"));
    assert!(
        row.contains("| built |") && row.contains(&sha[..12]),
        "{row}"
    );
    assert!(row.contains("passed"), "{row}");
}
