//! Retained messages: the last retained message per topic, handed to new
//! subscribers. Kept in a trie over topic levels, so a SUBSCRIBE costs what
//! its filter matches (plus the levels walked), not a scan of every topic.
//! Bounded in count and in payload bytes: a new retained message over either
//! limit is not stored ([`RetainRefused`]); replacing or clearing one always works.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::message::Message;

/// Expired messages are swept from the whole store at most this often (only
/// when a limit is reached; matching drops the expired ones it meets).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Why a retained message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainRefused {
    /// `mqtt.max_retained_messages` topics are retained already.
    Count,
    /// The payloads would exceed `mqtt.max_retained_bytes`.
    Bytes,
}

impl RetainRefused {
    pub fn as_str(self) -> &'static str {
        match self {
            RetainRefused::Count => "retained_count_limit",
            RetainRefused::Bytes => "retained_bytes_limit",
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.message.is_none() && self.children.is_empty()
    }

    /// Removes the message at `levels`, pruning nodes left empty.
    fn remove(&mut self, levels: &[&str]) -> Option<Arc<Message>> {
        match levels.split_first() {
            None => self.message.take(),
            Some((first, rest)) => {
                let child = self.children.get_mut(*first)?;
                let removed = child.remove(rest);
                if child.is_empty() {
                    self.children.remove(*first);
                }
                removed
            }
        }
    }

    fn get(&self, levels: &[&str]) -> Option<&Arc<Message>> {
        match levels.split_first() {
            None => self.message.as_ref(),
            Some((first, rest)) => self.children.get(*first)?.get(rest),
        }
    }

    /// Every message in this subtree (this node included).
    fn collect_all(&self, top: bool, out: &mut Vec<Arc<Message>>) {
        out.extend(self.message.iter().cloned());
        for (level, child) in &self.children {
            // `#` and `+` at the first level do not match `$` topics (MQTT 4.7.2).
            if top && level.starts_with('$') {
                continue;
            }
            child.collect_all(false, out);
        }
    }

    /// Messages whose topic matches the filter levels `filter` from here.
    fn collect(&self, filter: &[&str], top: bool, out: &mut Vec<Arc<Message>>) {
        let Some((first, rest)) = filter.split_first() else {
            out.extend(self.message.iter().cloned());
            return;
        };
        match *first {
            "#" => {
                // `a/#` matches `a` itself too; the root holds no message.
                out.extend(self.message.iter().cloned());
                for (level, child) in &self.children {
                    if top && level.starts_with('$') {
                        continue;
                    }
                    child.collect_all(false, out);
                }
            }
            "+" => {
                for (level, child) in &self.children {
                    if top && level.starts_with('$') {
                        continue;
                    }
                    child.collect(rest, false, out);
                }
            }
            literal => {
                if let Some(child) = self.children.get(literal) {
                    child.collect(rest, false, out);
                }
            }
        }
    }

    fn collect_expired(&self, now: Instant, out: &mut Vec<Arc<str>>) {
        if let Some(m) = &self.message {
            if m.is_expired(now) {
                out.push(m.topic.clone());
            }
        }
        for child in self.children.values() {
            child.collect_expired(now, out);
        }
    }
}

#[derive(Debug)]
pub struct RetainedStore {
    root: Node,
    count: usize,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
    last_sweep: Option<Instant>,
}

impl Default for RetainedStore {
    fn default() -> Self {
        RetainedStore::with_limits(usize::MAX, usize::MAX)
    }
}

fn levels(topic: &str) -> Vec<&str> {
    topic.split('/').collect()
}

impl RetainedStore {
    /// A store holding at most `max_messages` topics and `max_bytes` of payload.
    pub fn with_limits(max_messages: usize, max_bytes: usize) -> RetainedStore {
        RetainedStore {
            root: Node::default(),
            count: 0,
            bytes: 0,
            max_messages,
            max_bytes,
            last_sweep: None,
        }
    }

    /// Sets, replaces or (with an empty payload) clears the retained message
    /// of its topic. A new message that would take the store over a limit is
    /// not stored (expired messages are swept first, at most once a second).
    pub fn store(&mut self, message: Arc<Message>) -> Result<(), RetainRefused> {
        let path = levels(&message.topic);
        if message.payload.is_empty() {
            self.remove_path(&path);
            return Ok(());
        }
        self.admit(&message.topic, message.payload.len(), Instant::now())?;
        // A retained message can outlive its publisher's connection by
        // days; its payload is a view of that connection's read buffer
        // (8 KiB on servers), so keep a copy of just the payload instead
        // of pinning the whole buffer per retained topic.
        let mut own = Message::clone(&message);
        own.payload = Bytes::copy_from_slice(&message.payload);
        let mut node = &mut self.root;
        for level in &path {
            node = node.children.entry(Box::from(*level)).or_default();
        }
        match node.message.replace(Arc::new(own)) {
            Some(old) => self.bytes -= old.payload.len(),
            None => self.count += 1,
        }
        self.bytes += message.payload.len();
        Ok(())
    }

    /// Whether a retained message of `len` payload bytes on `topic` fits the
    /// limits now (an empty payload, which clears, always does).
    pub fn admit(&mut self, topic: &str, len: usize, now: Instant) -> Result<(), RetainRefused> {
        if len == 0 {
            return Ok(());
        }
        let mut verdict = self.fits(topic, len);
        if verdict.is_err()
            && self
                .last_sweep
                .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            self.last_sweep = Some(now);
            self.sweep_expired(now);
            verdict = self.fits(topic, len);
        }
        verdict
    }

    fn fits(&self, topic: &str, len: usize) -> Result<(), RetainRefused> {
        let old = self.root.get(&levels(topic)).map(|m| m.payload.len());
        if old.is_none() && self.count >= self.max_messages {
            return Err(RetainRefused::Count);
        }
        let bytes = self.bytes - old.unwrap_or(0);
        if bytes.saturating_add(len) > self.max_bytes {
            return Err(RetainRefused::Bytes);
        }
        Ok(())
    }

    fn remove_path(&mut self, path: &[&str]) {
        if let Some(old) = self.root.remove(path) {
            self.count -= 1;
            self.bytes -= old.payload.len();
        }
    }

    fn sweep_expired(&mut self, now: Instant) {
        let mut expired = Vec::new();
        self.root.collect_expired(now, &mut expired);
        for topic in expired {
            self.remove_path(&levels(&topic));
        }
    }

    /// Unexpired retained messages whose topic matches `filter` (a valid
    /// filter, without any `$share/` prefix); the expired ones met are dropped.
    pub fn matching(&mut self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut found = Vec::new();
        self.root.collect(&levels(filter), true, &mut found);
        if found.iter().any(|m| m.is_expired(now)) {
            found.retain(|m| {
                if m.is_expired(now) {
                    self.remove_path(&levels(&m.topic));
                    false
                } else {
                    true
                }
            });
        }
        found
    }

    /// Retained topics stored.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Payload bytes stored.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        store.store(Arc::new(m)).unwrap();
        let kept = &store.matching("t", Instant::now())[0];
        assert_eq!(&kept.payload[..], b"21.5");
        assert!(!buffer.contains(&(kept.payload.as_ptr() as usize)));
    }

    #[test]
    fn set_replace_clear() {
        let now = Instant::now();
        let mut store = RetainedStore::default();
        store.store(msg("a/b", b"1", None)).unwrap();
        store.store(msg("a/c", b"2", None)).unwrap();
        store.store(msg("a/b", b"3", None)).unwrap();
        let mut got: Vec<_> = store
            .matching("a/+", now)
            .iter()
            .map(|m| m.payload.clone())
            .collect();
        got.sort();
        assert_eq!(got, [Bytes::from_static(b"2"), Bytes::from_static(b"3")]);
        store.store(msg("a/b", b"", None)).unwrap();
        assert_eq!(store.len(), 1);
        assert!(store.matching("a/b", now).is_empty());
    }

    fn topics(store: &mut RetainedStore, filter: &str) -> Vec<String> {
        let mut t: Vec<String> = store
            .matching(filter, Instant::now())
            .iter()
            .map(|m| m.topic.to_string())
            .collect();
        t.sort();
        t
    }

    #[test]
    fn trie_matches_like_the_filter_rules() {
        let mut store = RetainedStore::default();
        for t in [
            "a",
            "a/b",
            "a/c",
            "a/b/c",
            "/x",
            "a//b",
            "$SYS/uptime",
            "$SYS/x/y",
            "b/$x",
        ] {
            store.store(msg(t, b"1", None)).unwrap();
        }
        let all = ["/x", "a", "a//b", "a/b", "a/b/c", "a/c", "b/$x"];
        assert_eq!(topics(&mut store, "#"), all);
        // Checked against the reference matcher for every stored topic.
        for filter in [
            "#",
            "+",
            "+/#",
            "a/#",
            "a/+",
            "a/+/c",
            "+/b",
            "/+",
            "+/+",
            "a//b",
            "a/+/+",
            "$SYS/#",
            "$SYS/+",
            "+/uptime",
            "b/+",
            "a/b/c/#",
            "nothing/#",
        ] {
            let mut expected: Vec<String> = [
                "a",
                "a/b",
                "a/c",
                "a/b/c",
                "/x",
                "a//b",
                "$SYS/uptime",
                "$SYS/x/y",
                "b/$x",
            ]
            .iter()
            .filter(|t| crate::core::topic::matches(filter, t))
            .map(|t| t.to_string())
            .collect();
            expected.sort();
            assert_eq!(topics(&mut store, filter), expected, "filter {filter}");
        }
    }

    #[test]
    fn dollar_topics_are_not_matched_by_wildcards_at_the_first_level() {
        let mut store = RetainedStore::default();
        store.store(msg("$SYS/broker/uptime", b"1", None)).unwrap();
        store.store(msg("$share", b"1", None)).unwrap();
        assert!(topics(&mut store, "#").is_empty());
        assert!(topics(&mut store, "+").is_empty());
        assert!(topics(&mut store, "+/broker/uptime").is_empty());
        assert!(topics(&mut store, "+/#").is_empty());
        assert_eq!(topics(&mut store, "$SYS/#"), ["$SYS/broker/uptime"]);
        assert_eq!(topics(&mut store, "$SYS/+/uptime"), ["$SYS/broker/uptime"]);
        assert_eq!(topics(&mut store, "$share"), ["$share"]);
    }

    #[test]
    fn clearing_prunes_the_trie() {
        let mut store = RetainedStore::default();
        store.store(msg("a/b/c/d", b"1", None)).unwrap();
        store.store(msg("a/b/c/d", b"", None)).unwrap();
        assert!(store.root.is_empty());
        assert_eq!((store.len(), store.bytes()), (0, 0));
        // Clearing a topic never stored is fine.
        store.store(msg("x/y", b"", None)).unwrap();
        assert!(store.root.is_empty());
    }

    #[test]
    fn count_and_byte_limits_refuse_new_topics_only() {
        let mut store = RetainedStore::with_limits(2, 10);
        store.store(msg("a", b"1234", None)).unwrap();
        store.store(msg("b", b"1234", None)).unwrap();
        assert_eq!(store.store(msg("c", b"1", None)), Err(RetainRefused::Count));
        // Replacing within the byte budget works; growing past it does not.
        store.store(msg("a", b"123456", None)).unwrap();
        assert_eq!(
            store.store(msg("b", b"12345", None)),
            Err(RetainRefused::Bytes)
        );
        assert_eq!((store.len(), store.bytes()), (2, 10));
        // Clearing makes room.
        store.store(msg("a", b"", None)).unwrap();
        store.store(msg("c", b"1", None)).unwrap();
        assert_eq!((store.len(), store.bytes()), (2, 5));
        assert_eq!(topics(&mut store, "#"), ["b", "c"]);
    }

    #[test]
    fn expired_messages_make_room() {
        let now = Instant::now();
        let mut store = RetainedStore::with_limits(1, 100);
        store.store(msg("old", b"1", Some(now))).unwrap();
        store.store(msg("new", b"2", None)).unwrap();
        assert_eq!(topics(&mut store, "#"), ["new"]);
    }

    #[test]
    fn expired_messages_are_not_delivered() {
        let now = Instant::now();
        let mut store = RetainedStore::default();
        store.store(msg("t", b"old", Some(now))).unwrap();
        store
            .store(msg("u", b"new", Some(now + Duration::from_secs(60))))
            .unwrap();
        assert!(store.matching("t", now).is_empty());
        assert_eq!(store.matching("#", now).len(), 1);
        assert_eq!(store.len(), 1);
    }
}
