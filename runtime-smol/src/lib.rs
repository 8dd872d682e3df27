pub mod client;
mod executor;
mod os;
pub mod process;
mod pty;
mod server;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod transport;

pub use client::{Client, ClientOptions, ConnectError, Error, Event, Process};
pub use executor::{BoxFuture, Executor, LocalExecutor, RemoteExecutor};
pub use server::{host_environment_info, serve_connection, serve_stdio, ServerOptions, WsServer};
