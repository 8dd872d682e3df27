//! Timers: every deadline of the server (session TTL, long-poll `waitMs`, the sandbox grace,
//! closed-process retention) is an entry `(when, Timer)` in one ordered set, decided by the
//! `now` the runtime hands in. [`Server::poll_timeout`] is the first entry; a timer whose
//! state moved on (a resumed session, an answered read) is removed, or ignored when it fires.

use std::time::Instant;

use super::read::ReadId;
use super::{Server, SessionId};
use crate::ids::ProcessKey;

/// What a deadline is for. Ordered so the timer set iterates deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A detached session's TTL (§6).
    SessionExpiry(SessionId),
    /// A long poll's `waitMs` (§5.3).
    ReadDeadline(ReadId),
    /// The sandbox-denial grace of an exited process (§7).
    SandboxGrace(ProcessKey),
    /// The retention of a closed process (§5.7).
    Forget(ProcessKey),
}

impl Server {
    /// Fires every timer due at `now`, earliest first.
    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::SessionExpiry(sid) => self.on_session_expiry(now, sid),
                Timer::ReadDeadline(rid) => self.on_read_deadline(rid),
                Timer::SandboxGrace(key) => self.on_grace_timer(now, at, key),
                Timer::Forget(key) => self.on_forget_timer(at, key),
            }
        }
    }
}
