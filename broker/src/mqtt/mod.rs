//! MQTT 3.1.1 and 5.0: codec, sessions, routing and the per-connection handler.

pub mod codec;
pub mod config;
pub mod connection;
mod handshake;
pub mod hub;
pub mod metrics;
pub mod packet;
pub mod session;
mod state;
pub mod transport;
