//! The `broker` binary: flags and config file in, a running broker out.
//!
//! Exit codes: 0 after a clean shutdown, 1 when a listener cannot be bound or
//! the runtime cannot start, 2 for a bad flag or config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use broker::platform::{Platform, PlatformClass, RuntimeFlavor};
use broker::Config;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "broker",
    version,
    about = "Multi-protocol message broker (MQTT 3.1.1/5.0 over TCP and WebSocket, Kafka, AMQP 0.9.1)"
)]
struct Cli {
    /// TOML config file; flags below override its keys.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// MQTT over TCP listen address [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR")]
    mqtt_bind: Option<SocketAddr>,
    /// MQTT over WebSocket listen address [default: 127.0.0.1:8083].
    #[arg(long, value_name = "ADDR")]
    ws_bind: Option<SocketAddr>,
    /// Do not serve MQTT over WebSocket.
    #[arg(long)]
    no_websocket: bool,
    /// Kafka listen address [default: 127.0.0.1:9092].
    #[arg(long, value_name = "ADDR")]
    kafka_bind: Option<SocketAddr>,
    /// Do not serve the Kafka protocol.
    #[arg(long)]
    no_kafka: bool,
    /// AMQP 0.9.1 listen address [default: 127.0.0.1:5672].
    #[arg(long, value_name = "ADDR")]
    amqp_bind: Option<SocketAddr>,
    /// Do not serve AMQP 0.9.1.
    #[arg(long)]
    no_amqp: bool,
    /// Prometheus metrics listen address [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR")]
    metrics_bind: Option<SocketAddr>,
    /// Do not serve Prometheus metrics.
    #[arg(long)]
    no_metrics: bool,
    /// Connection limit [default: per platform class].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// Platform class: high_perf, embedded or generic [default: detected].
    #[arg(long, value_name = "CLASS")]
    class: Option<PlatformClass>,
    /// Runtime flavour: multi_thread or current_thread [default: per class].
    #[arg(long, value_name = "FLAVOR")]
    runtime: Option<RuntimeFlavor>,
    /// Worker threads of the multi-threaded runtime [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    worker_threads: Option<u64>,
    /// Seconds between stats lines; 0 turns them off [default: 30].
    #[arg(long, value_name = "SECS")]
    stats_interval: Option<u64>,
    /// Data directory for on-disk storage [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: tracing::Level,
    /// Print the detected platform and the effective limits, then exit.
    #[arg(long)]
    print_platform: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line instead of clap's usage block: what is wrong, and where to look.
            let first = e.to_string();
            let first = first
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("error: {first} (see `broker --help`)");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    let config = match build_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
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
        let running = match broker::start(config, &platform).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        tracing::info!(
            "listening: mqtt {} | websocket {} | kafka {} | amqp {} | metrics {}",
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
        );
        signalled.await;
        tracing::info!("shutting down");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn build_config(cli: &Cli) -> Result<Config, broker::config::ConfigError> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let c = &mut config;
    if let Some(a) = cli.mqtt_bind {
        c.mqtt.bind = a;
    }
    if let Some(a) = cli.ws_bind {
        c.mqtt.ws_bind = a;
    }
    if cli.no_websocket {
        c.mqtt.websocket = false;
    }
    if let Some(a) = cli.kafka_bind {
        c.kafka.bind = a;
    }
    if cli.no_kafka {
        c.kafka.enabled = false;
    }
    if let Some(a) = cli.amqp_bind {
        c.amqp.bind = a;
    }
    if cli.no_amqp {
        c.amqp.enabled = false;
    }
    if let Some(a) = cli.metrics_bind {
        c.metrics.bind = a;
    }
    if cli.no_metrics {
        c.metrics.enabled = false;
    }
    if let Some(n) = cli.max_connections {
        c.server.max_connections = Some(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(class) = cli.class {
        c.server.class = Some(class);
    }
    if let Some(r) = cli.runtime {
        c.server.runtime = Some(r);
    }
    if let Some(n) = cli.worker_threads {
        c.server.worker_threads = Some(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(s) = cli.stats_interval {
        c.server.stats_interval_secs = s;
    }
    if let Some(d) = &cli.data_dir {
        c.server.data_dir = d.clone();
    }
    config
        .validate()
        .map_err(|message| broker::config::ConfigError {
            source: cli
                .config
                .as_ref()
                .map_or("command line".to_string(), |p| p.display().to_string()),
            message,
        })?;
    Ok(config)
}

/// Raises the soft open-files limit to the hard limit (each connection is a
/// file descriptor); returns the limit now in force.
#[cfg(unix)]
// rlim_t is u64 here but u32 on 32-bit glibc targets, hence the conversion.
#[allow(clippy::useless_conversion)]
fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Some(u64::from(lim.rlim_cur))
}

#[cfg(not(unix))]
fn raise_open_files_limit() -> Option<u64> {
    None
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
