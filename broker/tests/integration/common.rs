//! Shared test harness: an in-process broker on ephemeral ports.

use std::net::SocketAddr;
use std::time::Duration;

use broker::platform::Platform;
use broker::{Config, RunningBroker};

/// Starts a broker on 127.0.0.1 with OS-assigned ports; `tweak` adjusts the config first.
pub async fn start_broker_with(tweak: impl FnOnce(&mut Config)) -> RunningBroker {
    let mut config = Config::ephemeral();
    tweak(&mut config);
    config.validate().expect("test config is valid");
    broker::start(config, &Platform::detect())
        .await
        .expect("broker starts on ephemeral ports")
}

pub async fn start_broker() -> RunningBroker {
    start_broker_with(|_| {}).await
}

pub fn host_port(addr: SocketAddr) -> (String, u16) {
    (addr.ip().to_string(), addr.port())
}

/// Upper bound for any single wait in a test; generous for a loaded 2-core CI box.
pub const WAIT: Duration = Duration::from_secs(10);

/// `bootstrap.servers` for the broker's Kafka listener.
pub fn kafka_bootstrap(broker: &RunningBroker) -> String {
    broker
        .kafka_addr
        .expect("ephemeral config serves Kafka")
        .to_string()
}
