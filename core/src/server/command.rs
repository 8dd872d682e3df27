//! What the server machine asks its runtime to do, and what the runtime reports back.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::fs::FsTicket;
use super::HttpTicket;
use crate::ids::{ConnId, ProcessKey};
use crate::protocol::{FsOp, HttpRequest, SandboxType, Signal, Stream};

/// One unit of output from [`crate::Server::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send one JSON-RPC message (a response or a notification) as one frame on `conn`.
    Transmit {
        /// The connection to send on.
        conn: ConnId,
        /// The frame: one JSON text, without a trailing newline.
        text: String,
    },
    /// ext: send one binary frame on `conn` (a WebSocket binary message): a `process/output`
    /// frame of PROTOCOL.md §2.5, given only to connections that negotiated binary frames
    /// (see [`Server::allow_binary_frames`](crate::Server::allow_binary_frames)).
    TransmitBinary {
        /// The connection to send on.
        conn: ConnId,
        /// The whole message: header and raw bytes.
        frame: Vec<u8>,
    },
    /// Close `conn` after flushing what was transmitted before (e.g. after a protocol violation
    /// that the reference answers by closing).
    Close {
        /// The connection to close.
        conn: ConnId,
    },
    /// Drop `conn` now, without flushing: abort the socket (no close handshake) and stop its
    /// tasks, then report [`Server::handle_disconnect`](crate::Server::handle_disconnect). Given
    /// when a closed connection's peer did not finish the close within
    /// [`ServerConfig::close_grace`](crate::ServerConfig::close_grace), when a connection stayed
    /// congested for [`ServerConfig::congestion_timeout`](crate::ServerConfig::congestion_timeout)
    /// (its session is already detached), and for a connection past
    /// [`ServerConfig::max_connections`](crate::ServerConfig::max_connections) that did not go
    /// away.
    Drop {
        /// The connection to drop.
        conn: ConnId,
    },
    /// Perform a side effect.
    Command(Command),
}

/// A side effect for the runtime to perform. Results come back through
/// [`crate::Server::handle_process`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start a process. Answer with [`ProcessEvent::Spawned`] or [`ProcessEvent::SpawnFailed`],
    /// then stream [`ProcessEvent::Output`], [`ProcessEvent::Eof`] and [`ProcessEvent::Exited`].
    Spawn {
        /// The handle the core uses for this process from now on.
        key: ProcessKey,
        /// What to run and how.
        spec: SpawnSpec,
    },
    /// Write bytes to the process's stdin (pipe or PTY master), in order after earlier writes.
    WriteStdin {
        /// The process.
        key: ProcessKey,
        /// The bytes; never empty.
        bytes: Vec<u8>,
    },
    /// Close the process's stdin (EOF), after any queued writes.
    CloseStdin {
        /// The process.
        key: ProcessKey,
    },
    /// Deliver `signal` to the process group the process leads.
    Signal {
        /// The process.
        key: ProcessKey,
        /// The signal.
        signal: Signal,
    },
    /// SIGKILL the whole process group. Exit and EOF events still follow as usual.
    Kill {
        /// The process.
        key: ProcessKey,
    },
    /// Resize a PTY process's terminal.
    Resize {
        /// The process.
        key: ProcessKey,
        /// Rows (lines).
        rows: u16,
        /// Columns (characters).
        cols: u16,
    },
    /// The core forgot this process: drop any runtime state kept for it. Events reported for
    /// it afterwards are ignored.
    Release {
        /// The process.
        key: ProcessKey,
    },
    /// Perform a validated `http/request`. Answer through [`crate::Server::handle_http`]:
    /// buffered (`request.stream == false`): one [`HttpEvent::Head`](super::HttpEvent::Head)
    /// carrying the whole body, or [`HttpEvent::Failed`](super::HttpEvent::Failed). Streamed:
    /// `Head` (empty body) or `Failed`, then one [`HttpEvent::Chunk`](super::HttpEvent::Chunk)
    /// per [`Command::HttpPull`] and finally [`HttpEvent::End`](super::HttpEvent::End).
    Http {
        /// The handle of this request from now on.
        ticket: HttpTicket,
        /// What to send.
        request: HttpRequest,
    },
    /// Streamed request `ticket` may read one more body chunk from the network (one credit;
    /// credits add up). Issued after the head and after each chunk's deltas were queued for
    /// `conn`, and only while `conn` is not congested (held until it drains), so the body is
    /// read only as fast as the client takes it.
    HttpPull {
        /// The request.
        ticket: HttpTicket,
        /// The connection its deltas go to.
        conn: ConnId,
    },
    /// Stop request `ticket` (cancelled, or its connection closed): drop it and close its
    /// network connection. Events reported for it afterwards are ignored.
    HttpCancel {
        /// The request.
        ticket: HttpTicket,
    },
    /// Perform one fs operation for `conn`, off the event loop (it blocks), with `conn`'s
    /// file handles (`execd_runtime::fs::perform`). Operations on handles of one connection
    /// run in the order given. Answer with [`crate::Server::handle_fs`].
    Fs {
        /// Names this operation's answer.
        ticket: FsTicket,
        /// The connection whose file handles the operation uses.
        conn: ConnId,
        /// The validated operation.
        op: FsOp,
        /// The request's resolved `sandbox`, already checked on the paths as given
        /// ([`check_fs_op`](crate::sandbox::check_fs_op)); the runtime checks it again on the
        /// canonical paths (symlinks resolved) just before performing `op`.
        sandbox: Option<crate::sandbox::SandboxPolicy>,
        /// `Some(n)` for an `fs/readFile` whose answer goes out as binary result frames: the
        /// runtime hands the file's bytes ahead in pieces of `n` bytes with
        /// [`crate::Server::handle_fs_piece`] while it reads, one piece per
        /// [`Command::FsPull`] credit, the final [`crate::Server::handle_fs`] then carrying the
        /// rest (or an error, which voids the pieces). `None`: the whole result in
        /// `handle_fs`.
        pieces: Option<usize>,
    },
    /// `fs/readFile` `ticket` (with [`Command::Fs::pieces`]) may read one more piece (one
    /// credit; credits add up). A window of credits follows the `Fs` command, then one per
    /// piece queued for `conn`, only while `conn` is not congested (held until it drains), so
    /// the file is read only as fast as the client takes it.
    FsPull {
        /// The read.
        ticket: FsTicket,
    },
    /// `conn` is gone: drop its file handles (closing the files), its `fs/watchMissing`
    /// watches and its `fs/watch` watches. Answers to its operations still in flight are ignored.
    FsCloseConnection {
        /// The connection.
        conn: ConnId,
    },
    /// Install watch `watch_id` of `conn` (replacing none: the core never reuses a live id):
    /// answer with [`crate::Server::handle_fs`] and
    /// [`FsResult::WatchMissing`](crate::protocol::FsResult::WatchMissing) — `watching:
    /// false` (and no watch) when a `missing` path already exists or `present` does not.
    /// Once a `missing` path appears (or its nearest existing ancestor or `present` changes),
    /// report it once with [`crate::Server::handle_fs_watch_event`] and forget the watch.
    WatchMissing {
        /// Names the install answer.
        ticket: FsTicket,
        /// The connection that owns the watch.
        conn: ConnId,
        /// The client-chosen id, unique among `conn`'s live watches.
        watch_id: u64,
        /// Host paths expected to appear; never empty.
        missing: Vec<PathBuf>,
        /// A path the client knows exists (Codex sends the workspace root).
        present: Option<PathBuf>,
    },
    /// Remove watch `watch_id` of `conn` (`fs/watchMissing` with an empty list); nothing
    /// when it is not installed.
    UnwatchMissing {
        /// The connection.
        conn: ConnId,
        /// The watch.
        watch_id: u64,
    },
    /// ext: install `fs/watch` watch `watch_id` of `conn` on `path` (which must exist: else
    /// answer with the error, e.g. not found). Answer with [`crate::Server::handle_fs`] and
    /// [`FsResult::Empty`](crate::protocol::FsResult::Empty); from then on report every change
    /// under it with [`crate::Server::handle_fs_change`] until [`Command::FsUnwatch`] or
    /// [`Command::FsCloseConnection`]. A second install of a live id replaces the first.
    FsWatch {
        /// Names the install answer.
        ticket: FsTicket,
        /// The connection that owns the watch.
        conn: ConnId,
        /// The client-chosen id.
        watch_id: u64,
        /// The host path.
        path: PathBuf,
        /// Watch the whole tree below a directory (else the path and its direct entries).
        recursive: bool,
    },
    /// ext: remove `fs/watch` watch `watch_id` of `conn`; nothing when it is not installed.
    FsUnwatch {
        /// The connection.
        conn: ConnId,
        /// The watch.
        watch_id: u64,
    },
    /// Stop reading the process's output (pipes or PTY master) until [`Command::ResumeOutput`]:
    /// the connection its output goes to is congested. The child blocks on a full pipe, as on a
    /// local terminal; its exit is still reported, and its EOFs once reading resumes.
    PauseOutput {
        /// The process.
        key: ProcessKey,
    },
    /// Read the process's output again after [`Command::PauseOutput`].
    ResumeOutput {
        /// The process.
        key: ProcessKey,
    },
    /// Stop reading frames from `conn` until [`Command::ResumeReading`]: it does not read what
    /// it is sent, so TCP backpressure should reach its peer rather than server memory grow.
    PauseReading {
        /// The connection.
        conn: ConnId,
    },
    /// Read frames from `conn` again after [`Command::PauseReading`].
    ResumeReading {
        /// The connection.
        conn: ConnId,
    },
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    /// Rows (lines).
    pub rows: u16,
    /// Columns (characters).
    pub cols: u16,
}

/// How to start one process. Built by the core from a validated `process/start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    /// Program and arguments; never empty. `argv[0]` is the program looked up in `PATH` of
    /// `env` (or of the server when `env` has no `PATH`).
    pub argv: Vec<String>,
    /// Override of `argv[0]` as the child sees it (the program run is still `argv[0]`).
    pub arg0: Option<String>,
    /// Working directory, an absolute host path decoded from a PathUri.
    pub cwd: PathBuf,
    /// The child's exact environment, already built from `env` and `envPolicy` and validated
    /// (names non-empty, no `=` or NUL): the runtime inherits nothing from the server.
    pub env: BTreeMap<String, String>,
    /// Run on a PTY of [`pty_size`](Self::pty_size); output comes as [`Stream::Pty`].
    pub tty: bool,
    /// The PTY's initial size (from
    /// [`ServerConfig::pty_size`](crate::ServerConfig::pty_size), default 24 × 80); ignored
    /// without `tty`.
    pub pty_size: PtySize,
    /// Keep a stdin pipe open for writes (non-PTY). Without it stdin is `/dev/null`.
    pub pipe_stdin: bool,
    /// The sandbox reported for the process: [`SandboxType::LinuxSeccomp`] when
    /// [`sandbox_policy`](Self::sandbox_policy) is set.
    pub sandbox: SandboxType,
    /// The resolved `sandbox` of the start, to apply between fork and exec. The runtime must
    /// enforce all of it or fail the spawn with [`SpawnErrorKind::Sandbox`] (fail closed).
    pub sandbox_policy: Option<crate::sandbox::SandboxPolicy>,
}

/// Something that happened to a process, reported by the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessEvent {
    /// The process started.
    Spawned {
        /// Its OS process id (also its process group id).
        pid: u32,
    },
    /// The process could not be started; no other event follows.
    SpawnFailed {
        /// What went wrong, as far as the runtime can tell.
        kind: SpawnErrorKind,
        /// The OS error text, e.g. "No such file or directory (os error 2)".
        error: String,
    },
    /// Bytes read from an output stream, in order. Never empty.
    Output {
        /// The stream the bytes came from.
        stream: Stream,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// An output stream reached end of file. A process has two streams (stdout and stderr), or
    /// one (pty) when it runs on a PTY.
    Eof {
        /// The stream.
        stream: Stream,
    },
    /// The process exited (reaped).
    Exited {
        /// How it ended.
        status: ExitStatus,
    },
    /// Writing to stdin failed (the child closed it); later writes report `stdinClosed`.
    StdinClosed,
    /// `bytes` of the queued [`Command::WriteStdin`] data reached the child (or were dropped
    /// because its stdin closed): they no longer count against
    /// [`ServerConfig::max_stdin_queued_bytes`](crate::ServerConfig::max_stdin_queued_bytes).
    StdinWritten {
        /// How many bytes.
        bytes: usize,
    },
}

/// Why a spawn failed, decided by the runtime from the OS error and the `cwd`; sent to the
/// client as `error.data.kind` of the `-32603` answer (PROTOCOL.md §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnErrorKind {
    /// The program was not found (`ENOENT` on the program; wire `"notFound"`).
    NotFound,
    /// The program exists but may not be executed (`EACCES`, `ENOEXEC`, a directory; wire
    /// `"permissionDenied"`).
    PermissionDenied,
    /// The working directory does not exist or is not a directory (wire `"badCwd"`).
    BadCwd,
    /// The requested sandbox could not be built (wire `"sandbox"`); the start is answered
    /// `-32602` "failed to prepare process sandbox: …", as the reference answers it.
    Sandbox,
    /// Anything else (wire `"other"`).
    Other,
}

impl SpawnErrorKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SpawnErrorKind::NotFound => "notFound",
            SpawnErrorKind::PermissionDenied => "permissionDenied",
            SpawnErrorKind::BadCwd => "badCwd",
            SpawnErrorKind::Sandbox => "sandbox",
            SpawnErrorKind::Other => "other",
        }
    }

    /// The kind named `name` on the wire; unknown names are [`SpawnErrorKind::Other`].
    pub fn from_name(name: &str) -> SpawnErrorKind {
        match name {
            "notFound" => SpawnErrorKind::NotFound,
            "permissionDenied" => SpawnErrorKind::PermissionDenied,
            "badCwd" => SpawnErrorKind::BadCwd,
            "sandbox" => SpawnErrorKind::Sandbox,
            _ => SpawnErrorKind::Other,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit(code)`.
    Code(i32),
    /// A signal killed it (the number, e.g. 9 for SIGKILL).
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signo) => signo.saturating_add(128),
        }
    }
}
