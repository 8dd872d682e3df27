//! Congestion and dropped connections (PROTOCOL.md §2.4): the core counts the bytes it
//! transmits on each connection (replies, notifications and long-poll answers alike) until the
//! runtime reports them written with [`Server::handle_sent`]. Past
//! [`ServerConfig::congestion_high_bytes`](super::ServerConfig::congestion_high_bytes) the
//! connection is congested: the processes of the session attached to it are paused
//! ([`Command::PauseOutput`]: the runtime stops reading their pipes, so the children block as
//! on a local terminal) and its requests are no longer read ([`Command::PauseReading`]: TCP
//! backpressure reaches the peer). Other connections and their processes are untouched. At or
//! under [`ServerConfig::congestion_low_bytes`](super::ServerConfig::congestion_low_bytes)
//! everything resumes; a connection congested for
//! [`ServerConfig::congestion_timeout`](super::ServerConfig::congestion_timeout) is dropped
//! ([`Output::Drop`]) and its session detaches (its processes resume into the bounded
//! retention, readable after a resume).
//!
//! The same file holds the close grace: a connection the server closed ([`Output::Close`]) whose
//! peer does not finish the close within
//! [`ServerConfig::close_grace`](super::ServerConfig::close_grace) is dropped.

use std::time::Instant;

use super::timers::Timer;
use super::{Command, Conn, Output, Server, SessionId};
use crate::ids::ConnId;
use crate::rpc::{RequestId, RpcError};

impl Server {
    /// Counts a transmitted frame against `conn`; pauses the connection and its session's
    /// processes when it crosses the high mark.
    pub(super) fn count_unsent(&mut self, conn: ConnId, len: usize) {
        let high = self.config.congestion_high_bytes;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.unsent = c.unsent.saturating_add(len);
        if c.congested || c.unsent <= high {
            return;
        }
        c.congested = true;
        // The deadline is stamped by `settle`, which knows `now`.
        self.unsettled.insert(conn);
        self.out
            .push_back(Output::Command(Command::PauseReading { conn }));
        if let Some(sid) = self.attached_session(conn) {
            self.set_session_paused(sid, true);
        }
    }

    /// [`Server::handle_sent`]: un-counts written bytes; resumes at the low mark.
    pub(super) fn on_sent(&mut self, conn: ConnId, bytes: usize) {
        let low = self.config.congestion_low_bytes;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.unsent = c.unsent.saturating_sub(bytes);
        if !c.congested || c.unsent > low {
            return;
        }
        c.congested = false;
        let deadline = c.congestion_deadline.take();
        let closing = c.closing;
        self.disarm(deadline, Timer::Congestion(conn));
        if !closing {
            self.out
                .push_back(Output::Command(Command::ResumeReading { conn }));
        }
        if let Some(sid) = self.attached_session(conn) {
            self.set_session_paused(sid, false);
        }
        self.release_http_credits(conn);
        self.release_fs_credits(conn);
    }

    /// Stamps the deadlines of connections that became congested or closing during this
    /// `handle_*` call. Every public `handle_*` ends here.
    pub(super) fn settle(&mut self, now: Instant) {
        while let Some(conn) = self.unsettled.pop_first() {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let (congested, closing) = (c.congested, c.closing);
            let (stamp_congestion, stamp_close) = (
                congested && c.congestion_deadline.is_none(),
                closing && c.close_deadline.is_none(),
            );
            let congestion = self.config.congestion_timeout;
            let grace = self.config.close_grace;
            if stamp_congestion {
                let at = self.arm(now, congestion, Timer::Congestion(conn));
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.congestion_deadline = at;
                }
            }
            if stamp_close {
                let at = self.arm(now, grace, Timer::CloseGrace(conn));
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.close_deadline = at;
                }
            }
        }
    }

    /// The congestion deadline set at `at` for `conn` passed: drop it and detach its session.
    pub(super) fn on_congestion_timer(&mut self, now: Instant, at: Instant, conn: ConnId) {
        let due = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.congested && c.congestion_deadline == Some(at));
        if due {
            self.drop_conn(now, conn);
        }
    }

    /// The close grace set at `at` for `conn` passed and the runtime has not reported the
    /// disconnect: drop it.
    pub(super) fn on_close_grace_timer(&mut self, at: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing && c.close_deadline == Some(at) {
            c.close_deadline = None;
            self.out.push_back(Output::Drop { conn });
        }
    }

    /// Drops `conn` at once: [`Output::Drop`], its long polls dropped and its session
    /// detached now (the runtime's later `handle_disconnect` finds nothing left to do).
    fn drop_conn(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let sid = c.phase.session();
        c.phase = super::ConnPhase::New;
        c.closing = true;
        c.congested = false;
        let deadlines = (c.congestion_deadline.take(), c.close_deadline.take());
        self.disarm(deadlines.0, Timer::Congestion(conn));
        self.disarm(deadlines.1, Timer::CloseGrace(conn));
        self.out.push_back(Output::Drop { conn });
        self.drop_reads_of(conn);
        if let Some(sid) = sid {
            self.detach(now, sid, conn);
        }
    }

    /// Removes the timers of a connection that is gone.
    pub(super) fn forget_conn_timers(&mut self, conn: ConnId, c: &Conn) {
        self.disarm(c.congestion_deadline, Timer::Congestion(conn));
        self.disarm(c.close_deadline, Timer::CloseGrace(conn));
    }

    /// Pauses or resumes the output of every process of `sid` whose output may still come.
    pub(super) fn set_session_paused(&mut self, sid: SessionId, paused: bool) {
        let Some(session) = self.sessions.get(&sid) else {
            return;
        };
        let keys: Vec<_> = session.processes.values().copied().collect();
        for key in keys {
            if let Some(p) = self.processes.get_mut(&key) {
                p.congestion_hold = paused;
                self.sync_output_pause(key);
            }
        }
    }

    /// The session attached to `conn`, if any.
    pub(super) fn attached_session(&self, conn: ConnId) -> Option<SessionId> {
        let sid = self.conns.get(&conn)?.phase.session()?;
        (self.sessions.get(&sid)?.conn == Some(conn)).then_some(sid)
    }

    /// Whether `conn` is congested (a new process of its session starts paused).
    pub(super) fn is_congested(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.congested)
    }

    /// A connection past [`ServerConfig::max_connections`](super::ServerConfig::max_connections):
    /// one error naming the limit, then closed.
    pub(super) fn refuse_connection(&mut self, conn: ConnId) {
        let msg = format!(
            "too many connections (limit maxConnections = {})",
            self.config.max_connections
        );
        self.reply(
            conn,
            &RequestId::UNREADABLE,
            Err(RpcError::invalid_request(msg)),
        );
        self.close(conn);
    }
}
