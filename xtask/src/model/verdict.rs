//! A verdict that failed (gate, regression, smoke, failed workload, CI step):
//! an expected outcome, not a fault, so `main` exits 1 for it and 2 for any
//! other error (bad usage or input, a tool that could not run).

use std::fmt;

/// The error a command returns when what it judged did not pass; the text is
/// the one-line summary printed last.
#[derive(Debug)]
pub struct VerdictFailed(pub String);

impl fmt::Display for VerdictFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerdictFailed {}

/// `Err` of a failed verdict, for `return failed(…)` in a command.
pub fn failed<T>(summary: impl Into<String>) -> anyhow::Result<T> {
    Err(VerdictFailed(summary.into()).into())
}

/// Whether `e` (with any context added on the way up) is a failed verdict.
pub fn is_verdict(e: &anyhow::Error) -> bool {
    e.downcast_ref::<VerdictFailed>().is_some()
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn a_verdict_is_recognised_through_context_and_other_errors_are_not() {
        let e = failed::<()>("gate `ci` failed")
            .context("ci step `bench` failed")
            .unwrap_err();
        assert!(is_verdict(&e));
        assert_eq!(format!("{e:#}"), "ci step `bench` failed: gate `ci` failed");
        let io = anyhow::Error::new(std::io::Error::other("disk full"));
        assert!(!is_verdict(&io));
    }
}
