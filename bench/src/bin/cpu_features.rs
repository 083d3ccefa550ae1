//! Prints the CPU features `broker::platform::Platform::detect()` finds, as
//! one JSON array of strings. `cargo xtask micro` runs it through the same
//! runner as the benchmarks, so under QEMU it records what the emulated CPU
//! offers, which is what the benchmarked code could use.

fn main() {
    let platform = broker::platform::Platform::detect();
    let quoted: Vec<String> = platform
        .cpu_features
        .iter()
        // Feature names are ASCII identifiers (`sse4.2`, `neon`): quoting is all
        // the JSON they need, and the bench crate stays free of serde_json.
        .map(|f| format!("\"{f}\""))
        .collect();
    println!("[{}]", quoted.join(","));
}
