//! The operation grammar of the `server_ops` target: valid-ish requests with random fields,
//! garbage frames, connection churn, process events and time.

use arbitrary::{Arbitrary, Unstructured};

/// A server configuration and the operations to run against it.
#[derive(Debug, Clone, Arbitrary)]
pub struct ServerOps {
    /// Tunables, kept small so that eviction, dedupe windows and TTLs are reached.
    pub config: ConfigChoice,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl ServerOps {
    /// Decodes `data` as a config followed by operations until the input runs out. (The
    /// derived `arbitrary_take_rest` spends a continuation byte per element, which makes
    /// random inputs decode into two or three operations.)
    pub fn from_bytes(data: &[u8]) -> ServerOps {
        let mut u = Unstructured::new(data);
        let config = ConfigChoice::arbitrary(&mut u).unwrap_or(ConfigChoice {
            ttl_units: 0,
            retention_units: 0,
            retained_chunks: 0,
            retained_bytes: 0,
            write_window: 0,
            sandboxed: false,
        });
        let mut ops = Vec::new();
        while !u.is_empty() {
            match Op::arbitrary(&mut u) {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        ServerOps { config, ops }
    }
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
#[derive(Debug, Clone)]
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
        bytes: Bytes<96>,
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
#[derive(Debug, Clone)]
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
        data: Bytes<32>,
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
#[derive(Debug, Clone)]
pub enum Ev {
    /// `Spawned`.
    Spawned(u16),
    /// `SpawnFailed`.
    SpawnFailed,
    /// `Output` on stream `stream % 3` (stdout, stderr, pty).
    Output(u8, Bytes<24>),
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

/// At most `N` bytes, the length read from one byte of the input (so a field cannot swallow
/// the rest of it, as `Vec<u8>` does, and inputs decode into many operations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytes<const N: usize>(pub Vec<u8>);

impl<'a, const N: usize> Arbitrary<'a> for Bytes<N> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = usize::from(u8::arbitrary(u)?) % (N + 1);
        let len = len.min(u.len());
        Ok(Bytes(u.bytes(len)?.to_vec()))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(1 + N))
    }
}

/// Picks one of `weights.len()` choices with the given relative weights.
pub(crate) fn weighted(u: &mut Unstructured<'_>, weights: &[u32]) -> arbitrary::Result<usize> {
    let total: u32 = weights.iter().sum();
    let mut pick = u.int_in_range(0..=total - 1)?;
    for (i, w) in weights.iter().enumerate() {
        if pick < *w {
            return Ok(i);
        }
        pick -= w;
    }
    Ok(weights.len() - 1)
}

// Hand-written rather than derived so that the choices are weighted: uniform choices would
// disconnect and close connections so often that sessions rarely see output.
impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match weighted(u, &[4, 3, 40, 3, 35, 10, 5])? {
            0 => Op::Connect,
            1 => Op::Disconnect(u.arbitrary()?),
            2 => Op::Send {
                conn: u.arbitrary()?,
                req: u.arbitrary()?,
                string_id: u.arbitrary()?,
            },
            3 => Op::Garbage {
                conn: u.arbitrary()?,
                bytes: u.arbitrary()?,
            },
            4 => Op::Event {
                proc: u.arbitrary()?,
                event: u.arbitrary()?,
            },
            5 => Op::AdvanceMs(u.arbitrary()?),
            _ => Op::AdvanceToTimer,
        })
    }
}

impl<'a> Arbitrary<'a> for Req {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(
            match weighted(u, &[5, 4, 12, 15, 15, 5, 5, 5, 4, 4, 2, 1])? {
                0 => Req::Initialize(u.arbitrary()?),
                1 => Req::Initialized,
                2 => Req::Start {
                    id: u.arbitrary()?,
                    empty_argv: u.ratio(1, 16)?,
                    cwd: u.arbitrary()?,
                    tty: u.arbitrary()?,
                    pipe_stdin: u.arbitrary()?,
                },
                3 => Req::Read {
                    id: u.arbitrary()?,
                    after_seq: u.arbitrary()?,
                    max_bytes: u.arbitrary()?,
                    wait_ms: u.arbitrary()?,
                },
                4 => Req::Write {
                    id: u.arbitrary()?,
                    write_id: u.arbitrary()?,
                    data: u.arbitrary()?,
                },
                5 => Req::Terminate(u.arbitrary()?),
                6 => Req::Signal(u.arbitrary()?, u.arbitrary()?),
                7 => Req::CloseStdin(u.arbitrary()?),
                8 => Req::Resize(u.arbitrary()?, u.arbitrary()?, u.arbitrary()?),
                9 => Req::List,
                10 => Req::UnknownMethod,
                _ => Req::UnknownNotification,
            },
        )
    }
}

impl<'a> Arbitrary<'a> for Ev {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match weighted(u, &[15, 3, 40, 15, 10, 5, 3])? {
            0 => Ev::Spawned(u.arbitrary()?),
            1 => Ev::SpawnFailed,
            2 => Ev::Output(u.arbitrary()?, u.arbitrary()?),
            3 => Ev::Eof(u.arbitrary()?),
            4 => Ev::ExitedCode(u.arbitrary()?),
            5 => Ev::ExitedSignal(u.arbitrary()?),
            _ => Ev::StdinClosed,
        })
    }
}
