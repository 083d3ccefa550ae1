//! The environment rows of a report (revision, host, CPU, target, broker,
//! suite…), built once and shown by both report.md and report.html.

use crate::model::report::Report;
use crate::model::units::bytes;

/// One row; `value` may hold `code` spans in Markdown's backticks.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvRow {
    pub key: &'static str,
    pub value: String,
}

/// The rows to show, in order: empty values and, for a micro-only run
/// (no broker started, no suite, no gate), the broker and suite rows left out.
pub fn environment_rows(report: &Report) -> Vec<EnvRow> {
    let env = &report.environment;
    let load = report.has_load();
    let revision = match &env.git_revision {
        Some(rev) if env.git_dirty => format!("`{rev}` (with uncommitted changes)"),
        Some(rev) => format!("`{rev}`"),
        None => "unknown (not a git checkout)".into(),
    };
    let b = &report.broker;
    let broker = format!(
        "{} {} at {}{}{}",
        b.kind.as_str(),
        b.version.as_deref().unwrap_or(""),
        listeners(b),
        b.binary
            .as_ref()
            .map(|p| format!(", `{p}`"))
            .unwrap_or_default(),
        b.binary_size_bytes
            .map(|s| format!(" ({})", bytes(s as f64)))
            .unwrap_or_default()
    );
    let rows = [
        ("Revision", revision),
        (
            "Started",
            format!("{} (finished {})", report.started_at, report.finished_at),
        ),
        ("Host", format!("{} ({})", env.hostname, env.host_triple)),
        ("CPU", cpu_row(env)),
        ("Memory", bytes(env.memory_bytes as f64)),
        ("OS", format!("{}, kernel {}", env.os, env.kernel)),
        ("Toolchain", env.rustc.clone()),
        (
            "Target",
            format!(
                "{}, runner {}{}",
                env.target_triple,
                env.runner,
                if env.emulated { " (emulated)" } else { "" }
            ),
        ),
        ("Broker", broker),
        (
            "Suite",
            format!(
                "{}, {} repeat{} per workload; gate profile `{}`",
                report.suite,
                report.repeat,
                if report.repeat == 1 { "" } else { "s" },
                report.profile
            ),
        ),
        ("Host CPU features", env.cpu_features.join(", ")),
        (
            "CPU reference",
            env.cpu_reference
                .as_ref()
                .map(|r| {
                    format!(
                        "{} CPU per 64-byte loopback round trip (median of {} bursts of {})",
                        crate::model::units::cpu_micros(r.us_per_round_trip),
                        r.bursts.len(),
                        crate::model::units::thousands(u64::from(r.round_trips_per_burst))
                    )
                })
                .unwrap_or_default(),
        ),
    ];
    rows.into_iter()
        .filter(|(k, v)| !(!load && matches!(*k, "Broker" | "Suite") || v.is_empty()))
        .map(|(key, value)| EnvRow { key, value })
        .collect()
}

/// `value` as HTML: escaped, with its backtick spans as `<code>`.
/// `model, 8 cores` or, when affinity or a cgroup quota allowed fewer,
/// `model, 8 cores (2 usable by this run)`.
fn cpu_row(env: &crate::infra::environment::Environment) -> String {
    match env.usable() {
        n if n == env.cores => format!("{}, {} cores", env.cpu_model, env.cores),
        n => format!(
            "{}, {} cores ({n} usable by this run)",
            env.cpu_model, env.cores
        ),
    }
}

pub fn html_value(value: &str, esc: impl Fn(&str) -> String) -> String {
    value
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{}</code>", esc(part))
            } else {
                esc(part)
            }
        })
        .collect()
}

/// Where the broker listened: `MQTT (Kafka K, AMQP A)`, or only the
/// protocols it has (an external broker without `--mqtt`).
pub fn listeners(b: &crate::model::broker::BrokerInfo) -> String {
    let others = match (&b.kafka_address, &b.amqp_address) {
        (Some(k), Some(a)) => format!("Kafka {k}, AMQP {a}"),
        (Some(k), None) => format!("Kafka {k}"),
        (None, Some(a)) => format!("AMQP {a}"),
        (None, None) => String::new(),
    };
    match (b.address.is_empty(), others.is_empty()) {
        (false, true) => b.address.clone(),
        (false, false) => format!("{} ({others})", b.address),
        (true, false) => format!("{others} (no MQTT)"),
        (true, true) => "no listener".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_row_shows_usable_cores_when_fewer_than_the_machines() {
        let mut env = crate::model::report::test_support::report(vec![]).environment;
        env.cores = 8;
        env.usable_cores = 2;
        assert_eq!(cpu_row(&env), "Test CPU, 8 cores (2 usable by this run)");
        env.usable_cores = 8;
        assert_eq!(cpu_row(&env), "Test CPU, 8 cores");
        env.usable_cores = 0;
        assert_eq!(cpu_row(&env), "Test CPU, 8 cores");
    }

    #[test]
    fn html_values_escape_and_keep_code_spans() {
        let esc = |s: &str| s.replace('<', "&lt;");
        assert_eq!(
            html_value("`abc1234` (a<b)", esc),
            "<code>abc1234</code> (a&lt;b)"
        );
    }
}
