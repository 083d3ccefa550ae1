//! Prometheus metrics (served at `/metrics`) and the periodic stats line.
//!
//! Counters every protocol keeps (connections, messages, bytes, errors) are
//! labelled by protocol and defined here; a protocol's own metrics are defined
//! in its `metrics` module, next to the code that sets them, and registered
//! here. Hot paths take a [`ProtocolCounters`] handle once per connection
//! instead of looking labels up per message. Names follow Prometheus practice:
//! `broker_` prefix, unit suffixes, and the standard `process_*` metrics.

#[cfg(target_os = "linux")]
pub mod access;
mod process;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::kafka::metrics::KafkaMetrics;
use crate::mqtt::metrics::MqttMetrics;
use crate::platform::Platform;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Protocol {
    Mqtt,
    Kafka,
    Amqp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Mqtt, Protocol::Kafka, Protocol::Amqp];
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Kafka => "kafka",
            Protocol::Amqp => "amqp",
        }
    }
}

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: Protocol,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    protocol: Protocol,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabels {
    arch: String,
    os: String,
    libc: String,
    class: String,
    cpu_features: String,
    io_uring: String,
    cores: String,
}

/// Every metric the broker exports.
pub struct Metrics {
    registry: Registry,
    connections_total: Family<ProtocolLabels, Counter>,
    connections_current: Family<ProtocolLabels, Gauge>,
    connections_refused: Family<KindLabels, Counter>,
    messages_received: Family<ProtocolLabels, Counter>,
    messages_sent: Family<ProtocolLabels, Counter>,
    bytes_received: Family<ProtocolLabels, Counter>,
    bytes_sent: Family<ProtocolLabels, Counter>,
    protocol_errors: Family<KindLabels, Counter>,
    messages_dropped: Family<KindLabels, Counter>,
    tls_handshakes: Family<ProtocolLabels, Counter>,
    tls_handshake_failures: Family<KindLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    scrapes_refused: Counter,
    pub max_connections: Gauge,
    pub mqtt: MqttMetrics,
    pub kafka: KafkaMetrics,
}

/// Per-connection handles on the hot counters of one protocol.
#[derive(Clone)]
pub struct ProtocolCounters {
    pub messages_received: Counter,
    pub messages_sent: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
}

impl Metrics {
    pub fn new(platform: &Platform, max_connections: usize) -> Arc<Metrics> {
        let mut root = Registry::default();
        #[cfg(target_os = "linux")]
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("broker");
        let m = Metrics {
            connections_total: Family::default(),
            connections_current: Family::default(),
            connections_refused: Family::default(),
            messages_received: Family::default(),
            messages_sent: Family::default(),
            bytes_received: Family::default(),
            bytes_sent: Family::default(),
            protocol_errors: Family::default(),
            messages_dropped: Family::default(),
            tls_handshakes: Family::default(),
            tls_handshake_failures: Family::default(),
            tls_reloads: Family::default(),
            scrapes_refused: Counter::default(),
            max_connections: Gauge::default(),
            mqtt: MqttMetrics::default(),
            kafka: KafkaMetrics::default(),
            registry: Registry::default(),
        };
        m.max_connections
            .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
        registry.register(
            "connections",
            "Client connections accepted (after the protocol handshake)",
            m.connections_total.clone(),
        );
        registry.register(
            "connections_current",
            "Client connections open now",
            m.connections_current.clone(),
        );
        registry.register(
            "metrics_scrapes_refused",
            "Requests to /metrics refused for missing or wrong credentials (metrics.bearer_token_file, metrics.users)",
            m.scrapes_refused.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused, by reason",
            m.connections_refused.clone(),
        );
        registry.register(
            "messages_received",
            "Messages published to the broker",
            m.messages_received.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages delivered to clients",
            m.messages_sent.clone(),
        );
        registry.register_with_unit(
            "received",
            "Bytes read from clients",
            Unit::Bytes,
            m.bytes_received.clone(),
        );
        registry.register_with_unit(
            "sent",
            "Bytes written to clients",
            Unit::Bytes,
            m.bytes_sent.clone(),
        );
        registry.register(
            "protocol_errors",
            "Malformed or forbidden input from clients, by kind",
            m.protocol_errors.clone(),
        );
        registry.register(
            "messages_dropped",
            "Messages not delivered, by reason (queue full, expired, too large)",
            m.messages_dropped.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed, by protocol",
            m.tls_handshakes.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by protocol and kind",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificate reloads (SIGHUP or changed files), by result (ok, failed)",
            m.tls_reloads.clone(),
        );
        registry.register(
            "max_connections",
            "Configured connection limit",
            m.max_connections.clone(),
        );
        m.mqtt.register(registry);
        m.kafka.register(registry);
        registry.register(
            "platform",
            "Platform the broker detected at start-up",
            Info::new(PlatformLabels {
                arch: platform.arch.to_string(),
                os: platform.os.to_string(),
                libc: platform.libc.to_string(),
                class: platform.class.as_str().to_string(),
                cpu_features: platform.cpu_features.join(","),
                io_uring: platform.io_uring.to_string(),
                cores: platform.cores.to_string(),
            }),
        );
        Arc::new(Metrics {
            registry: root,
            ..m
        })
    }

    pub fn counters(&self, protocol: Protocol) -> ProtocolCounters {
        let l = ProtocolLabels { protocol };
        ProtocolCounters {
            messages_received: self.messages_received.get_or_create(&l).clone(),
            messages_sent: self.messages_sent.get_or_create(&l).clone(),
            bytes_received: self.bytes_received.get_or_create(&l).clone(),
            bytes_sent: self.bytes_sent.get_or_create(&l).clone(),
        }
    }

    pub fn connection_opened(&self, protocol: Protocol) {
        let l = ProtocolLabels { protocol };
        self.connections_total.get_or_create(&l).inc();
        self.connections_current.get_or_create(&l).inc();
    }

    pub fn connection_closed(&self, protocol: Protocol) {
        self.connections_current
            .get_or_create(&ProtocolLabels { protocol })
            .dec();
    }

    pub fn connection_refused(&self, protocol: Protocol, kind: &'static str) {
        self.connections_refused
            .get_or_create(&KindLabels { protocol, kind })
            .inc();
    }

    pub fn protocol_error(&self, protocol: Protocol, kind: &'static str) {
        self.protocol_errors
            .get_or_create(&KindLabels { protocol, kind })
            .inc();
    }

    pub fn message_dropped(&self, protocol: Protocol, kind: &'static str) {
        self.messages_dropped
            .get_or_create(&KindLabels { protocol, kind })
            .inc();
    }

    pub fn tls_handshake_done(&self, protocol: Protocol) {
        self.tls_handshakes
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    pub fn tls_handshake_failed(&self, protocol: Protocol, kind: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&KindLabels { protocol, kind })
            .inc();
    }

    /// Failed handshakes of `protocol` with this `kind` so far.
    pub fn tls_handshake_failures(&self, protocol: Protocol, kind: &'static str) -> u64 {
        self.tls_handshake_failures
            .get_or_create(&KindLabels { protocol, kind })
            .get()
    }

    pub fn tls_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Certificate reloads with this result (`ok` or `failed`) so far.
    pub fn tls_reloads(&self, ok: bool) -> u64 {
        let result = if ok { "ok" } else { "failed" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .get()
    }

    /// Open connections over all protocols.
    pub fn open_connections(&self) -> i64 {
        Protocol::ALL
            .iter()
            .map(|&protocol| {
                self.connections_current
                    .get_or_create(&ProtocolLabels { protocol })
                    .get()
            })
            .sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The one-line summary logged every `stats_interval_secs`.
    pub fn stats_line(&self) -> String {
        let (received, sent) = Protocol::ALL.iter().fold((0, 0), |(r, s), &p| {
            let c = self.counters(p);
            (r + c.messages_received.get(), s + c.messages_sent.get())
        });
        let mut line = String::new();
        let _ = write!(
            line,
            "stats: connections {}/{} | messages in {} out {} | subscriptions {} | retained {} | sessions {}",
            self.open_connections(),
            self.max_connections.get(),
            received,
            sent,
            self.mqtt.subscriptions.get(),
            self.mqtt.retained_messages.get(),
            self.mqtt.sessions.get(),
        );
        line
    }
}

/// Serves `GET /metrics` until `shutdown` completes. Deliberately tiny: one
/// request per connection, no keep-alive, request head capped at 8 KiB. With
/// `access`, a request without valid credentials gets 401.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    access: Option<Arc<access::MetricsAccess>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (metrics, access) = (metrics.clone(), access.clone());
                    tokio::spawn(async move {
                        let answer = answer(stream, &metrics, access.as_deref());
                        let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
                    });
                }
                Err(e) => {
                    tracing::warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    access: Option<&access::MetricsAccess>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let mut extra = String::new();
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/metrics") => match access {
            Some(access) if !access.allows(&head).await => {
                metrics.scrapes_refused.inc();
                for challenge in access.challenges() {
                    extra.push_str(&format!("WWW-Authenticate: {challenge}\r\n"));
                }
                (
                    "401 Unauthorized",
                    "text/plain",
                    "credentials required (metrics.bearer_token_file, metrics.users)\n".to_string(),
                )
            }
            _ => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.encode(),
            ),
        },
        (b"GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is served\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Metrics::new(&Platform::detect(), 100)
    }

    #[test]
    fn names_carry_prefix_and_units() {
        let m = metrics();
        let c = m.counters(Protocol::Mqtt);
        c.bytes_received.inc_by(7);
        c.bytes_sent.inc_by(9);
        m.mqtt.retained_messages.set(2);
        let text = m.encode();
        for line in [
            "broker_received_bytes_total{protocol=\"mqtt\"} 7",
            "broker_sent_bytes_total{protocol=\"mqtt\"} 9",
            "broker_retained_messages 2",
            "broker_max_connections 100",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_come_from_proc() {
        let text = metrics().encode();
        let value = |name: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
            line[name.len() + 1..].parse().unwrap()
        };
        // A fresh test process may not have used a whole clock tick yet.
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start > now - 86_400.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
        assert!(
            !text.contains("broker_process_"),
            "process_* are unprefixed"
        );
    }
}
