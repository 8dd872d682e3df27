//! Timers: every deadline of the server (session TTL, long-poll `waitMs`, the sandbox grace,
//! closed-process retention, congestion and close deadlines) is an entry `(when, Timer)` in one
//! ordered set, decided by the `now` the runtime hands in. [`Server::poll_timeout`] is the first
//! entry; a timer whose state moved on (a resumed session, an answered read) is removed, or
//! ignored when it fires. Deadlines are computed with checked arithmetic: one that would
//! overflow the clock (e.g. a session TTL of `u64::MAX` seconds) is never armed, so the wait is
//! unbounded instead of a panic.

use std::time::{Duration, Instant};

use super::read::ReadId;
use super::{Server, SessionId};
use crate::ids::{ConnId, ProcessKey};

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
    /// A congested connection's patience (§2.4).
    Congestion(ConnId),
    /// A closed connection's grace before it is dropped (§3.4).
    CloseGrace(ConnId),
    /// The coalescing window of an `fs/watch` watch (ext, §13.2).
    FsWatchFlush(ConnId, u64),
}

impl Server {
    /// Arms `timer` at `now + after` and returns the deadline; `None` (nothing armed) when it
    /// overflows the clock.
    pub(super) fn arm(&mut self, now: Instant, after: Duration, timer: Timer) -> Option<Instant> {
        let at = now.checked_add(after)?;
        self.timers.insert((at, timer));
        Some(at)
    }

    /// Removes the timer armed at `at`, if any.
    pub(super) fn disarm(&mut self, at: Option<Instant>, timer: Timer) {
        if let Some(at) = at {
            self.timers.remove(&(at, timer));
        }
    }

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
                Timer::Congestion(conn) => self.on_congestion_timer(now, at, conn),
                Timer::CloseGrace(conn) => self.on_close_grace_timer(at, conn),
                Timer::FsWatchFlush(conn, watch_id) => self.on_fs_watch_flush(conn, watch_id),
            }
        }
    }
}
