//! execd-smol: the execd server on the [smol](https://docs.rs/smol) runtime.
//!
//! A WebSocket server ([`WsServer`]), a stdio server ([`serve_stdio`]) and any other transport
//! ([`serve_connection`]) drive the sans-IO core ([`execd_core`]) over real child processes,
//! PTYs and process groups. The machinery is shared with `execd-tokio` in `execd-runtime`; this
//! crate supplies the smol [`SmolRuntime`] and the same public API as `execd-tokio`, so
//! switching runtime means switching crate.
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
pub use runtime::SmolRuntime;

use transport::{FrameReader, FrameWriter};

/// A WebSocket server bound to a loopback (or other) address; see
/// [`execd_runtime::WsServer`] for the behaviour.
#[derive(Debug)]
pub struct WsServer(execd_runtime::WsServer);

impl WsServer {
    /// Binds `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind(addr: SocketAddr, options: ServerOptions) -> io::Result<WsServer> {
        execd_runtime::WsServer::bind(runtime::shared(), addr, options)
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
/// No OS randomness for session ids.
pub async fn serve_stdio(options: ServerOptions) -> io::Result<()> {
    execd_runtime::serve_stdio(runtime::shared(), options).await
}

/// Serves one already-open connection until it closes, then kills every process it started.
/// Used for stdio, and by embedders with their own transport.
///
/// # Errors
/// No OS randomness for session ids.
pub async fn serve_connection(
    reader: FrameReader,
    writer: FrameWriter,
    options: ServerOptions,
) -> io::Result<()> {
    execd_runtime::serve_connection(runtime::shared(), reader, writer, options).await
}
