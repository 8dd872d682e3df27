//! ext `fs/watch` through a [`Client`]: a stream of the server's `fs/changed` notifications
//! for one watch.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use execd_core::protocol::{method, ChangedNotification, FsChangeKind};
use futures::Stream;
use serde_json::json;

use super::driver::Cmd;
use super::fs::uri;
use super::{Client, Error};

/// Changes queued between the driver and an [`FsWatch`] before the driver waits (which stops
/// it reading the connection).
const CHANGE_QUEUE: usize = 64;

/// What the driver hands an [`FsWatch`]: the next change, or why none will come.
pub(crate) type ChangeItem = Result<FsChange, Error>;

/// Watch ids are unique in the process, so in every connection.
static NEXT_WATCH_ID: AtomicU64 = AtomicU64::new(1);

/// One `fs/changed`: what happened to which paths, within one coalescing window of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsChange {
    /// What happened.
    pub kind: FsChangeKind,
    /// Host paths of the server's machine, each once, in the order first seen (empty for
    /// [`FsChangeKind::Rescan`]).
    pub paths: Vec<PathBuf>,
    /// More paths changed than the server reports per window: re-read the tree.
    pub truncated: bool,
}

impl From<ChangedNotification> for FsChange {
    fn from(n: ChangedNotification) -> Self {
        FsChange {
            kind: n.kind,
            paths: n
                .paths
                .iter()
                .filter_map(|p| p.to_host_path().ok())
                .collect(),
            truncated: n.truncated,
        }
    }
}

impl<R> Client<R> {
    /// ext `fs/watch`: watches `path` (a file, a directory and its entries, or with
    /// `recursive` the whole tree) and returns the stream of its changes. Check the server's
    /// `capabilities.fsWatch` first; the reference answers `-32601`.
    ///
    /// The watch lives on this client's connection: a reconnect ends the stream with
    /// [`Error::Closed`]. Dropping the stream removes the watch.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for a relative path; [`Error::Rpc`]: `-32004` for a missing path,
    /// `-32600` past the server's `maxFsWatches`.
    pub async fn watch(&self, path: &Path, recursive: bool) -> Result<FsWatch, Error> {
        let watch_id = NEXT_WATCH_ID.fetch_add(1, Ordering::Relaxed);
        let params = json!({"watchId": watch_id, "path": uri(path)?, "recursive": recursive});
        let (changes_tx, changes) = async_channel::bounded(CHANGE_QUEUE);
        let (reply, rx) = async_channel::bounded(1);
        self.send(Cmd::FsWatch {
            watch_id,
            params,
            changes: changes_tx,
            reply,
        })
        .await?;
        rx.recv().await.map_err(|_| Error::Closed)??;
        Ok(FsWatch {
            watch_id,
            client: self.erased(),
            changes: Box::pin(changes),
            removed: false,
        })
    }
}

/// The changes of one `fs/watch` watch, as a [`Stream`] of [`FsChange`]s; it ends with an
/// [`Error::Closed`] item when the connection drops. Dropping it removes the watch on the
/// server.
///
/// Read it (or drop it) promptly: a full queue stops the client reading its connection.
#[derive(Debug)]
pub struct FsWatch {
    watch_id: u64,
    client: Client,
    changes: Pin<Box<async_channel::Receiver<ChangeItem>>>,
    removed: bool,
}

impl FsWatch {
    /// The `watchId` on the wire.
    pub fn watch_id(&self) -> u64 {
        self.watch_id
    }

    /// The next change.
    ///
    /// # Errors
    /// [`Error::Closed`] when the connection dropped (the server dropped the watch).
    pub async fn next_change(&mut self) -> Result<FsChange, Error> {
        match self.changes.recv().await {
            Ok(item) => item,
            Err(_) => Err(Error::Closed),
        }
    }

    /// `fs/unwatch`: no more changes are sent; those already queued are dropped.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn unwatch(mut self) -> Result<(), Error> {
        self.removed = true;
        self.changes.close();
        let params = json!({"watchId": self.watch_id});
        self.client.call(method::FS_UNWATCH, params).await.map(drop)
    }
}

impl Stream for FsWatch {
    type Item = Result<FsChange, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.changes.as_mut().poll_next(cx)
    }
}

impl Drop for FsWatch {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Fire and forget: nobody awaits the answer.
        let (reply, _) = async_channel::bounded(1);
        let _ = self.client.shared.cmds.try_send(Cmd::Call {
            method: method::FS_UNWATCH.to_owned(),
            params: json!({"watchId": self.watch_id}),
            reply,
        });
    }
}
