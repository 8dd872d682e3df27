//! [`runtime_aliases!`]: the names a runtime crate (`execd-smol`, `execd-tokio`) gives the
//! generic API with its runtime filled in, declared once for both.

/// Declares, in the calling crate, the public API with `$runtime` filled in: `WsServer`,
/// `Server`, `Client`, `LocalExecutor`, `RemoteExecutor`, `ProcessTable` and
/// `transport::WsListener` as type aliases, and re-exports of the runtime-independent names
/// (`ClientOptions`, `Executor`, `ServerOptions`, …). `$name` ("smol", "tokio") appears in
/// their documentation.
///
/// ```ignore
/// execd_runtime::runtime_aliases!(SmolRuntime, "smol");
/// ```
#[macro_export]
macro_rules! runtime_aliases {
    ($runtime:ident, $name:literal) => {
        pub use $crate::client::{
            ClientOptions, ConnectError, Error, Event, LostReason, Process, SshOptions,
        };
        pub use $crate::{host_environment_info, DefaultRuntime, Executor, Runtime, ServerOptions};

        #[doc = concat!("A WebSocket server on ", $name, ": `WsServer::bind(addr, options)`, then ")]
        /// `run`. See [`execd_runtime::WsServer`].
        pub type WsServer = $crate::WsServer<$runtime>;

        #[doc = concat!("The server over one connection on ", $name, ": ")]
        /// `Server::serve_stdio(options)` (this process's stdin and stdout) and
        /// `Server::serve_connection(reader, writer, options)`. See [`execd_runtime::Server`].
        pub type Server = $crate::Server<$runtime>;

        #[doc = concat!("A session with a server, driven on ", $name, ": `Client::connect(url)`,")]
        /// `Client::spawn_stdio(argv, env, cwd)`, …. See [`execd_runtime::Client`].
        pub type Client = $crate::Client<$runtime>;

        #[doc = concat!("Runs processes on this host, in-process, on ", $name, ".")]
        /// See [`execd_runtime::LocalExecutor`].
        pub type LocalExecutor = $crate::LocalExecutor<$runtime>;

        /// Runs processes through a [`Client`]. See [`execd_runtime::RemoteExecutor`].
        pub type RemoteExecutor = $crate::RemoteExecutor<$runtime>;

        #[doc = concat!("A server's children (the OS process layer), keyed by `K`, their tasks on ", $name, ".")]
        /// See [`execd_runtime::process::ProcessTable`].
        pub type ProcessTable<K = $crate::process::ProcessKey> =
            $crate::process::ProcessTable<K, $runtime>;

        /// Message transports: one JSON-RPC message per frame, over WebSocket,
        /// newline-delimited stdio or memory. See [`execd_runtime::transport`]. Byte streams
        /// are futures-io (tokio's: wrap them with `tokio_util::compat`).
        pub mod transport {
            pub use $crate::transport::{
                memory_pair, stdio_transport, ws_connect, FrameReader, FrameWriter, Inbound,
                Limits,
            };

            #[doc = concat!("A WebSocket server socket on ", $name, ": `WsListener::bind(addr, limits)`.")]
            /// See [`execd_runtime::transport::WsListener`].
            pub type WsListener = $crate::transport::WsListener<super::$runtime>;
        }
    };
}
