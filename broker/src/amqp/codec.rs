//! AMQP 0.9.1 framing: the protocol header, and frames of
//! `type: u8, channel: u16, size: u32, payload, 0xCE`.
//!
//! Pure functions over bytes that say `None` ("incomplete") instead of
//! reading. Method and content-header payloads are decoded and every outgoing
//! frame is encoded by the `amq-protocol` crate; this module checks the frame
//! size against the negotiated `frame_max` *before* waiting for (or
//! allocating) the payload, and checks the end octet. Before a payload
//! reaches the crate's recursive parser it refuses methods only a server
//! sends and field tables nested too deep, on the raw bytes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{constants, parse_class, AMQPClass};
use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{AmqpError, COMMAND_INVALID, FRAME_ERROR, SYNTAX_ERROR};

/// What a client must send first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// type + channel + size.
const FRAME_HEADER_LEN: usize = 7;
/// Frame header and end octet around the payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + 1;
/// The smallest frame_max a peer may impose (spec: frame-min-size).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Class id of `basic`, the only class with content.
pub const BASIC_CLASS: u16 = 60;
/// Deepest nesting of field tables and arrays accepted. `amq-protocol`
/// parses (and drops) nested values recursively: a frame nesting tables
/// 18,000 deep overflowed the stack and aborted the broker, and so did a
/// connection.start nesting 26,000 arrays before any login, so depth is
/// checked on the raw bytes of every method and content header first.
pub const MAX_NESTING: usize = 64;

/// One decoded frame. Bodies stay `Bytes` (no copy into a `Vec`).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Method(u16, AMQPClass),
    Header(u16, Box<AMQPContentHeader>),
    Body(u16, Bytes),
    Heartbeat(u16),
}

impl Frame {
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method(c, _) | Frame::Header(c, _) | Frame::Body(c, _) | Frame::Heartbeat(c) => {
                *c
            }
        }
    }
}

/// Input that breaks the framing: the connection is closed with `reply_code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes is larger than the negotiated frame_max {max}")]
    TooLarge { size: u64, max: u32 },
    #[error("frame type {0} is not an AMQP 0.9.1 frame type")]
    UnknownType(u8),
    #[error("frame does not end with the frame-end octet 0xCE (found {0:#04x})")]
    MissingEnd(u8),
    #[error("{what} payload does not decode: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("{name} ({class_id}.{method_id}) is sent by servers only, never by a client")]
    ServerMethod {
        name: &'static str,
        class_id: u16,
        method_id: u16,
    },
}

impl FrameError {
    /// The connection.close reply code the spec gives for this error.
    pub fn reply_code(&self) -> u16 {
        match self {
            FrameError::Malformed { .. } => SYNTAX_ERROR,
            FrameError::ServerMethod { .. } => COMMAND_INVALID,
            _ => FRAME_ERROR,
        }
    }

    /// The `protocol_errors_total{kind}` label.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "frame_too_large",
            FrameError::UnknownType(_) => "frame_type_unknown",
            FrameError::MissingEnd(_) => "frame_end_missing",
            FrameError::Malformed { .. } => "malformed_frame",
            FrameError::ServerMethod { .. } => "server_method",
        }
    }

    /// The connection error that closes the connection over this frame.
    pub fn connection_error(&self) -> AmqpError {
        let code = self.reply_code();
        let name = match code {
            FRAME_ERROR => "FRAME_ERROR",
            SYNTAX_ERROR => "SYNTAX_ERROR",
            _ => "COMMAND_INVALID",
        };
        let mut e = AmqpError::hard(code, format!("{name} - {self}"));
        if let FrameError::ServerMethod {
            class_id,
            method_id,
            ..
        } = self
        {
            e.class_id = *class_id;
            e.method_id = *method_id;
        }
        e
    }
}

/// The name of a method only a server may send, `None` for the others.
/// From the AMQP 0-9-1 spec (methods whose only chassis is "client") with
/// RabbitMQ's extensions (connection.blocked/unblocked, update-secret-ok,
/// the bind-ok/unbind-ok of exchange-to-exchange bindings, confirm.select-ok).
/// Methods either side may send (close, close-ok, channel.flow, basic.ack,
/// basic.nack, basic.cancel and cancel-ok) are not here.
pub fn server_only_method(class_id: u16, method_id: u16) -> Option<&'static str> {
    Some(match (class_id, method_id) {
        (10, 10) => "connection.start",
        (10, 20) => "connection.secure",
        (10, 30) => "connection.tune",
        (10, 41) => "connection.open-ok",
        (10, 60) => "connection.blocked",
        (10, 61) => "connection.unblocked",
        (10, 71) => "connection.update-secret-ok",
        (20, 11) => "channel.open-ok",
        (30, 11) => "access.request-ok",
        (40, 11) => "exchange.declare-ok",
        (40, 21) => "exchange.delete-ok",
        (40, 31) => "exchange.bind-ok",
        (40, 51) => "exchange.unbind-ok",
        (50, 11) => "queue.declare-ok",
        (50, 21) => "queue.bind-ok",
        (50, 31) => "queue.purge-ok",
        (50, 41) => "queue.delete-ok",
        (50, 51) => "queue.unbind-ok",
        (60, 11) => "basic.qos-ok",
        (60, 21) => "basic.consume-ok",
        (60, 50) => "basic.return",
        (60, 60) => "basic.deliver",
        (60, 71) => "basic.get-ok",
        (60, 72) => "basic.get-empty",
        (60, 111) => "basic.recover-ok",
        (85, 11) => "confirm.select-ok",
        (90, 11) => "tx.select-ok",
        (90, 21) => "tx.commit-ok",
        (90, 31) => "tx.rollback-ok",
        _ => return None,
    })
}

/// A client spoke something other than AMQP 0.9.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an AMQP 0-9-1 protocol header")]
pub struct BadProtocolHeader;

/// Checks the 8-byte protocol header: `Ok(None)` while fewer bytes are there
/// and they still match, `Err` as soon as it cannot be AMQP 0.9.1 (the server
/// then answers with [`PROTOCOL_HEADER`] and closes, as the spec says).
pub fn read_protocol_header(buf: &mut BytesMut) -> Result<Option<()>, BadProtocolHeader> {
    let n = buf.len().min(PROTOCOL_HEADER.len());
    if buf[..n] != PROTOCOL_HEADER[..n] {
        return Err(BadProtocolHeader);
    }
    if n < PROTOCOL_HEADER.len() {
        return Ok(None);
    }
    buf.advance(PROTOCOL_HEADER.len());
    Ok(Some(()))
}

/// Splits and decodes the next frame a client sent off `buf`; `Ok(None)`
/// when more bytes are needed. `frame_max` bounds the whole frame (header
/// and end octet included). Methods only a server sends are refused by
/// their ids, before their arguments are parsed.
pub fn next_client_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, FrameError> {
    split_frame(buf, frame_max, true)
}

/// Like [`next_client_frame`] for frames from either side (what the broker
/// stored or sent): every method is parsed.
pub fn next_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, FrameError> {
    split_frame(buf, frame_max, false)
}

fn split_frame(
    buf: &mut BytesMut,
    frame_max: u32,
    from_client: bool,
) -> Result<Option<Frame>, FrameError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let kind = buf[0];
    if !matches!(
        kind,
        constants::FRAME_METHOD
            | constants::FRAME_HEADER
            | constants::FRAME_BODY
            | constants::FRAME_HEARTBEAT
    ) {
        return Err(FrameError::UnknownType(kind));
    }
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    let total = u64::from(size) + FRAME_OVERHEAD as u64;
    if total > u64::from(frame_max) {
        return Err(FrameError::TooLarge {
            size: total,
            max: frame_max,
        });
    }
    let total = total as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != constants::FRAME_END {
        return Err(FrameError::MissingEnd(end));
    }
    let mut frame = buf.split_to(total);
    frame.advance(FRAME_HEADER_LEN);
    frame.truncate(size as usize);
    let payload = frame.freeze();
    decode_payload(kind, channel, payload, from_client).map(Some)
}

fn decode_payload(
    kind: u8,
    channel: u16,
    payload: Bytes,
    from_client: bool,
) -> Result<Frame, FrameError> {
    let malformed = |what: &'static str, e: String| FrameError::Malformed { what, detail: e };
    if from_client && kind == constants::FRAME_METHOD && payload.len() >= 4 {
        let class_id = u16::from_be_bytes([payload[0], payload[1]]);
        let method_id = u16::from_be_bytes([payload[2], payload[3]]);
        // Refused on the ids alone: their arguments are never parsed.
        if let Some(name) = server_only_method(class_id, method_id) {
            return Err(FrameError::ServerMethod {
                name,
                class_id,
                method_id,
            });
        }
    }
    if matches!(kind, constants::FRAME_METHOD | constants::FRAME_HEADER)
        && nesting_exceeds(&payload, MAX_NESTING)
    {
        return Err(malformed(
            "field table",
            format!("tables or arrays nested deeper than {MAX_NESTING}"),
        ));
    }
    match kind {
        constants::FRAME_METHOD => match parse_class(&payload[..]) {
            Ok(([], method)) => Ok(Frame::Method(channel, method)),
            Ok((rest, _)) => Err(malformed(
                "method",
                format!("{} bytes left over", rest.len()),
            )),
            Err(e) => Err(malformed("method", short_error(&e))),
        },
        constants::FRAME_HEADER => {
            match amq_protocol::frame::parsing::parse_content_header(&payload[..]) {
                Ok(([], header)) => Ok(Frame::Header(channel, Box::new(header))),
                Ok((rest, _)) => Err(malformed(
                    "content header",
                    format!("{} bytes left over", rest.len()),
                )),
                Err(e) => Err(malformed("content header", short_error(&e))),
            }
        }
        constants::FRAME_BODY => Ok(Frame::Body(channel, payload)),
        _ => Ok(Frame::Heartbeat(channel)),
    }
}

/// Whether `data` may nest field tables or arrays deeper than `max`,
/// whatever the method and wherever its tables are.
///
/// Every `'F'` or `'A'` octet followed by a length that fits in `data` is
/// taken as a container spanning its length, and the answer is whether some
/// position lies inside more than `max` of them. Each table or array the
/// parser would recurse into is such a span, nested inside its parent's, so
/// the real depth is never undercounted; octets that only look like a
/// container (a string ending in "F" before a table length) can add a level
/// or two, which a legitimate payload, far below the limit, does not notice.
/// One pass with a heap of open spans that never holds more than `max + 1`
/// ends: O(n log max) time, O(max) memory, no recursion.
pub fn nesting_exceeds(data: &[u8], max: usize) -> bool {
    let mut open: BinaryHeap<Reverse<usize>> = BinaryHeap::new();
    for (at, &octet) in data.iter().enumerate() {
        if octet != b'F' && octet != b'A' {
            continue;
        }
        let Some(len) = data.get(at + 1..at + 5) else {
            break;
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(end) = (at + 5).checked_add(len).filter(|&e| e <= data.len()) else {
            continue;
        };
        while open.peek().is_some_and(|&Reverse(e)| e <= at) {
            open.pop();
        }
        open.push(Reverse(end));
        if open.len() > max {
            return true;
        }
    }
    false
}

fn short_error<E: std::fmt::Debug>(e: &E) -> String {
    let mut s = format!("{e:?}");
    s.truncate(200);
    s
}

fn gen_into(out: &mut BytesMut, frame: &AMQPFrame) {
    match gen_frame(frame)(WriteContext::from(Vec::new())) {
        Ok(ctx) => out.put_slice(&ctx.write),
        // Only an unencodable value (a short string over 255 bytes) gets here,
        // and every string the broker sends is bounded by what a client sent in one.
        Err(e) => tracing::error!("amqp: cannot encode {frame}: {e:?}"),
    }
}

/// Appends one method frame.
pub fn put_method(out: &mut BytesMut, channel: u16, method: AMQPClass) {
    gen_into(out, &AMQPFrame::Method(channel, method));
}

/// Appends a heartbeat frame.
pub fn put_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[
        constants::FRAME_HEARTBEAT,
        0,
        0,
        0,
        0,
        0,
        0,
        constants::FRAME_END,
    ]);
}

/// Appends a content header and the body split into frames that fit `frame_max`.
pub fn put_content(
    out: &mut BytesMut,
    channel: u16,
    properties: &AMQPProperties,
    body: &[u8],
    frame_max: u32,
) {
    gen_into(
        out,
        &AMQPFrame::Header(
            channel,
            BASIC_CLASS,
            Box::new(AMQPContentHeader {
                class_id: BASIC_CLASS,
                body_size: body.len() as u64,
                properties: properties.clone(),
            }),
        ),
    );
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        out.reserve(part.len() + FRAME_OVERHEAD);
        out.put_u8(constants::FRAME_BODY);
        out.put_u16(channel);
        out.put_u32(part.len() as u32);
        out.put_slice(part);
        out.put_u8(constants::FRAME_END);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{basic, channel, connection, queue};
    use amq_protocol::types::{AMQPValue, FieldTable};

    #[test]
    fn protocol_header_is_checked_early() {
        let mut b = BytesMut::from(&b"AMQ"[..]);
        assert_eq!(read_protocol_header(&mut b), Ok(None));
        let mut b = BytesMut::from(&b"AMQP\x00\x00\x09\x01rest"[..]);
        assert_eq!(read_protocol_header(&mut b), Ok(Some(())));
        assert_eq!(&b[..], b"rest");
        // AMQP 0-10 and HTTP are refused as soon as a byte differs.
        let mut b = BytesMut::from(&b"AMQP\x01\x01\x00\x0a"[..]);
        assert_eq!(read_protocol_header(&mut b), Err(BadProtocolHeader));
        let mut b = BytesMut::from(&b"GET"[..]);
        assert_eq!(read_protocol_header(&mut b), Err(BadProtocolHeader));
    }

    #[test]
    fn channel_open_golden_vector_and_partial_input() {
        // type 1 (method), channel 1, size 5: class 20 (channel), method 10 (open), shortstr "" (reserved), end.
        let bytes: &[u8] = &[1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE];
        for cut in 0..bytes.len() {
            let mut b = BytesMut::from(&bytes[..cut]);
            assert_eq!(next_frame(&mut b, 4096), Ok(None), "cut at {cut}");
        }
        let mut b = BytesMut::from(bytes);
        assert_eq!(
            next_frame(&mut b, 4096),
            Ok(Some(Frame::Method(
                1,
                AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}))
            )))
        );
        assert!(b.is_empty());
        let mut out = BytesMut::new();
        put_method(
            &mut out,
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        assert_eq!(&out[..], bytes);
    }

    #[test]
    fn framing_errors() {
        // 4 GiB announced: refused from the 7-byte header, nothing reserved.
        let mut b = BytesMut::from(&[3, 0, 1, 0xff, 0xff, 0xff, 0xff][..]);
        let cap = b.capacity();
        assert_eq!(
            next_frame(&mut b, 131_072),
            Err(FrameError::TooLarge {
                size: 0xffff_ffff + 8,
                max: 131_072
            })
        );
        assert_eq!(b.capacity(), cap);
        let mut b = BytesMut::from(&[3, 0, 1, 0, 0, 0, 1, b'x', 0x00][..]);
        assert_eq!(next_frame(&mut b, 4096), Err(FrameError::MissingEnd(0)));
        let mut b = BytesMut::from(&[9, 0, 1, 0, 0, 0, 0, 0xCE][..]);
        assert_eq!(next_frame(&mut b, 4096), Err(FrameError::UnknownType(9)));
        // class 20 method 99 does not exist.
        let mut b = BytesMut::from(&[1, 0, 1, 0, 0, 0, 4, 0, 20, 0, 99, 0xCE][..]);
        let err = next_frame(&mut b, 4096).unwrap_err();
        assert_eq!(err.reply_code(), 502);
        // A field table announcing 4 GiB inside a small frame is a syntax error, not an allocation.
        let mut b = BytesMut::from(
            &[
                // queue.declare: ticket 0, queue "q", no flags, arguments of 4 GiB.
                1, 0, 1, 0, 0, 0, 13, 0, 50, 0, 10, 0, 0, 1, b'q', 0, 0xff, 0xff, 0xff, 0xff, 0xCE,
            ][..],
        );
        let err = next_frame(&mut b, 4096);
        assert!(err.is_err(), "{err:?}");
    }

    #[test]
    fn nesting_is_measured_without_recursion() {
        // A table holding {"a": F{"a": F{...}}} n deep.
        let nested = |n: usize| {
            let mut t = Vec::new();
            for i in 0..n {
                let inner = (n - i - 1) * 7;
                t.extend_from_slice(&[1, b'a', b'F']);
                t.extend_from_slice(&(inner as u32).to_be_bytes());
            }
            let mut framed = (t.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&t);
            framed
        };
        assert!(!nesting_exceeds(&nested(3), 3));
        assert!(nesting_exceeds(&nested(5), 3));
        assert!(nesting_exceeds(&nested(100_000), MAX_NESTING));
        // Scalars and strings are skipped, arrays count too.
        let flat: &[u8] = &[
            0, 0, 0, 14, 1, b'k', b'S', 0, 0, 0, 1, b'v', 1, b'n', b'A', 0, 0, 0, 0,
        ];
        let mut flat = flat.to_vec();
        flat[3] = (flat.len() - 4) as u8;
        assert!(!nesting_exceeds(&flat, 1));
        assert!(nesting_exceeds(&flat, 0));
        // queue.declare with deep arguments is a syntax error, not a crash.
        let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
        payload.extend_from_slice(&nested(10_000));
        let mut frame = BytesMut::new();
        frame.put_u8(1);
        frame.put_u16(1);
        frame.put_u32(payload.len() as u32);
        frame.put_slice(&payload);
        frame.put_u8(0xCE);
        let err = next_frame(&mut frame, 1 << 20).unwrap_err();
        assert_eq!(err.reply_code(), 502, "{err}");
    }

    /// One frame of `kind` on `channel` around `payload`.
    fn frame_of(kind: u8, channel: u16, payload: &[u8]) -> BytesMut {
        let mut f = BytesMut::new();
        f.put_u8(kind);
        f.put_u16(channel);
        f.put_u32(payload.len() as u32);
        f.put_slice(payload);
        f.put_u8(0xCE);
        f
    }

    /// `depth` arrays nested in one another: `A len (A len (…))`.
    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(5 * depth);
        for level in 0..depth {
            v.push(b'A');
            v.extend_from_slice(&((5 * (depth - level - 1)) as u32).to_be_bytes());
        }
        v
    }

    /// connection.start whose server_properties are `{"a": <depth arrays>}`.
    fn nested_connection_start(depth: usize) -> Vec<u8> {
        let mut p = vec![0, 10, 0, 10, 0, 9];
        p.extend_from_slice(&((2 + 5 * depth) as u32).to_be_bytes());
        p.extend_from_slice(&[1, b'a']);
        p.extend_from_slice(&nested_arrays(depth));
        for s in [&b"PLAIN"[..], b"en_US"] {
            p.extend_from_slice(&(s.len() as u32).to_be_bytes());
            p.extend_from_slice(s);
        }
        p
    }

    #[test]
    fn nested_array_connection_start_is_refused_unparsed() {
        // The ~130 KB frame that overflowed the stack before any login.
        let payload = nested_connection_start(26_000);
        let mut b = frame_of(1, 0, &payload);
        assert!(b.len() > 130_000 && b.len() <= 131_072, "{}", b.len());
        let err = next_client_frame(&mut b, 131_072).unwrap_err();
        assert_eq!(
            err,
            FrameError::ServerMethod {
                name: "connection.start",
                class_id: 10,
                method_id: 10
            }
        );
        assert!(b.is_empty(), "the frame is consumed, framing stays in step");
        assert_eq!(err.reply_code(), 503);
        assert_eq!(err.kind(), "server_method");
        let close = err.connection_error();
        assert!(close.hard);
        assert_eq!((close.code, close.class_id, close.method_id), (503, 10, 10));
        assert!(
            close.text.starts_with("COMMAND_INVALID - connection.start"),
            "{}",
            close.text
        );
        // Even a well-formed, flat one is refused: a client never sends it.
        let mut out = BytesMut::new();
        put_method(
            &mut out,
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: FieldTable::default(),
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
            })),
        );
        assert_eq!(
            next_client_frame(&mut out, 4096).unwrap_err().reply_code(),
            503
        );
        // connection.start was not among the methods whose table was
        // checked; now the nesting check alone refuses it too, even read as
        // a frame the server sent, wherever its table sits.
        assert!(nesting_exceeds(&payload, MAX_NESTING));
        let err = next_frame(&mut frame_of(1, 0, &payload), 131_072).unwrap_err();
        assert_eq!(err.reply_code(), 502, "{err}");
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn every_server_only_method_is_refused_before_its_arguments() {
        // Ids alone, no arguments at all: parsing them would fail with 502.
        let server_only = [
            (10, 10),
            (10, 20),
            (10, 30),
            (10, 41),
            (10, 60),
            (10, 61),
            (10, 71),
            (20, 11),
            (30, 11),
            (40, 11),
            (40, 21),
            (40, 31),
            (40, 51),
            (50, 11),
            (50, 21),
            (50, 31),
            (50, 41),
            (50, 51),
            (60, 11),
            (60, 21),
            (60, 50),
            (60, 60),
            (60, 71),
            (60, 72),
            (60, 111),
            (85, 11),
            (90, 11),
            (90, 21),
            (90, 31),
        ];
        for (class, method) in server_only {
            let payload = [(class >> 8) as u8, class as u8, 0, method];
            let err = next_client_frame(&mut frame_of(1, 1, &payload), 4096).unwrap_err();
            assert_eq!(err.reply_code(), 503, "{class}.{method}: {err}");
            // Read as what a server sent, it goes to the parser (which
            // fails on the missing arguments, unless there are none).
            let read = next_frame(&mut frame_of(1, 1, &payload), 4096);
            assert!(
                !matches!(read, Err(FrameError::ServerMethod { .. })),
                "{class}.{method}: {read:?}"
            );
        }
        // What a client sends, and what either side sends, still reaches the parser.
        for method in [
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                active: true,
            })),
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 1,
                multiple: false,
            })),
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: 1,
                multiple: false,
                requeue: true,
            })),
            AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                consumer_tag: "c".into(),
            })),
        ] {
            let mut out = BytesMut::new();
            put_method(&mut out, 1, method.clone());
            assert_eq!(
                next_client_frame(&mut out, 4096),
                Ok(Some(Frame::Method(1, method)))
            );
        }
    }

    #[test]
    fn deep_tables_are_refused_in_any_frame() {
        // The check does not know where a method keeps its tables: nested
        // bytes are refused even after the arguments of basic.publish,
        // which has none.
        let mut publish = vec![0, 60, 0, 40, 0, 0, 1, b'x', 1, b'k', 0];
        publish.extend_from_slice(&nested_arrays(1_000));
        let err = next_client_frame(&mut frame_of(1, 1, &publish), 1 << 20).unwrap_err();
        assert_eq!(err.reply_code(), 502, "{err}");
        assert!(err.to_string().contains("nested deeper"), "{err}");
        // exchange.declare with a long type name before its arguments: no
        // per-method offset to get wrong.
        let mut declare = vec![0, 40, 0, 10, 0, 0, 1, b'e', 200];
        declare.extend_from_slice(&[b't'; 200]);
        declare.push(0);
        let deep = nested_arrays(MAX_NESTING + 1);
        declare.extend_from_slice(&((2 + deep.len()) as u32).to_be_bytes());
        declare.extend_from_slice(&[1, b'a']);
        declare.extend_from_slice(&deep);
        let err = next_client_frame(&mut frame_of(1, 1, &declare), 1 << 20).unwrap_err();
        assert_eq!(err.reply_code(), 502, "{err}");
        // A content header whose headers table nests arrays.
        let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x20, 0];
        let deep = nested_arrays(10_000);
        header.extend_from_slice(&((2 + deep.len()) as u32).to_be_bytes());
        header.extend_from_slice(&[1, b'h']);
        header.extend_from_slice(&deep);
        let err = next_client_frame(&mut frame_of(2, 1, &header), 1 << 20).unwrap_err();
        assert_eq!(err.reply_code(), 502, "{err}");
        // Body frames are never parsed, so they are never scanned.
        let body = nested_arrays(10_000);
        assert!(matches!(
            next_client_frame(&mut frame_of(3, 1, &body), 1 << 20),
            Ok(Some(Frame::Body(1, _)))
        ));
    }

    #[test]
    fn shallow_tables_are_still_accepted() {
        // queue.declare arguments nested exactly MAX_NESTING deep, plus scalars.
        let mut inner = AMQPValue::LongString("leaf".into());
        for level in 0..MAX_NESTING {
            inner = if level % 2 == 0 {
                AMQPValue::FieldArray(vec![AMQPValue::LongInt(1), inner].into())
            } else {
                let mut t = FieldTable::default();
                t.insert("k".into(), inner);
                AMQPValue::FieldTable(t)
            };
        }
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(1000));
        arguments.insert("x-deep".into(), inner);
        let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "FA".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments,
        }));
        let mut out = BytesMut::new();
        put_method(&mut out, 1, declare.clone());
        assert_eq!(
            next_client_frame(&mut out, 1 << 20),
            Ok(Some(Frame::Method(1, declare)))
        );
        // Content headers with a headers table, and client properties in start-ok.
        let mut headers = FieldTable::default();
        headers.insert(
            "list".into(),
            AMQPValue::FieldArray(vec![AMQPValue::Boolean(true)].into()),
        );
        let props = AMQPProperties::default()
            .with_content_type("application/F".into())
            .with_headers(headers);
        let mut out = BytesMut::new();
        put_content(&mut out, 1, &props, b"body", 4096);
        match next_client_frame(&mut out, 4096) {
            Ok(Some(Frame::Header(1, h))) => assert_eq!(h.properties, props),
            other => panic!("expected a header, got {other:?}"),
        }
        let mut caps = FieldTable::default();
        caps.insert("publisher_confirms".into(), AMQPValue::Boolean(true));
        let mut client_properties = FieldTable::default();
        client_properties.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        let start_ok =
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties,
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            }));
        let mut out = BytesMut::new();
        put_method(&mut out, 0, start_ok.clone());
        assert_eq!(
            next_client_frame(&mut out, 4096),
            Ok(Some(Frame::Method(0, start_ok)))
        );
    }

    #[test]
    fn content_is_split_at_frame_max() {
        let mut out = BytesMut::new();
        let body = vec![7u8; 10_000];
        put_content(&mut out, 3, &basic::AMQPProperties::default(), &body, 4096);
        let mut frames = Vec::new();
        while let Some(f) = next_frame(&mut out, 4096).unwrap() {
            frames.push(f);
        }
        assert_eq!(frames.len(), 1 + 3);
        match &frames[0] {
            Frame::Header(3, h) => assert_eq!(h.body_size, 10_000),
            other => panic!("expected a header, got {other:?}"),
        }
        let sizes: Vec<usize> = frames[1..]
            .iter()
            .map(|f| match f {
                Frame::Body(3, b) => b.len(),
                other => panic!("expected a body, got {other:?}"),
            })
            .collect();
        assert_eq!(sizes, vec![4088, 4088, 10_000 - 2 * 4088]);
    }
}
