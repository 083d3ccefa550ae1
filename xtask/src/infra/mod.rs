//! Processes, the host and cargo: starting brokers and the load generator, sampling, targets and host probing, tool lookup and installation.

pub mod ab_build;
pub mod build;
pub mod cargo;
pub mod cpu_reference;
pub mod criterion;
pub mod environment;
pub mod fuzz;
pub mod host;
pub mod install;
pub mod launcher;
pub mod lint;
pub mod loadgen;
pub mod run_dir;
pub mod sampler;
pub mod smoke;
pub mod targets;
pub mod tools;
