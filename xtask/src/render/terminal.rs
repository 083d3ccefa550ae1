//! What `cargo xtask bench` shows while it runs: a progress bar per repeat,
//! sized from the workload's known duration, on a terminal (plain lines
//! otherwise), and one line per finished repeat.

use std::io::IsTerminal;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::model::report::RepeatReport;

pub(crate) fn one_line(r: &RepeatReport) -> String {
    let took = r.ended - r.started;
    let Some(res) = &r.result else {
        return format!(
            "FAILED after {took:.1} s: {} (log: {})",
            r.failure.as_deref().unwrap_or("no result"),
            r.log_file
        );
    };
    let mut parts = Vec::new();
    if res.counts.sent > 0 || res.counts.received > 0 {
        parts.push(format!(
            "received {}",
            crate::model::units::rate(res.rates.received_per_sec)
        ));
    }
    if let Some(e2e) = &res.latency.end_to_end {
        parts.push(format!(
            "e2e p50 {} p99 {}",
            crate::model::units::micros(e2e.p50_us as f64),
            crate::model::units::micros(e2e.p99_us as f64)
        ));
    }
    parts.push(format!(
        "connections {}/{}",
        crate::model::units::thousands(res.connections.established),
        crate::model::units::thousands(res.connections.attempted)
    ));
    if res.counts.lost > 0 {
        parts.push(format!(
            "lost {} ({})",
            crate::model::units::thousands(res.counts.lost),
            res.workload.delivery()
        ));
    }
    if res.counts.late > 0 {
        parts.push(format!(
            "late {}",
            crate::model::units::thousands(res.counts.late)
        ));
    }
    if let Some(rss) = r.broker_peak_rss_bytes {
        parts.push(format!(
            "broker RSS {}",
            crate::model::units::bytes(rss as f64)
        ));
    }
    if let Some(u) = r.broker_usage {
        parts.push(format!(
            "broker CPU {}",
            crate::model::units::percent(u.avg_cpu_machine_percent)
        ));
    }
    if let Some(text) = crate::model::report::cpu_per_work_text(
        r.broker_cpu_us_per_message,
        r.broker_cpu_us_per_connection,
    ) {
        parts.push(text);
    }
    match &r.failure {
        None => format!("ok in {took:.1} s: {}", parts.join(", ")),
        Some(f) => format!(
            "FAILED after {took:.1} s: {f} ({}; log: {})",
            parts.join(", "),
            r.log_file
        ),
    }
}

/// A bar that fills over the time a repeat is expected to take; nothing
/// when stderr is not a terminal (CI logs keep the plain lines).
pub struct RepeatProgress {
    bar: Option<(ProgressBar, JoinHandle<()>)>,
}

impl RepeatProgress {
    pub fn start(label: &str, expected: Duration) -> RepeatProgress {
        if !std::io::stderr().is_terminal() {
            return RepeatProgress { bar: None };
        }
        RepeatProgress {
            bar: Some(Self::bar(label, expected)),
        }
    }

    fn bar(label: &str, expected: Duration) -> (ProgressBar, JoinHandle<()>) {
        let total = expected.as_millis().max(1) as u64;
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("    {prefix} [{bar:30}] {elapsed} of ~{msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar.set_message(format!("{}s", expected.as_secs()));
        // The repeat blocks the bench's thread: the bar moves on its own clock.
        let ticking = bar.clone();
        let started = Instant::now();
        let ticker = std::thread::spawn(move || {
            while !ticking.is_finished() {
                ticking.set_position((started.elapsed().as_millis() as u64).min(total));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        (bar, ticker)
    }

    /// Removes the bar; the repeat's result line follows.
    pub fn finish(self) {
        if let Some((bar, ticker)) = self.bar {
            bar.finish_and_clear();
            let _ = ticker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_is_sized_from_the_expected_time_and_cleared() {
        let (bar, ticker) = RepeatProgress::bar("mqtt-fanin", Duration::from_secs(12));
        assert_eq!(bar.length(), Some(12_000));
        std::thread::sleep(Duration::from_millis(250));
        assert!(bar.position() > 0 && bar.position() <= 12_000);
        RepeatProgress {
            bar: Some((bar.clone(), ticker)),
        }
        .finish();
        assert!(bar.is_finished());
    }
}
