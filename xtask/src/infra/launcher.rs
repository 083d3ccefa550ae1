//! Starting the broker under test: our release build, the system mosquitto,
//! or an external broker someone else runs. Each ends up as a
//! [`RunningBroker`]: an address to send load to, maybe a pid to sample, and a
//! way to notice that the process died.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::infra::targets::Target;

use loadgen::Protocol;

use crate::model::broker::{BrokerInfo, BrokerKind};

/// How long a broker may take to listen before we give up.
/// Generous for wine, whose first start creates its prefix.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A broker the bench can send load to.
pub struct RunningBroker {
    pub info: BrokerInfo,
    child: Option<Child>,
    log_thread: Option<JoinHandle<()>>,
    exited: Option<String>,
}

impl RunningBroker {
    pub fn pid(&self) -> Option<u32> {
        self.info.pid
    }

    pub fn address(&self) -> &str {
        &self.info.address
    }

    /// Where Kafka workloads go, if the broker speaks Kafka.
    pub fn kafka_address(&self) -> Option<&str> {
        self.info.kafka_address.as_deref()
    }

    /// Where AMQP workloads go, if the broker speaks AMQP.
    pub fn amqp_address(&self) -> Option<&str> {
        self.info.amqp_address.as_deref()
    }

    /// How the process ended, once it has (None while it runs or when we
    /// cannot tell: an external broker without a pid).
    pub fn exited(&mut self) -> Option<String> {
        if self.exited.is_none() {
            self.exited = match (&mut self.child, self.info.pid) {
                (Some(child), _) => match child.try_wait() {
                    Ok(Some(status)) => Some(describe_exit(status)),
                    Ok(None) => None,
                    Err(e) => Some(format!("cannot wait for the broker: {e}")),
                },
                (None, Some(pid)) => (!Path::new(&format!("/proc/{pid}")).exists())
                    .then(|| format!("process {pid} is gone")),
                (None, None) => None,
            };
        }
        self.exited.clone()
    }

    /// Stops a broker we started: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            terminate(child, Duration::from_secs(5));
        }
        let _ = child.wait();
        if let Some(thread) = self.log_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM so the process can shut down cleanly, SIGKILL if it has not
/// exited after `grace`.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling a child process we own and have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
}

pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}{}", signal_name(signal)),
        _ => format!("exited: {status}"),
    }
}

pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => " (SIGKILL; out of memory?)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGINT => " (SIGINT)",
        _ => "",
    }
}

/// The config our broker gets: ephemeral MQTT, Kafka and AMQP ports, nothing else
/// listening, no stats lines, data (Kafka logs) under the run directory.
pub fn built_config(run_dir: &Path) -> String {
    let data = run_dir.join("broker-data");
    format!(
        "# Written by `cargo xtask bench` for this run.\n\
         [server]\n\
         stats_interval_secs = 0\n\
         data_dir = {}\n\
         \n\
         [mqtt]\n\
         bind = \"127.0.0.1:0\"\n\
         websocket = false\n\
         \n\
         [kafka]\n\
         bind = \"127.0.0.1:0\"\n\
         \n\
         [amqp]\n\
         bind = \"127.0.0.1:0\"\n\
         \n\
         [metrics]\n\
         enabled = false\n",
        toml_string(&data.display().to_string())
    )
}

pub(crate) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// How to start our broker binary: directly, or through a cross target's
/// runner (qemu-user, wine).
#[derive(Clone, Copy)]
pub struct Invocation<'a> {
    pub binary: &'a Path,
    /// None: the host's own build, run directly.
    pub target: Option<&'a Target>,
}

impl Invocation<'_> {
    /// The command that runs the binary (with the runner in front, if any).
    pub fn command(&self) -> Result<Command> {
        match self.target {
            None => Ok(Command::new(self.binary)),
            Some(t) => t.run_command(self.binary).with_context(|| {
                format!(
                    "{} is build only ([runner] kind = \"none\" in {}): nothing here can run it",
                    t.triple(),
                    t.file.display()
                )
            }),
        }
    }
}

/// Starts our broker with a generated config in `run_dir`; ready once it has
/// written its `--ready-file` (every listener bound), which also gives the
/// addresses.
pub fn start_built(invocation: Invocation<'_>, run_dir: &Path) -> Result<RunningBroker> {
    let binary = invocation.binary;
    let config = built_config(run_dir);
    let config_file = run_dir.join("broker.toml");
    std::fs::write(&config_file, &config)
        .with_context(|| format!("cannot write {}", config_file.display()))?;
    let version = invocation
        .command()?
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let platform = invocation
        .command()?
        .args(["--print-platform", "--config"])
        .arg(&config_file)
        .env("NO_COLOR", "1")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let mut command = invocation.command()?;
    command
        .args([
            "--mqtt-bind",
            "127.0.0.1:0",
            "--no-websocket",
            "--no-metrics",
            "--stats-interval",
            "0",
            "--config",
        ])
        .arg(&config_file)
        // Its stderr goes to a log file: no colour codes.
        .env("NO_COLOR", "1")
        .current_dir(run_dir);
    let log = run_dir.join("broker.log");
    // Absolute: the broker runs in `run_dir` and must not resolve it again.
    let ready_file = std::path::absolute(run_dir.join("broker.ready.json"))
        .context("cannot resolve the ready file's path")?;
    // A file left by an earlier run must not pass for this broker's.
    match std::fs::remove_file(&ready_file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", ready_file.display()));
        }
        _ => {}
    }
    command.arg("--ready-file").arg(&ready_file);
    let (mut child, log_thread) =
        spawn_logged(command, &log).with_context(|| format!("starting {}", binary.display()))?;
    let ready = match wait_ready(&mut child, &ready_file, &log, READY_TIMEOUT) {
        Ok(ready) => ready,
        Err(e) => {
            let _ = log_thread.join();
            return Err(e).with_context(|| format!("starting {}", binary.display()));
        }
    };
    let addr = ready.mqtt;
    // The config above binds every protocol: a listener the broker does not
    // report is a broken build, not a protocol to skip (skipped workloads
    // would drop out of the gate and let it pass).
    let listeners = ready_listeners(&ready);
    let (kafka_address, amqp_address) = match listeners {
        Ok(pair) => pair,
        Err(e) => {
            terminate(&mut child, Duration::from_secs(5));
            let _ = log_thread.join();
            return Err(e).with_context(|| format!("starting {}", binary.display()));
        }
    };
    let binary = match invocation
        .target
        .and_then(|t| t.def.runner.command.as_deref())
    {
        Some(runner) => format!("{} (through {runner})", binary.display()),
        None => binary.display().to_string(),
    };
    Ok(RunningBroker {
        info: BrokerInfo {
            kind: BrokerKind::Built,
            binary_size_bytes: std::fs::metadata(invocation.binary).ok().map(|m| m.len()),
            binary: Some(binary),
            address: addr.to_string(),
            kafka_address,
            amqp_address,
            pid: Some(child.id()),
            config: Some(config),
            version,
            platform,
            log: Some("broker.log".into()),
        },
        child: Some(child),
        log_thread: Some(log_thread),
        exited: None,
    })
}

/// The mosquitto config the bench uses: one loopback listener, anonymous
/// clients, no connection limit, mosquitto's default queue depth spelled out.
pub fn mosquitto_config(port: u16) -> String {
    format!(
        "# Written by `cargo xtask bench` for this run.\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         max_connections -1\n\
         max_queued_messages 1000\n\
         persistence false\n\
         log_dest stderr\n\
         connection_messages false\n"
    )
}

/// Starts the system `mosquitto` on a free loopback port.
pub fn start_mosquitto(run_dir: &Path) -> Result<RunningBroker> {
    let binary = which("mosquitto").context(
        "`mosquitto` is not installed (not on PATH, nor in /usr/sbin): install the Debian package `mosquitto` (apt-get install mosquitto)",
    )?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port for mosquitto")?
        .port();
    let config = mosquitto_config(port);
    let config_file = run_dir.join("mosquitto.conf");
    std::fs::write(&config_file, &config)
        .with_context(|| format!("cannot write {}", config_file.display()))?;
    let version = Command::new(&binary).arg("-h").output().ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .map(|l| l.trim().to_string())
    });
    let mut command = Command::new(&binary);
    command.arg("-c").arg(&config_file).current_dir(run_dir);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let log = run_dir.join("broker.log");
    let (child, log_thread) =
        spawn_logged(command, &log).with_context(|| format!("starting {}", binary.display()))?;
    let mut broker = RunningBroker {
        info: BrokerInfo {
            kind: BrokerKind::Mosquitto,
            binary: Some(binary.display().to_string()),
            binary_size_bytes: std::fs::metadata(&binary).ok().map(|m| m.len()),
            address: addr.to_string(),
            kafka_address: None,
            amqp_address: None,
            pid: Some(child.id()),
            config: Some(config),
            version,
            platform: None,
            log: Some("broker.log".into()),
        },
        child: Some(child),
        log_thread: Some(log_thread),
        exited: None,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(how) = broker.exited() {
            bail!(
                "mosquitto {how} before accepting connections; its log:\n{}",
                tail(&log, 10)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "mosquitto did not accept connections on {addr} within {} s; see {}",
                READY_TIMEOUT.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(broker)
}

/// A broker someone else runs: it must accept a TCP connection now on
/// every address given (at least one of MQTT, Kafka, AMQP).
pub fn external(
    mqtt: Option<&str>,
    kafka: Option<&str>,
    amqp: Option<&str>,
    pid: Option<u32>,
) -> Result<RunningBroker> {
    if mqtt.is_none() && kafka.is_none() && amqp.is_none() {
        bail!("--broker external needs at least one address: --mqtt, --kafka or --amqp HOST:PORT");
    }
    for (flag, name, address) in [
        ("--mqtt", "MQTT", mqtt),
        ("--kafka", "Kafka", kafka),
        ("--amqp", "AMQP", amqp),
    ] {
        let Some(address) = address else { continue };
        let addr = address
            .to_socket_addrs()
            .with_context(|| format!("{flag} {address}: not a HOST:PORT address"))?
            .next()
            .with_context(|| format!("{flag} {address}: resolves to no address"))?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| {
            format!("external broker's {name} listener at {address} does not accept connections")
        })?;
    }
    if let Some(pid) = pid {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("--broker-pid {pid}: no such process on this host");
        }
    }
    Ok(RunningBroker {
        info: BrokerInfo {
            kind: BrokerKind::External,
            binary: pid.and_then(|p| {
                std::fs::read_link(format!("/proc/{p}/exe"))
                    .ok()
                    .map(|b| b.display().to_string())
            }),
            binary_size_bytes: None,
            address: mqtt.unwrap_or_default().to_string(),
            kafka_address: kafka.map(str::to_string),
            amqp_address: amqp.map(str::to_string),
            pid,
            config: None,
            version: None,
            platform: None,
            log: None,
        },
        child: None,
        log_thread: None,
        exited: None,
    })
}

/// The Kafka and AMQP addresses of our broker's ready file; both must be
/// there, since the bench config binds both.
pub(crate) fn ready_listeners(ready: &ReadyFile) -> Result<(Option<String>, Option<String>)> {
    let missing: Vec<&str> = [("Kafka", ready.kafka), ("AMQP", ready.amqp)]
        .into_iter()
        .filter(|(_, a)| a.is_none())
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        bail!(
            "the broker reported no {} listener although the bench config binds one: \
             its workloads would be skipped and the gate could pass without them",
            missing.join(" and ")
        );
    }
    Ok((
        ready.kafka.map(|a| a.to_string()),
        ready.amqp.map(|a| a.to_string()),
    ))
}

/// What the broker writes to its `--ready-file` once every listener is
/// bound (addresses as the bound `SocketAddr`s; null when a listener is off).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReadyFile {
    pub pid: u32,
    pub mqtt: SocketAddr,
    pub websocket: Option<SocketAddr>,
    pub kafka: Option<SocketAddr>,
    pub amqp: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

impl ReadyFile {
    pub fn parse(text: &str) -> Result<ReadyFile> {
        serde_json::from_str(text).context("not a broker ready file")
    }
}

/// Waits until the broker has written `ready_file` (it writes a temporary
/// file and renames it, so a file that exists is complete), failing early
/// when the process exits and after `timeout` at the latest.
pub fn wait_ready(
    child: &mut Child,
    ready_file: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<ReadyFile> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready_file) {
            return ReadyFile::parse(&text).with_context(|| format!("{}", ready_file.display()));
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "broker {} before it was ready; its log ({}):\n{}",
                describe_exit(status),
                log.display(),
                tail(log, 10)
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "broker wrote no ready file ({}) within {} s; see {}",
                ready_file.display(),
                timeout.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `command` with stdout and stderr in `log` (stderr line by line
/// through a thread, which ends when the process closes it).
pub(crate) fn spawn_logged(mut command: Command, log: &Path) -> Result<(Child, JoinHandle<()>)> {
    let mut file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let stdout = file.try_clone()?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().expect("piped stderr");
    let thread = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
        }
    });
    Ok((child, thread))
}

/// The last `n` lines of a log file, indented, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() {
        return "    (empty)".into();
    }
    lines[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An executable on PATH, or in the sbin directories daemons live in (not on
/// every user's PATH).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Where loadgen sends a workload of `protocol`, or why it cannot run.
pub fn target_address(broker: &RunningBroker, protocol: Protocol) -> Result<String, String> {
    match protocol {
        Protocol::Mqtt if broker.address().is_empty() => Err(
            "an MQTT workload, and no MQTT address for the external broker: give --mqtt HOST:PORT"
                .to_string(),
        ),
        Protocol::Mqtt => Ok(broker.address().to_string()),
        Protocol::Kafka => broker.kafka_address().map(str::to_string).ok_or_else(|| {
            match broker.info.kind {
                crate::model::broker::BrokerKind::External => {
                    "a Kafka workload, and no Kafka address for the external broker: give --kafka HOST:PORT".to_string()
                }
                kind => format!(
                    "a Kafka workload, and the {} broker has no Kafka listener",
                    kind.as_str()
                ),
            }
        }),
        Protocol::Amqp => broker.amqp_address().map(str::to_string).ok_or_else(|| {
            match broker.info.kind {
                crate::model::broker::BrokerKind::External => {
                    "an AMQP workload, and no AMQP address for the external broker: give --amqp HOST:PORT".to_string()
                }
                kind => format!(
                    "an AMQP workload, and the {} broker has no AMQP listener",
                    kind.as_str()
                ),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_file_parses_with_listeners_off() {
        let ready = ReadyFile::parse(
            r#"{"pid": 1234, "mqtt": "127.0.0.1:40123", "websocket": null, "kafka": "127.0.0.1:40999", "amqp": "[::1]:5672", "metrics": null}"#,
        )
        .unwrap();
        assert_eq!(ready.pid, 1234);
        assert_eq!(ready.mqtt, "127.0.0.1:40123".parse().unwrap());
        assert_eq!(ready.websocket, None);
        assert_eq!(ready.kafka, Some("127.0.0.1:40999".parse().unwrap()));
        assert_eq!(ready.amqp, Some("[::1]:5672".parse().unwrap()));
        assert_eq!(ready.metrics, None);
        assert!(ReadyFile::parse(r#"{"pid": 1, "mqtt": null}"#).is_err());
        assert!(ReadyFile::parse("listening: mqtt 127.0.0.1:1").is_err());
    }

    #[test]
    fn readiness_is_the_file_the_broker_renames_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("broker.ready.json");
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "sleep 0.2; printf '%s' '{{\"pid\": 7, \"mqtt\": \"127.0.0.1:1883\", \"websocket\": null, \"kafka\": null, \"amqp\": null, \"metrics\": \"127.0.0.1:9090\"}}' > {0}.tmp; mv {0}.tmp {0}; sleep 5",
            ready.display()
        ));
        let (mut child, _log) = spawn_logged(command, &dir.path().join("b.log")).unwrap();
        let got = wait_ready(
            &mut child,
            &ready,
            &dir.path().join("b.log"),
            Duration::from_secs(10),
        );
        let _ = child.kill();
        let _ = child.wait();
        let got = got.unwrap();
        assert_eq!(got.mqtt, "127.0.0.1:1883".parse().unwrap());
        assert_eq!(got.metrics, Some("127.0.0.1:9090".parse().unwrap()));
    }

    #[test]
    fn a_broker_that_writes_no_ready_file_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 30"]);
        let log = dir.path().join("b.log");
        let (mut child, _log) = spawn_logged(command, &log).unwrap();
        let err = wait_ready(
            &mut child,
            &dir.path().join("never.json"),
            &log,
            Duration::from_millis(300),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("wrote no ready file"), "{err}");
        assert!(child.try_wait().unwrap().is_some(), "the broker is stopped");
    }

    #[test]
    fn configs_say_what_the_bench_needs() {
        let conf = mosquitto_config(4321);
        for line in [
            "listener 4321 127.0.0.1",
            "allow_anonymous true",
            "max_connections -1",
            "max_queued_messages 1000",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} in\n{conf}");
        }
        let conf = built_config(Path::new("/tmp/run \"x\""));
        let parsed: toml::Table = toml::from_str(&conf).unwrap();
        assert_eq!(parsed["mqtt"]["bind"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(parsed["kafka"]["bind"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(parsed["amqp"]["bind"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(
            parsed["server"]["data_dir"].as_str(),
            Some("/tmp/run \"x\"/broker-data")
        );
    }

    #[test]
    fn broker_that_never_listens_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("xtask-launcher-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'error: cannot bind' >&2; exit 1"]);
        let log = dir.join("b.log");
        let (mut child, thread) = spawn_logged(command, &log).unwrap();
        // The log thread has every line once the process closed stderr.
        let _ = thread.join();
        let err = wait_ready(&mut child, &dir.join("ready.json"), &log, READY_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exited with code 1") && err.contains("cannot bind"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stand-in broker that keeps the readiness contract: answers
    /// `--version` and `--print-platform`, else writes `--ready-file` (temp
    /// file, then rename) and waits to be stopped.
    const FAKE_BROKER: &str = r#"#!/bin/sh
case "$1" in
  --version) echo "broker 0.0.0-fake"; exit 0 ;;
  --print-platform) echo "fake platform"; exit 0 ;;
esac
ready=""
while [ $# -gt 0 ]; do
  if [ "$1" = "--ready-file" ]; then ready="$2"; fi
  shift
done
[ -n "$ready" ] || { echo "no --ready-file given" >&2; exit 3; }
echo "listening: mqtt 127.0.0.1:1 (not what xtask reads)" >&2
printf '{"pid": %s, "mqtt": "127.0.0.1:41883", "websocket": null, "kafka": "127.0.0.1:49092", "amqp": AMQP, "metrics": null}\n' $$ > "$ready.tmp"
mv "$ready.tmp" "$ready"
exec sleep 30
"#;

    #[test]
    fn our_broker_is_started_with_a_ready_file_and_read_from_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-broker");
        std::fs::write(&fake, FAKE_BROKER.replace("AMQP", "\"127.0.0.1:45672\"")).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&run_dir).unwrap();
        // A stale file from an earlier run must not count.
        std::fs::write(
            run_dir.join("broker.ready.json"),
            r#"{"pid": 1, "mqtt": "127.0.0.1:1", "websocket": null, "kafka": null, "amqp": null, "metrics": null}"#,
        )
        .unwrap();
        let mut broker = start_built(
            Invocation {
                binary: &fake,
                target: None,
            },
            &run_dir,
        )
        .unwrap();
        assert_eq!(broker.address(), "127.0.0.1:41883");
        assert_eq!(
            broker.info.kafka_address.as_deref(),
            Some("127.0.0.1:49092")
        );
        assert_eq!(broker.info.amqp_address.as_deref(), Some("127.0.0.1:45672"));
        assert_eq!(broker.info.version.as_deref(), Some("broker 0.0.0-fake"));
        assert!(broker.pid().is_some());
        broker.stop();
    }

    /// Our broker without an AMQP listener (the ready file says null) is an
    /// error, not a reason to skip the AMQP workloads.
    #[test]
    fn our_broker_missing_a_listener_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-broker");
        std::fs::write(&fake, FAKE_BROKER.replace("AMQP", "null")).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&run_dir).unwrap();
        let err = start_built(
            Invocation {
                binary: &fake,
                target: None,
            },
            &run_dir,
        )
        .err()
        .expect("a missing AMQP listener is refused");
        let text = format!("{err:#}");
        assert!(text.contains("no AMQP listener"), "{text}");
    }
}
