//! One process entry: its lifecycle, seq counter, retained output and write dedupe.

use std::time::Instant;

use crate::denial;
use crate::ids::{ConnId, Seq};
use crate::protocol::{ReadChunk, ReadResult, SandboxType, Stream};
use crate::rpc::RequestId;
use crate::server::dedupe::WriteDedupe;
use crate::server::output_log::{Chunk, OutputLog};
use crate::server::session::SessionId;
use crate::server::ExitStatus;

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Spawn command issued; waiting for Spawned / SpawnFailed.
    Starting,
    /// Running (it may already have exited while its exit is held for the sandbox grace).
    Running,
    /// `process/exited` published, some output stream still open.
    Exited,
    /// `process/closed` published.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdin {
    /// `/dev/null`: never writable.
    Null,
    /// A pipe or the PTY master: writable.
    Open,
    /// Closed by the client or gone.
    Closed,
}

#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) session: SessionId,
    pub(crate) id: String,
    /// `id` as a JSON string literal, escaped once for the output hot path.
    pub(crate) id_json: String,
    pub(crate) argv: Vec<String>,
    pub(crate) tty: bool,
    pub(crate) sandbox: SandboxType,
    pub(crate) phase: Phase,
    pub(crate) pid: Option<u32>,
    pub(crate) stdin: Stdin,
    /// The `process/start` request to answer once the spawn result is known.
    pub(crate) start_reply: Option<(ConnId, RequestId)>,
    next_seq: Seq,
    pub(crate) log: OutputLog,
    /// Output streams not yet at EOF.
    open_streams: u8,
    /// The exit as reported by the runtime, before or after publication.
    pub(crate) exit: Option<ExitStatus>,
    /// Seq of the published `process/exited`.
    pub(crate) exit_seq: Option<Seq>,
    /// Seq of the published `process/closed`.
    pub(crate) closed_seq: Option<Seq>,
    /// End of the sandbox grace period while the exit is held back.
    pub(crate) grace_deadline: Option<Instant>,
    pub(crate) sandbox_denied: bool,
    pub(crate) dedupe: WriteDedupe,
    /// When the entry may be forgotten (set on close).
    pub(crate) forget_at: Option<Instant>,
    /// A [`Command::PauseOutput`](crate::Command::PauseOutput) is in force (for either hold
    /// below; see `Server::sync_output_pause`).
    pub(crate) output_paused: bool,
    /// Held because the session's connection is congested (`congestion`).
    pub(crate) congestion_hold: bool,
    /// Held because its unacknowledged output reached the lossless window (`lossless`).
    pub(crate) ack_hold: bool,
    /// Bytes given in [`Command::WriteStdin`](crate::Command::WriteStdin) not yet reported
    /// written.
    pub(crate) stdin_queued: usize,
}

/// Settings a process entry needs from the server config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) retained_bytes: usize,
    pub(crate) retained_chunks: usize,
    pub(crate) write_ids: usize,
}

impl Process {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        session: SessionId,
        id: String,
        argv: Vec<String>,
        tty: bool,
        pipe_stdin: bool,
        sandbox: SandboxType,
        start_reply: (ConnId, RequestId),
        limits: Limits,
    ) -> Self {
        let id_json = serde_json::to_string(&id).unwrap_or_else(|_| "\"\"".to_owned());
        Process {
            session,
            id,
            id_json,
            argv,
            tty,
            sandbox,
            phase: Phase::Starting,
            pid: None,
            stdin: if tty || pipe_stdin {
                Stdin::Open
            } else {
                Stdin::Null
            },
            start_reply: Some(start_reply),
            next_seq: Seq::FIRST,
            log: OutputLog::new(limits.retained_bytes, limits.retained_chunks),
            open_streams: if tty { 1 } else { 2 },
            exit: None,
            exit_seq: None,
            closed_seq: None,
            grace_deadline: None,
            sandbox_denied: false,
            dedupe: WriteDedupe::new(limits.write_ids),
            forget_at: None,
            output_paused: false,
            congestion_hold: false,
            ack_hold: false,
            stdin_queued: 0,
        }
    }

    fn take_seq(&mut self) -> Seq {
        let seq = self.next_seq;
        self.next_seq = seq.next();
        seq
    }

    /// The last seq assigned (`Seq(0)` before the first event).
    pub(crate) fn last_seq(&self) -> Seq {
        Seq(self.next_seq.0 - 1)
    }

    /// The seq the next event will get.
    pub(crate) fn peek_seq(&self) -> Seq {
        self.next_seq
    }

    /// Whether its process group may still have members: not closed yet (after the leader's
    /// exit, descendants may still hold the output open). Signals and kills go to the group
    /// until then; after the close the group id may be reused.
    pub(crate) fn group_alive(&self) -> bool {
        self.closed_seq.is_none()
    }

    /// Whether the process is starting or running (its exit not yet reported).
    pub(crate) fn is_running(&self) -> bool {
        self.exit.is_none() && matches!(self.phase, Phase::Starting | Phase::Running)
    }

    /// Retains one chunk and returns its seq.
    pub(crate) fn push_output(&mut self, stream: Stream, bytes: Vec<u8>) -> Seq {
        let seq = self.take_seq();
        self.log.push(Chunk { seq, stream, bytes });
        seq
    }

    /// Marks one stream at EOF; returns whether every stream is now at EOF.
    pub(crate) fn eof(&mut self) -> bool {
        self.open_streams = self.open_streams.saturating_sub(1);
        self.open_streams == 0
    }

    pub(crate) fn all_streams_eof(&self) -> bool {
        self.open_streams == 0
    }

    /// Publishes the exit: classifies it (sandboxed processes only) and assigns its seq.
    pub(crate) fn publish_exit(&mut self) -> Option<Seq> {
        let status = self.exit?;
        if self.exit_seq.is_some() {
            return None;
        }
        self.grace_deadline = None;
        if self.sandbox != SandboxType::None {
            self.sandbox_denied =
                denial::is_sandbox_denied(status.code(), self.log.iter().map(|c| &c.bytes[..]));
        }
        let seq = self.take_seq();
        self.exit_seq = Some(seq);
        self.phase = Phase::Exited;
        if self.stdin == Stdin::Open {
            self.stdin = Stdin::Closed;
        }
        Some(seq)
    }

    /// Publishes the close if the exit is published and every stream is at EOF.
    pub(crate) fn try_close(&mut self) -> Option<Seq> {
        if self.exit_seq.is_none() || self.open_streams > 0 || self.closed_seq.is_some() {
            return None;
        }
        let seq = self.take_seq();
        self.closed_seq = Some(seq);
        self.phase = Phase::Closed;
        Some(seq)
    }

    /// Whether a `process/read` after `after` has something to return now: a newer chunk, an
    /// unseen exit, or the close.
    pub(crate) fn read_ready(&self, after: Seq) -> bool {
        self.log.has_after(after)
            || self.exit_seq.is_some_and(|s| s > after)
            || self.closed_seq.is_some()
    }

    /// The `process/read` result for `after` and an optional byte budget.
    pub(crate) fn read(&self, after: Seq, max_bytes: Option<u64>) -> ReadResult {
        let mut chunks = Vec::new();
        let mut used: u64 = 0;
        let mut truncated_at = None;
        for c in self.log.after(after) {
            let len = c.bytes.len() as u64;
            if let Some(budget) = max_bytes {
                if !chunks.is_empty() && used.saturating_add(len) > budget {
                    truncated_at = Some(c.seq);
                    break;
                }
            }
            used = used.saturating_add(len);
            chunks.push(ReadChunk {
                seq: c.seq.0,
                stream: c.stream,
                chunk: c.bytes.clone().into(),
            });
        }
        let next_seq = match (truncated_at, chunks.last()) {
            (Some(_), Some(last)) => last.seq + 1,
            _ => self.next_seq.0,
        };
        let evicted = self.log.evicted_through();
        let (first_retained_seq, lost_chunks) = if evicted > after {
            let span = evicted.0 - after.0;
            let exit_in_span = self.exit_seq.is_some_and(|s| s > after && s <= evicted);
            (
                Some(self.log.first_seq().map_or(self.next_seq.0, |s| s.0)),
                span - u64::from(exit_in_span),
            )
        } else {
            (None, 0)
        };
        ReadResult {
            chunks,
            next_seq,
            exited: self.exit_seq.is_some(),
            exit_code: self.exit_seq.and(self.exit).map(ExitStatus::code),
            closed: self.closed_seq.is_some(),
            failure: None,
            sandbox_denied: self.sandbox_denied,
            first_retained_seq,
            lost_chunks,
        }
    }

    pub(crate) fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Exited => "exited",
            Phase::Closed => "closed",
        }
    }
}
