//! CONNECT and CONNACK.

use bytes::{BufMut, BytesMut};

use super::primitives::{field_len, put_field, Reader};
use super::properties::{self, Context};
use super::{put_fixed_header, DecodeError, CONNACK, CONNECT};
use crate::mqtt::packet::{ConnAck, Connect, LastWill, Properties, ProtocolVersion, QoS};

const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

fn name_and_level(version: ProtocolVersion) -> (&'static [u8], u8) {
    match version {
        ProtocolVersion::V31 => (b"MQIsdp", 3),
        ProtocolVersion::V311 => (b"MQTT", 4),
        ProtocolVersion::V5 => (b"MQTT", 5),
    }
}

pub(super) fn decode_connect(mut r: Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        // A known name with an unknown level gets a CONNACK saying so
        // (3.1.1 3.1.2.2, 5.0 3.1.2.2), hence a distinct error.
        (b"MQIsdp" | b"MQTT", level) => return Err(DecodeError::UnsupportedProtocolVersion(level)),
        (other, _) => {
            return Err(DecodeError::InvalidProtocolName(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    };
    let v5 = protocol.is_v5();

    let flags = r.u8()?;
    if flags & RESERVED != 0 {
        return Err(DecodeError::Malformed("reserved CONNECT flag is set"));
    }
    let will_flag = flags & WILL != 0;
    let will_qos_bits = (flags >> WILL_QOS_SHIFT) & 0x03;
    let will_retain = flags & WILL_RETAIN != 0;
    let will_qos = if will_flag {
        QoS::from_u8(will_qos_bits).ok_or(DecodeError::InvalidQoS(will_qos_bits))?
    } else if will_qos_bits != 0 || will_retain {
        return Err(DecodeError::Malformed(
            "will QoS or will retain set without the will flag",
        ));
    } else {
        QoS::AtMostOnce
    };
    let username_flag = flags & USERNAME != 0;
    let password_flag = flags & PASSWORD != 0;
    // 5.0 dropped this rule so a password can carry a token on its own.
    if password_flag && !username_flag && !v5 {
        return Err(DecodeError::Malformed(
            "password flag set without the user name flag",
        ));
    }

    let keep_alive = r.u16()?;
    let properties = if v5 {
        properties::decode(&mut r, Context::Connect)?
    } else {
        Properties::default()
    };

    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            properties::decode(&mut r, Context::Will)?
        } else {
            Properties::default()
        };
        Some(LastWill {
            topic: r.string()?,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;

    Ok(Connect {
        protocol,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// The name and level written come from `version`, not `c.protocol`, so one
/// `Connect` can be sent at any level.
pub(super) fn encode_connect(c: &Connect, version: ProtocolVersion, out: &mut BytesMut) {
    let v5 = version.is_v5();
    let (name, level) = name_and_level(version);

    let mut flags = 0u8;
    if c.clean_start {
        flags |= CLEAN_START;
    }
    if let Some(will) = &c.will {
        flags |= WILL | (will.qos as u8) << WILL_QOS_SHIFT;
        if will.retain {
            flags |= WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= USERNAME;
    }
    if c.password.is_some() {
        flags |= PASSWORD;
    }

    let mut len = field_len(name) + 1 + 1 + 2 + field_len(c.client_id.as_bytes());
    if v5 {
        len += properties::block_len(&c.properties);
    }
    if let Some(will) = &c.will {
        if v5 {
            len += properties::block_len(&will.properties);
        }
        len += field_len(will.topic.as_bytes()) + field_len(&will.payload);
    }
    if let Some(username) = &c.username {
        len += field_len(username.as_bytes());
    }
    if let Some(password) = &c.password {
        len += field_len(password);
    }

    put_fixed_header(out, CONNECT << 4, len);
    put_field(out, name);
    out.put_u8(level);
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        properties::put(&c.properties, out);
    }
    put_field(out, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        if v5 {
            properties::put(&will.properties, out);
        }
        put_field(out, will.topic.as_bytes());
        put_field(out, &will.payload);
    }
    if let Some(username) = &c.username {
        put_field(out, username.as_bytes());
    }
    if let Some(password) = &c.password {
        put_field(out, password);
    }
}

pub(super) fn decode_connack(
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<ConnAck, DecodeError> {
    let ack_flags = r.u8()?;
    if ack_flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("reserved CONNACK flags are set"));
    }
    let code = r.u8()?;
    let properties = if version.is_v5() {
        properties::decode(&mut r, Context::ConnAck)?
    } else {
        Properties::default()
    };
    r.finish()?;
    Ok(ConnAck {
        session_present: ack_flags & 0x01 != 0,
        code,
        properties,
    })
}

pub(super) fn encode_connack(c: &ConnAck, version: ProtocolVersion, out: &mut BytesMut) {
    let v5 = version.is_v5();
    let mut len = 2;
    if v5 {
        len += properties::block_len(&c.properties);
    }
    put_fixed_header(out, CONNACK << 4, len);
    out.put_u8(u8::from(c.session_present));
    out.put_u8(c.code);
    if v5 {
        properties::put(&c.properties, out);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::test_support::*;
    use super::*;
    use crate::mqtt::packet::{Packet, ProtocolVersion::*};

    fn minimal(protocol: ProtocolVersion) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: "c1".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    fn full(protocol: ProtocolVersion) -> Connect {
        let v5 = protocol.is_v5();
        Connect {
            protocol,
            clean_start: false,
            keep_alive: 0xFFFF,
            client_id: "client-é".into(),
            will: Some(LastWill {
                topic: "last/will".into(),
                payload: Bytes::from_static(b"\x00bye\xFF"),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: if v5 {
                    Properties {
                        will_delay_interval: Some(10),
                        payload_format_indicator: Some(0),
                        message_expiry_interval: Some(100),
                        content_type: Some("bin".into()),
                        response_topic: Some("r".into()),
                        correlation_data: Some(Bytes::from_static(b"cd")),
                        user_properties: vec![("w".into(), "1".into())],
                        ..Properties::default()
                    }
                } else {
                    Properties::default()
                },
            }),
            username: Some("user".into()),
            password: Some(Bytes::from_static(b"p\x00ss")),
            properties: if v5 {
                Properties {
                    session_expiry_interval: Some(300),
                    receive_maximum: Some(10),
                    maximum_packet_size: Some(4096),
                    topic_alias_maximum: Some(5),
                    request_response_information: Some(1),
                    request_problem_information: Some(0),
                    user_properties: vec![("a".into(), "b".into())],
                    authentication_method: Some("PLAIN".into()),
                    authentication_data: Some(Bytes::from_static(b"xyz")),
                    ..Properties::default()
                }
            } else {
                Properties::default()
            },
        }
    }

    #[test]
    fn golden_connect_v311_minimal() {
        let wire: &[u8] = &[
            0x10, 0x0E, // CONNECT, remaining length 14
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x04, // level 4
            0x02, // flags: clean session
            0x00, 0x3C, // keep alive 60
            0x00, 0x02, b'c', b'1', // client id "c1"
        ];
        golden(&Packet::Connect(Box::new(minimal(V311))), V311, wire);
    }

    #[test]
    fn golden_connect_v31() {
        let wire: &[u8] = &[
            0x10, 0x10, // CONNECT, remaining length 16
            0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name
            0x03, // level 3
            0x02, // flags: clean session
            0x00, 0x3C, // keep alive 60
            0x00, 0x02, b'c', b'1', // client id "c1"
        ];
        golden(&Packet::Connect(Box::new(minimal(V31))), V31, wire);
    }

    #[test]
    fn golden_connect_v311_with_will_and_credentials() {
        let wire: &[u8] = &[
            0x10, 0x26, // CONNECT, remaining length 38
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x04, // level 4
            0xEC, // flags: username, password, will retain, will QoS 1, will
            0x00, 0x0A, // keep alive 10
            0x00, 0x00, // empty client id
            0x00, 0x03, b'w', b'/', b't', // will topic "w/t"
            0x00, 0x04, b'g', b'o', b'n', b'e', // will payload "gone"
            0x00, 0x05, b'a', b'l', b'i', b'c', b'e', // user name "alice"
            0x00, 0x06, b's', b'e', b'c', b'r', b'e', b't', // password "secret"
        ];
        let connect = Connect {
            protocol: V311,
            clean_start: false,
            keep_alive: 10,
            client_id: String::new(),
            will: Some(LastWill {
                topic: "w/t".into(),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties::default(),
            }),
            username: Some("alice".into()),
            password: Some(Bytes::from_static(b"secret")),
            properties: Properties::default(),
        };
        golden(&Packet::Connect(Box::new(connect)), V311, wire);
    }

    #[test]
    fn golden_connect_v5_with_properties_and_will_properties() {
        let wire: &[u8] = &[
            0x10, 0x28, // CONNECT, remaining length 40
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x05, // level 5
            0x0E, // flags: will QoS 1, will, clean start
            0x00, 0x1E, // keep alive 30
            0x08, // property length 8
            0x11, 0x00, 0x00, 0x00, 0x78, // session expiry interval 120
            0x21, 0x00, 0x05, // receive maximum 5
            0x00, 0x01, b'x', // client id "x"
            0x0A, // will property length 10
            0x02, 0x00, 0x00, 0x00, 0x3C, // message expiry interval 60
            0x18, 0x00, 0x00, 0x00, 0x05, // will delay interval 5
            0x00, 0x01, b'w', // will topic "w"
            0x00, 0x02, b'h', b'i', // will payload "hi"
        ];
        let connect = Connect {
            protocol: V5,
            clean_start: true,
            keep_alive: 30,
            client_id: "x".into(),
            will: Some(LastWill {
                topic: "w".into(),
                payload: Bytes::from_static(b"hi"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties {
                    will_delay_interval: Some(5),
                    message_expiry_interval: Some(60),
                    ..Properties::default()
                },
            }),
            username: None,
            password: None,
            properties: Properties {
                session_expiry_interval: Some(120),
                receive_maximum: Some(5),
                ..Properties::default()
            },
        };
        golden(&Packet::Connect(Box::new(connect)), V5, wire);
    }

    #[test]
    fn connect_carries_its_own_level_whatever_the_connection_level() {
        let wire = encode_vec(&Packet::Connect(Box::new(minimal(V5))), V5);
        assert_eq!(
            decode_exact(&wire, V311),
            Ok(Packet::Connect(Box::new(minimal(V5))))
        );
    }

    #[test]
    fn wrong_protocol_name() {
        let wire: &[u8] = &[
            0x10, 0x0E, // CONNECT, remaining length 14
            0x00, 0x04, b'M', b'Q', b'T', b'X', // protocol name "MQTX"
            0x04, // level 4
            0x02, // flags
            0x00, 0x3C, // keep alive
            0x00, 0x02, b'c', b'1', // client id
        ];
        assert_eq!(
            decode_exact(wire, V311),
            Err(DecodeError::InvalidProtocolName("MQTX".into()))
        );
        // "MQIsdp" belongs with level 3 only; "MQTT" with level 3 is not 3.1.
        let mqisdp_level4: &[u8] = &[
            0x10, 0x10, // CONNECT, remaining length 16
            0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name
            0x04, // level 4
            0x02, 0x00, 0x3C, 0x00, 0x02, b'c', b'1', // flags, keep alive, client id
        ];
        assert_eq!(
            decode_exact(mqisdp_level4, V311),
            Err(DecodeError::UnsupportedProtocolVersion(4))
        );
    }

    #[test]
    fn protocol_level_6_is_unsupported() {
        let wire: &[u8] = &[
            0x10, 0x0E, // CONNECT, remaining length 14
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x06, // level 6
            0x02, // flags
            0x00, 0x3C, // keep alive
            0x00, 0x02, b'c', b'1', // client id
        ];
        let err = decode_exact(wire, V311).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedProtocolVersion(6));
        assert_eq!(err.reason_code(), 0x84);
    }

    /// Minimal 3.1.1 CONNECT with the given flags and the fields after them.
    fn connect_with_flags(flags: u8, tail: &[u8]) -> Vec<u8> {
        let mut body = vec![
            0x00, 0x04, b'M', b'Q', b'T', b'T',  // protocol name
            0x04,  // level 4
            flags, // connect flags
            0x00, 0x3C, // keep alive 60
            0x00, 0x01, b'c', // client id "c"
        ];
        body.extend_from_slice(tail);
        let mut wire = vec![0x10, body.len() as u8];
        wire.extend(body);
        wire
    }

    #[test]
    fn reserved_connect_flag() {
        assert_eq!(
            decode_exact(&connect_with_flags(0x03, &[]), V311),
            Err(DecodeError::Malformed("reserved CONNECT flag is set"))
        );
    }

    #[test]
    fn will_qos_3() {
        let will = [
            0x00, 0x01, b't', // will topic
            0x00, 0x00, // empty will payload
        ];
        // 0x1E: will QoS bits 11, will flag, clean session.
        assert_eq!(
            decode_exact(&connect_with_flags(0x1E, &will), V311),
            Err(DecodeError::InvalidQoS(3))
        );
    }

    #[test]
    fn will_qos_or_retain_without_will_flag() {
        for flags in [0x08, 0x10, 0x20] {
            assert!(
                matches!(
                    decode_exact(&connect_with_flags(flags, &[]), V311),
                    Err(DecodeError::Malformed(_))
                ),
                "{flags:#04x}"
            );
        }
    }

    #[test]
    fn password_without_username() {
        let password = [0x00, 0x01, b'p'];
        assert_eq!(
            decode_exact(&connect_with_flags(0x40, &password), V311),
            Err(DecodeError::Malformed(
                "password flag set without the user name flag"
            ))
        );
        // Allowed in 5.0.
        let connect = Connect {
            password: Some(Bytes::from_static(b"p")),
            ..minimal(V5)
        };
        round_trip(&Packet::Connect(Box::new(connect)), V5);
    }

    #[test]
    fn invalid_utf8_client_id_and_trailing_bytes() {
        let mut bad = connect_with_flags(0x02, &[]);
        let last = bad.len() - 1;
        bad[last] = 0xFF; // client id byte no longer UTF-8
        assert_eq!(decode_exact(&bad, V311), Err(DecodeError::InvalidUtf8));

        assert_eq!(
            decode_exact(&connect_with_flags(0x02, &[0x00]), V311),
            Err(DecodeError::Malformed(
                "unexpected bytes after the last field"
            ))
        );
    }

    #[test]
    fn field_past_remaining_length_is_malformed() {
        // Username flag set but no username follows within the remaining length.
        assert!(matches!(
            decode_exact(&connect_with_flags(0x82, &[]), V311),
            Err(DecodeError::Malformed(_))
        ));
        // Remaining length 3: cut inside the protocol name.
        assert!(matches!(
            decode_exact(&[0x10, 0x03, 0x00, 0x04, b'M'], V311),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn property_not_allowed_in_connect_or_will() {
        let wire: &[u8] = &[
            0x10, 0x10, // CONNECT, remaining length 16
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x05, // level 5
            0x02, // flags: clean start
            0x00, 0x3C, // keep alive
            0x03, // property length 3
            0x23, 0x00, 0x01, // topic alias: PUBLISH only
            0x00, 0x00, // client id ""
        ];
        assert_eq!(
            decode_exact(wire, V5),
            Err(DecodeError::Malformed(
                "property not allowed in this packet"
            ))
        );
        let wire: &[u8] = &[
            0x10, 0x18, // CONNECT, remaining length 24
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x05, // level 5
            0x06, // flags: will, clean start
            0x00, 0x3C, // keep alive
            0x00, // property length 0
            0x00, 0x00, // client id ""
            0x05, // will property length 5
            0x11, 0x00, 0x00, 0x00, 0x01, // session expiry: not a will property
            0x00, 0x01, b't', // will topic
            0x00, 0x00, // will payload
        ];
        assert_eq!(
            decode_exact(wire, V5),
            Err(DecodeError::Malformed(
                "property not allowed in this packet"
            ))
        );
    }

    #[test]
    fn golden_connack() {
        golden(
            &Packet::ConnAck(ConnAck {
                session_present: true,
                code: 0,
                properties: Properties::default(),
            }),
            V311,
            &[
                0x20, 0x02, // CONNACK, remaining length 2
                0x01, // session present
                0x00, // accepted
            ],
        );
        golden(
            &Packet::ConnAck(ConnAck {
                session_present: false,
                code: 0x84,
                properties: Properties {
                    reason_string: Some("v6".into()),
                    ..Properties::default()
                },
            }),
            V5,
            &[
                0x20, 0x08, // CONNACK, remaining length 8
                0x00, // no session
                0x84, // unsupported protocol version
                0x05, // property length 5
                0x1F, 0x00, 0x02, b'v', b'6', // reason string "v6"
            ],
        );
        // 5.0 CONNACK always carries a property length.
        golden(
            &Packet::ConnAck(ConnAck {
                session_present: false,
                code: 0,
                properties: Properties::default(),
            }),
            V5,
            &[0x20, 0x03, 0x00, 0x00, 0x00],
        );
    }

    #[test]
    fn connack_reserved_flags_and_trailing_bytes() {
        assert!(matches!(
            decode_exact(&[0x20, 0x02, 0x02, 0x00], V311),
            Err(DecodeError::Malformed(_))
        ));
        // A 5.0-style CONNACK sent on a 3.1.1 connection has a trailing byte.
        assert!(matches!(
            decode_exact(&[0x20, 0x03, 0x00, 0x00, 0x00], V311),
            Err(DecodeError::Malformed(_))
        ));
        // Maximum QoS 2 is a protocol error.
        assert!(matches!(
            decode_exact(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02], V5),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn round_trips() {
        for version in [V31, V311, V5] {
            round_trip(&Packet::Connect(Box::new(minimal(version))), version);
            round_trip(&Packet::Connect(Box::new(full(version))), version);
        }
        for version in [V311, V5] {
            round_trip(
                &Packet::ConnAck(ConnAck {
                    session_present: true,
                    code: 0,
                    properties: Properties::default(),
                }),
                version,
            );
        }
        round_trip(
            &Packet::ConnAck(ConnAck {
                session_present: false,
                code: 0,
                properties: Properties {
                    session_expiry_interval: Some(0),
                    receive_maximum: Some(100),
                    maximum_qos: Some(1),
                    retain_available: Some(1),
                    maximum_packet_size: Some(1 << 20),
                    assigned_client_identifier: Some("auto-123".into()),
                    topic_alias_maximum: Some(16),
                    reason_string: Some("ok".into()),
                    user_properties: vec![("x".into(), "y".into())],
                    wildcard_subscription_available: Some(1),
                    subscription_identifier_available: Some(1),
                    shared_subscription_available: Some(0),
                    server_keep_alive: Some(60),
                    response_information: Some("resp".into()),
                    server_reference: Some("b2".into()),
                    authentication_method: Some("m".into()),
                    authentication_data: Some(Bytes::from_static(b"d")),
                    ..Properties::default()
                },
            }),
            V5,
        );
    }
}
