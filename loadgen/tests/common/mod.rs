//! What every whole-run test needs: an in-process broker on ephemeral ports,
//! workloads from TOML, and a run against the broker's listener for the
//! workload's protocol.

use broker::platform::Platform;
use broker::{Config, RunningBroker};
use loadgen::progress::ProgressMode;
use loadgen::result::LatencySummary;
use loadgen::runner::{run, RunOptions};
use loadgen::{LoadResult, Protocol, Workload};

pub async fn start_broker() -> RunningBroker {
    broker::start(Config::ephemeral(), &Platform::detect())
        .await
        .expect("broker starts on ephemeral ports")
}

pub fn workload(toml: &str) -> Workload {
    Workload::parse(toml).unwrap_or_else(|e| panic!("test workload: {e}"))
}

/// The broker's `HOST:PORT` for `protocol`.
pub fn target(broker: &RunningBroker, protocol: Protocol) -> String {
    match protocol {
        Protocol::Mqtt => Some(broker.mqtt_addr),
        Protocol::Kafka => broker.kafka_addr,
        Protocol::Amqp => broker.amqp_addr,
    }
    .unwrap_or_else(|| panic!("the ephemeral config serves {}", protocol.as_str()))
    .to_string()
}

pub fn options(target: String) -> RunOptions {
    RunOptions {
        target,
        progress: ProgressMode::Off,
    }
}

/// Runs `w` against the broker's listener for its protocol.
pub async fn run_against(broker: &RunningBroker, w: &Workload) -> LoadResult {
    run(w, &options(target(broker, w.protocol)))
        .await
        .expect("workload runs")
}

/// A latency summary is present, counted something, has its percentiles in
/// order and carries its histogram.
pub fn assert_sane(summary: &Option<LatencySummary>, what: &str) {
    let s = summary
        .as_ref()
        .unwrap_or_else(|| panic!("{what} latency present"));
    assert!(s.count > 0, "{what}: {s:?}");
    assert!(
        s.min_us <= s.p50_us && s.p50_us <= s.p99_us && s.p99_us <= s.max_us,
        "{what}: percentiles ordered: {s:?}"
    );
    assert!(!s.histogram.is_empty(), "{what}: histogram serialized");
}
/// Used by the fault-proxy test only.
#[allow(dead_code)]
pub mod fault_proxy;
