//! Read-only carve-outs under writable roots (`.git`, `.codex`, `.agents`, `.aws`, and `read`
//! entries inside a `write` entry), which Landlock cannot express (its grants only add up): the
//! child enters a private mount namespace (and, when the server is not root, a user namespace
//! mapping only the server's uid and gid) and mounts each carve-out read-only over itself, so
//! writes fail with `EROFS` "Read-only file system", as under the reference.
//!
//! A carve-out that does not exist yet is created as an empty directory by the server (a
//! *placeholder*, shared by every sandboxed process using it and removed once the last one is
//! released, if still empty) and covered with an empty read-only tmpfs, so the sandboxed
//! program cannot create it: the reference shows the same empty read-only directories.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use execd_core::sandbox::RestrictedFs;

use super::SetupError;

/// What the child mounts, prepared (and allocated) by the server.
#[derive(Debug)]
pub(crate) struct MountPlan {
    /// `(uid_map, gid_map)` contents when a user namespace is needed (server not root).
    id_maps: Option<(Vec<u8>, Vec<u8>)>,
    /// Existing carve-outs and the flags their mount must keep (nosuid, nodev, …).
    ro_binds: Vec<(CString, libc::c_ulong)>,
    /// Placeholders to cover with an empty read-only tmpfs.
    tmpfs: Vec<CString>,
    /// The child's working directory, entered again after mounting (the old directory could
    /// be a carve-out's writable view).
    cwd: CString,
    /// Keeps the placeholders until the process is released.
    _placeholders: Vec<Placeholder>,
}

impl MountPlan {
    /// The plan for `fs`, or `None` when no writable root has a carve-out to protect.
    ///
    /// # Errors
    /// A path with a NUL byte, or a placeholder that cannot be created.
    pub(crate) fn new(fs: &RestrictedFs, cwd: &Path) -> Result<Option<MountPlan>, SetupError> {
        let mut ro_binds = Vec::new();
        let mut tmpfs = Vec::new();
        let mut placeholders = Vec::new();
        for w in &fs.writable {
            if !w.root.is_dir() {
                continue;
            }
            for path in &w.read_only {
                if let Some(placeholder) = Placeholder::acquire(path)? {
                    placeholders.push(placeholder);
                    tmpfs.push(c_path(path)?);
                } else if std::fs::symlink_metadata(path).is_ok() {
                    let flags = kept_flags(path);
                    ro_binds.push((c_path(path)?, flags));
                }
                // A carve-out whose parent is missing is left out (docs/SANDBOX.md, limits).
            }
        }
        if ro_binds.is_empty() && tmpfs.is_empty() {
            return Ok(None);
        }
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let id_maps = (uid != 0).then(|| {
            (
                format!("{uid} {uid} 1").into_bytes(),
                format!("{gid} {gid} 1").into_bytes(),
            )
        });
        Ok(Some(MountPlan {
            id_maps,
            ro_binds,
            tmpfs,
            cwd: c_path(cwd)?,
            _placeholders: placeholders,
        }))
    }

    /// In the child, between fork and exec: only raw system calls on prepared data.
    pub(crate) fn apply(&self) -> io::Result<()> {
        let flags = match self.id_maps {
            Some(_) => libc::CLONE_NEWUSER | libc::CLONE_NEWNS,
            None => libc::CLONE_NEWNS,
        };
        // SAFETY: unshare takes flags only.
        check(unsafe { libc::unshare(flags) })?;
        if let Some((uid_map, gid_map)) = &self.id_maps {
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", uid_map)?;
            write_file(c"/proc/self/gid_map", gid_map)?;
        }
        // Nothing mounted here may propagate back to the server's namespace.
        mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
        for (path, kept) in &self.ro_binds {
            match mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None) {
                // Removed since the plan was made (another server's placeholder, released):
                // covered like a missing one.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => cover_missing(path)?,
                other => {
                    other?;
                    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | kept;
                    mount(None, path, None, flags, None)?;
                }
            }
        }
        for path in &self.tmpfs {
            cover_missing(path)?;
        }
        // SAFETY: a NUL-terminated path prepared by the server.
        check(unsafe { libc::chdir(self.cwd.as_ptr()) })
    }
}

/// Covers the placeholder at `path` with an empty read-only tmpfs. A placeholder removed
/// meanwhile (the placeholder table is per server: another server sharing `/tmp` may remove
/// the one it created) is created again first; it then stays behind, empty, after the process.
fn cover_missing(path: &std::ffi::CStr) -> io::Result<()> {
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let tmpfs = || {
        mount(
            Some(c"tmpfs"),
            path,
            Some(c"tmpfs"),
            flags,
            Some(c"size=4k,mode=555"),
        )
    };
    match tmpfs() {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            // SAFETY: a NUL-terminated path prepared by the server.
            let rc = unsafe { libc::mkdir(path.as_ptr(), 0o755) };
            let err = io::Error::last_os_error();
            if rc != 0 && err.raw_os_error() != Some(libc::EEXIST) {
                return Err(err);
            }
            tmpfs()
        }
        other => other,
    }
}

/// The flags of the mount holding `path` that a remount in a user namespace must keep.
fn kept_flags(path: &Path) -> libc::c_ulong {
    use rustix::fs::StatVfsMountFlags as F;
    let Ok(st) = rustix::fs::statvfs(path) else {
        return 0;
    };
    let mut flags = 0;
    for (have, keep) in [
        (F::NOSUID, libc::MS_NOSUID),
        (F::NODEV, libc::MS_NODEV),
        (F::NOEXEC, libc::MS_NOEXEC),
        (F::NOATIME, libc::MS_NOATIME),
        (F::NODIRATIME, libc::MS_NODIRATIME),
        (F::RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag.contains(have) {
            flags |= keep;
        }
    }
    flags
}

fn c_path(path: &Path) -> Result<CString, SetupError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SetupError(format!("path {} contains a NUL byte", path.display())))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mount(
    source: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
    data: Option<&std::ffi::CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), std::ffi::CStr::as_ptr);
    // SAFETY: NUL-terminated strings or null, as mount(2) accepts.
    check(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    })
}

/// Writes `bytes` to the file at `path` with raw system calls.
fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: writes from a live slice to the descriptor opened above.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    let err = io::Error::last_os_error();
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    if usize::try_from(n).ok() == Some(bytes.len()) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Placeholders in use: path → number of live processes using it.
static PLACEHOLDERS: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

/// One process's use of a placeholder directory; the last one removes it (if still empty).
#[derive(Debug)]
struct Placeholder(PathBuf);

impl Placeholder {
    /// Uses the placeholder at `path`: one already in use, or a new one when nothing exists
    /// there and its parent directory does. `None`: a real path (or no parent).
    fn acquire(path: &Path) -> Result<Option<Placeholder>, SetupError> {
        let mut table = PLACEHOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = table.get_mut(path) {
            *n += 1;
            return Ok(Some(Placeholder(path.to_path_buf())));
        }
        if std::fs::symlink_metadata(path).is_ok() || !path.parent().is_some_and(Path::is_dir) {
            return Ok(None);
        }
        match std::fs::create_dir(path) {
            Ok(()) => {}
            // Created meanwhile by someone else: a real directory, still covered read-only.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(SetupError(format!(
                    "cannot create the read-only placeholder {}: {e}",
                    path.display()
                )))
            }
        }
        table.insert(path.to_path_buf(), 1);
        Ok(Some(Placeholder(path.to_path_buf())))
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        let mut table = PLACEHOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = table.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.0);
                // Fails (and keeps it) when someone put something in it meanwhile.
                let _ = std::fs::remove_dir(&self.0);
            }
        }
    }
}
