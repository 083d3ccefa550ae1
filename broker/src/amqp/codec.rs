//! AMQP 0.9.1 framing: the protocol header, and frames of
//! `type: u8, channel: u16, size: u32, payload, 0xCE`.
//!
//! Pure functions over bytes that say `None` ("incomplete") instead of
//! reading. Method and content-header payloads are decoded and every outgoing
//! frame is encoded by the `amq-protocol` crate; this module checks the frame
//! size against the negotiated `frame_max` *before* waiting for (or
//! allocating) the payload, and checks the end octet.

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{constants, parse_class, AMQPClass};
use bytes::{Buf, BufMut, Bytes, BytesMut};

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
/// 18,000 deep overflowed the stack and aborted the broker, so depth is
/// checked on the raw bytes first.
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
}

impl FrameError {
    /// The connection.close reply code the spec gives for this error.
    pub fn reply_code(&self) -> u16 {
        match self {
            FrameError::Malformed { .. } => 502, // SYNTAX_ERROR
            _ => 501,                            // FRAME_ERROR
        }
    }

    /// The `protocol_errors_total{kind}` label.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "frame_too_large",
            FrameError::UnknownType(_) => "frame_type_unknown",
            FrameError::MissingEnd(_) => "frame_end_missing",
            FrameError::Malformed { .. } => "malformed_frame",
        }
    }
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

/// Splits and decodes the next frame off `buf`; `Ok(None)` when more bytes
/// are needed. `frame_max` bounds the whole frame (header and end octet included).
pub fn next_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, FrameError> {
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
    decode_payload(kind, channel, payload).map(Some)
}

fn decode_payload(kind: u8, channel: u16, payload: Bytes) -> Result<Frame, FrameError> {
    let malformed = |what: &'static str, e: String| FrameError::Malformed { what, detail: e };
    let table_at = match kind {
        constants::FRAME_METHOD => method_table_offset(&payload),
        constants::FRAME_HEADER => header_table_offset(&payload),
        _ => None,
    };
    if table_at.is_some_and(|at| nesting_exceeds(&payload, at, MAX_NESTING)) {
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

/// Where the field table of a client method starts (the methods with one:
/// start-ok, exchange.declare/bind/unbind, queue.declare/bind/unbind,
/// basic.consume); `None` for the others or when the payload is too short
/// (the parser then reports it).
fn method_table_offset(p: &[u8]) -> Option<usize> {
    let class = u16::from_be_bytes([*p.first()?, *p.get(1)?]);
    let method = u16::from_be_bytes([*p.get(2)?, *p.get(3)?]);
    let shortstr = |at: usize| Some(at + 1 + usize::from(*p.get(at)?));
    let after = |strings: usize, bits: bool| {
        // reserved short, then short strings, then one octet of bits.
        let mut at = 6;
        for _ in 0..strings {
            at = shortstr(at)?;
        }
        Some(at + usize::from(bits))
    };
    match (class, method) {
        (10, 11) => Some(4),
        (40, 10) => after(2, true),
        (40, 30) | (40, 40) | (50, 20) => after(3, true),
        (50, 50) => after(3, false),
        (50, 10) => after(1, true),
        (60, 20) => after(2, true),
        _ => None,
    }
}

/// Where the `headers` table of a basic content header starts, if present.
fn header_table_offset(p: &[u8]) -> Option<usize> {
    // class, weight, body size, property flags.
    let flags = u16::from_be_bytes([*p.get(12)?, *p.get(13)?]);
    let mut at = 14;
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 {
            at += 1 + usize::from(*p.get(at)?);
        }
    }
    (flags & (1 << 13) != 0).then_some(at)
}

/// Whether the field table at `at` nests tables or arrays deeper than
/// `max`, walked iteratively. Anything that does not follow the grammar
/// answers `false`: the parser rejects it without recursing far.
pub fn nesting_exceeds(data: &[u8], at: usize, max: usize) -> bool {
    let len_at = |at: usize| -> Option<usize> {
        let b = data.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(len) = len_at(at) else { return false };
    // (end of the container, whether it is a table with keys)
    let mut stack = vec![(at.saturating_add(4).saturating_add(len), true)];
    let mut pos = at + 4;
    while let Some(&(end, is_table)) = stack.last() {
        if pos >= end {
            stack.pop();
            pos = pos.max(end);
            continue;
        }
        if is_table {
            let Some(&n) = data.get(pos) else {
                return false;
            };
            pos += 1 + usize::from(n);
        }
        let Some(&kind) = data.get(pos) else {
            return false;
        };
        pos += 1;
        let size = match kind {
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'L' | b'l' | b'd' | b'T' => 8,
            b'D' => 5,
            b'V' => 0,
            b'S' | b'x' => match len_at(pos) {
                Some(n) => 4 + n,
                None => return false,
            },
            b'F' | b'A' => {
                let Some(n) = len_at(pos) else { return false };
                pos += 4;
                stack.push((pos.saturating_add(n).min(end), kind == b'F'));
                if stack.len() - 1 > max {
                    return true;
                }
                continue;
            }
            _ => return false,
        };
        pos = pos.saturating_add(size);
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
    use amq_protocol::protocol::{basic, channel};

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
        assert!(!nesting_exceeds(&nested(3), 0, 3));
        assert!(nesting_exceeds(&nested(5), 0, 3));
        assert!(nesting_exceeds(&nested(100_000), 0, MAX_NESTING));
        // Scalars and strings are skipped, arrays count too.
        let flat: &[u8] = &[
            0, 0, 0, 14, 1, b'k', b'S', 0, 0, 0, 1, b'v', 1, b'n', b'A', 0, 0, 0, 0,
        ];
        let mut flat = flat.to_vec();
        flat[3] = (flat.len() - 4) as u8;
        assert!(!nesting_exceeds(&flat, 0, 1));
        assert!(nesting_exceeds(&flat, 0, 0));
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
