//! Sessions: the unit that owns processes and survives a dropped connection.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use crate::ids::{ConnId, ProcessKey};

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
}

impl Session {
    pub(crate) fn new(conn: ConnId) -> Self {
        Session {
            conn: Some(conn),
            expires_at: None,
            processes: BTreeMap::new(),
        }
    }
}
