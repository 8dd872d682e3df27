//! Params and results of the `fs/*` methods, field for field as in the Codex exec-server.
//!
//! Every path is a [`PathUri`]. Every request may carry `sandbox` (the fs variant of the
//! process sandbox), decoded as [`crate::sandbox::SandboxParams`]. Results that carry nothing are `{}`
//! ([`EmptyResult`]). Validation beyond decoding (foreign hosts, handle-id and block sizes,
//! walk limits, `dataBase64`) lives in `fs_op.rs` ([`super::decode_fs_request`]).

use serde::{Deserialize, Serialize};

use super::{Base64Bytes, PathUri};

fn yes() -> bool {
    true
}

/// `{}`: the result of `fs/writeFile`, `fs/createDirectory`, `fs/remove`, `fs/copy`,
/// `fs/writeBlock`, `fs/close`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyResult {}

/// `fs/readFile {path, followSymlinks = true, sandbox?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileParams {
    /// The file.
    pub path: PathUri,
    /// `false` refuses a symlink anywhere in the path.
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
    /// The fs sandbox policy, `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// `fs/readFile` result: `{dataBase64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileResult {
    /// The whole file.
    pub data_base64: Base64Bytes,
}

/// `fs/writeFile {path, dataBase64, followSymlinks = true, sandbox?}` → `{}`. Creates or
/// truncates the file; the parent must exist.
///
/// `dataBase64` stays a string here: a bad one is `-32600` ("fs/writeFile requires valid base64
/// dataBase64: Invalid symbol 33, offset 0."), not a decode error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteFileParams {
    /// The file.
    pub path: PathUri,
    /// The content, base64 (standard alphabet, padded).
    pub data_base64: String,
    /// `false` refuses a symlink anywhere in the path.
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
    /// The fs sandbox policy, `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// `fs/createDirectory {path, recursive = true, followSymlinks = true, sandbox?}` → `{}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateDirectoryParams {
    /// The directory.
    pub path: PathUri,
    /// Create missing parents, and succeed if it exists (`false`: "File exists (os error 17)").
    #[serde(default = "yes")]
    pub recursive: bool,
    /// `false` refuses a symlink anywhere in the path.
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
    /// The fs sandbox policy, `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// `fs/getMetadata {path, followSymlinks = true, sandbox?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetMetadataParams {
    /// The path.
    pub path: PathUri,
    /// `true`: a symlink reports its target's kind with `isSymlink: true`; `false`: a symlink
    /// anywhere in the path is refused.
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
    /// The fs sandbox policy, `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// `fs/getMetadata` result: `{isDirectory, isFile, isSymlink, size, createdAtMs,
/// modifiedAtMs}`; times are ms since the Unix epoch, `0` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetMetadataResult {
    /// A directory (after following a symlink).
    pub is_directory: bool,
    /// A regular file (after following a symlink).
    pub is_file: bool,
    /// The path itself is a symlink.
    pub is_symlink: bool,
    /// Size in bytes (`st_size`).
    pub size: u64,
    /// Birth time in ms; the reference sends `0` unless `followSymlinks: false`.
    pub created_at_ms: i64,
    /// Modification time in ms.
    pub modified_at_ms: i64,
}

/// `fs/canonicalize {path, sandbox?}`; also the result `{path}` (absolute, no symlinks, no
/// `.`/`..`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanonicalizeParams {
    /// The path.
    pub path: PathUri,
    /// The fs sandbox policy, `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// `fs/canonicalize` result: `{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalizeResult {
    /// The canonical path.
    pub path: PathUri,
}

/// `fs/readDirectory {path, sandbox?}`. Symlinks are followed (the reference ignores
/// `followSymlinks` here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadDirectoryParams {
    /// The directory.
    pub path: PathUri,
    /// The fs sandbox policy, `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// `fs/readDirectory` result: `{entries}`, in directory order (unsorted), without `.`/`..`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadDirectoryResult {
    /// The entries.
    pub entries: Vec<DirectoryEntry>,
}

/// One `fs/readDirectory` entry: `{fileName, isDirectory, isFile}`; a symlink reports its
/// target's kind (both `false` when dangling).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryEntry {
    /// The name (lossy UTF-8).
    pub file_name: String,
    /// A directory.
    pub is_directory: bool,
    /// A regular file.
    pub is_file: bool,
}

/// `fs/walk {path, options, sandbox?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkParams {
    /// The root (not listed itself; a file → empty result).
    pub path: PathUri,
    /// The bounds.
    pub options: WalkOptions,
    /// The fs sandbox policy, `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// `fs/walk` `options`: all required but `pruneHiddenDirectories`.
///
/// Limits (matches the Codex exec-server): each ≥ 1 (`maxDepth` ≥ 0) and at most
/// `depth=64, directories=10000, entries=50000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkOptions {
    /// Deepest directory entered: the root is depth 0, its children are listed at any
    /// `maxDepth`, a directory at depth `d` is entered only if `d <= maxDepth`.
    pub max_depth: u64,
    /// Most directories read, the root included; reaching it sets `truncated`.
    pub max_directories: u64,
    /// Most entries listed; reaching it sets `truncated`.
    pub max_entries: u64,
    /// List symlinks to directories (as `directory`) and enter each target once.
    pub follow_directory_symlinks: bool,
    /// List directories whose name starts with `.` but do not enter them.
    #[serde(default)]
    pub prune_hidden_directories: bool,
}

/// `fs/walk` result: `{entries, errors, truncated}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkResult {
    /// Breadth-first, each directory's entries by name.
    pub entries: Vec<WalkEntry>,
    /// Directories that could not be read.
    pub errors: Vec<WalkError>,
    /// A limit (directories, entries, response size) cut the walk short.
    pub truncated: bool,
}

/// One `fs/walk` entry: `{path, kind}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkEntry {
    /// The entry.
    pub path: PathUri,
    /// Its kind.
    pub kind: WalkEntryKind,
}

/// `"directory"` or `"file"`; other kinds are not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalkEntryKind {
    /// A directory, or a followed symlink to one.
    Directory,
    /// A regular file.
    File,
}

/// One `fs/walk` error: `{path, message}` (OS error text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkError {
    /// The directory that failed.
    pub path: PathUri,
    /// Why.
    pub message: String,
}

/// `fs/remove {path, recursive = true, force = true, followSymlinks = true, sandbox?}` → `{}`.
/// A symlink is removed, never its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveParams {
    /// The path.
    pub path: PathUri,
    /// Remove a directory with its contents.
    #[serde(default = "yes")]
    pub recursive: bool,
    /// A missing path is success.
    #[serde(default = "yes")]
    pub force: bool,
    /// `false` refuses a symlink in the path, and with `recursive` is refused outright.
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
    /// The fs sandbox policy, `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// `fs/copy {sourcePath, destinationPath, recursive, sandbox?}` → `{}`; `recursive` is
/// required ("missing field `recursive`").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyParams {
    /// What to copy.
    pub source_path: PathUri,
    /// Where to.
    pub destination_path: PathUri,
    /// Required `true` for a directory source.
    pub recursive: bool,
    /// The fs sandbox policy, `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// `fs/open {handleId, path, mode = "read", sandbox?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenParams {
    /// Client-chosen, at most 32 bytes (empty accepted).
    pub handle_id: String,
    /// The file.
    pub path: PathUri,
    /// Read, or create/truncate for writing.
    #[serde(default)]
    pub mode: OpenMode,
    /// The fs sandbox policy, `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::SandboxParams>,
}

/// `fs/open` `mode`; a bad one is "unknown variant `x`, expected `read` or `replace`".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenMode {
    /// Read only.
    #[default]
    Read,
    /// Create or truncate, write only.
    Replace,
}

/// Params naming one handle: `fs/close {handleId}`, and the `fs/open` result `{handleId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandleParams {
    /// The handle.
    pub handle_id: String,
}

/// `fs/readBlock {handleId, offset, len}`; `len` in 1..=1 MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadBlockParams {
    /// The handle.
    pub handle_id: String,
    /// Byte offset.
    pub offset: u64,
    /// Bytes wanted.
    pub len: u64,
}

/// `fs/readBlock` result: `{chunk, eof}`; `eof` = fewer than `len` bytes came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBlockResult {
    /// The bytes.
    pub chunk: Base64Bytes,
    /// End of file reached.
    pub eof: bool,
}

/// `fs/writeBlock {handleId, offset, chunk}` → `{}`; blocks may come in any order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteBlockParams {
    /// The handle (opened with `replace`).
    pub handle_id: String,
    /// Byte offset.
    pub offset: u64,
    /// The bytes.
    pub chunk: Base64Bytes,
}

/// `fs/watchMissing {watchId, missing, present?}` → `{watching}`. An empty `missing` clears
/// the watch. Codex also sends `present`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchMissingParams {
    /// Client-chosen id, echoed in `fs/missingChanged`.
    pub watch_id: u64,
    /// Paths to watch for appearing.
    pub missing: Vec<PathUri>,
    /// A path Codex knows exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<PathUri>,
}

/// `fs/watchMissing` result: `{watching}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchMissingResult {
    /// Whether a watch is now installed.
    pub watching: bool,
}

/// Notification `fs/missingChanged {watchId}`: a watched missing path appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingChangedNotification {
    /// The watch.
    pub watch_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn de<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    fn de_err<T: serde::de::DeserializeOwned + std::fmt::Debug>(v: serde_json::Value) -> String {
        de::<T>(v).expect_err("must fail")
    }

    #[test]
    fn defaults_match_the_reference() {
        let p: RemoveParams = de(json!({"path": "file:///x"})).expect("decodes");
        assert!(p.recursive && p.force && p.follow_symlinks);
        let p: CreateDirectoryParams = de(json!({"path": "file:///x"})).expect("decodes");
        assert!(p.recursive && p.follow_symlinks);
        let p: OpenParams = de(json!({"handleId": "", "path": "file:///x"})).expect("decodes");
        assert_eq!(p.mode, OpenMode::Read);
        let p: ReadFileParams = de(json!({"path": "file:///x", "sandbox": null})).expect("decodes");
        assert!(p.follow_symlinks && p.sandbox.is_none());
    }

    #[test]
    fn required_fields_and_variants_word_errors_like_the_reference() {
        let cases = [
            (
                de_err::<CopyParams>(
                    json!({"sourcePath": "file:///a", "destinationPath": "file:///b"}),
                ),
                "missing field `recursive`",
            ),
            (de_err::<ReadFileParams>(json!({})), "missing field `path`"),
            (
                de_err::<OpenParams>(
                    json!({"handleId": "h", "path": "file:///a", "mode": "bogus"}),
                ),
                "unknown variant `bogus`, expected `read` or `replace`",
            ),
            (
                de_err::<WalkParams>(json!({"path": "file:///a", "options":
                    {"maxDepth": 1, "maxDirectories": 1, "maxEntries": 1}})),
                "missing field `followDirectorySymlinks`",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn results_serialize_with_wire_names() {
        let meta = GetMetadataResult {
            is_directory: false,
            is_file: true,
            is_symlink: true,
            size: 3,
            created_at_ms: 0,
            modified_at_ms: 1_795_840_230_885,
        };
        assert_eq!(
            serde_json::to_value(meta).expect("serializes"),
            json!({"isDirectory": false, "isFile": true, "isSymlink": true, "size": 3,
                   "createdAtMs": 0, "modifiedAtMs": 1_795_840_230_885_i64})
        );
        let walk = WalkResult {
            entries: vec![WalkEntry {
                path: PathUri::parse("file:///t/d").expect("valid"),
                kind: WalkEntryKind::Directory,
            }],
            errors: vec![],
            truncated: false,
        };
        assert_eq!(
            serde_json::to_value(walk).expect("serializes"),
            json!({"entries": [{"path": "file:///t/d", "kind": "directory"}], "errors": [],
                   "truncated": false})
        );
        assert_eq!(serde_json::to_string(&EmptyResult {}).expect("ok"), "{}");
        let read = ReadBlockResult {
            chunk: Base64Bytes(b"hi\n".to_vec()),
            eof: true,
        };
        assert_eq!(
            serde_json::to_value(read).expect("ok"),
            json!({"chunk": "aGkK", "eof": true})
        );
        let entry = DirectoryEntry {
            file_name: "sub".into(),
            is_directory: true,
            is_file: false,
        };
        assert_eq!(
            serde_json::to_value(entry).expect("ok"),
            json!({"fileName": "sub", "isDirectory": true, "isFile": false})
        );
    }

    #[test]
    fn watch_missing_accepts_present() {
        let p: WatchMissingParams = de(json!({"watchId": 2, "missing": ["file:///t/zz"],
            "present": "file:///t/f"}))
        .expect("decodes");
        assert_eq!(p.watch_id, 2);
        assert!(p.present.is_some());
        let n = MissingChangedNotification { watch_id: 2 };
        assert_eq!(serde_json::to_value(n).expect("ok"), json!({"watchId": 2}));
    }
}
