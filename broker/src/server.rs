//! Listeners, the connection limit, the stats line, and graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::amqp::AmqpHub;
use crate::auth::{anonymous_allowed, Auth, AuthError, ListenerAuth};
use crate::config::Config;
use crate::core::stream::Incoming;
use crate::kafka::config::KafkaConfig;
use crate::kafka::KafkaHub;
use crate::metrics::{self, Metrics, Protocol};
use crate::mqtt::connection;
use crate::mqtt::hub::MqttHub;
use crate::mqtt::transport::WsTransport;
use crate::platform::Platform;
use crate::tls::{TlsContext, TlsError};

/// How long shutdown waits for connections to say goodbye before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Time a WebSocket client has for its HTTP upgrade (and, on wss, the TLS handshake before it).
const WS_UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for {what} on {addr}: {source} (is another broker running? pick another address with {flag})")]
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
    /// A certificate, key or CA file that cannot be used (bad input: exit 2).
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A password or ACL file that cannot be used (bad input: exit 2).
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// A `[metrics]` token file or user list that cannot be used (exit 2).
    #[error("{0}")]
    MetricsAccess(#[from] crate::metrics::access::MetricsAccessError),
}

/// A started broker: where it listens, and the handle to stop it.
pub struct RunningBroker {
    pub mqtt_addr: SocketAddr,
    pub ws_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub kafka_addr: Option<SocketAddr>,
    pub amqp_addr: Option<SocketAddr>,
    /// MQTT over TLS.
    pub mqtt_tls_addr: Option<SocketAddr>,
    /// MQTT over secure WebSocket.
    pub wss_addr: Option<SocketAddr>,
    /// Kafka over TLS (SSL).
    pub kafka_tls_addr: Option<SocketAddr>,
    /// AMQP over TLS (AMQPS).
    pub amqp_tls_addr: Option<SocketAddr>,
    /// The certificate in force, when TLS is configured.
    pub tls: Option<Arc<TlsContext>>,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<MqttHub>,
    pub kafka: Option<Arc<KafkaHub>>,
    pub amqp: Option<Arc<AmqpHub>>,
    shutdown: watch::Sender<bool>,
    tasks: TaskTracker,
}

impl RunningBroker {
    /// Reloads the TLS certificate, key and CA (SIGHUP); `None` when TLS is
    /// off, otherwise whether the new files are in force (a failure keeps
    /// the old certificate and is logged and counted).
    pub fn reload_tls(&self, why: &str) -> Option<bool> {
        self.tls.as_ref().map(|tls| tls.reload(why))
    }

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

    let tls = TlsContext::load(&config.tls, metrics.clone())?;
    let auth = Arc::new(Auth::load(&config.auth)?);
    let metrics_access =
        crate::metrics::access::MetricsAccess::load(&config.metrics, auth.clone())?.map(Arc::new);
    if config.metrics.enabled && metrics_access.is_none() && !config.metrics.bind.ip().is_loopback()
    {
        tracing::warn!(
            "/metrics on {} answers anyone who can reach it: set metrics.bearer_token_file or metrics.users to require credentials",
            config.metrics.bind
        );
    }
    // Anonymous clients per listener: by its bind address (see `anonymous_allowed`).
    let login = |explicit: Option<bool>, bind: SocketAddr| ListenerAuth {
        auth: auth.clone(),
        anonymous: anonymous_allowed(explicit, auth.has_users(), bind),
    };
    let mqtt_login = |bind| login(config.mqtt.allow_anonymous, bind);
    let amqp_login = |bind| login(config.amqp.allow_anonymous, bind);
    let kafka_login = |bind| login(config.kafka.allow_anonymous, bind);
    let tls_on = tls.is_some();
    let mqtt_listener = bind(
        "MQTT",
        "--mqtt-bind or in the config file",
        config.mqtt.bind,
    )
    .await?;
    let ws_listener = match config.mqtt.websocket {
        true => Some(
            bind(
                "MQTT over WebSocket",
                "--ws-bind or in the config file",
                config.mqtt.ws_bind,
            )
            .await?,
        ),
        false => None,
    };
    let kafka_listener = match config.kafka.enabled {
        true => Some(
            bind(
                "Kafka",
                "--kafka-bind or in the config file",
                config.kafka.bind,
            )
            .await?,
        ),
        false => None,
    };
    let amqp_listener = match config.amqp.enabled {
        true => Some(
            bind(
                "AMQP",
                "--amqp-bind or in the config file",
                config.amqp.bind,
            )
            .await?,
        ),
        false => None,
    };
    let mqtt_tls_listener = match tls_on && config.mqtt.tls {
        true => Some(
            bind(
                "MQTT over TLS",
                "mqtt.tls_bind in the config file (or mqtt.tls = false)",
                config.mqtt.tls_bind,
            )
            .await?,
        ),
        false => None,
    };
    let wss_listener = match tls_on && config.mqtt.websocket && config.mqtt.wss {
        true => Some(
            bind(
                "MQTT over secure WebSocket",
                "mqtt.wss_bind in the config file (or mqtt.wss = false)",
                config.mqtt.wss_bind,
            )
            .await?,
        ),
        false => None,
    };
    let kafka_tls_listener = match tls_on && config.kafka.enabled && config.kafka.tls {
        true => Some(
            bind(
                "Kafka over TLS",
                "kafka.tls_bind in the config file (or kafka.tls = false)",
                config.kafka.tls_bind,
            )
            .await?,
        ),
        false => None,
    };
    let amqp_tls_listener = match tls_on && config.amqp.enabled && config.amqp.tls {
        true => Some(
            bind(
                "AMQPS",
                "amqp.tls_bind in the config file (or amqp.tls = false)",
                config.amqp.tls_bind,
            )
            .await?,
        ),
        false => None,
    };
    let metrics_listener = match config.metrics.enabled {
        true => Some(
            bind(
                "Prometheus metrics",
                "--metrics-bind or in the config file",
                config.metrics.bind,
            )
            .await?,
        ),
        false => None,
    };
    let local = |l: &TcpListener| l.local_addr().expect("a bound listener has an address");
    let mqtt_addr = local(&mqtt_listener);
    let ws_addr = ws_listener.as_ref().map(local);
    let metrics_addr = metrics_listener.as_ref().map(local);
    let kafka_addr = kafka_listener.as_ref().map(local);
    let amqp_addr = amqp_listener.as_ref().map(local);
    let mqtt_tls_addr = mqtt_tls_listener.as_ref().map(local);
    let wss_addr = wss_listener.as_ref().map(local);
    let kafka_tls_addr = kafka_tls_listener.as_ref().map(local);
    let amqp_tls_addr = amqp_tls_listener.as_ref().map(local);

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
                kafka_tls_addr,
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

    // Each accepted socket as its protocol's `Incoming`: plain, or with the
    // TLS context its handshake will use.
    let incoming = |tls: Option<Arc<TlsContext>>| {
        move |stream: TcpStream| match &tls {
            Some(tls) => Incoming::Tls(stream, tls.clone()),
            None => Incoming::Plain(stream),
        }
    };
    let mqtt_listeners = [
        Some((mqtt_listener, None, mqtt_login(config.mqtt.bind))),
        mqtt_tls_listener.map(|l| (l, tls.clone(), mqtt_login(config.mqtt.tls_bind))),
    ];
    for (listener, tls, login) in mqtt_listeners.into_iter().flatten() {
        let (hub, incoming) = (hub.clone(), incoming(tls));
        tasks.spawn(accept_loop(
            listener,
            tasks.clone(),
            shutdown_rx.clone(),
            move |stream, shutdown| {
                connection::serve_incoming(incoming(stream), hub.clone(), shutdown, login.clone())
            },
        ));
    }
    let ws_listeners = [
        ws_listener.map(|l| (l, config.mqtt.ws_bind, None)),
        wss_listener.map(|l| (l, config.mqtt.wss_bind, tls.clone())),
    ];
    for (listener, bind, tls) in ws_listeners.into_iter().flatten() {
        let login = mqtt_login(bind);
        let path = config.mqtt.ws_path.clone();
        let (hub, incoming) = (hub.clone(), incoming(tls));
        let origins = Arc::new(crate::mqtt::transport::OriginPolicy::new(
            &config.mqtt.websocket_allowed_origins,
            bind.ip(),
        ));
        tasks.spawn(accept_loop(
            listener,
            tasks.clone(),
            shutdown_rx.clone(),
            move |stream, mut shutdown| {
                let (hub, path, origins) = (hub.clone(), path.clone(), origins.clone());
                let login = login.clone();
                let incoming = incoming(stream);
                async move {
                    // The MQTT packet limit plus framing slack bounds one WebSocket message.
                    let max = hub.limits.max_packet_size.saturating_add(16);
                    // The TLS handshake (wss) and the upgrade share one deadline.
                    let deadline = tokio::time::Instant::now() + WS_UPGRADE_TIMEOUT;
                    let Some(stream) = incoming
                        .establish(deadline, Protocol::Mqtt, &mut shutdown)
                        .await
                    else {
                        return;
                    };
                    match tokio::time::timeout_at(
                        deadline,
                        WsTransport::accept(stream, &path, max, &origins),
                    )
                    .await
                    {
                        Ok(Ok(ws)) => {
                            let connect_deadline = tokio::time::Instant::now()
                                + Duration::from_secs(hub.config.connect_timeout_secs);
                            connection::serve(ws, hub, shutdown, connect_deadline, login).await
                        }
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
    if let Some(kafka) = &kafka {
        let listeners = [
            kafka_listener.map(|l| (l, None, kafka_login(config.kafka.bind))),
            kafka_tls_listener.map(|l| (l, tls.clone(), kafka_login(config.kafka.tls_bind))),
        ];
        for (listener, tls, login) in listeners.into_iter().flatten() {
            let (handler_hub, incoming) = (kafka.clone(), incoming(tls));
            tasks.spawn(accept_loop(
                listener,
                tasks.clone(),
                shutdown_rx.clone(),
                move |stream, shutdown| {
                    let (hub, login) = (handler_hub.clone(), login.clone());
                    crate::kafka::connection::serve(incoming(stream), hub, shutdown, login)
                },
            ));
        }
        let mut rx = shutdown_rx.clone();
        tasks.spawn(kafka.clone().maintain(async move {
            let _ = rx.changed().await;
        }));
    }
    if let Some(amqp) = &amqp {
        let listeners = [
            amqp_listener.map(|l| (l, None, amqp_login(config.amqp.bind))),
            amqp_tls_listener.map(|l| (l, tls.clone(), amqp_login(config.amqp.tls_bind))),
        ];
        for (listener, tls, login) in listeners.into_iter().flatten() {
            let (handler_hub, incoming) = (amqp.clone(), incoming(tls));
            tasks.spawn(accept_loop(
                listener,
                tasks.clone(),
                shutdown_rx.clone(),
                move |stream, shutdown| {
                    let (hub, login) = (handler_hub.clone(), login.clone());
                    crate::amqp::connection::serve(incoming(stream), hub, shutdown, login)
                },
            ));
        }
        let mut rx = shutdown_rx.clone();
        tasks.spawn(amqp.clone().maintain(async move {
            let _ = rx.changed().await;
        }));
    }
    if let Some(tls) = &tls {
        let mut rx = shutdown_rx.clone();
        tasks.spawn(tls.clone().watch_files(async move {
            let _ = rx.changed().await;
        }));
    }
    if let Some(listener) = metrics_listener {
        let mut rx = shutdown_rx.clone();
        tasks.spawn(metrics::serve(
            listener,
            metrics.clone(),
            metrics_access.clone(),
            async move {
                let _ = rx.changed().await;
            },
        ));
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
        mqtt_tls_addr,
        wss_addr,
        kafka_tls_addr,
        amqp_tls_addr,
        tls,
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
