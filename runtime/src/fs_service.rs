//! The server's fs worker: performs [`Command::Fs`](execd_core::Command::Fs) operations on the
//! runtime's blocking pool, keeps each connection's [`FsHandles`], and polls the paths of
//! `fs/watchMissing` watches.
//!
//! Ordering: operations on file handles (`fs/open`, `fs/readBlock`, `fs/writeBlock`,
//! `fs/close`) of one connection run one at a time, in the order the core gave them, on one
//! blocking job that drains the connection's queue; path operations (`fs/readFile`,
//! `fs/walk`, …) run concurrently. Results come back to the event loop as [`FsDone`].
//!
//! Watches are polled every [`WATCH_POLL`] on the blocking pool (no inotify dependency). A watch
//! fires once, when a `missing` path exists, when the nearest existing ancestor of one gets
//! deeper (a parent directory was created), or when `present` changes its modification time
//! (the reference fires on the same changes of the watched directories).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use execd_core::protocol::fs::WatchMissingResult;
use execd_core::protocol::{FsError, FsOp, FsResult};
use execd_core::sandbox::SandboxPolicy;
use execd_core::{ConnId, FsTicket};
use tracing::{debug, trace};

use crate::fs::FsHandles;
use crate::runtime::{Runtime, Task};
use crate::sandbox;

/// Hands an [`FsDone`] to the event loop (from a blocking thread or a task); never blocks.
pub(crate) type Report = Arc<dyn Fn(FsDone) + Send + Sync>;

/// How often watched paths are checked.
pub(crate) const WATCH_POLL: Duration = Duration::from_millis(100);

/// What the fs worker reports to the event loop.
#[derive(Debug)]
pub(crate) enum FsDone {
    /// Operation `ticket` finished.
    Op(FsTicket, Result<FsResult, FsError>),
    /// A watch install was checked: `Some` when it should be installed.
    WatchChecked {
        ticket: FsTicket,
        conn: ConnId,
        watch_id: u64,
        watch: Option<Watch>,
    },
    /// Watch `watch_id` of `conn` fired (it is already forgotten).
    WatchFired(ConnId, u64),
}

/// The paths of one installed watch and what they looked like when it was installed.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    missing: Vec<PathBuf>,
    /// The nearest existing ancestor of each `missing` path at install time.
    ancestors: Vec<Option<PathBuf>>,
    present: Option<(PathBuf, Option<SystemTime>)>,
}

/// The fs state of the event loop.
pub(crate) struct FsService {
    runtime: Arc<dyn Runtime>,
    done: Report,
    conns: HashMap<ConnId, Arc<ConnFs>>,
    watches: Arc<Mutex<BTreeMap<(ConnId, u64), Watch>>>,
    poller: Option<Task>,
}

/// One connection's handles and its queue of handle operations.
#[derive(Default)]
struct ConnFs {
    handles: Mutex<FsHandles>,
    queue: Mutex<HandleQueue>,
}

#[derive(Default)]
struct HandleQueue {
    jobs: VecDeque<(FsTicket, FsOp, Option<SandboxPolicy>)>,
    /// A blocking job is draining `jobs`.
    running: bool,
}

impl FsService {
    /// A worker reporting on `done`.
    pub(crate) fn new(runtime: Arc<dyn Runtime>, done: Report) -> Self {
        FsService {
            runtime,
            done,
            conns: HashMap::new(),
            watches: Arc::default(),
            poller: None,
        }
    }

    /// `Command::Fs`: runs `op` off the loop and reports [`FsDone::Op`].
    pub(crate) fn perform(
        &mut self,
        ticket: FsTicket,
        conn: ConnId,
        op: FsOp,
        sandbox: Option<SandboxPolicy>,
    ) {
        trace!(%conn, %ticket, method = op.method(), "fs op");
        let done = Arc::clone(&self.done);
        if op.handle().is_none() {
            self.runtime.spawn_blocking(Box::new(move || {
                let result = sandbox::perform(op, sandbox.as_ref(), &mut FsHandles::new());
                done(FsDone::Op(ticket, result));
            }));
            return;
        }
        let c = Arc::clone(self.conns.entry(conn).or_default());
        let start = {
            let mut q = lock(&c.queue);
            q.jobs.push_back((ticket, op, sandbox));
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            self.runtime
                .spawn_blocking(Box::new(move || drain_handle_queue(&c, &done)));
        }
    }

    /// `Command::WatchMissing`: checks the paths off the loop and reports
    /// [`FsDone::WatchChecked`].
    pub(crate) fn watch(
        &mut self,
        ticket: FsTicket,
        conn: ConnId,
        watch_id: u64,
        missing: Vec<PathBuf>,
        present: Option<PathBuf>,
    ) {
        self.conns.entry(conn).or_default();
        let done = Arc::clone(&self.done);
        self.runtime.spawn_blocking(Box::new(move || {
            let watch = Watch::install(missing, present);
            done(FsDone::WatchChecked {
                ticket,
                conn,
                watch_id,
                watch,
            });
        }));
    }

    /// The install check of a watch came back: keep it (unless its connection is gone) and
    /// return the answer for the core.
    pub(crate) fn watch_checked(
        &mut self,
        conn: ConnId,
        watch_id: u64,
        watch: Option<Watch>,
    ) -> Result<FsResult, FsError> {
        let watching = watch.is_some() && self.conns.contains_key(&conn);
        if let (true, Some(watch)) = (watching, watch) {
            lock(&self.watches).insert((conn, watch_id), watch);
            self.start_poller();
        }
        Ok(FsResult::WatchMissing(WatchMissingResult { watching }))
    }

    /// `Command::UnwatchMissing`.
    pub(crate) fn unwatch(&mut self, conn: ConnId, watch_id: u64) {
        lock(&self.watches).remove(&(conn, watch_id));
    }

    /// `Command::FsCloseConnection`: drops the handles (once queued operations finish) and
    /// the watches of `conn`.
    pub(crate) fn close_connection(&mut self, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            debug!(%conn, "fs handles dropped");
        }
        lock(&self.watches).retain(|(c, _), _| *c != conn);
    }

    /// Starts the watch poller on first use; it lives as long as the service.
    fn start_poller(&mut self) {
        if self.poller.is_some() {
            return;
        }
        let runtime = Arc::clone(&self.runtime);
        let watches = Arc::clone(&self.watches);
        let done = Arc::clone(&self.done);
        self.poller = Some(self.runtime.spawn(Box::pin(async move {
            loop {
                runtime
                    .sleep_until(runtime.now() + WATCH_POLL)
                    .as_mut()
                    .await;
                let snapshot: Vec<((ConnId, u64), Watch)> = lock(&watches)
                    .iter()
                    .map(|(k, w)| (*k, w.clone()))
                    .collect();
                if snapshot.is_empty() {
                    continue;
                }
                let (tx, rx) = async_channel::bounded(1);
                runtime.spawn_blocking(Box::new(move || {
                    let fired: Vec<(ConnId, u64)> = snapshot
                        .into_iter()
                        .filter(|(_, w)| w.fired())
                        .map(|(k, _)| k)
                        .collect();
                    let _ = tx.send_blocking(fired);
                }));
                let Ok(fired) = rx.recv().await else {
                    continue;
                };
                for key in fired {
                    // Only a watch still installed fires (not one removed meanwhile).
                    if lock(&watches).remove(&key).is_some() {
                        done(FsDone::WatchFired(key.0, key.1));
                    }
                }
            }
        })));
    }
}

impl Watch {
    /// `None` (not watching, as the reference answers) when a `missing` path already exists
    /// or `present` does not.
    fn install(missing: Vec<PathBuf>, present: Option<PathBuf>) -> Option<Watch> {
        if missing.iter().any(|p| exists(p)) {
            return None;
        }
        let present = match present {
            None => None,
            Some(p) => {
                let meta = std::fs::metadata(&p).ok()?;
                Some((p, meta.modified().ok()))
            }
        };
        let ancestors = missing.iter().map(|p| nearest_existing(p)).collect();
        Some(Watch {
            missing,
            ancestors,
            present,
        })
    }

    /// Whether something watched changed since the install.
    fn fired(&self) -> bool {
        if self.missing.iter().any(|p| exists(p)) {
            return true;
        }
        let deeper = self
            .missing
            .iter()
            .zip(&self.ancestors)
            .any(|(p, was)| nearest_existing(p) != *was);
        let present_changed = self.present.as_ref().is_some_and(|(p, mtime)| {
            std::fs::metadata(p).ok().and_then(|m| m.modified().ok()) != *mtime
        });
        deeper || present_changed
    }
}

/// Runs the queued handle operations of one connection in order, then marks it idle.
fn drain_handle_queue(c: &ConnFs, done: &Report) {
    loop {
        let job = {
            let mut q = lock(&c.queue);
            match q.jobs.pop_front() {
                Some(job) => job,
                None => {
                    q.running = false;
                    return;
                }
            }
        };
        let (ticket, op, policy) = job;
        let result = sandbox::perform(op, policy.as_ref(), &mut lock(&c.handles));
        done(FsDone::Op(ticket, result));
    }
}

/// Whether `path` exists (a dangling symlink counts: the name is there).
fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The nearest ancestor of `path` that exists.
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|p| exists(p))
        .map(Path::to_path_buf)
}

/// Locks `m`, ignoring poisoning: the guarded tables stay consistent across a panicking op.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
