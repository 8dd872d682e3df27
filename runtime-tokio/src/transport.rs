//! Message transports: one JSON-RPC message per frame, over WebSocket or newline-delimited
//! stdio. See [`execd_runtime::transport`] for the rules they follow.

use std::io;
use std::net::SocketAddr;

pub use execd_runtime::transport::{FrameReader, FrameWriter, Inbound, Limits};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};

use crate::runtime::{self, TokioRuntime};

/// A WebSocket server socket: accepts connections, answers `GET /readyz`, refuses handshakes
/// with an `Origin` header (403). See [`execd_runtime::transport::WsListener`].
#[derive(Debug)]
pub struct WsListener(execd_runtime::transport::WsListener);

impl WsListener {
    /// Binds a TCP listener on `addr` (port 0 picks a free port) and starts accepting.
    ///
    /// # Errors
    /// The bind error; called outside a tokio runtime.
    pub async fn bind(addr: SocketAddr, limits: Limits) -> io::Result<WsListener> {
        execd_runtime::transport::WsListener::bind(runtime::shared()?, addr, limits)
            .await
            .map(WsListener)
    }

    /// The bound address (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Waits for the next connection that completed its WebSocket handshake; returns its two
    /// halves and the peer address. Cancel-safe.
    ///
    /// # Errors
    /// Only if the accept task has stopped, which does not happen while the listener is alive.
    pub async fn accept(&self) -> io::Result<(FrameReader, FrameWriter, SocketAddr)> {
        self.0.accept().await
    }
}

/// Connects to a `ws://host:port/path` URL and performs the client handshake (TCP_NODELAY, no
/// `Origin` header).
///
/// # Errors
/// The URL parse error (`InvalidInput`; `Unsupported` for `wss://`), the connect error, or the
/// handshake error; called outside a tokio runtime. Wrap in a timeout if the server may not
/// answer.
pub async fn ws_connect(url: &str, limits: Limits) -> io::Result<(FrameReader, FrameWriter)> {
    execd_runtime::transport::ws_connect(&TokioRuntime::current()?, url, limits).await
}

/// Builds a transport over a tokio byte stream carrying one frame per line (the server's stdin
/// and stdout, or a `tokio::process` child's pipes). See
/// [`execd_runtime::transport::stdio_transport`].
pub fn stdio_transport(
    reader: impl AsyncRead + Unpin + Send + 'static,
    writer: impl AsyncWrite + Unpin + Send + 'static,
    limits: Limits,
) -> (FrameReader, FrameWriter) {
    execd_runtime::transport::stdio_transport(reader.compat(), writer.compat_write(), limits)
}
