//! execd-tokio: execd on the [tokio](https://docs.rs/tokio) runtime.
//!
//! [`WsServer`], [`Server`] (stdio, any transport), [`Client`] and the [`Executor`]s are written
//! once in `execd-runtime`, generic over the runtime; this crate supplies [`TokioRuntime`] and
//! names each type with it filled in (`execd_tokio::Client` is
//! `execd_runtime::Client<TokioRuntime>`), so the constructors take no runtime argument.
//! `execd-smol` has the same names: switching runtime means switching crate.
//!
//! ```no_run
//! use execd_tokio::{ServerOptions, WsServer};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = WsServer::bind("127.0.0.1:0".parse()?, ServerOptions::default()).await?;
//!     println!("{}", server.url());
//!     tokio::spawn(server.run()).await??;
//!     Ok(())
//! }
//! ```
//!
//! Call the API inside a tokio runtime with I/O and time drivers (`#[tokio::main]`); tasks are
//! spawned on it. Outside one the async constructors fail and [`ProcessTable::new`] panics; the
//! `…_with_runtime` constructors take a [`TokioRuntime::new(handle)`](TokioRuntime::new).
//! Children die with the thread that polls the server future (`PR_SET_PDEATHSIG`): a worker or
//! the `block_on` thread, not a `spawn_blocking` thread (tokio retires those when idle).

#![warn(missing_docs)]

mod runtime;

pub use runtime::TokioRuntime;

execd_runtime::runtime_aliases!(TokioRuntime, "tokio");
