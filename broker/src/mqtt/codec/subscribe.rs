//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.

use bytes::{BufMut, BytesMut};

use super::primitives::{field_len, put_field, Reader};
use super::properties::{self, Context};
use super::{put_fixed_header, DecodeError, SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE};
use crate::mqtt::packet::{
    Properties, ProtocolVersion, QoS, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};

const NO_LOCAL: u8 = 0b0000_0100;
const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const RETAIN_HANDLING_SHIFT: u8 = 4;

fn decode_properties(
    r: &mut Reader,
    version: ProtocolVersion,
    ctx: Context,
) -> Result<Properties, DecodeError> {
    if version.is_v5() {
        properties::decode(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

fn properties_len(p: &Properties, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        properties::block_len(p)
    } else {
        0
    }
}

fn put_properties(p: &Properties, version: ProtocolVersion, out: &mut BytesMut) {
    if version.is_v5() {
        properties::put(p, out);
    }
}

/// 3.1.1 defines only the QoS bits; 5.0 adds No Local, Retain As Published
/// and Retain Handling and keeps bits 6-7 reserved.
fn decode_options(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if version.is_v5() {
        0b1100_0000
    } else {
        0b1111_1100
    };
    if byte & reserved != 0 {
        return Err(DecodeError::Malformed(
            "reserved subscription option bits are set",
        ));
    }
    let qos_bits = byte & 0b11;
    let qos = QoS::from_u8(qos_bits).ok_or(DecodeError::InvalidQoS(qos_bits))?;
    let retain_handling = match (byte >> RETAIN_HANDLING_SHIFT) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::Protocol("retain handling 3 is reserved")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & NO_LOCAL != 0,
        retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

fn encode_options(o: &SubscriptionOptions, version: ProtocolVersion) -> u8 {
    let mut byte = o.qos as u8;
    if version.is_v5() {
        if o.no_local {
            byte |= NO_LOCAL;
        }
        if o.retain_as_published {
            byte |= RETAIN_AS_PUBLISHED;
        }
        byte |= (o.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
    }
    byte
}

pub(super) fn decode_subscribe(
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = decode_properties(&mut r, version, Context::Subscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = decode_options(r.u8()?, version)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(super) fn encode_subscribe(s: &Subscribe, version: ProtocolVersion, out: &mut BytesMut) {
    let len = 2
        + properties_len(&s.properties, version)
        + s.filters
            .iter()
            .map(|(f, _)| field_len(f.as_bytes()) + 1)
            .sum::<usize>();
    put_fixed_header(out, SUBSCRIBE << 4 | 0b0010, len);
    out.put_u16(s.packet_id);
    put_properties(&s.properties, version, out);
    for (filter, options) in &s.filters {
        put_field(out, filter.as_bytes());
        out.put_u8(encode_options(options, version));
    }
}

/// Return codes are not checked against the allowed values: the broker only
/// sends SUBACK, and clients interpret the codes themselves.
pub(super) fn decode_suback(
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = decode_properties(&mut r, version, Context::Ack)?;
    let codes = r.rest().to_vec();
    if codes.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without return codes"));
    }
    Ok(SubAck {
        packet_id,
        codes,
        properties,
    })
}

pub(super) fn encode_suback(s: &SubAck, version: ProtocolVersion, out: &mut BytesMut) {
    let len = 2 + properties_len(&s.properties, version) + s.codes.len();
    put_fixed_header(out, SUBACK << 4, len);
    out.put_u16(s.packet_id);
    put_properties(&s.properties, version, out);
    out.put_slice(&s.codes);
}

pub(super) fn decode_unsubscribe(
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = decode_properties(&mut r, version, Context::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(super) fn encode_unsubscribe(u: &Unsubscribe, version: ProtocolVersion, out: &mut BytesMut) {
    let len = 2
        + properties_len(&u.properties, version)
        + u.filters
            .iter()
            .map(|f| field_len(f.as_bytes()))
            .sum::<usize>();
    put_fixed_header(out, UNSUBSCRIBE << 4 | 0b0010, len);
    out.put_u16(u.packet_id);
    put_properties(&u.properties, version, out);
    for filter in &u.filters {
        put_field(out, filter.as_bytes());
    }
}

/// The 3.1.1 UNSUBACK is just the packet id; 5.0 adds properties and one
/// reason code per filter.
pub(super) fn decode_unsuback(
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    if !version.is_v5() {
        r.finish()?;
        return Ok(UnsubAck {
            packet_id,
            codes: Vec::new(),
            properties: Properties::default(),
        });
    }
    let properties = properties::decode(&mut r, Context::Ack)?;
    let codes = r.rest().to_vec();
    if codes.is_empty() {
        return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
    }
    Ok(UnsubAck {
        packet_id,
        codes,
        properties,
    })
}

pub(super) fn encode_unsuback(u: &UnsubAck, version: ProtocolVersion, out: &mut BytesMut) {
    if !version.is_v5() {
        put_fixed_header(out, UNSUBACK << 4, 2);
        out.put_u16(u.packet_id);
        return;
    }
    let len = 2 + properties::block_len(&u.properties) + u.codes.len();
    put_fixed_header(out, UNSUBACK << 4, len);
    out.put_u16(u.packet_id);
    properties::put(&u.properties, out);
    out.put_slice(&u.codes);
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::mqtt::packet::{Packet, ProtocolVersion::*};

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    #[test]
    fn golden_subscribe_v311() {
        golden(
            &Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![
                    ("a/+".into(), opts(QoS::AtLeastOnce)),
                    ("#".into(), opts(QoS::ExactlyOnce)),
                ],
                properties: Properties::default(),
            }),
            V311,
            &[
                0x82, 0x0C, // SUBSCRIBE (flags 0010), remaining length 12
                0x00, 0x01, // packet id 1
                0x00, 0x03, b'a', b'/', b'+', // filter "a/+"
                0x01, // QoS 1
                0x00, 0x01, b'#', // filter "#"
                0x02, // QoS 2
            ],
        );
    }

    #[test]
    fn golden_subscribe_v5_with_options_and_identifier() {
        golden(
            &Packet::Subscribe(Subscribe {
                packet_id: 2,
                filters: vec![(
                    "t".into(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                )],
                properties: Properties {
                    subscription_identifiers: vec![300],
                    ..Properties::default()
                },
            }),
            V5,
            &[
                0x82, 0x0A, // SUBSCRIBE (flags 0010), remaining length 10
                0x00, 0x02, // packet id 2
                0x03, // property length 3
                0x0B, 0xAC, 0x02, // subscription identifier 300
                0x00, 0x01, b't', // filter "t"
                0x2D, // retain handling 2, retain as published, no local, QoS 1
            ],
        );
    }

    #[test]
    fn empty_subscribe() {
        assert_eq!(
            decode_exact(&[0x82, 0x02, 0x00, 0x01], V311),
            Err(DecodeError::Protocol("SUBSCRIBE without topic filters"))
        );
        assert_eq!(
            decode_exact(
                &[
                    0x82, 0x03, // SUBSCRIBE, remaining length 3
                    0x00, 0x01, // packet id 1
                    0x00, // property length 0, then nothing
                ],
                V5
            ),
            Err(DecodeError::Protocol("SUBSCRIBE without topic filters"))
        );
    }

    #[test]
    fn subscribe_with_flags_0000() {
        let wire: &[u8] = &[
            0x80, 0x06, // SUBSCRIBE with flags 0000
            0x00, 0x01, // packet id 1
            0x00, 0x01, b'a', // filter "a"
            0x00, // QoS 0
        ];
        assert_eq!(
            decode_exact(wire, V311),
            Err(DecodeError::InvalidFlags {
                packet_type: 8,
                flags: 0
            })
        );
    }

    /// One-filter SUBSCRIBE for `version` with the given options byte.
    fn subscribe_with_options(
        options: u8,
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        let mut wire = vec![0x82, 0x06, 0x00, 0x01];
        if version.is_v5() {
            wire[1] += 1;
            wire.push(0x00); // property length 0
        }
        wire.extend_from_slice(&[0x00, 0x01, b'a', options]);
        decode_exact(&wire, version)
    }

    #[test]
    fn subscription_options_validation() {
        // QoS 3 at either level.
        assert_eq!(
            subscribe_with_options(0x03, V311),
            Err(DecodeError::InvalidQoS(3))
        );
        assert_eq!(
            subscribe_with_options(0x03, V5),
            Err(DecodeError::InvalidQoS(3))
        );
        // 5.0-only bits on a 3.1.1 connection.
        for byte in [0x04, 0x08, 0x10, 0x40, 0x80] {
            assert_eq!(
                subscribe_with_options(byte, V311),
                Err(DecodeError::Malformed(
                    "reserved subscription option bits are set"
                )),
                "{byte:#04x}"
            );
        }
        // Bits 6 and 7 stay reserved in 5.0.
        for byte in [0x40, 0x80] {
            assert_eq!(
                subscribe_with_options(byte, V5),
                Err(DecodeError::Malformed(
                    "reserved subscription option bits are set"
                ))
            );
        }
        // Retain handling 3.
        assert_eq!(
            subscribe_with_options(0x30, V5),
            Err(DecodeError::Protocol("retain handling 3 is reserved"))
        );
        // Retain handling 1 with QoS 2.
        let Ok(Packet::Subscribe(s)) = subscribe_with_options(0x12, V5) else {
            panic!("expected a SUBSCRIBE");
        };
        assert_eq!(
            s.filters[0].1,
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                retain_handling: RetainHandling::SendIfNew,
                ..SubscriptionOptions::default()
            }
        );
    }

    #[test]
    fn subscribe_filter_missing_options_byte() {
        assert!(matches!(
            decode_exact(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'], V311),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn subscribe_property_rules() {
        let duplicate_id: &[u8] = &[
            0x82, 0x0A, // SUBSCRIBE, remaining length 10
            0x00, 0x01, // packet id 1
            0x04, // property length 4
            0x0B, 0x01, // subscription identifier 1
            0x0B, 0x02, // subscription identifier 2: only one allowed here
            0x00, 0x01, b'a', 0x00, // filter "a", QoS 0
        ];
        assert_eq!(
            decode_exact(duplicate_id, V5),
            Err(DecodeError::Protocol("property included more than once"))
        );
        let not_allowed: &[u8] = &[
            0x82, 0x0A, // SUBSCRIBE, remaining length 10
            0x00, 0x01, // packet id 1
            0x03, // property length 3
            0x23, 0x00, 0x01, // topic alias: not allowed in SUBSCRIBE
            0x00, 0x01, b'a', 0x00, // filter "a", QoS 0
        ];
        assert_eq!(
            decode_exact(not_allowed, V5),
            Err(DecodeError::Malformed(
                "property not allowed in this packet"
            ))
        );
    }

    #[test]
    fn golden_suback() {
        golden(
            &Packet::SubAck(SubAck {
                packet_id: 1,
                codes: vec![0x01, 0x80],
                properties: Properties::default(),
            }),
            V311,
            &[
                0x90, 0x04, // SUBACK, remaining length 4
                0x00, 0x01, // packet id 1
                0x01, 0x80, // granted QoS 1, failure
            ],
        );
        golden(
            &Packet::SubAck(SubAck {
                packet_id: 1,
                codes: vec![0x02, 0xA2],
                properties: Properties {
                    reason_string: Some("w".into()),
                    ..Properties::default()
                },
            }),
            V5,
            &[
                0x90, 0x09, // SUBACK, remaining length 9
                0x00, 0x01, // packet id 1
                0x04, // property length 4
                0x1F, 0x00, 0x01, b'w', // reason string "w"
                0x02, 0xA2, // granted QoS 2, wildcard subscriptions not supported
            ],
        );
        assert!(matches!(
            decode_exact(&[0x90, 0x02, 0x00, 0x01], V311),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn golden_unsubscribe() {
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id: 3,
            filters: vec!["a/b".into(), "c".into()],
            properties: Properties::default(),
        });
        golden(
            &packet,
            V311,
            &[
                0xA2, 0x0A, // UNSUBSCRIBE (flags 0010), remaining length 10
                0x00, 0x03, // packet id 3
                0x00, 0x03, b'a', b'/', b'b', // filter "a/b"
                0x00, 0x01, b'c', // filter "c"
            ],
        );
        golden(
            &packet,
            V5,
            &[
                0xA2, 0x0B, // UNSUBSCRIBE (flags 0010), remaining length 11
                0x00, 0x03, // packet id 3
                0x00, // property length 0
                0x00, 0x03, b'a', b'/', b'b', // filter "a/b"
                0x00, 0x01, b'c', // filter "c"
            ],
        );
    }

    #[test]
    fn unsubscribe_errors() {
        assert_eq!(
            decode_exact(&[0xA2, 0x02, 0x00, 0x01], V311),
            Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"))
        );
        assert_eq!(
            decode_exact(&[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'], V311),
            Err(DecodeError::InvalidFlags {
                packet_type: 10,
                flags: 0
            })
        );
        // Filter with U+0000.
        assert_eq!(
            decode_exact(&[0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, 0x00], V311),
            Err(DecodeError::InvalidUtf8)
        );
        // Subscription identifier belongs to SUBSCRIBE, not UNSUBSCRIBE.
        assert_eq!(
            decode_exact(
                &[0xA2, 0x08, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00, 0x01, b'a'],
                V5
            ),
            Err(DecodeError::Malformed(
                "property not allowed in this packet"
            ))
        );
    }

    #[test]
    fn golden_unsuback() {
        let packet = Packet::UnsubAck(UnsubAck {
            packet_id: 4,
            codes: vec![0x00, 0x11],
            properties: Properties::default(),
        });
        // 3.1.1 has no reason codes: they are dropped.
        assert_eq!(
            encode_vec(&packet, V311),
            [
                0xB0, 0x02, // UNSUBACK, remaining length 2
                0x00, 0x04, // packet id 4
            ]
        );
        golden(
            &packet,
            V5,
            &[
                0xB0, 0x05, // UNSUBACK, remaining length 5
                0x00, 0x04, // packet id 4
                0x00, // property length 0
                0x00, 0x11, // success, no subscription existed
            ],
        );
        assert!(matches!(
            decode_exact(&[0xB0, 0x03, 0x00, 0x04, 0x00], V311),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_exact(&[0xB0, 0x03, 0x00, 0x04, 0x00], V5),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn round_trips() {
        let all_options = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::SendIfNew,
        };
        for version in [V31, V311, V5] {
            let v5 = version.is_v5();
            let props = |p: Properties| if v5 { p } else { Properties::default() };
            round_trip(
                &Packet::Subscribe(Subscribe {
                    packet_id: 65535,
                    filters: vec![
                        ("a/#".into(), opts(QoS::AtMostOnce)),
                        (
                            "$share/g/b".into(),
                            if v5 {
                                all_options
                            } else {
                                opts(QoS::ExactlyOnce)
                            },
                        ),
                    ],
                    properties: props(Properties {
                        subscription_identifiers: vec![268_435_455],
                        user_properties: vec![("u".into(), "1".into())],
                        ..Properties::default()
                    }),
                }),
                version,
            );
            round_trip(
                &Packet::SubAck(SubAck {
                    packet_id: 7,
                    codes: vec![0, 1, 2, 0x80],
                    properties: props(Properties {
                        reason_string: Some("r".into()),
                        ..Properties::default()
                    }),
                }),
                version,
            );
            round_trip(
                &Packet::Unsubscribe(Unsubscribe {
                    packet_id: 8,
                    filters: vec!["x".into()],
                    properties: props(Properties {
                        user_properties: vec![("k".into(), "v".into())],
                        ..Properties::default()
                    }),
                }),
                version,
            );
            round_trip(
                &Packet::UnsubAck(UnsubAck {
                    packet_id: 9,
                    codes: if v5 {
                        vec![0x00, 0x11, 0x87]
                    } else {
                        Vec::new()
                    },
                    properties: props(Properties {
                        user_properties: vec![("k".into(), "v".into())],
                        ..Properties::default()
                    }),
                }),
                version,
            );
        }
    }
}
