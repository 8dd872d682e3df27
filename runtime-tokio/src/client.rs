//! The async client on tokio: [`Client`] (connect over WebSocket, or launch a stdio server)
//! and [`LocalExecutor`]. The client itself is [`execd_runtime::Client`]: this crate's types
//! only add constructors that need no runtime argument, and deref to it for everything else.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::ops::Deref;
use std::path::PathBuf;

pub use execd_runtime::client::{ClientOptions, ConnectError, Error, Event, LostReason, Process};
pub use execd_runtime::{Executor, RemoteExecutor};

use crate::runtime;
use crate::transport::{FrameReader, FrameWriter};
use crate::ServerOptions;

/// A session with a server, driven on tokio. Cheap to clone; `Send + Sync`. Derefs to
/// [`execd_runtime::Client`], which has the calls (`start`, `call`, `close`, …) and the rules
/// (recovery, errors).
#[derive(Debug, Clone)]
pub struct Client(execd_runtime::Client);

impl Client {
    /// Connects to a `ws://HOST:PORT` server (recovery on) and opens a session.
    ///
    /// # Errors
    /// See [`execd_runtime::Client::connect`].
    pub async fn connect(url: &str) -> Result<Client, ConnectError> {
        Client::connect_with(url, ClientOptions::default()).await
    }

    /// Like [`connect`](Self::connect), with `options`.
    ///
    /// # Errors
    /// See [`execd_runtime::Client::connect_with`].
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Client, ConnectError> {
        execd_runtime::Client::connect_with(runtime::shared()?, url, options)
            .await
            .map(Client)
    }

    /// Launches a stdio server child from `argv` (e.g. `execd serve --listen stdio`, or
    /// through `ssh`) and opens a session over its pipes; the child is stopped and awaited
    /// when the last handle drops.
    ///
    /// # Errors
    /// See [`execd_runtime::Client::spawn_stdio`].
    pub async fn spawn_stdio(
        argv: &[OsString],
        env: Option<&BTreeMap<OsString, OsString>>,
        cwd: Option<PathBuf>,
    ) -> Result<Client, ConnectError> {
        execd_runtime::Client::spawn_stdio(runtime::shared()?, argv, env, cwd)
            .await
            .map(Client)
    }

    /// A client over an already-open transport (recovery off).
    ///
    /// # Errors
    /// See [`execd_runtime::Client::over`].
    pub async fn over(
        reader: FrameReader,
        writer: FrameWriter,
        options: ClientOptions,
    ) -> Result<Client, ConnectError> {
        execd_runtime::Client::over(runtime::shared()?, reader, writer, options)
            .await
            .map(Client)
    }

    /// The runtime-independent client.
    pub fn into_inner(self) -> execd_runtime::Client {
        self.0
    }
}

impl Deref for Client {
    type Target = execd_runtime::Client;

    fn deref(&self) -> &execd_runtime::Client {
        &self.0
    }
}

impl From<Client> for execd_runtime::Client {
    fn from(client: Client) -> Self {
        client.0
    }
}

impl From<Client> for RemoteExecutor {
    fn from(client: Client) -> Self {
        RemoteExecutor::new(client.0)
    }
}

/// Runs processes on this host: the server's event loop and process table in-process, on
/// tokio, over an in-memory connection. See [`execd_runtime::LocalExecutor`].
#[derive(Debug, Clone)]
pub struct LocalExecutor(execd_runtime::LocalExecutor);

impl LocalExecutor {
    /// Starts the in-process server with `options`.
    ///
    /// # Errors
    /// See [`execd_runtime::LocalExecutor::new`].
    pub async fn new(options: ServerOptions) -> Result<LocalExecutor, ConnectError> {
        execd_runtime::LocalExecutor::new(runtime::shared()?, options)
            .await
            .map(LocalExecutor)
    }
}

impl Deref for LocalExecutor {
    type Target = execd_runtime::LocalExecutor;

    fn deref(&self) -> &execd_runtime::LocalExecutor {
        &self.0
    }
}

impl Executor for LocalExecutor {
    fn start(
        &self,
        params: execd_core::protocol::StartParams,
    ) -> execd_runtime::BoxFuture<'_, Result<Process, Error>> {
        self.0.start(params)
    }
}
