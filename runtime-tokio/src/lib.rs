//! execd-tokio: execd on the [tokio](https://docs.rs/tokio) runtime.
//!
//! A WebSocket server ([`WsServer`]), a one-connection server over stdio or any transport
//! ([`Server`]), the async [`Client`] and the [`Executor`]s drive the sans-IO core
//! ([`execd_core`]) over real child processes, PTYs and process groups. They are written once
//! in `execd-runtime`, generic over the runtime; this crate supplies [`TokioRuntime`] and names
//! each type with it filled in (`execd_tokio::Client` is
//! `execd_runtime::Client<TokioRuntime>`), so the constructors take no runtime argument.
//! `execd-smol` has the same names: switching runtime means switching crate.
//!
//! ```no_run
//! use execd_tokio::{ServerOptions, WsServer};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = WsServer::bind("127.0.0.1:0".parse()?, ServerOptions::default()).await?;
//!     println!("{}", server.url());
//!     // Or `tokio::spawn(server.run())` and carry on with the rest of the application.
//!     server.run().await?;
//!     Ok(())
//! }
//! ```
//!
//! Call the API inside a tokio runtime with its I/O and time drivers enabled (`#[tokio::main]`,
//! or `Builder::enable_all`); tasks are spawned on that runtime. Outside one the async
//! constructors fail with an error and [`process::ProcessTable::new`] panics. To run on another
//! runtime than the caller's, pass a [`TokioRuntime::new(handle)`](TokioRuntime::new) to the
//! `…_with_runtime` constructors.
//!
//! The server forks its children from the thread that polls the server future and asks the
//! kernel to kill them when that thread exits (`PR_SET_PDEATHSIG`). Poll it from the
//! `block_on` thread or from a runtime worker (both live as long as the runtime), not from a
//! `spawn_blocking` thread, which tokio retires when idle.

#![warn(missing_docs)]

mod runtime;

pub use execd_runtime::client::{ClientOptions, ConnectError, Error, Event, LostReason, Process};
pub use execd_runtime::{host_environment_info, DefaultRuntime, Executor, Runtime, ServerOptions};
pub use runtime::TokioRuntime;

/// A WebSocket server on tokio: [`WsServer::bind(addr, options)`](execd_runtime::WsServer::bind),
/// then `run`. See [`execd_runtime::WsServer`].
pub type WsServer = execd_runtime::WsServer<TokioRuntime>;

/// The server over one connection on tokio: `Server::serve_stdio(options)` (this process's
/// stdin and stdout) and `Server::serve_connection(reader, writer, options)`. See
/// [`execd_runtime::Server`].
pub type Server = execd_runtime::Server<TokioRuntime>;

/// A session with a server, driven on tokio: `Client::connect(url)`,
/// `Client::spawn_stdio(argv, env, cwd)`, …. See [`execd_runtime::Client`].
pub type Client = execd_runtime::Client<TokioRuntime>;

/// Runs processes on this host, in-process, on tokio: `LocalExecutor::new(options)`. See
/// [`execd_runtime::LocalExecutor`].
pub type LocalExecutor = execd_runtime::LocalExecutor<TokioRuntime>;

/// Runs processes on the server a [`Client`] is connected to. See
/// [`execd_runtime::RemoteExecutor`].
pub type RemoteExecutor = execd_runtime::RemoteExecutor<TokioRuntime>;

/// The async client: [`Client`], [`Process`] and their options and errors (also at the crate
/// root). See [`execd_runtime::client`].
pub mod client {
    pub use crate::{Client, LocalExecutor, RemoteExecutor};
    pub use execd_runtime::client::{
        ClientOptions, ConnectError, Error, Event, LostReason, Process,
    };
    pub use execd_runtime::Executor;
}

/// The OS process layer on tokio. See [`execd_runtime::process`].
pub mod process {
    use execd_core::ProcessKey;

    /// The children a server runs, keyed by `K`, their tasks on the caller's tokio runtime:
    /// `ProcessTable::new(events)` (which panics outside one, like `tokio::spawn`). See [`execd_runtime::process::ProcessTable`].
    pub type ProcessTable<K = ProcessKey> =
        execd_runtime::process::ProcessTable<K, crate::TokioRuntime>;
}

/// Message transports: one JSON-RPC message per frame, over WebSocket, newline-delimited stdio
/// or memory. See [`execd_runtime::transport`].
pub mod transport {
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};

    pub use execd_runtime::transport::{
        memory_pair, ws_connect, FrameReader, FrameWriter, Inbound, Limits,
    };

    /// Builds a transport over a tokio byte stream carrying one frame per line (the server's
    /// stdin and stdout, or a `tokio::process` child's pipes): the tokio types adapted to
    /// futures-io for [`execd_runtime::transport::stdio_transport`].
    pub fn stdio_transport(
        reader: impl AsyncRead + Unpin + Send + 'static,
        writer: impl AsyncWrite + Unpin + Send + 'static,
        limits: Limits,
    ) -> (FrameReader, FrameWriter) {
        execd_runtime::transport::stdio_transport(reader.compat(), writer.compat_write(), limits)
    }

    /// A WebSocket server socket on tokio: `WsListener::bind(addr, limits)`. See
    /// [`execd_runtime::transport::WsListener`].
    pub type WsListener = execd_runtime::transport::WsListener<crate::TokioRuntime>;
}
