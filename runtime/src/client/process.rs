//! [`Process`]: the handle on one process started through a [`Client`].

use std::fmt;
use std::sync::Arc;

use async_channel::Receiver;
use execd_core::client::LostReason;
use execd_core::protocol::{
    method, ReadParams, ReadResult, SandboxType, Signal, Stream, TerminateResult, WriteResult,
    WriteStatus,
};
use execd_core::Seq;
use serde_json::json;

use super::{Client, Error};

/// Events buffered per process before the client stops reading the connection (and the
/// server, in turn, pauses the children's pipes): backpressure instead of unbounded memory.
pub(super) const EVENT_QUEUE: usize = 4096;

/// One event of a process, in seq order: `Output`s, then `Exited`, then `Closed` (the last),
/// with `Gap` where the server had evicted output this client never saw. The stream ends after
/// `Closed`, `ProcessLost` or `SessionLost`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A chunk of output.
    Output {
        /// The chunk's seq (from 1, shared by all the process's events).
        seq: Seq,
        /// Where it came from (`Pty` for a process on a PTY).
        stream: Stream,
        /// The bytes, as read from the pipe or PTY.
        chunk: Vec<u8>,
    },
    /// The process exited.
    Exited {
        /// The event's seq.
        seq: Seq,
        /// The exit code; 128+n when signal n killed it.
        exit_code: i32,
        /// Whether the server classified the exit as a sandbox denial.
        sandbox_denied: bool,
    },
    /// The process exited and all its output was delivered. Always the last event.
    Closed {
        /// The event's seq.
        seq: Seq,
    },
    /// `lost_chunks` chunks before `first_retained_seq` were evicted by the server before this
    /// client could read them (its retention is 1 MiB / 50,000 chunks per process).
    Gap {
        /// How many chunks were lost.
        lost_chunks: u64,
        /// The seq after the lost range.
        first_retained_seq: Seq,
    },
    /// The server no longer knows the process (it was forgotten while this client was away).
    ProcessLost,
    /// The session ended for this client; no more events will come.
    SessionLost(LostReason),
    /// The connection dropped and the client is reconnecting to resume the session (recovery
    /// on); events continue after [`Resumed`](Self::Resumed), or the stream ends with
    /// [`SessionLost`](Self::SessionLost). Informational: dropped when the queue is full.
    Reconnecting,
    /// The session was resumed over a new connection after [`Reconnecting`](Self::Reconnecting).
    /// Informational: dropped when the queue is full.
    Resumed,
}

/// A handle on a process started with [`Client::start`]. Cheap to clone; `Send + Sync`.
///
/// Clones share one event queue: each event goes to one [`next_event`](Self::next_event)
/// caller, so keep one consumer. Calls (`write`, `terminate`, …) may be made from any clone,
/// concurrently with the consumer. Dropping the handles does not stop the process.
#[derive(Clone)]
pub struct Process {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    sandbox_type: SandboxType,
    client: Client,
    events: Receiver<Event>,
}

impl Process {
    pub(super) fn new(
        id: String,
        sandbox_type: SandboxType,
        client: Client,
        events: Receiver<Event>,
    ) -> Self {
        Process {
            inner: Arc::new(Inner {
                id,
                sandbox_type,
                client,
                events,
            }),
        }
    }

    /// The process id (as given in the start params).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The sandbox the server applied.
    pub fn sandbox_type(&self) -> SandboxType {
        self.inner.sandbox_type
    }

    /// The client this process belongs to.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The next event; `None` once the stream ended (after `Closed`, `ProcessLost` or
    /// `SessionLost`).
    pub async fn next_event(&self) -> Option<Event> {
        self.inner.events.recv().await.ok()
    }

    /// The events as a stream (sharing the queue with [`next_event`](Self::next_event)).
    pub fn events(&self) -> impl futures_lite::Stream<Item = Event> + Send + 'static {
        self.inner.events.clone()
    }

    /// Consumes events until the process closes; returns its exit code (128+n for signal n),
    /// discarding output.
    ///
    /// # Errors
    /// [`Error::Closed`] when the stream ended without an exit (process or session lost).
    pub async fn wait(&self) -> Result<i32, Error> {
        let mut code = None;
        while let Some(event) = self.next_event().await {
            match event {
                Event::Exited { exit_code, .. } => code = Some(exit_code),
                Event::Closed { .. } => break,
                _ => {}
            }
        }
        code.ok_or(Error::Closed)
    }

    /// `process/write`: `bytes` to the process's stdin, with a `writeId` generated for it;
    /// after a reconnect the write is resent with the same id, so it reaches the child once.
    /// Writes from one task are delivered in call order.
    ///
    /// # Errors
    /// As [`Client::call`]. A write that was not accepted is not an error: see the status
    /// (`StdinClosed` when the child has no writable stdin).
    pub async fn write(&self, bytes: impl Into<Vec<u8>>) -> Result<WriteStatus, Error> {
        let result = self
            .inner
            .client
            .write(&self.inner.id, bytes.into())
            .await?;
        let result: WriteResult =
            serde_json::from_value(result).map_err(|e| Error::InvalidResult(e.to_string()))?;
        Ok(result.status)
    }

    /// `process/closeStdin` (ext): closes the child's stdin (EOF) after the writes already
    /// accepted.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn close_stdin(&self) -> Result<(), Error> {
        self.call(method::PROCESS_CLOSE_STDIN, json!({"processId": self.id()}))
            .await
            .map(drop)
    }

    /// `process/terminate`: SIGKILL to the process group. Returns whether it was running.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn terminate(&self) -> Result<bool, Error> {
        let result = self
            .call(method::PROCESS_TERMINATE, json!({"processId": self.id()}))
            .await?;
        let result: TerminateResult =
            serde_json::from_value(result).map_err(|e| Error::InvalidResult(e.to_string()))?;
        Ok(result.running)
    }

    /// `process/signal`: `signal` to the process group. `Signal::Int` goes out as the
    /// reference's `"interrupt"`; the others by name (ext).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn signal(&self, signal: Signal) -> Result<(), Error> {
        let name = match signal {
            Signal::Int => "interrupt",
            other => other.name(),
        };
        self.call(
            method::PROCESS_SIGNAL,
            json!({"processId": self.id(), "signal": name}),
        )
        .await
        .map(drop)
    }

    /// `process/resize` (ext): the PTY's window size, in character cells.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), Error> {
        self.call(
            method::PROCESS_RESIZE,
            json!({"processId": self.id(), "rows": rows, "cols": cols}),
        )
        .await
        .map(drop)
    }

    /// `process/read`: the retained output after `after_seq` (a long poll when `wait_ms` is
    /// set). Independent of the event stream, which keeps delivering everything.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn read(
        &self,
        after_seq: Option<u64>,
        max_bytes: Option<u64>,
        wait_ms: Option<u64>,
    ) -> Result<ReadResult, Error> {
        let params = ReadParams {
            process_id: self.id().to_owned(),
            after_seq,
            max_bytes,
            wait_ms,
        };
        let params =
            serde_json::to_value(params).map_err(|e| Error::InvalidResult(e.to_string()))?;
        let result = self.call(method::PROCESS_READ, params).await?;
        serde_json::from_value(result).map_err(|e| Error::InvalidResult(e.to_string()))
    }

    async fn call(
        &self,
        method_name: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        self.inner.client.call(method_name, params).await
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("id", &self.inner.id)
            .field("sandbox_type", &self.inner.sandbox_type)
            .finish_non_exhaustive()
    }
}
