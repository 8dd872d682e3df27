//! The client state machine: request ids and pending calls, session resume, write retries,
//! per-process cursors with seq-ordered delivery and gap reporting.
//!
//! One file per rule; this one holds [`Client`], its public entry points and the call order:
//! - `event`: [`ClientEvent`] and the error types;
//! - `handshake`: `initialize` (fresh or `resumeSessionId`) and `initialized` (PROTOCOL.md
//!   §4, §6);
//! - `recovery`: backoff, the recovery window, giving up (§6.1);
//! - `ack`: lossless output: `process/ack` as output is delivered (§5.11);
//! - `calls`: request ids, queued and in-flight calls, answers, the resent-write rule;
//! - `resume`: after a resume, the recovery reads of tracked processes and the settlement of
//!   starts cut off by the disconnect (§6.1);
//! - `binary`: ext binary `process/output` frames (§2.5);
//! - `delivery`: notifications and read results delivered per process in seq order, gaps;
//! - `pending`, `tracker`: the tables behind them.

mod ack;
mod binary;
mod calls;
mod config;
mod delivery;
mod event;
mod handshake;
mod pending;
mod recovery;
mod resume;
mod tracker;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

pub use config::ClientConfig;
pub use event::{CallError, ClientError, ClientEvent, LostReason};

use crate::ids::Seq;
use crate::protocol::{method, Method, Notification, StartParams, WriteParams};
use crate::rpc::{self, Inbound, RequestId, RpcError};
use pending::{Kind, Pending};
use tracker::Tracker;

/// The sans-IO client: the other end of [`crate::Server`], no I/O and no clock reads.
///
/// Drive it from one task that owns it:
/// 1. open a transport and call [`handle_connected`](Self::handle_connected) (or
///    [`handle_connect_failed`](Self::handle_connect_failed); for the first transport, a
///    runtime that would rather report a server that is not there than open a recovery
///    window asks [`first_connect_failed`](Self::first_connect_failed) when to try again);
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
///   output the server already evicted becomes a [`ClientEvent::Gap`]. The read is paged
///   (`maxBytes` = [`ClientConfig::recovery_read_bytes`]): each page is delivered as it
///   arrives and the next one is read from there, so a connection that keeps dropping still
///   makes progress.
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
    /// The first connect's retries (see [`first_connect_failed`](Self::first_connect_failed)).
    first_connect: FirstConnect,
    session_id: Option<String>,
    /// The lossless window the server granted at the last `initialize` (`None`: not asked or
    /// not granted: output past the server's retention may be evicted).
    lossless: Option<crate::protocol::LosslessWindow>,
    pending: Pending,
    /// The pieces received so far of results sent as several binary result frames (§2.5),
    /// by call id.
    partial: BTreeMap<i64, Vec<u8>>,
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

/// Failed attempts at the first connect so far, and the delay before the next one.
#[derive(Debug, Clone, Copy)]
struct FirstConnect {
    failures: u32,
    backoff: Duration,
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
        let first_connect = FirstConnect {
            failures: 0,
            backoff: config.backoff_initial,
        };
        Client {
            config,
            write_prefix,
            next_write: 0,
            next_id: 0,
            phase: Phase::Connecting,
            recovery: None,
            retry_at: None,
            first_connect,
            session_id: None,
            lossless: None,
            pending: Pending::default(),
            partial: BTreeMap::new(),
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
        // Only a client that asked can receive binary frames (possibly just ahead of the
        // `initialize` answer that confirms them).
        if self.config.binary_frames && crate::protocol::binary::is_binary_frame(text) {
            self.handle_binary(now, text);
            return;
        }
        match rpc::decode(text) {
            Ok(Inbound::Response { id, result }) => self.handle_response(now, &id, Ok(result)),
            Ok(Inbound::Error { id, error }) => self.handle_response(now, &id, Err(error)),
            Ok(Inbound::Notification { method, params }) => {
                self.handle_notification(now, Notification::decode(&method, params));
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
        // A result begun on the old connection is answered again in full, or fails.
        self.partial.clear();
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
        let method = Method::from_name(method_name);
        if method == Some(Method::Initialize) || method_name == method::INITIALIZED {
            return Err(ClientError::ReservedMethod(method_name.to_owned()));
        }
        let id = self.alloc_id();
        let text = rpc::encode_request(&RequestId::Int(id), method_name, &params);
        let mut kind = Kind::user(method);
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
}

#[cfg(test)]
mod tests;
