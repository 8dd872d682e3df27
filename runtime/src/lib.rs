//! execd-runtime: the runtime-independent async half of execd.
//!
//! Everything between the sans-IO core ([`execd_core`]) and an async runtime lives here once:
//! the transports ([`transport`]: WebSocket with `/readyz` and the `Origin` refusal,
//! newline-delimited stdio), the server event loop ([`WsServer`], [`serve_connection`],
//! [`serve_stdio`]) and the process layer ([`process::ProcessTable`]: pipes, PTYs, process
//! groups, `PR_SET_PDEATHSIG`, signal reset). It is generic over the small, object-safe
//! [`Runtime`] trait (spawn, timers, TCP, child processes, file descriptors, stdio);
//! `execd-smol` and `execd-tokio` implement it and wrap this crate's API without a runtime
//! argument. Use one of those; this crate is for runtime implementors.
//!
//! ```no_run
//! # async fn example(runtime: std::sync::Arc<dyn execd_runtime::Runtime>) -> std::io::Result<()> {
//! use execd_runtime::{ServerOptions, WsServer};
//!
//! let addr = "127.0.0.1:0".parse().expect("a socket address");
//! let server = WsServer::bind(runtime, addr, ServerOptions::default()).await?;
//! println!("{}", server.url());
//! server.run().await
//! # }
//! ```

mod auth;
pub mod client;
mod executor;
mod os;
pub mod process;
mod pty;
mod runtime;
#[cfg(feature = "test-support")]
pub mod scenarios;
mod server;
pub mod transport;

pub use auth::{
    AuthConfig, AuthConfigError, AuthMode, AuthSettings, Principal, Unauthorized,
    DEFAULT_MAX_CLOCK_SKEW_SECS, MIN_SHARED_SECRET_BYTES,
};
pub use client::{Client, ClientOptions, ConnectError, Error, Event, Process};
pub use executor::{Executor, LocalExecutor, RemoteExecutor};
pub use runtime::{
    set_nonblocking, AsyncFd, AsyncStream, BoxFuture, BoxRead, BoxWrite, Child, ChildCommand,
    FdStream, Runtime, Sleep, Task, TaskHandle, TcpListener,
};
pub use server::{host_environment_info, serve_connection, serve_stdio, ServerOptions, WsServer};
