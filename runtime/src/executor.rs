//! The [`Executor`] trait: start processes here or on a remote host through the same API.

use std::sync::Arc;

use execd_core::protocol::StartParams;

use crate::client::{Client, ClientOptions, ConnectError, Error, Process};
use crate::runtime::{BoxFuture, Runtime};
use crate::server::{serve_connection, ServerOptions};
use crate::transport::{memory_pair, Limits};

/// Where processes run. Code written against `Executor` (or `Arc<dyn Executor>`) runs
/// unchanged with a [`LocalExecutor`] (this host) or a [`RemoteExecutor`] (a server).
///
/// Both give the same semantics, because both are the same code: a [`Client`] talking to the
/// core `Server`, which decides seq numbers, event order, exit codes (128+n for signal n) and
/// retention; the local one just has no socket in between.
pub trait Executor: Send + Sync {
    /// Starts a process (`process/start`); its events come from [`Process::next_event`].
    ///
    /// # Errors
    /// [`Error::Rpc`] when the server refuses the start (e.g. a duplicate process id, an empty
    /// argv, a cwd that is not a `file:` PathUri); [`Error::Closed`] when the executor's
    /// session is gone.
    fn start(&self, params: StartParams) -> BoxFuture<'_, Result<Process, Error>>;
}

/// Runs processes on this host, in-process: the same event loop and process table as
/// `execd serve`, driven over an in-memory connection instead of a socket.
///
/// Dropping the last handle (this, its clones and every [`Process`] from it) kills the
/// processes it started.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    client: Client,
}

impl LocalExecutor {
    /// Starts the in-process server with `options` (default rules: retention, dedupe, …).
    ///
    /// # Errors
    /// No OS randomness for session ids, or the in-process session could not be opened.
    pub async fn new(
        rt: Arc<dyn Runtime>,
        options: ServerOptions,
    ) -> Result<LocalExecutor, ConnectError> {
        let limits = Limits {
            max_frame_bytes: options.core.max_frame_bytes,
            ..Limits::default()
        };
        let ((server_rx, server_tx), (client_rx, client_tx)) = memory_pair(limits.clone());
        let server_rt = rt.clone();
        rt.spawn(Box::pin(async move {
            if let Err(e) = serve_connection(server_rt, server_rx, server_tx, options).await {
                tracing::warn!(error = %e, "local executor: server failed");
            }
        }))
        .detach();
        let client_options = ClientOptions {
            limits,
            ..ClientOptions::default()
        };
        let client = Client::over(rt, client_rx, client_tx, client_options).await?;
        Ok(LocalExecutor { client })
    }

    /// The client in front of the in-process server (for calls beyond [`Executor`]).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Executor for LocalExecutor {
    fn start(&self, params: StartParams) -> BoxFuture<'_, Result<Process, Error>> {
        Box::pin(self.client.start(params))
    }
}

/// Runs processes on the server a [`Client`] is connected to.
#[derive(Debug, Clone)]
pub struct RemoteExecutor {
    client: Client,
}

impl RemoteExecutor {
    /// An executor over `client`'s session.
    pub fn new(client: Client) -> RemoteExecutor {
        RemoteExecutor { client }
    }

    /// Connects to `url` (recovery on) and returns an executor over the new session.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect(rt: Arc<dyn Runtime>, url: &str) -> Result<RemoteExecutor, ConnectError> {
        Ok(RemoteExecutor::new(Client::connect(rt, url).await?))
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Executor for RemoteExecutor {
    fn start(&self, params: StartParams) -> BoxFuture<'_, Result<Process, Error>> {
        Box::pin(self.client.start(params))
    }
}
