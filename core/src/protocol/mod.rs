//! Wire types of the Codex exec-server dialect, one file per concept.

pub mod binary;
mod bytes;
mod env_policy;
mod environment;
pub mod fs;
mod fs_error;
mod fs_op;
mod fs_watch;
mod http;
mod initialize;
mod lossless;
mod path_uri;
mod process;
mod request;
mod sandbox;
mod signal;
mod stream;

pub use bytes::Base64Bytes;
pub use env_policy::{
    build_child_env, glob_matches, validate_env, EnvNameError, EnvPolicy, Inherit, ALWAYS_STRIPPED,
    CORE_VARS, DEFAULT_EXCLUDES,
};
pub use environment::{
    EnvironmentCapabilities, EnvironmentInfo, EnvironmentState, EnvironmentStatus, ShellInfo,
};
pub use fs_error::{os_error_text, FsError, FsErrorKind};
pub use fs_op::{
    decode_fs_request, host_path, is_fs_op_method, walk_limits, FileHandleId, FsOp, FsPolicy,
    FsRequest, FsResult, WalkLimits, FS_OP_METHODS, MAX_BLOCK_LEN, MAX_HANDLES,
    MAX_HANDLE_ID_BYTES, WALK_MAX, WALK_MAX_RESPONSE_BYTES,
};
pub use fs_watch::{ChangedNotification, FsChangeKind, UnwatchParams, WatchParams};
pub use http::{
    body_failed_message, request_failed_message, BodyStream, BodyStreams,
    HttpBodyDeltaNotification, HttpCancelParams, HttpHeader, HttpHeaderParam, HttpRequest,
    HttpRequestError, HttpRequestParams, HttpRequestResult, RedirectPolicy,
};
pub use initialize::{Capabilities, InitializeParams, InitializeResult};
pub use lossless::{AckParams, LosslessWindow};
pub use path_uri::{PathUri, PathUriError};
pub use process::{
    ClosedNotification, ExitedNotification, ListResult, OutputNotification, ProcessIdParams,
    ProcessInfo, ReadChunk, ReadParams, ReadResult, ResizeParams, SignalParams, StartParams,
    StartResult, TerminateResult, WriteParams, WriteResult, WriteStatus,
};
pub use request::{Method, Notification, Request};
pub use sandbox::SandboxType;
pub use signal::{signal_name, Signal, UnknownSignal};
pub use stream::Stream;

/// Method names as on the wire.
pub mod method {
    /// Request: open or resume a session.
    pub const INITIALIZE: &str = "initialize";
    /// Notification: the client is ready.
    pub const INITIALIZED: &str = "initialized";
    /// Request: start a process.
    pub const PROCESS_START: &str = "process/start";
    /// Request: read retained output (optionally long-polling).
    pub const PROCESS_READ: &str = "process/read";
    /// Request: write to stdin.
    pub const PROCESS_WRITE: &str = "process/write";
    /// Request: SIGKILL the process group.
    pub const PROCESS_TERMINATE: &str = "process/terminate";
    /// Request: signal the process group.
    pub const PROCESS_SIGNAL: &str = "process/signal";
    /// ext request: close stdin.
    pub const PROCESS_CLOSE_STDIN: &str = "process/closeStdin";
    /// ext request: resize the PTY.
    pub const PROCESS_RESIZE: &str = "process/resize";
    /// ext request: list the session's processes.
    pub const PROCESS_LIST: &str = "process/list";
    /// Notification: output chunk.
    pub const PROCESS_OUTPUT: &str = "process/output";
    /// Notification: the process exited.
    pub const PROCESS_EXITED: &str = "process/exited";
    /// Notification: the process is closed (exited and all output streams at EOF).
    pub const PROCESS_CLOSED: &str = "process/closed";
    /// Request: facts about the host (`environment/info`).
    pub const ENVIRONMENT_INFO: &str = "environment/info";
    /// Request: whether the environment is ready (`environment/status`).
    pub const ENVIRONMENT_STATUS: &str = "environment/status";
    /// Request: watch paths for appearing.
    pub const FS_WATCH_MISSING: &str = "fs/watchMissing";
    /// Request: read a whole file (its result may come as a binary result frame, §2.5).
    pub const FS_READ_FILE: &str = "fs/readFile";
    /// Request: read a block of an open file (its result may come as a binary result frame).
    pub const FS_READ_BLOCK: &str = "fs/readBlock";
    /// Notification: a path watched with `fs/watchMissing` changed.
    pub const FS_MISSING_CHANGED: &str = "fs/missingChanged";
    /// ext request: watch a file or tree for changes.
    pub const FS_WATCH: &str = "fs/watch";
    /// ext request: remove an `fs/watch` watch.
    pub const FS_UNWATCH: &str = "fs/unwatch";
    /// ext notification: changes seen by an `fs/watch` watch.
    pub const FS_CHANGED: &str = "fs/changed";
    /// Request: perform an HTTP request.
    pub const HTTP_REQUEST: &str = "http/request";
    /// Notification: a chunk (or the end) of a streamed `http/request` body.
    pub const HTTP_REQUEST_BODY_DELTA: &str = "http/request/bodyDelta";
    /// ext request: cancel a streamed `http/request`.
    pub const HTTP_CANCEL: &str = "http/cancel";
    /// ext notification (client to server): acknowledge a process's events up to a seq
    /// (lossless output).
    pub const PROCESS_ACK: &str = "process/ack";
}
