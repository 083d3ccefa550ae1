//! One Kafka connection: read frames, answer each request in order.
//!
//! A bad frame size (negative, beyond `max_frame_bytes`, or too short for a
//! header) or a request that does not decode closes this connection only;
//! an API or version not served is answered with UNSUPPORTED_VERSION.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::codec;
use super::dispatch;
use super::hub::KafkaHub;
use crate::core::io;
use crate::metrics::{Protocol, ProtocolCounters};

/// Responses are written once this much is queued, or when no request is waiting.
const WRITE_BATCH: usize = 64 * 1024;

pub async fn serve(stream: TcpStream, hub: Arc<KafkaHub>, shutdown: watch::Receiver<bool>) {
    let Ok(_permit) = hub.connection_permits.clone().try_acquire_owned() else {
        hub.metrics
            .connection_refused(Protocol::Kafka, "max_connections");
        return;
    };
    hub.metrics.connection_opened(Protocol::Kafka);
    let counters = hub.metrics.counters(Protocol::Kafka);
    let why = run(stream, &hub, shutdown, &counters).await;
    tracing::debug!("kafka connection closed: {why}");
    hub.metrics.connection_closed(Protocol::Kafka);
}

async fn write(
    stream: &mut TcpStream,
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

async fn run(
    mut stream: TcpStream,
    hub: &Arc<KafkaHub>,
    mut shutdown: watch::Receiver<bool>,
    counters: &ProtocolCounters,
) -> String {
    let max = hub.config.max_frame_bytes;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::new();
    loop {
        match codec::next_frame(&mut buf, max) {
            Err(e) => {
                hub.metrics.protocol_error(Protocol::Kafka, e.kind());
                let _ = write(&mut stream, &mut out, counters).await;
                return e.to_string();
            }
            Ok(Some(frame)) => {
                if dispatch::may_wait(codec::request_start(&frame).api_key) {
                    if let Err(e) = write(&mut stream, &mut out, counters).await {
                        return e;
                    }
                }
                let handled = tokio::select! {
                    r = dispatch::handle(hub, frame, &mut out, counters) => r,
                    _ = shutdown.changed() => return "broker shutting down".into(),
                };
                if let Err(e) = handled {
                    hub.metrics
                        .protocol_error(Protocol::Kafka, "malformed_request");
                    let _ = write(&mut stream, &mut out, counters).await;
                    return e.to_string();
                }
                if out.len() >= WRITE_BATCH {
                    if let Err(e) = write(&mut stream, &mut out, counters).await {
                        return e;
                    }
                }
            }
            Ok(None) => {
                if let Err(e) = write(&mut stream, &mut out, counters).await {
                    return e;
                }
                let read = tokio::select! {
                    r = stream.read_buf(&mut buf) => r,
                    _ = shutdown.changed() => return "broker shutting down".into(),
                };
                match read {
                    Ok(0) if buf.is_empty() => return "closed by the client".into(),
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
    }
}
