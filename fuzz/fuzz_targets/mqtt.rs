//! MQTT 3.1 / 3.1.1 / 5.0 packet decoding, as a connection reads its input:
//! `codec::decode` in a loop over one buffer. The first byte picks the
//! negotiated version (0: 3.1, 1: 3.1.1, 2: 5.0); the rest is the stream.
//! A CONNECT switches the version, as the connection does. Every packet
//! decoded must encode again and decode back to itself.
#![no_main]

use broker::mqtt::codec;
use broker::mqtt::packet::{Packet, ProtocolVersion};
use broker_fuzz::{peak_during, Counting, Factor};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Decoded packets borrow their payloads from the frame (zero copy); the
/// rest is per-element structs (a SUBSCRIBE filter of 1 byte takes 4 on the
/// wire and a `Subscription` plus its `String` in memory).
const FACTOR: Factor = Factor {
    k: 32,
    c: 4096,
    enforce: true,
};
const MAX_PACKET: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let mut version = match selector % 3 {
        0 => ProtocolVersion::V31,
        1 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    };
    let mut buf = BytesMut::from(stream);
    // Each successful decode consumes at least the 2-byte fixed header.
    for _ in 0..=stream.len() / 2 {
        let before = buf.len();
        let (result, peak) = peak_during(|| codec::decode(&mut buf, version, MAX_PACKET));
        match result {
            Ok(Some(packet)) => {
                FACTOR.check("mqtt decode", before - buf.len(), peak);
                // CONNECT carries its own level, which the connection adopts.
                if let Packet::Connect(c) = &packet {
                    version = c.protocol;
                }
                let mut wire = BytesMut::new();
                codec::encode(&packet, version, &mut wire);
                if wire.is_empty() {
                    // AUTH below 5.0 is not written at all.
                    continue;
                }
                let again = codec::decode(&mut wire, version, usize::MAX)
                    .unwrap_or_else(|e| panic!("{packet:?} encodes to bytes that fail: {e}"));
                assert_eq!(
                    again.as_ref(),
                    Some(&packet),
                    "re-encoding changed the packet"
                );
                assert!(wire.is_empty(), "re-encoding left bytes over");
            }
            Ok(None) => break,
            Err(_) => {
                FACTOR.check("mqtt decode (refused)", before, peak);
                break;
            }
        }
    }
});
