//! AMQP 0.9.1 frame and method decoding, as a connection reads its input:
//! the protocol header (when the input starts with "AMQP"), then
//! `codec::next_client_frame` in a loop at the default frame_max. Method and
//! content-header payloads go through the server-method refusal, the
//! field-table depth guard and amq-protocol's parser.
#![no_main]

use broker::amqp::codec;
use broker_fuzz::{peak_during, Counting, Factor};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Field tables decode to maps of boxed values: an empty nested table is a
/// few bytes on the wire and a map node in memory.
const FACTOR: Factor = Factor {
    k: 32,
    c: 4096,
    enforce: true,
};
/// The broker's default `amqp.frame_max`.
const FRAME_MAX: u32 = 131_072;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    if data.starts_with(b"AMQP") && !matches!(codec::read_protocol_header(&mut buf), Ok(Some(()))) {
        return;
    }
    for _ in 0..=data.len() / 8 {
        let before = buf.len();
        let (result, peak) = peak_during(|| codec::next_client_frame(&mut buf, FRAME_MAX));
        match result {
            Ok(Some(_frame)) => FACTOR.check("amqp frame", before - buf.len(), peak),
            // An incomplete frame: the codec reserves room for the frame it
            // announces, bounded by frame_max (not by the bytes received).
            Ok(None) => break,
            Err(e) => {
                FACTOR.check("amqp frame (refused)", before, peak);
                // Every refusal maps to a connection.close the spec allows.
                let _ = e.connection_error();
                break;
            }
        }
    }
});
