//! Kafka record batches (magic 2, CRC32C): what a produce request costs the
//! broker (`storage::batch::validate_batches`: header parse and CRC32C of each
//! batch), and full record encode and decode with the `kafka-protocol` crate
//! the broker uses for its wire format.

use std::hint::black_box;

use broker::fixtures::kafka as fx;
use broker::storage::batch;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::RecordBatchDecoder;

/// (label, records per batch, value size): a small batch of events, a
/// typical linger-filled batch, and a batch of large values.
const SHAPES: [(&str, usize, usize); 3] = [
    ("10x100B", 10, 100),
    ("100x1KiB", 100, 1024),
    ("16x64KiB", 16, 64 * 1024),
];

fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("kafka_batch_validate");
    for (label, count, len) in SHAPES {
        let wire = fx::encode(&fx::sized_records(count, len));
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &wire, |b, wire| {
            b.iter(|| black_box(batch::validate_batches(black_box(wire)).unwrap()))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("kafka_batch_encode");
    for (label, count, len) in SHAPES {
        let records = fx::sized_records(count, len);
        group.throughput(Throughput::Bytes(fx::encode(&records).len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(label),
            &records,
            |b, records| b.iter(|| black_box(fx::encode(records))),
        );
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("kafka_batch_decode");
    for (label, count, len) in SHAPES {
        let wire = fx::encode(&fx::sized_records(count, len)).freeze();
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &wire, |b, wire| {
            b.iter(|| {
                let mut buf = wire.clone();
                black_box(RecordBatchDecoder::decode(&mut buf).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, validate, encode, decode);
criterion_main!(benches);
