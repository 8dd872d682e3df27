//! [`FsError`]: how an fs request fails, and its JSON-RPC code.

use crate::rpc::{ErrorCode, RpcError};

/// How an fs error maps onto a JSON-RPC code (matches the Codex exec-server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsErrorKind {
    /// `-32004`: a missing path or unknown handle.
    NotFound,
    /// `-32600`: EACCES/EPERM.
    PermissionDenied,
    /// `-32600`: the request is not acceptable (limits, kinds, foreign hosts).
    InvalidInput,
    /// `-32603`: any other I/O error.
    Other,
}

/// An fs request failure: a kind for the code and the message sent as is (for OS errors the
/// `std::io::Error` text, e.g. "No such file or directory (os error 2)").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    /// Which code.
    pub kind: FsErrorKind,
    /// The message.
    pub message: String,
}

impl FsError {
    /// An error of `kind` with `message`.
    pub fn new(kind: FsErrorKind, message: impl Into<String>) -> Self {
        FsError {
            kind,
            message: message.into(),
        }
    }

    /// `-32600` with `message`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(FsErrorKind::InvalidInput, message)
    }

    /// Classifies an I/O error: `NotFound` → `-32004`, `PermissionDenied` → `-32600`,
    /// `InvalidInput` → `-32600`, anything else → `-32603`.
    ///
    /// The message is the error's text, "`<strerror> (os error N)`". The reference is linked
    /// against musl, whose wording differs from glibc's for a few errnos; [`os_error_text`]
    /// supplies musl's, so both builds of execd send the reference's text.
    pub fn from_io(err: &std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => FsErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => FsErrorKind::PermissionDenied,
            std::io::ErrorKind::InvalidInput => FsErrorKind::InvalidInput,
            _ => FsErrorKind::Other,
        };
        let message = match err.raw_os_error().and_then(os_error_text) {
            Some(text) => format!("{text} (os error {})", err.raw_os_error().unwrap_or(0)),
            None => err.to_string(),
        };
        Self::new(kind, message)
    }

    /// The JSON-RPC code.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            FsErrorKind::NotFound => ErrorCode::NotFound,
            FsErrorKind::PermissionDenied | FsErrorKind::InvalidInput => ErrorCode::InvalidRequest,
            FsErrorKind::Other => ErrorCode::Internal,
        }
    }

    /// The JSON-RPC error object.
    pub fn to_rpc_error(&self) -> RpcError {
        RpcError::new(self.code(), self.message.clone())
    }
}

/// musl's `strerror` text for the Linux errnos where it differs from glibc's, as the
/// reference (a musl build) words them; `None` where both agree or the errno is not listed.
/// Observed on the reference: ELOOP, ENAMETOOLONG; the rest from musl's `__strerror.h`.
pub fn os_error_text(errno: i32) -> Option<&'static str> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    Some(match errno {
        5 => "I/O error",
        16 => "Resource busy",
        18 => "Cross-device link",
        24 => "No file descriptors available",
        36 => "Filename too long",
        40 => "Symbolic link loop",
        _ => return None,
    })
}

impl From<std::io::Error> for FsError {
    fn from(err: std::io::Error) -> Self {
        FsError::from_io(&err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_codes() {
        let cases = [
            (
                libc_errno::ENOENT,
                -32004,
                "No such file or directory (os error 2)",
            ),
            (
                libc_errno::EACCES,
                -32600,
                "Permission denied (os error 13)",
            ),
            (
                libc_errno::ELOOP,
                -32603,
                "Symbolic link loop (os error 40)",
            ),
            (libc_errno::ENOTDIR, -32603, "Not a directory (os error 20)"),
            (36, -32603, "Filename too long (os error 36)"),
            (21, -32603, "Is a directory (os error 21)"),
            (17, -32603, "File exists (os error 17)"),
        ];
        for (errno, code, message) in cases {
            let e = FsError::from_io(&std::io::Error::from_raw_os_error(errno)).to_rpc_error();
            assert_eq!((e.code, e.message.as_str()), (code, message));
        }
    }

    /// Linux errno values (the core has no libc dependency).
    mod libc_errno {
        pub(super) const ENOENT: i32 = 2;
        pub(super) const EACCES: i32 = 13;
        pub(super) const ENOTDIR: i32 = 20;
        pub(super) const ELOOP: i32 = 40;
    }
}
