//! MQTT session state: what outlives a network connection (subscriptions,
//! queued and in-flight messages, QoS 2 receive state, the pending will).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{oneshot, Mutex as AsyncMutex, Notify};
use tokio::task::AbortHandle;

use super::packet::{LastWill, ProtocolVersion, QoS, SubscriptionOptions};
use crate::core::{ClientId, Message};

/// Session expiry value meaning "never expires" (MQTT 5.0 0xFFFFFFFF; 3.1.1 clean session = 0).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// A subscription as stored in the trie: which session, with what options.
#[derive(Debug, Clone)]
pub struct SubscriptionEntry {
    pub session: Arc<Session>,
    pub options: SubscriptionOptions,
    /// MQTT 5.0 Subscription Identifier, echoed in matching PUBLISHes.
    pub identifier: Option<u32>,
}

/// A message on its way to one session, with the QoS and flags it gets there.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

/// A QoS 1/2 message sent to the client and not yet fully acknowledged.
#[derive(Debug, Clone)]
pub struct OutFlight {
    pub packet_id: u16,
    pub delivery: Delivery,
    pub state: OutState,
    /// Sent on the current connection. After a resume, entries are re-sent
    /// (DUP) only as fast as the client's new Receive Maximum allows.
    pub on_wire: bool,
    /// When it was (last) put on the wire, for `mqtt.inflight_timeout_secs`.
    pub sent_at: Instant,
}

/// Sent to a live connection whose client id is being taken over.
#[derive(Debug)]
pub struct Kick {
    /// The new connection resumes this session (clean start = 0).
    pub resumed: bool,
    /// Dropped or signalled once the old connection has finished with the session.
    pub done: oneshot::Sender<()>,
}

#[derive(Debug)]
pub struct ConnectionLink {
    pub id: u64,
    pub kick: oneshot::Sender<Kick>,
}

/// An accepted enqueue: whether the queue has reached its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Ok,
    /// At or over `max_queued`: the publisher should pause (flow control).
    Full,
}

/// Why an enqueue did not take the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// QoS 0 for a client that is not connected (not queued, as in mosquitto).
    OfflineQos0,
    /// The session queue is at `max_queued_messages`: the new message is dropped.
    QueueFull,
    /// The subscriber is connected but marked slow and its queue is at
    /// `max_queued_messages`: the new message is dropped, nobody waits.
    SlowSubscriber,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::OfflineQos0 => "offline_qos0",
            Dropped::QueueFull => "queue_full",
            Dropped::SlowSubscriber => "slow_subscriber",
        }
    }
}

#[derive(Debug)]
pub struct SessionState {
    pub protocol: ProtocolVersion,
    /// Raw filter (including any `$share/group/` prefix) → options.
    pub subscriptions: HashMap<String, (SubscriptionOptions, Option<u32>)>,
    /// Messages not yet sent (waiting for the client or for in-flight room).
    pub queue: VecDeque<Delivery>,
    /// QoS 1/2 messages sent and not yet acknowledged, oldest first.
    pub inflight: VecDeque<OutFlight>,
    /// Packet ids of QoS 2 messages received, PUBREC sent, PUBREL not yet seen.
    pub incoming_qos2: HashSet<u16>,
    next_packet_id: u16,
    pub link: Option<ConnectionLink>,
    /// Seconds the session outlives its connection ([`NEVER_EXPIRES`] = forever).
    pub expiry_secs: u32,
    /// Bumped at every (re)connection so expiry and will timers can tell
    /// whether the client came back in the meantime.
    pub generation: u64,
    /// A will waiting for its delay to pass (MQTT 5.0 Will Delay Interval).
    pub pending_will: Option<LastWill>,
    /// Will-delay and expiry timers running for this session; aborted when a
    /// client attaches, so no sleeping task outlives its purpose.
    pub timers: Vec<AbortHandle>,
    pub max_queued: usize,
    /// Marked slow: its queue stayed full past `mqtt.slow_subscriber_wait_ms`
    /// (or its in-flight window got stuck). Publishers no longer wait for it;
    /// cleared once its queue drains to half the limit (hysteresis).
    pub slow: bool,
}

impl SessionState {
    pub fn abort_timers(&mut self) {
        for timer in self.timers.drain(..) {
            timer.abort();
        }
    }

    /// Next free packet id (1..=65535, skipping ids still in flight).
    pub fn alloc_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }
}

#[derive(Debug)]
pub struct Session {
    pub client_id: ClientId,
    /// Held by the connection attaching to this session, so two CONNECTs
    /// with one client id are handled one after the other.
    pub attach_gate: Arc<AsyncMutex<()>>,
    state: Mutex<SessionState>,
    /// Wakes the connection task when something was queued.
    pub notify: Notify,
    /// Wakes publishers paused on this session once its queue is below the
    /// limit, or once it is marked slow (then they stop waiting for it).
    pub space: Notify,
    connected: AtomicBool,
    /// Set (and `evict` notified) when the connection serving this session
    /// must close because the session was marked slow under the
    /// `disconnect` policy; cleared when a connection attaches.
    evict_requested: AtomicBool,
    pub evict: Notify,
    /// The user that opened the session (`Some(None)`: anonymously); only
    /// that user may take the client id over. `None` until known.
    owner: Mutex<Option<Option<Arc<str>>>>,
}

impl Session {
    pub fn new(
        client_id: ClientId,
        protocol: ProtocolVersion,
        expiry_secs: u32,
        max_queued: usize,
    ) -> Session {
        Session {
            client_id,
            attach_gate: Arc::new(AsyncMutex::new(())),
            state: Mutex::new(SessionState {
                protocol,
                subscriptions: HashMap::new(),
                queue: VecDeque::new(),
                inflight: VecDeque::new(),
                incoming_qos2: HashSet::new(),
                next_packet_id: 0,
                link: None,
                expiry_secs,
                generation: 0,
                pending_will: None,
                timers: Vec::new(),
                max_queued,
                slow: false,
            }),
            notify: Notify::new(),
            space: Notify::new(),
            connected: AtomicBool::new(false),
            evict_requested: AtomicBool::new(false),
            evict: Notify::new(),
            owner: Mutex::new(None),
        }
    }

    /// See [`Session::set_owner`].
    pub fn owner(&self) -> Option<Option<Arc<str>>> {
        self.owner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the user (`None`: anonymous) that attached to this session.
    pub fn set_owner(&self, user: Option<Arc<str>>) {
        *self.owner.lock().unwrap_or_else(|p| p.into_inner()) = Some(user);
    }

    /// The state lock. A panic while holding it cannot leave the state torn in a
    /// way worse than losing that one connection, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    /// Whether the queue can take another message.
    pub fn has_room(&self) -> bool {
        let st = self.lock();
        st.queue.len() < st.max_queued
    }

    /// Queues a delivery and wakes the connection.
    ///
    /// One policy for every QoS. QoS 0 is not kept for offline clients. The
    /// queue holds `max_queued` messages; beyond that the newest message is
    /// dropped, except for a connected subscriber not marked slow: it gets
    /// flow control instead, the message is queued (up to twice the limit)
    /// and the answer is [`Queued::Full`], telling the publisher to wait
    /// (a bounded time, `mqtt.slow_subscriber_wait_ms`) until
    /// [`Session::space`] fires, so a subscriber that is only momentarily
    /// behind loses nothing. A subscriber marked slow never makes anyone wait:
    /// its messages beyond the limit are dropped ([`Dropped::SlowSubscriber`]).
    pub fn enqueue(&self, delivery: Delivery) -> Result<Queued, Dropped> {
        let full = {
            let mut st = self.lock();
            let connected = self.is_connected();
            if delivery.qos == QoS::AtMostOnce && !connected {
                return Err(Dropped::OfflineQos0);
            }
            let flow_controlled = connected && !st.slow;
            let hard_limit = if flow_controlled {
                st.max_queued.saturating_mul(2)
            } else {
                st.max_queued
            };
            if st.queue.len() >= hard_limit {
                return Err(if connected && st.slow {
                    Dropped::SlowSubscriber
                } else {
                    Dropped::QueueFull
                });
            }
            st.queue.push_back(delivery);
            flow_controlled && st.queue.len() >= st.max_queued
        };
        self.notify.notify_one();
        Ok(if full { Queued::Full } else { Queued::Ok })
    }

    pub fn is_slow(&self) -> bool {
        self.lock().slow
    }

    /// Marks a connected session slow; true if it was not already (the caller
    /// counts it and applies the policy). Wakes the publishers waiting for it.
    pub fn mark_slow(&self) -> bool {
        let newly = {
            let mut st = self.lock();
            let newly = self.is_connected() && !st.slow;
            st.slow |= newly;
            newly
        };
        if newly {
            self.space.notify_waiters();
        }
        newly
    }

    /// After the connection moved queued messages to the wire: clears the
    /// slow mark once the queue is down to half the limit (hysteresis), and
    /// says whether the queue has room (publishers may go on).
    pub fn relieved(&self) -> bool {
        let mut st = self.lock();
        if st.slow && st.queue.len() <= st.max_queued / 2 {
            st.slow = false;
        }
        st.queue.len() < st.max_queued
    }

    /// Asks the connection serving this session to close (`disconnect` policy).
    pub fn request_eviction(&self) {
        self.evict_requested.store(true, Ordering::Release);
        self.evict.notify_one();
    }

    pub fn eviction_requested(&self) -> bool {
        self.evict_requested.load(Ordering::Acquire)
    }

    /// A new connection attaches: an eviction asked of the previous one does not apply.
    pub fn clear_eviction(&self) {
        self.evict_requested.store(false, Ordering::Release);
    }

    /// Resolves once an eviction is requested (cancel-safe, for `select!`).
    pub async fn evicted(&self) {
        loop {
            let notified = self.evict.notified();
            if self.eviction_requested() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the queue is at or over its limit (publishers should wait).
    pub fn is_full(&self) -> bool {
        let st = self.lock();
        st.queue.len() >= st.max_queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::MessageProperties;
    use bytes::Bytes;

    fn delivery(qos: QoS) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: "t".into(),
                payload: Bytes::from_static(b"x"),
                qos,
                retain: false,
                properties: MessageProperties::default(),
                publisher: None,
                expires_at: None,
            }),
            qos,
            retain: false,
            subscription_ids: vec![],
        }
    }

    #[test]
    fn offline_qos0_is_dropped_and_queue_is_bounded() {
        let s = Session::new("c".into(), ProtocolVersion::V5, NEVER_EXPIRES, 2);
        assert_eq!(
            s.enqueue(delivery(QoS::AtMostOnce)),
            Err(Dropped::OfflineQos0)
        );
        assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)), Ok(Queued::Ok));
        assert_eq!(s.enqueue(delivery(QoS::ExactlyOnce)), Ok(Queued::Ok));
        // Offline: no flow control, the newest message is dropped.
        assert_eq!(
            s.enqueue(delivery(QoS::AtLeastOnce)),
            Err(Dropped::QueueFull)
        );
        // Live: QoS 0 gets the same flow control as QoS 1/2 (one policy).
        s.set_connected(true);
        assert_eq!(s.enqueue(delivery(QoS::AtMostOnce)), Ok(Queued::Full));
        assert_eq!(s.lock().queue.len(), 3);
    }

    #[test]
    fn live_qos1_gets_flow_control_up_to_twice_the_limit() {
        let s = Session::new("c".into(), ProtocolVersion::V5, NEVER_EXPIRES, 2);
        s.set_connected(true);
        assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)), Ok(Queued::Ok));
        assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)), Ok(Queued::Full));
        assert_eq!(s.enqueue(delivery(QoS::ExactlyOnce)), Ok(Queued::Full));
        assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)), Ok(Queued::Full));
        assert!(s.is_full());
        assert_eq!(
            s.enqueue(delivery(QoS::AtLeastOnce)),
            Err(Dropped::QueueFull)
        );
        assert_eq!(
            s.enqueue(delivery(QoS::AtMostOnce)),
            Err(Dropped::QueueFull)
        );
    }

    #[test]
    fn a_slow_subscriber_never_asks_publishers_to_wait() {
        let s = Session::new("c".into(), ProtocolVersion::V5, NEVER_EXPIRES, 4);
        // Offline sessions are not marked: nobody waits for them anyway.
        assert!(!s.mark_slow());
        s.set_connected(true);
        for _ in 0..3 {
            assert_eq!(s.enqueue(delivery(QoS::AtMostOnce)), Ok(Queued::Ok));
        }
        // One policy for every QoS: a full live queue asks QoS 0 publishers to wait too.
        assert_eq!(s.enqueue(delivery(QoS::AtMostOnce)), Ok(Queued::Full));
        assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)), Ok(Queued::Full));
        assert!(s.mark_slow());
        assert!(!s.mark_slow(), "marked once");
        assert!(s.is_slow());
        // Over the limit and slow: dropped, never Full.
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert_eq!(s.enqueue(delivery(qos)), Err(Dropped::SlowSubscriber));
        }
        // Hysteresis: still slow at 3 of 4, cleared at half.
        s.lock().queue.truncate(3);
        assert!(s.relieved(), "room again");
        assert!(s.is_slow());
        assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)), Ok(Queued::Ok));
        s.lock().queue.truncate(2);
        s.relieved();
        assert!(!s.is_slow());
        assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)), Ok(Queued::Ok));
        assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)), Ok(Queued::Full));
    }

    #[tokio::test]
    async fn eviction_wakes_the_connection_until_a_new_one_attaches() {
        let s = Session::new("c".into(), ProtocolVersion::V5, NEVER_EXPIRES, 4);
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), s.evicted());
        assert!(quiet.await.is_err(), "no eviction asked");
        s.request_eviction();
        s.evicted().await;
        s.evicted().await;
        s.clear_eviction();
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), s.evicted());
        assert!(quiet.await.is_err(), "a stored permit alone does not evict");
    }

    #[test]
    fn packet_ids_skip_inflight_and_wrap() {
        let s = Session::new("c".into(), ProtocolVersion::V5, 0, 10);
        let mut st = s.lock();
        st.next_packet_id = 65534;
        st.inflight.push_back(OutFlight {
            packet_id: 65535,
            delivery: delivery(QoS::AtLeastOnce),
            state: OutState::AwaitPubAck,
            on_wire: true,
            sent_at: Instant::now(),
        });
        st.inflight.push_back(OutFlight {
            packet_id: 1,
            delivery: delivery(QoS::AtLeastOnce),
            state: OutState::AwaitPubAck,
            on_wire: true,
            sent_at: Instant::now(),
        });
        assert_eq!(st.alloc_packet_id(), 2);
    }
}
