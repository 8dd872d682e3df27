use std::time::Duration;

/// Tunables of the [`crate::client::Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The `clientName` sent in `initialize` (for the server's logs). Default `"execd"`.
    pub client_name: String,
    /// Whether a dropped connection is recovered (reconnect, resume the session, re-read
    /// missed output, resend in-flight writes) instead of failing every call with
    /// [`crate::client::CallError::Closed`]. Default `true` (as `execd run` uses it).
    pub recovery: bool,
    /// How long recovery keeps trying, from the disconnect until a resumed `initialize`
    /// succeeds. Default 25 s: inside the server's detach TTL (30 s in the Codex
    /// exec-server), so a session that could still be resumed is not given up early.
    pub recovery_window: Duration,
    /// The first delay between reconnect (or `-32010` resume) attempts. Default 50 ms.
    pub backoff_initial: Duration,
    /// The largest delay between attempts; the delay doubles up to it. Default 2 s.
    pub backoff_max: Duration,
    /// How long the server keeps a closed process readable (its close retention; 30 s in
    /// execd). A `process/start` cut off by a disconnect is sent again when the recovery read
    /// answers `unknown process id` less than this long after the start was sent; later the
    /// process may have run, closed and been forgotten, so the start fails with
    /// [`crate::client::CallError::Closed`] instead; likewise a resent `process/write`
    /// answered `unknownProcess` (it may have been accepted before). Set it to at most the
    /// server's value. Default 30 s.
    pub close_retention: Duration,
    /// The `maxBytes` of the client's own `process/read`s (after a resume, and to fill a gap
    /// in the notifications): missed output is read in pages of about this many bytes (at
    /// least one chunk each), so that a connection that drops often still makes progress
    /// with each page instead of asking for all retained output (up to 1 MiB, ~1.4 MB of
    /// JSON) again and again. Default 256 KiB.
    pub recovery_read_bytes: u64,
    /// ext: ask for binary frames at `initialize` (PROTOCOL.md §2.5): `process/output`,
    /// `fs/readFile` and `fs/readBlock` results, `http/request/bodyDelta`. The server turns
    /// them on only where its transport can carry them (not stdio) and says so in its answer;
    /// the client decodes both forms either way. Default `false`.
    pub binary_frames: bool,
    /// The most bytes one result sent in pieces (an `fs/readFile` as binary result frames
    /// flagged `more`, §2.5) may add up to; a server that sends more fails the call with
    /// [`crate::client::CallError::InvalidResult`] naming this limit, and the rest of its
    /// pieces are ignored. Default 1 GiB (execd's `fs/readFile` cap is 256 MiB).
    pub max_result_bytes: usize,
    /// Whether `initialize` asks for lossless output (ext, PROTOCOL.md §5.11): the server then
    /// never evicts output this client has not acknowledged, pausing the process instead, and
    /// the client acknowledges delivered output with `process/ack` (every half window). A
    /// server without the extension ignores the request. Default `true`.
    pub lossless_output: bool,
    /// Whether delivered output is acknowledged with `process/ack` (lossless output only).
    /// `false` leaves it unacknowledged, so the server keeps all of it for a later reader and
    /// holds the process once the window is full: `execd run --detach` starts a process this
    /// way and leaves, and `execd attach` then reads everything from seq 1. (The client's own
    /// recovery reads still acknowledge by their `afterSeq`.) Default `true`.
    pub acknowledge_output: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_name: "execd".to_owned(),
            recovery: true,
            recovery_window: Duration::from_secs(25),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            close_retention: Duration::from_secs(30),
            recovery_read_bytes: 256 * 1024,
            binary_frames: false,
            max_result_bytes: 1 << 30,
            lossless_output: true,
            acknowledge_output: true,
        }
    }
}
