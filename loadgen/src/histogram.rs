//! HdrHistogram helpers: latencies in microseconds, summaries with the
//! serialized histogram, and merging by addition.

use std::time::Duration;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use crate::result::LatencySummary;

/// Largest latency kept exactly (one hour); longer ones are clamped to it.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Three significant digits: 0.1 % resolution at every magnitude.
const SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram (microseconds).
pub fn new_latency() -> Histogram<u64> {
    Histogram::new_with_max(MAX_LATENCY_US, SIGNIFICANT_DIGITS).expect("valid histogram bounds")
}

/// Records a latency, rounded down to whole microseconds, clamped to the range.
pub fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(us.min(MAX_LATENCY_US));
}

/// Adds every histogram in `parts` into one (never averages percentiles).
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut total = new_latency();
    for part in parts {
        total
            .add(part)
            .expect("histograms with the same bounds add up");
    }
    total
}

/// Percentiles and the serialized histogram; `None` when nothing was recorded.
pub fn summarize(hist: &Histogram<u64>) -> Option<LatencySummary> {
    if hist.is_empty() {
        return None;
    }
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut bytes)
        .expect("serializing into memory cannot fail");
    Some(LatencySummary {
        count: hist.len(),
        min_us: hist.min(),
        mean_us: hist.mean(),
        p50_us: hist.value_at_quantile(0.50),
        p90_us: hist.value_at_quantile(0.90),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        p9999_us: hist.value_at_quantile(0.9999),
        max_us: hist.max(),
        histogram: base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// The histogram carried by a summary (for merging results of several runs or workers).
pub fn from_summary(summary: &LatencySummary) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&summary.histogram)
        .map_err(|e| format!("latency histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("latency histogram does not deserialize: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = new_latency();
        for v in values {
            record(&mut h, Duration::from_micros(v));
        }
        h
    }

    #[test]
    fn summary_has_ordered_percentiles() {
        let h = fed(1..=10_000);
        let s = summarize(&h).unwrap();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min_us, 1);
        assert!((s.p50_us as f64 - 5_000.0).abs() <= 5.0, "{}", s.p50_us);
        assert!((s.p99_us as f64 - 9_900.0).abs() <= 10.0, "{}", s.p99_us);
        assert!(s.p50_us <= s.p90_us && s.p90_us <= s.p99_us && s.p99_us <= s.p999_us);
        assert!(s.p999_us <= s.p9999_us && s.p9999_us <= s.max_us);
        assert!((s.mean_us - 5_000.5).abs() < 10.0, "{}", s.mean_us);
    }

    #[test]
    fn empty_histogram_has_no_summary() {
        assert!(summarize(&new_latency()).is_none());
    }

    #[test]
    fn merge_by_add_equals_one_histogram_fed_everything() {
        let a = fed((0..5_000).map(|i| i * 3 + 1));
        let b = fed((0..3_000).map(|i| 20_000 + i * 7));
        let c = fed([1_000_000, 2, 2, 2]);
        let merged = merge([&a, &b, &c]);
        let all = fed((0..5_000)
            .map(|i| i * 3 + 1)
            .chain((0..3_000).map(|i| 20_000 + i * 7))
            .chain([1_000_000, 2, 2, 2]));
        let (m, o) = (summarize(&merged).unwrap(), summarize(&all).unwrap());
        assert_eq!(m, o, "same counts, percentiles and serialized bytes");
        assert_eq!(m.count, 8_004);
    }

    #[test]
    fn serialized_histogram_round_trips() {
        let h = fed([5, 50, 500, 5_000, 50_000]);
        let s = summarize(&h).unwrap();
        let back = from_summary(&s).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(summarize(&back).unwrap(), s);
    }

    #[test]
    fn huge_latencies_are_clamped() {
        let mut h = new_latency();
        record(&mut h, Duration::from_secs(100_000));
        assert!(h.max() >= MAX_LATENCY_US && h.max() <= MAX_LATENCY_US + MAX_LATENCY_US / 500);
    }
}
