//! The server event loop: one task owns the sans-IO [`execd_core::Server`] and drives it from
//! transport frames, process events and its timers.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use execd_core::{
    Command, ConnId, HttpEvent, HttpTicket, Output, Principal, ProcessEvent, ProcessKey,
    ServerConfig,
};
use futures_lite::future;
use tracing::{debug, info, trace, warn};

use crate::coalesce::Coalescer;
use crate::fs_service::{FsDone, FsService};
use crate::http::{HttpRunner, HttpService};
use crate::process::ProcessTable;
use crate::runtime::{shared, DefaultRuntime, Runtime, Task};
use crate::shutdown;
use crate::transport::{self, FrameReader, FrameWriter, Inbound, Limits, WsListener};

/// Settings of a server: the core's rules and the transport's limits.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Protocol rules (TTLs, retention, dedupe window, frame budget).
    pub core: ServerConfig,
    /// Transport limits (frame size, ping interval). `max_frame_bytes` is kept equal to the
    /// core's.
    pub limits: Limits,
    /// Extra trusted CA certificates for `http/request` (a PEM bundle, on top of the webpki
    /// roots); `None`: the webpki roots only.
    pub http_ca: Option<Vec<u8>>,
    /// Authentication and TLS of the WebSocket listener (ext); default none, as the reference.
    pub security: transport::ServerSecurity,
}

impl ServerOptions {
    fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.core.max_frame_bytes,
            ..self.limits.clone()
        }
    }
}

/// Process events queued between the pumps and the loop before pumps wait (backpressure from
/// the loop to the children's pipes), at most; see [`process_event_queue`]. With the loop's
/// batch (at most [`EVENT_BATCH`] events and [`PROCESS_QUEUE_BYTES`] of output) this bounds
/// how much output is read ahead of the core's decisions: a process held at its lossless
/// window (PROTOCOL.md §5.11) has at most about 2 + 2 MiB plus one chunk more read from its
/// pipes, once per server and not per process, before its pump sees the pause (the loop drains the queue faster than a pump fills
/// it whenever it is not busy sending, so a deeper queue adds memory, not throughput).
const PROCESS_EVENT_QUEUE: usize = 32;
/// Output bytes the queue between the pumps and the loop may hold, at most: the core sees
/// output (and can pause a process) only once the loop takes it, so this bounds what a
/// process writes past a pause. 2 MiB: 32 chunks of 64 KiB.
const PROCESS_QUEUE_BYTES: usize = 2 << 20;

/// The capacity, in events, of the queue between the pumps and the loop for chunks of up to
/// `max_chunk_bytes`: [`PROCESS_QUEUE_BYTES`] of full chunks, between 4 and
/// [`PROCESS_EVENT_QUEUE`] events (256 KiB chunks: 8 events), so larger chunks do not let a
/// process write further past a pause.
fn process_event_queue(max_chunk_bytes: usize) -> usize {
    (PROCESS_QUEUE_BYTES / max_chunk_bytes.max(1)).clamp(4, PROCESS_EVENT_QUEUE)
}
/// Frames one connection may have read and queued for the loop, not yet handled; its reader
/// waits (leaving later frames in the socket) until the loop catches up. Keeps a flooding
/// client from queueing unbounded frames ahead of everyone else's.
const FRAMES_QUEUED_PER_CONNECTION: usize = 8;
/// Events handled per wake-up before the loop flushes its outputs.
const EVENT_BATCH: usize = 64;
/// How long a stdio server waits at stdin EOF for its replies to be written before it returns.
const STDIO_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// A WebSocket server bound to a loopback (or other) address, its tasks on runtime `R`.
///
/// `R` names the runtime: `execd_smol::WsServer` is `WsServer<SmolRuntime>`, whose
/// [`bind`](Self::bind) needs no runtime argument; [`bind_with_runtime`](Self::bind_with_runtime)
/// takes one (any [`Runtime`], e.g. an `Arc<dyn Runtime>`, the default parameter).
pub struct WsServer<R = Arc<dyn Runtime>> {
    runtime: Arc<dyn Runtime>,
    listener: WsListener,
    options: ServerOptions,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: DefaultRuntime> WsServer<R> {
    /// Binds `addr` (port 0 picks a free port); the server's tasks run on the default runtime.
    ///
    /// # Errors
    /// The bind error; no default runtime (tokio: called outside a tokio runtime).
    pub async fn bind(addr: SocketAddr, options: ServerOptions) -> io::Result<Self> {
        Self::bind_with_runtime(R::default_runtime()?, addr, options).await
    }
}

impl<R: Runtime> WsServer<R> {
    /// Binds `addr` (port 0 picks a free port); the server's tasks run on `runtime`.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind_with_runtime(
        runtime: R,
        addr: SocketAddr,
        options: ServerOptions,
    ) -> io::Result<Self> {
        let runtime = shared(runtime);
        let listener = WsListener::bind_with_security(
            Arc::clone(&runtime),
            addr,
            options.limits(),
            options.security.clone(),
        )
        .await?;
        Ok(WsServer {
            runtime,
            listener,
            options,
            _runtime: PhantomData,
        })
    }
}

impl<R: DefaultRuntime> WsServer<R> {
    /// Binds a Unix-domain socket file at `path` (see [`bind_unix_with_runtime`]); the
    /// server's tasks run on the default runtime.
    ///
    /// [`bind_unix_with_runtime`]: Self::bind_unix_with_runtime
    ///
    /// # Errors
    /// As [`bind_unix_with_runtime`](Self::bind_unix_with_runtime); no default runtime.
    pub async fn bind_unix(path: &Path, options: ServerOptions) -> io::Result<Self> {
        Self::bind_unix_with_runtime(R::default_runtime()?, path, options).await
    }
}

impl<R: Runtime> WsServer<R> {
    /// Serves WebSocket connections on a Unix-domain socket file at `path` (created `0600`,
    /// so only this user can connect; removed when the server stops), the tasks on `runtime`:
    /// what `execd bridge` reaches over ssh. `options.security` is not applied (no TLS, no
    /// tokens: the file's permissions decide who connects). [`url`](Self::url) is
    /// `unix:PATH`.
    ///
    /// # Errors
    /// The `bind(2)` error (`AddrInUse` when `path` exists), the `chmod` or registration error.
    pub async fn bind_unix_with_runtime(
        runtime: R,
        path: &Path,
        options: ServerOptions,
    ) -> io::Result<Self> {
        let runtime = shared(runtime);
        let listener =
            WsListener::bind_unix_with_runtime(Arc::clone(&runtime), path, options.limits())
                .await?;
        Ok(WsServer {
            runtime,
            listener,
            options,
            _runtime: PhantomData,
        })
    }
}

impl<R> WsServer<R> {
    /// The bound address (`0.0.0.0:0` for a Unix-domain socket).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// `ws://IP:PORT` of the bound address (`wss://` when serving TLS), or `unix:PATH` for a
    /// Unix-domain socket (a URL [`Client::connect`](crate::Client::connect) takes).
    pub fn url(&self) -> String {
        match self.listener.unix_path() {
            Some(path) => format!("unix:{}", path.display()),
            None => format!("{}://{}", self.listener.scheme(), self.local_addr()),
        }
    }

    /// Serves until the listener fails. Children die with the server (PDEATHSIG: with the
    /// thread that polls this future) and are killed when this future is dropped.
    ///
    /// # Errors
    /// An accept error that is not per-connection; no OS randomness for session ids.
    pub async fn run(self) -> io::Result<()> {
        self.run_until(future::pending()).await
    }

    /// Serves until the listener fails or `shutdown` completes; then stops accepting, kills
    /// every process tree, closes each connection with WebSocket code 1001 "going away" after
    /// flushing it, and returns `Ok(())` (see [`crate::shutdown`]).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        run_ws(self.runtime, self.listener, self.options, shutdown).await
    }
}

impl<R> fmt::Debug for WsServer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsServer")
            .field("runtime", &self.runtime)
            .field("listener", &self.listener)
            .field("options", &self.options)
            .finish()
    }
}

async fn run_ws(
    runtime: Arc<dyn Runtime>,
    listener: WsListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (loop_tx, loop_rx) = async_channel::unbounded();
    let shutdown_tx = loop_tx.clone();
    let acceptor_runtime = Arc::clone(&runtime);
    let accept_tx = loop_tx.clone();
    let acceptor = async move {
        loop {
            match listener.accept_peer().await {
                Ok((reader, writer, peer)) => {
                    debug!(peer = %peer.addr, principal = ?peer.principal, "connection accepted");
                    if accept_tx
                        .send(LoopEvent::Accepted(reader, writer, peer.principal))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Err(e) if is_transient_accept_error(&e) => {
                    warn!(error = %e, "accept failed");
                    let now = acceptor_runtime.now();
                    acceptor_runtime
                        .sleep_until(now + Duration::from_millis(50))
                        .await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    // Accept until shutdown: then the listener goes and the loop is told to stop.
    let accept_until_shutdown = async {
        future::or(acceptor, async {
            shutdown.await;
            Ok(())
        })
        .await?;
        shutdown::forward(future::ready(()), shutdown_tx, LoopEvent::Shutdown).await;
        Ok(())
    };
    let event_loop = EventLoop::new(runtime, options, loop_tx, false)?;
    let serve = event_loop.run(loop_rx);
    future::or(
        async {
            serve.await;
            Ok(())
        },
        accept_until_shutdown,
    )
    .await
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    )
}

/// The server over one connection someone else opened: this process's stdin and stdout, or a
/// transport of the embedder's. Never constructed: its functions find runtime `R` by type
/// (`execd_smol::Server::serve_stdio(options)`); [`serve_stdio`] and [`serve_connection`] take
/// a runtime instead.
pub struct Server<R = Arc<dyn Runtime>> {
    _runtime: PhantomData<fn() -> R>,
}

impl<R: DefaultRuntime> Server<R> {
    /// [`serve_stdio`] on the default runtime.
    ///
    /// # Errors
    /// As [`serve_stdio`]; no default runtime (tokio: called outside a tokio runtime).
    pub async fn serve_stdio(options: ServerOptions) -> io::Result<()> {
        serve_stdio(R::default_runtime()?, options).await
    }

    /// [`serve_stdio_until`] on the default runtime.
    ///
    /// # Errors
    /// As [`serve_stdio`]; no default runtime (tokio: called outside a tokio runtime).
    pub async fn serve_stdio_until(
        options: ServerOptions,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        serve_stdio_until(R::default_runtime()?, options, shutdown).await
    }

    /// [`serve_connection`] on the default runtime.
    ///
    /// # Errors
    /// As [`serve_connection`]; no default runtime (tokio: called outside a tokio runtime).
    pub async fn serve_connection(
        reader: FrameReader,
        writer: FrameWriter,
        options: ServerOptions,
    ) -> io::Result<()> {
        serve_connection(R::default_runtime()?, reader, writer, options).await
    }
}

impl<R> fmt::Debug for Server<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").finish()
    }
}

/// Serves one connection over this process's stdin and stdout (newline-delimited JSON) until
/// stdin closes; then kills every process it started and returns. Tasks run on `runtime`.
///
/// # Errors
/// The runtime cannot provide stdin and stdout; no OS randomness for session ids.
pub async fn serve_stdio(runtime: impl Runtime, options: ServerOptions) -> io::Result<()> {
    serve_stdio_until(runtime, options, future::pending()).await
}

/// [`serve_stdio`] that also stops when `shutdown` completes: it then kills every process tree,
/// flushes and closes stdout, and returns `Ok(())` (see [`crate::shutdown`]).
///
/// # Errors
/// As [`serve_stdio`].
pub async fn serve_stdio_until(
    runtime: impl Runtime,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let runtime = shared(runtime);
    let (stdin, stdout) = runtime.stdio()?;
    let (reader, writer) = transport::stdio_transport(stdin, stdout, options.limits());
    serve_on(runtime, reader, writer, options, shutdown).await
}

/// Serves one already-open connection until it closes, then kills every process it started.
/// Used for stdio, and by embedders with their own transport. Tasks run on `runtime`.
///
/// # Errors
/// No OS randomness for session ids.
pub async fn serve_connection(
    runtime: impl Runtime,
    reader: FrameReader,
    writer: FrameWriter,
    options: ServerOptions,
) -> io::Result<()> {
    serve_on(shared(runtime), reader, writer, options, future::pending()).await
}

async fn serve_on(
    runtime: Arc<dyn Runtime>,
    reader: FrameReader,
    writer: FrameWriter,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (loop_tx, loop_rx) = async_channel::unbounded();
    // Cannot fail: the receiver is alive.
    let _ = loop_tx
        .send(LoopEvent::Accepted(reader, writer, None))
        .await;
    let trigger = shutdown::forward(shutdown, loop_tx.clone(), LoopEvent::Shutdown);
    let event_loop = EventLoop::new(runtime, options, loop_tx, true)?;
    future::or(event_loop.run(loop_rx), trigger).await;
    Ok(())
}

enum LoopEvent {
    /// A connection, and who it authenticated as.
    Accepted(FrameReader, FrameWriter, Option<Principal>),
    /// An fs operation, watch check or watch event from the fs worker.
    Fs(FsDone),
    Frame(ConnId, Inbound),
    Closed(ConnId),
    /// The writer wrote this many bytes of the connection's frames (reported to the core).
    Sent(ConnId, usize),
    /// Shut down cleanly ([`crate::shutdown`]).
    Shutdown,
}

/// The loop's handle on one connection's tasks.
struct ConnHandle {
    tx: Sender<WriterMsg>,
    /// Set while the core paused reading this connection ([`Command::PauseReading`]).
    read_paused: Arc<AtomicBool>,
    /// Wakes a paused reader.
    read_resume: Sender<()>,
    /// Returns one frame credit to the reader (see [`FRAMES_QUEUED_PER_CONNECTION`]).
    frame_credit: Sender<()>,
    /// Closes when the writer task ends (everything written, or failed).
    writer_done: Receiver<()>,
    /// Dropping a task cancels it.
    _reader: Task,
    writer: Option<Task>,
}

enum WriterMsg {
    Frame(String),
    /// ext: a binary frame (PROTOCOL.md §2.5).
    Binary(Vec<u8>),
    Close,
    /// Close with 1001 "going away" (the loop waits for the writer task to end).
    GoingAway,
}

struct EventLoop {
    runtime: Arc<dyn Runtime>,
    server: execd_core::Server,
    processes: ProcessTable,
    fs: FsService,
    process_rx: Receiver<(ProcessKey, ProcessEvent)>,
    /// Merges output chunks queued in `process_rx` (coalescing under load).
    coalescer: Coalescer<ProcessKey>,
    http: HttpService,
    http_rx: Receiver<(HttpTicket, HttpEvent)>,
    loop_tx: Sender<LoopEvent>,
    writers: HashMap<ConnId, ConnHandle>,
    /// Stop when the last connection closes (stdio mode).
    single: bool,
    /// A shutdown was requested: close connections with 1001 and wait for them.
    going_away: bool,
}

impl EventLoop {
    fn new(
        runtime: Arc<dyn Runtime>,
        options: ServerOptions,
        loop_tx: Sender<LoopEvent>,
        single: bool,
    ) -> io::Result<Self> {
        // Without OS randomness session ids would be guessable; refuse to run that way.
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
        let mut core = options.core;
        let (process_tx, process_rx) =
            async_channel::bounded(process_event_queue(core.max_chunk_bytes));
        if core.environment_info.is_none() {
            core.environment_info = Some(crate::host::host_environment_info());
        }
        if core.host_env.is_empty() {
            // The source of `envPolicy` children and of `http/request` `valueEnvVar`s; the wire
            // carries only UTF-8 pairs.
            core.host_env = std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect();
        }
        let runner = HttpRunner::new(Arc::clone(&runtime), options.http_ca.as_deref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let (http, http_rx) = HttpService::new(Arc::clone(&runtime), runner);
        let fs_tx = loop_tx.clone();
        let fs = FsService::new(
            Arc::clone(&runtime),
            Arc::new(move |done| {
                // Unbounded: never blocks the fs worker; fails only once the loop is gone.
                let _ = fs_tx.try_send(LoopEvent::Fs(done));
            }),
        );
        let mut processes = ProcessTable::with_runtime(Arc::clone(&runtime), process_tx);
        processes.set_chunk_bytes(core.max_chunk_bytes);
        Ok(EventLoop {
            fs,
            http,
            http_rx,
            processes,
            coalescer: Coalescer::new(core.max_chunk_bytes),
            runtime,
            server: execd_core::Server::new(core, seed),
            process_rx,
            loop_tx,
            writers: HashMap::new(),
            single,
            going_away: false,
        })
    }

    async fn run(mut self, loop_rx: Receiver<LoopEvent>) {
        // One timer for the loop's life, re-armed only when the deadline moves.
        let mut timer = self.runtime.sleep_until(self.runtime.now());
        let mut armed: Option<Instant> = None;
        'serve: loop {
            if self.drain() {
                break;
            }
            let deadline = self.server.poll_timeout();
            if let Some(at) = deadline {
                if armed != Some(at) {
                    timer.as_mut().reset(at);
                    armed = Some(at);
                }
            }
            let timer = async {
                match deadline {
                    Some(_) => {
                        timer.as_mut().await;
                        // Fired: the next deadline re-arms it, even if it is the same instant.
                        armed = None;
                    }
                    None => future::pending::<()>().await,
                }
                Wake::Timer
            };
            // An event the coalescer read ahead is handed on before anything is awaited.
            let held = self.coalescer.has_held();
            let wake = future::or(
                async {
                    if held {
                        return Wake::Held;
                    }
                    loop_rx.recv().await.map_or(Wake::Stop, Wake::Loop)
                },
                future::or(
                    async {
                        self.process_rx
                            .recv()
                            .await
                            .map_or(Wake::Stop, |(k, e)| Wake::Process(k, e))
                    },
                    future::or(
                        async {
                            // Never closed: the loop holds a sender (in `http`).
                            match self.http_rx.recv().await {
                                Ok((ticket, event)) => Wake::Http(ticket, event),
                                Err(_) => future::pending().await,
                            }
                        },
                        timer,
                    ),
                ),
            )
            .await;
            let now = self.runtime.now();
            match wake {
                Wake::Stop => break,
                // Handed on by the batch below.
                Wake::Held => {}
                Wake::Timer => self.server.handle_timeout(now),
                Wake::Loop(ev) => {
                    if self.on_loop_event(now, ev) {
                        break;
                    }
                }
                Wake::Process(key, ev) => {
                    let (key, ev) = self.coalescer.merge((key, ev), &self.process_rx);
                    self.server.handle_process(now, key, ev);
                }
                Wake::Http(ticket, ev) => {
                    self.http.on_event(ticket, &ev);
                    self.server.handle_http(now, ticket, ev);
                }
            }
            // Take what else is ready before flushing, so bursts go out as bursts; at most
            // `PROCESS_QUEUE_BYTES` of output, so a pause the core decided in this batch
            // reaches the pumps before they read much further.
            let mut output_bytes = 0;
            for _ in 0..EVENT_BATCH {
                if output_bytes < PROCESS_QUEUE_BYTES {
                    if let Some((key, ev)) = self.coalescer.next(&self.process_rx) {
                        if let ProcessEvent::Output { bytes, .. } = &ev {
                            output_bytes += bytes.len();
                        }
                        self.server.handle_process(now, key, ev);
                        continue;
                    }
                }
                match loop_rx.try_recv() {
                    Ok(ev) => {
                        if self.on_loop_event(now, ev) {
                            break 'serve;
                        }
                    }
                    Err(_) => break,
                }
            }
            if deadline.is_some_and(|d| d <= now) {
                self.server.handle_timeout(now);
            }
        }
        self.drain();
        self.shutdown().await;
    }

    /// Returns true when the loop should stop.
    fn on_loop_event(&mut self, now: Instant, ev: LoopEvent) -> bool {
        match ev {
            LoopEvent::Accepted(reader, writer, principal) => {
                let conn = self.server.handle_connect_as(now, principal);
                if writer.carries_binary() {
                    self.server.allow_binary_frames(conn);
                }
                info!(%conn, "connection opened");
                self.start_connection(conn, reader, writer);
                false
            }
            LoopEvent::Frame(conn, Inbound::Frame(bytes)) => {
                trace!(%conn, len = bytes.len(), "frame");
                self.return_frame_credit(conn);
                if let Err(e) = self.server.handle_message(now, conn, &bytes) {
                    debug!(error = %e, "frame for a closed connection");
                }
                false
            }
            LoopEvent::Frame(conn, Inbound::TooLarge { len }) => {
                self.return_frame_credit(conn);
                let _ = self.server.handle_frame_too_large(now, conn, len);
                false
            }
            LoopEvent::Fs(done) => {
                match done {
                    FsDone::Op(ticket, result) => {
                        self.fs.answered(ticket);
                        self.server.handle_fs(now, ticket, result);
                    }
                    FsDone::Piece(ticket, bytes) => {
                        self.server.handle_fs_piece(now, ticket, bytes);
                    }
                    FsDone::WatchChecked {
                        ticket,
                        conn,
                        watch_id,
                        watch,
                    } => {
                        let result = self.fs.watch_checked(conn, watch_id, watch);
                        self.server.handle_fs(now, ticket, result);
                    }
                    FsDone::WatchFired(conn, watch_id) => {
                        self.server.handle_fs_watch_event(now, conn, watch_id);
                    }
                    FsDone::WatchInstalled {
                        ticket,
                        conn,
                        watch_id,
                        result,
                    } => {
                        let result = self.fs.fs_watch_installed(conn, watch_id, result);
                        self.server.handle_fs(now, ticket, result);
                    }
                    FsDone::Changed {
                        conn,
                        watch_id,
                        kind,
                        paths,
                    } => self
                        .server
                        .handle_fs_change(now, conn, watch_id, kind, paths),
                }
                false
            }
            LoopEvent::Sent(conn, bytes) => {
                self.server.handle_sent(now, conn, bytes);
                false
            }
            LoopEvent::Closed(conn) => {
                info!(%conn, "connection closed");
                // Replies to the frames read before the end go to the writer first.
                let dropped_last = self.drain();
                let _ = self.server.handle_disconnect(now, conn);
                if self.single && self.writers.contains_key(&conn) {
                    // The last connection: `shutdown` flushes its writer, then closes it.
                    return true;
                }
                self.writers.remove(&conn);
                dropped_last
            }
            LoopEvent::Shutdown => {
                self.going_away = true;
                true
            }
        }
    }

    fn start_connection(&mut self, conn: ConnId, mut reader: FrameReader, mut writer: FrameWriter) {
        let (tx, rx) = async_channel::unbounded::<WriterMsg>();
        let read_paused = Arc::new(AtomicBool::new(false));
        let (read_resume, resume_rx) = async_channel::bounded::<()>(1);
        let (done_tx, writer_done) = async_channel::bounded::<()>(1);
        let (frame_credit, credits) = async_channel::bounded::<()>(FRAMES_QUEUED_PER_CONNECTION);
        for _ in 0..FRAMES_QUEUED_PER_CONNECTION {
            let _ = frame_credit.try_send(());
        }
        let loop_tx = self.loop_tx.clone();
        let paused = read_paused.clone();
        let reader_task = self.runtime.spawn(Box::pin(async move {
            loop {
                // Paused by the core: leave the frames in the socket (TCP backpressure).
                while paused.load(Ordering::Acquire) {
                    if resume_rx.recv().await.is_err() {
                        return;
                    }
                }
                if credits.recv().await.is_err() {
                    return;
                }
                match reader.recv().await {
                    Some(Ok(inbound)) => {
                        if loop_tx.send(LoopEvent::Frame(conn, inbound)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        debug!(%conn, error = %e, "connection read failed");
                        break;
                    }
                    None => break,
                }
            }
            let _ = loop_tx.send(LoopEvent::Closed(conn)).await;
        }));
        let loop_tx = self.loop_tx.clone();
        let writer_task = self.runtime.spawn(Box::pin(async move {
            // Held until the task ends: the loop awaits the close at stdio EOF and on shutdown.
            let _done = done_tx;
            let result: io::Result<()> = async {
                while let Ok(msg) = rx.recv().await {
                    let mut next = Some(msg);
                    let mut written = 0usize;
                    // Send everything queued, then flush once and report the bytes written.
                    while let Some(msg) = next.take() {
                        match msg {
                            WriterMsg::Frame(text) => {
                                written += text.len();
                                writer.send(text).await?;
                            }
                            WriterMsg::Binary(frame) => {
                                written += frame.len();
                                writer.send_binary(frame).await?;
                            }
                            WriterMsg::Close => {
                                writer.close().await?;
                                return Ok(());
                            }
                            WriterMsg::GoingAway => {
                                writer.close_going_away().await?;
                                return Ok(());
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    writer.flush().await?;
                    let _ = loop_tx.send(LoopEvent::Sent(conn, written)).await;
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                debug!(%conn, error = %e, "connection write failed");
            }
            let _ = writer.close().await;
        }));
        self.writers.insert(
            conn,
            ConnHandle {
                tx,
                read_paused,
                read_resume,
                frame_credit,
                writer_done,
                _reader: reader_task,
                writer: Some(writer_task),
            },
        );
    }

    // Every output and command is acted on: a new core variant must break this build, not fall
    // into a wildcard arm (clippy names a wildcard standing for one variant differently).
    #[deny(
        clippy::wildcard_enum_match_arm,
        clippy::match_wildcard_for_single_variants
    )]
    /// Acts on every output of the core; returns true when the loop should stop (stdio mode,
    /// its connection dropped).
    fn drain(&mut self) -> bool {
        let now = self.runtime.now();
        let mut stop = false;
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Transmit { conn, text } => {
                    if let Some(w) = self.writers.get(&conn) {
                        let _ = w.tx.try_send(WriterMsg::Frame(text));
                    }
                }
                Output::TransmitBinary { conn, frame } => {
                    if let Some(w) = self.writers.get(&conn) {
                        let _ = w.tx.try_send(WriterMsg::Binary(frame));
                    }
                }
                Output::Close { conn } => {
                    if let Some(w) = self.writers.get(&conn) {
                        let _ = w.tx.try_send(WriterMsg::Close);
                    }
                }
                Output::Drop { conn } => {
                    warn!(%conn, "dropping connection");
                    // Dropping the handle cancels both tasks and closes the socket.
                    self.writers.remove(&conn);
                    let _ = self.server.handle_disconnect(now, conn);
                    stop |= self.single && self.writers.is_empty();
                }
                Output::Command(cmd) => self.perform(now, cmd),
            }
        }
        stop
    }

    #[deny(
        clippy::wildcard_enum_match_arm,
        clippy::match_wildcard_for_single_variants
    )]
    fn perform(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Spawn { key, spec } => {
                // Off the loop: the answer usually comes on the process event channel.
                if let Some(event) = self.processes.start(key, spec) {
                    self.server.handle_process(now, key, event);
                }
            }
            Command::WriteStdin { key, bytes } => self.processes.write_stdin(key, bytes),
            Command::CloseStdin { key } => self.processes.close_stdin(key),
            Command::Signal { key, signal } => self.processes.signal(key, signal),
            Command::Kill { key } => self.processes.kill(key),
            Command::Resize { key, rows, cols } => self.processes.resize(key, rows, cols),
            Command::Release { key } => self.processes.release(key),
            Command::Http { ticket, request } => self.http.start(ticket, request),
            // The core issues a credit only while the connection is not congested.
            Command::HttpPull { ticket, .. } => self.http.grant(ticket),
            Command::HttpCancel { ticket } => self.http.cancel(ticket),
            Command::Fs {
                ticket,
                conn,
                op,
                sandbox,
                pieces,
            } => self.fs.perform(ticket, conn, op, (sandbox, pieces)),
            Command::FsPull { ticket } => self.fs.pull(ticket),
            Command::FsCloseConnection { conn } => self.fs.close_connection(conn),
            Command::WatchMissing {
                ticket,
                conn,
                watch_id,
                missing,
                present,
            } => self.fs.watch(ticket, conn, watch_id, missing, present),
            Command::UnwatchMissing { conn, watch_id } => self.fs.unwatch(conn, watch_id),
            Command::FsWatch {
                ticket,
                conn,
                watch_id,
                path,
                recursive,
            } => self.fs.fs_watch(ticket, conn, watch_id, path, recursive),
            Command::FsUnwatch { conn, watch_id } => self.fs.fs_unwatch(conn, watch_id),
            Command::PauseOutput { key } => self.processes.set_output_paused(key, true),
            Command::ResumeOutput { key } => self.processes.set_output_paused(key, false),
            Command::PauseReading { conn } => self.set_reading_paused(conn, true),
            Command::ResumeReading { conn } => self.set_reading_paused(conn, false),
        }
    }

    fn return_frame_credit(&self, conn: ConnId) {
        if let Some(w) = self.writers.get(&conn) {
            let _ = w.frame_credit.try_send(());
        }
    }

    fn set_reading_paused(&mut self, conn: ConnId, paused: bool) {
        if let Some(w) = self.writers.get(&conn) {
            debug!(%conn, paused, "connection reading");
            w.read_paused.store(paused, Ordering::Release);
            if !paused {
                let _ = w.read_resume.try_send(());
            }
        }
    }

    /// Kills every process tree and closes every connection after what is queued for it: with
    /// 1001 "going away" on a requested shutdown, which then waits (up to
    /// [`shutdown::FLUSH_LIMIT`]) until every close is sent. In stdio mode it waits (up to
    /// [`STDIO_FLUSH_LIMIT`]) until every reply is written, so a client that closed its end of
    /// stdin still reads every answer.
    async fn shutdown(&mut self) {
        self.processes.kill_all();
        self.http.clear();
        let mut done = Vec::new();
        for w in self.writers.values_mut() {
            let msg = if self.going_away {
                WriterMsg::GoingAway
            } else {
                WriterMsg::Close
            };
            let _ = w.tx.try_send(msg);
            // Let the writer flush what is queued and close, even after the loop is gone.
            if let Some(task) = w.writer.take() {
                task.detach();
            }
            done.push(w.writer_done.clone());
        }
        let limit = if self.going_away {
            shutdown::FLUSH_LIMIT
        } else if self.single {
            STDIO_FLUSH_LIMIT
        } else {
            return;
        };
        shutdown::wait_for_connections(&self.runtime, done, limit).await;
    }
}

enum Wake {
    /// The coalescer holds a process event: take it without waiting.
    Held,
    Loop(LoopEvent),
    Process(ProcessKey, ProcessEvent),
    Http(HttpTicket, HttpEvent),
    Timer,
    Stop,
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.processes.kill_all();
    }
}
