//! PUBLISH and its four acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP).

use bytes::{BufMut, BytesMut};

use super::primitives::{field_len, put_field, Reader};
use super::properties::{self, Context};
use super::{put_fixed_header, DecodeError, PUBLISH};
use crate::mqtt::packet::{Properties, ProtocolVersion, PubResponse, Publish, QoS};

const DUP: u8 = 0b1000;
const RETAIN: u8 = 0b0001;

fn qos_bits(flags: u8) -> u8 {
    (flags >> 1) & 0b11
}

/// Fixed-header flag checks, run before the body has arrived.
pub(super) fn check_publish_flags(flags: u8) -> Result<(), DecodeError> {
    let qos = qos_bits(flags);
    if qos == 3 {
        return Err(DecodeError::InvalidQoS(3));
    }
    // A QoS 0 message is never redelivered, so DUP there makes no sense
    // (3.1.1 3.3.1.1, 5.0 3.3.1.1).
    if qos == 0 && flags & DUP != 0 {
        return Err(DecodeError::Malformed("DUP flag set on a QoS 0 PUBLISH"));
    }
    Ok(())
}

pub(super) fn decode_publish(
    mut r: Reader,
    flags: u8,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    check_publish_flags(flags)?;
    let qos = QoS::from_u8(qos_bits(flags)).ok_or(DecodeError::InvalidQoS(qos_bits(flags)))?;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        r.packet_id()?
    };
    let properties = if version.is_v5() {
        properties::decode(&mut r, Context::Publish)?
    } else {
        Properties::default()
    };
    Ok(Publish {
        dup: flags & DUP != 0,
        qos,
        retain: flags & RETAIN != 0,
        topic,
        packet_id,
        payload: r.rest(),
        properties,
    })
}

pub(super) fn encode_publish(p: &Publish, version: ProtocolVersion, out: &mut BytesMut) {
    let v5 = version.is_v5();
    let mut flags = (p.qos as u8) << 1;
    if p.dup {
        flags |= DUP;
    }
    if p.retain {
        flags |= RETAIN;
    }
    let has_id = p.qos != QoS::AtMostOnce;

    let mut len = field_len(p.topic.as_bytes()) + p.payload.len();
    if has_id {
        len += 2;
    }
    if v5 {
        len += properties::block_len(&p.properties);
    }

    put_fixed_header(out, PUBLISH << 4 | flags, len);
    put_field(out, p.topic.as_bytes());
    if has_id {
        out.put_u16(p.packet_id);
    }
    if v5 {
        properties::put(&p.properties, out);
    }
    out.put_slice(&p.payload);
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP. In 5.0 the reason code and the
/// property length may each be left out (5.0 3.4.2.1): remaining length 2
/// means success without properties, 3 means no properties.
pub(super) fn decode_response(
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<PubResponse, DecodeError> {
    let mut response = PubResponse::new(r.packet_id()?);
    if version.is_v5() {
        if !r.is_empty() {
            response.reason = r.u8()?;
        }
        if !r.is_empty() {
            response.properties = properties::decode(&mut r, Context::Ack)?;
        }
    }
    r.finish()?;
    Ok(response)
}

/// `first_byte` is the packet type and its fixed flags. The short forms are
/// used whenever possible since they are what most peers send and expect.
pub(super) fn encode_response(
    first_byte: u8,
    p: &PubResponse,
    version: ProtocolVersion,
    out: &mut BytesMut,
) {
    let props_len = properties::content_len(&p.properties);
    if !version.is_v5() || (p.reason == 0 && props_len == 0) {
        put_fixed_header(out, first_byte, 2);
        out.put_u16(p.packet_id);
    } else if props_len == 0 {
        put_fixed_header(out, first_byte, 3);
        out.put_u16(p.packet_id);
        out.put_u8(p.reason);
    } else {
        put_fixed_header(out, first_byte, 3 + properties::block_len(&p.properties));
        out.put_u16(p.packet_id);
        out.put_u8(p.reason);
        properties::put(&p.properties, out);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::decode;
    use super::super::test_support::*;
    use super::*;
    use crate::mqtt::packet::{Packet, ProtocolVersion::*};

    fn publish(qos: QoS, packet_id: u16) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: "a/b".into(),
            packet_id,
            payload: Bytes::from_static(b"hi"),
            properties: Properties::default(),
        }
    }

    #[test]
    fn golden_publish_qos0_v311() {
        golden(
            &Packet::Publish(Publish {
                retain: true,
                ..publish(QoS::AtMostOnce, 0)
            }),
            V311,
            &[
                0x31, 0x07, // PUBLISH retain, QoS 0, remaining length 7
                0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
                b'h', b'i', // payload
            ],
        );
    }

    #[test]
    fn golden_publish_qos1_dup_v311() {
        golden(
            &Packet::Publish(Publish {
                dup: true,
                ..publish(QoS::AtLeastOnce, 10)
            }),
            V311,
            &[
                0x3A, 0x09, // PUBLISH dup, QoS 1, remaining length 9
                0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
                0x00, 0x0A, // packet id 10
                b'h', b'i', // payload
            ],
        );
    }

    #[test]
    fn golden_publish_qos2_v5_with_properties() {
        golden(
            &Packet::Publish(Publish {
                properties: Properties {
                    payload_format_indicator: Some(1),
                    topic_alias: Some(2),
                    ..Properties::default()
                },
                ..publish(QoS::ExactlyOnce, 0x1234)
            }),
            V5,
            &[
                0x34, 0x0F, // PUBLISH QoS 2, remaining length 15
                0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
                0x12, 0x34, // packet id 0x1234
                0x05, // property length 5
                0x01, 0x01, // payload format indicator 1
                0x23, 0x00, 0x02, // topic alias 2
                b'h', b'i', // payload
            ],
        );
    }

    #[test]
    fn golden_publish_qos0_v5_empty_topic_and_payload() {
        golden(
            &Packet::Publish(Publish {
                topic: String::new(),
                payload: Bytes::new(),
                properties: Properties {
                    topic_alias: Some(1),
                    ..Properties::default()
                },
                ..publish(QoS::AtMostOnce, 0)
            }),
            V5,
            &[
                0x30, 0x06, // PUBLISH QoS 0, remaining length 6
                0x00, 0x00, // empty topic: the alias stands for it
                0x03, // property length 3
                0x23, 0x00, 0x01, // topic alias 1
            ],
        );
    }

    #[test]
    fn payload_is_a_zero_copy_slice_of_the_frame() {
        let wire = encode_vec(&Packet::Publish(publish(QoS::AtLeastOnce, 1)), V311);
        let mut buf = BytesMut::from(&wire[..]);
        let start = buf.as_ptr() as usize;
        let Some(Packet::Publish(p)) = decode(&mut buf, V311, MAX).unwrap() else {
            panic!("not a PUBLISH");
        };
        assert_eq!(p.payload.as_ptr() as usize, start + wire.len() - 2);
    }

    #[test]
    fn qos_3_publish() {
        let wire: &[u8] = &[
            0x36, 0x07, // PUBLISH QoS 3, remaining length 7
            0x00, 0x03, b'a', b'/', b'b', // topic
            0x00, 0x01, // packet id
        ];
        assert_eq!(decode_exact(wire, V311), Err(DecodeError::InvalidQoS(3)));
        // Rejected from the fixed header alone.
        let mut buf = BytesMut::from(&wire[..2]);
        assert_eq!(decode(&mut buf, V5, MAX), Err(DecodeError::InvalidQoS(3)));
    }

    #[test]
    fn dup_with_qos_0() {
        let wire: &[u8] = &[
            0x38, 0x05, // PUBLISH dup, QoS 0, remaining length 5
            0x00, 0x03, b'a', b'/', b'b', // topic
        ];
        assert_eq!(
            decode_exact(wire, V311),
            Err(DecodeError::Malformed("DUP flag set on a QoS 0 PUBLISH"))
        );
    }

    #[test]
    fn invalid_utf8_topic() {
        let wire: &[u8] = &[
            0x30, 0x05, // PUBLISH QoS 0, remaining length 5
            0x00, 0x03, b'a', 0xFF, b'b', // topic with an invalid byte
        ];
        assert_eq!(decode_exact(wire, V311), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn topic_with_nul() {
        let wire: &[u8] = &[
            0x30, 0x05, // PUBLISH QoS 0, remaining length 5
            0x00, 0x03, b'a', 0x00, b'b', // topic "a\0b"
        ];
        assert_eq!(decode_exact(wire, V5), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn packet_id_zero() {
        let wire: &[u8] = &[
            0x32, 0x05, // PUBLISH QoS 1, remaining length 5
            0x00, 0x01, b't', // topic "t"
            0x00, 0x00, // packet id 0
        ];
        assert_eq!(
            decode_exact(wire, V311),
            Err(DecodeError::Protocol("packet identifier must be non-zero"))
        );
        // Acks need a real identifier too.
        assert!(matches!(
            decode_exact(&[0x40, 0x02, 0x00, 0x00], V311),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn topic_running_past_remaining_length() {
        let wire: &[u8] = &[
            0x30, 0x04, // PUBLISH QoS 0, remaining length 4
            0x00, 0x05, b'a', b'b', // topic claims 5 bytes, 2 follow
        ];
        assert!(matches!(
            decode_exact(wire, V311),
            Err(DecodeError::Malformed(_))
        ));
        // QoS 1 with no room for the packet id.
        assert!(matches!(
            decode_exact(&[0x32, 0x03, 0x00, 0x01, b't'], V311),
            Err(DecodeError::Malformed(_))
        ));
        // 5.0 with no room for the property length.
        assert!(matches!(
            decode_exact(&[0x30, 0x03, 0x00, 0x01, b't'], V5),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn publish_property_rules() {
        let duplicate: &[u8] = &[
            0x30, 0x0A, // PUBLISH QoS 0, remaining length 10
            0x00, 0x01, b't', // topic
            0x06, // property length 6
            0x23, 0x00, 0x01, // topic alias 1
            0x23, 0x00, 0x02, // topic alias again
        ];
        assert_eq!(
            decode_exact(duplicate, V5),
            Err(DecodeError::Protocol("property included more than once"))
        );
        let not_allowed: &[u8] = &[
            0x30, 0x09, // PUBLISH QoS 0, remaining length 9
            0x00, 0x01, b't', // topic
            0x05, // property length 5
            0x11, 0x00, 0x00, 0x00,
            0x0A, // session expiry interval: CONNECT/CONNACK/DISCONNECT only
        ];
        assert_eq!(
            decode_exact(not_allowed, V5),
            Err(DecodeError::Malformed(
                "property not allowed in this packet"
            ))
        );
    }

    #[test]
    fn golden_acks_v311() {
        let cases: [(Packet, [u8; 4]); 4] = [
            (
                Packet::PubAck(PubResponse::new(1)),
                [0x40, 0x02, 0x00, 0x01],
            ), // PUBACK id 1
            (
                Packet::PubRec(PubResponse::new(2)),
                [0x50, 0x02, 0x00, 0x02],
            ), // PUBREC id 2
            (
                Packet::PubRel(PubResponse::new(3)),
                [0x62, 0x02, 0x00, 0x03],
            ), // PUBREL (flags 0010) id 3
            (
                Packet::PubComp(PubResponse::new(4)),
                [0x70, 0x02, 0x00, 0x04],
            ), // PUBCOMP id 4
        ];
        for (packet, wire) in cases {
            golden(&packet, V311, &wire);
            // Success without properties uses the same short form in 5.0.
            golden(&packet, V5, &wire);
        }
    }

    #[test]
    fn ack_v311_ignores_5_0_fields_when_encoding_and_rejects_them_when_decoding() {
        let ack = PubResponse {
            packet_id: 5,
            reason: 0x10,
            properties: Properties {
                reason_string: Some("r".into()),
                ..Properties::default()
            },
        };
        assert_eq!(
            encode_vec(&Packet::PubAck(ack), V311),
            [0x40, 0x02, 0x00, 0x05]
        );
        assert!(matches!(
            decode_exact(&[0x40, 0x03, 0x00, 0x05, 0x10], V311),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn golden_acks_v5_long_forms() {
        // Reason code only: remaining length 3, property length omitted.
        golden(
            &Packet::PubRec(PubResponse {
                packet_id: 7,
                reason: 0x10,
                properties: Properties::default(),
            }),
            V5,
            &[
                0x50, 0x03, // PUBREC, remaining length 3
                0x00, 0x07, // packet id 7
                0x10, // no matching subscribers
            ],
        );
        // Reason code and properties.
        golden(
            &Packet::PubComp(PubResponse {
                packet_id: 8,
                reason: 0x92,
                properties: Properties {
                    reason_string: Some("gone".into()),
                    ..Properties::default()
                },
            }),
            V5,
            &[
                0x70, 0x0B, // PUBCOMP, remaining length 11
                0x00, 0x08, // packet id 8
                0x92, // packet identifier not found
                0x07, // property length 7
                0x1F, 0x00, 0x04, b'g', b'o', b'n', b'e', // reason string "gone"
            ],
        );
        // Success with a user property needs the long form too.
        golden(
            &Packet::PubAck(PubResponse {
                packet_id: 9,
                reason: 0,
                properties: Properties {
                    user_properties: vec![("k".into(), "v".into())],
                    ..Properties::default()
                },
            }),
            V5,
            &[
                0x40, 0x0B, // PUBACK, remaining length 11
                0x00, 0x09, // packet id 9
                0x00, // success
                0x07, // property length 7
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k=v
            ],
        );
    }

    #[test]
    fn ack_v5_with_explicit_zero_property_length() {
        assert_eq!(
            decode_exact(
                &[
                    0x40, 0x04, // PUBACK, remaining length 4
                    0x00, 0x01, // packet id 1
                    0x00, // success
                    0x00, // property length 0
                ],
                V5
            ),
            Ok(Packet::PubAck(PubResponse::new(1)))
        );
    }

    #[test]
    fn ack_v5_property_rules() {
        // Topic alias is not allowed in an ack.
        assert_eq!(
            decode_exact(&[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01], V5),
            Err(DecodeError::Malformed(
                "property not allowed in this packet"
            ))
        );
        // Trailing byte after the properties.
        assert!(matches!(
            decode_exact(&[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0xAA], V5),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn round_trips() {
        for version in [V31, V311, V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let id = if qos == QoS::AtMostOnce { 0 } else { 65535 };
                round_trip(&Packet::Publish(publish(qos, id)), version);
                round_trip(
                    &Packet::Publish(Publish {
                        dup: qos != QoS::AtMostOnce,
                        retain: true,
                        ..publish(qos, id)
                    }),
                    version,
                );
            }
            for make in [
                Packet::PubAck,
                Packet::PubRec,
                Packet::PubRel,
                Packet::PubComp,
            ] {
                round_trip(&make(PubResponse::new(42)), version);
            }
        }
        let props = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(10),
            content_type: Some("json".into()),
            response_topic: Some("resp/x".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            subscription_identifiers: vec![3, 70000],
            topic_alias: Some(4),
            user_properties: vec![("b".into(), "1".into()), ("a".into(), "2".into())],
            ..Properties::default()
        };
        round_trip(
            &Packet::Publish(Publish {
                properties: props,
                ..publish(QoS::AtLeastOnce, 1)
            }),
            V5,
        );
        for make in [
            Packet::PubAck,
            Packet::PubRec,
            Packet::PubRel,
            Packet::PubComp,
        ] {
            round_trip(
                &make(PubResponse {
                    packet_id: 1,
                    reason: 0x80,
                    properties: Properties::default(),
                }),
                V5,
            );
            round_trip(
                &make(PubResponse {
                    packet_id: 2,
                    reason: 0x83,
                    properties: Properties {
                        reason_string: Some("why".into()),
                        user_properties: vec![("k".into(), "v".into())],
                        ..Properties::default()
                    },
                }),
                V5,
            );
        }
    }
}
