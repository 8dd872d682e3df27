//! ext: lossless output (PROTOCOL.md §5.11): the `initialize` negotiation answer and the
//! `process/ack` notification.

use serde::{Deserialize, Serialize};

/// ext: the `losslessOutput` object of an `initialize` result, present only when the client
/// asked for lossless output (`"losslessOutput": true` in the params): the session never
/// evicts unacknowledged output, and a process whose unacknowledged output reaches either
/// bound stops being read (its child blocks in `write`) until the client acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LosslessWindow {
    /// Unacknowledged output bytes per process at which its pipes stop being read (the
    /// server's `losslessWindowBytes`, capped at its `retainedBytes`; default 1 MiB).
    pub window_bytes: u64,
    /// Unacknowledged output chunks per process at which its pipes stop being read (the
    /// server's `retainedChunks`; default 50,000).
    pub window_chunks: u64,
}

/// ext: `process/ack` notification params `{processId, seq}`: the client holds every event of
/// the process up to and including `seq`. Acks only move forward; an ack beyond the last seq
/// the server assigned counts as an ack of that seq; an unknown process is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckParams {
    /// The process.
    pub process_id: String,
    /// The highest seq received (in order).
    pub seq: u64,
}
