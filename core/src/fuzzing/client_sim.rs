//! The `client_ops` harness: the real [`Client`] against the real [`Server`] in memory, with a
//! simulated clock, a network that delivers, delays and loses frames only when an operation
//! says so, and fake children that answer the server's commands. What the client must deliver
//! is checked by [`Expect`] after every step; see [`check`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client_child::FakeProc;
use super::client_expect::{CallKind, Expect, World};
use super::client_hostile::{self, Material};
use super::client_ops::{
    pool_id, Call, ChildAct, ClientConfigChoice, ClientOp, ClientOps, Hostile,
};
use crate::client::{Client, ClientConfig, ClientError, ClientEvent};
use crate::ids::{ConnId, ProcessKey};
use crate::protocol::{PathUri, StartParams, Stream};
use crate::server::{Command, ExitStatus, Output, ProcessEvent, Server, ServerConfig};

/// Longest operation sequence run (longer inputs are cut).
const MAX_OPS: usize = 384;
/// Most frames one `Settle` (or the final heal) delivers before calling it a livelock.
const SETTLE_LIMIT: usize = 20_000;
/// Server frames remembered for [`Hostile::Replay`].
const HISTORY: usize = 32;

/// What a run exercised, to tell a shallow generator from a deep one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Operations run.
    pub steps: usize,
    /// Calls the client accepted.
    pub calls: usize,
    /// `Response` events.
    pub responses: usize,
    /// `Output` events.
    pub outputs: usize,
    /// `Closed` events.
    pub closes: usize,
    /// `Gap` events.
    pub gaps: usize,
    /// `ProcessLost` events.
    pub lost: usize,
    /// Sessions resumed (`Connected { resumed: true }`).
    pub resumes: usize,
    /// `-32010` answers the client received.
    pub attached_races: usize,
    /// Writes that reached a child.
    pub writes_reached: usize,
    /// Lossless output: times the server held a child at its window (`PauseOutput`), and
    /// outputs a held child could not write (it is blocked).
    pub holds: usize,
    /// See [`holds`](Self::holds).
    pub blocked_writes: usize,
    /// Whether a hostile frame made the run skip the content checks.
    pub tainted: bool,
    /// Why the session was lost, if it was.
    pub session_lost: Option<&'static str>,
    /// The step during which it was lost.
    pub lost_at_step: Option<usize>,
}

/// Runs `ops` and panics on the first broken invariant (with the step and the operations).
pub(crate) fn check(ops: &ClientOps) -> ClientStats {
    match run(ops, false) {
        (Ok(stats), _) => stats,
        (Err(e), _) => panic!("{e}"),
    }
}

/// Runs `ops` with a log of every step, frame and event; returns the log and the finding.
pub(crate) fn trace(ops: &ClientOps) -> (Result<ClientStats, String>, Vec<String>) {
    run(ops, true)
}

fn run(ops: &ClientOps, trace: bool) -> (Result<ClientStats, String>, Vec<String>) {
    let mut sim = Sim::new(ops.config);
    if trace {
        sim.trace = Some(Vec::new());
    }
    let n = ops.ops.len().min(MAX_OPS);
    for (i, op) in ops.ops[..n].iter().enumerate() {
        sim.log(|| format!("--- step {i}: {op:?}"));
        if let Err(e) = sim.step(op) {
            let e = format!(
                "step {i} {op:?}: {e}\nconfig: {:?}\nops: {:?}",
                ops.config,
                &ops.ops[..=i]
            );
            return (Err(e), sim.trace.unwrap_or_default());
        }
    }
    sim.log(|| "--- finish".to_owned());
    if let Err(e) = sim.finish() {
        let e = format!(
            "after the last step: {e}\nconfig: {:?}\nops: {:?}",
            ops.config,
            &ops.ops[..n]
        );
        return (Err(e), sim.trace.unwrap_or_default());
    }
    sim.stats.tainted = sim.expect.tainted;
    sim.stats.session_lost = sim.expect.lost_reason;
    (Ok(sim.stats), sim.trace.unwrap_or_default())
}

/// The world: both machines, the network between them, the children and the checker.
pub(crate) struct Sim {
    now: Instant,
    cfg: ClientConfigChoice,
    limits: (usize, usize),
    server: Server,
    client: Client,
    /// The server connection the client's transport reaches, while it is up.
    link: Option<ConnId>,
    /// Connections whose client side dropped without the server noticing yet, with the
    /// frames still on their way to the server (it reads them before it notices).
    stale: Vec<(ConnId, VecDeque<String>)>,
    c2s: VecDeque<String>,
    /// Frames to the client, with the process entry a notification came from.
    s2c: VecDeque<(String, Option<ProcessKey>)>,
    /// Frames the client already handled, for replays.
    history: VecDeque<(String, Option<ProcessKey>)>,
    procs: BTreeMap<ProcessKey, FakeProc>,
    /// Every key ever spawned, in order.
    spawned: Vec<ProcessKey>,
    /// Spawns not answered yet (with `hold_spawns`).
    held: Vec<ProcessKey>,
    /// The client asked for a transport and has not been answered.
    reconnect_wanted: bool,
    /// The next automatic answer to `Reconnect` is a failure.
    fail_next_connect: bool,
    /// Counts starts, to tag their spawn specs.
    next_tag: u64,
    /// Request ids of every frame the client sent, for forged responses.
    sent_ids: Vec<i64>,
    /// writeId → call id.
    write_ids: BTreeMap<String, i64>,
    /// The write call whose frame the server is handling.
    delivering_write: Option<i64>,
    pub(crate) expect: Expect,
    pub(crate) stats: ClientStats,
    /// The log of a traced run.
    trace: Option<Vec<String>>,
}

impl Sim {
    pub(crate) fn new(cfg: ClientConfigChoice) -> Self {
        let mut server_config = ServerConfig {
            session_ttl: cfg.session_ttl(),
            closed_retention: cfg.closed_retention(),
            // The harness does not report bytes written: no connection may congest.
            congestion_high_bytes: usize::MAX,
            congestion_low_bytes: usize::MAX,
            ..ServerConfig::default()
        };
        if let Some(n) = cfg.retained_chunks() {
            server_config.retained_chunks = n;
        }
        if let Some(n) = cfg.retained_bytes() {
            server_config.retained_bytes = n;
        }
        let limits = (server_config.retained_bytes, server_config.retained_chunks);
        let client_config = ClientConfig {
            client_name: "fuzz".to_owned(),
            recovery: cfg.recovery(),
            recovery_window: cfg.recovery_window(),
            backoff_initial: cfg.backoff_initial(),
            backoff_max: cfg.backoff_max(),
            close_retention: cfg.closed_retention(),
            recovery_read_bytes: cfg.recovery_read_bytes(),
            binary_frames: false,
            max_result_bytes: 1 << 30,
            lossless_output: cfg.lossless(),
            acknowledge_output: true,
        };
        let now = Instant::now();
        let mut sim = Sim {
            now,
            cfg,
            limits,
            server: Server::new(server_config, [5; 32]),
            client: Client::new(client_config, [0x5a; 16]),
            link: None,
            stale: Vec::new(),
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            history: VecDeque::new(),
            procs: BTreeMap::new(),
            spawned: Vec::new(),
            held: Vec::new(),
            reconnect_wanted: true,
            fail_next_connect: false,
            next_tag: 0,
            sent_ids: Vec::new(),
            write_ids: BTreeMap::new(),
            delivering_write: None,
            expect: Expect::new(cfg.recovery(), cfg.recovery_window(), now),
            stats: ClientStats::default(),
            trace: None,
        };
        if !cfg.manual_connect() {
            sim.answer_reconnect(true);
        }
        sim
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(line());
        }
    }

    pub(crate) fn step(&mut self, op: &ClientOp) -> Result<(), String> {
        self.stats.steps += 1;
        match op {
            ClientOp::Start {
                pid,
                tty,
                pipe_stdin,
            } => self.start(*pid, *tty, *pipe_stdin)?,
            ClientOp::StartTracked(n) => self.start_tracked(*n)?,
            ClientOp::Write { pid, bytes } => {
                let pid = pool_id(*pid);
                let r = self.client.write(self.now, &pid, bytes.0.clone());
                self.accepted_call(r, CallKind::Write(pid, bytes.0.clone()))?;
            }
            ClientOp::Call(call) => self.call(*call)?,
            ClientOp::CloseClient => {
                self.expect.closing_locally = true;
                self.client.close();
                // The runtime drops the transport.
                if let Some(conn) = self.link.take() {
                    self.c2s.clear();
                    self.s2c.clear();
                    self.server
                        .handle_disconnect(self.now, conn)
                        .map_err(|e| e.to_string())?;
                }
            }
            ClientOp::Child { proc, act } => self.child(*proc, act),
            ClientOp::SpawnResult { which, fail } => self.spawn_result(*which, *fail)?,
            ClientOp::ToServer(n) => {
                for _ in 0..=(n % 8) {
                    self.deliver_c2s()?;
                }
            }
            ClientOp::ToClient(n) => {
                for _ in 0..=(n % 8) {
                    self.deliver_s2c()?;
                }
            }
            ClientOp::Settle => self.settle()?,
            ClientOp::Drop { server_notices } => self.drop_link(*server_notices)?,
            ClientOp::NoticeDrops => self.notice_drops()?,
            ClientOp::Reconnect { ok } => {
                if self.cfg.manual_connect() {
                    self.answer_reconnect(*ok);
                } else if !*ok {
                    self.fail_next_connect = true;
                }
            }
            ClientOp::Advance(n) => {
                let n = u64::from(*n);
                self.advance(Duration::from_millis(n * n / 26))?;
            }
            ClientOp::AdvanceToClientTimer => {
                if let Some(at) = self.client.poll_timeout() {
                    self.advance(at.saturating_duration_since(self.now))?;
                }
            }
            ClientOp::AdvanceToServerTimer => {
                if let Some(at) = self.server.poll_timeout() {
                    self.advance(at.saturating_duration_since(self.now))?;
                }
            }
            ClientOp::Hostile(h) => self.hostile(h)?,
        }
        self.pump()?;
        self.check_consistency()
    }

    /// The final heal: the server notices every drop, transports open on request, spawns are
    /// answered, frames are delivered and time runs to the next timer until both sides are
    /// quiet; then every child finishes and the same runs again.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        self.heal()?;
        self.check_consistency()?;
        self.expect.check_drained(&self.world(), &self.client)?;
        let keys: Vec<ProcessKey> = self.spawned.clone();
        for key in keys {
            self.finish_child(key, ExitStatus::Code(0));
        }
        self.pump()?;
        self.heal()?;
        self.check_consistency()?;
        self.expect.check_end(&self.world(), &self.client)
    }

    // ----- client calls ------------------------------------------------------------------

    fn start(&mut self, n: u8, tty: bool, pipe_stdin: bool) -> Result<(), String> {
        let free = (0..super::client_ops::POOL as u8)
            .map(|i| pool_id(n.wrapping_add(i)))
            .find(|pid| {
                self.client.last_seq(pid).is_none()
                    && !self.procs.values().any(|p| p.pid == *pid && p.held())
                    && self.expect.may_reuse(pid)
            });
        let Some(pid) = free else {
            return Ok(());
        };
        self.start_call(pid, tty, pipe_stdin, true)
    }

    fn start_tracked(&mut self, n: u8) -> Result<(), String> {
        let tracked = (0..super::client_ops::POOL as u8)
            .map(|i| pool_id(n.wrapping_add(i)))
            .find(|pid| self.client.last_seq(pid).is_some());
        match tracked {
            Some(pid) => self.start_call(pid, false, true, false),
            None => Ok(()),
        }
    }

    fn start_call(
        &mut self,
        pid: String,
        tty: bool,
        pipe_stdin: bool,
        fresh: bool,
    ) -> Result<(), String> {
        self.next_tag += 1;
        let tag = format!("s{}", self.next_tag);
        let params = StartParams {
            process_id: pid.clone(),
            argv: vec!["fake".to_owned(), pid.clone(), tag.clone()],
            cwd: PathUri::parse("file:///tmp").expect("valid"),
            env: BTreeMap::new(),
            tty,
            pipe_stdin,
            arg0: None,
            env_policy: None,
            sandbox: None,
            enforce_managed_network: false,
        };
        let r = self.client.start(self.now, params);
        let id = self.accepted_call(r, CallKind::Start { pid, tag, fresh })?;
        if let (Some(id), false) = (id, fresh) {
            self.pump()?;
            if !self.expect.answered(id) {
                return Err(format!(
                    "start {id} of a tracked id was not refused at once"
                ));
            }
        }
        Ok(())
    }

    fn call(&mut self, call: Call) -> Result<(), String> {
        let (method, params) = match call {
            Call::Read {
                pid,
                after_seq,
                wait,
            } => {
                let mut p = json!({ "processId": pool_id(pid) });
                // With lossless output an `afterSeq` acknowledges: a user read past what the
                // client delivered would (rightly) let the server evict undelivered output.
                if let Some(a) = after_seq.filter(|_| !self.cfg.lossless()) {
                    p["afterSeq"] = json!(a);
                }
                if let Some(w) = wait {
                    p["waitMs"] = json!(u64::from(w) * 10);
                }
                ("process/read", p)
            }
            Call::Terminate(pid) => ("process/terminate", json!({ "processId": pool_id(pid) })),
            Call::Signal(pid, s) => {
                let signal = ["SIGTERM", "interrupt", "SIGBOGUS"][usize::from(s % 3)];
                (
                    "process/signal",
                    json!({ "processId": pool_id(pid), "signal": signal }),
                )
            }
            Call::CloseStdin(pid) => ("process/closeStdin", json!({ "processId": pool_id(pid) })),
            Call::Resize(pid) => (
                "process/resize",
                json!({ "processId": pool_id(pid), "rows": 30, "cols": 100 }),
            ),
            Call::List => ("process/list", Value::Null),
            Call::Unknown => ("environmentConfig/read", json!({})),
        };
        let r = self.client.call(self.now, method, params);
        let kind = if method == "process/read" {
            CallKind::Read
        } else {
            CallKind::Other(method)
        };
        self.accepted_call(r, kind).map(|_| ())
    }

    /// Records a call the client accepted (and returns its id); a refusal must mean closed.
    fn accepted_call(
        &mut self,
        r: Result<crate::RequestId, ClientError>,
        kind: CallKind,
    ) -> Result<Option<i64>, String> {
        match r {
            Ok(crate::RequestId::Int(id)) => {
                if self.client.is_closed() {
                    return Err(format!("a closed client accepted call {id}"));
                }
                self.stats.calls += 1;
                self.expect.on_call(id, kind).map(|()| Some(id))
            }
            Ok(other) => Err(format!("the client made a non-integer id {other}")),
            Err(ClientError::Closed) if self.client.is_closed() => Ok(None),
            Err(e) => Err(format!("call refused: {e}")),
        }
    }

    // ----- children ----------------------------------------------------------------------

    fn child(&mut self, n: u8, act: &ChildAct) {
        if self.spawned.is_empty() {
            return;
        }
        let key = self.spawned[usize::from(n) % self.spawned.len()];
        match act {
            ChildAct::Output(s, bytes) => {
                let stream = self.stream_of(key, *s);
                self.child_output(key, stream, &bytes.0);
            }
            ChildAct::Eof(s) => {
                let stream = self.stream_of(key, *s);
                self.child_eof(key, stream);
            }
            ChildAct::Exit(code) => self.child_exit(key, ExitStatus::Code(i32::from(*code))),
            ChildAct::Finish(code) => self.finish_child(key, ExitStatus::Code(i32::from(*code))),
            ChildAct::StdinGone => {
                if self.procs[&key].live() {
                    self.server
                        .handle_process(self.now, key, ProcessEvent::StdinClosed);
                }
            }
        }
    }

    fn stream_of(&self, key: ProcessKey, n: u8) -> Stream {
        if self.procs[&key].tty {
            Stream::Pty
        } else if n % 2 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        }
    }

    fn child_output(&mut self, key: ProcessKey, stream: Stream, bytes: &[u8]) {
        // With lossless output nothing is evicted before the client acknowledged it, and the
        // client acknowledges only what it delivered (user reads carry no `afterSeq` then):
        // the mirror never evicts, so any `Gap` fails the checks.
        let limits = if self.cfg.lossless() {
            (usize::MAX, usize::MAX)
        } else {
            self.limits
        };
        let p = self.procs.get_mut(&key).expect("spawned key");
        if !p.live() || bytes.is_empty() || !p.open.contains(&stream) {
            return;
        }
        if p.paused {
            // Held at the window: the child is blocked in `write`; this output never happens.
            self.stats.blocked_writes += 1;
            return;
        }
        p.publish_output(stream, bytes, limits);
        let ev = ProcessEvent::Output {
            stream,
            bytes: bytes.to_vec(),
        };
        self.server.handle_process(self.now, key, ev);
    }

    fn child_eof(&mut self, key: ProcessKey, stream: Stream) {
        let p = self.procs.get_mut(&key).expect("spawned key");
        if !p.live() || !p.open.contains(&stream) {
            return;
        }
        p.open.retain(|s| *s != stream);
        p.try_close();
        self.server
            .handle_process(self.now, key, ProcessEvent::Eof { stream });
    }

    fn child_exit(&mut self, key: ProcessKey, status: ExitStatus) {
        let p = self.procs.get_mut(&key).expect("spawned key");
        if !p.live() || p.exited {
            return;
        }
        p.exited = true;
        p.publish_exit(status.code());
        self.server
            .handle_process(self.now, key, ProcessEvent::Exited { status });
    }

    /// The child exits (unless it did) and every output stream reaches EOF.
    fn finish_child(&mut self, key: ProcessKey, status: ExitStatus) {
        let p = self.procs.get_mut(&key).expect("spawned key");
        if !p.spawned && p.held() {
            p.pending_finish.get_or_insert(status);
            return;
        }
        self.child_exit(key, status);
        for stream in self.procs[&key].open.clone() {
            self.child_eof(key, stream);
        }
    }

    /// The bytes of write `call` reach the stdin of `key`'s child (`cat`), in the order the
    /// writes were made.
    fn stdin_reached(&mut self, key: ProcessKey, call: i64, bytes: &[u8]) -> Result<(), String> {
        let p = self.procs.get_mut(&key).expect("spawned key");
        if p.stdin_calls.last().is_some_and(|&last| last >= call) {
            return Err(format!(
                "write {call} reached {} after write {:?}",
                p.pid, p.stdin_calls
            ));
        }
        p.stdin_calls.push(call);
        self.stats.writes_reached += 1;
        self.expect.on_write_reached(call, key, bytes)?;
        // The child is `cat`: it echoes what it reads.
        let stream = if p.tty { Stream::Pty } else { Stream::Stdout };
        self.child_output(key, stream, bytes);
        Ok(())
    }

    fn spawn_result(&mut self, which: u8, fail: bool) -> Result<(), String> {
        if self.held.is_empty() {
            return Ok(());
        }
        let key = self.held.remove(usize::from(which) % self.held.len());
        self.answer_spawn(key, fail)
    }

    fn answer_spawn(&mut self, key: ProcessKey, fail: bool) -> Result<(), String> {
        let p = self.procs.get_mut(&key).expect("spawned key");
        if p.released || fail {
            // Writes queued for a child that never runs are dropped.
            for (call, _) in std::mem::take(&mut p.pending_stdin) {
                self.expect.on_write_dropped(call);
            }
        }
        let p = self.procs.get_mut(&key).expect("spawned key");
        if p.released {
            return Ok(());
        }
        if fail {
            p.failed = true;
            let error = "No such file or directory (os error 2)".to_owned();
            self.server.handle_process(
                self.now,
                key,
                ProcessEvent::SpawnFailed {
                    kind: crate::server::SpawnErrorKind::NotFound,
                    error,
                },
            );
            return Ok(());
        }
        p.spawned = true;
        let pending = p.pending_finish.take();
        let stdin = std::mem::take(&mut p.pending_stdin);
        self.server
            .handle_process(self.now, key, ProcessEvent::Spawned { pid: 4242 });
        // Writes queued during the spawn reach the child first, then a stdin close or
        // signal that came meanwhile.
        for (call, bytes) in stdin {
            self.stdin_reached(key, call, &bytes)?;
        }
        if let Some(status) = pending {
            self.finish_child(key, status);
        }
        Ok(())
    }

    // ----- the server's outputs ----------------------------------------------------------

    /// Moves what each side produced into the network and the children, until nothing moves.
    fn pump(&mut self) -> Result<(), String> {
        loop {
            let mut moved = false;
            while let Some(text) = self.client.poll_transmit() {
                moved = true;
                self.on_client_frame(text)?;
            }
            while let Some(ev) = self.client.poll_event() {
                moved = true;
                self.on_client_event(ev)?;
            }
            let mut batch = Vec::new();
            while let Some(out) = self.server.poll_output() {
                batch.push(out);
            }
            if !batch.is_empty() {
                moved = true;
                self.on_server_outputs(batch)?;
            }
            if !moved {
                return Ok(());
            }
        }
    }

    fn on_client_frame(&mut self, text: String) -> Result<(), String> {
        self.log(|| format!("client sends {text}"));
        if self.link.is_none() {
            return Err(format!(
                "the client sent a frame without a transport: {text}"
            ));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("the client sent invalid JSON ({e}): {text}"))?;
        let method = v["method"]
            .as_str()
            .ok_or_else(|| format!("the client sent a frame without a method: {text}"))?;
        if let Some(id) = v["id"].as_i64() {
            self.sent_ids.push(id);
            if method == "process/write" {
                if let Some(w) = v["params"]["writeId"].as_str() {
                    self.write_ids.entry(w.to_owned()).or_insert(id);
                }
            }
            self.expect.on_sent(id)?;
        }
        self.c2s.push_back(text);
        Ok(())
    }

    fn on_client_event(&mut self, ev: ClientEvent) -> Result<(), String> {
        self.log(|| format!("client event {ev:?}"));
        match &ev {
            ClientEvent::Reconnect => {
                if !self.cfg.recovery() {
                    return Err("Reconnect with recovery off".to_owned());
                }
                if self.link.is_some() {
                    return Err("Reconnect while the transport is up".to_owned());
                }
                self.reconnect_wanted = true;
                if !self.cfg.manual_connect() {
                    let ok = !std::mem::take(&mut self.fail_next_connect);
                    self.answer_reconnect(ok);
                }
                return Ok(());
            }
            ClientEvent::Response { .. } => self.stats.responses += 1,
            ClientEvent::Output { .. } => self.stats.outputs += 1,
            ClientEvent::Closed { .. } => self.stats.closes += 1,
            ClientEvent::Gap { .. } => self.stats.gaps += 1,
            ClientEvent::ProcessLost { .. } => self.stats.lost += 1,
            ClientEvent::Connected { resumed: true, .. } => self.stats.resumes += 1,
            _ => {}
        }
        if matches!(ev, ClientEvent::SessionLost { .. }) {
            self.stats.lost_at_step = Some(self.stats.steps);
        }
        let world = World {
            now: self.now,
            procs: &self.procs,
        };
        self.expect.on_event(ev, &world)
    }

    fn world(&self) -> World<'_> {
        World {
            now: self.now,
            procs: &self.procs,
        }
    }

    fn on_server_outputs(&mut self, batch: Vec<Output>) -> Result<(), String> {
        // The server forgot these before any command of the batch reaches a child.
        for out in &batch {
            if let Output::Command(Command::Release { key }) = out {
                if let Some(p) = self.procs.get_mut(key) {
                    p.released = true;
                }
            }
        }
        for out in batch {
            match out {
                Output::Transmit { conn, text } => {
                    if Some(conn) == self.link {
                        let key = self.source_of(&text);
                        self.s2c.push_back((text, key));
                    }
                }
                Output::Close { conn } => {
                    if Some(conn) == self.link {
                        if !self.expect.tainted {
                            return Err("the server closed the client's connection".to_owned());
                        }
                        self.drop_link(true)?;
                    } else {
                        self.stale.retain(|(c, _)| *c != conn);
                        self.server.handle_disconnect(self.now, conn).ok();
                    }
                }
                Output::TransmitBinary { conn, .. } => {
                    // No connection here negotiates binary frames.
                    return Err(format!("binary frame sent on {conn} without negotiation"));
                }
                Output::Drop { conn } => {
                    if Some(conn) == self.link {
                        return Err("the server dropped the client's connection".to_owned());
                    }
                    self.stale.retain(|(c, _)| *c != conn);
                    self.server.handle_disconnect(self.now, conn).ok();
                }
                Output::Command(cmd) => self.command(cmd)?,
            }
        }
        Ok(())
    }

    /// The process entry a notification frame came from (the one live entry with its id).
    fn source_of(&self, text: &str) -> Option<ProcessKey> {
        if !text.starts_with(r#"{"method":"process/"#) {
            return None;
        }
        let v: Value = serde_json::from_str(text).ok()?;
        let pid = v["params"]["processId"].as_str()?;
        self.procs
            .iter()
            .find(|(_, p)| p.pid == pid && p.held())
            .map(|(k, _)| *k)
    }

    fn command(&mut self, cmd: Command) -> Result<(), String> {
        self.log(|| format!("server command {cmd:?}"));
        match cmd {
            Command::Spawn { key, spec } => {
                let pid = spec.argv.get(1).cloned().unwrap_or_default();
                let tag = spec.argv.get(2).cloned().unwrap_or_default();
                if self.procs.contains_key(&key) {
                    return Err(format!("process key {key:?} spawned twice"));
                }
                self.procs.insert(key, FakeProc::new(pid.clone(), spec.tty));
                self.spawned.push(key);
                self.expect.on_spawn(&tag, &pid, key, &self.procs)?;
                if self.cfg.hold_spawns() {
                    self.held.push(key);
                } else {
                    self.answer_spawn(key, false)?;
                }
            }
            Command::WriteStdin { key, bytes } => {
                let Some(call) = self.delivering_write else {
                    return Err(format!("WriteStdin {bytes:?} outside a write request"));
                };
                let p = self.procs.get_mut(&key).expect("spawned key");
                if !p.spawned && p.held() {
                    // As the runtime: queued until the child runs, dropped if it never does.
                    p.pending_stdin.push((call, bytes));
                    return Ok(());
                }
                self.stdin_reached(key, call, &bytes)?;
            }
            // `cat` exits at stdin EOF; the signals sent here all end it.
            Command::CloseStdin { key } => self.finish_child(key, ExitStatus::Code(0)),
            Command::Signal { key, signal } => {
                self.finish_child(key, ExitStatus::Signal(signal.number()));
            }
            Command::Kill { key } => self.finish_child(key, ExitStatus::Signal(9)),
            Command::PauseOutput { key } => self.set_paused(key, true),
            Command::ResumeOutput { key } => self.set_paused(key, false),
            _ => {}
        }
        Ok(())
    }

    /// The server paused or resumed reading the child's output (congestion cannot happen
    /// here, so only a lossless hold does it).
    fn set_paused(&mut self, key: ProcessKey, paused: bool) {
        if let Some(p) = self.procs.get_mut(&key) {
            if paused && !p.paused {
                self.stats.holds += 1;
            }
            p.paused = paused;
        }
    }

    // ----- the network -------------------------------------------------------------------

    fn answer_reconnect(&mut self, ok: bool) {
        if !self.reconnect_wanted {
            return;
        }
        self.reconnect_wanted = false;
        if self.client.is_closed() {
            return;
        }
        self.log(|| format!("transport opens: {ok}"));
        if ok {
            let conn = self.server.handle_connect(self.now);
            self.link = Some(conn);
            self.client.handle_connected(self.now);
        } else {
            if self.cfg.recovery() {
                self.expect.outage(self.now);
            }
            self.client.handle_connect_failed(self.now);
        }
    }

    fn deliver_c2s(&mut self) -> Result<bool, String> {
        let (Some(conn), Some(text)) = (self.link, self.c2s.pop_front()) else {
            return Ok(false);
        };
        self.deliver_to(conn, &text).map(|()| true)
    }

    fn deliver_to(&mut self, conn: ConnId, text: &str) -> Result<(), String> {
        if text.contains(r#""method":"process/write""#) {
            let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
            self.delivering_write = v["params"]["writeId"]
                .as_str()
                .and_then(|w| self.write_ids.get(w))
                .copied();
        }
        self.log(|| format!("server reads on {conn:?}: {text}"));
        let r = self.server.handle_message(self.now, conn, text.as_bytes());
        let r = r.map_err(|e| e.to_string()).and_then(|()| self.pump());
        self.delivering_write = None;
        r
    }

    fn deliver_s2c(&mut self) -> Result<bool, String> {
        let Some((text, key)) = self.s2c.pop_front() else {
            return Ok(false);
        };
        if text.contains(r#""code":-32010"#) {
            self.stats.attached_races += 1;
        }
        self.log(|| format!("client reads {text}"));
        self.client.handle_message(self.now, text.as_bytes());
        self.history.push_back((text, key));
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.pump()?;
        Ok(true)
    }

    fn settle(&mut self) -> Result<(), String> {
        self.pump()?;
        for _ in 0..SETTLE_LIMIT {
            if !self.deliver_c2s()? && !self.deliver_s2c()? {
                return Ok(());
            }
        }
        Err("the network did not settle".to_owned())
    }

    /// The client's transport drops. Frames on their way to the client are lost; those on
    /// their way to the server are lost too when it notices at once (a reset), else it reads
    /// them before it notices (see [`Self::notice_drops`]).
    fn drop_link(&mut self, server_notices: bool) -> Result<(), String> {
        let Some(conn) = self.link.take() else {
            return Ok(());
        };
        self.log(|| format!("transport drops, server notices: {server_notices}"));
        let in_flight = std::mem::take(&mut self.c2s);
        self.s2c.clear();
        if server_notices {
            self.server
                .handle_disconnect(self.now, conn)
                .map_err(|e| e.to_string())?;
        } else {
            self.stale.push((conn, in_flight));
        }
        self.expect.before_disconnect(self.now);
        self.client.handle_disconnect(self.now);
        self.pump()?;
        self.expect.after_disconnect(&self.client)
    }

    /// The server reads what was still on its way on each dropped connection, then notices
    /// the drop.
    fn notice_drops(&mut self) -> Result<(), String> {
        for (conn, frames) in std::mem::take(&mut self.stale) {
            self.log(|| format!("server notices the drop of {conn:?}"));
            for text in frames {
                self.deliver_to(conn, &text)?;
            }
            self.server.handle_disconnect(self.now, conn).ok();
        }
        Ok(())
    }

    fn advance(&mut self, d: Duration) -> Result<(), String> {
        self.now += d;
        self.log(|| format!("time +{d:?}"));
        self.server.handle_timeout(self.now);
        self.pump()?;
        self.client.handle_timeout(self.now);
        self.pump()
    }

    fn heal(&mut self) -> Result<(), String> {
        self.notice_drops()?;
        self.fail_next_connect = false;
        for _ in 0..2_000 {
            self.answer_reconnect(true);
            for key in std::mem::take(&mut self.held) {
                self.answer_spawn(key, false)?;
            }
            self.settle()?;
            if self.quiet() {
                return Ok(());
            }
            if self.reconnect_wanted || !self.held.is_empty() {
                continue;
            }
            let next = match (self.client.poll_timeout(), self.server.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).ok_or_else(|| {
                    format!(
                        "stuck: not quiet and no timer (ready {}, pending {})",
                        self.client.is_ready(),
                        self.client.pending_count()
                    )
                })?,
            };
            self.advance(next.saturating_duration_since(self.now))?;
        }
        Err("the final heal did not converge".to_owned())
    }

    fn quiet(&self) -> bool {
        self.c2s.is_empty()
            && self.s2c.is_empty()
            && self.held.is_empty()
            && !self.reconnect_wanted
            && (self.client.is_closed()
                || (self.client.is_ready() && self.client.pending_count() == 0))
    }

    // ----- hostile frames ----------------------------------------------------------------

    fn hostile(&mut self, h: &Hostile) -> Result<(), String> {
        let material = Material {
            client: &self.client,
            expect: &self.expect,
            procs: &self.procs,
            history: &self.history,
            sent_ids: &self.sent_ids,
        };
        let Some((text, harmless)) = client_hostile::frame(h, &material) else {
            return Ok(());
        };
        if !harmless {
            if !self.cfg.forgeries() {
                return Ok(());
            }
            self.expect.tainted = true;
        }
        self.log(|| format!("client reads hostile {}", String::from_utf8_lossy(&text)));
        self.client.handle_message(self.now, &text);
        Ok(())
    }

    // ----- invariants --------------------------------------------------------------------

    fn check_consistency(&mut self) -> Result<(), String> {
        self.expect.check_cursors(&self.client)?;
        if let Some(at) = self.client.poll_timeout() {
            if at <= self.now {
                return Err(format!(
                    "the client's timeout is {:?} in the past",
                    self.now - at
                ));
            }
        } else if self.cfg.recovery()
            && self.client.session_id().is_some()
            && !self.client.is_ready()
            && !self.client.is_closed()
        {
            return Err("recovering without a timeout (the window must run)".to_owned());
        }
        Ok(())
    }
}
