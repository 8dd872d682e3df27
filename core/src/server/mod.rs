//! The server state machine: sessions, processes, seq, retention, dedupe and long polls.
//!
//! One file per rule of `docs/PROTOCOL.md`; this one holds [`Server`], its public entry
//! points and the call order:
//! - `handshake`: `initialize` / `initialized` and the per-connection phase (§4), with the
//!   dispatch of decoded requests;
//! - `session`: session ids, detach on disconnect, resume and TTL expiry (§6);
//! - `start`: `process/start` and the spawn answer (§5.1);
//! - `events`: output, EOF and exit turned into seq-numbered notifications, close and the
//!   closed-process retention (§5.2, §5.7);
//! - `read`: `process/read` and its long polls (§5.3);
//! - `write`: `process/write` with `writeId` dedupe and `process/closeStdin` (§5.4, §5.8);
//! - `control`: `process/terminate`, `process/signal`, `process/resize`, `process/list`
//!   (§5.5, §5.6, §5.9, §5.10);
//! - `denial_grace`: the sandbox-denial grace before `process/exited` (§7);
//! - `http`: `http/request` and `http/cancel`: tickets, streamed bodies and their credits;
//! - `environment`: `environment/info`, `environment/status`;
//! - `fs`: the `fs/*` methods performed by the runtime ([`Command::Fs`], [`Server::handle_fs`])
//!   and `fs/watchMissing`;
//! - `timers`: every deadline and [`Server::handle_timeout`];
//! - `outbound`: replies, notifications and closes queued as [`Output`]s;
//! - `congestion`: unsent bytes per connection, pausing the processes whose output waits for a
//!   congested connection, and dropping connections that stay congested or do not close (§2.4);
//! - `binary`: ext binary frames: negotiation, binary `process/output`, binary
//!   `process/write` (§2.5);
//! - `lossless`: lossless output (ext): acknowledgements and the window that holds a process
//!   instead of evicting what its client has not received (§5.11);
//! - `limits`: the resource bounds of §2.3 (ids, processes, retention, sessions, connections,
//!   requests in flight).

mod binary;
mod command;
mod config;
mod congestion;
mod control;
mod dedupe;
mod denial_grace;
mod environment;
mod events;
mod fs;
mod fs_watch;
mod handshake;
mod http;
mod limits;
mod lossless;
mod outbound;
mod output_log;
mod process;
mod read;
mod session;
mod start;
mod timers;
mod write;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub use command::{Command, ExitStatus, Output, ProcessEvent, PtySize, SpawnErrorKind, SpawnSpec};
pub use config::{ConfigError, ServerConfig, MAX_CONFIG_DURATION, MAX_FRAME_BYTES_LIMIT};
pub use fs::{FsTicket, FS_PIECE_HEADROOM, MAX_WATCHES_PER_CONNECTION};
pub use http::{HttpEvent, HttpTicket};
pub use session::SessionId;

use crate::ids::{ConnId, Principal, ProcessKey};
use crate::protocol::Notification;
use crate::rpc::{self, Inbound, RequestId, RpcError};
use process::Process;
use read::PendingReads;
use session::Session;
use timers::Timer;

/// The execd protocol revision advertised in the `initialize` result (ext).
pub const PROTOCOL_VERSION: &str = "execd/1";

/// Misuse of the [`Server`] API by its runtime (never caused by network input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The connection was never opened with [`Server::handle_connect`] or was already
    /// disconnected.
    #[error("unknown connection {0}")]
    UnknownConn(ConnId),
}

/// The sans-IO server: every protocol rule of execd, no I/O and no clock reads.
///
/// Drive it like this, from one task that owns it:
/// 1. feed an input: [`handle_connect`](Self::handle_connect),
///    [`handle_message`](Self::handle_message), [`handle_disconnect`](Self::handle_disconnect),
///    [`handle_process`](Self::handle_process), [`handle_fs`](Self::handle_fs),
///    [`handle_fs_watch_event`](Self::handle_fs_watch_event) or
///    [`handle_timeout`](Self::handle_timeout), each with the current time;
/// 2. drain [`poll_output`](Self::poll_output) to `None`, sending frames and performing
///    commands (a spawn is answered by feeding [`ProcessEvent::Spawned`] or
///    [`ProcessEvent::SpawnFailed`] back in), and report the bytes each connection wrote with
///    [`handle_sent`](Self::handle_sent) as they leave;
/// 3. sleep until [`poll_timeout`](Self::poll_timeout) or the next input, whichever is first.
///
/// ```
/// use std::time::Instant;
/// use execd_core::{Output, Server, ServerConfig};
///
/// let mut server = Server::new(ServerConfig::default(), [7; 32]);
/// let now = Instant::now();
/// let conn = server.handle_connect(now);
/// server.handle_message(now, conn, br#"{"id":1,"method":"initialize","params":{"clientName":"doc"}}"#)?;
/// while let Some(out) = server.poll_output() {
///     match out {
///         Output::Transmit { conn, text } => assert!(text.contains("sessionId")),
///         Output::TransmitBinary { .. } | Output::Close { .. } | Output::Drop { .. } => {}
///         Output::Command(_) => {}
///     }
/// }
/// assert_eq!(server.poll_timeout(), None);
/// # Ok::<(), execd_core::ServerError>(())
/// ```
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    rng: ChaCha20Rng,
    next_conn: u64,
    next_key: u64,
    conns: BTreeMap<ConnId, Conn>,
    sessions: BTreeMap<SessionId, Session>,
    processes: BTreeMap<ProcessKey, Process>,
    reads: PendingReads,
    http: http::HttpState,
    timers: BTreeSet<(Instant, Timer)>,
    fs: fs::FsState,
    fs_watches: fs_watch::WatchState,
    out: VecDeque<Output>,
    /// Connections that crossed a congestion mark or were closed during the current
    /// `handle_*` call; their timers start in [`Server::settle`], which knows `now`.
    unsettled: BTreeSet<ConnId>,
}

#[derive(Debug)]
struct Conn {
    phase: ConnPhase,
    /// Set after an [`Output::Close`] or [`Output::Drop`]: later frames are ignored and
    /// nothing more is sent.
    closing: bool,
    /// When an unfinished close is dropped (its timer is armed); `None` until
    /// [`Server::settle`] stamps a fresh close.
    close_deadline: Option<Instant>,
    /// Bytes transmitted and not yet reported written.
    unsent: usize,
    /// Over the congestion high mark and not yet back under the low one.
    congested: bool,
    /// When a congested connection is dropped; `None` until [`Server::settle`] stamps it (or
    /// when it overflows the clock: never).
    congestion_deadline: Option<Instant>,
    /// Requests answered later (long polls, starts) not yet answered.
    inflight: usize,
    /// Who the connection authenticated as.
    principal: Option<Principal>,
    /// ext binary frames: possible on the transport, negotiated.
    binary: binary::BinaryFrames,
}

impl Conn {
    fn new(principal: Option<Principal>) -> Self {
        Conn {
            phase: ConnPhase::New,
            closing: false,
            close_deadline: None,
            unsent: 0,
            congested: false,
            congestion_deadline: None,
            inflight: 0,
            principal,
            binary: binary::BinaryFrames::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnPhase {
    /// Waiting for `initialize`.
    New,
    /// `initialize` answered, waiting for the `initialized` notification.
    Initializing(SessionId),
    /// Serving requests.
    Ready(SessionId),
}

impl ConnPhase {
    fn session(self) -> Option<SessionId> {
        match self {
            ConnPhase::New => None,
            ConnPhase::Initializing(s) | ConnPhase::Ready(s) => Some(s),
        }
    }
}

impl Server {
    /// A server with `config`; `seed` (32 random bytes from the OS) keys the generator of
    /// session ids, which must be unpredictable.
    pub fn new(config: ServerConfig, seed: [u8; 32]) -> Self {
        Server {
            config,
            rng: ChaCha20Rng::from_seed(seed),
            next_conn: 0,
            next_key: 0,
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            processes: BTreeMap::new(),
            reads: PendingReads::default(),
            http: http::HttpState::default(),
            timers: BTreeSet::new(),
            fs: fs::FsState::default(),
            fs_watches: fs_watch::WatchState::default(),
            out: VecDeque::new(),
            unsettled: BTreeSet::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// A transport connection opened; returns its id.
    ///
    /// Past [`ServerConfig::max_connections`] open connections the new one is answered with
    /// one `-32600` error (id `-1`) naming the limit and closed ([`Output::Close`], then
    /// [`Output::Drop`] after the close grace); the runtime handles it like any other.
    pub fn handle_connect(&mut self, now: Instant) -> ConnId {
        self.handle_connect_as(now, None)
    }

    /// A transport connection opened that authenticated as `principal` (`None`: no
    /// authentication, e.g. stdio or a server without `--ws-auth`); returns its id. Sessions
    /// it opens are bound to `principal`: another principal's `initialize {resumeSessionId}`
    /// gets the same error as an unknown id. Limits as [`handle_connect`](Self::handle_connect).
    pub fn handle_connect_as(&mut self, now: Instant, principal: Option<Principal>) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let open = self.conns.values().filter(|c| !c.closing).count();
        self.conns.insert(conn, Conn::new(principal));
        if open >= self.config.max_connections {
            self.refuse_connection(conn);
        }
        self.settle(now);
        conn
    }

    /// One inbound frame (the JSON text of one WebSocket message or stdio line) on `conn`;
    /// on a connection that negotiated binary frames, a message starting with
    /// [`BINARY_MAGIC`](crate::protocol::binary::BINARY_MAGIC) is a binary frame (§2.5).
    ///
    /// Bad input of any kind becomes a JSON-RPC error reply (or, for the cases the reference
    /// treats as fatal, an [`Output::Close`]); it never panics.
    ///
    /// # Errors
    /// [`ServerError::UnknownConn`] when `conn` is not open.
    pub fn handle_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        text: &[u8],
    ) -> Result<(), ServerError> {
        let result = self.message(now, conn, text);
        self.settle(now);
        result
    }

    fn message(&mut self, now: Instant, conn: ConnId, text: &[u8]) -> Result<(), ServerError> {
        let c = self
            .conns
            .get(&conn)
            .ok_or(ServerError::UnknownConn(conn))?;
        if c.closing {
            return Ok(());
        }
        if text.len() > self.config.max_frame_bytes {
            return self.frame_too_large(conn, text.len());
        }
        if self.is_binary_message(conn, text) {
            self.binary_message(conn, text);
            return Ok(());
        }
        if rpc::exceeds_value_budget(text, self.config.max_json_values) {
            let msg = format!(
                "message has more than {} JSON values",
                self.config.max_json_values
            );
            self.reply(
                conn,
                &RequestId::UNREADABLE,
                Err(RpcError::invalid_request(msg)),
            );
            return Ok(());
        }
        match rpc::decode(text) {
            Err(e) => {
                let id = e.id.unwrap_or(RequestId::UNREADABLE);
                self.reply(conn, &id, Err(RpcError::invalid_request(e.message)));
            }
            Ok(Inbound::Request { id, method, params }) => {
                if let Err(e) = self.check_request_id(&id) {
                    self.reply(conn, &RequestId::UNREADABLE, Err(e));
                    return Ok(());
                }
                let reply = self.handle_request(now, conn, &id, &method, params);
                if matches!(reply, Ok(None)) {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.inflight += 1;
                    }
                }
                self.reply(conn, &id, reply);
            }
            Ok(Inbound::Notification { method, params }) => {
                let notification = Notification::decode(&method, params);
                self.handle_notification(conn, &notification);
            }
            Ok(Inbound::Response { .. } | Inbound::Error { .. }) => {
                // The server sends no requests, so a response is a protocol violation; the
                // reference closes the connection.
                self.close(conn);
            }
        }
        Ok(())
    }

    /// The transport refused a frame of `len` bytes as too large without buffering it; answer
    /// like an oversized [`handle_message`](Self::handle_message).
    ///
    /// # Errors
    /// [`ServerError::UnknownConn`] when `conn` is not open.
    pub fn handle_frame_too_large(
        &mut self,
        now: Instant,
        conn: ConnId,
        len: usize,
    ) -> Result<(), ServerError> {
        let result = self.frame_too_large(conn, len);
        self.settle(now);
        result
    }

    fn frame_too_large(&mut self, conn: ConnId, len: usize) -> Result<(), ServerError> {
        if !self.conns.contains_key(&conn) {
            return Err(ServerError::UnknownConn(conn));
        }
        let msg = format!(
            "message of {len} bytes exceeds the limit of {} bytes",
            self.config.max_frame_bytes
        );
        self.reply(
            conn,
            &RequestId::UNREADABLE,
            Err(RpcError::invalid_request(msg)),
        );
        Ok(())
    }

    /// The transport connection closed. Its session (if any) detaches: processes keep running
    /// and their output is retained until the session TTL runs out. Long polls held for the
    /// connection are dropped.
    ///
    /// # Errors
    /// [`ServerError::UnknownConn`] when `conn` is not open.
    pub fn handle_disconnect(&mut self, now: Instant, conn: ConnId) -> Result<(), ServerError> {
        let c = self
            .conns
            .remove(&conn)
            .ok_or(ServerError::UnknownConn(conn))?;
        self.drop_reads_of(conn);
        self.cancel_http_of(conn);
        self.drop_fs_of(conn);
        if let Some(sid) = c.phase.session() {
            self.detach(now, sid, conn);
        }
        self.forget_conn_timers(conn, &c);
        self.settle(now);
        Ok(())
    }

    /// Something happened to process `key`. Events for processes the core already forgot
    /// (e.g. after its session expired) are ignored.
    pub fn handle_process(&mut self, now: Instant, key: ProcessKey, event: ProcessEvent) {
        if !self.processes.contains_key(&key) {
            return;
        }
        match event {
            ProcessEvent::Spawned { pid } => self.on_spawned(key, pid),
            ProcessEvent::SpawnFailed { kind, error } => self.on_spawn_failed(key, kind, error),
            ProcessEvent::Output { stream, bytes } => self.on_output(key, stream, bytes),
            ProcessEvent::Eof { stream: _ } => self.on_eof(now, key),
            ProcessEvent::Exited { status } => self.on_exited(now, key, status),
            ProcessEvent::StdinClosed => self.on_stdin_closed(key),
            ProcessEvent::StdinWritten { bytes } => self.on_stdin_written(key, bytes),
        }
        self.settle(now);
    }

    /// The runtime wrote `bytes` of what was transmitted on `conn` (whole frames or parts, in
    /// order). The core counts every transmitted byte as unsent until reported here; see
    /// [`ServerConfig::congestion_high_bytes`]. Reports for unknown connections are ignored.
    pub fn handle_sent(&mut self, now: Instant, conn: ConnId, bytes: usize) {
        self.on_sent(conn, bytes);
        self.settle(now);
    }

    /// Time passed: fire every timer due at `now` (session expiry, long-poll deadlines, the
    /// sandbox grace, forgetting closed processes, congestion and close deadlines). Spurious
    /// calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.fire_timers(now);
        self.settle(now);
    }

    /// The next output to act on, in order. Drain to `None` after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Number of live sessions (attached or detached).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of process entries (starting, running, or closed but still retained).
    pub fn process_count(&self) -> usize {
        self.processes.len()
    }

    /// Number of `http/request`s in flight (waiting for their head or streaming a body).
    pub fn http_request_count(&self) -> usize {
        self.http.len()
    }

    /// Number of long-poll reads currently held.
    pub fn pending_read_count(&self) -> usize {
        self.reads.len()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_limits;
