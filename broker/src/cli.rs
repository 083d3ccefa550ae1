//! The broker's command line: flags (each also read from a `BROKER_…`
//! environment variable, the usual way to configure a container) and how they
//! override the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use broker::platform::{PlatformClass, RuntimeFlavor};
use broker::Config;
use clap::builder::BoolishValueParser;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "broker",
    version,
    about = "Multi-protocol message broker (MQTT 3.1.1/5.0 over TCP and WebSocket, Kafka, AMQP 0.9.1)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML config file; flags below override its keys.
    #[arg(long, short = 'c', value_name = "FILE", env = "BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// MQTT over TCP listen address [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR", env = "BROKER_MQTT_BIND")]
    pub mqtt_bind: Option<SocketAddr>,
    /// MQTT over WebSocket listen address [default: 127.0.0.1:8083].
    #[arg(long, value_name = "ADDR", env = "BROKER_WS_BIND")]
    pub ws_bind: Option<SocketAddr>,
    /// Do not serve MQTT over WebSocket.
    #[arg(long, env = "BROKER_NO_WEBSOCKET", value_parser = BoolishValueParser::new())]
    pub no_websocket: bool,
    /// Kafka listen address [default: 127.0.0.1:9092].
    #[arg(long, value_name = "ADDR", env = "BROKER_KAFKA_BIND")]
    pub kafka_bind: Option<SocketAddr>,
    /// Do not serve the Kafka protocol.
    #[arg(long, env = "BROKER_NO_KAFKA", value_parser = BoolishValueParser::new())]
    pub no_kafka: bool,
    /// AMQP 0.9.1 listen address [default: 127.0.0.1:5672].
    #[arg(long, value_name = "ADDR", env = "BROKER_AMQP_BIND")]
    pub amqp_bind: Option<SocketAddr>,
    /// Do not serve AMQP 0.9.1.
    #[arg(long, env = "BROKER_NO_AMQP", value_parser = BoolishValueParser::new())]
    pub no_amqp: bool,
    /// Prometheus metrics listen address [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR", env = "BROKER_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// Do not serve Prometheus metrics.
    #[arg(long, env = "BROKER_NO_METRICS", value_parser = BoolishValueParser::new())]
    pub no_metrics: bool,
    /// Connection limit [default: per platform class].
    #[arg(long, value_name = "N", env = "BROKER_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Platform class [default: detected].
    #[arg(
        long,
        value_name = "CLASS",
        env = "BROKER_CLASS",
        value_enum,
        ignore_case = true
    )]
    pub class: Option<PlatformClass>,
    /// Runtime flavour [default: per class].
    #[arg(
        long,
        value_name = "FLAVOR",
        env = "BROKER_RUNTIME",
        value_enum,
        ignore_case = true
    )]
    pub runtime: Option<RuntimeFlavor>,
    /// Worker threads of the multi-threaded runtime [default: one per core].
    #[arg(long, value_name = "N", env = "BROKER_WORKER_THREADS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub worker_threads: Option<u64>,
    /// Seconds between stats lines; 0 turns them off [default: 30].
    #[arg(long, value_name = "SECS", env = "BROKER_STATS_INTERVAL")]
    pub stats_interval: Option<u64>,
    /// Data directory for on-disk storage [default: ./data].
    #[arg(long, value_name = "DIR", env = "BROKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace. RUST_LOG (e.g.
    /// `broker::kafka=debug`) sets levels per target; this one is for the rest.
    #[arg(
        long,
        value_name = "LEVEL",
        default_value = "info",
        env = "BROKER_LOG_LEVEL"
    )]
    pub log_level: tracing::Level,
    /// Once every listener is bound, write their addresses to FILE as JSON
    /// (removed again on a clean shutdown).
    #[arg(long, value_name = "FILE", env = "BROKER_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Print the detected platform and the effective limits, then exit.
    #[arg(long, env = "BROKER_PRINT_PLATFORM", value_parser = BoolishValueParser::new())]
    pub print_platform: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add, update (-b: password as an argument) or delete (-D) a user in a
    /// password file (`[auth] password_file`), like mosquitto_passwd.
    Passwd(crate::passwd_cmd::PasswdArgs),
}

impl Cli {
    /// The config file (or the defaults) with the flags applied, validated.
    pub fn config(&self) -> Result<Config, broker::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let c = &mut config;
        if let Some(a) = self.mqtt_bind {
            c.mqtt.bind = a;
        }
        if let Some(a) = self.ws_bind {
            c.mqtt.ws_bind = a;
        }
        if self.no_websocket {
            c.mqtt.websocket = false;
        }
        if let Some(a) = self.kafka_bind {
            c.kafka.bind = a;
        }
        if self.no_kafka {
            c.kafka.enabled = false;
        }
        if let Some(a) = self.amqp_bind {
            c.amqp.bind = a;
        }
        if self.no_amqp {
            c.amqp.enabled = false;
        }
        if let Some(a) = self.metrics_bind {
            c.metrics.bind = a;
        }
        if self.no_metrics {
            c.metrics.enabled = false;
        }
        if let Some(n) = self.max_connections {
            c.server.max_connections = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(class) = self.class {
            c.server.class = Some(class);
        }
        if let Some(r) = self.runtime {
            c.server.runtime = Some(r);
        }
        if let Some(n) = self.worker_threads {
            c.server.worker_threads = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(s) = self.stats_interval {
            c.server.stats_interval_secs = s;
        }
        if let Some(d) = &self.data_dir {
            c.server.data_dir = d.clone();
        }
        config
            .validate()
            .map_err(|message| broker::config::ConfigError {
                source: self
                    .config
                    .as_ref()
                    .map_or("command line".to_string(), |p| p.display().to_string()),
                message,
            })?;
        Ok(config)
    }
}
