//! The MQTT connection state machine after CONNECT: packets decoded from the
//! bytes read are handled against the session and the hub, and every answer
//! is encoded into `out`, which the I/O loop (`connection.rs`) writes. Nothing
//! here does I/O, so it is tested with byte vectors.
//!
//! Malformed or forbidden input ends only this connection: a 5.0 client is
//! told why with a DISCONNECT reason code (3.1.1 has none: the connection is
//! closed), the error is counted, and every other client carries on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::codec::{self, DecodeError};
use super::hub::MqttHub;
use super::packet::{
    reason, Connect, Disconnect, LastWill, Packet, Properties, ProtocolVersion, PubResponse,
    Publish, QoS,
};
use super::session::{Kick, OutState, Session};
use crate::core::topic::valid_topic_name;
use crate::core::{ClientId, Message, MessageProperties};
use crate::metrics::{Protocol, ProtocolCounters};

mod authz;
mod deliver;
mod subscribe;

pub(crate) use authz::Authz;

/// Packets handled in a row before a connection task lets others run.
const YIELD_EVERY_PACKETS: u32 = 64;

/// How a connection ended, which decides what happens to the will and session.
#[derive(Debug)]
pub(super) enum Exit {
    /// DISCONNECT with reason 0: the will is discarded.
    Normal,
    /// Network error, protocol error, keep-alive timeout, or 5.0 DISCONNECT 0x04.
    WithWill,
    /// Another connection took over the client id.
    TakenOver(Kick),
    /// The broker is shutting down (wills are sent).
    Shutdown,
}

/// What [`Connection::process`] asks of the I/O loop.
#[derive(Debug)]
pub(super) enum Step {
    /// Every whole packet is handled (or reading is paused): write `out`, read more.
    Idle,
    /// Let other tasks run, then call `process` again.
    Yield,
    /// The connection ends without a farewell (the client said DISCONNECT).
    Exit(Exit),
    /// A protocol error: write what is in `out` (a 5.0 DISCONNECT with the
    /// reason last) as a farewell, then end with the will.
    Failed,
}

/// Ends the connection after telling a 5.0 client why.
pub(super) struct Fail {
    pub reason: u8,
    pub kind: &'static str,
}

/// The metrics label of a decode error.
pub(super) fn decode_error_kind(e: &DecodeError) -> &'static str {
    match e.reason_code() {
        reason::PACKET_TOO_LARGE => "packet_too_large",
        reason::PROTOCOL_ERROR => "protocol_error",
        reason::UNSUPPORTED_PROTOCOL_VERSION => "unsupported_protocol_version",
        _ => "malformed_packet",
    }
}

/// One connected client: what it negotiated, its session, and the bytes to send it.
pub(super) struct Connection {
    pub hub: Arc<MqttHub>,
    pub version: ProtocolVersion,
    pub session: Arc<Session>,
    pub connection_id: u64,
    pub client_id: ClientId,
    /// Encoded packets waiting to be written.
    pub out: BytesMut,
    pub counters: ProtocolCounters,
    /// QoS 1/2 messages we may have in flight to the client.
    send_window: usize,
    /// The client's Maximum Packet Size (5.0); larger messages are not sent to it.
    client_max_packet: usize,
    incoming_aliases: HashMap<u16, Arc<str>>,
    outgoing_aliases: HashMap<Arc<str>, u16>,
    outgoing_alias_limit: u16,
    pub will: Option<LastWill>,
    /// Session expiry granted at CONNECT (5.0 forbids raising it from 0 at DISCONNECT).
    connect_expiry: u32,
    /// Live sessions whose queue this client's messages filled: reading from
    /// this client pauses until they have room again (flow control), for at
    /// most `mqtt.slow_subscriber_wait_ms` from `paused_since`; those still
    /// full then are marked slow and no longer waited for.
    pub paused_on: Vec<Arc<Session>>,
    pub paused_since: Option<Instant>,
    /// Packets handled so far, for [`YIELD_EVERY_PACKETS`].
    handled: u32,
    /// Who the client is, for the ACL (`None`: no ACL, everything allowed).
    pub authz: Option<Authz>,
}

impl Connection {
    /// The state of a client whose CONNECT was accepted, with the session
    /// it is attached to and the session expiry granted. The limits the
    /// client announced (5.0 Receive Maximum, Maximum Packet Size, Topic Alias
    /// Maximum) are read from `connect`, and its will is taken from it.
    pub fn new(
        hub: Arc<MqttHub>,
        session: Arc<Session>,
        connection_id: u64,
        client_id: ClientId,
        connect: &mut Connect,
        expiry: u32,
    ) -> Connection {
        let limits = hub.limits;
        let client = &connect.properties;
        Connection {
            counters: hub.metrics.counters(Protocol::Mqtt),
            send_window: usize::from(
                client
                    .receive_maximum
                    .unwrap_or(u16::MAX)
                    .min(limits.max_inflight),
            ),
            client_max_packet: client
                .maximum_packet_size
                .map_or(usize::MAX, |n| n as usize),
            incoming_aliases: HashMap::new(),
            outgoing_aliases: HashMap::new(),
            outgoing_alias_limit: client
                .topic_alias_maximum
                .unwrap_or(0)
                .min(hub.config.outgoing_topic_aliases),
            hub,
            version: connect.protocol,
            session,
            connection_id,
            client_id,
            out: BytesMut::new(),
            will: connect.will.take(),
            connect_expiry: expiry,
            paused_on: Vec::new(),
            paused_since: None,
            handled: 0,
            authz: None,
        }
    }

    /// Decodes and handles the whole packets in `buf`, stopping early when a
    /// subscriber's full queue pauses this publisher (the rest stays buffered).
    pub fn process(&mut self, buf: &mut BytesMut) -> Step {
        while self.paused_on.is_empty() {
            let packet = match codec::decode(buf, self.version, self.hub.limits.max_packet_size) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(client = %self.client_id, "bad packet: {e}");
                    return self.fail(Fail {
                        reason: e.reason_code(),
                        kind: decode_error_kind(&e),
                    });
                }
            };
            match self.handle(packet) {
                Ok(None) => {}
                Ok(Some(exit)) => return Step::Exit(exit),
                Err(fail) => return self.fail(fail),
            }
            // A client flooding the broker must not keep the subscribers'
            // tasks from running: readiness-based reads never yield while data
            // is there. Yield every few packets (not via the coop budget: tasks
            // this one woke run from the same worker's LIFO slot on the
            // *remaining* budget, and were starved for seconds when it was spent).
            self.handled = self.handled.wrapping_add(1);
            if self.handled % YIELD_EVERY_PACKETS == 0 {
                return Step::Yield;
            }
        }
        Step::Idle
    }

    /// When the current pause ends at the latest (the subscribers still full
    /// then are marked slow); `None` when not paused.
    pub fn pause_deadline(&self) -> Option<Instant> {
        self.paused_since
            .map(|since| since + self.hub.slow_subscriber_wait())
    }

    /// Re-checks the sessions this publisher waits for: those gone, with room,
    /// or already marked slow are no longer waited for; once the pause has
    /// lasted `mqtt.slow_subscriber_wait_ms`, the ones still full are marked
    /// slow (never waited for again). True when the pause is over.
    pub fn recheck_paused(&mut self, now: Instant) -> bool {
        let overdue = self.pause_deadline().is_some_and(|d| now >= d);
        let hub = &self.hub;
        self.paused_on.retain(|s| {
            if !s.is_connected() || !s.is_full() || s.is_slow() {
                return false;
            }
            if overdue {
                hub.mark_slow(s);
                return false;
            }
            true
        });
        if self.paused_on.is_empty() {
            self.paused_since = None;
        }
        self.paused_on.is_empty()
    }

    /// When the oldest QoS 1/2 message on the wire to this client passes
    /// `mqtt.inflight_timeout_secs` without being acknowledged; `None` when
    /// nothing is in flight.
    pub fn inflight_deadline(&self) -> Option<Instant> {
        let timeout: Duration = self.hub.inflight_timeout();
        let st = self.session.lock();
        st.inflight
            .front()
            .filter(|f| f.on_wire)
            .map(|f| f.sent_at + timeout)
    }

    /// The client left a QoS 1/2 message unacknowledged past
    /// `mqtt.inflight_timeout_secs`. MQTT 5.0 (4.4) forbids re-sending it on
    /// this connection, and holding the window forever would starve the
    /// client; like a subscriber marked slow under the `disconnect` policy it
    /// is disconnected (5.0 DISCONNECT 0x97 Quota exceeded). A persistent
    /// session keeps the message and re-sends it with DUP on reconnect.
    pub fn inflight_timed_out(&mut self) {
        self.hub
            .metrics
            .protocol_error(Protocol::Mqtt, "inflight_timeout");
        // Nobody waits for it while it says goodbye (counted as the timeout only).
        self.session.mark_slow();
        self.disconnect_v5(reason::QUOTA_EXCEEDED);
    }

    /// Counts the error and queues the 5.0 DISCONNECT that says why.
    fn fail(&mut self, fail: Fail) -> Step {
        self.hub.metrics.protocol_error(Protocol::Mqtt, fail.kind);
        self.disconnect_v5(fail.reason);
        Step::Failed
    }

    /// The client said nothing for 1.5 keep-alive intervals.
    pub fn keep_alive_expired(&mut self) {
        self.hub
            .metrics
            .protocol_error(Protocol::Mqtt, "keep_alive_timeout");
        self.disconnect_v5(reason::KEEP_ALIVE_TIMEOUT);
    }

    /// Queues a server DISCONNECT; 3.1.1 has no such packet, so nothing is sent there.
    pub fn disconnect_v5(&mut self, reason: u8) {
        if self.version.is_v5() {
            self.send(Packet::Disconnect(Disconnect {
                reason,
                properties: Properties::default(),
            }));
        }
    }

    pub fn send(&mut self, packet: Packet) -> usize {
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
        if !self.may_publish(&topic) {
            self.refuse_publish(&p);
            return Ok(());
        }
        let props = p.properties;
        let bad_payload = props.payload_format_indicator == Some(1)
            && crate::accel::utf8::validate(&p.payload).is_none();
        let refused = match p.retain && p.qos != QoS::AtMostOnce && self.version.is_v5() {
            true if !bad_payload => self.hub.retained_admits(&topic, p.payload.len()).err(),
            _ => None,
        };
        if let Some(refused) = refused {
            // A new retained message over `mqtt.max_retained_messages` or
            // `_bytes`: a 5.0 QoS 1/2 publisher is told (0x97 Quota exceeded)
            // and the message is not routed. Others cannot be told: their
            // message is routed but not retained (counted when not stored).
            // A retransmitted QoS 2 message already accepted is not refused.
            let duplicate = p.qos == QoS::ExactlyOnce
                && self.session.lock().incoming_qos2.contains(&p.packet_id);
            if !duplicate {
                self.hub
                    .metrics
                    .message_dropped(Protocol::Mqtt, refused.as_str());
                let mut ack = PubResponse::new(p.packet_id);
                ack.reason = reason::QUOTA_EXCEEDED;
                if p.qos == QoS::AtLeastOnce {
                    self.send(Packet::PubAck(ack));
                } else {
                    self.send(Packet::PubRec(ack));
                }
                return Ok(());
            }
        }
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
        if !self.paused_on.is_empty() && self.paused_since.is_none() {
            self.paused_since = Some(now);
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
}

#[cfg(test)]
mod tests;
