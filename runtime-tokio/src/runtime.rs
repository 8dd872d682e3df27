//! [`TokioRuntime`]: the [`Runtime`] implementation on tokio (`tokio::net`, `tokio::process`,
//! `tokio::io::unix::AsyncFd`, tokio's stdin and stdout), adapted to futures-io with
//! `tokio_util::compat`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use execd_runtime::{
    AsyncFd, AsyncStream, BoxFuture, BoxRead, BoxWrite, Child, ChildCommand, DefaultRuntime,
    Runtime, Sleep, Task, TaskHandle, TcpListener,
};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};

/// The tokio runtime: tasks, timers, sockets, children and descriptors on one tokio runtime,
/// named by its [`Handle`].
///
/// The runtime needs its I/O and time drivers (`Builder::enable_all`, as `#[tokio::main]` does).
/// Objects are created inside the handle's context, so the methods may be called from any
/// thread; the futures they return (such as [`Runtime::tcp_connect`]'s) are polled by the
/// caller and must be polled inside a tokio runtime.
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: Handle,
}

impl TokioRuntime {
    /// The runtime `handle` belongs to.
    pub fn new(handle: Handle) -> TokioRuntime {
        TokioRuntime { handle }
    }

    /// The runtime the caller runs in.
    ///
    /// # Errors
    /// Called outside a tokio runtime.
    pub fn current() -> io::Result<TokioRuntime> {
        Handle::try_current()
            .map(TokioRuntime::new)
            .map_err(io::Error::other)
    }
}

/// How long [`DefaultRuntime::block_on`] waits for the runtime's remaining tasks (and blocking
/// threads) after the future completes.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(100);

impl DefaultRuntime for TokioRuntime {
    /// [`TokioRuntime::current`]: the runtime the caller runs in.
    fn default_runtime() -> io::Result<TokioRuntime> {
        TokioRuntime::current()
    }

    /// Builds a current-thread runtime with all drivers (`enable_all`), runs `future` on the
    /// calling thread, then shuts the runtime down, waiting at most 100 ms for what is left
    /// (tasks are cancelled; a blocking read of stdin is abandoned).
    ///
    /// One thread runs everything, which suits execd's loop (the serial part anyway) and ties
    /// the children to a thread that lives as long as the future (`PR_SET_PDEATHSIG`).
    fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let output = runtime.block_on(future);
        runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        Ok(output)
    }
}

impl Runtime for TokioRuntime {
    /// tokio's clock (`tokio::time::Instant::now`), which a paused test clock controls.
    fn now(&self) -> Instant {
        let _context = self.handle.enter();
        tokio::time::Instant::now().into_std()
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) -> Task {
        Task::new(TokioTask(Some(self.handle.spawn(future))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let _context = self.handle.enter();
        Box::pin(TokioSleep {
            inner: tokio::time::sleep_until(deadline.into()),
        })
    }

    fn tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn TcpListener>> {
        let _context = self.handle.enter();
        Ok(Box::new(TokioListener(tokio::net::TcpListener::from_std(
            listener,
        )?)))
    }

    fn tcp_connect(
        &self,
        host: String,
        port: u16,
    ) -> BoxFuture<'static, io::Result<Box<dyn AsyncStream>>> {
        Box::pin(async move {
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            Ok(with_nodelay(stream))
        })
    }

    fn spawn_child(&self, command: ChildCommand) -> io::Result<Child> {
        let ChildCommand {
            command,
            stdin,
            stdout,
            stderr,
            kill_on_drop,
        } = command;
        let _context = self.handle.enter();
        let mut command = tokio::process::Command::from(command);
        command
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(kill_on_drop);
        let mut child = command.spawn()?;
        drop(command);
        // `id` is `None` only once the child has been reaped, which needs a poll of `wait`.
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child reaped before its pid was read"))?;
        Ok(Child {
            pid,
            stdin: child
                .stdin
                .take()
                .map(|s| Box::new(s.compat_write()) as BoxWrite),
            stdout: child.stdout.take().map(|s| Box::new(s.compat()) as BoxRead),
            stderr: child.stderr.take().map(|s| Box::new(s.compat()) as BoxRead),
            // The future owns the child: dropping it applies `kill_on_drop`, and tokio reaps an
            // unwaited child in the background either way.
            status: Box::pin(async move { child.wait().await }),
        })
    }

    fn async_fd(&self, fd: OwnedFd) -> io::Result<Arc<dyn AsyncFd>> {
        let _context = self.handle.enter();
        // SAFETY: the `AsyncFd` owns the `OwnedFd`, which stays open and names the same
        // descriptor until the `AsyncFd` drops it.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd)? };
        Ok(Arc::new(TokioFd(fd)))
    }

    fn stdio(&self) -> io::Result<(BoxRead, BoxWrite)> {
        let _context = self.handle.enter();
        Ok((
            Box::new(tokio::io::stdin().compat()),
            Box::new(tokio::io::stdout().compat_write()),
        ))
    }
}

fn with_nodelay(stream: TcpStream) -> Box<dyn AsyncStream> {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set TCP_NODELAY failed");
    }
    Box::new(stream.compat())
}

/// Aborts the task on drop unless detached (a dropped `JoinHandle` alone detaches).
struct TokioTask(Option<JoinHandle<()>>);

impl TaskHandle for TokioTask {
    fn detach(mut self: Box<Self>) {
        self.0.take();
    }
}

impl Drop for TokioTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

pin_project_lite::pin_project! {
    struct TokioSleep {
        #[pin]
        inner: tokio::time::Sleep,
    }
}

impl Future for TokioSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().inner.poll(cx)
    }
}

impl Sleep for TokioSleep {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        self.project().inner.reset(deadline.into());
    }
}

#[derive(Debug)]
struct TokioListener(tokio::net::TcpListener);

impl TcpListener for TokioListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Box<dyn AsyncStream>, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            Ok((with_nodelay(stream), peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[derive(Debug)]
struct TokioFd(tokio::io::unix::AsyncFd<OwnedFd>);

impl AsyncFd for TokioFd {
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }

    fn poll_read_with(
        &self,
        cx: &mut Context<'_>,
        read: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            // `try_io` clears the cached readiness when `read` would block.
            if let Ok(result) = guard.try_io(|fd| read(fd.get_ref().as_fd())) {
                return Poll::Ready(result);
            }
        }
    }

    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            if let Ok(result) = guard.try_io(|fd| write(fd.get_ref().as_fd())) {
                return Poll::Ready(result);
            }
        }
    }
}
