//! `cargo xtask compare <A> <B>`: for each workload and metric, A, B, the
//! ratio B/A and a verdict (better / worse / within noise) that rests on the
//! spread of the repeats, never on a single pair of numbers; written as
//! `compare.md` and `compare.html`. A and B are run directories, report.json
//! files or baselines (`reports/baselines/*.json`).
//!
//! The noise rule, by the repeats each side has:
//! - fewer than 2 on either side: no spread exists, so a documented default
//!   band per metric ([`Metric::band`]) decides, and the output says so;
//! - 2 to 4 on both sides: within noise when the min–max ranges overlap;
//! - 5 or more on both sides: a bootstrap (2,000 resamples, fixed seed) of
//!   the ratio of medians; within noise when its 95 % interval holds 1.
//!
//! Differences smaller than a metric's resolution ([`Metric::floor`]) are
//! always within noise. Under emulation the speed and resource metrics
//! measure the emulator: a native side against an emulated one gets no
//! better/worse verdict on them, only a label (functional metrics, connections
//! and lost messages, are still judged).
//!
//! Micro-benchmark runs (`cargo xtask micro`) are compared per criterion
//! benchmark id: faster or slower when the 95 % CIs of the two means do not
//! overlap and the means differ by more than the 2 % noise threshold `micro` gives criterion,
//! else within noise; again no verdict between emulated and native numbers.

use crate::model::baseline::Baseline;
use crate::model::baseline::WorkloadNumbers;
use crate::model::metric::{Direction, Metric, METRICS};
use crate::model::micro::MicroBenchmark;
use crate::model::micro::MicroSection;
use crate::model::report::Spread;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Fewer than 2 repeats on a side: the metric's default band.
    DefaultBand,
    /// 2–4 repeats on both sides: min–max ranges overlap.
    MinMax,
    /// ≥ 5 on both sides: bootstrap 95 % interval of the median ratio.
    Bootstrap { low: f64, high: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Better,
    Worse,
    WithinNoise,
    /// Speed or resources of a native run against an emulated one.
    NotComparable(String),
    /// The workload or metric has no numbers on one side.
    Missing(String),
}

impl Verdict {
    pub fn text(&self) -> String {
        match self {
            Verdict::Better => "better".into(),
            Verdict::Worse => "worse".into(),
            Verdict::WithinNoise => "within noise".into(),
            Verdict::NotComparable(why) => format!("not comparable ({why})"),
            Verdict::Missing(why) => format!("– ({why})"),
        }
    }

    pub(crate) fn class(&self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::WithinNoise => "within-noise",
            Verdict::NotComparable(_) => "not-comparable",
            Verdict::Missing(_) => "missing",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub workload: String,
    pub metric: &'static Metric,
    pub a: Option<Spread>,
    pub b: Option<Spread>,
    pub n_a: usize,
    pub n_b: usize,
    /// Median B / median A.
    pub ratio: Option<f64>,
    pub rule: Option<Rule>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub a: Baseline,
    pub b: Baseline,
    pub a_name: String,
    pub b_name: String,
    /// What differs between the two sides (machine, target, emulation, suite).
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
    /// When at least one side has micro-benchmarks.
    pub micro: Option<MicroComparison>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MicroVerdict {
    Faster,
    Slower,
    WithinNoise,
    NotComparable(String),
}

impl MicroVerdict {
    pub fn text(&self) -> String {
        match self {
            MicroVerdict::Faster => "faster".into(),
            MicroVerdict::Slower => "slower".into(),
            MicroVerdict::WithinNoise => "within noise".into(),
            MicroVerdict::NotComparable(why) => format!("not comparable ({why})"),
        }
    }

    /// The CSS class compare.html colours it with.
    pub fn class(&self) -> &'static str {
        match self {
            MicroVerdict::Faster => "better",
            MicroVerdict::Slower => "worse",
            MicroVerdict::WithinNoise => "within-noise",
            MicroVerdict::NotComparable(_) => "not-comparable",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MicroRow {
    pub id: String,
    pub a: MicroBenchmark,
    pub b: MicroBenchmark,
    /// B mean / A mean: below 1 means B takes less time.
    pub time_ratio: f64,
    /// B / A throughput per second, when both declare the same unit.
    pub throughput_ratio: Option<f64>,
    pub verdict: MicroVerdict,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MicroComparison {
    /// Benchmarks on both sides, in A's order.
    pub rows: Vec<MicroRow>,
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
}

/// Faster or slower only when the CIs of the means are apart and the means
/// differ by more than the noise threshold (`crate::model::micro::NOISE_THRESHOLD`).
pub fn micro_verdict(a: &MicroBenchmark, b: &MicroBenchmark) -> MicroVerdict {
    let overlap = a.ci_lower_ns <= b.ci_upper_ns && b.ci_lower_ns <= a.ci_upper_ns;
    let change = if a.mean_ns > 0.0 {
        b.mean_ns / a.mean_ns - 1.0
    } else {
        0.0
    };
    if overlap || change.abs() <= crate::model::micro::NOISE_THRESHOLD {
        MicroVerdict::WithinNoise
    } else if change < 0.0 {
        MicroVerdict::Faster
    } else {
        MicroVerdict::Slower
    }
}

/// Why two runs of one benchmark id did different work per iteration (the
/// declared throughput changed), so their times cannot be set side by side.
pub(crate) fn work_changed(a: &MicroBenchmark, b: &MicroBenchmark) -> Option<String> {
    match (&a.throughput, &b.throughput) {
        (Some(ta), Some(tb)) if ta.unit != tb.unit || ta.per_iteration != tb.per_iteration => {
            Some(format!(
                "work per iteration changed: {} {:?} vs {} {:?}",
                ta.per_iteration, ta.unit, tb.per_iteration, tb.unit
            ))
        }
        (Some(_), None) | (None, Some(_)) => {
            Some("only one side declares its work per iteration".into())
        }
        _ => None,
    }
}

/// Rows per benchmark id in both sections; `mismatch` (emulated against
/// native) withholds the verdicts.
pub fn compare_micro(
    a: Option<&MicroSection>,
    b: Option<&MicroSection>,
    mismatch: Option<&str>,
) -> MicroComparison {
    let none = Vec::new();
    let (ba, bb) = (
        a.map(|m| &m.benchmarks).unwrap_or(&none),
        b.map(|m| &m.benchmarks).unwrap_or(&none),
    );
    let mut c = MicroComparison::default();
    for x in ba {
        let Some(y) = bb.iter().find(|y| y.id == x.id) else {
            c.only_a.push(x.id.clone());
            continue;
        };
        let throughput_ratio = match (&x.throughput, &y.throughput) {
            (Some(tx), Some(ty)) if tx.unit == ty.unit && tx.per_sec > 0.0 => {
                Some(ty.per_sec / tx.per_sec)
            }
            _ => None,
        };
        c.rows.push(MicroRow {
            id: x.id.clone(),
            a: x.clone(),
            b: y.clone(),
            time_ratio: if x.mean_ns > 0.0 {
                y.mean_ns / x.mean_ns
            } else {
                f64::NAN
            },
            throughput_ratio,
            verdict: match (mismatch, work_changed(x, y)) {
                (Some(why), _) => MicroVerdict::NotComparable(why.to_string()),
                (None, Some(why)) => MicroVerdict::NotComparable(why),
                (None, None) => micro_verdict(x, y),
            },
        });
    }
    c.only_b = bb
        .iter()
        .filter(|y| !ba.iter().any(|x| x.id == y.id))
        .map(|y| y.id.clone())
        .collect();
    c
}

/// Why speed numbers of A and B cannot be set against each other, if so.
pub fn emulation_mismatch(a: &Baseline, b: &Baseline) -> Option<String> {
    let (ea, eb) = (&a.environment, &b.environment);
    match (ea.emulated, eb.emulated) {
        (false, false) => None,
        (true, true) if ea.runner == eb.runner && ea.host_triple == eb.host_triple => None,
        (true, true) => Some("both emulated, by different emulators or hosts".into()),
        (false, true) => Some(format!("B emulated by {}", eb.runner)),
        (true, false) => Some(format!("A emulated by {}", ea.runner)),
    }
}

pub fn compare(a: Baseline, b: Baseline, a_name: &str, b_name: &str) -> Comparison {
    let mismatch = emulation_mismatch(&a, &b);
    let notes = notes(&a, &b, mismatch.as_deref());
    let rows = rows(&a, &b, mismatch.as_deref());
    let micro = (a.micro.is_some() || b.micro.is_some())
        .then(|| compare_micro(a.micro.as_ref(), b.micro.as_ref(), mismatch.as_deref()));
    Comparison {
        a,
        b,
        a_name: a_name.to_string(),
        b_name: b_name.to_string(),
        notes,
        rows,
        micro,
    }
}

/// What the reader must know before trusting the rows: emulation, different
/// machines or targets, criterion settings, suites, missing repeats.
fn notes(a: &Baseline, b: &Baseline, mismatch: Option<&str>) -> Vec<String> {
    let mut notes = Vec::new();
    let (ea, eb) = (&a.environment, &b.environment);
    let micro_only = a.workloads.is_empty() && b.workloads.is_empty();
    if let (Some(why), true) = (mismatch, micro_only) {
        notes.push(format!(
            "Emulation: {why}. Under emulation micro-benchmark times measure the emulator on this host, not the target CPU: \
rows are labelled `not comparable` and get no faster/slower verdict."
        ));
    } else if let Some(why) = mismatch {
        notes.push(format!(
            "Emulation: {why}. Under emulation throughput, latency, memory and CPU measure the emulator, not the architecture: \
those rows are labelled `not comparable` and get no better/worse verdict; connections and lost messages are still judged."
        ));
    } else if ea.emulated {
        notes.push(format!(
            "Both runs emulated by {}: differences are the code or the emulator's host, never the architecture.",
            ea.runner
        ));
    }
    if ea.target_triple != eb.target_triple {
        if mismatch.is_none() {
            notes.push(format!(
                "Architecture: {} vs {}, both native: differences are architecture and machine together.",
                ea.target_triple, eb.target_triple
            ));
        } else {
            notes.push(format!(
                "Targets differ ({} vs {}), but one side is emulated: this is not an architecture comparison.",
                ea.target_triple, eb.target_triple
            ));
        }
    } else if ea.cpu_model != eb.cpu_model || ea.hostname != eb.hostname {
        notes.push(format!(
            "Machines differ ({} on {} vs {} on {}): differences are machine and code together.",
            ea.cpu_model, ea.hostname, eb.cpu_model, eb.hostname
        ));
    }
    let load = !a.workloads.is_empty() && !b.workloads.is_empty();
    if a.micro.is_some() || b.micro.is_some() {
        notes.push(match (&a.micro, &b.micro) {
            (Some(_), Some(_)) => "Micro-benchmarks: criterion means with their 95 % CIs; faster/slower only when the CIs do not overlap and the means differ by more than 2 % (the noise threshold `micro` gives criterion; criterion's own default is 1 %).".to_string(),
            (Some(_), None) => "Micro-benchmarks only in A: nothing to compare them with.".to_string(),
            _ => "Micro-benchmarks only in B: nothing to compare them with.".to_string(),
        });
        if let (Some(ma), Some(mb)) = (&a.micro, &b.micro) {
            let (ca, cb) = (&ma.criterion, &mb.criterion);
            if ca.warm_up_secs != cb.warm_up_secs || ca.measurement_secs != cb.measurement_secs {
                let times = |c: &crate::model::micro::CriterionSettings| {
                    format!(
                        "warm-up {}, measurement {}",
                        c.warm_up_secs
                            .map_or("3 s (default)".into(), |s| format!("{s} s")),
                        c.measurement_secs
                            .map_or("5 s (default)".into(), |s| format!("{s} s"))
                    )
                };
                notes.push(format!(
                    "Criterion ran for different times (A: {}; B: {}): the means are comparable, but the shorter run's CIs are wider and its verdicts weaker.",
                    times(ca),
                    times(cb)
                ));
            }
            if ca.noise_threshold != cb.noise_threshold {
                notes.push(format!(
                    "Noise thresholds differ (A {:.0} %, B {:.0} %): verdicts use {:.0} %.",
                    ca.noise_threshold * 100.0,
                    cb.noise_threshold * 100.0,
                    crate::model::micro::NOISE_THRESHOLD * 100.0
                ));
            }
        }
    }
    if load && a.suite != b.suite {
        notes.push(format!(
            "Suites differ ({} vs {}): same-named workloads may not carry the same load.",
            a.suite, b.suite
        ));
    }
    if load && (a.repeat < 2 || b.repeat < 2) {
        notes.push(
            "No repeats on at least one side: there is no spread to judge noise by, so verdicts use each metric's default band \
(delivered msg/s ±10 %, e2e p50/p99 ±25 %, broker peak RSS ±10 %, broker CPU % and CPU per message ±15 %, connections and lost exact). \
Run `cargo xtask bench --repeat 3` (or ≥ 5 for a bootstrap) for verdicts from measured spread."
                .into(),
        );
    }

    notes
}

/// One row per workload (of either side) and metric it measured.
fn rows(a: &Baseline, b: &Baseline, mismatch: Option<&str>) -> Vec<Row> {
    let mut names: Vec<&str> = a.workloads.iter().map(|w| w.name.as_str()).collect();
    for w in &b.workloads {
        if !names.contains(&w.name.as_str()) {
            names.push(&w.name);
        }
    }
    let find = |side: &Baseline, name: &str| -> Option<WorkloadNumbers> {
        side.workloads.iter().find(|w| w.name == name).cloned()
    };
    let mut rows = Vec::new();
    for name in names {
        let (wa, wb) = (find(a, name), find(b, name));
        for m in &METRICS {
            let values = |w: &Option<WorkloadNumbers>| -> Vec<f64> {
                w.as_ref()
                    .and_then(|w| w.metrics.get(m.key).cloned())
                    .unwrap_or_default()
            };
            let (va, vb) = (values(&wa), values(&wb));
            if va.is_empty() && vb.is_empty() {
                // The scenario does not measure it (no storm connections in a latency run).
                continue;
            }
            let (sa, sb) = (
                Spread::of(va.iter().copied()),
                Spread::of(vb.iter().copied()),
            );
            let ratio = match (sa, sb) {
                (Some(sa), Some(sb)) if sa.median != 0.0 => Some(sb.median / sa.median),
                _ => None,
            };
            let (rule, verdict) = if va.is_empty() || vb.is_empty() {
                let side = if va.is_empty() { "A" } else { "B" };
                let status = if va.is_empty() { &wa } else { &wb };
                let why = match status {
                    None => format!("not in {side}"),
                    Some(w) => format!("no result in {side}: {}", w.status),
                };
                (None, Verdict::Missing(why))
            } else if let (true, Some(why)) = (m.performance, mismatch) {
                (None, Verdict::NotComparable(why.to_string()))
            } else {
                let (rule, verdict) = judge(m, &va, &vb);
                (Some(rule), verdict)
            };
            rows.push(Row {
                workload: name.to_string(),
                metric: m,
                a: sa,
                b: sb,
                n_a: va.len(),
                n_b: vb.len(),
                ratio,
                rule,
                verdict,
            });
        }
    }
    rows
}

/// The verdict on one metric from the repeat values of each side.
pub fn judge(m: &Metric, a: &[f64], b: &[f64]) -> (Rule, Verdict) {
    let sa = Spread::of(a.iter().copied()).expect("values on side A");
    let sb = Spread::of(b.iter().copied()).expect("values on side B");
    let diff = sb.median - sa.median;
    let direction = || {
        let b_higher = diff > 0.0;
        if b_higher == (m.direction == Direction::HigherIsBetter) {
            Verdict::Better
        } else {
            Verdict::Worse
        }
    };
    let (rule, within) = if a.len() < 2 || b.len() < 2 {
        (Rule::DefaultBand, diff.abs() <= m.band * sa.median.abs())
    } else if a.len() < 5 || b.len() < 5 {
        (Rule::MinMax, sa.max >= sb.min && sb.max >= sa.min)
    } else {
        let (low, high) = bootstrap_median_ratio(a, b, 2_000);
        (Rule::Bootstrap { low, high }, low <= 1.0 && 1.0 <= high)
    };
    if within || diff.abs() <= m.floor {
        (rule, Verdict::WithinNoise)
    } else {
        (rule, direction())
    }
}

/// 95 % percentile interval of median(B*) / median(A*) over resamples with
/// replacement. Medians of 0 on A are lifted to a tiny value so the ratio
/// stays finite (a 0 → 0 pair is a ratio of 1).
pub fn bootstrap_median_ratio(a: &[f64], b: &[f64], resamples: usize) -> (f64, f64) {
    let mut rng = SplitMix64(0x5eed_0fb0_0757_a9e1);
    let mut ratios: Vec<f64> = (0..resamples)
        .map(|_| {
            let ma = resampled_median(a, &mut rng);
            let mb = resampled_median(b, &mut rng);
            if ma == 0.0 && mb == 0.0 {
                1.0
            } else {
                mb / ma.max(f64::MIN_POSITIVE)
            }
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

pub(crate) fn resampled_median(values: &[f64], rng: &mut SplitMix64) -> f64 {
    let picked = (0..values.len()).map(|_| values[rng.below(values.len())]);
    Spread::of(picked).expect("non-empty").median
}

/// A small deterministic generator: the same inputs give the same verdict.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn seeded(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---- rendering --------------------------------------------------------------
