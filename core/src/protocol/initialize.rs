use serde::{Deserialize, Serialize};

/// `initialize` params: `{clientName, resumeSessionId?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    /// A name for logs; required, as in the reference.
    pub client_name: String,
    /// The session to re-attach, from an earlier `initialize` result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session_id: Option<String>,
    /// ext: ask for binary `process/output` frames on this connection (PROTOCOL.md §2.5);
    /// absent (false) in the reference's dialect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary_frames: bool,
    /// ext: ask for lossless output (PROTOCOL.md §5.11) for the session this `initialize`
    /// opens or resumes; absent (false) means the reference's bounded retention. The server
    /// answers with [`InitializeResult::lossless_output`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lossless_output: bool,
}

/// `initialize` result: `{sessionId}` plus execd's negotiation fields (ext), which clients of
/// the Codex exec-server ignore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    /// The session id: a lower-case hyphenated UUID v4.
    pub session_id: String,
    /// Facts about the host (shell, cwd, home and temp directories as PathUris, OS), as the
    /// reference sends them; filled in by the runtime, which can look at the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_info: Option<serde_json::Value>,
    /// ext: the execd protocol revision, e.g. `"execd/1"`; absent from the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// ext: the extensions this server supports; absent from the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// ext: `true` when this connection now carries `process/output` as binary frames
    /// (asked for with `binaryFrames` and possible on its transport); absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary_frames: bool,
    /// ext: present when the client asked for lossless output: the bounds of unacknowledged
    /// output per process (PROTOCOL.md §5.11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lossless_output: Option<super::LosslessWindow>,
}

/// ext: what execd supports beyond the Codex exec-server. A client uses an extension only when
/// the server advertised it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// `process/signal` accepts POSIX signal names besides `"interrupt"`.
    #[serde(default)]
    pub posix_signals: bool,
    /// `process/closeStdin` exists.
    #[serde(default)]
    pub close_stdin: bool,
    /// `process/resize` exists.
    #[serde(default)]
    pub resize: bool,
    /// `process/list` exists.
    #[serde(default)]
    pub process_list: bool,
    /// `process/read` reports evicted output (`firstRetainedSeq`, `lostChunks`) and
    /// `process/exited` carries `exitSignal`.
    #[serde(default)]
    pub retention_gaps: bool,
    /// `http/cancel` exists: it ends an active streamed `http/request` with a terminal
    /// `bodyDelta` whose `error` is `"cancelled"`.
    #[serde(default)]
    pub http_cancel: bool,
    /// `fs/watch`, `fs/unwatch` and the `fs/changed` notification exist.
    #[serde(default)]
    pub fs_watch: bool,
    /// Binary `process/output` and `process/write` frames can be negotiated on this
    /// connection (`initialize {binaryFrames: true}`, PROTOCOL.md §2.5); false on stdio.
    #[serde(default)]
    pub binary_frames: bool,
    /// `initialize {losslessOutput: true}` and the `process/ack` notification exist
    /// (PROTOCOL.md §5.11).
    #[serde(default)]
    pub lossless_output: bool,
}

impl Capabilities {
    /// Everything this build of execd supports.
    pub fn all() -> Self {
        Capabilities {
            posix_signals: true,
            close_stdin: true,
            resize: true,
            process_list: true,
            retention_gaps: true,
            http_cancel: true,
            fs_watch: true,
            binary_frames: true,
            lossless_output: true,
        }
    }
}
