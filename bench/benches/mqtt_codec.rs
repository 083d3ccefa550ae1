//! MQTT packet decode and encode: CONNECT, PUBLISH at 64 B / 1 KiB / 64 KiB,
//! SUBSCRIBE, through `broker::mqtt::codec`, the functions the connection loop calls.

use std::hint::black_box;

use broker::fixtures::mqtt as fx;
use broker::mqtt::codec;
use broker::mqtt::packet::{Packet, ProtocolVersion};
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const MAX_PACKET: usize = 1 << 20;

fn cases() -> Vec<(String, Packet)> {
    let v = ProtocolVersion::V5;
    vec![
        ("connect".into(), fx::connect(v)),
        ("publish_64B".into(), fx::publish(64, v)),
        ("publish_1KiB".into(), fx::publish(1024, v)),
        ("publish_64KiB".into(), fx::publish(64 * 1024, v)),
        ("subscribe_10".into(), fx::subscribe(10, v)),
    ]
}

fn decode(c: &mut Criterion) {
    let v = ProtocolVersion::V5;
    let mut group = c.benchmark_group("mqtt_decode");
    for (name, packet) in cases() {
        let wire = fx::wire(&packet, v);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(&name), &wire, |b, wire| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| black_box(codec::decode(buf, v, MAX_PACKET).unwrap()),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let v = ProtocolVersion::V5;
    let mut group = c.benchmark_group("mqtt_encode");
    for (name, packet) in cases() {
        let len = fx::wire(&packet, v).len();
        group.throughput(Throughput::Bytes(len as u64));
        let mut out = BytesMut::with_capacity(len);
        group.bench_with_input(BenchmarkId::from_parameter(&name), &packet, |b, packet| {
            b.iter(|| {
                out.clear();
                black_box(codec::encode(packet, v, &mut out))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
