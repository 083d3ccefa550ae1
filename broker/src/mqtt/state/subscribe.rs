//! SUBSCRIBE and UNSUBSCRIBE: filters checked (syntax, the per-client
//! limit, the ACL), subscriptions made in the hub, and the retained
//! messages a new subscription is sent.

use super::{Connection, Fail};
use crate::core::topic::parse_filter;
use crate::metrics::Protocol;
use crate::mqtt::packet::{
    reason, Packet, Properties, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::mqtt::session::Delivery;

impl Connection {
    pub(super) fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Fail> {
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
            if !self.may_subscribe(spec.filter) {
                self.hub
                    .metrics
                    .protocol_error(Protocol::Mqtt, "subscribe_not_authorized");
                codes.push(if self.version.is_v5() {
                    reason::NOT_AUTHORIZED
                } else {
                    reason::v3::SUBACK_FAILURE
                });
                continue;
            }
            options.qos = options.qos.min(max_qos);
            let over_limit = {
                let st = self.session.lock();
                !st.subscriptions.contains_key(&filter)
                    && st.subscriptions.len() >= self.hub.config.max_subscriptions_per_client
            };
            if over_limit {
                self.hub
                    .metrics
                    .protocol_error(Protocol::Mqtt, "max_subscriptions");
                codes.push(if self.version.is_v5() {
                    reason::QUOTA_EXCEEDED
                } else {
                    reason::v3::SUBACK_FAILURE
                });
                continue;
            }
            let existed = self
                .hub
                .subscribe(&self.session, &filter, options, identifier);
            let retained_now = self.hub.retained_for(&filter, options, existed);
            // Only what the subscriber may read (the filter may be readable
            // while a topic under it was written before a rule changed).
            for message in retained_now.into_iter().filter(|m| self.may_read(&m.topic)) {
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

    pub(super) fn on_unsubscribe(&mut self, u: Unsubscribe) {
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
}
