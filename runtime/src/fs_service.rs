//! The server's fs worker: performs [`Command::Fs`](execd_core::Command::Fs) operations on the
//! runtime's blocking pool, keeps each connection's [`FsHandles`], and checks `fs/watchMissing`
//! watches when inotify reports a change of the directories they look at.
//!
//! Ordering: operations on file handles (`fs/open`, `fs/readBlock`, `fs/writeBlock`,
//! `fs/close`) of one connection run one at a time, in the order the core gave them, on one
//! blocking job that drains the connection's queue; path operations (`fs/readFile`,
//! `fs/walk`, …) run concurrently. Results come back to the event loop as [`FsDone`].
//!
//! A `fs/watchMissing` watch fires once, when a `missing` path exists, when the nearest existing
//! ancestor of one changes (a parent directory was created or removed), or when `present`
//! changes its modification time (the reference fires on the same changes of the watched
//! directories). Each watch puts a plain (non-recursive) route on the shared notify watcher
//! ([`FsWatches`]) for the nearest existing ancestor of every `missing` path and for `present`:
//! every change that can fire it happens in one of them. An event there wakes the checker task,
//! which checks the touched watches on the blocking pool (the same stat comparison as ever: an
//! event only says where to look). A watch is also checked right after its routes are in place,
//! which catches a change between its install check and its routes. When the OS refuses a route
//! (the inotify limits), that watch is polled every [`WATCH_POLL`] instead. Not seen by inotify
//! (the poll would see it): a rename of a directory above a watched ancestor.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use execd_core::protocol::fs::WatchMissingResult;
use execd_core::protocol::{FsChangeKind, FsError, FsOp, FsResult};
use execd_core::sandbox::SandboxPolicy;
use execd_core::{ConnId, FsTicket};
use tracing::{debug, trace};

use crate::fs::FsHandles;
use crate::fs_watch::{FsWatches, Sub, Which};
use crate::runtime::{Runtime, Task};
use crate::sandbox;

/// Hands an [`FsDone`] to the event loop (from a blocking thread or a task); never blocks.
pub(crate) type Report = Arc<dyn Fn(FsDone) + Send + Sync>;

/// How often the paths of a `fs/watchMissing` watch that inotify cannot follow are checked.
pub(crate) const WATCH_POLL: Duration = Duration::from_millis(100);

/// What the fs worker reports to the event loop.
#[derive(Debug)]
pub(crate) enum FsDone {
    /// Operation `ticket` finished.
    Op(FsTicket, Result<FsResult, FsError>),
    /// A piece of the file `fs/readFile` `ticket` is reading (`Command::Fs::pieces`), behind
    /// [`execd_core::FS_PIECE_HEADROOM`] spare bytes; its `Op` follows.
    Piece(FsTicket, Vec<u8>),
    /// A watch install was checked: `Some` when it should be installed.
    WatchChecked {
        ticket: FsTicket,
        conn: ConnId,
        watch_id: u64,
        watch: Option<Watch>,
    },
    /// Watch `watch_id` of `conn` fired (it is already forgotten).
    WatchFired(ConnId, u64),
    /// An `fs/watch` install finished.
    WatchInstalled {
        ticket: FsTicket,
        conn: ConnId,
        watch_id: u64,
        result: Result<FsResult, FsError>,
    },
    /// `fs/watch` watch `watch_id` of `conn` saw `paths` change.
    Changed {
        conn: ConnId,
        watch_id: u64,
        kind: FsChangeKind,
        paths: Vec<PathBuf>,
    },
}

/// The paths of one installed watch and what they looked like when it was installed.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    missing: Vec<PathBuf>,
    /// The nearest existing ancestor of each `missing` path at install time.
    ancestors: Vec<Option<PathBuf>>,
    present: Option<(PathBuf, Option<SystemTime>)>,
    /// Its routes could not be installed: checked every [`WATCH_POLL`].
    polled: bool,
}

/// The fs state of the event loop.
pub(crate) struct FsService {
    runtime: Arc<dyn Runtime>,
    done: Report,
    conns: HashMap<ConnId, Arc<ConnFs>>,
    watches: Arc<Mutex<BTreeMap<(ConnId, u64), Watch>>>,
    /// Wakes the checker with a watch to check.
    touched: async_channel::Sender<(ConnId, u64)>,
    touched_rx: async_channel::Receiver<(ConnId, u64)>,
    /// The checker task, started with the first watch.
    checker: Option<Task>,
    /// `fs/watch` watches (ext).
    changes: FsWatches,
    /// The piece credits (`Command::FsPull`) of each `fs/readFile` read in pieces, and the
    /// connection it reads for; the reader waits on the other end before each next piece.
    piece_credits: HashMap<FsTicket, (ConnId, async_channel::Sender<()>)>,
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
        let (touched, touched_rx) = async_channel::unbounded();
        let tx = touched.clone();
        let on_touch = Arc::new(move |conn, watch_id| {
            let _ = tx.try_send((conn, watch_id));
        });
        FsService {
            runtime,
            changes: FsWatches::new(Arc::clone(&done), on_touch),
            done,
            conns: HashMap::new(),
            watches: Arc::default(),
            touched,
            touched_rx,
            checker: None,
            piece_credits: HashMap::new(),
        }
    }

    /// `Command::Fs`: runs `op` off the loop and reports [`FsDone::Op`], an `fs/readFile`
    /// with `pieces` after [`FsDone::Piece`]s of that many bytes.
    pub(crate) fn perform(
        &mut self,
        ticket: FsTicket,
        conn: ConnId,
        op: FsOp,
        (sandbox, pieces): (Option<SandboxPolicy>, Option<usize>),
    ) {
        trace!(%conn, %ticket, method = op.method(), "fs op");
        let done = Arc::clone(&self.done);
        if let Some(piece) = pieces.filter(|_| matches!(op, FsOp::ReadFile { .. })) {
            let (credit, credits) = async_channel::unbounded();
            self.piece_credits.insert(ticket, (conn, credit));
            self.runtime.spawn_blocking(Box::new(move || {
                // Each piece waits for its credit; without one (the connection or the read
                // is gone) the read stops.
                let mut emit = |bytes| {
                    done(FsDone::Piece(ticket, bytes));
                    credits.recv_blocking().is_ok()
                };
                let piece = (piece, execd_core::FS_PIECE_HEADROOM);
                let result = match credits.recv_blocking() {
                    Ok(()) => sandbox::read_file_in_pieces(op, sandbox.as_ref(), piece, &mut emit),
                    Err(_) => Err(crate::fs::read_stopped()),
                };
                done(FsDone::Op(ticket, result));
            }));
            return;
        }
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

    /// `Command::FsPull`: one more piece for `fs/readFile` `ticket` (unknown tickets are
    /// ignored).
    pub(crate) fn pull(&mut self, ticket: FsTicket) {
        if let Some((_, credit)) = self.piece_credits.get(&ticket) {
            let _ = credit.try_send(());
        }
    }

    /// `fs/readFile` `ticket` was answered: its credits end (a reader still waiting stops).
    pub(crate) fn answered(&mut self, ticket: FsTicket) {
        self.piece_credits.remove(&ticket);
    }

    /// `Command::WatchMissing`: checks the paths and installs the watch's routes off the loop
    /// (in order with the other installs and removals), and reports [`FsDone::WatchChecked`].
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
        self.changes.submit(
            &*self.runtime,
            Box::new(move |changes| {
                let watch = Watch::install(missing, present).map(|mut w| {
                    w.polled = w.route(changes, conn, watch_id).is_err();
                    w
                });
                done(FsDone::WatchChecked {
                    ticket,
                    conn,
                    watch_id,
                    watch,
                });
            }),
        );
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
        match (watching, watch) {
            (true, Some(watch)) => {
                lock(&self.watches).insert((conn, watch_id), watch);
                self.start_checker();
                // The first check: a change before the routes were in place.
                let _ = self.touched.try_send((conn, watch_id));
            }
            (false, Some(_)) => {
                self.changes
                    .submit_remove(&*self.runtime, conn, Which::Missing(watch_id));
            }
            (_, None) => {}
        }
        Ok(FsResult::WatchMissing(WatchMissingResult { watching }))
    }

    /// `Command::UnwatchMissing`.
    pub(crate) fn unwatch(&mut self, conn: ConnId, watch_id: u64) {
        if lock(&self.watches).remove(&(conn, watch_id)).is_some() {
            self.changes
                .submit_remove(&*self.runtime, conn, Which::Missing(watch_id));
        }
    }

    /// `Command::FsCloseConnection`: drops the handles (once queued operations finish) and
    /// the watches of `conn`.
    pub(crate) fn close_connection(&mut self, conn: ConnId) {
        // Readers of this connection waiting for a credit stop.
        self.piece_credits.retain(|_, (c, _)| *c != conn);
        if self.conns.remove(&conn).is_some() {
            debug!(%conn, "fs handles dropped");
            self.changes.submit_remove(&*self.runtime, conn, Which::All);
        }
        lock(&self.watches).retain(|(c, _), _| *c != conn);
    }

    /// `Command::FsWatch` (ext): installs the watch off the loop and reports
    /// [`FsDone::WatchInstalled`].
    pub(crate) fn fs_watch(
        &mut self,
        ticket: FsTicket,
        conn: ConnId,
        watch_id: u64,
        path: PathBuf,
        recursive: bool,
    ) {
        self.conns.entry(conn).or_default();
        self.changes
            .submit_install(&*self.runtime, ticket, conn, watch_id, path, recursive);
    }

    /// An `fs/watch` install finished: a watch whose connection closed meanwhile is removed
    /// again. Returns the answer for the core.
    pub(crate) fn fs_watch_installed(
        &mut self,
        conn: ConnId,
        watch_id: u64,
        result: Result<FsResult, FsError>,
    ) -> Result<FsResult, FsError> {
        if result.is_ok() && !self.conns.contains_key(&conn) {
            self.changes
                .submit_remove(&*self.runtime, conn, Which::Watch(watch_id));
        }
        result
    }

    /// `Command::FsUnwatch` (ext).
    pub(crate) fn fs_unwatch(&mut self, conn: ConnId, watch_id: u64) {
        self.changes
            .submit_remove(&*self.runtime, conn, Which::Watch(watch_id));
    }

    /// Starts the checker on first use; it lives as long as the service.
    fn start_checker(&mut self) {
        if self.checker.is_some() {
            return;
        }
        let checker = Checker {
            runtime: Arc::clone(&self.runtime),
            watches: Arc::clone(&self.watches),
            done: Arc::clone(&self.done),
            changes: self.changes.clone(),
            touched: self.touched_rx.clone(),
        };
        self.checker = Some(self.runtime.spawn(Box::pin(checker.run())));
    }
}

/// The task that checks touched (and polled) `fs/watchMissing` watches.
struct Checker {
    runtime: Arc<dyn Runtime>,
    watches: Arc<Mutex<BTreeMap<(ConnId, u64), Watch>>>,
    done: Report,
    changes: FsWatches,
    touched: async_channel::Receiver<(ConnId, u64)>,
}

impl Checker {
    async fn run(self) {
        loop {
            let polled: BTreeSet<(ConnId, u64)> = lock(&self.watches)
                .iter()
                .filter(|(_, w)| w.polled)
                .map(|(k, _)| *k)
                .collect();
            let mut keys = if polled.is_empty() {
                let Ok(key) = self.touched.recv().await else {
                    return;
                };
                BTreeSet::from([key])
            } else {
                let tick = async {
                    self.runtime
                        .sleep_until(self.runtime.now() + WATCH_POLL)
                        .as_mut()
                        .await;
                    None
                };
                let touched = async { self.touched.recv().await.ok() };
                let mut keys = polled;
                keys.extend(futures_lite::future::or(touched, tick).await);
                keys
            };
            while let Ok(key) = self.touched.try_recv() {
                keys.insert(key);
            }
            self.check(keys).await;
        }
    }

    /// Checks the watches `keys` (those still installed) on the blocking pool; fires and
    /// forgets the ones that changed.
    async fn check(&self, keys: BTreeSet<(ConnId, u64)>) {
        let snapshot: Vec<((ConnId, u64), Watch)> = {
            let watches = lock(&self.watches);
            keys.iter()
                .filter_map(|k| watches.get(k).map(|w| (*k, w.clone())))
                .collect()
        };
        if snapshot.is_empty() {
            return;
        }
        let (tx, rx) = async_channel::bounded(1);
        self.runtime.spawn_blocking(Box::new(move || {
            let fired: Vec<(ConnId, u64)> = snapshot
                .into_iter()
                .filter(|(_, w)| w.fired())
                .map(|(k, _)| k)
                .collect();
            let _ = tx.send_blocking(fired);
        }));
        let Ok(fired) = rx.recv().await else {
            return;
        };
        for (conn, watch_id) in fired {
            // Only a watch still installed fires (not one removed meanwhile).
            if lock(&self.watches).remove(&(conn, watch_id)).is_some() {
                self.changes
                    .submit_remove(&*self.runtime, conn, Which::Missing(watch_id));
                (self.done)(FsDone::WatchFired(conn, watch_id));
            }
        }
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
            polled: false,
        })
    }

    /// Installs a plain route on `changes` for every directory whose changes can fire the
    /// watch: the nearest existing ancestors and `present` (blocking).
    ///
    /// # Errors
    /// The first route the OS refused; the routes installed before it stay (harmless: they
    /// only wake a check) until the watch goes.
    fn route(&self, changes: &FsWatches, conn: ConnId, watch_id: u64) -> Result<(), FsError> {
        let mut dirs: BTreeSet<&Path> = self
            .ancestors
            .iter()
            .flatten()
            .map(|p| p.as_path())
            .collect();
        dirs.extend(self.present.as_ref().map(|(p, _)| p.as_path()));
        for (i, dir) in dirs.into_iter().enumerate() {
            changes.install(conn, Sub::Missing(watch_id, i), dir.to_path_buf(), false)?;
        }
        Ok(())
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
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
