//! The async client: a [`Client`] handle over one session on a server, and [`Process`] handles
//! over the processes it started.
//!
//! One task (the driver) owns the sans-IO [`execd_core::Client`] and the transport; handles
//! talk to it over a channel, so they are `Send + Sync` and cheap to clone. With recovery on
//! (the default for [`Client::connect`]), a dropped connection is reconnected and the session
//! resumed behind the handles' backs: calls in flight that cannot be retried fail with
//! [`Error::Closed`], writes are resent with their `writeId` (they reach the child once), and
//! every process's events continue in seq order with nothing lost or repeated (or an explicit
//! [`Event::Gap`] when the server had already evicted the output).
//!
//! When the last handle (every `Client` clone and every `Process`) is dropped, the driver
//! closes the connection, and a server child started by [`Client::spawn_stdio`] is stopped and
//! its exit awaited.

mod driver;
mod fs;
mod fs_watch;
mod http;
mod process;
mod ssh;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_channel::Sender;
use execd_core::client::{CallError, ClientConfig};
use execd_core::protocol::{method, StartParams, StartResult};
use execd_core::RpcError;
use futures_lite::future;

use crate::runtime::{shared, ChildCommand, DefaultRuntime, Runtime};
use crate::transport::{self, FrameReader, FrameWriter, Limits};
use driver::{Cmd, Connector, Driver};
pub use execd_core::client::LostReason;
pub use fs::FileHandle;
pub use fs_watch::{FsChange, FsWatch};
pub use http::HttpBody;
pub use process::{Event, Process};
pub use ssh::SshOptions;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The core client's rules: `clientName`, recovery on or off, the recovery window (default
    /// 25 s) and the reconnect backoff (50 ms doubling to 2 s). Unlike the core's default,
    /// binary `process/output` frames are asked for (`binary_frames`; PROTOCOL.md §2.5).
    pub core: ClientConfig,
    /// Transport limits (largest inbound frame, ping interval).
    pub limits: Limits,
    /// How long one connection attempt (TCP connect plus WebSocket handshake) may take.
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// Bearer token and `wss://` roots for every (re)connect (ext); default none and the
    /// platform's roots.
    pub security: transport::ClientSecurity,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let mut core = ClientConfig::default();
        core.binary_frames = true;
        ClientOptions {
            core,
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(10),
            security: transport::ClientSecurity::default(),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a JSON-RPC error.
    #[error("server error: {0}")]
    Rpc(RpcError),
    /// The connection dropped while the call was in flight and it could not be retried, or the
    /// client is closed (the session was lost or [`Client::close`] was called). The call may
    /// or may not have taken effect. Never a server's answer.
    #[error("the client's connection closed before the call was answered")]
    Closed,
    /// The server's result could not be read.
    #[error("unreadable result: {0}")]
    InvalidResult(String),
    /// `initialize` and `initialized` belong to the client itself.
    #[error("{0} is sent by the client itself")]
    ReservedMethod(String),
    /// A streamed `http/request` body ended early: the `error` of its terminal `bodyDelta`
    /// (a read failure, the timeout, `"cancelled"`).
    #[error("http/request body failed: {0}")]
    HttpBody(String),
    /// A path given to an fs call is not an absolute host path (no request was sent).
    #[error("not an absolute host path: {0}")]
    InvalidPath(String),
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Rpc(e) => Error::Rpc(e),
            CallError::InvalidResult(s) => Error::InvalidResult(s),
            _ => Error::Closed,
        }
    }
}

/// Why [`Client::connect`] or [`Client::spawn_stdio`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The transport could not be opened (bad URL, refused, handshake failed, no server
    /// binary, timeout).
    #[error("cannot connect: {0}")]
    Io(#[from] io::Error),
    /// The transport opened but no session was established.
    #[error("no session: {0:?}")]
    Session(LostReason),
}

/// A handle on one session with a server, its driver task on runtime `R`. Cheap to clone;
/// `Send + Sync`.
///
/// `R` names the runtime: `execd_smol::Client` is `Client<SmolRuntime>`, whose constructors
/// ([`connect`](Self::connect), [`spawn_stdio`](Self::spawn_stdio), …) need no runtime
/// argument; the `…_with_runtime` constructors take any [`Runtime`] (e.g. an
/// `Arc<dyn Runtime>`, the default parameter). Once built, the handle does not use `R`.
///
/// ```no_run
/// # async fn example<R: execd_runtime::DefaultRuntime>() -> Result<(), Box<dyn std::error::Error>> {
/// use execd_runtime::client::{Client, Event};
/// use execd_core::protocol::StartParams;
/// use execd_core::PathUri;
///
/// let client = Client::<R>::connect("ws://127.0.0.1:4000").await?;
/// let process = client
///     .start(StartParams {
///         process_id: "hello".into(),
///         argv: vec!["echo".into(), "hello".into()],
///         cwd: PathUri::from_host_path(&std::env::current_dir()?)?,
///         env: Default::default(),
///         tty: false,
///         pipe_stdin: false,
///         arg0: None,
///         env_policy: None,
///         sandbox: None,
///         enforce_managed_network: false,
///     })
///     .await?;
/// while let Some(event) = process.next_event().await {
///     match event {
///         Event::Output { chunk, .. } => print!("{}", String::from_utf8_lossy(&chunk)),
///         Event::Exited { exit_code, .. } => println!("exit {exit_code}"),
///         _ => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct Client<R = Arc<dyn Runtime>> {
    shared: Arc<Shared>,
    _runtime: PhantomData<fn() -> R>,
}

impl<R> Clone for Client<R> {
    fn clone(&self) -> Self {
        Client {
            shared: Arc::clone(&self.shared),
            _runtime: PhantomData,
        }
    }
}

struct Shared {
    cmds: Sender<Cmd>,
    status: Arc<Status>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// What the driver publishes for the handles.
#[derive(Debug, Default)]
pub(crate) struct Status {
    session_id: Mutex<Option<String>>,
    reconnects: AtomicU64,
    closed: AtomicBool,
}

impl Status {
    fn set_session(&self, id: &str) {
        *self
            .session_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(id.to_owned());
    }
}

impl<R: DefaultRuntime> Client<R> {
    /// Connects to a `ws://HOST:PORT` server with [`ClientOptions::default`] (recovery on) and
    /// opens a session; the driver runs on the default runtime.
    ///
    /// # Errors
    /// [`ConnectError::Io`] when the connection cannot be opened within the connect timeout
    /// (or there is no default runtime); [`ConnectError::Session`] when the server refuses
    /// `initialize`.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// Like [`connect`](Self::connect), with `options`. Reconnects (with recovery on) go to
    /// the same URL.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Self, ConnectError> {
        Self::connect_with_runtime(R::default_runtime()?, url, options).await
    }

    /// Reaches `host` (`[USER@]HOST`, as ssh takes it) over ssh and opens a session on the
    /// per-user `execd serve` daemon there (started by the first connection), the driver on the
    /// default runtime; see [`connect_ssh_with_runtime`](Self::connect_ssh_with_runtime).
    ///
    /// # Errors
    /// As [`connect_ssh_with_runtime`](Self::connect_ssh_with_runtime); no default runtime.
    pub async fn connect_ssh(host: &str, options: SshOptions) -> Result<Self, ConnectError> {
        Self::connect_ssh_with_runtime(R::default_runtime()?, host, options).await
    }

    /// Launches a server child and opens a session over its pipes; see
    /// [`spawn_stdio_with_runtime`](Self::spawn_stdio_with_runtime). The driver runs on the
    /// default runtime.
    ///
    /// # Errors
    /// As [`spawn_stdio_with_runtime`](Self::spawn_stdio_with_runtime); no default runtime.
    pub async fn spawn_stdio(
        argv: &[OsString],
        env: Option<&BTreeMap<OsString, OsString>>,
        cwd: Option<PathBuf>,
    ) -> Result<Self, ConnectError> {
        Self::spawn_stdio_with_runtime(R::default_runtime()?, argv, env, cwd).await
    }

    /// Like [`spawn_stdio`](Self::spawn_stdio), from a prepared `command` (e.g. with
    /// `process_group(0)` or a `setsid` `pre_exec` hook, so a terminal's Ctrl-C reaches only
    /// the caller); its stdio settings are replaced by pipes (stdin, stdout) and inherit
    /// (stderr).
    ///
    /// # Errors
    /// As [`spawn_stdio_with_runtime`](Self::spawn_stdio_with_runtime); no default runtime.
    pub async fn spawn_stdio_command(command: std::process::Command) -> Result<Self, ConnectError> {
        spawn_stdio_command(shared(R::default_runtime()?), command)
            .await
            .map(Client::from_shared)
    }

    /// A client over an already-open transport (e.g. [`transport::memory_pair`]), its driver
    /// on the default runtime. Recovery is forced off: there is no way to reopen it.
    ///
    /// # Errors
    /// [`ConnectError::Session`] when no session could be opened; no default runtime.
    pub async fn over(
        reader: FrameReader,
        writer: FrameWriter,
        options: ClientOptions,
    ) -> Result<Self, ConnectError> {
        Self::over_with_runtime(R::default_runtime()?, reader, writer, options).await
    }
}

impl<R: Runtime> Client<R> {
    /// Connects to a `ws://HOST:PORT` server with `options` and opens a session; the driver
    /// runs on `runtime`. Reconnects (with recovery on) go to the same URL.
    ///
    /// # Errors
    /// [`ConnectError::Io`] when the connection cannot be opened within the connect timeout;
    /// [`ConnectError::Session`] when the server refuses `initialize`.
    pub async fn connect_with_runtime(
        runtime: R,
        url: &str,
        options: ClientOptions,
    ) -> Result<Self, ConnectError> {
        connect(shared(runtime), url, options)
            .await
            .map(Client::from_shared)
    }

    /// Reaches `host` (`[USER@]HOST`) over ssh, the driver on `runtime`: each connection is an
    /// `ssh HOST execd bridge` child (see [`SshOptions`]) whose pipes carry a WebSocket to the
    /// per-user `execd serve` daemon on `host`; the first bridge starts that daemon. With
    /// recovery on (the default), when ssh dies or the network drops, a new ssh child is
    /// started and the session resumed: the processes keep running on `host` and their output
    /// and stdin stay exact, as with [`connect`](Self::connect). Each ssh child is killed when
    /// its connection is dropped.
    ///
    /// # Errors
    /// [`ConnectError::Io`] when ssh cannot be started, exits before the handshake (the message
    /// names its exit status; ssh's own message went to stderr) or no handshake completes
    /// within `options.client.connect_timeout`; [`ConnectError::Session`] when the daemon
    /// refuses `initialize`.
    pub async fn connect_ssh_with_runtime(
        runtime: R,
        host: &str,
        options: SshOptions,
    ) -> Result<Self, ConnectError> {
        let rt = shared(runtime);
        let core = options.client.core.clone();
        let connector = Connector::Ssh(ssh::SshConnector::new(rt.clone(), host, options));
        connect_via(rt, connector, core)
            .await
            .map(Client::from_shared)
    }

    /// Launches a server child from `argv` (e.g. `["execd", "serve", "--listen", "stdio"]` or
    /// `["ssh", "host", "execd", "serve", "--listen", "stdio"]`; never through a shell) and
    /// opens a session over its stdin/stdout, the driver on `runtime`. The child's stderr is
    /// inherited. `env`: the child's exact environment (`None` inherits this process's);
    /// `cwd`: its working directory (`None`: this process's).
    ///
    /// Recovery is off: the child's pipes are the only way to reach that server. When the last
    /// handle drops, the child's stdin is closed (a stdio server then stops, killing its
    /// processes); if it has not exited within 5 s it is killed; its exit is awaited either way.
    ///
    /// # Errors
    /// [`ConnectError::Io`] when the child cannot be started (e.g. `argv` is empty or names no
    /// program); [`ConnectError::Session`] when no session could be opened over its pipes.
    pub async fn spawn_stdio_with_runtime(
        runtime: R,
        argv: &[OsString],
        env: Option<&BTreeMap<OsString, OsString>>,
        cwd: Option<PathBuf>,
    ) -> Result<Self, ConnectError> {
        spawn_stdio(shared(runtime), argv, env, cwd)
            .await
            .map(Client::from_shared)
    }

    /// A client over an already-open transport (e.g. [`transport::memory_pair`]), its driver
    /// on `runtime`. Recovery is forced off: there is no way to reopen it.
    ///
    /// # Errors
    /// [`ConnectError::Session`] when no session could be opened.
    pub async fn over_with_runtime(
        runtime: R,
        reader: FrameReader,
        writer: FrameWriter,
        mut options: ClientOptions,
    ) -> Result<Self, ConnectError> {
        options.core.recovery = false;
        start_driver(
            shared(runtime),
            core_client(options.core)?,
            Connector::None,
            reader,
            writer,
            None,
        )
        .await
        .map(Client::from_shared)
    }
}

impl<R> Client<R> {
    fn from_shared(shared: Arc<Shared>) -> Self {
        Client {
            shared,
            _runtime: PhantomData,
        }
    }

    /// The same handle, with the runtime type erased (what [`Process::client`] returns).
    fn erased(&self) -> Client {
        Client::from_shared(Arc::clone(&self.shared))
    }

    /// The same handle under another runtime type (the driver keeps running where it runs).
    pub(crate) fn with_runtime_type<S>(self) -> Client<S> {
        Client::from_shared(self.shared)
    }

    /// The session id.
    pub fn session_id(&self) -> Option<String> {
        self.shared
            .status
            .session_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times the session was resumed over a new connection.
    pub fn reconnects(&self) -> u64 {
        self.shared.status.reconnects.load(Ordering::Relaxed)
    }

    /// Whether the client is closed for good (every call fails with [`Error::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.shared.status.closed.load(Ordering::Acquire)
    }

    /// Sends `method` with `params` and awaits the `result`.
    ///
    /// # Errors
    /// [`Error::Rpc`] for the server's error, [`Error::Closed`] when the answer cannot come,
    /// [`Error::ReservedMethod`] for `initialize`/`initialized`.
    pub async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        if matches!(method, method::FS_READ_FILE | method::FS_READ_BLOCK) {
            // Answered with bytes (a binary result frame when negotiated): give the JSON
            // result back as the server would have sent it.
            let (data, eof) = self.data_call(method, params).await?;
            let data = serde_json::Value::String(base64_simd::STANDARD.encode_to_string(&data));
            return Ok(if method == method::FS_READ_FILE {
                serde_json::json!({ "dataBase64": data })
            } else {
                serde_json::json!({ "chunk": data, "eof": eof })
            });
        }
        let (reply, rx) = async_channel::bounded(1);
        self.send(Cmd::Call {
            method: method.to_owned(),
            params,
            reply,
        })
        .await?;
        rx.recv().await.map_err(|_| Error::Closed)?
    }

    /// `fs/readFile` or `fs/readBlock`: the result's bytes and `eof`, from a binary result
    /// frame (PROTOCOL.md §2.5) when the connection negotiated them, else from the JSON.
    pub(super) async fn data_call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<(Vec<u8>, bool), Error> {
        let (reply, rx) = async_channel::bounded(1);
        self.send(Cmd::DataCall {
            method: method.to_owned(),
            params,
            reply,
        })
        .await?;
        rx.recv().await.map_err(|_| Error::Closed)?
    }

    /// `process/start`: starts a process and returns its handle. Its events (from the first
    /// seq) are delivered through [`Process::next_event`] in seq order, across reconnects.
    ///
    /// # Errors
    /// As [`call`](Self::call). A start cut off by a disconnect is settled after the resume
    /// (it ran exactly once, or is sent again); it fails with [`Error::Closed`] only when the
    /// session is lost.
    pub async fn start(&self, params: StartParams) -> Result<Process, Error> {
        let process_id = params.process_id.clone();
        let (events_tx, events) = process::event_queue();
        let (reply, rx) = async_channel::bounded(1);
        self.send(Cmd::Start {
            params: Box::new(params),
            events: events_tx,
            reply,
        })
        .await?;
        let result = rx.recv().await.map_err(|_| Error::Closed)??;
        let result: StartResult =
            serde_json::from_value(result).map_err(|e| Error::InvalidResult(e.to_string()))?;
        Ok(Process::new(
            process_id,
            result.sandbox_type,
            self.erased(),
            events,
        ))
    }

    /// Closes the client for good: pending calls fail with [`Error::Closed`], process event
    /// streams end with [`Event::SessionLost`], the connection closes. The session stays on the
    /// server until its TTL.
    pub async fn close(&self) {
        let _ = self.shared.cmds.send(Cmd::Close).await;
    }

    /// `process/write` with a fresh `writeId`.
    pub(crate) async fn write(
        &self,
        process_id: &str,
        bytes: Vec<u8>,
    ) -> Result<serde_json::Value, Error> {
        let (reply, rx) = async_channel::bounded(1);
        self.send(Cmd::Write {
            process_id: process_id.to_owned(),
            bytes,
            reply,
        })
        .await?;
        rx.recv().await.map_err(|_| Error::Closed)?
    }

    async fn send(&self, cmd: Cmd) -> Result<(), Error> {
        if let Cmd::Call { method: m, .. } = &cmd {
            if matches!(m.as_str(), method::INITIALIZE | method::INITIALIZED) {
                return Err(Error::ReservedMethod(m.clone()));
            }
        }
        self.shared.cmds.send(cmd).await.map_err(|_| Error::Closed)
    }
}

impl<R> fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("session_id", &self.session_id())
            .field("reconnects", &self.reconnects())
            .field("closed", &self.is_closed())
            .finish()
    }
}

async fn connect(
    rt: Arc<dyn Runtime>,
    url: &str,
    options: ClientOptions,
) -> Result<Arc<Shared>, ConnectError> {
    let connector = Connector::Ws {
        rt: rt.clone(),
        url: url.to_owned(),
        limits: options.limits.clone(),
        timeout: options.connect_timeout,
        security: options.security.clone(),
    };
    connect_via(rt, connector, options.core).await
}

/// Opens the first connection through `connector` (retried as the core decides) and starts
/// the driver, which reconnects through it.
async fn connect_via(
    rt: Arc<dyn Runtime>,
    connector: Connector,
    config: ClientConfig,
) -> Result<Arc<Shared>, ConnectError> {
    // Whether and when a failed first connect is retried is the core's decision
    // (`first_connect_failed`); this only classifies the error, connects and sleeps.
    let mut core = core_client(config)?;
    let (reader, writer) = loop {
        match connector.connect().await {
            Ok(pair) => break pair,
            Err(e) => match core.first_connect_failed(rt.now(), is_transient(&e)) {
                Some(at) => {
                    tracing::debug!(error = %e, "client: first connect failed; retrying");
                    rt.sleep_until(at).await;
                }
                None => return Err(e.into()),
            },
        }
    };
    start_driver(rt, core, connector, reader, writer, None).await
}

async fn spawn_stdio(
    rt: Arc<dyn Runtime>,
    argv: &[OsString],
    env: Option<&BTreeMap<OsString, OsString>>,
    cwd: Option<PathBuf>,
) -> Result<Arc<Shared>, ConnectError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv").into());
    };
    let mut command = std::process::Command::new(program);
    command.args(args);
    if let Some(env) = env {
        command.env_clear().envs(env);
    }
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    spawn_stdio_command(rt, command).await
}

async fn spawn_stdio_command(
    rt: Arc<dyn Runtime>,
    command: std::process::Command,
) -> Result<Arc<Shared>, ConnectError> {
    let mut child = rt.spawn_child(ChildCommand {
        command,
        stdin: Stdio::piped(),
        stdout: Stdio::piped(),
        stderr: Stdio::inherit(),
        kill_on_drop: true,
    })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io::Error::other("the child has no stdio pipes").into());
    };
    let mut options = ClientOptions::default();
    options.core.recovery = false;
    let (reader, writer) = transport::stdio_transport(stdout, stdin, options.limits.clone());
    start_driver(
        rt,
        core_client(options.core)?,
        Connector::None,
        reader,
        writer,
        Some(child),
    )
    .await
}

/// A core client with `config`, its `writeId` seed from the OS.
fn core_client(config: ClientConfig) -> io::Result<execd_core::Client> {
    let mut seed = [0u8; 16];
    getrandom::getrandom(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(execd_core::Client::new(config, seed))
}

async fn start_driver(
    rt: Arc<dyn Runtime>,
    core: execd_core::Client,
    connector: Connector,
    reader: FrameReader,
    writer: FrameWriter,
    child: Option<crate::runtime::Child>,
) -> Result<Arc<Shared>, ConnectError> {
    let (cmds, cmd_rx) = async_channel::unbounded();
    let status = Arc::new(Status::default());
    let (ready_tx, ready_rx) = async_channel::bounded(1);
    let driver = Driver::new(
        rt.clone(),
        core,
        connector,
        cmd_rx,
        status.clone(),
        ready_tx,
        child,
    );
    rt.spawn(Box::pin(driver.run(reader, writer))).detach();
    let shared = Arc::new(Shared { cmds, status });
    match ready_rx.recv().await {
        Ok(Ok(())) => Ok(shared),
        Ok(Err(reason)) => Err(ConnectError::Session(reason)),
        Err(_) => Err(ConnectError::Session(LostReason::Disconnected)),
    }
}

/// Whether a failed connection attempt may succeed when repeated at once (the peer answered,
/// then the connection broke), as opposed to a refusal or a bad URL.
fn is_transient(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::Unsupported
            | io::ErrorKind::NotFound
            | io::ErrorKind::TimedOut
    )
}

/// Awaits `fut` for at most `limit` on `rt`'s timer; `None` when it ran out.
pub(crate) async fn with_timeout<T>(
    rt: &dyn Runtime,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let expired = rt.sleep_until(rt.now() + limit);
    future::or(async { Some(fut.await) }, async {
        expired.await;
        None
    })
    .await
}
