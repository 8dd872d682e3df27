use std::collections::BTreeMap;
use std::time::Duration;

use crate::protocol::{EnvironmentInfo, FsPolicy, SandboxType};

/// Tunables of the [`crate::Server`]. Defaults match the Codex exec-server where it has a
/// rule; every limit is documented with its default in `docs/PROTOCOL.md` §2.3, and every error
/// it causes names the limit by its camelCase name and value (e.g. `-32600 too many processes
/// in this session (limit maxProcessesPerSession = 1024)`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// How long a detached session lives before it expires and its processes are killed.
    /// Default 30 s (PROTOCOL.md: at least 30 s; the reference was observed at about 80 s).
    pub session_ttl: Duration,
    /// How long a closed process stays readable before it is forgotten and its id may be
    /// reused. Default 30 s (the reference was observed keeping them about 80 s).
    pub closed_retention: Duration,
    /// Retained output per process, in bytes (reference: 1 MiB).
    pub retained_bytes: usize,
    /// Retained output per process, in chunks (reference: 50,000).
    pub retained_chunks: usize,
    /// ext, lossless output (PROTOCOL.md §5.11): unacknowledged output bytes per process at
    /// which a lossless session's process stops being read until its client acknowledges.
    /// Capped at [`retained_bytes`](Self::retained_bytes), so lossless output needs no more
    /// memory than the retention (plus what the runtime had already read when the pause came:
    /// one read per stream, and the pipes' contents after an exit). Default 1 MiB.
    pub lossless_window_bytes: usize,
    /// Accepted write ids remembered per process (reference: 4,096).
    pub write_id_window: usize,
    /// Largest inbound frame, in bytes; larger frames are answered with `-32600`. Default
    /// 64 MiB.
    pub max_frame_bytes: usize,
    /// Most JSON values one inbound frame may hold (reference: 262,144).
    pub max_json_values: usize,
    /// Longest `waitMs` honoured for a `process/read` long poll. Default 10 minutes.
    pub max_read_wait: Duration,
    /// The sandbox applied to every process. Default [`SandboxType::None`].
    pub sandbox: SandboxType,
    /// How long to wait for trailing output after a sandboxed process exits before classifying
    /// it (reference: 20 ms).
    pub sandbox_grace: Duration,
    /// The `environment/info` result, also the `environmentInfo` of the `initialize` result.
    /// The core cannot look at the host, so the runtime fills it in once at startup
    /// (`execd_runtime::host::host_environment_info`); `None` omits it from `initialize` and
    /// answers `environment/info` with `-32603`.
    pub environment_info: Option<EnvironmentInfo>,
    /// The server's own environment, the source of a child's variables under an `envPolicy`
    /// (PROTOCOL.md, child environment). The core reads no environment: the runtime fills it
    /// in once at startup (UTF-8 pairs only). Default empty.
    pub host_env: BTreeMap<String, String>,
    /// Rules the core applies to every fs request (the `fs/readFile` size cap, birth times).
    pub fs_policy: FsPolicy,
    /// Most fs requests (`fs/*` including `fs/watchMissing` installs) one connection may have
    /// in flight; more are refused with `-32600`. Default 64 (the reference serves one
    /// request at a time per connection, so it needs no bound).
    pub max_fs_in_flight: usize,
    /// Most `fs/readFile`s answered whole (JSON connections; binary ones stream in pieces on
    /// credits, §2.5) one connection may have running; later ones wait in order until one is
    /// answered and the connection is not congested. A whole file is held in memory until it
    /// is written, so this bounds what a client that stops reading can make the server hold
    /// (about this many × the `fs/readFile` cap × 4/3). Default 2.
    pub max_whole_file_reads: usize,
    /// ext: most live `fs/watch` watches per connection (installing or installed); one more is
    /// refused with `-32600`. Each recursive watch costs one inotify watch per directory of its
    /// tree (the kernel's `max_user_watches` is shared by the user). Default 64.
    pub max_fs_watches: usize,
    /// ext: how long an `fs/watch` watch gathers changes before sending them as `fs/changed`
    /// notifications (one per kind); the window opens at the first change. Zero sends each
    /// change at once. Default 50 ms.
    pub fs_watch_coalesce: Duration,
    /// ext: most paths one coalescing window of one `fs/watch` watch reports, over all kinds;
    /// past it paths are left out and the notification says `truncated: true`. Default 1,024.
    pub max_fs_watch_paths: usize,
    /// Most `http/request`s in flight per session (buffered ones until their response,
    /// streamed ones until their terminal delta); one more is refused with `-32600`. Default 64.
    pub max_http_requests: usize,
    /// Bytes transmitted on one connection and not yet reported written
    /// ([`Server::handle_sent`](crate::Server::handle_sent)), replies and notifications alike,
    /// above which the connection is congested: the processes of its session are paused
    /// ([`Command::PauseOutput`](crate::Command::PauseOutput)) and its requests are no longer
    /// read ([`Command::PauseReading`](crate::Command::PauseReading)). Default 16 MiB.
    pub congestion_high_bytes: usize,
    /// Unsent bytes at or below which a congested connection resumes. Default 4 MiB.
    pub congestion_low_bytes: usize,
    /// How long a connection may stay congested before it is dropped
    /// ([`Output::Drop`](crate::Output::Drop)); its session detaches. Default 30 s.
    pub congestion_timeout: Duration,
    /// After the server closes a connection ([`Output::Close`](crate::Output::Close)), how long
    /// the peer has to finish the close before the connection is dropped
    /// ([`Output::Drop`](crate::Output::Drop)). Default 5 s.
    pub close_grace: Duration,
    /// Bytes accepted by `process/write` and not yet reported written to one process's stdin
    /// ([`ProcessEvent::StdinWritten`](crate::ProcessEvent::StdinWritten)); a write past it is
    /// refused (`-32600`, retryable with the same `writeId`). Default 8 MiB.
    pub max_stdin_queued_bytes: usize,
    /// Longest `processId`, `writeId` and string JSON-RPC request id, in bytes. Default 256.
    pub max_id_bytes: usize,
    /// Most process entries (starting, running, or closed and retained) per session. Default
    /// 1,024.
    pub max_processes_per_session: usize,
    /// Output retention reserved by one session: each process entry reserves
    /// [`retained_bytes`](Self::retained_bytes) from its start until it is forgotten; a start
    /// that would pass this is refused. Default 1 GiB.
    pub max_retained_bytes_per_session: usize,
    /// Output retention reserved by the whole server, by the same rule. Default 4 GiB.
    pub max_retained_bytes: usize,
    /// Most sessions (attached or detached) on the server; a fresh `initialize` past it is
    /// refused (a resume is not). Default 1,024.
    pub max_sessions: usize,
    /// Most open connections; a connection past it is answered with one error and closed.
    /// Default 1,024.
    pub max_connections: usize,
    /// Most requests one connection may have waiting for a deferred answer (long-poll
    /// `process/read`, `process/start` waiting for its spawn). Default 256.
    pub max_inflight_requests: usize,
    /// The terminal size of a new PTY process (rows, columns). Default 24 × 80.
    pub pty_size: crate::server::PtySize,
    /// Largest output chunk, in bytes: the runtime reads a process's pipe in chunks of up to
    /// this many bytes when that much is waiting, and merges consecutive chunks of one stream
    /// that queued up behind a busy event loop, up to it (coalescing under load; an idle
    /// pipe's few bytes still go out at once). Each chunk is one `process/output` with one
    /// seq. Default 256 KiB (reference: 8 KiB).
    pub max_chunk_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            session_ttl: Duration::from_secs(30),
            closed_retention: Duration::from_secs(30),
            retained_bytes: 1024 * 1024,
            retained_chunks: 50_000,
            lossless_window_bytes: 1024 * 1024,
            write_id_window: 4096,
            max_frame_bytes: 64 * 1024 * 1024,
            max_json_values: 262_144,
            max_read_wait: Duration::from_secs(600),
            sandbox: SandboxType::None,
            sandbox_grace: Duration::from_millis(20),
            environment_info: None,
            host_env: BTreeMap::new(),
            max_http_requests: 64,
            fs_policy: FsPolicy::default(),
            max_fs_in_flight: 64,
            max_whole_file_reads: 2,
            max_fs_watches: 64,
            fs_watch_coalesce: Duration::from_millis(50),
            max_fs_watch_paths: 1024,
            congestion_high_bytes: 16 << 20,
            congestion_low_bytes: 4 << 20,
            congestion_timeout: Duration::from_secs(30),
            close_grace: Duration::from_secs(5),
            max_stdin_queued_bytes: 8 << 20,
            max_id_bytes: 256,
            max_processes_per_session: 1024,
            max_retained_bytes_per_session: 1 << 30,
            max_retained_bytes: usize::try_from(4u64 << 30).unwrap_or(usize::MAX),
            max_sessions: 1024,
            max_connections: 1024,
            max_inflight_requests: 256,
            pty_size: crate::server::PtySize { rows: 24, cols: 80 },
            max_chunk_bytes: 256 << 10,
        }
    }
}

/// A [`ServerConfig`] value out of range (see [`ServerConfig::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count or size that must be at least 1 is 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// `congestion_low_bytes` is above `congestion_high_bytes`.
    #[error("congestionLowBytes ({low}) must not exceed congestionHighBytes ({high})")]
    Marks {
        /// The low mark.
        low: usize,
        /// The high mark.
        high: usize,
    },
    /// A duration is too long to add to a clock reading.
    #[error("{name} of {value:?} is too long (at most {max:?})")]
    TooLong {
        /// The field.
        name: &'static str,
        /// Its value.
        value: Duration,
        /// The largest accepted value.
        max: Duration,
    },
    /// A size is above its sane maximum.
    #[error("{name} of {value} bytes is too large (at most {max})")]
    TooLarge {
        /// The field.
        name: &'static str,
        /// Its value.
        value: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// A PTY dimension is 0.
    #[error("ptySize must be at least 1×1")]
    PtySize,
}

/// The largest `max_frame_bytes` a config may hold: 1 GiB. A frame is buffered whole before it
/// is parsed, so each connection may hold this much.
pub const MAX_FRAME_BYTES_LIMIT: usize = 1 << 30;

/// The longest duration a config may hold: 100 years, far below where `Instant + Duration`
/// overflows on any platform, and longer than any server lives.
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl ServerConfig {
    /// Checks every value is in range, for a runtime or CLI to call before
    /// [`Server::new`](crate::Server::new). The core stays safe with any values (its timers use
    /// checked arithmetic: an overflowing deadline never fires), but an out-of-range value is
    /// almost always a typo.
    ///
    /// # Errors
    /// The first value out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            ("retainedBytes", self.retained_bytes),
            ("retainedChunks", self.retained_chunks),
            ("losslessWindowBytes", self.lossless_window_bytes),
            ("writeIdWindow", self.write_id_window),
            ("maxFrameBytes", self.max_frame_bytes),
            ("maxJsonValues", self.max_json_values),
            ("congestionHighBytes", self.congestion_high_bytes),
            ("maxStdinQueuedBytes", self.max_stdin_queued_bytes),
            ("maxIdBytes", self.max_id_bytes),
            ("maxProcessesPerSession", self.max_processes_per_session),
            (
                "maxRetainedBytesPerSession",
                self.max_retained_bytes_per_session,
            ),
            ("maxRetainedBytes", self.max_retained_bytes),
            ("maxSessions", self.max_sessions),
            ("maxConnections", self.max_connections),
            ("maxInflightRequests", self.max_inflight_requests),
            ("maxFsWatches", self.max_fs_watches),
            ("maxWholeFileReads", self.max_whole_file_reads),
            ("maxFsWatchPaths", self.max_fs_watch_paths),
            ("maxChunkBytes", self.max_chunk_bytes),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if self.max_frame_bytes > MAX_FRAME_BYTES_LIMIT {
            return Err(ConfigError::TooLarge {
                name: "maxFrameBytes",
                value: self.max_frame_bytes,
                max: MAX_FRAME_BYTES_LIMIT,
            });
        }
        if self.congestion_low_bytes > self.congestion_high_bytes {
            return Err(ConfigError::Marks {
                low: self.congestion_low_bytes,
                high: self.congestion_high_bytes,
            });
        }
        let durations = [
            ("sessionTtl", self.session_ttl),
            ("closedRetention", self.closed_retention),
            ("maxReadWait", self.max_read_wait),
            ("sandboxGrace", self.sandbox_grace),
            ("congestionTimeout", self.congestion_timeout),
            ("closeGrace", self.close_grace),
            ("fsWatchCoalesce", self.fs_watch_coalesce),
        ];
        if let Some((name, value)) = durations.iter().find(|(_, d)| *d > MAX_CONFIG_DURATION) {
            return Err(ConfigError::TooLong {
                name,
                value: *value,
                max: MAX_CONFIG_DURATION,
            });
        }
        if self.pty_size.rows == 0 || self.pty_size.cols == 0 {
            return Err(ConfigError::PtySize);
        }
        Ok(())
    }
}
