//! The MQTT driver: publishers and subscribers on rumqttc 0.25
//! (`AsyncClient` for 3.1.1, `v5::AsyncClient` for 5.0); idle clients on a
//! plain socket speaking rumqttc's packet codec, because rumqttc 0.25 cannot
//! bind a local source address and idle clients are the ones that come by
//! the tens of thousands.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::driver::{
    io_message, resolve_target, split_host_port, ClientEvents, ClientSpec, Connection, Driver,
    DriverError, ErrorKind, Publisher, Role,
};
use crate::spec::Workload;

/// Longest wait for TCP connect plus CONNACK (and SUBACK for subscribers).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a polite DISCONNECT before the I/O task is aborted.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Publish requests rumqttc queues before `publish` waits (back-pressure).
const REQUEST_CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    V311,
    V5,
}

/// Connection settings shared by every client of one workload.
#[derive(Debug, Clone)]
pub struct MqttDriver {
    /// `HOST:PORT` as given (for messages).
    target: String,
    host: String,
    port: u16,
    /// Resolved once, for idle clients that connect on their own sockets.
    addr: SocketAddr,
    version: MqttVersion,
    qos: u8,
    keep_alive: Duration,
    clean_session: bool,
    client_id_prefix: String,
    inflight: u16,
    max_packet_size: usize,
}

impl MqttDriver {
    /// Settings from the workload's `qos`, `payload_bytes` and `[mqtt]` keys.
    pub fn new(workload: &Workload, target: &str) -> Result<MqttDriver, DriverError> {
        let (host, port) = split_host_port(target)?;
        let addr = resolve_target(target)?;
        let m = &workload.mqtt;
        Ok(MqttDriver {
            target: target.to_string(),
            host,
            port,
            addr,
            version: if m.version == "5" {
                MqttVersion::V5
            } else {
                MqttVersion::V311
            },
            qos: workload.qos.min(2),
            keep_alive: Duration::from_secs(u64::from(m.keep_alive_secs)),
            clean_session: m.clean_session,
            client_id_prefix: m.client_id_prefix.clone(),
            inflight: m.inflight.max(1),
            max_packet_size: (workload.payload_bytes + 1024).max(10 * 1024),
        })
    }

    /// The resolved broker address.
    pub fn broker_addr(&self) -> SocketAddr {
        self.addr
    }

    fn client_id(&self, client: &ClientSpec) -> String {
        format!(
            "{}-{}-{}",
            self.client_id_prefix,
            client.role.as_str(),
            client.index
        )
    }

    fn connect_failed(&self, err: DriverError) -> DriverError {
        err.context(format!("cannot connect to {}", self.target))
    }

    /// A rumqttc client and its event loop, connected (and subscribed when
    /// `filter` is given), with the I/O task running.
    async fn connect_library_client(
        &self,
        client: &ClientSpec,
        filter: Option<&str>,
        mut events: Box<dyn ClientEvents>,
        acks: Option<Arc<AckTracker>>,
    ) -> Result<LibraryClient, DriverError> {
        let id = self.client_id(client);
        let closing = Arc::new(AtomicBool::new(false));
        let describe = format!("{} {} ({id})", client.role.as_str(), client.index);
        let task = match self.version {
            MqttVersion::V311 => {
                let mut options = rumqttc::MqttOptions::new(id, &self.host, self.port);
                options
                    .set_keep_alive(self.keep_alive)
                    .set_clean_session(self.clean_session)
                    .set_inflight(self.inflight)
                    .set_max_packet_size(self.max_packet_size, self.max_packet_size);
                let (handle, mut eventloop) =
                    rumqttc::AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);
                let mut network = rumqttc::NetworkOptions::new();
                network.set_tcp_nodelay(true);
                network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
                eventloop.set_network_options(network);
                let handle = ClientHandle::V311(handle);
                self.establish(&mut eventloop, &handle, filter, events.as_mut())
                    .await?;
                let task = spawn_io(eventloop, events, acks, closing.clone(), describe);
                (handle, task)
            }
            MqttVersion::V5 => {
                let mut options = rumqttc::v5::MqttOptions::new(id, &self.host, self.port);
                options
                    .set_keep_alive(self.keep_alive)
                    .set_clean_start(self.clean_session)
                    .set_outgoing_inflight_upper_limit(self.inflight)
                    .set_connection_timeout(CONNECT_TIMEOUT.as_secs())
                    .set_max_packet_size(Some(self.max_packet_size as u32));
                let mut network = rumqttc::NetworkOptions::new();
                network.set_tcp_nodelay(true);
                network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
                options.set_network_options(network);
                let (handle, mut eventloop) =
                    rumqttc::v5::AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);
                let handle = ClientHandle::V5(handle);
                self.establish(&mut eventloop, &handle, filter, events.as_mut())
                    .await?;
                let task = spawn_io(eventloop, events, acks, closing.clone(), describe);
                (handle, task)
            }
        };
        Ok(LibraryClient {
            handle: task.0,
            task: AbortOnDrop(Some(task.1)),
            closing,
        })
    }

    /// Polls the event loop until CONNACK (and SUBACK), bounded by [`CONNECT_TIMEOUT`].
    async fn establish<L: MqttLoop>(
        &self,
        eventloop: &mut L,
        handle: &ClientHandle,
        filter: Option<&str>,
        events: &mut dyn ClientEvents,
    ) -> Result<(), DriverError> {
        let handshake = async {
            loop {
                match eventloop
                    .next_event()
                    .await
                    .map_err(|e| self.connect_failed(e))?
                {
                    LoopEvent::ConnAck(Ok(())) => break,
                    LoopEvent::ConnAck(Err(reason)) => {
                        return Err(self.connect_failed(DriverError::new(
                            ErrorKind::Rejected,
                            format!("broker refused the connection: {reason}"),
                        )))
                    }
                    _ => {}
                }
            }
            let Some(filter) = filter else {
                return Ok(());
            };
            handle.subscribe(filter, self.qos).await?;
            loop {
                match eventloop.next_event().await? {
                    LoopEvent::SubAck(Ok(())) => return Ok(()),
                    LoopEvent::SubAck(Err(reason)) => {
                        return Err(DriverError::new(
                            ErrorKind::Rejected,
                            format!("broker refused the subscription to {filter:?}: {reason}"),
                        ))
                    }
                    LoopEvent::Publish(payload) => events.delivered(&payload, Instant::now()),
                    _ => {}
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(result) => result,
            Err(_) => Err(self.connect_failed(DriverError::new(
                ErrorKind::Timeout,
                format!("no CONNACK/SUBACK within {CONNECT_TIMEOUT:?}"),
            ))),
        }
    }

    async fn connect_idle_socket(
        &self,
        client: &ClientSpec,
        mut events: Box<dyn ClientEvents>,
    ) -> Result<IdleClient, DriverError> {
        let handshake = async {
            let mut stream = open_socket(self.addr, client.source)
                .await
                .map_err(|e| DriverError::new(ErrorKind::of_io(&e), io_message(&e)))?;
            let mut buf = BytesMut::with_capacity(64);
            let connect = idle_codec::connect(
                self.version,
                &self.client_id(client),
                self.keep_alive,
                self.clean_session,
            );
            stream.write_all(&connect).await.map_err(io_error)?;
            loop {
                match idle_codec::read(self.version, &mut buf)? {
                    Some(IdlePacket::ConnAck(Ok(()))) => return Ok((stream, buf)),
                    Some(IdlePacket::ConnAck(Err(reason))) => {
                        return Err(DriverError::new(
                            ErrorKind::Rejected,
                            format!("broker refused the connection: {reason}"),
                        ))
                    }
                    Some(other) => {
                        return Err(DriverError::new(
                            ErrorKind::Protocol,
                            format!("expected CONNACK, got {other:?}"),
                        ))
                    }
                    None => {
                        if stream.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                            return Err(DriverError::new(
                                ErrorKind::ConnectionLost,
                                "broker closed the connection before CONNACK",
                            ));
                        }
                    }
                }
            }
        };
        let (stream, buf) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(result) => result.map_err(|e| self.connect_failed(e))?,
            Err(_) => {
                return Err(self.connect_failed(DriverError::new(
                    ErrorKind::Timeout,
                    format!("no CONNACK within {CONNECT_TIMEOUT:?}"),
                )))
            }
        };
        let closing = Arc::new(AtomicBool::new(false));
        let (version, keep_alive) = (self.version, self.keep_alive);
        let describe = format!("idle {} ({})", client.index, self.client_id(client));
        let task_closing = closing.clone();
        let task = tokio::spawn(async move {
            let result = idle_keepalive(stream, buf, version, keep_alive, &task_closing).await;
            if let Err(e) = result {
                if !task_closing.load(Ordering::Acquire) {
                    events.connection_lost(e.context(describe));
                }
            }
        });
        Ok(IdleClient {
            task: AbortOnDrop(Some(task)),
            closing,
        })
    }
}

fn io_error(e: std::io::Error) -> DriverError {
    DriverError::new(ErrorKind::of_io(&e), io_message(&e))
}

async fn open_socket(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        if source.is_ipv4() == addr.is_ipv4() {
            socket.bind(SocketAddr::new(source, 0))?;
        }
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

impl Driver for MqttDriver {
    type Publisher = MqttPublisher;
    type Subscriber = MqttSubscriber;
    type Idle = IdleClient;

    async fn connect_publisher(
        &self,
        client: &ClientSpec,
        topic: &str,
        events: Box<dyn ClientEvents>,
    ) -> Result<MqttPublisher, DriverError> {
        let acks = (self.qos > 0).then(|| Arc::new(AckTracker::default()));
        let inner = self
            .connect_library_client(client, None, events, acks.clone())
            .await?;
        Ok(MqttPublisher {
            inner,
            topic: topic.to_string(),
            qos: self.qos,
            acks,
        })
    }

    async fn connect_subscriber(
        &self,
        client: &ClientSpec,
        filter: &str,
        events: Box<dyn ClientEvents>,
    ) -> Result<MqttSubscriber, DriverError> {
        let inner = self
            .connect_library_client(client, Some(filter), events, None)
            .await?;
        Ok(MqttSubscriber { inner })
    }

    async fn connect_idle(
        &self,
        client: &ClientSpec,
        events: Box<dyn ClientEvents>,
    ) -> Result<IdleClient, DriverError> {
        self.connect_idle_socket(client, events).await
    }

    fn filter_matches(&self, filter: &str, topic: &str) -> bool {
        filter_matches(filter, topic)
    }

    fn binds_source_address(&self, role: Role) -> bool {
        role == Role::Idle
    }
}

/// MQTT topic matching: `+` one level, `#` this level and all below,
/// wildcards never match topics starting with `$`; `$share/{group}/` filters
/// match like the filter after the group.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, f)) => f,
            None => return false,
        },
        None => filter,
    };
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        match (f, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Which queued token each outgoing packet id carries, so PUBACK/PUBCOMP
/// can be attributed: rumqttc reports `Outgoing::Publish(pkid)` in the order
/// the publishes were queued (collisions are held back, not reordered).
#[derive(Default)]
struct AckTracker {
    inner: Mutex<AckState>,
}

#[derive(Default)]
struct AckState {
    queued: VecDeque<u64>,
    by_pkid: Vec<Option<u64>>,
}

impl AckTracker {
    fn queued(&self, token: u64) {
        self.inner
            .lock()
            .expect("ack tracker")
            .queued
            .push_back(token);
    }

    fn sent(&self, pkid: u16) {
        let mut state = self.inner.lock().expect("ack tracker");
        if let Some(token) = state.queued.pop_front() {
            if state.by_pkid.len() <= usize::from(pkid) {
                state.by_pkid.resize(usize::from(pkid) + 1, None);
            }
            state.by_pkid[usize::from(pkid)] = Some(token);
        }
    }

    fn acked(&self, pkid: u16) -> Option<u64> {
        let mut state = self.inner.lock().expect("ack tracker");
        state.by_pkid.get_mut(usize::from(pkid))?.take()
    }
}

/// What the I/O task needs to know from either rumqttc event loop.
#[derive(Debug)]
enum LoopEvent {
    ConnAck(Result<(), String>),
    SubAck(Result<(), String>),
    Publish(Bytes),
    /// A publish went out with this packet id (0 for QoS 0).
    PublishSent(u16),
    /// The broker completed the publish with this packet id (PUBACK for QoS 1, PUBCOMP for QoS 2).
    PublishAcked(u16),
    /// The broker sent DISCONNECT.
    Disconnect(String),
    Other,
}

/// rumqttc's 3.1.1 and 5.0 event loops behind one interface.
trait MqttLoop: Send + 'static {
    fn next_event(&mut self) -> impl Future<Output = Result<LoopEvent, DriverError>> + Send;
}

impl MqttLoop for rumqttc::EventLoop {
    async fn next_event(&mut self) -> Result<LoopEvent, DriverError> {
        use rumqttc::{ConnectReturnCode, Event, Incoming, Outgoing, SubscribeReasonCode};
        let event = self.poll().await.map_err(v311_error)?;
        Ok(match event {
            Event::Incoming(Incoming::ConnAck(ack)) => LoopEvent::ConnAck(match ack.code {
                ConnectReturnCode::Success => Ok(()),
                code => Err(format!("{code:?}")),
            }),
            Event::Incoming(Incoming::SubAck(ack)) => LoopEvent::SubAck(
                match ack
                    .return_codes
                    .iter()
                    .find(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    None => Ok(()),
                    Some(code) => Err(format!("{code:?}")),
                },
            ),
            Event::Incoming(Incoming::Publish(p)) => LoopEvent::Publish(p.payload),
            Event::Incoming(Incoming::PubAck(ack)) => LoopEvent::PublishAcked(ack.pkid),
            Event::Incoming(Incoming::PubComp(ack)) => LoopEvent::PublishAcked(ack.pkid),
            Event::Incoming(Incoming::Disconnect) => LoopEvent::Disconnect(String::new()),
            Event::Outgoing(Outgoing::Publish(pkid)) => LoopEvent::PublishSent(pkid),
            _ => LoopEvent::Other,
        })
    }
}

impl MqttLoop for rumqttc::v5::EventLoop {
    async fn next_event(&mut self) -> Result<LoopEvent, DriverError> {
        use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, SubscribeReasonCode};
        use rumqttc::v5::Event;
        use rumqttc::Outgoing;
        let event = self.poll().await.map_err(v5_error)?;
        Ok(match event {
            Event::Incoming(Packet::ConnAck(ack)) => LoopEvent::ConnAck(match ack.code {
                ConnectReturnCode::Success => Ok(()),
                code => Err(format!("{code:?}")),
            }),
            Event::Incoming(Packet::SubAck(ack)) => LoopEvent::SubAck(
                match ack
                    .return_codes
                    .iter()
                    .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                {
                    None => Ok(()),
                    Some(code) => Err(format!("{code:?}")),
                },
            ),
            Event::Incoming(Packet::Publish(p)) => LoopEvent::Publish(p.payload),
            Event::Incoming(Packet::PubAck(ack)) => LoopEvent::PublishAcked(ack.pkid),
            Event::Incoming(Packet::PubComp(ack)) => LoopEvent::PublishAcked(ack.pkid),
            Event::Incoming(Packet::Disconnect(d)) => {
                LoopEvent::Disconnect(format!("{:?}", d.reason_code))
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => LoopEvent::PublishSent(pkid),
            _ => LoopEvent::Other,
        })
    }
}

fn v311_error(e: rumqttc::ConnectionError) -> DriverError {
    use rumqttc::{ConnectionError as E, StateError};
    match e {
        E::Io(io) | E::MqttState(StateError::Io(io)) => io_error(io),
        E::NetworkTimeout | E::FlushTimeout => DriverError::new(ErrorKind::Timeout, e.to_string()),
        E::ConnectionRefused(code) => DriverError::new(
            ErrorKind::Rejected,
            format!("broker refused the connection: {code:?}"),
        ),
        E::MqttState(StateError::ConnectionAborted) => {
            DriverError::new(ErrorKind::ConnectionLost, "connection closed by the broker")
        }
        other => DriverError::new(ErrorKind::Protocol, other.to_string()),
    }
}

fn v5_error(e: rumqttc::v5::ConnectionError) -> DriverError {
    use rumqttc::v5::{ConnectionError as E, StateError};
    match e {
        E::Io(io) | E::MqttState(StateError::Io(io)) => io_error(io),
        E::Timeout(_) => DriverError::new(ErrorKind::Timeout, "timed out"),
        E::ConnectionRefused(code) => DriverError::new(
            ErrorKind::Rejected,
            format!("broker refused the connection: {code:?}"),
        ),
        E::MqttState(StateError::ConnectionAborted) => {
            DriverError::new(ErrorKind::ConnectionLost, "connection closed by the broker")
        }
        other => DriverError::new(ErrorKind::Protocol, other.to_string()),
    }
}

#[derive(Clone)]
enum ClientHandle {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

fn client_error(e: impl std::fmt::Display) -> DriverError {
    DriverError::new(
        ErrorKind::ConnectionLost,
        format!("client library stopped: {e}"),
    )
}

impl ClientHandle {
    async fn publish(&self, topic: &str, qos: u8, payload: Bytes) -> Result<(), DriverError> {
        match self {
            ClientHandle::V311(c) => c
                .publish_bytes(topic, v311_qos(qos), false, payload)
                .await
                .map_err(client_error),
            ClientHandle::V5(c) => c
                .publish_bytes(topic, v5_qos(qos), false, payload)
                .await
                .map_err(client_error),
        }
    }

    async fn subscribe(&self, filter: &str, qos: u8) -> Result<(), DriverError> {
        match self {
            ClientHandle::V311(c) => c
                .subscribe(filter, v311_qos(qos))
                .await
                .map_err(client_error),
            ClientHandle::V5(c) => c.subscribe(filter, v5_qos(qos)).await.map_err(client_error),
        }
    }

    fn try_disconnect(&self) {
        // A full request queue or a stopped loop: the task is aborted instead.
        let _ = match self {
            ClientHandle::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            ClientHandle::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

fn v311_qos(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn v5_qos(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Polls the event loop until the connection ends; never reconnects.
fn spawn_io<L: MqttLoop>(
    mut eventloop: L,
    mut events: Box<dyn ClientEvents>,
    acks: Option<Arc<AckTracker>>,
    closing: Arc<AtomicBool>,
    describe: String,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let lost = loop {
            match eventloop.next_event().await {
                Ok(LoopEvent::Publish(payload)) => events.delivered(&payload, Instant::now()),
                Ok(LoopEvent::PublishSent(pkid)) => {
                    if let Some(acks) = &acks {
                        acks.sent(pkid);
                    }
                }
                Ok(LoopEvent::PublishAcked(pkid)) => {
                    if let Some(token) = acks.as_ref().and_then(|a| a.acked(pkid)) {
                        events.acked(token, Instant::now());
                    }
                }
                Ok(LoopEvent::Disconnect(reason)) => {
                    break DriverError::new(
                        ErrorKind::ConnectionLost,
                        format!("broker sent DISCONNECT {reason}")
                            .trim_end()
                            .to_string(),
                    )
                }
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        if !closing.load(Ordering::Acquire) {
            let lost = if lost.kind() == ErrorKind::Io || lost.kind() == ErrorKind::Protocol {
                lost
            } else {
                DriverError::new(ErrorKind::ConnectionLost, lost.message())
            };
            events.connection_lost(lost.context(format!("{describe} lost its connection")));
        }
    })
}

/// Aborts the I/O task when the handle goes away without `close`.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    async fn finish(&mut self) {
        if let Some(mut task) = self.0.take() {
            if tokio::time::timeout(CLOSE_TIMEOUT, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

struct LibraryClient {
    handle: ClientHandle,
    task: AbortOnDrop,
    closing: Arc<AtomicBool>,
}

impl LibraryClient {
    async fn close(mut self) {
        self.closing.store(true, Ordering::Release);
        self.handle.try_disconnect();
        self.task.finish().await;
    }
}

pub struct MqttPublisher {
    inner: LibraryClient,
    topic: String,
    qos: u8,
    acks: Option<Arc<AckTracker>>,
}

impl Connection for MqttPublisher {
    async fn close(self) {
        self.inner.close().await
    }
}

impl Publisher for MqttPublisher {
    async fn publish(&mut self, token: u64, payload: Bytes) -> Result<(), DriverError> {
        if let Some(acks) = &self.acks {
            acks.queued(token);
        }
        self.inner
            .handle
            .publish(&self.topic, self.qos, payload)
            .await
    }
}

pub struct MqttSubscriber {
    inner: LibraryClient,
}

impl Connection for MqttSubscriber {
    async fn close(self) {
        self.inner.close().await
    }
}

/// An idle client: its own socket, pinging the broker every keep-alive interval.
pub struct IdleClient {
    task: AbortOnDrop,
    closing: Arc<AtomicBool>,
}

impl Connection for IdleClient {
    async fn close(mut self) {
        // Dropping the socket is enough: the broker sees the client go away.
        self.closing.store(true, Ordering::Release);
        if let Some(task) = self.task.0.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn idle_keepalive(
    mut stream: TcpStream,
    mut buf: BytesMut,
    version: MqttVersion,
    keep_alive: Duration,
    closing: &AtomicBool,
) -> Result<(), DriverError> {
    let ping = idle_codec::ping(version);
    let period = if keep_alive.is_zero() {
        Duration::from_secs(3600)
    } else {
        keep_alive
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if !keep_alive.is_zero() {
                    stream.write_all(&ping).await.map_err(io_error)?;
                }
            }
            read = stream.read_buf(&mut buf) => {
                if read.map_err(io_error)? == 0 {
                    if closing.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    return Err(DriverError::new(ErrorKind::ConnectionLost, "connection closed by the broker"));
                }
                while let Some(packet) = idle_codec::read(version, &mut buf)? {
                    if let IdlePacket::Disconnect(reason) = packet {
                        return Err(DriverError::new(
                            ErrorKind::ConnectionLost,
                            format!("broker sent DISCONNECT {reason}").trim_end().to_string(),
                        ));
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
enum IdlePacket {
    ConnAck(Result<(), String>),
    PingResp,
    Disconnect(String),
    Other,
}

/// CONNECT, PINGREQ and what an idle client may receive, via rumqttc's codec.
mod idle_codec {
    use super::*;

    const MAX_PACKET: usize = 64 * 1024;

    pub fn connect(
        version: MqttVersion,
        client_id: &str,
        keep_alive: Duration,
        clean: bool,
    ) -> BytesMut {
        let keep_alive = u16::try_from(keep_alive.as_secs()).unwrap_or(u16::MAX);
        let mut buf = BytesMut::with_capacity(64);
        match version {
            MqttVersion::V311 => {
                let mut connect = rumqttc::mqttbytes::v4::Connect::new(client_id);
                connect.keep_alive = keep_alive;
                connect.clean_session = clean;
                connect.write(&mut buf).expect("CONNECT encodes");
            }
            MqttVersion::V5 => {
                use rumqttc::v5::mqttbytes::v5::{Connect, Packet};
                let connect = Connect {
                    keep_alive,
                    client_id: client_id.to_string(),
                    clean_start: clean,
                    properties: None,
                };
                Packet::Connect(connect, None, None)
                    .write(&mut buf, None)
                    .expect("CONNECT encodes");
            }
        }
        buf
    }

    pub fn ping(version: MqttVersion) -> BytesMut {
        let mut buf = BytesMut::with_capacity(2);
        match version {
            MqttVersion::V311 => {
                rumqttc::mqttbytes::v4::PingReq
                    .write(&mut buf)
                    .expect("PINGREQ encodes");
            }
            MqttVersion::V5 => {
                rumqttc::v5::mqttbytes::v5::PingReq::write(&mut buf).expect("PINGREQ encodes");
            }
        }
        buf
    }

    /// The next whole packet in `buf`, `None` if more bytes are needed.
    pub fn read(
        version: MqttVersion,
        buf: &mut BytesMut,
    ) -> Result<Option<IdlePacket>, DriverError> {
        let protocol = |e: &dyn std::fmt::Display| {
            DriverError::new(
                ErrorKind::Protocol,
                format!("malformed packet from the broker: {e}"),
            )
        };
        match version {
            MqttVersion::V311 => {
                use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
                use rumqttc::mqttbytes::Error;
                match Packet::read(buf, MAX_PACKET) {
                    Ok(Packet::ConnAck(ack)) => Ok(Some(IdlePacket::ConnAck(match ack.code {
                        ConnectReturnCode::Success => Ok(()),
                        code => Err(format!("{code:?}")),
                    }))),
                    Ok(Packet::PingResp) => Ok(Some(IdlePacket::PingResp)),
                    Ok(Packet::Disconnect) => Ok(Some(IdlePacket::Disconnect(String::new()))),
                    Ok(_) => Ok(Some(IdlePacket::Other)),
                    Err(Error::InsufficientBytes(_)) => Ok(None),
                    Err(e) => Err(protocol(&e)),
                }
            }
            MqttVersion::V5 => {
                use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
                use rumqttc::v5::mqttbytes::Error;
                match Packet::read(buf, Some(MAX_PACKET as u32)) {
                    Ok(Packet::ConnAck(ack)) => Ok(Some(IdlePacket::ConnAck(match ack.code {
                        ConnectReturnCode::Success => Ok(()),
                        code => Err(format!("{code:?}")),
                    }))),
                    Ok(Packet::PingResp(_)) => Ok(Some(IdlePacket::PingResp)),
                    Ok(Packet::Disconnect(d)) => {
                        Ok(Some(IdlePacket::Disconnect(format!("{:?}", d.reason_code))))
                    }
                    Ok(_) => Ok(Some(IdlePacket::Other)),
                    Err(Error::InsufficientBytes(_)) => Ok(None),
                    Err(e) => Err(protocol(&e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        assert!(filter_matches("bench/#", "bench/fanin/3"));
        assert!(
            filter_matches("bench/#", "bench"),
            "# matches the parent level too"
        );
        assert!(filter_matches("bench/+/3", "bench/fanin/3"));
        assert!(!filter_matches("bench/+", "bench/fanin/3"));
        assert!(filter_matches("bench/fanout", "bench/fanout"));
        assert!(!filter_matches("bench/fanout", "bench/fanout/x"));
        assert!(!filter_matches("bench/fanout/x", "bench/fanout"));
        assert!(filter_matches("#", "a/b/c"));
        assert!(!filter_matches("#", "$SYS/x"), "wildcards skip $ topics");
        assert!(!filter_matches("+/x", "$SYS/x"));
        assert!(filter_matches("$SYS/#", "$SYS/x"));
        assert!(filter_matches("+/+", "/x"), "empty levels are levels");
        assert!(filter_matches("$share/g/bench/#", "bench/1"));
        assert!(!filter_matches("$share/g", "bench/1"));
    }

    #[test]
    fn targets_split_into_host_and_port() {
        assert_eq!(
            split_host_port("127.0.0.1:1883").unwrap(),
            ("127.0.0.1".to_string(), 1883)
        );
        assert_eq!(
            split_host_port("[::1]:1883").unwrap(),
            ("::1".to_string(), 1883)
        );
        assert!(split_host_port("localhost").is_err());
        assert!(split_host_port(":1883").is_err());
        assert!(split_host_port("h:99999").is_err());
    }

    #[test]
    fn acks_are_attributed_in_queue_order() {
        let acks = AckTracker::default();
        acks.queued(10);
        acks.queued(11);
        acks.queued(12);
        acks.sent(1);
        acks.sent(2);
        assert_eq!(acks.acked(2), Some(11));
        acks.sent(3);
        assert_eq!(acks.acked(1), Some(10));
        assert_eq!(acks.acked(1), None, "acked once");
        assert_eq!(acks.acked(3), Some(12));
        assert_eq!(acks.acked(500), None);
    }

    #[test]
    fn idle_codec_round_trips_connect_and_connack() {
        for version in [MqttVersion::V311, MqttVersion::V5] {
            let connect = idle_codec::connect(version, "lg-idle-0", Duration::from_secs(60), true);
            assert_eq!(connect[0], 0x10, "CONNECT packet type");
            assert_eq!(idle_codec::ping(version).as_ref(), &[0xC0, 0x00]);
            let mut partial = BytesMut::from(&[0x20u8][..]);
            assert!(idle_codec::read(version, &mut partial).unwrap().is_none());
        }
        let mut v311_connack = BytesMut::from(&[0x20u8, 0x02, 0x00, 0x00, 0xD0, 0x00][..]);
        assert!(matches!(
            idle_codec::read(MqttVersion::V311, &mut v311_connack).unwrap(),
            Some(IdlePacket::ConnAck(Ok(())))
        ));
        assert!(matches!(
            idle_codec::read(MqttVersion::V311, &mut v311_connack).unwrap(),
            Some(IdlePacket::PingResp)
        ));
        let mut refused = BytesMut::from(&[0x20u8, 0x02, 0x00, 0x05][..]);
        assert!(matches!(
            idle_codec::read(MqttVersion::V311, &mut refused).unwrap(),
            Some(IdlePacket::ConnAck(Err(_)))
        ));
    }
}
