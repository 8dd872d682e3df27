//! The second check of a sandboxed `fs/*` request, on canonical paths: the core already
//! checked the paths as given; here every symlink is resolved (the final component's too when
//! the operation follows it), so a link inside a writable root that points outside cannot be
//! written through. The operation itself then runs on the path as given; a link swapped
//! between the check and the operation is not caught (docs/SANDBOX.md, limits).

use std::io;
use std::path::{Path, PathBuf};

use execd_core::protocol::fs::OpenMode;
use execd_core::protocol::{FsError, FsOp, FsResult};
use execd_core::sandbox::{check_read, check_write, FsRules, SandboxPolicy, WritableRoot};

use crate::fs::{self, FsHandles};

/// Most symlinks followed while resolving one path (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Checks `op` against `sandbox` on canonical paths, then performs it.
///
/// # Errors
/// `-32603` "Read-only file system (os error 30)" for a write the policy refuses, `-32600`
/// "Permission denied (os error 13)" for a refused read, else what [`fs::perform`] answers.
pub(crate) fn perform(
    op: FsOp,
    sandbox: Option<&SandboxPolicy>,
    handles: &mut FsHandles,
) -> Result<FsResult, FsError> {
    if let Some(policy) = sandbox {
        check(policy, &op)?;
    }
    fs::perform(op, handles)
}

/// [`perform`] for an `fs/readFile` whose bytes go to `emit` in pieces of `piece` bytes
/// behind `headroom` spare bytes as they are read ([`fs::read_file_in_pieces`]); the result
/// carries the rest. Any other op is performed whole.
///
/// # Errors
/// As [`perform`].
pub(crate) fn read_file_in_pieces(
    op: FsOp,
    sandbox: Option<&SandboxPolicy>,
    piece: (usize, usize),
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<FsResult, FsError> {
    if let Some(policy) = sandbox {
        check(policy, &op)?;
    }
    match op {
        FsOp::ReadFile {
            path,
            follow_symlinks,
            max_bytes,
        } => fs::read_file_in_pieces(&path, follow_symlinks, max_bytes, piece, emit).map(|rest| {
            FsResult::ReadFile(execd_core::protocol::fs::ReadFileResult {
                data_base64: rest.into(),
            })
        }),
        op => fs::perform(op, &mut FsHandles::new()),
    }
}

/// The canonical-path check of `op`.
fn check(policy: &SandboxPolicy, op: &FsOp) -> Result<(), FsError> {
    if policy.file_system == FsRules::Unrestricted {
        return Ok(());
    }
    let policy = canonical_policy(policy);
    match op {
        FsOp::WriteFile {
            path,
            follow_symlinks,
            ..
        } => check_write(&policy, &resolve(path, *follow_symlinks)),
        FsOp::Open {
            path,
            mode: OpenMode::Replace,
            ..
        } => check_write(&policy, &resolve(path, true)),
        FsOp::CreateDirectory { path, .. } | FsOp::Remove { path, .. } => {
            check_write(&policy, &resolve(path, false))
        }
        FsOp::Copy {
            source,
            destination,
            ..
        } => {
            check_read(&policy, &resolve(source, true))?;
            check_write(&policy, &resolve(destination, true))
        }
        FsOp::ReadFile { path, .. }
        | FsOp::ReadDirectory { path }
        | FsOp::Walk { path, .. }
        | FsOp::Open { path, .. } => check_read(&policy, &resolve(path, true)),
        _ => Ok(()),
    }
}

/// `policy` with every path canonicalized as far as it exists, so it compares with
/// [`resolve`]d paths (a workspace root reached through a symlink still matches).
fn canonical_policy(policy: &SandboxPolicy) -> SandboxPolicy {
    let mut out = policy.clone();
    if let FsRules::Restricted(fs) = &mut out.file_system {
        let canon = |p: &PathBuf| resolve(p, true);
        fs.readable = fs.readable.iter().map(canon).collect();
        fs.denied = fs.denied.iter().map(canon).collect();
        fs.writable = fs
            .writable
            .iter()
            .map(|w| WritableRoot {
                root: canon(&w.root),
                read_only: w.read_only.iter().map(canon).collect(),
            })
            .collect();
    }
    out
}

/// `path` with its existing part canonicalized (every symlink resolved) and the missing rest
/// appended. With `follow_last`, a symlink as the last component is followed too (also a
/// dangling one: writing through it would create its target).
pub(crate) fn resolve(path: &Path, follow_last: bool) -> PathBuf {
    let mut path = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        if !follow_last {
            break;
        }
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => match std::fs::read_link(&path) {
                Ok(target) => {
                    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    path = parent.join(target);
                }
                Err(_) => break,
            },
            _ => break,
        }
    }
    let name = if follow_last {
        None
    } else {
        path.file_name().map(|n| n.to_os_string())
    };
    let base = match &name {
        Some(_) => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => path.clone(),
    };
    let mut resolved = canonical_prefix(&base).unwrap_or(base);
    if let Some(name) = name {
        resolved.push(name);
    }
    execd_core::sandbox::normalize(&resolved)
}

/// The deepest existing ancestor of `path` canonicalized, with the rest appended.
fn canonical_prefix(path: &Path) -> io::Result<PathBuf> {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        match std::fs::canonicalize(&cur) {
            Ok(mut canon) => {
                for part in rest.iter().rev() {
                    canon.push(part);
                }
                return Ok(canon);
            }
            Err(err) => {
                let Some(name) = cur.file_name().map(|n| n.to_os_string()) else {
                    return Err(err);
                };
                rest.push(name);
                if !cur.pop() {
                    return Err(err);
                }
            }
        }
    }
}
