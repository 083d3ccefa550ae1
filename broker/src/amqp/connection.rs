//! One AMQP connection: the handshake (`handshake.rs`), then a loop that
//! reads bytes into the state machine (`state.rs`), watches heartbeats,
//! close-ok and shutdown, and syncs the disk before confirms go out. A
//! writer task owns the socket's write half: every outgoing frame goes
//! through its queue, so writes keep the order in which they were made, and
//! it sends heartbeats when idle. A peer silent for two heartbeat intervals
//! is disconnected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

use super::codec;
use super::error::*;
use super::handshake::handshake;
use super::hub::AmqpHub;
use super::state::Session;
use crate::core::io;
use crate::metrics::{Protocol, ProtocolCounters};

/// Queued frames are written in batches of up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a closing side waits for the peer's close-ok.
const CLOSE_OK_WAIT: Duration = Duration::from_secs(1);

pub async fn serve(stream: TcpStream, hub: Arc<AmqpHub>, shutdown: watch::Receiver<bool>) {
    let _slot = match hub.connection_permits.take() {
        Ok(slot) => slot,
        Err(refusal) => {
            hub.metrics
                .connection_refused(Protocol::Amqp, refusal.kind());
            return;
        }
    };
    hub.metrics.connection_opened(Protocol::Amqp);
    let counters = hub.metrics.counters(Protocol::Amqp);
    let peer = stream.peer_addr().ok();
    let why = run(stream, &hub, shutdown, &counters).await;
    tracing::debug!("amqp connection {peer:?} closed: {why}");
    hub.metrics.connection_closed(Protocol::Amqp);
}

/// Reads from the socket into `buf`; `Err` says why the connection ends.
pub(super) async fn fill(
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

pub(super) async fn write_now(
    wr: &mut OwnedWriteHalf,
    out: &[u8],
    counters: &ProtocolCounters,
) -> Result<(), String> {
    io::write_counted(wr, out, &counters.bytes_sent)
        .await
        .map_err(|e| e.to_string())
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
    let mut session = Session::new(hub.clone(), conn, tx.clone(), tuning);
    let silence = heartbeat.map(|h| h * 2);
    let why = loop {
        session.process(&mut buf);
        if let Some(seq) = session.take_need_sync() {
            if !hub.sync_covering(seq).await {
                session.sync_failed();
            }
        }
        session.send_confirms();
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
