//! execd-tokio: execd on the [tokio](https://docs.rs/tokio) runtime.
//!
//! [`WsServer`], [`Server`] (stdio, any transport), [`Client`] and the [`Executor`]s are written
//! once in `execd-runtime`, generic over the runtime; this crate supplies [`TokioRuntime`] and
//! names each type with it filled in (`execd_tokio::Client` is
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
//!     tokio::spawn(server.run()).await??;
//!     Ok(())
//! }
//! ```
//!
//! Call the API inside a tokio runtime with I/O and time drivers (`#[tokio::main]`); tasks are
//! spawned on it. Outside one the async constructors fail and [`ProcessTable::new`] panics; the
//! `…_with_runtime` constructors take a [`TokioRuntime::new(handle)`](TokioRuntime::new).
//! Children die with the thread that polls the server future (`PR_SET_PDEATHSIG`): a worker or
//! the `block_on` thread, not a `spawn_blocking` thread (tokio retires those when idle).

#![warn(missing_docs)]

mod runtime;

pub use execd_runtime::client::{ClientOptions, ConnectError, Error, Event, LostReason, Process};
pub use execd_runtime::{host_environment_info, DefaultRuntime, Executor, Runtime, ServerOptions};
pub use runtime::TokioRuntime;

/// A WebSocket server on tokio: `WsServer::bind(addr, options)`. See [`execd_runtime::WsServer`].
pub type WsServer = execd_runtime::WsServer<TokioRuntime>;

/// One connection served on tokio: `Server::serve_stdio(options)`,
/// `Server::serve_connection(reader, writer, options)`. See [`execd_runtime::Server`].
pub type Server = execd_runtime::Server<TokioRuntime>;

/// A session with a server, driven on tokio. See [`execd_runtime::Client`].
pub type Client = execd_runtime::Client<TokioRuntime>;

/// Runs processes on this host, in-process, on tokio. See [`execd_runtime::LocalExecutor`].
pub type LocalExecutor = execd_runtime::LocalExecutor<TokioRuntime>;

/// Runs processes through a [`Client`]. See [`execd_runtime::RemoteExecutor`].
pub type RemoteExecutor = execd_runtime::RemoteExecutor<TokioRuntime>;

/// A server's children (the OS process layer), keyed by `K`, their tasks on the caller's
/// tokio runtime. See [`execd_runtime::process::ProcessTable`].
pub type ProcessTable<K = execd_core::ProcessKey> =
    execd_runtime::process::ProcessTable<K, TokioRuntime>;

/// Message transports: one JSON-RPC message per frame, over WebSocket, newline-delimited stdio
/// or memory. See [`execd_runtime::transport`]. Byte streams are futures-io: wrap tokio ones
/// with `tokio_util::compat` (`.compat()`, `.compat_write()`).
pub mod transport {
    pub use execd_runtime::transport::{
        memory_pair, stdio_transport, ws_connect, FrameReader, FrameWriter, Inbound, Limits,
    };

    /// A WebSocket server socket on tokio: `WsListener::bind(addr, limits)`. See
    /// [`execd_runtime::transport::WsListener`].
    pub type WsListener = execd_runtime::transport::WsListener<crate::TokioRuntime>;
}
