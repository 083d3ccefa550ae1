//! The `broker` binary as a child process: the one helper every process-level
//! test starts it with, reading its addresses from the `--ready-file` JSON.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tempfile::TempDir;

/// How long a broker may take to bind its listeners on a loaded 2-core CI box.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// The binary under test: the release build when `cargo xtask ci` provides it
/// (`BROKER_RELEASE_BIN`), otherwise the one cargo built for this test run.
pub fn broker_bin() -> PathBuf {
    match std::env::var_os("BROKER_RELEASE_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            eprintln!("note: BROKER_RELEASE_BIN not set; testing the debug binary");
            PathBuf::from(env!("CARGO_BIN_EXE_broker"))
        }
    }
}

/// Flags for a broker serving MQTT over TCP only, on an ephemeral port.
pub const MQTT_ONLY: &[&str] = &[
    "--mqtt-bind",
    "127.0.0.1:0",
    "--no-websocket",
    "--no-kafka",
    "--no-amqp",
    "--no-metrics",
    "--stats-interval",
    "0",
];

/// The bound addresses from the ready file (`null` for a listener that is off).
#[derive(Debug, Clone, Deserialize)]
pub struct Addresses {
    pub pid: u32,
    pub mqtt: SocketAddr,
    pub websocket: Option<SocketAddr>,
    pub kafka: Option<SocketAddr>,
    pub amqp: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// A running broker process; SIGKILLed and reaped on drop so a failing test
/// leaves nothing behind.
pub struct BrokerProcess {
    child: Child,
    addresses: Addresses,
    /// The ready file's text as the broker wrote it.
    ready_json: String,
    ready_file: PathBuf,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Joined once the broker has exited, so `stderr()` then has all it said.
    stderr_reader: Option<JoinHandle<()>>,
    /// Holds the ready file; removed with the process handle.
    _scratch: TempDir,
    data_dir: Option<TempDir>,
}

impl BrokerProcess {
    /// Starts `broker ARGS --ready-file …` and waits until it is ready.
    pub fn spawn(args: &[&str]) -> BrokerProcess {
        Self::start(args, None, |_| {})
    }

    /// Like [`spawn`](Self::spawn), with `--data-dir` on a fresh temporary
    /// directory this handle owns; [`kill`](Self::kill) hands it back.
    pub fn spawn_with_data_dir(args: &[&str]) -> BrokerProcess {
        Self::spawn_configured(args, |_| {})
    }

    /// Like [`spawn_with_data_dir`](Self::spawn_with_data_dir), with
    /// `configure` adjusting the command (environment, limits) first.
    pub fn spawn_configured(args: &[&str], configure: impl FnOnce(&mut Command)) -> BrokerProcess {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        Self::start(args, Some(data_dir), configure)
    }

    /// Starts a broker on a data directory a previous process left behind.
    pub fn respawn(data_dir: TempDir, args: &[&str]) -> BrokerProcess {
        Self::start(args, Some(data_dir), |_| {})
    }

    /// Like [`respawn`](Self::respawn), with `configure` adjusting the
    /// command (environment, limits) first.
    pub fn respawn_configured(
        data_dir: TempDir,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> BrokerProcess {
        Self::start(args, Some(data_dir), configure)
    }

    fn start(
        args: &[&str],
        data_dir: Option<TempDir>,
        configure: impl FnOnce(&mut Command),
    ) -> BrokerProcess {
        // A fresh directory, so no stale ready file can be mistaken for this broker's.
        let scratch = tempfile::tempdir().expect("temp dir for the ready file");
        let ready_file = scratch.path().join("ready.json");
        let mut command = Command::new(broker_bin());
        command.args(args).arg("--ready-file").arg(&ready_file);
        if let Some(dir) = &data_dir {
            command.arg("--data-dir").arg(dir.path());
        }
        // The child's log filter is the test's choice, not the calling shell's.
        command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("broker binary starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = {
            let mut pipe = child.stderr.take().expect("piped stderr");
            let stderr = Arc::clone(&stderr);
            // A reader thread keeps the pipe drained, so a chatty broker never blocks on it.
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    stderr.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        let mut stderr_reader = Some(stderr_reader);
        let (addresses, ready_json) =
            wait_ready(args, &mut child, &ready_file, &stderr, &mut stderr_reader);
        BrokerProcess {
            child,
            addresses,
            ready_json,
            ready_file,
            stderr,
            stderr_reader,
            _scratch: scratch,
            data_dir,
        }
    }

    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    pub fn mqtt(&self) -> SocketAddr {
        self.addresses.mqtt
    }

    pub fn kafka(&self) -> SocketAddr {
        self.addresses.kafka.expect("the broker serves Kafka")
    }

    pub fn amqp(&self) -> SocketAddr {
        self.addresses.amqp.expect("the broker serves AMQP")
    }

    pub fn ready_file(&self) -> &Path {
        &self.ready_file
    }

    /// The ready file as the broker wrote it, for tests of its exact form.
    pub fn ready_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ready_json).expect("the ready file is JSON")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) until a line the broker logged satisfies `wanted`.
    pub fn wait_for_log(&self, what: &str, wanted: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stderr().lines().any(&wanted) {
            assert!(
                Instant::now() < deadline,
                "no {what} logged within 10 s:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the broker wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The exit status if the process has ended, waiting up to `grace` for it.
    pub fn exited(&mut self, grace: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the broker") {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits (bounded) for the exit: the clean shutdown path.
    #[cfg(unix)]
    pub fn stop(&mut self) -> ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid fits in pid_t");
        // SAFETY: sending a signal to a child process we own and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM sent");
        let Some(status) = self.exited(STOP_WITHIN) else {
            panic!(
                "broker still running {STOP_WITHIN:?} after SIGTERM; stderr:\n{}",
                self.stderr()
            );
        };
        // The pipe is closed now: wait for its last bytes so `stderr()` is whole.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// SIGKILL (no shutdown path runs) and reap; hands back the data
    /// directory, if this handle owned one, for a restart on the same data.
    pub fn kill(mut self) -> Option<TempDir> {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
        self.data_dir.take()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls for the ready file; panics with the broker's stderr if it exits
/// first or is not ready within [`READY_WITHIN`].
fn wait_ready(
    args: &[&str],
    child: &mut Child,
    ready_file: &Path,
    stderr: &Mutex<Vec<u8>>,
    stderr_reader: &mut Option<JoinHandle<()>>,
) -> (Addresses, String) {
    let text =
        |stderr: &Mutex<Vec<u8>>| String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Some(status) = child.try_wait().expect("poll the broker") {
            if let Some(reader) = stderr_reader.take() {
                let _ = reader.join();
            }
            panic!(
                "broker {args:?} exited with {status} before it was ready; stderr:\n{}",
                text(stderr)
            );
        }
        // The broker renames the file into place, so once it exists it is whole.
        if let Ok(json) = std::fs::read_to_string(ready_file) {
            let addresses: Addresses = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("ready file {json:?} does not parse: {e}"));
            assert_eq!(addresses.pid, child.id(), "the ready file names our child");
            return (addresses, json);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "broker {args:?} not ready within {READY_WITHIN:?}; stderr:\n{}",
                text(stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
