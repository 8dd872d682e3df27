//! Blocking implementations of the `fs/*` methods, one call per validated
//! [`execd_core::protocol::FsOp`].
//!
//! The event loop runs [`perform`] on a blocking thread with the connection's [`FsHandles`]
//! and sends the result (or [`FsError::to_rpc_error`]) back. Behaviour and error texts follow
//! the Codex exec-server; see `docs/PROTOCOL.md` and the tests.

mod copy;
mod handles;
mod nofollow;
mod walk;

use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::SystemTime;

use execd_core::protocol::fs::{
    CanonicalizeResult, DirectoryEntry, EmptyResult, GetMetadataResult, HandleParams,
    ReadDirectoryResult, ReadFileResult,
};
use execd_core::protocol::{FsError, FsOp, FsResult};
use execd_core::PathUri;
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags, CWD};

pub use handles::FsHandles;

/// Performs `op`, blocking. `handles` is the requesting connection's handle table (only the
/// handle ops use it).
///
/// # Errors
/// An [`FsError`] whose kind picks the JSON-RPC code; see each method's notes in
/// `docs/PROTOCOL.md`.
pub fn perform(op: FsOp, handles: &mut FsHandles) -> Result<FsResult, FsError> {
    let empty = || FsResult::Empty(EmptyResult {});
    match op {
        FsOp::ReadFile {
            path,
            follow_symlinks,
            max_bytes,
        } => read_file(&path, follow_symlinks, max_bytes).map(|data| {
            FsResult::ReadFile(ReadFileResult {
                data_base64: data.into(),
            })
        }),
        FsOp::WriteFile {
            path,
            data,
            follow_symlinks,
        } => write_file(&path, &data, follow_symlinks).map(|()| empty()),
        FsOp::CreateDirectory {
            path,
            recursive,
            follow_symlinks,
        } => create_directory(&path, recursive, follow_symlinks).map(|()| empty()),
        FsOp::GetMetadata {
            path,
            follow_symlinks,
            real_birth_time,
        } => metadata(&path, follow_symlinks, real_birth_time).map(FsResult::Metadata),
        FsOp::Canonicalize { path } => {
            let canonical = std::fs::canonicalize(&path)?;
            let path = PathUri::from_host_path(&canonical).map_err(|e| {
                FsError::new(execd_core::protocol::FsErrorKind::Other, e.to_string())
            })?;
            Ok(FsResult::Canonicalize(CanonicalizeResult { path }))
        }
        FsOp::ReadDirectory { path } => read_directory(&path).map(FsResult::ReadDirectory),
        FsOp::Walk { path, limits } => walk::walk(&path, &limits).map(FsResult::Walk),
        FsOp::Remove {
            path,
            recursive,
            force,
            follow_symlinks,
        } => remove(&path, recursive, force, follow_symlinks).map(|()| empty()),
        FsOp::Copy {
            source,
            destination,
            recursive,
        } => copy::copy(&source, &destination, recursive).map(|()| empty()),
        FsOp::Open { handle, path, mode } => {
            let handle_id = handle.as_str().to_owned();
            handles.open(handle, &path, mode)?;
            Ok(FsResult::Open(HandleParams { handle_id }))
        }
        FsOp::ReadBlock {
            handle,
            offset,
            len,
        } => handles
            .read_block(&handle, offset, len)
            .map(FsResult::ReadBlock),
        FsOp::WriteBlock {
            handle,
            offset,
            data,
        } => handles
            .write_block(&handle, offset, &data)
            .map(|()| empty()),
        FsOp::Close { handle } => {
            handles.close(&handle);
            Ok(empty())
        }
    }
}

/// `-32600` "path `/x` is not a file" (the reference's words, native path).
pub(crate) fn not_a_file(path: &Path) -> FsError {
    FsError::invalid_input(format!("path `{}` is not a file", path.display()))
}

/// Refuses anything but a regular file, by `fstat` on the opened file.
pub(crate) fn ensure_regular(file: &File, path: &Path) -> Result<(), FsError> {
    if file.metadata()?.is_file() {
        Ok(())
    } else {
        Err(not_a_file(path))
    }
}

/// Opens with `O_NONBLOCK` so that a FIFO or device never blocks the open; the caller checks
/// the kind with `fstat` before any read.
fn open_file(path: &Path, flags: OFlags, follow: bool) -> Result<File, FsError> {
    let flags = flags | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o666);
    let fd = if follow {
        rustix::fs::openat(CWD, path, flags, mode).map_err(io::Error::from)?
    } else {
        nofollow::open(path, flags, mode)?
    };
    Ok(File::from(fd))
}

/// `fs/readFile`: the whole regular file, at most `max_bytes`.
fn read_file(path: &Path, follow: bool, max_bytes: u64) -> Result<Vec<u8>, FsError> {
    read_file_in_pieces(path, follow, max_bytes, (usize::MAX, 0), &mut |_| true)
}

/// `fs/readFile` handing the bytes to `emit` in pieces of `piece` bytes as it reads, each
/// behind `headroom` bytes left for the caller (zeroes: room for a frame header, so the piece
/// is not copied again); returns the rest (shorter than `piece`, maybe empty, without
/// headroom). `emit` answers whether to go on: `false` stops the read with
/// [`read_stopped`]. With `usize::MAX` nothing is emitted and the whole file is returned. An
/// error after some pieces (the file grew past the cap, a read failed) voids them.
///
/// # Errors
/// As `fs/readFile` (docs/PROTOCOL.md, Filesystem): not found, not a file, over `max_bytes`.
pub fn read_file_in_pieces(
    path: &Path,
    follow: bool,
    max_bytes: u64,
    (piece, headroom): (usize, usize),
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<Vec<u8>, FsError> {
    let grew = || {
        FsError::invalid_input(format!(
            "file `{}` grew over the fs/readFile limit of {max_bytes} bytes; \
             read it in blocks with fs/open and fs/readBlock",
            path.display()
        ))
    };
    let file = open_file(path, OFlags::RDONLY, follow)?;
    ensure_regular(&file, path)?;
    let size = file.metadata()?.len();
    if size > max_bytes {
        return Err(FsError::invalid_input(format!(
            "file `{}` is {size} bytes, over the fs/readFile limit of {max_bytes} bytes; \
             read it in blocks with fs/open and fs/readBlock",
            path.display()
        )));
    }
    // Read one byte past the cap so a file growing under us is caught too.
    let mut file = file.take(max_bytes.saturating_add(1));
    let mut total = 0u64;
    loop {
        let want = usize::try_from(size).unwrap_or(usize::MAX).min(piece);
        let mut data = Vec::with_capacity(headroom.saturating_add(want));
        data.resize(headroom, 0);
        (&mut file)
            .take(u64::try_from(piece).unwrap_or(u64::MAX))
            .read_to_end(&mut data)?;
        let len = data.len() - headroom;
        total += len as u64;
        if total > max_bytes {
            return Err(grew());
        }
        if len < piece {
            data.drain(..headroom);
            return Ok(data);
        }
        if !emit(data) {
            return Err(read_stopped());
        }
    }
}

/// The error of an `fs/readFile` in pieces stopped because its reader was no longer wanted
/// (the connection closed, the answer was dropped); nobody sees it.
pub fn read_stopped() -> FsError {
    FsError::new(
        execd_core::protocol::FsErrorKind::Other,
        "fs/readFile stopped: the connection is gone",
    )
}

/// `fs/writeFile`: create or truncate, then write everything.
fn write_file(path: &Path, data: &[u8], follow: bool) -> Result<(), FsError> {
    use std::io::Write as _;
    let mut file = open_file(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
        follow,
    )?;
    ensure_regular(&file, path)?;
    // O_NONBLOCK does not affect regular files; writes complete.
    file.write_all(data)?;
    Ok(())
}

/// `fs/createDirectory`.
fn create_directory(path: &Path, recursive: bool, follow: bool) -> Result<(), FsError> {
    if follow {
        return if recursive {
            std::fs::create_dir_all(path)
        } else {
            std::fs::create_dir(path)
        }
        .map_err(FsError::from);
    }
    if recursive {
        // Create each missing ancestor, then step into it without following symlinks.
        let mut prefix = std::path::PathBuf::new();
        for component in path.components() {
            prefix.push(component);
            if prefix.parent().is_none() {
                continue;
            }
            let (dir, name) = nofollow::open_parent(&prefix)?;
            match rustix::fs::mkdirat(&dir, name.as_os_str(), Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(FsError::from_io(&e.into())),
            }
            nofollow::open(&prefix, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        }
        Ok(())
    } else {
        let (dir, name) = nofollow::open_parent(path)?;
        rustix::fs::mkdirat(&dir, name.as_os_str(), Mode::from_raw_mode(0o777))
            .map_err(|e| FsError::from_io(&e.into()))
    }
}

/// `fs/getMetadata`.
fn metadata(
    path: &Path,
    follow: bool,
    real_birth_time: bool,
) -> Result<GetMetadataResult, FsError> {
    if follow {
        let link = std::fs::symlink_metadata(path)?;
        let is_symlink = link.file_type().is_symlink();
        let meta = if is_symlink {
            std::fs::metadata(path)?
        } else {
            link
        };
        let created_at_ms = if real_birth_time {
            meta.created().map(ms_since_epoch).unwrap_or(0)
        } else {
            0
        };
        return Ok(GetMetadataResult {
            is_directory: meta.is_dir(),
            is_file: meta.is_file(),
            is_symlink,
            size: meta.len(),
            created_at_ms,
            modified_at_ms: meta.modified().map(ms_since_epoch).unwrap_or(0),
        });
    }
    let (dir, name) = nofollow::open_parent(path)?;
    let st = rustix::fs::statx(
        &dir,
        name.as_os_str(),
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
    .map_err(|e| FsError::from_io(&e.into()))?;
    let kind = u32::from(st.stx_mode) & libc::S_IFMT;
    if kind == libc::S_IFLNK {
        return Err(FsError::invalid_input("path contains a symbolic link"));
    }
    let ms = |t: rustix::fs::StatxTimestamp| t.tv_sec * 1000 + i64::from(t.tv_nsec / 1_000_000);
    let has_btime = st.stx_mask & StatxFlags::BTIME.bits() != 0;
    Ok(GetMetadataResult {
        is_directory: kind == libc::S_IFDIR,
        is_file: kind == libc::S_IFREG,
        is_symlink: false,
        size: st.stx_size,
        created_at_ms: if has_btime { ms(st.stx_btime) } else { 0 },
        modified_at_ms: ms(st.stx_mtime),
    })
}

fn ms_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// `fs/readDirectory`: directory order, symlinks reported as their targets.
fn read_directory(path: &Path) -> Result<ReadDirectoryResult, FsError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let mut file_type = entry.file_type()?;
        if file_type.is_symlink() {
            // A dangling or looping link is listed as neither.
            if let Ok(meta) = std::fs::metadata(entry.path()) {
                file_type = meta.file_type();
            }
        }
        entries.push(DirectoryEntry {
            file_name: entry.file_name().to_string_lossy().into_owned(),
            is_directory: file_type.is_dir(),
            is_file: file_type.is_file(),
        });
    }
    Ok(ReadDirectoryResult { entries })
}

/// `fs/remove`. A symlink is removed itself, never its target.
fn remove(path: &Path, recursive: bool, force: bool, follow: bool) -> Result<(), FsError> {
    let missing_ok = |e: io::Error| {
        if force && e.kind() == io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(FsError::from_io(&e))
        }
    };
    if !follow {
        if recursive {
            // The reference's words and code.
            return Err(FsError::new(
                execd_core::protocol::FsErrorKind::Other,
                "recursive no-follow removal is unsupported",
            ));
        }
        let (dir, name) = match nofollow::open_parent(path) {
            Ok(found) => found,
            Err(e) => return missing_ok(e),
        };
        let st = match rustix::fs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) => return missing_ok(e.into()),
        };
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFLNK {
            return Err(FsError::invalid_input("path contains a symbolic link"));
        }
        let flags = if kind == libc::S_IFDIR {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        return rustix::fs::unlinkat(&dir, name.as_os_str(), flags)
            .map_err(|e| FsError::from_io(&e.into()));
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return missing_ok(e),
    };
    let result = if !meta.is_dir() {
        std::fs::remove_file(path)
    } else if recursive {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_dir(path)
    };
    result.or_else(missing_ok)
}

/// The (device, inode) of an existing path, following symlinks.
pub(crate) fn identity(path: &Path) -> io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests;
