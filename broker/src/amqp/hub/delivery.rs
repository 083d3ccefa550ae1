//! Handing messages to consumers: dispatch within prefetch windows (round
//! robin), settling what was acknowledged, dead-lettering, and expiry.

use super::*;

impl State {
    pub(super) fn dispatch_channel(&mut self, conn: ConnId, ch: u16) {
        if let Some(c) = self.channels.get(&(conn, ch)) {
            self.to_dispatch
                .extend(c.consumers.iter().map(|(q, _)| q.clone()));
        }
    }

    /// Hands ready messages of `name` to consumers with room in their prefetch windows (round robin).
    pub(super) fn dispatch(&mut self, name: &str, counters: &ProtocolCounters) {
        let now = now_ms();
        let State {
            queues,
            channels,
            conns,
            to_dead_letter,
            ..
        } = self;
        let Some(q) = queues.get_mut(name) else {
            return;
        };
        let mut forgotten = Vec::new();
        loop {
            to_dead_letter.extend(
                q.messages
                    .expire(now)
                    .into_iter()
                    .map(|m| (name.to_string(), m, DeadReason::Expired)),
            );
            if q.messages.is_empty() || q.consumers.is_empty() {
                break;
            }
            let n = q.consumers.len();
            let pick = (0..n).map(|i| (q.next_consumer + i) % n).find(|&i| {
                let c = &q.consumers[i];
                let Some(chan) = channels.get(&(c.conn, c.channel)) else {
                    return false;
                };
                // A connection whose outbound queue is full gets nothing
                // more until its writer has drained it (the message waits here).
                chan.active
                    && (c.no_ack || c.prefetch == 0 || c.unacked < usize::from(c.prefetch))
                    && (c.no_ack
                        || chan.prefetch_channel == 0
                        || chan.unacked.len() < usize::from(chan.prefetch_channel))
                    && conns
                        .get(&c.conn)
                        .is_some_and(|x| x.out.room_for_delivery())
            });
            let Some(i) = pick else { break };
            q.next_consumer = (i + 1) % n;
            let mut expired = Vec::new();
            let Some(qm) = q.messages.pop(now, &mut expired) else {
                break;
            };
            to_dead_letter.extend(
                expired
                    .into_iter()
                    .map(|m| (name.to_string(), m, DeadReason::Expired)),
            );
            let c = &mut q.consumers[i];
            let Some(chan) = channels.get_mut(&(c.conn, c.channel)) else {
                break;
            };
            let tag = chan.next_tag;
            chan.next_tag += 1;
            let frame_max = conns
                .get(&c.conn)
                .map_or(codec::FRAME_MIN_SIZE, |x| x.frame_max);
            let mut out = BytesMut::new();
            codec::put_method(
                &mut out,
                c.channel,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: c.tag.as_str().into(),
                    delivery_tag: tag,
                    redelivered: qm.redelivered,
                    exchange: qm.message.exchange.as_str().into(),
                    routing_key: qm.message.routing_key.as_str().into(),
                })),
            );
            codec::put_content(
                &mut out,
                c.channel,
                &qm.message.properties,
                &qm.message.body,
                frame_max,
            );
            if let Some(x) = conns.get(&c.conn) {
                x.out.send(out.freeze());
            }
            counters.messages_sent.inc();
            if c.no_ack {
                forgotten.push(qm);
            } else {
                c.unacked += 1;
                q.unacked += 1;
                chan.unacked.insert(
                    tag,
                    Unacked {
                        queue: name.to_string(),
                        consumer_tag: Some(c.tag.clone()),
                        message: qm,
                    },
                );
            }
        }
        if !forgotten.is_empty() {
            self.forget(name, forgotten.iter());
        }
    }

    /// Runs the deliveries and dead-lettering that earlier steps made due.
    pub(super) fn settle(&mut self, counters: &ProtocolCounters) {
        let mut hops = 0;
        loop {
            if let Some((queue, m, reason)) = self.to_dead_letter.pop() {
                hops += 1;
                if hops <= MAX_DEAD_LETTER_HOPS {
                    self.dead_letter(&queue, m, reason);
                }
                continue;
            }
            let mut names = std::mem::take(&mut self.to_dispatch);
            if names.is_empty() {
                break;
            }
            names.sort();
            names.dedup();
            for n in names {
                self.dispatch(&n, counters);
            }
        }
    }

    pub(super) fn dead_letter(&mut self, queue: &str, m: QueuedMessage, reason: DeadReason) {
        let target = self.queues.get(queue).and_then(|q| {
            q.messages
                .args
                .dead_letter_exchange
                .clone()
                .map(|x| (x, q.messages.args.dead_letter_routing_key.clone()))
        });
        self.forget(queue, std::iter::once(&m));
        let Some((exchange, key)) = target else {
            return;
        };
        let now_secs = now_ms() / 1000;
        let Some(copy) = dead_letter(&m.message, queue, reason, key.as_deref(), now_secs) else {
            return;
        };
        if self.exchanges.contains_key(&exchange) {
            self.route_and_push(&exchange, Arc::new(copy));
        }
    }

    pub(super) fn expire_all(&mut self) {
        let now = now_ms();
        let mut expired = Vec::new();
        for q in self
            .queues
            .values_mut()
            .filter(|q| q.messages.has_expiring())
        {
            for m in q.messages.expire(now) {
                expired.push((q.name.clone(), m, DeadReason::Expired));
            }
        }
        self.to_dead_letter.extend(expired);
    }
}
