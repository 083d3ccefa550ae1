//! Kafka request decoding, as a connection does it: `codec::next_frame`
//! splits size-prefixed frames off the stream and `kafka::decode_request`
//! decodes the header and body of every API and version the broker serves
//! (the same `codec` calls `dispatch::handle` makes).
//!
//! First byte even: the rest is the raw stream. Odd: the rest is one frame
//! without its size prefix (so the fuzzer need not guess sizes).
#![no_main]

use broker::kafka::codec;
use broker_fuzz::{peak_during, Counting, Factor};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Every element of a request array is a struct of 50-120 bytes while its
/// encoding may be 1-4 bytes: a 75-byte frame took 6,864 bytes (91x) on the
/// first run. Bounding element counts by their minimum encoded size is being
/// done in vendor/kafka-protocol; until it lands the factor is reported (each
/// new worst on stderr), not enforced (`BROKER_FUZZ_ALLOC=strict` enforces it).
const FACTOR: Factor = Factor {
    k: 32,
    c: 4096,
    enforce: false,
};
/// The broker's default `kafka.max_frame_bytes`.
const MAX_FRAME: usize = 100 * 1024 * 1024;

fn decode(frame: Bytes) {
    let received = frame.len() + 4;
    let (_, peak) = peak_during(|| {
        let _ = broker::kafka::decode_request(frame);
    });
    FACTOR.check("kafka request", received, peak);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 1 {
        if rest.len() >= codec::FIXED_HEADER_LEN {
            decode(Bytes::copy_from_slice(rest));
        }
        return;
    }
    let mut buf = BytesMut::from(rest);
    for _ in 0..=rest.len() / 12 {
        match codec::next_frame(&mut buf, MAX_FRAME) {
            Ok(Some(frame)) => decode(frame),
            Ok(None) | Err(_) => break,
        }
    }
});
