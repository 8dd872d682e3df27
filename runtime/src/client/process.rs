//! [`Process`]: the handle on one process started through a [`Client`].

use std::fmt;
use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};

use async_channel::{Receiver, Sender};
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

/// Output bytes buffered per process (besides [`EVENT_QUEUE`]): with chunks of up to 256 KiB,
/// 4,096 events could hold a gigabyte for a consumer that is slow or stopped (`execd run`
/// into a full pipe). One chunk is always let through into an empty queue.
pub(super) const QUEUE_BYTES: usize = 1 << 20;

/// A process's event queue: bounded by [`EVENT_QUEUE`] events and [`QUEUE_BYTES`] of output.
pub(super) fn event_queue() -> (EventSender, EventReceiver) {
    let (events_tx, events) = async_channel::bounded(EVENT_QUEUE);
    let (freed_tx, freed) = async_channel::bounded(1);
    let budget = Arc::new(Budget {
        queued: AtomicUsize::new(0),
        freed_tx,
        freed,
    });
    (
        EventSender {
            events: events_tx,
            budget: Arc::clone(&budget),
        },
        EventReceiver { events, budget },
    )
}

/// The output bytes queued and not yet taken, and a wake-up for a sender waiting on them.
struct Budget {
    queued: AtomicUsize,
    /// One token after each release (or when the consumer goes): the waiting sender looks
    /// again.
    freed_tx: Sender<()>,
    freed: Receiver<()>,
}

impl Budget {
    fn release(&self, event: &Event) {
        let len = output_len(event);
        if len > 0 {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            let _ = self.freed_tx.try_send(());
        }
    }
}

fn output_len(event: &Event) -> usize {
    match event {
        Event::Output { chunk, .. } => chunk.len(),
        _ => 0,
    }
}

/// The driver's end of a process's event queue.
pub(super) struct EventSender {
    events: Sender<Event>,
    budget: Arc<Budget>,
}

impl EventSender {
    /// Queues `event`, waiting while the queue is full (by count or, for output, by bytes);
    /// `Err` when nobody listens any more.
    pub(super) async fn send(&self, event: Event) -> Result<(), ()> {
        let len = output_len(&event);
        loop {
            let queued = self.budget.queued.load(Ordering::Acquire);
            if len == 0 || queued == 0 || queued.saturating_add(len) <= QUEUE_BYTES {
                break;
            }
            if self.events.is_closed() || self.budget.freed.recv().await.is_err() {
                return Err(());
            }
        }
        self.budget.queued.fetch_add(len, Ordering::AcqRel);
        self.events.send(event).await.map_err(drop)
    }

    /// Queues an informational event if there is room (no output: no bytes counted).
    pub(super) fn try_send(&self, event: Event) {
        debug_assert_eq!(output_len(&event), 0);
        let _ = self.events.try_send(event);
    }
}

/// The handles' end of a process's event queue.
pub(super) struct EventReceiver {
    events: Receiver<Event>,
    budget: Arc<Budget>,
}

impl Drop for EventReceiver {
    /// A sender waiting for room looks again, and finds nobody listening.
    fn drop(&mut self) {
        let _ = self.budget.freed_tx.try_send(());
    }
}

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
    events: EventReceiver,
}

impl Process {
    pub(super) fn new(
        id: String,
        sandbox_type: SandboxType,
        client: Client,
        events: EventReceiver,
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
        let event = self.inner.events.events.recv().await.ok()?;
        self.inner.events.budget.release(&event);
        Some(event)
    }

    /// The events as a stream (sharing the queue with [`next_event`](Self::next_event)).
    pub fn events(&self) -> impl futures_lite::Stream<Item = Event> + Send + 'static {
        use futures_lite::StreamExt as _;
        let budget = Arc::clone(&self.inner.events.budget);
        self.inner.events.events.clone().map(move |event| {
            budget.release(&event);
            event
        })
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

#[cfg(test)]
mod tests {
    use futures_lite::future;

    use super::*;

    fn output(len: usize) -> Event {
        Event::Output {
            seq: Seq(1),
            stream: Stream::Stdout,
            chunk: vec![0; len],
        }
    }

    /// Polls `f` once: whether it finished.
    fn ready<F: std::future::Future>(f: F) -> bool {
        future::block_on(future::poll_once(std::pin::pin!(f))).is_some()
    }

    #[test]
    fn output_past_the_byte_budget_waits_for_the_consumer() {
        let (tx, rx) = event_queue();
        // One chunk always goes into an empty queue, however large.
        assert!(ready(tx.send(output(QUEUE_BYTES + 1))));
        // The queue now holds more than the budget: the next output waits...
        let mut next = Box::pin(tx.send(output(10)));
        assert!(future::block_on(future::poll_once(next.as_mut())).is_none());
        // ...events without bytes do not.
        tx.try_send(Event::Resumed);
        // Taking the big chunk frees the budget and wakes the sender.
        let taken = future::block_on(rx.events.recv()).expect("event");
        rx.budget.release(&taken);
        assert_eq!(
            future::block_on(future::poll_once(next.as_mut())),
            Some(Ok(()))
        );
        assert_eq!(rx.budget.queued.load(Ordering::Acquire), 10);
    }

    #[test]
    fn a_sender_waiting_for_room_fails_once_the_consumer_is_gone() {
        let (tx, rx) = event_queue();
        assert!(ready(tx.send(output(QUEUE_BYTES))));
        let mut waiting = Box::pin(tx.send(output(1)));
        assert!(future::block_on(future::poll_once(waiting.as_mut())).is_none());
        drop(rx);
        assert_eq!(
            future::block_on(future::poll_once(waiting.as_mut())),
            Some(Err(()))
        );
    }
}
