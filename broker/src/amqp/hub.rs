//! The state every AMQP connection shares: exchanges, queues, bindings,
//! consumers, and each channel's unacknowledged deliveries and prefetch
//! window. One lock guards it all; every frame a client must see in order
//! (replies, deliveries, returns, cancels) is queued to the connection's
//! writer while the lock is held, so per-connection order is the order of
//! the operations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, channel, exchange, queue, AMQPClass};
use amq_protocol::types::{FieldTable, ShortString};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Semaphore;

use super::codec;
use super::error::*;
use super::queue::{
    dead_letter, DeadReason, Message, MessageQueue, PushOutcome, QueueArgs, QueuedMessage,
};
use super::routing::ExchangeKind;
use super::store::{self, Store};
use crate::config::{AmqpConfig, StorageMode};
use crate::metrics::{Metrics, Protocol, ProtocolCounters};
use crate::storage::StorageError;

/// How often queue heads are checked for expired messages.
const EXPIRY_TICK: Duration = Duration::from_millis(50);
/// Dead-letter hops handled per operation before the rest is dropped (a
/// guard against rejection loops that never settle).
const MAX_DEAD_LETTER_HOPS: usize = 10_000;

pub type ConnId = u64;

/// The exchanges every broker has.
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
    out: UnboundedSender<Bytes>,
    frame_max: u32,
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
}

#[derive(Default)]
struct State {
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
}

pub struct AmqpHub {
    pub config: AmqpConfig,
    pub metrics: Arc<Metrics>,
    pub connection_permits: Arc<Semaphore>,
    counters: ProtocolCounters,
    state: Mutex<State>,
}

fn now_ms() -> u64 {
    crate::storage::millis_since_epoch(SystemTime::now()).max(0) as u64
}

impl AmqpHub {
    /// Creates the built-in exchanges and, with disk storage, recovers the
    /// durable exchanges, queues, bindings and persistent messages.
    pub fn open(
        config: AmqpConfig,
        data_dir: &Path,
        metrics: Arc<Metrics>,
        connection_permits: Arc<Semaphore>,
    ) -> Result<Arc<AmqpHub>, StorageError> {
        let mut state = State::default();
        for (name, kind) in BUILTIN_EXCHANGES {
            state.exchanges.insert(
                name.to_string(),
                Exchange {
                    name: name.to_string(),
                    kind,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    args: FieldTable::default(),
                    bindings: Vec::new(),
                },
            );
        }
        if config.storage == StorageMode::Disk {
            let root: PathBuf = data_dir.join("amqp");
            let (store, definitions) = Store::open(&root)?;
            state.store = Some(store);
            let mut recovered = 0;
            for def in definitions {
                if let Err(e) = state.replay(def, &config) {
                    tracing::warn!("amqp: skipping a stored definition: {e}");
                }
            }
            for q in state.queues.values() {
                recovered += q.messages.len();
            }
            state.compact_definitions()?;
            if recovered > 0 || !state.queues.is_empty() {
                tracing::info!(
                    "amqp: recovered {} durable queues holding {recovered} messages",
                    state.queues.len()
                );
            }
        }
        Ok(Arc::new(AmqpHub {
            counters: metrics.counters(Protocol::Amqp),
            config,
            metrics,
            connection_permits,
            state: Mutex::new(state),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection after its handshake; frames for it go to `out`.
    pub fn connect(&self, out: UnboundedSender<Bytes>, frame_max: u32) -> ConnId {
        let mut st = self.state();
        st.next_conn += 1;
        let id = st.next_conn;
        st.conns.insert(id, Connection { out, frame_max });
        id
    }

    /// Closes every channel of the connection (requeueing what it had not
    /// acknowledged) and deletes its exclusive queues.
    pub fn disconnect(&self, conn: ConnId) {
        let mut st = self.state();
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
        self.state().channels.insert(
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
        let mut st = self.state();
        st.close_channel(conn, channel);
        st.settle(&self.counters);
    }

    /// Runs one channel method; its reply (if any) is queued before whatever
    /// deliveries the method makes possible.
    pub fn handle(&self, conn: ConnId, channel: u16, method: &AMQPClass) -> AmqpResult<()> {
        let mut st = self.state();
        let reply = st.handle(conn, channel, method, &self.config)?;
        if let Some(reply) = reply {
            st.send_method(conn, channel, reply);
        }
        st.settle(&self.counters);
        Ok(())
    }

    /// Routes a complete published message.
    pub fn publish(
        &self,
        conn: ConnId,
        channel: u16,
        publish: &basic::Publish,
        properties: AMQPProperties,
        body: Bytes,
    ) -> AmqpResult<PublishOutcome> {
        self.counters.messages_received.inc();
        let mut st = self.state();
        let exchange = publish.exchange.as_str();
        match st.exchanges.get(exchange) {
            None => {
                return Err(AmqpError::soft(
                    NOT_FOUND,
                    format!("NOT_FOUND - no exchange '{exchange}' in vhost '/'"),
                ))
            }
            Some(x) if x.internal => {
                return Err(AmqpError::soft(
                    ACCESS_REFUSED,
                    format!("ACCESS_REFUSED - cannot publish to internal exchange '{exchange}'"),
                ))
            }
            Some(_) => {}
        }
        let message = Arc::new(Message {
            exchange: exchange.to_string(),
            routing_key: publish.routing_key.as_str().to_string(),
            properties,
            body,
        });
        let outcome = st.route_and_push(exchange, message.clone());
        if !outcome.routed && !outcome.refused && publish.mandatory {
            let mut out = BytesMut::new();
            let frame_max = st
                .conns
                .get(&conn)
                .map_or(codec::FRAME_MIN_SIZE, |c| c.frame_max);
            codec::put_method(
                &mut out,
                channel,
                AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                    reply_code: NO_ROUTE,
                    reply_text: "NO_ROUTE".into(),
                    exchange: publish.exchange.clone(),
                    routing_key: publish.routing_key.clone(),
                })),
            );
            codec::put_content(
                &mut out,
                channel,
                &message.properties,
                &message.body,
                frame_max,
            );
            st.send(conn, out.freeze());
        }
        if !outcome.routed && !outcome.refused {
            self.metrics.message_dropped(Protocol::Amqp, "unroutable");
        }
        st.settle(&self.counters);
        Ok(outcome)
    }

    /// fsyncs every queue file written since the last call.
    pub async fn sync(&self) {
        let files = self.state().take_sync_handles();
        if files.is_empty() {
            return;
        }
        let synced = tokio::task::spawn_blocking(move || {
            for f in files {
                if let Err(e) = f.sync_data() {
                    tracing::error!("amqp: fsync failed: {e}");
                }
            }
        })
        .await;
        if let Err(e) = synced {
            tracing::error!("amqp: fsync task failed: {e}");
        }
    }

    /// Messages ready in `queue` (tests and metrics).
    pub fn queue_len(&self, queue: &str) -> Option<usize> {
        self.state().queues.get(queue).map(|q| q.messages.len())
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
                    let mut st = self.state();
                    st.expire_all();
                    st.settle(&self.counters);
                }
                _ = flush.tick() => self.sync().await,
            }
        }
        self.sync().await;
    }
}

fn not_found(what: &str, name: &str) -> AmqpError {
    AmqpError::soft(
        NOT_FOUND,
        format!("NOT_FOUND - no {what} '{name}' in vhost '/'"),
    )
}

impl State {
    fn send(&self, conn: ConnId, bytes: Bytes) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.out.send(bytes);
        }
    }

    fn send_method(&self, conn: ConnId, channel: u16, method: AMQPClass) {
        let mut out = BytesMut::new();
        codec::put_method(&mut out, channel, method);
        self.send(conn, out.freeze());
    }

    fn channel(&mut self, conn: ConnId, channel: u16) -> AmqpResult<&mut ChannelState> {
        self.channels.get_mut(&(conn, channel)).ok_or_else(|| {
            AmqpError::hard(
                CHANNEL_ERROR,
                format!("CHANNEL_ERROR - channel {channel} is not open"),
            )
        })
    }

    /// The queue a method names; the empty name means the channel's last declared queue.
    fn queue_name(&mut self, conn: ConnId, channel: u16, name: &ShortString) -> AmqpResult<String> {
        if !name.as_str().is_empty() {
            return Ok(name.as_str().to_string());
        }
        self.channel(conn, channel)?
            .last_queue
            .clone()
            .ok_or_else(|| AmqpError::soft(NOT_FOUND, "NOT_FOUND - no previously declared queue"))
    }

    /// The queue, if this connection may use it (exclusive queues belong to one connection).
    fn usable_queue(&mut self, conn: ConnId, name: &str) -> AmqpResult<&mut Queue> {
        match self.queues.get_mut(name) {
            None => Err(not_found("queue", name)),
            Some(q) if q.exclusive_owner.is_some_and(|o| o != conn) => Err(AmqpError::soft(
                RESOURCE_LOCKED,
                format!("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '/'"),
            )),
            Some(q) => Ok(q),
        }
    }

    fn handle(
        &mut self,
        conn: ConnId,
        ch: u16,
        method: &AMQPClass,
        config: &AmqpConfig,
    ) -> AmqpResult<Option<AMQPClass>> {
        use AMQPClass as C;
        self.channel(conn, ch)?;
        let reply = match method {
            C::Exchange(exchange::AMQPMethod::Declare(m)) => {
                self.exchange_declare(m)?;
                (!m.nowait).then_some(C::Exchange(exchange::AMQPMethod::DeclareOk(
                    exchange::DeclareOk {},
                )))
            }
            C::Exchange(exchange::AMQPMethod::Delete(m)) => {
                self.exchange_delete(m.exchange.as_str(), m.if_unused)?;
                (!m.nowait).then_some(C::Exchange(exchange::AMQPMethod::DeleteOk(
                    exchange::DeleteOk {},
                )))
            }
            C::Exchange(exchange::AMQPMethod::Bind(m)) => {
                self.bind(
                    m.source.as_str(),
                    Destination::Exchange(m.destination.as_str().to_string()),
                    m.routing_key.as_str(),
                    &m.arguments,
                    conn,
                )?;
                (!m.nowait).then_some(C::Exchange(exchange::AMQPMethod::BindOk(
                    exchange::BindOk {},
                )))
            }
            C::Exchange(exchange::AMQPMethod::Unbind(m)) => {
                self.unbind(
                    m.source.as_str(),
                    &Destination::Exchange(m.destination.as_str().to_string()),
                    m.routing_key.as_str(),
                    &m.arguments,
                )?;
                (!m.nowait).then_some(C::Exchange(exchange::AMQPMethod::UnbindOk(
                    exchange::UnbindOk {},
                )))
            }
            C::Queue(queue::AMQPMethod::Declare(m)) => {
                let ok = self.queue_declare(conn, m, config)?;
                self.channel(conn, ch)?.last_queue = Some(ok.queue.as_str().to_string());
                (!m.nowait).then_some(C::Queue(queue::AMQPMethod::DeclareOk(ok)))
            }
            C::Queue(queue::AMQPMethod::Bind(m)) => {
                let q = self.queue_name(conn, ch, &m.queue)?;
                self.usable_queue(conn, &q)?;
                self.bind(
                    m.exchange.as_str(),
                    Destination::Queue(q),
                    m.routing_key.as_str(),
                    &m.arguments,
                    conn,
                )?;
                (!m.nowait).then_some(C::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})))
            }
            C::Queue(queue::AMQPMethod::Unbind(m)) => {
                let q = self.queue_name(conn, ch, &m.queue)?;
                self.usable_queue(conn, &q)?;
                self.unbind(
                    m.exchange.as_str(),
                    &Destination::Queue(q),
                    m.routing_key.as_str(),
                    &m.arguments,
                )?;
                Some(C::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})))
            }
            C::Queue(queue::AMQPMethod::Purge(m)) => {
                let name = self.queue_name(conn, ch, &m.queue)?;
                let q = self.usable_queue(conn, &name)?;
                let purged = q.messages.purge();
                let count = purged.len() as u32;
                self.forget(&name, purged.iter());
                (!m.nowait).then_some(C::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                    message_count: count,
                })))
            }
            C::Queue(queue::AMQPMethod::Delete(m)) => {
                let name = self.queue_name(conn, ch, &m.queue)?;
                let count = match self.usable_queue(conn, &name) {
                    // Deleting what is not there succeeds (RabbitMQ does the same).
                    Err(e) if e.code == NOT_FOUND => 0,
                    Err(e) => return Err(e),
                    Ok(q) => {
                        if m.if_unused && !q.consumers.is_empty() {
                            return Err(AmqpError::soft(
                                PRECONDITION_FAILED,
                                format!("PRECONDITION_FAILED - queue '{name}' in vhost '/' in use"),
                            ));
                        }
                        if m.if_empty && !q.messages.is_empty() {
                            return Err(AmqpError::soft(
                                PRECONDITION_FAILED,
                                format!(
                                    "PRECONDITION_FAILED - queue '{name}' in vhost '/' not empty"
                                ),
                            ));
                        }
                        self.delete_queue(&name)
                    }
                };
                (!m.nowait).then_some(C::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                    message_count: count,
                })))
            }
            C::Channel(channel::AMQPMethod::Flow(m)) => {
                self.channel(conn, ch)?.active = m.active;
                self.dispatch_channel(conn, ch);
                Some(C::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                    active: m.active,
                })))
            }
            C::Basic(basic::AMQPMethod::Qos(m)) => {
                let c = self.channel(conn, ch)?;
                if m.global {
                    c.prefetch_channel = m.prefetch_count;
                } else {
                    c.prefetch_consumer = m.prefetch_count;
                }
                self.dispatch_channel(conn, ch);
                Some(C::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})))
            }
            C::Basic(basic::AMQPMethod::Consume(m)) => {
                self.consume(conn, ch, m)?;
                None
            }
            C::Basic(basic::AMQPMethod::Cancel(m)) => {
                self.cancel(conn, ch, m.consumer_tag.as_str(), false);
                (!m.nowait).then_some(C::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                    consumer_tag: m.consumer_tag.clone(),
                })))
            }
            C::Basic(basic::AMQPMethod::Get(m)) => {
                self.get(conn, ch, m)?;
                None
            }
            C::Basic(basic::AMQPMethod::Ack(m)) => {
                for (_, u) in self.take_unacked(conn, ch, m.delivery_tag, m.multiple)? {
                    self.acked(conn, ch, u);
                }
                None
            }
            C::Basic(basic::AMQPMethod::Nack(m)) => {
                for (_, u) in self.take_unacked(conn, ch, m.delivery_tag, m.multiple)? {
                    self.rejected(conn, ch, u, m.requeue);
                }
                None
            }
            C::Basic(basic::AMQPMethod::Reject(m)) => {
                for (_, u) in self.take_unacked(conn, ch, m.delivery_tag, false)? {
                    self.rejected(conn, ch, u, m.requeue);
                }
                None
            }
            C::Basic(basic::AMQPMethod::Recover(_))
            | C::Basic(basic::AMQPMethod::RecoverAsync(_)) => {
                let all = std::mem::take(&mut self.channel(conn, ch)?.unacked);
                for (_, u) in all.into_iter().rev() {
                    self.rejected(conn, ch, u, true);
                }
                matches!(method, C::Basic(basic::AMQPMethod::Recover(_)))
                    .then_some(C::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})))
            }
            other => {
                return Err(AmqpError::hard(
                    NOT_IMPLEMENTED,
                    format!(
                        "NOT_IMPLEMENTED - {}.{} is not supported",
                        other.get_amqp_class_id(),
                        other.get_amqp_method_id()
                    ),
                ))
            }
        };
        Ok(reply)
    }

    fn exchange_declare(&mut self, m: &exchange::Declare) -> AmqpResult<()> {
        let name = m.exchange.as_str();
        if let Some(x) = self.exchanges.get(name) {
            if m.passive {
                return Ok(());
            }
            if x.kind.as_str() != m.kind.as_str()
                || x.durable != m.durable
                || x.auto_delete != m.auto_delete
                || x.internal != m.internal
            {
                return Err(AmqpError::soft(
                    PRECONDITION_FAILED,
                    format!("PRECONDITION_FAILED - inequivalent arg 'type', 'durable' or 'auto_delete' for exchange '{name}' in vhost '/': received '{}' but current is '{}'", m.kind.as_str(), x.kind.as_str()),
                ));
            }
            return Ok(());
        }
        if m.passive {
            return Err(not_found("exchange", name));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        let Some(kind) = ExchangeKind::parse(m.kind.as_str()) else {
            return Err(AmqpError::hard(
                COMMAND_INVALID,
                format!(
                    "COMMAND_INVALID - unknown exchange type '{}'",
                    m.kind.as_str()
                ),
            ));
        };
        if m.durable {
            self.persist(store::Definition::ExchangeDeclare(m.clone()));
        }
        self.exchanges.insert(
            name.to_string(),
            Exchange {
                name: name.to_string(),
                kind,
                durable: m.durable,
                auto_delete: m.auto_delete,
                internal: m.internal,
                args: m.arguments.clone(),
                bindings: Vec::new(),
            },
        );
        Ok(())
    }

    fn exchange_delete(&mut self, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                format!("ACCESS_REFUSED - exchange '{name}' is built in"),
            ));
        }
        let Some(x) = self.exchanges.get(name) else {
            return Ok(());
        };
        if if_unused && (!x.bindings.is_empty() || self.is_binding_destination(name)) {
            return Err(AmqpError::soft(
                PRECONDITION_FAILED,
                format!("PRECONDITION_FAILED - exchange '{name}' in vhost '/' in use"),
            ));
        }
        self.remove_exchange(name);
        Ok(())
    }

    fn is_binding_destination(&self, name: &str) -> bool {
        self.exchanges.values().any(|x| {
            x.bindings
                .iter()
                .any(|b| b.destination == Destination::Exchange(name.to_string()))
        })
    }

    fn remove_exchange(&mut self, name: &str) {
        if let Some(x) = self.exchanges.remove(name) {
            if x.durable {
                self.persist(store::Definition::ExchangeDelete(name.to_string()));
            }
        }
        let dest = Destination::Exchange(name.to_string());
        self.remove_bindings_to(&dest);
    }

    fn remove_bindings_to(&mut self, dest: &Destination) {
        let mut emptied = Vec::new();
        for x in self.exchanges.values_mut() {
            let before = x.bindings.len();
            x.bindings.retain(|b| &b.destination != dest);
            if before != x.bindings.len() && x.bindings.is_empty() && x.auto_delete {
                emptied.push(x.name.clone());
            }
        }
        for name in emptied {
            self.remove_exchange(&name);
        }
    }

    fn destination_durable(&self, dest: &Destination) -> bool {
        match dest {
            Destination::Queue(q) => self.queues.get(q).is_some_and(|q| q.durable),
            Destination::Exchange(x) => self.exchanges.get(x).is_some_and(|x| x.durable),
        }
    }

    fn bind(
        &mut self,
        source: &str,
        dest: Destination,
        key: &str,
        args: &FieldTable,
        conn: ConnId,
    ) -> AmqpResult<()> {
        if source.is_empty() {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                "ACCESS_REFUSED - operation not permitted on the default exchange",
            ));
        }
        if let Destination::Exchange(d) = &dest {
            if !self.exchanges.contains_key(d) {
                return Err(not_found("exchange", d));
            }
        }
        if let Destination::Queue(q) = &dest {
            self.usable_queue(conn, q)?;
        }
        let durable = self.destination_durable(&dest);
        let Some(x) = self.exchanges.get_mut(source) else {
            return Err(not_found("exchange", source));
        };
        let binding = Binding {
            destination: dest,
            key: key.to_string(),
            args: args.clone(),
        };
        if x.bindings.contains(&binding) {
            return Ok(());
        }
        let persist = x.durable && durable;
        x.bindings.push(binding.clone());
        if persist {
            self.persist(store::Definition::Bind {
                source: source.to_string(),
                binding,
            });
        }
        Ok(())
    }

    fn unbind(
        &mut self,
        source: &str,
        dest: &Destination,
        key: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        if source.is_empty() {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                "ACCESS_REFUSED - operation not permitted on the default exchange",
            ));
        }
        let Some(x) = self.exchanges.get_mut(source) else {
            return Err(not_found("exchange", source));
        };
        let before = x.bindings.len();
        x.bindings.retain(|b| {
            !(&b.destination == dest
                && b.key == key
                && (b.args == *args || source_is_not_headers(x.kind)))
        });
        let removed = before != x.bindings.len();
        let auto_delete = x.auto_delete && x.bindings.is_empty();
        if removed {
            self.persist(store::Definition::Unbind {
                source: source.to_string(),
                binding: Binding {
                    destination: dest.clone(),
                    key: key.to_string(),
                    args: args.clone(),
                },
            });
            if auto_delete {
                self.remove_exchange(source);
            }
        }
        Ok(())
    }

    fn queue_declare(
        &mut self,
        conn: ConnId,
        m: &queue::Declare,
        config: &AmqpConfig,
    ) -> AmqpResult<queue::DeclareOk> {
        let mut name = m.queue.as_str().to_string();
        if name.is_empty() {
            if m.passive {
                return Err(not_found("queue", ""));
            }
            self.next_name += 1;
            name = format!("amq.gen-{:x}-{:x}", now_ms(), self.next_name);
        }
        if let Some(q) = self.queues.get(&name) {
            if q.exclusive_owner.is_some_and(|o| o != conn) {
                return Err(AmqpError::soft(RESOURCE_LOCKED, format!("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '/'")));
            }
            if !m.passive {
                let args = QueueArgs::parse(&m.arguments, config.default_max_length)
                    .map_err(|t| AmqpError::soft(PRECONDITION_FAILED, t))?;
                if q.durable != m.durable
                    || q.auto_delete != m.auto_delete
                    || q.messages.args != args
                {
                    return Err(AmqpError::soft(PRECONDITION_FAILED, format!("PRECONDITION_FAILED - inequivalent arg 'durable', 'auto_delete' or x-arguments for queue '{name}' in vhost '/'")));
                }
            }
            return Ok(queue::DeclareOk {
                queue: name.as_str().into(),
                message_count: q.messages.len() as u32,
                consumer_count: q.consumers.len() as u32,
            });
        }
        if m.passive {
            return Err(not_found("queue", &name));
        }
        if name.starts_with("amq.") && !m.queue.as_str().is_empty() {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                format!("ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        let args = QueueArgs::parse(&m.arguments, config.default_max_length)
            .map_err(|t| AmqpError::soft(PRECONDITION_FAILED, t))?;
        let log = match (&mut self.store, m.durable && !m.exclusive) {
            (Some(store), true) => Some(store.create_queue_log(&name).map_err(|e| {
                AmqpError::soft(
                    INTERNAL_ERROR,
                    format!("INTERNAL_ERROR - cannot create the queue file: {e}"),
                )
            })?),
            _ => None,
        };
        if m.durable && !m.exclusive {
            let mut def = m.clone();
            def.queue = name.as_str().into();
            def.passive = false;
            def.nowait = false;
            self.persist(store::Definition::QueueDeclare(def));
        }
        self.queues.insert(
            name.clone(),
            Queue {
                name: name.clone(),
                durable: m.durable,
                exclusive_owner: m.exclusive.then_some(conn),
                auto_delete: m.auto_delete,
                args: m.arguments.clone(),
                messages: MessageQueue::new(args),
                consumers: Vec::new(),
                next_consumer: 0,
                had_consumer: false,
                unacked: 0,
                log,
            },
        );
        // Every queue is bound to the default exchange by its name (implicitly: see `route`).
        Ok(queue::DeclareOk {
            queue: name.as_str().into(),
            message_count: 0,
            consumer_count: 0,
        })
    }

    /// Removes a queue, telling its consumers (basic.cancel); returns how many messages it held.
    fn delete_queue(&mut self, name: &str) -> u32 {
        let Some(mut q) = self.queues.remove(name) else {
            return 0;
        };
        let count = q.messages.len() as u32;
        for c in q.consumers.drain(..) {
            if let Some(chan) = self.channels.get_mut(&(c.conn, c.channel)) {
                chan.consumers
                    .retain(|(qn, t)| !(qn == name && *t == c.tag));
            }
            self.send_method(
                c.conn,
                c.channel,
                AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: c.tag.as_str().into(),
                    nowait: true,
                })),
            );
        }
        if let Some(log) = q.log.take() {
            if let Err(e) = log.delete() {
                tracing::error!("amqp: {e}");
            }
        }
        self.dirty_queues.remove(name);
        if q.durable && q.exclusive_owner.is_none() && self.store.is_some() {
            self.persist(store::Definition::QueueDelete(name.to_string()));
        }
        self.remove_bindings_to(&Destination::Queue(name.to_string()));
        count
    }

    fn consume(&mut self, conn: ConnId, ch: u16, m: &basic::Consume) -> AmqpResult<()> {
        let name = self.queue_name(conn, ch, &m.queue)?;
        let tag = if m.consumer_tag.as_str().is_empty() {
            self.next_name += 1;
            format!("amq.ctag-{:x}-{:x}", now_ms(), self.next_name)
        } else {
            m.consumer_tag.as_str().to_string()
        };
        let prefetch = self.channel(conn, ch)?.prefetch_consumer;
        if self
            .channel(conn, ch)?
            .consumers
            .iter()
            .any(|(_, t)| *t == tag)
        {
            return Err(AmqpError::hard(
                NOT_ALLOWED,
                format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let q = self.usable_queue(conn, &name)?;
        if q.consumers.iter().any(|c| c.exclusive) || (m.exclusive && !q.consumers.is_empty()) {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                format!("ACCESS_REFUSED - queue '{name}' in vhost '/' in exclusive use"),
            ));
        }
        q.consumers.push(Consumer {
            tag: tag.clone(),
            conn,
            channel: ch,
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            prefetch,
            unacked: 0,
        });
        q.had_consumer = true;
        self.channel(conn, ch)?
            .consumers
            .push((name.clone(), tag.clone()));
        if !m.nowait {
            self.send_method(
                conn,
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.as_str().into(),
                })),
            );
        }
        self.to_dispatch.push(name);
        Ok(())
    }

    /// Removes a consumer; `notify` sends basic.cancel to the client (server-side cancel).
    fn cancel(&mut self, conn: ConnId, ch: u16, tag: &str, notify: bool) {
        let Some(chan) = self.channels.get_mut(&(conn, ch)) else {
            return;
        };
        let Some(pos) = chan.consumers.iter().position(|(_, t)| t == tag) else {
            return;
        };
        let (qname, _) = chan.consumers.remove(pos);
        let mut delete = false;
        if let Some(q) = self.queues.get_mut(&qname) {
            q.consumers
                .retain(|c| !(c.conn == conn && c.channel == ch && c.tag == tag));
            delete = q.auto_delete && q.had_consumer && q.consumers.is_empty();
        }
        if notify {
            self.send_method(
                conn,
                ch,
                AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: tag.into(),
                    nowait: true,
                })),
            );
        }
        if delete {
            self.delete_queue(&qname);
        }
    }

    fn close_channel(&mut self, conn: ConnId, ch: u16) {
        let Some(chan) = self.channels.get(&(conn, ch)) else {
            return;
        };
        let tags: Vec<String> = chan.consumers.iter().map(|(_, t)| t.clone()).collect();
        // Unacked messages go back before auto-delete queues lose their last consumer.
        let unacked = self
            .channels
            .get_mut(&(conn, ch))
            .map(|c| std::mem::take(&mut c.unacked))
            .unwrap_or_default();
        for (_, u) in unacked.into_iter().rev() {
            self.rejected(conn, ch, u, true);
        }
        for tag in tags {
            self.cancel(conn, ch, &tag, false);
        }
        self.channels.remove(&(conn, ch));
    }

    fn get(&mut self, conn: ConnId, ch: u16, m: &basic::Get) -> AmqpResult<()> {
        let name = self.queue_name(conn, ch, &m.queue)?;
        let now = now_ms();
        let q = self.usable_queue(conn, &name)?;
        let mut expired = Vec::new();
        let popped = q.messages.pop(now, &mut expired);
        let remaining = q.messages.len() as u32;
        for e in expired {
            self.to_dead_letter
                .push((name.clone(), e, DeadReason::Expired));
        }
        let Some(qm) = popped else {
            self.send_method(
                conn,
                ch,
                AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            );
            return Ok(());
        };
        let chan = self.channel(conn, ch)?;
        let tag = chan.next_tag;
        chan.next_tag += 1;
        let mut out = BytesMut::new();
        codec::put_method(
            &mut out,
            ch,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: tag,
                redelivered: qm.redelivered,
                exchange: qm.message.exchange.as_str().into(),
                routing_key: qm.message.routing_key.as_str().into(),
                message_count: remaining,
            })),
        );
        let frame_max = self
            .conns
            .get(&conn)
            .map_or(codec::FRAME_MIN_SIZE, |c| c.frame_max);
        codec::put_content(
            &mut out,
            ch,
            &qm.message.properties,
            &qm.message.body,
            frame_max,
        );
        self.send(conn, out.freeze());
        if m.no_ack {
            self.forget(&name, std::iter::once(&qm));
        } else {
            if let Some(q) = self.queues.get_mut(&name) {
                q.unacked += 1;
            }
            self.channel(conn, ch)?.unacked.insert(
                tag,
                Unacked {
                    queue: name,
                    consumer_tag: None,
                    message: qm,
                },
            );
        }
        Ok(())
    }

    fn take_unacked(
        &mut self,
        conn: ConnId,
        ch: u16,
        tag: u64,
        multiple: bool,
    ) -> AmqpResult<Vec<(u64, Unacked)>> {
        let chan = self.channel(conn, ch)?;
        if multiple {
            let upto = if tag == 0 { u64::MAX } else { tag };
            let keep = chan.unacked.split_off(&upto.saturating_add(1));
            let taken = std::mem::replace(&mut chan.unacked, keep);
            return Ok(taken.into_iter().collect());
        }
        match chan.unacked.remove(&tag) {
            Some(u) => Ok(vec![(tag, u)]),
            None => Err(AmqpError::soft(
                PRECONDITION_FAILED,
                format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
            )),
        }
    }

    /// Bookkeeping when a delivery stops being outstanding.
    fn release(&mut self, conn: ConnId, ch: u16, u: &Unacked) {
        if let Some(q) = self.queues.get_mut(&u.queue) {
            q.unacked = q.unacked.saturating_sub(1);
            if let Some(tag) = &u.consumer_tag {
                if let Some(c) = q
                    .consumers
                    .iter_mut()
                    .find(|c| c.conn == conn && c.channel == ch && c.tag == *tag)
                {
                    c.unacked = c.unacked.saturating_sub(1);
                }
            }
        }
        self.dispatch_channel(conn, ch);
        self.to_dispatch.push(u.queue.clone());
    }

    fn acked(&mut self, conn: ConnId, ch: u16, u: Unacked) {
        self.release(conn, ch, &u);
        self.forget(&u.queue, std::iter::once(&u.message));
    }

    fn rejected(&mut self, conn: ConnId, ch: u16, u: Unacked, requeue: bool) {
        self.release(conn, ch, &u);
        if requeue {
            if let Some(q) = self.queues.get_mut(&u.queue) {
                q.messages.requeue(u.message);
            }
        } else {
            self.to_dead_letter
                .push((u.queue.clone(), u.message, DeadReason::Rejected));
        }
    }

    /// Drops messages for good: their records on disk are removed.
    fn forget<'a>(&mut self, queue: &str, messages: impl Iterator<Item = &'a QueuedMessage>) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let Some(log) = &mut q.log else { return };
        let mut wrote = false;
        for m in messages.filter(|m| m.on_disk) {
            if let Err(e) = log.remove(m.id) {
                tracing::error!("amqp: {e}");
            }
            wrote = true;
        }
        match log.clear_if_dead() {
            Ok(cleared) => wrote |= cleared,
            Err(e) => tracing::error!("amqp: {e}"),
        }
        if wrote {
            self.dirty_queues.insert(queue.to_string());
        }
    }

    /// The queues an exchange routes a message to (through exchange-to-exchange bindings too).
    fn route(&self, exchange: &str, message: &Message) -> Vec<String> {
        if exchange.is_empty() {
            return match self.queues.contains_key(&message.routing_key) {
                true => vec![message.routing_key.clone()],
                false => Vec::new(),
            };
        }
        let headers = message.properties.headers().as_ref();
        let mut queues = Vec::new();
        let mut seen = HashSet::new();
        let mut todo = vec![exchange.to_string()];
        while let Some(x) = todo.pop() {
            if !seen.insert(x.clone()) {
                continue;
            }
            let Some(x) = self.exchanges.get(&x) else {
                continue;
            };
            for b in &x.bindings {
                if x.kind
                    .matches(&b.key, &b.args, &message.routing_key, headers)
                {
                    match &b.destination {
                        Destination::Queue(q) if !queues.contains(q) => queues.push(q.clone()),
                        Destination::Queue(_) => {}
                        Destination::Exchange(e) => todo.push(e.clone()),
                    }
                }
            }
        }
        queues
    }

    fn route_and_push(&mut self, exchange: &str, message: Arc<Message>) -> PublishOutcome {
        let targets = self.route(exchange, &message);
        let mut outcome = PublishOutcome {
            routed: !targets.is_empty(),
            ..PublishOutcome::default()
        };
        // reject-publish refuses the message everywhere (as RabbitMQ's confirms report one nack).
        if targets.iter().any(|q| {
            self.queues
                .get(q)
                .is_some_and(|q| q.messages.would_reject(&message))
        }) {
            outcome.refused = true;
            return outcome;
        }
        let now = now_ms();
        for name in targets {
            let Some(q) = self.queues.get_mut(&name) else {
                continue;
            };
            let persist = q.durable && message.is_persistent() && q.log.is_some();
            let result = q.messages.push(message.clone(), now, persist);
            if let PushOutcome::Queued { dropped } = result {
                if persist {
                    let qm = q.messages.iter().last().cloned();
                    if let (Some(log), Some(qm)) = (&mut q.log, qm) {
                        match log.append(&qm) {
                            Ok(()) => {
                                outcome.wrote_to_disk = true;
                                self.dirty_queues.insert(name.clone());
                            }
                            Err(e) => {
                                tracing::error!("amqp: {e}");
                                outcome.refused = true;
                            }
                        }
                    }
                }
                for d in dropped {
                    self.to_dead_letter
                        .push((name.clone(), d, DeadReason::MaxLen));
                }
                self.to_dispatch.push(name);
            }
        }
        outcome
    }

    fn dispatch_channel(&mut self, conn: ConnId, ch: u16) {
        if let Some(c) = self.channels.get(&(conn, ch)) {
            self.to_dispatch
                .extend(c.consumers.iter().map(|(q, _)| q.clone()));
        }
    }

    /// Hands ready messages of `name` to consumers with room in their prefetch windows (round robin).
    fn dispatch(&mut self, name: &str, counters: &ProtocolCounters) {
        let now = now_ms();
        let State {
            queues,
            channels,
            conns,
            to_dead_letter,
            ..
        } = self;
        let Some(q) = queues.get_mut(name) else {
            return;
        };
        let mut forgotten = Vec::new();
        loop {
            to_dead_letter.extend(
                q.messages
                    .expire(now)
                    .into_iter()
                    .map(|m| (name.to_string(), m, DeadReason::Expired)),
            );
            if q.messages.is_empty() || q.consumers.is_empty() {
                break;
            }
            let n = q.consumers.len();
            let pick = (0..n).map(|i| (q.next_consumer + i) % n).find(|&i| {
                let c = &q.consumers[i];
                let Some(chan) = channels.get(&(c.conn, c.channel)) else {
                    return false;
                };
                chan.active
                    && (c.no_ack || c.prefetch == 0 || c.unacked < usize::from(c.prefetch))
                    && (c.no_ack
                        || chan.prefetch_channel == 0
                        || chan.unacked.len() < usize::from(chan.prefetch_channel))
            });
            let Some(i) = pick else { break };
            q.next_consumer = (i + 1) % n;
            let mut expired = Vec::new();
            let Some(qm) = q.messages.pop(now, &mut expired) else {
                break;
            };
            to_dead_letter.extend(
                expired
                    .into_iter()
                    .map(|m| (name.to_string(), m, DeadReason::Expired)),
            );
            let c = &mut q.consumers[i];
            let Some(chan) = channels.get_mut(&(c.conn, c.channel)) else {
                break;
            };
            let tag = chan.next_tag;
            chan.next_tag += 1;
            let frame_max = conns
                .get(&c.conn)
                .map_or(codec::FRAME_MIN_SIZE, |x| x.frame_max);
            let mut out = BytesMut::new();
            codec::put_method(
                &mut out,
                c.channel,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: c.tag.as_str().into(),
                    delivery_tag: tag,
                    redelivered: qm.redelivered,
                    exchange: qm.message.exchange.as_str().into(),
                    routing_key: qm.message.routing_key.as_str().into(),
                })),
            );
            codec::put_content(
                &mut out,
                c.channel,
                &qm.message.properties,
                &qm.message.body,
                frame_max,
            );
            if let Some(x) = conns.get(&c.conn) {
                let _ = x.out.send(out.freeze());
            }
            counters.messages_sent.inc();
            if c.no_ack {
                forgotten.push(qm);
            } else {
                c.unacked += 1;
                q.unacked += 1;
                chan.unacked.insert(
                    tag,
                    Unacked {
                        queue: name.to_string(),
                        consumer_tag: Some(c.tag.clone()),
                        message: qm,
                    },
                );
            }
        }
        if !forgotten.is_empty() {
            self.forget(name, forgotten.iter());
        }
    }

    /// Runs the deliveries and dead-lettering that earlier steps made due.
    fn settle(&mut self, counters: &ProtocolCounters) {
        let mut hops = 0;
        loop {
            if let Some((queue, m, reason)) = self.to_dead_letter.pop() {
                hops += 1;
                if hops <= MAX_DEAD_LETTER_HOPS {
                    self.dead_letter(&queue, m, reason);
                }
                continue;
            }
            let mut names = std::mem::take(&mut self.to_dispatch);
            if names.is_empty() {
                break;
            }
            names.sort();
            names.dedup();
            for n in names {
                self.dispatch(&n, counters);
            }
        }
    }

    fn dead_letter(&mut self, queue: &str, m: QueuedMessage, reason: DeadReason) {
        let target = self.queues.get(queue).and_then(|q| {
            q.messages
                .args
                .dead_letter_exchange
                .clone()
                .map(|x| (x, q.messages.args.dead_letter_routing_key.clone()))
        });
        self.forget(queue, std::iter::once(&m));
        let Some((exchange, key)) = target else {
            return;
        };
        let now_secs = now_ms() / 1000;
        let Some(copy) = dead_letter(&m.message, queue, reason, key.as_deref(), now_secs) else {
            return;
        };
        if self.exchanges.contains_key(&exchange) {
            self.route_and_push(&exchange, Arc::new(copy));
        }
    }

    fn expire_all(&mut self) {
        let now = now_ms();
        let mut expired = Vec::new();
        for q in self
            .queues
            .values_mut()
            .filter(|q| q.messages.has_expiring())
        {
            for m in q.messages.expire(now) {
                expired.push((q.name.clone(), m, DeadReason::Expired));
            }
        }
        self.to_dead_letter.extend(expired);
    }

    fn persist(&mut self, def: store::Definition) {
        if let Some(store) = &mut self.store {
            if let Err(e) = store.record(&def) {
                tracing::error!("amqp: cannot record a definition: {e}");
            }
        }
    }

    fn take_sync_handles(&mut self) -> Vec<File> {
        let mut files = Vec::new();
        for name in std::mem::take(&mut self.dirty_queues) {
            if let Some(log) = self.queues.get_mut(&name).and_then(|q| q.log.as_mut()) {
                match log.take_sync_handle() {
                    Ok(Some(f)) => files.push(f),
                    Ok(None) => {}
                    Err(e) => tracing::error!("amqp: {e}"),
                }
            }
        }
        if let Some(store) = &mut self.store {
            match store.take_sync_handle() {
                Ok(Some(f)) => files.push(f),
                Ok(None) => {}
                Err(e) => tracing::error!("amqp: {e}"),
            }
        }
        files
    }

    /// Applies one stored definition at start-up.
    fn replay(&mut self, def: store::Definition, config: &AmqpConfig) -> Result<(), String> {
        match def {
            store::Definition::ExchangeDeclare(m) => {
                self.exchange_declare(&m).map_err(|e| e.to_string())
            }
            store::Definition::ExchangeDelete(name) => {
                self.exchanges.remove(&name);
                Ok(())
            }
            store::Definition::QueueDeclare(m) => {
                let name = m.queue.as_str().to_string();
                // Recovery must not append a second declaration.
                let store = self.store.take();
                let ok = self.queue_declare(0, &m, config);
                self.store = store;
                ok.map_err(|e| e.to_string())?;
                let Some(store) = &mut self.store else {
                    return Ok(());
                };
                let (log, messages) = store.open_queue_log(&name).map_err(|e| e.to_string())?;
                let q = self.queues.get_mut(&name).expect("declared above");
                for m in messages {
                    q.messages.push_recovered(m);
                }
                q.log = Some(log);
                Ok(())
            }
            store::Definition::QueueDelete(name) => {
                let store = self.store.take();
                self.queues.remove(&name);
                self.remove_bindings_to(&Destination::Queue(name));
                self.store = store;
                Ok(())
            }
            store::Definition::Bind { source, binding } => {
                match self.exchanges.get_mut(&source) {
                    Some(x) if !x.bindings.contains(&binding) => x.bindings.push(binding),
                    Some(_) => {}
                    None => return Err(format!("binding from unknown exchange '{source}'")),
                }
                Ok(())
            }
            store::Definition::Unbind { source, binding } => {
                if let Some(x) = self.exchanges.get_mut(&source) {
                    x.bindings.retain(|b| b != &binding);
                }
                Ok(())
            }
        }
    }

    /// Rewrites the definitions file with only what exists now.
    fn compact_definitions(&mut self) -> Result<(), StorageError> {
        if self.store.is_none() {
            return Ok(());
        }
        let mut defs = Vec::new();
        for x in self.exchanges.values() {
            if x.durable && !BUILTIN_EXCHANGES.iter().any(|(n, _)| *n == x.name) {
                defs.push(store::Definition::ExchangeDeclare(exchange::Declare {
                    exchange: x.name.as_str().into(),
                    kind: x.kind.as_str().into(),
                    passive: false,
                    durable: true,
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    nowait: false,
                    arguments: x.args.clone(),
                }));
            }
        }
        for q in self.queues.values().filter(|q| q.durable) {
            defs.push(store::Definition::QueueDeclare(queue::Declare {
                queue: q.name.as_str().into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: q.auto_delete,
                nowait: false,
                arguments: q.args.clone(),
            }));
        }
        for x in self.exchanges.values().filter(|x| x.durable) {
            for b in x
                .bindings
                .iter()
                .filter(|b| self.destination_durable(&b.destination))
            {
                defs.push(store::Definition::Bind {
                    source: x.name.clone(),
                    binding: b.clone(),
                });
            }
        }
        match &mut self.store {
            Some(store) => store.rewrite(&defs),
            None => Ok(()),
        }
    }
}

/// Unbinding from a non-headers exchange ignores the arguments (clients
/// rarely repeat them).
fn source_is_not_headers(kind: ExchangeKind) -> bool {
    kind != ExchangeKind::Headers
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
        let conn = hub.connect(tx, 131_072);
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
        let st = hub.state();
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
        let st = hub.state();
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
