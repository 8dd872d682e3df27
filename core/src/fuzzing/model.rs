//! The reference model of the server, run in lock step with [`Server`](crate::Server).
//!
//! The model is a plain, unoptimised restatement of the protocol rules (PROTOCOL.md): it keeps
//! every connection, session and process as simple values, and for every step predicts the
//! exact frames (responses by `(conn, id)`, notifications per process in order), the commands
//! and the closes the server must produce. Any difference is a finding. The exact comparison
//! subsumes the invariants the target is named for: seq contiguous per process while attached,
//! `exited` once before `closed`, `closed` last and once, no notification for an unknown
//! process, every request answered at most once, spawn specs matching accepted starts, accepted
//! write ids reaching `WriteStdin` once, sessions expiring exactly at their TTL, and read
//! results in seq order after `afterSeq`. On top of that, after every step the server's entry
//! counts must match and [`Server::poll_timeout`](crate::Server::poll_timeout) must not lie past the model's next deadline.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::ops::{process_id, ConfigChoice, Ev, Op, Req, Resume, ServerOps, SIGNALS};
use crate::client::ClientConfig;
use crate::ids::{ConnId, ProcessKey};
use crate::protocol::{
    ListResult, ProcessInfo, ReadChunk, ReadResult, SandboxType, Signal, Stream,
};
use crate::rpc::{self, Inbound, RequestId};
use crate::server::{Command, ExitStatus, Output, ProcessEvent, ServerConfig, SpawnSpec};
use crate::sim::Sim;

/// Longest operation sequence run (longer inputs are cut).
const MAX_OPS: usize = 512;
/// Most connections open at once.
const MAX_CONNS: usize = 6;
/// The `max_read_wait` of the model config.
const MAX_READ_WAIT: Duration = Duration::from_secs(5);
const SANDBOX_GRACE: Duration = Duration::from_millis(20);

/// What a run exercised, to tell a shallow generator from a deep one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Steps that reached the server.
    pub steps: usize,
    /// Responses compared.
    pub responses: usize,
    /// Notifications compared.
    pub notifications: usize,
    /// Commands compared (spawns included).
    pub commands: usize,
}

pub(crate) fn check(ops: &ServerOps) -> ModelStats {
    let mut h = Harness::new(config(ops.config));
    for (i, op) in ops.ops.iter().take(MAX_OPS).enumerate() {
        h.step(op).unwrap_or_else(|e| {
            panic!(
                "step {i} {op:?}: {e}\nconfig: {:?}\nops: {:?}",
                ops.config,
                &ops.ops[..=i]
            )
        });
    }
    h.model.stats
}

fn config(c: ConfigChoice) -> ServerConfig {
    ServerConfig {
        session_ttl: Duration::from_millis(100 * (1 + u64::from(c.ttl_units % 64))),
        closed_retention: Duration::from_millis(100 * (1 + u64::from(c.retention_units % 64))),
        retained_bytes: 1 + usize::from(c.retained_bytes),
        retained_chunks: 1 + usize::from(c.retained_chunks % 16),
        write_id_window: 1 + usize::from(c.write_window % 8),
        max_read_wait: MAX_READ_WAIT,
        sandbox: if c.sandboxed {
            SandboxType::LinuxLandlock
        } else {
            SandboxType::None
        },
        sandbox_grace: SANDBOX_GRACE,
        // The model does not report bytes written: no connection may congest.
        congestion_high_bytes: usize::MAX,
        congestion_low_bytes: usize::MAX,
        max_inflight_requests: usize::MAX,
        ..ServerConfig::default()
    }
}

/// The shared [`Sim`] (its server and clock; the model checks every raw output batch itself,
/// so nothing is pumped) in lock step with the model.
struct Harness {
    sim: Sim,
    model: Model,
}

impl Harness {
    fn new(cfg: ServerConfig) -> Self {
        let sim = Sim::with(cfg.clone(), ClientConfig::default());
        let now = sim.now;
        Harness {
            sim,
            model: Model {
                cfg,
                now,
                conns: BTreeMap::new(),
                sessions: Vec::new(),
                procs: BTreeMap::new(),
                spawned: Vec::new(),
                reads: Vec::new(),
                next_id: 0,
                step: Step::default(),
                stats: ModelStats::default(),
            },
        }
    }

    fn pick_conn(&self, n: u8) -> Option<ConnId> {
        let conns: Vec<ConnId> = self.model.conns.keys().copied().collect();
        (!conns.is_empty()).then(|| conns[usize::from(n) % conns.len()])
    }

    fn step(&mut self, op: &Op) -> Result<(), String> {
        self.model.step = Step::default();
        let now = self.model.now;
        match op {
            Op::Connect => {
                if self.model.conns.len() >= MAX_CONNS {
                    return Ok(());
                }
                let conn = self.sim.server.handle_connect(now);
                if self.model.conns.contains_key(&conn) {
                    return Err(format!("connection id {conn} reused"));
                }
                self.model.conns.insert(conn, MConn::default());
            }
            Op::Disconnect(n) => {
                let Some(conn) = self.pick_conn(*n) else {
                    return Ok(());
                };
                self.sim
                    .server
                    .handle_disconnect(now, conn)
                    .map_err(|e| e.to_string())?;
                self.model.disconnect(conn);
            }
            Op::Send {
                conn,
                req,
                string_id,
            } => {
                let Some(conn) = self.pick_conn(*conn) else {
                    return Ok(());
                };
                let text = self.model.request(conn, req, *string_id);
                self.sim
                    .server
                    .handle_message(now, conn, text.as_bytes())
                    .map_err(|e| e.to_string())?;
            }
            Op::Garbage { conn, bytes } => {
                let Some(conn) = self.pick_conn(*conn) else {
                    return Ok(());
                };
                if !self.model.garbage(conn, &bytes.0) {
                    return Ok(());
                }
                self.sim
                    .server
                    .handle_message(now, conn, &bytes.0)
                    .map_err(|e| e.to_string())?;
            }
            Op::Event { proc, event } => {
                if self.model.spawned.is_empty() {
                    return Ok(());
                }
                let key = self.model.spawned[usize::from(*proc) % self.model.spawned.len()];
                let event = match event {
                    Ev::Spawned(pid) => ProcessEvent::Spawned {
                        pid: u32::from(*pid),
                    },
                    Ev::SpawnFailed => ProcessEvent::SpawnFailed {
                        kind: crate::server::SpawnErrorKind::NotFound,
                        error: "No such file or directory (os error 2)".to_owned(),
                    },
                    Ev::Output(stream, bytes) => ProcessEvent::Output {
                        stream: stream_of(*stream),
                        bytes: bytes.0.clone(),
                    },
                    Ev::Eof(stream) => ProcessEvent::Eof {
                        stream: stream_of(*stream),
                    },
                    Ev::ExitedCode(code) => ProcessEvent::Exited {
                        status: ExitStatus::Code(*code),
                    },
                    Ev::ExitedSignal(n) => ProcessEvent::Exited {
                        status: ExitStatus::Signal(1 + i32::from(*n % 64)),
                    },
                    Ev::StdinClosed => ProcessEvent::StdinClosed,
                };
                self.sim.server.handle_process(now, key, event.clone());
                self.model.event(key, event);
            }
            Op::AdvanceMs(ms) => {
                let later = now + Duration::from_millis(u64::from(*ms));
                self.sim.now = later;
                self.sim.server.handle_timeout(later);
                self.model.advance(later);
            }
            Op::AdvanceToTimer => {
                let later = self.sim.server.poll_timeout().map_or(now, |t| t.max(now));
                self.sim.now = later;
                self.sim.server.handle_timeout(later);
                self.model.advance(later);
            }
        }
        let mut outputs = Vec::new();
        while let Some(out) = self.sim.server.poll_output() {
            outputs.push(out);
        }
        self.model.verify(outputs)?;
        self.check_counts()
    }

    fn check_counts(&self) -> Result<(), String> {
        let m = &self.model;
        let alive = m.sessions.iter().filter(|s| s.alive).count();
        if self.sim.server.session_count() != alive {
            return Err(format!(
                "server has {} sessions, model {alive}",
                self.sim.server.session_count()
            ));
        }
        if self.sim.server.process_count() != m.procs.len() {
            return Err(format!(
                "server has {} processes, model {}",
                self.sim.server.process_count(),
                m.procs.len()
            ));
        }
        if self.sim.server.pending_read_count() != m.reads.len() {
            return Err(format!(
                "server holds {} long polls, model {}",
                self.sim.server.pending_read_count(),
                m.reads.len()
            ));
        }
        if let Some(due) = m.next_deadline() {
            match self.sim.server.poll_timeout() {
                Some(t) if t <= due => {}
                other => {
                    return Err(format!(
                        "poll_timeout {:?} is past the model's next deadline {:?}",
                        other.map(|t| t - m.now),
                        due - m.now
                    ))
                }
            }
        }
        Ok(())
    }
}

fn stream_of(n: u8) -> Stream {
    [Stream::Stdout, Stream::Stderr, Stream::Pty][usize::from(n % 3)]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    New,
    Initializing(usize),
    Ready(usize),
}

#[derive(Debug, Clone, Copy)]
struct MConn {
    phase: Phase,
    closing: bool,
    /// When a closed connection is dropped (the close grace).
    drop_at: Option<Instant>,
}

impl Default for MConn {
    fn default() -> Self {
        MConn {
            phase: Phase::New,
            closing: false,
            drop_at: None,
        }
    }
}

#[derive(Debug)]
struct MSession {
    /// Learned from the `initialize` response.
    sid: String,
    alive: bool,
    conn: Option<ConnId>,
    expires_at: Option<Instant>,
    procs: BTreeMap<String, ProcessKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stdin {
    Null,
    Open,
    Closed,
}

#[derive(Debug)]
struct MProc {
    session: usize,
    id: String,
    argv: Vec<String>,
    tty: bool,
    starting: bool,
    pid: Option<u32>,
    stdin: Stdin,
    start_reply: Option<(ConnId, Value)>,
    next_seq: u64,
    /// Retained output: (seq, stream, bytes), with the server's eviction rule.
    log: VecDeque<(u64, Stream, Vec<u8>)>,
    log_bytes: usize,
    evicted_through: u64,
    last_output_seq: u64,
    open_streams: u8,
    exit: Option<ExitStatus>,
    exit_seq: Option<u64>,
    closed_seq: Option<u64>,
    grace_until: Option<Instant>,
    denied: bool,
    writes: VecDeque<String>,
    forget_at: Option<Instant>,
}

impl MProc {
    fn running(&self) -> bool {
        self.exit.is_none()
    }

    /// Signals and kills go to the process group until the close (descendants may hold the
    /// output open after the leader's exit).
    fn group_alive(&self) -> bool {
        self.closed_seq.is_none()
    }

    fn ready(&self, after: u64) -> bool {
        self.last_output_seq > after
            || self.exit_seq.is_some_and(|s| s > after)
            || self.closed_seq.is_some()
    }

    fn state(&self) -> &'static str {
        if self.closed_seq.is_some() {
            "closed"
        } else if self.exit_seq.is_some() {
            "exited"
        } else if self.starting {
            "starting"
        } else {
            "running"
        }
    }

    fn exit_code(&self) -> Option<i32> {
        self.exit_seq.and(self.exit).map(ExitStatus::code)
    }

    fn read(&self, after: u64, max_bytes: Option<u64>) -> Value {
        let mut chunks: Vec<ReadChunk> = Vec::new();
        let mut used = 0u64;
        let mut truncated = false;
        for (seq, stream, bytes) in self.log.iter().filter(|c| c.0 > after) {
            let len = bytes.len() as u64;
            if max_bytes.is_some_and(|b| !chunks.is_empty() && used + len > b) {
                truncated = true;
                break;
            }
            used += len;
            chunks.push(ReadChunk {
                seq: *seq,
                stream: *stream,
                chunk: bytes.clone().into(),
            });
        }
        let next_seq = match chunks.last() {
            Some(last) if truncated => last.seq + 1,
            _ => self.next_seq,
        };
        let (first_retained_seq, lost_chunks) = if self.evicted_through > after {
            let exit_lost = self
                .exit_seq
                .is_some_and(|s| s > after && s <= self.evicted_through);
            (
                Some(self.log.front().map_or(self.next_seq, |c| c.0)),
                self.evicted_through - after - u64::from(exit_lost),
            )
        } else {
            (None, 0)
        };
        serde_json::to_value(ReadResult {
            chunks,
            next_seq,
            exited: self.exit_seq.is_some(),
            exit_code: self.exit_code(),
            closed: self.closed_seq.is_some(),
            failure: None,
            sandbox_denied: self.denied,
            first_retained_seq,
            lost_chunks,
        })
        .expect("encodes")
    }
}

#[derive(Debug)]
struct MRead {
    conn: ConnId,
    id: Value,
    key: ProcessKey,
    after: u64,
    max_bytes: Option<u64>,
    deadline: Instant,
}

/// What the current step must produce.
#[derive(Debug, Default)]
struct Step {
    responses: Vec<(ConnId, Value, Body)>,
    notifications: Vec<(ConnId, Value)>,
    commands: Vec<Command>,
    closes: Vec<ConnId>,
    drops: Vec<ConnId>,
    /// An accepted start: the process entry, waiting for the key of its `Spawn`.
    spawn: Option<(MProc, SpawnSpec)>,
}

#[derive(Debug)]
enum Body {
    Result(Value),
    Error(i64),
    NewSession(usize),
    Resumed(usize),
}

struct Model {
    cfg: ServerConfig,
    now: Instant,
    conns: BTreeMap<ConnId, MConn>,
    sessions: Vec<MSession>,
    procs: BTreeMap<ProcessKey, MProc>,
    /// Every key ever spawned, in order (events may target forgotten ones).
    spawned: Vec<ProcessKey>,
    /// Long polls, in arrival order.
    reads: Vec<MRead>,
    next_id: i64,
    step: Step,
    stats: ModelStats,
}

const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL: i64 = -32603;
const SESSION_ATTACHED: i64 = -32010;

impl Model {
    // ----- inputs ------------------------------------------------------------------------

    fn disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.reads.retain(|r| r.conn != conn);
        if let Phase::Initializing(s) | Phase::Ready(s) = c.phase {
            let session = &mut self.sessions[s];
            if session.conn == Some(conn) {
                session.conn = None;
                session.expires_at = Some(self.now + self.cfg.session_ttl);
            }
        }
    }

    /// Builds the frame for `req` on `conn` and records what the server must answer.
    fn request(&mut self, conn: ConnId, req: &Req, string_id: bool) -> String {
        self.next_id += 1;
        let id = if string_id {
            json!(format!("r{}", self.next_id))
        } else {
            json!(self.next_id)
        };
        let (method, params) = self.frame_of(req);
        let c = self.conns[&conn];
        let is_notification = matches!(req, Req::Initialized | Req::UnknownNotification);
        let text = if is_notification {
            json!({"method": method, "params": params}).to_string()
        } else {
            json!({"id": id, "method": method, "params": params}).to_string()
        };
        if c.closing {
            return text;
        }
        if is_notification {
            match (c.phase, req) {
                (Phase::Initializing(s), Req::Initialized) => {
                    self.conns.insert(
                        conn,
                        MConn {
                            phase: Phase::Ready(s),
                            ..MConn::default()
                        },
                    );
                }
                (Phase::Ready(_), Req::Initialized) => {}
                _ => self.close(conn),
            }
            return text;
        }
        let body = match (c.phase, req) {
            // Unknown methods are checked before the handshake state.
            (_, Req::UnknownMethod) => Some(Body::Error(METHOD_NOT_FOUND)),
            (Phase::New, Req::Initialize(resume)) => self.initialize(conn, *resume),
            (_, Req::Initialize(_)) | (Phase::New | Phase::Initializing(_), _) => {
                Some(Body::Error(INVALID_REQUEST))
            }
            (Phase::Ready(s), req) => self.ready_request(conn, &id, s, req),
        };
        if let Some(body) = body {
            self.step.responses.push((conn, id, body));
        }
        text
    }

    fn frame_of(&self, req: &Req) -> (&'static str, Value) {
        match req {
            Req::Initialize(resume) => {
                let resume = match resume {
                    Resume::New => None,
                    Resume::Known(n) if !self.sessions.is_empty() => Some(
                        self.sessions[usize::from(*n) % self.sessions.len()]
                            .sid
                            .clone(),
                    ),
                    Resume::Known(_) => Some("6c9f1d1e-7a8b-4c2d-9e0f-112233445566".to_owned()),
                    Resume::Random(bytes) => Some(
                        uuid::Builder::from_random_bytes(*bytes)
                            .into_uuid()
                            .to_string(),
                    ),
                    Resume::Malformed => Some("not-a-session".to_owned()),
                };
                let mut p = json!({"clientName": "model"});
                if let Some(r) = resume {
                    p["resumeSessionId"] = json!(r);
                }
                ("initialize", p)
            }
            Req::Initialized => ("initialized", json!({})),
            Req::Start {
                id,
                empty_argv,
                cwd,
                tty,
                pipe_stdin,
            } => {
                let argv: Vec<&str> = if *empty_argv {
                    vec![]
                } else {
                    vec!["sh", "-c", "x"]
                };
                let cwd = match cwd {
                    0 => "file:///tmp".to_owned(),
                    1 => "file://server/share".to_owned(),
                    2 => "/tmp".to_owned(),
                    n => format!("file:///w/{n}"),
                };
                (
                    "process/start",
                    json!({"processId": process_id(*id), "argv": argv, "cwd": cwd,
                           "env": {"K": "V"}, "tty": tty, "pipeStdin": pipe_stdin}),
                )
            }
            Req::Read {
                id,
                after_seq,
                max_bytes,
                wait_ms,
            } => {
                let mut p = json!({"processId": process_id(*id)});
                if let Some(a) = after_seq {
                    p["afterSeq"] = json!(a);
                }
                if let Some(m) = max_bytes {
                    p["maxBytes"] = json!(m);
                }
                if let Some(w) = wait_ms {
                    p["waitMs"] = json!(w);
                }
                ("process/read", p)
            }
            Req::Write { id, write_id, data } => {
                let chunk = base64::engine::general_purpose::STANDARD.encode(&data.0);
                let mut p = json!({"processId": process_id(*id), "chunk": chunk});
                match write_id {
                    0 => {}
                    1 => p["writeId"] = json!(""),
                    n => p["writeId"] = json!(format!("w{}", n % 8)),
                }
                ("process/write", p)
            }
            Req::Terminate(id) => ("process/terminate", json!({"processId": process_id(*id)})),
            Req::Signal(id, sig) => (
                "process/signal",
                json!({"processId": process_id(*id),
                       "signal": SIGNALS[usize::from(*sig) % SIGNALS.len()]}),
            ),
            Req::CloseStdin(id) => ("process/closeStdin", json!({"processId": process_id(*id)})),
            Req::Resize(id, rows, cols) => (
                "process/resize",
                json!({"processId": process_id(*id), "rows": rows % 4, "cols": cols % 4}),
            ),
            Req::List => ("process/list", json!({})),
            Req::UnknownMethod => ("process/bogus", json!({})),
            Req::UnknownNotification => ("bogus/notification", json!({})),
        }
    }

    fn initialize(&mut self, conn: ConnId, resume: Resume) -> Option<Body> {
        let target = match resume {
            Resume::New => None,
            Resume::Known(n) if !self.sessions.is_empty() => {
                Some(usize::from(n) % self.sessions.len())
            }
            Resume::Random(bytes) => {
                let sid = uuid::Builder::from_random_bytes(bytes)
                    .into_uuid()
                    .to_string();
                match self.sessions.iter().position(|s| s.sid == sid) {
                    Some(i) => Some(i),
                    None => return Some(Body::Error(INVALID_REQUEST)),
                }
            }
            Resume::Known(_) | Resume::Malformed => return Some(Body::Error(INVALID_REQUEST)),
        };
        let s = match target {
            None => {
                self.sessions.push(MSession {
                    sid: String::new(),
                    alive: true,
                    conn: Some(conn),
                    expires_at: None,
                    procs: BTreeMap::new(),
                });
                self.sessions.len() - 1
            }
            Some(s) => {
                let session = &self.sessions[s];
                if !session.alive {
                    return Some(Body::Error(INVALID_REQUEST));
                }
                if session.conn.is_some() {
                    return Some(Body::Error(SESSION_ATTACHED));
                }
                if session.expires_at.is_some_and(|t| t <= self.now) {
                    self.expire(s);
                    return Some(Body::Error(INVALID_REQUEST));
                }
                let session = &mut self.sessions[s];
                session.conn = Some(conn);
                session.expires_at = None;
                s
            }
        };
        self.conns.insert(
            conn,
            MConn {
                phase: Phase::Initializing(s),
                ..MConn::default()
            },
        );
        Some(match target {
            None => Body::NewSession(s),
            Some(_) => Body::Resumed(s),
        })
    }

    fn lookup(&self, s: usize, id: &str) -> Option<ProcessKey> {
        self.sessions[s].procs.get(id).copied()
    }

    fn ready_request(&mut self, conn: ConnId, id: &Value, s: usize, req: &Req) -> Option<Body> {
        let ok = |v: Value| Some(Body::Result(v));
        let err = |code: i64| Some(Body::Error(code));
        match req {
            Req::Initialize(_)
            | Req::Initialized
            | Req::UnknownNotification
            | Req::UnknownMethod => {
                unreachable!("handled by the caller")
            }
            Req::Start {
                id: pid,
                empty_argv,
                cwd,
                tty,
                pipe_stdin,
            } => {
                let pid = process_id(*pid);
                if *cwd == 2 || *empty_argv || *cwd == 1 {
                    return err(INVALID_PARAMS);
                }
                if self.lookup(s, pid).is_some() {
                    return err(INVALID_REQUEST);
                }
                let cwd = match cwd {
                    0 => PathBuf::from("/tmp"),
                    n => PathBuf::from(format!("/w/{n}")),
                };
                let argv: Vec<String> = ["sh", "-c", "x"].map(String::from).to_vec();
                let spec = SpawnSpec {
                    argv: argv.clone(),
                    arg0: None,
                    cwd,
                    env: [("K".to_owned(), "V".to_owned())].into(),
                    tty: *tty,
                    pty_size: self.cfg.pty_size,
                    pipe_stdin: *pipe_stdin,
                    sandbox: self.cfg.sandbox,
                    sandbox_policy: None,
                };
                let proc = MProc {
                    session: s,
                    id: pid.to_owned(),
                    argv,
                    tty: *tty,
                    starting: true,
                    pid: None,
                    stdin: if *tty || *pipe_stdin {
                        Stdin::Open
                    } else {
                        Stdin::Null
                    },
                    start_reply: Some((conn, id.clone())),
                    next_seq: 1,
                    log: VecDeque::new(),
                    log_bytes: 0,
                    evicted_through: 0,
                    last_output_seq: 0,
                    open_streams: if *tty { 1 } else { 2 },
                    exit: None,
                    exit_seq: None,
                    closed_seq: None,
                    grace_until: None,
                    denied: false,
                    writes: VecDeque::new(),
                    forget_at: None,
                };
                self.step.spawn = Some((proc, spec));
                None
            }
            Req::Read {
                id: pid,
                after_seq,
                max_bytes,
                wait_ms,
            } => {
                let Some(key) = self.lookup(s, process_id(*pid)) else {
                    return err(INVALID_REQUEST);
                };
                let p = &self.procs[&key];
                if p.starting {
                    return err(INVALID_REQUEST);
                }
                let after = after_seq.map_or(0, u64::from);
                let max_bytes = max_bytes.map(u64::from);
                let wait = wait_ms.unwrap_or(0);
                if wait == 0 || p.ready(after) {
                    return ok(p.read(after, max_bytes));
                }
                let wait = Duration::from_millis(u64::from(wait)).min(MAX_READ_WAIT);
                self.reads.push(MRead {
                    conn,
                    id: id.clone(),
                    key,
                    after,
                    max_bytes,
                    deadline: self.now + wait,
                });
                None
            }
            Req::Write {
                id: pid,
                write_id,
                data,
            } => {
                if *write_id < 2 {
                    return err(INVALID_PARAMS);
                }
                let wid = format!("w{}", write_id % 8);
                let window = self.cfg.write_id_window;
                let Some(key) = self.lookup(s, process_id(*pid)) else {
                    return ok(json!({"status": "unknownProcess"}));
                };
                let p = self.procs.get_mut(&key).expect("indexed");
                let status = if p.writes.contains(&wid) {
                    "accepted"
                } else if p.stdin != Stdin::Open {
                    "stdinClosed"
                } else {
                    p.writes.push_back(wid);
                    if p.writes.len() > window {
                        p.writes.pop_front();
                    }
                    let bytes = data.0.clone();
                    if !bytes.is_empty() {
                        self.step.commands.push(Command::WriteStdin { key, bytes });
                    }
                    "accepted"
                };
                ok(json!({ "status": status }))
            }
            Req::Terminate(pid) => {
                let mut running = false;
                if let Some(key) = self.lookup(s, process_id(*pid)) {
                    let p = &self.procs[&key];
                    running = p.running();
                    self.step.commands.push(Command::Kill { key });
                }
                ok(json!({ "running": running }))
            }
            Req::Signal(pid, sig) => {
                let Ok(signal) = SIGNALS[usize::from(*sig) % SIGNALS.len()].parse::<Signal>()
                else {
                    return err(INVALID_PARAMS);
                };
                // Unknown processes succeed too.
                if let Some(key) = self.lookup(s, process_id(*pid)) {
                    if self.procs[&key].group_alive() {
                        self.step.commands.push(Command::Signal { key, signal });
                    }
                }
                ok(json!({}))
            }
            Req::CloseStdin(pid) => {
                let Some(key) = self.lookup(s, process_id(*pid)) else {
                    return err(INVALID_REQUEST);
                };
                let p = self.procs.get_mut(&key).expect("indexed");
                if p.stdin == Stdin::Open {
                    p.stdin = Stdin::Closed;
                    self.step.commands.push(Command::CloseStdin { key });
                }
                ok(json!({}))
            }
            Req::Resize(pid, rows, cols) => {
                let (rows, cols) = (rows % 4, cols % 4);
                if rows == 0 || cols == 0 {
                    return err(INVALID_PARAMS);
                }
                let Some(key) = self.lookup(s, process_id(*pid)) else {
                    return err(INVALID_REQUEST);
                };
                let p = &self.procs[&key];
                if !p.tty {
                    return err(INVALID_REQUEST);
                }
                if p.running() {
                    self.step.commands.push(Command::Resize { key, rows, cols });
                }
                ok(json!({}))
            }
            Req::List => {
                let processes = self.sessions[s]
                    .procs
                    .values()
                    .map(|key| {
                        let p = &self.procs[key];
                        ProcessInfo {
                            process_id: p.id.clone(),
                            state: p.state().to_owned(),
                            pid: p.pid,
                            argv: p.argv.clone(),
                            exit_code: p.exit_code(),
                            tty: p.tty,
                        }
                    })
                    .collect();
                ok(serde_json::to_value(ListResult { processes }).expect("encodes"))
            }
        }
    }

    /// Records the expected answer to a garbage frame; `false` when the frame decodes as a
    /// request or notification (the grammar covers those; the op is skipped).
    fn garbage(&mut self, conn: ConnId, bytes: &[u8]) -> bool {
        let closing = self.conns[&conn].closing;
        if closing {
            return true;
        }
        let reply = if bytes.len() > self.cfg.max_frame_bytes
            || rpc::exceeds_value_budget(bytes, self.cfg.max_json_values)
        {
            Some(RequestId::UNREADABLE)
        } else {
            match rpc::decode(bytes) {
                Err(e) => Some(e.id.unwrap_or(RequestId::UNREADABLE)),
                Ok(Inbound::Request { .. } | Inbound::Notification { .. }) => return false,
                Ok(_) => {
                    // A response from the client is a protocol violation: close.
                    self.close(conn);
                    None
                }
            }
        };
        if let Some(id) = reply {
            let id = serde_json::to_value(id).expect("encodes");
            self.step
                .responses
                .push((conn, id, Body::Error(INVALID_REQUEST)));
        }
        true
    }

    fn event(&mut self, key: ProcessKey, event: ProcessEvent) {
        let now = self.now;
        let sandboxed = self.cfg.sandbox != SandboxType::None;
        let Some(p) = self.procs.get_mut(&key) else {
            return;
        };
        match event {
            ProcessEvent::Spawned { pid } => {
                p.pid = Some(pid);
                p.starting = false;
                if let Some((conn, id)) = p.start_reply.take() {
                    let result =
                        json!({"processId": p.id, "sandboxType": self.cfg.sandbox.as_str()});
                    self.respond(conn, id, Body::Result(result));
                }
            }
            ProcessEvent::SpawnFailed { .. } => {
                let reply = p.start_reply.take();
                self.forget(key, false);
                if let Some((conn, id)) = reply {
                    self.respond(conn, id, Body::Error(INTERNAL));
                }
            }
            ProcessEvent::Output { stream, bytes } => {
                if bytes.is_empty() || p.closed_seq.is_some() {
                    return;
                }
                let seq = p.next_seq;
                p.next_seq += 1;
                p.last_output_seq = seq;
                p.log_bytes += bytes.len();
                let note = json!({"method": "process/output", "params": {
                    "processId": p.id, "seq": seq, "stream": stream.as_str(),
                    "chunk": base64::engine::general_purpose::STANDARD.encode(&bytes)}});
                p.log.push_back((seq, stream, bytes));
                let max_chunks = self.cfg.retained_chunks.max(1);
                while p.log.len() > 1
                    && (p.log_bytes > self.cfg.retained_bytes || p.log.len() > max_chunks)
                {
                    let (seq, _, old) = p.log.pop_front().expect("non-empty");
                    p.log_bytes -= old.len();
                    p.evicted_through = seq;
                }
                let s = p.session;
                self.notify(s, note);
                self.wake_reads(key);
            }
            ProcessEvent::Eof { .. } => {
                p.open_streams = p.open_streams.saturating_sub(1);
                if p.open_streams > 0 {
                    return;
                }
                if p.exit_seq.is_some() {
                    self.try_close(key);
                    self.wake_reads(key);
                } else if p.exit.is_some() {
                    self.publish_exit(key);
                }
            }
            ProcessEvent::Exited { status } => {
                if p.exit.is_some() {
                    return;
                }
                p.exit = Some(status);
                if sandboxed && status.code() != 0 && p.open_streams > 0 {
                    p.grace_until = Some(now + self.cfg.sandbox_grace);
                } else {
                    self.publish_exit(key);
                }
            }
            ProcessEvent::StdinClosed => {
                if p.stdin == Stdin::Open {
                    p.stdin = Stdin::Closed;
                }
            }
            // The model's writes are far below the stdin queue bound.
            ProcessEvent::StdinWritten { .. } => {}
        }
    }

    /// Fires every deadline due at `later`, in the server's order: by time, then session
    /// expiry, long-poll deadline, sandbox grace, forget.
    fn advance(&mut self, later: Instant) {
        self.now = later;
        loop {
            let mut due: Vec<(Instant, u8, String, usize)> = Vec::new();
            for (i, s) in self.sessions.iter().enumerate() {
                if let (true, None, Some(t)) = (s.alive, s.conn, s.expires_at) {
                    due.push((t, 0, s.sid.clone(), i));
                }
            }
            for (i, r) in self.reads.iter().enumerate() {
                due.push((r.deadline, 1, String::new(), i));
            }
            for (key, p) in &self.procs {
                if let Some(t) = p.grace_until {
                    due.push((t, 2, format!("{:020}", key.0), 0));
                }
                if let Some(t) = p.forget_at {
                    due.push((t, 3, format!("{:020}", key.0), 0));
                }
            }
            for (conn, c) in &self.conns {
                if let Some(t) = c.drop_at {
                    due.push((t, 5, format!("{:020}", conn.0), 0));
                }
            }
            let Some((at, kind, name, index)) = due.into_iter().filter(|d| d.0 <= later).min()
            else {
                break;
            };
            match kind {
                0 => self.expire(index),
                1 => {
                    let r = self.reads.remove(index);
                    let body = Body::Result(self.procs[&r.key].read(r.after, r.max_bytes));
                    self.respond(r.conn, r.id, body);
                }
                5 => {
                    let conn = ConnId(name.parse().expect("formatted above"));
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.drop_at = None;
                    }
                    self.step.drops.push(conn);
                }
                2 | 3 => {
                    let key = ProcessKey(name.parse().expect("formatted above"));
                    if kind == 2 {
                        self.publish_exit(key);
                    } else {
                        self.forget(key, true);
                    }
                }
                _ => unreachable!(),
            }
            let _ = at;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .sessions
            .iter()
            .filter(|s| s.alive && s.conn.is_none())
            .filter_map(|s| s.expires_at);
        let reads = self.reads.iter().map(|r| r.deadline);
        let procs = self
            .procs
            .values()
            .flat_map(|p| [p.grace_until, p.forget_at])
            .flatten();
        let drops = self.conns.values().filter_map(|c| c.drop_at);
        sessions.chain(reads).chain(procs).chain(drops).min()
    }

    // ----- effects -----------------------------------------------------------------------

    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.closing {
                c.closing = true;
                c.drop_at = Some(self.now + self.cfg.close_grace);
                self.step.closes.push(conn);
            }
        }
    }

    fn deliverable(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| !c.closing)
    }

    fn respond(&mut self, conn: ConnId, id: Value, body: Body) {
        if self.deliverable(conn) {
            self.step.responses.push((conn, id, body));
        }
    }

    fn notify(&mut self, s: usize, note: Value) {
        if let Some(conn) = self.sessions[s].conn {
            if self.deliverable(conn) {
                self.step.notifications.push((conn, note));
            }
        }
    }

    fn publish_exit(&mut self, key: ProcessKey) {
        let sandboxed = self.cfg.sandbox != SandboxType::None;
        let Some(p) = self.procs.get_mut(&key) else {
            return;
        };
        p.grace_until = None;
        let Some(status) = p.exit else { return };
        if p.exit_seq.is_some() {
            return;
        }
        if sandboxed {
            p.denied = crate::denial::is_sandbox_denied(
                status.code(),
                p.log.iter().map(|c| c.2.as_slice()),
            );
        }
        let seq = p.next_seq;
        p.next_seq += 1;
        p.exit_seq = Some(seq);
        // An exit reported before the spawn result ends the starting phase too.
        p.starting = false;
        if p.stdin == Stdin::Open {
            p.stdin = Stdin::Closed;
        }
        let mut params = json!({"processId": p.id, "seq": seq, "exitCode": status.code(),
                                "sandboxDenied": p.denied});
        if let ExitStatus::Signal(n) = status {
            params["exitSignal"] =
                json!(crate::protocol::signal_name(n)
                    .map_or_else(|| format!("SIG{n}"), str::to_owned));
        }
        let s = p.session;
        self.notify(s, json!({"method": "process/exited", "params": params}));
        self.try_close(key);
        self.wake_reads(key);
    }

    fn try_close(&mut self, key: ProcessKey) {
        let retention = self.cfg.closed_retention;
        let now = self.now;
        let Some(p) = self.procs.get_mut(&key) else {
            return;
        };
        if p.exit_seq.is_none() || p.open_streams > 0 || p.closed_seq.is_some() {
            return;
        }
        let seq = p.next_seq;
        p.next_seq += 1;
        p.closed_seq = Some(seq);
        p.forget_at = Some(now + retention);
        let note = json!({"method": "process/closed", "params": {"processId": p.id, "seq": seq}});
        let s = p.session;
        self.notify(s, note);
    }

    fn wake_reads(&mut self, key: ProcessKey) {
        let mut i = 0;
        while i < self.reads.len() {
            let r = &self.reads[i];
            if r.key == key && self.procs[&key].ready(r.after) {
                let r = self.reads.remove(i);
                let body = Body::Result(self.procs[&key].read(r.after, r.max_bytes));
                self.respond(r.conn, r.id, body);
            } else {
                i += 1;
            }
        }
    }

    fn expire(&mut self, s: usize) {
        self.sessions[s].alive = false;
        let procs = std::mem::take(&mut self.sessions[s].procs);
        for key in procs.into_values() {
            if self.procs.contains_key(&key) {
                self.step.commands.push(Command::Kill { key });
            }
            self.forget(key, true);
        }
    }

    fn forget(&mut self, key: ProcessKey, release: bool) {
        let Some(p) = self.procs.remove(&key) else {
            return;
        };
        let session = &mut self.sessions[p.session];
        if session.procs.get(&p.id) == Some(&key) {
            session.procs.remove(&p.id);
        }
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].key == key {
                let r = self.reads.remove(i);
                self.respond(r.conn, r.id, Body::Error(INVALID_REQUEST));
            } else {
                i += 1;
            }
        }
        if release {
            self.step.commands.push(Command::Release { key });
        }
    }

    // ----- comparison --------------------------------------------------------------------

    fn verify(&mut self, outputs: Vec<Output>) -> Result<(), String> {
        let step = std::mem::take(&mut self.step);
        self.stats.steps += 1;
        self.stats.responses += step.responses.len();
        self.stats.notifications += step.notifications.len();
        self.stats.commands += step.commands.len() + usize::from(step.spawn.is_some());
        let mut notifications = Vec::new();
        let mut responses = Vec::new();
        let mut commands = Vec::new();
        let mut closes = Vec::new();
        let mut drops = Vec::new();
        let mut spawns = Vec::new();
        for out in outputs {
            match out {
                Output::Transmit { conn, text } => {
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|e| format!("invalid JSON sent ({e}): {text}"))?;
                    if v.get("method").is_some() {
                        notifications.push((conn, v));
                    } else if let Some(id) = v.get("id") {
                        responses.push((conn, id.clone(), v));
                    } else {
                        return Err(format!(
                            "frame is neither response nor notification: {text}"
                        ));
                    }
                }
                Output::TransmitBinary { conn, .. } => {
                    // The model's connections never negotiate binary frames.
                    return Err(format!("binary frame sent on {conn} without negotiation"));
                }
                Output::Close { conn } => closes.push(conn),
                Output::Drop { conn } => drops.push(conn),
                Output::Command(Command::Spawn { key, spec }) => spawns.push((key, spec)),
                Output::Command(c) => commands.push(c),
            }
        }

        // Notifications: per (conn, process) in order.
        let group = |v: &[(ConnId, Value)]| {
            let mut g: BTreeMap<(ConnId, String), Vec<Value>> = BTreeMap::new();
            for (conn, n) in v {
                let pid = n["params"]["processId"].as_str().unwrap_or("").to_owned();
                g.entry((*conn, pid)).or_default().push(n.clone());
            }
            g
        };
        if group(&notifications) != group(&step.notifications) {
            return Err(format!(
                "notifications differ\n  server: {notifications:?}\n  model:  {:?}",
                step.notifications
            ));
        }

        // Responses: matched by (conn, id), each exactly once.
        let mut expected = step.responses;
        for (conn, id, frame) in responses {
            let Some(i) = expected.iter().position(|e| e.0 == conn && e.1 == id) else {
                return Err(format!("unexpected response on {conn}: {frame}"));
            };
            let (_, _, body) = expected.remove(i);
            self.check_body(&frame, body)?;
        }
        if !expected.is_empty() {
            return Err(format!("missing responses: {expected:?}"));
        }

        if closes != step.closes {
            return Err(format!(
                "closes: server {closes:?}, model {:?}",
                step.closes
            ));
        }
        if drops != step.drops {
            return Err(format!("drops: server {drops:?}, model {:?}", step.drops));
        }

        let sorted = |v: &[Command]| {
            let mut s: Vec<String> = v.iter().map(|c| format!("{c:?}")).collect();
            s.sort();
            s
        };
        if sorted(&commands) != sorted(&step.commands) {
            return Err(format!(
                "commands differ\n  server: {commands:?}\n  model:  {:?}",
                step.commands
            ));
        }

        match (step.spawn, spawns.as_slice()) {
            (None, []) => {}
            (Some((proc, spec)), [(key, actual)]) => {
                if *actual != spec {
                    return Err(format!("spawn spec {actual:?}, model {spec:?}"));
                }
                if self.spawned.contains(key) {
                    return Err(format!("process key {key} reused"));
                }
                self.spawned.push(*key);
                self.sessions[proc.session]
                    .procs
                    .insert(proc.id.clone(), *key);
                self.procs.insert(*key, proc);
            }
            (model, server) => {
                return Err(format!("spawns: server {server:?}, model {model:?}"));
            }
        }
        Ok(())
    }

    fn check_body(&mut self, frame: &Value, body: Body) -> Result<(), String> {
        let result = frame.get("result");
        match body {
            Body::Error(code) => {
                if frame["error"]["code"] != json!(code) {
                    return Err(format!("expected error {code}, got {frame}"));
                }
            }
            Body::Result(want) => {
                if result != Some(&want) {
                    return Err(format!("expected result {want}, got {frame}"));
                }
            }
            Body::NewSession(s) => {
                let sid = result
                    .and_then(|r| r["sessionId"].as_str())
                    .ok_or_else(|| format!("expected a session id, got {frame}"))?;
                let uuid = uuid::Uuid::parse_str(sid).map_err(|e| format!("{sid}: {e}"))?;
                if uuid.get_version_num() != 4 || uuid.hyphenated().to_string() != sid {
                    return Err(format!("session id {sid} is not a lower-case UUID v4"));
                }
                if self.sessions.iter().any(|x| x.sid == sid) {
                    return Err(format!("session id {sid} reused"));
                }
                self.sessions[s].sid = sid.to_owned();
            }
            Body::Resumed(s) => {
                let sid = result.and_then(|r| r["sessionId"].as_str());
                if sid != Some(self.sessions[s].sid.as_str()) {
                    return Err(format!(
                        "resume of {} answered {frame}",
                        self.sessions[s].sid
                    ));
                }
            }
        }
        Ok(())
    }
}
