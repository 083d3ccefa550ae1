//! The channel methods about consumers and deliveries: consume, cancel,
//! get, and what acks, nacks, rejects and a closing channel do to the
//! unacknowledged messages.

use amq_protocol::protocol::basic;
use bytes::BytesMut;

use super::*;

impl State {
    pub(super) fn consume(&mut self, conn: ConnId, ch: u16, m: &basic::Consume) -> AmqpResult<()> {
        let name = self.queue_name(conn, ch, &m.queue)?;
        let tag = if m.consumer_tag.as_str().is_empty() {
            self.next_name += 1;
            format!("amq.ctag-{:x}-{:x}", now_ms(), self.next_name)
        } else {
            m.consumer_tag.as_str().to_string()
        };
        let prefetch = self.channel(conn, ch)?.prefetch_consumer;
        if self
            .channel(conn, ch)?
            .consumers
            .iter()
            .any(|(_, t)| *t == tag)
        {
            return Err(AmqpError::hard(
                NOT_ALLOWED,
                format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let q = self.usable_queue(conn, &name)?;
        if q.consumers.iter().any(|c| c.exclusive) || (m.exclusive && !q.consumers.is_empty()) {
            return Err(AmqpError::soft(
                ACCESS_REFUSED,
                format!(
                    "ACCESS_REFUSED - queue '{name}' in vhost '{vhost}' in exclusive use",
                    vhost = self.vhost
                ),
            ));
        }
        q.consumers.push(Consumer {
            tag: tag.clone(),
            conn,
            channel: ch,
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            prefetch,
            unacked: 0,
        });
        q.had_consumer = true;
        self.channel(conn, ch)?
            .consumers
            .push((name.clone(), tag.clone()));
        if !m.nowait {
            self.send_method(
                conn,
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.as_str().into(),
                })),
            );
        }
        self.to_dispatch.push(name);
        Ok(())
    }

    /// Removes a consumer; `notify` sends basic.cancel to the client (server-side cancel).
    pub(super) fn cancel(&mut self, conn: ConnId, ch: u16, tag: &str, notify: bool) {
        let Some(chan) = self.channels.get_mut(&(conn, ch)) else {
            return;
        };
        let Some(pos) = chan.consumers.iter().position(|(_, t)| t == tag) else {
            return;
        };
        let (qname, _) = chan.consumers.remove(pos);
        let mut delete = false;
        if let Some(q) = self.queues.get_mut(&qname) {
            q.consumers
                .retain(|c| !(c.conn == conn && c.channel == ch && c.tag == tag));
            delete = q.auto_delete && q.had_consumer && q.consumers.is_empty();
        }
        if notify {
            self.send_method(
                conn,
                ch,
                AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: tag.into(),
                    nowait: true,
                })),
            );
        }
        if delete {
            self.delete_queue(&qname);
        }
    }

    pub(super) fn close_channel(&mut self, conn: ConnId, ch: u16) {
        let Some(chan) = self.channels.get(&(conn, ch)) else {
            return;
        };
        let tags: Vec<String> = chan.consumers.iter().map(|(_, t)| t.clone()).collect();
        // Unacked messages go back before auto-delete queues lose their last consumer.
        let unacked = self
            .channels
            .get_mut(&(conn, ch))
            .map(|c| std::mem::take(&mut c.unacked))
            .unwrap_or_default();
        for (_, u) in unacked.into_iter().rev() {
            self.rejected(conn, ch, u, true);
        }
        for tag in tags {
            self.cancel(conn, ch, &tag, false);
        }
        self.channels.remove(&(conn, ch));
    }

    pub(super) fn get(&mut self, conn: ConnId, ch: u16, m: &basic::Get) -> AmqpResult<()> {
        let name = self.queue_name(conn, ch, &m.queue)?;
        let now = now_ms();
        let q = self.usable_queue(conn, &name)?;
        let mut expired = Vec::new();
        let popped = q.messages.pop(now, &mut expired);
        let remaining = q.messages.len() as u32;
        for e in expired {
            self.to_dead_letter
                .push((name.clone(), e, DeadReason::Expired));
        }
        let Some(qm) = popped else {
            self.send_method(
                conn,
                ch,
                AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            );
            return Ok(());
        };
        let chan = self.channel(conn, ch)?;
        let tag = chan.next_tag;
        chan.next_tag += 1;
        let mut out = BytesMut::new();
        codec::put_method(
            &mut out,
            ch,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: tag,
                redelivered: qm.redelivered,
                exchange: qm.message.exchange.as_str().into(),
                routing_key: qm.message.routing_key.as_str().into(),
                message_count: remaining,
            })),
        );
        let frame_max = self
            .conns
            .get(&conn)
            .map_or(codec::FRAME_MIN_SIZE, |c| c.frame_max);
        codec::put_content(
            &mut out,
            ch,
            &qm.message.properties,
            &qm.message.body,
            frame_max,
        );
        self.send(conn, out.freeze());
        if m.no_ack {
            self.forget(&name, std::iter::once(&qm));
        } else {
            if let Some(q) = self.queues.get_mut(&name) {
                q.unacked += 1;
            }
            self.channel(conn, ch)?.unacked.insert(
                tag,
                Unacked {
                    queue: name,
                    consumer_tag: None,
                    message: qm,
                },
            );
        }
        Ok(())
    }

    pub(super) fn take_unacked(
        &mut self,
        conn: ConnId,
        ch: u16,
        tag: u64,
        multiple: bool,
    ) -> AmqpResult<Vec<(u64, Unacked)>> {
        let chan = self.channel(conn, ch)?;
        if multiple {
            let upto = if tag == 0 { u64::MAX } else { tag };
            let keep = chan.unacked.split_off(&upto.saturating_add(1));
            let taken = std::mem::replace(&mut chan.unacked, keep);
            return Ok(taken.into_iter().collect());
        }
        match chan.unacked.remove(&tag) {
            Some(u) => Ok(vec![(tag, u)]),
            None => Err(AmqpError::soft(
                PRECONDITION_FAILED,
                format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
            )),
        }
    }

    /// Bookkeeping when a delivery stops being outstanding.
    pub(super) fn release(&mut self, conn: ConnId, ch: u16, u: &Unacked) {
        if let Some(q) = self.queues.get_mut(&u.queue) {
            q.unacked = q.unacked.saturating_sub(1);
            if let Some(tag) = &u.consumer_tag {
                if let Some(c) = q
                    .consumers
                    .iter_mut()
                    .find(|c| c.conn == conn && c.channel == ch && c.tag == *tag)
                {
                    c.unacked = c.unacked.saturating_sub(1);
                }
            }
        }
        self.dispatch_channel(conn, ch);
        self.to_dispatch.push(u.queue.clone());
    }

    pub(super) fn acked(&mut self, conn: ConnId, ch: u16, u: Unacked) {
        self.release(conn, ch, &u);
        self.forget(&u.queue, std::iter::once(&u.message));
    }

    pub(super) fn rejected(&mut self, conn: ConnId, ch: u16, u: Unacked, requeue: bool) {
        self.release(conn, ch, &u);
        if requeue {
            if let Some(q) = self.queues.get_mut(&u.queue) {
                q.messages.requeue(u.message);
            }
        } else {
            self.to_dead_letter
                .push((u.queue.clone(), u.message, DeadReason::Rejected));
        }
    }
}
