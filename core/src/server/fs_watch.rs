//! ext: `fs/watch` / `fs/unwatch` and the coalescing of `fs/changed` (PROTOCOL.md §13.2).
//!
//! The core validates the request (the path, a live `watchId`, the per-connection bound
//! [`ServerConfig::max_fs_watches`](super::ServerConfig::max_fs_watches)), asks the runtime to
//! install the watch ([`Command::FsWatch`], answered through [`Server::handle_fs`]) and gets
//! raw changes back ([`Server::handle_fs_change`]). Changes of one watch are gathered for
//! [`fs_watch_coalesce`](super::ServerConfig::fs_watch_coalesce) from the first one (a core
//! timer, so tests run on the simulated clock), then sent as one `fs/changed` per kind, paths
//! listed once each, at most [`max_fs_watch_paths`](super::ServerConfig::max_fs_watch_paths)
//! per window. Watches belong to the connection, like file handles: they end with it
//! ([`Command::FsCloseConnection`]) and a resumed session does not get them back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use super::fs::Install;
use super::outbound::{ok, Reply};
use super::timers::Timer;
use super::{Command, Output, Server};
use crate::ids::ConnId;
use crate::protocol::fs::EmptyResult;
use crate::protocol::{
    host_path, method, ChangedNotification, FsChangeKind, PathUri, UnwatchParams, WatchParams,
};
use crate::rpc::{self, RequestId, RpcError};
use crate::FsTicket;

/// The `fs/watch` watches of every connection.
#[derive(Debug, Default)]
pub(super) struct WatchState {
    conns: BTreeMap<ConnId, BTreeMap<u64, Watch>>,
}

#[derive(Debug)]
struct Watch {
    /// The ticket of the install; `None` once the runtime confirmed it.
    installing: Option<FsTicket>,
    /// Changes gathered in the open coalescing window.
    batch: Option<Batch>,
}

#[derive(Debug)]
struct Batch {
    /// When the window closes (its timer), or `None` when the timer could not be armed.
    due: Option<Instant>,
    /// One group per kind, in the order the kinds first appeared.
    groups: Vec<ChangedNotification>,
    seen: BTreeSet<(FsChangeKind, PathBuf)>,
    paths: usize,
}

impl Server {
    /// `fs/watch {watchId, path, recursive}`: one [`Command::FsWatch`], answered later.
    ///
    /// Errors: `-32600` for a foreign-host path, a `watchId` live on this connection, past
    /// `maxFsWatches` live watches or the fs in-flight bound; `-32004` (from the runtime) for a
    /// missing path.
    pub(super) fn fs_watch(&mut self, conn: ConnId, id: &RequestId, params: WatchParams) -> Reply {
        let path = host_path(&params.path).map_err(|e| e.to_rpc_error())?;
        let watch_id = params.watch_id;
        let limit = self.config.max_fs_watches;
        let live = self.fs_watches.conns.get(&conn);
        if live.is_some_and(|w| w.contains_key(&watch_id)) {
            return Err(RpcError::invalid_request(format!(
                "fs/watch id {watch_id} is already live on this connection"
            )));
        }
        if live.map_or(0, BTreeMap::len) >= limit {
            return Err(RpcError::invalid_request(format!(
                "too many fs/watch watches on this connection (limit maxFsWatches = {limit})"
            )));
        }
        let ticket = self.fs_ticket(conn, id, Install::Watch(watch_id))?;
        let watch = Watch {
            installing: Some(ticket),
            batch: None,
        };
        self.fs_watches
            .conns
            .entry(conn)
            .or_default()
            .insert(watch_id, watch);
        self.out.push_back(Output::Command(Command::FsWatch {
            ticket,
            conn,
            watch_id,
            path,
            recursive: params.recursive,
        }));
        Ok(None)
    }

    /// `fs/unwatch {watchId}` → `{}`: no more `fs/changed` for it (changes gathered and not yet
    /// sent are dropped). An unknown id is not an error, as `fs/close`.
    pub(super) fn fs_unwatch(&mut self, conn: ConnId, params: UnwatchParams) -> Reply {
        let watch_id = params.watch_id;
        let removed = self
            .fs_watches
            .conns
            .get_mut(&conn)
            .and_then(|w| w.remove(&watch_id));
        if let Some(w) = removed {
            if let Some(batch) = w.batch {
                self.disarm(batch.due, Timer::FsWatchFlush(conn, watch_id));
            }
            // One still installing is removed when its install is answered.
            if w.installing.is_none() {
                self.out
                    .push_back(Output::Command(Command::FsUnwatch { conn, watch_id }));
            }
        }
        ok(&EmptyResult {})
    }

    /// The runtime saw `paths` of watch `watch_id` of `conn` change by `kind` (a
    /// [`FsChangeKind::Rescan`] may come with no paths). The change joins the watch's open
    /// window, opening one if needed; changes of removed watches are ignored.
    pub fn handle_fs_change(
        &mut self,
        now: Instant,
        conn: ConnId,
        watch_id: u64,
        kind: FsChangeKind,
        paths: Vec<PathBuf>,
    ) {
        let window = self.config.fs_watch_coalesce;
        let max_paths = self.config.max_fs_watch_paths;
        let Some(w) = self
            .fs_watches
            .conns
            .get_mut(&conn)
            .and_then(|w| w.get_mut(&watch_id))
        else {
            return;
        };
        let opened = w.batch.is_none();
        let batch = w.batch.get_or_insert_with(|| Batch {
            due: None,
            groups: Vec::new(),
            seen: BTreeSet::new(),
            paths: 0,
        });
        batch.add(watch_id, kind, paths, max_paths);
        if opened {
            let due = if window.is_zero() {
                None
            } else {
                self.arm(now, window, Timer::FsWatchFlush(conn, watch_id))
            };
            match due {
                Some(at) => self.set_batch_due(conn, watch_id, at),
                None => self.on_fs_watch_flush(conn, watch_id),
            }
        }
        self.settle(now);
    }

    /// Number of live `fs/watch` watches of `conn`.
    pub fn fs_watch_count(&self, conn: ConnId) -> usize {
        self.fs_watches.conns.get(&conn).map_or(0, BTreeMap::len)
    }

    /// The window of watch `watch_id` closed: send what it gathered.
    pub(super) fn on_fs_watch_flush(&mut self, conn: ConnId, watch_id: u64) {
        let Some(batch) = self
            .fs_watches
            .conns
            .get_mut(&conn)
            .and_then(|w| w.get_mut(&watch_id))
            .and_then(|w| w.batch.take())
        else {
            return;
        };
        if !self.owns_session(conn) {
            return;
        }
        for n in batch.groups {
            let text = rpc::encode_notification(method::FS_CHANGED, &n);
            self.transmit(conn, text);
        }
    }

    /// The install of `watch_id` (ticket `ticket`) was answered.
    pub(super) fn on_fs_watch_installed(
        &mut self,
        conn: ConnId,
        watch_id: u64,
        ticket: FsTicket,
        installed: bool,
    ) {
        let watches = self.fs_watches.conns.get_mut(&conn);
        let current = watches.and_then(|w| {
            let ours = w.get(&watch_id)?.installing == Some(ticket);
            if !ours {
                return None;
            }
            if installed {
                w.get_mut(&watch_id).map(|x| x.installing = None)
            } else {
                w.remove(&watch_id).map(drop)
            }
        });
        if current.is_none() && installed {
            // Removed (`fs/unwatch`) while installing: the runtime's watch is not wanted.
            let replaced = self
                .fs_watches
                .conns
                .get(&conn)
                .is_some_and(|w| w.contains_key(&watch_id));
            if !replaced {
                self.out
                    .push_back(Output::Command(Command::FsUnwatch { conn, watch_id }));
            }
        }
    }

    /// `conn` closed: forget its watches and their windows (the runtime drops its watches on
    /// [`Command::FsCloseConnection`]).
    pub(super) fn drop_fs_watches_of(&mut self, conn: ConnId) {
        let Some(watches) = self.fs_watches.conns.remove(&conn) else {
            return;
        };
        for (watch_id, w) in watches {
            if let Some(batch) = w.batch {
                self.disarm(batch.due, Timer::FsWatchFlush(conn, watch_id));
            }
        }
    }

    fn set_batch_due(&mut self, conn: ConnId, watch_id: u64, at: Instant) {
        if let Some(batch) = self
            .fs_watches
            .conns
            .get_mut(&conn)
            .and_then(|w| w.get_mut(&watch_id))
            .and_then(|w| w.batch.as_mut())
        {
            batch.due = Some(at);
        }
    }
}

impl Batch {
    /// Adds the paths of one change, each once per kind, up to `max_paths` in the window.
    fn add(&mut self, watch_id: u64, kind: FsChangeKind, paths: Vec<PathBuf>, max_paths: usize) {
        let pos = match self.groups.iter().position(|g| g.kind == kind) {
            Some(pos) => pos,
            None => {
                self.groups.push(ChangedNotification {
                    watch_id,
                    kind,
                    paths: Vec::new(),
                    truncated: false,
                });
                self.groups.len() - 1
            }
        };
        for path in paths {
            if self.seen.contains(&(kind, path.clone())) {
                continue;
            }
            // A path that is not valid UTF-8 has no PathUri: it is reported as left out.
            let uri = PathUri::from_host_path(&path).ok();
            let group = &mut self.groups[pos];
            match uri {
                Some(uri) if self.paths < max_paths => {
                    group.paths.push(uri);
                    self.paths += 1;
                    self.seen.insert((kind, path));
                }
                _ => group.truncated = true,
            }
        }
    }
}
