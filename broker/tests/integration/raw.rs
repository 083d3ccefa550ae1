//! Raw MQTT bytes over TCP (or any stream, TLS included), for what a
//! well-behaved client library will not send.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::WAIT;

pub async fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.expect("TCP connect");
    s.set_nodelay(true).unwrap();
    s
}

/// A length-prefixed UTF-8 string.
pub fn str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// Fixed header (with the remaining length as a variable byte integer) + body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// CONNECT for protocol level 4 (3.1.1) or 5, no will, no credentials,
/// no properties.
pub fn connect(level: u8, client_id: &str, clean: bool, keep_alive: u16) -> Vec<u8> {
    let mut body = str("MQTT");
    body.push(level);
    body.push(if clean { 0x02 } else { 0x00 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // property length
    }
    body.extend_from_slice(&str(client_id));
    packet(0x10, &body)
}

pub async fn send(s: &mut (impl AsyncRead + AsyncWrite + Unpin), bytes: &[u8]) {
    s.write_all(bytes).await.expect("raw write");
    // A TLS stream may hold the record until flushed.
    s.flush().await.expect("raw flush");
}

/// Reads one whole packet: (first byte, body). `None` when the peer closed
/// the connection (EOF or reset). Panics after `limit`.
pub async fn read_packet_within(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    limit: Duration,
) -> Option<(u8, Vec<u8>)> {
    timeout(limit, async {
        let mut first = [0u8; 1];
        match s.read(&mut first).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let mut len = 0usize;
        for shift in [0, 7, 14, 21] {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.ok()?;
            len |= usize::from(b[0] & 0x7F) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.ok()?;
        Some((first[0], body))
    })
    .await
    .expect("the broker answers (or closes) in time")
}

pub async fn read_packet(s: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> Option<(u8, Vec<u8>)> {
    read_packet_within(s, WAIT).await
}

/// Reads the next packet and checks its type (high nibble of the first byte).
pub async fn expect_packet(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    packet_type: u8,
) -> Vec<u8> {
    match read_packet(s).await {
        Some((first, body)) if first >> 4 == packet_type => body,
        other => panic!("expected packet type {packet_type}, got {other:x?}"),
    }
}

/// Asserts the broker closes the connection (after any packets it still sends).
pub async fn expect_closed(s: &mut (impl AsyncRead + AsyncWrite + Unpin)) {
    if let Some(p) = read_packet(s).await {
        panic!("expected the connection to be closed, got packet {p:x?}");
    }
}

/// The empty property list 5.0 puts in most packets; nothing in 3.1.1.
pub fn no_properties(level: u8) -> &'static [u8] {
    if level == 5 {
        &[0x00]
    } else {
        &[]
    }
}

/// SUBSCRIBE at protocol `level` for one filter, no properties.
pub fn subscribe(level: u8, packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend_from_slice(no_properties(level));
    body.extend_from_slice(&str(filter));
    body.push(qos);
    packet(0x82, &body)
}

/// PUBLISH at protocol `level` (the packet id only for QoS 1 and 2), no properties.
pub fn publish(level: u8, qos: u8, topic: &str, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = str(topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(no_properties(level));
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// A raw client at protocol `level` (4 or 5): CONNECT sent and a successful
/// CONNACK read.
pub async fn session(addr: SocketAddr, level: u8, id: &str, keep_alive: u16) -> TcpStream {
    let mut s = tcp(addr).await;
    send(&mut s, &connect(level, id, true, keep_alive)).await;
    let connack = expect_packet(&mut s, 2).await;
    if level == 5 {
        assert_eq!(connack[..2], [0x00, 0x00], "CONNACK accepted: {connack:x?}");
    } else {
        assert_eq!(connack, [0x00, 0x00], "CONNACK accepted");
    }
    s
}

/// Reads the broker's (5.0) DISCONNECT and returns its reason code.
pub async fn expect_disconnect(s: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> u8 {
    let body = expect_packet(s, 14).await;
    assert!(!body.is_empty(), "DISCONNECT with a reason code");
    body[0]
}

/// How the broker ends a connection at protocol `level`: a DISCONNECT with
/// `reason` then close in 5.0; close alone in 3.1.1, which has no server DISCONNECT.
pub async fn expect_server_close(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    level: u8,
    reason: u8,
) {
    if level == 5 {
        assert_eq!(expect_disconnect(s).await, reason);
    }
    expect_closed(s).await;
}

/// An MQTT 3.1.1 client subscribes and gets its own QoS 0 message back: the
/// bystander round trip of the hostile-input tests.
pub async fn mqtt_round_trip(addr: SocketAddr, id: &str) {
    let mut s = session(addr, 4, id, 30).await;
    send(&mut s, &subscribe(4, 1, "slots/echo", 0)).await;
    expect_packet(&mut s, 9).await;
    send(&mut s, &publish(4, 0, "slots/echo", 0, b"hello")).await;
    let publish = expect_packet(&mut s, 3).await;
    assert!(publish.ends_with(b"hello"), "{publish:x?}");
}
