//! The write path every connection loop (MQTT, Kafka, AMQP) goes through: a
//! write that cannot make progress within [`WRITE_TIMEOUT`] ends the
//! connection, and the bytes written are counted as sent.

use std::future::Future;
use std::io;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A write that cannot make progress for this long means a dead or stuck peer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a last word to a departing peer (a DISCONNECT, a close frame) may
/// take: the connection is ending anyway, so a stuck peer is not waited for.
pub const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a write ended the connection; the text is what the connection logs.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("write failed: {0}")]
    Failed(#[source] io::Error),
    #[error("write timed out")]
    TimedOut,
}

/// Runs `write` within [`WRITE_TIMEOUT`].
pub async fn write_timed(write: impl Future<Output = io::Result<()>>) -> Result<(), WriteError> {
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WriteError::Failed(e)),
        Err(_) => Err(WriteError::TimedOut),
    }
}

/// Runs `write`, which writes `len` bytes, within [`WRITE_TIMEOUT`], and adds
/// `len` to `bytes_sent` when it completes.
pub async fn write_within(
    write: impl Future<Output = io::Result<()>>,
    len: usize,
    bytes_sent: &Counter,
) -> Result<(), WriteError> {
    write_timed(write).await?;
    bytes_sent.inc_by(len as u64);
    Ok(())
}

/// Writes all of `bytes` to `w` and flushes it (a TLS stream holds
/// encrypted records until flushed; for TCP it costs nothing) through
/// [`write_within`].
pub async fn write_counted<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    bytes_sent: &Counter,
) -> Result<(), WriteError> {
    let write = async {
        w.write_all(bytes).await?;
        w.flush().await
    };
    write_within(write, bytes.len(), bytes_sent).await
}

/// Best-effort last write to a peer that is being disconnected: bounded by
/// [`FAREWELL_TIMEOUT`], errors ignored, nothing counted.
pub async fn farewell(write: impl Future<Output = io::Result<()>>) {
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_what_was_written() {
        let sent = Counter::default();
        let mut sink = Vec::new();
        write_counted(&mut sink, b"hello", &sent).await.unwrap();
        assert_eq!(sink, b"hello");
        assert_eq!(sent.get(), 5);
    }

    #[tokio::test]
    async fn a_failed_write_is_not_counted() {
        let sent = Counter::default();
        let err = write_within(
            async { Err(io::Error::from(io::ErrorKind::BrokenPipe)) },
            5,
            &sent,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().starts_with("write failed: "), "{err}");
        assert_eq!(sent.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_write_times_out() {
        let sent = Counter::default();
        let err = write_within(std::future::pending(), 5, &sent)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "write timed out");
        assert_eq!(sent.get(), 0);
    }
}
