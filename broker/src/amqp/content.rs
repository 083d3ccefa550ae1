//! Content assembly: a `basic.publish` method frame, then one content header,
//! then body frames until the announced size is reached (AMQP 0.9.1 §4.2.6).
//! Pure: the connection feeds frames in and takes the finished message out.

use amq_protocol::protocol::basic::{self, AMQPProperties};
use bytes::{Bytes, BytesMut};

use super::codec::BASIC_CLASS;

/// Why a content header or body frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("content header of class {0}, expected 60 (basic)")]
    WrongClass(u16),
    #[error("message size {size} is larger than configured max size {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("content body of {have} bytes exceeds the {size} announced")]
    BodyOverflow { have: u64, size: u64 },
}

/// A `basic.publish` waiting for its content.
#[derive(Debug)]
pub struct PendingContent {
    pub publish: basic::Publish,
    header: Option<(u64, AMQPProperties)>,
    /// The body so far, in a buffer of its own: the frames' bytes are views
    /// of the connection's read buffer, and a queued message must not keep
    /// that whole allocation alive (nor be counted smaller than it holds).
    body: BytesMut,
}

/// A publish whose header and whole body have arrived.
#[derive(Debug)]
pub struct Content {
    pub publish: basic::Publish,
    pub properties: AMQPProperties,
    pub body: Bytes,
}

impl PendingContent {
    pub fn new(publish: basic::Publish) -> PendingContent {
        PendingContent {
            publish,
            header: None,
            body: BytesMut::new(),
        }
    }

    /// Body bytes received so far.
    pub fn received(&self) -> usize {
        self.body.len()
    }

    /// Whether the next frame must be the content header (else a body frame).
    pub fn wants_header(&self) -> bool {
        self.header.is_none()
    }

    /// Takes the content header; `Ok(true)` when the message is complete
    /// already (an empty body). Refuses a size over `max` before any of the
    /// body is buffered.
    pub fn on_header(
        &mut self,
        class_id: u16,
        size: u64,
        properties: AMQPProperties,
        max: u64,
    ) -> Result<bool, ContentError> {
        if class_id != BASIC_CLASS {
            return Err(ContentError::WrongClass(class_id));
        }
        if size > max {
            return Err(ContentError::TooLarge { size, max });
        }
        self.header = Some((size, properties));
        // The body is reserved as it arrives, never from the announced size.
        Ok(size == 0)
    }

    /// Appends one body frame; `Ok(true)` when the announced size is reached.
    pub fn on_body(&mut self, part: Bytes) -> Result<bool, ContentError> {
        let size = self.header.as_ref().map_or(0, |(s, _)| *s);
        let have = (self.body.len() + part.len()) as u64;
        if have > size {
            return Err(ContentError::BodyOverflow { have, size });
        }
        // Grows as frames arrive, never reserved from the announced size.
        self.body.extend_from_slice(&part);
        Ok(have == size)
    }

    /// The assembled message (call after `on_header`/`on_body` said complete).
    pub fn finish(self) -> Content {
        Content {
            publish: self.publish,
            properties: self.header.map(|(_, p)| p).unwrap_or_default(),
            body: self.body.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::codec::{next_frame, Frame};
    use crate::fixtures::amqp as fx;

    /// Frames parsed from the wire and assembled give back the body
    /// that was split over several frames.
    #[test]
    fn assembles_a_body_split_over_frames() {
        let body: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut wire = fx::publish_frames(1, &body, 4096);
        let mut pending = None;
        let mut done = None;
        while let Some(frame) = next_frame(&mut wire, 4096).unwrap() {
            match frame {
                Frame::Method(_, m) => pending = Some(PendingContent::new(fx::as_publish(m))),
                Frame::Header(_, h) => {
                    let p = pending.as_mut().unwrap();
                    assert!(p.wants_header());
                    assert!(!p
                        .on_header(h.class_id, h.body_size, h.properties, 1 << 20)
                        .unwrap());
                }
                Frame::Body(_, part) => {
                    if pending.as_mut().unwrap().on_body(part).unwrap() {
                        done = pending.take().map(PendingContent::finish);
                    }
                }
                Frame::Heartbeat(_) => unreachable!(),
            }
        }
        let content = done.expect("complete");
        assert_eq!(&content.body[..], &body[..]);
        assert_eq!(content.publish.routing_key.as_str(), "orders.eu");
        assert_eq!(
            content
                .properties
                .content_type()
                .as_ref()
                .map(|s| s.as_str()),
            Some("application/json")
        );
    }

    #[test]
    fn refuses_wrong_class_oversize_and_overflow() {
        let mut p = PendingContent::new(fx::publish_method());
        let props = AMQPProperties::default();
        assert_eq!(
            p.on_header(50, 1, props.clone(), 10),
            Err(ContentError::WrongClass(50))
        );
        assert_eq!(
            p.on_header(60, 11, props.clone(), 10),
            Err(ContentError::TooLarge { size: 11, max: 10 })
        );
        assert_eq!(p.on_header(60, 3, props, 10), Ok(false));
        assert_eq!(p.on_body(Bytes::from_static(b"ab")), Ok(false));
        assert_eq!(
            p.on_body(Bytes::from_static(b"cd")),
            Err(ContentError::BodyOverflow { have: 4, size: 3 })
        );
        assert_eq!(p.on_body(Bytes::from_static(b"c")), Ok(true));
        assert_eq!(&p.finish().body[..], b"abc");
    }

    /// A one-frame body is copied out of the frame: a queued message must
    /// not pin the connection's whole read buffer.
    #[test]
    fn body_does_not_share_the_read_buffer() {
        let mut read_buf = BytesMut::with_capacity(8192);
        read_buf.extend_from_slice(b"xxxxyyyyzz");
        let frame = read_buf.split_to(4).freeze();
        let (start, end) = (frame.as_ptr() as usize, frame.as_ptr() as usize + 8192);
        let mut p = PendingContent::new(fx::publish_method());
        assert_eq!(p.on_header(60, 4, AMQPProperties::default(), 10), Ok(false));
        assert_eq!(p.on_body(frame), Ok(true));
        let body = p.finish().body;
        assert_eq!(&body[..], b"xxxx");
        let at = body.as_ptr() as usize;
        assert!(
            !(start..end).contains(&at),
            "body is a view of the read buffer"
        );
    }

    #[test]
    fn empty_body_completes_on_the_header() {
        let mut p = PendingContent::new(fx::publish_method());
        assert_eq!(p.on_header(60, 0, AMQPProperties::default(), 10), Ok(true));
        assert!(p.finish().body.is_empty());
    }
}
