//! Kafka framing: a 4-byte big-endian size, then a request header and body.
//! Pure functions over bytes: they say `None` ("incomplete") instead of reading.
//!
//! Message bodies are encoded and decoded by the `kafka-protocol` crate; this
//! module only splits frames, peeks the fixed part of the request header, and
//! lays out responses (size, header, body).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a connection must be closed before a request could even be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    #[error("frame of {size} bytes is beyond the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error(
        "request of {size} bytes (api key {api_key}) is beyond kafka.max_request_bytes ({max})"
    )]
    RequestTooLarge {
        size: usize,
        max: usize,
        api_key: i16,
    },
}

impl FrameError {
    /// The `protocol_errors_total{kind}` label.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::NegativeSize(_) => "frame_size_negative",
            FrameError::TooLarge { .. } => "frame_too_large",
            FrameError::TooShort(_) => "frame_too_short",
            FrameError::RequestTooLarge { .. } => "request_too_large",
        }
    }
}

/// api key, api version and correlation id: the part of a request header
/// that has the same layout in every header version.
pub const FIXED_HEADER_LEN: usize = 8;

/// The size of the next frame (without its size prefix), once its size and
/// api key have arrived: `Ok(None)` while fewer than 6 bytes are buffered
/// (a size beyond `max_frame_bytes` is refused from the first 4). Every api
/// but Produce is held to `max_request_bytes`, so an oversized request is
/// refused before any of its body is read or room made for it.
pub fn peek_frame(
    buf: &[u8],
    max_frame_bytes: usize,
    max_request_bytes: usize,
) -> Result<Option<usize>, FrameError> {
    let Some(size) = buf.get(..4) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes(size.try_into().expect("4 bytes"));
    let size = usize::try_from(size).map_err(|_| FrameError::NegativeSize(size))?;
    if size > max_frame_bytes {
        return Err(FrameError::TooLarge {
            size,
            max: max_frame_bytes,
        });
    }
    if size < FIXED_HEADER_LEN {
        return Err(FrameError::TooShort(size));
    }
    let Some(key) = buf.get(4..6) else {
        return Ok(None);
    };
    let api_key = i16::from_be_bytes([key[0], key[1]]);
    if size > max_request_bytes && api_key != ApiKey::Produce as i16 {
        return Err(FrameError::RequestTooLarge {
            size,
            max: max_request_bytes,
            api_key,
        });
    }
    Ok(Some(size))
}

/// Splits a frame of `size` bytes (as [`peek_frame`] gave) off `buf` once
/// all of it has arrived.
pub fn take_frame(buf: &mut BytesMut, size: usize) -> Option<Bytes> {
    if buf.len() < 4 + size {
        return None;
    }
    buf.advance(4);
    Some(buf.split_to(size).freeze())
}

/// Splits the next complete frame (without its size prefix) off `buf`;
/// `Ok(None)` when more bytes are needed.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    match peek_frame(buf, max, usize::MAX)? {
        Some(size) => Ok(take_frame(buf, size)),
        None => Ok(None),
    }
}

/// The fixed start of a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestStart {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads the fixed start of a frame (which `next_frame` guarantees is there).
pub fn request_start(frame: &[u8]) -> RequestStart {
    RequestStart {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes(frame[4..8].try_into().expect("4 bytes")),
    }
}

/// Decodes the full request header of a known API, leaving `frame` at the body.
pub fn decode_header(
    frame: &mut Bytes,
    api: ApiKey,
    version: i16,
) -> Result<RequestHeader, DecodeError> {
    RequestHeader::decode(frame, api.request_header_version(version))
        .map_err(|e| DecodeError(format!("{e:#}")))
}

/// A request whose header or body does not decode (truncated, bad lengths, ...).
#[derive(Debug, thiserror::Error)]
#[error("malformed request: {0}")]
pub struct DecodeError(String);

/// Decodes a request body of a known API and version.
pub fn decode_body<T: Decodable>(frame: &mut Bytes, version: i16) -> Result<T, DecodeError> {
    T::decode(frame, version).map_err(|e| DecodeError(format!("{e:#}")))
}

/// Memory a decode may take for array elements, per byte of the frame:
/// Produce bodies are mostly record batches, kept as slices of the frame
/// (a real Produce needs less than 1 byte per byte); other requests are held
/// to 16 (a Metadata v1 topic takes 72 bytes of memory for a 1-character
/// name of 3 bytes, 24x, so short requests get [`DECODE_ALLOWANCE_BASE`] on top).
pub const PRODUCE_DECODE_FACTOR: usize = 2;
pub const DECODE_FACTOR: usize = 16;
pub const DECODE_ALLOWANCE_BASE: usize = 16 * 1024;

/// The array storage a request of `api_key` in a frame of `size` bytes may
/// allocate while it is decoded.
pub fn decode_allowance(api_key: i16, size: usize) -> usize {
    let factor = match api_key == ApiKey::Produce as i16 {
        true => PRODUCE_DECODE_FACTOR,
        false => DECODE_FACTOR,
    };
    size.saturating_mul(factor)
        .saturating_add(DECODE_ALLOWANCE_BASE)
}

/// Bytes a request holds while it is read and decoded: its frame and the
/// most its decode may allocate.
pub fn decode_footprint(api_key: i16, size: usize) -> usize {
    size.saturating_add(decode_allowance(api_key, size))
}

/// [`decode_body`] within [`decode_allowance`]: a body whose arrays would
/// take more memory is a decode error, refused before the storage is allocated.
pub fn decode_body_within<T: Decodable>(
    frame: &mut Bytes,
    version: i16,
    api_key: i16,
) -> Result<T, DecodeError> {
    let allowance = decode_allowance(api_key, frame.len());
    kafka_protocol::protocol::with_decode_allowance(allowance, || decode_body(frame, version))
}

/// Appends one response frame: size, header (v0 or flexible v1), body.
pub fn encode_response<T: Encodable>(
    out: &mut BytesMut,
    correlation_id: i32,
    header_version: i16,
    body: &T,
    version: i16,
) -> Result<(), DecodeError> {
    let start = out.len();
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(out, header_version)
        .and_then(|()| body.encode(out, version))
        .map_err(|e| {
            out.truncate(start);
            DecodeError(format!("cannot encode response: {e:#}"))
        })?;
    let Ok(size) = i32::try_from(out.len() - start - 4) else {
        let size = out.len() - start - 4;
        out.truncate(start);
        return Err(DecodeError(format!(
            "cannot encode a response of {size} bytes: beyond the 2 GiB a size field holds"
        )));
    };
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// The answer to a request for an API or version this broker does not serve:
/// a v0 response header and error code 35 (UNSUPPORTED_VERSION), which is how
/// every response body that starts with an error code reads it.
pub fn encode_unsupported(out: &mut BytesMut, correlation_id: i32) {
    out.put_i32(6);
    out.put_i32(correlation_id);
    out.put_i16(kafka_protocol::ResponseError::UnsupportedVersion.code());
}

#[cfg(test)]
mod alloc_factor;

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(body.len() as i32);
        b.put_slice(body);
        b
    }

    #[test]
    fn splits_frames_and_waits_for_more() {
        // size 10: api key 18 (ApiVersions), version 0, correlation id 7, client id "" (len 0)
        let body = [0, 18, 0, 0, 0, 0, 0, 7, 0, 0];
        let mut buf = framed(&body);
        buf.extend_from_slice(&[0, 0]); // start of the next frame
        let frame = next_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(&frame[..], &body);
        assert_eq!(
            request_start(&frame),
            RequestStart {
                api_key: 18,
                api_version: 0,
                correlation_id: 7
            }
        );
        assert_eq!(next_frame(&mut buf, 1024).unwrap(), None);
        assert_eq!(buf.len(), 2, "the partial frame stays buffered");
        let mut partial = framed(&body);
        partial.truncate(9);
        assert_eq!(next_frame(&mut partial, 1024).unwrap(), None);
    }

    #[test]
    fn bad_sizes_are_errors() {
        let mut neg = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe][..]);
        assert_eq!(
            next_frame(&mut neg, 1024),
            Err(FrameError::NegativeSize(-2))
        );
        let mut big = BytesMut::from(&[0, 0, 4, 1][..]);
        assert_eq!(
            next_frame(&mut big, 1024),
            Err(FrameError::TooLarge {
                size: 1025,
                max: 1024
            })
        );
        let mut short = framed(&[0, 18, 0]);
        assert_eq!(next_frame(&mut short, 1024), Err(FrameError::TooShort(3)));
    }

    #[test]
    fn only_produce_may_exceed_the_request_limit_refused_from_six_bytes() {
        // 2 MiB Metadata (api key 3): refused from its size and api key alone.
        let head = [0, 0x20, 0, 0, 0, 3];
        assert_eq!(peek_frame(&head[..5], 100 << 20, 1 << 20), Ok(None));
        assert_eq!(
            peek_frame(&head, 100 << 20, 1 << 20),
            Err(FrameError::RequestTooLarge {
                size: 2 << 20,
                max: 1 << 20,
                api_key: 3
            })
        );
        // The same size for Produce (api key 0) is fine.
        let head = [0, 0x20, 0, 0, 0, 0];
        assert_eq!(peek_frame(&head, 100 << 20, 1 << 20), Ok(Some(2 << 20)));
        // Beyond max_frame_bytes: refused from the 4 size bytes.
        assert_eq!(
            peek_frame(&[0x10, 0, 0, 0], 100 << 20, 1 << 20),
            Err(FrameError::TooLarge {
                size: 0x1000_0000,
                max: 100 << 20
            })
        );
    }

    #[test]
    fn header_and_body_decode_and_truncation_is_an_error() {
        use kafka_protocol::messages::ApiVersionsRequest;
        // ApiVersions v3 (flexible, header v2): key 18, version 3, correlation 1,
        // client id "ab" (int16 length), no tagged fields; body: compact strings "rd" and "2", no tags.
        let full: &[u8] = &[
            0, 18, 0, 3, 0, 0, 0, 1, 0, 2, b'a', b'b', 0, 3, b'r', b'd', 2, b'2', 0,
        ];
        let mut frame = Bytes::from_static(full);
        let header = decode_header(&mut frame, ApiKey::ApiVersions, 3).unwrap();
        assert_eq!(header.correlation_id, 1);
        assert_eq!(header.client_id.as_deref(), Some("ab"));
        let req: ApiVersionsRequest = decode_body(&mut frame, 3).unwrap();
        assert_eq!(req.client_software_name.as_str(), "rd");
        let mut cut = Bytes::copy_from_slice(&full[..15]);
        decode_header(&mut cut, ApiKey::ApiVersions, 3).unwrap();
        assert!(decode_body::<ApiVersionsRequest>(&mut cut, 3).is_err());
    }

    #[test]
    fn unsupported_answer_layout() {
        let mut out = BytesMut::new();
        encode_unsupported(&mut out, 0x01020304);
        assert_eq!(&out[..], &[0, 0, 0, 6, 1, 2, 3, 4, 0, 35]);
    }
}
