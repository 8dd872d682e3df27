//! The [`Runtime`] trait: the few operations the async half needs from an executor and reactor.
//!
//! Modelled on quinn's `Runtime`: object-safe, shared as `Arc<dyn Runtime>`, futures and I/O
//! objects boxed once per task, connection or process. [`DefaultRuntime`] adds what a runtime
//! needs to be named by type alone (`execd_smol::Client::connect(url)`, no runtime argument). Everything per chunk (reads, writes,
//! timer resets) goes through the boxed objects without further allocation.
//!
//! I/O objects speak futures-io ([`AsyncRead`], [`AsyncWrite`]); a runtime whose native types do
//! not (tokio) adapts them.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed byte source (a child's stdout, the server's stdin).
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// A boxed byte sink (a child's stdin, the server's stdout).
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A bidirectional byte stream (a TCP connection).
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}

/// An async executor and reactor: what `execd-smol` and `execd-tokio` implement.
///
/// Every method may be called from any thread, inside or outside a task of the runtime.
/// Implementations set up once per call what they need (a runtime context, a registration with
/// the reactor); the objects they return are then used without further allocation. Returned
/// futures are polled by the caller, which a runtime may require to happen inside it (tokio's
/// `tcp_connect`); execd-runtime polls them in tasks it spawned on the same runtime.
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// The current time on the runtime's clock: what the event loops hand the sans-IO core and
    /// measure their timers from (a runtime with a paused or simulated clock returns that).
    fn now(&self) -> Instant;

    /// Runs `future` to completion on the runtime's executor, concurrently with the caller.
    ///
    /// Dropping the returned [`Task`] cancels the future at its next suspension point;
    /// [`Task::detach`] lets it run on.
    fn spawn(&self, future: BoxFuture<'static, ()>) -> Task;

    /// A timer that completes at `deadline` (at once if it has passed) and can be re-armed
    /// with [`Sleep::reset`].
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>>;

    /// Registers a connected, non-blocking TCP stream (one a [`TcpListener`](crate::TcpListener) accepted) with
    /// the reactor and sets `TCP_NODELAY`.
    ///
    /// # Errors
    /// The registration error.
    fn tcp_stream(&self, stream: std::net::TcpStream) -> io::Result<Box<dyn AsyncStream>>;

    /// Connects to `host:port` (a name is resolved first; each address is tried in turn) and
    /// sets `TCP_NODELAY`.
    ///
    /// # Errors
    /// The resolution or connect error.
    fn tcp_connect(
        &self,
        host: String,
        port: u16,
    ) -> BoxFuture<'static, io::Result<Box<dyn AsyncStream>>>;

    /// Forks and execs `command` (the [`std::process::Command`] with everything but its stdio
    /// prepared: program, args, env, cwd, `pre_exec` hooks, process group) before returning.
    ///
    /// The fork happens on the calling thread (`PR_SET_PDEATHSIG` set up in a `pre_exec` hook
    /// refers to that thread). The command, and with it the parent's copies of the child's
    /// stdio descriptors, is dropped before this returns.
    ///
    /// # Errors
    /// The spawn error (e.g. `ENOENT`, or the error a `pre_exec` hook returned).
    fn spawn_child(&self, command: ChildCommand) -> io::Result<Child>;

    /// Registers a non-blocking file descriptor (a pipe end, a PTY master) with the reactor.
    ///
    /// # Errors
    /// The registration error.
    fn async_fd(&self, fd: OwnedFd) -> io::Result<Arc<dyn AsyncFd>>;

    /// This process's stdin and stdout as async byte streams (for the stdio transport).
    ///
    /// # Errors
    /// The runtime cannot provide them (e.g. it has no context to run blocking reads in).
    fn stdio(&self) -> io::Result<(BoxRead, BoxWrite)>;

    /// Runs `f` on the runtime's blocking thread pool (file operations), never on a thread
    /// that runs tasks; `f` reports its result itself (e.g. over a channel). smol:
    /// `smol::unblock`; tokio: `Handle::spawn_blocking`.
    fn spawn_blocking(&self, f: Box<dyn FnOnce() + Send + 'static>);
}

/// Every `Arc` of a runtime (including `Arc<dyn Runtime>`) is a runtime: the methods forward.
impl<R: Runtime + ?Sized> Runtime for Arc<R> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) -> Task {
        (**self).spawn(future)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        (**self).sleep_until(deadline)
    }

    fn tcp_stream(&self, stream: std::net::TcpStream) -> io::Result<Box<dyn AsyncStream>> {
        (**self).tcp_stream(stream)
    }

    fn tcp_connect(
        &self,
        host: String,
        port: u16,
    ) -> BoxFuture<'static, io::Result<Box<dyn AsyncStream>>> {
        (**self).tcp_connect(host, port)
    }

    fn spawn_child(&self, command: ChildCommand) -> io::Result<Child> {
        (**self).spawn_child(command)
    }

    fn async_fd(&self, fd: OwnedFd) -> io::Result<Arc<dyn AsyncFd>> {
        (**self).async_fd(fd)
    }

    fn stdio(&self) -> io::Result<(BoxRead, BoxWrite)> {
        (**self).stdio()
    }

    fn spawn_blocking(&self, f: Box<dyn FnOnce() + Send + 'static>) {
        (**self).spawn_blocking(f);
    }
}

/// A runtime that can be found without being handed one: the type parameter of
/// `execd_smol::Client` and friends, whose constructors (`Client::connect(url)`,
/// `WsServer::bind(addr, options)`) take no runtime argument.
///
/// Implemented by `execd_smol::SmolRuntime` (smol's global executor) and
/// `execd_tokio::TokioRuntime` (the tokio runtime the caller runs in).
pub trait DefaultRuntime: Runtime + Sized {
    /// The runtime to use when none is given: a global one, or the one the caller runs in.
    ///
    /// # Errors
    /// There is none here (e.g. tokio called outside a tokio runtime).
    fn default_runtime() -> io::Result<Self>;

    /// Runs `future` to completion on the calling thread, on a runtime of this kind set up for
    /// the call (what a `main` does: smol's `block_on`; a current-thread tokio runtime with its
    /// I/O and time drivers, shut down afterwards). Inside `future`,
    /// [`default_runtime`](Self::default_runtime) finds that runtime, and children spawned by
    /// it are forked from the calling thread (`PR_SET_PDEATHSIG` ties them to it).
    ///
    /// # Errors
    /// The runtime could not be set up.
    fn block_on<F: Future>(future: F) -> io::Result<F::Output>;
}

/// `runtime` as the shared object the machinery stores; an `Arc<dyn Runtime>` is kept as it is
/// rather than wrapped again.
pub(crate) fn shared<R: Runtime>(runtime: R) -> Arc<dyn Runtime> {
    match (&runtime as &dyn Any).downcast_ref::<Arc<dyn Runtime>>() {
        Some(arc) => Arc::clone(arc),
        None => Arc::new(runtime),
    }
}

/// A re-armable timer returned by [`Runtime::sleep_until`]. Completes once its deadline has
/// passed; after completing it stays complete until [`reset`](Sleep::reset).
pub trait Sleep: Future<Output = ()> + Send {
    /// Moves the deadline to `deadline`, in the future or the past.
    fn reset(self: Pin<&mut Self>, deadline: Instant);
}

/// A non-blocking file descriptor registered with a runtime's reactor.
///
/// The operations take a closure that does one non-blocking system call on the descriptor and
/// returns `ErrorKind::WouldBlock` when it would block; the runtime then waits for readiness and
/// calls it again. The closure is called on the task that polls, so it may borrow buffers.
pub trait AsyncFd: Send + Sync + fmt::Debug {
    /// The descriptor, for operations that need no readiness (resizing a PTY, a read that must
    /// not wait).
    fn fd(&self) -> BorrowedFd<'_>;

    /// Polls `op` until it does not return `WouldBlock`, waiting for the `interest` readiness
    /// in between. Pending registers `cx` to be woken when the descriptor may be ready.
    fn poll_io(&self, cx: &mut Context<'_>, interest: Interest, op: &mut IoOp<'_>) -> IoPoll;

    /// [`poll_io`](AsyncFd::poll_io) waiting for readability.
    fn poll_read_with(&self, cx: &mut Context<'_>, read: &mut IoOp<'_>) -> IoPoll {
        self.poll_io(cx, Interest::Read, read)
    }

    /// [`poll_io`](AsyncFd::poll_io) waiting for writability.
    fn poll_write_with(&self, cx: &mut Context<'_>, write: &mut IoOp<'_>) -> IoPoll {
        self.poll_io(cx, Interest::Write, write)
    }
}

/// One non-blocking system call on an [`AsyncFd`]'s descriptor: bytes moved, or
/// `ErrorKind::WouldBlock` to wait for readiness and be called again.
pub type IoOp<'a> = dyn FnMut(BorrowedFd<'_>) -> io::Result<usize> + 'a;

/// What [`AsyncFd::poll_io`] returns: the result of the [`IoOp`] that did not block.
pub type IoPoll = Poll<io::Result<usize>>;

/// The readiness an [`AsyncFd`] operation waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// The descriptor may be read (or, for a listening socket, accepted from).
    Read,
    /// The descriptor may be written.
    Write,
}

/// A spawned task. Dropping it cancels the task; [`Task::detach`] lets it run to completion.
#[must_use = "dropping a Task cancels it; call `detach` to let it run"]
pub struct Task {
    inner: Option<Box<dyn TaskHandle>>,
}

/// What a runtime hands [`Task::new`]: dropping it cancels the task, [`TaskHandle::detach`]
/// does not.
pub trait TaskHandle: Send + Sync {
    /// Lets the task run to completion without a handle.
    fn detach(self: Box<Self>);
}

impl Task {
    /// Wraps a runtime's task handle.
    pub fn new(handle: impl TaskHandle + 'static) -> Task {
        Task {
            inner: Some(Box::new(handle)),
        }
    }

    /// Lets the task run to completion; nothing can cancel it afterwards.
    pub fn detach(mut self) {
        if let Some(handle) = self.inner.take() {
            handle.detach();
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task").finish_non_exhaustive()
    }
}

/// A child to start with [`Runtime::spawn_child`]: the prepared command and its stdio.
#[derive(Debug)]
pub struct ChildCommand {
    /// Program, arguments, environment, working directory and `pre_exec` hooks. Its own stdio
    /// settings are replaced by the fields below.
    pub command: std::process::Command,
    /// The child's stdin: [`Stdio::piped`] makes [`Child::stdin`] a pipe to it.
    pub stdin: Stdio,
    /// The child's stdout: [`Stdio::piped`] makes [`Child::stdout`] a pipe from it.
    pub stdout: Stdio,
    /// The child's stderr: [`Stdio::piped`] makes [`Child::stderr`] a pipe from it.
    pub stderr: Stdio,
    /// SIGKILL the child if [`Child::status`] is dropped before the child was reaped. Either
    /// way a child that exits after that is reaped by the runtime (no zombie is left).
    pub kill_on_drop: bool,
}

impl ChildCommand {
    /// `command` with stdin, stdout and stderr from `/dev/null`, not killed on drop.
    pub fn new(command: std::process::Command) -> ChildCommand {
        ChildCommand {
            command,
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
            kill_on_drop: false,
        }
    }
}

/// A started child: its pid, the parent's ends of its piped stdio, and its exit.
pub struct Child {
    /// The child's process id (also its process group id when it leads one).
    pub pid: u32,
    /// Writes to the child's stdin, if it was [`Stdio::piped`].
    pub stdin: Option<BoxWrite>,
    /// Reads the child's stdout, if it was [`Stdio::piped`].
    pub stdout: Option<BoxRead>,
    /// Reads the child's stderr, if it was [`Stdio::piped`].
    pub stderr: Option<BoxRead>,
    /// Completes with the exit status once the child has exited and been reaped. Dropping it
    /// earlier kills the child if [`ChildCommand::kill_on_drop`] was set.
    pub status: BoxFuture<'static, io::Result<ExitStatus>>,
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .finish_non_exhaustive()
    }
}

/// A file descriptor as a futures-io byte stream: reads and writes go straight to the
/// descriptor through the runtime's reactor (e.g. one end of a pipe).
///
/// Closing is a no-op: the descriptor closes when the last clone of its [`AsyncFd`] drops.
#[derive(Debug, Clone)]
pub struct FdStream {
    io: Arc<dyn AsyncFd>,
}

impl FdStream {
    /// Makes `fd` non-blocking and registers it with `runtime`.
    ///
    /// # Errors
    /// The `ioctl(FIONBIO)` or registration error.
    pub fn new(runtime: &dyn Runtime, fd: OwnedFd) -> io::Result<FdStream> {
        set_nonblocking(&fd)?;
        Ok(FdStream {
            io: runtime.async_fd(fd)?,
        })
    }

    /// A pipe as `(read end, write end)`, both close-on-exec and registered with `runtime`.
    ///
    /// # Errors
    /// The `pipe2(2)`, `ioctl(FIONBIO)` or registration error.
    pub fn pipe(runtime: &dyn Runtime) -> io::Result<(FdStream, FdStream)> {
        let (read, write) = crate::os::pipe()?;
        Ok((
            FdStream::new(runtime, read)?,
            FdStream::new(runtime, write)?,
        ))
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.io
            .poll_read_with(cx, &mut |fd| crate::os::read(fd, buf))
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io
            .poll_write_with(cx, &mut |fd| crate::os::write(fd, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Sets `O_NONBLOCK` on `fd`.
///
/// # Errors
/// The `ioctl(FIONBIO)` error.
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::io::ioctl_fionbio(fd, true)?)
}
