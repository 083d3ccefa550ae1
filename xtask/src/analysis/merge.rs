//! Several loadgen workers that ran the same workload at the same time, as one
//! result. Counts, rates and connections add up; latency histograms are added
//! (loadgen's `histogram::merge`) and the percentiles read from the sum, never
//! averaged.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use loadgen::result::{ConnectionStats, LatencySummary, Tick};
use loadgen::{LoadResult, Outcome};

/// One result from `parts` (at least one, all of the same workload).
pub fn merge(parts: &[LoadResult]) -> Result<LoadResult> {
    let Some(first) = parts.first() else {
        bail!("nothing to merge: give at least one result file");
    };
    same_workload(parts)?;
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
        c.offered += p.counts.offered;
        c.delivered += p.counts.delivered;
        c.late += p.counts.late;
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
        r.offered_per_sec += p.rates.offered_per_sec;
        r.sent_per_sec += p.rates.sent_per_sec;
        r.acked_per_sec += p.rates.acked_per_sec;
        r.received_per_sec += p.rates.received_per_sec;
    }

    out.latency.end_to_end =
        merge_latency(parts, |p| p.latency.end_to_end.as_ref()).context("end_to_end latency")?;
    out.latency.publish_delay = merge_latency(parts, |p| p.latency.publish_delay.as_ref())
        .context("publish_delay latency")?;
    out.latency.ack = merge_latency(parts, |p| p.latency.ack.as_ref()).context("ack latency")?;

    out.connections = connections(parts);
    out.timeline = timeline(parts);
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

/// Every part must be a worker of the first part's workload.
fn same_workload(parts: &[LoadResult]) -> Result<()> {
    let first = &parts[0];
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
    Ok(())
}

/// Connections of all workers: counts add up, the slowest establishment counts.
fn connections(parts: &[LoadResult]) -> ConnectionStats {
    let mut conn = ConnectionStats::default();
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

    conn
}

/// Second i of every worker's window adds up (ticks are per second from
/// each worker's own window start).
fn timeline(parts: &[LoadResult]) -> Vec<Tick> {
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

    timeline
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
