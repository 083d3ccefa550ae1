//! Messages on their way to the client: queued deliveries moved onto the
//! wire as the in-flight window allows, resends after a resume, topic
//! aliases, and the client's Maximum Packet Size.

use std::time::Instant;

use super::Connection;
use crate::metrics::Protocol;
use crate::mqtt::packet::{Packet, Properties, PubResponse, Publish, QoS};
use crate::mqtt::session::{Delivery, OutFlight, OutState};

impl Connection {
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
                f.sent_at = now;
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
    /// (messages waiting for a resend after a resume go first), clears the
    /// slow mark once the queue is down to half, then wakes publishers paused
    /// on this session if there is room again.
    pub fn drain_queue(&mut self) {
        self.drain_queue_inner();
        if self.session.relieved() {
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
                    sent_at: now,
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
