//! Retained messages: the last retained message per topic, handed to new subscribers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::message::Message;
use super::topic::matches;

#[derive(Debug, Default)]
pub struct RetainedStore {
    messages: HashMap<Arc<str>, Arc<Message>>,
}

impl RetainedStore {
    /// Sets, replaces or (with an empty payload) clears the retained message of its topic.
    pub fn store(&mut self, message: Arc<Message>) {
        if message.payload.is_empty() {
            self.messages.remove(&message.topic);
        } else {
            // A retained message can outlive its publisher's connection by
            // days; its payload is a view of that connection's read buffer
            // (8 KiB on servers), so keep a copy of just the payload instead
            // of pinning the whole buffer per retained topic.
            let mut own = Message::clone(&message);
            own.payload = Bytes::copy_from_slice(&message.payload);
            self.messages.insert(own.topic.clone(), Arc::new(own));
        }
    }

    /// Unexpired retained messages whose topic matches `filter`; expired ones are dropped.
    pub fn matching(&mut self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        self.messages.retain(|_, m| !m.is_expired(now));
        self.messages
            .values()
            .filter(|m| matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::MessageProperties;
    use crate::core::QoS;
    use bytes::BytesMut;
    use std::time::Duration;

    fn msg(topic: &str, payload: &'static [u8], expires_at: Option<Instant>) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: MessageProperties::default(),
            publisher: None,
            expires_at,
        })
    }

    #[test]
    fn stored_payload_does_not_pin_the_read_buffer() {
        let mut read_buf = BytesMut::with_capacity(8192);
        read_buf.extend_from_slice(b"21.5 and the next packet");
        let payload = read_buf.split_to(4).freeze();
        let buffer = payload.as_ptr() as usize..payload.as_ptr() as usize + 8192;
        let mut m = Message::clone(&msg("t", b"", None));
        m.payload = payload;
        let mut store = RetainedStore::default();
        store.store(Arc::new(m));
        let kept = &store.matching("t", Instant::now())[0];
        assert_eq!(&kept.payload[..], b"21.5");
        assert!(!buffer.contains(&(kept.payload.as_ptr() as usize)));
    }

    #[test]
    fn set_replace_clear() {
        let now = Instant::now();
        let mut store = RetainedStore::default();
        store.store(msg("a/b", b"1", None));
        store.store(msg("a/c", b"2", None));
        store.store(msg("a/b", b"3", None));
        let mut got: Vec<_> = store
            .matching("a/+", now)
            .iter()
            .map(|m| m.payload.clone())
            .collect();
        got.sort();
        assert_eq!(got, [Bytes::from_static(b"2"), Bytes::from_static(b"3")]);
        store.store(msg("a/b", b"", None));
        assert_eq!(store.len(), 1);
        assert!(store.matching("a/b", now).is_empty());
    }

    #[test]
    fn expired_messages_are_not_delivered() {
        let now = Instant::now();
        let mut store = RetainedStore::default();
        store.store(msg("t", b"old", Some(now)));
        store.store(msg("u", b"new", Some(now + Duration::from_secs(60))));
        assert!(store.matching("t", now).is_empty());
        assert_eq!(store.matching("#", now).len(), 1);
        assert_eq!(store.len(), 1);
    }
}
