//! Protocol-independent pieces shared by every listener: the message type,
//! topic names and filters with the subscription trie, and the retained store.

pub mod message;
pub mod retained;
pub mod topic;

pub use message::{ClientId, Message, MessageProperties};
