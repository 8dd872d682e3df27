//! The sandbox-denial grace (PROTOCOL.md §7): a sandboxed process that exits non-zero while
//! an output stream is still open holds its `process/exited` for
//! [`ServerConfig::sandbox_grace`](super::ServerConfig::sandbox_grace), so the denial
//! classifier sees the output that was still in the pipes. The exit is published at the last
//! EOF or when the grace runs out, whichever is first.

use std::time::Instant;

use super::timers::Timer;
use super::{ExitStatus, Server};
use crate::ids::ProcessKey;
use crate::protocol::SandboxType;

impl Server {
    /// `ProcessEvent::Exited`: publish the exit now, or hold it for the grace.
    pub(super) fn on_exited(&mut self, now: Instant, key: ProcessKey, status: ExitStatus) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        if p.exit.is_some() {
            return;
        }
        p.exit = Some(status);
        if p.sandbox != SandboxType::None && status.code() != 0 && !p.all_streams_eof() {
            // Without a deadline (overflow) the exit waits for the last EOF.
            let grace = self.config.sandbox_grace;
            let deadline = self.arm(now, grace, Timer::SandboxGrace(key));
            if let Some(p) = self.processes.get_mut(&key) {
                p.grace_deadline = deadline;
            }
        } else {
            self.publish_exit(now, key);
        }
    }

    /// The grace set at `at` for `key` ran out: publish the held exit.
    pub(super) fn on_grace_timer(&mut self, now: Instant, at: Instant, key: ProcessKey) {
        if self
            .processes
            .get(&key)
            .is_some_and(|p| p.grace_deadline == Some(at))
        {
            self.publish_exit(now, key);
        }
    }

    /// Cancels the grace of `key`, if one runs (the exit is being published).
    pub(super) fn cancel_grace(&mut self, key: ProcessKey) {
        if let Some(at) = self.processes.get(&key).and_then(|p| p.grace_deadline) {
            self.timers.remove(&(at, Timer::SandboxGrace(key)));
        }
    }
}
