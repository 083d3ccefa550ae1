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
//!   whenever no live message is left. A name longer than
//!   [`MAX_HEX_NAME`] bytes would not fit a file name in hex (255 bytes on
//!   common file systems): its file is `queues/long-<FNV-1a 64 of the
//!   name>-<n>.log` and starts with a record holding the real name, which
//!   tells two names of the same hash apart.
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
use crate::storage::record_file::RECORD_HEADER;
use crate::storage::RecordLog;
use crate::storage::StorageError;

const ENQUEUE: u8 = 1;
const REMOVE: u8 = 2;
/// The first record of a long-named queue's file: the queue's name.
const NAME: u8 = 3;
/// Queue names up to this many bytes keep their hex-encoded file name
/// (250 characters plus `.log`), as files written before long names existed do.
const MAX_HEX_NAME: usize = 125;

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

/// The largest frame a record can hold: the record itself. Frames read back
/// from a record are split with this bound, so a corrupt frame size is
/// refused at once instead of reserving room for it (`u32::MAX` here let a
/// 229-byte queue file make the broker allocate 1.9 GB at start-up).
fn frame_max_within(record: &[u8]) -> u32 {
    u32::try_from(record.len()).unwrap_or(u32::MAX)
}

fn decode_definition(record: &[u8]) -> Option<Definition> {
    match codec::next_frame(&mut BytesMut::from(record), frame_max_within(record)) {
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

    fn queues_dir(&self) -> PathBuf {
        self.root.join("queues")
    }

    /// The file of queue `name`, and the record naming the queue inside it
    /// (long names only). A long name gets the first `long-<hash>-<n>.log`
    /// whose name record is `name`, or else the first free `n`.
    fn queue_file(&self, name: &str) -> Result<(PathBuf, Option<Vec<u8>>), StorageError> {
        if name.len() <= MAX_HEX_NAME {
            let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
            return Ok((self.queues_dir().join(format!("{hex}.log")), None));
        }
        let mut record = vec![NAME];
        record.extend_from_slice(name.as_bytes());
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        // Files of a hash are never renumbered, and deleting a queue leaves a
        // gap: every existing slot is checked, the first free one is taken.
        let prefix = format!("long-{hash:016x}-");
        let highest = match std::fs::read_dir(self.queues_dir()) {
            Ok(entries) => entries
                .filter_map(|e| {
                    let name = e.ok()?.file_name();
                    let n = name.to_str()?.strip_prefix(&prefix)?.strip_suffix(".log")?;
                    n.parse::<u32>().ok()
                })
                .max(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StorageError::io("cannot list", &self.queues_dir())(e)),
        };
        let mut free = None;
        for n in 0..=highest.map_or(0, |h| h + 1) {
            let path = self.queues_dir().join(format!("{prefix}{n}.log"));
            if !path.exists() {
                free.get_or_insert(path);
                continue;
            }
            if RecordLog::first_record(&path, record.len())?.as_deref() == Some(&record[..]) {
                return Ok((path, Some(record)));
            }
        }
        Ok((
            free.expect("the slot past the highest is free"),
            Some(record),
        ))
    }

    /// A fresh file for a newly declared durable queue (left-overs of an
    /// earlier queue of the same name are discarded).
    pub fn create_queue_log(&mut self, name: &str) -> Result<QueueLog, StorageError> {
        let (path, name_record) = self.queue_file(name)?;
        let (mut log, records) = RecordLog::open(&path)?;
        if !records.is_empty() {
            log.clear()?;
        }
        if let Some(r) = &name_record {
            log.append(r)?;
        }
        Ok(QueueLog {
            log,
            live: 0,
            name_record,
        })
    }

    /// Reopens a durable queue's file: its live messages in order, the file compacted.
    pub fn open_queue_log(
        &mut self,
        name: &str,
    ) -> Result<(QueueLog, Vec<QueuedMessage>), StorageError> {
        let (path, name_record) = self.queue_file(name)?;
        let (mut log, records) = RecordLog::open(&path)?;
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
                Some(&NAME) => {}
                _ => unreadable += 1,
            }
        }
        if unreadable > 0 {
            tracing::warn!("amqp: queue '{name}': skipped {unreadable} unreadable records");
        }
        log.rewrite(
            name_record
                .as_deref()
                .into_iter()
                .chain(live.values().map(|(_, r)| r.as_slice())),
        )?;
        let count = live.len();
        let messages = live.into_values().map(|(m, _)| m).collect();
        Ok((
            QueueLog {
                log,
                live: count,
                name_record,
            },
            messages,
        ))
    }
}

/// One durable queue's file.
pub struct QueueLog {
    log: RecordLog,
    live: usize,
    /// What the file starts with when the name is too long for the file name.
    name_record: Option<Vec<u8>>,
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
        let floor = self
            .name_record
            .as_ref()
            .map_or(0, |r| (r.len() + RECORD_HEADER) as u64);
        if self.live > 0 || self.log.len() <= floor {
            return Ok(false);
        }
        self.log.clear()?;
        if let Some(r) = &self.name_record {
            self.log.append(r)?;
        }
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
    let frame_max = frame_max_within(r);
    let Ok(Some(Frame::Header(_, header))) = codec::next_frame(&mut b, frame_max) else {
        return None;
    };
    let mut body = BytesMut::new();
    while (body.len() as u64) < header.body_size {
        match codec::next_frame(&mut b, frame_max) {
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
            charge: Default::default(),
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
                charge: Default::default(),
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
        let path = store.queue_file("jobs/ü").unwrap().0;
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

    #[test]
    fn a_long_name_past_a_gap_of_deleted_slots_is_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        let name = "g".repeat(200);
        let (slot0, _) = store.queue_file(&name).unwrap();
        let slot = |n: u32| {
            let f = slot0.file_name().unwrap().to_str().unwrap();
            slot0.with_file_name(f.replace("-0.log", &format!("-{n}.log")))
        };
        // Ten colliding names held slots 0..=9; the one in slot 8 was deleted.
        for n in (0..10).filter(|&n| n != 8) {
            let (mut other, _) = RecordLog::open(&slot(n)).unwrap();
            other.append(format!("\x03other {n}").as_bytes()).unwrap();
        }
        std::fs::remove_file(slot(9)).unwrap();
        let (mut mine, _) = RecordLog::open(&slot(9)).unwrap();
        let mut record = vec![NAME];
        record.extend_from_slice(name.as_bytes());
        mine.append(&record).unwrap();
        drop(mine);
        assert_eq!(store.queue_file(&name).unwrap().0, slot(9));
        let (_, messages) = store.open_queue_log(&name).unwrap();
        assert!(messages.is_empty());
    }

    #[test]
    fn long_names_get_bounded_files_that_a_hash_collision_cannot_mix_up() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        let name = "n".repeat(255);
        let (slot0, record) = store.queue_file(&name).unwrap();
        assert!(record.is_some());
        let file_name = slot0.file_name().unwrap().to_str().unwrap().to_string();
        assert!(file_name.len() < 64, "{file_name}");
        // Another queue already holds slot 0 (as a colliding name would).
        let (mut other, _) = RecordLog::open(&slot0).unwrap();
        other.append(b"\x03someone else").unwrap();
        drop(other);
        let mut log = store.create_queue_log(&name).unwrap();
        log.append(&qm(1, "mine")).unwrap();
        drop(log);
        let (slot, _) = store.queue_file(&name).unwrap();
        assert_ne!(slot, slot0);
        let (mut log, messages) = store.open_queue_log(&name).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(&messages[0].message.body[..], b"mine");
        // Emptied, the file keeps its name record and is still found.
        log.remove(1).unwrap();
        assert!(log.clear_if_dead().unwrap());
        assert!(!log.clear_if_dead().unwrap());
        drop(log);
        assert_eq!(store.queue_file(&name).unwrap().0, slot);
        let (_, messages) = store.open_queue_log(&name).unwrap();
        assert!(messages.is_empty());
        assert_eq!(
            RecordLog::first_record(&slot0, 64).unwrap().unwrap(),
            b"\x03someone else"
        );
    }

    /// Found by the record_file_recovery fuzz target: a queue file record
    /// whose content-header frame announces a ~2 GiB payload. Frames were
    /// split with `frame_max = u32::MAX`, so the decoder reserved room for the
    /// announced frame (1.9 GB for a 229-byte file) before finding the
    /// record too short. Now a frame larger than its record is refused.
    #[test]
    fn a_frame_size_beyond_its_record_is_refused_without_reserving_it() {
        let mut record = vec![ENQUEUE];
        record.extend_from_slice(&7u64.to_be_bytes());
        record.extend_from_slice(&0u64.to_be_bytes());
        record.extend_from_slice(b"\x02ex\x01k");
        // Content header frame: type 2, channel 0, size 0x7fff_fff0, a few bytes.
        let frame_at = record.len();
        record.extend_from_slice(&[2, 0, 0, 0x7f, 0xff, 0xff, 0xf0, 0, 60, 0, 0]);
        let mut frame = BytesMut::from(&record[frame_at..]);
        assert!(matches!(
            codec::next_frame(&mut frame, frame_max_within(&record)),
            Err(codec::FrameError::TooLarge { .. })
        ));
        assert_eq!(
            frame.capacity(),
            record.len() - frame_at,
            "nothing reserved"
        );
        assert!(decode_message(&record).is_none());

        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        let mut log = store.create_queue_log("q").unwrap();
        log.append(&qm(1, "kept")).unwrap();
        log.log.append(&record).unwrap();
        drop(log);
        let (_, messages) = store.open_queue_log("q").unwrap();
        let bodies: Vec<&[u8]> = messages.iter().map(|m| &m.message.body[..]).collect();
        assert_eq!(bodies, [&b"kept"[..]]);

        // The same frame as a definition record.
        let definition = record[frame_at..].to_vec();
        assert!(decode_definition(&definition).is_none());
    }
}
