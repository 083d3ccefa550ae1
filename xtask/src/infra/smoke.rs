//! The smoke round trip against a broker we just started (natively or under
//! qemu-user): connect / subscribe / publish / receive through rumqttc, the
//! load generator's MQTT client, with every wait bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rumqttc::{
    Client, Connection, ConnectionError, Event, MqttOptions, Packet, QoS, SubscribeReasonCode,
};
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
/// PUBLISHes a unique payload at QoS 1, waits for the subscriber to receive exactly that
/// payload on that topic (rumqttc PUBACKs it) and for the publisher's PUBACK, then
/// DISCONNECTs both. Every wait is bounded by `timeout` overall; errors say which step
/// failed and what came back (e.g. "CONNACK return code 5 (not authorised)", "timed out
/// after 10 s waiting for SUBACK", "connection closed by the broker while waiting for PUBACK").
pub fn mqtt_round_trip(addr: SocketAddr, timeout: Duration) -> Result<RoundTrip> {
    let deadline = Deadline {
        at: Instant::now() + timeout,
        timeout,
    };
    let token = unique_token();
    let topic = format!("xtask/smoke/{token:016x}");
    let payload = format!("xtask smoke round trip {token:016x}").into_bytes();

    let (mut sub, connect_ms) =
        Session::connect("subscriber", addr, &format!("xtsub{token:016x}"), deadline)?;
    sub.client
        .subscribe(&topic, QoS::AtLeastOnce)
        .context("subscriber: cannot queue SUBSCRIBE")?;
    match sub.next("SUBACK")? {
        Packet::SubAck(ack)
            if ack.return_codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)] => {}
        Packet::SubAck(ack) => {
            let granted: Vec<u8> = ack
                .return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReasonCode::Success(q) => *q as u8,
                    SubscribeReasonCode::Failure => 0x80,
                })
                .collect();
            bail!("subscriber: SUBACK granted {granted:02x?} for topic {topic:?}, expected [01] (QoS 1; 80 = refused)")
        }
        other => bail!(sub.unexpected("SUBACK", &other)),
    }

    let (mut publisher, _) =
        Session::connect("publisher", addr, &format!("xtpub{token:016x}"), deadline)?;
    publisher
        .client
        .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
        .context("publisher: cannot queue PUBLISH")?;
    // Sends the PUBLISH; its PUBACK is read after the subscriber got the
    // message, so the round trip is timed when the message arrives.
    publisher.sent("PUBLISH")?;
    let sent = Instant::now();
    match sub.next("the PUBLISH")? {
        Packet::Publish(p) => {
            if p.topic != topic || p.payload[..] != payload[..] {
                bail!(
                    "subscriber: received {} bytes on {:?}, expected the {} bytes published on {topic:?}",
                    p.payload.len(),
                    p.topic,
                    payload.len()
                );
            }
            if p.qos != QoS::AtLeastOnce {
                bail!(
                    "subscriber: message delivered at QoS {}, expected 1 (subscribed and published at 1)",
                    p.qos as u8
                );
            }
        }
        other => bail!(sub.unexpected("the PUBLISH", &other)),
    }
    let round_trip_ms = millis(sent.elapsed());
    // rumqttc answers the PUBLISH with a PUBACK; it goes out with the next poll.
    sub.sent("PUBACK")?;
    match publisher.next("PUBACK")? {
        Packet::PubAck(_) => {}
        other => bail!(publisher.unexpected("PUBACK", &other)),
    }
    publisher.disconnect()?;
    sub.disconnect()?;
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

/// One rumqttc connection, polled by hand so every wait has the deadline.
struct Session {
    role: &'static str,
    client: Client,
    connection: Connection,
    deadline: Deadline,
    /// The connection ended after packets still to be handed out.
    closed: Option<ConnectionError>,
}

impl Session {
    /// CONNECT (MQTT 3.1.1, clean session), CONNACK accepted; returns the
    /// CONNECT → CONNACK time (ms).
    fn connect(
        role: &'static str,
        addr: SocketAddr,
        client_id: &str,
        deadline: Deadline,
    ) -> Result<(Session, f64)> {
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_clean_session(true);
        options.set_keep_alive(Duration::from_secs(60));
        let (client, connection) = Client::new(options, 10);
        let mut session = Session {
            role,
            client,
            connection,
            deadline,
            closed: None,
        };
        let started = Instant::now();
        match session.next("CONNACK")? {
            Packet::ConnAck(_) => {}
            other => bail!(session.unexpected("CONNACK", &other)),
        }
        Ok((session, millis(started.elapsed())))
    }

    /// The next event, or why there is none.
    fn poll(&mut self, waiting_for: &str) -> Result<Event> {
        let role = self.role;
        // Packets read in the same batch as the end of the connection wait
        // here; they came before it and are what the broker said last.
        if let Some(event) = self.connection.eventloop.state.events.pop_front() {
            return Ok(event);
        }
        if let Some(e) = self.closed.take() {
            return Err(self.closed_error(waiting_for, e));
        }
        let left = self.deadline.remaining(role, waiting_for)?;
        match self.connection.recv_timeout(left) {
            Ok(Ok(event)) => Ok(event),
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                let code = code as u8;
                bail!(
                    "{role}: CONNACK return code {code} ({})",
                    connack_meaning(code)
                )
            }
            Ok(Err(e)) => match self.connection.eventloop.state.events.pop_front() {
                Some(event) => {
                    self.closed = Some(e);
                    Ok(event)
                }
                None => Err(self.closed_error(waiting_for, e)),
            },
            Err(_) => bail!(self.deadline.timed_out(role, waiting_for)),
        }
    }

    fn closed_error(&self, waiting_for: &str, e: ConnectionError) -> anyhow::Error {
        let how = match &e {
            ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset => "reset",
            _ => "closed",
        };
        anyhow::anyhow!(
            "{}: connection {how} by the broker while waiting for {waiting_for}",
            self.role
        )
    }

    /// The next packet from the broker (what the client sends is skipped).
    fn next(&mut self, waiting_for: &str) -> Result<Packet> {
        loop {
            if let Event::Incoming(packet) = self.poll(waiting_for)? {
                return Ok(packet);
            }
        }
    }

    /// Polls until the client has sent `what`; incoming packets meanwhile
    /// are unexpected.
    fn sent(&mut self, what: &str) -> Result<()> {
        let waiting_for = format!("{what} to be sent");
        loop {
            match self.poll(&waiting_for)? {
                Event::Outgoing(o) if outgoing_name(&o) == what => return Ok(()),
                Event::Outgoing(_) => {}
                Event::Incoming(p) => bail!(self.unexpected(&waiting_for, &p)),
            }
        }
    }

    fn disconnect(&mut self) -> Result<()> {
        self.client
            .disconnect()
            .with_context(|| format!("{}: cannot queue DISCONNECT", self.role))?;
        self.sent("DISCONNECT")
    }

    fn unexpected(&self, waiting_for: &str, got: &Packet) -> String {
        format!(
            "{}: expected {waiting_for}, got {}",
            self.role,
            describe(got)
        )
    }
}

fn outgoing_name(o: &rumqttc::Outgoing) -> &'static str {
    match o {
        rumqttc::Outgoing::Publish(_) => "PUBLISH",
        rumqttc::Outgoing::PubAck(_) => "PUBACK",
        rumqttc::Outgoing::Disconnect => "DISCONNECT",
        _ => "other",
    }
}

/// A packet's name as MQTT spells it.
fn describe(p: &Packet) -> String {
    match p {
        Packet::ConnAck(a) => format!("CONNACK ({:?})", a.code),
        Packet::SubAck(_) => "SUBACK".into(),
        Packet::Publish(p) => format!("PUBLISH on {:?}", p.topic),
        Packet::PubAck(_) => "PUBACK".into(),
        Packet::PingResp => "PINGRESP".into(),
        other => format!("{other:?}"),
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread::JoinHandle;

    use super::*;

    // The broker side of the fake: enough of the MQTT codec to script it.
    /// The largest remaining length four bytes can carry.
    const MAX_REMAINING_LENGTH: usize = 268_435_455;

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

    /// PUBLISH at QoS 1, not retained, not a duplicate.
    fn publish(packet_id: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, topic);
        body.extend_from_slice(&packet_id.to_be_bytes());
        body.extend_from_slice(payload);
        packet(0x32, &body)
    }

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

    /// Opts out of the mosquitto round trip on a machine without mosquitto.
    const SKIP_MOSQUITTO_VAR: &str = "XTASK_SKIP_MOSQUITTO";

    /// What to do without mosquitto: fail, saying how to install it, unless
    /// `skip` (the opt-out variable) is `1`; then the note that says so.
    fn mosquitto_absent(skip: Option<&std::ffi::OsStr>) -> Result<String, String> {
        match skip {
            Some(v) if v == "1" => Ok(format!(
                "NOT CHECKED: the mosquitto round trip did not run ({SKIP_MOSQUITTO_VAR}=1 and mosquitto is not installed)"
            )),
            _ => Err(format!(
                "mosquitto is not installed (not on PATH nor in /usr/sbin): install the Debian package \
                 (apt-get install mosquitto; cargo xtask ci's tools step does), or set \
                 {SKIP_MOSQUITTO_VAR}=1 to run without this check"
            )),
        }
    }

    #[test]
    fn without_mosquitto_the_round_trip_fails_unless_skipped_on_purpose() {
        let why = mosquitto_absent(None).unwrap_err();
        assert!(
            why.contains("apt-get install mosquitto") && why.contains(SKIP_MOSQUITTO_VAR),
            "{why}"
        );
        assert!(mosquitto_absent(Some("0".as_ref())).is_err());
        let note = mosquitto_absent(Some("1".as_ref())).unwrap();
        assert!(note.starts_with("NOT CHECKED:"), "{note}");
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

    /// Against the real mosquitto, which `cargo xtask ci` installs: without
    /// it this test fails, unless `XTASK_SKIP_MOSQUITTO=1` says on purpose
    /// that it may not run, and then it prints that it checked nothing.
    #[test]
    fn round_trip_against_mosquitto() {
        if crate::infra::launcher::which("mosquitto").is_none() {
            match mosquitto_absent(std::env::var_os(SKIP_MOSQUITTO_VAR).as_deref()) {
                Ok(note) => {
                    println!("{note}");
                    return;
                }
                Err(why) => panic!("{why}"),
            }
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
