//! Message transports: one JSON-RPC message per frame, over WebSocket or newline-delimited stdio.
//!
//! The transport moves opaque frames and knows nothing about JSON. A connection is a pair of
//! halves that can live on different tasks:
//!
//! - [`FrameReader::recv`] yields [`Inbound`] frames until the peer closes (`None`).
//! - [`FrameWriter::send`] queues one outgoing text frame without flushing;
//!   [`FrameWriter::flush`] writes the queued burst. Callers send a burst, then flush once.
//!
//! Constructors:
//!
//! - Server: [`WsListener::bind`] then [`WsListener::accept`] (WebSocket, with `GET /readyz`
//!   and the `Origin` refusal on the same port; [`WsListener::bind_unix_with_runtime`] on a
//!   `0600` Unix-domain socket file), or [`stdio_transport`] over the server's own
//!   stdin/stdout.
//! - Client: [`ws_connect`] (`ws://`, `wss://`, `unix:PATH`), or [`stdio_transport`] over a
//!   child's pipes.
//! - In process: [`memory_pair`], two connected ends without a socket.
//!
//! Rules from PROTOCOL.md "Transport": one JSON-RPC message per WebSocket message; text and
//! binary frames are accepted, text is sent (and binary frames where the core negotiated them,
//! [`FrameWriter::send_binary`]); `GET /readyz` answers 200; a handshake carrying an
//! `Origin` header is refused with 403; the server pings every 30 s.

mod frame_guard;
mod http;
mod memory;
mod security;
mod stdio;
mod tls;
mod unix;
mod ws;

use std::io;
use std::time::Duration;

pub use memory::memory_pair;
pub use security::{ClientSecurity, Peer, ServerSecurity};
pub use stdio::stdio_transport;
pub use tls::{TlsClientConfig, TlsConfigError, TlsServerConfig};
pub(crate) use ws::ws_handshake_over;
pub use ws::{ws_connect, ws_connect_with, WsListener};

/// Size and timing limits of a transport.
///
/// `Limits::default()` gives the values documented on each field; override single fields with
/// `Limits { max_frame_bytes: 1 << 20, ..Limits::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest inbound frame (WebSocket message or stdio line, excluding the newline), in bytes,
    /// delivered as [`Inbound::Frame`]. Larger frames become [`Inbound::TooLarge`] and the
    /// connection stays usable. Default 64 MiB.
    pub max_frame_bytes: usize,
    /// WebSocket only: the declared size, in bytes, above which an inbound message closes the
    /// connection (Close 1009) instead of yielding [`Inbound::TooLarge`].
    ///
    /// A message over `max_frame_bytes` is skipped as its bytes arrive, without buffering them
    /// (memory grows only with bytes received, never with a declared length); this bound
    /// keeps a peer from tying a connection up with a message of, say, 1 TiB. Taken as
    /// `max(ws_hard_limit_bytes, max_frame_bytes)`. Default 256 MiB.
    pub ws_hard_limit_bytes: usize,
    /// WebSocket only: send a Ping after this long without receiving anything from the peer.
    /// `None` disables pings (and the pong timeout). Default 30 s (PROTOCOL.md: the server
    /// pings every 30 s).
    pub ping_interval: Option<Duration>,
    /// WebSocket only: once a ping is due, how much longer the peer may stay silent (no Pong
    /// and no other byte) before the connection ends as failed; a server then detaches the
    /// session as on any disconnect. `None` never ends a silent connection. Default 60 s, so
    /// a dead peer is detected 90 s after its last byte.
    pub pong_timeout: Option<Duration>,
    /// WebSocket server only: time allowed for a new connection to deliver its HTTP request head
    /// and finish the WebSocket handshake. Default 10 s.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 << 20,
            ws_hard_limit_bytes: 256 << 20,
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Some(Duration::from_secs(60)),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// One inbound item from a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inbound {
    /// One complete frame: a WebSocket text or binary message, or one stdio line without its
    /// line ending. Never larger than [`Limits::max_frame_bytes`].
    Frame(Vec<u8>),
    /// A frame larger than [`Limits::max_frame_bytes`] was received and discarded; `len` is its
    /// size in bytes. The connection stays usable.
    TooLarge {
        /// Size of the discarded frame in bytes (for stdio, the line without its newline).
        len: usize,
    },
}

/// The receiving half of a transport connection. `Send`, so it can move into a task.
pub struct FrameReader {
    inner: ReaderInner,
}

enum ReaderInner {
    Ws(ws::WsReader),
    Stdio(stdio::LineReader),
    Mem(memory::MemReader),
}

impl FrameReader {
    /// Receives the next frame.
    ///
    /// Returns `None` once the peer has closed cleanly (WebSocket Close handshake, or EOF on
    /// stdio), `Some(Err(_))` on an I/O or WebSocket protocol error (the connection is then
    /// finished; later calls return `None`).
    ///
    /// Cancel-safe: dropping the future loses no data. For WebSocket, keep calling `recv` (one
    /// reader task per connection): it also answers the peer's pings and sends the idle pings
    /// of [`Limits::ping_interval`].
    pub async fn recv(&mut self) -> Option<io::Result<Inbound>> {
        match &mut self.inner {
            ReaderInner::Ws(r) => r.recv().await,
            ReaderInner::Stdio(r) => r.recv().await,
            ReaderInner::Mem(r) => r.recv().await,
        }
    }

    /// The status code of the peer's WebSocket Close frame (e.g. 1000 normal, 1001 going
    /// away), once [`recv`](Self::recv) has returned `None` after one; `None` for a close
    /// without a code, a connection that ended otherwise, and other transports.
    pub fn close_code(&self) -> Option<u16> {
        match &self.inner {
            ReaderInner::Ws(r) => r.close_code(),
            ReaderInner::Stdio(_) | ReaderInner::Mem(_) => None,
        }
    }
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            ReaderInner::Ws(_) => "ws",
            ReaderInner::Stdio(_) => "stdio",
            ReaderInner::Mem(_) => "memory",
        };
        f.debug_struct("FrameReader").field("kind", &kind).finish()
    }
}

/// The sending half of a transport connection. `Send`, so it can move into a task.
pub struct FrameWriter {
    inner: WriterInner,
}

enum WriterInner {
    Ws(ws::WsWriter),
    Stdio(stdio::LineWriter),
    Mem(memory::MemWriter),
}

impl FrameWriter {
    /// Queues one text frame without flushing.
    ///
    /// Data reaches the peer once about 128 KiB is buffered or on [`flush`](Self::flush). Waits
    /// only when the buffer is full and the peer is not reading (backpressure).
    ///
    /// Errors: the connection's I/O error; for stdio, `InvalidInput` if `text` contains a
    /// newline (it would split the frame). Not cancel-safe: a cancelled `send` may leave a
    /// partial stdio line behind, so drop the connection after cancelling one.
    pub async fn send(&mut self, text: String) -> io::Result<()> {
        match &mut self.inner {
            WriterInner::Ws(w) => w.send(text).await,
            WriterInner::Stdio(w) => w.send(text).await,
            WriterInner::Mem(w) => w.send(text).await,
        }
    }

    /// ext: queues one binary frame without flushing (PROTOCOL.md §2.5), as
    /// [`send`](Self::send) does a text frame. The bytes are handed to the WebSocket as they
    /// are (no copy before tungstenite formats the frame).
    ///
    /// Errors: `Unsupported` on transports that carry text only (stdio, memory; see
    /// [`carries_binary`](Self::carries_binary)); the connection's I/O error.
    pub async fn send_binary(&mut self, frame: Vec<u8>) -> io::Result<()> {
        match &mut self.inner {
            WriterInner::Ws(w) => w.send_binary(frame).await,
            WriterInner::Stdio(_) | WriterInner::Mem(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "binary frames need a WebSocket transport",
            )),
        }
    }

    /// Whether [`send_binary`](Self::send_binary) works on this transport (WebSocket).
    pub fn carries_binary(&self) -> bool {
        matches!(self.inner, WriterInner::Ws(_))
    }

    /// Writes all queued frames to the peer.
    pub async fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            WriterInner::Ws(w) => w.flush().await,
            WriterInner::Stdio(w) => w.flush().await,
            WriterInner::Mem(_) => Ok(()),
        }
    }

    /// Flushes, then closes: a WebSocket Close frame (the [`FrameReader`] then sees the peer's
    /// reply and returns `None`), or closing the stdio writer.
    pub async fn close(&mut self) -> io::Result<()> {
        match &mut self.inner {
            WriterInner::Ws(w) => w.close().await,
            WriterInner::Stdio(w) => w.close().await,
            WriterInner::Mem(w) => {
                w.close();
                Ok(())
            }
        }
    }
}

impl FrameWriter {
    /// Flushes, then closes announcing a shutdown: a WebSocket Close frame with code 1001
    /// "going away" (RFC 6455 §7.4.1); stdio and memory transports close as with
    /// [`close`](Self::close).
    pub async fn close_going_away(&mut self) -> io::Result<()> {
        match &mut self.inner {
            WriterInner::Ws(w) => w.close_going_away().await,
            WriterInner::Stdio(_) | WriterInner::Mem(_) => self.close().await,
        }
    }
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            WriterInner::Ws(_) => "ws",
            WriterInner::Stdio(_) => "stdio",
            WriterInner::Mem(_) => "memory",
        };
        f.debug_struct("FrameWriter").field("kind", &kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send + 'static>() {}

    #[test]
    fn halves_are_send() {
        assert_send::<FrameReader>();
        assert_send::<FrameWriter>();
        assert_send::<WsListener>();
    }
}
