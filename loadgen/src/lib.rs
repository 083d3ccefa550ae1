//! Load generation for the broker bench: workload specs, protocol drivers and
//! results with HDR latency histograms.
//!
//! Without the default `drivers` feature only the schema (`spec`, `result`)
//! is built, which is all `xtask` needs to read workloads and results.

pub mod result;
pub mod spec;

#[cfg(feature = "drivers")]
pub mod amqp;
#[cfg(feature = "drivers")]
pub mod driver;
#[cfg(feature = "histogram")]
pub mod histogram;
#[cfg(feature = "drivers")]
pub mod kafka;
#[cfg(feature = "drivers")]
pub mod limits;
#[cfg(feature = "drivers")]
pub mod mqtt;
#[cfg(feature = "drivers")]
pub mod payload;
#[cfg(feature = "drivers")]
pub mod progress;
#[cfg(feature = "drivers")]
pub mod runner;
#[cfg(feature = "drivers")]
pub mod seq;

pub use result::{LoadResult, Outcome, RESULT_SCHEMA_VERSION};
pub use spec::{DeliveryGuarantee, Protocol, Scenario, SpecError, Workload};

#[cfg(feature = "drivers")]
pub use runner::{run, RunError, RunOptions};
