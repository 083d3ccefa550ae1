//! Shared test harness: an in-process broker on ephemeral ports and the
//! client helpers several test modules use.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use broker::platform::Platform;
use broker::{Config, RunningBroker};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::time::timeout;

/// Starts a broker on 127.0.0.1 with OS-assigned ports; `tweak` adjusts the config first.
pub async fn start_broker_with(tweak: impl FnOnce(&mut Config)) -> RunningBroker {
    let mut config = Config::ephemeral();
    tweak(&mut config);
    config.validate().expect("test config is valid");
    broker::start(config, &Platform::detect())
        .await
        .expect("broker starts on ephemeral ports")
}

/// Writes a password file with `users` (user, password) into `dir` and
/// returns its path. 1000 PBKDF2 iterations keep the tests quick.
pub fn password_file(dir: &std::path::Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let mut file = broker::auth::PasswordFile::default();
    let iterations = std::num::NonZeroU32::new(1000).unwrap();
    for (user, password) in users {
        let entry = broker::auth::PasswordEntry::new(password, iterations).unwrap();
        file.users.insert(user.to_string(), entry);
    }
    let path = dir.join("passwd");
    file.save(&path).expect("password file written");
    path
}

/// A broker whose `auth.password_file` holds `users`; `tweak` adjusts the config further.
pub async fn start_broker_with_users(
    users: &[(&str, &str)],
    tweak: impl FnOnce(&mut Config),
) -> RunningBroker {
    let dir = tempfile::tempdir().unwrap();
    let path = password_file(dir.path(), users);
    start_broker_with(|c| {
        c.auth.password_file = Some(path);
        tweak(c);
    })
    .await
}

pub async fn start_broker() -> RunningBroker {
    start_broker_with(|_| {}).await
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

/// A lapin connection as guest to the AMQP listener at `addr`.
pub async fn amqp_connect_to(addr: SocketAddr) -> Connection {
    timeout(
        WAIT,
        Connection::connect(
            &format!("amqp://guest:guest@{addr}/%2f"),
            ConnectionProperties::default(),
        ),
    )
    .await
    .expect("connect in time")
    .expect("lapin connects")
}

/// A lapin connection as guest to the broker's AMQP listener.
pub async fn amqp_connect(broker: &RunningBroker) -> Connection {
    amqp_connect_to(broker.amqp_addr.expect("ephemeral config serves AMQP")).await
}

/// Waits until the broker has released `n` connection slots (no event exists for it).
pub async fn wait_for_free_permits(b: &RunningBroker, n: usize) {
    timeout(WAIT, async {
        while b.hub.connection_permits.available_permits() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("connection slot released");
}

/// A command-line client a test drives (`probe` is an argument it answers
/// without a broker); panics with the package to install when it is missing.
pub fn external_tool(tool: &str, probe: &str, debian_package: &str) -> Command {
    let found = Command::new(tool)
        .arg(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{tool} not found: install the Debian package {debian_package} (`cargo xtask ci` does it for you)"
    );
    Command::new(tool)
}

/// The bystander round trip of the hostile-input tests: an AMQP client publishes to a queue and gets the message back.
pub async fn amqp_round_trip(b: &broker::RunningBroker, queue: &str) {
    let conn = amqp_connect(b).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("queue declared");
    ch.basic_publish(
        "",
        queue,
        BasicPublishOptions::default(),
        b"ping",
        BasicProperties::default(),
    )
    .await
    .expect("published");
    let got = timeout(WAIT, async {
        loop {
            if let Some(m) = ch
                .basic_get(queue, BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the message comes back in time");
    assert_eq!(got.delivery.data, b"ping");
    conn.close(200, "bye").await.expect("closed");
}
