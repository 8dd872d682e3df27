//! What the client must deliver in the `client_ops` harness, checked event by event.
//!
//! Each tracked process is an *instance*: it begins with the `process/start` that made the
//! client track its id and ends with its `Closed`, `ProcessLost`, a failed start or
//! `SessionLost`. The instance's events are checked against what the server published for the
//! process entry its start created (see [`FakeProc`]): per instance, `Output` seqs follow one
//! another, a `Gap` covers exactly the seqs it says and only chunks the server evicted,
//! `Exited` comes once with the published code (at its own seq, or late after a gap when it
//! fell inside the lost range), `Closed` comes once, last, at the published seq. Every call id
//! gets exactly one `Response`; writes reach the child once. A hostile frame that could pass
//! for the server's own *taints* the run: from then on only the structural rules are checked
//! (seq order, one exit, close last, one response per call, writes at most once).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client_child::{FakeProc, Published};
use super::client_ops::{pool_id, POOL};
use crate::client::{CallError, Client, ClientEvent, LostReason};
use crate::ids::ProcessKey;
use crate::rpc::{RequestId, RpcError};

/// What the checker may look at besides the client's events.
pub(crate) struct World<'a> {
    pub(crate) now: Instant,
    pub(crate) procs: &'a BTreeMap<ProcessKey, FakeProc>,
}

/// What a call was.
#[derive(Debug, Clone)]
pub(crate) enum CallKind {
    /// `process/start`; `fresh` when the client did not track the id before.
    Start {
        pid: String,
        tag: String,
        fresh: bool,
    },
    /// `process/write` of these bytes.
    Write(String, Vec<u8>),
    /// `process/read`.
    Read,
    /// Anything else.
    Other(&'static str),
}

impl CallKind {
    /// Whether a disconnect keeps the call (resent, or for a start settled by the recovery
    /// read) instead of failing it.
    fn survives_disconnect(&self) -> bool {
        matches!(
            self,
            CallKind::Write(..) | CallKind::Read | CallKind::Start { .. }
        )
    }

    fn pid(&self) -> Option<&str> {
        match self {
            CallKind::Start { pid, .. } | CallKind::Write(pid, _) => Some(pid),
            CallKind::Read | CallKind::Other(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Ok(Value),
    Closed,
    Rpc(RpcError),
    Invalid,
}

#[derive(Debug)]
struct CallRec {
    kind: CallKind,
    sent: bool,
    outcome: Option<Outcome>,
    /// How often its bytes reached a child (writes).
    reached: u32,
    /// A write accepted while its process's spawn was pending, dropped because the spawn
    /// failed or the process was forgotten before it ran (a resend may still have reached
    /// another process of the same id).
    dropped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Lost,
    StartFailed,
    SessionLost,
}

#[derive(Debug)]
struct Instance {
    pid: String,
    start_call: i64,
    key: Option<ProcessKey>,
    /// Every seq up to here was delivered or reported lost.
    cursor: u64,
    /// The seq of the last `Output`, `Exited` or `Closed` (each seq once).
    last_event: u64,
    exit_seen: bool,
    gapped: bool,
    delivered: Vec<u8>,
    end: Option<End>,
}

/// The checker's state.
#[derive(Debug)]
pub(crate) struct Expect {
    recovery: bool,
    window: Duration,
    pub(crate) tainted: bool,
    pub(crate) session_lost: bool,
    /// Why, in a word.
    pub(crate) lost_reason: Option<&'static str>,
    /// `Client::close` was called.
    pub(crate) closing_locally: bool,
    calls: BTreeMap<i64, CallRec>,
    /// Start tag → call id.
    starts: BTreeMap<String, i64>,
    instances: Vec<Instance>,
    /// Process id → its live instance.
    current: BTreeMap<String, usize>,
    session: Option<String>,
    /// When recovery began (the disconnect or failed connect since the last ready session).
    outage_since: Option<Instant>,
    /// Calls a disconnect being handled must fail at once, and calls it must keep.
    must_fail: Vec<i64>,
    must_keep: Vec<i64>,
}

impl Expect {
    pub(crate) fn new(recovery: bool, window: Duration, _now: Instant) -> Self {
        Expect {
            recovery,
            window,
            tainted: false,
            session_lost: false,
            lost_reason: None,
            closing_locally: false,
            calls: BTreeMap::new(),
            starts: BTreeMap::new(),
            instances: Vec::new(),
            current: BTreeMap::new(),
            session: None,
            outage_since: None,
            must_fail: Vec::new(),
            must_keep: Vec::new(),
        }
    }

    // ----- what the harness did ----------------------------------------------------------

    pub(crate) fn on_call(&mut self, id: i64, kind: CallKind) -> Result<(), String> {
        if self.calls.contains_key(&id) {
            return Err(format!("request id {id} used twice"));
        }
        if let CallKind::Start { pid, tag, fresh } = &kind {
            self.starts.insert(tag.clone(), id);
            if *fresh {
                if self.current.contains_key(pid) {
                    return Err(format!("harness: {pid} is tracked"));
                }
                self.current.insert(pid.clone(), self.instances.len());
                self.instances.push(Instance {
                    pid: pid.clone(),
                    start_call: id,
                    key: None,
                    cursor: 0,
                    last_event: 0,
                    exit_seen: false,
                    gapped: false,
                    delivered: Vec::new(),
                    end: None,
                });
            }
        }
        self.calls.insert(
            id,
            CallRec {
                kind,
                sent: false,
                outcome: None,
                reached: 0,
                dropped: false,
            },
        );
        Ok(())
    }

    /// Whether a start for `pid` is unambiguous: no earlier start or write for it is still
    /// unanswered. (A write resent after the id was reused would reach the new process, whose
    /// write-id dedupe is fresh; a start cut off by a disconnect may or may not have run.)
    pub(crate) fn may_reuse(&self, pid: &str) -> bool {
        !self
            .calls
            .values()
            .any(|c| c.outcome.is_none() && c.kind.pid() == Some(pid))
    }

    /// A frame with request `id` left the client.
    pub(crate) fn on_sent(&mut self, id: i64) -> Result<(), String> {
        if let Some(c) = self.calls.get_mut(&id) {
            if c.outcome.is_some() {
                return Err(format!("call {id} sent again after its response"));
            }
            c.sent = true;
        }
        Ok(())
    }

    /// The server spawned process `key` for the start tagged `tag`.
    pub(crate) fn on_spawn(
        &mut self,
        tag: &str,
        pid: &str,
        key: ProcessKey,
        procs: &BTreeMap<ProcessKey, FakeProc>,
    ) -> Result<(), String> {
        let call = *self
            .starts
            .get(tag)
            .ok_or_else(|| format!("spawn with unknown tag {tag:?}"))?;
        let fresh = matches!(self.calls[&call].kind, CallKind::Start { fresh: true, .. });
        if fresh {
            let inst = self
                .instances
                .iter_mut()
                .find(|i| i.start_call == call)
                .ok_or_else(|| format!("no instance for start {call}"))?;
            // A start cut off by a disconnect is sent again when the recovery read does not
            // find its process, which is also the case when its spawn failed meanwhile (the
            // server forgets failed spawns): harmless, the first attempt had no effect.
            if let Some(old) = inst.key.replace(key) {
                if !procs[&old].failed {
                    return Err(format!(
                        "start {call} spawned twice ({old:?}, then {key:?})"
                    ));
                }
            }
            return Ok(());
        }
        Err(format!(
            "process/start {call} for tracked id {pid} reached the server (as {key:?})"
        ))
    }

    /// Whether call `id` has its response.
    pub(crate) fn answered(&self, id: i64) -> bool {
        self.calls.get(&id).is_some_and(|c| c.outcome.is_some())
    }

    /// The bytes of write `call` reached the stdin of `key`.
    pub(crate) fn on_write_reached(
        &mut self,
        call: i64,
        _key: ProcessKey,
        bytes: &[u8],
    ) -> Result<(), String> {
        let c = self
            .calls
            .get_mut(&call)
            .ok_or_else(|| format!("write {call} unknown"))?;
        if let CallKind::Write(_, b) = &c.kind {
            if b != bytes {
                return Err(format!(
                    "write {call} reached the child as {bytes:?}, not {b:?}"
                ));
            }
        }
        c.reached += 1;
        if c.reached > 1 {
            return Err(format!(
                "write {call} reached the child {} times",
                c.reached
            ));
        }
        Ok(())
    }

    /// Write `call` was accepted while its process was starting and never ran: its bytes are
    /// dropped (as the runtime does).
    pub(crate) fn on_write_dropped(&mut self, call: i64) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.dropped = true;
        }
    }

    /// Recovery begins now unless it already did.
    pub(crate) fn outage(&mut self, now: Instant) {
        self.outage_since.get_or_insert(now);
    }

    /// The transport is about to drop: note which calls must fail at once and which survive.
    pub(crate) fn before_disconnect(&mut self, now: Instant) {
        if self.recovery && !self.session_lost {
            self.outage(now);
        }
        self.must_fail.clear();
        self.must_keep.clear();
        for (&id, c) in &self.calls {
            if c.outcome.is_some() {
                continue;
            }
            if c.sent && !c.kind.survives_disconnect() {
                self.must_fail.push(id);
            } else {
                self.must_keep.push(id);
            }
        }
    }

    /// The client handled the drop: with recovery off every pending call failed with
    /// `Closed` at once; with recovery on exactly the sent calls that cannot be resent did.
    pub(crate) fn after_disconnect(&mut self, client: &Client) -> Result<(), String> {
        let closed = |c: &CallRec| matches!(c.outcome, Some(Outcome::Closed));
        if !self.recovery || self.session_lost {
            if !client.is_closed() {
                return Err("a disconnect with recovery off left the client open".to_owned());
            }
            if let Some((id, _)) = self.calls.iter().find(|(_, c)| c.outcome.is_none()) {
                return Err(format!("call {id} still pending after the disconnect"));
            }
            let pending = self.must_fail.iter().chain(&self.must_keep);
            if let Some(id) = pending.copied().find(|id| !closed(&self.calls[id])) {
                return Err(format!(
                    "call {id} pending at the disconnect was answered {:?}, not Closed",
                    self.calls[&id].outcome
                ));
            }
            return Ok(());
        }
        for id in &self.must_fail {
            if !closed(&self.calls[id]) {
                return Err(format!(
                    "call {id} ({:?}) was in flight but did not fail with Closed at the disconnect: {:?}",
                    self.calls[id].kind, self.calls[id].outcome
                ));
            }
        }
        for id in &self.must_keep {
            if self.calls[id].outcome.is_some() {
                return Err(format!(
                    "call {id} ({:?}) should survive the disconnect: {:?}",
                    self.calls[id].kind, self.calls[id].outcome
                ));
            }
        }
        Ok(())
    }

    /// Whether replaying a notification of process entry `key` (id `pid`) is a harmless
    /// duplicate: the client tracks nothing under `pid`, or tracks that same entry.
    pub(crate) fn replay_is_duplicate(&self, pid: &str, key: ProcessKey) -> bool {
        self.current
            .get(pid)
            .is_none_or(|&i| self.instances[i].key == Some(key))
    }

    // ----- what the client did -----------------------------------------------------------

    pub(crate) fn on_event(&mut self, ev: ClientEvent, w: &World<'_>) -> Result<(), String> {
        if self.session_lost {
            return Err(format!("{ev:?} after SessionLost"));
        }
        match ev {
            ClientEvent::Connected {
                session_id,
                resumed,
            } => {
                match &self.session {
                    None if !resumed => self.session = Some(session_id),
                    Some(s) if resumed && *s == session_id => {}
                    _ => {
                        return Err(format!(
                            "Connected {session_id} resumed={resumed} after {:?}",
                            self.session
                        ))
                    }
                }
                self.outage_since = None;
                Ok(())
            }
            ClientEvent::Response { id, result } => self.on_response(&id, result, w),
            // The simulated client never asks for binary frames.
            ClientEvent::DataResponse { id, .. } => {
                Err(format!("DataResponse for {id:?} without binary frames"))
            }
            ClientEvent::Output {
                process_id,
                seq,
                stream,
                chunk,
            } => {
                let i = self.live(&process_id)?;
                let tainted = self.tainted;
                let inst = &mut self.instances[i];
                if seq.0 != inst.cursor.wrapping_add(1) {
                    return Err(format!(
                        "{process_id}: output seq {} after {}",
                        seq.0, inst.cursor
                    ));
                }
                if !tainted {
                    let p = proc_of(inst, w)?;
                    let want = Published::Output(stream, chunk.clone());
                    if p.events.get(&seq.0) != Some(&want) {
                        return Err(format!(
                            "{process_id}: delivered {want:?} at seq {}, the server published {:?}",
                            seq.0,
                            p.events.get(&seq.0)
                        ));
                    }
                }
                inst.cursor = seq.0;
                inst.last_event = seq.0;
                inst.delivered.extend_from_slice(&chunk);
                Ok(())
            }
            ClientEvent::Gap {
                process_id,
                lost_chunks,
                first_retained_seq,
            } => {
                let i = self.live(&process_id)?;
                let tainted = self.tainted;
                let inst = &mut self.instances[i];
                let first = first_retained_seq.0;
                let exact = lost_chunks > 0
                    && inst
                        .cursor
                        .checked_add(lost_chunks)
                        .and_then(|s| s.checked_add(1))
                        == Some(first);
                if !exact {
                    return Err(format!(
                        "{process_id}: gap of {lost_chunks} before {first} after seq {}",
                        inst.cursor
                    ));
                }
                if !tainted {
                    let p = proc_of(inst, w)?;
                    for s in inst.cursor + 1..first {
                        match p.events.get(&s) {
                            Some(Published::Output(..)) if s <= p.evicted_through => {}
                            Some(Published::Exited(_)) => {}
                            other => {
                                return Err(format!(
                                    "{process_id}: gap before {first} covers seq {s}, which is {other:?} (evicted through {})",
                                    p.evicted_through
                                ))
                            }
                        }
                    }
                }
                inst.cursor = first - 1;
                inst.gapped = true;
                Ok(())
            }
            ClientEvent::Exited {
                process_id,
                seq,
                exit_code,
                ..
            } => {
                let i = self.live(&process_id)?;
                let tainted = self.tainted;
                let inst = &mut self.instances[i];
                let seq = seq.0;
                if inst.exit_seen {
                    return Err(format!("{process_id}: second Exited"));
                }
                if seq != inst.cursor.wrapping_add(1) && seq != inst.cursor {
                    return Err(format!(
                        "{process_id}: exit seq {seq} after {}",
                        inst.cursor
                    ));
                }
                if !tainted && seq <= inst.last_event {
                    return Err(format!(
                        "{process_id}: exit seq {seq} after an event at {}",
                        inst.last_event
                    ));
                }
                if !tainted {
                    let p = proc_of(inst, w)?;
                    let e = p
                        .exit_seq
                        .ok_or_else(|| format!("{process_id}: Exited before the exit"))?;
                    if p.events.get(&e) != Some(&Published::Exited(exit_code)) {
                        return Err(format!(
                            "{process_id}: exit code {exit_code}, published {:?}",
                            p.events.get(&e)
                        ));
                    }
                    let late_after_gap = inst.gapped && e <= inst.cursor;
                    if (e != seq || seq == inst.cursor) && !late_after_gap {
                        return Err(format!(
                            "{process_id}: Exited at seq {seq} (cursor {}), published at {e}",
                            inst.cursor
                        ));
                    }
                }
                inst.exit_seen = true;
                inst.cursor = inst.cursor.max(seq);
                inst.last_event = seq;
                Ok(())
            }
            ClientEvent::Closed { process_id, seq } => {
                let i = self.live(&process_id)?;
                let inst = &mut self.instances[i];
                let seq = seq.0;
                if seq != inst.cursor.wrapping_add(1) && seq != inst.cursor {
                    return Err(format!(
                        "{process_id}: close seq {seq} after {}",
                        inst.cursor
                    ));
                }
                if !self.tainted {
                    let p = proc_of(inst, w)?;
                    if p.closed_seq != Some(seq)
                        || seq != inst.cursor + 1
                        || seq <= inst.last_event
                        || !inst.exit_seen
                    {
                        return Err(format!(
                            "{process_id}: Closed at {seq} (cursor {}, exit seen {}), published at {:?}",
                            inst.cursor, inst.exit_seen, p.closed_seq
                        ));
                    }
                }
                inst.cursor = seq;
                self.end(i, End::Closed);
                Ok(())
            }
            ClientEvent::ProcessLost { process_id } => {
                let i = self.live(&process_id)?;
                if !self.tainted {
                    if let Some(k) = self.instances[i].key {
                        if !w.procs[&k].released && !w.procs[&k].failed {
                            return Err(format!(
                                "{process_id}: reported lost, but the server holds it"
                            ));
                        }
                    }
                }
                self.end(i, End::Lost);
                Ok(())
            }
            ClientEvent::Reconnect => Ok(()),
            ClientEvent::SessionLost { reason } => self.on_session_lost(&reason, w),
            // The model sends no `http/request`.
            ClientEvent::HttpBodyDelta(delta) => Err(format!("unexpected {delta:?}")),
            // Nor `fs/watch`.
            ClientEvent::FsChanged(changed) => Err(format!("unexpected {changed:?}")),
        }
    }

    fn on_response(
        &mut self,
        id: &RequestId,
        result: Result<Value, CallError>,
        w: &World<'_>,
    ) -> Result<(), String> {
        let RequestId::Int(n) = *id else {
            return Err(format!("response to a non-integer id {id}"));
        };
        let tainted = self.tainted;
        let rec = self
            .calls
            .get_mut(&n)
            .ok_or_else(|| format!("response to {n}, which is no call of the user"))?;
        if rec.outcome.is_some() {
            return Err(format!("second response to {n}: {result:?}"));
        }
        let outcome = match result {
            Ok(v) => Outcome::Ok(v),
            Err(CallError::Closed) => Outcome::Closed,
            Err(CallError::Rpc(e)) => Outcome::Rpc(e),
            Err(CallError::InvalidResult(_)) => Outcome::Invalid,
        };
        if !tainted {
            match &outcome {
                Outcome::Invalid => return Err(format!("unreadable result for {n}")),
                Outcome::Rpc(e)
                    if e.message.starts_with("client must")
                        || e.message.starts_with("initialize may only")
                        || e.message.starts_with("invalid JSON-RPC") =>
                {
                    return Err(format!("the client broke the protocol: call {n} got {e:?}"));
                }
                _ => {}
            }
        }
        if let (CallKind::Other(method), Outcome::Rpc(e)) = (&rec.kind, &outcome) {
            let unknown = *method == "environmentConfig/read";
            if !tainted && unknown != (e.code == -32601) {
                return Err(format!("{method} answered {e:?}"));
            }
        }
        rec.outcome = Some(outcome.clone());
        let CallKind::Start { pid, fresh, .. } = rec.kind.clone() else {
            return Ok(());
        };
        if !fresh {
            let refused = matches!(&outcome, Outcome::Rpc(e)
                if e.code == -32600 && e.message == format!("process {pid} already exists"));
            if !refused {
                return Err(format!("start {n} of tracked {pid} answered {outcome:?}"));
            }
            return Ok(());
        }
        let Some(i) = self.instances.iter().position(|i| i.start_call == n) else {
            return Err(format!("no instance for start {n}"));
        };
        match outcome {
            // Answered by the server once spawned, or settled by the recovery read (which
            // may find the process still starting).
            Outcome::Ok(_) if !tainted && self.instances[i].key.is_none() => {
                return Err(format!(
                    "start of {pid} answered ok, but it never reached the server"
                ));
            }
            Outcome::Rpc(e) => {
                if !tainted && !self.instances[i].key.is_some_and(|k| w.procs[&k].failed) {
                    return Err(format!("start of {pid} failed with {e:?}, but it did not"));
                }
                if self.instances[i].end.is_none() {
                    self.end(i, End::StartFailed);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_session_lost(&mut self, reason: &LostReason, w: &World<'_>) -> Result<(), String> {
        if let Some((id, _)) = self.calls.iter().find(|(_, c)| c.outcome.is_none()) {
            return Err(format!("SessionLost with call {id} still pending"));
        }
        if !self.tainted {
            let ok = match reason {
                LostReason::Disconnected => !self.recovery,
                LostReason::WindowExhausted => {
                    self.recovery && self.outage_since.is_some_and(|t| w.now >= t + self.window)
                }
                // (The server's own TTL rules are the `server_ops` target's business.)
                LostReason::Rejected(e) => {
                    e.code == -32600
                        && self
                            .session
                            .as_ref()
                            .is_some_and(|s| e.message == format!("unknown session id {s}"))
                }
                LostReason::Protocol(_) => false,
                LostReason::ClosedLocally => self.closing_locally,
                LostReason::ServerStopped => false,
            };
            if !ok {
                return Err(format!(
                    "SessionLost {reason:?} (recovery {}, outage since {:?})",
                    self.recovery,
                    self.outage_since.map(|t| w.now - t),
                ));
            }
        }
        self.session_lost = true;
        self.lost_reason = Some(match reason {
            LostReason::Disconnected => "disconnected",
            LostReason::WindowExhausted => "window exhausted",
            LostReason::Rejected(_) => "rejected",
            LostReason::Protocol(_) => "protocol",
            LostReason::ClosedLocally => "closed locally",
            LostReason::ServerStopped => "server stopped",
        });
        let live: Vec<usize> = self.current.values().copied().collect();
        for i in live {
            self.end(i, End::SessionLost);
        }
        Ok(())
    }

    fn live(&self, pid: &str) -> Result<usize, String> {
        self.current
            .get(pid)
            .copied()
            .ok_or_else(|| format!("event for {pid}, which the client does not track"))
    }

    fn end(&mut self, i: usize, end: End) {
        self.instances[i].end = Some(end);
        let pid = self.instances[i].pid.clone();
        if self.current.get(&pid) == Some(&i) {
            self.current.remove(&pid);
        }
    }

    // ----- state checks ------------------------------------------------------------------

    /// After every step: the client tracks exactly the live instances, at their cursors.
    pub(crate) fn check_cursors(&mut self, client: &Client) -> Result<(), String> {
        // A start answered `Closed` (its fate unknown) may or may not stay tracked.
        let gave_up: Vec<usize> = self
            .current
            .values()
            .copied()
            .filter(|&i| {
                let inst = &self.instances[i];
                let closed = matches!(self.calls[&inst.start_call].outcome, Some(Outcome::Closed));
                closed && client.last_seq(&inst.pid).is_none()
            })
            .collect();
        for i in gave_up {
            self.end(i, End::StartFailed);
        }
        if client.is_closed() != self.session_lost {
            return Err(format!(
                "client closed {} but SessionLost seen {}",
                client.is_closed(),
                self.session_lost
            ));
        }
        for n in 0..POOL as u8 {
            let pid = pool_id(n);
            let ours = self.current.get(&pid).map(|&i| self.instances[i].cursor);
            let theirs = client.last_seq(&pid).map(|s| s.0);
            if ours != theirs {
                return Err(format!(
                    "{pid}: the client's last seq is {theirs:?}, its events say {ours:?}"
                ));
            }
        }
        Ok(())
    }

    /// After the heal: every call answered, and every live instance caught up with what the
    /// server published (delivered output == produced output unless a gap was reported).
    pub(crate) fn check_drained(&self, w: &World<'_>, client: &Client) -> Result<(), String> {
        self.check_answered()?;
        if self.tainted || self.session_lost || client.is_closed() {
            return Ok(());
        }
        for &i in self.current.values() {
            let inst = &self.instances[i];
            let p = proc_of(inst, w).map_err(|e| format!("after the heal: {e}"))?;
            if p.failed {
                // Settled as started by a recovery read that found it starting; the spawn
                // failed later and its answer went to the dead connection (a known gap).
                continue;
            }
            if inst.cursor + 1 != p.next_seq {
                return Err(format!(
                    "{}: after the heal the client is at seq {}, the server published up to {}",
                    inst.pid,
                    inst.cursor,
                    p.next_seq - 1
                ));
            }
            if !inst.gapped && inst.delivered != p.produced {
                return Err(format!(
                    "{}: delivered {:?}, produced {:?}",
                    inst.pid, inst.delivered, p.produced
                ));
            }
        }
        Ok(())
    }

    /// After every child finished and the heal: nothing tracked is left, every closed
    /// instance delivered exactly what its child produced, and each write reached its child
    /// as its response says.
    pub(crate) fn check_end(&self, w: &World<'_>, client: &Client) -> Result<(), String> {
        self.check_answered()?;
        if !self.tainted && !self.session_lost {
            let left = self
                .current
                .values()
                .map(|&i| &self.instances[i])
                .find(|inst| {
                    // The known gap of `check_drained`.
                    !inst.key.is_some_and(|k| w.procs[&k].failed)
                });
            if let Some(inst) = left {
                return Err(format!(
                    "{inst:?} is still tracked after every child finished"
                ));
            }
            if client.pending_count() != 0 {
                return Err(format!(
                    "{} calls pending at the end",
                    client.pending_count()
                ));
            }
        }
        if !self.tainted {
            for inst in &self.instances {
                if inst.end == Some(End::Closed) && !inst.gapped {
                    let p = proc_of(inst, w)?;
                    if inst.delivered != p.produced {
                        return Err(format!(
                            "{}: delivered {:?}, produced {:?}",
                            inst.pid, inst.delivered, p.produced
                        ));
                    }
                }
            }
        }
        for (id, c) in &self.calls {
            let CallKind::Write(_, bytes) = &c.kind else {
                continue;
            };
            let want = match &c.outcome {
                // Dropped with a child that never ran, it may still have reached a later
                // process of the same id when resent after a reconnect (at most once, which
                // `on_write_reached` checks).
                Some(Outcome::Ok(_)) if c.dropped => None,
                Some(Outcome::Ok(v)) if v["status"] == "accepted" => {
                    Some(u32::from(!bytes.is_empty()))
                }
                Some(Outcome::Ok(_) | Outcome::Rpc(_)) => Some(0),
                _ => None,
            };
            if want.is_some_and(|n| n != c.reached) && !self.tainted {
                return Err(format!(
                    "write {id} answered {:?} reached the child {} times",
                    c.outcome, c.reached
                ));
            }
        }
        Ok(())
    }

    fn check_answered(&self) -> Result<(), String> {
        match self.calls.iter().find(|(_, c)| c.outcome.is_none()) {
            Some((id, c)) => Err(format!("call {id} ({:?}) was never answered", c.kind)),
            None => Ok(()),
        }
    }
}

/// The process entry an instance's start created.
fn proc_of<'w>(inst: &Instance, w: &World<'w>) -> Result<&'w FakeProc, String> {
    let key = inst
        .key
        .ok_or_else(|| format!("{}: an event, but its start never spawned", inst.pid))?;
    Ok(&w.procs[&key])
}
