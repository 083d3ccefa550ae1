//! Topic-name matching in the subscription trie (`SubscriptionTree`, what
//! every MQTT publish goes through) against 1k and 100k subscriptions of one
//! kind: exact filters, `+`, `#` and shared (`$share/...`) ones.

use std::hint::black_box;

use broker::core::topic::Matched;
use broker::fixtures::topics::{self as fx, FilterKind};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Topic names cycled through per iteration batch, so one hot path does not
/// sit in cache alone.
const TOPICS: usize = 64;

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_match");
    group.throughput(Throughput::Elements(TOPICS as u64));
    for n in [1_000, 100_000] {
        for kind in FilterKind::ALL {
            let tree = fx::tree(kind, n);
            let topics = fx::topics(kind, n, TOPICS);
            let id = BenchmarkId::new(kind.name(), format!("{}k_subs", n / 1000));
            group.bench_function(id, |b| {
                b.iter(|| {
                    let mut hits = 0usize;
                    for topic in &topics {
                        tree.for_each_match(black_box(topic), |m| {
                            hits += match m {
                                Matched::Direct(..) => 1,
                                Matched::Shared(g) => g.members.len(),
                            }
                        });
                    }
                    hits
                })
            });
        }
    }
    group.finish();
}

fn insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_subscribe");
    let n = 1_000;
    group.throughput(Throughput::Elements(n as u64));
    for kind in FilterKind::ALL {
        group.bench_function(BenchmarkId::new(kind.name(), "1k_subs"), |b| {
            b.iter(|| black_box(fx::tree(kind, n)).len())
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, insert);
criterion_main!(benches);
