//! The Kafka wire protocol: framing, request dispatch by api key, topic and
//! partition logs, idempotent producers, and consumer groups. Message bodies
//! are encoded and decoded by the `kafka-protocol` crate.

mod admin;
pub mod api_versions;
mod authorize;
pub mod codec;
pub mod config;
pub mod connection;
mod dispatch;
mod fetch;
pub mod group;
mod group_api;
pub mod hub;
mod metadata;
pub mod metrics;
pub mod offsets;
mod produce;
pub mod producer;
pub mod sasl;
pub mod topic;

pub use hub::KafkaHub;

/// Request decoding as a connection does it, for the fuzz targets.
#[doc(hidden)]
pub use dispatch::decode_request;
