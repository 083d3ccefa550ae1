//! AMQP 0.9.1: framing and the connection/channel state machine, exchanges
//! (direct, fanout, topic, headers), queues with TTL, length limits and
//! dead-lettering, consumers with prefetch windows, acknowledgements,
//! publisher confirms, and durable queues on disk. Frames and methods are
//! encoded and decoded by the `amq-protocol` crate.

pub mod codec;
pub mod config;
pub mod connection;
pub mod content;
pub mod error;
mod handshake;
pub mod hub;
pub mod memory;
pub mod queue;
pub mod routing;
mod state;
pub mod store;

pub use hub::AmqpHub;
