//! execd-tokio: the execd server on the [tokio](https://docs.rs/tokio) runtime.
//!
//! A WebSocket server ([`WsServer`]), a stdio server ([`serve_stdio`]) and any other transport
//! ([`serve_connection`]) drive the sans-IO core ([`execd_core`]) over real child processes,
//! PTYs and process groups. The machinery is shared with `execd-smol` in `execd-runtime`; this
//! crate supplies the tokio [`TokioRuntime`] and the same public API as `execd-smol`, so
//! switching runtime means switching crate.
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
//! functions fail with an error and [`process::ProcessTable::new`] panics.
//!
//! The server forks its children from the thread that polls the server future and asks the
//! kernel to kill them when that thread exits (`PR_SET_PDEATHSIG`). Poll it from the
//! `block_on` thread or from a runtime worker (both live as long as the runtime), not from a
//! `spawn_blocking` thread, which tokio retires when idle.

pub mod client;
pub mod process;
mod runtime;
pub mod transport;

use std::io;
use std::net::SocketAddr;

pub use client::{
    Client, ClientOptions, ConnectError, Error, Event, Executor, LocalExecutor, Process,
    RemoteExecutor,
};
pub use execd_runtime::{host_environment_info, ServerOptions};
pub use runtime::TokioRuntime;

use transport::{FrameReader, FrameWriter};

/// A WebSocket server bound to a loopback (or other) address; see
/// [`execd_runtime::WsServer`] for the behaviour.
#[derive(Debug)]
pub struct WsServer(execd_runtime::WsServer);

impl WsServer {
    /// Binds `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// The bind error; called outside a tokio runtime.
    pub async fn bind(addr: SocketAddr, options: ServerOptions) -> io::Result<WsServer> {
        execd_runtime::WsServer::bind(runtime::shared()?, addr, options)
            .await
            .map(WsServer)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// `ws://IP:PORT` of the bound address.
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// Serves until the listener fails. Children die with the server (PDEATHSIG: with the
    /// thread that polls this future) and are killed when this future is dropped.
    ///
    /// # Errors
    /// An accept error that is not per-connection; no OS randomness for session ids.
    pub async fn run(self) -> io::Result<()> {
        self.0.run().await
    }
}

/// Serves one connection over this process's stdin and stdout (newline-delimited JSON) until
/// stdin closes; then kills every process it started and returns.
///
/// # Errors
/// Called outside a tokio runtime; no OS randomness for session ids.
pub async fn serve_stdio(options: ServerOptions) -> io::Result<()> {
    execd_runtime::serve_stdio(runtime::shared()?, options).await
}

/// Serves one already-open connection until it closes, then kills every process it started.
/// Used for stdio, and by embedders with their own transport.
///
/// # Errors
/// Called outside a tokio runtime; no OS randomness for session ids.
pub async fn serve_connection(
    reader: FrameReader,
    writer: FrameWriter,
    options: ServerOptions,
) -> io::Result<()> {
    execd_runtime::serve_connection(runtime::shared()?, reader, writer, options).await
}
