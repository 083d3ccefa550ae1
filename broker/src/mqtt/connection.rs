//! One MQTT connection: the CONNECT handshake, then a loop that reads
//! packets, answers them, and writes what the session has queued.
//!
//! Malformed or forbidden input ends only this connection: a 5.0 client is
//! told why with a DISCONNECT reason code (3.1.1 has none: the connection is
//! closed), the error is counted, and every other client carries on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{oneshot, watch};
use tokio::time::timeout;

use super::codec::{self, DecodeError};
use super::hub::{Departure, MqttHub};
use super::packet::{
    reason, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, ProtocolVersion,
    PubResponse, Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use super::session::{Delivery, Kick, OutFlight, OutState, Session, NEVER_EXPIRES};
use super::transport::Transport;
use crate::config::Limits;
use crate::core::io::{farewell, write_within, WRITE_TIMEOUT};
use crate::core::topic::{parse_filter, valid_topic_name};
use crate::core::{ClientId, Message, MessageProperties};
use crate::metrics::{Protocol, ProtocolCounters};

/// Packets handled in a row before a connection task lets others run.
const YIELD_EVERY_PACKETS: u32 = 64;

/// How a connection ended, which decides what happens to the will and session.
enum Exit {
    /// DISCONNECT with reason 0: the will is discarded.
    Normal,
    /// Network error, protocol error, keep-alive timeout, or 5.0 DISCONNECT 0x04.
    WithWill,
    /// Another connection took over the client id.
    TakenOver(Kick),
    /// The broker is shutting down (wills are sent).
    Shutdown,
}

/// Serves one client from its first byte to its last.
pub async fn serve<T: Transport>(
    mut io: T,
    hub: Arc<MqttHub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = hub.limits;
    let mut buf = BytesMut::new();
    let connect_timeout = Duration::from_secs(hub.config.connect_timeout_secs);
    let first = tokio::select! {
        r = timeout(connect_timeout, read_connect(&mut io, &mut buf, limits)) => r,
        _ = shutdown.changed() => return,
    };
    let mut connect = match first {
        Ok(Ok(connect)) => connect,
        Ok(Err(e)) => {
            tracing::debug!("closing before CONNECT: {e:?}");
            hub.metrics.protocol_error(Protocol::Mqtt, e.kind());
            if let FirstPacketError::Decode(DecodeError::UnsupportedProtocolVersion(level)) = e {
                tracing::debug!("refusing CONNECT with protocol level {level}");
                // Answered in the 3.1.1 format, which every client level can read.
                let mut out = BytesMut::new();
                let ack = Packet::ConnAck(ConnAck {
                    session_present: false,
                    code: reason::v3::UNACCEPTABLE_PROTOCOL_VERSION,
                    properties: Properties::default(),
                });
                codec::encode(&ack, ProtocolVersion::V311, &mut out);
                let _ = timeout(WRITE_TIMEOUT, io.write_all(&out)).await;
            }
            io.close().await;
            return;
        }
        Err(_) => {
            hub.metrics
                .protocol_error(Protocol::Mqtt, "connect_timeout");
            io.close().await;
            return;
        }
    };
    let version = connect.protocol;
    let refuse = |code_v5: u8, code_v3: u8| {
        let code = if version.is_v5() { code_v5 } else { code_v3 };
        Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: Properties::default(),
        })
    };
    let verdict = check_connect(&hub, &connect);
    let permit = match verdict {
        Ok(()) => hub
            .connection_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                hub.metrics
                    .connection_refused(Protocol::Mqtt, "max_connections");
                refuse(reason::QUOTA_EXCEEDED, reason::v3::SERVER_UNAVAILABLE)
            }),
        Err((v5, v3, kind)) => {
            hub.metrics.connection_refused(Protocol::Mqtt, kind);
            Err(refuse(v5, v3))
        }
    };
    let permit = match permit {
        Ok(p) => p,
        Err(ack) => {
            let mut out = BytesMut::new();
            codec::encode(&ack, version, &mut out);
            let _ = timeout(WRITE_TIMEOUT, io.write_all(&out)).await;
            io.close().await;
            return;
        }
    };

    let assigned_id = connect.client_id.is_empty().then(|| assign_client_id(&hub));
    let client_id: ClientId = assigned_id
        .clone()
        .unwrap_or_else(|| connect.client_id.clone())
        .into();
    let requested_expiry = if version.is_v5() {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        NEVER_EXPIRES
    };
    // The cap is a 5.0 notion (announced in CONNACK); 3.1.1 persistent sessions never expire.
    let expiry = if version.is_v5() {
        requested_expiry.min(hub.config.max_session_expiry_secs)
    } else {
        requested_expiry
    };
    let attached = hub
        .attach(&client_id, version, connect.clean_start, expiry)
        .await;

    let mut ack_props = Properties::default();
    if version.is_v5() {
        ack_props.assigned_client_identifier = assigned_id;
        ack_props.receive_maximum = Some(limits.max_inflight);
        ack_props.topic_alias_maximum = Some(hub.config.topic_alias_maximum).filter(|&n| n > 0);
        ack_props.maximum_packet_size =
            Some(u32::try_from(limits.max_packet_size).unwrap_or(u32::MAX));
        ack_props.retain_available = (!hub.config.retain_available).then_some(0);
        ack_props.maximum_qos = (hub.config.max_qos < 2).then_some(hub.config.max_qos);
        ack_props.session_expiry_interval = (expiry != requested_expiry).then_some(expiry);
    }
    let client_props = &connect.properties;
    let mut conn = Connection {
        hub: hub.clone(),
        version,
        session: attached.session,
        connection_id: attached.connection_id,
        client_id,
        out: BytesMut::new(),
        counters: hub.metrics.counters(Protocol::Mqtt),
        send_window: usize::from(
            client_props
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(limits.max_inflight),
        ),
        client_max_packet: client_props
            .maximum_packet_size
            .map_or(usize::MAX, |n| n as usize),
        incoming_aliases: HashMap::new(),
        outgoing_aliases: HashMap::new(),
        outgoing_alias_limit: client_props
            .topic_alias_maximum
            .unwrap_or(0)
            .min(hub.config.outgoing_topic_aliases),
        will: connect.will.take(),
        connect_expiry: expiry,
        paused_on: Vec::new(),
    };
    conn.send(Packet::ConnAck(ConnAck {
        session_present: attached.session_present,
        code: reason::SUCCESS,
        properties: ack_props,
    }));
    hub.metrics.connection_opened(Protocol::Mqtt);
    tracing::debug!(client = %conn.client_id, ?version, "connected");
    conn.drain_queue();

    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    // Not needed past the handshake; dropping it keeps it out of the
    // long-lived connection future (memory per idle connection).
    drop(connect);
    if buf.is_empty() {
        buf = BytesMut::new();
    }
    let exit = conn
        .run(&mut io, buf, keep_alive, attached.kicked, &mut shutdown)
        .await;

    let (will, departure, kick) = match exit {
        Exit::Normal => (None, Departure::Normal, None),
        Exit::WithWill => (conn.will.take(), Departure::Abnormal, None),
        Exit::Shutdown => (conn.will.take(), Departure::Shutdown, None),
        Exit::TakenOver(kick) => (
            conn.will.take(),
            Departure::TakenOver {
                resumed: kick.resumed,
            },
            Some(kick),
        ),
    };
    hub.detach(&conn.session, conn.connection_id, will, departure);
    if let Some(kick) = kick {
        let _ = kick.done.send(());
    }
    io.close().await;
    hub.metrics.connection_closed(Protocol::Mqtt);
    drop(permit);
    tracing::debug!(client = %conn.client_id, "disconnected");
}

/// Resolves when `session` signals room in its queue, or after a short
/// interval: `notify_waiters` keeps no permit, so the caller re-checks.
async fn wait_for_space(session: Option<Arc<Session>>) {
    if let Some(session) = session {
        let _ = timeout(Duration::from_millis(50), session.space.notified()).await;
    }
}

#[derive(Debug)]
enum FirstPacketError {
    Decode(DecodeError),
    NotConnect,
    Closed,
}

impl FirstPacketError {
    fn kind(&self) -> &'static str {
        match self {
            FirstPacketError::Decode(e) => decode_error_kind(e),
            FirstPacketError::NotConnect => "packet_before_connect",
            FirstPacketError::Closed => "closed_before_connect",
        }
    }
}

async fn read_connect<T: Transport>(
    io: &mut T,
    buf: &mut BytesMut,
    limits: Limits,
) -> Result<Connect, FirstPacketError> {
    loop {
        match codec::decode(buf, ProtocolVersion::V311, limits.max_packet_size) {
            Ok(Some(Packet::Connect(c))) => return Ok(*c),
            Ok(Some(_)) => return Err(FirstPacketError::NotConnect),
            Ok(None) => {}
            Err(e) => return Err(FirstPacketError::Decode(e)),
        }
        // CONNECT is small: a small first read keeps the per-connection
        // allocations of idle clients small (and the heap less fragmented).
        match io.read_into(buf, 512.min(limits.read_buffer_size)).await {
            Ok(0) | Err(_) => return Err(FirstPacketError::Closed),
            Ok(_) => {}
        }
    }
}

fn decode_error_kind(e: &DecodeError) -> &'static str {
    match e.reason_code() {
        reason::PACKET_TOO_LARGE => "packet_too_large",
        reason::PROTOCOL_ERROR => "protocol_error",
        reason::UNSUPPORTED_PROTOCOL_VERSION => "unsupported_protocol_version",
        _ => "malformed_packet",
    }
}

/// Checks a CONNECT before any session is touched: client id, credentials, will.
/// The error carries the 5.0 reason code, the 3.1.1 return code and a metrics label.
fn check_connect(hub: &MqttHub, c: &Connect) -> Result<(), (u8, u8, &'static str)> {
    let id_rejected = (
        reason::CLIENT_IDENTIFIER_NOT_VALID,
        reason::v3::IDENTIFIER_REJECTED,
        "identifier_rejected",
    );
    match c.protocol {
        // 3.1.1 [MQTT-3.1.3-8]: an empty id requires a clean session.
        ProtocolVersion::V311 if c.client_id.is_empty() && !c.clean_start => {
            return Err(id_rejected)
        }
        // 3.1 allowed 1 to 23 characters only.
        ProtocolVersion::V31 if c.client_id.is_empty() || c.client_id.len() > 23 => {
            return Err(id_rejected)
        }
        _ => {}
    }
    let cfg = &hub.config;
    let not_authorized = (
        reason::NOT_AUTHORIZED,
        reason::v3::NOT_AUTHORIZED,
        "not_authorized",
    );
    match &c.username {
        None if !cfg.allow_anonymous => return Err(not_authorized),
        Some(_) if cfg.users.is_empty() && !cfg.allow_anonymous => return Err(not_authorized),
        Some(user) if !cfg.users.is_empty() => {
            let ok = cfg
                .users
                .get(user)
                .is_some_and(|p| c.password.as_deref() == Some(p.as_bytes()));
            if !ok {
                return Err((
                    reason::BAD_USER_NAME_OR_PASSWORD,
                    reason::v3::BAD_USER_NAME_OR_PASSWORD,
                    "bad_credentials",
                ));
            }
        }
        _ => {}
    }
    if let Some(will) = &c.will {
        if !valid_topic_name(&will.topic) {
            return Err((
                reason::TOPIC_NAME_INVALID,
                reason::v3::SERVER_UNAVAILABLE,
                "will_topic_invalid",
            ));
        }
        if !hub.qos_allowed(will.qos) {
            return Err((
                reason::QOS_NOT_SUPPORTED,
                reason::v3::SERVER_UNAVAILABLE,
                "will_qos_not_supported",
            ));
        }
        if will.retain && !cfg.retain_available {
            return Err((
                reason::RETAIN_NOT_SUPPORTED,
                reason::v3::SERVER_UNAVAILABLE,
                "will_retain_not_supported",
            ));
        }
    }
    Ok(())
}

fn assign_client_id(hub: &MqttHub) -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per process; mixed with time and a counter it is unique enough.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_usize(hub.session_count());
    format!("auto-{:016x}", h.finish())
}

struct Connection {
    hub: Arc<MqttHub>,
    version: ProtocolVersion,
    session: Arc<Session>,
    connection_id: u64,
    client_id: ClientId,
    /// Encoded packets waiting to be written.
    out: BytesMut,
    counters: ProtocolCounters,
    /// QoS 1/2 messages we may have in flight to the client.
    send_window: usize,
    /// The client's Maximum Packet Size (5.0); larger messages are not sent to it.
    client_max_packet: usize,
    incoming_aliases: HashMap<u16, Arc<str>>,
    outgoing_aliases: HashMap<Arc<str>, u16>,
    outgoing_alias_limit: u16,
    will: Option<LastWill>,
    /// Session expiry granted at CONNECT (5.0 forbids raising it from 0 at DISCONNECT).
    connect_expiry: u32,
    /// Live sessions whose queue this client's messages filled: reading from
    /// this client pauses until they have room again (flow control).
    paused_on: Vec<Arc<Session>>,
}

/// Ends the connection after telling a 5.0 client why.
struct Fail {
    reason: u8,
    kind: &'static str,
}

impl Connection {
    async fn run<T: Transport>(
        &mut self,
        io: &mut T,
        mut buf: BytesMut,
        keep_alive: Option<Duration>,
        mut kicked: oneshot::Receiver<Kick>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Exit {
        let far_future = Instant::now() + Duration::from_secs(86_400 * 365);
        let deadline = |now: Instant| keep_alive.map_or(far_future, |ka| now + ka);
        let keep_alive_timer = tokio::time::sleep_until(deadline(Instant::now()).into());
        tokio::pin!(keep_alive_timer);
        let mut kick_open = true;
        let mut handled: u32 = 0;
        loop {
            if !self.out.is_empty() {
                let n = self.out.len();
                let written = write_within(io.write_all(&self.out), n, &self.counters.bytes_sent);
                if written.await.is_err() {
                    return Exit::WithWill;
                }
                if self.out.capacity() > self.hub.limits.read_buffer_size {
                    self.out = BytesMut::new();
                } else {
                    self.out.clear();
                }
            }
            let paused_on = self.paused_on.first().cloned();
            tokio::select! {
                _ = shutdown.changed() => {
                    self.disconnect_v5(reason::SERVER_SHUTTING_DOWN);
                    farewell(io.write_all(&self.out)).await;
                    return Exit::Shutdown;
                }
                kick = &mut kicked, if kick_open => match kick {
                    Ok(kick) => {
                        self.disconnect_v5(reason::SESSION_TAKEN_OVER);
                        farewell(io.write_all(&self.out)).await;
                        return Exit::TakenOver(kick);
                    }
                    Err(_) => kick_open = false,
                },
                _ = &mut keep_alive_timer => {
                    self.hub.metrics.protocol_error(Protocol::Mqtt, "keep_alive_timeout");
                    self.disconnect_v5(reason::KEEP_ALIVE_TIMEOUT);
                    farewell(io.write_all(&self.out)).await;
                    return Exit::WithWill;
                }
                _ = wait_for_space(paused_on.clone()), if paused_on.is_some() => {
                    self.paused_on.retain(|s| s.is_connected() && s.is_full());
                    // Not reading is our doing, not the client's silence.
                    keep_alive_timer.as_mut().reset(deadline(Instant::now()).into());
                    if self.paused_on.is_empty() {
                        // Packets already read while paused are handled before reading more.
                        if let Some(exit) = self.process_buffered(io, &mut buf, &mut handled).await {
                            return exit;
                        }
                        self.drain_queue();
                    }
                }
                read = io.read_into(&mut buf, self.hub.limits.read_buffer_size), if paused_on.is_none() => {
                    let n = match read {
                        Ok(0) | Err(_) => return Exit::WithWill,
                        Ok(n) => n,
                    };
                    self.counters.bytes_received.inc_by(n as u64);
                    keep_alive_timer.as_mut().reset(deadline(Instant::now()).into());
                    if let Some(exit) = self.process_buffered(io, &mut buf, &mut handled).await {
                        return exit;
                    }
                    if buf.is_empty() {
                        // Give the read buffer back while the client is quiet: idle
                        // connections then cost a few hundred bytes, not a buffer each.
                        buf = BytesMut::new();
                    }
                    self.drain_queue();
                }
                _ = self.session.notify.notified() => self.drain_queue(),
            }
        }
    }

    /// Decodes and handles the whole packets in `buf`, stopping early when a
    /// subscriber's full queue pauses this publisher (the rest stays buffered).
    async fn process_buffered<T: Transport>(
        &mut self,
        io: &mut T,
        buf: &mut BytesMut,
        handled: &mut u32,
    ) -> Option<Exit> {
        while self.paused_on.is_empty() {
            let packet = match codec::decode(buf, self.version, self.hub.limits.max_packet_size) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(client = %self.client_id, "bad packet: {e}");
                    return Some(
                        self.fail(
                            io,
                            Fail {
                                reason: e.reason_code(),
                                kind: decode_error_kind(&e),
                            },
                        )
                        .await,
                    );
                }
            };
            match self.handle(packet) {
                Ok(None) => {}
                Ok(Some(exit)) => return Some(exit),
                Err(fail) => return Some(self.fail(io, fail).await),
            }
            // A client flooding the broker must not keep the subscribers'
            // tasks from running: readiness-based reads never yield while data
            // is there. Yield every few packets (not via the coop budget: tasks
            // this one woke run from the same worker's LIFO slot on the
            // *remaining* budget, and were starved for seconds when it was spent).
            *handled = handled.wrapping_add(1);
            if *handled % YIELD_EVERY_PACKETS == 0 {
                tokio::task::yield_now().await;
            }
        }
        None
    }

    async fn fail<T: Transport>(&mut self, io: &mut T, fail: Fail) -> Exit {
        self.hub.metrics.protocol_error(Protocol::Mqtt, fail.kind);
        self.disconnect_v5(fail.reason);
        farewell(io.write_all(&self.out)).await;
        self.out.clear();
        Exit::WithWill
    }

    /// Queues a server DISCONNECT; 3.1.1 has no such packet, so nothing is sent there.
    fn disconnect_v5(&mut self, reason: u8) {
        if self.version.is_v5() {
            self.send(Packet::Disconnect(Disconnect {
                reason,
                properties: Properties::default(),
            }));
        }
    }

    fn send(&mut self, packet: Packet) -> usize {
        codec::encode(&packet, self.version, &mut self.out)
    }

    /// Handles one packet; `Ok(Some(exit))` ends the connection normally.
    fn handle(&mut self, packet: Packet) -> Result<Option<Exit>, Fail> {
        let protocol_error = |kind| Fail {
            reason: reason::PROTOCOL_ERROR,
            kind,
        };
        match packet {
            Packet::Publish(p) => self.on_publish(p)?,
            Packet::PubAck(ack) => self.on_ack(ack.packet_id, OutState::AwaitPubAck, ack.reason),
            Packet::PubRec(rec) => self.on_pubrec(rec),
            Packet::PubComp(comp) => {
                self.on_ack(comp.packet_id, OutState::AwaitPubComp, comp.reason)
            }
            Packet::PubRel(rel) => {
                let known = self.session.lock().incoming_qos2.remove(&rel.packet_id);
                let mut comp = PubResponse::new(rel.packet_id);
                if !known {
                    comp.reason = reason::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.send(Packet::PubComp(comp));
            }
            Packet::Subscribe(s) => self.on_subscribe(s)?,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => {
                self.send(Packet::PingResp);
            }
            Packet::Disconnect(d) => {
                if let Some(expiry) = d.properties.session_expiry_interval {
                    if self.connect_expiry == 0 && expiry != 0 {
                        return Err(protocol_error("session_expiry_raised_from_zero"));
                    }
                    self.session.lock().expiry_secs =
                        expiry.min(self.hub.config.max_session_expiry_secs);
                }
                let with_will = self.version.is_v5() && d.reason == reason::DISCONNECT_WITH_WILL;
                return Ok(Some(if with_will {
                    Exit::WithWill
                } else {
                    Exit::Normal
                }));
            }
            Packet::Connect(_) => return Err(protocol_error("second_connect")),
            Packet::Auth(_) => return Err(protocol_error("auth_without_method")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(protocol_error("server_packet_from_client"))
            }
        }
        Ok(None)
    }

    fn on_publish(&mut self, p: Publish) -> Result<(), Fail> {
        let fail = |reason, kind| Fail { reason, kind };
        let topic: Arc<str> = match p.properties.topic_alias.filter(|_| self.version.is_v5()) {
            Some(alias) => {
                if alias == 0 || alias > self.hub.config.topic_alias_maximum {
                    return Err(fail(reason::TOPIC_ALIAS_INVALID, "topic_alias_invalid"));
                }
                if p.topic.is_empty() {
                    match self.incoming_aliases.get(&alias) {
                        Some(t) => t.clone(),
                        None => return Err(fail(reason::PROTOCOL_ERROR, "topic_alias_unknown")),
                    }
                } else {
                    let t: Arc<str> = p.topic.as_str().into();
                    self.incoming_aliases.insert(alias, t.clone());
                    t
                }
            }
            None => p.topic.as_str().into(),
        };
        if topic.is_empty() {
            // 5.0 3.3.2.1: a zero-length topic without an alias is a protocol error.
            return Err(fail(reason::PROTOCOL_ERROR, "topic_name_empty"));
        }
        if !valid_topic_name(&topic) {
            return Err(fail(reason::TOPIC_NAME_INVALID, "topic_name_invalid"));
        }
        if !p.properties.subscription_identifiers.is_empty() {
            // 5.0 3.3.4: only the server puts subscription identifiers in a PUBLISH.
            return Err(fail(
                reason::PROTOCOL_ERROR,
                "subscription_identifier_from_client",
            ));
        }
        if !self.hub.qos_allowed(p.qos) {
            return Err(fail(reason::QOS_NOT_SUPPORTED, "qos_not_supported"));
        }
        if p.retain && !self.hub.config.retain_available {
            return Err(fail(reason::RETAIN_NOT_SUPPORTED, "retain_not_supported"));
        }
        let props = p.properties;
        let bad_payload = props.payload_format_indicator == Some(1)
            && crate::accel::utf8::validate(&p.payload).is_none();
        if p.qos == QoS::ExactlyOnce {
            let mut st = self.session.lock();
            if st.incoming_qos2.contains(&p.packet_id) {
                // A retransmission (DUP) of a message already routed: acknowledge, don't route again.
                drop(st);
                self.send(Packet::PubRec(PubResponse::new(p.packet_id)));
                return Ok(());
            }
            // Only 5.0 clients were told a Receive Maximum; for 3.1.1 the 16-bit
            // packet id space bounds this set.
            if self.version.is_v5()
                && st.incoming_qos2.len() >= usize::from(self.hub.limits.max_inflight)
            {
                return Err(fail(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    "receive_maximum_exceeded",
                ));
            }
            if !bad_payload {
                st.incoming_qos2.insert(p.packet_id);
            }
        }
        if bad_payload {
            self.hub
                .metrics
                .protocol_error(Protocol::Mqtt, "payload_format_invalid");
            let mut ack = PubResponse::new(p.packet_id);
            ack.reason = reason::PAYLOAD_FORMAT_INVALID;
            match p.qos {
                QoS::AtMostOnce => {
                    return Err(fail(
                        reason::PAYLOAD_FORMAT_INVALID,
                        "payload_format_invalid",
                    ))
                }
                QoS::AtLeastOnce => self.send(Packet::PubAck(ack)),
                QoS::ExactlyOnce => self.send(Packet::PubRec(ack)),
            };
            return Ok(());
        }
        self.counters.messages_received.inc();
        let now = Instant::now();
        let full = self.hub.publish(Message {
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: MessageProperties {
                payload_format_indicator: props.payload_format_indicator,
                content_type: props.content_type,
                response_topic: props.response_topic,
                correlation_data: props.correlation_data,
                user_properties: props.user_properties,
            },
            publisher: Some(self.client_id.clone()),
            expires_at: Message::expiry_from_interval(now, props.message_expiry_interval),
        });
        for session in full {
            // Pausing on our own queue would only wait for ourselves.
            let known = Arc::ptr_eq(&session, &self.session)
                || self.paused_on.iter().any(|s| Arc::ptr_eq(s, &session));
            if !known {
                self.paused_on.push(session);
            }
        }
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.send(Packet::PubAck(PubResponse::new(p.packet_id)));
            }
            QoS::ExactlyOnce => {
                self.send(Packet::PubRec(PubResponse::new(p.packet_id)));
            }
        }
        Ok(())
    }

    /// PUBACK or PUBCOMP: the message leaves the in-flight window.
    fn on_ack(&mut self, packet_id: u16, expected: OutState, _reason: u8) {
        let mut st = self.session.lock();
        if let Some(pos) = st
            .inflight
            .iter()
            .position(|f| f.packet_id == packet_id && f.state == expected)
        {
            st.inflight.remove(pos);
        }
    }

    fn on_pubrec(&mut self, rec: PubResponse) {
        let found = {
            let mut st = self.session.lock();
            match st
                .inflight
                .iter()
                .position(|f| f.packet_id == rec.packet_id && f.state != OutState::AwaitPubAck)
            {
                // A 5.0 failure reason ends the exchange: no PUBREL.
                Some(pos) if rec.reason >= 0x80 => {
                    st.inflight.remove(pos);
                    return;
                }
                Some(pos) => {
                    st.inflight[pos].state = OutState::AwaitPubComp;
                    true
                }
                None => false,
            }
        };
        let mut rel = PubResponse::new(rec.packet_id);
        if !found && self.version.is_v5() {
            rel.reason = reason::PACKET_IDENTIFIER_NOT_FOUND;
        }
        self.send(Packet::PubRel(rel));
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Fail> {
        let identifier = s.properties.subscription_identifiers.first().copied();
        let max_qos = QoS::from_u8(self.hub.config.max_qos).unwrap_or(QoS::ExactlyOnce);
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for (filter, mut options) in s.filters {
            let Some(spec) = parse_filter(&filter) else {
                self.hub
                    .metrics
                    .protocol_error(Protocol::Mqtt, "topic_filter_invalid");
                codes.push(if self.version.is_v5() {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    reason::v3::SUBACK_FAILURE
                });
                continue;
            };
            if spec.share_group.is_some() && options.no_local && self.version.is_v5() {
                return Err(Fail {
                    reason: reason::PROTOCOL_ERROR,
                    kind: "no_local_on_shared_subscription",
                });
            }
            options.qos = options.qos.min(max_qos);
            let existed = self
                .hub
                .subscribe(&self.session, &filter, options, identifier);
            for message in self.hub.retained_for(&filter, options, existed) {
                retained.push(Delivery {
                    qos: message.qos.min(options.qos),
                    message,
                    retain: true,
                    subscription_ids: identifier.into_iter().collect(),
                });
            }
            codes.push(options.qos as u8);
        }
        self.send(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            codes,
            properties: Properties::default(),
        }));
        for delivery in retained {
            if let Err(dropped) = self.session.enqueue(delivery) {
                self.hub
                    .metrics
                    .message_dropped(Protocol::Mqtt, dropped.as_str());
            }
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let codes = u
            .filters
            .iter()
            .map(|f| {
                if parse_filter(f).is_none() {
                    reason::TOPIC_FILTER_INVALID
                } else if self.hub.unsubscribe(&self.session, f) {
                    reason::SUCCESS
                } else {
                    reason::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            codes,
            properties: Properties::default(),
        }));
    }

    /// After a session is resumed: unacknowledged messages go out again with
    /// DUP set and PUBRELs awaiting PUBCOMP are repeated, with their original
    /// packet ids (MQTT 4.4), oldest first and no more at a time than the
    /// client's new Receive Maximum allows.
    fn resend_inflight(&mut self) {
        let now = Instant::now();
        loop {
            let next = {
                let mut st = self.session.lock();
                let on_wire = st.inflight.iter().filter(|f| f.on_wire).count();
                if on_wire >= self.send_window {
                    return;
                }
                let Some(f) = st.inflight.iter_mut().find(|f| !f.on_wire) else {
                    return;
                };
                f.on_wire = true;
                f.clone()
            };
            match next.state {
                OutState::AwaitPubComp => {
                    self.send(Packet::PubRel(PubResponse::new(next.packet_id)));
                }
                OutState::AwaitPubAck | OutState::AwaitPubRec => {
                    if !self.send_publish(&next.delivery, next.packet_id, true, now) {
                        let mut st = self.session.lock();
                        st.inflight.retain(|f| f.packet_id != next.packet_id);
                    }
                }
            }
        }
    }

    /// Moves queued deliveries to the wire while the in-flight window allows
    /// (messages waiting for a resend after a resume go first), then wakes
    /// publishers paused on this session if there is room again.
    fn drain_queue(&mut self) {
        self.drain_queue_inner();
        if !self.session.is_full() {
            self.session.space.notify_waiters();
        }
    }

    fn drain_queue_inner(&mut self) {
        self.resend_inflight();
        let now = Instant::now();
        loop {
            let (delivery, packet_id) = {
                let mut st = self.session.lock();
                let Some(front) = st.queue.front() else {
                    return;
                };
                if front.qos != QoS::AtMostOnce && st.inflight.len() >= self.send_window {
                    return;
                }
                let Some(delivery) = st.queue.pop_front() else {
                    return;
                };
                if delivery.message.is_expired(now) {
                    self.hub.metrics.message_dropped(Protocol::Mqtt, "expired");
                    continue;
                }
                let packet_id = if delivery.qos == QoS::AtMostOnce {
                    0
                } else {
                    st.alloc_packet_id()
                };
                (delivery, packet_id)
            };
            if !self.send_publish(&delivery, packet_id, false, now) {
                continue;
            }
            self.counters.messages_sent.inc();
            if delivery.qos != QoS::AtMostOnce {
                let state = if delivery.qos == QoS::AtLeastOnce {
                    OutState::AwaitPubAck
                } else {
                    OutState::AwaitPubRec
                };
                self.session.lock().inflight.push_back(OutFlight {
                    packet_id,
                    delivery,
                    state,
                    on_wire: true,
                });
            }
        }
    }

    /// Encodes a PUBLISH for the client; false (and nothing written) when it
    /// exceeds the client's Maximum Packet Size: 5.0 3.1.2.25 says to discard
    /// such a message as if it had been sent.
    fn send_publish(
        &mut self,
        delivery: &Delivery,
        packet_id: u16,
        dup: bool,
        now: Instant,
    ) -> bool {
        let aliases_before = self.outgoing_aliases.len();
        let packet = self.publish_packet(delivery, packet_id, dup, now);
        let start = self.out.len();
        let size = self.send(packet);
        if size <= self.client_max_packet {
            return true;
        }
        self.out.truncate(start);
        if self.outgoing_aliases.len() > aliases_before {
            // The client never saw this alias being set: forget it.
            self.outgoing_aliases.remove(&delivery.message.topic);
        }
        self.hub
            .metrics
            .message_dropped(Protocol::Mqtt, "too_large_for_client");
        false
    }

    fn publish_packet(&mut self, d: &Delivery, packet_id: u16, dup: bool, now: Instant) -> Packet {
        let m = &d.message;
        let mut properties = Properties::default();
        let mut topic = m.topic.to_string();
        if self.version.is_v5() {
            let mp = &m.properties;
            properties.payload_format_indicator = mp.payload_format_indicator;
            properties.message_expiry_interval = m.remaining_expiry(now);
            properties.content_type = mp.content_type.clone();
            properties.response_topic = mp.response_topic.clone();
            properties.correlation_data = mp.correlation_data.clone();
            properties.user_properties = mp.user_properties.clone();
            properties.subscription_identifiers = d.subscription_ids.clone();
            if self.outgoing_alias_limit > 0 {
                if let Some(&alias) = self.outgoing_aliases.get(&m.topic) {
                    topic.clear();
                    properties.topic_alias = Some(alias);
                } else if self.outgoing_aliases.len() < usize::from(self.outgoing_alias_limit) {
                    let alias = self.outgoing_aliases.len() as u16 + 1;
                    self.outgoing_aliases.insert(m.topic.clone(), alias);
                    properties.topic_alias = Some(alias);
                }
            }
        }
        Packet::Publish(Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic,
            packet_id,
            payload: m.payload.clone(),
            properties,
        })
    }
}
