//! The [`Executor`] trait: start processes here or on a remote host through the same API.

use std::fmt;
use std::sync::Arc;

use std::path::Path;

use execd_core::protocol::fs::{DirectoryEntry, GetMetadataResult};
use execd_core::protocol::{HttpRequestParams, HttpRequestResult, StartParams};

use crate::client::{Client, ClientOptions, ConnectError, Error, FsWatch, HttpBody, Process};
use crate::runtime::{shared, BoxFuture, DefaultRuntime, Runtime};
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

    /// Performs an HTTP request from the executor's host (`http/request`, buffered): see
    /// [`Client::http_request`].
    ///
    /// # Errors
    /// As [`Client::http_request`].
    fn http_request(
        &self,
        params: HttpRequestParams,
    ) -> BoxFuture<'_, Result<HttpRequestResult, Error>>;

    /// Performs an HTTP request from the executor's host with a streamed body: see
    /// [`Client::http_request_stream`].
    ///
    /// # Errors
    /// As [`Client::http_request_stream`].
    fn http_request_stream(
        &self,
        params: HttpRequestParams,
    ) -> BoxFuture<'_, Result<(HttpRequestResult, HttpBody), Error>>;
    /// `fs/readFile`: the whole file.
    ///
    /// # Errors
    /// [`Error::Rpc`] with the fs error (`-32004` missing, …), [`Error::InvalidPath`].
    fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<Vec<u8>, Error>>;

    /// `fs/writeFile`: creates or truncates the file.
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file).
    fn write_file<'a>(&'a self, path: &'a Path, data: &'a [u8])
        -> BoxFuture<'a, Result<(), Error>>;

    /// `fs/getMetadata` (following symlinks).
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file).
    fn get_metadata<'a>(
        &'a self,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<GetMetadataResult, Error>>;

    /// `fs/readDirectory`, unsorted.
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file).
    fn read_directory<'a>(
        &'a self,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<DirectoryEntry>, Error>>;

    /// `fs/remove` (recursive, force).
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file).
    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), Error>>;

    /// ext `fs/watch`: the changes under `path` as a stream: see [`Client::watch`].
    ///
    /// # Errors
    /// As [`Client::watch`] (`-32004` for a missing path).
    fn watch<'a>(
        &'a self,
        path: &'a Path,
        recursive: bool,
    ) -> BoxFuture<'a, Result<FsWatch, Error>>;
}

/// Every call of [`Executor`], forwarded to a [`Client`] (the same calls for both
/// executors, so local and remote cannot drift).
macro_rules! executor_calls {
    () => {
        fn start(&self, params: StartParams) -> BoxFuture<'_, Result<Process, Error>> {
            Box::pin(self.client.start(params))
        }

        fn http_request(
            &self,
            params: HttpRequestParams,
        ) -> BoxFuture<'_, Result<HttpRequestResult, Error>> {
            Box::pin(self.client.http_request(params))
        }

        fn http_request_stream(
            &self,
            params: HttpRequestParams,
        ) -> BoxFuture<'_, Result<(HttpRequestResult, HttpBody), Error>> {
            Box::pin(self.client.http_request_stream(params))
        }

        fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
            Box::pin(self.client.read_file(path))
        }

        fn write_file<'a>(
            &'a self,
            path: &'a Path,
            data: &'a [u8],
        ) -> BoxFuture<'a, Result<(), Error>> {
            Box::pin(self.client.write_file(path, data))
        }

        fn get_metadata<'a>(
            &'a self,
            path: &'a Path,
        ) -> BoxFuture<'a, Result<GetMetadataResult, Error>> {
            Box::pin(self.client.get_metadata(path))
        }

        fn read_directory<'a>(
            &'a self,
            path: &'a Path,
        ) -> BoxFuture<'a, Result<Vec<DirectoryEntry>, Error>> {
            Box::pin(self.client.read_directory(path))
        }

        fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), Error>> {
            Box::pin(self.client.remove(path, true, true))
        }

        fn watch<'a>(
            &'a self,
            path: &'a Path,
            recursive: bool,
        ) -> BoxFuture<'a, Result<FsWatch, Error>> {
            Box::pin(self.client.watch(path, recursive))
        }
    };
}

/// Runs processes on this host, in-process: the same event loop and process table as
/// `execd serve`, driven over an in-memory connection instead of a socket, on runtime `R`
/// ([`new`](Self::new) finds a [`DefaultRuntime`] by type,
/// [`with_runtime`](Self::with_runtime) takes any [`Runtime`]).
///
/// Dropping the last handle (this, its clones and every [`Process`] from it) kills the
/// processes it started.
pub struct LocalExecutor<R = Arc<dyn Runtime>> {
    client: Client<R>,
}

impl<R: DefaultRuntime> LocalExecutor<R> {
    /// Starts the in-process server with `options` (default rules: retention, dedupe, …) on
    /// the default runtime.
    ///
    /// # Errors
    /// No default runtime; no OS randomness for session ids, or the in-process session could
    /// not be opened.
    pub async fn new(options: ServerOptions) -> Result<Self, ConnectError> {
        Self::with_runtime(R::default_runtime()?, options).await
    }
}

impl<R: Runtime> LocalExecutor<R> {
    /// Starts the in-process server with `options` on `runtime`.
    ///
    /// # Errors
    /// No OS randomness for session ids, or the in-process session could not be opened.
    pub async fn with_runtime(runtime: R, options: ServerOptions) -> Result<Self, ConnectError> {
        let rt = shared(runtime);
        let limits = Limits {
            max_frame_bytes: options.core.max_frame_bytes,
            ..Limits::default()
        };
        let ((server_rx, server_tx), (client_rx, client_tx)) = memory_pair(limits.clone());
        let server_rt = Arc::clone(&rt);
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
        let client = Client::over_with_runtime(rt, client_rx, client_tx, client_options).await?;
        Ok(LocalExecutor {
            client: client.with_runtime_type(),
        })
    }
}

impl<R> LocalExecutor<R> {
    /// The client in front of the in-process server (for calls beyond [`Executor`]).
    pub fn client(&self) -> &Client<R> {
        &self.client
    }
}

impl<R> Clone for LocalExecutor<R> {
    fn clone(&self) -> Self {
        LocalExecutor {
            client: self.client.clone(),
        }
    }
}

impl<R> fmt::Debug for LocalExecutor<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalExecutor")
            .field("client", &self.client)
            .finish()
    }
}

impl<R> Executor for LocalExecutor<R> {
    executor_calls!();
}

/// Runs processes on the server a [`Client`] is connected to.
pub struct RemoteExecutor<R = Arc<dyn Runtime>> {
    client: Client<R>,
}

impl<R> RemoteExecutor<R> {
    /// An executor over `client`'s session.
    pub fn new(client: Client<R>) -> Self {
        RemoteExecutor { client }
    }

    /// The client.
    pub fn client(&self) -> &Client<R> {
        &self.client
    }
}

impl<R: DefaultRuntime> RemoteExecutor<R> {
    /// Connects to `url` (recovery on) and returns an executor over the new session; the
    /// client's driver runs on the default runtime.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Ok(RemoteExecutor::new(Client::connect(url).await?))
    }
}

impl<R> From<Client<R>> for RemoteExecutor<R> {
    fn from(client: Client<R>) -> Self {
        RemoteExecutor::new(client)
    }
}

impl<R> Clone for RemoteExecutor<R> {
    fn clone(&self) -> Self {
        RemoteExecutor {
            client: self.client.clone(),
        }
    }
}

impl<R> fmt::Debug for RemoteExecutor<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteExecutor")
            .field("client", &self.client)
            .finish()
    }
}

impl<R> Executor for RemoteExecutor<R> {
    executor_calls!();
}
