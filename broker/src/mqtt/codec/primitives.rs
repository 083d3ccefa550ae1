//! Wire primitives shared by every packet: variable byte integers, big-endian integers, UTF-8 strings and binary data.
//!
//! Decoding goes through [`Reader`], which bounds-checks every read against the
//! end of the packet body so that a field running past the remaining length is
//! reported as malformed instead of panicking or waiting for more bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::DecodeError;

/// Largest value a variable byte integer can carry (four bytes of seven bits).
pub(super) const MAX_VBI: usize = 268_435_455;

const TRUNCATED: DecodeError = DecodeError::Malformed("field runs past the end of the packet");

/// Bounds-checked cursor over one packet body (or one property block).
///
/// It owns a `Bytes` so binary fields and payloads can be handed out as
/// zero-copy slices of the received frame.
#[derive(Debug)]
pub(super) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(super) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u8())
    }

    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u16())
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u32())
    }

    /// A packet identifier where one is required: zero is reserved because
    /// the identifier space is 1..=65535 (MQTT 3.1.1 2.3.1, 5.0 2.2.1).
    pub(super) fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::Protocol("packet identifier must be non-zero")),
            id => Ok(id),
        }
    }

    pub(super) fn vbi(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for shift in [0, 7, 14, 21] {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// The next `n` bytes, as a slice of the frame.
    pub(super) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(TRUNCATED);
        }
        Ok(self.buf.split_to(n))
    }

    /// Binary data: two-byte length followed by that many bytes.
    pub(super) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// UTF-8 encoded string: two-byte length followed by validated UTF-8.
    pub(super) fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        utf8(&raw)
    }

    /// Everything left (the PUBLISH payload, SUBACK codes...).
    pub(super) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Ends decoding of a packet: anything left inside the remaining length is
    /// a malformed packet, never silently ignored.
    pub(super) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "unexpected bytes after the last field",
            ))
        }
    }
}

/// Rust's UTF-8 validation already rejects overlong forms and the surrogate
/// range U+D800..U+DFFF, which is what MQTT requires; U+0000 is valid UTF-8
/// but forbidden in MQTT strings (3.1.1 1.5.3, 5.0 1.5.4), so check it too.
fn utf8(raw: &[u8]) -> Result<String, DecodeError> {
    let s = crate::accel::utf8::validate(raw).ok_or(DecodeError::InvalidUtf8)?;
    if s.contains('\0') {
        return Err(DecodeError::InvalidUtf8);
    }
    Ok(s.to_owned())
}

pub(super) fn vbi_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The encoder cannot fail, so an out-of-range value is a bug in the caller
/// (the broker never builds a packet larger than the protocol allows).
pub(super) fn put_vbi(out: &mut BytesMut, mut value: usize) {
    debug_assert!(value <= MAX_VBI, "variable byte integer out of range");
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Encoded size of a string or binary field (length prefix included).
pub(super) fn field_len(data: &[u8]) -> usize {
    2 + data.len()
}

/// Writes a length-prefixed string or binary field. Longer than 65 535 bytes
/// cannot be represented; strings reaching the encoder come from decoded
/// packets or broker configuration, which already respect that limit.
pub(super) fn put_field(out: &mut BytesMut, data: &[u8]) {
    debug_assert!(data.len() <= usize::from(u16::MAX), "field too long");
    out.put_u16(data.len() as u16);
    out.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &'static [u8]) -> Reader {
        Reader::new(Bytes::from_static(bytes))
    }

    fn encoded_vbi(value: usize) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_vbi(&mut out, value);
        assert_eq!(out.len(), vbi_len(value));
        out.to_vec()
    }

    #[test]
    fn vbi_golden_vectors_at_every_size_boundary() {
        let cases: [(usize, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (MAX_VBI, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (value, bytes) in cases {
            assert_eq!(encoded_vbi(value), bytes, "encoding {value}");
            let mut r = Reader::new(Bytes::copy_from_slice(bytes));
            assert_eq!(r.vbi(), Ok(value as u32), "decoding {value}");
            assert!(r.is_empty());
        }
    }

    #[test]
    fn vbi_with_a_fifth_byte_is_malformed() {
        let mut r = reader(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        assert!(matches!(r.vbi(), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn vbi_cut_short_is_malformed() {
        let mut r = reader(&[0x80, 0x80]);
        assert_eq!(r.vbi(), Err(TRUNCATED));
    }

    #[test]
    fn integers_are_big_endian_and_bounds_checked() {
        let mut r = reader(&[
            0x12, // u8
            0x34, 0x56, // u16
            0x01, 0x02, 0x03, 0x04, // u32
            0xFF, // one byte left: too short for a u16
        ]);
        assert_eq!(r.u8(), Ok(0x12));
        assert_eq!(r.u16(), Ok(0x3456));
        assert_eq!(r.u32(), Ok(0x0102_0304));
        assert_eq!(r.u16(), Err(TRUNCATED));
        assert_eq!(r.u32(), Err(TRUNCATED));
        assert_eq!(r.u8(), Ok(0xFF));
        assert_eq!(r.u8(), Err(TRUNCATED));
    }

    #[test]
    fn packet_id_zero_is_a_protocol_error() {
        assert!(matches!(
            reader(&[0x00, 0x00]).packet_id(),
            Err(DecodeError::Protocol(_))
        ));
        assert_eq!(reader(&[0x00, 0x01]).packet_id(), Ok(1));
    }

    #[test]
    fn strings_golden_and_invalid() {
        let mut r = reader(&[
            0x00, 0x04, b'a', b'/', 0xC3, 0xA9, // "a/é"
            0x00, 0x00, // ""
        ]);
        assert_eq!(r.string().as_deref(), Ok("a/é"));
        assert_eq!(r.string().as_deref(), Ok(""));
        assert!(r.finish().is_ok());

        // Lone continuation byte.
        assert_eq!(
            reader(&[0x00, 0x01, 0x80]).string(),
            Err(DecodeError::InvalidUtf8)
        );
        // U+D800 encoded as if it were a scalar value (CESU-style surrogate).
        assert_eq!(
            reader(&[0x00, 0x03, 0xED, 0xA0, 0x80]).string(),
            Err(DecodeError::InvalidUtf8)
        );
        // Overlong encoding of '/'.
        assert_eq!(
            reader(&[0x00, 0x02, 0xC0, 0xAF]).string(),
            Err(DecodeError::InvalidUtf8)
        );
        // U+0000.
        assert_eq!(
            reader(&[0x00, 0x03, b'a', 0x00, b'b']).string(),
            Err(DecodeError::InvalidUtf8)
        );
        // Length says 5, only 2 bytes follow.
        assert_eq!(reader(&[0x00, 0x05, b'a', b'b']).string(), Err(TRUNCATED));
    }

    #[test]
    fn binary_is_a_zero_copy_slice() {
        let frame = Bytes::from_static(&[0x00, 0x02, 0xDE, 0xAD, 0xBE]);
        let base = frame.as_ptr() as usize;
        let mut r = Reader::new(frame);
        let data = r.binary().unwrap();
        assert_eq!(&data[..], &[0xDE, 0xAD]);
        assert_eq!(data.as_ptr() as usize, base + 2);
        assert_eq!(&r.rest()[..], &[0xBE]);
        assert!(r.is_empty());
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        assert!(matches!(
            reader(&[0x01]).finish(),
            Err(DecodeError::Malformed(_))
        ));
        assert!(reader(&[]).finish().is_ok());
    }

    #[test]
    fn put_field_writes_length_prefix() {
        let mut out = BytesMut::new();
        put_field(&mut out, b"ab");
        assert_eq!(&out[..], &[0x00, 0x02, b'a', b'b']);
        assert_eq!(field_len(b"ab"), 4);
    }
}
