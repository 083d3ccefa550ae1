//! MQTT control packets as plain data, shared by MQTT 3.1.1 and 5.0.
//!
//! One set of types serves both protocol levels: fields that only exist in
//! 5.0 (reason codes on acks, properties) are simply left at their defaults
//! for 3.1.1 and ignored by the 3.1.1 encoder.

use bytes::Bytes;

pub use crate::core::QoS;

/// Protocol level negotiated by CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1 ("MQIsdp", level 3): handled with the 3.1.1 rules.
    V31,
    /// MQTT 3.1.1 (level 4).
    V311,
    /// MQTT 5.0 (level 5).
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte on the wire.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// v5 Retain Handling subscription option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: do not send retained messages.
    DoNotSend = 2,
}

/// All MQTT 5.0 properties. Each packet uses a subset; the decoder rejects
/// properties not allowed in the packet being decoded (malformed packet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,          // 0x01
    pub message_expiry_interval: Option<u32>,          // 0x02
    pub content_type: Option<String>,                  // 0x03
    pub response_topic: Option<String>,                // 0x08
    pub correlation_data: Option<Bytes>,               // 0x09
    pub subscription_identifiers: Vec<u32>, // 0x0B (variable byte integer, repeatable in PUBLISH)
    pub session_expiry_interval: Option<u32>, // 0x11
    pub assigned_client_identifier: Option<String>, // 0x12
    pub server_keep_alive: Option<u16>,     // 0x13
    pub authentication_method: Option<String>, // 0x15
    pub authentication_data: Option<Bytes>, // 0x16
    pub request_problem_information: Option<u8>, // 0x17
    pub will_delay_interval: Option<u32>,   // 0x18
    pub request_response_information: Option<u8>, // 0x19
    pub response_information: Option<String>, // 0x1A
    pub server_reference: Option<String>,   // 0x1C
    pub reason_string: Option<String>,      // 0x1F
    pub receive_maximum: Option<u16>,       // 0x21
    pub topic_alias_maximum: Option<u16>,   // 0x22
    pub topic_alias: Option<u16>,           // 0x23
    pub maximum_qos: Option<u8>,            // 0x24
    pub retain_available: Option<u8>,       // 0x25
    pub user_properties: Vec<(String, String)>, // 0x26 (repeatable, order kept)
    pub maximum_packet_size: Option<u32>,   // 0x27
    pub wildcard_subscription_available: Option<u8>, // 0x28
    pub subscription_identifier_available: Option<u8>, // 0x29
    pub shared_subscription_available: Option<u8>, // 0x2A
}

/// The will message carried by CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (v5): will delay, expiry, content type, user properties...
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<LastWill>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// Return code (3.1.1, 0..=5) or reason code (5.0), written as is.
    pub code: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in 5.0 when a topic alias stands for it.
    pub topic: String,
    /// Present exactly when `qos` > 0.
    pub packet_id: u16,
    pub payload: Bytes,
    pub properties: Properties,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    pub packet_id: u16,
    /// 0 (success) unless a 5.0 peer says otherwise; absent on the wire in 3.1.1.
    pub reason: u8,
    pub properties: Properties,
}

impl PubResponse {
    pub fn new(packet_id: u16) -> Self {
        PubResponse {
            packet_id,
            reason: 0,
            properties: Properties::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub filters: Vec<(String, SubscriptionOptions)>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    /// One per filter: granted QoS (0..=2) or a failure code (0x80 in 3.1.1,
    /// a 5.0 reason code >= 0x80).
    pub codes: Vec<u8>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub filters: Vec<String>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    /// One per filter in 5.0; empty (and not encoded) in 3.1.1.
    pub codes: Vec<u8>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// 5.0 reason code; 3.1.1 DISCONNECT has no body.
    pub reason: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Boxed: CONNECT carries two property sets and is rare, so it should not size every packet.
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// Name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// MQTT 5.0 reason codes used by the broker (section 2.4 of the spec).
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const GRANTED_QOS_1: u8 = 0x01;
    pub const GRANTED_QOS_2: u8 = 0x02;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
    pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0xA2;

    /// 3.1.1 CONNACK return codes.
    pub mod v3 {
        pub const ACCEPTED: u8 = 0;
        pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 1;
        pub const IDENTIFIER_REJECTED: u8 = 2;
        pub const SERVER_UNAVAILABLE: u8 = 3;
        pub const BAD_USER_NAME_OR_PASSWORD: u8 = 4;
        pub const NOT_AUTHORIZED: u8 = 5;
        /// SUBACK failure return code.
        pub const SUBACK_FAILURE: u8 = 0x80;
    }
}
