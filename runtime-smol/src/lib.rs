//! execd-smol: execd on the [smol](https://docs.rs/smol) runtime.
//!
//! A WebSocket server ([`WsServer`]), a one-connection server over stdio or any transport
//! ([`Server`]), the async [`Client`] and the [`Executor`]s drive the sans-IO core
//! ([`execd_core`]) over real child processes, PTYs and process groups. They are written once
//! in `execd-runtime`, generic over the runtime; this crate supplies [`SmolRuntime`] and names
//! each type with it filled in (`execd_smol::Client` is `execd_runtime::Client<SmolRuntime>`),
//! so the constructors take no runtime argument. `execd-tokio` has the same names: switching
//! runtime means switching crate.
//!
//! ```no_run
//! use execd_smol::{ServerOptions, WsServer};
//!
//! let addr = "127.0.0.1:0".parse()?;
//! smol::block_on(async {
//!     let server = WsServer::bind(addr, ServerOptions::default()).await?;
//!     println!("{}", server.url());
//!     server.run().await
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Tasks run on smol's global executor; call the API from `smol::block_on` or any executor.

#![warn(missing_docs)]

mod runtime;

pub use execd_runtime::client::{ClientOptions, ConnectError, Error, Event, LostReason, Process};
pub use execd_runtime::{host_environment_info, DefaultRuntime, Executor, Runtime, ServerOptions};
pub use runtime::SmolRuntime;

/// A WebSocket server on smol: [`WsServer::bind(addr, options)`](execd_runtime::WsServer::bind),
/// then `run`. See [`execd_runtime::WsServer`].
pub type WsServer = execd_runtime::WsServer<SmolRuntime>;

/// The server over one connection on smol: `Server::serve_stdio(options)` (this process's
/// stdin and stdout) and `Server::serve_connection(reader, writer, options)`. See
/// [`execd_runtime::Server`].
pub type Server = execd_runtime::Server<SmolRuntime>;

/// A session with a server, driven on smol: `Client::connect(url)`,
/// `Client::spawn_stdio(argv, env, cwd)`, …. See [`execd_runtime::Client`].
pub type Client = execd_runtime::Client<SmolRuntime>;

/// Runs processes on this host, in-process, on smol. See [`execd_runtime::LocalExecutor`].
pub type LocalExecutor = execd_runtime::LocalExecutor<SmolRuntime>;

/// Runs processes through a [`Client`]. See [`execd_runtime::RemoteExecutor`].
pub type RemoteExecutor = execd_runtime::RemoteExecutor<SmolRuntime>;

/// A server's children (the OS process layer), keyed by `K`, their tasks on smol's global
/// executor. See [`execd_runtime::process::ProcessTable`].
pub type ProcessTable<K = execd_core::ProcessKey> =
    execd_runtime::process::ProcessTable<K, SmolRuntime>;

/// Message transports: one JSON-RPC message per frame, over WebSocket, newline-delimited stdio
/// or memory. See [`execd_runtime::transport`].
pub mod transport {
    pub use execd_runtime::transport::{
        memory_pair, stdio_transport, ws_connect, FrameReader, FrameWriter, Inbound, Limits,
    };

    /// A WebSocket server socket on smol: `WsListener::bind(addr, limits)`. See
    /// [`execd_runtime::transport::WsListener`].
    pub type WsListener = execd_runtime::transport::WsListener<crate::SmolRuntime>;
}
