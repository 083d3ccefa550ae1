//! The `broker` binary: flags and config file in, a running broker out.
//!
//! Exit codes: 0 after a clean shutdown, 1 when a listener cannot be bound,
//! the runtime cannot start or the ready file cannot be written, 2 for a bad
//! flag, environment variable, config file, certificate, password or ACL
//! file, or `RUST_LOG`. `broker passwd` is in `passwd_cmd.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use broker::platform::{Platform, RuntimeFlavor};
use broker::RunningBroker;
use clap::Parser;

mod cli;
mod passwd_cmd;

use cli::Cli;

fn main() -> ExitCode {
    // clap's own error (with its "a similar argument exists" tip and the
    // usage line) and exit code 2; help and version exit 0.
    let cli = Cli::parse();
    if let Some(cli::Command::Passwd(args)) = &cli.command {
        return passwd_cmd::run(args);
    }
    if let Err(e) = init_logging(cli.log_level) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }

    let config = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Before anything is logged, so a bad certificate path is the one line printed.
    if let Err(e) = broker::tls::check(&config.tls) {
        match &cli.config {
            Some(file) => eprintln!("error: {}: {e}", file.display()),
            None => eprintln!("error: {e}"),
        }
        return ExitCode::from(2);
    }
    // A bad password or ACL file: one line naming the file, line and problem.
    if let Err(e) = broker::auth::check(&config.auth) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // A bad metrics token file or scrape user list: the same.
    if config.metrics.enabled {
        if let Err(e) = broker::metrics::access::check(&config.metrics, &config.auth) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let platform = Platform::detect();
    let class = config.server.class.unwrap_or(platform.class);
    let defaults = class.defaults();
    let flavor = config.server.runtime.unwrap_or(defaults.runtime);
    let workers = config
        .server
        .worker_threads
        .or(defaults.worker_threads)
        .unwrap_or(platform.cores);
    if cli.print_platform {
        println!("{}", platform.summary());
        println!(
            "effective class: {class}; runtime: {flavor} ({workers} workers); {:?}",
            config.limits(class)
        );
        return ExitCode::SUCCESS;
    }

    let runtime = match flavor {
        RuntimeFlavor::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .enable_all()
            .build(),
        RuntimeFlavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the {flavor} runtime: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!("{}", platform.summary());
    tracing::info!("class {class}, {flavor} runtime ({workers} workers)");
    if let Some(files) = raise_open_files_limit() {
        let wanted = config.limits(class).max_connections;
        if usize::try_from(files).is_ok_and(|f| f < wanted) {
            tracing::warn!(
                "open files limit is {files} but max_connections is {wanted}: connections beyond the limit will fail to be accepted (raise `ulimit -n` or LimitNOFILE)"
            );
        }
    }
    runtime.block_on(async move {
        let signalled = shutdown_signal();
        let mut hangup = Hangup::install();
        let running = match broker::start(config, &platform).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                // A certificate file that went bad since the check is still bad input.
                let code = match e {
                    broker::ServerError::Tls(_)
                    | broker::ServerError::Auth(_)
                    | broker::ServerError::MetricsAccess(_) => 2,
                    _ => 1,
                };
                return ExitCode::from(code);
            }
        };
        let off = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
        // The TLS listeners come last, so readers of the older fields are unaffected.
        tracing::info!(
            "listening: mqtt {} | websocket {} | kafka {} | amqp {} | metrics {} | mqtts {} | wss {} | kafka-ssl {} | amqps {}",
            running.mqtt_addr,
            running.ws_addr.map_or("off".to_string(), |a| a.to_string()),
            running
                .kafka_addr
                .map_or("off".to_string(), |a| a.to_string()),
            running
                .amqp_addr
                .map_or("off".to_string(), |a| a.to_string()),
            running
                .metrics_addr
                .map_or("off".to_string(), |a| format!("http://{a}/metrics")),
            off(running.mqtt_tls_addr),
            off(running.wss_addr),
            off(running.kafka_tls_addr),
            off(running.amqp_tls_addr),
        );
        if let Some(path) = &cli.ready_file {
            if let Err(e) = write_ready_file(path, &running) {
                eprintln!("error: {e:#}");
                running.shutdown().await;
                return ExitCode::from(1);
            }
        }
        let mut signalled = std::pin::pin!(signalled);
        loop {
            tokio::select! {
                _ = &mut signalled => break,
                _ = hangup.recv() => {
                    if running.reload_tls("SIGHUP").is_none() {
                        tracing::info!("SIGHUP: no TLS certificate configured, nothing to reload");
                    }
                }
            }
        }
        tracing::info!("shutting down");
        running.shutdown().await;
        if let Some(path) = &cli.ready_file {
            remove_ready_file(path);
        }
        ExitCode::SUCCESS
    })
}

/// Logs to stderr through a `Targets` filter (not `EnvFilter`, whose regex
/// engine would weigh on the armv7 binary): `RUST_LOG` when set, with
/// `level` for every target it does not name; otherwise `level` for all.
fn init_logging(level: tracing::Level) -> Result<(), String> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let filter = match &rust_log {
        Some(spec) => {
            let targets: Targets = spec.parse().map_err(|e| {
                format!(
                    "RUST_LOG=`{spec}`: {e} (expected e.g. `info` or `info,broker::kafka=debug`)"
                )
            })?;
            match targets.default_level() {
                Some(_) => targets,
                None => targets.with_default(level),
            }
        }
        None => Targets::new().with_default(level),
    };
    tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Whoever filters by target wants to see the targets.
        .with_target(rust_log.is_some())
        .finish()
        .with(filter)
        .init();
    Ok(())
}

/// Writes the readiness file: one JSON object with the pid and every bound
/// address (null for a listener that is off). Written to `PATH.tmp` and
/// renamed, so a reader never sees half of it.
fn write_ready_file(path: &Path, running: &RunningBroker) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, ready_json(std::process::id(), running))
        .with_context(|| format!("--ready-file: cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        format!(
            "--ready-file: cannot rename {} to {}",
            tmp.display(),
            path.display()
        )
    })
}

/// The readiness JSON by hand: a socket address prints only digits, dots,
/// colons, brackets and hex, so nothing needs escaping and the binary does
/// not link a JSON serializer for six fields.
fn ready_json(pid: u32, running: &RunningBroker) -> String {
    let addr = |a: Option<SocketAddr>| a.map_or("null".to_string(), |a| format!("\"{a}\""));
    format!(
        "{{\"pid\": {pid}, \"mqtt\": \"{}\", \"websocket\": {}, \"kafka\": {}, \"amqp\": {}, \"metrics\": {}, \"mqtt_tls\": {}, \"wss\": {}, \"kafka_tls\": {}, \"amqp_tls\": {}}}\n",
        running.mqtt_addr,
        addr(running.ws_addr),
        addr(running.kafka_addr),
        addr(running.amqp_addr),
        addr(running.metrics_addr),
        addr(running.mqtt_tls_addr),
        addr(running.wss_addr),
        addr(running.kafka_tls_addr),
        addr(running.amqp_tls_addr),
    )
}

fn remove_ready_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove the ready file {}: {e}", path.display()),
    }
}

/// Raises the soft open-files limit as far as the system allows (each
/// connection is a file descriptor); returns the limit now in force. The
/// `rlimit` crate knows that on macOS the hard limit reads as infinite and the
/// real cap is `kern.maxfilesperproc`; where there is no such limit (Windows)
/// it reports none.
fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(u64::MAX) => None,
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!("cannot raise the open-files limit: {e}");
            None
        }
    }
}

/// Installs the SIGINT/SIGTERM handlers now (before the broker announces it is
/// listening, so an early signal is not fatal) and returns a future that
/// completes on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGHUP, the TLS certificate reload signal; installed with the shutdown
/// handlers, before the broker reports ready, so an early SIGHUP does not
/// end the process.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn install() -> Hangup {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = signal(SignalKind::hangup())
                .map_err(|e| tracing::warn!("cannot install the SIGHUP handler: {e}"))
                .ok();
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    /// Completes at the next SIGHUP; never where there is none.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}
