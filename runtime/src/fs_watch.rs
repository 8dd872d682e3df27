//! The server's `fs/watch` watches (ext) on one notify watcher (inotify on Linux), shared by
//! every connection: an inotify instance is a scarce per-user resource (`max_user_instances`,
//! 128 by default), a watch descriptor is not.
//!
//! notify keeps one entry per watched directory, so watches of one connection or of several
//! that overlap (a recursive watch of `/w` and a plain one of `/w/sub`) share entries. Adding
//! never loses events (inotify merges a second watch of an inode into the first), so after a
//! plain watch is added the recursive watches around it are added again, which keeps their
//! directories marked recursive (new subdirectories keep being picked up). Removing the OS
//! watch of a path drops the events queued for it, so it is done only when no other watch
//! needs that path: while another watch has the same path, or a recursive watch covers it, the
//! OS watch stays (a recursive tree left under a remaining plain watch stays watched until that
//! one goes too). Events are routed to each watch whose path covers them; the core coalesces
//! them.
//!
//! Install and removal block (notify's own thread walks recursive trees): they run on the
//! runtime's blocking pool, one at a time and in the order the core asked for them (one job
//! drains the queue). The notify thread delivers events under the `routes` lock only, which no
//! install holds while it waits on notify.

use std::collections::{BTreeMap, VecDeque};
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

struct Inner {
    /// The OS watcher, created on first use.
    os: Mutex<Option<RecommendedWatcher>>,
    /// Which watch sees which paths.
    routes: Mutex<BTreeMap<(ConnId, u64), Route>>,
    done: Report,
    queue: Mutex<Queue>,
}

type Job = Box<dyn FnOnce(&FsWatches) + Send>;

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
    /// No watches yet; changes are reported on `done`.
    pub(crate) fn new(done: Report) -> Self {
        FsWatches {
            inner: Arc::new(Inner {
                os: Mutex::new(None),
                routes: Mutex::new(BTreeMap::new()),
                done,
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
                    .install(conn, watch_id, path, recursive)
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

    /// Removes the watches of `conn` (`watch_id`, or all of them for `None`) off the loop.
    pub(crate) fn submit_remove(&self, runtime: &dyn Runtime, conn: ConnId, watch_id: Option<u64>) {
        self.submit(
            runtime,
            Box::new(move |w| w.remove(conn, |id| watch_id.is_none_or(|w| w == id))),
        );
    }

    /// Queues `job`; starts a blocking drain unless one runs.
    fn submit(&self, runtime: &dyn Runtime, job: Job) {
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

    /// Installs watch `watch_id` of `conn` (blocking; replaces a watch of the same key).
    ///
    /// # Errors
    /// The path's stat error (`-32004` when missing); `-32603` when the OS refuses the watch
    /// (e.g. the inotify limits).
    fn install(
        &self,
        conn: ConnId,
        watch_id: u64,
        path: PathBuf,
        recursive: bool,
    ) -> Result<(), FsError> {
        // notify's errors carry no errno: stat first for the usual fs error.
        std::fs::metadata(&path).map_err(|e| FsError::from_io(&e))?;
        let route = Route {
            path: path.clone(),
            recursive,
        };
        lock(&self.inner.routes).insert((conn, watch_id), route.clone());
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
            lock(&self.inner.routes).remove(&(conn, watch_id));
            if let Some(w) = os.as_mut() {
                self.release(w, &path);
            }
            return Err(e);
        }
        if let (Some(w), false) = (os.as_mut(), recursive) {
            self.readd(w, &path, |r| r.recursive);
        }
        debug!(%conn, watch_id, path = %path.display(), recursive, "fs/watch installed");
        Ok(())
    }

    /// Removes the watches of `conn` whose ids `which` accepts (blocking).
    fn remove(&self, conn: ConnId, which: impl Fn(u64) -> bool) {
        let mut gone = Vec::new();
        lock(&self.inner.routes).retain(|(c, id), r| {
            let keep = *c != conn || !which(*id);
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
        let routes = lock(&self.routes);
        if event.need_rescan() {
            for &(conn, watch_id) in routes.keys() {
                (self.done)(FsDone::Changed {
                    conn,
                    watch_id,
                    kind: FsChangeKind::Rescan,
                    paths: Vec::new(),
                });
            }
            return;
        }
        let Some(kind) = change_kind(&event.kind) else {
            return;
        };
        for (&(conn, watch_id), r) in routes.iter() {
            let paths: Vec<PathBuf> = event
                .paths
                .iter()
                .filter(|p| r.covers(p))
                .cloned()
                .collect();
            if !paths.is_empty() {
                (self.done)(FsDone::Changed {
                    conn,
                    watch_id,
                    kind,
                    paths,
                });
            }
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
