//! One terminal line per finished repeat while `cargo xtask bench` runs.

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
            "lost {}",
            crate::model::units::thousands(res.counts.lost)
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
    match &r.failure {
        None => format!("ok in {took:.1} s: {}", parts.join(", ")),
        Some(f) => format!(
            "FAILED after {took:.1} s: {f} ({}; log: {})",
            parts.join(", "),
            r.log_file
        ),
    }
}
