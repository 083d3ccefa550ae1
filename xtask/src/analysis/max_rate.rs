//! The maximum-sustainable-rate search (OpenMessaging Benchmark's approach):
//! start low, multiply the rate while steps are sustained, then bisect
//! between the last sustained and the first failed rate. Pure: a step is a
//! closure, so synthetic brokers test it.

use crate::model::max_rate::{SearchSpec, SearchStep, StepOutcome, StepVerdict};
use crate::model::report::RepeatReport;

/// What the search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Highest sustained rate tried; None when none was.
    pub found_per_sec: Option<u64>,
    pub steps: Vec<SearchStep>,
    pub stopped: String,
}

/// Sustained when the run worked, loss and delivery are within
/// `delivered_fraction` and p99 is under the bound.
pub fn judge(spec: &SearchSpec, o: &StepOutcome) -> StepVerdict {
    if let Some(reason) = &o.failure {
        return StepVerdict::Failed {
            reason: reason.clone(),
        };
    }
    let allowed_loss = (1.0 - spec.delivered_fraction) * o.expected as f64;
    if o.lost as f64 > allowed_loss {
        return StepVerdict::Lost;
    }
    if o.delivered_per_sec < spec.delivered_fraction * o.offered_per_sec {
        return StepVerdict::TooFewDelivered;
    }
    match o.p99_us {
        Some(p99) if (p99 as f64) < spec.p99_below_ms * 1_000.0 => StepVerdict::Sustained,
        Some(_) => StepVerdict::P99Over,
        None => StepVerdict::Failed {
            reason: "no latency measured".into(),
        },
    }
}

/// Runs the search; at most `spec.max_steps` calls of `step`.
pub fn search(spec: &SearchSpec, mut step: impl FnMut(u64) -> StepOutcome) -> SearchResult {
    let mut steps: Vec<SearchStep> = Vec::new();
    let mut run = |rate: u64, steps: &mut Vec<SearchStep>| -> bool {
        let outcome = step(rate);
        let verdict = judge(spec, &outcome);
        let ok = verdict.is_sustained();
        steps.push(SearchStep {
            rate_per_sec: rate,
            outcome,
            verdict,
            result_file: String::new(),
        });
        ok
    };
    let budget = spec.max_steps as usize;
    let (mut sustained, mut failed): (Option<u64>, Option<u64>) = (None, None);
    let mut rate = spec.start_per_sec.min(spec.ceiling_per_sec);
    let mut stopped = String::new();
    while failed.is_none() {
        if steps.len() >= budget {
            stopped = format!("step limit ({budget}) while growing");
            break;
        }
        if run(rate, &mut steps) {
            sustained = Some(rate);
            if rate >= spec.ceiling_per_sec {
                stopped = format!("sustained the ceiling ({rate} msg/s)");
                break;
            }
            rate = ((rate as f64 * spec.growth).ceil() as u64).min(spec.ceiling_per_sec);
        } else {
            failed = Some(rate);
        }
    }
    let mut bisections = 0;
    while let Some(hi) = failed {
        let lo = sustained.unwrap_or(0);
        if (hi - lo) as f64 <= spec.tolerance * hi as f64 {
            stopped = format!(
                "within tolerance: {lo} sustained, {hi} not ({} %)",
                spec.tolerance * 100.0
            );
            break;
        }
        if bisections >= spec.bisect_steps {
            stopped = format!(
                "bisection steps used ({}): {lo} sustained, {hi} not",
                spec.bisect_steps
            );
            break;
        }
        if steps.len() >= budget {
            stopped = format!("step limit ({budget}): {lo} sustained, {hi} not");
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if mid == lo || mid == 0 {
            stopped = format!("no rate left between {lo} and {hi}");
            break;
        }
        bisections += 1;
        if run(mid, &mut steps) {
            sustained = Some(mid);
        } else {
            failed = Some(mid);
        }
    }
    SearchResult {
        found_per_sec: sustained,
        steps,
        stopped,
    }
}

/// A step's outcome from its loadgen run: delivered msg/s with fan-out
/// copies divided out (so it compares with the offered rate), latency and
/// loss. A repeat without a result, or a failed one, is a failed step.
pub fn outcome_of(rate: u64, r: &RepeatReport) -> StepOutcome {
    let mut o = StepOutcome {
        offered_per_sec: rate as f64,
        failure: r.failure.clone(),
        cpu_us_per_message: r.broker_cpu_us_per_message,
        ..StepOutcome::default()
    };
    let Some(res) = &r.result else {
        o.failure.get_or_insert_with(|| "no result".into());
        return o;
    };
    let copies = if res.counts.sent > 0 && res.counts.expected > 0 {
        res.counts.expected as f64 / res.counts.sent as f64
    } else {
        1.0
    };
    o.delivered_per_sec = res.rates.received_per_sec / copies;
    o.expected = res.counts.expected;
    o.lost = res.counts.lost;
    if let Some(l) = &res.latency.end_to_end {
        (o.p50_us, o.p99_us, o.p999_us) = (Some(l.p50_us), Some(l.p99_us), Some(l.p999_us));
    }
    o
}

/// The sweep's rates: `fraction × max`, at least 1 msg/s, in the order given.
pub fn sweep_rates(max_per_sec: u64, fractions: &[f64]) -> Vec<(f64, u64)> {
    fractions
        .iter()
        .map(|&f| (f, ((max_per_sec as f64 * f).round() as u64).max(1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SearchSpec {
        SearchSpec {
            start_per_sec: 1_000,
            ..SearchSpec::default()
        }
    }

    /// A broker delivering min(offered, capacity) with p99 1 ms below
    /// capacity; above it queues grow and p99 with them.
    fn saturating(capacity: f64) -> impl FnMut(u64) -> StepOutcome {
        move |rate| {
            let offered = rate as f64;
            let delivered = offered.min(capacity);
            StepOutcome {
                offered_per_sec: offered,
                delivered_per_sec: delivered,
                p99_us: Some(if offered <= capacity { 1_000 } else { 900_000 }),
                expected: rate * 3,
                ..StepOutcome::default()
            }
        }
    }

    fn assert_close_below(found: Option<u64>, truth: f64, tolerance: f64) {
        let found = found.expect("a rate was found") as f64;
        assert!(found <= truth, "found {found} above the truth {truth}");
        assert!(
            found >= truth * (1.0 - tolerance),
            "found {found} not within {tolerance} of {truth}"
        );
    }

    #[test]
    fn saturating_broker_is_found_within_tolerance_and_never_above() {
        for capacity in [1_500.0, 65_000.0, 100_000.0, 514_000.0, 3_333_333.0] {
            let s = spec();
            let r = search(&s, saturating(capacity));
            assert_close_below(r.found_per_sec, capacity, s.tolerance);
            assert!(r.steps.len() <= s.max_steps as usize);
            // Every sustained step is at or below capacity, every failed one above.
            for st in &r.steps {
                assert_eq!(
                    st.verdict.is_sustained(),
                    st.rate_per_sec as f64 <= capacity
                );
            }
        }
    }

    #[test]
    fn exploding_p99_above_a_rate_bounds_the_search() {
        let knee = 40_000.0;
        let s = spec();
        let r = search(&s, |rate| StepOutcome {
            offered_per_sec: rate as f64,
            delivered_per_sec: rate as f64,
            p99_us: Some(if rate as f64 <= knee { 5_000 } else { 250_000 }),
            ..StepOutcome::default()
        });
        assert_close_below(r.found_per_sec, knee, s.tolerance);
        assert!(r.steps.iter().any(|s| s.verdict == StepVerdict::P99Over));
    }

    #[test]
    fn noisy_broker_is_never_credited_above_its_best() {
        // Capacity varies per step between 90 % and 100 % of 200k.
        let best = 200_000.0;
        let mut seed = 0x2545F4914F6CDD1Du64;
        let s = spec();
        let r = search(&s, |rate| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let capacity = best * (0.9 + 0.1 * (seed % 1000) as f64 / 1000.0);
            saturating(capacity)(rate)
        });
        let found = r.found_per_sec.unwrap() as f64;
        assert!(found <= best, "{found}");
        assert!(found >= 0.9 * best * (1.0 - s.tolerance), "{found}");
    }

    #[test]
    fn a_broker_that_loses_messages_above_a_rate_is_not_sustained_there() {
        let cliff = 80_000.0;
        let s = spec();
        let r = search(&s, |rate| {
            let expected = rate * 3;
            let lost = if rate as f64 > cliff {
                expected / 100
            } else {
                0
            };
            StepOutcome {
                offered_per_sec: rate as f64,
                delivered_per_sec: rate as f64,
                p99_us: Some(1_000),
                expected,
                lost,
                ..StepOutcome::default()
            }
        });
        assert_close_below(r.found_per_sec, cliff, s.tolerance);
        assert!(r.steps.iter().any(|s| s.verdict == StepVerdict::Lost));
    }

    #[test]
    fn nothing_sustained_and_step_limits_hold() {
        let s = spec();
        let r = search(&s, saturating(10.0));
        assert!(r.found_per_sec.is_none_or(|f| f <= 10), "{r:?}");
        assert!(r.steps.len() <= s.max_steps as usize);

        let failing = search(&s, |rate| StepOutcome {
            offered_per_sec: rate as f64,
            failure: Some("broker died".into()),
            ..StepOutcome::default()
        });
        assert_eq!(failing.found_per_sec, None);
        assert!(failing.steps.len() <= 1 + s.bisect_steps as usize);

        let tight = SearchSpec {
            max_steps: 5,
            ..spec()
        };
        let r = search(&tight, saturating(1e9));
        assert_eq!(r.steps.len(), 5);
        assert_eq!(r.found_per_sec, Some(16_000));
        assert!(r.stopped.contains("step limit"), "{}", r.stopped);

        let capped = SearchSpec {
            ceiling_per_sec: 5_000,
            ..spec()
        };
        let r = search(&capped, saturating(1e9));
        assert_eq!(r.found_per_sec, Some(5_000));
        assert!(r.stopped.contains("ceiling"), "{}", r.stopped);
    }

    #[test]
    fn sweep_rates_follow_the_fractions() {
        assert_eq!(
            sweep_rates(100_000, &[0.1, 0.5, 1.0]),
            [(0.1, 10_000), (0.5, 50_000), (1.0, 100_000)]
        );
        assert_eq!(sweep_rates(3, &[0.1]), [(0.1, 1)]);
    }

    #[test]
    fn outcome_divides_fan_out_copies_and_carries_failures() {
        let w = crate::model::report::test_support::workload("w", "fan_out");
        let mut res = crate::model::report::test_support::result(&w, 30_000.0, 7_000);
        res.counts.sent = 100;
        res.counts.expected = 300;
        res.counts.lost = 2;
        let r = crate::model::report::test_support::repeat(1, Some(res), 1_000_000, 10.0);
        let o = outcome_of(10_000, &r);
        assert_eq!(o.delivered_per_sec, 10_000.0);
        assert_eq!((o.p99_us, o.lost, o.expected), (Some(7_000), 2, 300));
        let none = crate::model::report::test_support::repeat(1, None, 1_000_000, 10.0);
        assert!(outcome_of(10, &none).failure.is_some());
    }
}
