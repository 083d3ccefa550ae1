//! `loadgen`: runs one workload against a broker and writes the result JSON.
fn main() {}
