//! Byte transports an MQTT connection runs over: TCP and WebSocket (binary
//! frames, subprotocol `mqtt`, as MQTT 5.0 section 6 requires), each plain
//! or over TLS.

use std::future::Future;
use std::io;
use std::net::IpAddr;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::core::stream::ClientStream;

/// A duplex byte stream; `read_into` must be cancel-safe (it is raced in `select!`).
pub trait Transport: Send {
    /// Appends what arrived to `buf`, making room for at least `chunk` bytes
    /// only once data is there (an idle connection holds no read buffer);
    /// `Ok(0)` means the peer closed.
    fn read_into(
        &mut self,
        buf: &mut BytesMut,
        chunk: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send;
    fn write_all(&mut self, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Best-effort orderly close.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
    /// Whether the bytes travel over TLS.
    fn is_tls(&self) -> bool;
    /// The client certificate's subject common name (TLS with a client certificate).
    fn peer_common_name(&self) -> Option<String>;
}

impl Transport for ClientStream {
    async fn read_into(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        self.read_more(buf, |buf| {
            if buf.capacity() - buf.len() < chunk / 2 {
                buf.reserve(chunk);
            }
        })
        .await
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        AsyncWriteExt::write_all(self, data).await?;
        // TLS holds its records until flushed; a no-op for TCP.
        self.flush().await
    }

    fn is_tls(&self) -> bool {
        ClientStream::is_tls(self)
    }

    fn peer_common_name(&self) -> Option<String> {
        ClientStream::peer_common_name(self)
    }

    async fn close(&mut self) {
        let _ = self.shutdown().await;
    }
}

/// Which browser origins may open a WebSocket (`mqtt.websocket_allowed_origins`).
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// Origins allowed besides same-host ones, lower case; `*` allows any.
    pub allowed: Vec<String>,
    /// The listener's address: an origin naming it is same-host.
    pub listener: IpAddr,
}

impl OriginPolicy {
    pub fn new(allowed: &[String], listener: IpAddr) -> OriginPolicy {
        OriginPolicy {
            allowed: allowed.iter().map(|o| o.to_ascii_lowercase()).collect(),
            listener,
        }
    }

    /// Whether a request with this `Origin` header may upgrade. No header
    /// (a non-browser client) is allowed; so is an origin whose host is a
    /// loopback name or address or the listener's address, or one listed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim().to_ascii_lowercase();
        if self.allowed.iter().any(|a| a == "*" || *a == origin) {
            return true;
        }
        let Some((_scheme, authority)) = origin.split_once("://") else {
            return false; // "null" (sandboxed pages, file://) and junk
        };
        if authority.contains(['/', '@']) {
            return false;
        }
        let host = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((host, _port)) => host,
                None => return false,
            },
            None => authority.split(':').next().unwrap_or(""),
        };
        if host == "localhost" {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || (ip == self.listener && !self.listener.is_unspecified()),
            Err(_) => false,
        }
    }
}

/// MQTT over WebSocket: each binary message carries a slice of the MQTT byte stream.
pub struct WsTransport {
    ws: WebSocketStream<ClientStream>,
}

impl WsTransport {
    /// Runs the HTTP upgrade: only `path` is served, and the `mqtt`
    /// subprotocol is selected when the client offers it. A browser origin
    /// the policy does not allow gets HTTP 403 before the upgrade
    /// (`ErrorKind::PermissionDenied`).
    pub async fn accept(
        stream: ClientStream,
        path: &str,
        max_message_size: usize,
        origins: &OriginPolicy,
    ) -> io::Result<WsTransport> {
        let refused_origin = std::sync::atomic::AtomicBool::new(false);
        // The Result type is fixed by tungstenite's handshake `Callback` trait.
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
            let origin = req
                .headers()
                .get("Origin")
                .map(|v| v.to_str().unwrap_or("?"));
            if !origins.allows(origin) {
                refused_origin.store(true, std::sync::atomic::Ordering::Relaxed);
                let mut err = ErrorResponse::new(Some(
                    "Origin not allowed (see mqtt.websocket_allowed_origins)\n".to_string(),
                ));
                *err.status_mut() = StatusCode::FORBIDDEN;
                return Err(err);
            }
            if req.uri().path() != path {
                let mut err =
                    ErrorResponse::new(Some(format!("MQTT over WebSocket is served at {path}\n")));
                *err.status_mut() = StatusCode::NOT_FOUND;
                return Err(err);
            }
            let offers_mqtt = req
                .headers()
                .get_all("Sec-WebSocket-Protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
            if offers_mqtt {
                resp.headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
            }
            Ok(resp)
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_message_size))
            .max_frame_size(Some(max_message_size));
        let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
            .await
            .map_err(
                |e| match refused_origin.load(std::sync::atomic::Ordering::Relaxed) {
                    true => io::Error::new(io::ErrorKind::PermissionDenied, e),
                    false => io::Error::other(e),
                },
            )?;
        Ok(WsTransport { ws })
    }
}

impl Transport for WsTransport {
    async fn read_into(&mut self, buf: &mut BytesMut, _chunk: usize) -> io::Result<usize> {
        loop {
            match self.ws.next().await {
                None => return Ok(0),
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok(WsMessage::Binary(data))) => {
                    if data.is_empty() {
                        continue;
                    }
                    buf.extend_from_slice(&data);
                    return Ok(data.len());
                }
                Some(Ok(WsMessage::Close(_))) => return Ok(0),
                // tungstenite answers pings itself; pongs and raw frames carry no MQTT data.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                Some(Ok(WsMessage::Text(_))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket must use binary frames",
                    ))
                }
            }
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.ws
            .send(WsMessage::binary(data.to_vec()))
            .await
            .map_err(io::Error::other)
    }

    async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }

    fn is_tls(&self) -> bool {
        self.ws.get_ref().is_tls()
    }

    fn peer_common_name(&self) -> Option<String> {
        self.ws.get_ref().peer_common_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_origins_and_listed_ones_are_allowed() {
        let listener: IpAddr = "192.168.1.5".parse().unwrap();
        let p = OriginPolicy::new(&["https://App.example.com".into()], listener);
        for ok in [
            None,
            Some("http://localhost:3000"),
            Some("http://127.0.0.1"),
            Some("http://127.0.0.2:8080"),
            Some("http://[::1]:8083"),
            Some("http://192.168.1.5:8083"),
            Some("https://app.example.com"),
        ] {
            assert!(p.allows(ok), "{ok:?}");
        }
        for refused in [
            "http://evil.example",
            "https://app.example.com.evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "null",
            "http://user@evil.example",
            "",
            "http://[::1",
        ] {
            assert!(!p.allows(Some(refused)), "{refused:?}");
        }
        let any = OriginPolicy::new(&["*".into()], "0.0.0.0".parse().unwrap());
        assert!(any.allows(Some("http://evil.example")));
        // An unspecified listener address is no origin's host.
        let wild = OriginPolicy::new(&[], "0.0.0.0".parse().unwrap());
        assert!(!wild.allows(Some("http://0.0.0.0")));
    }
}
