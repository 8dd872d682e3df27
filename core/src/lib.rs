//! execd-core: the sans-IO core of execd, a remote process executor.
//!
//! This crate holds every protocol rule and no I/O: no sockets, no processes, no files, no
//! clock or RNG reads. A runtime (`execd-smol`, `execd-tokio`) feeds it frames, process events
//! and the current time, and performs the [`Output`]s it yields. See [`Server`] for the call
//! order.
//!
//! The wire protocol is the JSON-RPC dialect of the Codex exec-server (see `docs/PROTOCOL.md`),
//! with negotiated extensions.

#![warn(missing_docs)]

pub mod client;
pub mod denial;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod ids;
pub mod protocol;
pub mod rpc;
pub mod sandbox;
pub mod server;
#[cfg(any(test, feature = "fuzzing"))]
pub mod sim;

pub use client::{CallError, Client, ClientConfig, ClientError, ClientEvent};
pub use ids::{ConnId, Principal, ProcessKey, Seq};
pub use protocol::PathUri;
pub use rpc::{ErrorCode, RequestId, RpcError};
pub use server::{
    Command, ConfigError, ExitStatus, FsTicket, HttpEvent, HttpTicket, Output, ProcessEvent,
    PtySize, Server, ServerConfig, ServerError, SessionId, SpawnErrorKind, SpawnSpec,
    FS_PIECE_HEADROOM,
};
