//! Broker-wide MQTT state: the session table, the subscription trie, the
//! retained store, and the routing of published messages to sessions.
//!
//! Lock order, always: subscription trie → session table → one session's state.
//! No lock is held across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use super::packet::{LastWill, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
use super::session::{ConnectionLink, Delivery, Kick, Session, SubscriptionEntry, NEVER_EXPIRES};
use crate::config::{Limits, MqttConfig};
use crate::core::retained::RetainedStore;
use crate::core::topic::{parse_filter, Matched, SubscriptionTree};
use crate::core::{ClientId, Message, MessageProperties};
use crate::metrics::{Metrics, Protocol};

/// How long a new connection waits for the one it takes over to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

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
    /// One permit per open connection (all protocols share it in later issues).
    pub connection_permits: Arc<Semaphore>,
    sessions: Mutex<HashMap<ClientId, Arc<Session>>>,
    subscriptions: RwLock<SubscriptionTree<SubscriptionEntry>>,
    retained: Mutex<RetainedStore>,
    next_connection_id: AtomicU64,
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
        Arc::new(MqttHub {
            config,
            limits,
            metrics,
            connection_permits,
            sessions: Mutex::new(HashMap::new()),
            subscriptions: RwLock::new(SubscriptionTree::default()),
            retained: Mutex::new(RetainedStore::default()),
            next_connection_id: AtomicU64::new(1),
        })
    }

    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Binds a new connection to the session of `client_id`, taking the
    /// session over from a live connection if there is one.
    pub async fn attach(
        &self,
        client_id: &str,
        protocol: ProtocolVersion,
        clean_start: bool,
        expiry_secs: u32,
    ) -> Attached {
        let existing = lock(&self.sessions).get(client_id).cloned();
        if let Some(old) = &existing {
            let link = old.lock().link.take();
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
        }

        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (kick, kicked) = oneshot::channel();
        let mut sessions = lock(&self.sessions);
        let current = sessions.get(client_id).cloned();
        let (session, session_present) = match current {
            Some(s) if !clean_start => (s, true),
            other => {
                if let Some(old) = other {
                    sessions.remove(client_id);
                    drop(sessions);
                    self.drop_subscriptions(&old);
                    sessions = lock(&self.sessions);
                }
                let s = Arc::new(Session::new(
                    ClientId::from(client_id),
                    protocol,
                    expiry_secs,
                    self.limits.max_queued_messages,
                ));
                sessions.insert(s.client_id.clone(), s.clone());
                (s, false)
            }
        };
        self.metrics.sessions.set(sessions.len() as i64);
        drop(sessions);
        {
            let mut st = session.lock();
            st.protocol = protocol;
            st.expiry_secs = expiry_secs;
            st.generation += 1;
            // A will waiting for its delay is cancelled by the client's return.
            st.pending_will = None;
            st.link = Some(ConnectionLink {
                id: connection_id,
                kick,
            });
        }
        session.set_connected(true);
        Attached {
            session,
            session_present,
            connection_id,
            kicked,
        }
    }

    /// Called by a connection when it ends. `will` is the will to publish
    /// (already decided by the connection: `None` after a normal DISCONNECT).
    /// `taken_over` means another connection already owns the session.
    pub fn detach(
        self: &Arc<Self>,
        session: &Arc<Session>,
        connection_id: u64,
        will: Option<LastWill>,
        taken_over: bool,
    ) {
        let (expiry, generation) = {
            let mut st = session.lock();
            if !taken_over && st.link.as_ref().is_some_and(|l| l.id == connection_id) {
                st.link = None;
                session.set_connected(false);
            }
            (st.expiry_secs, st.generation)
        };
        if let Some(will) = will {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            // The will goes out at the earlier of its delay and the session's end.
            let delay = if taken_over { delay } else { delay.min(expiry) };
            if delay == 0 {
                self.publish_will(will);
            } else {
                session.lock().pending_will = Some(will);
                let hub = self.clone();
                let session = session.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
                    let will = {
                        let mut st = session.lock();
                        if st.generation != generation {
                            return;
                        }
                        st.pending_will.take()
                    };
                    if let Some(will) = will {
                        hub.publish_will(will);
                    }
                });
            }
        }
        if taken_over {
            return;
        }
        if expiry == 0 {
            self.end_session(session);
        } else if expiry != NEVER_EXPIRES {
            let hub = self.clone();
            let session = session.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(u64::from(expiry))).await;
                let expired = {
                    let st = session.lock();
                    st.generation == generation && st.link.is_none()
                };
                if expired {
                    let will = session.lock().pending_will.take();
                    if let Some(will) = will {
                        hub.publish_will(will);
                    }
                    hub.end_session(&session);
                }
            });
        }
    }

    /// Removes a session and its subscriptions (clean start, or expiry).
    fn end_session(&self, session: &Arc<Session>) {
        {
            let mut sessions = lock(&self.sessions);
            if sessions
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                sessions.remove(&session.client_id);
            }
            self.metrics.sessions.set(sessions.len() as i64);
        }
        self.drop_subscriptions(session);
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
        self.metrics.subscriptions.set(tree.len() as i64);
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
            self.metrics.subscriptions.set(tree.len() as i64);
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
            self.metrics.subscriptions.set(tree.len() as i64);
            removed
        };
        session.lock().subscriptions.remove(raw_filter);
        removed
    }

    /// Retained messages to send for a new subscription, per its Retain Handling.
    /// Shared subscriptions never get retained messages (MQTT 5.0 4.8.2).
    pub fn retained_for(
        &self,
        raw_filter: &str,
        options: SubscriptionOptions,
        existed: bool,
    ) -> Vec<Arc<Message>> {
        let Some(spec) = parse_filter(raw_filter) else {
            return Vec::new();
        };
        let wanted = match options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
        if spec.share_group.is_some() || !wanted {
            return Vec::new();
        }
        let mut retained = lock(&self.retained);
        let found = retained.matching(spec.filter, Instant::now());
        self.metrics.retained_messages.set(retained.len() as i64);
        found
    }

    /// Stores (if retained) and routes a message to every matching subscription.
    /// Returns the number of sessions it was queued for.
    pub fn publish(&self, message: Message) -> usize {
        let message = Arc::new(message);
        if message.retain && self.config.retain_available {
            let mut retained = lock(&self.retained);
            retained.store(message.clone());
            self.metrics.retained_messages.set(retained.len() as i64);
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
                    let pick = (0..n)
                        .map(|i| &group.members[(start + i) % n])
                        .find(|(_, e)| e.session.is_connected())
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
        let mut queued = 0;
        for (session, delivery) in targets {
            match session.enqueue(delivery) {
                Ok(()) => queued += 1,
                Err(dropped) => self
                    .metrics
                    .message_dropped(Protocol::Mqtt, dropped.as_str()),
            }
        }
        queued
    }

    /// Whether a QoS level is accepted by this broker.
    pub fn qos_allowed(&self, qos: QoS) -> bool {
        (qos as u8) <= self.config.max_qos
    }
}
