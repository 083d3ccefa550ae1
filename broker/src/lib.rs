//! A multi-protocol message broker: MQTT 3.1.1 and 5.0 (TCP and WebSocket),
//! the Kafka wire protocol, and AMQP 0.9.1.

pub mod accel;
pub mod amqp;
pub mod auth;
pub mod config;
pub mod core;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod kafka;
pub mod metrics;
pub mod mqtt;
pub mod platform;
pub mod server;
pub mod storage;
pub mod tls;

pub use config::Config;
pub use server::{start, RunningBroker, ServerError};
