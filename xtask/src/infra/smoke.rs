//! A minimal MQTT 3.1.1 client over `std::net` for smoke tests: one
//! connect / subscribe / publish / receive round trip against a broker we
//! just started (natively or under qemu-user), with every wait bounded.
//!
//! The codec half (`encode_remaining_length`, `decode_remaining_length`,
//! `decode`) is pure; `Client` does the reading and the deadlines.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// What one round trip measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundTrip {
    /// CONNECT sent → CONNACK received, for the subscriber's connection (ms).
    pub connect_ms: f64,
    /// PUBLISH sent by the publisher → the same payload received by the subscriber (ms).
    pub round_trip_ms: f64,
}

/// Connects a subscriber (clean session, unique client id), SUBSCRIBEs to a unique
/// topic at QoS 1 and waits for its SUBACK (granted QoS must be 1), connects a publisher,
/// PUBLISHes a unique payload at QoS 1 and waits for PUBACK, and waits for the subscriber
/// to receive exactly that payload on that topic (PUBACKing it), then DISCONNECTs both.
/// Every wait is bounded by `timeout` overall; errors say which step failed and what came back
/// (e.g. "CONNACK return code 5 (not authorised)", "timed out after 10 s waiting for SUBACK",
/// "connection closed by the broker while waiting for PUBACK").
pub fn mqtt_round_trip(addr: SocketAddr, timeout: Duration) -> Result<RoundTrip> {
    let deadline = Deadline {
        at: Instant::now() + timeout,
        timeout,
    };
    let token = unique_token();
    let topic = format!("xtask/smoke/{token:016x}");
    let payload = format!("xtask smoke round trip {token:016x}").into_bytes();

    let (mut sub, connect_ms) =
        Client::connect("subscriber", addr, &format!("xtsub{token:016x}"), deadline)?;
    sub.send(&subscribe(1, &topic), "SUBSCRIBE")?;
    match sub.receive("SUBACK")? {
        Packet::SubAck {
            packet_id: 1,
            granted,
        } if granted == [1] => {}
        Packet::SubAck {
            packet_id: 1,
            granted,
        } => bail!("subscriber: SUBACK granted {granted:02x?} for topic {topic:?}, expected [01] (QoS 1; 80 = refused)"),
        Packet::SubAck { packet_id, .. } => {
            bail!("subscriber: SUBACK for packet id {packet_id}, expected 1")
        }
        other => bail!(sub.unexpected("SUBACK", &other)),
    }

    let (mut publisher, _) =
        Client::connect("publisher", addr, &format!("xtpub{token:016x}"), deadline)?;
    publisher.send(&publish(1, &topic, &payload), "PUBLISH")?;
    let sent = Instant::now();
    // The subscriber is read before the publisher's PUBACK so the round trip
    // is timed when the message arrives, not after the acknowledgement.
    match sub.receive("the PUBLISH")? {
        Packet::Publish {
            qos,
            packet_id,
            topic: got_topic,
            payload: got_payload,
        } => {
            if got_topic != topic || got_payload != payload {
                bail!(
                    "subscriber: received {} bytes on {got_topic:?}, expected the {} bytes published on {topic:?}",
                    got_payload.len(),
                    payload.len()
                );
            }
            let Some(packet_id) = packet_id.filter(|_| qos == 1) else {
                bail!("subscriber: message delivered at QoS {qos}, expected 1 (subscribed and published at 1)");
            };
            sub.send(&puback(packet_id), "PUBACK")?;
        }
        other => bail!(sub.unexpected("the PUBLISH", &other)),
    }
    let round_trip_ms = millis(sent.elapsed());
    match publisher.receive("PUBACK")? {
        Packet::PubAck { packet_id: 1 } => {}
        Packet::PubAck { packet_id } => {
            bail!("publisher: PUBACK for packet id {packet_id}, expected 1")
        }
        other => bail!(publisher.unexpected("PUBACK", &other)),
    }
    publisher.send(&DISCONNECT, "DISCONNECT")?;
    sub.send(&DISCONNECT, "DISCONNECT")?;
    Ok(RoundTrip {
        connect_ms,
        round_trip_ms,
    })
}

#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    /// The whole budget, for messages.
    timeout: Duration,
}

impl Deadline {
    fn remaining(self, role: &str, waiting_for: &str) -> Result<Duration> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(self.timed_out(role, waiting_for));
        }
        Ok(left)
    }

    fn timed_out(self, role: &str, waiting_for: &str) -> String {
        let t = self.timeout;
        let text = if t.subsec_millis() == 0 && t.as_secs() > 0 {
            format!("{} s", t.as_secs())
        } else {
            format!("{} ms", t.as_millis())
        };
        format!("{role}: timed out after {text} waiting for {waiting_for}")
    }
}

/// One MQTT connection: a socket and the bytes read but not yet decoded.
struct Client {
    role: &'static str,
    stream: TcpStream,
    buf: Vec<u8>,
    deadline: Deadline,
}

impl Client {
    /// TCP connect, CONNECT, CONNACK accepted; returns the CONNECT → CONNACK time (ms).
    fn connect(
        role: &'static str,
        addr: SocketAddr,
        client_id: &str,
        deadline: Deadline,
    ) -> Result<(Client, f64)> {
        let left = deadline.remaining(role, &format!("the TCP connection to {addr}"))?;
        let stream = TcpStream::connect_timeout(&addr, left)
            .with_context(|| format!("{role}: cannot connect to {addr}"))?;
        stream.set_nodelay(true).ok();
        let mut client = Client {
            role,
            stream,
            buf: Vec::new(),
            deadline,
        };
        client.send(&connect(client_id), "CONNECT")?;
        let sent = Instant::now();
        match client.receive("CONNACK")? {
            Packet::ConnAck { return_code: 0 } => {}
            Packet::ConnAck { return_code } => bail!(
                "{role}: CONNACK return code {return_code} ({})",
                connack_meaning(return_code)
            ),
            other => bail!(client.unexpected("CONNACK", &other)),
        }
        Ok((client, millis(sent.elapsed())))
    }

    fn send(&mut self, packet: &[u8], what: &str) -> Result<()> {
        let left = self
            .deadline
            .remaining(self.role, &format!("{what} to be sent"))?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream
            .write_all(packet)
            .with_context(|| format!("{}: cannot send {what}", self.role))
    }

    /// The next whole packet, reading as often as it takes before the deadline.
    fn receive(&mut self, waiting_for: &str) -> Result<Packet> {
        let role = self.role;
        loop {
            if let Some((packet, used)) = decode(&self.buf).map_err(|e| {
                anyhow!(
                    "{role}: malformed packet from the broker while waiting for {waiting_for}: {e}"
                )
            })? {
                self.buf.drain(..used);
                return Ok(packet);
            }
            let left = self.deadline.remaining(role, waiting_for)?;
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    bail!("{role}: connection closed by the broker while waiting for {waiting_for}")
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    bail!(self.deadline.timed_out(role, waiting_for))
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    bail!("{role}: connection reset by the broker while waiting for {waiting_for}")
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("{role}: reading while waiting for {waiting_for}")
                    })
                }
            }
        }
    }

    fn unexpected(&self, waiting_for: &str, got: &Packet) -> String {
        format!(
            "{}: expected {waiting_for}, got {}",
            self.role,
            got.describe()
        )
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Unique enough across processes and calls for client ids and topics.
fn unique_token() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (u64::from(std::process::id()) << 40)
        ^ CALLS.fetch_add(1, Ordering::Relaxed)
}

fn connack_meaning(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorised",
        _ => "not defined by MQTT 3.1.1",
    }
}

// ---- codec ------------------------------------------------------------------

/// The largest remaining length four bytes can carry.
const MAX_REMAINING_LENGTH: usize = 268_435_455;

const DISCONNECT: [u8; 2] = [0xe0, 0x00];

fn encode_remaining_length(mut len: usize, out: &mut Vec<u8>) {
    assert!(len <= MAX_REMAINING_LENGTH, "MQTT packet too long: {len}");
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        if len == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `Ok(None)`: more bytes needed; `Ok(Some((length, bytes it took)))`.
fn decode_remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut value = 0;
    for (i, &byte) in buf.iter().enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
        if i == 3 {
            return Err("remaining length longer than 4 bytes".into());
        }
    }
    Ok(None)
}

fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    encode_remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// CONNECT, protocol level 4, clean session, keep alive 60 s, no will or credentials.
fn connect(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    put_str(&mut body, client_id);
    packet(0x10, &body)
}

/// SUBSCRIBE to one topic at QoS 1.
fn subscribe(packet_id: u16, topic: &str) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    put_str(&mut body, topic);
    body.push(1);
    packet(0x82, &body)
}

/// PUBLISH at QoS 1, not retained, not a duplicate.
fn publish(packet_id: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic);
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

fn puback(packet_id: u16) -> Vec<u8> {
    packet(0x40, &packet_id.to_be_bytes())
}

/// A packet a broker sends a client.
#[derive(Debug, Clone, PartialEq)]
enum Packet {
    ConnAck {
        return_code: u8,
    },
    SubAck {
        packet_id: u16,
        granted: Vec<u8>,
    },
    PubAck {
        packet_id: u16,
    },
    Publish {
        qos: u8,
        packet_id: Option<u16>,
        topic: String,
        payload: Vec<u8>,
    },
    /// Well framed, but nothing this client expects (PINGRESP, PUBREC, ...).
    Other {
        packet_type: u8,
    },
}

impl Packet {
    fn describe(&self) -> String {
        const NAMES: [&str; 16] = [
            "reserved type 0",
            "CONNECT",
            "CONNACK",
            "PUBLISH",
            "PUBACK",
            "PUBREC",
            "PUBREL",
            "PUBCOMP",
            "SUBSCRIBE",
            "SUBACK",
            "UNSUBSCRIBE",
            "UNSUBACK",
            "PINGREQ",
            "PINGRESP",
            "DISCONNECT",
            "reserved type 15",
        ];
        match self {
            Packet::ConnAck { return_code } => format!("CONNACK (return code {return_code})"),
            Packet::SubAck { packet_id, .. } => format!("SUBACK (packet id {packet_id})"),
            Packet::PubAck { packet_id } => format!("PUBACK (packet id {packet_id})"),
            Packet::Publish { topic, .. } => format!("PUBLISH on {topic:?}"),
            Packet::Other { packet_type } => NAMES[usize::from(*packet_type & 0x0f)].to_string(),
        }
    }
}

/// One packet from the front of `buf`: `Ok(None)` until it is all there,
/// then the packet and how many bytes it took.
fn decode(buf: &[u8]) -> Result<Option<(Packet, usize)>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((len, len_bytes)) = decode_remaining_length(&buf[1..])? else {
        return Ok(None);
    };
    let start = 1 + len_bytes;
    let Some(body) = buf.get(start..start + len) else {
        return Ok(None);
    };
    let u16_at = |at: usize| -> Result<u16, String> {
        body.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("{len}-byte body too short"))
    };
    let packet = match first >> 4 {
        2 if len == 2 => Packet::ConnAck {
            return_code: body[1],
        },
        2 => return Err(format!("CONNACK with a {len}-byte body, expected 2")),
        4 if len == 2 => Packet::PubAck {
            packet_id: u16_at(0)?,
        },
        4 => return Err(format!("PUBACK with a {len}-byte body, expected 2")),
        9 if len >= 3 => Packet::SubAck {
            packet_id: u16_at(0)?,
            granted: body[2..].to_vec(),
        },
        9 => {
            return Err(format!(
                "SUBACK with a {len}-byte body, expected at least 3"
            ))
        }
        3 => {
            let qos = (first >> 1) & 0x03;
            if qos == 3 {
                return Err("PUBLISH with QoS 3".into());
            }
            let topic_len = usize::from(u16_at(0).map_err(|e| format!("PUBLISH: {e}"))?);
            let topic = body.get(2..2 + topic_len).ok_or_else(|| {
                format!("PUBLISH: topic of {topic_len} bytes in a {len}-byte body")
            })?;
            let topic = String::from_utf8(topic.to_vec())
                .map_err(|_| "PUBLISH: topic is not UTF-8".to_string())?;
            let mut at = 2 + topic_len;
            let packet_id = if qos > 0 {
                at += 2;
                Some(u16_at(at - 2).map_err(|e| format!("PUBLISH: no packet id: {e}"))?)
            } else {
                None
            };
            Packet::Publish {
                qos,
                packet_id,
                topic,
                payload: body[at..].to_vec(),
            }
        }
        packet_type => Packet::Other { packet_type },
    };
    Ok(Some((packet, start + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::TcpListener;
    use std::thread::JoinHandle;

    /// A scripted broker on a loopback port, run in a thread.
    fn fake_broker<T: Send + 'static>(
        script: impl FnOnce(TcpListener) -> T + Send + 'static,
    ) -> (SocketAddr, JoinHandle<T>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, std::thread::spawn(move || script(listener)))
    }

    fn accept(listener: &TcpListener) -> TcpStream {
        let (s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        // A broken client must not hang the test.
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// One whole packet as the broker reads it: (first byte, body).
    fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut first = [0u8; 1];
        s.read_exact(&mut first).unwrap();
        let mut len = Vec::new();
        let (n, _) = loop {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            len.push(b[0]);
            if let Some(decoded) = decode_remaining_length(&len).unwrap() {
                break decoded;
            }
        };
        let mut body = vec![0; n];
        s.read_exact(&mut body).unwrap();
        (first[0], body)
    }

    /// Writes a packet one byte per write, so the client sees it in pieces.
    fn write_split(s: &mut TcpStream, bytes: &[u8]) {
        for b in bytes {
            s.write_all(&[*b]).unwrap();
        }
    }

    /// `(string, offset after it)` at `at` in a packet body.
    fn str_at(body: &[u8], at: usize) -> (String, usize) {
        let n = usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
        (
            String::from_utf8(body[at + 2..at + 2 + n].to_vec()).unwrap(),
            at + 2 + n,
        )
    }

    /// Checks a CONNECT (3.1.1, clean session) and answers CONNACK `code`; returns the client id.
    fn handshake(s: &mut TcpStream, code: u8) -> String {
        let (first, body) = read_frame(s);
        assert_eq!(first, 0x10);
        // Protocol name "MQTT", level 4, flags: clean session only.
        assert_eq!(body[..8], [0, 4, b'M', b'Q', b'T', b'T', 4, 0x02]);
        let (client_id, end) = str_at(&body, 10);
        assert_eq!(end, body.len());
        write_split(s, &[0x20, 0x02, 0x00, code]);
        client_id
    }

    /// SUBSCRIBE read and checked (one filter at QoS 1): (packet id, topic).
    fn read_subscribe(s: &mut TcpStream) -> ([u8; 2], String) {
        let (first, body) = read_frame(s);
        assert_eq!(first, 0x82);
        let (topic, at) = str_at(&body, 2);
        assert_eq!(body[at..], [1]);
        ([body[0], body[1]], topic)
    }

    #[test]
    fn round_trip_against_a_well_behaved_fake() {
        let (addr, broker) = fake_broker(|listener| {
            let mut sub = accept(&listener);
            let sub_id = handshake(&mut sub, 0);
            let (sub_packet_id, topic) = read_subscribe(&mut sub);
            write_split(
                &mut sub,
                &[0x90, 0x03, sub_packet_id[0], sub_packet_id[1], 0x01],
            );

            let mut publ = accept(&listener);
            let pub_id = handshake(&mut publ, 0);
            assert_ne!(sub_id, pub_id);
            assert!(sub_id.len() <= 23 && sub_id.bytes().all(|b| b.is_ascii_alphanumeric()));
            let (first, body) = read_frame(&mut publ);
            assert_eq!(first, 0x32, "PUBLISH QoS 1, no DUP, no RETAIN");
            let (pub_topic, at) = str_at(&body, 0);
            assert_eq!(pub_topic, topic);
            let pub_packet_id = [body[at], body[at + 1]];
            let payload = body[at + 2..].to_vec();

            // Forwarded with the broker's own packet id 7, in pieces.
            write_split(&mut sub, &publish(7, &topic, &payload));
            write_split(&mut publ, &[0x40, 0x02, pub_packet_id[0], pub_packet_id[1]]);
            assert_eq!(read_frame(&mut sub), (0x40, vec![0, 7]), "PUBACK for 7");
            assert_eq!(read_frame(&mut publ), (0xe0, vec![]));
            assert_eq!(read_frame(&mut sub), (0xe0, vec![]));
            (topic, payload)
        });
        let rt = mqtt_round_trip(addr, Duration::from_secs(5)).unwrap();
        let (topic, payload) = broker.join().expect("fake broker checks");
        assert!(topic.starts_with("xtask/smoke/"), "{topic}");
        assert!(!payload.is_empty());
        for ms in [rt.connect_ms, rt.round_trip_ms] {
            assert!(ms > 0.0 && ms < 5_000.0, "{rt:?}");
        }
    }

    #[test]
    fn connack_refusal_names_the_reason() {
        let (addr, broker) = fake_broker(|listener| {
            let mut s = accept(&listener);
            handshake(&mut s, 5);
        });
        let err = mqtt_round_trip(addr, Duration::from_secs(5)).unwrap_err();
        broker.join().unwrap();
        assert_eq!(
            err.to_string(),
            "subscriber: CONNACK return code 5 (not authorised)"
        );
    }

    #[test]
    fn missing_suback_times_out_naming_suback() {
        let (addr, broker) = fake_broker(|listener| {
            let mut s = accept(&listener);
            handshake(&mut s, 0);
            read_subscribe(&mut s);
            // Hold the connection open until the client gives up.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            rest
        });
        let started = Instant::now();
        let err = mqtt_round_trip(addr, Duration::from_millis(500)).unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            err.to_string(),
            "subscriber: timed out after 500 ms waiting for SUBACK"
        );
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(
            broker.join().unwrap(),
            Vec::<u8>::new(),
            "nothing after SUBSCRIBE"
        );
    }

    #[test]
    fn unexpected_packets_and_closed_connections_are_named() {
        let (addr, broker) = fake_broker(|listener| {
            let mut s = accept(&listener);
            handshake(&mut s, 0);
            read_subscribe(&mut s);
            s.write_all(&[0xd0, 0x00]).unwrap();
        });
        let err = mqtt_round_trip(addr, Duration::from_secs(5)).unwrap_err();
        broker.join().unwrap();
        assert_eq!(err.to_string(), "subscriber: expected SUBACK, got PINGRESP");

        let (addr, broker) = fake_broker(|listener| {
            let mut s = accept(&listener);
            handshake(&mut s, 0);
            let (id, _) = read_subscribe(&mut s);
            s.write_all(&[0x90, 0x03, id[0], id[1], 0x01]).unwrap();
            let mut publ = accept(&listener);
            handshake(&mut publ, 0);
            read_frame(&mut publ);
            // Both connections close here without PUBLISH or PUBACK.
        });
        let err = mqtt_round_trip(addr, Duration::from_secs(5)).unwrap_err();
        broker.join().unwrap();
        let err = err.to_string();
        assert!(
            err.starts_with("subscriber: connection")
                && err.ends_with("by the broker while waiting for the PUBLISH"),
            "{err}"
        );
    }

    #[test]
    fn suback_refusal_is_an_error() {
        let (addr, broker) = fake_broker(|listener| {
            let mut s = accept(&listener);
            handshake(&mut s, 0);
            let (id, _) = read_subscribe(&mut s);
            s.write_all(&[0x90, 0x03, id[0], id[1], 0x80]).unwrap();
        });
        let err = mqtt_round_trip(addr, Duration::from_secs(5)).unwrap_err();
        broker.join().unwrap();
        assert!(err.to_string().contains("SUBACK granted [80]"), "{err}");
    }

    #[test]
    fn remaining_length_round_trips() {
        for (len, bytes) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (2_097_151, 3),
            (2_097_152, 4),
            (MAX_REMAINING_LENGTH, 4),
        ] {
            let mut out = Vec::new();
            encode_remaining_length(len, &mut out);
            assert_eq!(out.len(), bytes, "{len}");
            assert_eq!(
                decode_remaining_length(&out),
                Ok(Some((len, bytes))),
                "{len}"
            );
            assert_eq!(
                decode_remaining_length(&out[..bytes - 1]),
                Ok(None),
                "{len}"
            );
        }
        // 128 = 0x80 0x01; 268,435,455 = ff ff ff 7f.
        let mut out = Vec::new();
        encode_remaining_length(128, &mut out);
        assert_eq!(out, [0x80, 0x01]);
        assert!(decode_remaining_length(&[0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
        // Known malformed after four bytes, before any fifth arrives.
        assert!(decode_remaining_length(&[0x80, 0x80, 0x80, 0x80]).is_err());
    }

    #[test]
    fn decode_waits_for_whole_packets() {
        // PUBLISH QoS 1 (0x32), remaining length 9: topic "a/b", packet id 7, payload "hi".
        let publish = [
            0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'h', b'i',
        ];
        for n in 0..publish.len() {
            assert_eq!(decode(&publish[..n]), Ok(None), "{n} bytes");
        }
        let mut two = publish.to_vec();
        two.extend_from_slice(&[0x40, 0x02, 0x00, 0x07]); // PUBACK 7
        let expected = Packet::Publish {
            qos: 1,
            packet_id: Some(7),
            topic: "a/b".into(),
            payload: b"hi".to_vec(),
        };
        assert_eq!(decode(&two), Ok(Some((expected, publish.len()))));
        assert_eq!(
            decode(&two[publish.len()..]),
            Ok(Some((Packet::PubAck { packet_id: 7 }, 4)))
        );
        assert_eq!(
            decode(&[0x20, 0x02, 0x01, 0x00]),
            Ok(Some((Packet::ConnAck { return_code: 0 }, 4)))
        );
        assert_eq!(
            decode(&[0xd0, 0x00]),
            Ok(Some((Packet::Other { packet_type: 13 }, 2)))
        );
        // Malformed: QoS 3, a 3-byte CONNACK, a topic longer than the body.
        assert!(decode(&[0x36, 0x03, 0x00, 0x01, b'a']).is_err());
        assert!(decode(&[0x20, 0x03, 0x00, 0x00, 0x00]).is_err());
        assert!(decode(&[0x30, 0x03, 0x00, 0x09, b'a']).is_err());
    }

    #[test]
    fn round_trip_against_mosquitto() {
        if crate::infra::launcher::which("mosquitto").is_none() {
            assert!(
                std::env::var_os("XTASK_REQUIRE_MOSQUITTO").is_none(),
                "XTASK_REQUIRE_MOSQUITTO is set but mosquitto is not installed (not on PATH nor in /usr/sbin): install the Debian package `mosquitto`"
            );
            println!("skipped: mosquitto not installed (Debian package mosquitto)");
            return;
        }
        let dir =
            std::env::temp_dir().join(format!("xtask-smoke-mosquitto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = crate::infra::launcher::start_mosquitto(&dir).unwrap();
        let addr: SocketAddr = broker.address().parse().unwrap();
        let result = mqtt_round_trip(addr, Duration::from_secs(10));
        broker.stop();
        std::fs::remove_dir_all(&dir).unwrap();
        let rt = result.unwrap();
        assert!(rt.connect_ms > 0.0 && rt.round_trip_ms > 0.0, "{rt:?}");
        assert!(rt.round_trip_ms < 10_000.0, "{rt:?}");
    }
}
