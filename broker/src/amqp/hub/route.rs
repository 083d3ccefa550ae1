//! basic.publish, and what every method needs from the state: sending to a connection,
//! finding a channel or a queue, dropping messages for good, and routing a
//! published message to its queues.

use super::*;

impl AmqpHub {
    /// Routes a complete published message.
    pub fn publish(
        &self,
        conn: ConnId,
        channel: u16,
        publish: &basic::Publish,
        properties: AMQPProperties,
        body: Bytes,
    ) -> AmqpResult<PublishOutcome> {
        self.counters.messages_received.inc();
        let mut st = self.state_of(conn);
        let exchange = publish.exchange.as_str();
        if let Err(e) = st.check(
            conn,
            AmqpAccess::Write,
            "exchange",
            exchange,
            "basic.publish",
        ) {
            self.report(&mut st);
            self.metrics
                .message_dropped(Protocol::Amqp, "not_authorized");
            return Err(e);
        }
        match st.exchanges.get(exchange) {
            None => {
                return Err(AmqpError::soft(
                    NOT_FOUND,
                    format!(
                        "NOT_FOUND - no exchange '{exchange}' in vhost '{vhost}'",
                        vhost = st.vhost
                    ),
                ))
            }
            Some(x) if x.internal => {
                return Err(AmqpError::soft(
                    ACCESS_REFUSED,
                    format!("ACCESS_REFUSED - cannot publish to internal exchange '{exchange}'"),
                ))
            }
            Some(_) => {}
        }
        let message = Arc::new(Message {
            exchange: exchange.to_string(),
            routing_key: publish.routing_key.as_str().to_string(),
            charge: Charge::new(
                &self.held,
                Message::cost(body.len(), exchange, publish.routing_key.as_str()),
            ),
            properties,
            body,
        });
        let outcome = st.route_and_push(exchange, message.clone());
        if !outcome.routed && !outcome.refused && publish.mandatory {
            let mut out = BytesMut::new();
            let frame_max = st
                .conns
                .get(&conn)
                .map_or(codec::FRAME_MIN_SIZE, |c| c.frame_max);
            codec::put_method(
                &mut out,
                channel,
                AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                    reply_code: NO_ROUTE,
                    reply_text: "NO_ROUTE".into(),
                    exchange: publish.exchange.clone(),
                    routing_key: publish.routing_key.clone(),
                })),
            );
            codec::put_content(
                &mut out,
                channel,
                &message.properties,
                &message.body,
                frame_max,
            );
            st.send(conn, out.freeze());
        }
        if !outcome.routed && !outcome.refused {
            self.metrics.message_dropped(Protocol::Amqp, "unroutable");
        }
        st.settle(&self.counters);
        self.report(&mut st);
        Ok(outcome)
    }
}

impl State {
    pub(super) fn send(&self, conn: ConnId, bytes: Bytes) {
        if let Some(c) = self.conns.get(&conn) {
            c.out.send(bytes);
        }
    }

    pub(super) fn send_method(&self, conn: ConnId, channel: u16, method: AMQPClass) {
        let mut out = BytesMut::new();
        codec::put_method(&mut out, channel, method);
        self.send(conn, out.freeze());
    }

    pub(super) fn channel(&mut self, conn: ConnId, channel: u16) -> AmqpResult<&mut ChannelState> {
        self.channels.get_mut(&(conn, channel)).ok_or_else(|| {
            AmqpError::hard(
                CHANNEL_ERROR,
                format!("CHANNEL_ERROR - channel {channel} is not open"),
            )
        })
    }

    /// The queue a method names; the empty name means the channel's last declared queue.
    pub(super) fn queue_name(
        &mut self,
        conn: ConnId,
        channel: u16,
        name: &ShortString,
    ) -> AmqpResult<String> {
        if !name.as_str().is_empty() {
            return Ok(name.as_str().to_string());
        }
        self.channel(conn, channel)?
            .last_queue
            .clone()
            .ok_or_else(|| AmqpError::soft(NOT_FOUND, "NOT_FOUND - no previously declared queue"))
    }

    /// The queue, if this connection may use it (exclusive queues belong to one connection).
    pub(super) fn usable_queue(&mut self, conn: ConnId, name: &str) -> AmqpResult<&mut Queue> {
        match self.queues.get_mut(name) {
            None => Err(not_found(&self.vhost, "queue", name)),
            Some(q) if q.exclusive_owner.is_some_and(|o| o != conn) => Err(AmqpError::soft(
                RESOURCE_LOCKED,
                format!("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'", vhost = self.vhost),
            )),
            Some(q) => Ok(q),
        }
    }

    /// Drops messages for good: their records on disk are removed.
    pub(super) fn forget<'a>(
        &mut self,
        queue: &str,
        messages: impl Iterator<Item = &'a QueuedMessage>,
    ) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let Some(log) = &mut q.log else { return };
        let mut wrote = false;
        for m in messages.filter(|m| m.on_disk) {
            if let Err(e) = log.remove(m.id) {
                tracing::error!("amqp: {e}");
            }
            wrote = true;
        }
        match log.clear_if_dead() {
            Ok(cleared) => wrote |= cleared,
            Err(e) => tracing::error!("amqp: {e}"),
        }
        if wrote {
            self.dirty_queues.insert(queue.to_string());
            self.write_seq += 1;
        }
    }

    /// The queues an exchange routes a message to (through exchange-to-exchange bindings too).
    pub(super) fn route(&self, exchange: &str, message: &Message) -> Vec<String> {
        if exchange.is_empty() {
            return match self.queues.contains_key(&message.routing_key) {
                true => vec![message.routing_key.clone()],
                false => Vec::new(),
            };
        }
        let headers = message.properties.headers().as_ref();
        let mut queues = Vec::new();
        let mut seen = HashSet::new();
        let mut todo = vec![exchange.to_string()];
        while let Some(x) = todo.pop() {
            if !seen.insert(x.clone()) {
                continue;
            }
            let Some(x) = self.exchanges.get(&x) else {
                continue;
            };
            for b in &x.bindings {
                if x.kind
                    .matches(&b.key, &b.args, &message.routing_key, headers)
                {
                    match &b.destination {
                        Destination::Queue(q) if !queues.contains(q) => queues.push(q.clone()),
                        Destination::Queue(_) => {}
                        Destination::Exchange(e) => todo.push(e.clone()),
                    }
                }
            }
        }
        queues
    }

    pub(super) fn route_and_push(
        &mut self,
        exchange: &str,
        message: Arc<Message>,
    ) -> PublishOutcome {
        let targets = self.route(exchange, &message);
        let mut outcome = PublishOutcome {
            routed: !targets.is_empty(),
            ..PublishOutcome::default()
        };
        // reject-publish refuses the message everywhere (as RabbitMQ's confirms report one nack).
        if targets.iter().any(|q| {
            self.queues
                .get(q)
                .is_some_and(|q| q.messages.would_reject(&message))
        }) {
            self.rejected_max_length += 1;
            outcome.refused = true;
            return outcome;
        }
        if self.storage_failed
            && message.is_persistent()
            && targets.iter().any(|q| {
                self.queues
                    .get(q)
                    .is_some_and(|q| q.durable && q.log.is_some())
            })
        {
            outcome.refused = true;
            return outcome;
        }
        let now = now_ms();
        for name in targets {
            let Some(q) = self.queues.get_mut(&name) else {
                continue;
            };
            let persist = q.durable && message.is_persistent() && q.log.is_some();
            let result = q.messages.push(message.clone(), now, persist);
            if let PushOutcome::Queued { dropped } = result {
                if persist {
                    let qm = q.messages.iter().last().cloned();
                    if let (Some(log), Some(qm)) = (&mut q.log, qm) {
                        match log.append(&qm) {
                            Ok(()) => {
                                outcome.wrote_to_disk = true;
                                self.dirty_queues.insert(name.clone());
                                self.write_seq += 1;
                                outcome.write_seq = self.write_seq;
                            }
                            Err(e) => {
                                tracing::error!("amqp: {e}");
                                outcome.refused = true;
                            }
                        }
                    }
                }
                self.dropped_max_length += dropped.len() as u64;
                for d in dropped {
                    self.to_dead_letter
                        .push((name.clone(), d, DeadReason::MaxLen));
                }
                self.to_dispatch.push(name);
            }
        }
        outcome
    }
}
