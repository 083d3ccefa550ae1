//! The AMQP 0.9.1 driver on lapin: publishers with or without publisher
//! confirms (at most `amqp.confirm_window` unconfirmed publishes in flight),
//! consumers with auto-ack or a basic.ack per delivery under a prefetch
//! limit, on per-subscriber or shared queues bound to an exchange of the
//! chosen type (or the default exchange).
//!
//! Publisher `p` publishes to `amqp.exchange_name()` with routing key
//! `topic`; subscriber `s` binds its queue with `subscribe` as binding key.
//! Per-subscriber queues are server-named and exclusive (gone when the
//! subscriber disconnects); shared queues are named `<exchange>.<subscribe>`
//! (`<subscribe>` on the default exchange) and auto-deleted with their last
//! consumer. Manual acks are basic.ack `multiple` over half the prefetch
//! window (at most 100 deliveries), and whenever the consumer has caught up
//! with its queue. Durable queues are purged when declared, so nothing left by an
//! earlier run is counted. A subscriber's connect returns once basic.consume
//! is confirmed, so everything published afterwards reaches it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueuePurgeOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ConnectionProperties, ExchangeKind};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::driver::{
    resolve_target, ClientEvents, ClientSpec, Connection, Driver, DriverError, ErrorKind,
    EventSink, Publisher, Role,
};
use crate::spec::{AmqpOptions, Workload};

/// Longest wait for the handshake and each declare.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for connection.close-ok.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// AMQP reply code of a polite close.
const REPLY_SUCCESS: u16 = 200;

/// Settings shared by every client of one workload.
pub struct AmqpDriver {
    target: String,
    addr: SocketAddr,
    uri: String,
    options: AmqpOptions,
    /// "" = the default exchange.
    exchange: String,
    confirms: bool,
}

impl AmqpDriver {
    /// Settings from the workload's `qos` and `[amqp]` keys.
    pub fn new(workload: &Workload, target: &str) -> Result<AmqpDriver, DriverError> {
        let addr = resolve_target(target)?;
        let options = workload.amqp_options();
        Ok(AmqpDriver {
            target: target.to_string(),
            addr,
            // The broker under test accepts guest/guest from loopback and,
            // by default, anyone from anywhere.
            uri: format!("amqp://guest:guest@{addr}/%2f"),
            exchange: options.exchange_name(),
            confirms: workload.amqp_confirms(),
            options,
        })
    }

    /// The resolved broker address.
    pub fn broker_addr(&self) -> SocketAddr {
        self.addr
    }

    fn connect_failed(&self, err: DriverError) -> DriverError {
        err.context(format!("cannot connect to AMQP at {}", self.target))
    }

    /// Opens a connection; its errors end the client once [`ClientConnection::watch`]ed.
    async fn open(
        &self,
        client: &ClientSpec,
        events: Box<dyn ClientEvents>,
    ) -> Result<ClientConnection, DriverError> {
        let name = format!("loadgen-{}-{}", client.role.as_str(), client.index);
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection = within(
            "connection handshake",
            lapin::Connection::connect(&self.uri, properties),
        )
        .await
        .map_err(|e| self.connect_failed(e))?;
        Ok(ClientConnection {
            connection,
            sink: EventSink::new(events),
            describe: describe(client),
            watcher: None,
        })
    }

    /// A channel with the workload's exchange declared on it.
    async fn channel(&self, connection: &lapin::Connection) -> Result<Channel, DriverError> {
        let channel = within("channel.open", connection.create_channel()).await?;
        if !self.exchange.is_empty() {
            let kind = match self.options.exchange_type.as_str() {
                "fanout" => ExchangeKind::Fanout,
                "topic" => ExchangeKind::Topic,
                _ => ExchangeKind::Direct,
            };
            let options = ExchangeDeclareOptions {
                durable: self.options.durable,
                ..Default::default()
            };
            within(
                "exchange.declare",
                channel.exchange_declare(&self.exchange, kind, options, FieldTable::default()),
            )
            .await
            .map_err(|e| e.context(format!("exchange {:?}", self.exchange)))?;
        }
        Ok(channel)
    }

    /// A publisher's channel: the exchange declared, confirm mode if asked.
    async fn publishing_channel(
        &self,
        connection: &lapin::Connection,
    ) -> Result<Channel, DriverError> {
        let channel = self.channel(connection).await?;
        if self.confirms {
            within(
                "confirm.select",
                channel.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
        }
        Ok(channel)
    }

    /// A subscriber's channel with its prefetch, its queue declared and
    /// bound, and basic.consume confirmed.
    async fn consumer(
        &self,
        connection: &lapin::Connection,
        client: &ClientSpec,
        filter: &str,
    ) -> Result<lapin::Consumer, DriverError> {
        let channel = self.channel(connection).await?;
        let manual = self.options.manual_ack();
        if manual && self.options.prefetch > 0 {
            within(
                "basic.qos",
                channel.basic_qos(self.options.prefetch, BasicQosOptions::default()),
            )
            .await?;
        }
        let queue = self.queue(&channel, client.index, filter).await?;
        let options = BasicConsumeOptions {
            no_ack: !manual,
            ..Default::default()
        };
        let tag = format!("loadgen-subscriber-{}", client.index);
        within(
            "basic.consume",
            channel.basic_consume(&queue, &tag, options, FieldTable::default()),
        )
        .await
        .map_err(|e| e.context(format!("queue {queue:?}")))
    }

    /// Declares (and binds) subscriber `index`'s queue; returns its name.
    async fn queue(
        &self,
        channel: &Channel,
        index: u32,
        filter: &str,
    ) -> Result<String, DriverError> {
        let shared = self.options.shared_queues();
        let (name, exclusive) = match (self.exchange.is_empty(), shared) {
            // The default exchange routes by queue name.
            (true, _) => (filter.to_string(), !shared),
            (false, true) => (format!("{}.{filter}", self.exchange), false),
            (false, false) => (String::new(), true),
        };
        let options = QueueDeclareOptions {
            durable: self.options.durable,
            exclusive,
            auto_delete: !self.options.durable,
            ..Default::default()
        };
        let queue = within(
            "queue.declare",
            channel.queue_declare(&name, options, FieldTable::default()),
        )
        .await
        .map_err(|e| e.context(format!("subscriber {index}: queue {name:?}")))?;
        let name = queue.name().as_str().to_string();
        if !self.exchange.is_empty() {
            within(
                "queue.bind",
                channel.queue_bind(
                    &name,
                    &self.exchange,
                    filter,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(|e| e.context(format!("subscriber {index}: bind {name:?} with {filter:?}")))?;
        }
        if self.options.durable && queue.message_count() > 0 {
            within(
                "queue.purge",
                channel.queue_purge(&name, QueuePurgeOptions::default()),
            )
            .await?;
        }
        Ok(name)
    }
}

fn describe(client: &ClientSpec) -> String {
    format!("{} {}", client.role.as_str(), client.index)
}

/// Awaits one of lapin's operations, bounded by [`CONNECT_TIMEOUT`].
async fn within<T>(
    what: &str,
    operation: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, DriverError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, operation).await {
        Ok(result) => result.map_err(|e| lapin_error(&e).context(what)),
        Err(_) => Err(DriverError::new(
            ErrorKind::Timeout,
            format!("no answer to {what} within {CONNECT_TIMEOUT:?}"),
        )),
    }
}

fn lapin_error(e: &lapin::Error) -> DriverError {
    use lapin::ErrorKind as K;
    let kind = match e.kind() {
        K::IOError(io) => ErrorKind::of_io(io),
        K::ProtocolError(amqp) => match amqp.get_id() {
            // CONNECTION_FORCED: the broker is shutting down.
            320 => ErrorKind::ConnectionLost,
            // ACCESS_REFUSED, NOT_FOUND, RESOURCE_LOCKED, PRECONDITION_FAILED.
            403..=406 => ErrorKind::Rejected,
            _ => ErrorKind::Protocol,
        },
        K::MissingHeartbeatError => ErrorKind::Timeout,
        K::InvalidConnectionState(_) | K::InvalidChannelState(..) => ErrorKind::ConnectionLost,
        K::ParsingError(_) | K::SerialisationError(_) | K::InvalidProtocolVersion(_) => {
            ErrorKind::Protocol
        }
        _ => ErrorKind::Io,
    };
    DriverError::new(kind, e.to_string())
}

/// One client's connection, its events, and the task watching it for errors.
struct ClientConnection {
    connection: lapin::Connection,
    sink: Arc<EventSink>,
    describe: String,
    watcher: Option<JoinHandle<()>>,
}

impl ClientConnection {
    /// From now on a connection or channel error is a lost connection.
    /// Started once the client is set up: an error while connecting is the
    /// connect's own result, with the operation that failed in its message.
    fn watch(mut self) -> Self {
        let mut events = self.connection.events_listener();
        let (sink, describe) = (self.sink.clone(), self.describe.clone());
        self.watcher = Some(tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let lapin::Event::Error(e) = event {
                    sink.lost(lapin_error(&e).context(&describe));
                    return;
                }
            }
        }));
        self
    }

    /// Closes the connection politely, bounded in time; no `connection_lost` follows.
    async fn close(self) {
        self.sink.closing();
        if let Some(watcher) = self.watcher {
            watcher.abort();
        }
        let _ =
            tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close(REPLY_SUCCESS, "bye")).await;
    }
}

/// A connected publisher: one channel, in confirm mode when confirms are on.
pub struct AmqpPublisher {
    connection: ClientConnection,
    channel: Channel,
    exchange: String,
    routing_key: String,
    properties: BasicProperties,
    /// Unconfirmed publishes still allowed in flight (None: no confirms).
    window: Option<Arc<Semaphore>>,
}

impl Connection for AmqpPublisher {
    async fn close(self) {
        self.connection.close().await;
    }
}

impl Publisher for AmqpPublisher {
    async fn publish(&mut self, token: u64, payload: Bytes) -> Result<(), DriverError> {
        // A full window is back-pressure: it shows up as publish delay.
        let permit = match &self.window {
            Some(window) => Some(
                window
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the confirm window stays open"),
            ),
            None => None,
        };
        let confirm = self
            .channel
            .basic_publish(
                &self.exchange,
                &self.routing_key,
                BasicPublishOptions::default(),
                &payload,
                self.properties.clone(),
            )
            .await
            .map_err(|e| lapin_error(&e))?;
        if let Some(permit) = permit {
            let sink = self.connection.sink.clone();
            let describe = self.connection.describe.clone();
            tokio::spawn(async move {
                match confirm.await {
                    Ok(Confirmation::Ack(_)) => sink.acked(token, Instant::now()),
                    Ok(Confirmation::Nack(_)) => sink.lost(DriverError::new(
                        ErrorKind::Rejected,
                        format!("{describe}: the broker refused a publish (basic.nack)"),
                    )),
                    Ok(Confirmation::NotRequested) => {}
                    Err(e) => sink.lost(lapin_error(&e).context(&describe)),
                }
                drop(permit);
            });
        }
        Ok(())
    }
}

/// A connected consumer and the task that hands its deliveries to the runner.
pub struct AmqpSubscriber {
    connection: ClientConnection,
    task: JoinHandle<()>,
}

impl Connection for AmqpSubscriber {
    async fn close(self) {
        self.connection.sink.closing();
        self.task.abort();
        let _ = self.task.await;
        self.connection.close().await;
    }
}

/// An idle client: a connection that only exchanges heartbeats.
pub struct AmqpIdle {
    connection: ClientConnection,
}

impl Connection for AmqpIdle {
    async fn close(self) {
        self.connection.close().await;
    }
}

impl Driver for AmqpDriver {
    type Publisher = AmqpPublisher;
    type Subscriber = AmqpSubscriber;
    type Idle = AmqpIdle;

    async fn connect_publisher(
        &self,
        client: &ClientSpec,
        topic: &str,
        events: Box<dyn ClientEvents>,
    ) -> Result<AmqpPublisher, DriverError> {
        let connection = self.open(client, events).await?;
        let channel = match self.publishing_channel(&connection.connection).await {
            Ok(channel) => channel,
            Err(e) => {
                connection.close().await;
                return Err(e);
            }
        };
        let mut properties = BasicProperties::default();
        if self.options.persistent {
            properties = properties.with_delivery_mode(2);
        }
        Ok(AmqpPublisher {
            connection: connection.watch(),
            channel,
            exchange: self.exchange.clone(),
            routing_key: topic.to_string(),
            properties,
            window: self
                .confirms
                .then(|| Arc::new(Semaphore::new(self.options.confirm_window as usize))),
        })
    }

    async fn connect_subscriber(
        &self,
        client: &ClientSpec,
        filter: &str,
        events: Box<dyn ClientEvents>,
    ) -> Result<AmqpSubscriber, DriverError> {
        let connection = self.open(client, events).await?;
        let consumer = match self.consumer(&connection.connection, client, filter).await {
            Ok(consumer) => consumer,
            Err(e) => {
                connection.close().await;
                return Err(e);
            }
        };
        let sink = connection.sink.clone();
        let policy = AckPolicy::of(&self.options);
        let task = tokio::spawn(receive(consumer, sink, policy, describe(client)));
        Ok(AmqpSubscriber {
            connection: connection.watch(),
            task,
        })
    }

    async fn connect_idle(
        &self,
        client: &ClientSpec,
        events: Box<dyn ClientEvents>,
    ) -> Result<AmqpIdle, DriverError> {
        let connection = self.open(client, events).await?;
        Ok(AmqpIdle {
            connection: connection.watch(),
        })
    }

    fn filter_matches(&self, filter: &str, topic: &str) -> bool {
        match self.options.exchange_type.as_str() {
            _ if self.exchange.is_empty() => filter == topic,
            "fanout" => true,
            "topic" => topic_matches(filter, topic),
            _ => filter == topic,
        }
    }

    fn binds_source_address(&self, _role: Role) -> bool {
        false
    }

    fn subscribers_share_deliveries(&self) -> bool {
        self.options.shared_queues()
    }
}

/// How a consumer acknowledges: not at all (auto-ack), or with one
/// basic.ack `multiple` for every `batch` deliveries and whenever it has
/// caught up with the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckPolicy {
    Auto,
    Manual { batch: u32 },
}

/// Most deliveries covered by one basic.ack `multiple`.
const MAX_ACK_BATCH: u32 = 100;

impl AckPolicy {
    fn of(options: &AmqpOptions) -> AckPolicy {
        if !options.manual_ack() {
            return AckPolicy::Auto;
        }
        // Half the prefetch window, so the broker always has room to send
        // more while an ack is on its way.
        let batch = match u32::from(options.prefetch) {
            0 => MAX_ACK_BATCH,
            prefetch => (prefetch / 2).clamp(1, MAX_ACK_BATCH),
        };
        AckPolicy::Manual { batch }
    }
}

/// Hands every delivery to the runner (acknowledging as `policy` says)
/// until the consumer is closed. One awaited basic.ack per delivery would
/// cap a consumer at one round trip through lapin's I/O loop per message, so
/// acks cover batches (`multiple`), as high-throughput consumers do.
async fn receive(
    mut consumer: lapin::Consumer,
    sink: Arc<EventSink>,
    policy: AckPolicy,
    describe: String,
) {
    let mut unacked: Option<(lapin::acker::Acker, u32)> = None;
    loop {
        let next = match consumer.next().now_or_never() {
            Some(next) => next,
            None => {
                // Caught up: acknowledge what we hold before waiting.
                if let Some((acker, _)) = unacked.take() {
                    if let Err(e) = ack_up_to(&acker).await {
                        sink.lost(e.context(&describe));
                        return;
                    }
                }
                consumer.next().await
            }
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                sink.lost(lapin_error(&e).context(&describe));
                return;
            }
            None => break,
        };
        sink.delivered(&delivery.data, Instant::now());
        if let AckPolicy::Manual { batch } = policy {
            let held = unacked.as_ref().map_or(0, |(_, n)| *n) + 1;
            if held >= batch {
                unacked = None;
                if let Err(e) = ack_up_to(&delivery.acker).await {
                    sink.lost(e.context(&describe));
                    return;
                }
            } else {
                unacked = Some((delivery.acker, held));
            }
        }
    }
    sink.lost(DriverError::new(
        ErrorKind::ConnectionLost,
        format!("{describe}: the broker cancelled the consumer"),
    ));
}

/// basic.ack with `multiple`: this delivery and every earlier one.
async fn ack_up_to(acker: &lapin::acker::Acker) -> Result<(), DriverError> {
    acker
        .ack(BasicAckOptions { multiple: true })
        .await
        .map(drop)
        .map_err(|e| lapin_error(&e).context("basic.ack"))
}

/// AMQP topic matching: dot-separated words, `*` is exactly one word, `#`
/// zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| matches(rest, &key[skip..])),
            Some((&word, rest)) => key.split_first().is_some_and(|(k, key_rest)| {
                (word == "*" || word == *k) && matches(rest, key_rest)
            }),
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    matches(&pattern, &key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_as_in_amqp() {
        assert!(topic_matches("bench.*", "bench.0"));
        assert!(!topic_matches("bench.*", "bench.0.x"));
        assert!(topic_matches("bench.#", "bench"));
        assert!(topic_matches("bench.#", "bench.0.x"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("*.x.#", "a.x"));
        assert!(!topic_matches("bench.1", "bench.0"));
        assert!(!topic_matches("*", "a.b"));
    }

    #[test]
    fn manual_acks_cover_half_the_prefetch_window() {
        let policy = |ack: &str, prefetch: u16| {
            AckPolicy::of(&AmqpOptions {
                ack: ack.into(),
                prefetch,
                ..Default::default()
            })
        };
        assert_eq!(policy("auto", 0), AckPolicy::Auto);
        assert_eq!(policy("manual", 1), AckPolicy::Manual { batch: 1 });
        assert_eq!(policy("manual", 200), AckPolicy::Manual { batch: 100 });
        assert_eq!(policy("manual", 50), AckPolicy::Manual { batch: 25 });
        assert_eq!(policy("manual", 0), AckPolicy::Manual { batch: 100 });
        assert_eq!(policy("manual", 1000), AckPolicy::Manual { batch: 100 });
    }

    #[test]
    fn filters_follow_the_exchange_type() {
        let driver = |amqp: &str| {
            let w = Workload::parse(&format!(
                "protocol = \"amqp\"\nscenario = \"fan_out\"\npublishers = 1\nsubscribers = 2\ntopic = \"a.b\"\nsubscribe = \"q{{subscriber}}\"\n[amqp]\n{amqp}"
            ))
            .unwrap();
            AmqpDriver::new(&w, "127.0.0.1:5672").unwrap()
        };
        assert!(driver("exchange_type = \"fanout\"\n").filter_matches("x", "a.b"));
        assert!(driver("exchange_type = \"topic\"\n").filter_matches("a.*", "a.b"));
        assert!(!driver("").filter_matches("a.*", "a.b"));
        assert!(driver("").filter_matches("a.b", "a.b"));
        let default_exchange = driver("exchange = \"\"\nqueues = \"shared\"\n");
        assert!(default_exchange.subscribers_share_deliveries());
        assert!(default_exchange.filter_matches("a.b", "a.b"));
        assert!(!default_exchange.filter_matches("q0", "a.b"));
    }
}
