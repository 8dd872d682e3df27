//! `fs/copy`.

use std::io;
use std::path::{Path, PathBuf};

use execd_core::protocol::FsError;

use super::identity;

/// Copies `source` to `destination` as the Codex exec-server does:
///
/// - a regular file is copied (content and permissions) over `destination`; onto a directory →
///   `-32603` "Is a directory (os error 21)"; onto itself → success, nothing changes;
/// - a symlink is recreated as a symlink with the same target (dangling links included);
/// - a directory needs `recursive` (else `-32600` "fs/copy requires recursive: true when
///   sourcePath is a directory") and merges into an existing directory; inside it, files,
///   directories and symlinks are copied and special files skipped; a destination equal to or
///   inside the source → `-32600` "fs/copy cannot copy a directory to itself or one of its
///   descendants";
/// - anything else → `-32600` "fs/copy only supports regular files, directories, and
///   symlinks"; a missing source → `-32004`.
pub(crate) fn copy(source: &Path, destination: &Path, recursive: bool) -> Result<(), FsError> {
    let meta = std::fs::symlink_metadata(source)?;
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        copy_link(source, destination)?;
    } else if file_type.is_file() {
        if identity(destination).is_ok_and(|dst| identity(source).is_ok_and(|src| src == dst)) {
            return Ok(());
        }
        std::fs::copy(source, destination)?;
    } else if file_type.is_dir() {
        if !recursive {
            return Err(FsError::invalid_input(
                "fs/copy requires recursive: true when sourcePath is a directory",
            ));
        }
        let source_real = std::fs::canonicalize(source)?;
        if resolve_existing_prefix(destination)?.starts_with(&source_real) {
            return Err(FsError::invalid_input(
                "fs/copy cannot copy a directory to itself or one of its descendants",
            ));
        }
        copy_dir(source, destination)?;
    } else {
        return Err(FsError::invalid_input(
            "fs/copy only supports regular files, directories, and symlinks",
        ));
    }
    Ok(())
}

fn copy_dir(source: &Path, destination: &Path) -> io::Result<()> {
    match std::fs::create_dir(destination) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && destination.is_dir() => {}
        other => other?,
    }
    for entry in std::fs::read_dir(source)? {
        let entry = entry?;
        let from = entry.path();
        let to = destination.join(entry.file_name());
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            copy_dir(&from, &to)?;
        } else if file_type.is_symlink() {
            copy_link(&from, &to)?;
        } else if file_type.is_file() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Recreates the symlink `from` at `to`, replacing a non-directory already there.
fn copy_link(from: &Path, to: &Path) -> io::Result<()> {
    let target = std::fs::read_link(from)?;
    if std::fs::symlink_metadata(to).is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(to)?;
    }
    std::os::unix::fs::symlink(target, to)
}

/// `path` with its longest existing prefix canonicalized and the rest appended, so that a
/// destination that does not exist yet can be compared with the canonical source.
fn resolve_existing_prefix(path: &Path) -> io::Result<PathBuf> {
    let mut rest = Vec::new();
    let mut cur = path;
    loop {
        match std::fs::canonicalize(cur) {
            Ok(mut real) => {
                real.extend(rest.iter().rev());
                return Ok(real);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (cur.parent(), cur.file_name()) else {
                    return Err(e);
                };
                rest.push(name.to_owned());
                cur = parent;
            }
            Err(e) => return Err(e),
        }
    }
}
