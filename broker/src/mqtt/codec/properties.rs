//! MQTT 5.0 properties: decoding with per-packet allowed sets and duplicate checks, and encoding in a fixed order.

use bytes::{BufMut, BytesMut};

use super::primitives::{field_len, put_field, put_vbi, vbi_len, Reader};
use super::DecodeError;
use crate::mqtt::packet::Properties;

/// Property identifiers (MQTT 5.0 section 2.2.2.2).
mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u32 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u32 = 0x02;
    pub const CONTENT_TYPE: u32 = 0x03;
    pub const RESPONSE_TOPIC: u32 = 0x08;
    pub const CORRELATION_DATA: u32 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u32 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u32 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u32 = 0x12;
    pub const SERVER_KEEP_ALIVE: u32 = 0x13;
    pub const AUTHENTICATION_METHOD: u32 = 0x15;
    pub const AUTHENTICATION_DATA: u32 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u32 = 0x17;
    pub const WILL_DELAY_INTERVAL: u32 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u32 = 0x19;
    pub const RESPONSE_INFORMATION: u32 = 0x1A;
    pub const SERVER_REFERENCE: u32 = 0x1C;
    pub const REASON_STRING: u32 = 0x1F;
    pub const RECEIVE_MAXIMUM: u32 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u32 = 0x22;
    pub const TOPIC_ALIAS: u32 = 0x23;
    pub const MAXIMUM_QOS: u32 = 0x24;
    pub const RETAIN_AVAILABLE: u32 = 0x25;
    pub const USER_PROPERTY: u32 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u32 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u32 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u32 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u32 = 0x2A;
}

/// Where a property block sits; each place allows a different set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Context {
    Connect,
    /// The will properties inside the CONNECT payload.
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK: all allow exactly
    /// Reason String and User Property.
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

/// The packets each property may appear in, from the table in 5.0 2.2.2.2.
/// `None` for identifiers the spec does not define.
fn allowed_in(property: u32) -> Option<&'static [Context]> {
    use id::*;
    use Context::*;
    Some(match property {
        PAYLOAD_FORMAT_INDICATOR
        | MESSAGE_EXPIRY_INTERVAL
        | CONTENT_TYPE
        | RESPONSE_TOPIC
        | CORRELATION_DATA => &[Publish, Will],
        SUBSCRIPTION_IDENTIFIER => &[Publish, Subscribe],
        SESSION_EXPIRY_INTERVAL => &[Connect, ConnAck, Disconnect],
        ASSIGNED_CLIENT_IDENTIFIER
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => &[ConnAck],
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => &[Connect, ConnAck, Auth],
        REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION => &[Connect],
        WILL_DELAY_INTERVAL => &[Will],
        SERVER_REFERENCE => &[ConnAck, Disconnect],
        REASON_STRING => &[ConnAck, Ack, Disconnect, Auth],
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => &[Connect, ConnAck],
        TOPIC_ALIAS => &[Publish],
        USER_PROPERTY => &[
            Connect,
            Will,
            ConnAck,
            Publish,
            Ack,
            Subscribe,
            Unsubscribe,
            Disconnect,
            Auth,
        ],
        _ => return None,
    })
}

fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property included more than once"));
    }
    *slot = Some(value);
    Ok(())
}

/// Properties whose only legal values are 0 and 1; the spec makes any other
/// value a Protocol Error (e.g. 5.0 3.1.2.11.6, 3.2.2.3.4).
fn flag(r: &mut Reader) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol("property value must be 0 or 1")),
    }
}

fn nonzero_u16(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("property value must be non-zero")),
        v => Ok(v),
    }
}

fn nonzero_u32(r: &mut Reader) -> Result<u32, DecodeError> {
    match r.u32()? {
        0 => Err(DecodeError::Protocol("property value must be non-zero")),
        v => Ok(v),
    }
}

/// Reads a property length and the block it announces.
pub(super) fn decode(r: &mut Reader, ctx: Context) -> Result<Properties, DecodeError> {
    use id::*;
    let len = r.vbi()? as usize;
    // A block running past the packet is malformed, not incomplete: the whole
    // frame is already in hand.
    let mut r = Reader::new(r.take(len)?);
    let mut p = Properties::default();
    while !r.is_empty() {
        let property = r.vbi()?;
        let contexts =
            allowed_in(property).ok_or(DecodeError::Malformed("unknown property identifier"))?;
        if !contexts.contains(&ctx) {
            return Err(DecodeError::Malformed(
                "property not allowed in this packet",
            ));
        }
        match property {
            PAYLOAD_FORMAT_INDICATOR => once(&mut p.payload_format_indicator, r.u8()?)?,
            MESSAGE_EXPIRY_INTERVAL => once(&mut p.message_expiry_interval, r.u32()?)?,
            CONTENT_TYPE => once(&mut p.content_type, r.string()?)?,
            RESPONSE_TOPIC => once(&mut p.response_topic, r.string()?)?,
            CORRELATION_DATA => once(&mut p.correlation_data, r.binary()?)?,
            SUBSCRIPTION_IDENTIFIER => {
                let value = r.vbi()?;
                if value == 0 {
                    return Err(DecodeError::Protocol("subscription identifier 0"));
                }
                // A forwarded PUBLISH carries one identifier per matching
                // subscription; SUBSCRIBE may carry only one.
                if ctx != Context::Publish && !p.subscription_identifiers.is_empty() {
                    return Err(DecodeError::Protocol("property included more than once"));
                }
                p.subscription_identifiers.push(value);
            }
            SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, r.u32()?)?,
            ASSIGNED_CLIENT_IDENTIFIER => once(&mut p.assigned_client_identifier, r.string()?)?,
            SERVER_KEEP_ALIVE => once(&mut p.server_keep_alive, r.u16()?)?,
            AUTHENTICATION_METHOD => once(&mut p.authentication_method, r.string()?)?,
            AUTHENTICATION_DATA => once(&mut p.authentication_data, r.binary()?)?,
            REQUEST_PROBLEM_INFORMATION => once(&mut p.request_problem_information, flag(&mut r)?)?,
            WILL_DELAY_INTERVAL => once(&mut p.will_delay_interval, r.u32()?)?,
            REQUEST_RESPONSE_INFORMATION => {
                once(&mut p.request_response_information, flag(&mut r)?)?
            }
            RESPONSE_INFORMATION => once(&mut p.response_information, r.string()?)?,
            SERVER_REFERENCE => once(&mut p.server_reference, r.string()?)?,
            REASON_STRING => once(&mut p.reason_string, r.string()?)?,
            RECEIVE_MAXIMUM => once(&mut p.receive_maximum, nonzero_u16(&mut r)?)?,
            TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, r.u16()?)?,
            // Topic Alias 0 or above the negotiated maximum is left to the
            // broker: it answers with 0x94 Topic Alias invalid, not 0x82.
            TOPIC_ALIAS => once(&mut p.topic_alias, r.u16()?)?,
            MAXIMUM_QOS => once(&mut p.maximum_qos, flag(&mut r)?)?,
            RETAIN_AVAILABLE => once(&mut p.retain_available, flag(&mut r)?)?,
            USER_PROPERTY => {
                let key = r.string()?;
                let value = r.string()?;
                p.user_properties.push((key, value));
            }
            MAXIMUM_PACKET_SIZE => once(&mut p.maximum_packet_size, nonzero_u32(&mut r)?)?,
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                once(&mut p.wildcard_subscription_available, flag(&mut r)?)?
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                once(&mut p.subscription_identifier_available, flag(&mut r)?)?
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                once(&mut p.shared_subscription_available, flag(&mut r)?)?
            }
            // allowed_in() returned Some, so every defined id is matched above.
            _ => return Err(DecodeError::Malformed("unknown property identifier")),
        }
    }
    Ok(p)
}

/// One property value, borrowed from `Properties`, so sizing and writing walk
/// the same ordered list and cannot disagree.
enum Value<'a> {
    Byte(u8),
    Two(u16),
    Four(u32),
    Vbi(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    Pair(&'a str, &'a str),
}

impl Value<'_> {
    fn len(&self) -> usize {
        match self {
            Value::Byte(_) => 1,
            Value::Two(_) => 2,
            Value::Four(_) => 4,
            Value::Vbi(v) => vbi_len(*v as usize),
            Value::Str(s) => field_len(s.as_bytes()),
            Value::Bin(b) => field_len(b),
            Value::Pair(k, v) => field_len(k.as_bytes()) + field_len(v.as_bytes()),
        }
    }

    fn put(&self, out: &mut BytesMut) {
        match self {
            Value::Byte(v) => out.put_u8(*v),
            Value::Two(v) => out.put_u16(*v),
            Value::Four(v) => out.put_u32(*v),
            Value::Vbi(v) => put_vbi(out, *v as usize),
            Value::Str(s) => put_field(out, s.as_bytes()),
            Value::Bin(b) => put_field(out, b),
            Value::Pair(k, v) => {
                put_field(out, k.as_bytes());
                put_field(out, v.as_bytes());
            }
        }
    }
}

/// Calls `f` for every present property in ascending identifier order (user
/// properties and subscription identifiers in their stored order), so the
/// output is deterministic.
fn for_each(p: &Properties, mut f: impl FnMut(u32, Value<'_>)) {
    use id::*;
    if let Some(v) = p.payload_format_indicator {
        f(PAYLOAD_FORMAT_INDICATOR, Value::Byte(v));
    }
    if let Some(v) = p.message_expiry_interval {
        f(MESSAGE_EXPIRY_INTERVAL, Value::Four(v));
    }
    if let Some(v) = &p.content_type {
        f(CONTENT_TYPE, Value::Str(v));
    }
    if let Some(v) = &p.response_topic {
        f(RESPONSE_TOPIC, Value::Str(v));
    }
    if let Some(v) = &p.correlation_data {
        f(CORRELATION_DATA, Value::Bin(v));
    }
    for v in &p.subscription_identifiers {
        f(SUBSCRIPTION_IDENTIFIER, Value::Vbi(*v));
    }
    if let Some(v) = p.session_expiry_interval {
        f(SESSION_EXPIRY_INTERVAL, Value::Four(v));
    }
    if let Some(v) = &p.assigned_client_identifier {
        f(ASSIGNED_CLIENT_IDENTIFIER, Value::Str(v));
    }
    if let Some(v) = p.server_keep_alive {
        f(SERVER_KEEP_ALIVE, Value::Two(v));
    }
    if let Some(v) = &p.authentication_method {
        f(AUTHENTICATION_METHOD, Value::Str(v));
    }
    if let Some(v) = &p.authentication_data {
        f(AUTHENTICATION_DATA, Value::Bin(v));
    }
    if let Some(v) = p.request_problem_information {
        f(REQUEST_PROBLEM_INFORMATION, Value::Byte(v));
    }
    if let Some(v) = p.will_delay_interval {
        f(WILL_DELAY_INTERVAL, Value::Four(v));
    }
    if let Some(v) = p.request_response_information {
        f(REQUEST_RESPONSE_INFORMATION, Value::Byte(v));
    }
    if let Some(v) = &p.response_information {
        f(RESPONSE_INFORMATION, Value::Str(v));
    }
    if let Some(v) = &p.server_reference {
        f(SERVER_REFERENCE, Value::Str(v));
    }
    if let Some(v) = &p.reason_string {
        f(REASON_STRING, Value::Str(v));
    }
    if let Some(v) = p.receive_maximum {
        f(RECEIVE_MAXIMUM, Value::Two(v));
    }
    if let Some(v) = p.topic_alias_maximum {
        f(TOPIC_ALIAS_MAXIMUM, Value::Two(v));
    }
    if let Some(v) = p.topic_alias {
        f(TOPIC_ALIAS, Value::Two(v));
    }
    if let Some(v) = p.maximum_qos {
        f(MAXIMUM_QOS, Value::Byte(v));
    }
    if let Some(v) = p.retain_available {
        f(RETAIN_AVAILABLE, Value::Byte(v));
    }
    for (k, v) in &p.user_properties {
        f(USER_PROPERTY, Value::Pair(k, v));
    }
    if let Some(v) = p.maximum_packet_size {
        f(MAXIMUM_PACKET_SIZE, Value::Four(v));
    }
    if let Some(v) = p.wildcard_subscription_available {
        f(WILDCARD_SUBSCRIPTION_AVAILABLE, Value::Byte(v));
    }
    if let Some(v) = p.subscription_identifier_available {
        f(SUBSCRIPTION_IDENTIFIER_AVAILABLE, Value::Byte(v));
    }
    if let Some(v) = p.shared_subscription_available {
        f(SHARED_SUBSCRIPTION_AVAILABLE, Value::Byte(v));
    }
}

/// Size of the properties themselves, without the property length prefix.
/// Every identifier is below 0x80, so each takes one byte.
pub(super) fn content_len(p: &Properties) -> usize {
    let mut len = 0;
    for_each(p, |_, value| len += 1 + value.len());
    len
}

/// Size of the whole block: property length prefix plus content.
pub(super) fn block_len(p: &Properties) -> usize {
    let len = content_len(p);
    vbi_len(len) + len
}

/// Writes the property length followed by the properties. Every property that
/// is set is written; choosing which ones belong in a packet is the caller's
/// job.
pub(super) fn put(p: &Properties, out: &mut BytesMut) {
    put_vbi(out, content_len(p));
    for_each(p, |property, value| {
        put_vbi(out, property as usize);
        value.put(out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use Context::*;

    /// Decodes a complete properties block (prefix included) that must fill `bytes`.
    fn decode_block(bytes: &[u8], ctx: Context) -> Result<Properties, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(bytes));
        let p = decode(&mut r, ctx)?;
        r.finish()?;
        Ok(p)
    }

    const ALL: [Context; 9] = [
        Connect,
        Will,
        ConnAck,
        Publish,
        Ack,
        Subscribe,
        Unsubscribe,
        Disconnect,
        Auth,
    ];

    fn encoded(p: &Properties) -> Vec<u8> {
        let mut out = BytesMut::new();
        put(p, &mut out);
        assert_eq!(out.len(), block_len(p));
        out.to_vec()
    }

    /// Every property set to a distinctive value.
    fn everything() -> Properties {
        Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            subscription_identifiers: vec![1, 268_435_455],
            session_expiry_interval: Some(u32::MAX),
            assigned_client_identifier: Some("auto-1".into()),
            server_keep_alive: Some(30),
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"nonce")),
            request_problem_information: Some(0),
            will_delay_interval: Some(5),
            request_response_information: Some(1),
            response_information: Some("resp/".into()),
            server_reference: Some("other:1883".into()),
            reason_string: Some("because".into()),
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            topic_alias: Some(3),
            maximum_qos: Some(1),
            retain_available: Some(0),
            user_properties: vec![("k".into(), "v1".into()), ("k".into(), "v2".into())],
            maximum_packet_size: Some(1 << 20),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(0),
            shared_subscription_available: Some(1),
        }
    }

    /// `everything()` reduced to what `ctx` allows (one subscription
    /// identifier outside PUBLISH).
    fn allowed_subset(ctx: Context) -> Properties {
        let all = everything();
        let mut p = Properties::default();
        let keep = |property: u32| allowed_in(property).is_some_and(|c| c.contains(&ctx));
        macro_rules! copy {
            ($($field:ident = $id:ident),* $(,)?) => {
                $(if keep(id::$id) { p.$field = all.$field.clone(); })*
            };
        }
        copy!(
            payload_format_indicator = PAYLOAD_FORMAT_INDICATOR,
            message_expiry_interval = MESSAGE_EXPIRY_INTERVAL,
            content_type = CONTENT_TYPE,
            response_topic = RESPONSE_TOPIC,
            correlation_data = CORRELATION_DATA,
            session_expiry_interval = SESSION_EXPIRY_INTERVAL,
            assigned_client_identifier = ASSIGNED_CLIENT_IDENTIFIER,
            server_keep_alive = SERVER_KEEP_ALIVE,
            authentication_method = AUTHENTICATION_METHOD,
            authentication_data = AUTHENTICATION_DATA,
            request_problem_information = REQUEST_PROBLEM_INFORMATION,
            will_delay_interval = WILL_DELAY_INTERVAL,
            request_response_information = REQUEST_RESPONSE_INFORMATION,
            response_information = RESPONSE_INFORMATION,
            server_reference = SERVER_REFERENCE,
            reason_string = REASON_STRING,
            receive_maximum = RECEIVE_MAXIMUM,
            topic_alias_maximum = TOPIC_ALIAS_MAXIMUM,
            topic_alias = TOPIC_ALIAS,
            maximum_qos = MAXIMUM_QOS,
            retain_available = RETAIN_AVAILABLE,
            user_properties = USER_PROPERTY,
            maximum_packet_size = MAXIMUM_PACKET_SIZE,
            wildcard_subscription_available = WILDCARD_SUBSCRIPTION_AVAILABLE,
            subscription_identifier_available = SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            shared_subscription_available = SHARED_SUBSCRIPTION_AVAILABLE,
        );
        if keep(id::SUBSCRIPTION_IDENTIFIER) {
            p.subscription_identifiers = all.subscription_identifiers.clone();
            if ctx != Publish {
                p.subscription_identifiers.truncate(1);
            }
        }
        p
    }

    #[test]
    fn empty_block_is_a_single_zero() {
        assert_eq!(encoded(&Properties::default()), [0x00]);
        for ctx in ALL {
            assert_eq!(decode_block(&[0x00], ctx), Ok(Properties::default()));
        }
    }

    #[test]
    fn golden_publish_properties_in_fixed_order() {
        let p = Properties {
            // Deliberately filled in an order different from the wire order.
            user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            topic_alias: Some(7),
            subscription_identifiers: vec![200, 1],
            payload_format_indicator: Some(1),
            ..Properties::default()
        };
        let wire: &[u8] = &[
            0x18, // property length 24
            0x01, 0x01, // payload format indicator = 1
            0x0B, 0xC8, 0x01, // subscription identifier = 200 (two-byte VBI)
            0x0B, 0x01, // subscription identifier = 1
            0x23, 0x00, 0x07, // topic alias = 7
            0x26, 0x00, 0x01, b'b', 0x00, 0x01, b'2', // user property b=2 (first given)
            0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1', // user property a=1
        ];
        assert_eq!(encoded(&p), wire);
        assert_eq!(decode_block(wire, Publish), Ok(p));
    }

    #[test]
    fn golden_connect_properties() {
        let wire: &[u8] = &[
            0x0F, // property length 15
            0x11, 0x00, 0x00, 0x0E, 0x10, // session expiry interval = 3600
            0x21, 0x00, 0x14, // receive maximum = 20
            0x27, 0x00, 0x01, 0x00, 0x00, // maximum packet size = 65536
            0x17, 0x01, // request problem information = 1
        ];
        let p = decode_block(wire, Connect).unwrap();
        assert_eq!(p.session_expiry_interval, Some(3600));
        assert_eq!(p.receive_maximum, Some(20));
        assert_eq!(p.maximum_packet_size, Some(65536));
        assert_eq!(p.request_problem_information, Some(1));
        // Re-encoded in identifier order: 0x11, 0x17, 0x21, 0x27.
        assert_eq!(
            encoded(&p),
            [
                0x0F, // property length 15
                0x11, 0x00, 0x00, 0x0E, 0x10, // session expiry interval
                0x17, 0x01, // request problem information
                0x21, 0x00, 0x14, // receive maximum
                0x27, 0x00, 0x01, 0x00, 0x00, // maximum packet size
            ]
        );
    }

    #[test]
    fn every_allowed_property_round_trips_in_every_context() {
        for ctx in ALL {
            let p = allowed_subset(ctx);
            assert_ne!(p, Properties::default(), "{ctx:?}");
            assert_eq!(decode_block(&encoded(&p), ctx), Ok(p), "{ctx:?}");
        }
    }

    #[test]
    fn each_property_is_accepted_exactly_where_allowed() {
        for ctx in ALL {
            // One property per block, for every property there is.
            for_each(&everything(), |property, value| {
                let mut block = BytesMut::new();
                put_vbi(&mut block, 1 + value.len());
                put_vbi(&mut block, property as usize);
                value.put(&mut block);
                let result = decode_block(&block, ctx);
                if allowed_in(property).is_some_and(|c| c.contains(&ctx)) {
                    assert!(result.is_ok(), "{ctx:?} {property:#04x}: {result:?}");
                } else {
                    assert_eq!(
                        result,
                        Err(DecodeError::Malformed(
                            "property not allowed in this packet"
                        )),
                        "{ctx:?} {property:#04x}"
                    );
                }
            });
        }
    }

    #[test]
    fn allowed_sets_match_the_spec() {
        let ids = |ctx: Context| -> Vec<u32> {
            (0..=0x7F)
                .filter(|&p| allowed_in(p).is_some_and(|c| c.contains(&ctx)))
                .collect()
        };
        assert_eq!(
            ids(Connect),
            [0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27]
        );
        assert_eq!(ids(Will), [0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26]);
        assert_eq!(
            ids(ConnAck),
            [
                0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
                0x28, 0x29, 0x2A
            ]
        );
        assert_eq!(
            ids(Publish),
            [0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26]
        );
        assert_eq!(ids(Ack), [0x1F, 0x26]);
        assert_eq!(ids(Subscribe), [0x0B, 0x26]);
        assert_eq!(ids(Unsubscribe), [0x26]);
        assert_eq!(ids(Disconnect), [0x11, 0x1C, 0x1F, 0x26]);
        assert_eq!(ids(Auth), [0x15, 0x16, 0x1F, 0x26]);
    }

    #[test]
    fn duplicate_property_is_a_protocol_error() {
        let wire: &[u8] = &[
            0x06, // property length 6
            0x21, 0x00, 0x0A, // receive maximum = 10
            0x21, 0x00, 0x0B, // receive maximum again
        ];
        assert_eq!(
            decode_block(wire, Connect),
            Err(DecodeError::Protocol("property included more than once"))
        );
    }

    #[test]
    fn subscription_identifier_repeats_only_in_publish() {
        let wire: &[u8] = &[
            0x04, // property length 4
            0x0B, 0x01, // subscription identifier = 1
            0x0B, 0x02, // subscription identifier = 2
        ];
        assert_eq!(
            decode_block(wire, Publish).map(|p| p.subscription_identifiers),
            Ok(vec![1, 2])
        );
        assert_eq!(
            decode_block(wire, Subscribe),
            Err(DecodeError::Protocol("property included more than once"))
        );
    }

    #[test]
    fn out_of_range_values_are_protocol_errors() {
        let cases: [&[u8]; 6] = [
            &[0x03, 0x21, 0x00, 0x00],             // receive maximum = 0
            &[0x05, 0x27, 0x00, 0x00, 0x00, 0x00], // maximum packet size = 0
            &[0x02, 0x17, 0x02],                   // request problem information = 2
            &[0x02, 0x19, 0x02],                   // request response information = 2
            &[0x02, 0x0B, 0x00],                   // subscription identifier = 0 (Subscribe)
            &[0x02, 0x0B, 0x00],                   // subscription identifier = 0 (Publish)
        ];
        let contexts = [Connect, Connect, Connect, Connect, Subscribe, Publish];
        for (wire, ctx) in cases.into_iter().zip(contexts) {
            assert!(
                matches!(decode_block(wire, ctx), Err(DecodeError::Protocol(_))),
                "{wire:02x?}"
            );
        }
        // maximum QoS = 2 in CONNACK.
        assert!(matches!(
            decode_block(&[0x02, 0x24, 0x02], ConnAck),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn unknown_and_multi_byte_identifiers_are_malformed() {
        // 0x04 is not a defined property.
        assert_eq!(
            decode_block(&[0x02, 0x04, 0x00], Publish),
            Err(DecodeError::Malformed("unknown property identifier"))
        );
        // Identifier 0x80 encoded as a two-byte VBI (0x80 0x01).
        assert_eq!(
            decode_block(&[0x03, 0x80, 0x01, 0x00], Publish),
            Err(DecodeError::Malformed("unknown property identifier"))
        );
        // Identifier 0x01 in a non-minimal two-byte form is still 0x01.
        assert_eq!(
            decode_block(&[0x03, 0x81, 0x00, 0x01], Publish).map(|p| p.payload_format_indicator),
            Ok(Some(1))
        );
    }

    #[test]
    fn truncation_inside_and_past_the_block_is_malformed() {
        // Property length 5 but only 3 bytes remain in the packet.
        assert!(matches!(
            decode_block(&[0x05, 0x23, 0x00, 0x01], Publish),
            Err(DecodeError::Malformed(_))
        ));
        // Topic alias needs 2 bytes, the block holds only 1 after the id.
        assert!(matches!(
            decode_block(&[0x02, 0x23, 0x00, 0x07], Publish),
            Err(DecodeError::Malformed(_))
        ));
        // Property length itself missing.
        assert!(matches!(
            decode_block(&[], Publish),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn invalid_utf8_in_string_properties() {
        assert_eq!(
            decode_block(&[0x04, 0x1F, 0x00, 0x01, 0xFF], Ack),
            Err(DecodeError::InvalidUtf8)
        );
        // User property value containing U+0000.
        assert_eq!(
            decode_block(&[0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, 0x00], Ack),
            Err(DecodeError::InvalidUtf8)
        );
    }
}
