//! `cargo xtask merge <results...> --out FILE`: several loadgen workers that
//! ran the same workload at the same time, as one result. Counts, rates and
//! connections add up; latency histograms are added (loadgen's
//! `histogram::merge`) and the percentiles read from the sum, never averaged.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use loadgen::result::{LatencySummary, Tick};
use loadgen::{LoadResult, Outcome};

/// One result from `parts` (at least one, all of the same workload).
pub fn merge(parts: &[LoadResult]) -> Result<LoadResult> {
    let Some(first) = parts.first() else {
        bail!("nothing to merge: give at least one result file");
    };
    for (i, p) in parts.iter().enumerate() {
        let (a, b) = (&first.workload, &p.workload);
        if a.name != b.name || a.scenario != b.scenario || a.protocol != b.protocol {
            bail!(
                "result {} is workload `{}` ({} {}), result 1 is `{}` ({} {}): merge only adds up workers of the same workload",
                i + 1,
                b.name,
                b.protocol,
                b.scenario.as_str(),
                a.name,
                a.protocol,
                a.scenario.as_str()
            );
        }
    }
    let mut out = first.clone();
    out.started_at = parts
        .iter()
        .map(|p| p.started_at.clone())
        .min()
        .unwrap_or_default();
    // Workers measure concurrently: the merged window is the longest one.
    out.measured_secs = parts.iter().map(|p| p.measured_secs).fold(0.0, f64::max);
    out.outcome = if parts.iter().any(|p| p.outcome == Outcome::Aborted) {
        Outcome::Aborted
    } else {
        Outcome::Completed
    };
    let errors: Vec<String> = parts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.error.as_ref().map(|e| format!("worker {}: {e}", i + 1)))
        .collect();
    out.error = (!errors.is_empty()).then(|| errors.join("; "));
    let mut targets: Vec<&str> = Vec::new();
    for p in parts {
        if !targets.contains(&p.target.as_str()) {
            targets.push(&p.target);
        }
    }
    out.target = targets.join(",");

    let c = &mut out.counts;
    *c = Default::default();
    for p in parts {
        c.sent += p.counts.sent;
        c.acked += p.counts.acked;
        c.received += p.counts.received;
        c.expected += p.counts.expected;
        c.lost += p.counts.lost;
        c.duplicated += p.counts.duplicated;
        c.out_of_order += p.counts.out_of_order;
    }
    let r = &mut out.rates;
    *r = Default::default();
    for p in parts {
        r.sent_per_sec += p.rates.sent_per_sec;
        r.acked_per_sec += p.rates.acked_per_sec;
        r.received_per_sec += p.rates.received_per_sec;
    }

    out.latency.end_to_end =
        merge_latency(parts, |p| p.latency.end_to_end.as_ref()).context("end_to_end latency")?;
    out.latency.publish_delay = merge_latency(parts, |p| p.latency.publish_delay.as_ref())
        .context("publish_delay latency")?;
    out.latency.ack = merge_latency(parts, |p| p.latency.ack.as_ref()).context("ack latency")?;

    let conn = &mut out.connections;
    *conn = Default::default();
    for p in parts {
        let pc = &p.connections;
        conn.attempted += pc.attempted;
        conn.established += pc.established;
        conn.failed += pc.failed;
        conn.time_to_establish_secs = conn.time_to_establish_secs.max(pc.time_to_establish_secs);
        add_counts(&mut conn.errors, &pc.errors);
        for a in &pc.source_addresses {
            if !conn.source_addresses.contains(a) {
                conn.source_addresses.push(a.clone());
            }
        }
    }

    // Second i of every worker's window adds up (ticks are per second from
    // each worker's own window start).
    let mut timeline: Vec<Tick> = Vec::new();
    for p in parts {
        for (i, t) in p.timeline.iter().enumerate() {
            if timeline.len() <= i {
                timeline.push(Tick {
                    t: t.t,
                    ..Tick::default()
                });
            }
            let m = &mut timeline[i];
            m.sent += t.sent;
            m.acked += t.acked;
            m.received += t.received;
        }
    }
    out.timeline = timeline;

    out.errors = BTreeMap::new();
    for p in parts {
        add_counts(&mut out.errors, &p.errors);
    }
    let u = &mut out.loadgen;
    *u = Default::default();
    for p in parts {
        u.cpu_user_secs += p.loadgen.cpu_user_secs;
        u.cpu_system_secs += p.loadgen.cpu_system_secs;
        // Separate processes: the largest one, not a sum nobody had.
        u.max_rss_bytes = u.max_rss_bytes.max(p.loadgen.max_rss_bytes);
    }
    Ok(out)
}

pub(crate) fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, n) in from {
        *into.entry(k.clone()).or_default() += n;
    }
}

pub(crate) fn merge_latency(
    parts: &[LoadResult],
    pick: impl Fn(&LoadResult) -> Option<&LatencySummary>,
) -> Result<Option<LatencySummary>> {
    let mut hists = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if let Some(s) = pick(p) {
            let h = loadgen::histogram::from_summary(s)
                .map_err(|e| anyhow::anyhow!("result {}: {e}", i + 1))?;
            hists.push(h);
        }
    }
    if hists.is_empty() {
        return Ok(None);
    }
    Ok(loadgen::histogram::summarize(&loadgen::histogram::merge(
        hists.iter(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::merge::run;
    use crate::model::report::test_support::{result, workload};
    use loadgen::histogram;
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
