//! `process/read` (PROTOCOL.md §5.3): retained output after `afterSeq`, at once or as a long
//! poll held until output, exit, close or its `waitMs` deadline (capped by
//! [`ServerConfig::max_read_wait`](super::ServerConfig::max_read_wait)).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::outbound::{ok, Reply};
use super::process::Phase;
use super::timers::Timer;
use super::{Server, SessionId};
use crate::ids::{ConnId, ProcessKey, Seq};
use crate::protocol::ReadParams;
use crate::rpc::{RequestId, RpcError};

impl Server {
    /// `process/read`: answered now when `waitMs` is 0 or something is ready, else held.
    pub(super) fn read(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: &RequestId,
        sid: SessionId,
        params: ReadParams,
    ) -> Reply {
        let key = self.lookup(sid, &params.process_id)?;
        if let Some(after) = params.after_seq {
            // The reader holds everything up to `afterSeq` (lossless output).
            self.ack(key, Seq(after));
        }
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
        let wait = Duration::from_millis(wait_ms).min(self.config.max_read_wait);
        self.check_inflight(conn)?;
        let rid = self.reads.insert(PendingRead {
            conn,
            request: id.clone(),
            key,
            after,
            max_bytes: params.max_bytes,
            deadline: None,
        });
        let deadline = self.arm(now, wait, Timer::ReadDeadline(rid));
        if let Some(read) = self.reads.get_mut(rid) {
            read.deadline = deadline;
        }
        Ok(None)
    }

    /// Answers every long poll on `key` that now has something to return.
    pub(super) fn wake_reads(&mut self, key: ProcessKey) {
        for rid in self.reads.for_process(key) {
            let ready = match (self.reads.get(rid), self.processes.get(&key)) {
                (Some(read), Some(p)) => p.read_ready(read.after),
                _ => false,
            };
            if ready {
                self.take_and_answer(rid);
            }
        }
    }

    /// A long poll's deadline: it is answered with what there is (possibly nothing).
    pub(super) fn on_read_deadline(&mut self, rid: ReadId) {
        if let Some(read) = self.reads.remove(rid) {
            self.answer_read(&read);
        }
    }

    /// The connection of these long polls dropped: they are dropped unanswered.
    pub(super) fn drop_reads_of(&mut self, conn: ConnId) {
        for rid in self.reads.for_conn(conn) {
            if let Some(read) = self.reads.remove(rid) {
                self.disarm(read.deadline, Timer::ReadDeadline(rid));
            }
        }
    }

    /// The process was forgotten: its long polls are answered with an error.
    pub(super) fn answer_reads_of_forgotten(&mut self, key: ProcessKey) {
        for rid in self.reads.for_process(key) {
            self.take_and_answer(rid);
        }
    }

    fn take_and_answer(&mut self, rid: ReadId) {
        if let Some(read) = self.reads.remove(rid) {
            self.disarm(read.deadline, Timer::ReadDeadline(rid));
            self.answer_read(&read);
        }
    }

    fn answer_read(&mut self, read: &PendingRead) {
        let reply = match self.processes.get(&read.key) {
            Some(p) => ok(&p.read(read.after, read.max_bytes)),
            None => Err(RpcError::invalid_request(
                "process was forgotten while the read waited",
            )),
        };
        self.deferred_answered(read.conn);
        self.reply(read.conn, &read.request, reply);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ReadId(u64);

#[derive(Debug)]
pub(crate) struct PendingRead {
    pub(crate) conn: ConnId,
    pub(crate) request: RequestId,
    pub(crate) key: ProcessKey,
    pub(crate) after: Seq,
    pub(crate) max_bytes: Option<u64>,
    /// `None` when `now + waitMs` overflows the clock: held until answered.
    pub(crate) deadline: Option<Instant>,
}

/// Pending long polls, indexed by id and by process.
#[derive(Debug, Default)]
pub(crate) struct PendingReads {
    next: u64,
    reads: BTreeMap<ReadId, PendingRead>,
    by_process: HashMap<ProcessKey, Vec<ReadId>>,
}

impl PendingReads {
    pub(crate) fn insert(&mut self, read: PendingRead) -> ReadId {
        self.next += 1;
        let id = ReadId(self.next);
        self.by_process.entry(read.key).or_default().push(id);
        self.reads.insert(id, read);
        id
    }

    pub(crate) fn remove(&mut self, id: ReadId) -> Option<PendingRead> {
        let read = self.reads.remove(&id)?;
        if let Some(ids) = self.by_process.get_mut(&read.key) {
            ids.retain(|r| *r != id);
            if ids.is_empty() {
                self.by_process.remove(&read.key);
            }
        }
        Some(read)
    }

    /// The reads waiting on `key`, in arrival order.
    pub(crate) fn for_process(&self, key: ProcessKey) -> Vec<ReadId> {
        self.by_process.get(&key).cloned().unwrap_or_default()
    }

    pub(crate) fn get(&self, id: ReadId) -> Option<&PendingRead> {
        self.reads.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ReadId) -> Option<&mut PendingRead> {
        self.reads.get_mut(&id)
    }

    /// The reads held for `conn`.
    pub(crate) fn for_conn(&self, conn: ConnId) -> Vec<ReadId> {
        self.reads
            .iter()
            .filter(|(_, r)| r.conn == conn)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.reads.len()
    }
}
