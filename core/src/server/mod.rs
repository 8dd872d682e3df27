//! The server state machine: sessions, processes, seq, retention, dedupe and long polls.

mod command;
mod config;
mod dedupe;
mod output_log;
mod process;
mod read;
mod session;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::Serialize;
use serde_json::value::RawValue;

pub use command::{Command, ExitStatus, Output, ProcessEvent, SpawnSpec};
pub use config::ServerConfig;
pub use session::SessionId;

use crate::ids::{ConnId, ProcessKey, Seq};
use crate::protocol::{
    method, Capabilities, ClosedNotification, ExitedNotification, InitializeParams,
    InitializeResult, ListResult, ProcessIdParams, ProcessInfo, ReadParams, ResizeParams,
    SignalParams, StartParams, StartResult, Stream, TerminateResult, WriteParams, WriteResult,
    WriteStatus,
};
use crate::rpc::{self, ErrorCode, Inbound, RequestId, RpcError};
use process::{Limits, Phase, Process, Stdin};
use read::{PendingRead, PendingReads, ReadId};
use session::Session;

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
///    [`handle_process`](Self::handle_process) or [`handle_timeout`](Self::handle_timeout),
///    each with the current time;
/// 2. drain [`poll_output`](Self::poll_output) to `None`, sending frames and performing
///    commands (a spawn is answered by feeding [`ProcessEvent::Spawned`] or
///    [`ProcessEvent::SpawnFailed`] back in);
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
///         Output::Close { .. } | Output::Command(_) => {}
///         _ => {}
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
    timers: BTreeSet<(Instant, Timer)>,
    out: VecDeque<Output>,
}

#[derive(Debug)]
struct Conn {
    phase: ConnPhase,
    /// Set after an [`Output::Close`]: later frames are ignored.
    closing: bool,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    SessionExpiry(SessionId),
    ReadDeadline(ReadId),
    SandboxGrace(ProcessKey),
    Forget(ProcessKey),
}

type Reply = Result<Option<String>, RpcError>;

/// Every request method execd serves; anything else is `-32601` in any connection state.
const KNOWN_METHODS: &[&str] = &[
    method::INITIALIZE,
    method::PROCESS_START,
    method::PROCESS_READ,
    method::PROCESS_WRITE,
    method::PROCESS_TERMINATE,
    method::PROCESS_SIGNAL,
    method::PROCESS_CLOSE_STDIN,
    method::PROCESS_RESIZE,
    method::PROCESS_LIST,
];

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
            timers: BTreeSet::new(),
            out: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// A transport connection opened; returns its id.
    pub fn handle_connect(&mut self, _now: Instant) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.conns.insert(
            conn,
            Conn {
                phase: ConnPhase::New,
                closing: false,
            },
        );
        conn
    }

    /// One inbound frame (the JSON text of one WebSocket message or stdio line) on `conn`.
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
        let c = self
            .conns
            .get(&conn)
            .ok_or(ServerError::UnknownConn(conn))?;
        if c.closing {
            return Ok(());
        }
        if text.len() > self.config.max_frame_bytes {
            return self.handle_frame_too_large(now, conn, text.len());
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
                let reply = self.handle_request(now, conn, &id, &method, params);
                self.reply(conn, &id, reply);
            }
            Ok(Inbound::Notification { method, .. }) => self.handle_notification(conn, &method),
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
        _now: Instant,
        conn: ConnId,
        len: usize,
    ) -> Result<(), ServerError> {
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
        for rid in self.reads.for_conn(conn) {
            if let Some(read) = self.reads.remove(rid) {
                self.timers
                    .remove(&(read.deadline, Timer::ReadDeadline(rid)));
            }
        }
        if let Some(sid) = c.phase.session() {
            if let Some(session) = self.sessions.get_mut(&sid) {
                if session.conn == Some(conn) {
                    let expires_at = now + self.config.session_ttl;
                    session.conn = None;
                    session.expires_at = Some(expires_at);
                    self.timers.insert((expires_at, Timer::SessionExpiry(sid)));
                }
            }
        }
        Ok(())
    }

    /// Something happened to process `key`. Events for processes the core already forgot
    /// (e.g. after its session expired) are ignored.
    pub fn handle_process(&mut self, now: Instant, key: ProcessKey, event: ProcessEvent) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        match event {
            ProcessEvent::Spawned { pid } => {
                p.pid = Some(pid);
                if p.phase == Phase::Starting {
                    p.phase = Phase::Running;
                }
                if let Some((conn, id)) = p.start_reply.take() {
                    let result = StartResult {
                        process_id: p.id.clone(),
                        sandbox_type: p.sandbox,
                    };
                    let text = rpc::encode_response(&id, &result);
                    self.transmit(conn, text);
                }
            }
            ProcessEvent::SpawnFailed { error } => {
                let reply = p.start_reply.take();
                self.forget(key, false);
                if let Some((conn, id)) = reply {
                    let err = RpcError::new(ErrorCode::Internal, error);
                    self.transmit(conn, rpc::encode_error(&id, &err));
                }
            }
            ProcessEvent::Output { stream, bytes } => {
                if bytes.is_empty() || p.closed_seq.is_some() {
                    return;
                }
                let session = p.session;
                let text = output_frame(&p.id_json, p.peek_seq(), stream, &bytes);
                p.push_output(stream, bytes);
                self.notify(session, text);
                self.wake_reads(key);
            }
            ProcessEvent::Eof { .. } => {
                if !p.eof() {
                    return;
                }
                if p.exit_seq.is_some() {
                    self.try_close(now, key);
                    self.wake_reads(key);
                } else if p.exit.is_some() {
                    // A sandboxed exit held for the grace: no more output can come.
                    self.publish_exit(now, key);
                }
            }
            ProcessEvent::Exited { status } => {
                if p.exit.is_some() {
                    return;
                }
                p.exit = Some(status);
                if p.sandbox != crate::protocol::SandboxType::None
                    && status.code() != 0
                    && !p.all_streams_eof()
                {
                    let deadline = now + self.config.sandbox_grace;
                    p.grace_deadline = Some(deadline);
                    self.timers.insert((deadline, Timer::SandboxGrace(key)));
                } else {
                    self.publish_exit(now, key);
                }
            }
            ProcessEvent::StdinClosed => {
                if p.stdin == Stdin::Open {
                    p.stdin = Stdin::Closed;
                }
            }
        }
    }

    /// Time passed: fire every timer due at `now` (session expiry, long-poll deadlines, the
    /// sandbox grace, forgetting closed processes). Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::SessionExpiry(sid) => {
                    let due = self.sessions.get(&sid).is_some_and(|s| {
                        s.conn.is_none() && s.expires_at.is_some_and(|t| t <= now)
                    });
                    if due {
                        self.expire_session(sid);
                    }
                }
                Timer::ReadDeadline(rid) => {
                    if let Some(read) = self.reads.remove(rid) {
                        self.answer_read(&read);
                    }
                }
                Timer::SandboxGrace(key) => {
                    if self
                        .processes
                        .get(&key)
                        .is_some_and(|p| p.grace_deadline == Some(at))
                    {
                        self.publish_exit(now, key);
                    }
                }
                Timer::Forget(key) => {
                    if self
                        .processes
                        .get(&key)
                        .is_some_and(|p| p.forget_at == Some(at))
                    {
                        self.forget(key, true);
                    }
                }
            }
        }
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

    /// Number of long-poll reads currently held.
    pub fn pending_read_count(&self) -> usize {
        self.reads.len()
    }

    // ----- requests ------------------------------------------------------------------------

    fn handle_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: &RequestId,
        method: &str,
        params: Option<&RawValue>,
    ) -> Reply {
        let phase = self.conns.get(&conn).map_or(ConnPhase::New, |c| c.phase);
        if !KNOWN_METHODS.contains(&method) {
            // Checked before the handshake state, as the reference does.
            return Err(RpcError::new(
                ErrorCode::MethodNotFound,
                format!("method not found: {method}"),
            ));
        }
        match (phase, method) {
            (ConnPhase::New, method::INITIALIZE) => self.initialize(now, conn, params),
            (_, method::INITIALIZE) => Err(RpcError::invalid_request(
                "initialize may only be sent once per connection",
            )),
            (ConnPhase::New, _) => Err(RpcError::invalid_request(
                "client must call initialize before using exec methods",
            )),
            (ConnPhase::Initializing(_), _) => Err(RpcError::invalid_request(
                "client must send initialized before using exec methods",
            )),
            (ConnPhase::Ready(sid), _) => match method {
                method::PROCESS_START => self.start(conn, id, sid, params),
                method::PROCESS_READ => self.read(now, conn, id, sid, params),
                method::PROCESS_WRITE => self.write(sid, params),
                method::PROCESS_TERMINATE => self.terminate(sid, params),
                method::PROCESS_SIGNAL => self.signal(sid, params),
                method::PROCESS_CLOSE_STDIN => self.close_stdin(sid, params),
                method::PROCESS_RESIZE => self.resize(sid, params),
                method::PROCESS_LIST => self.list(sid),
                _ => Err(RpcError::new(
                    ErrorCode::MethodNotFound,
                    format!("method not found: {method}"),
                )),
            },
        }
    }

    fn handle_notification(&mut self, conn: ConnId, method: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match (c.phase, method) {
            (ConnPhase::Initializing(sid), method::INITIALIZED) => c.phase = ConnPhase::Ready(sid),
            (ConnPhase::Ready(_), method::INITIALIZED) => {}
            // `initialized` before `initialize`, or an unknown notification: the reference
            // closes the connection.
            _ => self.close(conn),
        }
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.closing {
                c.closing = true;
                self.out.push_back(Output::Close { conn });
            }
        }
    }

    fn initialize(&mut self, now: Instant, conn: ConnId, params: Option<&RawValue>) -> Reply {
        let params: InitializeParams = rpc::decode_params(params)?;
        let sid = match params.resume_session_id {
            None => {
                let mut bytes = [0u8; 16];
                self.rng.fill_bytes(&mut bytes);
                let sid = SessionId(uuid::Builder::from_random_bytes(bytes).into_uuid());
                self.sessions.insert(sid, Session::new(conn));
                sid
            }
            Some(raw) => {
                let unknown = || RpcError::invalid_request(format!("unknown session id {raw}"));
                let sid = SessionId::parse(&raw).ok_or_else(unknown)?;
                let session = self.sessions.get(&sid).ok_or_else(unknown)?;
                if session.conn.is_some() {
                    return Err(RpcError::new(
                        ErrorCode::SessionAttached,
                        format!("session {raw} is already attached to another connection"),
                    ));
                }
                if session.expires_at.is_some_and(|t| t <= now) {
                    self.expire_session(sid);
                    return Err(unknown());
                }
                let session = self.sessions.get_mut(&sid).ok_or_else(unknown)?;
                session.conn = Some(conn);
                if let Some(at) = session.expires_at.take() {
                    self.timers.remove(&(at, Timer::SessionExpiry(sid)));
                }
                sid
            }
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = ConnPhase::Initializing(sid);
        }
        ok(&InitializeResult {
            session_id: sid.to_string(),
            environment_info: self.config.environment_info.clone(),
            protocol_version: Some(PROTOCOL_VERSION.to_owned()),
            capabilities: Some(Capabilities::all()),
        })
    }

    fn start(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        sid: SessionId,
        params: Option<&RawValue>,
    ) -> Reply {
        let params: StartParams = rpc::decode_params(params)?;
        if params.argv.is_empty() {
            return Err(RpcError::invalid_params("argv must not be empty"));
        }
        let cwd = params
            .cwd
            .to_host_path()
            .map_err(|e| RpcError::invalid_params(format!("invalid cwd: {e}")))?;
        let session = self.sessions.get_mut(&sid).ok_or_else(session_gone)?;
        if session.processes.contains_key(&params.process_id) {
            return Err(RpcError::invalid_request(format!(
                "process {} already exists",
                params.process_id
            )));
        }
        self.next_key += 1;
        let key = ProcessKey(self.next_key);
        session.processes.insert(params.process_id.clone(), key);
        let limits = Limits {
            retained_bytes: self.config.retained_bytes,
            retained_chunks: self.config.retained_chunks,
            write_ids: self.config.write_id_window,
        };
        let sandbox = self.config.sandbox;
        let process = Process::new(
            sid,
            params.process_id,
            params.argv.clone(),
            params.tty,
            params.pipe_stdin,
            sandbox,
            (conn, id.clone()),
            limits,
        );
        self.processes.insert(key, process);
        let spec = SpawnSpec {
            argv: params.argv,
            arg0: params.arg0,
            cwd,
            env: params.env,
            tty: params.tty,
            pipe_stdin: params.pipe_stdin,
            sandbox,
        };
        self.out
            .push_back(Output::Command(Command::Spawn { key, spec }));
        // Answered when the runtime reports Spawned or SpawnFailed.
        Ok(None)
    }

    fn read(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: &RequestId,
        sid: SessionId,
        params: Option<&RawValue>,
    ) -> Reply {
        let params: ReadParams = rpc::decode_params(params)?;
        let key = self.lookup(sid, &params.process_id)?;
        let p = &self.processes[&key];
        if p.phase == Phase::Starting {
            return Err(RpcError::invalid_request(format!(
                "process {} is starting",
                params.process_id
            )));
        }
        let after = Seq(params.after_seq.unwrap_or(0));
        let wait_ms = params.wait_ms.unwrap_or(0);
        if wait_ms == 0 || p.read_ready(after) {
            return ok(&p.read(after, params.max_bytes));
        }
        let wait = std::time::Duration::from_millis(wait_ms).min(self.config.max_read_wait);
        let deadline = now + wait;
        let rid = self.reads.insert(PendingRead {
            conn,
            request: id.clone(),
            key,
            after,
            max_bytes: params.max_bytes,
            deadline,
        });
        self.timers.insert((deadline, Timer::ReadDeadline(rid)));
        Ok(None)
    }

    fn write(&mut self, sid: SessionId, params: Option<&RawValue>) -> Reply {
        let params: WriteParams = rpc::decode_params(params)?;
        if params.write_id.is_empty() {
            return Err(RpcError::invalid_params("writeId must not be empty"));
        }
        let write_id = params.write_id;
        let status = match self.lookup(sid, &params.process_id) {
            Err(_) => WriteStatus::UnknownProcess,
            Ok(key) => {
                let p = self.processes.get_mut(&key).ok_or_else(session_gone)?;
                if p.dedupe.contains(&write_id) {
                    WriteStatus::Accepted
                } else if p.phase == Phase::Starting {
                    WriteStatus::Starting
                } else if p.stdin != Stdin::Open {
                    WriteStatus::StdinClosed
                } else {
                    p.dedupe.remember(write_id);
                    let bytes = params.chunk.0;
                    if !bytes.is_empty() {
                        self.out
                            .push_back(Output::Command(Command::WriteStdin { key, bytes }));
                    }
                    WriteStatus::Accepted
                }
            }
        };
        ok(&WriteResult { status })
    }

    fn terminate(&mut self, sid: SessionId, params: Option<&RawValue>) -> Reply {
        let params: ProcessIdParams = rpc::decode_params(params)?;
        let mut running = false;
        if let Ok(key) = self.lookup(sid, &params.process_id) {
            let p = &self.processes[&key];
            running = p.is_running();
            // Also after the leader's exit: descendants holding the output open are killed too.
            if p.group_alive() {
                self.out.push_back(Output::Command(Command::Kill { key }));
            }
        }
        ok(&TerminateResult { running })
    }

    fn signal(&mut self, sid: SessionId, params: Option<&RawValue>) -> Reply {
        let params: SignalParams = rpc::decode_params(params)?;
        let signal = params
            .signal
            .parse()
            .map_err(|e: crate::protocol::UnknownSignal| RpcError::invalid_params(e.to_string()))?;
        // Unknown and exited processes succeed with `{}`, as in the reference.
        if let Ok(key) = self.lookup(sid, &params.process_id) {
            if self.processes[&key].group_alive() {
                self.out
                    .push_back(Output::Command(Command::Signal { key, signal }));
            }
        }
        ok(&serde_json::json!({}))
    }

    fn close_stdin(&mut self, sid: SessionId, params: Option<&RawValue>) -> Reply {
        let params: ProcessIdParams = rpc::decode_params(params)?;
        let key = self.lookup(sid, &params.process_id)?;
        let p = self.processes.get_mut(&key).ok_or_else(session_gone)?;
        if p.stdin == Stdin::Open {
            p.stdin = Stdin::Closed;
            self.out
                .push_back(Output::Command(Command::CloseStdin { key }));
        }
        ok(&serde_json::json!({}))
    }

    fn resize(&mut self, sid: SessionId, params: Option<&RawValue>) -> Reply {
        let params: ResizeParams = rpc::decode_params(params)?;
        if params.rows == 0 || params.cols == 0 {
            return Err(RpcError::invalid_params("rows and cols must be at least 1"));
        }
        let key = self.lookup(sid, &params.process_id)?;
        if !self.processes[&key].tty {
            return Err(RpcError::invalid_request(format!(
                "process {} has no PTY",
                params.process_id
            )));
        }
        if self.processes[&key].is_running() {
            let (rows, cols) = (params.rows, params.cols);
            self.out
                .push_back(Output::Command(Command::Resize { key, rows, cols }));
        }
        ok(&serde_json::json!({}))
    }

    fn list(&mut self, sid: SessionId) -> Reply {
        let session = self.sessions.get(&sid).ok_or_else(session_gone)?;
        let processes = session
            .processes
            .values()
            .filter_map(|key| self.processes.get(key))
            .map(|p| ProcessInfo {
                process_id: p.id.clone(),
                state: p.state_name().to_owned(),
                pid: p.pid,
                argv: p.argv.clone(),
                exit_code: p.exit_seq.and(p.exit).map(ExitStatus::code),
                tty: p.tty,
            })
            .collect();
        ok(&ListResult { processes })
    }

    // ----- helpers -------------------------------------------------------------------------

    fn lookup(&self, sid: SessionId, process_id: &str) -> Result<ProcessKey, RpcError> {
        self.sessions
            .get(&sid)
            .and_then(|s| s.processes.get(process_id))
            .copied()
            .ok_or_else(|| RpcError::invalid_request(format!("unknown process id {process_id}")))
    }

    fn reply(&mut self, conn: ConnId, id: &RequestId, reply: Reply) {
        let text = match reply {
            Ok(Some(text)) => text_with_id(id, &text),
            Ok(None) => return,
            Err(e) => rpc::encode_error(id, &e),
        };
        self.transmit(conn, text);
    }

    fn transmit(&mut self, conn: ConnId, text: String) {
        if self.conns.get(&conn).is_some_and(|c| !c.closing) {
            self.out.push_back(Output::Transmit { conn, text });
        }
    }

    /// Sends a notification to the connection the session is attached to; dropped while the
    /// session is detached (the state stays readable with `process/read`).
    fn notify(&mut self, sid: SessionId, text: String) {
        if let Some(conn) = self.sessions.get(&sid).and_then(|s| s.conn) {
            self.transmit(conn, text);
        }
    }

    fn publish_exit(&mut self, now: Instant, key: ProcessKey) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        if let Some(at) = p.grace_deadline {
            self.timers.remove(&(at, Timer::SandboxGrace(key)));
        }
        let Some(seq) = p.publish_exit() else { return };
        let status = p.exit.unwrap_or(ExitStatus::Code(-1));
        let exited = ExitedNotification {
            process_id: p.id.clone(),
            seq: seq.0,
            exit_code: status.code(),
            sandbox_denied: p.sandbox_denied,
            exit_signal: match status {
                ExitStatus::Signal(n) => Some(
                    crate::protocol::signal_name(n)
                        .map_or_else(|| format!("SIG{n}"), str::to_owned),
                ),
                ExitStatus::Code(_) => None,
            },
        };
        let session = p.session;
        self.notify(
            session,
            rpc::encode_notification(method::PROCESS_EXITED, &exited),
        );
        self.try_close(now, key);
        self.wake_reads(key);
    }

    fn try_close(&mut self, now: Instant, key: ProcessKey) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        let Some(seq) = p.try_close() else { return };
        let forget_at = now + self.config.closed_retention;
        p.forget_at = Some(forget_at);
        self.timers.insert((forget_at, Timer::Forget(key)));
        let closed = ClosedNotification {
            process_id: p.id.clone(),
            seq: seq.0,
        };
        let session = p.session;
        self.notify(
            session,
            rpc::encode_notification(method::PROCESS_CLOSED, &closed),
        );
    }

    /// Answers every long poll on `key` that now has something to return.
    fn wake_reads(&mut self, key: ProcessKey) {
        for rid in self.reads.for_process(key) {
            let ready = match (self.reads.get(rid), self.processes.get(&key)) {
                (Some(read), Some(p)) => p.read_ready(read.after),
                _ => false,
            };
            if ready {
                if let Some(read) = self.reads.remove(rid) {
                    self.timers
                        .remove(&(read.deadline, Timer::ReadDeadline(rid)));
                    self.answer_read(&read);
                }
            }
        }
    }

    fn answer_read(&mut self, read: &PendingRead) {
        let reply = match self.processes.get(&read.key) {
            Some(p) => ok(&p.read(read.after, read.max_bytes)),
            None => Err(RpcError::invalid_request(
                "process was forgotten while the read waited",
            )),
        };
        self.reply(read.conn, &read.request, reply);
    }

    /// Kills and forgets every process of a detached session whose TTL ran out.
    fn expire_session(&mut self, sid: SessionId) {
        let Some(session) = self.sessions.remove(&sid) else {
            return;
        };
        for key in session.processes.into_values() {
            if self.processes.get(&key).is_some_and(Process::group_alive) {
                self.out.push_back(Output::Command(Command::Kill { key }));
            }
            self.forget(key, true);
        }
    }

    /// Removes a process entry, its session index entry and its pending reads.
    fn forget(&mut self, key: ProcessKey, release: bool) {
        let Some(p) = self.processes.remove(&key) else {
            return;
        };
        if let Some(session) = self.sessions.get_mut(&p.session) {
            if session.processes.get(&p.id) == Some(&key) {
                session.processes.remove(&p.id);
            }
        }
        for rid in self.reads.for_process(key) {
            if let Some(read) = self.reads.remove(rid) {
                self.timers
                    .remove(&(read.deadline, Timer::ReadDeadline(rid)));
                self.answer_read(&read);
            }
        }
        if release {
            self.out
                .push_back(Output::Command(Command::Release { key }));
        }
    }
}

fn ok<T: Serialize>(value: &T) -> Reply {
    serde_json::to_string(value)
        .map(Some)
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("failed to encode result: {e}")))
}

fn session_gone() -> RpcError {
    RpcError::invalid_request("session is gone")
}

/// Wraps an already-encoded result object as a response.
fn text_with_id(id: &RequestId, result_json: &str) -> String {
    // A RequestId serializes to a JSON integer or string; neither can fail.
    let id_json = serde_json::to_string(id).unwrap_or_else(|_| "-1".to_owned());
    let mut text = String::with_capacity(result_json.len() + id_json.len() + 16);
    text.push_str("{\"id\":");
    text.push_str(&id_json);
    text.push_str(",\"result\":");
    text.push_str(result_json);
    text.push('}');
    text
}

/// Encodes a `process/output` notification straight into one buffer (the hot path).
fn output_frame(id_json: &str, seq: Seq, stream: Stream, bytes: &[u8]) -> String {
    let b64_len = bytes.len().div_ceil(3) * 4;
    let mut text = String::with_capacity(96 + id_json.len() + b64_len);
    text.push_str("{\"method\":\"process/output\",\"params\":{\"processId\":");
    text.push_str(id_json);
    let _ = write!(
        text,
        ",\"seq\":{},\"stream\":\"{}\",\"chunk\":\"",
        seq.0,
        stream.as_str()
    );
    // SIMD base64: this encode is the largest cost of streaming output.
    base64_simd::STANDARD.encode_append(bytes, &mut text);
    text.push_str("\"}}");
    text
}

#[cfg(test)]
mod tests;
