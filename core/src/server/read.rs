//! Long-poll `process/read` requests held until output, exit, close or their deadline.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::ids::{ConnId, ProcessKey, Seq};
use crate::rpc::RequestId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ReadId(u64);

#[derive(Debug)]
pub(crate) struct PendingRead {
    pub(crate) conn: ConnId,
    pub(crate) request: RequestId,
    pub(crate) key: ProcessKey,
    pub(crate) after: Seq,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) deadline: Instant,
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
