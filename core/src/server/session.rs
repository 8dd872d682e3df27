//! Sessions (PROTOCOL.md §6): the unit that owns processes and survives a dropped connection.
//! A session detaches when its connection drops, is resumed by `initialize
//! {resumeSessionId}` on another connection, and expires (its processes killed and forgotten)
//! when it stays detached for the session TTL.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use rand_core::RngCore;

use super::timers::Timer;
use super::{Command, Output, Server};
use crate::ids::{ConnId, Principal, ProcessKey};
use crate::rpc::{ErrorCode, RpcError};

/// A session id: a random UUID v4, the only capability guarding a detached session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub(crate) uuid::Uuid);

impl SessionId {
    /// Parses the wire form (any UUID spelling `uuid` accepts).
    pub fn parse(s: &str) -> Option<SessionId> {
        uuid::Uuid::parse_str(s).ok().map(SessionId)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lower-case, hyphenated, as the Codex exec-server sends it.
        self.0.hyphenated().fmt(f)
    }
}

#[derive(Debug)]
pub(crate) struct Session {
    /// The connection notifications go to; `None` while detached.
    pub(crate) conn: Option<ConnId>,
    /// When the session expires if still detached.
    pub(crate) expires_at: Option<Instant>,
    /// Client process id → key.
    pub(crate) processes: BTreeMap<String, ProcessKey>,
    /// Who opened it; only the same principal may resume it.
    pub(crate) principal: Option<Principal>,
    /// Lossless output, as the last `initialize` that opened or resumed it asked (`lossless`).
    pub(crate) lossless: bool,
}

impl Session {
    pub(crate) fn new(conn: ConnId, principal: Option<Principal>) -> Self {
        Session {
            conn: Some(conn),
            expires_at: None,
            processes: BTreeMap::new(),
            principal,
            lossless: false,
        }
    }
}

impl Server {
    /// A fresh session attached to `conn`, with an unpredictable id from the seeded generator.
    pub(super) fn open_session(&mut self, conn: ConnId) -> SessionId {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        let sid = SessionId(uuid::Builder::from_random_bytes(bytes).into_uuid());
        let principal = self.conns.get(&conn).and_then(|c| c.principal.clone());
        self.sessions.insert(sid, Session::new(conn, principal));
        sid
    }

    /// Re-attaches the detached session `raw` to `conn`.
    ///
    /// Errors: `-32600 unknown session id` (unparsable, unknown, opened by another principal,
    /// or its TTL ran out even if the expiry timer has not fired yet: it expires now); `-32010`
    /// while another connection holds it.
    pub(super) fn resume_session(
        &mut self,
        now: Instant,
        conn: ConnId,
        raw: &str,
    ) -> Result<SessionId, RpcError> {
        let unknown = || RpcError::invalid_request(format!("unknown session id {raw}"));
        let sid = SessionId::parse(raw).ok_or_else(unknown)?;
        let session = self.sessions.get(&sid).ok_or_else(unknown)?;
        let principal = self.conns.get(&conn).and_then(|c| c.principal.as_ref());
        if session.principal.as_ref() != principal {
            // Told apart from an unknown id by nothing, so another principal learns nothing.
            return Err(unknown());
        }
        if session.conn.is_some() {
            return Err(RpcError::new(
                ErrorCode::SessionAttached,
                format!("session {raw} is already attached to another connection"),
            ));
        }
        if session.expires_at.is_some_and(|t| t <= now) {
            self.expire_session(sid);
            return Err(unknown());
        }
        let session = self.sessions.get_mut(&sid).ok_or_else(unknown)?;
        session.conn = Some(conn);
        let expires_at = session.expires_at.take();
        self.disarm(expires_at, Timer::SessionExpiry(sid));
        if self.conns.get(&conn).is_some_and(|c| c.congested) {
            self.set_session_paused(sid, true);
        }
        Ok(sid)
    }

    /// `conn` dropped: when it holds session `sid`, the session detaches and its TTL starts.
    pub(super) fn detach(&mut self, now: Instant, sid: SessionId, conn: ConnId) {
        if let Some(session) = self.sessions.get_mut(&sid) {
            if session.conn == Some(conn) {
                session.conn = None;
                let ttl = self.config.session_ttl;
                // Without a deadline (overflow) the session never expires.
                let expires_at = self.arm(now, ttl, Timer::SessionExpiry(sid));
                if let Some(session) = self.sessions.get_mut(&sid) {
                    session.expires_at = expires_at;
                }
                // Output no longer waits for a connection: it goes to the bounded retention.
                self.set_session_paused(sid, false);
            }
        }
    }

    /// The expiry timer of `sid` fired: expire it if it is still detached and due.
    pub(super) fn on_session_expiry(&mut self, now: Instant, sid: SessionId) {
        let due = self
            .sessions
            .get(&sid)
            .is_some_and(|s| s.conn.is_none() && s.expires_at.is_some_and(|t| t <= now));
        if due {
            self.expire_session(sid);
        }
    }

    /// Kills and forgets every process of a detached session whose TTL ran out.
    pub(super) fn expire_session(&mut self, sid: SessionId) {
        let Some(session) = self.sessions.remove(&sid) else {
            return;
        };
        for key in session.processes.into_values() {
            // Also closed processes: their descendants may outlive them.
            if self.processes.contains_key(&key) {
                self.out.push_back(Output::Command(Command::Kill { key }));
            }
            self.forget(key, true);
        }
    }

    /// The process `process_id` of session `sid`.
    ///
    /// Errors: `-32600 unknown process id <id>`.
    pub(super) fn lookup(&self, sid: SessionId, process_id: &str) -> Result<ProcessKey, RpcError> {
        self.sessions
            .get(&sid)
            .and_then(|s| s.processes.get(process_id))
            .copied()
            .ok_or_else(|| RpcError::invalid_request(format!("unknown process id {process_id}")))
    }
}

/// The error for a request whose session vanished under it.
pub(super) fn session_gone() -> RpcError {
    RpcError::invalid_request("session is gone")
}
