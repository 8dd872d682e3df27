//! The OS process layer: spawning children for [`Command::Spawn`], pumping their output, exit
//! and stdin, and delivering signals and PTY resizes.
//!
//! [`ProcessTable`] is owned by the event loop (`&mut` access, no locks). It answers a spawn
//! synchronously and reports everything after that as `(key, ProcessEvent)` pairs on the channel
//! it was built with, from tasks on its [`Runtime`]:
//!
//! - one *pump* task per child reads its output streams (stdout and stderr pipes, or the PTY
//!   master) and waits for its exit. It sends [`ProcessEvent::Output`] chunks of at most 64 KiB in
//!   order, [`ProcessEvent::Eof`] once per stream, and [`ProcessEvent::Exited`] once the child is
//!   reaped. On exit it first drains what the child left in its pipes, so a child's whole output
//!   normally precedes `Exited`; output from grandchildren that keep the pipes open may follow
//!   it. The task ends when the exit is known and every stream is at end of file.
//! - one *stdin writer* task per child with a writable stdin (`pipe_stdin`, or a PTY) writes the
//!   queued [`ProcessTable::write_stdin`] buffers in order; it ends on
//!   [`ProcessTable::close_stdin`], [`ProcessTable::release`], a write failure (reported once as
//!   [`ProcessEvent::StdinClosed`]), or when the pump task ends.
//!
//! The event channel may be bounded: a full channel makes the pump wait, which in turn blocks
//! the child on a full pipe (backpressure rather than buffering).
//!
//! [`Command::Spawn`]: execd_core::Command::Spawn

use std::collections::BTreeMap;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use async_channel::{Receiver, Sender};
use execd_core::protocol::{SandboxType, Signal, Stream};
use execd_core::server::{PtySize, SpawnErrorKind};
use execd_core::{ExitStatus, ProcessEvent, SpawnSpec};
use futures_lite::future;
use rustix::process::Pid;
use tracing::{debug, trace, warn};

pub use crate::cgroup::Containment;
pub use execd_core::ProcessKey;

use crate::cgroup::{CgroupDir, Leaf};
use crate::os;
use crate::pty::{self, Pty};
use crate::runtime::{
    set_nonblocking, shared, AsyncFd, BoxFuture, ChildCommand, DefaultRuntime, Runtime,
};
use crate::sandbox;
use crate::spawn::{self, Spawner};

/// Default largest chunk, in bytes: one pipe buffer on Linux. The server sets the core's
/// `max_chunk_bytes` ([`ProcessTable::set_chunk_bytes`]).
const CHUNK: usize = 64 * 1024;
/// Consecutive ready steps a pump takes before yielding to the executor.
const PUMP_BUDGET: u32 = 32;
/// Bytes a pump reads before yielding to the executor, whatever its chunk size: 32 chunks of
/// 64 KiB, so larger chunks do not let one busy pump hold an executor thread longer (and
/// delay other processes' output and connections' frames).
const PUMP_BUDGET_BYTES: usize = 32 * CHUNK;
/// Reads per stream when draining after exit. Bounds the drain when a grandchild keeps writing;
/// the child's own leftovers fit in one pipe buffer.
const EXIT_DRAIN_READS: usize = 16;

/// The children the server runs, keyed by the core's [`ProcessKey`].
///
/// Generic over the key so tests and other embedders can use their own; the server uses
/// [`ProcessKey`].
///
/// # Spawning
/// - `argv[0]` is looked up in the `PATH` of `spec.env` when it has one, else in the server's
///   `PATH` (else `/usr/local/bin:/usr/bin:/bin`), like `execvp`; a name containing `/` is used
///   as is, relative to `spec.cwd`. The child sees `spec.arg0`, or else `argv[0]` exactly as
///   given, as its `argv[0]`.
/// - The environment is exactly `spec.env`; the working directory is `spec.cwd`.
/// - The child leads a new process group (with a PTY: a new session whose controlling terminal
///   is the PTY). On Linux it gets `PR_SET_PDEATHSIG(SIGKILL)`. The kernel delivers that signal
///   when the *thread* that started the child exits: for [`ProcessTable::start`] one of the
///   table's spawner threads, which live as long as the table; [`ProcessTable::spawn`] must be
///   called from a thread that lives as long as the child should.
/// - Without a sandbox the child is started by `clone(CLONE_VM | CLONE_VFORK)` and a minimal
///   exec shim (no page tables copied, however large the server), reaped through a pidfd;
///   with a sandbox, or where pidfds are missing (Linux < 5.3), by `fork` with `pre_exec`
///   hooks. Both set up the child identically.
/// - stdin is `/dev/null`, a pipe (`pipe_stdin`), or the PTY slave (`tty`, which takes
///   precedence over `pipe_stdin`); stdout and stderr are pipes, or the PTY slave, whose
///   master is then read as [`Stream::Pty`]. A PTY starts at `spec.pty_size` (the core's
///   default is 24 × 80).
/// - Signals go to the process group until the process has closed (exited with every stream at
///   EOF); after that the group id may be reused, so they are dropped. A group whose leader
///   exited but whose members still hold the output open is still signalled.
/// - A kill ([`kill`](Self::kill), [`kill_all`](Self::kill_all), dropping the table) kills the
///   whole process tree, also after the process closed ([`Containment`]): where the server can
///   create cgroups (cgroup v2, delegated), each child runs in a cgroup of its own from before
///   exec, and the kill empties it, `setsid` escapees and background jobs included; otherwise
///   the kill goes to the process group (after close, unless a live child of this table now
///   leads a group of that id). Released processes' trees are killed with the table.
/// - `SIGPIPE` must be ignored in the server (Rust binaries do so by default) for a write to a
///   closed stdin to fail with `EPIPE`; the child gets the default disposition back.
///
/// # Runtime
/// Its tasks run on runtime `R`: [`new`](Self::new) finds a [`DefaultRuntime`] by type,
/// [`with_runtime`](Self::with_runtime) takes any [`Runtime`].
pub struct ProcessTable<K = ProcessKey, R = Arc<dyn Runtime>> {
    runtime: Arc<dyn Runtime>,
    events: Sender<(K, ProcessEvent)>,
    entries: BTreeMap<K, Entry>,
    /// `None`: process groups only. Declared after `entries`, so it is dropped after them.
    cgroups: Option<CgroupDir>,
    /// The threads [`start`](Self::start) spawns on; created by the first start.
    spawner: Option<Spawner>,
    spawn_threads: usize,
    /// Keys whose asynchronous start failed, to forget.
    failed: Arc<Mutex<Vec<K>>>,
    /// Never use the fast spawn path.
    fork_only: bool,
    /// Largest output chunk a pump reads (see [`ProcessTable::set_chunk_bytes`]).
    chunk_bytes: usize,
    _runtime: PhantomData<fn() -> R>,
}

/// The most spawner threads a table starts by default ([`ProcessTable::with_spawn_threads`]
/// sets any count). A spawn occupies its thread only from the clone to the exec.
pub const SPAWN_THREADS_MAX: usize = 4;

impl<K, R> ProcessTable<K, R>
where
    K: Copy + Ord + fmt::Debug + Send + Sync + 'static,
    R: DefaultRuntime,
{
    /// A table that runs its tasks on the default runtime and reports process events on
    /// `events`.
    ///
    /// # Panics
    /// There is no default runtime (tokio: called outside a tokio runtime, like
    /// `tokio::spawn`).
    pub fn new(events: Sender<(K, ProcessEvent)>) -> Self {
        match R::default_runtime() {
            Ok(runtime) => Self::with_runtime(runtime, events),
            Err(e) => panic!("ProcessTable::new: {e}"),
        }
    }
}

impl<K, R> ProcessTable<K, R>
where
    K: Copy + Ord + fmt::Debug + Send + Sync + 'static,
{
    /// A table that runs its tasks on `runtime` and reports process events on `events`.
    ///
    /// Its process trees are contained in cgroups where the server can create them, else in
    /// process groups ([`containment`](Self::containment)).
    pub fn with_runtime(runtime: impl Runtime, events: Sender<(K, ProcessEvent)>) -> Self {
        let cgroups = match CgroupDir::create() {
            Ok(dir) => Some(dir),
            Err(err) => {
                debug!(%err, "no cgroup for process trees; using process groups");
                None
            }
        };
        ProcessTable {
            runtime: shared(runtime),
            events,
            entries: BTreeMap::new(),
            cgroups,
            spawner: None,
            spawn_threads: std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(SPAWN_THREADS_MAX),
            failed: Arc::new(Mutex::new(Vec::new())),
            fork_only: false,
            chunk_bytes: CHUNK,
            _runtime: PhantomData,
        }
    }

    /// Largest [`ProcessEvent::Output`] chunk, in bytes, for processes started from now on
    /// (default 64 KiB; the server passes the core's
    /// [`max_chunk_bytes`](execd_core::ServerConfig::max_chunk_bytes)). A pump that reads
    /// some bytes reads again at once, without waiting, while more is in the pipe and the
    /// chunk has room: under load chunks grow to this size, an idle pipe's bytes go out at
    /// once. At least 1.
    pub fn set_chunk_bytes(&mut self, bytes: usize) {
        self.chunk_bytes = bytes.max(1);
    }

    /// Contains process trees in process groups only, even where cgroups are available. Call
    /// before the first spawn.
    #[must_use]
    pub fn without_cgroups(mut self) -> Self {
        self.cgroups = None;
        self
    }

    /// How this table contains the process trees it starts.
    pub fn containment(&self) -> Containment {
        if self.cgroups.is_some() {
            Containment::Cgroup
        } else {
            Containment::ProcessGroup
        }
    }

    /// Starts `spec` as process `key` on the calling thread: the child has exec'd when this
    /// returns.
    ///
    /// Returns [`ProcessEvent::Spawned`] with the child's pid (also its process group id), or
    /// [`ProcessEvent::SpawnFailed`] with the OS error text (e.g. `"No such file or directory
    /// (os error 2)"` for a missing program or `cwd`); after a failure nothing is left behind and
    /// no event follows. A key already in the table and a sandbox other than
    /// [`SandboxType::None`] (not supported by this layer) also fail. Environment names are
    /// validated by the core before it asks (`-32602`); a NUL byte still fails the spawn here.
    ///
    /// The child's `PR_SET_PDEATHSIG` refers to the calling thread, which must live as long as
    /// the child should. [`start`](Self::start) spawns on the table's own threads instead.
    pub fn spawn(&mut self, key: K, spec: SpawnSpec) -> ProcessEvent {
        self.prune_failed();
        let launch = match self.prepare(key, spec) {
            Ok(launch) => launch,
            Err(event) => return event,
        };
        match launch.launch() {
            Ok(running) => {
                let pid = running.pid;
                running.start_tasks();
                ProcessEvent::Spawned { pid }
            }
            Err(event) => {
                self.release(key);
                event
            }
        }
    }

    /// Starts `spec` as process `key` off the calling thread, on one of the table's spawner
    /// threads ([`with_spawn_threads`](Self::with_spawn_threads)), so concurrent starts do not
    /// wait for each other on the caller.
    ///
    /// Returns `Some` when the answer is known at once (a key already in use, a failure to
    /// set up pipes or the PTY): the same events as [`spawn`](Self::spawn). Otherwise returns
    /// `None` and reports [`ProcessEvent::Spawned`] or [`ProcessEvent::SpawnFailed`] on the
    /// event channel, before any other event of `key`. Until then the table accepts every call
    /// for `key`: a kill is carried out once the child runs, a signal is dropped, stdin writes
    /// are queued, a pause holds.
    pub fn start(&mut self, key: K, spec: SpawnSpec) -> Option<ProcessEvent> {
        self.prune_failed();
        let launch = match self.prepare(key, spec) {
            Ok(launch) => launch,
            Err(event) => return Some(event),
        };
        let failed = Arc::clone(&self.failed);
        let events = self.events.clone();
        let spawner = match self.spawner() {
            Ok(spawner) => spawner,
            Err(err) => {
                self.release(key);
                return Some(spawn_failed(key, &err, None));
            }
        };
        spawner.submit(Box::new(move || match launch.launch() {
            Ok(running) => {
                let pid = running.pid;
                // Spawned precedes the tasks' first event.
                if events
                    .send_blocking((key, ProcessEvent::Spawned { pid }))
                    .is_ok()
                {
                    running.start_tasks();
                }
            }
            Err(event) => {
                if let Ok(mut failed) = failed.lock() {
                    failed.push(key);
                }
                let _ = events.send_blocking((key, event));
            }
        }));
        None
    }

    /// Spawns on `threads` threads of the table's own (default: the available parallelism, at
    /// most [`SPAWN_THREADS_MAX`]) in [`start`](Self::start). Call before the first start.
    #[must_use]
    pub fn with_spawn_threads(mut self, threads: usize) -> Self {
        self.spawn_threads = threads.max(1);
        self
    }

    /// Starts every child with `fork` + `exec` (the path kept for sandboxed starts) instead of
    /// the `clone(CLONE_VM | CLONE_VFORK)` shim. For comparisons and tests.
    #[must_use]
    pub fn with_fork_spawn(mut self) -> Self {
        self.fork_only = true;
        self
    }

    /// Forgets the keys whose asynchronous start failed (the core forgets them on
    /// `SpawnFailed` without a release).
    fn prune_failed(&mut self) {
        let failed = match self.failed.lock() {
            Ok(mut failed) => std::mem::take(&mut *failed),
            Err(_) => return,
        };
        for key in failed {
            self.release(key);
        }
    }

    fn spawner(&mut self) -> io::Result<&Spawner> {
        if self.spawner.is_none() {
            self.spawner = Some(Spawner::new(self.spawn_threads)?);
        }
        self.spawner
            .as_ref()
            .ok_or_else(|| io::Error::other("no spawner"))
    }

    /// Stops (`true`) or resumes reading the child's output streams
    /// ([`Command::PauseOutput`](execd_core::Command::PauseOutput)). While paused the child
    /// blocks once its pipe or PTY buffer is full; its exit is still reported. Ignored for
    /// unknown keys.
    pub fn set_output_paused(&mut self, key: K, paused: bool) {
        if let Some(entry) = self.entries.get(&key) {
            trace!(?key, paused, "output pause");
            entry.gate.set(paused);
        }
    }

    /// Queues `bytes` for the child's stdin (pipe or PTY master), after earlier writes. Never
    /// waits. Ignored for unknown keys, processes without a writable stdin, and after
    /// [`ProcessTable::close_stdin`] or a failed write (which was reported once as
    /// [`ProcessEvent::StdinClosed`]).
    pub fn write_stdin(&mut self, key: K, bytes: Vec<u8>) {
        let Some(queue) = self.entries.get(&key).and_then(|e| e.stdin.as_ref()) else {
            trace!(?key, "write to a process without stdin ignored");
            return;
        };
        trace!(?key, len = bytes.len(), "stdin queued");
        if queue.try_send(bytes).is_err() {
            trace!(?key, "stdin writer gone; write dropped");
        }
    }

    /// Closes the child's stdin pipe once the queued writes are written (EOF for the child).
    ///
    /// A PTY has no separate stdin: the queued writes are still written, later writes are
    /// ignored, and the terminal stays open (closing the master would hang it up). To send EOF
    /// to a program reading the terminal, write the terminal's EOF character (`^D`, 0x04) at the
    /// start of a line instead.
    pub fn close_stdin(&mut self, key: K) {
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.stdin.take().is_some() {
                debug!(?key, "stdin closed");
            }
        }
    }

    /// Delivers `signal` to the process group the child leads. Ignored for unknown keys and
    /// once the process has closed (exited with all output at EOF), when its group id may
    /// already belong to someone else.
    pub fn signal(&mut self, key: K, signal: Signal) {
        if let Some(entry) = self.entries.get(&key) {
            entry.signal_group(key, signal.number());
        }
    }

    /// SIGKILLs the child's whole process tree (its cgroup, else its process group), also after
    /// the process closed. Exit and EOF events follow as usual.
    pub fn kill(&mut self, key: K) {
        if let Some(entry) = self.entries.get(&key) {
            self.kill_tree(key, entry);
        }
    }

    /// Sets the terminal size of a PTY process to `rows` × `cols` (`TIOCSWINSZ`; the child gets
    /// SIGWINCH). Ignored for unknown keys, non-PTY processes and closed processes.
    pub fn resize(&mut self, key: K, rows: u16, cols: u16) {
        let Some(master) = self
            .entries
            .get(&key)
            .and_then(|e| e.pty_master.as_ref())
            .and_then(Weak::upgrade)
        else {
            trace!(?key, "resize of a process without a live PTY ignored");
            return;
        };
        match pty::set_size(master.fd(), rows, cols) {
            Ok(()) => debug!(?key, rows, cols, "pty resized"),
            Err(err) => debug!(?key, %err, "pty resize failed"),
        }
    }

    /// Forgets `key`. Does not kill the child: its pump task keeps running (its events are for
    /// a key the core no longer knows) and ends when the process closes. Queued stdin writes
    /// are still written, then stdin is closed.
    pub fn release(&mut self, key: K) {
        if let Some(entry) = self.entries.remove(&key) {
            debug!(?key, "process released");
            if let (Some(dir), Some(leaf)) = (self.cgroups.as_mut(), entry.leaf) {
                dir.release(leaf);
            }
        }
    }

    /// SIGKILLs the process tree of every process in the table and, with cgroups, of every
    /// released one (server shutdown).
    pub fn kill_all(&mut self) {
        for (key, entry) in &self.entries {
            self.kill_tree(*key, entry);
        }
        if let Some(dir) = self.cgroups.as_mut() {
            dir.kill_orphans();
        }
    }

    fn kill_tree(&self, key: K, entry: &Entry) {
        // The group first: it covers a child that failed to join its cgroup.
        entry.signal_group(key, Signal::Kill.number());
        if let Some(leaf) = &entry.leaf {
            leaf.kill();
        } else if entry.closed.load(Ordering::Acquire) {
            // Process groups only: members may outlive the closed leader (a background job
            // with redirected output). The id is not reused while they live; skip it if a live
            // child of ours leads a group of that id now.
            let reused = self.entries.values().any(|e| {
                e.pid.get() == entry.pid.get()
                    && !e.closed.load(Ordering::Acquire)
                    && !Arc::ptr_eq(&e.closed, &entry.closed)
            });
            if let (Some(pid), false) = (entry.pid.get(), reused) {
                match os::signal_group(pid, Signal::Kill.number()) {
                    Ok(()) => debug!(?key, "group of a closed process killed"),
                    Err(err) => trace!(?key, %err, "group of a closed process not killed"),
                }
            }
        }
    }

    /// Everything of a start that happens on the table's thread: checks, program lookup,
    /// pipes or PTY, the cgroup leaf, the entry (inserted here, removed again on failure).
    fn prepare(&mut self, key: K, spec: SpawnSpec) -> Result<Launch<K>, ProcessEvent> {
        if self.entries.contains_key(&key) {
            return Err(spawn_failed(
                key,
                &invalid_input("process key already in use"),
                None,
            ));
        }
        let cwd = spec.cwd.clone();
        let fast = !self.fork_only
            && spec.sandbox == SandboxType::None
            && spec.sandbox_policy.is_none()
            && spawn::available();
        let (launch, entry) = self
            .try_prepare(key, spec, fast)
            .map_err(|err| spawn_failed(key, &err, Some(&cwd)))?;
        self.entries.insert(key, entry);
        Ok(launch)
    }

    fn try_prepare(
        &mut self,
        key: K,
        spec: SpawnSpec,
        fast: bool,
    ) -> io::Result<(Launch<K>, Entry)> {
        if spec.sandbox != SandboxType::None && spec.sandbox_policy.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "sandbox {} is not supported by this runtime",
                    spec.sandbox.as_str()
                ),
            ));
        }
        let Some((argv0, args)) = spec.argv.split_first() else {
            return Err(invalid_input("empty argv"));
        };
        trace!(?key, argv = ?spec.argv, cwd = ?spec.cwd, fast, "spawning");
        let path_var = os::search_path(spec.env.get("PATH").map(String::as_str));
        let program = os::resolve_program(argv0, path_var.as_deref(), &spec.cwd)?;
        let arg0 = spec.arg0.as_deref().unwrap_or(argv0);

        // Everything that can fail on the server's side is set up before the spawn, so a
        // failure afterwards cannot leave a running child without a pump.
        let io = ChildIo::new(&*self.runtime, spec.tty, spec.pty_size, spec.pipe_stdin)?;
        let (leaf, procs) = self.new_leaf(key).unzip();
        let (how, sandbox) = if fast {
            let exec = spawn::Exec::new(
                &program,
                std::iter::once(arg0).chain(args.iter().map(String::as_str)),
                spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                &spec.cwd,
                io.child.into_exec()?,
                procs,
            )?;
            (How::Fast(exec), None)
        } else {
            let mut command = std::process::Command::new(program);
            command
                .arg0(arg0)
                .args(args)
                .env_clear()
                .envs(&spec.env)
                .current_dir(&spec.cwd);
            let parent = rustix::process::getpid();
            // SAFETY: the hook only makes raw system calls (setsid, ioctl, prctl, getppid) and
            // builds errors from raw numbers, all async-signal-safe between fork and exec.
            unsafe { command.pre_exec(os::child_setup(spec.tty, parent)) };
            if !spec.tty {
                command.process_group(0);
            }
            if let Some(procs) = procs {
                // SAFETY: the hook makes one raw write(2) to an open descriptor,
                // async-signal-safe between fork and exec. A failed join leaves the child in
                // the server's cgroup, still in its own process group; the hook cannot report
                // it without failing the spawn.
                unsafe {
                    command.pre_exec(move || {
                        let _ = rustix::io::write(&procs, b"0");
                        Ok(())
                    });
                }
            }
            // A sandboxed start confines the child between fork and exec: a further
            // `pre_exec` hook, after the child set-up above.
            let sandbox = sandbox::attach(spec.sandbox_policy.as_ref(), &spec.cwd, &mut command)?
                .map(Arc::new);
            let [stdin, stdout, stderr] = io.child.into_stdio()?;
            let command = ChildCommand {
                command,
                stdin,
                stdout,
                stderr,
                kill_on_drop: false,
            };
            (How::Fork(command, sandbox.clone()), sandbox)
        };

        let pid = Arc::new(ChildPid::default());
        let closed = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Gate::default());
        let (stdin, stdin_writer) = match io.stdin {
            Some(writer) => {
                let (queue_tx, queue_rx) = async_channel::unbounded();
                (Some(queue_tx), Some((writer, queue_rx)))
            }
            None => (None, None),
        };
        let launch = Launch {
            how,
            cwd: spec.cwd,
            pid: Arc::clone(&pid),
            tasks: Tasks {
                key,
                runtime: Arc::clone(&self.runtime),
                events: self.events.clone(),
                sources: io.sources,
                stdin_writer,
                closed: Arc::clone(&closed),
                gate: Arc::clone(&gate),
                chunk: self.chunk_bytes,
            },
        };
        let entry = Entry {
            pid,
            stdin,
            pty_master: io.pty_master,
            closed,
            leaf,
            gate,
            _sandbox: sandbox,
        };
        Ok((launch, entry))
    }

    /// With cgroups, creates the child's leaf and the `cgroup.procs` descriptor the child
    /// writes before exec, so every descendant starts inside. `None` without cgroups or if the
    /// leaf cannot be created (the child is then contained by its process group only).
    fn new_leaf(&mut self, key: K) -> Option<(Leaf, OwnedFd)> {
        match self.cgroups.as_mut()?.new_leaf() {
            Ok(created) => Some(created),
            Err(err) => {
                warn!(?key, %err, "cannot create a cgroup for the process");
                None
            }
        }
    }
}

/// How a prepared child is started.
enum How {
    /// `clone(CLONE_VM | CLONE_VFORK)` and the exec shim ([`spawn`]).
    Fast(spawn::Exec),
    /// `fork` + `pre_exec` hooks + `exec` by the runtime; with a sandbox's set-up, which
    /// names the failed step of a failed spawn.
    Fork(ChildCommand, Option<Arc<sandbox::Attached>>),
}

/// A start prepared on the table's thread, to be launched there or on a spawner thread.
struct Launch<K> {
    how: How,
    cwd: std::path::PathBuf,
    pid: Arc<ChildPid>,
    tasks: Tasks<K>,
}

/// What the child's tasks need once it runs.
struct Tasks<K> {
    key: K,
    runtime: Arc<dyn Runtime>,
    events: Sender<(K, ProcessEvent)>,
    sources: Vec<Source>,
    stdin_writer: Option<StdinWriter>,
    closed: Arc<AtomicBool>,
    gate: Arc<Gate>,
    /// Largest output chunk the pump reads, in bytes.
    chunk: usize,
}

/// The stdin writer's descriptor and queue.
type StdinWriter = (Arc<dyn AsyncFd>, Receiver<Vec<u8>>);

/// A launched child whose tasks have not started yet.
struct Running<K> {
    pid: u32,
    status: StatusFuture,
    tasks: Tasks<K>,
}

impl<K: Copy + fmt::Debug + Send + Sync + 'static> Launch<K> {
    /// Starts the child; on failure, the `SpawnFailed` event. The child's stdio ends held by
    /// the server are closed when this returns (the PTY master reports EIO once every slave
    /// descriptor is closed).
    fn launch(self) -> Result<Running<K>, ProcessEvent> {
        let Launch {
            how,
            cwd,
            pid: cell,
            tasks,
        } = self;
        let key = tasks.key;
        let started = match how {
            How::Fast(exec) => exec.spawn().and_then(|(pid, pidfd)| {
                drop(exec);
                let status = spawn::PidfdStatus::new(Arc::clone(&tasks.runtime), pid, pidfd)?;
                let raw = pid.as_raw_nonzero().get().unsigned_abs();
                Ok((raw, Box::pin(status) as StatusFuture))
            }),
            // The child is reaped by the runtime if the pump stops waiting for it.
            How::Fork(command, sandbox) => tasks
                .runtime
                .spawn_child(command)
                .map(|child| (child.pid, child.status))
                .map_err(|err| sandbox::spawn_error(sandbox.as_deref(), err)),
        };
        match started {
            Ok((pid, status)) => {
                debug!(?key, pid, "process spawned");
                // A child's pid fits a pid_t and is positive.
                if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                    cell.set(key, p);
                }
                Ok(Running { pid, status, tasks })
            }
            Err(err) => Err(spawn_failed(key, &err, Some(&cwd))),
        }
    }
}

impl<K: Copy + fmt::Debug + Send + Sync + 'static> Running<K> {
    /// Starts the stdin writer and the pump.
    fn start_tasks(self) {
        let Tasks {
            key,
            runtime,
            events,
            sources,
            stdin_writer: writer,
            closed,
            gate,
            chunk,
        } = self.tasks;
        let (done_tx, done_rx) = async_channel::bounded::<()>(1);
        if let Some((io, queue)) = writer {
            runtime
                .spawn(Box::pin(stdin_writer(
                    key,
                    io,
                    queue,
                    done_rx,
                    events.clone(),
                )))
                .detach();
        }
        let pump = Pump {
            key,
            events,
            sources,
            gate,
            next: 0,
            buf: Vec::with_capacity(chunk),
            chunk,
        };
        runtime
            .spawn(Box::pin(pump.run(self.status, closed, done_tx)))
            .detach();
    }
}

impl<K, R> Drop for ProcessTable<K, R> {
    /// Kills the process tree of every process the table started. With cgroups this includes
    /// released processes and waits (up to 2 s) for the trees to die, to remove their cgroups.
    fn drop(&mut self) {
        for entry in self.entries.values() {
            entry.signal_group("drop", Signal::Kill.number());
            if let Some(leaf) = &entry.leaf {
                leaf.kill();
            }
        }
        // `cgroups` drops after this: it kills what is left in it and removes the directories.
    }
}

/// What the table keeps per child.
impl<K: fmt::Debug, R> fmt::Debug for ProcessTable<K, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessTable")
            .field("runtime", &self.runtime)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Entry {
    /// The child's pid, which is also its process group id, once the spawn is done.
    pid: Arc<ChildPid>,
    /// The stdin writer's queue; `None` without a writable stdin or after `close_stdin`.
    stdin: Option<Sender<Vec<u8>>>,
    /// The PTY master for resizes; dead once the pump and writer tasks have ended.
    pty_master: Option<Weak<dyn AsyncFd>>,
    /// Set by the pump when the process has closed: the group may be empty and its id reused.
    closed: Arc<AtomicBool>,
    /// The child's cgroup; `None` without cgroups.
    leaf: Option<Leaf>,
    /// Whether the pump may read output.
    gate: Arc<Gate>,
    /// A sandboxed child's set-up that must outlive it (carve-out placeholders).
    _sandbox: Option<Arc<sandbox::Attached>>,
}

/// A child's pid, set by whichever thread spawned it, and a kill asked for before that.
#[derive(Debug, Default)]
struct ChildPid {
    /// 0 until the spawn is done.
    pid: AtomicI32,
    kill_pending: AtomicBool,
}

impl ChildPid {
    fn get(&self) -> Option<Pid> {
        Pid::from_raw(self.pid.load(Ordering::SeqCst))
    }

    /// Records the spawned child's pid and carries out a kill asked for before.
    fn set(&self, key: impl fmt::Debug, pid: Pid) {
        self.pid.store(pid.as_raw_nonzero().get(), Ordering::SeqCst);
        if self.kill_pending.load(Ordering::SeqCst) {
            debug!(?key, "deferred kill");
            let _ = os::signal_group(pid, Signal::Kill.number());
        }
    }

    /// Kills the group once [`set`](Self::set) (or at once if it happened meanwhile: with
    /// both sides sequentially consistent, at least one of them sees the other).
    fn kill_when_spawned(&self) {
        self.kill_pending.store(true, Ordering::SeqCst);
        if let Some(pid) = self.get() {
            let _ = os::signal_group(pid, Signal::Kill.number());
        }
    }
}

/// A pause switch the pump checks before every read: set by the event loop, it wakes the pump
/// when reading may resume.
#[derive(Debug, Default)]
struct Gate {
    paused: AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

impl Gate {
    fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        if !paused {
            let waker = self.waker.lock().ok().and_then(|mut w| w.take());
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Whether reading is paused; if so, `cx` is woken when it resumes.
    fn paused(&self, cx: &Context<'_>) -> bool {
        if !self.paused.load(Ordering::Acquire) {
            return false;
        }
        if let Ok(mut w) = self.waker.lock() {
            *w = Some(cx.waker().clone());
        }
        // Re-checked after registering, so a resume in between is not missed.
        self.paused.load(Ordering::Acquire)
    }
}

impl Entry {
    fn signal_group(&self, key: impl fmt::Debug, signo: i32) {
        if self.closed.load(Ordering::Acquire) {
            trace!(?key, signo, "signal to a closed process ignored");
            return;
        }
        let Some(pid) = self.pid.get() else {
            if signo == Signal::Kill.number() {
                self.pid.kill_when_spawned();
                trace!(?key, "kill of a process still spawning deferred");
            } else {
                trace!(?key, signo, "signal to a process still spawning dropped");
            }
            return;
        };
        match os::signal_group(pid, signo) {
            Ok(()) => debug!(?key, signo, "process group signalled"),
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {
                trace!(?key, signo, "process group already gone")
            }
            Err(err) => warn!(?key, signo, %err, "signalling process group failed"),
        }
    }
}

/// The server's ends of a child's stdio, and the child's ends until the spawn.
struct ChildIo {
    child: ChildEnds,
    /// Where stdin writes go: the pipe's write end or the PTY master.
    stdin: Option<Arc<dyn AsyncFd>>,
    /// The output streams to pump.
    sources: Vec<Source>,
    pty_master: Option<Weak<dyn AsyncFd>>,
}

/// The child's ends of its stdio.
enum ChildEnds {
    /// stdin (`None`: `/dev/null`), stdout and stderr pipes.
    Pipes(Option<OwnedFd>, OwnedFd, OwnedFd),
    /// The PTY slave, for all three.
    Pty(OwnedFd),
}

impl ChildEnds {
    /// For the fork path.
    fn into_stdio(self) -> io::Result<[Stdio; 3]> {
        Ok(match self {
            ChildEnds::Pipes(stdin, stdout, stderr) => [
                stdin.map_or_else(Stdio::null, Stdio::from),
                Stdio::from(stdout),
                Stdio::from(stderr),
            ],
            ChildEnds::Pty(slave) => [
                Stdio::from(slave.try_clone()?),
                Stdio::from(slave.try_clone()?),
                Stdio::from(slave),
            ],
        })
    }

    /// For the fast path.
    fn into_exec(self) -> io::Result<spawn::ExecStdio> {
        Ok(match self {
            ChildEnds::Pipes(stdin, stdout, stderr) => {
                let stdin = match stdin {
                    Some(fd) => fd,
                    None => rustix::fs::open(
                        "/dev/null",
                        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )?,
                };
                spawn::ExecStdio::Pipes([stdin, stdout, stderr])
            }
            ChildEnds::Pty(slave) => spawn::ExecStdio::Pty(slave),
        })
    }
}

impl ChildIo {
    fn new(
        runtime: &dyn Runtime,
        tty: bool,
        size: PtySize,
        pipe_stdin: bool,
    ) -> io::Result<ChildIo> {
        let register = |fd: OwnedFd| {
            set_nonblocking(&fd)?;
            runtime.async_fd(fd)
        };
        if tty {
            let Pty { master, slave } = Pty::open(size.rows, size.cols)?;
            let master = register(master)?;
            return Ok(ChildIo {
                child: ChildEnds::Pty(slave),
                stdin: Some(master.clone()),
                pty_master: Some(Arc::downgrade(&master)),
                sources: vec![Source {
                    stream: Stream::Pty,
                    io: master,
                    open: true,
                }],
            });
        }
        let (child_stdin, stdin) = if pipe_stdin {
            let (read, write) = os::pipe()?;
            (Some(read), Some(register(write)?))
        } else {
            (None, None)
        };
        let (stdout_read, stdout_write) = os::pipe()?;
        let (stderr_read, stderr_write) = os::pipe()?;
        Ok(ChildIo {
            child: ChildEnds::Pipes(child_stdin, stdout_write, stderr_write),
            stdin,
            pty_master: None,
            sources: vec![
                Source {
                    stream: Stream::Stdout,
                    io: register(stdout_read)?,
                    open: true,
                },
                Source {
                    stream: Stream::Stderr,
                    io: register(stderr_read)?,
                    open: true,
                },
            ],
        })
    }
}

/// One output stream of a child.
struct Source {
    stream: Stream,
    io: Arc<dyn AsyncFd>,
    open: bool,
}

/// What one pump step produced.
enum Step {
    /// Bytes from `sources[i]`.
    Chunk(usize, Vec<u8>),
    /// `sources[i]` reached end of file.
    Eof(usize),
    /// The child was reaped.
    Exited(ExitStatus),
}

/// The per-child task state: reads the output streams, waits for the exit, sends events.
struct Pump<K> {
    key: K,
    events: Sender<(K, ProcessEvent)>,
    sources: Vec<Source>,
    /// Output reading paused by the event loop.
    gate: Arc<Gate>,
    /// The source to try first in the next step (round robin, so one busy stream cannot
    /// starve the other).
    next: usize,
    /// The read buffer: empty between steps.
    buf: Vec<u8>,
    /// Largest chunk, in bytes.
    chunk: usize,
}

type StatusFuture = BoxFuture<'static, io::Result<std::process::ExitStatus>>;

impl<K: Copy + fmt::Debug + Send + 'static> Pump<K> {
    /// Pumps until the exit is known and every stream is at end of file, or until the event
    /// receiver is gone. Dropping `_done` then stops the stdin writer.
    async fn run(mut self, status: StatusFuture, closed: Arc<AtomicBool>, _done: Sender<()>) {
        let mut status = Some(status);
        let mut exited = false;
        let mut budget = PUMP_BUDGET;
        let mut budget_bytes = PUMP_BUDGET_BYTES;
        while !(exited && self.sources.iter().all(|s| !s.open)) {
            let step = poll_fn(|cx| self.poll_step(cx, &mut status)).await;
            let sent = match step {
                Step::Chunk(i, bytes) => {
                    budget_bytes = budget_bytes.saturating_sub(bytes.len());
                    self.send_chunk(i, bytes).await
                }
                Step::Eof(i) => self.send_eof(i).await,
                Step::Exited(exit) => {
                    exited = true;
                    status = None;
                    debug!(key = ?self.key, ?exit, "process exited");
                    self.drain_after_exit().await
                        && self.send(ProcessEvent::Exited { status: exit }).await
                }
            };
            if !sent {
                // The process may still run: leave `closed` unset so `kill_all` still reaches it.
                debug!(key = ?self.key, "event receiver gone; pump stops");
                return;
            }
            budget -= 1;
            if budget == 0 || budget_bytes == 0 {
                budget = PUMP_BUDGET;
                budget_bytes = PUMP_BUDGET_BYTES;
                future::yield_now().await;
            }
        }
        closed.store(true, Ordering::Release);
        trace!(key = ?self.key, "pump finished");
    }

    /// Reads the next chunk or end of file from the open streams, else waits for the exit.
    fn poll_step(&mut self, cx: &mut Context<'_>, status: &mut Option<StatusFuture>) -> Poll<Step> {
        let count = if self.gate.paused(cx) {
            0
        } else {
            self.sources.len()
        };
        for offset in 0..count {
            let i = (self.next + offset) % count;
            let Some(source) = self.sources.get(i).filter(|s| s.open) else {
                continue;
            };
            self.buf.clear();
            self.buf.reserve(self.chunk);
            let result = match os::poll_read(&*source.io, &mut self.buf, cx) {
                Poll::Pending => continue,
                Poll::Ready(result) => result,
            };
            if matches!(result, Ok(n) if n > 0) {
                // Coalescing: take what else is already in the pipe, without waiting. A
                // failure or end of file is seen by the next step's read.
                while self.buf.len() < self.chunk {
                    match os::try_read(&*source.io, &mut self.buf) {
                        Ok(Some(n)) if n > 0 => {}
                        _ => break,
                    }
                }
            }
            self.next = i + 1;
            return Poll::Ready(self.read_step(i, result));
        }
        if let Some(fut) = status {
            if let Poll::Ready(result) = fut.as_mut().poll(cx) {
                let exit = match result {
                    Ok(exit) => os::exit_status(exit),
                    Err(err) => {
                        // The reaper lost the child (should not happen); report an exit anyway
                        // so the core can close the process.
                        warn!(key = ?self.key, %err, "waiting for the process failed");
                        ExitStatus::Code(-1)
                    }
                };
                return Poll::Ready(Step::Exited(exit));
            }
        }
        Poll::Pending
    }

    /// Turns one read result on `sources[i]` (bytes in `self.buf`) into a step.
    fn read_step(&mut self, i: usize, result: io::Result<usize>) -> Step {
        match result {
            Ok(0) => Step::Eof(i),
            Ok(_) => Step::Chunk(i, take_chunk(&mut self.buf, self.chunk)),
            // A PTY master reads EIO once every slave descriptor is closed: its end of file.
            Err(err) if err.raw_os_error() == Some(libc::EIO) => Step::Eof(i),
            Err(err) => {
                debug!(key = ?self.key, %err, "reading process output failed; treated as EOF");
                Step::Eof(i)
            }
        }
    }

    /// Sends what the exited child left in its streams (without waiting for more), so it
    /// precedes `Exited`. Returns false if the event receiver is gone.
    async fn drain_after_exit(&mut self) -> bool {
        for i in 0..self.sources.len() {
            for _ in 0..EXIT_DRAIN_READS {
                let Some(source) = self.sources.get(i).filter(|s| s.open) else {
                    break;
                };
                self.buf.clear();
                self.buf.reserve(self.chunk);
                let result = match os::try_read(&*source.io, &mut self.buf) {
                    Ok(None) => break,
                    Ok(Some(n)) => Ok(n),
                    Err(err) => Err(err),
                };
                let sent = match self.read_step(i, result) {
                    Step::Chunk(i, bytes) => self.send_chunk(i, bytes).await,
                    _ => self.send_eof(i).await,
                };
                if !sent {
                    return false;
                }
            }
        }
        true
    }

    async fn send_chunk(&mut self, i: usize, bytes: Vec<u8>) -> bool {
        let Some(source) = self.sources.get(i) else {
            return true;
        };
        let stream = source.stream;
        trace!(key = ?self.key, stream = stream.as_str(), len = bytes.len(), "output");
        self.send(ProcessEvent::Output { stream, bytes }).await
    }

    async fn send_eof(&mut self, i: usize) -> bool {
        let Some(source) = self.sources.get_mut(i) else {
            return true;
        };
        source.open = false;
        let stream = source.stream;
        trace!(key = ?self.key, stream = stream.as_str(), "eof");
        self.send(ProcessEvent::Eof { stream }).await
    }

    async fn send(&self, event: ProcessEvent) -> bool {
        self.events.send((self.key, event)).await.is_ok()
    }
}

/// Writes queued stdin buffers in order until the queue closes, a write fails (reported once
/// as `StdinClosed`), or the pump task ends (`done` closes).
async fn stdin_writer<K: Copy + fmt::Debug>(
    key: K,
    io: Arc<dyn AsyncFd>,
    queue: Receiver<Vec<u8>>,
    done: Receiver<()>,
    events: Sender<(K, ProcessEvent)>,
) {
    let write = async {
        while let Ok(bytes) = queue.recv().await {
            if let Err(err) = os::write_all(&*io, &bytes).await {
                debug!(?key, %err, "writing stdin failed");
                return true;
            }
            trace!(?key, len = bytes.len(), "stdin written");
            let written = ProcessEvent::StdinWritten { bytes: bytes.len() };
            if events.send((key, written)).await.is_err() {
                return false;
            }
        }
        false
    };
    let process_closed = async {
        // Nothing is ever sent on `done`; it closes when the pump drops its sender.
        let _ = done.recv().await;
        false
    };
    if future::or(write, process_closed).await {
        let _ = events.send((key, ProcessEvent::StdinClosed)).await;
    }
    trace!(?key, "stdin writer finished");
}

/// The bytes in `buf` as an owned chunk, leaving `buf` empty. Reads of at least half of
/// `chunk` bytes hand the read buffer itself over (no copy; the next step allocates anew);
/// smaller ones are copied out, so a retained chunk never holds more than twice its length.
fn take_chunk(buf: &mut Vec<u8>, chunk: usize) -> Vec<u8> {
    if buf.len() >= chunk / 2 {
        std::mem::take(buf)
    } else {
        let chunk = buf.as_slice().to_vec();
        buf.clear();
        chunk
    }
}

fn spawn_failed(key: impl fmt::Debug, err: &io::Error, cwd: Option<&Path>) -> ProcessEvent {
    debug!(?key, %err, "spawn failed");
    ProcessEvent::SpawnFailed {
        kind: spawn_error_kind(err, cwd),
        error: err.to_string(),
    }
}

/// What a spawn error means: a `cwd` that is not a directory wins (exec reports it as ENOENT
/// too), then the errno of the program.
fn spawn_error_kind(err: &io::Error, cwd: Option<&Path>) -> SpawnErrorKind {
    if sandbox::is_setup_error(err) {
        return SpawnErrorKind::Sandbox;
    }
    if cwd.is_some_and(|cwd| !cwd.is_dir()) {
        return SpawnErrorKind::BadCwd;
    }
    match err.raw_os_error() {
        Some(libc::ENOENT) => SpawnErrorKind::NotFound,
        Some(libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::EPERM) => {
            SpawnErrorKind::PermissionDenied
        }
        Some(libc::ENOTDIR) if cwd.is_some() => SpawnErrorKind::BadCwd,
        _ => match err.kind() {
            io::ErrorKind::NotFound => SpawnErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => SpawnErrorKind::PermissionDenied,
            _ => SpawnErrorKind::Other,
        },
    }
}

fn invalid_input(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_reads_hand_off_the_buffer_and_small_ones_are_copied() {
        let mut buf = Vec::with_capacity(CHUNK);
        buf.extend_from_slice(&[7; 10]);
        let small = take_chunk(&mut buf, CHUNK);
        assert_eq!(small, vec![7; 10]);
        assert_eq!(small.capacity(), 10);
        assert!(
            buf.is_empty() && buf.capacity() >= CHUNK,
            "the buffer is kept"
        );

        buf.extend_from_slice(&[1; CHUNK / 2]);
        let large = take_chunk(&mut buf, CHUNK);
        assert_eq!(large.len(), CHUNK / 2);
        assert!(
            large.capacity() >= CHUNK,
            "the buffer itself was handed over"
        );
        assert!(buf.is_empty());
    }
}
