//! Path resolution that refuses symlinks, for the `followSymlinks: false` fs requests.
//!
//! Each directory on the way is opened with `O_DIRECTORY | O_NOFOLLOW`, so a symlink there
//! fails with ENOTDIR ("Not a directory (os error 20)"), and the last component is then used
//! relative to its parent with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW` (ELOOP, "Symbolic link loop
//! (os error 40)", for an open). Both match the Codex exec-server, which resolves the same
//! way. `openat2(RESOLVE_NO_SYMLINKS)` would answer ELOOP for every component, so it is not
//! used.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{openat, Mode, OFlags, CWD};

/// The parent directory of `path` (opened `O_PATH`) and the last component's name.
///
/// `path` must be absolute. A path without a last normal component (`/`, `/a/..`) is
/// `InvalidInput`.
pub(crate) fn open_parent(path: &Path) -> io::Result<(OwnedFd, OsString)> {
    let mut components: Vec<Component<'_>> = path.components().collect();
    let last = match components.pop() {
        Some(Component::Normal(name)) => name.to_owned(),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("path `{}` has no file name", path.display()),
            ))
        }
    };
    let mut dir = openat(CWD, "/", dir_flags(), Mode::empty())?;
    for component in components {
        let name: &std::ffi::OsStr = match component {
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir => "..".as_ref(),
            Component::Normal(n) => n,
            Component::Prefix(_) => continue,
        };
        dir = openat(&dir, name, dir_flags(), Mode::empty())?;
    }
    Ok((dir, last))
}

/// Opens `path` without following any symlink, with `flags` (plus `O_NOFOLLOW | O_CLOEXEC`).
pub(crate) fn open(path: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let (dir, name) = open_parent(path)?;
    Ok(openat(
        &dir,
        name.as_os_str(),
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        mode,
    )?)
}

fn dir_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}
