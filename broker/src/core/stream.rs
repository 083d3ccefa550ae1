//! A client's byte stream, plain TCP or TLS over TCP, so each protocol's
//! connection loop is written (and compiled) once for both.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A connected client.
pub enum ClientStream {
    Plain(TcpStream),
    /// Boxed: the TLS state is large, and most connections are plain.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            ClientStream::Plain(s) => s.peer_addr(),
            ClientStream::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }

    /// The client certificate's subject common name, when the client
    /// presented a certificate over TLS.
    pub fn peer_common_name(&self) -> Option<String> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(s) => {
                let leaf = s.get_ref().1.peer_certificates()?.first()?;
                crate::tls::identity::common_name(leaf)
            }
        }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// Appends what arrived to `buf`; `make_room` runs before each read
    /// attempt. A plain socket makes room only once data is there (an idle
    /// connection holds no read buffer); TLS makes it first (rustls keeps
    /// its own record buffer per connection anyway). Cancel-safe: nothing
    /// read is lost when the future is dropped. `Ok(0)`: the peer closed.
    pub async fn read_more(
        &mut self,
        buf: &mut BytesMut,
        mut make_room: impl FnMut(&mut BytesMut),
    ) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => loop {
                s.readable().await?;
                make_room(buf);
                match s.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Readiness was stale: don't sit on a buffer while waiting.
                        if buf.is_empty() {
                            *buf = BytesMut::new();
                        }
                    }
                    result => return result,
                }
            },
            ClientStream::Tls(s) => {
                make_room(buf);
                s.read_buf(buf).await
            }
        }
    }

    /// Splits into halves a reader and a writer task can own. Plain TCP
    /// splits without a lock, as before TLS existed.
    pub fn into_split(self) -> (ClientReadHalf, ClientWriteHalf) {
        match self {
            ClientStream::Plain(s) => {
                let (r, w) = s.into_split();
                (ClientReadHalf::Plain(r), ClientWriteHalf::Plain(w))
            }
            ClientStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ClientReadHalf::Tls(r), ClientWriteHalf::Tls(w))
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The reading half of a [`ClientStream`].
pub enum ClientReadHalf {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ClientReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientReadHalf::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientReadHalf::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

/// The writing half of a [`ClientStream`].
pub enum ClientWriteHalf {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncWrite for ClientWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientWriteHalf::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientWriteHalf::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWriteHalf::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientWriteHalf::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWriteHalf::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientWriteHalf::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// An accepted TCP connection before its protocol starts: plain, or waiting
/// for its TLS handshake.
pub enum Incoming {
    Plain(TcpStream),
    Tls(TcpStream, std::sync::Arc<crate::tls::TlsContext>),
}

impl Incoming {
    pub fn is_tls(&self) -> bool {
        matches!(self, Incoming::Tls(..))
    }

    /// The client's stream once the TLS handshake (if any) is done by
    /// `deadline`; `None` when it failed (counted), timed out, or the broker
    /// is shutting down.
    pub async fn establish(
        self,
        deadline: tokio::time::Instant,
        protocol: crate::metrics::Protocol,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<ClientStream> {
        match self {
            Incoming::Plain(tcp) => Some(ClientStream::Plain(tcp)),
            Incoming::Tls(tcp, tls) => tls.accept(tcp, deadline, protocol, shutdown).await,
        }
    }
}
