//! [`RemoteSession`]: a bare JSON-RPC connection to a server that resumes a detached session
//! by id, for `execd ps` and `execd attach`.
//!
//! The library's `Client` opens its own session and tracks only the processes it started; a
//! session left by `execd run --detach` is reached here with `initialize {resumeSessionId}`
//! (docs/PROTOCOL.md §6). Notifications are ignored: output is read with `process/read` by seq,
//! so it arrives exactly once whatever the connection saw. Closing the connection detaches the
//! session again, and the server's TTL starts anew.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use execd_core::protocol::method;
use execd_runtime::transport::{self, ClientSecurity, FrameReader, FrameWriter, Inbound, Limits};
use execd_runtime::ConnectError;
use execd_smol::SmolRuntime;
use futures::channel::oneshot;
use serde_json::{json, Value};

use crate::cli_errors::{self, Target};

/// `-32010`: the session is still attached to a connection the server has not seen close.
const ALREADY_ATTACHED: i64 = -32010;
/// How long to retry a resume refused with [`ALREADY_ATTACHED`].
const ATTACHED_RETRY: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A call's failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The server's JSON-RPC error.
    #[error("{message}")]
    Rpc { code: i64, message: String },
    /// The connection closed before the answer.
    #[error("the connection to the server closed")]
    Closed,
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, CallError>>>>>;

/// One connection with a session on it; calls may be made concurrently from clones.
#[derive(Clone)]
pub(crate) struct RemoteSession {
    writer: Arc<futures::lock::Mutex<FrameWriter>>,
    waiters: Waiters,
    next_id: Arc<AtomicU64>,
    session_id: String,
    _reader: Arc<smol::Task<()>>,
}

impl std::fmt::Debug for RemoteSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSession")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl RemoteSession {
    /// Connects to `url` and resumes `session` (or opens a fresh one for `None`), retrying
    /// for a few seconds while the server still sees the session attached elsewhere.
    ///
    /// # Errors
    /// One line: the connection cannot be opened, or the session is unknown (expired) or
    /// still attached.
    pub(crate) async fn open(
        url: &str,
        security: &ClientSecurity,
        session: Option<&str>,
    ) -> anyhow::Result<RemoteSession> {
        let target = Target::Url {
            url: url.to_owned(),
            recovery_window: 0,
        };
        let (reader, writer) = connect(url, security)
            .await
            .map_err(|e| cli_errors::connect_failed(&target, &ConnectError::from(e)))?;
        let waiters: Waiters = Arc::default();
        let reader = smol::spawn(read_responses(reader, Arc::clone(&waiters)));
        let mut remote = RemoteSession {
            writer: Arc::new(futures::lock::Mutex::new(writer)),
            waiters,
            next_id: Arc::new(AtomicU64::new(1)),
            session_id: String::new(),
            _reader: Arc::new(reader),
        };
        // Lossless output (PROTOCOL.md §5.11): the reads below acknowledge by `afterSeq`.
        let params = json!({"clientName": "execd-attach", "resumeSessionId": session, "losslessOutput": true});
        let deadline = Instant::now() + ATTACHED_RETRY;
        let result = loop {
            match remote.call(method::INITIALIZE, params.clone()).await {
                Err(CallError::Rpc { code, .. })
                    if code == ALREADY_ATTACHED && Instant::now() < deadline =>
                {
                    smol::Timer::after(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(match session {
                        Some(_) => anyhow::anyhow!("cannot resume the session at {url}: {e}"),
                        None => anyhow::anyhow!("cannot open a session at {url}: {e}"),
                    })
                }
                Ok(result) => break result,
            }
        };
        remote.session_id = result["sessionId"]
            .as_str()
            .context("the server's initialize result has no sessionId")?
            .to_owned();
        remote
            .send(json!({"method": method::INITIALIZED, "params": {}}))
            .await
            .map_err(|_| CallError::Closed)?;
        Ok(remote)
    }

    /// The session id.
    pub(crate) fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Sends a request and awaits its result.
    pub(crate) async fn call(&self, method: &str, params: Value) -> Result<Value, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        let sent = self
            .send(json!({"id": id, "method": method, "params": params}))
            .await;
        if sent.is_err() {
            self.waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            return Err(CallError::Closed);
        }
        rx.await.unwrap_or(Err(CallError::Closed))
    }

    /// Closes the connection (WebSocket Close): the session detaches and keeps running.
    pub(crate) async fn detach(&self) {
        let mut writer = self.writer.lock().await;
        let close = writer.close();
        let _ = futures_lite::future::or(async { Some(close.await) }, async {
            smol::Timer::after(Duration::from_secs(1)).await;
            None
        })
        .await;
    }

    async fn send(&self, message: Value) -> std::io::Result<()> {
        let mut writer = self.writer.lock().await;
        writer.send(message.to_string()).await?;
        writer.flush().await
    }
}

async fn connect(
    url: &str,
    security: &ClientSecurity,
) -> std::io::Result<(FrameReader, FrameWriter)> {
    let connect = transport::ws_connect_with(SmolRuntime, url, Limits::default(), security);
    futures_lite::future::or(connect, async {
        smol::Timer::after(CONNECT_TIMEOUT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no WebSocket handshake",
        ))
    })
    .await
}

/// Routes each response to its caller until the connection ends; then every waiter gets
/// [`CallError::Closed`] (their senders drop).
async fn read_responses(mut reader: FrameReader, waiters: Waiters) {
    while let Some(Ok(inbound)) = reader.recv().await {
        let Inbound::Frame(bytes) = inbound else {
            continue;
        };
        let Ok(message) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        // Notifications (no id) are ignored: output is read by seq instead.
        let Some(id) = message.get("id").and_then(Value::as_u64) else {
            continue;
        };
        let Some(waiter) = waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
        else {
            continue;
        };
        let result = match message.get("error") {
            Some(error) => Err(CallError::Rpc {
                code: error["code"].as_i64().unwrap_or(0),
                message: error["message"].as_str().unwrap_or("").to_owned(),
            }),
            None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
        };
        let _ = waiter.send(result);
    }
    waiters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}
