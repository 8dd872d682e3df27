//! What a [`Client`](super::Client) reports: its events and its errors.

#[cfg(doc)]
use super::Client;
use crate::ids::Seq;
use crate::protocol::{ChangedNotification, HttpBodyDeltaNotification, Stream};
use crate::rpc::{RequestId, RpcError};

/// Why a call could not be made at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client is closed for good: the connection dropped with recovery off, recovery gave
    /// up, the session was lost, or [`Client::close`] was called.
    #[error("the client is closed")]
    Closed,
    /// `initialize` and `initialized` belong to the client itself.
    #[error("{0} is sent by the client itself")]
    ReservedMethod(String),
}

/// How a call ended, when not with a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The server answered with a JSON-RPC error.
    #[error("server error: {0}")]
    Rpc(RpcError),
    /// The call's fate is unknown and it was not (or could not be) retried: the connection
    /// dropped while it was in flight, or the client closed before it was sent. Never a
    /// server's answer.
    #[error("the connection closed before the call was answered")]
    Closed,
    /// The server's `result` could not be read as JSON (e.g. nested too deeply).
    #[error("unreadable result: {0}")]
    InvalidResult(String),
}

/// Why the session ended for this client; every pending call failed with
/// [`CallError::Closed`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LostReason {
    /// The connection dropped (or could not be opened) and recovery is off.
    Disconnected,
    /// The recovery window ran out before a resume succeeded.
    WindowExhausted,
    /// The server refused `initialize` (e.g. `-32600 unknown session id` after the session
    /// expired).
    Rejected(RpcError),
    /// The server broke the protocol during the handshake (an undecodable `initialize` result,
    /// or a resume that returned another session id).
    Protocol(String),
    /// [`Client::close`] was called.
    ClosedLocally,
    /// The server closed the connection saying it is going away (WebSocket close code 1001,
    /// a shutdown): its sessions end with it, so no resume is attempted. Reported by the
    /// runtime, which sees the close code; the core itself never emits it.
    ServerStopped,
}

/// Something for the user (or the runtime) of a [`Client`], from [`Client::poll_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A session is ready: fresh (`resumed: false`) or resumed after a reconnect.
    Connected {
        /// The session id (a UUID from the server).
        session_id: String,
        /// Whether an earlier session was resumed.
        resumed: bool,
    },
    /// The answer to call `id`.
    Response {
        /// The id [`Client::call`] returned.
        id: RequestId,
        /// The `result` object, or why there is none.
        result: Result<serde_json::Value, CallError>,
    },
    /// ext: the answer to call `id` carried by a binary result frame (PROTOCOL.md §2.5): the
    /// bytes of an `fs/readFile` result (`dataBase64`, `eof` false) or of an `fs/readBlock`
    /// result (`chunk`, `eof`). Comes only on a connection that negotiated binary frames and
    /// only for calls of those two methods; their JSON answers stay [`ClientEvent::Response`].
    DataResponse {
        /// The id [`Client::call`] returned.
        id: RequestId,
        /// The bytes.
        data: Vec<u8>,
        /// `eof` of an `fs/readBlock` result.
        eof: bool,
    },
    /// An output chunk of a tracked process. Per process, `Output`, `Exited`, `Closed` and
    /// `Gap` come in seq order, each seq once.
    Output {
        /// The process.
        process_id: String,
        /// The chunk's seq.
        seq: Seq,
        /// The stream it was read from.
        stream: Stream,
        /// The bytes.
        chunk: Vec<u8>,
    },
    /// A tracked process exited (exactly once per process).
    Exited {
        /// The process.
        process_id: String,
        /// The event's seq (see [`Client`] for the one case where it is inferred).
        seq: Seq,
        /// The exit code; 128+n when signal n killed it.
        exit_code: i32,
        /// Whether the server classified the exit as a sandbox denial.
        sandbox_denied: bool,
    },
    /// A tracked process closed: exited and every output stream at EOF. Always its last
    /// event; the client stops tracking it.
    Closed {
        /// The process.
        process_id: String,
        /// The event's seq.
        seq: Seq,
    },
    /// Output of a tracked process was evicted from the server's retention before this client
    /// could read it: `lost_chunks` seqs before `first_retained_seq` will never be delivered.
    Gap {
        /// The process.
        process_id: String,
        /// How many chunks were lost.
        lost_chunks: u64,
        /// The seq after the lost range; the next event of the process has this seq or a later
        /// one.
        first_retained_seq: Seq,
    },
    /// The server no longer knows a tracked process (`unknown process id` on the recovery
    /// read): it was forgotten after its close retention while this client was away, or a
    /// `process/start` cut off by a disconnect never ran. Its remaining events are lost;
    /// tracking stops.
    ProcessLost {
        /// The process.
        process_id: String,
    },
    /// An `http/request/bodyDelta` of a streamed `http/request`, in arrival order (the server
    /// sends them in seq order on one connection). Not tracked across reconnects: the server
    /// cancels a streamed request when its connection drops.
    HttpBodyDelta(HttpBodyDeltaNotification),
    /// ext: an `fs/changed` of an `fs/watch` watch, in arrival order. Not tracked across
    /// reconnects: the server drops a connection's watches with it.
    FsChanged(ChangedNotification),
    /// Runtime: open a new transport, then call [`Client::handle_connected`] or
    /// [`Client::handle_connect_failed`].
    Reconnect,
    /// The session is gone for this client; every pending call failed with
    /// [`CallError::Closed`] (their `Response` events come first) and every later call fails
    /// with [`ClientError::Closed`]. The runtime drops the transport, if one is open.
    SessionLost {
        /// Why.
        reason: LostReason,
    },
}
