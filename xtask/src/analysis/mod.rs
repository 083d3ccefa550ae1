//! Judging and combining results: gate verdicts, run comparisons, regressions, merged loadgen results.

pub mod ab;
pub mod compare;
pub mod cpu_scale;
pub mod gate;
pub mod max_rate;
pub mod merge;
pub mod rank_test;
pub mod regression;
