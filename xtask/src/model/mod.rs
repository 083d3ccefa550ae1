//! The data xtask reads and writes: reports, baselines, manifests, micro-benchmark and gate results, with their load/save and schema versions.

pub mod ab;
pub mod baseline;
pub mod broker;
pub mod gate;
pub mod manifest;
pub mod max_rate;
pub mod metric;
pub mod micro;
pub mod report;
pub mod suite;
pub mod units;
pub mod verdict;
pub mod workload_file;
