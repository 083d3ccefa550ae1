//! The channel methods that change exchanges, queues, bindings, consumers
//! and acknowledgements: one `match` over the method, one small handler each.
//! Each checks the connection's permission on the resources it touches
//! first, as RabbitMQ does.

use amq_protocol::protocol::{basic, channel, exchange, queue, AMQPClass};
use amq_protocol::types::FieldTable;

use super::*;
use crate::auth::AmqpAccess::{Configure, Read, Write};

impl State {
    pub(super) fn handle(
        &mut self,
        conn: ConnId,
        ch: u16,
        method: &AMQPClass,
        config: &AmqpConfig,
    ) -> AmqpResult<Option<AMQPClass>> {
        use AMQPClass as C;
        self.channel(conn, ch)?;
        let reply = match method {
            C::Exchange(exchange::AMQPMethod::Declare(m)) => {
                if !m.passive {
                    let x = m.exchange.as_str();
                    self.check(conn, Configure, "exchange", x, "exchange.declare")?;
                }
                if !m.passive
                    && !self.exchanges.contains_key(m.exchange.as_str())
                    && self.exchanges.len() as u64 >= config.max_exchanges
                {
                    return Err(self.limit_reached(
                        "exchange",
                        "max_exchanges",
                        config.max_exchanges,
                    ));
                }
                self.exchange_declare(m)?;
                (!m.nowait).then_some(C::Exchange(exchange::AMQPMethod::DeclareOk(
                    exchange::DeclareOk {},
                )))
            }
            C::Exchange(exchange::AMQPMethod::Delete(m)) => {
                let x = m.exchange.as_str();
                self.check(conn, Configure, "exchange", x, "exchange.delete")?;
                self.exchange_delete(m.exchange.as_str(), m.if_unused)?;
                (!m.nowait).then_some(C::Exchange(exchange::AMQPMethod::DeleteOk(
                    exchange::DeleteOk {},
                )))
            }
            C::Exchange(exchange::AMQPMethod::Bind(m)) => {
                let (src, dst) = (m.source.as_str(), m.destination.as_str());
                self.check(conn, Write, "exchange", dst, "exchange.bind")?;
                self.check(conn, Read, "exchange", src, "exchange.bind")?;
                self.bind(
                    m.source.as_str(),
                    Destination::Exchange(m.destination.as_str().to_string()),
                    m.routing_key.as_str(),
                    &m.arguments,
                    conn,
                    config.max_bindings,
                )?;
                (!m.nowait).then_some(C::Exchange(exchange::AMQPMethod::BindOk(
                    exchange::BindOk {},
                )))
            }
            C::Exchange(exchange::AMQPMethod::Unbind(m)) => {
                let (src, dst) = (m.source.as_str(), m.destination.as_str());
                self.check(conn, Write, "exchange", dst, "exchange.unbind")?;
                self.check(conn, Read, "exchange", src, "exchange.unbind")?;
                self.unbind(
                    m.source.as_str(),
                    &Destination::Exchange(m.destination.as_str().to_string()),
                    m.routing_key.as_str(),
                    &m.arguments,
                )?;
                (!m.nowait).then_some(C::Exchange(exchange::AMQPMethod::UnbindOk(
                    exchange::UnbindOk {},
                )))
            }
            C::Queue(queue::AMQPMethod::Declare(m)) => {
                if !m.passive
                    && (m.queue.as_str().is_empty() || !self.queues.contains_key(m.queue.as_str()))
                    && self.queues.len() as u64 >= config.max_queues
                {
                    return Err(self.limit_reached("queue", "max_queues", config.max_queues));
                }
                let ok = self.queue_declare(conn, m, config)?;
                self.channel(conn, ch)?.last_queue = Some(ok.queue.as_str().to_string());
                (!m.nowait).then_some(C::Queue(queue::AMQPMethod::DeclareOk(ok)))
            }
            C::Queue(queue::AMQPMethod::Bind(m)) => {
                let q = self.queue_name(conn, ch, &m.queue)?;
                self.check(conn, Write, "queue", &q, "queue.bind")?;
                self.check(conn, Read, "exchange", m.exchange.as_str(), "queue.bind")?;
                self.usable_queue(conn, &q)?;
                self.bind(
                    m.exchange.as_str(),
                    Destination::Queue(q),
                    m.routing_key.as_str(),
                    &m.arguments,
                    conn,
                    config.max_bindings,
                )?;
                (!m.nowait).then_some(C::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})))
            }
            C::Queue(queue::AMQPMethod::Unbind(m)) => {
                let q = self.queue_name(conn, ch, &m.queue)?;
                self.check(conn, Write, "queue", &q, "queue.unbind")?;
                self.check(conn, Read, "exchange", m.exchange.as_str(), "queue.unbind")?;
                self.usable_queue(conn, &q)?;
                self.unbind(
                    m.exchange.as_str(),
                    &Destination::Queue(q),
                    m.routing_key.as_str(),
                    &m.arguments,
                )?;
                Some(C::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})))
            }
            C::Queue(queue::AMQPMethod::Purge(m)) => {
                let name = self.queue_name(conn, ch, &m.queue)?;
                self.check(conn, Read, "queue", &name, "queue.purge")?;
                let q = self.usable_queue(conn, &name)?;
                let purged = q.messages.purge();
                let count = purged.len() as u32;
                self.forget(&name, purged.iter());
                (!m.nowait).then_some(C::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                    message_count: count,
                })))
            }
            C::Queue(queue::AMQPMethod::Delete(m)) => {
                let name = self.queue_name(conn, ch, &m.queue)?;
                self.check(conn, Configure, "queue", &name, "queue.delete")?;
                let count = match self.usable_queue(conn, &name) {
                    // Deleting what is not there succeeds (RabbitMQ does the same).
                    Err(e) if e.code == NOT_FOUND => 0,
                    Err(e) => return Err(e),
                    Ok(q) => {
                        if m.if_unused && !q.consumers.is_empty() {
                            return Err(AmqpError::soft(
                                PRECONDITION_FAILED,
                                format!("PRECONDITION_FAILED - queue '{name}' in vhost '{vhost}' in use", vhost = self.vhost),
                            ));
                        }
                        if m.if_empty && !q.messages.is_empty() {
                            return Err(AmqpError::soft(
                                PRECONDITION_FAILED,
                                format!(
                                    "PRECONDITION_FAILED - queue '{name}' in vhost '{vhost}' not empty", vhost = self.vhost),
                            ));
                        }
                        self.delete_queue(&name)
                    }
                };
                (!m.nowait).then_some(C::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                    message_count: count,
                })))
            }
            C::Channel(channel::AMQPMethod::Flow(m)) => {
                self.channel(conn, ch)?.active = m.active;
                self.dispatch_channel(conn, ch);
                Some(C::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                    active: m.active,
                })))
            }
            C::Basic(basic::AMQPMethod::Qos(m)) => {
                let c = self.channel(conn, ch)?;
                if m.global {
                    c.prefetch_channel = m.prefetch_count;
                } else {
                    c.prefetch_consumer = m.prefetch_count;
                }
                self.dispatch_channel(conn, ch);
                Some(C::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})))
            }
            C::Basic(basic::AMQPMethod::Consume(m)) => {
                let q = self.queue_name(conn, ch, &m.queue)?;
                self.check(conn, Read, "queue", &q, "basic.consume")?;
                self.consume(conn, ch, m)?;
                None
            }
            C::Basic(basic::AMQPMethod::Cancel(m)) => {
                self.cancel(conn, ch, m.consumer_tag.as_str(), false);
                (!m.nowait).then_some(C::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                    consumer_tag: m.consumer_tag.clone(),
                })))
            }
            C::Basic(basic::AMQPMethod::Get(m)) => {
                let q = self.queue_name(conn, ch, &m.queue)?;
                self.check(conn, Read, "queue", &q, "basic.get")?;
                self.get(conn, ch, m)?;
                None
            }
            C::Basic(basic::AMQPMethod::Ack(m)) => {
                for (_, u) in self.take_unacked(conn, ch, m.delivery_tag, m.multiple)? {
                    self.acked(conn, ch, u);
                }
                None
            }
            C::Basic(basic::AMQPMethod::Nack(m)) => {
                for (_, u) in self.take_unacked(conn, ch, m.delivery_tag, m.multiple)? {
                    self.rejected(conn, ch, u, m.requeue);
                }
                None
            }
            C::Basic(basic::AMQPMethod::Reject(m)) => {
                for (_, u) in self.take_unacked(conn, ch, m.delivery_tag, false)? {
                    self.rejected(conn, ch, u, m.requeue);
                }
                None
            }
            C::Basic(basic::AMQPMethod::Recover(_))
            | C::Basic(basic::AMQPMethod::RecoverAsync(_)) => {
                let all = std::mem::take(&mut self.channel(conn, ch)?.unacked);
                for (_, u) in all.into_iter().rev() {
                    self.rejected(conn, ch, u, true);
                }
                matches!(method, C::Basic(basic::AMQPMethod::Recover(_)))
                    .then_some(C::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})))
            }
            other => {
                return Err(AmqpError::hard(
                    NOT_IMPLEMENTED,
                    format!(
                        "NOT_IMPLEMENTED - {}.{} is not supported",
                        other.get_amqp_class_id(),
                        other.get_amqp_method_id()
                    ),
                ))
            }
        };
        Ok(reply)
    }

    /// The 406 a declare or bind beyond `amqp.<key>` gets (RabbitMQ's answer
    /// to its vhost limits), counted as `errors{kind=<key>}`.
    fn limit_reached(&mut self, what: &str, key: &'static str, max: u64) -> AmqpError {
        self.refused.push(key);
        AmqpError::soft(
            PRECONDITION_FAILED,
            format!(
                "PRECONDITION_FAILED - {what} limit in vhost '{vhost}' ({max}) is reached (amqp.{key})", vhost = self.vhost),
        )
    }

    pub(super) fn exchange_declare(&mut self, m: &exchange::Declare) -> AmqpResult<()> {
        let name = m.exchange.as_str();
        if let Some(x) = self.exchanges.get(name) {
            if m.passive {
                return Ok(());
            }
            if x.kind.as_str() != m.kind.as_str()
                || x.durable != m.durable
                || x.auto_delete != m.auto_delete
                || x.internal != m.internal
            {
                return Err(AmqpError::soft(
                    PRECONDITION_FAILED,
                    format!("PRECONDITION_FAILED - inequivalent arg 'type', 'durable' or 'auto_delete' for exchange '{name}' in vhost '{vhost}': received '{}' but current is '{}'", m.kind.as_str(), x.kind.as_str(), vhost = self.vhost),
                ));
            }
            return Ok(());
        }
        if m.passive {
            return Err(not_found(&self.vhost, "exchange", name));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        let Some(kind) = ExchangeKind::parse(m.kind.as_str()) else {
            return Err(AmqpError::hard(
                COMMAND_INVALID,
                format!(
                    "COMMAND_INVALID - unknown exchange type '{}'",
                    m.kind.as_str()
                ),
            ));
        };
        if m.durable {
            self.persist(store::Definition::ExchangeDeclare(m.clone()));
        }
        self.exchanges.insert(
            name.to_string(),
            Exchange {
                name: name.to_string(),
                kind,
                durable: m.durable,
                auto_delete: m.auto_delete,
                internal: m.internal,
                args: m.arguments.clone(),
                bindings: Vec::new(),
            },
        );
        Ok(())
    }

    pub(super) fn exchange_delete(&mut self, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                format!("ACCESS_REFUSED - exchange '{name}' is built in"),
            ));
        }
        let Some(x) = self.exchanges.get(name) else {
            return Ok(());
        };
        if if_unused && (!x.bindings.is_empty() || self.is_binding_destination(name)) {
            return Err(AmqpError::soft(
                PRECONDITION_FAILED,
                format!(
                    "PRECONDITION_FAILED - exchange '{name}' in vhost '{vhost}' in use",
                    vhost = self.vhost
                ),
            ));
        }
        self.remove_exchange(name);
        Ok(())
    }

    pub(super) fn is_binding_destination(&self, name: &str) -> bool {
        self.exchanges.values().any(|x| {
            x.bindings
                .iter()
                .any(|b| b.destination == Destination::Exchange(name.to_string()))
        })
    }

    pub(super) fn remove_exchange(&mut self, name: &str) {
        if let Some(x) = self.exchanges.remove(name) {
            if x.durable {
                self.persist(store::Definition::ExchangeDelete(name.to_string()));
            }
        }
        let dest = Destination::Exchange(name.to_string());
        self.remove_bindings_to(&dest);
    }

    pub(super) fn remove_bindings_to(&mut self, dest: &Destination) {
        let mut emptied = Vec::new();
        for x in self.exchanges.values_mut() {
            let before = x.bindings.len();
            x.bindings.retain(|b| &b.destination != dest);
            if before != x.bindings.len() && x.bindings.is_empty() && x.auto_delete {
                emptied.push(x.name.clone());
            }
        }
        for name in emptied {
            self.remove_exchange(&name);
        }
    }

    pub(super) fn destination_durable(&self, dest: &Destination) -> bool {
        match dest {
            Destination::Queue(q) => self.queues.get(q).is_some_and(|q| q.durable),
            Destination::Exchange(x) => self.exchanges.get(x).is_some_and(|x| x.durable),
        }
    }

    pub(super) fn bind(
        &mut self,
        source: &str,
        dest: Destination,
        key: &str,
        args: &FieldTable,
        conn: ConnId,
        max_bindings: u64,
    ) -> AmqpResult<()> {
        if source.is_empty() {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                "ACCESS_REFUSED - operation not permitted on the default exchange",
            ));
        }
        if let Destination::Exchange(d) = &dest {
            if !self.exchanges.contains_key(d) {
                return Err(not_found(&self.vhost, "exchange", d));
            }
        }
        if let Destination::Queue(q) = &dest {
            self.usable_queue(conn, q)?;
        }
        let durable = self.destination_durable(&dest);
        let Some(x) = self.exchanges.get_mut(source) else {
            return Err(not_found(&self.vhost, "exchange", source));
        };
        let binding = Binding {
            destination: dest,
            key: key.to_string(),
            args: args.clone(),
        };
        if x.bindings.contains(&binding) {
            return Ok(());
        }
        let total: usize = self.exchanges.values().map(|x| x.bindings.len()).sum();
        if total as u64 >= max_bindings {
            return Err(self.limit_reached("binding", "max_bindings", max_bindings));
        }
        let Some(x) = self.exchanges.get_mut(source) else {
            return Err(not_found(&self.vhost, "exchange", source));
        };
        let persist = x.durable && durable;
        x.bindings.push(binding.clone());
        if persist {
            self.persist(store::Definition::Bind {
                source: source.to_string(),
                binding,
            });
        }
        Ok(())
    }

    pub(super) fn unbind(
        &mut self,
        source: &str,
        dest: &Destination,
        key: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        if source.is_empty() {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                "ACCESS_REFUSED - operation not permitted on the default exchange",
            ));
        }
        let Some(x) = self.exchanges.get_mut(source) else {
            return Err(not_found(&self.vhost, "exchange", source));
        };
        let before = x.bindings.len();
        x.bindings.retain(|b| {
            !(&b.destination == dest
                && b.key == key
                && (b.args == *args || source_is_not_headers(x.kind)))
        });
        let removed = before != x.bindings.len();
        let auto_delete = x.auto_delete && x.bindings.is_empty();
        if removed {
            self.persist(store::Definition::Unbind {
                source: source.to_string(),
                binding: Binding {
                    destination: dest.clone(),
                    key: key.to_string(),
                    args: args.clone(),
                },
            });
            if auto_delete {
                self.remove_exchange(source);
            }
        }
        Ok(())
    }

    pub(super) fn queue_declare(
        &mut self,
        conn: ConnId,
        m: &queue::Declare,
        config: &AmqpConfig,
    ) -> AmqpResult<queue::DeclareOk> {
        let mut name = m.queue.as_str().to_string();
        if name.is_empty() {
            if m.passive {
                return Err(not_found(&self.vhost, "queue", ""));
            }
            self.next_name += 1;
            name = format!("amq.gen-{:x}-{:x}", now_ms(), self.next_name);
        }
        if !m.passive {
            self.check(conn, Configure, "queue", &name, "queue.declare")?;
        }
        if let Some(q) = self.queues.get(&name) {
            if q.exclusive_owner.is_some_and(|o| o != conn) {
                return Err(AmqpError::soft(RESOURCE_LOCKED, format!("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'", vhost = self.vhost)));
            }
            if !m.passive {
                let args = QueueArgs::parse(&m.arguments, config.default_max_length)
                    .map_err(|t| AmqpError::soft(PRECONDITION_FAILED, t))?;
                if q.durable != m.durable
                    || q.auto_delete != m.auto_delete
                    || q.messages.args != args
                {
                    return Err(AmqpError::soft(PRECONDITION_FAILED, format!("PRECONDITION_FAILED - inequivalent arg 'durable', 'auto_delete' or x-arguments for queue '{name}' in vhost '{vhost}'", vhost = self.vhost)));
                }
            }
            return Ok(queue::DeclareOk {
                queue: name.as_str().into(),
                message_count: q.messages.len() as u32,
                consumer_count: q.consumers.len() as u32,
            });
        }
        if m.passive {
            return Err(not_found(&self.vhost, "queue", &name));
        }
        if name.starts_with("amq.") && !m.queue.as_str().is_empty() {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                format!("ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        let args = QueueArgs::parse(&m.arguments, config.default_max_length)
            .map_err(|t| AmqpError::soft(PRECONDITION_FAILED, t))?;
        let log = match (&mut self.store, m.durable && !m.exclusive) {
            (Some(store), true) => Some(store.create_queue_log(&name).map_err(|e| {
                AmqpError::soft(
                    INTERNAL_ERROR,
                    format!("INTERNAL_ERROR - cannot create the queue file: {e}"),
                )
            })?),
            _ => None,
        };
        if m.durable && !m.exclusive {
            let mut def = m.clone();
            def.queue = name.as_str().into();
            def.passive = false;
            def.nowait = false;
            self.persist(store::Definition::QueueDeclare(def));
        }
        self.queues.insert(
            name.clone(),
            Queue {
                name: name.clone(),
                durable: m.durable,
                exclusive_owner: m.exclusive.then_some(conn),
                auto_delete: m.auto_delete,
                args: m.arguments.clone(),
                messages: MessageQueue::new(args),
                consumers: Vec::new(),
                next_consumer: 0,
                had_consumer: false,
                unacked: 0,
                log,
            },
        );
        // Every queue is bound to the default exchange by its name (implicitly: see `route`).
        Ok(queue::DeclareOk {
            queue: name.as_str().into(),
            message_count: 0,
            consumer_count: 0,
        })
    }

    /// Removes a queue, telling its consumers (basic.cancel); returns how many messages it held.
    pub(super) fn delete_queue(&mut self, name: &str) -> u32 {
        let Some(mut q) = self.queues.remove(name) else {
            return 0;
        };
        let count = q.messages.len() as u32;
        for c in q.consumers.drain(..) {
            if let Some(chan) = self.channels.get_mut(&(c.conn, c.channel)) {
                chan.consumers
                    .retain(|(qn, t)| !(qn == name && *t == c.tag));
            }
            self.send_method(
                c.conn,
                c.channel,
                AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: c.tag.as_str().into(),
                    nowait: true,
                })),
            );
        }
        if let Some(log) = q.log.take() {
            if let Err(e) = log.delete() {
                tracing::error!("amqp: {e}");
            }
        }
        self.dirty_queues.remove(name);
        if q.durable && q.exclusive_owner.is_none() && self.store.is_some() {
            self.persist(store::Definition::QueueDelete(name.to_string()));
        }
        self.remove_bindings_to(&Destination::Queue(name.to_string()));
        count
    }
}

/// Unbinding from a non-headers exchange ignores the arguments (clients
/// rarely repeat them).
fn source_is_not_headers(kind: ExchangeKind) -> bool {
    kind != ExchangeKind::Headers
}
