//! The client state machine: request ids and pending calls, session resume, write retries,
//! per-process cursors with seq-ordered delivery and gap reporting.

mod config;
mod pending;
mod tracker;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

pub use config::ClientConfig;

use crate::ids::Seq;
use crate::protocol::{
    method, ClosedNotification, ExitedNotification, InitializeParams, InitializeResult,
    OutputNotification, ReadParams, ReadResult, StartParams, Stream, WriteParams,
};
use crate::rpc::{self, ErrorCode, Inbound, RequestId, RpcError};
use pending::{Call, Kind, Pending};
use tracker::{Delivery, Tracker};

/// Why a call could not be made at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client is closed for good: the connection dropped with recovery off, recovery gave
    /// up, the session was lost, or [`Client::close`] was called.
    #[error("the client is closed")]
    Closed,
    /// `initialize` and `initialized` belong to the client itself.
    #[error("{0} is sent by the client itself")]
    ReservedMethod(String),
}

/// How a call ended, when not with a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The server answered with a JSON-RPC error.
    #[error("server error: {0}")]
    Rpc(RpcError),
    /// The call's fate is unknown and it was not (or could not be) retried: the connection
    /// dropped while it was in flight, or the client closed before it was sent. Never a
    /// server's answer.
    #[error("the connection closed before the call was answered")]
    Closed,
    /// The server's `result` could not be read as JSON (e.g. nested too deeply).
    #[error("unreadable result: {0}")]
    InvalidResult(String),
}

/// Why the session ended for this client; every pending call failed with
/// [`CallError::Closed`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LostReason {
    /// The connection dropped (or could not be opened) and recovery is off.
    Disconnected,
    /// The recovery window ran out before a resume succeeded.
    WindowExhausted,
    /// The server refused `initialize` (e.g. `-32600 unknown session id` after the session
    /// expired).
    Rejected(RpcError),
    /// The server broke the protocol during the handshake (an undecodable `initialize` result,
    /// or a resume that returned another session id).
    Protocol(String),
    /// [`Client::close`] was called.
    ClosedLocally,
}

/// Something for the user (or the runtime) of a [`Client`], from [`Client::poll_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A session is ready: fresh (`resumed: false`) or resumed after a reconnect.
    Connected {
        /// The session id (a UUID from the server).
        session_id: String,
        /// Whether an earlier session was resumed.
        resumed: bool,
    },
    /// The answer to call `id`.
    Response {
        /// The id [`Client::call`] returned.
        id: RequestId,
        /// The `result` object, or why there is none.
        result: Result<serde_json::Value, CallError>,
    },
    /// An output chunk of a tracked process. Per process, `Output`, `Exited`, `Closed` and
    /// `Gap` come in seq order, each seq once.
    Output {
        /// The process.
        process_id: String,
        /// The chunk's seq.
        seq: Seq,
        /// The stream it was read from.
        stream: Stream,
        /// The bytes.
        chunk: Vec<u8>,
    },
    /// A tracked process exited (exactly once per process).
    Exited {
        /// The process.
        process_id: String,
        /// The event's seq (see [`Client`] for the one case where it is inferred).
        seq: Seq,
        /// The exit code; 128+n when signal n killed it.
        exit_code: i32,
        /// Whether the server classified the exit as a sandbox denial.
        sandbox_denied: bool,
    },
    /// A tracked process closed: exited and every output stream at EOF. Always its last
    /// event; the client stops tracking it.
    Closed {
        /// The process.
        process_id: String,
        /// The event's seq.
        seq: Seq,
    },
    /// Output of a tracked process was evicted from the server's retention before this client
    /// could read it: `lost_chunks` seqs before `first_retained_seq` will never be delivered.
    Gap {
        /// The process.
        process_id: String,
        /// How many chunks were lost.
        lost_chunks: u64,
        /// The seq after the lost range; the next event of the process has this seq or a later
        /// one.
        first_retained_seq: Seq,
    },
    /// The server no longer knows a tracked process (`unknown process id` on the recovery
    /// read): it was forgotten after its close retention while this client was away, or a
    /// `process/start` cut off by a disconnect never ran. Its remaining events are lost;
    /// tracking stops.
    ProcessLost {
        /// The process.
        process_id: String,
    },
    /// Runtime: open a new transport, then call [`Client::handle_connected`] or
    /// [`Client::handle_connect_failed`].
    Reconnect,
    /// The session is gone for this client; every pending call failed with
    /// [`CallError::Closed`] (their `Response` events come first) and every later call fails
    /// with [`ClientError::Closed`]. The runtime drops the transport, if one is open.
    SessionLost {
        /// Why.
        reason: LostReason,
    },
}

/// The sans-IO client: the other end of [`crate::Server`], no I/O and no clock reads.
///
/// Drive it from one task that owns it:
/// 1. open a transport and call [`handle_connected`](Self::handle_connected) (or
///    [`handle_connect_failed`](Self::handle_connect_failed));
/// 2. feed every inbound frame to [`handle_message`](Self::handle_message), a dropped
///    transport to [`handle_disconnect`](Self::handle_disconnect), and call
///    [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout) is
///    due;
/// 3. after every call, send each frame of [`poll_transmit`](Self::poll_transmit) and act on
///    each [`poll_event`](Self::poll_event) (on [`ClientEvent::Reconnect`], go to 1).
///
/// Calls ([`call`](Self::call), [`start`](Self::start), [`write`](Self::write)) may be made at
/// any time; until a session is ready they are queued and sent, in order, once it is.
///
/// ```
/// use std::time::Instant;
/// use execd_core::client::{Client, ClientConfig, ClientEvent};
///
/// let now = Instant::now();
/// let mut client = Client::new(ClientConfig::default(), [7; 16]);
/// client.handle_connected(now);
/// let frame = client.poll_transmit().expect("initialize");
/// assert!(frame.contains(r#""method":"initialize""#));
/// client.handle_message(now, br#"{"id":1,"result":{"sessionId":"5f0c3c0e-0000-4000-8000-000000000000"}}"#);
/// assert!(client.poll_transmit().expect("initialized").contains("initialized"));
/// assert!(matches!(client.poll_event(), Some(ClientEvent::Connected { resumed: false, .. })));
/// ```
///
/// **Disconnects.** With recovery off, a dropped transport fails every pending and queued call
/// with [`CallError::Closed`] at once and closes the client for good. With recovery on, the
/// client asks for a new transport ([`ClientEvent::Reconnect`]) at once, then with exponential
/// backoff ([`ClientConfig::backoff_initial`] doubling to [`ClientConfig::backoff_max`]), and
/// sends `initialize {resumeSessionId}`; `-32010` (the server has not noticed the old
/// transport drop yet) is retried on the same transport with the same backoff. When
/// [`ClientConfig::recovery_window`] runs out first, or the server refuses the resume, the
/// session is lost ([`ClientEvent::SessionLost`]). Notifications that arrive before the
/// `initialize` response are accepted. After a resume:
/// - every in-flight `process/write` is sent again with the same `writeId` (the server
///   remembers accepted ids, so it reaches the child once), and every in-flight
///   `process/read` is sent again (it changes nothing); a resent write answered
///   `unknownProcess` later than [`ClientConfig::close_retention`] after it was first sent
///   fails with [`CallError::Closed`] (it may have reached the child before its process
///   closed and was forgotten);
/// - every in-flight `process/start` is settled by the recovery read of its process (the
///   process id is the idempotency key): if the server knows the process (or a notification
///   of the process arrives first), the start ran and is answered `{processId}` (without
///   `sandboxType`, which only the lost answer carried);
///   if it does not, the start never reached the server (a resume is accepted only after the
///   server handled the old connection's last frame), and the same request is sent again —
///   provided the read was answered within [`ClientConfig::close_retention`] of sending the
///   start; later the process may have run, closed and been forgotten, and the start fails
///   with [`CallError::Closed`];
/// - every other call that was in flight already failed with [`CallError::Closed`] at the
///   disconnect, because it may or may not have taken effect (`process/terminate`,
///   `process/signal`, …);
/// - calls queued meanwhile are sent, after the resent ones, in the order they were made;
///   calls made after a start that is not settled yet wait for it (and go out behind it when
///   it is sent again);
/// - each tracked process is read (`process/read {afterSeq: last delivered}`) and what was
///   missed is delivered once, in order, before the notifications that arrived after it;
///   output the server already evicted becomes a [`ClientEvent::Gap`].
///
/// **Tracking.** [`start`](Self::start) (and [`call`](Self::call) with `process/start`) tracks
/// the process until its `Closed` event, a failed start, or [`ClientEvent::ProcessLost`]; a
/// start for an id still tracked is refused without being sent.
/// A start cut off by a disconnect is settled after the resume (above); it fails with
/// [`CallError::Closed`] only when the session is lost. Reusing the id of a process that
/// closed less than the server's close retention ago while such a start is unsettled is
/// ambiguous (the read finds the old process): pick fresh ids. Notifications of untracked
/// processes are dropped. A notification whose seq was already
/// delivered is a duplicate and dropped; one ahead of a missing seq waits until a
/// `process/read` fills the gap. A read result's `exited`/`closed` flags produce `Exited` and
/// `Closed` exactly once even when the notifications never come: the close is at
/// `nextSeq - 1`, the exit at the highest seq no returned chunk uses (exact unless the exit
/// itself fell inside evicted output; then it is reported right after the gap).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    write_prefix: String,
    next_write: u64,
    next_id: i64,
    phase: Phase,
    /// Set from the first failure until a session is ready again.
    recovery: Option<Recovery>,
    /// When the next reconnect or `initialize` retry is due.
    retry_at: Option<Instant>,
    session_id: Option<String>,
    pending: Pending,
    trackers: BTreeMap<String, Tracker>,
    transmits: VecDeque<String>,
    events: VecDeque<ClientEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No transport; the runtime is opening one (first connect or after `Reconnect`).
    Connecting,
    /// No transport; waiting for `retry_at` to ask for one.
    Backoff,
    /// Transport open, `initialize` sent.
    Handshaking,
    /// Transport open, `initialize` refused with `-32010`; resent at `retry_at`.
    InitRetry,
    /// Session ready.
    Ready,
    /// Closed for good.
    Closed,
}

#[derive(Debug, Clone, Copy)]
struct Recovery {
    deadline: Instant,
    backoff: Duration,
}

impl Client {
    /// A client with `config`. `seed` (16 random bytes from the OS) makes this instance's
    /// `writeId`s unique: they are `"<32 hex digits of seed>-<counter from 1>"`.
    pub fn new(config: ClientConfig, seed: [u8; 16]) -> Self {
        let mut write_prefix = String::with_capacity(32);
        for b in seed {
            let _ = write!(write_prefix, "{b:02x}");
        }
        Client {
            config,
            write_prefix,
            next_write: 0,
            next_id: 0,
            phase: Phase::Connecting,
            recovery: None,
            retry_at: None,
            session_id: None,
            pending: Pending::default(),
            trackers: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The session id, once a session was opened.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Whether the client is closed for good.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether a session is ready (calls go out at once rather than being queued).
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// The last seq delivered in order for a tracked process (0 before its first event);
    /// `None` when the process is not tracked.
    pub fn last_seq(&self, process_id: &str) -> Option<Seq> {
        self.trackers.get(process_id).map(|t| Seq(t.delivered()))
    }

    /// Number of calls awaiting a response or their first send (the client's own included).
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// A transport is open: sends `initialize` (with `resumeSessionId` when resuming). Ignored
    /// unless the client is waiting for a transport.
    pub fn handle_connected(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Connecting | Phase::Backoff) {
            return;
        }
        self.retry_at = None;
        self.send_initialize(now);
    }

    /// The runtime could not open a transport. With recovery on, asks again after the backoff
    /// (until the recovery window runs out); otherwise the client closes for good.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        if self.phase != Phase::Connecting {
            return;
        }
        if !self.config.recovery {
            self.close_for_good(LostReason::Disconnected);
            return;
        }
        self.start_recovery(now);
        self.phase = Phase::Backoff;
        self.schedule_retry(now);
    }

    /// One inbound frame. Anything that is not a well-formed response to a pending call or a
    /// known notification is ignored; nothing the server sends can panic the client.
    pub fn handle_message(&mut self, now: Instant, text: &[u8]) {
        if !matches!(
            self.phase,
            Phase::Handshaking | Phase::InitRetry | Phase::Ready
        ) {
            return;
        }
        match rpc::decode(text) {
            Ok(Inbound::Response { id, result }) => self.handle_response(now, &id, Ok(result)),
            Ok(Inbound::Error { id, error }) => self.handle_response(now, &id, Err(error)),
            Ok(Inbound::Notification { method, params }) => {
                self.handle_notification(now, &method, params);
            }
            // The server sends no requests; undecodable frames have no one to answer.
            Ok(Inbound::Request { .. }) | Err(_) => {}
        }
    }

    /// The transport dropped. See [`Client`] for what happens to pending calls.
    pub fn handle_disconnect(&mut self, now: Instant) {
        if !matches!(
            self.phase,
            Phase::Handshaking | Phase::InitRetry | Phase::Ready
        ) {
            return;
        }
        self.transmits.clear();
        for t in self.trackers.values_mut() {
            t.reading = None;
        }
        if !self.config.recovery {
            self.close_for_good(LostReason::Disconnected);
            return;
        }
        for id in self.pending.on_disconnect() {
            self.fail(id);
        }
        if self.recovery.is_none() {
            // A fresh disconnect: try again at once.
            self.start_recovery(now);
            self.phase = Phase::Connecting;
            self.retry_at = None;
            self.events.push_back(ClientEvent::Reconnect);
        } else {
            self.phase = Phase::Backoff;
            self.schedule_retry(now);
        }
    }

    /// Time passed: fires a due reconnect or `initialize` retry, or gives up when the recovery
    /// window ran out. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if let Some(r) = self.recovery {
            if now >= r.deadline && self.phase != Phase::Ready {
                self.close_for_good(LostReason::WindowExhausted);
                return;
            }
        }
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            match self.phase {
                Phase::Backoff => {
                    self.phase = Phase::Connecting;
                    self.events.push_back(ClientEvent::Reconnect);
                }
                Phase::InitRetry => self.send_initialize(now),
                _ => {}
            }
        }
    }

    /// Closes the client for good: every pending call fails with [`CallError::Closed`], and a
    /// [`ClientEvent::SessionLost`] follows. The session stays on the server until its TTL.
    pub fn close(&mut self) {
        if self.phase != Phase::Closed {
            self.close_for_good(LostReason::ClosedLocally);
        }
    }

    /// Sends `method` with `params` (any JSON value; `null` for none). The answer comes as a
    /// [`ClientEvent::Response`] with the returned id. `process/start` also tracks the
    /// process (see [`start`](Self::start)); a start for a process id the client still tracks
    /// is not sent but answered at once with the error the server gives while it holds the
    /// process (`-32600 process X already exists`): start the id again after its `Closed` or
    /// [`ClientEvent::ProcessLost`].
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the client is closed for good;
    /// [`ClientError::ReservedMethod`] for `initialize` and `initialized`.
    pub fn call(
        &mut self,
        now: Instant,
        method_name: &str,
        params: serde_json::Value,
    ) -> Result<RequestId, ClientError> {
        if self.phase == Phase::Closed {
            return Err(ClientError::Closed);
        }
        if matches!(method_name, method::INITIALIZE | method::INITIALIZED) {
            return Err(ClientError::ReservedMethod(method_name.to_owned()));
        }
        let id = self.alloc_id();
        let text = rpc::encode_request(&RequestId::Int(id), method_name, &params);
        let mut kind = Kind::user(method_name);
        if let Kind::User { is_start, .. } = &mut kind {
            let pid = params.get("processId").and_then(|v| v.as_str());
            // Without a process id the server refuses it: nothing to track or to settle.
            *is_start &= pid.is_some();
        }
        if matches!(kind, Kind::User { is_start: true, .. }) {
            if let Some(pid) = params.get("processId").and_then(|v| v.as_str()) {
                if self.trackers.contains_key(pid) {
                    // Refused here with the server's own answer: if the server has forgotten
                    // the old process (closed, its retention over, while its last events are
                    // still on the way or were missed while away) the start would run, and
                    // the two processes' events could not be told apart.
                    let error = RpcError::invalid_request(format!("process {pid} already exists"));
                    self.events.push_back(ClientEvent::Response {
                        id: RequestId::Int(id),
                        result: Err(CallError::Rpc(error)),
                    });
                    return Ok(RequestId::Int(id));
                }
                self.trackers.insert(pid.to_owned(), Tracker::new(id));
            }
        }
        self.submit(now, id, kind, text);
        Ok(RequestId::Int(id))
    }

    /// `process/start`, tracking the process: its events are delivered in seq order, and
    /// recovered after a reconnect.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the client is closed for good.
    pub fn start(&mut self, now: Instant, params: StartParams) -> Result<RequestId, ClientError> {
        let value = serde_json::to_value(&params).unwrap_or(serde_json::Value::Null);
        self.call(now, method::PROCESS_START, value)
    }

    /// `process/write` of `bytes` to the stdin of `process_id`, with a fresh `writeId`; resent
    /// with the same `writeId` after a reconnect. The result is `{status}` (see
    /// [`crate::protocol::WriteStatus`]).
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the client is closed for good.
    pub fn write(
        &mut self,
        now: Instant,
        process_id: &str,
        bytes: Vec<u8>,
    ) -> Result<RequestId, ClientError> {
        if self.phase == Phase::Closed {
            return Err(ClientError::Closed);
        }
        self.next_write += 1;
        let params = WriteParams {
            process_id: process_id.to_owned(),
            chunk: bytes.into(),
            write_id: format!("{}-{}", self.write_prefix, self.next_write),
        };
        let value = serde_json::to_value(&params).unwrap_or(serde_json::Value::Null);
        self.call(now, method::PROCESS_WRITE, value)
    }

    /// The next frame to send on the current transport.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmits.pop_front()
    }

    /// The next event, in order. Drain to `None` after every `handle_*` and call.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        let deadline = self
            .recovery
            .filter(|_| self.phase != Phase::Ready)
            .map(|r| r.deadline);
        match (self.retry_at, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- inbound -------------------------------------------------------------------------

    fn handle_response(
        &mut self,
        now: Instant,
        id: &RequestId,
        result: Result<&RawValue, RpcError>,
    ) {
        let RequestId::Int(n) = *id else { return };
        let Some(call) = self.pending.remove(n) else {
            return;
        };
        if call.unsure {
            // Only a server that answers on the wrong connection gets here; the calls held
            // behind the start go out all the same.
            self.release_held(now);
        }
        match call.kind {
            Kind::Initialize => self.on_initialize_response(now, result),
            Kind::FillRead { process_id } => self.on_fill_read(now, n, &process_id, result),
            Kind::User {
                is_start, is_write, ..
            } => {
                if is_start {
                    self.on_start_response(n, result.is_ok());
                }
                let mut result: Result<serde_json::Value, CallError> = match result {
                    Ok(raw) => serde_json::from_str(raw.get())
                        .map_err(|e| CallError::InvalidResult(e.to_string())),
                    Err(e) => Err(CallError::Rpc(e)),
                };
                // A resent write finds its process unknown: past the close retention of its
                // first send, the first send may have been accepted before the process closed
                // and was forgotten, so its fate is unknown.
                let retention = self.config.close_retention;
                if is_write
                    && call.resent
                    && call.sent_at.is_some_and(|at| now >= at + retention)
                    && matches!(&result, Ok(v) if v["status"] == "unknownProcess")
                {
                    result = Err(CallError::Closed);
                }
                self.events.push_back(ClientEvent::Response {
                    id: id.clone(),
                    result,
                });
            }
        }
    }

    fn on_initialize_response(&mut self, now: Instant, result: Result<&RawValue, RpcError>) {
        let resuming = self.session_id.is_some();
        let raw = match result {
            Ok(raw) => raw,
            Err(e)
                if resuming
                    && self.recovery.is_some()
                    && ErrorCode::from_code(e.code) == Some(ErrorCode::SessionAttached) =>
            {
                // The server has not noticed the old transport drop yet: retry shortly.
                self.phase = Phase::InitRetry;
                self.schedule_retry(now);
                return;
            }
            Err(e) => {
                self.close_for_good(LostReason::Rejected(e));
                return;
            }
        };
        let init: InitializeResult = match serde_json::from_str(raw.get()) {
            Ok(init) => init,
            Err(e) => {
                self.close_for_good(LostReason::Protocol(format!(
                    "undecodable initialize result: {e}"
                )));
                return;
            }
        };
        if let Some(old) = &self.session_id {
            if *old != init.session_id {
                self.close_for_good(LostReason::Protocol(format!(
                    "resume of session {old} returned session {}",
                    init.session_id
                )));
                return;
            }
        }
        self.session_id = Some(init.session_id.clone());
        self.recovery = None;
        self.retry_at = None;
        self.phase = Phase::Ready;
        self.transmits.push_back(rpc::encode_notification(
            method::INITIALIZED,
            &serde_json::json!({}),
        ));
        self.events.push_back(ClientEvent::Connected {
            session_id: init.session_id,
            resumed: resuming,
        });
        // A start whose fate is unknown is settled by the read of its tracked process; one
        // that lost its tracker (only a server that broke the ordering of start answers and
        // notifications can cause that) can never be settled: its fate stays unknown.
        let orphans: Vec<i64> = self
            .pending
            .unsure()
            .filter(|&s| !self.trackers.values().any(|t| t.start_request == Some(s)))
            .collect();
        for start in orphans {
            self.pending.remove(start);
            self.fail(start);
        }
        // Resent writes and reads, then calls queued meanwhile, in the order they were made.
        let frames = self.pending.take_unsent(now);
        self.transmits.extend(frames);
        if resuming {
            let ids: Vec<String> = self.trackers.keys().cloned().collect();
            for pid in ids {
                self.fill(now, &pid);
            }
        }
    }

    fn on_start_response(&mut self, id: i64, ok: bool) {
        let Some(pid) = self
            .trackers
            .iter()
            .find(|(_, t)| t.start_request == Some(id))
            .map(|(pid, _)| pid.clone())
        else {
            return;
        };
        if ok {
            if let Some(t) = self.trackers.get_mut(&pid) {
                t.start_request = None;
            }
        } else {
            self.trackers.remove(&pid);
        }
    }

    fn on_fill_read(
        &mut self,
        now: Instant,
        id: i64,
        process_id: &str,
        result: Result<&RawValue, RpcError>,
    ) {
        let unsure = self.pending.first_unsure();
        self.fill_read_result(now, id, process_id, result);
        if unsure.is_some() {
            self.release_held(now);
        }
    }

    /// Calls held behind a start that was settled go out now (see [`Pending::first_unsure`]).
    fn release_held(&mut self, now: Instant) {
        if self.phase == Phase::Ready {
            let frames = self.pending.take_unsent(now);
            self.transmits.extend(frames);
        }
    }

    fn fill_read_result(
        &mut self,
        now: Instant,
        id: i64,
        process_id: &str,
        result: Result<&RawValue, RpcError>,
    ) {
        let mut out = Vec::new();
        {
            // A tracker made afresh for a reused process id is not this read's.
            let Some(t) = self
                .trackers
                .get_mut(process_id)
                .filter(|t| t.reading == Some(id))
            else {
                return;
            };
            // A start cut off by a disconnect, waiting for this read to learn whether it ran.
            let unsure = t.start_request.filter(|&s| self.pending.is_unsure(s));
            // The server refuses reads of a process still starting: it exists, so the start
            // ran; its events follow as notifications.
            let starting = matches!(&result, Err(e) if e.message.ends_with(" is starting"));
            if let (Some(start), true) = (unsure, starting) {
                t.start_request = None;
                t.reading = None;
                self.pending.remove(start);
                self.events.push_back(ClientEvent::Response {
                    id: RequestId::Int(start),
                    result: Ok(serde_json::json!({ "processId": process_id })),
                });
                return;
            }
            match result.map(|raw| serde_json::from_str::<ReadResult>(raw.get())) {
                Ok(Ok(read)) => {
                    if let Some(start) = unsure {
                        // It ran: answer the start as the server would have.
                        t.start_request = None;
                        self.pending.remove(start);
                        self.events.push_back(ClientEvent::Response {
                            id: RequestId::Int(start),
                            result: Ok(serde_json::json!({ "processId": process_id })),
                        });
                    }
                    t.on_read(read, &mut out);
                }
                Err(e)
                    if ErrorCode::from_code(e.code) == Some(ErrorCode::InvalidRequest)
                        && e.message.starts_with("unknown process id") =>
                {
                    if let Some(start) = unsure {
                        t.reading = None;
                        let retention = self.config.close_retention;
                        let call = self.pending.get_mut(start);
                        if let Some(call) =
                            call.filter(|c| c.sent_at.is_some_and(|at| now < at + retention))
                        {
                            // It never ran (the server handled every frame of the old
                            // connection before it let the session resume, and could not
                            // have forgotten the process yet): send the same start again.
                            call.unsure = false;
                            call.sent = true;
                            call.sent_at = Some(now);
                            self.transmits.push_back(call.text.clone());
                        } else {
                            // It may have run, closed and been forgotten: its fate is unknown.
                            self.pending.remove(start);
                            self.trackers.remove(process_id);
                            self.events.push_back(ClientEvent::Response {
                                id: RequestId::Int(start),
                                result: Err(CallError::Closed),
                            });
                        }
                        return;
                    }
                    self.trackers.remove(process_id);
                    self.events.push_back(ClientEvent::ProcessLost {
                        process_id: process_id.to_owned(),
                    });
                    return;
                }
                Ok(Err(_)) | Err(_) => {
                    if let Some(start) = unsure {
                        t.start_request = None;
                        self.pending.remove(start);
                        self.events.push_back(ClientEvent::Response {
                            id: RequestId::Int(start),
                            result: Err(CallError::Closed),
                        });
                    }
                    t.on_read_failed(&mut out);
                }
            }
        }
        self.emit(process_id, out);
    }

    fn handle_notification(&mut self, now: Instant, method_name: &str, params: Option<&RawValue>) {
        let (process_id, event) = match method_name {
            method::PROCESS_OUTPUT => match rpc::decode_params::<OutputNotification>(params) {
                Ok(n) => (
                    n.process_id,
                    Delivery::Output {
                        seq: n.seq,
                        stream: n.stream,
                        chunk: n.chunk.0,
                    },
                ),
                Err(_) => return,
            },
            method::PROCESS_EXITED => match rpc::decode_params::<ExitedNotification>(params) {
                Ok(n) => (
                    n.process_id,
                    Delivery::Exited {
                        seq: n.seq,
                        exit_code: n.exit_code,
                        sandbox_denied: n.sandbox_denied,
                    },
                ),
                Err(_) => return,
            },
            method::PROCESS_CLOSED => match rpc::decode_params::<ClosedNotification>(params) {
                Ok(n) => (n.process_id, Delivery::Closed { seq: n.seq }),
                Err(_) => return,
            },
            _ => return,
        };
        let Some(t) = self.trackers.get_mut(&process_id) else {
            return;
        };
        if let Some(start) = t.start_request.filter(|&s| self.pending.is_unsure(s)) {
            // A start cut off by a disconnect: its process exists, so it ran. (The recovery
            // read would tell too, but the process may close, ending the tracking, first.)
            t.start_request = None;
            self.pending.remove(start);
            self.events.push_back(ClientEvent::Response {
                id: RequestId::Int(start),
                result: Ok(serde_json::json!({ "processId": process_id })),
            });
            self.release_held(now);
        }
        let Some(t) = self.trackers.get_mut(&process_id) else {
            return;
        };
        let mut out = Vec::new();
        let gap = t.on_notification(event, &mut out);
        let idle = t.reading.is_none();
        self.emit(&process_id, out);
        // Before a resume's `initialize` response the gap is read once the session is ready.
        if gap && idle && self.phase == Phase::Ready {
            self.fill(now, &process_id);
        }
    }

    // ----- helpers -------------------------------------------------------------------------

    /// Sends `process/read {afterSeq: last delivered}` for a tracked process, unless one is
    /// in flight.
    fn fill(&mut self, now: Instant, process_id: &str) {
        let Some(t) = self.trackers.get(process_id) else {
            return;
        };
        // A start not answered yet: the process has nothing to read (or is still starting).
        // A start cut off by a disconnect is the exception: the read tells whether it ran.
        let start_pending = t
            .start_request
            .is_some_and(|id| self.pending.contains(id) && !self.pending.is_unsure(id));
        if t.reading.is_some() || start_pending {
            return;
        }
        let params = ReadParams {
            process_id: process_id.to_owned(),
            after_seq: Some(t.delivered()),
            max_bytes: None,
            wait_ms: None,
        };
        let id = self.alloc_id();
        if let Some(t) = self.trackers.get_mut(process_id) {
            t.reading = Some(id);
        }
        let text = rpc::encode_request(&RequestId::Int(id), method::PROCESS_READ, &params);
        let kind = Kind::FillRead {
            process_id: process_id.to_owned(),
        };
        self.submit(now, id, kind, text);
    }

    /// Sends a call now when the session is ready (and, for a user call, no start made before
    /// it waits to be settled), else queues it.
    fn submit(&mut self, now: Instant, id: i64, kind: Kind, text: String) {
        let held = matches!(kind, Kind::User { .. }) && self.pending.first_unsure().is_some();
        let sent = self.phase == Phase::Ready && !held;
        if sent {
            self.transmits.push_back(text.clone());
        }
        self.pending.insert(
            id,
            Call {
                kind,
                text,
                sent,
                unsure: false,
                sent_at: sent.then_some(now),
                resent: false,
            },
        );
    }

    fn send_initialize(&mut self, now: Instant) {
        let params = InitializeParams {
            client_name: self.config.client_name.clone(),
            resume_session_id: self.session_id.clone(),
        };
        let id = self.alloc_id();
        let text = rpc::encode_request(&RequestId::Int(id), method::INITIALIZE, &params);
        self.transmits.push_back(text.clone());
        self.pending.insert(
            id,
            Call {
                kind: Kind::Initialize,
                text,
                sent: true,
                unsure: false,
                sent_at: Some(now),
                resent: false,
            },
        );
        self.phase = Phase::Handshaking;
    }

    fn alloc_id(&mut self) -> i64 {
        // i64::MAX calls would take centuries; saturating keeps the arithmetic total.
        self.next_id = self.next_id.saturating_add(1);
        self.next_id
    }

    fn start_recovery(&mut self, now: Instant) {
        if self.recovery.is_none() {
            self.recovery = Some(Recovery {
                deadline: now + self.config.recovery_window,
                backoff: self.config.backoff_initial,
            });
        }
    }

    /// Sets `retry_at` one backoff step from `now` and doubles the step.
    fn schedule_retry(&mut self, now: Instant) {
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        self.retry_at = Some(now + r.backoff);
        r.backoff = (r.backoff * 2).min(self.config.backoff_max);
    }

    fn fail(&mut self, id: i64) {
        self.events.push_back(ClientEvent::Response {
            id: RequestId::Int(id),
            result: Err(CallError::Closed),
        });
    }

    fn close_for_good(&mut self, reason: LostReason) {
        self.phase = Phase::Closed;
        self.recovery = None;
        self.retry_at = None;
        self.transmits.clear();
        self.trackers.clear();
        for id in self.pending.drain_user() {
            self.fail(id);
        }
        self.events.push_back(ClientEvent::SessionLost { reason });
    }

    /// Turns a tracker's deliveries into events; stops tracking after `Closed`.
    fn emit(&mut self, process_id: &str, out: Vec<Delivery>) {
        for d in out {
            let process_id = process_id.to_owned();
            self.events.push_back(match d {
                Delivery::Output { seq, stream, chunk } => ClientEvent::Output {
                    process_id,
                    seq: Seq(seq),
                    stream,
                    chunk,
                },
                Delivery::Exited {
                    seq,
                    exit_code,
                    sandbox_denied,
                } => ClientEvent::Exited {
                    process_id,
                    seq: Seq(seq),
                    exit_code,
                    sandbox_denied,
                },
                Delivery::Closed { seq } => ClientEvent::Closed {
                    process_id,
                    seq: Seq(seq),
                },
                Delivery::Gap {
                    lost_chunks,
                    first_retained_seq,
                } => ClientEvent::Gap {
                    process_id,
                    lost_chunks,
                    first_retained_seq: Seq(first_retained_seq),
                },
            });
        }
        if self
            .trackers
            .get(process_id)
            .is_some_and(Tracker::is_closed)
        {
            self.trackers.remove(process_id);
        }
    }
}

#[cfg(test)]
mod tests;
