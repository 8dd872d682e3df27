//! `process/write` and its `writeId` dedupe (PROTOCOL.md §5.4), and `process/closeStdin`
//! (§5.8): a write id the process already accepted is answered `accepted` again without
//! reaching the child, so a retry after a reconnect writes once.

use super::outbound::{ok, Reply};
use super::process::Stdin;
use super::session::session_gone;
use super::{Command, Output, Server, SessionId};
use crate::ids::ProcessKey;
use crate::protocol::{ProcessIdParams, WriteParams, WriteResult, WriteStatus};
use crate::rpc::RpcError;

impl Server {
    /// `process/write`: `{status}` is `accepted`, `stdinClosed` or `unknownProcess`; only a
    /// fresh accepted id queues a [`Command::WriteStdin`]. A write while the spawn is pending
    /// is accepted like any other: the runtime queues it until the child runs (and drops it if
    /// the spawn fails, when the start is answered with the error). The status `starting` is
    /// never sent: answering it made a client retry, and a retry could overtake writes made
    /// after it once the spawn was done.
    pub(super) fn write(&mut self, sid: SessionId, params: WriteParams) -> Reply {
        if params.write_id.is_empty() {
            return Err(RpcError::invalid_params("writeId must not be empty"));
        }
        self.check_id("writeId", &params.write_id)?;
        let max_queued = self.config.max_stdin_queued_bytes;
        let write_id = params.write_id;
        let status = match self.lookup(sid, &params.process_id) {
            Err(_) => WriteStatus::UnknownProcess,
            Ok(key) => {
                let p = self.processes.get_mut(&key).ok_or_else(session_gone)?;
                if p.dedupe.contains(&write_id) {
                    WriteStatus::Accepted
                } else if p.stdin != Stdin::Open {
                    WriteStatus::StdinClosed
                } else {
                    let bytes = params.chunk.0;
                    // An empty queue takes any one write (the frame limit bounds it).
                    if p.stdin_queued > 0 && p.stdin_queued.saturating_add(bytes.len()) > max_queued
                    {
                        return Err(RpcError::invalid_request(format!(
                            "stdin of process {} is full: {} bytes queued \
                             (limit maxStdinQueuedBytes = {max_queued}); retry the write later",
                            p.id, p.stdin_queued
                        )));
                    }
                    p.dedupe.remember(write_id);
                    p.stdin_queued = p.stdin_queued.saturating_add(bytes.len());
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

    /// ext `process/closeStdin`: `{}`; the first close queues a [`Command::CloseStdin`].
    pub(super) fn close_stdin(&mut self, sid: SessionId, params: &ProcessIdParams) -> Reply {
        let key = self.lookup(sid, &params.process_id)?;
        let p = self.processes.get_mut(&key).ok_or_else(session_gone)?;
        if p.stdin == Stdin::Open {
            p.stdin = Stdin::Closed;
            self.out
                .push_back(Output::Command(Command::CloseStdin { key }));
        }
        ok(&serde_json::json!({}))
    }

    /// `ProcessEvent::StdinClosed`: the child closed its stdin; later writes are
    /// `stdinClosed`.
    pub(super) fn on_stdin_closed(&mut self, key: ProcessKey) {
        if let Some(p) = self.processes.get_mut(&key) {
            if p.stdin == Stdin::Open {
                p.stdin = Stdin::Closed;
            }
            // The runtime drops what was still queued.
            p.stdin_queued = 0;
        }
    }

    /// `ProcessEvent::StdinWritten`: queued stdin bytes reached the child.
    pub(super) fn on_stdin_written(&mut self, key: ProcessKey, bytes: usize) {
        if let Some(p) = self.processes.get_mut(&key) {
            p.stdin_queued = p.stdin_queued.saturating_sub(bytes);
        }
    }
}
