//! Typed `fs/*` calls on the async [`Client`]: each builds the params, calls, and decodes the
//! result. Paths are absolute host paths of the server's machine, sent as PathUris.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use execd_core::protocol::fs::{
    CanonicalizeResult, DirectoryEntry, GetMetadataResult, OpenMode, ReadDirectoryResult,
    WalkOptions, WalkResult,
};
use execd_core::protocol::method;
use execd_core::PathUri;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::{Client, Error};

impl<R> Client<R> {
    /// `fs/readFile`: the whole file.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for a relative path; [`Error::Rpc`] with the server's error
    /// (`-32004` missing, `-32600` permission or over the size cap, `-32603` other I/O).
    pub async fn read_file(&self, path: &Path) -> Result<Vec<u8>, Error> {
        let params = json!({"path": uri(path)?});
        Ok(self.data_call(method::FS_READ_FILE, params).await?.0)
    }

    /// `fs/writeFile`: creates or truncates the file with `data` (the parent must exist).
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file).
    pub async fn write_file(&self, path: &Path, data: &[u8]) -> Result<(), Error> {
        let params = json!({"path": uri(path)?, "dataBase64": STANDARD.encode(data)});
        self.fs_unit("fs/writeFile", params).await
    }

    /// `fs/getMetadata` (following symlinks).
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file).
    pub async fn get_metadata(&self, path: &Path) -> Result<GetMetadataResult, Error> {
        self.fs_call("fs/getMetadata", json!({"path": uri(path)?}))
            .await
    }

    /// `fs/readDirectory`: the entries, unsorted.
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file).
    pub async fn read_directory(&self, path: &Path) -> Result<Vec<DirectoryEntry>, Error> {
        let r: ReadDirectoryResult = self
            .fs_call("fs/readDirectory", json!({"path": uri(path)?}))
            .await?;
        Ok(r.entries)
    }

    /// `fs/createDirectory`; `recursive` creates parents and accepts an existing directory.
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file).
    pub async fn create_directory(&self, path: &Path, recursive: bool) -> Result<(), Error> {
        let params = json!({"path": uri(path)?, "recursive": recursive});
        self.fs_unit("fs/createDirectory", params).await
    }

    /// `fs/remove`; `recursive` removes directories with their contents, `force` accepts a
    /// missing path.
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file).
    pub async fn remove(&self, path: &Path, recursive: bool, force: bool) -> Result<(), Error> {
        let params = json!({"path": uri(path)?, "recursive": recursive, "force": force});
        self.fs_unit("fs/remove", params).await
    }

    /// `fs/copy`; `recursive` is required for directories.
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file).
    pub async fn copy(
        &self,
        source: &Path,
        destination: &Path,
        recursive: bool,
    ) -> Result<(), Error> {
        let params = json!({"sourcePath": uri(source)?, "destinationPath": uri(destination)?,
                            "recursive": recursive});
        self.fs_unit("fs/copy", params).await
    }

    /// `fs/canonicalize`: the absolute path with symlinks resolved.
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file); [`Error::InvalidResult`] when the answer is not a
    /// local PathUri.
    pub async fn canonicalize(&self, path: &Path) -> Result<PathBuf, Error> {
        let r: CanonicalizeResult = self
            .fs_call("fs/canonicalize", json!({"path": uri(path)?}))
            .await?;
        r.path
            .to_host_path()
            .map_err(|e| Error::InvalidResult(e.to_string()))
    }

    /// `fs/walk`: breadth-first listing under `path` within `options`.
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file) (`-32600` for limits above the maxima).
    pub async fn walk(&self, path: &Path, options: WalkOptions) -> Result<WalkResult, Error> {
        self.fs_call("fs/walk", json!({"path": uri(path)?, "options": options}))
            .await
    }

    /// `fs/open`: a handle named `handle_id` (at most 32 bytes) on `path`.
    ///
    /// # Errors
    /// As [`read_file`](Self::read_file); `-32600` for a duplicate id or past 128 handles.
    pub async fn open(
        &self,
        handle_id: &str,
        path: &Path,
        mode: OpenMode,
    ) -> Result<FileHandle<R>, Error> {
        let params = json!({"handleId": handle_id, "path": uri(path)?, "mode": mode});
        let _: Value = self.fs_call("fs/open", params).await?;
        Ok(FileHandle {
            client: self.clone(),
            id: handle_id.to_owned(),
        })
    }

    async fn fs_call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, Error> {
        let v = self.call(method, params).await?;
        serde_json::from_value(v).map_err(|e| Error::InvalidResult(e.to_string()))
    }

    async fn fs_unit(&self, method: &str, params: Value) -> Result<(), Error> {
        self.call(method, params).await.map(drop)
    }
}

/// An open `fs/open` handle on the server; it lives on the client's connection (a reconnect
/// loses it) until [`close`](Self::close).
#[derive(Debug, Clone)]
pub struct FileHandle<R = std::sync::Arc<dyn crate::Runtime>> {
    client: Client<R>,
    id: String,
}

impl<R> FileHandle<R> {
    /// The handle id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `fs/readBlock`: up to `len` (1..=1 MiB) bytes at `offset`, and whether the end was
    /// reached (fewer bytes than asked).
    ///
    /// # Errors
    /// [`Error::Rpc`] (`-32004` unknown handle, `-32600` bad length).
    pub async fn read_block(&self, offset: u64, len: u64) -> Result<(Vec<u8>, bool), Error> {
        let params = json!({"handleId": self.id, "offset": offset, "len": len});
        self.client.data_call(method::FS_READ_BLOCK, params).await
    }

    /// `fs/writeBlock`: writes `data` at `offset` (a `replace` handle).
    ///
    /// # Errors
    /// [`Error::Rpc`] (`-32603` on a read handle).
    pub async fn write_block(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let params = json!({"handleId": self.id, "offset": offset, "chunk": STANDARD.encode(data)});
        self.client.fs_unit("fs/writeBlock", params).await
    }

    /// `fs/close` (idempotent).
    ///
    /// # Errors
    /// [`Error::Closed`] when the connection is gone.
    pub async fn close(&self) -> Result<(), Error> {
        self.client
            .fs_unit("fs/close", json!({"handleId": self.id}))
            .await
    }
}

/// `path` as a PathUri string.
pub(super) fn uri(path: &Path) -> Result<String, Error> {
    PathUri::from_host_path(path)
        .map(|u| u.as_str().to_owned())
        .map_err(|e| Error::InvalidPath(format!("{}: {e}", path.display())))
}
