//! One Kafka connection: read frames, answer each request in order.
//!
//! A bad frame size (negative, beyond `max_frame_bytes` — or, for every api
//! but Produce, beyond `max_request_bytes` — or too short for a header) or a
//! request that does not decode closes this connection only; an API or
//! version not served is answered with UNSUPPORTED_VERSION.
//!
//! Before a request's body is read, its size (and the most its decode may
//! allocate) is reserved in the broker-wide `decode_budget_bytes` (waiting up
//! to 10 s for room), and given back once it is handled — for Fetch,
//! JoinGroup and SyncGroup, which may wait, once it is decoded; a request
//! larger than the whole budget is refused.
//!
//! A connection must send its first complete request within
//! `first_request_timeout_ms` and then one at least every
//! `connections_max_idle_ms`, or it is closed. Buffers grown for a large
//! request or response are given back once it has been handled, so an idle
//! connection holds no read buffer and at most a small write buffer.
//!
//! Where the listener requires a login (`kafka.allow_anonymous`), only
//! ApiVersions, SaslHandshake and SaslAuthenticate are taken before it, each
//! at most [`sasl::MAX_PRE_LOGIN_FRAME_BYTES`], and the login must be done
//! within `first_request_timeout_ms`; any other request closes the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::codec;
use super::dispatch;
use super::hub::KafkaHub;
use super::sasl::{self, Login};
use crate::auth::ListenerAuth;
use crate::core::io;
use crate::core::stream::{ClientStream, Incoming};
use crate::metrics::{Protocol, ProtocolCounters};

/// The listener a connection came in on; it decides the port announced in
/// Metadata and FindCoordinator (a TLS client must be sent to the TLS port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Plain,
    Tls,
}

/// Why a request closes its connection: the `protocol_errors_total{kind}`
/// label, and the reason logged.
#[derive(Debug)]
pub struct Close {
    pub kind: &'static str,
    pub why: String,
}

impl From<codec::DecodeError> for Close {
    fn from(e: codec::DecodeError) -> Close {
        Close {
            kind: "malformed_request",
            why: e.to_string(),
        }
    }
}

/// What a connection knows about its client: the listener it came in on and
/// its login.
#[derive(Debug)]
pub struct Session {
    pub listener: Listener,
    pub login: Login,
}

/// Responses are written once this much is queued, or when no request is waiting.
const WRITE_BATCH: usize = 64 * 1024;
/// Room made in the read buffer when data arrives.
const READ_CHUNK: usize = 16 * 1024;
/// A written-out response buffer larger than this is given back rather than reused.
const KEEP_WRITE_BUFFER: usize = 2 * WRITE_BATCH;

pub async fn serve(
    incoming: Incoming,
    hub: Arc<KafkaHub>,
    mut shutdown: watch::Receiver<bool>,
    auth: ListenerAuth,
) {
    let _slot = match hub.connection_permits.take() {
        Ok(slot) => slot,
        Err(refusal) => {
            hub.metrics
                .connection_refused(Protocol::Kafka, refusal.kind());
            return;
        }
    };
    // The TLS handshake is part of the first request's allowance.
    let deadline = Instant::now() + Duration::from_millis(hub.config.first_request_timeout_ms);
    let listener = match incoming.is_tls() {
        true => Listener::Tls,
        false => Listener::Plain,
    };
    let Some(stream) = incoming
        .establish(deadline, Protocol::Kafka, &mut shutdown)
        .await
    else {
        return;
    };
    hub.metrics.connection_opened(Protocol::Kafka);
    let counters = hub.metrics.counters(Protocol::Kafka);
    let session = Session {
        listener,
        login: Login::new(auth),
    };
    let why = run(stream, &hub, shutdown, &counters, deadline, session).await;
    tracing::debug!("kafka connection closed: {why}");
    hub.metrics.connection_closed(Protocol::Kafka);
}

/// The connection's read and write buffers.
#[derive(Default)]
struct Buffers {
    /// Bytes read and not yet split into requests.
    read: BytesMut,
    /// Responses not yet written.
    write: BytesMut,
}

impl Buffers {
    /// Called when every whole request has been handled and the responses
    /// written: an empty read buffer is dropped (it may share one large
    /// allocation with the last request), and a write buffer grown beyond
    /// [`KEEP_WRITE_BUFFER`] is replaced by an empty one. A partly received
    /// request keeps its buffer.
    fn release_idle(&mut self) {
        if self.read.is_empty() {
            self.read = BytesMut::new();
        }
        if self.write.is_empty() && self.write.capacity() > KEEP_WRITE_BUFFER {
            self.write = BytesMut::new();
        }
    }
}

/// Reads what arrived into `buf`, making room only once data is there (an
/// idle connection holds no read buffer). Cancel-safe: it is raced in `select!`.
///
/// `pending` is what is still missing of a frame whose room was reserved:
/// while that room is there nothing more is reserved (growing a buffer that
/// holds a large frame would copy it into one twice its size).
async fn read_more(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    pending: Option<usize>,
) -> std::io::Result<usize> {
    stream
        .read_more(buf, |buf| {
            let spare = buf.capacity() - buf.len();
            let room_reserved = pending.is_some_and(|missing| spare >= missing && spare > 0);
            if !room_reserved && spare < READ_CHUNK / 2 {
                buf.reserve(READ_CHUNK);
            }
        })
        .await
}

async fn write(
    stream: &mut ClientStream,
    out: &mut BytesMut,
    counters: &ProtocolCounters,
) -> Result<(), String> {
    if out.is_empty() {
        return Ok(());
    }
    io::write_counted(stream, out, &counters.bytes_sent)
        .await
        .map_err(|e| e.to_string())?;
    out.clear();
    Ok(())
}

/// How long a request waits for room in `kafka.decode_budget_bytes`
/// before its connection is closed.
const DECODE_BUDGET_WAIT: Duration = Duration::from_secs(10);

/// Time allowed for a request body once its bytes are reserved in the budget:
/// 10 s plus 1 s per MiB, so a client trickling a frame cannot hold the
/// budget for long.
fn body_deadline(size: usize) -> Instant {
    let mib = u64::try_from(size >> 20).unwrap_or(u64::MAX);
    Instant::now() + Duration::from_secs(10u64.saturating_add(mib))
}

/// Reserves a request's share of the broker-wide decode budget: its frame
/// and the most its decode may allocate (`codec::decode_footprint`), at most
/// the whole budget (such a request is read and decoded alone). Waits at most
/// [`DECODE_BUDGET_WAIT`]; `Err` names the `errors{kind}` and the reason.
async fn reserve_budget(
    hub: &KafkaHub,
    api_key: i16,
    size: usize,
) -> Result<OwnedSemaphorePermit, (&'static str, String)> {
    let too_large = || {
        (
            "decode_budget_exceeded",
            format!(
                "request of {size} bytes is beyond kafka.decode_budget_bytes ({})",
                hub.decode_budget_bytes
            ),
        )
    };
    if size > hub.decode_budget_bytes {
        return Err(too_large());
    }
    let charge = codec::decode_footprint(api_key, size).min(hub.decode_budget_bytes);
    let n = u32::try_from(charge).map_err(|_| too_large())?;
    match tokio::time::timeout(
        DECODE_BUDGET_WAIT,
        hub.decode_budget.clone().acquire_many_owned(n),
    )
    .await
    {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_closed)) => Err(("decode_budget_timeout", "decode budget closed".into())),
        Err(_) => Err((
            "decode_budget_timeout",
            format!(
                "no room for a request of {size} bytes in kafka.decode_budget_bytes within {DECODE_BUDGET_WAIT:?}"
            ),
        )),
    }
}

async fn run(
    mut stream: ClientStream,
    hub: &Arc<KafkaHub>,
    mut shutdown: watch::Receiver<bool>,
    counters: &ProtocolCounters,
    first_request_deadline: Instant,
    mut session: Session,
) -> String {
    let idle = Duration::from_millis(hub.config.connections_max_idle_ms);
    let mut deadline = first_request_deadline;
    let mut requests_seen = false;
    let mut bufs = Buffers::default();
    // The decode budget held for the request being read, and its body's deadline.
    let mut reserved: Option<(OwnedSemaphorePermit, Instant)> = None;
    loop {
        if session.login.awaits_raw_token() {
            match raw_token(hub, &mut session, &mut bufs).await {
                Err(close) => {
                    hub.metrics.protocol_error(Protocol::Kafka, close.kind);
                    let _ = write(&mut stream, &mut bufs.write, counters).await;
                    return close.why;
                }
                Ok(true) => {
                    requests_seen = true;
                    if session.login.may_serve() {
                        deadline = Instant::now() + idle;
                    }
                    continue;
                }
                Ok(false) => {}
            }
        }
        // Before a required login, every request is held to the SASL size.
        let (max_frame, max_request) = match session.login.may_serve() {
            true => (hub.config.max_frame_bytes, hub.config.max_request_bytes),
            false => (
                sasl::MAX_PRE_LOGIN_FRAME_BYTES.min(hub.config.max_frame_bytes),
                sasl::MAX_PRE_LOGIN_FRAME_BYTES.min(hub.config.max_request_bytes),
            ),
        };
        let next = match session.login.awaits_raw_token() {
            true => None,
            false => match codec::peek_frame(&bufs.read, max_frame, max_request) {
                Err(e) => {
                    hub.metrics.protocol_error(Protocol::Kafka, e.kind());
                    let _ = write(&mut stream, &mut bufs.write, counters).await;
                    return e.to_string();
                }
                Ok(next) => next,
            },
        };
        if let (Some(size), None) = (next, &reserved) {
            // Written first: a client waiting for earlier answers before it
            // sends the rest must not hold the budget meanwhile.
            if let Err(e) = write(&mut stream, &mut bufs.write, counters).await {
                return e;
            }
            let permit = tokio::select! {
                r = reserve_budget(hub, i16::from_be_bytes([bufs.read[4], bufs.read[5]]), size) => r,
                _ = shutdown.changed() => return "broker shutting down".into(),
            };
            match permit {
                Ok(permit) => reserved = Some((permit, body_deadline(size))),
                Err((kind, why)) => {
                    hub.metrics.protocol_error(Protocol::Kafka, kind);
                    return why;
                }
            }
            // Room for the body only once it is paid for.
            bufs.read
                .reserve((4 + size).saturating_sub(bufs.read.len()));
        }
        let frame = next.and_then(|size| codec::take_frame(&mut bufs.read, size));
        if let Some(frame) = frame {
            requests_seen = true;
            let permit = reserved.take().map(|(p, _)| p);
            if dispatch::may_wait(codec::request_start(&frame).api_key) {
                if let Err(e) = write(&mut stream, &mut bufs.write, counters).await {
                    return e;
                }
            }
            let handled = tokio::select! {
                r = dispatch::handle(hub, frame, permit, &mut bufs.write, counters, &mut session) => r,
                _ = shutdown.changed() => return "broker shutting down".into(),
            };
            if let Err(close) = handled {
                hub.metrics.protocol_error(Protocol::Kafka, close.kind);
                let _ = write(&mut stream, &mut bufs.write, counters).await;
                return close.why;
            }
            // A login still owed keeps the first request's deadline.
            if session.login.may_serve() {
                deadline = Instant::now() + idle;
            }
            if bufs.write.len() >= WRITE_BATCH {
                if let Err(e) = write(&mut stream, &mut bufs.write, counters).await {
                    return e;
                }
            }
            continue;
        }
        if let Err(e) = write(&mut stream, &mut bufs.write, counters).await {
            return e;
        }
        bufs.release_idle();
        let body_deadline = reserved.as_ref().map(|(_, d)| *d);
        let pending = next
            .filter(|_| reserved.is_some())
            .map(|size| (4 + size).saturating_sub(bufs.read.len()));
        let wait_until = body_deadline.map_or(deadline, |d| d.min(deadline));
        let read = tokio::select! {
            r = read_more(&mut stream, &mut bufs.read, pending) => r,
            _ = tokio::time::sleep_until(wait_until) => {
                let (kind, why) = match (requests_seen, body_deadline.is_some_and(|d| d <= deadline)) {
                    (_, true) => ("request_body_timeout", "request body not received in time (10 s + 1 s per MiB)"),
                    (true, false) if !session.login.may_serve() => ("sasl_login_timeout", "no SASL login within kafka.first_request_timeout_ms"),
                    (false, false) => ("handshake_timeout", "no complete request within kafka.first_request_timeout_ms"),
                    (true, false) => ("idle_timeout", "no request within kafka.connections_max_idle_ms"),
                };
                hub.metrics.protocol_error(Protocol::Kafka, kind);
                return why.into();
            }
            _ = shutdown.changed() => return "broker shutting down".into(),
        };
        match read {
            Ok(0) if bufs.read.is_empty() => return "closed by the client".into(),
            Ok(0) => {
                hub.metrics
                    .protocol_error(Protocol::Kafka, "truncated_frame");
                return "closed by the client in the middle of a request".into();
            }
            Ok(n) => {
                counters.bytes_received.inc_by(n as u64);
            }
            Err(e) => return format!("read failed: {e}"),
        }
    }
}

/// Handles the raw SASL token (after SaslHandshake v0) at the start of the
/// read buffer, if all of it is there: `Ok(true)` when one was handled.
async fn raw_token(
    hub: &KafkaHub,
    session: &mut Session,
    bufs: &mut Buffers,
) -> Result<bool, Close> {
    let Some(size) = sasl::peek_raw_token(&bufs.read)? else {
        return Ok(false);
    };
    let Some(token) = codec::take_frame(&mut bufs.read, size) else {
        return Ok(false);
    };
    session
        .login
        .raw_token(&hub.sasl, &hub.metrics, &token, &mut bufs.write)
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    #[test]
    fn buffers_shrink_after_a_large_request_and_response() {
        let mut bufs = Buffers::default();
        // A 4 MiB request arrives, in chunks as from the socket.
        let size = 4 << 20;
        bufs.read.put_i32(size as i32);
        let chunk = vec![7u8; 64 * 1024];
        while bufs.read.len() < 4 + size {
            let n = chunk.len().min(4 + size - bufs.read.len());
            bufs.read.extend_from_slice(&chunk[..n]);
        }
        let frame = codec::next_frame(&mut bufs.read, 100 << 20)
            .unwrap()
            .expect("a whole frame");
        assert_eq!(frame.len(), size);
        drop(frame);
        // Its 4 MiB response is queued and written.
        bufs.write.extend_from_slice(&vec![1u8; 4 << 20]);
        assert!(bufs.write.capacity() >= 4 << 20);
        bufs.write.clear();
        bufs.release_idle();
        assert_eq!(bufs.read.capacity(), 0, "idle: no read buffer");
        assert_eq!(bufs.write.capacity(), 0, "large write buffer given back");
    }

    #[test]
    fn small_write_buffer_is_kept_and_a_partial_request_keeps_its_bytes() {
        let mut bufs = Buffers::default();
        bufs.write.extend_from_slice(&[0u8; 1024]);
        let kept = bufs.write.capacity();
        bufs.write.clear();
        bufs.read.extend_from_slice(&[0, 0, 0, 100, 1, 2]);
        bufs.release_idle();
        assert_eq!(bufs.write.capacity(), kept);
        assert_eq!(&bufs.read[..], &[0, 0, 0, 100, 1, 2]);
    }
}
