//! Synchronous OS helpers for the process layer: program lookup, pipes, the child's setup
//! between fork and exec, process-group signals, and non-blocking reads and writes.

use std::ffi::{OsStr, OsString};
use std::future::poll_fn;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};

use execd_core::ExitStatus;
use rustix::io::Errno;
use rustix::process::Pid;

use crate::runtime::AsyncFd;

/// The search path used when neither the child's environment nor the server has `PATH`.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Finds the executable that `program` (a `SpawnSpec::argv[0]`) names.
///
/// A name containing `/` is used as is (joined to `cwd` when relative, as the child would see it
/// after `chdir`). Any other name is looked up in `path_var` (`DEFAULT_PATH` when `None`) the
/// way `execvp` does: entries in order, an empty entry meaning `cwd`, relative entries taken
/// relative to `cwd`; the first regular file the server may execute wins.
///
/// Errors: `ENOENT` when nothing matches (also for an empty name), `EACCES` when a candidate
/// exists but none is executable (matches `execvp`).
pub(crate) fn resolve_program(
    program: &str,
    path_var: Option<&OsStr>,
    cwd: &Path,
) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.contains('/') {
        return Ok(cwd.join(program));
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut denied = false;
    for dir in path_var.as_bytes().split(|&b| b == b':') {
        let candidate = cwd.join(OsStr::from_bytes(dir)).join(program);
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() => {
                match rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK) {
                    Ok(()) => return Ok(candidate),
                    Err(Errno::ACCESS) => denied = true,
                    Err(_) => {}
                }
            }
            // execve on a directory or device fails with EACCES; execvp then keeps looking.
            Ok(_) => denied = true,
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    let errno = if denied { libc::EACCES } else { libc::ENOENT };
    Err(io::Error::from_raw_os_error(errno))
}

/// The `PATH` a program is looked up in: the child's, else the server's.
pub(crate) fn search_path(child_path: Option<&str>) -> Option<OsString> {
    match child_path {
        Some(path) => Some(OsString::from(path)),
        None => std::env::var_os("PATH"),
    }
}

/// A pipe whose both ends are close-on-exec: `(read end, write end)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// The child's setup between fork and exec, run by `pre_exec`. Only raw system calls, no
/// allocation: the forked child of a multi-threaded server may only do async-signal-safe work.
///
/// With `tty`, it starts a new session (so it leads a new process group) and makes its stdin,
/// already the PTY slave, its controlling terminal. On Linux it asks for SIGKILL when its
/// parent *thread* exits (`PR_SET_PDEATHSIG`) and fails the spawn if the parent already died.
pub(crate) fn child_setup(
    tty: bool,
    parent: Pid,
) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    move || {
        reset_signals();
        if tty {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
        }
        #[cfg(target_os = "linux")]
        {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died between fork and prctl; then no signal would come.
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = parent;
        Ok(())
    }
}

/// Gives the child default signal dispositions and an empty signal mask, whatever the server
/// inherited (a server started in the background of a non-interactive shell ignores SIGINT and
/// SIGQUIT, and its children must not). Async-signal-safe: only `signal` and `sigprocmask`.
fn reset_signals() {
    for signo in 1..32 {
        if signo != libc::SIGKILL && signo != libc::SIGSTOP {
            // SAFETY: resetting a disposition to SIG_DFL in the single-threaded forked child
            // before exec; no handler of ours can run afterwards.
            unsafe { libc::signal(signo, libc::SIG_DFL) };
        }
    }
    // SAFETY: an empty set on the stack, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Sends signal number `signo` to the process group `pgid`.
pub(crate) fn signal_group(pgid: Pid, signo: i32) -> io::Result<()> {
    let signal = rustix::process::Signal::from_named_raw(signo)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::process::kill_process_group(pgid, signal)?)
}

/// Converts a reaped status into the core's form.
pub(crate) fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signo)) => ExitStatus::Signal(signo),
        // A reaped process either exited or was killed; stopped or continued states are only
        // reported with WUNTRACED/WCONTINUED, which the reaper does not ask for.
        (None, None) => ExitStatus::Code(status.into_raw()),
    }
}

/// One `read(2)` into `buf`, retried on `EINTR`; `WouldBlock` when nothing is available.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(Errno::INTR) => continue,
            result => return Ok(result?),
        }
    }
}

/// One `write(2)` of `bytes`, retried on `EINTR`; `WouldBlock` when the descriptor is full.
pub(crate) fn write(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::io::write(fd, bytes) {
            Err(Errno::INTR) => continue,
            result => return Ok(result?),
        }
    }
}

/// One `read(2)` into the spare capacity of `buf`, extending its length; retried on `EINTR`,
/// `WouldBlock` when nothing is available. Reads into uninitialised capacity: no zeroing per
/// chunk.
fn read_spare(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, rustix::buffer::spare_capacity(&mut *buf)) {
            Err(Errno::INTR) => continue,
            result => return Ok(result?),
        }
    }
}

/// Reads once from a non-blocking `io` into the spare capacity of `buf`, without waiting.
/// `Ok(None)` means nothing is available now; `Ok(Some(0))` is end of file.
pub(crate) fn try_read(io: &dyn AsyncFd, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    match read_spare(io.fd(), buf) {
        Ok(n) => Ok(Some(n)),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(err) => Err(err),
    }
}

/// Polls a read from `io` into the spare capacity of `buf`: ready with the number of bytes read
/// (0 at end of file) or an error; pending after registering `cx` for readability.
pub(crate) fn poll_read(
    io: &dyn AsyncFd,
    buf: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    io.poll_read_with(cx, &mut |fd| read_spare(fd, buf))
}

/// Writes all of `bytes` to a non-blocking `io`, waiting for writability as needed.
pub(crate) async fn write_all(io: &dyn AsyncFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let written = poll_fn(|cx| io.poll_write_with(cx, &mut |fd| write(fd, bytes))).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = bytes.get(written..).unwrap_or_default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_uses_given_path_in_order() {
        let found = resolve_program("sh", Some(OsStr::new("/nonexistent:/bin")), Path::new("/"));
        assert_eq!(found.ok(), Some(PathBuf::from("/bin/sh")));
    }

    #[test]
    fn resolve_missing_program_is_enoent() {
        let err = resolve_program(
            "no-such-program-xyz",
            Some(OsStr::new("/bin")),
            Path::new("/"),
        )
        .err()
        .map(|e| e.raw_os_error());
        assert_eq!(err, Some(Some(libc::ENOENT)));
        let err = resolve_program("", None, Path::new("/"))
            .err()
            .map(|e| e.raw_os_error());
        assert_eq!(err, Some(Some(libc::ENOENT)));
    }

    #[test]
    fn resolve_directory_is_eacces() {
        let err = resolve_program("bin", Some(OsStr::new("/")), Path::new("/"))
            .err()
            .map(|e| e.raw_os_error());
        assert_eq!(err, Some(Some(libc::EACCES)));
    }

    #[test]
    fn resolve_slash_name_is_joined_to_cwd() {
        let found = resolve_program("./x", None, Path::new("/tmp"));
        assert_eq!(found.ok(), Some(PathBuf::from("/tmp/./x")));
        let found = resolve_program("/bin/sh", None, Path::new("/tmp"));
        assert_eq!(found.ok(), Some(PathBuf::from("/bin/sh")));
    }
}
