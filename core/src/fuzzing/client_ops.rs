//! The operation grammar of the `client_ops` target: client calls, child process behaviour,
//! the network between the client and the server (delivery, delay, drops, reconnects), time,
//! and hostile frames injected into the client.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use super::ops::{weighted, Bytes};

/// A client and server configuration and the operations to run against them.
#[derive(Debug, Clone)]
pub struct ClientOps {
    /// Tunables, kept small so that backoff, the recovery window, the session TTL, closed
    /// retention and output eviction are all reached.
    pub config: ClientConfigChoice,
    /// The operations, in order.
    pub ops: Vec<ClientOp>,
}

impl ClientOps {
    /// Decodes `data` as a config followed by operations until the input runs out.
    pub fn from_bytes(data: &[u8]) -> ClientOps {
        let mut u = Unstructured::new(data);
        let config = ClientConfigChoice::arbitrary(&mut u).unwrap_or_default();
        let mut ops = Vec::new();
        while !u.is_empty() {
            match ClientOp::arbitrary(&mut u) {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        ClientOps { config, ops }
    }
}

/// Small tunables for both ends.
#[derive(Debug, Clone, Copy, Default, Arbitrary)]
pub struct ClientConfigChoice {
    /// Bits 0 and 1 both set turn recovery off (on by default, as in `ClientConfig`); bit 2
    /// holds spawns until an operation answers them; bits 3 and 5 both set leave `Reconnect`
    /// requests to operations instead of answering them at once; bit 4 allows hostile frames
    /// that could pass for the server's own (they end the content checks, so most runs go
    /// without); bit 6 asks for lossless output.
    pub flags: u8,
    /// Recovery window in units of 250 ms (plus one unit, modulo 32).
    pub window_units: u8,
    /// First backoff step in units of 10 ms (plus one unit, modulo 16); bits 4 and 5 pick
    /// the client's recovery read page (see [`ClientConfigChoice::recovery_read_bytes`]).
    pub backoff_units: u8,
    /// Largest backoff step: the first one doubled `n % 6` times.
    pub backoff_doublings: u8,
    /// Session TTL in units of 250 ms (plus one unit, modulo 32).
    pub ttl_units: u8,
    /// Closed-process retention in units of 100 ms (plus one unit, modulo 64).
    pub retention_units: u8,
    /// Retained chunks per process: below 128 the default (no eviction in practice), else
    /// `1 + n % 8`.
    pub retained_chunks: u8,
    /// Retained bytes per process: below 128 the default, else `1 + n % 64`.
    pub retained_bytes: u8,
}

impl ClientConfigChoice {
    /// Whether the client recovers dropped connections.
    pub fn recovery(&self) -> bool {
        self.flags & 3 != 3
    }

    /// Whether the client asks for lossless output (bit 6; off by default, so older corpus
    /// entries keep their meaning).
    pub fn lossless(&self) -> bool {
        self.flags & 64 != 0
    }

    /// Whether spawns wait for a [`ClientOp::SpawnResult`] (else they succeed at once).
    pub fn hold_spawns(&self) -> bool {
        self.flags & 4 != 0
    }

    /// Whether `Reconnect` waits for a [`ClientOp::Reconnect`] (else it is answered at once,
    /// succeeding unless a `Reconnect { ok: false }` asked for a failure).
    pub fn manual_connect(&self) -> bool {
        self.flags & 0b10_1000 == 0b10_1000
    }

    /// Whether forged frames are sent (else [`ClientOp::Hostile`] sends only harmless ones:
    /// garbage, unknown methods, stray ids, duplicates).
    pub fn forgeries(&self) -> bool {
        self.flags & 16 != 0
    }

    /// The client's recovery window.
    pub fn recovery_window(&self) -> Duration {
        Duration::from_millis(250 * (1 + u64::from(self.window_units % 32)))
    }

    /// The client's first backoff step.
    pub fn backoff_initial(&self) -> Duration {
        Duration::from_millis(10 * (1 + u64::from(self.backoff_units % 16)))
    }

    /// The `maxBytes` of the client's recovery reads: the default, or 1, 8 or 64 bytes (so
    /// that small retention limits still leave reads cut into pages).
    pub fn recovery_read_bytes(&self) -> u64 {
        match (self.backoff_units >> 4) & 3 {
            0 => crate::client::ClientConfig::default().recovery_read_bytes,
            1 => 1,
            2 => 8,
            _ => 64,
        }
    }

    /// The client's largest backoff step.
    pub fn backoff_max(&self) -> Duration {
        self.backoff_initial() * (1 << (self.backoff_doublings % 6))
    }

    /// The server's session TTL.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_millis(250 * (1 + u64::from(self.ttl_units % 32)))
    }

    /// The server's closed-process retention.
    pub fn closed_retention(&self) -> Duration {
        Duration::from_millis(100 * (1 + u64::from(self.retention_units % 64)))
    }

    /// The server's retained chunks per process, if small.
    pub fn retained_chunks(&self) -> Option<usize> {
        (self.retained_chunks >= 128).then(|| 1 + usize::from(self.retained_chunks % 8))
    }

    /// The server's retained bytes per process, if small.
    pub fn retained_bytes(&self) -> Option<usize> {
        (self.retained_bytes >= 128).then(|| 1 + usize::from(self.retained_bytes % 64))
    }
}

/// One step.
#[derive(Debug, Clone)]
pub enum ClientOp {
    /// `Client::start` of a process id from the pool: the first one from `pid` on that the
    /// client does not track and the server does not hold (skipped when there is none).
    Start {
        /// Where to start looking in the pool.
        pid: u8,
        /// Run on a PTY.
        tty: bool,
        /// Keep a stdin pipe.
        pipe_stdin: bool,
    },
    /// `process/start` of a process id the client still tracks (the server refuses it while
    /// it holds the process).
    StartTracked(u8),
    /// `Client::write` to a process id from the pool (tracked or not).
    Write {
        /// Process id from the pool.
        pid: u8,
        /// The bytes (maybe empty).
        bytes: Bytes<16>,
    },
    /// Another call, made with `Client::call`.
    Call(Call),
    /// `Client::close`.
    CloseClient,
    /// Something the `proc`th spawned child does (modulo; skipped when it cannot).
    Child {
        /// Which spawned child (modulo).
        proc: u8,
        /// What it does.
        act: ChildAct,
    },
    /// Answers the `which`th held spawn (modulo).
    SpawnResult {
        /// Which held spawn (modulo).
        which: u8,
        /// Report `SpawnFailed` instead of `Spawned`.
        fail: bool,
    },
    /// Deliver up to this many frames from the client to the server.
    ToServer(u8),
    /// Deliver up to this many frames from the server to the client.
    ToClient(u8),
    /// Deliver frames both ways until both sides are quiet.
    Settle,
    /// The client's transport drops; frames in flight are lost. The server learns of it now
    /// or only at a later [`ClientOp::NoticeDrops`] (meanwhile a resume gets `-32010`).
    Drop {
        /// Whether the server notices at once.
        server_notices: bool,
    },
    /// The server notices every transport drop it missed.
    NoticeDrops,
    /// Answers a pending `Reconnect` (manual mode); in automatic mode `ok: false` makes the
    /// next attempt fail.
    Reconnect {
        /// Whether the transport opens.
        ok: bool,
    },
    /// Advance the clock by `n² / 26` ms (up to 2.5 s, mostly much less).
    Advance(u8),
    /// Advance the clock to the client's next timeout.
    AdvanceToClientTimer,
    /// Advance the clock to the server's next timer.
    AdvanceToServerTimer,
    /// A frame no correct server sends, handed to the client.
    Hostile(Hostile),
}

/// A call other than start and write. Process ids come from the pool.
#[derive(Debug, Clone, Copy)]
pub enum Call {
    /// `process/read`, maybe a long poll (`wait` in units of 10 ms).
    Read {
        /// Process id from the pool.
        pid: u8,
        /// `afterSeq`.
        after_seq: Option<u8>,
        /// `waitMs / 10`.
        wait: Option<u8>,
    },
    /// `process/terminate`.
    Terminate(u8),
    /// `process/signal` with `SIGTERM`, `interrupt` or `SIGBOGUS`.
    Signal(u8, u8),
    /// `process/closeStdin` (the fake child, like `cat`, exits at stdin EOF).
    CloseStdin(u8),
    /// `process/resize`.
    Resize(u8),
    /// `process/list`.
    List,
    /// A method the server does not know.
    Unknown,
}

/// What a fake child does.
#[derive(Debug, Clone)]
pub enum ChildAct {
    /// Writes bytes to stream `n % 2` (stdout, stderr; a PTY child uses its one stream).
    Output(u8, Bytes<12>),
    /// Closes output stream `n % 2`.
    Eof(u8),
    /// Exits with a code; output streams may stay open (descendants).
    Exit(u8),
    /// Exits with a code and closes every output stream.
    Finish(u8),
    /// Closes its end of the stdin pipe (later writes fail).
    StdinGone,
}

/// A hostile frame.
#[derive(Debug, Clone)]
pub enum Hostile {
    /// Raw bytes.
    Garbage(Bytes<48>),
    /// A notification with a method the client does not know.
    UnknownNotification,
    /// A response to an id the client never used.
    StrayResponse(u8),
    /// A notification for a process id the client never tracks.
    UntrackedNotification(u8),
    /// A frame the server sent earlier, again (the `n`th from the end, modulo).
    Replay(u8),
    /// A made-up notification for a pool process: output, exited or closed (`kind % 3`)
    /// with a seq near the client's cursor.
    Forged {
        /// Which notification.
        kind: u8,
        /// Process id from the pool.
        pid: u8,
        /// Offset from the client's last seq.
        delta: i8,
        /// Output bytes.
        bytes: Bytes<8>,
    },
    /// A made-up answer to a pending request (the `n`th most recent id, modulo): a read-like
    /// result, `unknown process id`, `-32010`, or an unreadable result (`kind % 4`).
    ForgedResponse {
        /// Which request.
        back: u8,
        /// Which answer.
        kind: u8,
        /// `nextSeq` and chunk seq material.
        seq: u8,
    },
}

/// Size of the process id pool.
pub(crate) const POOL: usize = 6;

/// The process id of pool slot `n` (modulo).
pub(crate) fn pool_id(n: u8) -> String {
    format!("p{}", usize::from(n) % POOL)
}

// Hand-written so that the choices are weighted: mostly calls, child output and deliveries,
// with drops and hostile frames rare enough that sessions get somewhere between them.
impl<'a> Arbitrary<'a> for ClientOp {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // `CloseClient` ends everything, so it is very rare.
        let weights = [
            120, 20, 100, 80, 1, 240, 30, 140, 140, 50, 40, 20, 120, 40, 8, 8, 30,
        ];
        Ok(match weighted(u, &weights)? {
            0 => ClientOp::Start {
                pid: u.arbitrary()?,
                tty: u.ratio(1, 4)?,
                pipe_stdin: u.ratio(3, 4)?,
            },
            1 => ClientOp::StartTracked(u.arbitrary()?),
            2 => ClientOp::Write {
                pid: u.arbitrary()?,
                bytes: u.arbitrary()?,
            },
            3 => ClientOp::Call(u.arbitrary()?),
            // Ends the run's interest; one in about 300,000 operations.
            4 if u.arbitrary::<u8>()? == 0 => ClientOp::CloseClient,
            4 => ClientOp::Settle,
            5 => ClientOp::Child {
                proc: u.arbitrary()?,
                act: u.arbitrary()?,
            },
            6 => ClientOp::SpawnResult {
                which: u.arbitrary()?,
                fail: u.ratio(1, 4)?,
            },
            7 => ClientOp::ToServer(u.arbitrary()?),
            8 => ClientOp::ToClient(u.arbitrary()?),
            9 => ClientOp::Settle,
            10 => ClientOp::Drop {
                server_notices: u.arbitrary()?,
            },
            11 => ClientOp::NoticeDrops,
            12 => ClientOp::Reconnect { ok: u.ratio(3, 4)? },
            13 => ClientOp::Advance(u.arbitrary()?),
            14 => ClientOp::AdvanceToClientTimer,
            15 => ClientOp::AdvanceToServerTimer,
            _ => ClientOp::Hostile(u.arbitrary()?),
        })
    }
}

impl<'a> Arbitrary<'a> for Call {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match weighted(u, &[10, 4, 3, 4, 1, 2, 1])? {
            0 => Call::Read {
                pid: u.arbitrary()?,
                after_seq: u.arbitrary()?,
                wait: u.arbitrary()?,
            },
            1 => Call::Terminate(u.arbitrary()?),
            2 => Call::Signal(u.arbitrary()?, u.arbitrary()?),
            3 => Call::CloseStdin(u.arbitrary()?),
            4 => Call::Resize(u.arbitrary()?),
            5 => Call::List,
            _ => Call::Unknown,
        })
    }
}

impl<'a> Arbitrary<'a> for ChildAct {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match weighted(u, &[40, 6, 4, 6, 2])? {
            0 => ChildAct::Output(u.arbitrary()?, u.arbitrary()?),
            1 => ChildAct::Eof(u.arbitrary()?),
            2 => ChildAct::Exit(u.arbitrary()?),
            3 => ChildAct::Finish(u.arbitrary()?),
            _ => ChildAct::StdinGone,
        })
    }
}

impl<'a> Arbitrary<'a> for Hostile {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match weighted(u, &[3, 1, 2, 1, 4, 3, 3])? {
            0 => Hostile::Garbage(u.arbitrary()?),
            1 => Hostile::UnknownNotification,
            2 => Hostile::StrayResponse(u.arbitrary()?),
            3 => Hostile::UntrackedNotification(u.arbitrary()?),
            4 => Hostile::Replay(u.arbitrary()?),
            5 => Hostile::Forged {
                kind: u.arbitrary()?,
                pid: u.arbitrary()?,
                delta: u.arbitrary()?,
                bytes: u.arbitrary()?,
            },
            _ => Hostile::ForgedResponse {
                back: u.arbitrary()?,
                kind: u.arbitrary()?,
                seq: u.arbitrary()?,
            },
        })
    }
}
