//! `fs/walk`: a bounded breadth-first listing.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use execd_core::protocol::fs::{WalkEntry, WalkEntryKind, WalkError, WalkResult};
use execd_core::protocol::{FsError, FsErrorKind, WalkLimits};
use execd_core::PathUri;

use super::identity;

/// JSON bytes around one entry's URI: `{"path":"","kind":"directory"},`.
const ENTRY_OVERHEAD: usize = 32;

/// Walks `root` as the Codex exec-server does (every rule observed on 0.169.0):
///
/// - breadth-first; each directory's entries sorted by name (bytes); the root is not listed;
///   a root that is a file, a special file or (when not followed) a symlink → empty result; a
///   missing root → `-32004`;
/// - regular files are listed as `file`, directories as `directory`; special files are skipped;
///   symlinks to files are skipped; symlinks to directories are skipped unless
///   `followDirectorySymlinks`, then listed as `directory` and entered if their target was not
///   entered yet (each directory, by device and inode, is entered once; dangling links are
///   skipped);
/// - the root has depth 0; a directory at depth `d` is entered only if `d <= maxDepth` (so
///   `maxDepth: 0` lists the root's children); the depth bound does not set `truncated`;
/// - `pruneHiddenDirectories`: directories named `.*` are listed, not entered;
/// - `truncated` when a directory would be read past `maxDirectories` (the root counts), an
///   entry would be listed past `maxEntries`, or the result would exceed
///   `limits.max_response_bytes` (4 MiB);
/// - a directory that cannot be read becomes `errors: [{path, message}]`.
///
/// # Errors
/// Only for the root: a missing root (`-32004`) or another `stat` failure.
pub(crate) fn walk(root: &Path, limits: &WalkLimits) -> Result<WalkResult, FsError> {
    let mut result = WalkResult {
        entries: Vec::new(),
        errors: Vec::new(),
        truncated: false,
    };
    let link = std::fs::symlink_metadata(root)?;
    let is_dir = if link.file_type().is_symlink() {
        // Resolve even when not following, so that a dangling root is -32004 as in the reference.
        let target = std::fs::metadata(root)?;
        limits.follow_directory_symlinks && target.is_dir()
    } else {
        link.is_dir()
    };
    if !is_dir {
        return Ok(result);
    }
    let mut entered: HashSet<(u64, u64)> = HashSet::new();
    entered.insert(identity(root)?);
    let mut queue: VecDeque<(PathBuf, u64)> = VecDeque::from([(root.to_path_buf(), 0)]);
    let mut dirs_read = 0u64;
    let mut bytes = 64usize;
    'dirs: while let Some((dir, depth)) = queue.pop_front() {
        if dirs_read >= limits.max_directories {
            result.truncated = true;
            break;
        }
        dirs_read += 1;
        let mut children = match list(&dir) {
            Ok(children) => children,
            Err(e) => {
                let message = FsError::from_io(&e).message;
                if let Ok(path) = PathUri::from_host_path(&dir) {
                    bytes += path.as_str().len() + message.len() + ENTRY_OVERHEAD;
                    result.errors.push(WalkError { path, message });
                }
                continue;
            }
        };
        children.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
        for (path, kind, enter) in children
            .into_iter()
            .filter_map(|(p, ft)| classify(p, ft, limits))
        {
            if result.entries.len() as u64 >= limits.max_entries {
                result.truncated = true;
                break 'dirs;
            }
            let uri = PathUri::from_host_path(&path)
                .map_err(|e| FsError::new(FsErrorKind::Other, e.to_string()))?;
            bytes += uri.as_str().len() + ENTRY_OVERHEAD;
            if bytes > limits.max_response_bytes {
                result.truncated = true;
                break 'dirs;
            }
            result.entries.push(WalkEntry { path: uri, kind });
            let hidden = path
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
            let child_depth = depth + 1;
            if enter
                && child_depth <= limits.max_depth
                && !(limits.prune_hidden_directories && hidden)
                && identity(&path).is_ok_and(|id| entered.insert(id))
            {
                queue.push_back((path, child_depth));
            }
        }
    }
    Ok(result)
}

/// The entries of `dir` with their (unfollowed) file types.
fn list(dir: &Path) -> std::io::Result<Vec<(PathBuf, std::fs::FileType)>> {
    std::fs::read_dir(dir)?
        .map(|entry| entry.and_then(|e| Ok((e.path(), e.file_type()?))))
        .collect()
}

/// `(path, kind, may enter)` for a listed entry, `None` for a skipped one.
fn classify(
    path: PathBuf,
    file_type: std::fs::FileType,
    limits: &WalkLimits,
) -> Option<(PathBuf, WalkEntryKind, bool)> {
    if file_type.is_dir() {
        Some((path, WalkEntryKind::Directory, true))
    } else if file_type.is_file() {
        Some((path, WalkEntryKind::File, false))
    } else if file_type.is_symlink() && limits.follow_directory_symlinks {
        let target = std::fs::metadata(&path).ok()?;
        target
            .is_dir()
            .then_some((path, WalkEntryKind::Directory, true))
    } else {
        None
    }
}
