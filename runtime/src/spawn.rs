//! The fast spawn path: `clone(CLONE_VM | CLONE_VFORK)` with a minimal exec shim, the way
//! glibc's `posix_spawn` starts a child, but with the set-up execd needs between the clone and
//! the exec, reaped through a pidfd; and the spawner threads that run it off the event loop.
//!
//! Why not `fork`: `fork` copies the server's page tables (and every later write to a shared
//! page faults), so it gets slower as the server grows. Why not `posix_spawn`: it cannot set
//! `PR_SET_PDEATHSIG` or join a cgroup before exec. The shim runs in the server's address space
//! on its own stack, while the calling thread is suspended until the exec (or the child's
//! exit), and does only raw system calls on data prepared before the clone:
//!
//! 1. every signal disposition back to `SIG_DFL` (the calling thread blocked every signal
//!    before the clone, so no server handler can run in the child), then an empty mask later;
//! 2. a new process group (`setpgid(0, 0)`), or with a PTY a new session;
//! 3. `PR_SET_PDEATHSIG(SIGKILL)`, failing with `ESRCH` if the server is already gone;
//! 4. joining its cgroup (one `write` of `"0"` to the leaf's `cgroup.procs`), if any;
//! 5. stdin, stdout and stderr from the prepared descriptors; with a PTY, the slave becomes the
//!    controlling terminal (`TIOCSCTTY`);
//! 6. `chdir(cwd)`, the empty signal mask, and `execve` of the resolved program.
//!
//! A failing step stores its errno where the suspended parent reads it, and the child exits
//! with 127; the parent reaps it and reports the errno, so spawn errors are exactly those of
//! the fork path (`ENOENT`, `EACCES`, a bad cwd's `ENOENT`/`ENOTDIR`).
//!
//! The child is reaped through a pidfd (Linux ≥ 5.3) registered with the runtime's reactor;
//! where `pidfd_open` is unavailable, [`available`] is false and the process layer uses the fork
//! path.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustix::process::{Pid, PidfdFlags};
use tracing::{debug, trace};

use crate::runtime::{AsyncFd, Runtime};

/// Bytes of stack for the shim. It calls a handful of libc wrappers; glibc's `posix_spawn` uses
/// 32 KiB plus the argument sizes.
const SHIM_STACK: usize = 64 * 1024;

/// Exit code of a child whose set-up or exec failed (never observed by the core: the spawn is
/// reported as failed instead).
const SHIM_FAILED: i32 = 127;

/// One past the highest signal number on Linux.
const NSIG: i32 = 65;

/// Whether the fast path works here: `pidfd_open` is supported (probed once).
pub(crate) fn available() -> bool {
    static PIDFD: OnceLock<bool> = OnceLock::new();
    *PIDFD.get_or_init(|| {
        let ok =
            rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty()).is_ok();
        if !ok {
            debug!("pidfd_open unsupported; children are started with fork");
        }
        ok
    })
}

/// Everything the shim needs, prepared (allocated, converted to C strings) before the clone.
pub(crate) struct Exec {
    program: CString,
    /// `argv` as C strings; `argv_ptrs` points into them.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    /// The child's stdin, stdout and stderr (a PTY slave may appear three times).
    stdio: [RawFd; 3],
    /// Keeps the descriptors in `stdio` open until the spawn is done.
    _stdio_owned: Vec<OwnedFd>,
    tty: bool,
    /// The child's cgroup's `cgroup.procs`, to join before exec.
    cgroup_procs: Option<OwnedFd>,
    /// The server's pid, to detect its death before `PR_SET_PDEATHSIG` took effect.
    parent: libc::pid_t,
}

// SAFETY: the raw pointers point into the `CString`s owned by the same value; they are only
// read, by the shim, while the value is borrowed by `spawn`.
unsafe impl Send for Exec {}

impl fmt::Debug for Exec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exec")
            .field("program", &self.program)
            .field("cwd", &self.cwd)
            .field("tty", &self.tty)
            .finish_non_exhaustive()
    }
}

/// The child's stdio for [`Exec::new`]: three descriptors, or one PTY slave for all three.
pub(crate) enum ExecStdio {
    /// stdin, stdout, stderr.
    Pipes([OwnedFd; 3]),
    /// The PTY slave, which also becomes the controlling terminal.
    Pty(OwnedFd),
}

impl Exec {
    /// Prepares the exec of `program` with `argv` (its first element is the child's `argv[0]`),
    /// exactly the environment `env`, in `cwd`.
    ///
    /// # Errors
    /// `InvalidInput` for a NUL byte in any string (as `std::process::Command` reports it).
    pub(crate) fn new<'a>(
        program: &Path,
        argv: impl IntoIterator<Item = &'a str>,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
        cwd: &Path,
        stdio: ExecStdio,
        cgroup_procs: Option<OwnedFd>,
    ) -> io::Result<Exec> {
        let argv = argv
            .into_iter()
            .map(|a| c_string(a.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let envp = env
            .into_iter()
            .map(|(k, v)| c_string(format!("{k}={v}").as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let (fds, owned, tty) = match stdio {
            ExecStdio::Pipes(fds) => {
                let raw = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()];
                (raw, Vec::from(fds), false)
            }
            ExecStdio::Pty(slave) => {
                let fd = slave.as_raw_fd();
                ([fd; 3], vec![slave], true)
            }
        };
        Ok(Exec {
            program: c_string(program.as_os_str().as_bytes())?,
            argv_ptrs: null_terminated(&argv),
            _argv: argv,
            envp_ptrs: null_terminated(&envp),
            _envp: envp,
            cwd: c_string(OsStr::as_bytes(cwd.as_os_str()))?,
            stdio: fds,
            _stdio_owned: owned,
            tty,
            cgroup_procs,
            parent: rustix::process::getpid().as_raw_nonzero().get(),
        })
    }

    /// Starts the child and returns its pid and a pidfd for it, once it has exec'd. The
    /// calling thread is suspended from the clone until then (the child's `PR_SET_PDEATHSIG`
    /// refers to this thread). The server's copies of the child's stdio close when `self`
    /// drops.
    ///
    /// # Errors
    /// The errno of the failed set-up step or exec; nothing is left running.
    pub(crate) fn spawn(&self) -> io::Result<(Pid, OwnedFd)> {
        let mut stack = vec![0u8; SHIM_STACK];
        let shim = Shim {
            exec: self,
            errno: AtomicI32::new(0),
        };
        // The stack grows down from its 16-byte-aligned top.
        let top = (stack.as_mut_ptr() as usize + SHIM_STACK) & !15;
        let mut old_mask = empty_sigset();
        // SAFETY: the shim runs on `stack`, which outlives the clone because CLONE_VFORK
        // suspends this thread until the child execs or exits; it only reads `shim` and writes
        // its atomic errno. All signals are blocked on this thread across the clone so no
        // handler of the server runs on the child's stack; the mask is restored after.
        let pid = unsafe {
            let mut all = empty_sigset();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old_mask);
            let pid = libc::clone(
                shim_main,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::from_ref(&shim).cast_mut().cast(),
            );
            let clone_err = io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
            if pid < 0 {
                return Err(clone_err);
            }
            pid
        };
        drop(stack);
        let errno = shim.errno.load(Ordering::Acquire);
        if errno != 0 {
            // The child exited at the failed step; reap it.
            let mut status = 0;
            // SAFETY: waiting for our own child, which has exited.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            trace!(errno, "spawn failed in the child");
            return Err(io::Error::from_raw_os_error(errno));
        }
        let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("clone returned pid 0"))?;
        match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(pidfd) => Ok((pid, pidfd)),
            Err(err) => {
                // Cannot happen once `available` said yes (the child is ours and unreaped);
                // do not leave it running unobserved.
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                let mut status = 0;
                // SAFETY: waiting for our own child, which was just killed.
                unsafe { libc::waitpid(pid.as_raw_nonzero().get(), &mut status, 0) };
                Err(err.into())
            }
        }
    }
}

/// What the shim reads (the prepared exec) and writes (the errno of a failure).
struct Shim<'a> {
    exec: &'a Exec,
    errno: AtomicI32,
}

/// The child side, between the clone and the exec. Runs on the shim stack in the server's
/// address space while the parent thread is suspended: raw system calls only, no allocation,
/// no locks, no panics.
extern "C" fn shim_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Shim` the parent passed, alive until this child execs or exits.
    let shim = unsafe { &*arg.cast::<Shim<'_>>() };
    // SAFETY: the steps below are async-signal-safe system calls on prepared data.
    let errno = unsafe { shim_steps(shim.exec) };
    shim.errno.store(errno.max(1), Ordering::Release);
    // SAFETY: leaving the child without running any of the server's exit handlers.
    unsafe { libc::_exit(SHIM_FAILED) }
}

/// The child's set-up and exec; returns only on failure, with the errno.
///
/// Async-signal-safe only: the child shares the server's memory (and the suspended parent
/// thread's TLS, so `errno` is that thread's, which is not in use meanwhile). No allocation,
/// no lock, no panic, no `std` wrapper that may allocate: raw libc calls on `exec`'s prepared
/// C strings and descriptors, and integer arithmetic.
///
/// # Safety
/// Only in the child of a `CLONE_VM | CLONE_VFORK` clone, with `exec` alive.
unsafe fn shim_steps(exec: &Exec) -> i32 {
    // SAFETY: every call below is a system call wrapper listed as async-signal-safe by POSIX
    // (signal, setsid, setpgid, getppid, write, fcntl, dup2, chdir, sigemptyset, sigprocmask,
    // execve) or a Linux raw system call (prctl, ioctl); their pointer arguments are the
    // NUL-terminated strings and null-terminated arrays `exec` owns, which outlive the child's
    // use of them (the parent is suspended until the exec), and a stack-local sigset.
    unsafe {
        let errno = || *libc::__errno_location();
        // 1. Default dispositions (failures for the signals libc reserves are harmless).
        for signo in 1..NSIG {
            if signo != libc::SIGKILL && signo != libc::SIGSTOP {
                libc::signal(signo, libc::SIG_DFL);
            }
        }
        // 2. A process group, or a session for a terminal.
        if exec.tty {
            if libc::setsid() < 0 {
                return errno();
            }
        } else if libc::setpgid(0, 0) < 0 {
            return errno();
        }
        // 3. Killed with the spawning thread; the server may have died before that took
        //    effect.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
            return errno();
        }
        if libc::getppid() != exec.parent {
            return libc::ESRCH;
        }
        // 4. The cgroup. A failed join leaves the child in the server's cgroup, still in its
        //    own process group (as on the fork path).
        if let Some(procs) = &exec.cgroup_procs {
            let _ = libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1);
        }
        // 5. stdio. A source below 3 could be overwritten by an earlier dup2: move it up
        //    first (the copies are close-on-exec).
        let mut fds = exec.stdio;
        for fd in &mut fds {
            if *fd < 3 {
                let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
                if moved < 0 {
                    return errno();
                }
                *fd = moved;
            }
        }
        for (target, fd) in (0..3).zip(fds) {
            if libc::dup2(fd, target) < 0 {
                return errno();
            }
        }
        if exec.tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return errno();
        }
        // 6. Directory, signal mask, exec.
        if libc::chdir(exec.cwd.as_ptr()) < 0 {
            return errno();
        }
        let empty = empty_sigset();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(
            exec.program.as_ptr(),
            exec.argv_ptrs.as_ptr(),
            exec.envp_ptrs.as_ptr(),
        );
        errno()
    }
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is a valid value to initialise; sigemptyset makes it empty.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    }
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The exit of a child started by [`Exec::spawn`], read through its pidfd. Reaps the child;
/// dropped before that, it hands the reaping to a task on the runtime, so no zombie is left.
pub(crate) struct PidfdStatus {
    pid: Pid,
    pidfd: Option<Arc<dyn AsyncFd>>,
    runtime: Arc<dyn Runtime>,
}

impl PidfdStatus {
    /// Registers `pidfd` (of child `pid`) with `runtime`'s reactor.
    ///
    /// # Errors
    /// The registration error.
    pub(crate) fn new(runtime: Arc<dyn Runtime>, pid: Pid, pidfd: OwnedFd) -> io::Result<Self> {
        let pidfd = runtime.async_fd(pidfd)?;
        Ok(PidfdStatus {
            pid,
            pidfd: Some(pidfd),
            runtime,
        })
    }
}

/// Polls a non-blocking `waitpid` of `pid` whenever `pidfd` is readable (the child exited).
fn poll_reap(
    pid: Pid,
    pidfd: &dyn AsyncFd,
    cx: &mut Context<'_>,
) -> Poll<io::Result<std::process::ExitStatus>> {
    let mut raw = 0;
    let polled = pidfd.poll_read_with(cx, &mut |_| {
        // SAFETY: a non-blocking wait for our own child.
        let reaped = unsafe { libc::waitpid(pid.as_raw_nonzero().get(), &mut raw, libc::WNOHANG) };
        match reaped {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            r if r < 0 => Err(io::Error::last_os_error()),
            _ => Ok(1),
        }
    });
    polled.map(|r| r.map(|_| std::process::ExitStatus::from_raw(raw)))
}

impl Future for PidfdStatus {
    type Output = io::Result<std::process::ExitStatus>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(pidfd) = this.pidfd.as_deref() else {
            return Poll::Ready(Err(io::Error::other("child already reaped")));
        };
        let polled = poll_reap(this.pid, pidfd, cx);
        if polled.is_ready() {
            this.pidfd = None;
        }
        polled
    }
}

impl Drop for PidfdStatus {
    fn drop(&mut self) {
        if let Some(pidfd) = self.pidfd.take() {
            let pid = self.pid;
            let reap = async move {
                let _ = std::future::poll_fn(|cx| poll_reap(pid, &*pidfd, cx)).await;
            };
            self.runtime.spawn(Box::pin(reap)).detach();
        }
    }
}

/// Long-lived threads that run spawns off the event loop, so concurrent starts neither block
/// the loop nor wait for each other beyond the threads' count.
///
/// Not the runtime's blocking pool: the kernel delivers a child's `PR_SET_PDEATHSIG` when the
/// *thread* that started it exits, and pool threads exit when idle. These threads live until
/// the spawner drops (with the process table), so a child dies with its table or its server,
/// never before.
pub(crate) struct Spawner {
    jobs: async_channel::Sender<Box<dyn FnOnce() + Send>>,
}

impl Spawner {
    /// Starts `threads` (at least 1) spawner threads.
    ///
    /// # Errors
    /// A thread could not be created.
    pub(crate) fn new(threads: usize) -> io::Result<Spawner> {
        let (jobs, queue) = async_channel::unbounded::<Box<dyn FnOnce() + Send>>();
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("execd-spawn-{i}"))
                .spawn(move || {
                    while let Ok(job) = queue.recv_blocking() {
                        job();
                    }
                })?;
        }
        Ok(Spawner { jobs })
    }

    /// Runs `job` on a spawner thread. A job submitted while the spawner drops may not run.
    pub(crate) fn submit(&self, job: Box<dyn FnOnce() + Send>) {
        // Fails only once every thread is gone, which `Drop` alone causes.
        let _ = self.jobs.try_send(job);
    }
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner")
            .field("queued", &self.jobs.len())
            .finish()
    }
}

impl Drop for Spawner {
    /// Closes the queue: each thread finishes its job and exits (and with it, by
    /// `PR_SET_PDEATHSIG`, every child it started).
    fn drop(&mut self) {
        self.jobs.close();
    }
}
