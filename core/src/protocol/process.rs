use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EnvPolicy, PathUri, SandboxType, Stream};
use crate::protocol::bytes::Base64Bytes;

/// `process/start` params: `{processId, argv, cwd, env, tty, pipeStdin?, arg0?, envPolicy?,
/// sandbox?, enforceManagedNetwork?}`. The other fields the Codex client may send
/// (`metadata`, `managedNetwork`, `networkProxy`, `shellSnapshot`) are accepted and ignored
/// (`metadata` is telemetry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartParams {
    /// Client-chosen id, unique within the session while the entry exists.
    pub process_id: String,
    /// Program and arguments; must be non-empty.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: PathUri,
    /// The child's exact environment (nothing inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Run on a PTY.
    #[serde(default)]
    pub tty: bool,
    /// Keep a writable stdin pipe (non-PTY).
    #[serde(default)]
    pub pipe_stdin: bool,
    /// Override of `argv[0]` as seen by the child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg0: Option<String>,
    /// How to build the child's environment from the server's; `None` (absent or `null`):
    /// exactly `env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_policy: Option<EnvPolicy>,
    /// The sandbox to run under (`None`: absent or `null`, unsandboxed); a malformed object is
    /// `-32602` naming the field (docs/SANDBOX.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
    /// Require the managed network proxy; execd has none, so `true` is refused (fail closed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enforce_managed_network: bool,
}

/// `process/start` result: `{processId, sandboxType}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartResult {
    /// The id from the params.
    pub process_id: String,
    /// The sandbox applied.
    #[serde(default)]
    pub sandbox_type: SandboxType,
}

/// Params naming one process: `process/terminate`, `process/closeStdin` (ext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessIdParams {
    /// The process.
    pub process_id: String,
}

/// `process/read` params: `{processId, afterSeq?, maxBytes?, waitMs?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    /// The process.
    pub process_id: String,
    /// Return chunks with a greater seq (default 0: everything retained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// Byte budget for the chunks (decoded bytes); the first chunk is always included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Long poll: wait up to this many ms for something new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// One retained output chunk in a `process/read` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadChunk {
    /// Its seq.
    pub seq: u64,
    /// Its stream.
    pub stream: Stream,
    /// Its bytes (base64 on the wire).
    pub chunk: Base64Bytes,
}

/// `process/read` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    /// Retained chunks after `afterSeq`, oldest first.
    pub chunks: Vec<ReadChunk>,
    /// The first seq not covered by this result: the next read passes `afterSeq = nextSeq - 1`.
    pub next_seq: u64,
    /// Whether `process/exited` was published.
    pub exited: bool,
    /// The exit code (128+n for a signal), once exited.
    pub exit_code: Option<i32>,
    /// Whether `process/closed` was published.
    pub closed: bool,
    /// Always `null` in execd (the reference reports executor failures here).
    pub failure: Option<String>,
    /// Whether the exit was classified as a sandbox denial.
    #[serde(default)]
    pub sandbox_denied: bool,
    /// ext: the seq of the oldest chunk still retained, present when older output after
    /// `afterSeq` was evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_retained_seq: Option<u64>,
    /// ext: how many chunks after `afterSeq` were evicted and are lost to this reader.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost_chunks: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `process/write` params: `{processId, chunk, writeId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteParams {
    /// The process.
    pub process_id: String,
    /// The bytes to write (base64 on the wire).
    pub chunk: Base64Bytes,
    /// Required, non-empty; a repeat of an accepted id writes nothing.
    pub write_id: String,
}

/// `process/write` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WriteStatus {
    /// Queued for the child's stdin (or already accepted under this writeId).
    Accepted,
    /// No such process in this session.
    UnknownProcess,
    /// The process is still starting and the write was not taken (a status of the reference;
    /// execd accepts and queues writes while a spawn is pending, so it never sends this).
    Starting,
    /// The process has no writable stdin (no PTY, no `pipeStdin`, or stdin gone).
    StdinClosed,
}

/// `process/write` result: `{status}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The outcome.
    pub status: WriteStatus,
}

/// `process/terminate` result: `{running}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateResult {
    /// Whether the process was running (or starting) when the kill was sent.
    pub running: bool,
}

/// `process/signal` params: `{processId, signal}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalParams {
    /// The process.
    pub process_id: String,
    /// `"interrupt"`, or (ext) a POSIX signal name such as `"SIGTERM"`.
    pub signal: String,
}

/// ext: `process/resize` params: `{processId, rows, cols}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResizeParams {
    /// The process (must run on a PTY).
    pub process_id: String,
    /// Rows, 1..=65535.
    pub rows: u16,
    /// Columns, 1..=65535.
    pub cols: u16,
}

/// ext: one entry of the `process/list` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    /// The process id.
    pub process_id: String,
    /// `"starting"`, `"running"`, `"exited"` or `"closed"`.
    pub state: String,
    /// The OS pid, once spawned.
    pub pid: Option<u32>,
    /// The argv it was started with.
    pub argv: Vec<String>,
    /// The exit code, once exited.
    pub exit_code: Option<i32>,
    /// Whether it runs on a PTY.
    pub tty: bool,
}

/// ext: `process/list` result: `{processes}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResult {
    /// The session's processes, by process id.
    pub processes: Vec<ProcessInfo>,
}

/// `process/output` notification params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputNotification {
    /// The process.
    pub process_id: String,
    /// The chunk's seq.
    pub seq: u64,
    /// The stream.
    pub stream: Stream,
    /// The bytes (base64 on the wire).
    pub chunk: Base64Bytes,
}

/// `process/exited` notification params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitedNotification {
    /// The process.
    pub process_id: String,
    /// The event's seq.
    pub seq: u64,
    /// The exit code; 128+n when signal n killed it.
    pub exit_code: i32,
    /// Whether the exit was classified as a sandbox denial.
    #[serde(default)]
    pub sandbox_denied: bool,
    /// ext: the signal name (e.g. `"SIGKILL"`) when a signal killed the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
}

/// `process/closed` notification params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosedNotification {
    /// The process.
    pub process_id: String,
    /// The event's seq (always the last).
    pub seq: u64,
}
