//! A fault-injecting TCP proxy for MQTT, between loadgen's clients and a
//! broker: in the client-to-broker direction it parses MQTT frames and drops
//! every Nth PUBLISH, sends some PUBLISH frames twice, and stalls the stream
//! once for a set time. The broker-to-client direction is copied as is.
//! Loopback only; every task ends when its connection closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Drop PUBLISH number k (1-based, over all connections) when k % n == 0.
    pub drop_every: Option<u64>,
    /// Send PUBLISH number k twice when k % n == 0 (and it is not dropped).
    pub duplicate_every: Option<u64>,
    /// Before forwarding PUBLISH number k, stop forwarding for this long.
    pub stall: Option<(u64, Duration)>,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub publishes: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = broker.set_nodelay(true);
                let (client_r, client_w) = client.into_split();
                let (broker_r, broker_w) = broker.into_split();
                tokio::spawn(copy_plain(broker_r, client_w));
                tokio::spawn(forward_frames(client_r, broker_w, faults, c.clone()));
            }
        });
        FaultProxy {
            addr,
            counters,
            task,
        }
    }
}

async fn copy_plain(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// Reads one MQTT frame: fixed header byte, remaining length, body.
async fn read_frame(from: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let first = from.read_u8().await.ok()?;
    let mut frame = vec![first];
    let mut remaining: usize = 0;
    for i in 0..4 {
        let b = from.read_u8().await.ok()?;
        frame.push(b);
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    // The broker under test refuses larger frames anyway; keep the proxy bounded.
    if remaining > 1 << 20 {
        return None;
    }
    let start = frame.len();
    frame.resize(start + remaining, 0);
    from.read_exact(&mut frame[start..]).await.ok()?;
    Some(frame)
}

async fn forward_frames(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Faults,
    counters: Arc<Counters>,
) {
    while let Some(frame) = read_frame(&mut from).await {
        let mut copies = 1;
        if frame[0] >> 4 == 3 {
            let k = counters.publishes.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some((at, pause)) = faults.stall {
                if k == at {
                    tokio::time::sleep(pause).await;
                }
            }
            if faults.drop_every.is_some_and(|n| k % n == 0) {
                counters.dropped.fetch_add(1, Ordering::SeqCst);
                copies = 0;
            } else if faults.duplicate_every.is_some_and(|n| k % n == 0) {
                counters.duplicated.fetch_add(1, Ordering::SeqCst);
                copies = 2;
            }
        }
        for _ in 0..copies {
            if to.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
    let _ = to.shutdown().await;
}
