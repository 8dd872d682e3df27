//! execd-runtime: the runtime-independent async half of execd.
//!
//! Everything between the sans-IO core ([`execd_core`]) and an async runtime lives here once:
//! the transports ([`transport`]: WebSocket with `/readyz` and the `Origin` refusal,
//! newline-delimited stdio), the server event loop ([`WsServer`], [`serve_connection`],
//! [`serve_stdio`]) and the process layer ([`process::ProcessTable`]: pipes, PTYs, process
//! groups, `PR_SET_PDEATHSIG`, signal reset), the async [`Client`] and the [`Executor`]s. It
//! is written once over the small, object-safe [`Runtime`] trait (clock, spawn, timers, TCP,
//! child processes, file descriptors, stdio), the way quinn is.
//!
//! Every public type that runs tasks takes the runtime as a type parameter `R`, which defaults
//! to `Arc<dyn Runtime>`; the machinery behind it stores an `Arc<dyn Runtime>` and is compiled
//! once. Constructors come in two forms: for a [`DefaultRuntime`] none takes a runtime
//! (`WsServer::<R>::bind(addr, options)`), and the `…_with_runtime` forms take any [`Runtime`]
//! value. `execd-smol` and `execd-tokio` implement [`Runtime`] and [`DefaultRuntime`] and
//! name the types with their runtime filled in (`execd_smol::WsServer` is
//! `WsServer<SmolRuntime>`), so switching runtime means switching crate:
//!
//! ```no_run
//! # async fn example<R: execd_runtime::DefaultRuntime>(
//! #     runtime: std::sync::Arc<dyn execd_runtime::Runtime>,
//! # ) -> std::io::Result<()> {
//! use execd_runtime::{ServerOptions, WsServer};
//!
//! let addr = "127.0.0.1:0".parse().expect("a socket address");
//! // On the default runtime of `R` (execd-smol: `execd_smol::WsServer::bind(addr, options)`):
//! let server = WsServer::<R>::bind(addr, ServerOptions::default()).await?;
//! // Or on a runtime value:
//! let other = WsServer::bind_with_runtime(runtime, addr, ServerOptions::default()).await?;
//! println!("{} {}", server.url(), other.url());
//! server.run().await
//! # }
//! ```
//!
//! A program that picks its runtime at start-up writes its body once, generic over
//! `R: DefaultRuntime`, and runs it with [`DefaultRuntime::block_on`].

#![warn(missing_docs)]

mod aliases;
mod auth;
mod cgroup;
pub mod client;
mod coalesce;
mod executor;
pub mod fs;
mod fs_service;
mod fs_watch;
pub mod host;
pub mod http;
mod os;
pub mod process;
mod pty;
mod runtime;
mod sandbox;
#[cfg(feature = "test-support")]
pub mod scenarios;
mod server;
pub mod shutdown;
mod spawn;
mod tcp;
pub mod transport;

pub use auth::{
    AuthConfig, AuthConfigError, AuthMode, AuthSettings, Principal, Unauthorized,
    DEFAULT_MAX_CLOCK_SKEW_SECS, MIN_SHARED_SECRET_BYTES,
};
pub use client::{
    Client, ClientOptions, ConnectError, Error, Event, HttpBody, Process, SshOptions,
};
pub use executor::{Executor, LocalExecutor, RemoteExecutor};
pub use host::host_environment_info;
pub use runtime::{
    set_nonblocking, AsyncFd, AsyncStream, BoxFuture, BoxRead, BoxWrite, Child, ChildCommand,
    DefaultRuntime, FdStream, Interest, IoOp, IoPoll, Runtime, Sleep, Task, TaskHandle,
};
pub use server::{
    serve_connection, serve_stdio, serve_stdio_until, Server, ServerOptions, WsServer,
};
pub use tcp::TcpListener;
