//! One AMQP connection: the handshake (protocol header, start/start-ok with
//! PLAIN or AMQPLAIN, tune/tune-ok, open), then a loop that reads frames,
//! assembles published content (method, header, body frames) and runs
//! channel methods against the hub. A writer task owns the socket's write
//! half: every outgoing frame goes through its queue, so writes keep the
//! order in which they were made, and it sends heartbeats when idle.
//!
//! Errors follow the spec: a channel error (soft) closes that channel with
//! channel.close; a connection error (hard) or bad framing closes the
//! connection with connection.close and the reply code, then waits briefly
//! for close-ok. A peer silent for two heartbeat intervals is disconnected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{access, basic, channel, confirm, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

use super::codec::{self, Frame, FrameError};
use super::config::AmqpFlushPolicy;
use super::content::{ContentError, PendingContent};
use super::error::*;
use super::hub::{AmqpHub, ConnId};
use crate::core::io;
use crate::metrics::{Protocol, ProtocolCounters};

/// Queued frames are written in batches of up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a closing side waits for the peer's close-ok.
const CLOSE_OK_WAIT: Duration = Duration::from_secs(1);

pub async fn serve(stream: TcpStream, hub: Arc<AmqpHub>, shutdown: watch::Receiver<bool>) {
    let Ok(_permit) = hub.connection_permits.clone().try_acquire_owned() else {
        hub.metrics
            .connection_refused(Protocol::Amqp, "max_connections");
        return;
    };
    hub.metrics.connection_opened(Protocol::Amqp);
    let counters = hub.metrics.counters(Protocol::Amqp);
    let peer = stream.peer_addr().ok();
    let why = run(stream, &hub, shutdown, &counters).await;
    tracing::debug!("amqp connection {peer:?} closed: {why}");
    hub.metrics.connection_closed(Protocol::Amqp);
}

/// What tune/tune-ok settled on.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
}

/// Reads from the socket into `buf`; `Err` says why the connection ends.
async fn fill(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    counters: &ProtocolCounters,
) -> Result<(), String> {
    match rd.read_buf(buf).await {
        Ok(0) if buf.is_empty() => Err("closed by the client".into()),
        Ok(0) => Err("closed by the client in the middle of a frame".into()),
        Ok(n) => {
            counters.bytes_received.inc_by(n as u64);
            Ok(())
        }
        Err(e) => Err(format!("read failed: {e}")),
    }
}

async fn write_now(
    wr: &mut OwnedWriteHalf,
    out: &[u8],
    counters: &ProtocolCounters,
) -> Result<(), String> {
    io::write_counted(wr, out, &counters.bytes_sent)
        .await
        .map_err(|e| e.to_string())
}

fn method_frame(channel: u16, method: AMQPClass) -> BytesMut {
    let mut out = BytesMut::new();
    codec::put_method(&mut out, channel, method);
    out
}

fn connection_close(e: &AmqpError) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: e.code,
        reply_text: e.reply_text().into(),
        class_id: e.class_id,
        method_id: e.method_id,
    }))
}

async fn run(
    stream: TcpStream,
    hub: &Arc<AmqpHub>,
    mut shutdown: watch::Receiver<bool>,
    counters: &ProtocolCounters,
) -> String {
    let loopback = stream
        .peer_addr()
        .is_ok_and(|a: SocketAddr| a.ip().is_loopback());
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let limit = Duration::from_secs(hub.config.handshake_timeout_secs);
    let tuning = match timeout(
        limit,
        handshake(&mut rd, &mut wr, &mut buf, hub, counters, loopback),
    )
    .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(why)) => return why,
        Err(_) => {
            hub.metrics
                .protocol_error(Protocol::Amqp, "handshake_timeout");
            return "handshake timed out".into();
        }
    };
    let heartbeat =
        (tuning.heartbeat > 0).then(|| Duration::from_secs(u64::from(tuning.heartbeat)));
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let mut writer = tokio::spawn(write_loop(
        wr,
        rx,
        heartbeat.map(|h| h / 2),
        counters.clone(),
    ));
    let conn = hub.connect(tx.clone(), tuning.frame_max);
    let mut session = Session {
        hub: hub.clone(),
        conn,
        tx,
        tuning,
        channels: HashMap::new(),
        confirms: Vec::new(),
        need_sync: false,
        closing: None,
        done: None,
    };
    let silence = heartbeat.map(|h| h * 2);
    let why = loop {
        // Every complete frame already read is handled before confirms go out (group commit).
        loop {
            match codec::next_frame(&mut buf, tuning.frame_max) {
                Ok(Some(frame)) => session.on_frame(frame),
                Ok(None) => break,
                Err(e) => {
                    session.frame_error(&e);
                    buf.clear();
                    break;
                }
            }
            if session.done.is_some() {
                break;
            }
        }
        session.finish_batch().await;
        if let Some(why) = session.done.take() {
            break why;
        }
        let deadline = match session.closing {
            Some(since) => Some(since + CLOSE_OK_WAIT),
            None => silence.map(|s| Instant::now() + s),
        };
        let read = async {
            match deadline {
                Some(d) => {
                    match tokio::time::timeout_at(d, fill(&mut rd, &mut buf, counters)).await {
                        Ok(r) => r,
                        Err(_) if session.closing.is_some() => {
                            Err("no close-ok from the client".to_string())
                        }
                        Err(_) => Err("missed heartbeats from the client".to_string()),
                    }
                }
                None => fill(&mut rd, &mut buf, counters).await,
            }
        };
        tokio::select! {
            r = read => if let Err(why) = r {
                break why;
            },
            _ = shutdown.changed(), if session.closing.is_none() => {
                session.close_connection(&AmqpError::hard(CONNECTION_FORCED, "CONNECTION_FORCED - broker shutting down"));
            }
            _ = &mut writer => break "write failed".to_string(),
        }
    };
    hub.disconnect(conn);
    drop(session);
    // Let the writer flush what is queued (a close or close-ok) before the socket goes.
    let _ = timeout(CLOSE_OK_WAIT, writer).await;
    why
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    heartbeat_every: Option<Duration>,
    counters: ProtocolCounters,
) {
    let mut batch = BytesMut::new();
    loop {
        let next = match heartbeat_every {
            Some(every) => match timeout(every, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    let mut hb = BytesMut::new();
                    codec::put_heartbeat(&mut hb);
                    if write_now(&mut wr, &hb, &counters).await.is_err() {
                        return;
                    }
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(first) = next else { break };
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if write_now(&mut wr, &batch, &counters).await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = wr.shutdown().await;
}

/// Reads until one whole frame is there (handshake only).
async fn read_frame(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    frame_max: u32,
    counters: &ProtocolCounters,
) -> Result<Frame, String> {
    loop {
        match codec::next_frame(buf, frame_max) {
            Ok(Some(Frame::Heartbeat(_))) => continue,
            Ok(Some(f)) => return Ok(f),
            Ok(None) => fill(rd, buf, counters).await?,
            Err(e) => return Err(format!("bad frame during the handshake: {e}")),
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
    caps.insert("connection.blocked".into(), AMQPValue::Boolean(false));
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
            if codec::nesting_exceeds(&framed, 0, codec::MAX_NESTING) {
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

async fn handshake(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    buf: &mut BytesMut,
    hub: &AmqpHub,
    counters: &ProtocolCounters,
    loopback: bool,
) -> Result<Tuning, String> {
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
        mechanisms: LongString::from("PLAIN AMQPLAIN"),
        locales: LongString::from("en_US"),
    }));
    write_now(wr, &method_frame(0, start), counters).await?;
    let refuse = |code: u16, text: String| AmqpError::hard(code, text);
    let fail = async |wr: &mut OwnedWriteHalf, e: AmqpError| -> String {
        hub.metrics
            .protocol_error(Protocol::Amqp, "handshake_refused");
        let _ = write_now(wr, &method_frame(0, connection_close(&e)), counters).await;
        e.text
    };
    let start_ok = match read_frame(rd, buf, cfg.frame_max, counters).await? {
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
    let mechanism = start_ok.mechanism.as_str();
    let Some((user, pass)) = credentials(mechanism, start_ok.response.as_bytes()) else {
        let e = refuse(ACCESS_REFUSED, format!("ACCESS_REFUSED - unsupported mechanism '{mechanism}' or bad response (use PLAIN or AMQPLAIN)"));
        return Err(fail(wr, e).await);
    };
    let allowed = match cfg.users.is_empty() {
        true => cfg.allow_anonymous || (loopback && user == "guest" && pass == "guest"),
        false => cfg.users.get(&user).is_some_and(|p| *p == pass),
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
    let tune_ok = match read_frame(rd, buf, cfg.frame_max, counters).await? {
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
    };
    match read_frame(rd, buf, tuning.frame_max, counters).await? {
        Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Open(_))) => {}
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
    }
    let open_ok = AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {}));
    write_now(wr, &method_frame(0, open_ok), counters).await?;
    Ok(tuning)
}

#[derive(Default)]
struct ChannelLocal {
    /// channel.close sent, waiting for close-ok: everything else is dropped.
    closing: bool,
    content: Option<PendingContent>,
    confirm: bool,
    next_seq: u64,
}

struct Session {
    hub: Arc<AmqpHub>,
    conn: ConnId,
    tx: mpsc::UnboundedSender<Bytes>,
    tuning: Tuning,
    channels: HashMap<u16, ChannelLocal>,
    /// (channel, sequence number, ack) of publishes to confirm after this batch.
    confirms: Vec<(u16, u64, bool)>,
    need_sync: bool,
    /// When connection.close was sent (we wait for close-ok).
    closing: Option<Instant>,
    /// Set when the connection must end, with the reason.
    done: Option<String>,
}

impl Session {
    fn send(&self, channel: u16, method: AMQPClass) {
        let _ = self.tx.send(method_frame(channel, method).freeze());
    }

    fn frame_error(&mut self, e: &FrameError) {
        self.hub.metrics.protocol_error(Protocol::Amqp, e.kind());
        let code = e.reply_code();
        let name = if code == FRAME_ERROR {
            "FRAME_ERROR"
        } else {
            "SYNTAX_ERROR"
        };
        self.close_connection(&AmqpError::hard(code, format!("{name} - {e}")));
        // Framing is lost: nothing more can be read reliably.
        self.done = Some(e.to_string());
    }

    fn close_connection(&mut self, e: &AmqpError) {
        if self.closing.is_some() {
            return;
        }
        self.send(0, connection_close(e));
        self.closing = Some(Instant::now());
        self.confirms.clear();
        self.hub.disconnect(self.conn);
        self.channels.clear();
    }

    fn fail(&mut self, channel: u16, e: AmqpError) {
        if e.hard || channel == 0 {
            self.hub
                .metrics
                .protocol_error(Protocol::Amqp, "connection_error");
            tracing::debug!("amqp: connection error: {e}");
            self.close_connection(&e);
            return;
        }
        self.hub
            .metrics
            .protocol_error(Protocol::Amqp, "channel_error");
        tracing::debug!("amqp: channel {channel} error: {e}");
        self.hub.close_channel(self.conn, channel);
        self.confirms.retain(|(c, _, _)| *c != channel);
        self.send(
            channel,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: e.reply_text().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
        self.channels.insert(
            channel,
            ChannelLocal {
                closing: true,
                ..ChannelLocal::default()
            },
        );
    }

    fn on_frame(&mut self, frame: Frame) {
        if self.closing.is_some() {
            // After connection.close only close-ok (or a crossing close) counts.
            if let Frame::Method(0, AMQPClass::Connection(m)) = &frame {
                match m {
                    connection::AMQPMethod::CloseOk(_) => {
                        self.done = Some("closed by the broker".into())
                    }
                    connection::AMQPMethod::Close(_) => {
                        self.send(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        );
                        self.done = Some("closed by the broker".into());
                    }
                    _ => {}
                }
            }
            return;
        }
        let ch = frame.channel();
        let result = match frame {
            Frame::Heartbeat(_) => Ok(()),
            Frame::Method(0, m) => self.on_connection_method(m),
            Frame::Method(ch, m) => self.on_channel_method(ch, m),
            Frame::Header(ch, h) => self.on_header(ch, h.body_size, h.properties, h.class_id),
            Frame::Body(ch, b) => self.on_body(ch, b),
        };
        if let Err(e) = result {
            self.fail(ch, e);
        }
    }

    fn on_connection_method(&mut self, m: AMQPClass) -> AmqpResult<()> {
        match &m {
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                self.hub.disconnect(self.conn);
                self.channels.clear();
                self.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.done = Some("closed by the client".into());
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                self.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            _ => Err(AmqpError::hard(
                COMMAND_INVALID,
                "COMMAND_INVALID - unexpected method on channel 0",
            )
            .during(&m)),
        }
    }

    fn on_channel_method(&mut self, ch: u16, m: AMQPClass) -> AmqpResult<()> {
        if ch > self.tuning.channel_max {
            return Err(AmqpError::hard(
                CHANNEL_ERROR,
                format!(
                    "CHANNEL_ERROR - channel {ch} is above channel_max {}",
                    self.tuning.channel_max
                ),
            )
            .during(&m));
        }
        let Some(local) = self.channels.get_mut(&ch) else {
            if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = m {
                self.channels.insert(
                    ch,
                    ChannelLocal {
                        next_seq: 1,
                        ..ChannelLocal::default()
                    },
                );
                self.hub.open_channel(self.conn, ch);
                self.send(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                return Ok(());
            }
            return Err(AmqpError::hard(
                CHANNEL_ERROR,
                format!("CHANNEL_ERROR - expected 'channel.open' on channel {ch}"),
            )
            .during(&m));
        };
        if local.closing {
            match m {
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                    self.channels.remove(&ch);
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    self.channels.remove(&ch);
                    self.send(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    );
                }
                _ => {}
            }
            return Ok(());
        }
        if local.content.is_some() {
            return Err(AmqpError::hard(UNEXPECTED_FRAME, format!("UNEXPECTED_FRAME - expected content header or body on channel {ch}, got a method")).during(&m));
        }
        match m {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => Err(AmqpError::hard(
                CHANNEL_ERROR,
                format!("CHANNEL_ERROR - second 'channel.open' seen on channel {ch}"),
            )
            .during(&m)),
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                self.hub.close_channel(self.conn, ch);
                self.channels.remove(&ch);
                self.confirms.retain(|(c, _, _)| *c != ch);
                self.send(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => Ok(()),
            AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                local.content = Some(PendingContent::new(p));
                Ok(())
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                local.confirm = true;
                if !s.nowait {
                    self.send(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send(
                    ch,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            m => self.hub.handle(self.conn, ch, &m).map_err(|e| e.during(&m)),
        }
    }

    fn on_header(
        &mut self,
        ch: u16,
        size: u64,
        properties: AMQPProperties,
        class_id: u16,
    ) -> AmqpResult<()> {
        let max = self.hub.config.max_message_bytes;
        let pending = match self.channels.get_mut(&ch) {
            Some(l) if l.closing => return Ok(()),
            Some(ChannelLocal { content: Some(p), .. }) if p.wants_header() => p,
            _ => return Err(AmqpError::hard(UNEXPECTED_FRAME, format!("UNEXPECTED_FRAME - content header on channel {ch} without a basic.publish before it"))),
        };
        match pending.on_header(class_id, size, properties, max) {
            Ok(true) => self.complete(ch),
            Ok(false) => Ok(()),
            Err(e @ ContentError::TooLarge { .. }) => {
                let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(pending.publish.clone()));
                if let Some(l) = self.channels.get_mut(&ch) {
                    l.content = None;
                }
                Err(
                    AmqpError::soft(PRECONDITION_FAILED, format!("PRECONDITION_FAILED - {e}"))
                        .during(&publish),
                )
            }
            Err(e) => Err(AmqpError::hard(FRAME_ERROR, format!("FRAME_ERROR - {e}"))),
        }
    }

    fn on_body(&mut self, ch: u16, part: Bytes) -> AmqpResult<()> {
        let pending = match self.channels.get_mut(&ch) {
            Some(l) if l.closing => return Ok(()),
            Some(ChannelLocal { content: Some(p), .. }) if !p.wants_header() => p,
            _ => return Err(AmqpError::hard(UNEXPECTED_FRAME, format!("UNEXPECTED_FRAME - content body on channel {ch} without a content header before it"))),
        };
        match pending.on_body(part) {
            Ok(true) => self.complete(ch),
            Ok(false) => Ok(()),
            Err(e) => Err(AmqpError::hard(FRAME_ERROR, format!("FRAME_ERROR - {e}"))),
        }
    }

    fn complete(&mut self, ch: u16) -> AmqpResult<()> {
        let Some(local) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        let Some(p) = local.content.take() else {
            return Ok(());
        };
        let content = p.finish();
        let confirm = local.confirm.then(|| {
            let seq = local.next_seq;
            local.next_seq += 1;
            seq
        });
        let method = AMQPClass::Basic(basic::AMQPMethod::Publish(content.publish.clone()));
        let outcome = self
            .hub
            .publish(
                self.conn,
                ch,
                &content.publish,
                content.properties,
                content.body,
            )
            .map_err(|e| e.during(&method))?;
        if outcome.wrote_to_disk
            && (confirm.is_some() || self.hub.config.flush == AmqpFlushPolicy::EveryPublish)
        {
            self.need_sync = true;
        }
        if let Some(seq) = confirm {
            self.confirms.push((ch, seq, !outcome.refused));
        }
        Ok(())
    }

    /// After a batch of frames: fsync what confirms (or the flush policy)
    /// need on disk, then send the confirms, one `multiple` ack per channel
    /// when nothing in the batch was refused.
    async fn finish_batch(&mut self) {
        if self.need_sync {
            self.need_sync = false;
            self.hub.sync().await;
        }
        if self.confirms.is_empty() {
            return;
        }
        let confirms = std::mem::take(&mut self.confirms);
        let mut by_channel: Vec<(u16, Vec<(u64, bool)>)> = Vec::new();
        for (ch, seq, ack) in confirms {
            match by_channel.iter_mut().find(|(c, _)| *c == ch) {
                Some((_, v)) => v.push((seq, ack)),
                None => by_channel.push((ch, vec![(seq, ack)])),
            }
        }
        for (ch, results) in by_channel {
            if results.iter().all(|(_, ack)| *ack) {
                let last = results.last().map_or(0, |(s, _)| *s);
                self.send(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: last,
                        multiple: results.len() > 1,
                    })),
                );
                continue;
            }
            for (seq, ack) in results {
                let m = match ack {
                    true => basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: seq,
                        multiple: false,
                    }),
                    false => basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    }),
                };
                self.send(ch, AMQPClass::Basic(m));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
