//! The server's `fs/watch` watches (ext) and the directories `fs/watchMissing` watches look at,
//! on one notify watcher (inotify on Linux) shared by every connection: an inotify instance is a
//! scarce per-user resource (`max_user_instances`, 128 by default), a watch descriptor is not.
//!
//! notify keeps one entry per watched directory, so watches of one connection or of several
//! that overlap (a recursive watch of `/w` and a plain one of `/w/sub`) share entries. Adding
//! never loses events (inotify merges a second watch of an inode into the first), so after a
//! plain watch is added the recursive watches around it are added again, which keeps their
//! directories marked recursive (new subdirectories keep being picked up). Removing the OS
//! watch of a path drops the events queued for it, so it is done only when no other watch
//! needs that path: while another watch has the same path, or a recursive watch covers it, the
//! OS watch stays (a recursive tree left under a remaining plain watch stays watched until that
//! one goes too). Events are routed to each watch whose path covers them: an `fs/watch` gets
//! them as [`FsDone::Changed`] (the core coalesces them), an `fs/watchMissing` watch is only
//! told that it was touched (its owner checks whether it fired).
//!
//! Install and removal block (notify's own thread walks recursive trees): they run on the
//! runtime's blocking pool, one at a time and in the order the core asked for them (one job
//! drains the queue). The notify thread delivers events under the `routes` lock only, which no
//! install holds while it waits on notify.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use execd_core::protocol::fs::EmptyResult;
use execd_core::protocol::{FsChangeKind, FsError, FsErrorKind, FsResult};
use execd_core::{ConnId, FsTicket};
use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tracing::{debug, trace};

use crate::fs_service::{lock, FsDone, Report};
use crate::runtime::Runtime;

/// The watches of the server.
#[derive(Clone)]
pub(crate) struct FsWatches {
    inner: Arc<Inner>,
}

/// What a route belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Sub {
    /// `fs/watch` watch `watchId`.
    Watch(u64),
    /// Directory number `.1` of `fs/watchMissing` watch `.0`.
    Missing(u64, usize),
}

/// The routes of a connection that [`FsWatches::submit_remove`] removes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Which {
    /// Every route of the connection.
    All,
    /// `fs/watch` watch `watchId`.
    Watch(u64),
    /// Every directory of `fs/watchMissing` watch `watchId`.
    Missing(u64),
}

impl Which {
    fn selects(self, sub: Sub) -> bool {
        match (self, sub) {
            (Which::All, _) => true,
            (Which::Watch(a), Sub::Watch(b)) | (Which::Missing(a), Sub::Missing(b, _)) => a == b,
            _ => false,
        }
    }
}

/// Tells the owner of `fs/watchMissing` watch `watchId` of a connection that one of its
/// directories changed; called on notify's thread, never blocks.
pub(crate) type Touched = Arc<dyn Fn(ConnId, u64) + Send + Sync>;

struct Inner {
    /// The OS watcher, created on first use.
    os: Mutex<Option<RecommendedWatcher>>,
    /// Which watch sees which paths.
    routes: Mutex<BTreeMap<(ConnId, Sub), Route>>,
    done: Report,
    touched: Touched,
    queue: Mutex<Queue>,
}

/// A blocking job run in the order of the install and removal queue.
pub(crate) type Job = Box<dyn FnOnce(&FsWatches) + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// A blocking job is draining `jobs`.
    running: bool,
}

#[derive(Debug, Clone)]
struct Route {
    path: PathBuf,
    recursive: bool,
}

impl Route {
    /// Whether a change of `p` concerns this watch.
    fn covers(&self, p: &Path) -> bool {
        p == self.path
            || if self.recursive {
                p.starts_with(&self.path)
            } else {
                p.parent() == Some(self.path.as_path())
            }
    }

    /// Whether this watch shares notify entries with a watch of `p`.
    fn related(&self, p: &Path) -> bool {
        self.path.starts_with(p) || p.starts_with(&self.path)
    }
}

impl FsWatches {
    /// No watches yet; `fs/watch` changes are reported on `done`, touched `fs/watchMissing`
    /// watches on `touched`.
    pub(crate) fn new(done: Report, touched: Touched) -> Self {
        FsWatches {
            inner: Arc::new(Inner {
                os: Mutex::new(None),
                routes: Mutex::new(BTreeMap::new()),
                done,
                touched,
                queue: Mutex::default(),
            }),
        }
    }

    /// `Command::FsWatch`: installs the watch off the loop and reports
    /// [`FsDone::WatchInstalled`].
    pub(crate) fn submit_install(
        &self,
        runtime: &dyn Runtime,
        ticket: FsTicket,
        conn: ConnId,
        watch_id: u64,
        path: PathBuf,
        recursive: bool,
    ) {
        self.submit(
            runtime,
            Box::new(move |w| {
                let result = w
                    .install(conn, Sub::Watch(watch_id), path, recursive)
                    .map(|()| FsResult::Empty(EmptyResult {}));
                (w.inner.done)(FsDone::WatchInstalled {
                    ticket,
                    conn,
                    watch_id,
                    result,
                });
            }),
        );
    }

    /// Removes the routes of `conn` that `which` selects, off the loop.
    pub(crate) fn submit_remove(&self, runtime: &dyn Runtime, conn: ConnId, which: Which) {
        self.submit(
            runtime,
            Box::new(move |w| w.remove(conn, |sub| which.selects(sub))),
        );
    }

    /// Runs `job` off the loop after every install and removal queued before it (blocking).
    pub(crate) fn submit(&self, runtime: &dyn Runtime, job: Job) {
        let start = {
            let mut q = lock(&self.inner.queue);
            q.jobs.push_back(job);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            let this = self.clone();
            runtime.spawn_blocking(Box::new(move || loop {
                let job = {
                    let mut q = lock(&this.inner.queue);
                    match q.jobs.pop_front() {
                        Some(job) => job,
                        None => {
                            q.running = false;
                            return;
                        }
                    }
                };
                job(&this);
            }));
        }
    }

    /// Installs route `sub` of `conn` (blocking; replaces a route of the same key).
    ///
    /// # Errors
    /// The path's stat error (`-32004` when missing); `-32603` when the OS refuses the watch
    /// (e.g. the inotify limits).
    pub(crate) fn install(
        &self,
        conn: ConnId,
        sub: Sub,
        path: PathBuf,
        recursive: bool,
    ) -> Result<(), FsError> {
        // notify's errors carry no errno: stat first for the usual fs error.
        std::fs::metadata(&path).map_err(|e| FsError::from_io(&e))?;
        let route = Route {
            path: path.clone(),
            recursive,
        };
        lock(&self.inner.routes).insert((conn, sub), route.clone());
        let mut os = lock(&self.inner.os);
        let result = match os.as_mut() {
            Some(w) => add(w, &route),
            None => self.watcher().and_then(|mut w| {
                let r = add(&mut w, &route);
                *os = Some(w);
                r
            }),
        };
        if let Err(e) = result {
            lock(&self.inner.routes).remove(&(conn, sub));
            if let Some(w) = os.as_mut() {
                self.release(w, &path);
            }
            return Err(e);
        }
        if let (Some(w), false) = (os.as_mut(), recursive) {
            self.readd(w, &path, |r| r.recursive);
        }
        debug!(%conn, ?sub, path = %path.display(), recursive, "fs watch installed");
        Ok(())
    }

    /// Removes the routes of `conn` that `which` accepts (blocking).
    pub(crate) fn remove(&self, conn: ConnId, which: impl Fn(Sub) -> bool) {
        let mut gone = Vec::new();
        lock(&self.inner.routes).retain(|(c, sub), r| {
            let keep = *c != conn || !which(*sub);
            if !keep {
                gone.push(r.path.clone());
            }
            keep
        });
        if gone.is_empty() {
            return;
        }
        gone.sort();
        gone.dedup();
        let mut os = lock(&self.inner.os);
        if let Some(w) = os.as_mut() {
            for path in &gone {
                self.release(w, path);
            }
        }
        trace!(%conn, removed = gone.len(), "fs/watch removed");
    }

    /// The last watch of `path` is gone: removes the OS watch unless another watch still
    /// needs it, then adds the watches below `path` again (notify removed them with it).
    fn release(&self, w: &mut RecommendedWatcher, path: &Path) {
        let needed = lock(&self.inner.routes)
            .values()
            .any(|r| r.path == path || (r.recursive && path.starts_with(&r.path)));
        if needed {
            return;
        }
        let _ = w.unwatch(path);
        self.readd(w, path, |_| true);
    }

    /// Adds the watches related to `path` that `which` selects again, plain ones before
    /// recursive ones.
    fn readd(&self, w: &mut RecommendedWatcher, path: &Path, which: impl Fn(&Route) -> bool) {
        let mut related: Vec<Route> = lock(&self.inner.routes)
            .values()
            .filter(|r| r.related(path) && which(r))
            .cloned()
            .collect();
        related.sort_by_key(|r| r.recursive);
        for r in &related {
            // A path gone meanwhile: its watch sees nothing more; the client learns of the
            // removal from the event.
            let _ = add(w, r);
        }
    }

    fn watcher(&self) -> Result<RecommendedWatcher, FsError> {
        let inner = Arc::downgrade(&self.inner);
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Some(inner) = inner.upgrade() {
                inner.route(event);
            }
        })
        .map_err(notify_error)
    }
}

impl Inner {
    /// Hands one notify event to every watch it concerns.
    fn route(&self, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                debug!(error = %e, "fs/watch: watcher error");
                return;
            }
        };
        let kind = if event.need_rescan() {
            FsChangeKind::Rescan
        } else {
            match change_kind(&event.kind) {
                Some(kind) => kind,
                None => return,
            }
        };
        let mut touched = BTreeSet::new();
        for (&(conn, sub), r) in lock(&self.routes).iter() {
            let paths: Vec<PathBuf> = match kind {
                // Events were lost: every watch may have missed its change.
                FsChangeKind::Rescan => Vec::new(),
                _ => {
                    let paths: Vec<PathBuf> = event
                        .paths
                        .iter()
                        .filter(|p| r.covers(p))
                        .cloned()
                        .collect();
                    if paths.is_empty() {
                        continue;
                    }
                    paths
                }
            };
            match sub {
                Sub::Watch(watch_id) => (self.done)(FsDone::Changed {
                    conn,
                    watch_id,
                    kind,
                    paths,
                }),
                Sub::Missing(watch_id, _) => {
                    touched.insert((conn, watch_id));
                }
            }
        }
        for (conn, watch_id) in touched {
            (self.touched)(conn, watch_id);
        }
    }
}

/// The `fs/changed` kind of a notify event; `None` for accesses (opens, closes, reads), which
/// change nothing.
fn change_kind(kind: &EventKind) -> Option<FsChangeKind> {
    Some(match kind {
        EventKind::Access(_) => return None,
        EventKind::Create(_) => FsChangeKind::Create,
        EventKind::Remove(_) => FsChangeKind::Remove,
        EventKind::Modify(ModifyKind::Name(_)) => FsChangeKind::Rename,
        EventKind::Modify(_) => FsChangeKind::Modify,
        EventKind::Any | EventKind::Other => FsChangeKind::Other,
    })
}

fn add(w: &mut RecommendedWatcher, r: &Route) -> Result<(), FsError> {
    let mode = if r.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    w.watch(&r.path, mode).map_err(notify_error)
}

/// A notify error as an fs error: OS errors keep their text and code; the inotify watch limit
/// is named.
fn notify_error(e: notify::Error) -> FsError {
    match e.kind {
        notify::ErrorKind::Io(io) => FsError::from_io(&io),
        notify::ErrorKind::PathNotFound => FsError::from_io(&std::io::Error::from_raw_os_error(2)),
        notify::ErrorKind::MaxFilesWatch => FsError::new(
            FsErrorKind::Other,
            "the OS limit of inotify watches is reached (fs.inotify.max_user_watches)",
        ),
        other => FsError::new(FsErrorKind::Other, format!("fs/watch failed: {other:?}")),
    }
}
