//! AMQP 0.9.1 publishes off the wire: frame split and decode
//! (`amqp::codec::next_frame`, with amq-protocol parsing method and content
//! header) and content assembly (`amqp::content::PendingContent`), the two
//! steps the connection loop runs for every `basic.publish`.

use std::hint::black_box;

use broker::amqp::codec::{next_frame, Frame};
use broker::amqp::content::{Content, PendingContent};
use broker::fixtures::amqp as fx;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

/// The broker's default frame_max, and the protocol minimum most
/// constrained clients use.
const FRAME_MAX_DEFAULT: u32 = 131_072;
const FRAME_MAX_SMALL: u32 = 4096;

/// (label, body size, frame_max)
const CASES: [(&str, usize, u32); 4] = [
    ("64B", 64, FRAME_MAX_DEFAULT),
    ("1KiB", 1024, FRAME_MAX_DEFAULT),
    ("64KiB", 64 * 1024, FRAME_MAX_DEFAULT),
    ("64KiB_frame_max_4KiB", 64 * 1024, FRAME_MAX_SMALL),
];

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Parses every frame of one publish; returns how many there were.
fn parse_all(wire: &mut BytesMut, frame_max: u32) -> usize {
    let mut n = 0;
    while let Some(frame) = next_frame(wire, frame_max).unwrap() {
        black_box(frame);
        n += 1;
    }
    n
}

/// Parses and assembles one publish, as the connection's frame handler does.
fn assemble(wire: &mut BytesMut, frame_max: u32) -> Content {
    let mut pending = None;
    while let Some(frame) = next_frame(wire, frame_max).unwrap() {
        match frame {
            Frame::Method(_, m) => pending = Some(PendingContent::new(fx::as_publish(m))),
            Frame::Header(_, h) => {
                let p = pending.as_mut().expect("method first");
                if p.on_header(h.class_id, h.body_size, h.properties, u64::MAX)
                    .unwrap()
                {
                    return pending.take().unwrap().finish();
                }
            }
            Frame::Body(_, part) => {
                if pending
                    .as_mut()
                    .expect("header first")
                    .on_body(part)
                    .unwrap()
                {
                    return pending.take().unwrap().finish();
                }
            }
            Frame::Heartbeat(_) => {}
        }
    }
    panic!("fixture publish did not complete")
}

/// One group over every case, each iteration running `run` on a fresh copy of
/// the wire bytes (parsing consumes the buffer).
fn over_cases<R>(c: &mut Criterion, group: &str, run: fn(&mut BytesMut, u32) -> R) {
    let mut group = c.benchmark_group(group);
    for (label, len, frame_max) in CASES {
        let wire = fx::publish_frames(1, &body(len), frame_max);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &wire, |b, wire| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| run(buf, frame_max),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    over_cases(c, "amqp_frame_parse", parse_all);
}

fn content(c: &mut Criterion) {
    over_cases(c, "amqp_content_assembly", assemble);
}

criterion_group!(benches, parse, content);
criterion_main!(benches);
