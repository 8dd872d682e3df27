mod os;
pub mod process;
mod pty;
pub mod transport;
mod server;

pub use server::{serve_connection, serve_stdio, ServerOptions, WsServer};
