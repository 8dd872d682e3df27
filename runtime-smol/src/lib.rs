mod os;
pub mod process;
mod pty;
mod server;
pub mod transport;

pub use server::{host_environment_info, serve_connection, serve_stdio, ServerOptions, WsServer};
