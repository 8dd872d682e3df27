//! Identifier newtypes shared by the server and the runtimes.

use std::fmt;

/// One transport connection (a WebSocket or a stdio pair), allocated by [`crate::Server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The raw number, for logs.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// Who a connection authenticated as, given by the runtime at
/// [`crate::Server::handle_connect_as`]: an opaque string (a token subject, or a digest of the
/// token). A session opened by one principal can be resumed only by the same principal (ext;
/// the reference lets any client that knows a session id resume it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Principal(String);

impl Principal {
    /// A principal named `name`.
    pub fn new(name: impl Into<String>) -> Principal {
        Principal(name.into())
    }

    /// The principal's string form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A server-wide handle for one process, allocated by the core when it asks the runtime to
/// spawn it. Unlike the client-chosen `processId`, it is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessKey(pub(crate) u64);

impl ProcessKey {
    /// The raw number, for logs and runtime tables.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ProcessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proc-{}", self.0)
    }
}

/// A per-process sequence number. Output chunks, `exited` and `closed` share one counter that
/// starts at 1 (matches the Codex exec-server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// The first sequence number a process hands out.
    pub const FIRST: Seq = Seq(1);

    /// The next sequence number. Saturates: a process would need 2^64 events to get there.
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
