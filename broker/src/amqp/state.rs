//! The AMQP connection state machine after the handshake: frames decoded
//! from the bytes read are run against the channels and the hub (published
//! content is assembled from method, header and body frames), and every
//! answer is queued as frame bytes for the writer task. Nothing here does
//! I/O, so it is tested with byte vectors.
//!
//! Errors follow the spec: a channel error (soft) closes that channel with
//! channel.close; a connection error (hard) or bad framing closes the
//! connection with connection.close and the reply code, then waits for
//! close-ok (the I/O loop bounds the wait).

use std::collections::HashMap;
use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{access, basic, channel, confirm, connection, AMQPClass};
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::codec::{self, Frame, FrameError};
use super::config::AmqpFlushPolicy;
use super::content::{ContentError, PendingContent};
use super::error::*;
use super::hub::{AmqpHub, ConnId};
use super::memory::{Charge, Outbound};
use crate::metrics::Protocol;

/// What tune/tune-ok settled on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat: u16,
    /// The client announced the `connection.blocked` capability.
    pub blocked_capable: bool,
}

/// One method frame as bytes.
pub(super) fn method_frame(channel: u16, method: AMQPClass) -> BytesMut {
    let mut out = BytesMut::new();
    codec::put_method(&mut out, channel, method);
    out
}

/// The connection.close that reports `e`.
pub(super) fn connection_close(e: &AmqpError) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: e.code,
        reply_text: e.reply_text().into(),
        class_id: e.class_id,
        method_id: e.method_id,
    }))
}

#[derive(Default)]
struct ChannelLocal {
    /// channel.close sent, waiting for close-ok: everything else is dropped.
    closing: bool,
    content: Option<PendingContent>,
    confirm: bool,
    next_seq: u64,
}

pub(super) struct Session {
    hub: Arc<AmqpHub>,
    conn: ConnId,
    tx: Arc<Outbound>,
    tuning: Tuning,
    channels: HashMap<u16, ChannelLocal>,
    /// Body bytes being assembled over all channels (`amqp.max_connection_content_bytes`),
    /// also counted in the hub's memory total.
    content: Charge,
    /// The connection has published: the memory alarm stops reading it.
    pub published: bool,
    /// (channel, sequence number, ack, written to disk) of publishes to
    /// confirm after this batch.
    confirms: Vec<(u16, u64, bool, bool)>,
    /// The highest store write of this batch that must be fsynced first.
    need_sync: Option<u64>,
    /// When connection.close was sent (we wait for close-ok).
    pub closing: Option<Instant>,
    /// Set when the connection must end, with the reason.
    pub done: Option<String>,
}

impl Session {
    /// The state of a connection past its handshake; frames to the client go to `tx`.
    pub fn new(hub: Arc<AmqpHub>, conn: ConnId, tx: Arc<Outbound>, tuning: Tuning) -> Session {
        Session {
            content: hub.charge(),
            published: false,
            hub,
            conn,
            tx,
            tuning,
            channels: HashMap::new(),
            confirms: Vec::new(),
            need_sync: None,
            closing: None,
            done: None,
        }
    }

    /// Handles every whole frame in `buf`; all of them are handled before
    /// the confirms of the batch go out (group commit).
    pub fn process(&mut self, buf: &mut BytesMut) {
        loop {
            match codec::next_client_frame(buf, self.tuning.frame_max) {
                Ok(Some(frame)) => self.on_frame(frame),
                Ok(None) => break,
                Err(e) => {
                    self.frame_error(&e);
                    buf.clear();
                    break;
                }
            }
            if self.done.is_some() {
                break;
            }
        }
    }

    fn send(&self, channel: u16, method: AMQPClass) {
        self.tx.send(method_frame(channel, method).freeze());
    }

    /// Whether the client understands connection.blocked.
    pub fn blocked_capable(&self) -> bool {
        self.tuning.blocked_capable
    }

    /// Sends connection.blocked (with why) or connection.unblocked.
    pub fn send_blocked(&self, blocked: Option<&str>) {
        let m = match blocked {
            Some(reason) => connection::AMQPMethod::Blocked(connection::Blocked {
                reason: reason.into(),
            }),
            None => connection::AMQPMethod::Unblocked(connection::Unblocked {}),
        };
        self.send(0, AMQPClass::Connection(m));
    }

    /// Recounts the body bytes being assembled (after content left a channel).
    fn recount_content(&mut self) {
        let n = self
            .channels
            .values()
            .filter_map(|l| l.content.as_ref())
            .map(PendingContent::received)
            .sum();
        self.content.set(n);
    }

    fn frame_error(&mut self, e: &FrameError) {
        self.hub.metrics.protocol_error(Protocol::Amqp, e.kind());
        self.close_connection(&e.connection_error());
        // Framing is lost: nothing more can be read reliably.
        self.done = Some(e.to_string());
    }

    pub fn close_connection(&mut self, e: &AmqpError) {
        if self.closing.is_some() {
            return;
        }
        self.send(0, connection_close(e));
        self.closing = Some(Instant::now());
        self.confirms.clear();
        self.hub.disconnect(self.conn);
        self.channels.clear();
        self.content.set(0);
    }

    fn fail(&mut self, channel: u16, e: AmqpError) {
        if e.hard || channel == 0 {
            self.hub
                .metrics
                .protocol_error(Protocol::Amqp, "connection_error");
            tracing::debug!("amqp: connection error: {e}");
            self.close_connection(&e);
            return;
        }
        self.hub
            .metrics
            .protocol_error(Protocol::Amqp, "channel_error");
        tracing::debug!("amqp: channel {channel} error: {e}");
        self.hub.close_channel(self.conn, channel);
        self.confirms.retain(|(c, ..)| *c != channel);
        self.send(
            channel,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: e.reply_text().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
        let old = self.channels.insert(
            channel,
            ChannelLocal {
                closing: true,
                ..ChannelLocal::default()
            },
        );
        if old.is_some_and(|l| l.content.is_some()) {
            self.recount_content();
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        if self.closing.is_some() {
            // After connection.close only close-ok (or a crossing close) counts.
            if let Frame::Method(0, AMQPClass::Connection(m)) = &frame {
                match m {
                    connection::AMQPMethod::CloseOk(_) => {
                        self.done = Some("closed by the broker".into())
                    }
                    connection::AMQPMethod::Close(_) => {
                        self.send(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        );
                        self.done = Some("closed by the broker".into());
                    }
                    _ => {}
                }
            }
            return;
        }
        let ch = frame.channel();
        let result = match frame {
            Frame::Heartbeat(_) => Ok(()),
            Frame::Method(0, m) => self.on_connection_method(m),
            Frame::Method(ch, m) => self.on_channel_method(ch, m),
            Frame::Header(ch, h) => self.on_header(ch, h.body_size, h.properties, h.class_id),
            Frame::Body(ch, b) => self.on_body(ch, b),
        };
        if let Err(e) = result {
            self.fail(ch, e);
        }
    }

    fn on_connection_method(&mut self, m: AMQPClass) -> AmqpResult<()> {
        match &m {
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                self.hub.disconnect(self.conn);
                self.channels.clear();
                self.content.set(0);
                self.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.done = Some("closed by the client".into());
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                self.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            _ => Err(AmqpError::hard(
                COMMAND_INVALID,
                "COMMAND_INVALID - unexpected method on channel 0",
            )
            .during(&m)),
        }
    }

    fn on_channel_method(&mut self, ch: u16, m: AMQPClass) -> AmqpResult<()> {
        if ch > self.tuning.channel_max {
            return Err(AmqpError::hard(
                CHANNEL_ERROR,
                format!(
                    "CHANNEL_ERROR - channel {ch} is above channel_max {}",
                    self.tuning.channel_max
                ),
            )
            .during(&m));
        }
        let Some(local) = self.channels.get_mut(&ch) else {
            if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = m {
                self.channels.insert(
                    ch,
                    ChannelLocal {
                        next_seq: 1,
                        ..ChannelLocal::default()
                    },
                );
                self.hub.open_channel(self.conn, ch);
                self.send(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                return Ok(());
            }
            return Err(AmqpError::hard(
                CHANNEL_ERROR,
                format!("CHANNEL_ERROR - expected 'channel.open' on channel {ch}"),
            )
            .during(&m));
        };
        if local.closing {
            match m {
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                    self.channels.remove(&ch);
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    self.channels.remove(&ch);
                    self.send(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    );
                }
                _ => {}
            }
            return Ok(());
        }
        if local.content.is_some() {
            return Err(AmqpError::hard(UNEXPECTED_FRAME, format!("UNEXPECTED_FRAME - expected content header or body on channel {ch}, got a method")).during(&m));
        }
        match m {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => Err(AmqpError::hard(
                CHANNEL_ERROR,
                format!("CHANNEL_ERROR - second 'channel.open' seen on channel {ch}"),
            )
            .during(&m)),
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                self.hub.close_channel(self.conn, ch);
                self.channels.remove(&ch);
                self.recount_content();
                self.confirms.retain(|(c, ..)| *c != ch);
                self.send(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => Ok(()),
            AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                self.published = true;
                local.content = Some(PendingContent::new(p));
                Ok(())
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                local.confirm = true;
                if !s.nowait {
                    self.send(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send(
                    ch,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            m => self.hub.handle(self.conn, ch, &m).map_err(|e| e.during(&m)),
        }
    }

    fn on_header(
        &mut self,
        ch: u16,
        size: u64,
        properties: AMQPProperties,
        class_id: u16,
    ) -> AmqpResult<()> {
        let max = self.hub.config.max_message_bytes;
        let pending = match self.channels.get_mut(&ch) {
            Some(l) if l.closing => return Ok(()),
            Some(ChannelLocal { content: Some(p), .. }) if p.wants_header() => p,
            _ => return Err(AmqpError::hard(UNEXPECTED_FRAME, format!("UNEXPECTED_FRAME - content header on channel {ch} without a basic.publish before it"))),
        };
        match pending.on_header(class_id, size, properties, max) {
            Ok(true) => self.complete(ch),
            Ok(false) => Ok(()),
            Err(e @ ContentError::TooLarge { .. }) => {
                let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(pending.publish.clone()));
                if let Some(l) = self.channels.get_mut(&ch) {
                    l.content = None;
                }
                Err(
                    AmqpError::soft(PRECONDITION_FAILED, format!("PRECONDITION_FAILED - {e}"))
                        .during(&publish),
                )
            }
            Err(e) => Err(AmqpError::hard(FRAME_ERROR, format!("FRAME_ERROR - {e}"))),
        }
    }

    fn on_body(&mut self, ch: u16, part: Bytes) -> AmqpResult<()> {
        let pending = match self.channels.get_mut(&ch) {
            Some(l) if l.closing => return Ok(()),
            Some(ChannelLocal { content: Some(p), .. }) if !p.wants_header() => p,
            _ => return Err(AmqpError::hard(UNEXPECTED_FRAME, format!("UNEXPECTED_FRAME - content body on channel {ch} without a content header before it"))),
        };
        let assembling = self.content.bytes() + part.len();
        let max = self.hub.config.max_connection_content_bytes;
        if assembling as u64 > max {
            self.hub
                .metrics
                .protocol_error(Protocol::Amqp, "max_connection_content_bytes");
            return Err(AmqpError::hard(
                RESOURCE_ERROR,
                format!("RESOURCE_ERROR - {assembling} bytes of message bodies being received on this connection, over amqp.max_connection_content_bytes {max}"),
            ));
        }
        let n = part.len();
        match pending.on_body(part) {
            Ok(true) => {
                self.content.set(assembling);
                self.complete(ch)
            }
            Ok(false) => {
                self.content.set(assembling);
                Ok(())
            }
            Err(e) => Err(AmqpError::hard(
                FRAME_ERROR,
                format!("FRAME_ERROR - {e} ({n} bytes)"),
            )),
        }
    }

    fn complete(&mut self, ch: u16) -> AmqpResult<()> {
        let Some(local) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        let Some(p) = local.content.take() else {
            return Ok(());
        };
        let received = p.received();
        self.content
            .set(self.content.bytes().saturating_sub(received));
        let content = p.finish();
        let confirm = local.confirm.then(|| {
            let seq = local.next_seq;
            local.next_seq += 1;
            seq
        });
        let method = AMQPClass::Basic(basic::AMQPMethod::Publish(content.publish.clone()));
        let outcome = self
            .hub
            .publish(
                self.conn,
                ch,
                &content.publish,
                content.properties,
                content.body,
            )
            .map_err(|e| e.during(&method))?;
        if outcome.wrote_to_disk
            && (confirm.is_some() || self.hub.config.flush == AmqpFlushPolicy::EveryPublish)
        {
            self.need_sync = self.need_sync.max(Some(outcome.write_seq));
        }
        if let Some(seq) = confirm {
            self.confirms
                .push((ch, seq, !outcome.refused, outcome.wrote_to_disk));
        }
        Ok(())
    }

    /// After a batch of frames: whether what confirms (or the flush policy)
    /// need is on disk only once the hub has synced (the I/O loop does that
    /// before [`Session::send_confirms`]).
    pub fn take_need_sync(&mut self) -> Option<u64> {
        self.need_sync.take()
    }

    /// The fsync that had to cover this batch failed: what it wrote is nacked.
    pub fn sync_failed(&mut self) {
        for (_, _, ack, on_disk) in &mut self.confirms {
            if *on_disk {
                *ack = false;
            }
        }
    }

    /// Sends the confirms of the batch, one `multiple` ack per channel when
    /// nothing in the batch was refused.
    pub fn send_confirms(&mut self) {
        if self.confirms.is_empty() {
            return;
        }
        let confirms = std::mem::take(&mut self.confirms);
        let mut by_channel: Vec<(u16, Vec<(u64, bool)>)> = Vec::new();
        for (ch, seq, ack, _) in confirms {
            match by_channel.iter_mut().find(|(c, _)| *c == ch) {
                Some((_, v)) => v.push((seq, ack)),
                None => by_channel.push((ch, vec![(seq, ack)])),
            }
        }
        for (ch, results) in by_channel {
            if results.iter().all(|(_, ack)| *ack) {
                let last = results.last().map_or(0, |(s, _)| *s);
                self.send(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: last,
                        multiple: results.len() > 1,
                    })),
                );
                continue;
            }
            for (seq, ack) in results {
                let m = match ack {
                    true => basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: seq,
                        multiple: false,
                    }),
                    false => basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    }),
                };
                self.send(ch, AMQPClass::Basic(m));
            }
        }
    }
}

#[cfg(test)]
mod tests;
