//! Broker-wide MQTT state: the session table, the subscription trie, the
//! retained store, and the routing of published messages to sessions.
//!
//! Lock order, always: subscription trie → session table → one session's state.
//! No lock is held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use super::config::MqttConfig;
use super::packet::{LastWill, ProtocolVersion, QoS, SubscriptionOptions};
use super::session::{
    ConnectionLink, Delivery, Kick, Queued, Session, SubscriptionEntry, NEVER_EXPIRES,
};
use crate::config::Limits;
use crate::core::retained::RetainedStore;
use crate::core::slots::ConnectionSlots;
use crate::core::topic::{parse_filter, Matched, SubscriptionTree};
use crate::core::{ClientId, Message, MessageProperties};
use crate::metrics::{Metrics, Protocol};

/// How long a new connection waits for the one it takes over to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

mod owner;
mod retained;
mod slow;

/// How a connection ended, as far as its session and will are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// DISCONNECT with reason 0 (the connection passes no will).
    Normal,
    /// Network or protocol error, keep-alive timeout, 5.0 DISCONNECT 0x04.
    Abnormal,
    /// Another connection took the client id over.
    TakenOver { resumed: bool },
    /// The broker is shutting down.
    Shutdown,
}

/// What [`MqttHub::attach`] hands the new connection.
pub struct Attached {
    pub session: Arc<Session>,
    pub session_present: bool,
    pub connection_id: u64,
    pub kicked: oneshot::Receiver<Kick>,
}

pub struct MqttHub {
    pub config: MqttConfig,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// The global connection limit and `mqtt.max_connections`.
    pub connection_permits: ConnectionSlots,
    sessions: Mutex<HashMap<ClientId, Arc<Session>>>,
    subscriptions: RwLock<SubscriptionTree<SubscriptionEntry>>,
    retained: Mutex<RetainedStore>,
    next_connection_id: AtomicU64,
    /// Sessions whose client is offline, oldest first (bounded by `max_offline_sessions`).
    offline: Mutex<OfflineSessions>,
}

/// Offline sessions in the order their clients left, so the one offline the
/// longest can be ended when there are too many. Locked on its own, never
/// while holding the session table or a session's state.
#[derive(Default)]
struct OfflineSessions {
    next_seq: u64,
    by_client: HashMap<ClientId, u64>,
    order: BTreeMap<u64, Arc<Session>>,
}

impl OfflineSessions {
    fn insert(&mut self, session: &Arc<Session>) {
        self.remove(&session.client_id);
        self.next_seq += 1;
        self.by_client
            .insert(session.client_id.clone(), self.next_seq);
        self.order.insert(self.next_seq, session.clone());
    }

    fn remove(&mut self, client_id: &ClientId) {
        if let Some(seq) = self.by_client.remove(client_id) {
            self.order.remove(&seq);
        }
    }

    /// Takes out the session offline the longest.
    fn pop_oldest(&mut self) -> Option<Arc<Session>> {
        let (_, session) = self.order.pop_first()?;
        self.by_client.remove(&session.client_id);
        Some(session)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MqttHub {
    pub fn new(
        config: MqttConfig,
        limits: Limits,
        metrics: Arc<Metrics>,
        connection_permits: Arc<Semaphore>,
    ) -> Arc<MqttHub> {
        let connection_permits = ConnectionSlots::new(connection_permits, config.max_connections);
        let retained =
            RetainedStore::with_limits(config.max_retained_messages, config.max_retained_bytes);
        Arc::new(MqttHub {
            config,
            limits,
            metrics,
            connection_permits,
            sessions: Mutex::new(HashMap::new()),
            subscriptions: RwLock::new(SubscriptionTree::default()),
            retained: Mutex::new(retained),
            next_connection_id: AtomicU64::new(1),
            offline: Mutex::new(OfflineSessions::default()),
        })
    }

    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Sessions kept for clients that are offline.
    pub fn offline_session_count(&self) -> usize {
        lock(&self.offline).order.len()
    }

    /// Binds a new connection to the session of `client_id`, taking the
    /// session over from a live connection if there is one. CONNECTs with the
    /// same client id are handled one at a time (the session's attach gate).
    pub async fn attach(
        &self,
        client_id: &str,
        protocol: ProtocolVersion,
        clean_start: bool,
        expiry_secs: u32,
    ) -> Attached {
        let new_session = || {
            Arc::new(Session::new(
                ClientId::from(client_id),
                protocol,
                expiry_secs,
                self.limits.max_queued_messages,
            ))
        };
        loop {
            let session = {
                let mut sessions = lock(&self.sessions);
                let s = sessions.get(client_id).cloned();
                s.unwrap_or_else(|| {
                    // A placeholder (generation 0) holds the gate for a client id seen for the first time.
                    let s = new_session();
                    sessions.insert(s.client_id.clone(), s.clone());
                    s
                })
            };
            let gate = session.attach_gate.clone().lock_owned().await;
            if !self.is_current(&session) {
                // Replaced (clean start) or ended while we waited: start over.
                continue;
            }
            let link = session.lock().link.take();
            if let Some(link) = link {
                let (done, released) = oneshot::channel();
                if link
                    .kick
                    .send(Kick {
                        resumed: !clean_start,
                        done,
                    })
                    .is_ok()
                {
                    // The old connection may be stuck writing to a dead peer; bounded.
                    let _ = tokio::time::timeout(TAKEOVER_WAIT, released).await;
                }
            }
            let had_state = session.lock().generation > 0;
            let (session, session_present, _gate) = if clean_start && had_state {
                // Clean start ends the old session here, and with it any will still waiting.
                let will = {
                    let mut st = session.lock();
                    st.generation += 1;
                    st.abort_timers();
                    st.pending_will.take()
                };
                if let Some(will) = will {
                    self.publish_will(will);
                }
                let fresh = new_session();
                let fresh_gate = fresh
                    .attach_gate
                    .clone()
                    .try_lock_owned()
                    .expect("nobody else knows the new session yet");
                lock(&self.sessions).insert(fresh.client_id.clone(), fresh.clone());
                self.drop_subscriptions(&session);
                drop(gate);
                (fresh, false, fresh_gate)
            } else {
                (session, !clean_start && had_state, gate)
            };
            let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
            let (kick, kicked) = oneshot::channel();
            {
                // Re-checked under the table lock: an expiry may have ended the
                // session while the old connection was being let go.
                let sessions = lock(&self.sessions);
                if !sessions
                    .get(client_id)
                    .is_some_and(|s| Arc::ptr_eq(s, &session))
                {
                    continue;
                }
                let mut st = session.lock();
                st.protocol = protocol;
                st.expiry_secs = expiry_secs;
                st.generation += 1;
                st.abort_timers();
                // A new connection gets a fresh chance: publishers may wait
                // for it again, and under the `disconnect` policy it is
                // evicted again if it stays behind.
                st.slow = false;
                // A will waiting for its delay is cancelled by the client's return.
                st.pending_will = None;
                st.link = Some(ConnectionLink {
                    id: connection_id,
                    kick,
                });
                for f in st.inflight.iter_mut() {
                    f.on_wire = false;
                }
            }
            session.clear_eviction();
            session.set_connected(true);
            lock(&self.offline).remove(&session.client_id);
            self.metrics.mqtt.sessions.set(self.session_count() as i64);
            return Attached {
                session,
                session_present,
                connection_id,
                kicked,
            };
        }
    }

    fn is_current(&self, session: &Arc<Session>) -> bool {
        lock(&self.sessions)
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
    }

    /// Called by a connection when it ends, with the will to publish (`None`
    /// after a normal DISCONNECT) and how it ended.
    pub fn detach(
        self: &Arc<Self>,
        session: &Arc<Session>,
        connection_id: u64,
        will: Option<LastWill>,
        departure: Departure,
    ) {
        let (owns, expiry, generation) = {
            let mut st = session.lock();
            let owns = st.link.as_ref().is_some_and(|l| l.id == connection_id);
            if owns {
                st.link = None;
                session.set_connected(false);
            }
            (owns, st.expiry_secs, st.generation)
        };
        // An expiry of 0 ends the session now (after the will below).
        let will_delay = will
            .as_ref()
            .map_or(0, |w| w.properties.will_delay_interval.unwrap_or(0));
        if !owns || matches!(departure, Departure::TakenOver { .. }) {
            // Another connection owns the session now: no timers, no expiry.
            // A resumed session cancels a delayed will (5.0 3.1.2.5); otherwise
            // the old session ended and its will is due now.
            let resumed = match departure {
                Departure::TakenOver { resumed } => resumed,
                _ => true,
            };
            if let Some(will) = will.filter(|_| !(resumed && will_delay > 0)) {
                self.publish_will(will);
            }
            return;
        }
        if departure == Departure::Shutdown {
            // Sessions live in memory and end with the process: every will is due.
            if let Some(will) = will {
                self.publish_will(will);
            }
            return;
        }
        if let Some(will) = will {
            // The will goes out at the earlier of its delay and the session's end.
            let delay = will_delay.min(expiry);
            if delay == 0 {
                self.publish_will(will);
            } else {
                session.lock().pending_will = Some(will);
                let (hub, s) = (self.clone(), session.clone());
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
                    let will = {
                        let mut st = s.lock();
                        if st.generation != generation {
                            return;
                        }
                        st.pending_will.take()
                    };
                    if let Some(will) = will {
                        hub.publish_will(will);
                    }
                });
                session.lock().timers.push(timer.abort_handle());
            }
        }
        if expiry == 0 {
            self.expire(session, generation);
            return;
        } else if expiry != NEVER_EXPIRES {
            let (hub, s) = (self.clone(), session.clone());
            let timer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(u64::from(expiry))).await;
                hub.expire(&s, generation);
            });
            session.lock().timers.push(timer.abort_handle());
        }
        self.keep_offline(session);
    }

    /// Records a session as offline; beyond `max_offline_sessions`, the
    /// sessions offline the longest end now, as if they had expired.
    fn keep_offline(&self, session: &Arc<Session>) {
        let limit = self.limits.max_offline_sessions;
        let mut evict = Vec::new();
        {
            let mut offline = lock(&self.offline);
            offline.insert(session);
            while offline.order.len() > limit {
                match offline.pop_oldest() {
                    Some(s) => evict.push(s),
                    None => break,
                }
            }
        }
        for s in evict {
            let generation = s.lock().generation;
            if self.expire(&s, generation) {
                self.metrics
                    .message_dropped(Protocol::Mqtt, "offline_session_evicted");
            }
        }
    }

    /// Ends a session whose expiry interval has passed, unless its client came
    /// back meanwhile (then `false`). Check and removal happen under the
    /// session table lock, so a reconnect cannot slip in between.
    fn expire(&self, session: &Arc<Session>, generation: u64) -> bool {
        let will = {
            let mut sessions = lock(&self.sessions);
            let mut st = session.lock();
            if st.generation != generation || st.link.is_some() {
                return false;
            }
            if sessions
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                sessions.remove(&session.client_id);
            }
            self.metrics.mqtt.sessions.set(sessions.len() as i64);
            st.pending_will.take()
        };
        {
            let mut offline = lock(&self.offline);
            let listed = offline
                .by_client
                .get(&session.client_id)
                .and_then(|seq| offline.order.get(seq))
                .is_some_and(|s| Arc::ptr_eq(s, session));
            if listed {
                offline.remove(&session.client_id);
            }
        }
        if let Some(will) = will {
            self.publish_will(will);
        }
        self.drop_subscriptions(session);
        true
    }

    fn drop_subscriptions(&self, session: &Arc<Session>) {
        let filters: Vec<String> = session
            .lock()
            .subscriptions
            .drain()
            .map(|(f, _)| f)
            .collect();
        let mut tree = self
            .subscriptions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for raw in &filters {
            if let Some(spec) = parse_filter(raw) {
                tree.remove(spec, &session.client_id);
            }
        }
        self.metrics.mqtt.subscriptions.set(tree.len() as i64);
    }

    fn publish_will(&self, will: LastWill) {
        let now = Instant::now();
        let p = will.properties;
        self.publish(Message {
            topic: will.topic.into(),
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: MessageProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
            },
            publisher: None,
            expires_at: Message::expiry_from_interval(now, p.message_expiry_interval),
        });
    }

    /// Adds (or replaces) a subscription; returns whether it already existed.
    /// The filter must have been validated with [`parse_filter`].
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        raw_filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> bool {
        let Some(spec) = parse_filter(raw_filter) else {
            return false;
        };
        let existed = {
            let mut tree = self
                .subscriptions
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let added = tree.insert(
                spec,
                session.client_id.clone(),
                SubscriptionEntry {
                    session: session.clone(),
                    options,
                    identifier,
                },
            );
            self.metrics.mqtt.subscriptions.set(tree.len() as i64);
            !added
        };
        session
            .lock()
            .subscriptions
            .insert(raw_filter.to_string(), (options, identifier));
        existed
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&self, session: &Arc<Session>, raw_filter: &str) -> bool {
        let Some(spec) = parse_filter(raw_filter) else {
            return false;
        };
        let removed = {
            let mut tree = self
                .subscriptions
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let removed = tree.remove(spec, &session.client_id);
            self.metrics.mqtt.subscriptions.set(tree.len() as i64);
            removed
        };
        session.lock().subscriptions.remove(raw_filter);
        removed
    }

    /// Stores (if retained) and routes a message to every matching subscription.
    /// Returns the live sessions whose queue is now full: the publisher should
    /// pause until they make room, for at most `mqtt.slow_subscriber_wait_ms`
    /// (see [`Session::enqueue`] and [`MqttHub::mark_slow`]).
    pub fn publish(&self, message: Message) -> Vec<Arc<Session>> {
        let message = Arc::new(message);
        if message.retain && self.config.retain_available {
            let mut retained = lock(&self.retained);
            if let Err(refused) = retained.store(message.clone()) {
                self.metrics
                    .message_dropped(Protocol::Mqtt, refused.as_str());
            }
            self.metrics
                .mqtt
                .retained_messages
                .set(retained.len() as i64);
        }
        let mut direct: HashMap<ClientId, Delivery> = HashMap::new();
        let mut targets: Vec<(Arc<Session>, Delivery)> = Vec::new();
        let mut sessions_by_id: HashMap<ClientId, Arc<Session>> = HashMap::new();
        {
            let tree = self.subscriptions.read().unwrap_or_else(|p| p.into_inner());
            tree.for_each_match(&message.topic, |m| match m {
                Matched::Direct(client, entry) => {
                    if entry.options.no_local && message.publisher.as_ref() == Some(client) {
                        return;
                    }
                    let qos = message.qos.min(entry.options.qos);
                    let retain = message.retain && entry.options.retain_as_published;
                    let d = direct.entry(client.clone()).or_insert_with(|| {
                        sessions_by_id.insert(client.clone(), entry.session.clone());
                        Delivery {
                            message: message.clone(),
                            qos,
                            retain,
                            subscription_ids: Vec::new(),
                        }
                    });
                    // Overlapping subscriptions: one copy, at the highest QoS, with every identifier.
                    d.qos = d.qos.max(qos);
                    d.retain |= retain;
                    d.subscription_ids.extend(entry.identifier);
                }
                Matched::Shared(group) => {
                    let n = group.members.len();
                    let start = group.next_start();
                    // Next in turn that is online and keeping up; else next
                    // in turn whose queue has room.
                    let in_turn = || (0..n).map(|i| &group.members[(start + i) % n]);
                    let pick = in_turn()
                        .find(|(_, e)| e.session.is_connected() && !e.session.is_slow())
                        .or_else(|| in_turn().find(|(_, e)| e.session.has_room()))
                        .unwrap_or(&group.members[start]);
                    let entry = &pick.1;
                    targets.push((
                        entry.session.clone(),
                        Delivery {
                            message: message.clone(),
                            qos: message.qos.min(entry.options.qos),
                            retain: message.retain && entry.options.retain_as_published,
                            subscription_ids: entry.identifier.into_iter().collect(),
                        },
                    ));
                }
            });
        }
        for (client, delivery) in direct {
            if let Some(session) = sessions_by_id.remove(&client) {
                targets.push((session, delivery));
            }
        }
        let mut full = Vec::new();
        for (session, delivery) in targets {
            match session.enqueue(delivery) {
                Ok(Queued::Ok) => {}
                Ok(Queued::Full) => full.push(session),
                Err(dropped) => self
                    .metrics
                    .message_dropped(Protocol::Mqtt, dropped.as_str()),
            }
        }
        full
    }

    /// Whether a QoS level is accepted by this broker.
    pub fn qos_allowed(&self, qos: QoS) -> bool {
        (qos as u8) <= self.config.max_qos
    }
}
