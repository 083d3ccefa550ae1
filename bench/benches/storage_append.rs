//! The storage append path: a Kafka batch into the in-memory log and into
//! the on-disk segmented log (page cache, and with the fsync that acks=-1
//! costs), and one record into the AMQP durable-queue record log.
//!
//! Disk runs use a fresh log per criterion sample in a temporary directory,
//! so the benchmark never fills the disk.
//!
//! Every timed append includes copying the batch into its own `BytesMut`, as
//! the broker's produce path does (`kafka/topic.rs` copies each batch out of
//! the request before the log rewrites its base offset), in both groups.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use broker::fixtures::kafka as fx;
use broker::storage::RecordLog;
use broker::storage::{BatchHeader, LogConfig, MemoryLog, SegmentedLog};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SHAPES: [(&str, usize, usize); 2] = [("10x100B", 10, 100), ("100x1KiB", 100, 1024)];

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        retention_bytes: None,
        retention: None,
    }
}

fn memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage_append_memory");
    for (label, count, len) in SHAPES {
        let batch = fx::encode(&fx::sized_records(count, len));
        let header = BatchHeader::parse(&batch).unwrap();
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            // Retention keeps the log bounded while criterion appends millions.
            let mut log = MemoryLog::new(LogConfig {
                retention_bytes: Some(64 << 20),
                ..config()
            });
            b.iter(|| {
                let offset = log.append(batch.clone(), &header);
                if offset % 4096 == 0 {
                    log.enforce_retention(SystemTime::now());
                }
                offset
            })
        });
    }
    group.finish();
}

/// Appends `iters` batches to a fresh disk log, fsyncing after each one
/// when `fsync`; returns the time spent appending (and syncing).
fn disk_run(batch: &bytes::BytesMut, header: &BatchHeader, iters: u64, fsync: bool) -> Duration {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut log = SegmentedLog::open(dir.path(), config()).expect("open log");
    let start = Instant::now();
    for _ in 0..iters {
        black_box(log.append(batch.clone(), header).unwrap());
        if fsync {
            log.flush().unwrap();
        }
    }
    start.elapsed()
}

fn disk(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage_append_disk");
    for (label, count, len) in SHAPES {
        let batch = fx::encode(&fx::sized_records(count, len));
        let header = BatchHeader::parse(&batch).unwrap();
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(BenchmarkId::new("page_cache", label), |b| {
            b.iter_custom(|iters| disk_run(&batch, &header, iters, false))
        });
    }
    // fsync per append is milliseconds on most disks: fewer samples.
    group.sample_size(10);
    let (label, count, len) = SHAPES[1];
    let batch = fx::encode(&fx::sized_records(count, len));
    let header = BatchHeader::parse(&batch).unwrap();
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function(BenchmarkId::new("fsync", label), |b| {
        b.iter_custom(|iters| disk_run(&batch, &header, iters, true))
    });
    group.finish();
}

fn records(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage_append_records");
    let payload = vec![b'x'; 1024];
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("1KiB", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let (mut log, _) = RecordLog::open(&dir.path().join("queue.log")).expect("open");
            let start = Instant::now();
            for _ in 0..iters {
                log.append(black_box(&payload)).unwrap();
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, memory, disk, records);
criterion_main!(benches);
