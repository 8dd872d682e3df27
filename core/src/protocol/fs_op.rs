//! The validated form of an `fs/*` request ([`FsOp`]), what the runtime answers with
//! ([`FsResult`], [`FsError`]), and [`decode_fs_request`], which turns method + params into an
//! [`FsRequest`] or a JSON-RPC error.

use std::fmt;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::value::RawValue;

use super::fs::{
    CanonicalizeParams, CanonicalizeResult, CopyParams, CreateDirectoryParams, EmptyResult,
    GetMetadataParams, GetMetadataResult, HandleParams, OpenMode, OpenParams, ReadBlockParams,
    ReadBlockResult, ReadDirectoryParams, ReadDirectoryResult, ReadFileParams, ReadFileResult,
    RemoveParams, WalkOptions, WalkParams, WalkResult, WatchMissingResult, WriteBlockParams,
    WriteFileParams,
};
use super::fs_error::FsError;
use super::{PathUri, PathUriError};
use crate::rpc::{decode_params, RpcError};

/// Longest `handleId`, in bytes (matches the Codex exec-server).
pub const MAX_HANDLE_ID_BYTES: usize = 32;
/// Largest `fs/readBlock` `len`: 1 MiB (matches the Codex exec-server).
pub const MAX_BLOCK_LEN: u64 = 1 << 20;
/// Most open handles per connection (matches the Codex exec-server).
pub const MAX_HANDLES: usize = 128;
/// `fs/walk` maxima: depth, directories, entries (matches the Codex exec-server).
pub const WALK_MAX: (u64, u64, u64) = (64, 10_000, 50_000);
/// Largest serialized `fs/walk` result: 4 MiB (matches the Codex exec-server).
pub const WALK_MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Choices the core makes for every fs request, not sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsPolicy {
    /// Largest file `fs/readFile` returns, in bytes; larger files are refused (`-32600`) with a
    /// pointer to `fs/open`. Default 256 MiB (a 342 MiB base64 response); the reference
    /// publishes no cap.
    pub read_file_max_bytes: u64,
    /// ext: `fs/getMetadata` reports the real birth time (statx) even when following symlinks;
    /// `false` copies the reference (`createdAtMs: 0` unless `followSymlinks: false`).
    pub real_birth_time: bool,
}

impl Default for FsPolicy {
    fn default() -> Self {
        FsPolicy {
            read_file_max_bytes: 256 << 20,
            real_birth_time: false,
        }
    }
}

/// A client-chosen file handle id, at most [`MAX_HANDLE_ID_BYTES`] bytes (empty accepted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileHandleId(String);

impl FileHandleId {
    /// Validates a `handleId` from `fs/open`.
    ///
    /// # Errors
    /// `-32600` "file handle ID must not exceed 32 bytes".
    pub fn new(id: String) -> Result<FileHandleId, FsError> {
        if id.len() > MAX_HANDLE_ID_BYTES {
            return Err(FsError::invalid_input(
                "file handle ID must not exceed 32 bytes",
            ));
        }
        Ok(FileHandleId(id))
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets a table keyed by [`FileHandleId`] be searched with the `&str` of a `fs/readBlock`
/// (derived `Ord`/`Hash` agree with `str`'s).
impl std::borrow::Borrow<str> for FileHandleId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileHandleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `fs/walk` bounds, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// See [`WalkOptions::max_depth`].
    pub max_depth: u64,
    /// See [`WalkOptions::max_directories`].
    pub max_directories: u64,
    /// See [`WalkOptions::max_entries`].
    pub max_entries: u64,
    /// See [`WalkOptions::follow_directory_symlinks`].
    pub follow_directory_symlinks: bool,
    /// See [`WalkOptions::prune_hidden_directories`].
    pub prune_hidden_directories: bool,
    /// Largest serialized result; [`WALK_MAX_RESPONSE_BYTES`].
    pub max_response_bytes: usize,
}

/// A validated fs operation, for the runtime to perform (blocking) with
/// `execd_runtime::fs::perform`. Paths are host paths; bytes are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsOp {
    /// `fs/readFile`.
    ReadFile {
        /// The file.
        path: PathBuf,
        /// `false`: refuse symlinks.
        follow_symlinks: bool,
        /// Size cap in bytes.
        max_bytes: u64,
    },
    /// `fs/writeFile`.
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The content.
        data: Vec<u8>,
        /// `false`: refuse symlinks.
        follow_symlinks: bool,
    },
    /// `fs/createDirectory`.
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// Create parents; an existing directory is success.
        recursive: bool,
        /// `false`: refuse symlinks.
        follow_symlinks: bool,
    },
    /// `fs/getMetadata`.
    GetMetadata {
        /// The path.
        path: PathBuf,
        /// `false`: refuse symlinks.
        follow_symlinks: bool,
        /// Report the birth time even when following (ext).
        real_birth_time: bool,
    },
    /// `fs/canonicalize`.
    Canonicalize {
        /// The path.
        path: PathBuf,
    },
    /// `fs/readDirectory`.
    ReadDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// `fs/walk`.
    Walk {
        /// The root.
        path: PathBuf,
        /// Bounds.
        limits: WalkLimits,
    },
    /// `fs/remove`.
    Remove {
        /// The path.
        path: PathBuf,
        /// Remove directories with their contents.
        recursive: bool,
        /// A missing path is success.
        force: bool,
        /// `false`: refuse symlinks.
        follow_symlinks: bool,
    },
    /// `fs/copy`.
    Copy {
        /// Source.
        source: PathBuf,
        /// Destination.
        destination: PathBuf,
        /// Directories allowed.
        recursive: bool,
    },
    /// `fs/open`.
    Open {
        /// The new handle's id.
        handle: FileHandleId,
        /// The file.
        path: PathBuf,
        /// Read or replace.
        mode: OpenMode,
    },
    /// `fs/readBlock`.
    ReadBlock {
        /// The handle.
        handle: String,
        /// Byte offset.
        offset: u64,
        /// Bytes wanted, 1..=[`MAX_BLOCK_LEN`].
        len: usize,
    },
    /// `fs/writeBlock`.
    WriteBlock {
        /// The handle.
        handle: String,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `fs/close`.
    Close {
        /// The handle.
        handle: String,
    },
}

impl FsOp {
    /// The wire name of the method this operation answers (one of [`FS_OP_METHODS`]).
    pub fn method(&self) -> &'static str {
        match self {
            FsOp::ReadFile { .. } => "fs/readFile",
            FsOp::WriteFile { .. } => "fs/writeFile",
            FsOp::CreateDirectory { .. } => "fs/createDirectory",
            FsOp::GetMetadata { .. } => "fs/getMetadata",
            FsOp::Canonicalize { .. } => "fs/canonicalize",
            FsOp::ReadDirectory { .. } => "fs/readDirectory",
            FsOp::Walk { .. } => "fs/walk",
            FsOp::Remove { .. } => "fs/remove",
            FsOp::Copy { .. } => "fs/copy",
            FsOp::Open { .. } => "fs/open",
            FsOp::ReadBlock { .. } => "fs/readBlock",
            FsOp::WriteBlock { .. } => "fs/writeBlock",
            FsOp::Close { .. } => "fs/close",
        }
    }

    /// The file handle this operation works on (`fs/open`, `fs/readBlock`, `fs/writeBlock`,
    /// `fs/close`): operations on handles of one connection must run in order.
    pub fn handle(&self) -> Option<&str> {
        match self {
            FsOp::Open { handle, .. } => Some(handle.as_str()),
            FsOp::ReadBlock { handle, .. }
            | FsOp::WriteBlock { handle, .. }
            | FsOp::Close { handle } => Some(handle),
            FsOp::ReadFile { .. }
            | FsOp::WriteFile { .. }
            | FsOp::CreateDirectory { .. }
            | FsOp::GetMetadata { .. }
            | FsOp::Canonicalize { .. }
            | FsOp::ReadDirectory { .. }
            | FsOp::Walk { .. }
            | FsOp::Remove { .. }
            | FsOp::Copy { .. } => None,
        }
    }
}

/// A decoded fs request: the operation and the `sandbox` the client attached (`None` for
/// `null` or absent; not enforced by this layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRequest {
    /// The operation.
    pub op: FsOp,
    /// The raw fs sandbox policy.
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// The result of an [`FsOp`]; serializes to the method's result shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FsResult {
    /// `{}`.
    Empty(EmptyResult),
    /// `fs/readFile`.
    ReadFile(ReadFileResult),
    /// `fs/getMetadata`.
    Metadata(GetMetadataResult),
    /// `fs/canonicalize`.
    Canonicalize(CanonicalizeResult),
    /// `fs/readDirectory`.
    ReadDirectory(ReadDirectoryResult),
    /// `fs/walk`.
    Walk(WalkResult),
    /// `fs/open`.
    Open(HandleParams),
    /// `fs/readBlock`.
    ReadBlock(ReadBlockResult),
    /// `fs/watchMissing`: whether the watch was installed.
    WatchMissing(WatchMissingResult),
}

/// Whether `method` is one of the fs methods [`decode_fs_request`] handles (every `fs/*`
/// request but `fs/watchMissing`).
pub fn is_fs_op_method(method: &str) -> bool {
    FS_OP_METHODS.contains(&method)
}

/// The methods that decode to an [`FsOp`].
pub const FS_OP_METHODS: &[&str] = &[
    "fs/readFile",
    "fs/writeFile",
    "fs/createDirectory",
    "fs/getMetadata",
    "fs/canonicalize",
    "fs/readDirectory",
    "fs/walk",
    "fs/remove",
    "fs/copy",
    "fs/open",
    "fs/readBlock",
    "fs/writeBlock",
    "fs/close",
];

/// Decodes and validates an fs request.
///
/// Returns `None` for a method outside [`FS_OP_METHODS`]. Errors: decode failures `-32602`
/// (serde's text, a non-`file:` path included); a `file://otherhost/…` path `-32600`
/// "'file://otherhost/…' is invalid on 'linux'"; bad `dataBase64` `-32600`; a `handleId` over
/// 32 bytes, a block `len` outside 1..=1 MiB, walk limits out of range `-32600` with the
/// reference's words.
pub fn decode_fs_request(
    method: &str,
    params: Option<&RawValue>,
    policy: &FsPolicy,
) -> Option<Result<FsRequest, RpcError>> {
    let result = match method {
        "fs/readFile" => decode(params, |p: ReadFileParams| {
            let op = FsOp::ReadFile {
                path: host_path(&p.path)?,
                follow_symlinks: p.follow_symlinks,
                max_bytes: policy.read_file_max_bytes,
            };
            Ok((op, p.sandbox))
        }),
        "fs/writeFile" => decode(params, |p: WriteFileParams| {
            let path = host_path(&p.path)?;
            let data = STANDARD.decode(p.data_base64.as_bytes()).map_err(|e| {
                FsError::invalid_input(format!(
                    "fs/writeFile requires valid base64 dataBase64: {e}"
                ))
            })?;
            let op = FsOp::WriteFile {
                path,
                data,
                follow_symlinks: p.follow_symlinks,
            };
            Ok((op, p.sandbox))
        }),
        "fs/createDirectory" => decode(params, |p: CreateDirectoryParams| {
            let op = FsOp::CreateDirectory {
                path: host_path(&p.path)?,
                recursive: p.recursive,
                follow_symlinks: p.follow_symlinks,
            };
            Ok((op, p.sandbox))
        }),
        "fs/getMetadata" => decode(params, |p: GetMetadataParams| {
            let op = FsOp::GetMetadata {
                path: host_path(&p.path)?,
                follow_symlinks: p.follow_symlinks,
                real_birth_time: policy.real_birth_time,
            };
            Ok((op, p.sandbox))
        }),
        "fs/canonicalize" => decode(params, |p: CanonicalizeParams| {
            let path = host_path(&p.path)?;
            Ok((FsOp::Canonicalize { path }, p.sandbox))
        }),
        "fs/readDirectory" => decode(params, |p: ReadDirectoryParams| {
            let path = host_path(&p.path)?;
            Ok((FsOp::ReadDirectory { path }, p.sandbox))
        }),
        "fs/walk" => decode(params, |p: WalkParams| {
            let path = host_path(&p.path)?;
            let limits = walk_limits(&p.options)?;
            Ok((FsOp::Walk { path, limits }, p.sandbox))
        }),
        "fs/remove" => decode(params, |p: RemoveParams| {
            let op = FsOp::Remove {
                path: host_path(&p.path)?,
                recursive: p.recursive,
                force: p.force,
                follow_symlinks: p.follow_symlinks,
            };
            Ok((op, p.sandbox))
        }),
        "fs/copy" => decode(params, |p: CopyParams| {
            let op = FsOp::Copy {
                source: host_path(&p.source_path)?,
                destination: host_path(&p.destination_path)?,
                recursive: p.recursive,
            };
            Ok((op, p.sandbox))
        }),
        "fs/open" => decode(params, |p: OpenParams| {
            let op = FsOp::Open {
                handle: FileHandleId::new(p.handle_id)?,
                path: host_path(&p.path)?,
                mode: p.mode,
            };
            Ok((op, p.sandbox))
        }),
        "fs/readBlock" => decode(params, |p: ReadBlockParams| {
            if p.len == 0 || p.len > MAX_BLOCK_LEN {
                return Err(FsError::invalid_input(format!(
                    "file read block length must be between 1 and {MAX_BLOCK_LEN}"
                )));
            }
            let op = FsOp::ReadBlock {
                handle: p.handle_id,
                offset: p.offset,
                // At most 1 MiB, so it fits a usize.
                len: usize::try_from(p.len).unwrap_or(usize::MAX),
            };
            Ok((op, None))
        }),
        "fs/writeBlock" => decode(params, |p: WriteBlockParams| {
            let op = FsOp::WriteBlock {
                handle: p.handle_id,
                offset: p.offset,
                data: p.chunk.0,
            };
            Ok((op, None))
        }),
        "fs/close" => decode(params, |p: HandleParams| {
            Ok((
                FsOp::Close {
                    handle: p.handle_id,
                },
                None,
            ))
        }),
        _ => return None,
    };
    Some(result)
}

/// Decodes `params` as `T`, then validates with `f`.
fn decode<'a, T: serde::Deserialize<'a>>(
    params: Option<&'a RawValue>,
    f: impl FnOnce(T) -> Result<(FsOp, Option<crate::sandbox::SandboxParams>), FsError>,
) -> Result<FsRequest, RpcError> {
    let p = decode_params::<T>(params)?;
    let (op, sandbox) = f(p).map_err(|e| e.to_rpc_error())?;
    Ok(FsRequest { op, sandbox })
}

/// The host path of a PathUri from an fs request.
///
/// # Errors
/// `-32600` "'file://otherhost/x' is invalid on 'linux'" for a foreign host (the reference's
/// words; the OS is this build's).
pub fn host_path(uri: &PathUri) -> Result<PathBuf, FsError> {
    uri.to_host_path().map_err(|e| match e {
        PathUriError::ForeignHost { .. } => {
            FsError::invalid_input(format!("'{uri}' is invalid on '{}'", std::env::consts::OS))
        }
        other => FsError::invalid_input(other.to_string()),
    })
}

/// Validates `fs/walk` options.
///
/// # Errors
/// `-32600` "filesystem walk limits exceed maximums: depth=64, directories=10000,
/// entries=50000", or "filesystem walk limits must be greater than zero" when
/// `maxDirectories` or `maxEntries` is 0 (`maxDepth: 0` is valid).
pub fn walk_limits(options: &WalkOptions) -> Result<WalkLimits, FsError> {
    let (depth, dirs, entries) = WALK_MAX;
    if options.max_depth > depth || options.max_directories > dirs || options.max_entries > entries
    {
        return Err(FsError::invalid_input(format!(
            "filesystem walk limits exceed maximums: depth={depth}, directories={dirs}, entries={entries}"
        )));
    }
    if options.max_directories == 0 || options.max_entries == 0 {
        return Err(FsError::invalid_input(
            "filesystem walk limits must be greater than zero",
        ));
    }
    Ok(WalkLimits {
        max_depth: options.max_depth,
        max_directories: options.max_directories,
        max_entries: options.max_entries,
        follow_directory_symlinks: options.follow_directory_symlinks,
        prune_hidden_directories: options.prune_hidden_directories,
        max_response_bytes: WALK_MAX_RESPONSE_BYTES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, params: &str) -> Result<FsRequest, RpcError> {
        let raw = RawValue::from_string(params.to_owned()).expect("json");
        decode_fs_request(method, Some(&raw), &FsPolicy::default()).expect("an fs method")
    }

    fn err(method: &str, params: &str) -> (i64, String) {
        let e = req(method, params).expect_err(params);
        (e.code, e.message)
    }

    /// Every expected text was observed on `codex exec-server` 0.169.0.
    #[test]
    fn validation_errors_match_the_reference() {
        let long = "x".repeat(33);
        let cases = [
            ("fs/readFile", r#"{"path":"file://otherhost/tmp"}"#.to_owned(), -32600,
             "'file://otherhost/tmp' is invalid on 'linux'"),
            ("fs/readFile", r#"{}"#.to_owned(), -32602, "missing field `path`"),
            ("fs/writeFile", r#"{"path":"file:///t/w","dataBase64":"!!"}"#.to_owned(), -32600,
             "fs/writeFile requires valid base64 dataBase64: Invalid symbol 33, offset 0."),
            ("fs/open", format!(r#"{{"handleId":"{long}","path":"file:///t/f"}}"#), -32600,
             "file handle ID must not exceed 32 bytes"),
            ("fs/readBlock", r#"{"handleId":"h","offset":0,"len":1048577}"#.to_owned(), -32600,
             "file read block length must be between 1 and 1048576"),
            ("fs/readBlock", r#"{"handleId":"h","offset":0,"len":0}"#.to_owned(), -32600,
             "file read block length must be between 1 and 1048576"),
            ("fs/walk", r#"{"path":"file:///t","options":{"maxDepth":65,"maxDirectories":1,"maxEntries":1,"followDirectorySymlinks":true}}"#.to_owned(), -32600,
             "filesystem walk limits exceed maximums: depth=64, directories=10000, entries=50000"),
            ("fs/walk", r#"{"path":"file:///t","options":{"maxDepth":1,"maxDirectories":0,"maxEntries":0,"followDirectorySymlinks":true}}"#.to_owned(), -32600,
             "filesystem walk limits must be greater than zero"),
            ("fs/copy", r#"{"sourcePath":"file:///a","destinationPath":"file:///b"}"#.to_owned(), -32602,
             "missing field `recursive`"),
        ];
        for (method, params, code, message) in cases {
            assert_eq!(
                err(method, &params),
                (code, message.to_owned()),
                "{method} {params}"
            );
        }
    }

    #[test]
    fn valid_requests_become_ops() {
        let r = req(
            "fs/writeFile",
            r#"{"path":"file:///t/a%20b","dataBase64":"AAEC/w==","sandbox":null}"#,
        )
        .expect("valid");
        assert_eq!(
            r.op,
            FsOp::WriteFile {
                path: "/t/a b".into(),
                data: vec![0, 1, 2, 255],
                follow_symlinks: true
            }
        );
        assert_eq!(r.sandbox, None);
        let r = req(
            "fs/open",
            r#"{"handleId":"","path":"file:///t/f","mode":"replace"}"#,
        )
        .expect("valid");
        assert!(matches!(
            r.op,
            FsOp::Open {
                mode: OpenMode::Replace,
                ..
            }
        ));
        let r = req("fs/walk", r#"{"path":"file:///t","options":{"maxDepth":0,"maxDirectories":1,"maxEntries":1,"followDirectorySymlinks":false}}"#)
            .expect("maxDepth 0 is valid");
        assert!(matches!(
            r.op,
            FsOp::Walk {
                limits: WalkLimits { max_depth: 0, .. },
                ..
            }
        ));
        let r = req(
            "fs/getMetadata",
            r#"{"path":"file:///t","sandbox":{"permissions":{"type":"disabled"},"windowsSandboxLevel":"disabled"}}"#,
        )
        .expect("valid");
        assert!(r.sandbox.is_some());
        assert!(decode_fs_request("fs/watchMissing", None, &FsPolicy::default()).is_none());
        assert!(FS_OP_METHODS.iter().all(|m| is_fs_op_method(m)));
    }

    #[test]
    fn results_serialize_untagged() {
        let v = serde_json::to_value(FsResult::Empty(EmptyResult {})).expect("ok");
        assert_eq!(v, serde_json::json!({}));
        let v = serde_json::to_value(FsResult::Open(HandleParams {
            handle_id: "h".into(),
        }))
        .expect("ok");
        assert_eq!(v, serde_json::json!({"handleId": "h"}));
    }
}
