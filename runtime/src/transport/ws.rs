//! WebSocket transport: the listener (with its HTTP pre-routing), the client connector, and the
//! reader/writer halves sharing one tungstenite stream.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::handshake::client::Request;
use async_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use async_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures::task::AtomicWaker;
use futures::{Sink, Stream};
use futures_lite::io::{AsyncWrite, AsyncWriteExt};

use super::frame_guard::{FrameGuard, Violation, CHUNK};
use super::http::{self, Prefixed, Route};
use super::security::{ClientSecurity, Peer, ServerSecurity};
use super::tls::TlsClientConfig;
use super::unix::{unix_connect, UnixListener, UNIX_PEER};
use super::{FrameReader, FrameWriter, Inbound, Limits, ReaderInner, WriterInner};
use crate::runtime::{shared, AsyncStream, DefaultRuntime, Runtime, Sleep, Task};
use crate::tcp::TcpListener;

/// Accepted connections waiting for [`WsListener::accept`]; handshakes block when it is full.
const READY_QUEUE: usize = 64;
/// Pause after a failed `accept(2)` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A WebSocket server socket.
///
/// A background task accepts TCP connections and runs each one's HTTP pre-routing and WebSocket
/// handshake in its own task (bounded by [`Limits::handshake_timeout`]), so one slow client
/// never delays another. Per connection, before the handshake: TCP_NODELAY is set; the request
/// head (at most 16 KiB) is read; `GET /readyz` is answered `200 OK` with body `ok`; a request
/// with an `Origin` header is answered `403 Forbidden`; a plain request is answered 400 (`/`)
/// or 404 (other paths); those connections are then closed. Upgrade requests on any path
/// become WebSocket connections. Dropping the listener stops accepting.
///
/// With [`ServerSecurity`] (ext): the TLS handshake comes first; an upgrade request must then
/// authenticate (`Authorization: Bearer`), else it is answered `401 Unauthorized` with the
/// reference's plain-text body and closed. `/readyz`, the `Origin` refusal and plain requests
/// are answered as without authentication.
///
/// Its tasks run on runtime `R`: [`bind`](Self::bind) finds a [`DefaultRuntime`] by type,
/// [`bind_with_runtime`](Self::bind_with_runtime) takes any [`Runtime`].
pub struct WsListener<R = Arc<dyn Runtime>> {
    local_addr: SocketAddr,
    /// The socket file, when bound with [`bind_unix_with_runtime`](Self::bind_unix_with_runtime).
    unix_path: Option<PathBuf>,
    tls: bool,
    ready: async_channel::Receiver<(FrameReader, FrameWriter, Peer)>,
    _accept_loop: Task,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: DefaultRuntime> WsListener<R> {
    /// Binds a TCP listener on `addr` (port 0 picks a free port) and starts accepting on the
    /// default runtime.
    ///
    /// # Errors
    /// The bind error; no default runtime (tokio: called outside a tokio runtime).
    pub async fn bind(addr: SocketAddr, limits: Limits) -> io::Result<Self> {
        Self::bind_with_runtime(R::default_runtime()?, addr, limits).await
    }
}

impl<R: Runtime> WsListener<R> {
    /// Binds a TCP listener on `addr` (port 0 picks a free port) and starts accepting on
    /// `runtime`.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind_with_runtime(
        runtime: R,
        addr: SocketAddr,
        limits: Limits,
    ) -> io::Result<Self> {
        Self::bind_with_security(runtime, addr, limits, ServerSecurity::default()).await
    }

    /// Like [`bind_with_runtime`](Self::bind_with_runtime), requiring authentication and/or
    /// serving TLS per `security`.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind_with_security(
        runtime: R,
        addr: SocketAddr,
        limits: Limits,
        security: ServerSecurity,
    ) -> io::Result<Self> {
        let runtime = shared(runtime);
        let listener = TcpListener::bind(Arc::clone(&runtime), addr)?;
        let local_addr = listener.local_addr();
        tracing::info!(%local_addr, tls = security.tls.is_some(), "websocket listener bound");
        Ok(Self::start(
            runtime,
            Listener::Tcp(listener),
            limits,
            security,
            None,
        ))
    }

    /// Binds a Unix-domain socket file at `path` (made `0600`: only this user may connect;
    /// removed when the listener drops) and serves WebSocket connections on it as on TCP,
    /// without TLS or authentication (the file's permissions decide who connects), on
    /// `runtime`. [`local_addr`](Self::local_addr) and the peers' addresses are the
    /// unspecified `0.0.0.0:0`; [`unix_path`](Self::unix_path) names the file.
    ///
    /// # Errors
    /// The `bind(2)` error (`AddrInUse` when `path` exists), the `chmod` or registration error.
    pub async fn bind_unix_with_runtime(
        runtime: R,
        path: &Path,
        limits: Limits,
    ) -> io::Result<Self> {
        let runtime = shared(runtime);
        let listener = UnixListener::bind(Arc::clone(&runtime), path)?;
        tracing::info!(path = %path.display(), "websocket listener bound to a unix socket");
        Ok(Self::start(
            runtime,
            Listener::Unix(listener),
            limits,
            ServerSecurity::default(),
            Some(path.to_owned()),
        ))
    }

    /// Starts the accept loop on a bound listener.
    fn start(
        runtime: Arc<dyn Runtime>,
        listener: Listener,
        limits: Limits,
        security: ServerSecurity,
        unix_path: Option<PathBuf>,
    ) -> Self {
        let local_addr = match &listener {
            Listener::Tcp(tcp) => tcp.local_addr(),
            Listener::Unix(_) => UNIX_PEER,
        };
        let tls = security.tls.is_some();
        let (tx, rx) = async_channel::bounded(READY_QUEUE);
        let accept_loop = runtime.spawn(Box::pin(accept_loop(
            Arc::clone(&runtime),
            listener,
            tx,
            Arc::new(limits),
            Arc::new(security),
        )));
        Self {
            local_addr,
            unix_path,
            tls,
            ready: rx,
            _accept_loop: accept_loop,
            _runtime: PhantomData,
        }
    }
}

impl<R> WsListener<R> {
    /// The bound address (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the next connection that completed its WebSocket handshake.
    ///
    /// Returns its two halves and the peer address. Cancel-safe. Errors only if the accept task
    /// has stopped, which does not happen while the listener is alive.
    pub async fn accept(&self) -> io::Result<(FrameReader, FrameWriter, SocketAddr)> {
        let (reader, writer, peer) = self.accept_peer().await?;
        Ok((reader, writer, peer.addr))
    }

    /// Like [`accept`](Self::accept), with the peer's address and the [`Principal`] it
    /// authenticated as.
    ///
    /// [`Principal`]: crate::Principal
    pub async fn accept_peer(&self) -> io::Result<(FrameReader, FrameWriter, Peer)> {
        self.ready
            .recv()
            .await
            .map_err(|_| io::Error::other("websocket accept task stopped"))
    }

    /// The socket file of a listener bound to a Unix-domain socket; `None` on TCP.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix_path.as_deref()
    }

    /// `wss` when serving TLS, else `ws`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "wss"
        } else {
            "ws"
        }
    }
}

impl<R> fmt::Debug for WsListener<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Connects to a `ws://host:port/path` or `wss://…` URL over `runtime` and performs the
/// client handshake, without a bearer token; `wss://` verifies the server with the platform's
/// roots. See [`ws_connect_with`].
pub async fn ws_connect(
    runtime: impl Runtime,
    url: &str,
    limits: Limits,
) -> io::Result<(FrameReader, FrameWriter)> {
    ws_connect_with(runtime, url, limits, &ClientSecurity::default()).await
}

/// Connects to a `ws://host:port/path` or `wss://host:port/path` URL (default ports 80 and
/// 443), or to `unix:PATH` (a WebSocket on the Unix-domain socket file PATH, e.g. one bound by
/// [`WsListener::bind_unix_with_runtime`]), over `runtime` and performs the client handshake,
/// sending `security`'s bearer token and verifying a `wss://` server with its roots.
///
/// Sets TCP_NODELAY. No `Origin` header is sent (the server would refuse it). Errors: the URL
/// parse error or another scheme (`InvalidInput`), the connect error, the TLS error (a
/// certificate that does not verify: `InvalidData` carrying rustls' reason), a refused
/// handshake (401: `PermissionDenied` with the server's body), or another handshake error.
/// Wrap in a timeout if the server may not answer.
pub async fn ws_connect_with(
    runtime: impl Runtime,
    url: &str,
    limits: Limits,
    security: &ClientSecurity,
) -> io::Result<(FrameReader, FrameWriter)> {
    let runtime = shared(runtime);
    if let Some(path) = url.strip_prefix("unix:") {
        let stream = unix_connect(&*runtime, Path::new(path))?;
        return ws_handshake_over(&runtime, stream, limits, security).await;
    }
    let mut request = url
        .into_client_request()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    authorize(&mut request, security)?;
    let uri = request.uri();
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a ws:// or wss:// URL: {url}"),
            ))
        }
    };
    let host = uri.host().unwrap_or_default();
    // An IPv6 literal comes bracketed (`[::1]`); the resolver wants it bare.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let mut stream = runtime.tcp_connect(host.clone(), port).await?;
    if tls {
        stream = match &security.tls {
            Some(config) => config.connect(&host, stream).await?,
            None => {
                TlsClientConfig::platform_default()?
                    .connect(&host, stream)
                    .await?
            }
        };
    }
    let connection = client_handshake(&runtime, request, stream, &limits).await?;
    tracing::debug!(%host, port, tls, "websocket client connected");
    Ok(connection)
}

/// Performs the client handshake over an already-open byte stream (a Unix socket, or the
/// pipes of an `ssh HOST execd bridge` child), sending `security`'s bearer token; the request
/// names `ws://localhost/`. TLS is not applied: the stream is trusted as it is.
pub(crate) async fn ws_handshake_over(
    runtime: &Arc<dyn Runtime>,
    stream: Box<dyn AsyncStream>,
    limits: Limits,
    security: &ClientSecurity,
) -> io::Result<(FrameReader, FrameWriter)> {
    let mut request = "ws://localhost/"
        .into_client_request()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    authorize(&mut request, security)?;
    client_handshake(runtime, request, stream, &limits).await
}

/// Adds `security`'s bearer token to a client handshake request.
fn authorize(request: &mut Request, security: &ClientSecurity) -> io::Result<()> {
    if let Some(token) = &security.bearer_token {
        let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the bearer token is not a valid header value",
            )
        })?;
        request.headers_mut().insert("authorization", value);
    }
    Ok(())
}

async fn client_handshake(
    runtime: &Arc<dyn Runtime>,
    request: Request,
    stream: Box<dyn AsyncStream>,
    limits: &Limits,
) -> io::Result<(FrameReader, FrameWriter)> {
    let stream = guard(stream, limits);
    let (ws, _response) =
        async_tungstenite::client_async_with_config(request, stream, Some(ws_config(limits)))
            .await
            .map_err(handshake_to_io)?;
    Ok(split(runtime, ws, limits))
}

/// The byte stream under a WebSocket: TCP (with a replayed request head on the server side),
/// its inbound frames rewritten by a [`FrameGuard`].
type Ws = WebSocketStream<FrameGuard<Box<dyn AsyncStream>>>;

/// Wraps a connection's byte stream, before the WebSocket handshake, in the inbound frame
/// guard enforcing `max_frame_bytes` and the hard limit.
fn guard(stream: Box<dyn AsyncStream>, limits: &Limits) -> FrameGuard<Box<dyn AsyncStream>> {
    FrameGuard::new(stream, limits.max_frame_bytes, limits.ws_hard_limit_bytes)
}

/// tungstenite settings for both roles.
///
/// The [`FrameGuard`] below tungstenite hands it fragments of at most [`CHUNK`] bytes and
/// messages of at most `max_frame_bytes` (larger ones arrive empty and are reported too large),
/// so tungstenite's own limits only back that up. The write buffer is tungstenite's default
/// 128 KiB: frames are formatted into it and written once it passes that size or on flush, so a
/// burst of small frames costs one `write(2)` per 128 KiB, not one per frame.
fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_frame_bytes.max(CHUNK)))
        .max_frame_size(Some(CHUNK))
        // tungstenite's default read buffer (128 KiB) is allocated and zero-filled per
        // connection; 8 KiB keeps 1,000 idle sessions at ~18 MiB instead of ~139 MiB, and
        // large inbound messages still arrive in full (the buffer is per read, not per message).
        .read_buffer_size(READ_BUFFER)
}

/// tungstenite's per-read buffer, in bytes.
const READ_BUFFER: usize = 8 << 10;

/// The socket a [`WsListener`] accepts on.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// The next connection and its peer's address ([`UNIX_PEER`] on a Unix socket).
    async fn accept(&self) -> io::Result<(Box<dyn AsyncStream>, SocketAddr)> {
        match self {
            Listener::Tcp(tcp) => tcp.accept().await,
            Listener::Unix(unix) => Ok((unix.accept().await?, UNIX_PEER)),
        }
    }
}

async fn accept_loop(
    runtime: Arc<dyn Runtime>,
    listener: Listener,
    ready: async_channel::Sender<(FrameReader, FrameWriter, Peer)>,
    limits: Arc<Limits>,
    security: Arc<ServerSecurity>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "websocket listener: accept failed");
                runtime.sleep_until(runtime.now() + ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if ready.is_closed() {
            return;
        }
        let ready = ready.clone();
        let limits = Arc::clone(&limits);
        let security = Arc::clone(&security);
        let task_runtime = Arc::clone(&runtime);
        let task = async move {
            let runtime = &task_runtime;
            let timeout = limits.handshake_timeout;
            let handshake = async { Some(handshake(runtime, tcp, peer, &limits, &security).await) };
            let expired = async {
                runtime.sleep_until(runtime.now() + timeout).await;
                None
            };
            match futures_lite::future::or(handshake, expired).await {
                Some(Ok(Some((reader, writer, principal)))) => {
                    tracing::debug!(%peer, ?principal, "websocket connection accepted");
                    let peer = Peer {
                        addr: peer,
                        principal,
                    };
                    // A closed channel means the listener was dropped; the connection goes too.
                    let _ = ready.send((reader, writer, peer)).await;
                }
                Some(Ok(None)) => {}
                Some(Err(e)) => tracing::debug!(%peer, error = %e, "websocket handshake failed"),
                None => tracing::debug!(%peer, "websocket handshake timed out"),
            }
        };
        runtime.spawn(Box::pin(task)).detach();
    }
}

/// The halves of an accepted connection and who it authenticated as.
type Accepted = (FrameReader, FrameWriter, Option<crate::auth::Principal>);

/// Runs the TLS handshake (if any), pre-routes one accepted socket and authenticates an
/// upgrade; `Ok(None)` when it was answered with plain HTTP (a 401 included) or left.
async fn handshake(
    runtime: &Arc<dyn Runtime>,
    mut tcp: Box<dyn AsyncStream>,
    peer: SocketAddr,
    limits: &Limits,
    security: &ServerSecurity,
) -> io::Result<Option<Accepted>> {
    if let Some(tls) = &security.tls {
        tcp = tls.accept(tcp).await?;
    }
    let Some((head, route)) = http::read_head(&mut tcp).await? else {
        tracing::debug!(%peer, "connection closed before a complete request head");
        return Ok(None);
    };
    if route != Route::Upgrade {
        tracing::debug!(%peer, ?route, "answering plain HTTP request");
        tcp.write_all(route.response()).await?;
        tcp.flush().await?;
        // Best effort (shuts down the write side): the response is written; the peer may
        // already be gone.
        let _ = tcp.close().await;
        return Ok(None);
    }
    let principal = match &security.auth {
        None => None,
        Some(auth) => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            match auth.authenticate(http::authorization(&head), now) {
                Ok(principal) => Some(principal),
                Err(cause) => {
                    tracing::debug!(%peer, %cause, "websocket handshake unauthorized");
                    tcp.write_all(&http::unauthorized(cause.body())).await?;
                    tcp.flush().await?;
                    // Best effort, as above.
                    let _ = tcp.close().await;
                    return Ok(None);
                }
            }
        }
    };
    let io: Box<dyn AsyncStream> = Box::new(Prefixed::new(head, tcp));
    let ws =
        async_tungstenite::accept_async_with_config(guard(io, limits), Some(ws_config(limits)))
            .await
            .map_err(ws_to_io)?;
    let (reader, writer) = split(runtime, ws, limits);
    Ok(Some((reader, writer, principal)))
}

/// Splits a WebSocket into the transport halves.
fn split(runtime: &Arc<dyn Runtime>, ws: Ws, limits: &Limits) -> (FrameReader, FrameWriter) {
    let wakers = Arc::new(WriteWakers::default());
    let shared = Arc::new(Shared {
        ws: Mutex::new(ws),
        write_waker: Waker::from(Arc::clone(&wakers)),
        wakers,
    });
    let now = runtime.now();
    let pinger = limits.ping_interval.map(|interval| Pinger {
        interval,
        pong_timeout: limits.pong_timeout,
        timer: runtime.sleep_until(now + interval),
        last_rx: now,
        last_received: 0,
        state: PingState::Idle,
        clock: Arc::clone(runtime),
    });
    let reader = WsReader {
        shared: Arc::clone(&shared),
        max_frame_bytes: limits.max_frame_bytes,
        pinger,
        closing: false,
        close_frame: None,
        failure: None,
        done: false,
        close_code: None,
    };
    let writer = WsWriter { shared };
    (
        FrameReader {
            inner: ReaderInner::Ws(reader),
        },
        FrameWriter {
            inner: WriterInner::Ws(writer),
        },
    )
}

/// The WebSocket shared by the reader (which also sends pings) and the writer.
///
/// The mutex is held only for one synchronous poll of the stream, never across an await, so
/// the halves never wait on each other for longer than one non-blocking read or write.
/// async-tungstenite keeps separate read and write wakers; its write slot holds one waker, but
/// two parties write (the writer, and the reader's pinger). So all write-side polls go through
/// `write_waker`, which wakes both of them.
struct Shared {
    ws: Mutex<Ws>,
    wakers: Arc<WriteWakers>,
    write_waker: Waker,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ws> {
        // A panic while polling cannot leave the stream in a state worse than any I/O error;
        // keep going rather than propagate the poison.
        self.ws.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The two tasks that may wait for the socket to become writable: the writer's, and the
/// reader's (sending a ping or the Close reply).
#[derive(Default)]
struct WriteWakers {
    writer: AtomicWaker,
    reader: AtomicWaker,
}

impl Wake for WriteWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.writer.wake();
        self.reader.wake();
    }
}

/// Reading half: delivers messages, answers pings (tungstenite queues the pong and flushes it
/// on the next read), and sends idle pings.
pub(super) struct WsReader {
    shared: Arc<Shared>,
    max_frame_bytes: usize,
    pinger: Option<Pinger>,
    /// A Close frame arrived, or the reader fails the connection: send `close_frame` (if
    /// any), flush tungstenite's reply (if any), then end with `failure` (if any).
    closing: bool,
    close_frame: Option<CloseFrame>,
    failure: Option<io::Error>,
    done: bool,
    /// The code of the peer's Close frame, once one arrived.
    close_code: Option<u16>,
}

struct Pinger {
    interval: Duration,
    /// With a ping unanswered, silence longer than `interval + pong_timeout` ends the
    /// connection.
    pong_timeout: Option<Duration>,
    timer: Pin<Box<dyn Sleep>>,
    /// When anything (any byte: data, ping, pong, close) last arrived from the peer.
    last_rx: Instant,
    /// The guard's received-byte count at `last_rx`.
    last_received: u64,
    state: PingState,
    /// The runtime whose clock `last_rx` and the timer are on.
    clock: Arc<dyn Runtime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PingState {
    Idle,
    /// A ping is due but tungstenite's write buffer is still draining.
    Queued,
    /// The ping is in tungstenite's buffer and being flushed.
    Flushing,
}

impl WsReader {
    pub(super) fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    pub(super) async fn recv(&mut self) -> Option<io::Result<Inbound>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Inbound>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.closing {
            return self.poll_close_reply(cx);
        }
        if let Err(e) = self.poll_ping(cx) {
            return Poll::Ready(Some(Err(self.finish(e))));
        }
        loop {
            let next = Pin::new(&mut *self.shared.lock()).poll_next(cx);
            let message = match next {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    tracing::debug!("websocket closed");
                    self.shutdown_socket();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    let violation = self.shared.lock().get_ref().violation();
                    let e = ws_to_io(e);
                    return match violation {
                        Some(Violation::TooBig { .. }) => {
                            self.fail_with_close(cx, CloseCode::Size, "message too big", e)
                        }
                        Some(Violation::Protocol(what)) => {
                            self.fail_with_close(cx, CloseCode::Protocol, what, e)
                        }
                        None => Poll::Ready(Some(Err(self.finish(e)))),
                    };
                }
                Poll::Ready(Some(Ok(message))) => message,
            };
            if let Some(pinger) = &mut self.pinger {
                pinger.last_rx = pinger.clock.now();
            }
            let payload: Bytes = match message {
                Message::Text(text) => text.into(),
                Message::Binary(bytes) => bytes,
                // Pongs are queued by tungstenite and flushed by the next `poll_next`.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                // Nothing may follow a Close frame. Do not wait for the peer to close TCP (a
                // client's peer would not until its own reader runs): flush tungstenite's
                // reply, if any, and end.
                Message::Close(frame) => {
                    tracing::debug!(?frame, "websocket close frame received");
                    self.close_code = frame.as_ref().map(|f| u16::from(f.code));
                    self.closing = true;
                    return self.poll_close_reply(cx);
                }
            };
            let verdict = self.shared.lock().get_mut().next_verdict();
            let too_large = verdict
                .and_then(|v| v.too_large)
                .map(|len| usize::try_from(len).unwrap_or(usize::MAX))
                .or((payload.len() > self.max_frame_bytes).then_some(payload.len()));
            if let Some(len) = too_large {
                tracing::debug!(len, "websocket message over the frame limit");
                return Poll::Ready(Some(Ok(Inbound::TooLarge { len })));
            }
            if verdict.is_some_and(|v| v.text) && std::str::from_utf8(&payload).is_err() {
                tracing::debug!("websocket text message is not UTF-8");
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    "websocket text message is not valid UTF-8",
                );
                return self.fail_with_close(cx, CloseCode::Invalid, "invalid UTF-8", e);
            }
            tracing::trace!(len = payload.len(), "websocket frame");
            // No copy when tungstenite's buffer is not shared.
            return Poll::Ready(Some(Ok(Inbound::Frame(Vec::from(payload)))));
        }
        let mut ping_due = false;
        let received = self.shared.lock().get_ref().received();
        if let Some(pinger) = &mut self.pinger {
            // Loop until the timer is armed (Pending), so its waker is registered.
            while pinger.timer.as_mut().poll(cx).is_ready() {
                let now = pinger.clock.now();
                // Bytes of a frame still arriving count as life too.
                if received != pinger.last_received {
                    pinger.last_received = received;
                    pinger.last_rx = now;
                }
                let due = pinger.last_rx + pinger.interval;
                let deadline = pinger.pong_timeout.map(|t| due + t);
                if deadline.is_some_and(|deadline| now >= deadline) {
                    tracing::debug!("websocket peer silent past the pong timeout");
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        "websocket peer did not answer pings",
                    );
                    return Poll::Ready(Some(Err(self.finish(e))));
                }
                if now < due {
                    pinger.timer.as_mut().reset(due);
                } else {
                    let next = now + pinger.interval;
                    pinger
                        .timer
                        .as_mut()
                        .reset(deadline.map_or(next, |d| d.min(next)));
                    ping_due = true;
                }
            }
            if ping_due && pinger.state == PingState::Idle {
                tracing::trace!("websocket idle: sending ping");
                pinger.state = PingState::Queued;
            }
        }
        if ping_due {
            if let Err(e) = self.poll_ping(cx) {
                return Poll::Ready(Some(Err(self.finish(e))));
            }
        }
        Poll::Pending
    }

    /// Fails the connection: sends a Close frame with `code`, then ends with `e`.
    fn fail_with_close(
        &mut self,
        cx: &mut Context<'_>,
        code: CloseCode,
        reason: &'static str,
        e: io::Error,
    ) -> Poll<Option<io::Result<Inbound>>> {
        self.closing = true;
        self.close_frame = Some(CloseFrame {
            code,
            reason: reason.into(),
        });
        self.failure = Some(e);
        self.poll_close_reply(cx)
    }

    /// Sends the pending Close frame (if any) and flushes tungstenite's reply to a received
    /// one, then ends the stream (with the failure, if the reader failed the connection).
    fn poll_close_reply(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Inbound>>> {
        self.shared.wakers.reader.register(cx.waker());
        let mut write_cx = Context::from_waker(&self.shared.write_waker);
        let mut ws = self.shared.lock();
        if self.close_frame.is_some() {
            match Pin::new(&mut *ws).poll_ready(&mut write_cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "websocket close frame not sent");
                    self.close_frame = None;
                }
                Poll::Ready(Ok(())) => {
                    let frame = self.close_frame.take();
                    if let Err(e) = Pin::new(&mut *ws).start_send(Message::Close(frame)) {
                        tracing::debug!(error = %e, "websocket close frame not sent");
                    }
                }
            }
        }
        let flushed = Pin::new(&mut *ws).poll_flush(&mut write_cx);
        drop(ws);
        match flushed {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "websocket close reply not sent");
                }
                self.shutdown_socket();
                Poll::Ready(self.failure.take().map(Err))
            }
        }
    }

    /// Marks the connection finished after an error; returns the error.
    fn finish(&mut self, e: io::Error) -> io::Error {
        self.shutdown_socket();
        e
    }

    /// Once the WebSocket has ended, shuts down the socket's write side so the peer sees EOF
    /// even while the [`WsWriter`] is still alive (the socket closes when both halves drop).
    fn shutdown_socket(&mut self) {
        self.done = true;
        let mut ws = self.shared.lock();
        // A TCP shutdown completes synchronously; a no-op waker is enough.
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Err(e)) = Pin::new(ws.get_mut()).poll_close(&mut cx) {
            tracing::trace!(error = %e, "websocket socket shutdown failed");
        }
    }

    /// Drives a due ping into tungstenite and flushes it, without blocking reads.
    ///
    /// Errors: I/O errors of the socket. Protocol-state errors (the connection is closing) just
    /// drop the ping; the read side reports how the connection ended.
    fn poll_ping(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(pinger) = &mut self.pinger else {
            return Ok(());
        };
        if pinger.state == PingState::Idle {
            return Ok(());
        }
        self.shared.wakers.reader.register(cx.waker());
        let mut write_cx = Context::from_waker(&self.shared.write_waker);
        let mut ws = self.shared.lock();
        let mut ws = Pin::new(&mut *ws);
        let result = loop {
            match pinger.state {
                PingState::Idle => break Ok(()),
                PingState::Queued => match ws.as_mut().poll_ready(&mut write_cx) {
                    Poll::Pending => break Ok(()),
                    Poll::Ready(Err(e)) => break Err(e),
                    Poll::Ready(Ok(())) => {
                        if let Err(e) = ws.as_mut().start_send(Message::Ping(Default::default())) {
                            break Err(e);
                        }
                        pinger.state = PingState::Flushing;
                    }
                },
                PingState::Flushing => match ws.as_mut().poll_flush(&mut write_cx) {
                    Poll::Pending => break Ok(()),
                    Poll::Ready(result) => {
                        pinger.state = PingState::Idle;
                        break result;
                    }
                },
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(WsError::Io(e)) => {
                pinger.state = PingState::Idle;
                Err(e)
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket ping not sent");
                pinger.state = PingState::Idle;
                Ok(())
            }
        }
    }
}

/// Outbound messages longer than this many bytes are sent as fragments of this size.
/// tungstenite moves the unwritten rest of its output buffer to the front after every partial
/// socket write, so a message sent as one frame costs a copy of its rest per socket write:
/// quadratic, seconds of `memmove` for a 256 MiB `fs/readFile` result. Fragments bound each
/// copy by their size; they also stay under a peer's frame limit (tungstenite's default 16
/// MiB, which the reference client keeps). 1 MiB and a header: a 1 MiB binary `fs/readBlock`
/// result or body delta is one frame, which its receiver takes without reassembling (with 256
/// KiB fragments the bench client spent a seventh of its time joining them, perf).
pub(super) const OUT_FRAGMENT: usize = (1 << 20) + (4 << 10);

/// Writing half.
pub(super) struct WsWriter {
    shared: Arc<Shared>,
}

impl WsWriter {
    /// Sends `text` as one text message; one longer than [`OUT_FRAGMENT`] goes out as
    /// fragments of that size (RFC 6455 §5.4; control frames may come between them).
    pub(super) async fn send(&mut self, text: String) -> io::Result<()> {
        tracing::trace!(len = text.len(), "websocket send");
        if text.len() <= OUT_FRAGMENT {
            return self.send_message(Message::text(text)).await;
        }
        self.send_fragmented(Bytes::from(text), OpData::Text).await
    }

    /// Sends `frame` as one binary message, in fragments as [`send`](Self::send).
    pub(super) async fn send_binary(&mut self, frame: Vec<u8>) -> io::Result<()> {
        tracing::trace!(len = frame.len(), "websocket send binary");
        // `Bytes::from(Vec)` takes the allocation over: no copy.
        let bytes = Bytes::from(frame);
        if bytes.len() <= OUT_FRAGMENT {
            return self.send_message(Message::Binary(bytes)).await;
        }
        self.send_fragmented(bytes, OpData::Binary).await
    }

    /// One message of kind `kind` as fragments of [`OUT_FRAGMENT`] bytes.
    async fn send_fragmented(&mut self, bytes: Bytes, kind: OpData) -> io::Result<()> {
        let parts = bytes.len().div_ceil(OUT_FRAGMENT);
        for i in 0..parts {
            let part = bytes.slice(i * OUT_FRAGMENT..((i + 1) * OUT_FRAGMENT).min(bytes.len()));
            let opcode = if i == 0 {
                OpCode::Data(kind)
            } else {
                OpCode::Data(OpData::Continue)
            };
            let frame = Frame::message(part, opcode, i + 1 == parts);
            self.send_message(Message::Frame(frame)).await?;
        }
        Ok(())
    }

    async fn send_message(&mut self, message: Message) -> io::Result<()> {
        let mut message = Some(message);
        poll_fn(|cx| {
            self.with_write_cx(cx, |mut ws, write_cx| {
                match ws.as_mut().poll_ready(write_cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                match message.take() {
                    Some(message) => Poll::Ready(ws.as_mut().start_send(message)),
                    None => Poll::Ready(Ok(())),
                }
            })
        })
        .await
        .map_err(ws_to_io)
    }

    pub(super) async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.with_write_cx(cx, |mut ws, write_cx| ws.as_mut().poll_flush(write_cx)))
            .await
            .map_err(ws_to_io)
    }

    pub(super) async fn close(&mut self) -> io::Result<()> {
        tracing::debug!("websocket close");
        poll_fn(|cx| self.with_write_cx(cx, |mut ws, write_cx| ws.as_mut().poll_close(write_cx)))
            .await
            .map_err(ws_to_io)
    }

    /// Sends a Close frame with code 1001 "going away" (after what is queued), then closes
    /// like [`close`](Self::close).
    pub(super) async fn close_going_away(&mut self) -> io::Result<()> {
        use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use async_tungstenite::tungstenite::protocol::CloseFrame;
        tracing::debug!("websocket close: going away");
        let mut frame = Some(Message::Close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        })));
        poll_fn(|cx| {
            self.with_write_cx(cx, |mut ws, write_cx| {
                if frame.is_some() {
                    match ws.as_mut().poll_ready(write_cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    if let Some(frame) = frame.take() {
                        if let Err(e) = ws.as_mut().start_send(frame) {
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                ws.as_mut().poll_close(write_cx)
            })
        })
        .await
        .map_err(ws_to_io)
    }

    /// Runs one write-side poll of the stream with the shared write waker.
    fn with_write_cx<R>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(Pin<&mut Ws>, &mut Context<'_>) -> R,
    ) -> R {
        self.shared.wakers.writer.register(cx.waker());
        let mut write_cx = Context::from_waker(&self.shared.write_waker);
        let mut ws = self.shared.lock();
        f(Pin::new(&mut *ws), &mut write_cx)
    }
}

/// Maps a client handshake error onto `io::Error`: a refusal with an HTTP status becomes
/// `PermissionDenied` (401, 403) or `ConnectionRefused` with the status and the server's body.
fn handshake_to_io(e: WsError) -> io::Error {
    let WsError::Http(response) = e else {
        return ws_to_io(e);
    };
    let status = response.status();
    let body = response
        .body()
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let kind = if status.as_u16() == 401 || status.as_u16() == 403 {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::ConnectionRefused
    };
    io::Error::new(
        kind,
        format!("websocket handshake refused: HTTP {status}: {body}"),
    )
}

/// Maps a tungstenite error onto `io::Error`, keeping the I/O error when there is one.
fn ws_to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::SendAfterClosing) => {
            io::Error::new(io::ErrorKind::NotConnected, e)
        }
        WsError::Capacity(_) | WsError::Utf8(_) | WsError::Protocol(_) => {
            io::Error::new(io::ErrorKind::InvalidData, e)
        }
        e => io::Error::other(e),
    }
}
