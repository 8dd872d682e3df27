mod os;
pub mod process;
mod pty;
mod server;
pub mod transport;

pub use server::{serve_connection, serve_stdio, ServerOptions, WsServer};
