//! What AMQP holds in memory, and the bounds on it.
//!
//! - [`Charge`]: bytes counted in the hub-wide total for as long as the
//!   charge lives (message bodies in queues and unacked, content being
//!   assembled). The total drives the memory high-watermark
//!   (`connection.blocked`).
//! - [`Outbound`]: one connection's queue of frames to write, with the bytes
//!   waiting counted. Producers do not block (the hub's lock is held while
//!   frames are queued): instead, once `max_outbound_bytes` are waiting, the
//!   connection stops being read and deliveries to it wait in their queues,
//!   until the writer has brought it below half of that.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;

/// Bytes counted in a shared total while this lives.
#[derive(Debug, Default)]
pub struct Charge {
    bytes: usize,
    total: Option<Arc<AtomicUsize>>,
}

impl Charge {
    pub fn new(total: &Arc<AtomicUsize>, bytes: usize) -> Charge {
        total.fetch_add(bytes, Ordering::SeqCst);
        Charge {
            bytes,
            total: Some(total.clone()),
        }
    }

    /// Counts `bytes` instead of what was counted so far.
    pub fn set(&mut self, bytes: usize) {
        if let Some(t) = &self.total {
            if bytes >= self.bytes {
                t.fetch_add(bytes - self.bytes, Ordering::SeqCst);
            } else {
                t.fetch_sub(self.bytes - bytes, Ordering::SeqCst);
            }
        }
        self.bytes = bytes;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Clone for Charge {
    fn clone(&self) -> Charge {
        match &self.total {
            Some(t) => Charge::new(t, self.bytes),
            None => Charge::default(),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(t) = &self.total {
            t.fetch_sub(self.bytes, Ordering::SeqCst);
        }
    }
}

/// Two messages are equal whatever they are charged to.
impl PartialEq for Charge {
    fn eq(&self, _: &Charge) -> bool {
        true
    }
}

/// One connection's outgoing frames and the bytes of them not yet written.
#[derive(Debug)]
pub struct Outbound {
    tx: UnboundedSender<Bytes>,
    pending: AtomicUsize,
    /// The hub-wide total these bytes are also counted in.
    total: Arc<AtomicUsize>,
    max: usize,
    /// Signalled when the writer has brought `pending` below the low mark.
    pub room: Notify,
    /// A delivery was held back for lack of room: the writer asks the hub
    /// to dispatch again once there is.
    starved: AtomicBool,
}

impl Outbound {
    pub fn new(tx: UnboundedSender<Bytes>, max: usize, total: Arc<AtomicUsize>) -> Arc<Outbound> {
        Arc::new(Outbound {
            tx,
            pending: AtomicUsize::new(0),
            total,
            max: max.max(1),
            room: Notify::new(),
            starved: AtomicBool::new(false),
        })
    }

    /// Queues frames for the writer (always: the bound is kept by not
    /// reading and not delivering, see [`Outbound::has_room`]).
    pub fn send(&self, bytes: Bytes) {
        let n = bytes.len();
        self.pending.fetch_add(n, Ordering::SeqCst);
        self.total.fetch_add(n, Ordering::SeqCst);
        if self.tx.send(bytes).is_err() {
            self.pending.fetch_sub(n, Ordering::SeqCst);
            self.total.fetch_sub(n, Ordering::SeqCst);
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Below `max_outbound_bytes`: the connection may be read and delivered to.
    pub fn has_room(&self) -> bool {
        self.pending() < self.max
    }

    /// Below half of `max_outbound_bytes`: a paused connection resumes.
    pub fn below_low(&self) -> bool {
        self.pending() < self.max / 2
    }

    /// Whether a delivery may go out now; when not, notes that one waits
    /// (set before looking, so a writer draining at the same time sees it).
    pub fn room_for_delivery(&self) -> bool {
        self.starved.store(true, Ordering::SeqCst);
        self.has_room()
    }

    /// The writer wrote `n` bytes; true when deliveries held back should be
    /// dispatched again.
    pub fn written(&self, n: usize) -> bool {
        self.pending.fetch_sub(n, Ordering::SeqCst);
        self.total.fetch_sub(n, Ordering::SeqCst);
        if self.below_low() {
            self.room.notify_one();
            return self.starved.swap(false, Ordering::SeqCst);
        }
        false
    }
}

impl Drop for Outbound {
    /// Frames never written no longer count.
    fn drop(&mut self) {
        self.total
            .fetch_sub(*self.pending.get_mut(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    #[test]
    fn charges_follow_clones_and_drops() {
        let total = Arc::new(AtomicUsize::new(0));
        let a = Charge::new(&total, 10);
        let b = a.clone();
        assert_eq!(total.load(Ordering::SeqCst), 20);
        drop(a);
        let mut c = Charge::new(&total, 5);
        c.set(2);
        assert_eq!(total.load(Ordering::SeqCst), 12);
        drop((b, c));
        assert_eq!(total.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn outbound_counts_until_written_and_resumes_below_half() {
        let total = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let out = Outbound::new(tx, 100, total.clone());
        assert!(out.room_for_delivery());
        out.send(Bytes::from(vec![0; 120]));
        assert!(!out.room_for_delivery(), "over the bound");
        assert_eq!(total.load(Ordering::SeqCst), 120);
        let b = rx.try_recv().unwrap();
        assert!(!out.written(60), "70 left: not below half yet");
        assert!(out.written(b.len() - 60), "empty: held deliveries go out");
        assert!(!out.written(0), "asked once");
        out.send(Bytes::from_static(b"abc"));
        drop(out);
        assert_eq!(
            total.load(Ordering::SeqCst),
            0,
            "unwritten frames uncounted"
        );
    }
}
