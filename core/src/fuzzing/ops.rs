//! The operation grammar of the `server_ops` target: valid-ish requests with random fields,
//! garbage frames, connection churn, process events and time.

use arbitrary::Arbitrary;

/// A server configuration and the operations to run against it.
#[derive(Debug, Clone, Arbitrary)]
pub struct ServerOps {
    /// Tunables, kept small so that eviction, dedupe windows and TTLs are reached.
    pub config: ConfigChoice,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

/// Small server tunables.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct ConfigChoice {
    /// Session TTL in units of 100 ms (plus one unit).
    pub ttl_units: u8,
    /// Closed-process retention in units of 100 ms (plus one unit).
    pub retention_units: u8,
    /// Retained chunks per process (plus one).
    pub retained_chunks: u8,
    /// Retained bytes per process (plus one).
    pub retained_bytes: u8,
    /// Write ids remembered per process (plus one).
    pub write_window: u8,
    /// Run every process under the (simulated) landlock sandbox.
    pub sandboxed: bool,
}

/// One step.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// Open a connection.
    Connect,
    /// Close the `n`th open connection (modulo).
    Disconnect(u8),
    /// Send a request or notification on the `conn`th open connection.
    Send {
        /// Which open connection (modulo).
        conn: u8,
        /// What to send.
        req: Req,
        /// Use a string request id.
        string_id: bool,
    },
    /// Send raw bytes (skipped when they decode as a request or notification).
    Garbage {
        /// Which open connection (modulo).
        conn: u8,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// A runtime event for the `proc`th process ever spawned (modulo).
    Event {
        /// Which spawned process (modulo), possibly one already forgotten.
        proc: u8,
        /// What happened.
        event: Ev,
    },
    /// Advance the clock by this many ms and fire timers.
    AdvanceMs(u16),
    /// Advance the clock to the server's next timer and fire it.
    AdvanceToTimer,
}

/// A request (or notification) from the small grammar. Process ids come from a pool of four
/// plus the empty id.
#[derive(Debug, Clone, Arbitrary)]
pub enum Req {
    /// `initialize`.
    Initialize(Resume),
    /// The `initialized` notification.
    Initialized,
    /// `process/start`.
    Start {
        /// Process id from the pool.
        id: u8,
        /// Send an empty argv.
        empty_argv: bool,
        /// 0: `file:///tmp`; 1: a foreign host; 2: a bare path; else `file:///w/<n>`.
        cwd: u8,
        /// Run on a PTY.
        tty: bool,
        /// Keep a stdin pipe.
        pipe_stdin: bool,
    },
    /// `process/read`.
    Read {
        /// Process id from the pool.
        id: u8,
        /// `afterSeq`.
        after_seq: Option<u8>,
        /// `maxBytes`.
        max_bytes: Option<u8>,
        /// `waitMs`.
        wait_ms: Option<u16>,
    },
    /// `process/write`.
    Write {
        /// Process id from the pool.
        id: u8,
        /// 0: no writeId; 1: empty; else one of a pool of eight.
        write_id: u8,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `process/terminate`.
    Terminate(u8),
    /// `process/signal`, with a signal name from a small pool (some invalid).
    Signal(u8, u8),
    /// `process/closeStdin`.
    CloseStdin(u8),
    /// `process/resize`.
    Resize(u8, u16, u16),
    /// `process/list`.
    List,
    /// A method the server does not know.
    UnknownMethod,
    /// A notification the server does not know (closes the connection).
    UnknownNotification,
}

/// The `resumeSessionId` of an `initialize`.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Resume {
    /// A new session.
    New,
    /// The `n`th session ever created (modulo), alive or not.
    Known(u8),
    /// A random UUID.
    Random([u8; 16]),
    /// Not a UUID.
    Malformed,
}

/// A runtime event.
#[derive(Debug, Clone, Arbitrary)]
pub enum Ev {
    /// `Spawned`.
    Spawned(u16),
    /// `SpawnFailed`.
    SpawnFailed,
    /// `Output` on stream `stream % 3` (stdout, stderr, pty).
    Output(u8, Vec<u8>),
    /// `Eof` on stream `stream % 3`.
    Eof(u8),
    /// `Exited` with a code.
    ExitedCode(i32),
    /// `Exited` by signal `1 + n % 64`.
    ExitedSignal(u8),
    /// `StdinClosed`.
    StdinClosed,
}

pub(crate) const PROCESS_IDS: [&str; 5] = ["p0", "p1", "p2", "p3", ""];
pub(crate) const SIGNALS: [&str; 6] = ["interrupt", "SIGTERM", "SIGKILL", "HUP", "SIGBOGUS", ""];

pub(crate) fn process_id(n: u8) -> &'static str {
    PROCESS_IDS[usize::from(n) % PROCESS_IDS.len()]
}
