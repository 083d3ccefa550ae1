//! The ACL as one connection applies it (`auth.acl_file`): who the client
//! is, whether it may publish, subscribe or receive, and how a denied
//! PUBLISH is answered.

use std::sync::Arc;

use super::Connection;
use crate::auth::{Acl, Auth, Principal};
use crate::metrics::Protocol;
use crate::mqtt::packet::{reason, Packet, PubResponse, Publish, QoS};

/// A connection's identity for ACL checks.
#[derive(Debug, Clone)]
pub(crate) struct Authz {
    pub auth: Arc<Auth>,
    /// The authenticated user name; `None` for an anonymous client.
    pub user: Option<Arc<str>>,
}

impl Connection {
    /// The ACL and who asks; `None` when no ACL is configured.
    fn acl(&self) -> Option<(&Acl, Principal<'_>)> {
        let authz = self.authz.as_ref()?;
        let acl = authz.auth.acl()?;
        Some((
            acl,
            Principal {
                user: authz.user.as_deref(),
                client_id: &self.client_id,
            },
        ))
    }

    pub(super) fn may_publish(&self, topic: &str) -> bool {
        self.acl()
            .is_none_or(|(acl, who)| acl.may_write(who, topic))
    }

    pub(super) fn may_subscribe(&self, filter: &str) -> bool {
        self.acl()
            .is_none_or(|(acl, who)| acl.may_subscribe(who, filter))
    }

    pub(super) fn may_read(&self, topic: &str) -> bool {
        self.acl().is_none_or(|(acl, who)| acl.may_read(who, topic))
    }

    /// A PUBLISH the ACL denies is not routed and counted as dropped
    /// (`not_authorized`). A 5.0 client is told with PUBACK/PUBREC 0x87; a
    /// 3.1.1 client gets the usual acknowledgement (3.1.1 has no negative
    /// one: MQTT-3.3.5-2 lets the server acknowledge and discard).
    pub(super) fn refuse_publish(&mut self, p: &Publish) {
        self.hub
            .metrics
            .message_dropped(Protocol::Mqtt, "not_authorized");
        let mut ack = PubResponse::new(p.packet_id);
        if self.version.is_v5() {
            ack.reason = reason::NOT_AUTHORIZED;
        } else if p.qos == QoS::ExactlyOnce {
            // So its PUBREL is answered with a plain PUBCOMP.
            self.session.lock().incoming_qos2.insert(p.packet_id);
        }
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.send(Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                self.send(Packet::PubRec(ack));
            }
        }
    }
}
