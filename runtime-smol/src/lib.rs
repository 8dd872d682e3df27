//! execd-smol: execd on the [smol](https://docs.rs/smol) runtime.
//!
//! A WebSocket server ([`WsServer`]), a one-connection server over stdio or any transport
//! ([`Server`]), the async [`Client`] and the [`Executor`]s drive the sans-IO core
//! ([`execd_core`]) over real child processes, PTYs and process groups. They are written once
//! in `execd-runtime`, generic over the runtime; this crate supplies [`SmolRuntime`] and names
//! each type with it filled in (`execd_smol::Client` is `execd_runtime::Client<SmolRuntime>`),
//! so the constructors take no runtime argument. `execd-tokio` has the same names: switching
//! runtime means switching crate.
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

#![warn(missing_docs)]

mod runtime;

pub use runtime::SmolRuntime;

execd_runtime::runtime_aliases!(SmolRuntime, "smol");
