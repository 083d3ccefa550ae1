//! The Kafka driver on rdkafka (librdkafka): batching producers with
//! delivery reports as acknowledgements, and consumers that either read
//! every partition of their topic (`consumer = "assign"`) or share the
//! partitions in a consumer group (`consumer = "group"`).
//!
//! Topics are created up front (CreateTopics) with `kafka.partitions`
//! partitions, so a run never depends on a broker's auto-create default; an
//! existing topic with a different partition count is an error. Publisher `p`
//! writes to partition `(p / topics) % partitions` of its topic, so each
//! publisher's messages stay in order. Consumers start at the end of the
//! topic: assigned consumers at the high watermark they read while
//! connecting, group members at `auto.offset.reset = latest` (no offsets are
//! ever committed). A subscriber's connect returns only once the whole group
//! holds every partition, and anything that lands before the consumer's
//! first fetch is warm-up traffic, which is never counted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::net::TcpStream;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;

use crate::driver::{
    io_message, resolve_target, ClientEvents, ClientSpec, Connection, Driver, DriverError,
    ErrorKind, EventSink, Publisher, Role,
};
use crate::spec::{KafkaOptions, Workload};

/// Longest wait for metadata, topic creation, or a group to settle.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a producer's queue to drain when it closes.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a send waits before retrying when librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(1);

/// Settings shared by every client of one workload.
pub struct KafkaDriver {
    target: String,
    addr: SocketAddr,
    options: KafkaOptions,
    acks: i16,
    /// Distinct topics of the workload (publisher topics and subscriptions).
    topics: BTreeSet<String>,
    /// Topics are `topics` wide; publisher p uses partition (p / topics) % partitions.
    topic_count: u32,
    topics_ready: OnceCell<Result<(), DriverError>>,
    group: Arc<GroupState>,
}

/// Who in the consumer group holds how many partitions, for waiting until
/// the group has settled.
struct GroupState {
    /// Members (subscriber indexes) expected in the group.
    members: u32,
    /// Partitions the group should hold in total.
    partitions: usize,
    assigned: Mutex<BTreeMap<u32, usize>>,
    changed: watch::Sender<u64>,
}

impl GroupState {
    fn record(&self, member: u32, partitions: usize) {
        self.assigned
            .lock()
            .expect("group state")
            .insert(member, partitions);
        self.changed.send_modify(|n| *n += 1);
    }

    fn settled(&self) -> bool {
        let assigned = self.assigned.lock().expect("group state");
        assigned.len() == self.members as usize
            && assigned.values().all(|n| *n > 0)
            && assigned.values().sum::<usize>() == self.partitions
    }
}

impl KafkaDriver {
    /// Settings from the workload's `qos`, topics and `[kafka]` keys.
    pub fn new(workload: &Workload, target: &str) -> Result<KafkaDriver, DriverError> {
        let addr = resolve_target(target)?;
        let options = workload.kafka_options();
        if !compression_available(&options.compression) {
            return Err(DriverError::new(
                ErrorKind::Rejected,
                format!(
                    "kafka.compression = {:?}: this loadgen's librdkafka was built without it (enable the rdkafka crate's `{}` feature in the workspace Cargo.toml), or use \"lz4\" or \"none\"",
                    options.compression, options.compression
                ),
            ));
        }
        let topics: BTreeSet<String> = (0..workload.publishers)
            .map(|p| workload.publisher_topic(p))
            .chain((0..workload.subscribers).map(|s| workload.subscriber_filter(s)))
            .collect();
        let subscribed: BTreeSet<String> = (0..workload.subscribers)
            .map(|s| workload.subscriber_filter(s))
            .collect();
        let (changed, _) = watch::channel(0);
        let group = Arc::new(GroupState {
            members: workload.subscribers,
            partitions: subscribed.len() * options.partitions as usize,
            assigned: Mutex::new(BTreeMap::new()),
            changed,
        });
        Ok(KafkaDriver {
            target: target.to_string(),
            addr,
            acks: workload.kafka_acks(),
            options,
            topics,
            topic_count: workload.topics,
            topics_ready: OnceCell::new(),
            group,
        })
    }

    /// The resolved broker address.
    pub fn broker_addr(&self) -> SocketAddr {
        self.addr
    }

    fn is_group(&self) -> bool {
        self.options.consumer == "group"
    }

    fn base_config(&self, client: &ClientSpec) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.target)
            .set(
                "client.id",
                format!("loadgen-{}-{}", client.role.as_str(), client.index),
            )
            .set("socket.timeout.ms", "10000")
            .set("socket.nagle.disable", "true");
        c
    }

    fn connect_failed(&self, err: DriverError) -> DriverError {
        err.context(format!("cannot connect to Kafka at {}", self.target))
    }

    /// Creates the workload's topics once (every connect waits for it).
    async fn ensure_topics(&self) -> Result<(), DriverError> {
        self.topics_ready
            .get_or_init(|| self.create_topics())
            .await
            .clone()
    }

    async fn create_topics(&self) -> Result<(), DriverError> {
        let admin: AdminClient<DefaultClientContext> = self
            .base_config(&ClientSpec {
                role: Role::Idle,
                index: 0,
                source: None,
            })
            .create()
            .map_err(|e| self.connect_failed(kafka_error(&e)))?;
        let partitions = self.options.partitions as i32;
        let new: Vec<NewTopic> = self
            .topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(CONNECT_TIMEOUT));
        let results = tokio::time::timeout(CONNECT_TIMEOUT, admin.create_topics(&new, &opts))
            .await
            .map_err(|_| {
                self.connect_failed(DriverError::new(
                    ErrorKind::Timeout,
                    format!("no answer to CreateTopics within {CONNECT_TIMEOUT:?}"),
                ))
            })?
            .map_err(|e| self.connect_failed(kafka_error(&e)))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(DriverError::new(
                        ErrorKind::Rejected,
                        format!("cannot create topic {topic:?}: {code}"),
                    ))
                }
            }
        }
        // An existing topic keeps its partition count: check it.
        let topics: Vec<String> = self.topics.iter().cloned().collect();
        let counts = blocking(move || {
            topics
                .iter()
                .map(|topic| {
                    let metadata = admin.inner().fetch_metadata(Some(topic), CONNECT_TIMEOUT)?;
                    let found = metadata
                        .topics()
                        .first()
                        .map_or(0, |t| t.partitions().len());
                    Ok((topic.clone(), found))
                })
                .collect::<Result<Vec<_>, KafkaError>>()
        })
        .await
        .map_err(|e| self.connect_failed(e))?;
        for (topic, found) in counts {
            if found != self.options.partitions as usize {
                return Err(DriverError::new(
                    ErrorKind::Rejected,
                    format!(
                        "topic {topic:?} has {found} partitions but kafka.partitions = {}; delete the topic or change kafka.partitions",
                        self.options.partitions
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Waits until every group member holds its share of the partitions.
    async fn group_settled(&self) -> Result<(), DriverError> {
        let mut changed = self.group.changed.subscribe();
        let wait = async {
            while !self.group.settled() {
                if changed.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, wait)
            .await
            .map_err(|_| {
                let assigned = self.group.assigned.lock().expect("group state").clone();
                DriverError::new(
                    ErrorKind::Timeout,
                    format!(
                        "consumer group {:?} did not settle within {CONNECT_TIMEOUT:?}: partitions per member {assigned:?}, expected {} members holding {} partitions",
                        self.options.group_id, self.group.members, self.group.partitions
                    ),
                )
            })
    }
}

/// Runs one of librdkafka's blocking calls off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, DriverError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| kafka_error(&e)),
        Err(_) => Err(DriverError::new(
            ErrorKind::Io,
            "a blocking librdkafka call panicked",
        )),
    }
}

fn kafka_error(e: &KafkaError) -> DriverError {
    let kind = match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
            ErrorKind::Refused
        }
        Some(
            RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut,
        ) => ErrorKind::Timeout,
        Some(RDKafkaErrorCode::QueueFull) => ErrorKind::Resources,
        Some(_) => ErrorKind::Protocol,
        None => ErrorKind::Io,
    };
    DriverError::new(kind, e.to_string())
}

/// librdkafka's client-level errors: only "all brokers down" ends a
/// client (everything else it retries on its own).
fn client_error(sink: &EventSink, describe: &str, error: &KafkaError) {
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
        sink.lost(kafka_error(error).context(describe));
    }
}

/// A producer's context: delivery reports become acknowledgements.
struct PublisherContext {
    sink: Arc<EventSink>,
    acks: bool,
    describe: String,
}

impl ClientContext for PublisherContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("{}: {error}: {reason}", self.describe);
        client_error(&self.sink, &self.describe, &error);
    }
}

impl ProducerContext for PublisherContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<u64>) {
        match result {
            Ok(_) => {
                if self.acks {
                    self.sink.acked(*token, Instant::now());
                }
            }
            Err((e, _)) => self.sink.lost(
                kafka_error(e).context(format!("{}: a record was not delivered", self.describe)),
            ),
        }
    }
}

/// A connected Kafka producer.
pub struct KafkaPublisher {
    producer: ThreadedProducer<PublisherContext>,
    topic: String,
    partition: i32,
}

impl Connection for KafkaPublisher {
    async fn close(self) {
        self.producer.context().sink.closing();
        let producer = self.producer;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = producer.flush(CLOSE_TIMEOUT);
        })
        .await;
    }
}

impl Publisher for KafkaPublisher {
    async fn publish(&mut self, token: u64, payload: Bytes) -> Result<(), DriverError> {
        let mut record =
            BaseRecord::<(), [u8], Box<u64>>::with_opaque_to(&self.topic, Box::new(token))
                .partition(self.partition)
                .payload(&payload[..]);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's queue is full: back-pressure, as publish delay.
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, _)) => return Err(kafka_error(&e)),
            }
        }
    }
}

/// A consumer's context: rebalances are recorded for [`GroupState`].
struct SubscriberContext {
    sink: Arc<EventSink>,
    member: u32,
    group: Option<Arc<GroupState>>,
    describe: String,
}

impl ClientContext for SubscriberContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("{}: {error}: {reason}", self.describe);
        client_error(&self.sink, &self.describe, &error);
    }
}

impl ConsumerContext for SubscriberContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Some(group) = &self.group else {
            return;
        };
        match rebalance {
            Rebalance::Assign(tpl) => group.record(self.member, tpl.count()),
            Rebalance::Revoke(_) => group.record(self.member, 0),
            Rebalance::Error(e) => tracing::warn!("{}: rebalance failed: {e}", self.describe),
        }
    }
}

/// A connected consumer and the task that hands its records to the runner.
pub struct KafkaSubscriber {
    consumer: Arc<StreamConsumer<SubscriberContext>>,
    task: JoinHandle<()>,
}

impl Connection for KafkaSubscriber {
    async fn close(self) {
        self.consumer.context().sink.closing();
        self.task.abort();
        let _ = self.task.await;
        let consumer = self.consumer;
        // Dropping a consumer leaves its group, which blocks.
        let _ = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
    }
}

/// An idle client: a TCP connection to the Kafka listener that sends nothing.
pub struct KafkaIdle {
    _stream: TcpStream,
}

impl Connection for KafkaIdle {
    async fn close(self) {}
}

impl Driver for KafkaDriver {
    type Publisher = KafkaPublisher;
    type Subscriber = KafkaSubscriber;
    type Idle = KafkaIdle;

    async fn connect_publisher(
        &self,
        client: &ClientSpec,
        topic: &str,
        events: Box<dyn ClientEvents>,
    ) -> Result<KafkaPublisher, DriverError> {
        self.ensure_topics().await?;
        let describe = format!("publisher {}", client.index);
        let context = PublisherContext {
            sink: EventSink::new(events),
            acks: self.acks != 0,
            describe: describe.clone(),
        };
        let mut config = self.base_config(client);
        config
            .set("acks", self.acks.to_string())
            .set("linger.ms", self.options.linger_ms.to_string())
            .set("batch.size", self.options.batch_size.to_string())
            .set("compression.codec", &self.options.compression)
            .set("message.timeout.ms", "30000")
            .set("queue.buffering.max.messages", "100000");
        let producer: ThreadedProducer<PublisherContext> = config
            .create_with_context(context)
            .map_err(|e| kafka_error(&e).context(format!("{describe}: bad producer settings")))?;
        // One metadata round trip: the broker answers and the topic is there.
        let wanted = topic.to_string();
        let producer = blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&wanted), CONNECT_TIMEOUT)
                .map(|_| producer)
        })
        .await
        .map_err(|e| self.connect_failed(e))?;
        let partition =
            ((client.index / self.topic_count.max(1)) % self.options.partitions.max(1)) as i32;
        Ok(KafkaPublisher {
            producer,
            topic: topic.to_string(),
            partition,
        })
    }

    async fn connect_subscriber(
        &self,
        client: &ClientSpec,
        filter: &str,
        events: Box<dyn ClientEvents>,
    ) -> Result<KafkaSubscriber, DriverError> {
        self.ensure_topics().await?;
        let describe = format!("subscriber {}", client.index);
        let sink = EventSink::new(events);
        let context = SubscriberContext {
            sink: sink.clone(),
            member: client.index,
            group: self.is_group().then(|| self.group.clone()),
            describe: describe.clone(),
        };
        let group_id = if self.is_group() {
            self.options.group_id.clone()
        } else {
            // Never joins a group (partitions are assigned), but librdkafka wants an id.
            format!("loadgen-assign-{}", client.index)
        };
        let mut config = self.base_config(client);
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("fetch.wait.max.ms", "100")
            // librdkafka >= 2.4 stops fetching a partition for this long once
            // its local queue passes queued.min.messages (default 1 s): a
            // consumer a little behind then reads in 1 s steps and falls
            // further behind, which the bench would report as late or lost.
            .set("fetch.queue.backoff.ms", "10");
        let consumer: StreamConsumer<SubscriberContext> = config
            .create_with_context(context)
            .map_err(|e| kafka_error(&e).context(format!("{describe}: bad consumer settings")))?;
        let consumer = Arc::new(consumer);
        if self.is_group() {
            consumer
                .subscribe(&[filter])
                .map_err(|e| self.connect_failed(kafka_error(&e)))?;
        } else {
            let partitions = self.options.partitions as i32;
            let c = consumer.clone();
            let topic = filter.to_string();
            let tpl = blocking(move || {
                let mut tpl = TopicPartitionList::new();
                for p in 0..partitions {
                    let (_, high) = c.fetch_watermarks(&topic, p, CONNECT_TIMEOUT)?;
                    tpl.add_partition_offset(&topic, p, Offset::Offset(high))?;
                }
                Ok(tpl)
            })
            .await
            .map_err(|e| self.connect_failed(e))?;
            consumer
                .assign(&tpl)
                .map_err(|e| self.connect_failed(kafka_error(&e)))?;
        }
        let task = tokio::spawn(receive(consumer.clone(), sink, describe));
        if self.is_group() {
            if let Err(e) = self.group_settled().await {
                task.abort();
                return Err(e);
            }
        }
        Ok(KafkaSubscriber { consumer, task })
    }

    async fn connect_idle(
        &self,
        _client: &ClientSpec,
        _events: Box<dyn ClientEvents>,
    ) -> Result<KafkaIdle, DriverError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| {
                self.connect_failed(DriverError::new(ErrorKind::Timeout, "no TCP connection"))
            })?
            .map_err(|e| {
                self.connect_failed(DriverError::new(ErrorKind::of_io(&e), io_message(&e)))
            })?;
        Ok(KafkaIdle { _stream: stream })
    }

    fn filter_matches(&self, filter: &str, topic: &str) -> bool {
        filter == topic
    }

    fn binds_source_address(&self, _role: Role) -> bool {
        false
    }

    fn subscribers_share_deliveries(&self) -> bool {
        self.is_group()
    }
}

/// Hands every record to the runner until the consumer is closed.
async fn receive(
    consumer: Arc<StreamConsumer<SubscriberContext>>,
    sink: Arc<EventSink>,
    describe: String,
) {
    loop {
        match consumer.recv().await {
            Ok(message) => {
                let at = Instant::now();
                if let Some(payload) = message.payload() {
                    sink.delivered(payload, at);
                }
            }
            Err(e) => {
                tracing::debug!("{describe}: {e}");
                client_error(&sink, &describe, &e);
            }
        }
    }
}

/// Whether this librdkafka can compress with `codec` ("none", "lz4", "zstd").
/// The workspace builds librdkafka without zstd (the rdkafka crate's `zstd`
/// feature would build it for the broker's tests too).
pub fn compression_available(codec: &str) -> bool {
    let mut c = ClientConfig::new();
    c.set("compression.codec", codec);
    // Only the configuration is checked: no broker is contacted.
    c.create::<BaseProducer>().is_ok()
}
