//! One MQTT connection: the handshake (`handshake.rs`), then a loop that
//! reads bytes into the state machine (`state.rs`), writes what it queued,
//! and watches the keep-alive, take-overs, full subscriber queues (waited
//! for a bounded time), the in-flight timeout, eviction of a slow
//! subscriber, and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{oneshot, watch};
use tokio::time::timeout;

use super::handshake::{handshake, Accepted};
use super::hub::{Departure, MqttHub};
use super::packet::reason;
use super::session::{Kick, Session};
use super::state::{Connection, Exit, Step};
use super::transport::Transport;
use crate::auth::ListenerAuth;
use crate::core::io::{farewell, write_within};
use crate::core::stream::Incoming;
use crate::metrics::Protocol;

/// Serves a client of the MQTT (or MQTT over TLS) listener: the TLS
/// handshake, if any, and CONNECT must both arrive within `connect_timeout_secs`.
pub async fn serve_incoming(
    incoming: Incoming,
    hub: Arc<MqttHub>,
    mut shutdown: watch::Receiver<bool>,
    login: ListenerAuth,
) {
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(hub.config.connect_timeout_secs);
    if let Some(io) = incoming
        .establish(deadline, Protocol::Mqtt, &mut shutdown)
        .await
    {
        serve(io, hub, shutdown, deadline, login).await;
    }
}

/// Serves one client from its first byte to its last; CONNECT must arrive
/// by `connect_deadline`.
pub async fn serve<T: Transport>(
    mut io: T,
    hub: Arc<MqttHub>,
    mut shutdown: watch::Receiver<bool>,
    connect_deadline: tokio::time::Instant,
    login: ListenerAuth,
) {
    let accepted = handshake(&mut io, &hub, &mut shutdown, connect_deadline, &login).await;
    let Some(accepted) = accepted else {
        return;
    };
    let Accepted {
        mut conn,
        buf,
        keep_alive,
        kicked,
        permit,
    } = accepted;
    let exit = run(&mut conn, &mut io, buf, keep_alive, kicked, &mut shutdown).await;

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

/// Resolves when `session` signals room in its queue (or that it was marked
/// slow), after a short interval, or at `deadline` (the end of the pause):
/// `notify_waiters` keeps no permit, so the caller re-checks.
async fn wait_for_space(session: Option<Arc<Session>>, deadline: Option<Instant>) {
    if let Some(session) = session {
        let now = Instant::now();
        let left = deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
        let _ = timeout(
            left.min(Duration::from_millis(50)),
            session.space.notified(),
        )
        .await;
    }
}

/// Hands the bytes in `buf` to the state machine until it has handled every
/// whole packet (yielding to other tasks when it asks); `Some` when the
/// connection ends.
async fn process<T: Transport>(
    conn: &mut Connection,
    io: &mut T,
    buf: &mut BytesMut,
) -> Option<Exit> {
    loop {
        match conn.process(buf) {
            Step::Idle => return None,
            Step::Yield => tokio::task::yield_now().await,
            Step::Exit(exit) => return Some(exit),
            Step::Failed => {
                farewell(io.write_all(&conn.out)).await;
                conn.out.clear();
                return Some(Exit::WithWill);
            }
        }
    }
}

async fn run<T: Transport>(
    conn: &mut Connection,
    io: &mut T,
    mut buf: BytesMut,
    keep_alive: Option<Duration>,
    mut kicked: oneshot::Receiver<Kick>,
    shutdown: &mut watch::Receiver<bool>,
) -> Exit {
    let far_future = Instant::now() + Duration::from_secs(86_400 * 365);
    let deadline = |now: Instant| keep_alive.map_or(far_future, |ka| now + ka);
    // One timer for the keep-alive and the in-flight timeout (one fewer per
    // connection to hold), armed at the earlier of the two deadlines.
    let mut keep_alive_deadline = deadline(Instant::now());
    let mut armed = keep_alive_deadline;
    let timer = tokio::time::sleep_until(armed.into());
    tokio::pin!(timer);
    let mut kick_open = true;
    loop {
        if !conn.out.is_empty() {
            let n = conn.out.len();
            let written = write_within(io.write_all(&conn.out), n, &conn.counters.bytes_sent);
            // A subscriber that does not read blocks this write; when it is
            // marked slow under the `disconnect` policy it goes at once, not
            // after the write timeout. No farewell: the stream may be mid-packet.
            tokio::select! {
                r = written => if r.is_err() {
                    return Exit::WithWill;
                },
                _ = conn.session.evicted() => return Exit::WithWill,
            }
            if conn.out.capacity() > conn.hub.limits.read_buffer_size {
                conn.out = BytesMut::new();
            } else {
                conn.out.clear();
            }
        }
        let inflight_deadline = conn.inflight_deadline().unwrap_or(far_future);
        let due = keep_alive_deadline.min(inflight_deadline);
        if due != armed {
            armed = due;
            timer.as_mut().reset(due.into());
        }
        let paused_on = conn.paused_on.first().cloned();
        let pause_deadline = conn.pause_deadline();
        tokio::select! {
            _ = shutdown.changed() => {
                conn.disconnect_v5(reason::SERVER_SHUTTING_DOWN);
                farewell(io.write_all(&conn.out)).await;
                return Exit::Shutdown;
            }
            kick = &mut kicked, if kick_open => match kick {
                Ok(kick) => {
                    conn.disconnect_v5(reason::SESSION_TAKEN_OVER);
                    farewell(io.write_all(&conn.out)).await;
                    return Exit::TakenOver(kick);
                }
                Err(_) => kick_open = false,
            },
            _ = &mut timer, if armed != far_future => {
                let now = Instant::now();
                if inflight_deadline <= now {
                    conn.inflight_timed_out();
                    farewell(io.write_all(&conn.out)).await;
                    return Exit::WithWill;
                }
                if keep_alive_deadline <= now {
                    conn.keep_alive_expired();
                    farewell(io.write_all(&conn.out)).await;
                    return Exit::WithWill;
                }
                // Fired early: arm it again at the next pass.
                armed = far_future;
            }
            _ = conn.session.evicted() => {
                conn.disconnect_v5(reason::QUOTA_EXCEEDED);
                farewell(io.write_all(&conn.out)).await;
                return Exit::WithWill;
            }
            _ = wait_for_space(paused_on.clone(), pause_deadline), if paused_on.is_some() => {
                let now = Instant::now();
                // Not reading is our doing, not the client's silence.
                keep_alive_deadline = deadline(now);
                if conn.recheck_paused(now) {
                    // Packets already read while paused are handled before reading more.
                    if let Some(exit) = process(conn, io, &mut buf).await {
                        return exit;
                    }
                    conn.drain_queue();
                }
            }
            read = io.read_into(&mut buf, conn.hub.limits.read_buffer_size), if paused_on.is_none() => {
                let n = match read {
                    Ok(0) | Err(_) => return Exit::WithWill,
                    Ok(n) => n,
                };
                conn.counters.bytes_received.inc_by(n as u64);
                keep_alive_deadline = deadline(Instant::now());
                if let Some(exit) = process(conn, io, &mut buf).await {
                    return exit;
                }
                if buf.is_empty() {
                    // Give the read buffer back while the client is quiet: idle
                    // connections then cost a few hundred bytes, not a buffer each.
                    buf = BytesMut::new();
                }
                conn.drain_queue();
            }
            _ = conn.session.notify.notified() => conn.drain_queue(),
        }
    }
}
