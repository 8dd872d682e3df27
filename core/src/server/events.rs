//! Process events become notifications (PROTOCOL.md §5.2, §5.7): each output chunk, the exit
//! and the close take the next seq of their process; `process/exited` comes once, before
//! `process/closed`, which is last. A closed process is retained for
//! [`ServerConfig::closed_retention`](super::ServerConfig::closed_retention), then forgotten.

use std::time::Instant;

use super::binary::encode_output;
use super::timers::Timer;
use super::{Command, ExitStatus, Output, Server};
use crate::ids::ProcessKey;
use crate::protocol::{method, signal_name, ClosedNotification, ExitedNotification, Stream};
use crate::rpc;

impl Server {
    /// `ProcessEvent::Output`: retain the chunk under the next seq and notify it.
    pub(super) fn on_output(&mut self, key: ProcessKey, stream: Stream, bytes: Vec<u8>) {
        let Some(p) = self.processes.get(&key) else {
            return;
        };
        if bytes.is_empty() || p.closed_seq.is_some() {
            return;
        }
        // Encoded only for an attached session, in the form its connection negotiated.
        let target = self.output_target(p.session);
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        let wire = target.map(|(conn, binary)| {
            let frame = encode_output(binary, &p.id, &p.id_json, p.peek_seq(), stream, &bytes);
            (conn, frame)
        });
        p.push_output(stream, bytes);
        if let Some((conn, wire)) = wire {
            self.transmit_wire(conn, wire);
        }
        self.wake_reads(key);
        self.check_ack_window(key);
    }

    /// `ProcessEvent::Eof`: the last EOF after the exit closes the process; the last EOF of a
    /// sandboxed exit held for the grace publishes the exit.
    pub(super) fn on_eof(&mut self, now: Instant, key: ProcessKey) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
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

    /// Gives the exit its seq and sends `process/exited` (with the denial verdict).
    pub(super) fn publish_exit(&mut self, now: Instant, key: ProcessKey) {
        self.cancel_grace(key);
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        let Some(seq) = p.publish_exit() else { return };
        let status = p.exit.unwrap_or(ExitStatus::Code(-1));
        let exited = ExitedNotification {
            process_id: p.id.clone(),
            seq: seq.0,
            exit_code: status.code(),
            sandbox_denied: p.sandbox_denied,
            exit_signal: match status {
                ExitStatus::Signal(n) => {
                    Some(signal_name(n).map_or_else(|| format!("SIG{n}"), str::to_owned))
                }
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

    /// Closes the process once it exited and every stream reached EOF: `process/closed`, and
    /// the retention timer starts.
    pub(super) fn try_close(&mut self, now: Instant, key: ProcessKey) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        let Some(seq) = p.try_close() else { return };
        let closed = ClosedNotification {
            process_id: p.id.clone(),
            seq: seq.0,
        };
        let session = p.session;
        self.notify(
            session,
            rpc::encode_notification(method::PROCESS_CLOSED, &closed),
        );
        let retention = self.config.closed_retention;
        let forget_at = self.arm(now, retention, Timer::Forget(key));
        if let Some(p) = self.processes.get_mut(&key) {
            p.forget_at = forget_at;
        }
    }

    /// The retention set at `at` for closed process `key` ran out.
    pub(super) fn on_forget_timer(&mut self, at: Instant, key: ProcessKey) {
        if self
            .processes
            .get(&key)
            .is_some_and(|p| p.forget_at == Some(at))
        {
            self.forget(key, true);
        }
    }

    /// Removes a process entry, its session index entry and its pending reads (answered with
    /// an error); with `release`, tells the runtime it may drop its side.
    pub(super) fn forget(&mut self, key: ProcessKey, release: bool) {
        let Some(p) = self.processes.remove(&key) else {
            return;
        };
        if let Some(session) = self.sessions.get_mut(&p.session) {
            if session.processes.get(&p.id) == Some(&key) {
                session.processes.remove(&p.id);
            }
        }
        self.answer_reads_of_forgotten(key);
        if release {
            self.out
                .push_back(Output::Command(Command::Release { key }));
        }
    }
}
