//! One queue's ready messages and the rules applied to them: message TTL
//! (per queue and per message, expired from the head as RabbitMQ does),
//! length limits with `drop-head` or `reject-publish` overflow, requeue in
//! original order, and the dead-lettered copy of a message (`x-death`).

use std::collections::VecDeque;
use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
use bytes::Bytes;

use super::memory::Charge;
use super::routing::{int_arg, str_arg};

/// A published message as every queue it was routed to shares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    pub properties: AMQPProperties,
    pub body: Bytes,
    /// The body's bytes in the hub's memory total while the message lives.
    pub charge: Charge,
}

impl Message {
    /// What a message holds in memory, as the memory high-watermark counts
    /// it: the body, exchange and routing key, and the fixed size of the
    /// message and of its place in a queue (header tables are not counted).
    pub fn cost(body: usize, exchange: &str, routing_key: &str) -> usize {
        body + exchange.len()
            + routing_key.len()
            + std::mem::size_of::<Message>()
            + std::mem::size_of::<QueuedMessage>()
            + 16
    }

    /// delivery-mode 2.
    pub fn is_persistent(&self) -> bool {
        *self.properties.delivery_mode() == Some(2)
    }
}

/// A message in one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMessage {
    /// Position in the queue (also the key of its record on disk).
    pub id: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Unix milliseconds after which the message is dead.
    pub expires_at: Option<u64>,
    /// Written to the queue's file (durable queue, persistent message).
    pub on_disk: bool,
}

/// Why a message leaves a queue for its dead-letter exchange (the `x-death` reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    Rejected,
    Expired,
    MaxLen,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Rejected => "rejected",
            DeadReason::Expired => "expired",
            DeadReason::MaxLen => "maxlen",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    DropHead,
    RejectPublish,
}

/// The `x-` arguments of a queue that the broker acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArgs {
    pub message_ttl: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Option<Overflow>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
}

impl QueueArgs {
    /// Reads the arguments of queue.declare; the error is the 406 reply text.
    pub fn parse(args: &FieldTable, default_max_length: Option<u64>) -> Result<QueueArgs, String> {
        let non_negative = |key: &str| -> Result<Option<u64>, String> {
            match int_arg(args, key) {
                None => Ok(None),
                Some(Ok(n)) if n >= 0 => Ok(Some(u64::try_from(n).unwrap_or(u64::MAX))),
                Some(_) => Err(format!(
                    "PRECONDITION_FAILED - invalid arg '{key}': must be a non-negative integer"
                )),
            }
        };
        let string = |key: &str| -> Result<Option<String>, String> {
            match str_arg(args, key) {
                None => Ok(None),
                Some(Ok(s)) => Ok(Some(s)),
                Some(Err(())) => Err(format!(
                    "PRECONDITION_FAILED - invalid arg '{key}': must be a string"
                )),
            }
        };
        let overflow = match string("x-overflow")?.as_deref() {
            None => None,
            Some("drop-head") => Some(Overflow::DropHead),
            Some("reject-publish") | Some("reject-publish-dlx") => Some(Overflow::RejectPublish),
            Some(other) => {
                return Err(format!(
                    "PRECONDITION_FAILED - invalid arg 'x-overflow': {other:?} is not drop-head or reject-publish"
                ))
            }
        };
        let max_length = non_negative("x-max-length")?;
        let max_length_bytes = non_negative("x-max-length-bytes")?;
        // The broker's default limit refuses new messages rather than dropping
        // old ones: a confirmed publisher gets a nack, and nothing it was
        // already told is safe is ever thrown away.
        let by_default = max_length.is_none() && max_length_bytes.is_none();
        let overflow = match overflow {
            None if by_default && default_max_length.is_some() => Some(Overflow::RejectPublish),
            other => other,
        };
        Ok(QueueArgs {
            message_ttl: non_negative("x-message-ttl")?,
            max_length: max_length.or(default_max_length),
            max_length_bytes,
            overflow,
            dead_letter_exchange: string("x-dead-letter-exchange")?,
            dead_letter_routing_key: string("x-dead-letter-routing-key")?,
        })
    }
}

/// What happened to a pushed message.
#[derive(Debug, PartialEq)]
pub enum PushOutcome {
    /// Queued; `dropped` left the head to make room (dead-letter them as `maxlen`).
    Queued { dropped: Vec<QueuedMessage> },
    /// The queue is full and its overflow is `reject-publish`.
    Rejected,
}

#[derive(Debug, Default)]
pub struct MessageQueue {
    ready: VecDeque<QueuedMessage>,
    ready_bytes: u64,
    next_id: u64,
    pub args: QueueArgs,
}

impl MessageQueue {
    pub fn new(args: QueueArgs) -> MessageQueue {
        MessageQueue {
            args,
            ..MessageQueue::default()
        }
    }

    pub fn len(&self) -> usize {
        self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// When a message pushed at `now_ms` expires (queue TTL or its `expiration`).
    pub fn expiry_for(&self, message: &Message, now_ms: u64) -> Option<u64> {
        let per_message = message
            .properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse::<u64>().ok());
        [self.args.message_ttl, per_message]
            .into_iter()
            .flatten()
            .min()
            .map(|ttl| now_ms.saturating_add(ttl))
    }

    fn full_with(&self, extra_bytes: u64) -> bool {
        self.args
            .max_length
            .is_some_and(|max| self.ready.len() as u64 >= max)
            || self
                .args
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes + extra_bytes > max)
    }

    /// Whether a push would be refused (queue full with `reject-publish`).
    pub fn would_reject(&self, message: &Message) -> bool {
        self.args.overflow == Some(Overflow::RejectPublish)
            && self.full_with(message.body.len() as u64)
    }

    /// Assigns the next id and queues the message at the tail.
    pub fn push(&mut self, message: Arc<Message>, now_ms: u64, on_disk: bool) -> PushOutcome {
        if self.would_reject(&message) {
            return PushOutcome::Rejected;
        }
        let size = message.body.len() as u64;
        let mut dropped = Vec::new();
        while !self.ready.is_empty() && self.full_with(size) {
            dropped.extend(self.pop_front());
        }
        let expires_at = self.expiry_for(&message, now_ms);
        let id = self.next_id;
        self.push_recovered(QueuedMessage {
            id,
            message,
            redelivered: false,
            expires_at,
            on_disk,
        });
        PushOutcome::Queued { dropped }
    }

    /// Puts a message read back from disk (ids ascending) at the tail.
    pub fn push_recovered(&mut self, m: QueuedMessage) {
        self.next_id = self.next_id.max(m.id + 1);
        self.ready_bytes += m.message.body.len() as u64;
        self.ready.push_back(m);
    }

    fn pop_front(&mut self) -> Option<QueuedMessage> {
        let m = self.ready.pop_front()?;
        self.ready_bytes -= m.message.body.len() as u64;
        Some(m)
    }

    /// Removes the expired messages at the head.
    pub fn expire(&mut self, now_ms: u64) -> Vec<QueuedMessage> {
        let mut expired = Vec::new();
        while self
            .ready
            .front()
            .is_some_and(|m| m.expires_at.is_some_and(|t| t <= now_ms))
        {
            expired.extend(self.pop_front());
        }
        expired
    }

    /// The next live message (expired ones at the head go to `expired`).
    pub fn pop(&mut self, now_ms: u64, expired: &mut Vec<QueuedMessage>) -> Option<QueuedMessage> {
        expired.extend(self.expire(now_ms));
        self.pop_front()
    }

    /// Puts an unacknowledged message back at its original position, marked redelivered.
    pub fn requeue(&mut self, mut m: QueuedMessage) {
        m.redelivered = true;
        self.ready_bytes += m.message.body.len() as u64;
        let at = self.ready.partition_point(|x| x.id < m.id);
        self.ready.insert(at, m);
    }

    /// Empties the queue, returning what was in it.
    pub fn purge(&mut self) -> Vec<QueuedMessage> {
        self.ready_bytes = 0;
        self.ready.drain(..).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.ready.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut QueuedMessage> {
        self.ready.iter_mut()
    }

    /// Whether any queued message can expire (worth a periodic look).
    pub fn has_expiring(&self) -> bool {
        self.ready.front().is_some_and(|m| m.expires_at.is_some())
    }
}

/// The copy of `m` that goes to the dead-letter exchange: routing key
/// replaced when the queue says so, an `x-death` entry added (or its count
/// raised), the per-message TTL removed so it does not expire again.
/// `None` when the message already died the same way in the same queue
/// (a dead-letter cycle without a rejection), which RabbitMQ drops too.
pub fn dead_letter(
    m: &Message,
    queue: &str,
    reason: DeadReason,
    routing_key: Option<&str>,
    now_secs: u64,
) -> Option<Message> {
    let mut headers = m.properties.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = |t: &FieldTable| {
        t.inner().get("queue") == Some(&AMQPValue::LongString(queue.into()))
            && t.inner().get("reason") == Some(&AMQPValue::LongString(reason.as_str().into()))
    };
    let existing = deaths
        .iter()
        .position(|d| matches!(d, AMQPValue::FieldTable(t) if same(t)));
    if existing.is_some() && reason != DeadReason::Rejected {
        return None;
    }
    let count = existing
        .map(|i| match &deaths[i] {
            AMQPValue::FieldTable(t) => match t.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                _ => 0,
            },
            _ => 0,
        })
        .unwrap_or(0)
        + 1;
    if let Some(i) = existing {
        deaths.remove(i);
    }
    let mut entry = FieldTable::default();
    entry.insert("count".into(), AMQPValue::LongLongInt(count));
    entry.insert(
        "reason".into(),
        AMQPValue::LongString(reason.as_str().into()),
    );
    entry.insert("queue".into(), AMQPValue::LongString(queue.into()));
    entry.insert("time".into(), AMQPValue::Timestamp(now_secs));
    entry.insert(
        "exchange".into(),
        AMQPValue::LongString(m.exchange.as_str().into()),
    );
    let mut keys = FieldArray::default();
    keys.push(AMQPValue::LongString(m.routing_key.as_str().into()));
    entry.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
    deaths.insert(0, AMQPValue::FieldTable(entry));
    if !headers.contains_key("x-first-death-reason") {
        headers.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString(reason.as_str().into()),
        );
        headers.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString(queue.into()),
        );
        headers.insert(
            "x-first-death-exchange".into(),
            AMQPValue::LongString(m.exchange.as_str().into()),
        );
    }
    let mut array = FieldArray::default();
    for d in deaths {
        array.push(d);
    }
    headers.insert("x-death".into(), AMQPValue::FieldArray(array));
    let mut properties = m.properties.clone().with_headers(headers);
    if properties.expiration().is_some() {
        properties = without_expiration(properties);
    }
    Some(Message {
        exchange: m.exchange.clone(),
        routing_key: routing_key.unwrap_or(&m.routing_key).to_string(),
        properties,
        body: m.body.clone(),
        charge: m.charge.clone(),
    })
}

/// The properties with `expiration` unset (the generated type has no unsetter).
fn without_expiration(p: AMQPProperties) -> AMQPProperties {
    let mut q = AMQPProperties::default();
    macro_rules! copy {
        ($($get:ident => $with:ident),*) => {
            $(if let Some(v) = p.$get().clone() { q = q.$with(v); })*
        };
    }
    copy!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        headers => with_headers,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id,
        cluster_id => with_cluster_id
    );
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> Arc<Message> {
        Arc::new(Message {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            properties: AMQPProperties::default(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            charge: Charge::default(),
        })
    }

    fn bodies(q: &MessageQueue) -> Vec<String> {
        q.iter()
            .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
            .collect()
    }

    fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn args_parse_and_bad_values_are_406_texts() {
        let a = QueueArgs::parse(
            &args(&[
                ("x-message-ttl", AMQPValue::LongInt(500)),
                ("x-max-length", AMQPValue::ShortShortUInt(3)),
                (
                    "x-dead-letter-exchange",
                    AMQPValue::LongString("dlx".into()),
                ),
                ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(a.message_ttl, Some(500));
        assert_eq!(a.max_length, Some(3));
        assert_eq!(a.overflow, Some(Overflow::RejectPublish));
        assert_eq!(a.dead_letter_exchange.as_deref(), Some("dlx"));
        let d = QueueArgs::parse(&FieldTable::default(), Some(10)).unwrap();
        assert_eq!(d.max_length, Some(10), "the configured default applies");
        let err = QueueArgs::parse(&args(&[("x-message-ttl", AMQPValue::LongInt(-1))]), None)
            .unwrap_err();
        assert!(err.contains("x-message-ttl"), "{err}");
        let err = QueueArgs::parse(
            &args(&[("x-overflow", AMQPValue::LongString("spill".into()))]),
            None,
        )
        .unwrap_err();
        assert!(err.contains("x-overflow"), "{err}");
    }

    #[test]
    fn ttl_expires_from_the_head() {
        let mut q = MessageQueue::new(QueueArgs {
            message_ttl: Some(100),
            ..QueueArgs::default()
        });
        q.push(msg("a"), 1000, false);
        q.push(msg("b"), 1050, false);
        assert!(q.has_expiring());
        assert!(q.expire(1099).is_empty());
        let gone = q.expire(1100);
        assert_eq!(gone.len(), 1);
        assert_eq!(&gone[0].message.body[..], b"a");
        let mut expired = Vec::new();
        assert!(q.pop(1200, &mut expired).is_none());
        assert_eq!(expired.len(), 1, "b expired on the way");
        // A per-message expiration shorter than the queue TTL wins.
        let m = Message {
            properties: AMQPProperties::default().with_expiration("10".into()),
            ..(*msg("c")).clone()
        };
        assert_eq!(q.expiry_for(&m, 5000), Some(5010));
    }

    #[test]
    fn max_length_drops_head_or_rejects() {
        let mut q = MessageQueue::new(QueueArgs {
            max_length: Some(2),
            ..QueueArgs::default()
        });
        for b in ["a", "b"] {
            assert_eq!(
                q.push(msg(b), 0, false),
                PushOutcome::Queued { dropped: vec![] }
            );
        }
        match q.push(msg("c"), 0, false) {
            PushOutcome::Queued { dropped } => {
                assert_eq!(dropped.len(), 1);
                assert_eq!(&dropped[0].message.body[..], b"a");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(bodies(&q), ["b", "c"]);
        q.args.overflow = Some(Overflow::RejectPublish);
        assert_eq!(q.push(msg("d"), 0, false), PushOutcome::Rejected);
        assert_eq!(bodies(&q), ["b", "c"]);
        let mut bytes = MessageQueue::new(QueueArgs {
            max_length_bytes: Some(5),
            ..QueueArgs::default()
        });
        bytes.push(msg("abc"), 0, false);
        bytes.push(msg("de"), 0, false);
        bytes.push(msg("f"), 0, false);
        assert_eq!(bodies(&bytes), ["de", "f"]);
    }

    #[test]
    fn requeue_restores_order_and_marks_redelivered() {
        let mut q = MessageQueue::default();
        for b in ["a", "b", "c"] {
            q.push(msg(b), 0, false);
        }
        let mut exp = Vec::new();
        let a = q.pop(0, &mut exp).unwrap();
        let b = q.pop(0, &mut exp).unwrap();
        q.requeue(b);
        q.requeue(a);
        assert_eq!(bodies(&q), ["a", "b", "c"]);
        let flags: Vec<bool> = q.iter().map(|m| m.redelivered).collect();
        assert_eq!(flags, [true, true, false]);
        assert_eq!(q.purge().len(), 3);
        assert!(q.is_empty());
    }

    #[test]
    fn dead_letter_adds_x_death_and_stops_cycles() {
        let m = Message {
            properties: AMQPProperties::default().with_expiration("5".into()),
            ..(*msg("x")).clone()
        };
        let d = dead_letter(&m, "work", DeadReason::Expired, Some("dead"), 42).unwrap();
        assert_eq!(d.routing_key, "dead");
        assert_eq!(d.properties.expiration(), &None, "no second expiry");
        let h = d.properties.headers().clone().unwrap();
        assert_eq!(
            h.inner().get("x-first-death-reason"),
            Some(&AMQPValue::LongString("expired".into()))
        );
        let Some(AMQPValue::FieldArray(deaths)) = h.inner().get("x-death") else {
            panic!("x-death missing: {h:?}");
        };
        assert_eq!(deaths.as_slice().len(), 1);
        // Expiring again in the same queue is a cycle: dropped.
        assert_eq!(dead_letter(&d, "work", DeadReason::Expired, None, 43), None);
        // Rejections may cycle; the count goes up.
        let r1 = dead_letter(&d, "work", DeadReason::Rejected, None, 44).unwrap();
        let r2 = dead_letter(&r1, "work", DeadReason::Rejected, None, 45).unwrap();
        let h = r2.properties.headers().clone().unwrap();
        let Some(AMQPValue::FieldArray(deaths)) = h.inner().get("x-death") else {
            panic!()
        };
        assert_eq!(deaths.as_slice().len(), 2);
        let AMQPValue::FieldTable(first) = &deaths.as_slice()[0] else {
            panic!()
        };
        assert_eq!(first.inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(
            r2.routing_key, "dead",
            "routing key kept when the queue sets none"
        );
    }
}
