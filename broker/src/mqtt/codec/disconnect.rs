//! DISCONNECT, AUTH, PINGREQ and PINGRESP.

use bytes::{BufMut, BytesMut};

use super::primitives::Reader;
use super::properties::{self, Context};
use super::{put_fixed_header, DecodeError, AUTH, DISCONNECT};
use crate::mqtt::packet::{Auth, Disconnect, ProtocolVersion};

/// PINGREQ and PINGRESP have no variable header and no payload.
pub(super) fn decode_ping(r: Reader) -> Result<(), DecodeError> {
    r.finish()
}

/// 5.0 allows dropping the property length (remaining length 1) and also the
/// reason code (remaining length 0, meaning normal disconnection), 3.14.2.1.
pub(super) fn decode_disconnect(
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::default();
    if version.is_v5() {
        if !r.is_empty() {
            disconnect.reason = r.u8()?;
        }
        if !r.is_empty() {
            disconnect.properties = properties::decode(&mut r, Context::Disconnect)?;
        }
    }
    r.finish()?;
    Ok(disconnect)
}

pub(super) fn encode_disconnect(d: &Disconnect, version: ProtocolVersion, out: &mut BytesMut) {
    let props_len = properties::content_len(&d.properties);
    if !version.is_v5() || (d.reason == 0 && props_len == 0) {
        put_fixed_header(out, DISCONNECT << 4, 0);
    } else {
        // Always with a property length, even when it is 0: the one-byte form
        // (3.14.2.2.1) is legal, but some clients (rumqttc 0.25) cannot parse it.
        put_fixed_header(
            out,
            DISCONNECT << 4,
            1 + properties::block_len(&d.properties),
        );
        out.put_u8(d.reason);
        properties::put(&d.properties, out);
    }
}

/// Unlike DISCONNECT, AUTH only has the fully short form (remaining length
/// 0, 3.15.2.1): once a reason code is present the property length must
/// follow, so a remaining length of 1 is malformed.
pub(super) fn decode_auth(mut r: Reader) -> Result<Auth, DecodeError> {
    let mut auth = Auth::default();
    if !r.is_empty() {
        auth.reason = r.u8()?;
        auth.properties = properties::decode(&mut r, Context::Auth)?;
    }
    r.finish()?;
    Ok(auth)
}

pub(super) fn encode_auth(a: &Auth, out: &mut BytesMut) {
    if a.reason == 0 && properties::content_len(&a.properties) == 0 {
        put_fixed_header(out, AUTH << 4, 0);
    } else {
        put_fixed_header(out, AUTH << 4, 1 + properties::block_len(&a.properties));
        out.put_u8(a.reason);
        properties::put(&a.properties, out);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::test_support::*;
    use super::*;
    use crate::mqtt::packet::{Packet, Properties, ProtocolVersion::*};

    #[test]
    fn golden_pings() {
        for version in [V31, V311, V5] {
            golden(&Packet::PingReq, version, &[0xC0, 0x00]); // PINGREQ, remaining length 0
            golden(&Packet::PingResp, version, &[0xD0, 0x00]); // PINGRESP, remaining length 0
        }
    }

    #[test]
    fn ping_with_a_body_is_malformed() {
        assert!(matches!(
            decode_exact(&[0xC0, 0x01, 0x00], V311),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_exact(&[0xD0, 0x01, 0x00], V5),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn golden_disconnect_v311() {
        golden(
            &Packet::Disconnect(Disconnect::default()),
            V311,
            &[0xE0, 0x00],
        );
        // The reason code is 5.0-only and dropped at 3.1.1.
        let with_reason = Disconnect {
            reason: 0x04,
            properties: Properties::default(),
        };
        assert_eq!(
            encode_vec(&Packet::Disconnect(with_reason), V311),
            [0xE0, 0x00]
        );
        assert!(matches!(
            decode_exact(&[0xE0, 0x01, 0x00], V311),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn golden_disconnect_v5() {
        // Remaining length 0: normal disconnection.
        golden(
            &Packet::Disconnect(Disconnect::default()),
            V5,
            &[0xE0, 0x00],
        );
        // Remaining length 1 (reason code only) is accepted on input...
        let taken_over = Packet::Disconnect(Disconnect {
            reason: 0x8E,
            properties: Properties::default(),
        });
        assert_eq!(
            decode_exact(
                &[
                    0xE0, 0x01, // DISCONNECT, remaining length 1
                    0x8E, // session taken over
                ],
                V5
            ),
            Ok(taken_over.clone())
        );
        // ...but written with an explicit empty property block, which every client parses.
        golden(
            &taken_over,
            V5,
            &[
                0xE0, 0x02, // DISCONNECT, remaining length 2
                0x8E, // session taken over
                0x00, // property length 0
            ],
        );
        // Reason code and properties.
        golden(
            &Packet::Disconnect(Disconnect {
                reason: 0x9C,
                properties: Properties {
                    server_reference: Some("b:1".into()),
                    ..Properties::default()
                },
            }),
            V5,
            &[
                0xE0, 0x08, // DISCONNECT, remaining length 8
                0x9C, // use another server
                0x06, // property length 6
                0x1C, 0x00, 0x03, b'b', b':', b'1', // server reference "b:1"
            ],
        );
        // An explicit empty property block decodes like the short form.
        assert_eq!(
            decode_exact(&[0xE0, 0x02, 0x00, 0x00], V5),
            Ok(Packet::Disconnect(Disconnect::default()))
        );
    }

    #[test]
    fn disconnect_v5_errors() {
        // Topic alias is not a DISCONNECT property.
        assert_eq!(
            decode_exact(&[0xE0, 0x05, 0x00, 0x03, 0x23, 0x00, 0x01], V5),
            Err(DecodeError::Malformed(
                "property not allowed in this packet"
            ))
        );
        // Session expiry interval twice.
        assert_eq!(
            decode_exact(
                &[
                    0xE0, 0x0C, // DISCONNECT, remaining length 12
                    0x00, // normal disconnection
                    0x0A, // property length 10
                    0x11, 0x00, 0x00, 0x00, 0x01, // session expiry interval 1
                    0x11, 0x00, 0x00, 0x00, 0x02, // session expiry interval 2
                ],
                V5
            ),
            Err(DecodeError::Protocol("property included more than once"))
        );
        // Trailing byte after the properties.
        assert!(matches!(
            decode_exact(&[0xE0, 0x03, 0x00, 0x00, 0x00], V5),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn golden_auth() {
        golden(&Packet::Auth(Auth::default()), V5, &[0xF0, 0x00]); // AUTH, success, no properties
        golden(
            &Packet::Auth(Auth {
                reason: 0x18,
                properties: Properties {
                    authentication_method: Some("M".into()),
                    authentication_data: Some(Bytes::from_static(&[0x01, 0x02])),
                    ..Properties::default()
                },
            }),
            V5,
            &[
                0xF0, 0x0B, // AUTH, remaining length 11
                0x18, // continue authentication
                0x09, // property length 9
                0x15, 0x00, 0x01, b'M', // authentication method "M"
                0x16, 0x00, 0x02, 0x01, 0x02, // authentication data 01 02
            ],
        );
        // A reason code without a property length is not a valid AUTH.
        assert!(matches!(
            decode_exact(&[0xF0, 0x01, 0x18], V5),
            Err(DecodeError::Malformed(_))
        ));
        // Session expiry is not an AUTH property.
        assert_eq!(
            decode_exact(&[0xF0, 0x07, 0x18, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01], V5),
            Err(DecodeError::Malformed(
                "property not allowed in this packet"
            ))
        );
    }

    #[test]
    fn auth_does_not_exist_before_5_0() {
        assert_eq!(
            decode_exact(&[0xF0, 0x00], V311),
            Err(DecodeError::InvalidPacketType(15))
        );
        assert_eq!(
            encode_vec(&Packet::Auth(Auth::default()), V311),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn round_trips() {
        for version in [V31, V311, V5] {
            round_trip(&Packet::PingReq, version);
            round_trip(&Packet::PingResp, version);
            round_trip(&Packet::Disconnect(Disconnect::default()), version);
        }
        round_trip(
            &Packet::Disconnect(Disconnect {
                reason: 0x04,
                properties: Properties {
                    session_expiry_interval: Some(60),
                    reason_string: Some("bye".into()),
                    user_properties: vec![("a".into(), "b".into())],
                    server_reference: Some("s".into()),
                    ..Properties::default()
                },
            }),
            V5,
        );
        round_trip(
            &Packet::Auth(Auth {
                reason: 0x19,
                properties: Properties::default(),
            }),
            V5,
        );
        round_trip(
            &Packet::Auth(Auth {
                reason: 0x00,
                properties: Properties {
                    authentication_method: Some("SCRAM".into()),
                    authentication_data: Some(Bytes::from_static(b"final")),
                    reason_string: Some("ok".into()),
                    user_properties: vec![("x".into(), "y".into())],
                    ..Properties::default()
                },
            }),
            V5,
        );
    }
}
