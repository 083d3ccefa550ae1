//! MQTT 3.1, 3.1.1 and 5.0 wire codec: fixed header framing, packet decoding and encoding.
//!
//! Decoding is strict: everything the specifications call a malformed packet
//! or a protocol error at the packet level is reported as a [`DecodeError`],
//! whose [`DecodeError::reason_code`] is what the broker puts in its CONNACK
//! or DISCONNECT. Checks that need session state (topic aliases, topic name
//! and filter syntax, receive maximum, ...) are left to the broker.

mod connect;
mod disconnect;
mod primitives;
mod properties;
mod publish;
mod subscribe;

use bytes::{Buf, BufMut, BytesMut};

use crate::mqtt::packet::{reason, Packet, ProtocolVersion};
use primitives::{put_vbi, Reader};

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// Why a packet could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("malformed remaining length: more than 4 bytes")]
    MalformedRemainingLength,
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    #[error("invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    InvalidFlags { packet_type: u8, flags: u8 },
    #[error("invalid QoS {0}")]
    InvalidQoS(u8),
    #[error("invalid protocol name {0:?}")]
    InvalidProtocolName(String),
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    #[error("string is not valid UTF-8 or contains U+0000")]
    InvalidUtf8,
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

impl DecodeError {
    /// The MQTT 5.0 reason code for a CONNACK or DISCONNECT reporting this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::MalformedRemainingLength
            | DecodeError::InvalidPacketType(_)
            | DecodeError::InvalidFlags { .. }
            | DecodeError::InvalidQoS(_)
            | DecodeError::InvalidUtf8
            | DecodeError::Malformed(_) => reason::MALFORMED_PACKET,
            DecodeError::Protocol(_) => reason::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::InvalidProtocolName(_) | DecodeError::UnsupportedProtocolVersion(_) => {
                reason::UNSUPPORTED_PROTOCOL_VERSION
            }
        }
    }
}

/// Fixed header: packet type (high nibble), flags (low nibble), and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub packet_type: u8,
    pub flags: u8,
    /// First byte plus the remaining length bytes (2..=5).
    pub header_len: usize,
    pub remaining_len: usize,
}

impl FrameHeader {
    /// Size of the whole packet on the wire.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Parses only the fixed header. `Ok(None)` means more bytes are needed.
///
/// The size limit is enforced as soon as the remaining length is known, so a
/// peer cannot make the broker buffer an oversized body.
pub fn parse_header(
    buf: &[u8],
    max_packet_size: usize,
) -> Result<Option<FrameHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining_len = 0usize;
    for (i, shift) in [0, 7, 14, 21].into_iter().enumerate() {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining_len |= usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            let header = FrameHeader {
                packet_type: first >> 4,
                flags: first & 0x0F,
                header_len: 2 + i,
                remaining_len,
            };
            let size = header.frame_len();
            if size > max_packet_size {
                return Err(DecodeError::PacketTooLarge {
                    size,
                    max: max_packet_size,
                });
            }
            return Ok(Some(header));
        }
    }
    Err(DecodeError::MalformedRemainingLength)
}

/// Rejects unknown packet types and wrong reserved flags before waiting for
/// the body, so garbage is refused as early as possible.
fn check_fixed_header(header: &FrameHeader, version: ProtocolVersion) -> Result<(), DecodeError> {
    let required = match header.packet_type {
        PUBLISH => return publish::check_publish_flags(header.flags),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0b0010,
        CONNECT..=DISCONNECT => 0,
        // Type 15 is reserved in 3.1.1 and became AUTH in 5.0.
        AUTH if version.is_v5() => 0,
        other => return Err(DecodeError::InvalidPacketType(other)),
    };
    if header.flags != required {
        return Err(DecodeError::InvalidFlags {
            packet_type: header.packet_type,
            flags: header.flags,
        });
    }
    Ok(())
}

/// Decodes one whole packet from the front of `buf`.
///
/// `Ok(None)` means the packet is incomplete and nothing was consumed. On
/// success exactly one packet is consumed; payloads and binary fields are
/// zero-copy slices of it. `version` is the connection's negotiated level (use
/// V311 before CONNECT; CONNECT carries its own level). After an error the
/// connection must be closed: the offending frame may have been consumed.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = parse_header(buf, max_packet_size)? else {
        return Ok(None);
    };
    check_fixed_header(&header, version)?;
    if buf.len() < header.frame_len() {
        return Ok(None);
    }
    buf.advance(header.header_len);
    let body = Reader::new(buf.split_to(header.remaining_len).freeze());
    let packet = match header.packet_type {
        CONNECT => Packet::Connect(Box::new(connect::decode_connect(body)?)),
        CONNACK => Packet::ConnAck(connect::decode_connack(body, version)?),
        PUBLISH => Packet::Publish(publish::decode_publish(body, header.flags, version)?),
        PUBACK => Packet::PubAck(publish::decode_response(body, version)?),
        PUBREC => Packet::PubRec(publish::decode_response(body, version)?),
        PUBREL => Packet::PubRel(publish::decode_response(body, version)?),
        PUBCOMP => Packet::PubComp(publish::decode_response(body, version)?),
        SUBSCRIBE => Packet::Subscribe(subscribe::decode_subscribe(body, version)?),
        SUBACK => Packet::SubAck(subscribe::decode_suback(body, version)?),
        UNSUBSCRIBE => Packet::Unsubscribe(subscribe::decode_unsubscribe(body, version)?),
        UNSUBACK => Packet::UnsubAck(subscribe::decode_unsuback(body, version)?),
        PINGREQ => {
            disconnect::decode_ping(body)?;
            Packet::PingReq
        }
        PINGRESP => {
            disconnect::decode_ping(body)?;
            Packet::PingResp
        }
        DISCONNECT => Packet::Disconnect(disconnect::decode_disconnect(body, version)?),
        AUTH => Packet::Auth(disconnect::decode_auth(body)?),
        // check_fixed_header already refused anything else.
        other => return Err(DecodeError::InvalidPacketType(other)),
    };
    Ok(Some(packet))
}

/// Appends the encoding of `packet` at protocol level `version` to `out` and
/// returns the number of bytes written.
///
/// At 3.1.1/3.1 every 5.0-only field (properties, reason codes on acks and
/// DISCONNECT, UNSUBACK codes) is omitted. AUTH does not exist below 5.0 and
/// is not written at all (returns 0). The caller guarantees that the packet
/// fits the protocol's limits (strings up to 65 535 bytes, remaining length up
/// to 268 435 455).
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> usize {
    let start = out.len();
    match packet {
        Packet::Connect(p) => connect::encode_connect(p, version, out),
        Packet::ConnAck(p) => connect::encode_connack(p, version, out),
        Packet::Publish(p) => publish::encode_publish(p, version, out),
        Packet::PubAck(p) => publish::encode_response(PUBACK << 4, p, version, out),
        Packet::PubRec(p) => publish::encode_response(PUBREC << 4, p, version, out),
        Packet::PubRel(p) => publish::encode_response(PUBREL << 4 | 0b0010, p, version, out),
        Packet::PubComp(p) => publish::encode_response(PUBCOMP << 4, p, version, out),
        Packet::Subscribe(p) => subscribe::encode_subscribe(p, version, out),
        Packet::SubAck(p) => subscribe::encode_suback(p, version, out),
        Packet::Unsubscribe(p) => subscribe::encode_unsubscribe(p, version, out),
        Packet::UnsubAck(p) => subscribe::encode_unsuback(p, version, out),
        Packet::PingReq => put_fixed_header(out, PINGREQ << 4, 0),
        Packet::PingResp => put_fixed_header(out, PINGRESP << 4, 0),
        Packet::Disconnect(p) => disconnect::encode_disconnect(p, version, out),
        Packet::Auth(p) => {
            if version.is_v5() {
                disconnect::encode_auth(p, out);
            }
        }
    }
    out.len() - start
}

/// Writes the fixed header; `remaining_len` must be computed up front so the
/// body can be written straight into `out` without a copy.
fn put_fixed_header(out: &mut BytesMut, first_byte: u8, remaining_len: usize) {
    out.reserve(1 + primitives::vbi_len(remaining_len) + remaining_len);
    out.put_u8(first_byte);
    put_vbi(out, remaining_len);
}

#[cfg(test)]
pub(crate) mod test_support {
    use bytes::BytesMut;

    use super::{decode, encode, DecodeError};
    use crate::mqtt::packet::{Packet, ProtocolVersion};

    /// Generous limit for tests that are not about size.
    pub const MAX: usize = 1 << 20;

    /// Decodes a buffer that must hold exactly one complete packet.
    pub fn decode_exact(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        let packet = decode(&mut buf, version, MAX)?.expect("complete packet");
        assert!(buf.is_empty(), "packet did not consume the whole buffer");
        Ok(packet)
    }

    pub fn encode_vec(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
        let mut out = BytesMut::new();
        let n = encode(packet, version, &mut out);
        assert_eq!(n, out.len());
        out.to_vec()
    }

    /// Encodes at `version`, checks the bytes against `wire`, and decodes them back.
    pub fn golden(packet: &Packet, version: ProtocolVersion, wire: &[u8]) {
        assert_eq!(encode_vec(packet, version), wire, "encoding {packet:?}");
        assert_eq!(
            decode_exact(wire, version).as_ref(),
            Ok(packet),
            "decoding {wire:02x?}"
        );
    }

    pub fn round_trip(packet: &Packet, version: ProtocolVersion) {
        let wire = encode_vec(packet, version);
        assert_eq!(
            decode_exact(&wire, version).as_ref(),
            Ok(packet),
            "{version:?} {wire:02x?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::mqtt::packet::{ProtocolVersion::*, PubResponse};

    #[test]
    fn header_golden_vectors() {
        let cases: [(&[u8], u8, u8, usize, usize); 6] = [
            (&[0xC0, 0x00], 12, 0, 2, 0),                 // PINGREQ, length 0
            (&[0x3B, 0x7F], 3, 0x0B, 2, 127),             // PUBLISH dup qos1 retain, 127
            (&[0x82, 0x80, 0x01], 8, 0x02, 3, 128),       // SUBSCRIBE, 128
            (&[0x30, 0xFF, 0x7F], 3, 0, 3, 16_383),       // PUBLISH, 16 383
            (&[0x30, 0x80, 0x80, 0x01], 3, 0, 4, 16_384), // PUBLISH, 16 384
            (&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], 3, 0, 5, 268_435_455), // PUBLISH, maximum
        ];
        for (wire, packet_type, flags, header_len, remaining_len) in cases {
            let header = parse_header(wire, usize::MAX).unwrap().unwrap();
            assert_eq!(
                header,
                FrameHeader {
                    packet_type,
                    flags,
                    header_len,
                    remaining_len
                }
            );
            assert_eq!(header.frame_len(), header_len + remaining_len);
        }
    }

    #[test]
    fn header_needs_more_bytes() {
        for wire in [&[][..], &[0x30], &[0x30, 0x80], &[0x30, 0xFF, 0xFF, 0xFF]] {
            assert_eq!(parse_header(wire, MAX), Ok(None), "{wire:02x?}");
        }
    }

    #[test]
    fn five_byte_remaining_length_is_malformed() {
        let wire = [
            0x30, // PUBLISH
            0xFF, 0xFF, 0xFF, 0xFF, // four bytes, all with the continuation bit
            0x01, // a fifth length byte
        ];
        assert_eq!(
            parse_header(&wire, usize::MAX),
            Err(DecodeError::MalformedRemainingLength)
        );
        // Detected before the fifth byte even arrives.
        assert_eq!(
            parse_header(&wire[..5], usize::MAX),
            Err(DecodeError::MalformedRemainingLength)
        );
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode(&mut buf, V311, MAX),
            Err(DecodeError::MalformedRemainingLength)
        );
    }

    #[test]
    fn oversized_packet_is_refused_from_the_header_alone() {
        // Only the first 5 bytes of a ~2 MB PUBLISH have arrived.
        let mut buf = BytesMut::from(
            &[
                0x30, // PUBLISH QoS 0
                0x80, 0x80, 0x80, 0x01, // remaining length 2 097 152
            ][..],
        );
        assert_eq!(
            decode(&mut buf, V5, MAX),
            Err(DecodeError::PacketTooLarge {
                size: 5 + 2_097_152,
                max: MAX
            })
        );
        // The limit counts the whole packet: header plus body.
        assert_eq!(
            parse_header(&[0xC0, 0x00], 2).map(|h| h.map(|h| h.frame_len())),
            Ok(Some(2))
        );
        assert_eq!(
            parse_header(&[0xC0, 0x00], 1),
            Err(DecodeError::PacketTooLarge { size: 2, max: 1 })
        );
    }

    #[test]
    fn truncated_packet_is_incomplete_and_untouched() {
        let wire: &[u8] = &[
            0x40, 0x02, // PUBACK, remaining length 2
            0x00, 0x07, // packet id 7
        ];
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(decode(&mut buf, V311, MAX), Ok(None), "cut at {cut}");
            assert_eq!(&buf[..], &wire[..cut]);
        }
    }

    #[test]
    fn back_to_back_packets_decode_one_at_a_time() {
        let mut buf = BytesMut::from(
            &[
                0x40, 0x02, 0x00, 0x07, // PUBACK id 7
                0xC0, 0x00, // PINGREQ
                0x50, 0x02, 0x00, // first 3 bytes of a PUBREC
            ][..],
        );
        assert_eq!(
            decode(&mut buf, V311, MAX),
            Ok(Some(Packet::PubAck(PubResponse::new(7))))
        );
        assert_eq!(decode(&mut buf, V311, MAX), Ok(Some(Packet::PingReq)));
        assert_eq!(decode(&mut buf, V311, MAX), Ok(None));
        assert_eq!(&buf[..], &[0x50, 0x02, 0x00]);
        buf.extend_from_slice(&[0x09]); // rest of the PUBREC: id 9
        assert_eq!(
            decode(&mut buf, V311, MAX),
            Ok(Some(Packet::PubRec(PubResponse::new(9))))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn invalid_packet_types() {
        // Type 0 is reserved at every level.
        for version in [V31, V311, V5] {
            assert_eq!(
                decode_exact(&[0x00, 0x00], version),
                Err(DecodeError::InvalidPacketType(0))
            );
        }
        // Type 15 is AUTH only in 5.0.
        assert_eq!(
            decode_exact(&[0xF0, 0x00], V311),
            Err(DecodeError::InvalidPacketType(15))
        );
        assert_eq!(
            decode_exact(&[0xF0, 0x00], V31),
            Err(DecodeError::InvalidPacketType(15))
        );
    }

    #[test]
    fn invalid_packet_type_is_refused_before_the_body_arrives() {
        let mut buf = BytesMut::from(&[0x00, 0x05, 0x01][..]);
        assert_eq!(
            decode(&mut buf, V311, MAX),
            Err(DecodeError::InvalidPacketType(0))
        );
    }

    #[test]
    fn reserved_flags_must_match() {
        let cases: [(&[u8], u8, u8); 6] = [
            (&[0x80, 0x02, 0x00, 0x01], 8, 0b0000), // SUBSCRIBE with flags 0000
            (&[0xA0, 0x02, 0x00, 0x01], 10, 0b0000), // UNSUBSCRIBE with flags 0000
            (&[0x60, 0x02, 0x00, 0x01], 6, 0b0000), // PUBREL with flags 0000
            (&[0x42, 0x02, 0x00, 0x01], 4, 0b0010), // PUBACK with flags 0010
            (&[0xC1, 0x00], 12, 0b0001),            // PINGREQ with flags 0001
            (&[0x18, 0x00], 1, 0b1000),             // CONNECT with flags 1000
        ];
        for (wire, packet_type, flags) in cases {
            assert_eq!(
                decode_exact(wire, V5),
                Err(DecodeError::InvalidFlags { packet_type, flags }),
                "{wire:02x?}"
            );
        }
    }

    #[test]
    fn reason_codes() {
        let cases = [
            (DecodeError::MalformedRemainingLength, 0x81),
            (DecodeError::PacketTooLarge { size: 2, max: 1 }, 0x95),
            (DecodeError::InvalidPacketType(0), 0x81),
            (
                DecodeError::InvalidFlags {
                    packet_type: 8,
                    flags: 0,
                },
                0x81,
            ),
            (DecodeError::InvalidQoS(3), 0x81),
            (DecodeError::InvalidProtocolName("MQTX".into()), 0x84),
            (DecodeError::UnsupportedProtocolVersion(6), 0x84),
            (DecodeError::InvalidUtf8, 0x81),
            (DecodeError::Malformed("x"), 0x81),
            (DecodeError::Protocol("x"), 0x82),
        ];
        for (error, code) in cases {
            assert_eq!(error.reason_code(), code, "{error}");
        }
    }

    #[test]
    fn error_messages_are_readable() {
        assert_eq!(
            DecodeError::PacketTooLarge { size: 10, max: 5 }.to_string(),
            "packet of 10 bytes exceeds the maximum packet size of 5 bytes"
        );
        assert_eq!(
            DecodeError::InvalidFlags {
                packet_type: 8,
                flags: 0
            }
            .to_string(),
            "invalid fixed header flags 0b0000 for packet type 8"
        );
        assert_eq!(
            DecodeError::Malformed("x").to_string(),
            "malformed packet: x"
        );
    }

    #[test]
    fn encode_appends_and_counts() {
        let mut out = BytesMut::from(&b"xy"[..]);
        assert_eq!(encode(&Packet::PingResp, V5, &mut out), 2);
        assert_eq!(&out[..], &[b'x', b'y', 0xD0, 0x00]);
    }

    /// A few packets that exercise every field type at 5.0.
    fn rich_v5_packets() -> Vec<Packet> {
        use crate::mqtt::packet::*;
        use bytes::Bytes;
        let props = Properties {
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        };
        vec![
            Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: true,
                keep_alive: 5,
                client_id: "c".into(),
                will: Some(LastWill {
                    topic: "w".into(),
                    payload: Bytes::from_static(b"p"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Properties {
                        will_delay_interval: Some(1),
                        ..props.clone()
                    },
                }),
                username: Some("u".into()),
                password: Some(Bytes::from_static(b"pw")),
                properties: Properties {
                    receive_maximum: Some(3),
                    ..props.clone()
                },
            })),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::ExactlyOnce,
                retain: true,
                topic: "t/x".into(),
                packet_id: 4,
                payload: Bytes::from_static(b"payload"),
                properties: Properties {
                    subscription_identifiers: vec![1000],
                    correlation_data: Some(Bytes::from_static(b"c")),
                    ..props.clone()
                },
            }),
            Packet::Subscribe(Subscribe {
                packet_id: 5,
                filters: vec![("a/#".into(), SubscriptionOptions::default())],
                properties: props.clone(),
            }),
            Packet::PubRel(PubResponse {
                packet_id: 6,
                reason: 0x92,
                properties: props.clone(),
            }),
            Packet::Disconnect(Disconnect {
                reason: 0x8E,
                properties: props,
            }),
        ]
    }

    /// Shrinking the remaining length cuts the packet inside some field; the
    /// result must be an error or a shorter valid packet, never a panic and
    /// never "incomplete" (the whole frame is there).
    #[test]
    fn every_truncated_body_is_rejected_or_decoded_without_panic() {
        for packet in rich_v5_packets() {
            let wire = encode_vec(&packet, V5);
            let header = parse_header(&wire, MAX).unwrap().unwrap();
            let body = &wire[header.header_len..];
            for cut in 0..body.len() {
                let mut buf = BytesMut::new();
                put_fixed_header(&mut buf, wire[0], cut);
                buf.extend_from_slice(&body[..cut]);
                let result = decode(&mut buf, V5, MAX);
                assert!(
                    !matches!(result, Ok(None)),
                    "{} cut at {cut}",
                    packet.name()
                );
            }
        }
    }

    /// Deterministic byte flips over valid packets: decoding may fail in any
    /// way but must not panic.
    #[test]
    fn corrupted_packets_never_panic() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for packet in rich_v5_packets() {
            let wire = encode_vec(&packet, V5);
            for _ in 0..2000 {
                let mut mutated = wire.clone();
                for _ in 0..1 + next() % 3 {
                    let at = (next() % mutated.len() as u64) as usize;
                    mutated[at] = next() as u8;
                }
                for version in [V311, V5] {
                    let mut buf = BytesMut::from(&mutated[..]);
                    let _ = decode(&mut buf, version, MAX);
                }
            }
        }
    }

    #[test]
    fn large_remaining_length_is_encoded_in_multiple_bytes() {
        let packet = Packet::Publish(crate::mqtt::packet::Publish {
            dup: false,
            qos: crate::mqtt::packet::QoS::AtMostOnce,
            retain: false,
            topic: "t".into(),
            packet_id: 0,
            payload: bytes::Bytes::from(vec![0xAB; 200]),
            properties: Default::default(),
        });
        let wire = encode_vec(&packet, V311);
        // 2 (topic length) + 1 (topic) + 200 = 203 = 0xCB 0x01.
        assert_eq!(&wire[..3], &[0x30, 0xCB, 0x01]);
        assert_eq!(wire.len(), 3 + 203);
        round_trip(&packet, V311);
    }
}
