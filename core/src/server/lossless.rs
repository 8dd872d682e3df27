//! Lossless output (ext, PROTOCOL.md §5.11): a session whose `initialize` asked for it never
//! evicts output the client has not acknowledged. Each process counts its unacknowledged
//! output (`OutputLog::unacked`); when it reaches the window
//! ([`ServerConfig::lossless_window_bytes`](super::ServerConfig::lossless_window_bytes), capped
//! at `retainedBytes`, or `retainedChunks` chunks) the process is held
//! ([`Command::PauseOutput`]: the runtime stops reading its pipes and the child blocks in
//! `write`) until the client acknowledges, by `process/read {afterSeq}` or by the
//! `process/ack {processId, seq}` notification. Nothing else changes: notifications, seqs, the
//! exit and the close are as without it; a child that exits while held has its output read
//! once it is released, then closes.
//!
//! Holds combine with the congestion pause (`congestion`): the runtime's pipes are paused while
//! either holds ([`Server::sync_output_pause`]).

use super::{Command, Output, Server, SessionId};
use crate::ids::{ProcessKey, Seq};
use crate::protocol::{AckParams, LosslessWindow};

impl Server {
    /// The window in force: `(bytes, chunks)`.
    fn lossless_window(&self) -> (usize, usize) {
        let cfg = &self.config;
        (
            cfg.lossless_window_bytes.min(cfg.retained_bytes).max(1),
            cfg.retained_chunks.max(1),
        )
    }

    /// `initialize`: sets the session's mode as asked (a resume may switch it either way) and
    /// returns the negotiation answer for the result.
    pub(super) fn negotiate_lossless(
        &mut self,
        sid: SessionId,
        asked: bool,
    ) -> Option<LosslessWindow> {
        let session = self.sessions.get_mut(&sid)?;
        if session.lossless != asked {
            session.lossless = asked;
            let keys: Vec<ProcessKey> = session.processes.values().copied().collect();
            for key in keys {
                if let Some(p) = self.processes.get_mut(&key) {
                    p.log.set_lossless(asked);
                }
                self.check_ack_window(key);
            }
        }
        let (bytes, chunks) = self.lossless_window();
        asked.then_some(LosslessWindow {
            window_bytes: bytes as u64,
            window_chunks: chunks as u64,
        })
    }

    /// A process entry was just created in `sid`: it follows the session's mode.
    pub(super) fn lossless_on_start(&mut self, sid: SessionId, key: ProcessKey) {
        let lossless = self.sessions.get(&sid).is_some_and(|s| s.lossless);
        if let Some(p) = self.processes.get_mut(&key) {
            p.log.set_lossless(lossless);
        }
    }

    /// `process/ack` (a notification: nothing is answered; an unknown process is ignored).
    pub(super) fn on_ack(&mut self, sid: SessionId, params: &AckParams) {
        if let Ok(key) = self.lookup(sid, &params.process_id) {
            self.ack(key, Seq(params.seq));
        }
    }

    /// The client holds every event of `key` up to `seq` (from `process/ack` or the `afterSeq`
    /// of a `process/read`); releases the hold when the window has room again.
    pub(super) fn ack(&mut self, key: ProcessKey, seq: Seq) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        let seq = seq.min(p.last_seq());
        p.log.ack(seq);
        self.check_ack_window(key);
    }

    /// Holds or releases `key` by its unacknowledged output (only in a lossless session).
    pub(super) fn check_ack_window(&mut self, key: ProcessKey) {
        let (max_bytes, max_chunks) = self.lossless_window();
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        let lossless = self.sessions.get(&p.session).is_some_and(|s| s.lossless);
        let (bytes, chunks) = p.log.unacked();
        let hold = lossless && (bytes >= max_bytes || chunks >= max_chunks);
        if hold != p.ack_hold {
            p.ack_hold = hold;
            self.sync_output_pause(key);
        }
    }

    /// Issues [`Command::PauseOutput`] or [`Command::ResumeOutput`] when whether `key` should be
    /// paused (a congestion or an ack hold, and output may still come) differs from what is in
    /// force.
    pub(super) fn sync_output_pause(&mut self, key: ProcessKey) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        let paused = (p.congestion_hold || p.ack_hold) && !p.all_streams_eof();
        if paused == p.output_paused {
            return;
        }
        p.output_paused = paused;
        let cmd = if paused {
            Command::PauseOutput { key }
        } else {
            Command::ResumeOutput { key }
        };
        self.out.push_back(Output::Command(cmd));
    }
}
