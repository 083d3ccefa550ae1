//! On-disk state of durable AMQP entities, under `server.data_dir/amqp`:
//!
//! - `definitions.log`: durable exchanges, queues and bindings, each record
//!   one AMQP method frame (exchange.declare, queue.bind, queue.delete, ...)
//!   encoded by `amq-protocol` and replayed in order at start-up, then
//!   rewritten with only what still exists;
//! - `queues/<hex name>.log`: per durable queue, a record per persistent
//!   message (id, expiry, exchange, routing key, content header and body
//!   frames) and a record per message removed (acked, purged, expired,
//!   dead-lettered). Rewritten with the live messages at start-up; emptied
//!   whenever no live message is left.
//!
//! Both use [`RecordLog`], which checksums records and drops a torn tail.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amq_protocol::protocol::{exchange, queue, AMQPClass};
use bytes::{Buf, BufMut, BytesMut};

use super::codec::{self, Frame};
use super::hub::{Binding, Destination};
use super::queue::{Message, QueuedMessage};
use crate::storage::RecordLog;
use crate::storage::StorageError;

const ENQUEUE: u8 = 1;
const REMOVE: u8 = 2;

/// A change to the durable definitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    ExchangeDeclare(exchange::Declare),
    ExchangeDelete(String),
    QueueDeclare(queue::Declare),
    QueueDelete(String),
    Bind { source: String, binding: Binding },
    Unbind { source: String, binding: Binding },
}

impl Definition {
    fn to_method(&self) -> AMQPClass {
        use Definition as D;
        match self {
            D::ExchangeDeclare(m) => AMQPClass::Exchange(exchange::AMQPMethod::Declare(m.clone())),
            D::ExchangeDelete(name) => {
                AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
                    exchange: name.as_str().into(),
                    if_unused: false,
                    nowait: false,
                }))
            }
            D::QueueDeclare(m) => AMQPClass::Queue(queue::AMQPMethod::Declare(m.clone())),
            D::QueueDelete(name) => AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: name.as_str().into(),
                if_unused: false,
                if_empty: false,
                nowait: false,
            })),
            D::Bind { source, binding } | D::Unbind { source, binding } => {
                let bind = matches!(self, D::Bind { .. });
                let (source, key, args) = (
                    source.as_str().into(),
                    binding.key.as_str().into(),
                    binding.args.clone(),
                );
                match (&binding.destination, bind) {
                    (Destination::Queue(q), true) => {
                        AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                            queue: q.as_str().into(),
                            exchange: source,
                            routing_key: key,
                            nowait: false,
                            arguments: args,
                        }))
                    }
                    (Destination::Queue(q), false) => {
                        AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                            queue: q.as_str().into(),
                            exchange: source,
                            routing_key: key,
                            arguments: args,
                        }))
                    }
                    (Destination::Exchange(x), true) => {
                        AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                            destination: x.as_str().into(),
                            source,
                            routing_key: key,
                            nowait: false,
                            arguments: args,
                        }))
                    }
                    (Destination::Exchange(x), false) => {
                        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                            destination: x.as_str().into(),
                            source,
                            routing_key: key,
                            nowait: false,
                            arguments: args,
                        }))
                    }
                }
            }
        }
    }

    fn from_method(m: AMQPClass) -> Option<Definition> {
        use Definition as D;
        let binding = |dest: Destination, key: &amq_protocol::types::ShortString, args| Binding {
            destination: dest,
            key: key.as_str().to_string(),
            args,
        };
        Some(match m {
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) => D::ExchangeDeclare(m),
            AMQPClass::Exchange(exchange::AMQPMethod::Delete(m)) => {
                D::ExchangeDelete(m.exchange.as_str().to_string())
            }
            AMQPClass::Queue(queue::AMQPMethod::Declare(m)) => D::QueueDeclare(m),
            AMQPClass::Queue(queue::AMQPMethod::Delete(m)) => {
                D::QueueDelete(m.queue.as_str().to_string())
            }
            AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => D::Bind {
                source: m.exchange.as_str().to_string(),
                binding: binding(
                    Destination::Queue(m.queue.as_str().to_string()),
                    &m.routing_key,
                    m.arguments,
                ),
            },
            AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => D::Unbind {
                source: m.exchange.as_str().to_string(),
                binding: binding(
                    Destination::Queue(m.queue.as_str().to_string()),
                    &m.routing_key,
                    m.arguments,
                ),
            },
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => D::Bind {
                source: m.source.as_str().to_string(),
                binding: binding(
                    Destination::Exchange(m.destination.as_str().to_string()),
                    &m.routing_key,
                    m.arguments,
                ),
            },
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => D::Unbind {
                source: m.source.as_str().to_string(),
                binding: binding(
                    Destination::Exchange(m.destination.as_str().to_string()),
                    &m.routing_key,
                    m.arguments,
                ),
            },
            _ => return None,
        })
    }
}

fn encode_definition(d: &Definition) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::put_method(&mut out, 0, d.to_method());
    out.to_vec()
}

fn decode_definition(record: &[u8]) -> Option<Definition> {
    match codec::next_frame(&mut BytesMut::from(record), u32::MAX) {
        Ok(Some(Frame::Method(_, m))) => Definition::from_method(m),
        _ => None,
    }
}

/// The definitions file and the directory of queue files.
pub struct Store {
    root: PathBuf,
    definitions: RecordLog,
}

impl Store {
    /// Opens the store, returning the recorded definitions in order.
    pub fn open(root: &Path) -> Result<(Store, Vec<Definition>), StorageError> {
        let (definitions, records) = RecordLog::open(&root.join("definitions.log"))?;
        let mut defs = Vec::new();
        for r in records {
            match decode_definition(&r) {
                Some(d) => defs.push(d),
                None => tracing::warn!("amqp: skipping an unreadable definition record"),
            }
        }
        Ok((
            Store {
                root: root.to_path_buf(),
                definitions,
            },
            defs,
        ))
    }

    pub fn record(&mut self, d: &Definition) -> Result<(), StorageError> {
        self.definitions.append(&encode_definition(d))
    }

    pub fn rewrite(&mut self, defs: &[Definition]) -> Result<(), StorageError> {
        let encoded: Vec<Vec<u8>> = defs.iter().map(encode_definition).collect();
        self.definitions.rewrite(encoded.iter().map(Vec::as_slice))
    }

    pub fn take_sync_handle(&mut self) -> Result<Option<File>, StorageError> {
        self.definitions.take_sync_handle()
    }

    fn queue_path(&self, name: &str) -> PathBuf {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        self.root.join("queues").join(format!("{hex}.log"))
    }

    /// A fresh file for a newly declared durable queue (left-overs of an
    /// earlier queue of the same name are discarded).
    pub fn create_queue_log(&mut self, name: &str) -> Result<QueueLog, StorageError> {
        let (mut log, records) = RecordLog::open(&self.queue_path(name))?;
        if !records.is_empty() {
            log.clear()?;
        }
        Ok(QueueLog { log, live: 0 })
    }

    /// Reopens a durable queue's file: its live messages in order, the file compacted.
    pub fn open_queue_log(
        &mut self,
        name: &str,
    ) -> Result<(QueueLog, Vec<QueuedMessage>), StorageError> {
        let (mut log, records) = RecordLog::open(&self.queue_path(name))?;
        let mut live: BTreeMap<u64, (QueuedMessage, Vec<u8>)> = BTreeMap::new();
        let mut unreadable = 0;
        for r in records {
            match r.first() {
                Some(&REMOVE) if r.len() == 9 => {
                    live.remove(&u64::from_be_bytes(r[1..9].try_into().expect("8 bytes")));
                }
                Some(&ENQUEUE) => match decode_message(&r) {
                    Some(m) => {
                        live.insert(m.id, (m, r));
                    }
                    None => unreadable += 1,
                },
                _ => unreadable += 1,
            }
        }
        if unreadable > 0 {
            tracing::warn!("amqp: queue '{name}': skipped {unreadable} unreadable records");
        }
        log.rewrite(live.values().map(|(_, r)| r.as_slice()))?;
        let count = live.len();
        let messages = live.into_values().map(|(m, _)| m).collect();
        Ok((QueueLog { log, live: count }, messages))
    }
}

/// One durable queue's file.
pub struct QueueLog {
    log: RecordLog,
    live: usize,
}

impl QueueLog {
    pub fn append(&mut self, m: &QueuedMessage) -> Result<(), StorageError> {
        self.log.append(&encode_message(m))?;
        self.live += 1;
        Ok(())
    }

    pub fn remove(&mut self, id: u64) -> Result<(), StorageError> {
        let mut r = vec![REMOVE];
        r.extend_from_slice(&id.to_be_bytes());
        self.log.append(&r)?;
        self.live = self.live.saturating_sub(1);
        Ok(())
    }

    /// Messages written and not removed.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Empties the file once nothing in it is live.
    pub fn clear_if_dead(&mut self) -> Result<bool, StorageError> {
        if self.live > 0 || self.log.is_empty() {
            return Ok(false);
        }
        self.log.clear()?;
        Ok(true)
    }

    pub fn take_sync_handle(&mut self) -> Result<Option<File>, StorageError> {
        self.log.take_sync_handle()
    }

    pub fn delete(self) -> Result<(), StorageError> {
        self.log.delete()
    }
}

fn put_short(out: &mut BytesMut, s: &str) {
    // Exchange names and routing keys come from short strings (<= 255 bytes).
    let b = &s.as_bytes()[..s.len().min(255)];
    out.put_u8(b.len() as u8);
    out.put_slice(b);
}

fn encode_message(m: &QueuedMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(ENQUEUE);
    out.put_u64(m.id);
    out.put_u64(m.expires_at.unwrap_or(0));
    put_short(&mut out, &m.message.exchange);
    put_short(&mut out, &m.message.routing_key);
    codec::put_content(
        &mut out,
        0,
        &m.message.properties,
        &m.message.body,
        u32::MAX,
    );
    out.to_vec()
}

fn decode_message(r: &[u8]) -> Option<QueuedMessage> {
    let mut b = BytesMut::from(r);
    if b.len() < 1 + 8 + 8 + 1 {
        return None;
    }
    b.advance(1);
    let id = b.get_u64();
    let expires = b.get_u64();
    let short = |b: &mut BytesMut| -> Option<String> {
        let n = usize::from(*b.first()?);
        if b.len() < 1 + n {
            return None;
        }
        b.advance(1);
        String::from_utf8(b.split_to(n).to_vec()).ok()
    };
    let exchange = short(&mut b)?;
    let routing_key = short(&mut b)?;
    let Ok(Some(Frame::Header(_, header))) = codec::next_frame(&mut b, u32::MAX) else {
        return None;
    };
    let mut body = BytesMut::new();
    while (body.len() as u64) < header.body_size {
        match codec::next_frame(&mut b, u32::MAX) {
            Ok(Some(Frame::Body(_, part))) => body.extend_from_slice(&part),
            _ => return None,
        }
    }
    Some(QueuedMessage {
        id,
        message: Arc::new(Message {
            exchange,
            routing_key,
            properties: header.properties,
            body: body.freeze(),
        }),
        // It may have been delivered before the restart.
        redelivered: true,
        expires_at: (expires != 0).then_some(expires),
        on_disk: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;
    use amq_protocol::types::FieldTable;
    use bytes::Bytes;
    use std::io::Write;

    fn qm(id: u64, body: &str) -> QueuedMessage {
        QueuedMessage {
            id,
            message: Arc::new(Message {
                exchange: "ex".into(),
                routing_key: "k".into(),
                properties: AMQPProperties::default().with_delivery_mode(2),
                body: Bytes::copy_from_slice(body.as_bytes()),
            }),
            redelivered: false,
            expires_at: Some(99),
            on_disk: true,
        }
    }

    #[test]
    fn definitions_round_trip_as_method_frames() {
        let defs = vec![
            Definition::ExchangeDeclare(exchange::Declare {
                exchange: "logs".into(),
                kind: "topic".into(),
                passive: false,
                durable: true,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::default(),
            }),
            Definition::Bind {
                source: "logs".into(),
                binding: Binding {
                    destination: Destination::Queue("q".into()),
                    key: "a.#".into(),
                    args: FieldTable::default(),
                },
            },
            Definition::Unbind {
                source: "logs".into(),
                binding: Binding {
                    destination: Destination::Exchange("x2".into()),
                    key: "".into(),
                    args: FieldTable::default(),
                },
            },
            Definition::QueueDelete("q".into()),
        ];
        for d in defs {
            assert_eq!(decode_definition(&encode_definition(&d)), Some(d));
        }
    }

    #[test]
    fn queue_file_recovers_live_messages_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, defs) = Store::open(dir.path()).unwrap();
        assert!(defs.is_empty());
        let mut log = store.create_queue_log("jobs/ü").unwrap();
        for (id, body) in [(0, "a"), (1, "b"), (2, "c")] {
            log.append(&qm(id, body)).unwrap();
        }
        log.remove(1).unwrap();
        assert_eq!(log.live(), 2);
        drop(log);
        // A crash while appending a fourth message.
        let path = store.queue_path("jobs/ü");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[0, 0, 1, 0, 9, 9]).unwrap();
        drop(f);
        let (log, messages) = store.open_queue_log("jobs/ü").unwrap();
        let bodies: Vec<&[u8]> = messages.iter().map(|m| &m.message.body[..]).collect();
        assert_eq!(bodies, [&b"a"[..], b"c"]);
        assert_eq!(messages[1].id, 2);
        assert_eq!(messages[1].expires_at, Some(99));
        assert!(messages[0].redelivered);
        assert_eq!(messages[0].message.properties.delivery_mode(), &Some(2));
        assert_eq!(log.live(), 2);
        drop(log);
        // The compacted file holds exactly the two live records.
        let (_, again) = store.open_queue_log("jobs/ü").unwrap();
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn a_large_body_round_trips() {
        let big = "x".repeat(300_000);
        let m = qm(7, &big);
        let back = decode_message(&encode_message(&m)).unwrap();
        assert_eq!(back.message.body.len(), 300_000);
        assert_eq!(back.id, 7);
    }
}
