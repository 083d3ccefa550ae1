//! Protocol-independent pieces shared by every listener: the message type and
//! its QoS, topic names and filters with the subscription trie, the retained
//! store, the connection slots, and the write path every connection loop uses.

pub mod io;
pub mod message;
pub mod qos;
pub mod retained;
pub mod slots;
pub mod stream;
pub mod topic;

pub use message::{ClientId, Message, MessageProperties};
pub use qos::QoS;
