//! The protocol driver interface: what the runner needs from a client
//! library, and nothing protocol-independent.
//!
//! A driver connects publisher, subscriber and idle clients, publishes one
//! payload at a time (reporting the broker's acknowledgement through
//! [`ClientEvents::acked`]), hands received payloads to
//! [`ClientEvents::delivered`], and reports a lost connection once through
//! [`ClientEvents::connection_lost`]. Rate control, payload headers,
//! sequence tracking, histograms, pacing and fault policy live in the runner.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

/// Which part a client plays in the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Publisher,
    Subscriber,
    Idle,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
            Role::Idle => "idle",
        }
    }
}

/// Who is connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub role: Role,
    /// Index within the role (publisher 0, 1, ...).
    pub index: u32,
    /// Local address to connect from; `None` lets the kernel choose.
    /// Drivers that cannot bind a source address for a role ignore it
    /// (see [`Driver::binds_source_address`]).
    pub source: Option<IpAddr>,
}

/// Callbacks from a connected client, called on the driver's I/O task.
///
/// Implementations must be quick (they run once per message) and must not block.
pub trait ClientEvents: Send + 'static {
    /// A subscriber received `payload` at `at`.
    fn delivered(&mut self, payload: &[u8], at: Instant) {
        let _ = (payload, at);
    }

    /// The broker acknowledged the publish that carried `token` (QoS 1/2,
    /// Kafka acks, AMQP confirms); never called for unacknowledged delivery.
    fn acked(&mut self, token: u64, at: Instant) {
        let _ = (token, at);
    }

    /// The connection ended without being closed by [`Connection::close`].
    /// Called at most once; the driver does not reconnect.
    fn connection_lost(&mut self, error: DriverError);
}

/// What kind of failure, for errors-by-kind counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Nobody listens at the address (TCP RST).
    Refused,
    /// No answer within the connect or I/O timeout.
    Timeout,
    /// The broker answered but refused the client (CONNACK/SUBACK failure codes).
    Rejected,
    /// No local port or address left, or too many open files.
    Resources,
    /// The connection broke after it was established.
    ConnectionLost,
    /// Unexpected or malformed packet.
    Protocol,
    /// Any other I/O error.
    Io,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Resources => "resources",
            ErrorKind::ConnectionLost => "connection_lost",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Io => "io",
        }
    }

    /// The kind of an I/O error from connecting or talking to the broker.
    pub fn of_io(err: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as K;
        match err.kind() {
            K::ConnectionRefused => ErrorKind::Refused,
            K::TimedOut | K::WouldBlock => ErrorKind::Timeout,
            K::AddrInUse | K::AddrNotAvailable | K::OutOfMemory => ErrorKind::Resources,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                ErrorKind::ConnectionLost
            }
            _ if err.raw_os_error() == Some(libc::EMFILE) => ErrorKind::Resources,
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A driver failure: its kind (for counting) and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    kind: ErrorKind,
    message: String,
}

impl DriverError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        DriverError {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context: ` in front of its message.
    pub fn context(self, context: impl fmt::Display) -> Self {
        DriverError {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

/// `HOST:PORT` (IPv6 in brackets) split into its parts.
pub(crate) fn split_host_port(target: &str) -> Result<(String, u16), DriverError> {
    let bad = || {
        DriverError::new(
            ErrorKind::Io,
            format!("target {target:?}: expected HOST:PORT, e.g. 127.0.0.1:1883"),
        )
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The first address `HOST:PORT` resolves to; every driver's `--target`.
pub(crate) fn resolve_target(target: &str) -> Result<SocketAddr, DriverError> {
    let (host, port) = split_host_port(target)?;
    (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| {
            DriverError::new(ErrorKind::Io, io_message(&e))
                .context(format!("cannot resolve {target}"))
        })?
        .next()
        .ok_or_else(|| {
            DriverError::new(
                ErrorKind::Io,
                format!("cannot resolve {target}: no address"),
            )
        })
}

/// `std::io::Error`'s text without the trailing " (os error N)".
pub fn io_message(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// One client's [`ClientEvents`], shared between the client library's
/// callbacks or tasks (acks, deliveries and errors may come from different
/// threads), with the at-most-once rule for `connection_lost`.
pub(crate) struct EventSink {
    events: Mutex<Box<dyn ClientEvents>>,
    /// Set once `connection_lost` was called, or when closing on purpose.
    done: AtomicBool,
}

impl EventSink {
    pub(crate) fn new(events: Box<dyn ClientEvents>) -> Arc<EventSink> {
        Arc::new(EventSink {
            events: Mutex::new(events),
            done: AtomicBool::new(false),
        })
    }

    pub(crate) fn delivered(&self, payload: &[u8], at: Instant) {
        self.events.lock().expect("events").delivered(payload, at);
    }

    pub(crate) fn acked(&self, token: u64, at: Instant) {
        self.events.lock().expect("events").acked(token, at);
    }

    /// Reports the lost connection, unless it was reported or closed already.
    pub(crate) fn lost(&self, error: DriverError) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.events.lock().expect("events").connection_lost(error);
        }
    }

    /// The client is closing on purpose: later errors are not a lost connection.
    pub(crate) fn closing(&self) {
        self.done.store(true, Ordering::Release);
    }
}

/// A connected client of any role.
pub trait Connection: Send + 'static {
    /// Disconnects politely (bounded in time); no `connection_lost` follows.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A connected publisher.
pub trait Publisher: Connection {
    /// Hands one payload to the client library. Waits while the library's
    /// queue is full (back-pressure shows up as publish delay). `token` comes
    /// back through [`ClientEvents::acked`] when the broker acknowledges it.
    fn publish(
        &mut self,
        token: u64,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
}

/// One protocol's client library behind the runner.
pub trait Driver: Send + Sync + 'static {
    type Publisher: Publisher;
    type Subscriber: Connection;
    type Idle: Connection;

    /// Connects a client that will publish to `topic`.
    fn connect_publisher(
        &self,
        client: &ClientSpec,
        topic: &str,
        events: Box<dyn ClientEvents>,
    ) -> impl Future<Output = Result<Self::Publisher, DriverError>> + Send;

    /// Connects a client and subscribes it to `filter`; returns once the
    /// broker confirmed the subscription, so nothing published later is missed.
    fn connect_subscriber(
        &self,
        client: &ClientSpec,
        filter: &str,
        events: Box<dyn ClientEvents>,
    ) -> impl Future<Output = Result<Self::Subscriber, DriverError>> + Send;

    /// Connects a client that only keeps its connection alive.
    fn connect_idle(
        &self,
        client: &ClientSpec,
        events: Box<dyn ClientEvents>,
    ) -> impl Future<Output = Result<Self::Idle, DriverError>> + Send;

    /// Whether a message published to `topic` reaches a subscriber of
    /// `filter` (the protocol's matching rules; used for expected deliveries).
    fn filter_matches(&self, filter: &str, topic: &str) -> bool;

    /// Whether clients of `role` honour [`ClientSpec::source`].
    fn binds_source_address(&self, role: Role) -> bool;

    /// Whether the subscribers split the messages between them (a Kafka
    /// consumer group) instead of each getting its own copy; the runner then
    /// counts them as one consumer for expected deliveries, loss and
    /// duplicates.
    fn subscribers_share_deliveries(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_kinds_and_plain_messages() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(ErrorKind::of_io(&refused), ErrorKind::Refused);
        assert_eq!(io_message(&refused), "Connection refused");
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(ErrorKind::of_io(&emfile), ErrorKind::Resources);
        let err = DriverError::new(ErrorKind::Refused, "Connection refused")
            .context("cannot connect to 127.0.0.1:1883");
        assert_eq!(
            err.to_string(),
            "cannot connect to 127.0.0.1:1883: Connection refused"
        );
        assert_eq!(err.kind().as_str(), "refused");
    }
}
