//! Listeners, the connection limit, the stats line, and graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::amqp::AmqpHub;
use crate::config::Config;
use crate::kafka::config::KafkaConfig;
use crate::kafka::KafkaHub;
use crate::metrics::{self, Metrics, Protocol};
use crate::mqtt::connection;
use crate::mqtt::hub::MqttHub;
use crate::mqtt::transport::WsTransport;
use crate::platform::Platform;

/// How long shutdown waits for connections to say goodbye before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for {what} on {addr}: {source} (is another broker running? pick another address with --{flag} or in the config file)")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        flag: &'static str,
        source: io::Error,
    },
    #[error("cannot open the Kafka log under {dir}: {source} (check server.data_dir, or set kafka.storage = \"memory\")")]
    KafkaStorage {
        dir: std::path::PathBuf,
        source: crate::storage::StorageError,
    },
    #[error("cannot open the durable AMQP queues under {dir}: {source} (check server.data_dir, or set amqp.storage = \"memory\")")]
    AmqpStorage {
        dir: std::path::PathBuf,
        source: crate::storage::StorageError,
    },
}

/// A started broker: where it listens, and the handle to stop it.
pub struct RunningBroker {
    pub mqtt_addr: SocketAddr,
    pub ws_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub kafka_addr: Option<SocketAddr>,
    pub amqp_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<MqttHub>,
    pub kafka: Option<Arc<KafkaHub>>,
    pub amqp: Option<Arc<AmqpHub>>,
    shutdown: watch::Sender<bool>,
    tasks: TaskTracker,
}

impl RunningBroker {
    /// Stops accepting, tells every client the server is going away (wills
    /// are sent), and waits up to a few seconds for connections to close.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: some connections did not close within {SHUTDOWN_GRACE:?}");
        }
    }
}

async fn bind(
    what: &'static str,
    flag: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            what,
            addr,
            flag,
            source,
        })
}

/// Binds every listener, then serves in background tasks on the current runtime.
pub async fn start(config: Config, platform: &Platform) -> Result<RunningBroker, ServerError> {
    let class = config.server.class.unwrap_or(platform.class);
    let limits = config.limits(class);
    let metrics = Metrics::new(platform, limits.max_connections);
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));

    let mqtt_listener = bind("MQTT", "mqtt-bind", config.mqtt.bind).await?;
    let ws_listener = match config.mqtt.websocket {
        true => Some(bind("MQTT over WebSocket", "ws-bind", config.mqtt.ws_bind).await?),
        false => None,
    };
    let kafka_listener = match config.kafka.enabled {
        true => Some(bind("Kafka", "kafka-bind", config.kafka.bind).await?),
        false => None,
    };
    let amqp_listener = match config.amqp.enabled {
        true => Some(bind("AMQP", "amqp-bind", config.amqp.bind).await?),
        false => None,
    };
    let metrics_listener = match config.metrics.enabled {
        true => Some(bind("Prometheus metrics", "metrics-bind", config.metrics.bind).await?),
        false => None,
    };
    let local = |l: &TcpListener| l.local_addr().expect("a bound listener has an address");
    let mqtt_addr = local(&mqtt_listener);
    let ws_addr = ws_listener.as_ref().map(local);
    let metrics_addr = metrics_listener.as_ref().map(local);
    let kafka_addr = kafka_listener.as_ref().map(local);
    let amqp_addr = amqp_listener.as_ref().map(local);

    let kafka = match kafka_addr {
        Some(addr) => Some(
            KafkaHub::open(
                KafkaConfig {
                    decode_budget_bytes: Some(limits.kafka_decode_budget_bytes),
                    ..config.kafka.clone()
                }
                .with_class_defaults(limits.kafka_topics),
                &config.server.data_dir,
                addr,
                metrics.clone(),
                permits.clone(),
            )
            .map_err(|source| ServerError::KafkaStorage {
                dir: config.server.data_dir.join("kafka"),
                source,
            })?,
        ),
        None => None,
    };
    let amqp = match amqp_addr {
        Some(_) => Some(
            AmqpHub::open(
                config.amqp.clone(),
                &config.server.data_dir,
                metrics.clone(),
                permits.clone(),
            )
            .map_err(|source| ServerError::AmqpStorage {
                dir: config.server.data_dir.join("amqp"),
                source,
            })?,
        ),
        None => None,
    };
    let hub = MqttHub::new(config.mqtt.clone(), limits, metrics.clone(), permits);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tasks = TaskTracker::new();

    tasks.spawn(accept_loop(
        mqtt_listener,
        tasks.clone(),
        shutdown_rx.clone(),
        {
            let hub = hub.clone();
            move |stream, shutdown| connection::serve(stream, hub.clone(), shutdown)
        },
    ));
    if let Some(listener) = ws_listener {
        let path = config.mqtt.ws_path.clone();
        let hub = hub.clone();
        let origins = Arc::new(crate::mqtt::transport::OriginPolicy::new(
            &config.mqtt.websocket_allowed_origins,
            config.mqtt.ws_bind.ip(),
        ));
        tasks.spawn(accept_loop(
            listener,
            tasks.clone(),
            shutdown_rx.clone(),
            move |stream, shutdown| {
                let (hub, path, origins) = (hub.clone(), path.clone(), origins.clone());
                async move {
                    // The MQTT packet limit plus framing slack bounds one WebSocket message.
                    let max = hub.limits.max_packet_size.saturating_add(16);
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        WsTransport::accept(stream, &path, max, &origins),
                    )
                    .await
                    {
                        Ok(Ok(ws)) => connection::serve(ws, hub, shutdown).await,
                        Ok(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
                            hub.metrics
                                .connection_refused(Protocol::Mqtt, "websocket_origin");
                            tracing::debug!("WebSocket upgrade refused: {e}");
                        }
                        Ok(Err(e)) => tracing::debug!("WebSocket handshake failed: {e}"),
                        Err(_) => tracing::debug!("WebSocket handshake timed out"),
                    }
                }
            },
        ));
    }
    if let (Some(listener), Some(kafka)) = (kafka_listener, &kafka) {
        let handler_hub = kafka.clone();
        tasks.spawn(accept_loop(
            listener,
            tasks.clone(),
            shutdown_rx.clone(),
            move |stream, shutdown| {
                crate::kafka::connection::serve(stream, handler_hub.clone(), shutdown)
            },
        ));
        let mut rx = shutdown_rx.clone();
        tasks.spawn(kafka.clone().maintain(async move {
            let _ = rx.changed().await;
        }));
    }
    if let (Some(listener), Some(amqp)) = (amqp_listener, &amqp) {
        let handler_hub = amqp.clone();
        tasks.spawn(accept_loop(
            listener,
            tasks.clone(),
            shutdown_rx.clone(),
            move |stream, shutdown| {
                crate::amqp::connection::serve(stream, handler_hub.clone(), shutdown)
            },
        ));
        let mut rx = shutdown_rx.clone();
        tasks.spawn(amqp.clone().maintain(async move {
            let _ = rx.changed().await;
        }));
    }
    if let Some(listener) = metrics_listener {
        let mut rx = shutdown_rx.clone();
        tasks.spawn(metrics::serve(listener, metrics.clone(), async move {
            let _ = rx.changed().await;
        }));
    }
    if config.server.stats_interval_secs > 0 {
        let every = Duration::from_secs(config.server.stats_interval_secs);
        let (metrics, mut rx) = (metrics.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => tracing::info!("{}", metrics.stats_line()),
                    _ = rx.changed() => return,
                }
            }
        });
    }

    Ok(RunningBroker {
        mqtt_addr,
        ws_addr,
        metrics_addr,
        kafka_addr,
        amqp_addr,
        metrics,
        hub,
        kafka,
        amqp,
        shutdown: shutdown_tx,
        tasks,
    })
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    tasks: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(TcpStream, watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small MQTT packets must not wait for Nagle's algorithm.
                    let _ = stream.set_nodelay(true);
                    tasks.spawn(handler(stream, shutdown.clone()));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}
