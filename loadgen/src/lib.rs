//! Load generation for the broker bench: workload specs, protocol drivers and
//! results with HDR latency histograms.
//!
//! Without the default `drivers` feature only the schema (`spec`, `result`)
//! is built, which is all `xtask` needs to read workloads and results.

pub mod result;
pub mod spec;

pub use result::{LoadResult, Outcome, RESULT_SCHEMA_VERSION};
pub use spec::{Protocol, Scenario, SpecError, Workload};
