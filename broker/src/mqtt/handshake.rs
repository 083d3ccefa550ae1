//! The MQTT handshake: read CONNECT (within `connect_timeout_secs`), check
//! the client id, credentials and will, take a connection permit, attach the
//! session, and queue CONNACK. A refused client gets a CONNACK with the reason
//! in its own protocol level's format, then the connection is closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{oneshot, watch};
use tokio::time::{timeout_at, Instant};

use super::codec::{self, DecodeError};
use super::hub::MqttHub;
use super::packet::{reason, ConnAck, Connect, Packet, Properties, ProtocolVersion};
use super::session::Kick;
use super::state::{decode_error_kind, Authz, Connection};
use super::transport::Transport;
use crate::auth::ListenerAuth;
use crate::config::Limits;
use crate::core::io::write_timed;
use crate::core::slots::Slot;
use crate::core::topic::valid_topic_name;
use crate::core::ClientId;
use crate::metrics::Protocol;

/// A client past CONNECT, with what the I/O loop needs to serve it.
pub(super) struct Accepted {
    pub conn: Connection,
    /// Bytes read after CONNECT.
    pub buf: BytesMut,
    /// 1.5 times the keep-alive granted (at most `mqtt.max_keep_alive_secs`).
    pub keep_alive: Option<Duration>,
    /// Fires when another connection takes the client id over.
    pub kicked: oneshot::Receiver<Kick>,
    pub permit: Slot,
}

/// Runs the handshake; `None` when the connection ended in it (refused,
/// timed out, closed, or the broker is shutting down).
pub(super) async fn handshake<T: Transport>(
    io: &mut T,
    hub: &Arc<MqttHub>,
    shutdown: &mut watch::Receiver<bool>,
    connect_deadline: Instant,
    login: &ListenerAuth,
) -> Option<Accepted> {
    let limits = hub.limits;
    let mut buf = BytesMut::new();
    let first = tokio::select! {
        r = timeout_at(connect_deadline, read_connect(io, &mut buf, limits)) => r,
        _ = shutdown.changed() => return None,
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
                // Not counted as sent: the client never became a connection.
                let _ = write_timed(io.write_all(&out)).await;
            }
            io.close().await;
            return None;
        }
        Err(_) => {
            hub.metrics
                .protocol_error(Protocol::Mqtt, "connect_timeout");
            io.close().await;
            return None;
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
    // `mqtt.use_identity_as_username`: on TLS the certificate names the user.
    let cert_identity = hub.config.use_identity_as_username && io.is_tls();
    let verdict = match cert_identity {
        true => match io.peer_common_name() {
            Some(cn) => {
                connect.username = Some(cn);
                connect.password = None;
                check_connect(hub, &connect, true, login)
            }
            None => Err((
                reason::NOT_AUTHORIZED,
                reason::v3::NOT_AUTHORIZED,
                "no_certificate_identity",
            )),
        },
        false => check_connect(hub, &connect, false, login),
    };
    let verdict = match verdict {
        Ok(()) => authenticate(hub, &connect, cert_identity, login).await,
        refused => refused,
    };
    let permit = match verdict {
        Ok(()) => hub.connection_permits.take().map_err(|refusal| {
            hub.metrics
                .connection_refused(Protocol::Mqtt, refusal.kind());
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
            // Not counted as sent: the client never became a connection.
            let _ = write_timed(io.write_all(&out)).await;
            io.close().await;
            return None;
        }
    };

    let assigned_id = connect.client_id.is_empty().then(|| assign_client_id(hub));
    let client_id: ClientId = assigned_id
        .clone()
        .unwrap_or_else(|| connect.client_id.clone())
        .into();
    let requested_expiry = if version.is_v5() {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        hub.config.persistent_session_expiry_secs
    };
    // 5.0: capped, and the value used is announced in CONNACK (below).
    let expiry = if version.is_v5() {
        requested_expiry.min(hub.config.max_session_expiry_secs)
    } else {
        requested_expiry
    };
    // A client asking for no keep-alive (0) or more than the cap gets the
    // cap, so a silent connection cannot hold its slot forever.
    let max_keep_alive = hub.config.max_keep_alive_secs.max(1);
    let keep_alive_secs = match connect.keep_alive {
        0 => max_keep_alive,
        asked => asked.min(max_keep_alive),
    };
    let attached = hub
        .attach(&client_id, version, connect.clean_start, expiry)
        .await;
    let user: Option<Arc<str>> = connect.username.as_deref().map(Arc::from);
    attached.session.set_owner(user.clone());

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
        ack_props.server_keep_alive =
            (keep_alive_secs != connect.keep_alive).then_some(keep_alive_secs);
    }
    let mut conn = Connection::new(
        hub.clone(),
        attached.session,
        attached.connection_id,
        client_id,
        &mut connect,
        expiry,
    );
    conn.authz = login.auth.acl().is_some().then(|| Authz {
        auth: login.auth.clone(),
        user,
    });
    conn.send(Packet::ConnAck(ConnAck {
        session_present: attached.session_present,
        code: reason::SUCCESS,
        properties: ack_props,
    }));
    hub.metrics.connection_opened(Protocol::Mqtt);
    tracing::debug!(client = %conn.client_id, ?version, "connected");
    conn.drain_queue();

    let keep_alive = Some(Duration::from_millis(u64::from(keep_alive_secs) * 1500));
    if buf.is_empty() {
        buf = BytesMut::new();
    }
    Some(Accepted {
        conn,
        buf,
        keep_alive,
        kicked: attached.kicked,
        permit,
    })
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

/// Checks a CONNECT before any session is touched: client id, credentials, will.
/// The error carries the 5.0 reason code, the 3.1.1 return code and a metrics label.
/// `cert_identity`: the user name is the client certificate's common name,
/// which the TLS handshake verified, so no password is compared; with users
/// configured it must name one of them.
fn check_connect(
    hub: &MqttHub,
    c: &Connect,
    cert_identity: bool,
    login: &ListenerAuth,
) -> Result<(), (u8, u8, &'static str)> {
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
    let auth = &login.auth;
    match &c.username {
        Some(user) if cert_identity && auth.has_users() && !auth.knows(user) => {
            return Err((
                reason::NOT_AUTHORIZED,
                reason::v3::NOT_AUTHORIZED,
                "unknown_certificate_identity",
            ));
        }
        Some(_) if cert_identity => {}
        None if !login.anonymous => return Err(not_authorized),
        // Without a password file no user name can be checked: only
        // listeners open to anonymous clients take them.
        Some(_) if !auth.has_users() && !login.anonymous => return Err(not_authorized),
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

/// After [`check_connect`]: the password, checked against the password
/// file off the async threads (slow on purpose), then the client id: a
/// session held under it may be taken over only by the user that opened it.
async fn authenticate(
    hub: &MqttHub,
    c: &Connect,
    cert_identity: bool,
    login: &ListenerAuth,
) -> Result<(), (u8, u8, &'static str)> {
    if let (Some(user), false, true) = (&c.username, cert_identity, login.auth.has_users()) {
        let password = c.password.as_deref().unwrap_or_default();
        if !login.auth.verify_blocking(user, password).await {
            return Err((
                reason::BAD_USER_NAME_OR_PASSWORD,
                reason::v3::BAD_USER_NAME_OR_PASSWORD,
                "bad_credentials",
            ));
        }
    }
    let owned_by_other = !c.client_id.is_empty()
        && hub
            .session_owner(&c.client_id)
            .is_some_and(|owner| owner.as_deref() != c.username.as_deref());
    if owned_by_other {
        return Err((
            reason::NOT_AUTHORIZED,
            reason::v3::NOT_AUTHORIZED,
            "client_id_owned_by_other_user",
        ));
    }
    // A will is a publish: its topic must be writable (as mosquitto checks).
    let who = crate::auth::Principal {
        user: c.username.as_deref(),
        client_id: &c.client_id,
    };
    if let (Some(acl), Some(will)) = (login.auth.acl(), &c.will) {
        if !acl.may_write(who, &will.topic) {
            return Err((
                reason::NOT_AUTHORIZED,
                reason::v3::NOT_AUTHORIZED,
                "will_not_authorized",
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

#[cfg(test)]
mod tests {
    use tokio::sync::Semaphore;

    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::platform::Platform;

    fn hub(configure: impl FnOnce(&mut Config)) -> Arc<MqttHub> {
        let mut config = Config::ephemeral();
        configure(&mut config);
        let platform = Platform::detect();
        let limits = config.limits(platform.class);
        let metrics = Metrics::new(&platform, limits.max_connections);
        MqttHub::new(config.mqtt, limits, metrics, Arc::new(Semaphore::new(1)))
    }

    fn decode_connect(bytes: &[u8]) -> Connect {
        let mut buf = BytesMut::from(bytes);
        match codec::decode(&mut buf, ProtocolVersion::V311, 1 << 20) {
            Ok(Some(Packet::Connect(c))) => *c,
            other => panic!("not a CONNECT: {other:?}"),
        }
    }

    #[test]
    fn v31_needs_a_client_id() {
        let connect = decode_connect(&[
            0x10, 0x0E, // CONNECT, remaining length 14
            0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, // MQTT 3.1
            0x02, 0x00, 0x3C, // clean session, keep-alive 60
            0x00, 0x00, // empty client id
        ]);
        let refused =
            check_connect(&hub(|_| {}), &connect, false, &ListenerAuth::open()).unwrap_err();
        assert_eq!(refused, (0x85, 2, "identifier_rejected"));
    }

    #[test]
    fn v311_empty_id_needs_a_clean_session() {
        let connect = decode_connect(&[
            0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // MQTT 3.1.1
            0x00, 0x00, 0x3C, // no clean session, keep-alive 60
            0x00, 0x00, // empty client id
        ]);
        let refused =
            check_connect(&hub(|_| {}), &connect, false, &ListenerAuth::open()).unwrap_err();
        assert_eq!(refused, (0x85, 2, "identifier_rejected"));
    }

    fn with_user(user: &str, password: &str, anonymous: bool) -> ListenerAuth {
        let mut file = crate::auth::PasswordFile::default();
        let it = std::num::NonZeroU32::new(1000).unwrap();
        file.users.insert(
            user.into(),
            crate::auth::PasswordEntry::new(password, it).unwrap(),
        );
        ListenerAuth {
            auth: Arc::new(crate::auth::Auth::new(Some(file), None)),
            anonymous,
        }
    }

    #[tokio::test]
    async fn credentials_must_match_the_password_file() {
        let connect = decode_connect(&[
            0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // MQTT 3.1.1
            0xC2, 0x00, 0x3C, // user name, password, clean session; keep-alive 60
            0x00, 0x01, b'a', // client id "a"
            0x00, 0x01, b'u', // user name "u"
            0x00, 0x01, b'p', // password "p"
        ]);
        let h = hub(|_| {});
        let check = async |login: &ListenerAuth, cert: bool| {
            check_connect(&h, &connect, cert, login)?;
            authenticate(&h, &connect, cert, login).await
        };
        assert_eq!(check(&with_user("u", "p", false), false).await, Ok(()));
        let refused = check(&with_user("u", "other", false), false).await;
        assert_eq!(refused.unwrap_err(), (0x86, 4, "bad_credentials"));
        // No password file and anonymous access off: nobody gets in.
        let closed = ListenerAuth {
            anonymous: false,
            ..ListenerAuth::open()
        };
        assert_eq!(check(&closed, false).await.unwrap_err().2, "not_authorized");
        let mut anonymous = connect.clone();
        anonymous.username = None;
        anonymous.password = None;
        let refused = check_connect(&h, &anonymous, false, &with_user("u", "p", false));
        assert_eq!(refused.unwrap_err(), (0x87, 5, "not_authorized"));
        assert_eq!(
            check_connect(&h, &anonymous, false, &with_user("u", "p", true)),
            Ok(())
        );
        // A certificate identity: no password compared, but it must name a user.
        assert_eq!(check(&with_user("u", "other", false), true).await, Ok(()));
        assert_eq!(check(&closed, true).await, Ok(()));
        let mut stranger = connect.clone();
        stranger.username = Some("stranger".into());
        assert_eq!(
            check_connect(&h, &stranger, true, &with_user("u", "p", false)).unwrap_err(),
            (0x87, 5, "unknown_certificate_identity")
        );
    }

    #[test]
    fn will_qos_above_the_maximum_is_refused() {
        let connect = decode_connect(&[
            0x10, 0x15, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // MQTT 3.1.1
            0x16, 0x00, 0x3C, // will QoS 2, will flag, clean session; keep-alive 60
            0x00, 0x01, b'a', // client id "a"
            0x00, 0x01, b'w', // will topic "w"
            0x00, 0x03, b'b', b'y', b'e', // will payload "bye"
        ]);
        assert_eq!(
            check_connect(&hub(|_| {}), &connect, false, &ListenerAuth::open()),
            Ok(())
        );
        let refused = check_connect(
            &hub(|c| c.mqtt.max_qos = 1),
            &connect,
            false,
            &ListenerAuth::open(),
        )
        .unwrap_err();
        assert_eq!(refused, (0x9B, 3, "will_qos_not_supported"));
    }
}
