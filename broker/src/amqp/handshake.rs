//! The AMQP handshake: protocol header, start/start-ok with PLAIN,
//! AMQPLAIN or (with a client certificate) EXTERNAL, tune/tune-ok,
//! open/open-ok into a vhost the user may open. A refused login or vhost,
//! or an unexpected method, is answered with connection.close and ends the
//! connection.

use crate::core::stream::{ClientReadHalf, ClientWriteHalf};
use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;

use super::codec::{self, Frame};
use super::connection::{fill, write_now};
use super::error::*;
use super::hub::{AmqpHub, ConnectionAccess, VhostId};
use super::state::{connection_close, method_frame, Tuning};
use crate::auth::ListenerAuth;
use crate::metrics::{Protocol, ProtocolCounters};

/// Reads until one whole frame is there (handshake only). A frame that
/// does not decode (or a method only a server sends) is answered with
/// connection.close, as after the handshake.
async fn read_frame(
    (rd, wr): (&mut ClientReadHalf, &mut ClientWriteHalf),
    buf: &mut BytesMut,
    frame_max: u32,
    hub: &AmqpHub,
    counters: &ProtocolCounters,
) -> Result<Frame, String> {
    loop {
        match codec::next_client_frame(buf, frame_max) {
            Ok(Some(Frame::Heartbeat(_))) => continue,
            Ok(Some(f)) => return Ok(f),
            Ok(None) => fill(rd, buf, counters).await?,
            Err(e) => {
                hub.metrics.protocol_error(Protocol::Amqp, e.kind());
                let close = connection_close(&e.connection_error());
                let _ = write_now(wr, &method_frame(0, close), counters).await;
                return Err(format!("bad frame during the handshake: {e}"));
            }
        }
    }
}

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "authentication_failure_close",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    // Publishers are sent connection.blocked/unblocked at the memory watermark.
    caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
    let mut props = FieldTable::default();
    let long = |s: &str| AMQPValue::LongString(s.into());
    props.insert("product".into(), long("bench-broker"));
    props.insert("version".into(), long(env!("CARGO_PKG_VERSION")));
    props.insert("platform".into(), long("Rust"));
    props.insert(
        "information".into(),
        long("multi-protocol broker: MQTT, Kafka, AMQP 0.9.1"),
    );
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}

/// The user name and password in a start-ok response.
pub fn credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            // [authzid] NUL authcid NUL passwd
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            Some((
                String::from_utf8(user.to_vec()).ok()?,
                String::from_utf8(pass.to_vec()).ok()?,
            ))
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut framed = (response.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(response);
            if codec::nesting_exceeds(&framed, codec::MAX_NESTING) {
                return None;
            }
            let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
            let text = |k: &str| match table.inner().get(k)? {
                AMQPValue::LongString(s) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                _ => None,
            };
            Some((text("LOGIN")?, text("PASSWORD")?))
        }
        _ => None,
    }
}

/// Whether the client's properties say it understands connection.blocked
/// (`capabilities` → `connection.blocked` = true, as RabbitMQ reads it).
fn announces_blocked(client_properties: &FieldTable) -> bool {
    match client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => {
            matches!(
                caps.inner().get("connection.blocked"),
                Some(AMQPValue::Boolean(true))
            )
        }
        _ => false,
    }
}

/// What the client is: whether it connects from loopback, and the common
/// name of its verified TLS client certificate (for EXTERNAL).
#[derive(Debug, Clone, Default)]
pub(super) struct Peer {
    pub loopback: bool,
    pub certificate_cn: Option<String>,
}

/// A finished handshake: the tuning, the vhost opened, who opened it.
#[derive(Debug)]
pub(super) struct Opened {
    pub tuning: Tuning,
    pub vhost: VhostId,
    pub access: ConnectionAccess,
}

pub(super) async fn handshake(
    rd: &mut ClientReadHalf,
    wr: &mut ClientWriteHalf,
    buf: &mut BytesMut,
    hub: &AmqpHub,
    counters: &ProtocolCounters,
    (peer, login): (&Peer, &ListenerAuth),
) -> Result<Opened, String> {
    loop {
        match codec::read_protocol_header(buf) {
            Ok(Some(())) => break,
            Ok(None) => fill(rd, buf, counters).await?,
            Err(codec::BadProtocolHeader) => {
                hub.metrics
                    .protocol_error(Protocol::Amqp, "bad_protocol_header");
                write_now(wr, codec::PROTOCOL_HEADER, counters).await?;
                return Err("bad protocol header: answered with AMQP 0-9-1".into());
            }
        }
    }
    let cfg = &hub.config;
    let start = AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: LongString::from(match peer.certificate_cn {
            Some(_) => "PLAIN AMQPLAIN EXTERNAL",
            None => "PLAIN AMQPLAIN",
        }),
        locales: LongString::from("en_US"),
    }));
    write_now(wr, &method_frame(0, start), counters).await?;
    let refuse = |code: u16, text: String| AmqpError::hard(code, text);
    let fail = async |wr: &mut ClientWriteHalf, e: AmqpError| -> String {
        let kind = match e.code {
            NOT_ALLOWED => "vhost_not_allowed",
            _ => "handshake_refused",
        };
        hub.metrics.protocol_error(Protocol::Amqp, kind);
        let _ = write_now(wr, &method_frame(0, connection_close(&e)), counters).await;
        e.text
    };
    let start_ok = match read_frame((rd, wr), buf, cfg.frame_max, hub, counters).await? {
        Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::StartOk(m))) => m,
        other => {
            return Err(fail(
                wr,
                refuse(
                    COMMAND_INVALID,
                    format!("COMMAND_INVALID - expected connection.start-ok, got {other:?}"),
                ),
            )
            .await)
        }
    };
    let blocked_capable = announces_blocked(&start_ok.client_properties);
    let mechanism = start_ok.mechanism.as_str();
    let external = match (mechanism, &peer.certificate_cn) {
        ("EXTERNAL", Some(cn)) => Some(cn.clone()),
        _ => None,
    };
    let (user, allowed) = match external {
        // The certificate was verified against the CA: its CN is the user,
        // who must be in the password file when there is one (as RabbitMQ's
        // EXTERNAL needs the user to exist).
        Some(cn) => {
            let known = !login.auth.has_users() || login.auth.knows(&cn);
            (cn, known)
        }
        None => {
            let Some((user, pass)) = credentials(mechanism, start_ok.response.as_bytes()) else {
                let e = refuse(ACCESS_REFUSED, format!("ACCESS_REFUSED - unsupported mechanism '{mechanism}' or bad response (use PLAIN or AMQPLAIN, or EXTERNAL with a client certificate)"));
                return Err(fail(wr, e).await);
            };
            // With a password file every login is checked against it; without
            // one, a listener open to anonymous clients takes any login, and
            // otherwise only guest/guest from a loopback peer (as RabbitMQ).
            let allowed = match login.auth.has_users() {
                true => login.auth.verify_blocking(&user, pass.as_bytes()).await,
                false => login.anonymous || (peer.loopback && user == "guest" && pass == "guest"),
            };
            (user, allowed)
        }
    };
    if !allowed {
        let e = refuse(
            ACCESS_REFUSED,
            format!("ACCESS_REFUSED - login refused for user '{user}' (mechanism {mechanism})"),
        );
        return Err(fail(wr, e).await);
    }
    let tune = AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
        channel_max: cfg.channel_max,
        frame_max: cfg.frame_max,
        heartbeat: cfg.heartbeat_secs,
    }));
    write_now(wr, &method_frame(0, tune), counters).await?;
    let tune_ok = match read_frame((rd, wr), buf, cfg.frame_max, hub, counters).await? {
        Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(m))) => m,
        other => {
            return Err(fail(
                wr,
                refuse(
                    COMMAND_INVALID,
                    format!("COMMAND_INVALID - expected connection.tune-ok, got {other:?}"),
                ),
            )
            .await)
        }
    };
    let pick = |client: u32, server: u32| {
        if client == 0 {
            server
        } else {
            client.min(server)
        }
    };
    let tuning = Tuning {
        frame_max: pick(tune_ok.frame_max, cfg.frame_max).max(codec::FRAME_MIN_SIZE),
        channel_max: pick(u32::from(tune_ok.channel_max), u32::from(cfg.channel_max)) as u16,
        // The client has the last word on heartbeats (0 switches them off).
        heartbeat: tune_ok.heartbeat,
        blocked_capable,
    };
    let open = match read_frame((rd, wr), buf, tuning.frame_max, hub, counters).await? {
        Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Open(m))) => m,
        other => {
            return Err(fail(
                wr,
                refuse(
                    COMMAND_INVALID,
                    format!("COMMAND_INVALID - expected connection.open, got {other:?}"),
                ),
            )
            .await)
        }
    };
    let name = open.virtual_host.as_str();
    let Some(vhost) = hub.vhost(name) else {
        let e = refuse(
            NOT_ALLOWED,
            format!("NOT_ALLOWED - vhost '{name}' not found (amqp.vhosts does not name it)"),
        );
        return Err(fail(wr, e).await);
    };
    // Without `[[amqp]]` permissions every user may open every vhost.
    let permission = match login.auth.amqp_acl() {
        None => None,
        Some(acl) => match acl.permission(&user, name) {
            Some(p) => Some(p),
            None => {
                let e = refuse(
                    NOT_ALLOWED,
                    format!("NOT_ALLOWED - access to vhost '{name}' refused for user '{user}'"),
                );
                return Err(fail(wr, e).await);
            }
        },
    };
    let open_ok = AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {}));
    write_now(wr, &method_frame(0, open_ok), counters).await?;
    Ok(Opened {
        tuning,
        vhost,
        access: ConnectionAccess { user, permission },
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use amq_protocol::types::ShortString;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::amqp::config::AmqpConfig;
    use crate::metrics::Metrics;
    use crate::platform::Platform;
    use crate::storage::StorageMode;

    fn hub() -> Arc<AmqpHub> {
        let config = AmqpConfig {
            storage: StorageMode::Memory,
            ..AmqpConfig::default()
        };
        let metrics = Metrics::new(&Platform::detect(), 10);
        AmqpHub::open(
            config,
            Path::new("."),
            metrics,
            Arc::new(Semaphore::new(10)),
        )
        .unwrap()
    }

    /// The broker's end of a loopback connection, split, and the client's end.
    async fn pair() -> ((ClientReadHalf, ClientWriteHalf), TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (
            crate::core::stream::ClientStream::Plain(server).into_split(),
            client,
        )
    }

    /// Reads one method frame the broker sent.
    async fn next_method(client: &mut TcpStream, buf: &mut BytesMut) -> AMQPClass {
        loop {
            if let Some(frame) = codec::next_frame(buf, u32::MAX).unwrap() {
                match frame {
                    Frame::Method(0, m) => return m,
                    other => panic!("expected a method on channel 0, got {other:?}"),
                }
            }
            assert!(client.read_buf(buf).await.unwrap() > 0, "broker closed");
        }
    }

    async fn send(client: &mut TcpStream, method: connection::AMQPMethod) {
        let frame = method_frame(0, AMQPClass::Connection(method));
        client.write_all(&frame).await.unwrap();
    }

    #[tokio::test]
    async fn a_wrong_protocol_header_is_answered_with_ours() {
        let hub = hub();
        let ((mut rd, mut wr), mut client) = pair().await;
        let counters = hub.metrics.counters(Protocol::Amqp);
        client.write_all(b"HTTP/1.1").await.unwrap();
        let mut buf = BytesMut::new();
        let why = handshake(
            &mut rd,
            &mut wr,
            &mut buf,
            &hub,
            &counters,
            (
                &Peer {
                    loopback: true,
                    certificate_cn: None,
                },
                &ListenerAuth::open(),
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(why, "bad protocol header: answered with AMQP 0-9-1");
        let mut answer = [0u8; 8];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, codec::PROTOCOL_HEADER);
        assert!(hub.metrics.encode().contains(
            "broker_protocol_errors_total{protocol=\"amqp\",kind=\"bad_protocol_header\"} 1"
        ));
    }

    #[tokio::test]
    async fn plain_login_tunes_and_opens() {
        let hub = hub();
        let ((mut rd, mut wr), mut client) = pair().await;
        let counters = hub.metrics.counters(Protocol::Amqp);
        let broker = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            handshake(
                &mut rd,
                &mut wr,
                &mut buf,
                &hub,
                &counters,
                (
                    &Peer {
                        loopback: true,
                        certificate_cn: None,
                    },
                    &ListenerAuth::open(),
                ),
            )
            .await
        });
        client.write_all(codec::PROTOCOL_HEADER).await.unwrap();
        let mut buf = BytesMut::new();
        let AMQPClass::Connection(connection::AMQPMethod::Start(start)) =
            next_method(&mut client, &mut buf).await
        else {
            panic!("expected connection.start");
        };
        assert_eq!(start.mechanisms.to_string(), "PLAIN AMQPLAIN");
        send(
            &mut client,
            connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: ShortString::from("PLAIN"),
                response: LongString::from(b"\0guest\0guest".to_vec()),
                locale: ShortString::from("en_US"),
            }),
        )
        .await;
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) =
            next_method(&mut client, &mut buf).await
        else {
            panic!("expected connection.tune");
        };
        assert_eq!(
            (tune.channel_max, tune.frame_max, tune.heartbeat),
            (2047, 131_072, 60)
        );
        send(
            &mut client,
            connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 10,
                frame_max: 0, // no preference: the broker's value
                heartbeat: 5,
            }),
        )
        .await;
        send(
            &mut client,
            connection::AMQPMethod::Open(connection::Open {
                virtual_host: ShortString::from("/"),
            }),
        )
        .await;
        assert!(matches!(
            next_method(&mut client, &mut buf).await,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
        ));
        let tuning = broker.await.unwrap().unwrap().tuning;
        assert_eq!(
            (tuning.channel_max, tuning.frame_max, tuning.heartbeat),
            (10, 131_072, 5)
        );
    }

    #[test]
    fn plain_and_amqplain_credentials() {
        assert_eq!(
            credentials("PLAIN", b"\0guest\0guest"),
            Some(("guest".into(), "guest".into()))
        );
        assert_eq!(
            credentials("PLAIN", b"admin\0bob\0pw"),
            Some(("bob".into(), "pw".into()))
        );
        assert_eq!(credentials("PLAIN", b"guest"), None);
        let amqplain = amq_protocol::auth::Credentials::new("alice".into(), "s3cret".into())
            .sasl_auth_string(amq_protocol::auth::SASLMechanism::AMQPlain);
        assert_eq!(
            credentials("AMQPLAIN", amqplain.as_bytes()),
            Some(("alice".into(), "s3cret".into()))
        );
        assert_eq!(credentials("AMQPLAIN", &[0xff, 0xff]), None);
        assert_eq!(credentials("EXTERNAL", b""), None);
    }
}
