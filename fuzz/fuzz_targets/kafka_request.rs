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

/// The broker decodes a request within `codec::decode_allowance`: array
/// storage of at most 16x the frame (2x for Produce) plus 16 KiB, element
/// counts bounded by their smallest encoding in vendor/kafka-protocol. The
/// factor checked here is that allowance plus room for what is not array
/// storage (the header's client id, an error message): 18x + 20 KiB.
const FACTOR: Factor = Factor {
    k: broker::kafka::codec::DECODE_FACTOR + 2,
    c: broker::kafka::codec::DECODE_ALLOWANCE_BASE + 4096,
    enforce: true,
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
