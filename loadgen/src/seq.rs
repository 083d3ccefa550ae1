//! Per (subscriber, publisher) sequence tracking: which messages arrived,
//! twice, late, or not at all.

use std::collections::BTreeMap;
use std::ops::Range;

/// How one delivery relates to what the subscriber had seen from that publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The next sequence number, or a newer one (skipping a gap).
    InOrder,
    /// A sequence number from an earlier gap: first arrival, but after a newer one.
    OutOfOrder,
    /// A sequence number that had already arrived.
    Duplicate,
}

/// What one subscriber has seen from one publisher.
///
/// Keeps the gaps below the highest sequence seen as ranges, so memory grows
/// with the number of gaps, not with the number of messages.
#[derive(Debug, Default, Clone)]
pub struct SequenceTracker {
    /// One past the highest sequence number seen.
    next: u64,
    /// Missing sequence numbers below `next`: start -> end (exclusive).
    gaps: BTreeMap<u64, u64>,
}

impl SequenceTracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, seq: u64) -> Delivery {
        if seq >= self.next {
            if seq > self.next {
                self.gaps.insert(self.next, seq);
            }
            self.next = seq + 1;
            return Delivery::InOrder;
        }
        // The gap that could hold `seq` is the last one starting at or before it.
        let Some((&start, &end)) = self.gaps.range(..=seq).next_back() else {
            return Delivery::Duplicate;
        };
        if seq >= end {
            return Delivery::Duplicate;
        }
        self.gaps.remove(&start);
        if start < seq {
            self.gaps.insert(start, seq);
        }
        if seq + 1 < end {
            self.gaps.insert(seq + 1, end);
        }
        Delivery::OutOfOrder
    }

    /// How many sequence numbers in `range` never arrived (including any
    /// beyond the highest seen: lost at the end).
    pub fn missing_in(&self, range: Range<u64>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let in_gaps: u64 = self
            .gaps
            .iter()
            .map(|(&start, &end)| {
                let lo = start.max(range.start);
                let hi = end.min(range.end);
                hi.saturating_sub(lo)
            })
            .sum();
        let beyond = range.end.saturating_sub(self.next.max(range.start));
        in_gaps + beyond
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_nothing_missing() {
        let mut t = SequenceTracker::new();
        for seq in 0..100 {
            assert_eq!(t.record(seq), Delivery::InOrder);
        }
        assert_eq!(t.missing_in(0..100), 0);
        assert_eq!(t.missing_in(10..20), 0);
    }

    #[test]
    fn repeated_sequence_is_a_duplicate() {
        let mut t = SequenceTracker::new();
        assert_eq!(t.record(0), Delivery::InOrder);
        assert_eq!(t.record(1), Delivery::InOrder);
        assert_eq!(t.record(1), Delivery::Duplicate);
        assert_eq!(t.record(0), Delivery::Duplicate);
        assert_eq!(t.missing_in(0..2), 0);
    }

    #[test]
    fn gap_then_late_arrival_is_out_of_order() {
        let mut t = SequenceTracker::new();
        t.record(0);
        assert_eq!(t.record(4), Delivery::InOrder, "a gap of 1..4");
        assert_eq!(t.missing_in(0..5), 3);
        assert_eq!(t.record(2), Delivery::OutOfOrder);
        assert_eq!(t.missing_in(0..5), 2);
        assert_eq!(t.record(2), Delivery::Duplicate, "the late one, again");
        assert_eq!(t.record(1), Delivery::OutOfOrder);
        assert_eq!(t.record(3), Delivery::OutOfOrder);
        assert_eq!(t.missing_in(0..5), 0);
        assert_eq!(t.record(3), Delivery::Duplicate);
    }

    #[test]
    fn lost_at_the_end_and_in_the_middle() {
        let mut t = SequenceTracker::new();
        for seq in (0..8).filter(|s| *s != 5) {
            t.record(seq);
        }
        // 10 were sent: 5 lost in the middle, 8 and 9 at the end.
        assert_eq!(t.missing_in(0..10), 3);
        // Only the measured part counts.
        assert_eq!(t.missing_in(6..10), 2);
        assert_eq!(t.missing_in(0..5), 0);
        assert_eq!(t.missing_in(3..3), 0);
    }

    #[test]
    fn nothing_seen_means_everything_missing() {
        let t = SequenceTracker::new();
        assert_eq!(t.missing_in(5..15), 10);
    }
}
