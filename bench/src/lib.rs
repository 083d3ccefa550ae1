//! Criterion micro-benchmarks of the broker's hot paths. The benchmarks live
//! in `benches/`; they call the broker's own functions and build their inputs
//! from `broker::fixtures`, the same fixtures the codec unit tests use.
//! Run them with `cargo xtask micro` (natively or under the target's runner).
