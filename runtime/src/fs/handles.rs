//! `fs/open`, `fs/readBlock`, `fs/writeBlock`, `fs/close`: the per-connection handle table.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use execd_core::protocol::fs::{OpenMode, ReadBlockResult};
use execd_core::protocol::{FileHandleId, FsError, FsErrorKind, MAX_HANDLES};
use rustix::fs::{Mode, OFlags, CWD};

use super::{ensure_regular, not_a_file};

/// The open file handles of one connection (matches the Codex exec-server: at most
/// [`MAX_HANDLES`], ids chosen by the client, dropped with the connection).
///
/// A handle holds the opened file, so it keeps reading that file when the path is replaced.
#[derive(Debug, Default)]
pub struct FsHandles {
    files: BTreeMap<FileHandleId, File>,
}

impl FsHandles {
    /// An empty table.
    pub fn new() -> Self {
        FsHandles::default()
    }

    /// How many handles are open.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// `fs/open`: `read` opens read-only; `replace` creates or truncates, write-only.
    ///
    /// # Errors
    /// `-32600` "file handle `X` already exists", "at most 128 file handles may be open per
    /// connection", "path `…` is not a file" (a directory, FIFO or device; checked without
    /// blocking: the file is opened `O_NONBLOCK`, then `fstat`ed); OS errors (missing parent
    /// `-32004`).
    pub fn open(&mut self, id: FileHandleId, path: &Path, mode: OpenMode) -> Result<(), FsError> {
        if self.files.contains_key(&id) {
            return Err(FsError::invalid_input(format!(
                "file handle `{id}` already exists"
            )));
        }
        if self.files.len() >= MAX_HANDLES {
            return Err(FsError::invalid_input(format!(
                "at most {MAX_HANDLES} file handles may be open per connection"
            )));
        }
        let file = match mode {
            OpenMode::Read => open_nonblocking(path, OFlags::RDONLY)?,
            OpenMode::Replace => {
                // Refuse a directory or FIFO before O_TRUNC touches it.
                match std::fs::metadata(path) {
                    Ok(meta) if !meta.is_file() => return Err(not_a_file(path)),
                    _ => {}
                }
                open_nonblocking(path, OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC)?
            }
        };
        ensure_regular(&file, path)?;
        self.files.insert(id, file);
        Ok(())
    }

    /// `fs/readBlock`: up to `len` bytes at `offset`; `eof` when fewer came back.
    ///
    /// # Errors
    /// `-32004` "unknown file handle `X`"; a write handle `-32603` "Bad file descriptor (os
    /// error 9)".
    pub fn read_block(
        &self,
        id: &str,
        offset: u64,
        len: usize,
    ) -> Result<ReadBlockResult, FsError> {
        let file = self.get(id)?;
        // Read into the spare capacity: no zero-fill of the block first.
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = offset + buf.len() as u64;
            match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => break,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(FsError::from_io(&std::io::Error::from(e))),
            }
        }
        // The capacity may exceed `len`; never answer more than asked.
        buf.truncate(len);
        let filled = buf.len();
        Ok(ReadBlockResult {
            eof: filled < len,
            chunk: buf.into(),
        })
    }

    /// `fs/writeBlock`: all of `data` at `offset` (blocks may come in any order; a gap reads
    /// as zeros).
    ///
    /// # Errors
    /// `-32004` unknown handle; a read handle `-32603` "Bad file descriptor (os error 9)".
    pub fn write_block(&self, id: &str, offset: u64, data: &[u8]) -> Result<(), FsError> {
        let file = self.get(id)?;
        file.write_all_at(data, offset).map_err(FsError::from)
    }

    /// `fs/close`: idempotent, an unknown id is success.
    pub fn close(&mut self, id: &str) {
        self.files.remove(id);
    }

    fn get(&self, id: &str) -> Result<&File, FsError> {
        self.files.get(id).ok_or_else(|| {
            FsError::new(FsErrorKind::NotFound, format!("unknown file handle `{id}`"))
        })
    }
}

fn open_nonblocking(path: &Path, flags: OFlags) -> Result<File, FsError> {
    let fd = rustix::fs::openat(
        CWD,
        path,
        flags | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )
    .map_err(|e| FsError::from_io(&e.into()))?;
    Ok(File::from(fd))
}
