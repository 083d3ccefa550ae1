//! The state every AMQP connection shares: exchanges, queues, bindings,
//! consumers, and each channel's unacknowledged deliveries and prefetch
//! window. One lock guards it all; every frame a client must see in order
//! (replies, deliveries, returns, cancels) is queued to the connection's
//! writer while the lock is held, so per-connection order is the order of
//! the operations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, exchange, queue, AMQPClass};
use amq_protocol::types::{FieldTable, ShortString};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{watch, Semaphore};

use super::codec;
use super::config::AmqpConfig;
use super::error::*;
use super::memory::{Charge, Outbound};
use super::queue::{
    dead_letter, DeadReason, Message, MessageQueue, PushOutcome, QueueArgs, QueuedMessage,
};
use super::routing::ExchangeKind;
use super::store::{self, Store};
use crate::auth::AmqpAccess;
use crate::core::slots::ConnectionSlots;
use crate::metrics::{Metrics, Protocol, ProtocolCounters};
use crate::storage::StorageError;
use crate::storage::StorageMode;

/// How often queue heads are checked for expired messages.
const EXPIRY_TICK: Duration = Duration::from_millis(50);
/// Dead-letter hops handled per operation before the rest is dropped (a
/// guard against rejection loops that never settle).
const MAX_DEAD_LETTER_HOPS: usize = 10_000;

mod consumers;
mod delivery;
mod durable;
mod methods;
mod route;
mod vhost;

use vhost::{conn_id, lock, open_vhost, Vhost};
pub use vhost::{vhost_dir, ConnectionAccess, VhostId};

/// A connection; its vhost is in the top bits (see [`vhost`]).
pub type ConnId = u64;

/// The exchanges every vhost has.
pub const BUILTIN_EXCHANGES: [(&str, ExchangeKind); 6] = [
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Queue(String),
    Exchange(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub destination: Destination,
    pub key: String,
    pub args: FieldTable,
}

pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub args: FieldTable,
    pub bindings: Vec<Binding>,
}

struct Consumer {
    tag: String,
    conn: ConnId,
    channel: u16,
    no_ack: bool,
    exclusive: bool,
    /// basic.qos prefetch (global = false) when the consumer started; 0 = unlimited.
    prefetch: u16,
    unacked: usize,
}

pub struct Queue {
    pub name: String,
    pub durable: bool,
    pub exclusive_owner: Option<ConnId>,
    pub auto_delete: bool,
    pub args: FieldTable,
    pub messages: MessageQueue,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    had_consumer: bool,
    /// Deliveries waiting for ack/reject.
    unacked: usize,
    log: Option<store::QueueLog>,
}

impl Queue {
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }
}

struct Unacked {
    queue: String,
    consumer_tag: Option<String>,
    message: QueuedMessage,
}

#[derive(Default)]
struct ChannelState {
    /// basic.qos with global = true: unacked deliveries on the whole channel.
    prefetch_channel: u16,
    /// basic.qos with global = false: applies to consumers started afterwards.
    prefetch_consumer: u16,
    unacked: BTreeMap<u64, Unacked>,
    next_tag: u64,
    active: bool,
    /// (queue, consumer tag) of this channel's consumers.
    consumers: Vec<(String, String)>,
    last_queue: Option<String>,
}

struct Connection {
    out: Arc<Outbound>,
    frame_max: u32,
    access: ConnectionAccess,
}

/// Where a published message went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    /// At least one queue took it.
    pub routed: bool,
    /// A queue refused it (full with reject-publish) or it could not be written: nack it.
    pub refused: bool,
    /// A queue file was written (it must be fsynced before a confirm).
    pub wrote_to_disk: bool,
    /// The write number an fsync must cover before this message is confirmed.
    pub write_seq: u64,
}

#[derive(Default)]
struct State {
    /// The vhost's name (error texts name it).
    vhost: String,
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Queue>,
    conns: HashMap<ConnId, Connection>,
    channels: HashMap<(ConnId, u16), ChannelState>,
    next_conn: ConnId,
    next_name: u64,
    /// Queues whose consumers might take messages now.
    to_dispatch: Vec<String>,
    /// Messages leaving `queue` for its dead-letter exchange.
    to_dead_letter: Vec<(String, QueuedMessage, DeadReason)>,
    store: Option<Store>,
    dirty_queues: HashSet<String>,
    /// Counts writes to the store; an fsync started after write `n` covers it.
    write_seq: u64,
    /// An fsync failed: what was written since may be lost, so persistent
    /// messages for durable queues are refused until a restart (as Kafka
    /// takes a failed log directory offline).
    storage_failed: bool,
    /// Messages dropped from queue heads by a length limit, not yet counted in metrics.
    dropped_max_length: u64,
    /// Publishes refused by a full reject-publish queue, not yet counted.
    rejected_max_length: u64,
    /// Declares and binds refused by a limit, not yet counted in metrics.
    refused: Vec<&'static str>,
}

pub struct AmqpHub {
    pub config: AmqpConfig,
    pub metrics: Arc<Metrics>,
    /// The global connection limit and `amqp.max_connections`.
    pub connection_permits: ConnectionSlots,
    counters: ProtocolCounters,
    /// One per `amqp.vhosts` entry, in its order.
    vhosts: Vec<Vhost>,
    /// Bytes AMQP holds: message bodies (queued and unacked), outbound
    /// queues, content being assembled.
    held: Arc<AtomicUsize>,
    /// Publishers are blocked at this many bytes held...
    high_watermark: usize,
    /// ...and unblocked below this many.
    low_watermark: usize,
    /// The memory alarm: true while publishers are blocked.
    alarm: watch::Sender<bool>,
    #[cfg(test)]
    fail_fsync: std::sync::atomic::AtomicBool,
}

fn now_ms() -> u64 {
    crate::storage::millis_since_epoch(SystemTime::now()).max(0) as u64
}

impl AmqpHub {
    /// Opens every vhost of `amqp.vhosts` (see [`vhost_dir`] for where each
    /// is stored).
    pub fn open(
        config: AmqpConfig,
        data_dir: &Path,
        metrics: Arc<Metrics>,
        connection_permits: Arc<Semaphore>,
    ) -> Result<Arc<AmqpHub>, StorageError> {
        let mut vhosts = Vec::with_capacity(config.vhosts.len());
        for name in &config.vhosts {
            vhosts.push(open_vhost(name, &config, data_dir)?);
        }
        let connection_permits = ConnectionSlots::new(connection_permits, config.max_connections);
        let held = Arc::new(AtomicUsize::new(0));
        // Recovered messages count like published ones (each is in one queue now).
        let mut states: Vec<_> = vhosts.iter().map(|v| lock(&v.state)).collect();
        for q in states.iter_mut().flat_map(|st| st.queues.values_mut()) {
            for m in q.messages.iter_mut() {
                if let Some(msg) = Arc::get_mut(&mut m.message) {
                    let cost = Message::cost(msg.body.len(), &msg.exchange, &msg.routing_key);
                    msg.charge = Charge::new(&held, cost);
                }
            }
        }
        drop(states);
        let high_watermark = config.memory_high_watermark_bytes.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| crate::platform::parse_meminfo_total(&t))
                .map_or(1 << 30, |total| total / 10 * 4)
        });
        let high_watermark = usize::try_from(high_watermark).unwrap_or(usize::MAX);
        Ok(Arc::new(AmqpHub {
            held,
            high_watermark,
            low_watermark: high_watermark / 4 * 3,
            alarm: watch::channel(false).0,
            counters: metrics.counters(Protocol::Amqp),
            connection_permits,
            config,
            metrics,
            vhosts,
            #[cfg(test)]
            fail_fsync: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The outbound queue of a new connection: frames sent to it go to `tx`,
    /// bounded by `amqp.max_outbound_bytes`.
    pub fn outbound(&self, tx: UnboundedSender<Bytes>) -> Arc<Outbound> {
        let max = usize::try_from(self.config.max_outbound_bytes).unwrap_or(usize::MAX);
        Outbound::new(tx, max, self.held.clone())
    }

    /// A charge against the memory AMQP holds (starting at 0 bytes).
    pub fn charge(&self) -> Charge {
        Charge::new(&self.held, 0)
    }

    /// Bytes AMQP holds now (what the memory high-watermark is compared with).
    pub fn memory_held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Raises the memory alarm at the high watermark and clears it below
    /// the low one; returns whether it is raised.
    pub fn check_memory(&self) -> bool {
        let held = self.memory_held();
        let raised = *self.alarm.borrow();
        if !raised && held >= self.high_watermark {
            tracing::warn!(
                "amqp: memory high watermark reached ({held} bytes held, limit {}): blocking publishers",
                self.high_watermark
            );
            self.metrics.protocol_error(Protocol::Amqp, "memory_alarm");
            self.alarm.send_replace(true);
            return true;
        }
        if raised && held < self.low_watermark {
            tracing::info!(
                "amqp: memory below the low watermark ({held} bytes held): unblocking publishers"
            );
            self.alarm.send_replace(false);
            return false;
        }
        raised
    }

    /// Follows the memory alarm (true while publishers are blocked).
    pub fn memory_alarm(&self) -> watch::Receiver<bool> {
        self.alarm.subscribe()
    }

    /// The connection's outbound queue has room again: deliveries held back go out.
    pub fn resume(&self, conn: ConnId) {
        let mut st = self.state_of(conn);
        let channels: Vec<u16> = st
            .channels
            .keys()
            .filter(|(c, _)| *c == conn)
            .map(|(_, ch)| *ch)
            .collect();
        for ch in channels {
            st.dispatch_channel(conn, ch);
        }
        st.settle(&self.counters);
        self.report(&mut st);
    }

    /// Counts in metrics what the last operations dropped or refused.
    fn report(&self, st: &mut State) {
        for _ in 0..std::mem::take(&mut st.dropped_max_length) {
            self.metrics.message_dropped(Protocol::Amqp, "max_length");
        }
        for _ in 0..std::mem::take(&mut st.rejected_max_length) {
            self.metrics
                .message_dropped(Protocol::Amqp, "max_length_rejected");
        }
        for kind in std::mem::take(&mut st.refused) {
            self.metrics.protocol_error(Protocol::Amqp, kind);
        }
    }

    /// Registers a connection to the first vhost, unrestricted (tests).
    pub fn connect(&self, out: Arc<Outbound>, frame_max: u32) -> ConnId {
        self.connect_to(0, out, frame_max, ConnectionAccess::default())
    }

    /// Registers a connection to `vhost` after its handshake; frames for it go to `out`.
    pub fn connect_to(
        &self,
        vhost: VhostId,
        out: Arc<Outbound>,
        frame_max: u32,
        access: ConnectionAccess,
    ) -> ConnId {
        let mut st = lock(&self.vhosts[vhost].state);
        st.next_conn += 1;
        let id = conn_id(vhost, st.next_conn);
        st.conns.insert(
            id,
            Connection {
                out,
                frame_max,
                access,
            },
        );
        id
    }

    /// Closes every channel of the connection (requeueing what it had not
    /// acknowledged) and deletes its exclusive queues.
    pub fn disconnect(&self, conn: ConnId) {
        let mut st = self.state_of(conn);
        let channels: Vec<u16> = st
            .channels
            .keys()
            .filter(|(c, _)| *c == conn)
            .map(|(_, ch)| *ch)
            .collect();
        for ch in channels {
            st.close_channel(conn, ch);
        }
        let exclusive: Vec<String> = st
            .queues
            .values()
            .filter(|q| q.exclusive_owner == Some(conn))
            .map(|q| q.name.clone())
            .collect();
        for q in exclusive {
            st.delete_queue(&q);
        }
        st.conns.remove(&conn);
        st.settle(&self.counters);
    }

    pub fn open_channel(&self, conn: ConnId, channel: u16) {
        self.state_of(conn).channels.insert(
            (conn, channel),
            ChannelState {
                active: true,
                next_tag: 1,
                ..ChannelState::default()
            },
        );
    }

    /// Cancels the channel's consumers and requeues its unacknowledged messages.
    pub fn close_channel(&self, conn: ConnId, channel: u16) {
        let mut st = self.state_of(conn);
        st.close_channel(conn, channel);
        st.settle(&self.counters);
    }

    /// Runs one channel method; its reply (if any) is queued before whatever
    /// deliveries the method makes possible.
    pub fn handle(&self, conn: ConnId, channel: u16, method: &AMQPClass) -> AmqpResult<()> {
        let mut st = self.state_of(conn);
        let reply = st.handle(conn, channel, method, &self.config);
        self.report(&mut st);
        if let Some(reply) = reply? {
            st.send_method(conn, channel, reply);
        }
        st.settle(&self.counters);
        self.report(&mut st);
        Ok(())
    }

    /// fsyncs every file written since the last round, in every vhost.
    pub async fn sync(&self) {
        for v in &self.vhosts {
            self.sync_vhost(v, u64::MAX).await;
        }
    }

    /// Returns once an fsync covering write `seq` (a [`PublishOutcome::write_seq`]
    /// of the connection's vhost) has completed: true, or false when fsync
    /// failed (now or before), in which case what it should have covered
    /// must be nacked.
    pub async fn sync_covering(&self, conn: ConnId, seq: u64) -> bool {
        self.sync_vhost(&self.vhosts[vhost::vhost_of(conn)], seq)
            .await
    }

    /// The fsync round lock is held for a whole round. A file's handle is
    /// taken (and the file marked clean) only under it, so a connection
    /// whose writes another round is syncing waits for that round instead
    /// of confirming early.
    async fn sync_vhost(&self, v: &Vhost, seq: u64) -> bool {
        let mut synced = v.synced.lock().await;
        let (files, target) = {
            let mut st = lock(&v.state);
            if st.storage_failed {
                return false;
            }
            if *synced >= seq {
                return true;
            }
            (st.take_sync_handles(), st.write_seq)
        };
        if !files.is_empty() {
            #[cfg(test)]
            let fail = self.fail_fsync.load(std::sync::atomic::Ordering::Relaxed);
            #[cfg(not(test))]
            let fail = false;
            let synced_all = tokio::task::spawn_blocking(move || {
                for f in files {
                    let result = match fail {
                        true => Err(std::io::Error::other("fsync failed (injected)")),
                        false => f.sync_data(),
                    };
                    if let Err(e) = result {
                        tracing::error!(
                            "amqp: fsync failed, refusing persistent messages until restart: {e}"
                        );
                        return false;
                    }
                }
                true
            })
            .await
            .unwrap_or(false);
            if !synced_all {
                lock(&v.state).storage_failed = true;
                self.metrics.protocol_error(Protocol::Amqp, "fsync_failed");
                return false;
            }
        }
        *synced = target;
        true
    }

    /// Messages ready in `queue` of vhost `/` (tests and metrics).
    pub fn queue_len(&self, queue: &str) -> Option<usize> {
        self.queue_len_in("/", queue)
    }

    /// Expires message TTLs and fsyncs on the interval until `shutdown`; fsyncs once more at the end.
    pub async fn maintain(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut expiry = tokio::time::interval(EXPIRY_TICK);
        let mut flush = tokio::time::interval(Duration::from_millis(self.config.flush_interval_ms));
        for t in [&mut expiry, &mut flush] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = expiry.tick() => {
                    for v in &self.vhosts {
                        let mut st = lock(&v.state);
                        st.expire_all();
                        st.settle(&self.counters);
                        self.report(&mut st);
                    }
                    self.check_memory();
                }
                _ = flush.tick() => self.sync().await,
            }
        }
        self.sync().await;
    }
}

fn not_found(vhost: &str, what: &str, name: &str) -> AmqpError {
    AmqpError::soft(
        NOT_FOUND,
        format!("NOT_FOUND - no {what} '{name}' in vhost '{vhost}'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::codec::Frame;
    use crate::platform::Platform;
    use tokio::sync::mpsc;

    fn hub(storage: StorageMode, dir: &Path) -> Arc<AmqpHub> {
        let config = AmqpConfig {
            storage,
            ..AmqpConfig::default()
        };
        let metrics = Metrics::new(&Platform::detect(), 10);
        AmqpHub::open(config, dir, metrics, Arc::new(Semaphore::new(10))).unwrap()
    }

    /// A connection with channel 1 open; frames the hub sends it land in the receiver.
    fn client(hub: &AmqpHub) -> (ConnId, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = hub.connect(hub.outbound(tx), 131_072);
        hub.open_channel(conn, 1);
        (conn, rx)
    }

    /// The methods sent so far (content frames skipped).
    fn methods(rx: &mut mpsc::UnboundedReceiver<Bytes>) -> Vec<AMQPClass> {
        let mut buf = BytesMut::new();
        while let Ok(b) = rx.try_recv() {
            buf.extend_from_slice(&b);
        }
        let mut out = Vec::new();
        while let Some(f) = codec::next_frame(&mut buf, u32::MAX).unwrap() {
            if let Frame::Method(_, m) = f {
                out.push(m);
            }
        }
        out
    }

    fn delivery_tags(ms: &[AMQPClass]) -> Vec<u64> {
        ms.iter()
            .filter_map(|m| match m {
                AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) => Some(d.delivery_tag),
                _ => None,
            })
            .collect()
    }

    fn declare(hub: &AmqpHub, conn: ConnId, name: &str, durable: bool) {
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: false,
            durable,
            exclusive: false,
            auto_delete: false,
            nowait: true,
            arguments: FieldTable::default(),
        }));
        hub.handle(conn, 1, &m).unwrap();
    }

    fn publish(
        hub: &AmqpHub,
        conn: ConnId,
        queue: &str,
        body: &[u8],
        persistent: bool,
    ) -> PublishOutcome {
        let p = basic::Publish {
            exchange: "".into(),
            routing_key: queue.into(),
            mandatory: false,
            immediate: false,
        };
        let props = match persistent {
            true => AMQPProperties::default().with_delivery_mode(2),
            false => AMQPProperties::default(),
        };
        hub.publish(conn, 1, &p, props, Bytes::copy_from_slice(body))
            .unwrap()
    }

    fn consume(hub: &AmqpHub, conn: ConnId, queue: &str, tag: &str) {
        let m = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: queue.into(),
            consumer_tag: tag.into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: true,
            arguments: FieldTable::default(),
        }));
        hub.handle(conn, 1, &m).unwrap();
    }

    fn qos(hub: &AmqpHub, conn: ConnId, count: u16, global: bool) {
        let m = AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: count,
            global,
        }));
        hub.handle(conn, 1, &m).unwrap();
    }

    fn ack(hub: &AmqpHub, conn: ConnId, tag: u64, multiple: bool) {
        let m = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: tag,
            multiple,
        }));
        hub.handle(conn, 1, &m).unwrap();
    }

    #[tokio::test]
    async fn confirms_wait_for_an_fsync_covering_them_and_a_failed_fsync_stops_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(StorageMode::Disk, dir.path());
        let (conn, _rx) = client(&hub);
        declare(&hub, conn, "d", true);
        let out = publish(&hub, conn, "d", b"a", true);
        assert!(out.wrote_to_disk && out.write_seq > 0 && !out.refused);
        // The flush tick (or another connection) has taken the files and is
        // still fsyncing them: this publish's confirm must wait for that round.
        let round = hub.vhosts[0].synced.lock().await;
        let files = hub.state_of(conn).take_sync_handles();
        assert!(!files.is_empty());
        let waiter = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.sync_covering(conn, out.write_seq).await })
        };
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiter.is_finished(),
            "no confirm before the covering fsync has returned"
        );
        for f in files {
            f.sync_data().unwrap();
        }
        let mut round = round;
        *round = hub.state_of(conn).write_seq;
        drop(round);
        assert!(waiter.await.unwrap(), "covered once that round completed");
        assert!(
            hub.sync_covering(conn, out.write_seq).await,
            "already covered"
        );

        // An fsync fails: the publish it covered is to be nacked, and later
        // persistent messages for durable queues are refused.
        let out = publish(&hub, conn, "d", b"b", true);
        hub.fail_fsync
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!hub.sync_covering(conn, out.write_seq).await);
        hub.fail_fsync
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let refused = publish(&hub, conn, "d", b"c", true);
        assert!(refused.refused && !refused.wrote_to_disk);
        assert!(
            !hub.sync_covering(conn, refused.write_seq).await,
            "stays failed"
        );
        // Transient messages and non-durable queues carry on.
        assert!(!publish(&hub, conn, "d", b"t", false).refused);
        declare(&hub, conn, "mem", false);
        assert!(!publish(&hub, conn, "mem", b"p", true).refused);
        assert!(hub.metrics.encode().contains("kind=\"fsync_failed\""));
    }

    /// Deliveries stop once `max_outbound_bytes` wait for the connection
    /// (the messages stay queued) and resume when the writer has drained
    /// below half; the memory total follows queued and outbound bytes.
    #[test]
    fn deliveries_wait_for_room_in_the_outbound_queue() {
        let dir = tempfile::tempdir().unwrap();
        let config = AmqpConfig {
            storage: StorageMode::Memory,
            max_outbound_bytes: 4096,
            ..AmqpConfig::default()
        };
        let metrics = Metrics::new(&Platform::detect(), 10);
        let hub = AmqpHub::open(config, dir.path(), metrics, Arc::new(Semaphore::new(10))).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let out = hub.outbound(tx);
        let conn = hub.connect(out.clone(), 131_072);
        hub.open_channel(conn, 1);
        declare(&hub, conn, "q", false);
        for _ in 0..10 {
            publish(&hub, conn, "q", &[7; 1000], false);
        }
        assert_eq!(hub.memory_held(), 10 * Message::cost(1000, "", "q"));
        consume(&hub, conn, "q", "c");
        let delivered = 10 - hub.queue_len("q").unwrap();
        assert!(
            (4..=5).contains(&delivered),
            "{delivered} delivered into 4 KiB"
        );
        assert!(!out.has_room());
        // The writer writes everything queued: the rest goes out.
        let mut written = 0;
        while let Ok(b) = rx.try_recv() {
            written += b.len();
        }
        assert!(out.written(written), "held-back deliveries are due");
        hub.resume(conn);
        assert!(hub.queue_len("q").unwrap() < 10 - delivered);
    }

    /// The alarm rises at the high watermark and clears only below 3/4 of it.
    #[test]
    fn memory_alarm_has_hysteresis() {
        let dir = tempfile::tempdir().unwrap();
        let config = AmqpConfig {
            storage: StorageMode::Memory,
            memory_high_watermark_bytes: Some(1 << 20),
            ..AmqpConfig::default()
        };
        let metrics = Metrics::new(&Platform::detect(), 10);
        let hub = AmqpHub::open(config, dir.path(), metrics, Arc::new(Semaphore::new(10))).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let out = hub.outbound(tx);
        let conn = hub.connect(out.clone(), 131_072);
        hub.open_channel(conn, 1);
        // What a writer does: frames written no longer count.
        let mut write = || {
            let mut n = 0;
            while let Ok(b) = rx.try_recv() {
                n += b.len();
            }
            out.written(n);
        };
        declare(&hub, conn, "q", false);
        let alarm = hub.memory_alarm();
        for _ in 0..9 {
            publish(&hub, conn, "q", &[0; 100 * 1024], false);
        }
        assert!(!hub.check_memory(), "900 KiB held");
        publish(&hub, conn, "q", &[0; 200 * 1024], false);
        assert!(hub.check_memory() && *alarm.borrow(), "1.1 MiB held");
        let get = AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "q".into(),
            no_ack: true,
        }));
        for _ in 0..3 {
            hub.handle(conn, 1, &get).unwrap();
            write();
        }
        assert!(hub.check_memory(), "800 KiB: still above the low watermark");
        hub.handle(conn, 1, &get).unwrap();
        write();
        assert!(!hub.check_memory() && !*alarm.borrow(), "700 KiB: cleared");
        assert!(hub.metrics.encode().contains("kind=\"memory_alarm\""));
    }

    #[test]
    fn prefetch_windows_per_consumer_and_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(StorageMode::Memory, dir.path());
        let (conn, mut rx) = client(&hub);
        declare(&hub, conn, "q", false);
        for i in 0..10u8 {
            publish(&hub, conn, "q", &[i], false);
        }
        qos(&hub, conn, 2, false);
        consume(&hub, conn, "q", "c1");
        assert_eq!(delivery_tags(&methods(&mut rx)), [1, 2]);
        ack(&hub, conn, 1, false);
        assert_eq!(delivery_tags(&methods(&mut rx)), [3], "one acked, one more");
        ack(&hub, conn, 3, true);
        assert_eq!(delivery_tags(&methods(&mut rx)), [4, 5]);
        // A channel-wide window of 3 caps a second consumer too.
        qos(&hub, conn, 3, true);
        qos(&hub, conn, 0, false);
        consume(&hub, conn, "q", "c2");
        assert_eq!(
            delivery_tags(&methods(&mut rx)),
            [6],
            "2 held + 1 = the channel's 3"
        );
        // An unknown tag is a channel error (406).
        let m = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 99,
            multiple: false,
        }));
        assert_eq!(
            hub.handle(conn, 1, &m).unwrap_err().code,
            PRECONDITION_FAILED
        );
        // Closing the channel requeues the 3 unacked, in order, redelivered.
        hub.close_channel(conn, 1);
        assert_eq!(hub.queue_len("q"), Some(3 + 4));
        let st = hub.state_of(conn);
        let first: Vec<(u8, bool)> = st.queues["q"]
            .messages
            .iter()
            .take(4)
            .map(|m| (m.message.body[0], m.redelivered))
            .collect();
        assert_eq!(first, [(3, true), (4, true), (5, true), (6, false)]);
    }

    #[test]
    fn durable_queue_recovers_after_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        {
            let hub = hub(StorageMode::Disk, dir.path());
            let (conn, _rx) = client(&hub);
            declare(&hub, conn, "jobs", true);
            declare(&hub, conn, "scratch", false);
            for i in 0..5u8 {
                assert!(publish(&hub, conn, "jobs", &[i], true).wrote_to_disk);
            }
            assert!(
                !publish(&hub, conn, "jobs", b"t", false).wrote_to_disk,
                "transient stays in memory"
            );
            publish(&hub, conn, "scratch", b"s", true);
            let m = AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: "jobs".into(),
                no_ack: true,
            }));
            hub.handle(conn, 1, &m).unwrap();
        }
        // A crash in the middle of the next append.
        let file = std::fs::read_dir(dir.path().join("amqp/queues"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        std::io::Write::write_all(&mut f, &[0, 0, 0, 50, 1, 2]).unwrap();
        drop(f);
        let hub = hub(StorageMode::Disk, dir.path());
        assert_eq!(
            hub.queue_len("jobs"),
            Some(4),
            "persistent, not taken by basic.get"
        );
        assert_eq!(
            hub.queue_len("scratch"),
            None,
            "non-durable queues are not recovered"
        );
        let st = lock(&hub.vhosts[0].state);
        let bodies: Vec<u8> = st.queues["jobs"]
            .messages
            .iter()
            .map(|m| m.message.body[0])
            .collect();
        assert_eq!(bodies, [1, 2, 3, 4]);
    }

    #[test]
    fn dead_letters_route_through_the_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(StorageMode::Memory, dir.path());
        let (conn, _rx) = client(&hub);
        declare(&hub, conn, "dlq", false);
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            amq_protocol::types::AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            amq_protocol::types::AMQPValue::LongString("dlq".into()),
        );
        args.insert(
            "x-max-length".into(),
            amq_protocol::types::AMQPValue::LongInt(1),
        );
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "src".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: true,
            arguments: args,
        }));
        hub.handle(conn, 1, &m).unwrap();
        publish(&hub, conn, "src", b"a", false);
        publish(&hub, conn, "src", b"b", false);
        assert_eq!(hub.queue_len("src"), Some(1));
        assert_eq!(
            hub.queue_len("dlq"),
            Some(1),
            "the dropped head was dead-lettered"
        );
    }
}
