//! The sandbox rule for `fs/*` requests that carry a `sandbox` (PROTOCOL.md, Sandbox): the
//! reference runs them under the same policy as a process, so a write outside the writable
//! roots (or into a carve-out) fails like the kernel would fail it.

use std::path::Path;

use super::SandboxPolicy;
use crate::protocol::fs::OpenMode;
use crate::protocol::{FsError, FsErrorKind, FsOp};

/// Checks `op` against `policy` on the paths as given (lexically). The runtime checks again on
/// canonical paths before performing it ([`SandboxPolicy::may_write`] on the resolved
/// symlink target), so a symlink inside a writable root cannot lead out of it.
///
/// Writes (`writeFile`, `createDirectory`, `remove`, the `copy` destination, `open` in
/// `replace` mode) outside the policy → `-32603` "Read-only file system (os error 30)"; reads
/// (`readFile`, `readDirectory`, `walk`, the `copy` source, `open` in `read` mode) of a denied
/// path → `-32600` "Permission denied (os error 13)". `getMetadata` and `canonicalize` are not
/// restricted; block operations use a handle that was checked when opened.
///
/// # Errors
/// As above.
pub fn check_fs_op(policy: &SandboxPolicy, op: &FsOp) -> Result<(), FsError> {
    match op {
        FsOp::WriteFile { path, .. }
        | FsOp::CreateDirectory { path, .. }
        | FsOp::Remove { path, .. }
        | FsOp::Open {
            path,
            mode: OpenMode::Replace,
            ..
        } => check_write(policy, path),
        FsOp::Copy {
            source,
            destination,
            ..
        } => {
            check_read(policy, source)?;
            check_write(policy, destination)
        }
        FsOp::ReadFile { path, .. }
        | FsOp::ReadDirectory { path }
        | FsOp::Walk { path, .. }
        | FsOp::Open {
            path,
            mode: OpenMode::Read,
            ..
        } => check_read(policy, path),
        FsOp::GetMetadata { .. }
        | FsOp::Canonicalize { .. }
        | FsOp::ReadBlock { .. }
        | FsOp::WriteBlock { .. }
        | FsOp::Close { .. } => Ok(()),
    }
}

/// `Ok` when `policy` lets a process write `path`, else the EROFS error.
///
/// # Errors
/// `-32603` "Read-only file system (os error 30)".
pub fn check_write(policy: &SandboxPolicy, path: &Path) -> Result<(), FsError> {
    if policy.may_write(path) {
        Ok(())
    } else {
        Err(read_only_error())
    }
}

/// `Ok` when `policy` lets a process read `path`, else the EACCES error.
///
/// # Errors
/// `-32600` "Permission denied (os error 13)".
pub fn check_read(policy: &SandboxPolicy, path: &Path) -> Result<(), FsError> {
    if policy.may_read(path) {
        Ok(())
    } else {
        Err(FsError::new(
            FsErrorKind::PermissionDenied,
            "Permission denied (os error 13)",
        ))
    }
}

/// The error of a refused sandboxed write, as the reference answers it.
pub fn read_only_error() -> FsError {
    FsError::new(FsErrorKind::Other, "Read-only file system (os error 30)")
}
