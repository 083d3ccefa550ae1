//! `cargo xtask merge <results...> --out FILE`: add up the loadgen result files
//! of one workload run by several workers.

use std::path::Path;

use crate::analysis::merge::merge;
use anyhow::{Context, Result};
use loadgen::LoadResult;

/// `cargo xtask merge <results...> --out FILE`.
pub fn run(files: &[impl AsRef<Path>], out: &Path) -> Result<()> {
    let mut parts = Vec::new();
    for f in files {
        let f = f.as_ref();
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        parts.push(
            LoadResult::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
        );
    }
    let merged = merge(&parts)?;
    std::fs::write(out, merged.to_json())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let e2e = merged
        .latency
        .end_to_end
        .as_ref()
        .map(|l| {
            format!(
                ", e2e p50 {} p99 {} over {} samples",
                crate::model::units::micros(l.p50_us as f64),
                crate::model::units::micros(l.p99_us as f64),
                crate::model::units::thousands(l.count)
            )
        })
        .unwrap_or_default();
    println!(
        "merged {} results of `{}`: received {}{e2e}\n{}",
        parts.len(),
        merged.workload.name,
        crate::model::units::rate(merged.rates.received_per_sec),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::merge::merge;
    use crate::model::report::test_support::{result, workload};
    use loadgen::histogram;
    use loadgen::result::Tick;
    use std::time::Duration;

    fn hist_of(values: &[u64]) -> hdrhistogram::Histogram<u64> {
        let mut h = histogram::new_latency();
        for &v in values {
            histogram::record(&mut h, Duration::from_micros(v));
        }
        h
    }

    /// A worker's result whose latencies are exactly `values`.
    fn worker(i: u64, values: &[u64]) -> LoadResult {
        let w = workload("mqtt-fanin", "fan_in");
        let mut r = result(&w, 1_000.0 * (i + 1) as f64, 0);
        r.counts.received = values.len() as u64;
        r.counts.lost = i;
        r.counts.late = 1;
        r.counts.offered = 100;
        r.latency.end_to_end = histogram::summarize(&hist_of(values));
        r.latency.publish_delay = histogram::summarize(&hist_of(&[i * 10 + 1]));
        r.connections.errors.insert("refused".into(), 1);
        r.timeline = vec![Tick {
            t: 1.0,
            sent: 10,
            acked: 0,
            received: 10 + i,
        }];
        r
    }

    #[test]
    fn merge_of_three_workers_equals_one_histogram_of_all_samples() {
        // Different shapes per worker: a fast one, a slow tail, a bimodal one.
        let samples: [Vec<u64>; 3] = [
            (0..20_000).map(|i| 50 + i % 900).collect(),
            (0..5_000).map(|i| 2_000 + i * 37).collect(),
            (0..7_000)
                .map(|i| if i % 2 == 0 { 300 } else { 40_000 + i })
                .collect(),
        ];
        let parts: Vec<LoadResult> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| worker(i as u64, s))
            .collect();
        let merged = merge(&parts).unwrap();

        let all: Vec<u64> = samples.iter().flatten().copied().collect();
        let one = hist_of(&all);
        let e2e = merged.latency.end_to_end.as_ref().unwrap();
        // Counts exactly.
        assert_eq!(e2e.count, 32_000);
        assert_eq!(e2e.count, one.len());
        assert_eq!(merged.counts.received, 32_000);
        assert_eq!(merged.counts.lost, 3);
        assert_eq!((merged.counts.late, merged.counts.offered), (3, 300));
        assert_eq!(merged.connections.attempted, 9);
        assert_eq!(merged.connections.errors["refused"], 3);
        assert_eq!(merged.timeline[0].received, 33);
        assert_eq!(merged.rates.received_per_sec, 6_000.0);
        assert_eq!(merged.latency.publish_delay.as_ref().unwrap().count, 3);
        // Percentiles within histogram precision (3 significant digits) of
        // the exact ones, and equal to those of one histogram fed everything.
        let mut sorted = all.clone();
        sorted.sort_unstable();
        for (q, got) in [
            (0.5, e2e.p50_us),
            (0.9, e2e.p90_us),
            (0.99, e2e.p99_us),
            (0.999, e2e.p999_us),
        ] {
            assert_eq!(got, one.value_at_quantile(q), "q {q}");
            let exact = sorted[((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1)];
            let tolerance = (exact as f64 * 0.001).max(1.0);
            assert!(
                (got as f64 - exact as f64).abs() <= tolerance,
                "q {q}: {got} vs exact {exact}"
            );
        }
        assert_eq!(e2e.max_us, one.max());
        assert_eq!(e2e, &histogram::summarize(&one).unwrap());
        // Averaging the workers' p99 would be far off: the merge is not that.
        let avg_p99: u64 = parts
            .iter()
            .map(|p| p.latency.end_to_end.as_ref().unwrap().p99_us)
            .sum::<u64>()
            / 3;
        assert!(
            avg_p99.abs_diff(e2e.p99_us) > 1_000,
            "{avg_p99} vs {}",
            e2e.p99_us
        );
    }

    #[test]
    fn merge_refuses_different_workloads_and_nothing() {
        let a = worker(0, &[1, 2, 3]);
        let mut b = worker(1, &[4]);
        b.workload.name = "other".into();
        let err = merge(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("same workload"), "{err}");
        assert!(merge(&[]).is_err());
    }

    #[test]
    fn merge_command_reads_and_writes_result_files() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<_> = (0..3)
            .map(|i| {
                let p = dir.path().join(format!("w{i}.json"));
                std::fs::write(&p, worker(i, &[100 * (i + 1); 10]).to_json()).unwrap();
                p
            })
            .collect();
        let out = dir.path().join("merged.json");
        run(&files, &out).unwrap();
        let merged = LoadResult::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(merged.latency.end_to_end.unwrap().count, 30);
        std::fs::write(&files[1], "{}").unwrap();
        assert!(run(&files, &out).is_err());
    }
}
