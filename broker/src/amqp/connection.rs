//! One AMQP connection: the handshake (`handshake.rs`), then a loop that
//! reads bytes into the state machine (`state.rs`), watches heartbeats,
//! close-ok and shutdown, and syncs the disk before confirms go out. A
//! writer task owns the socket's write half: every outgoing frame goes
//! through its queue, so writes keep the order in which they were made, and
//! it sends heartbeats when idle. A peer silent for two heartbeat intervals
//! is disconnected.
//!
//! Memory: the writer's queue is bounded by `amqp.max_outbound_bytes` (see
//! `memory.rs`): once that much waits, the connection is not read (its
//! publishes, and the returns and replies they cause, wait in the socket)
//! and deliveries to it stay in their queues, until the writer has brought
//! it below half. A client that does not drain it below half within
//! `amqp.slow_reader_timeout_secs` is disconnected as a slow reader. While
//! the memory alarm is raised, a connection that has published is not read
//! either, after `connection.blocked` when the client understands it.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

use super::codec;
use super::error::*;
use super::handshake::{handshake, Opened, Peer};
use super::hub::{AmqpHub, ConnId};
use super::memory::Outbound;
use super::state::Session;
use crate::auth::ListenerAuth;
use crate::core::io;
use crate::core::stream::{ClientReadHalf, ClientStream, ClientWriteHalf, Incoming};
use crate::metrics::{Protocol, ProtocolCounters};

/// Queued frames are written in batches of up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a closing side waits for the peer's close-ok.
const CLOSE_OK_WAIT: Duration = Duration::from_secs(1);

pub async fn serve(
    incoming: Incoming,
    hub: Arc<AmqpHub>,
    mut shutdown: watch::Receiver<bool>,
    login: ListenerAuth,
) {
    let _slot = match hub.connection_permits.take() {
        Ok(slot) => slot,
        Err(refusal) => {
            hub.metrics
                .connection_refused(Protocol::Amqp, refusal.kind());
            return;
        }
    };
    // The TLS handshake is part of the AMQP handshake's allowance.
    let deadline = Instant::now() + Duration::from_secs(hub.config.handshake_timeout_secs);
    let Some(stream) = incoming
        .establish(deadline, Protocol::Amqp, &mut shutdown)
        .await
    else {
        return;
    };
    hub.metrics.connection_opened(Protocol::Amqp);
    let counters = hub.metrics.counters(Protocol::Amqp);
    let peer = stream.peer_addr().ok();
    let why = run(stream, &hub, shutdown, &counters, deadline, &login).await;
    tracing::debug!("amqp connection {peer:?} closed: {why}");
    hub.metrics.connection_closed(Protocol::Amqp);
}

/// Reads from the socket into `buf`; `Err` says why the connection ends.
pub(super) async fn fill(
    rd: &mut ClientReadHalf,
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

pub(super) async fn write_now(
    wr: &mut ClientWriteHalf,
    out: &[u8],
    counters: &ProtocolCounters,
) -> Result<(), String> {
    io::write_counted(wr, out, &counters.bytes_sent)
        .await
        .map_err(|e| e.to_string())
}

async fn run(
    stream: ClientStream,
    hub: &Arc<AmqpHub>,
    mut shutdown: watch::Receiver<bool>,
    counters: &ProtocolCounters,
    handshake_deadline: Instant,
    login: &ListenerAuth,
) -> String {
    let peer = Peer {
        loopback: stream
            .peer_addr()
            .is_ok_and(|a: SocketAddr| a.ip().is_loopback()),
        certificate_cn: stream.peer_common_name(),
    };
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let Opened {
        tuning,
        vhost,
        access,
    } = match tokio::time::timeout_at(
        handshake_deadline,
        handshake(&mut rd, &mut wr, &mut buf, hub, counters, (&peer, login)),
    )
    .await
    {
        Ok(Ok(opened)) => opened,
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
    let out = hub.outbound(tx);
    let conn = hub.connect_to(vhost, out.clone(), tuning.frame_max, access);
    let mut writer = tokio::spawn(write_loop(
        wr,
        rx,
        heartbeat.map(|h| h / 2),
        counters.clone(),
        Writer {
            out: Arc::downgrade(&out),
            hub: hub.clone(),
            conn,
        },
    ));
    let mut session = Session::new(hub.clone(), conn, out.clone(), tuning);
    let silence = heartbeat.map(|h| h * 2);
    let mut alarm = hub.memory_alarm();
    let why = 'conn: loop {
        session.process(&mut buf);
        if let Some(seq) = session.take_need_sync() {
            if !hub.sync_covering(conn, seq).await {
                session.sync_failed();
            }
        }
        session.send_confirms();
        if let Some(why) = session.done.take() {
            break why;
        }
        if session.closing.is_none() {
            // Backpressure: nothing more is read while the outbound queue is full.
            if !out.has_room() {
                while !out.below_low() {
                    tokio::select! {
                        _ = out.room.notified() => {}
                        r = &mut writer => break 'conn r.unwrap_or_else(|_| "writer ended".into()),
                        _ = shutdown.changed() => {
                            session.close_connection(&AmqpError::hard(CONNECTION_FORCED, "CONNECTION_FORCED - broker shutting down"));
                            break 'conn "broker shutting down".into();
                        }
                    }
                }
            }
            // The memory alarm: publishers are not read until it clears.
            if session.published && hub.check_memory() {
                let told = session.blocked_capable();
                if told {
                    session.send_blocked(Some("low on memory"));
                }
                while *alarm.borrow_and_update() {
                    tokio::select! {
                        r = alarm.changed() => if r.is_err() { break },
                        r = &mut writer => break 'conn r.unwrap_or_else(|_| "writer ended".into()),
                        _ = shutdown.changed() => {
                            session.close_connection(&AmqpError::hard(CONNECTION_FORCED, "CONNECTION_FORCED - broker shutting down"));
                            break 'conn "broker shutting down".into();
                        }
                    }
                }
                if told {
                    session.send_blocked(None);
                }
            }
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
            r = &mut writer => break r.unwrap_or_else(|_| "writer ended".into()),
        }
    };
    hub.disconnect(conn);
    drop(session);
    drop(out);
    // Let the writer flush what is queued (a close or close-ok) before the
    // socket goes; unless it has ended already (a JoinHandle polled again
    // after completion panics, and the embedded build aborts on panic).
    if !writer.is_finished() {
        let _ = timeout(CLOSE_OK_WAIT, &mut writer).await;
    }
    writer.abort();
    why
}

/// What the writer needs besides the socket: the queue's byte count, and
/// the hub to hand held-back deliveries to once there is room.
/// (Weak: the queue's sender lives in the `Outbound`, and the writer ends
/// once the connection has dropped it.)
struct Writer {
    out: Weak<Outbound>,
    hub: Arc<AmqpHub>,
    conn: ConnId,
}

/// How often a blocked write checks whether its reader is too slow.
const SLOW_CHECK: Duration = Duration::from_millis(250);

impl Writer {
    /// Tracks since when the queue has been full without draining below
    /// half; `Err` once that exceeds `amqp.slow_reader_timeout_secs`.
    fn check_slow(&self, full_since: &mut Option<Instant>) -> Result<(), String> {
        let Some(out) = self.out.upgrade() else {
            return Ok(());
        };
        if !out.has_room() {
            full_since.get_or_insert_with(Instant::now);
        } else if out.below_low() {
            *full_since = None;
        }
        let limit = Duration::from_secs(self.hub.config.slow_reader_timeout_secs);
        match full_since {
            Some(t) if t.elapsed() >= limit => {
                self.hub
                    .metrics
                    .protocol_error(Protocol::Amqp, "slow_reader");
                Err(format!(
                    "slow reader: {} bytes waiting, not drained below {} in {limit:?}",
                    out.pending(),
                    out.max() / 2
                ))
            }
            _ => Ok(()),
        }
    }

    /// Writes `bytes`, checking the slow-reader policy while the write is blocked.
    async fn write(
        &self,
        wr: &mut ClientWriteHalf,
        bytes: &[u8],
        counters: &ProtocolCounters,
        full_since: &mut Option<Instant>,
    ) -> Result<(), String> {
        self.check_slow(full_since)?;
        let write = write_now(wr, bytes, counters);
        tokio::pin!(write);
        let mut tick = tokio::time::interval_at(Instant::now() + SLOW_CHECK, SLOW_CHECK);
        loop {
            tokio::select! {
                r = &mut write => return r,
                _ = tick.tick() => self.check_slow(full_since)?,
            }
        }
    }

    fn written(&self, n: usize) {
        if self.out.upgrade().is_some_and(|out| out.written(n)) {
            self.hub.resume(self.conn);
        }
    }
}

/// Writes queued frames until the queue closes; the reason the connection
/// must end when it stops early.
async fn write_loop(
    mut wr: ClientWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    heartbeat_every: Option<Duration>,
    counters: ProtocolCounters,
    w: Writer,
) -> String {
    let mut batch = BytesMut::new();
    let mut full_since = None;
    loop {
        let next = match heartbeat_every {
            Some(every) => match timeout(every, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    let mut hb = BytesMut::new();
                    codec::put_heartbeat(&mut hb);
                    if let Err(e) = write_now(&mut wr, &hb, &counters).await {
                        return e;
                    }
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(first) = next else { break };
        if first.len() >= WRITE_BATCH {
            // A large delivery is written as it is, not copied into the batch.
            if let Err(e) = w.write(&mut wr, &first, &counters, &mut full_since).await {
                return e;
            }
            w.written(first.len());
            continue;
        }
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = w.write(&mut wr, &batch, &counters, &mut full_since).await {
            return e;
        }
        w.written(batch.len());
        batch.clear();
    }
    let _ = wr.shutdown().await;
    "closed".into()
}
