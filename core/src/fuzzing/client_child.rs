//! One fake child of the `client_ops` harness and what the server published for it.

use std::collections::{BTreeMap, VecDeque};

use crate::protocol::Stream;
use crate::server::ExitStatus;

/// One fake child, and what the server published for it (seqs, retention), mirrored from the
/// events the harness fed in. The server assigns a seq to each non-empty output chunk before
/// the close, to the exit when it is reported (no sandbox here) and to the close once the exit
/// is published and every output stream is at EOF.
#[derive(Debug)]
pub(crate) struct FakeProc {
    pub(crate) pid: String,
    pub(crate) tty: bool,
    /// `Spawned` was reported.
    pub(crate) spawned: bool,
    /// `SpawnFailed` was reported.
    pub(crate) failed: bool,
    /// The server forgot the entry (`Release`, session expiry, spawn failure).
    pub(crate) released: bool,
    /// A kill, signal or stdin EOF that arrived while the spawn was held.
    pub(crate) pending_finish: Option<ExitStatus>,
    /// Output streams not at EOF.
    pub(crate) open: Vec<Stream>,
    /// The child exited.
    pub(crate) exited: bool,
    /// Published events by seq.
    pub(crate) events: BTreeMap<u64, Published>,
    pub(crate) next_seq: u64,
    pub(crate) exit_seq: Option<u64>,
    pub(crate) closed_seq: Option<u64>,
    /// Every output byte, in seq order.
    pub(crate) produced: Vec<u8>,
    /// The server's retention, mirrored: `(seq, len)` of retained chunks.
    retained: VecDeque<(u64, usize)>,
    retained_bytes: usize,
    /// The highest evicted seq (0: none).
    pub(crate) evicted_through: u64,
    /// The write calls whose bytes reached stdin, in arrival order.
    pub(crate) stdin_calls: Vec<i64>,
    /// Writes accepted while the spawn was held: `(call, bytes)`, delivered at the spawn.
    pub(crate) pending_stdin: Vec<(i64, Vec<u8>)>,
    /// The server paused reading its output (`PauseOutput`, until `ResumeOutput`).
    pub(crate) paused: bool,
}

/// One event the server published for a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Published {
    Output(Stream, Vec<u8>),
    Exited(i32),
    Closed,
}

impl FakeProc {
    pub(crate) fn new(pid: String, tty: bool) -> Self {
        FakeProc {
            pid,
            tty,
            spawned: false,
            failed: false,
            released: false,
            pending_finish: None,
            open: if tty {
                vec![Stream::Pty]
            } else {
                vec![Stream::Stdout, Stream::Stderr]
            },
            exited: false,
            events: BTreeMap::new(),
            next_seq: 1,
            exit_seq: None,
            closed_seq: None,
            produced: Vec::new(),
            retained: VecDeque::new(),
            retained_bytes: 0,
            evicted_through: 0,
            stdin_calls: Vec::new(),
            pending_stdin: Vec::new(),
            paused: false,
        }
    }

    /// Whether the server still holds the entry (starting, running or closed but retained).
    pub(crate) fn held(&self) -> bool {
        !self.released && !self.failed
    }

    /// Spawned and not forgotten: events may be fed in.
    pub(crate) fn live(&self) -> bool {
        self.spawned && !self.released
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub(crate) fn publish_output(&mut self, stream: Stream, bytes: &[u8], limits: (usize, usize)) {
        let seq = self.take_seq();
        self.events
            .insert(seq, Published::Output(stream, bytes.to_vec()));
        self.produced.extend_from_slice(bytes);
        self.retained.push_back((seq, bytes.len()));
        self.retained_bytes += bytes.len();
        let (max_bytes, max_chunks) = limits;
        while self.retained.len() > 1
            && (self.retained_bytes > max_bytes || self.retained.len() > max_chunks)
        {
            let (old, len) = self.retained.pop_front().expect("non-empty");
            self.retained_bytes -= len;
            self.evicted_through = old;
        }
    }

    pub(crate) fn publish_exit(&mut self, code: i32) {
        let seq = self.take_seq();
        self.exit_seq = Some(seq);
        self.events.insert(seq, Published::Exited(code));
        self.try_close();
    }

    pub(crate) fn try_close(&mut self) {
        if self.exit_seq.is_some() && self.open.is_empty() && self.closed_seq.is_none() {
            let seq = self.take_seq();
            self.closed_seq = Some(seq);
            self.events.insert(seq, Published::Closed);
        }
    }
}
